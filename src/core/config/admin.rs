//! `[admin]`: bearer tokens of the admin API (`/v1/*`) and the status page.
//!
//! Two tokens: a read-only one (GET only) and an admin one (everything). Each
//! comes from an environment variable or a file, never from the TOML itself.
//! With no token configured the admin API refuses every request (401).
//! `max_heavy_reads` caps the admin reads that scan the store (see
//! `admin::heavy`).

use std::path::PathBuf;

use serde::Deserialize;

use super::error::{ConfigError, at_least_one};
use crate::secret::ApiKey;

/// `[admin]` section; every field optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Environment variable holding the read-only token. Env: `KEYRELAY__ADMIN__READ_TOKEN_ENV`.
    pub read_token_env: Option<String>,
    /// File holding the read-only token. Env: `KEYRELAY__ADMIN__READ_TOKEN_FILE`.
    pub read_token_file: Option<PathBuf>,
    /// Environment variable holding the admin token. Env: `KEYRELAY__ADMIN__ADMIN_TOKEN_ENV`.
    pub admin_token_env: Option<String>,
    /// File holding the admin token. Env: `KEYRELAY__ADMIN__ADMIN_TOKEN_FILE`.
    pub admin_token_file: Option<PathBuf>,
    /// Heavy admin reads (alerts, pools, stats over results, job history
    /// pages) running at once; more wait up to 1 s (at most 16 per slot),
    /// then get 503 `busy`.
    /// Env: `KEYRELAY__ADMIN__MAX_HEAVY_READS`.
    pub max_heavy_reads: usize,
    /// `KeyrelayPoolDegraded` (in `/v1/alerts`) fires when a pool has fewer
    /// than this share of its keys usable (and at least one): 0.75 by
    /// default, so that a 2-key pool with one key out is degraded.
    /// Env: `KEYRELAY__ADMIN__POOL_DEGRADED_BELOW`.
    pub pool_degraded_below: f64,
    /// Development only: with no token configured and `metrics.listen` on
    /// loopback, `keyrelay run` makes an admin token and keeps it beside the
    /// store, where the CLI finds it. Off by default (the dev config turns
    /// it on). Env: `KEYRELAY__ADMIN__DEV_TOKEN`.
    pub dev_token: bool,
    /// The resolved read-only token (filled by validation, never deserialized).
    #[serde(skip)]
    pub read_token: Option<ApiKey>,
    /// The resolved admin token (filled by validation, never deserialized).
    #[serde(skip)]
    pub admin_token: Option<ApiKey>,
}

/// Shortest token accepted: a guessable token is worse than none.
const MIN_TOKEN_CHARS: usize = 16;

/// Default of `max_heavy_reads`: the status page's two heavy reads (pools and
/// alerts) for two viewers, without letting scans take every core.
pub(crate) const DEFAULT_MAX_HEAVY_READS: usize = 4;

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            read_token_env: None,
            read_token_file: None,
            admin_token_env: None,
            admin_token_file: None,
            max_heavy_reads: DEFAULT_MAX_HEAVY_READS,
            dev_token: false,
            pool_degraded_below: 0.75,
            read_token: None,
            admin_token: None,
        }
    }
}

impl AdminConfig {
    /// Check the cap and read both tokens from their variables or files.
    pub(super) fn resolve(&mut self) -> Result<(), ConfigError> {
        if self.max_heavy_reads == 0 {
            return Err(at_least_one("admin.max_heavy_reads"));
        }
        if !(self.pool_degraded_below > 0.0 && self.pool_degraded_below <= 1.0) {
            return Err(super::error::field(
                "admin.pool_degraded_below",
                format!(
                    "{} is not a share of keys (0 < share <= 1)",
                    self.pool_degraded_below
                ),
            ));
        }
        self.read_token = resolve_token(
            "admin.read_token",
            self.read_token_env.as_deref(),
            self.read_token_file.as_ref(),
        )?;
        self.admin_token = resolve_token(
            "admin.admin_token",
            self.admin_token_env.as_deref(),
            self.admin_token_file.as_ref(),
        )?;
        Ok(())
    }
}

fn resolve_token(
    at: &str,
    env: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<Option<ApiKey>, ConfigError> {
    let field = |suffix: &str, message: String| ConfigError::Field {
        field: format!("{at}{suffix}"),
        message,
    };
    let value = match (env, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(field(
                "_env",
                "set at most one of the _env and _file fields".into(),
            ));
        }
        (Some(var), None) => std::env::var(var)
            .map_err(|_| field("_env", format!("environment variable {var} is not set")))?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| field("_file", format!("{}: {e}", path.display())))?,
    };
    let value = value.trim();
    let suffix = if env.is_some() { "_env" } else { "_file" };
    if value.chars().count() < MIN_TOKEN_CHARS {
        return Err(field(
            suffix,
            format!("the token must be at least {MIN_TOKEN_CHARS} characters"),
        ));
    }
    Ok(Some(ApiKey::new(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_file_and_missing_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "0123456789abcdef-token\n").unwrap();
        let mut admin = AdminConfig {
            admin_token_file: Some(path),
            ..AdminConfig::default()
        };
        admin.resolve().unwrap();
        assert_eq!(
            admin.admin_token.as_ref().map(|t| t.expose()),
            Some("0123456789abcdef-token")
        );
        assert!(admin.read_token.is_none());
        let mut missing = AdminConfig {
            read_token_env: Some("KEYRELAY_TEST_SURELY_UNSET_VAR".into()),
            ..AdminConfig::default()
        };
        let err = missing.resolve().unwrap_err().to_string();
        assert!(err.contains("admin.read_token_env"), "{err}");
    }

    #[test]
    fn heavy_reads_default_to_four_and_zero_is_refused() {
        assert_eq!(AdminConfig::default().max_heavy_reads, 4);
        let mut none = AdminConfig {
            max_heavy_reads: 0,
            ..AdminConfig::default()
        };
        let err = none.resolve().unwrap_err().to_string();
        assert!(err.contains("admin.max_heavy_reads"), "{err}");
    }

    #[test]
    fn short_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "short").unwrap();
        let mut admin = AdminConfig {
            read_token_file: Some(path),
            ..AdminConfig::default()
        };
        assert!(admin.resolve().unwrap_err().to_string().contains("16"));
    }
}
