//! The Portcullis data plane.
pub mod guard;
pub mod path;
pub mod settings;
