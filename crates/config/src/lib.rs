//! Kong-format declarative configuration for Portcullis.
//!
//! [`parse_str`] reads a `kong.yml` (`_format_version: "3.0"`, YAML or JSON), resolves
//! `{vault://env/NAME}` references, and returns either a validated [`Config`] or every error
//! found, each with its field path (`services[0].routes[2].paths[0]: ...`).

mod entities;
mod model;
mod parse;
pub mod path;
pub mod reader;
pub mod text;
pub mod tls;
mod vault;
mod yaml;
pub use vault::scrub as scrub_vault_values;
pub use yaml::value as yaml_value;

use std::path::Path;

pub use entities::{default_healthchecks, stable_id};
pub use model::*;
pub use parse::{parse_str, parse_str_with, PluginCheck};
pub use reader::{Errors, FieldError, Obj};
pub use vault::EnvLookup;

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file was read but is invalid.
    #[error("{} error(s) in config", .0.len())]
    Invalid(Vec<FieldError>),
}

/// Reads and validates a config file, resolving vault references from the process environment
/// and checking plugin configs with `check`. Returns the config and its text.
pub fn load_file(path: &Path, check: PluginCheck<'_>) -> Result<(Config, String), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_str_with(&text, &|name| std::env::var(name).ok(), check)
        .map(|c| (c, text))
        .map_err(LoadError::Invalid)
}

#[cfg(test)]
mod tests;
