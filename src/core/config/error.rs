//! Why a configuration cannot be used, and the helpers that build the
//! field errors every check reports.

use std::path::PathBuf;

use thiserror::Error;

/// Why a configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    #[error("config field `{field}`: {message}")]
    Field { field: String, message: String },
    #[error("environment variable {variable}: {message}")]
    Env { variable: String, message: String },
}

pub(super) fn field(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// A count or a length that cannot be zero.
pub(super) fn at_least_one(name: impl Into<String>) -> ConfigError {
    field(name, "must be at least 1")
}
