//! Why a configuration cannot be used, and the helpers that build the
//! field errors every check reports.

use std::path::PathBuf;

use thiserror::Error;

/// Why a configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML: where and what, without quoting the line
    /// (it may hold a secret pasted unquoted).
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    /// A field keyrelay cannot use.
    #[error("config field `{field}`: {message}")]
    Field {
        /// Its path in the config (`pools[0].keys[1].name`).
        field: String,
        /// What is wrong with its value.
        message: String,
    },
    /// A `KEYRELAY__*` environment override that cannot be applied.
    #[error("environment variable {variable}: {message}")]
    Env {
        /// The variable's name.
        variable: String,
        /// Why it cannot be applied.
        message: String,
    },
}

/// A [`ConfigError::Field`] for the field at `field`.
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
