//! The Portcullis data plane: a strict HTTP/1.1 server (hyper for HTTP/2), the request pipeline with
//! plugin phases, load balancing with health checks, upstream pooling, TLS, and atomic config
//! snapshots.
//!
//! hyper types stay inside this crate: config, router and plugins see only `http` types.

pub mod access_log;
pub mod balancer;
pub mod batch;
pub mod body;
pub mod busy;
pub mod errors;
pub mod gateway;
pub mod guard;
pub mod h1client;
pub mod h1server;
pub mod handler;
pub mod health;
pub mod metrics;
/// Request path normalisation lives in the config crate, which checks route prefixes with it.
pub use portcullis_config::path;
pub mod security;
pub mod server;
pub mod settings;
pub mod snapshot;
mod timer;
pub mod tls;
pub mod upgrade;
pub mod upstream;

pub use gateway::{config_hash, Gateway, ReloadError};
pub use settings::Settings;
