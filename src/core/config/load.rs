//! Loading the configuration: read the TOML file, overlay the environment,
//! deserialize, validate and resolve secrets.

use std::path::Path;

use super::env_overlay;
use super::error::ConfigError;
use super::schema::Config;
use super::validate;

impl Config {
    /// Read, overlay the environment, validate and resolve secrets.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, std::env::vars())
    }

    /// Like [`Config::load`], without reading the keys: for the commands
    /// that only publish or read queues (`enqueue`, `batch run`,
    /// `dead-letters`), which must work without the keys' variables.
    pub fn load_without_keys(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, std::env::vars(), false)
    }

    /// Parse `text`, apply `env` overrides, validate. Split out for tests.
    pub fn from_toml_str(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::parse(text, env, true)
    }

    fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        with_keys: bool,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        env_overlay::apply(&mut value, env)?;
        let mut config: Config =
            serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Field {
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        validate::validate(&mut config, with_keys)?;
        config.admin.resolve()?;
        Ok(config)
    }
}

/// A TOML syntax error with its position but without the offending source line:
/// toml's own rendering quotes the line, which may hold a key pasted unquoted.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {column}: ")
    });
    ConfigError::Syntax(format!("{}{}", at.unwrap_or_default(), e.message()))
}
