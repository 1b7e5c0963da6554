//! Checks a parsed config and resolves key secrets; every error names its field.

use std::collections::HashSet;
use std::path::PathBuf;

use super::error::{ConfigError, at_least_one, field};
use super::pool::{KeyConfig, PoolConfig};
use super::schema::{BrokerConfig, Config};
use crate::secret::ApiKey;

/// Budgets are dollars (finite, >= 0); pool prices are prices.
fn check_spend(at: &str, pool: &PoolConfig) -> Result<(), ConfigError> {
    let budgets = [
        ("budget_usd_per_day", pool.budget_usd_per_day),
        ("budget_usd_per_month", pool.budget_usd_per_month),
        ("user_budget_usd_per_day", pool.user_budget_usd_per_day),
        ("user_budget_usd_per_month", pool.user_budget_usd_per_month),
    ];
    let keys = pool.keys.iter().enumerate().flat_map(|(k, key)| {
        [
            (k, "budget_usd_per_day", key.budget_usd_per_day),
            (k, "budget_usd_per_month", key.budget_usd_per_month),
        ]
    });
    let all = budgets
        .into_iter()
        .map(|(name, v)| (format!("{at}.{name}"), v))
        .chain(keys.map(|(k, name, v)| (format!("{at}.keys[{k}].{name}"), v)));
    for (name, value) in all {
        if let Some(usd) = value
            && !(usd.is_finite() && usd >= 0.0)
        {
            return Err(field(
                name,
                format!("{usd} is not an amount of US dollars (>= 0)"),
            ));
        }
    }
    for (model, price) in &pool.prices {
        crate::spend::prices::check(price)
            .map_err(|message| field(format!("{at}.prices.\"{model}\""), message))?;
    }
    Ok(())
}

/// Check `config`; with `with_keys`, also read every key's secret.
pub(super) fn validate(config: &mut Config, with_keys: bool) -> Result<(), ConfigError> {
    check_url(&config.broker.url)?;
    check_tls(&config.broker)?;
    check_name("broker.queue_prefix", &config.broker.queue_prefix)?;
    // Unset, they live under the prefix like every other queue of keyrelay's.
    let prefix = &config.broker.queue_prefix;
    if config.jobs.results_queue.is_empty() {
        config.jobs.results_queue = format!("{prefix}.results");
    }
    if config.jobs.dead_letter_queue.is_empty() {
        config.jobs.dead_letter_queue = format!("{prefix}.dead");
    }
    check_name("jobs.results_queue", &config.jobs.results_queue)?;
    check_name("jobs.dead_letter_queue", &config.jobs.dead_letter_queue)?;
    if let Some(name) = &config.instance.name {
        check_name("instance.name", name)?;
    }
    for (name, template) in config.templates.iter_mut() {
        template
            .compile()
            .map_err(|message| field(format!("templates.{name}"), message))?;
    }
    if config.pools.is_empty() {
        return Err(field("pools", "at least one [[pools]] entry is required"));
    }
    if config.jobs.max_attempts == 0 {
        return Err(at_least_one("jobs.max_attempts"));
    }
    let mut pool_names = HashSet::new();
    // Unset key variables are gathered and reported together: one run shows
    // every variable a config needs.
    let mut unset: Vec<(String, String)> = Vec::new();
    for (p, pool) in config.pools.iter_mut().enumerate() {
        let at = format!("pools[{p}]");
        check_name(&format!("{at}.name"), &pool.name)?;
        if !pool_names.insert(pool.name.clone()) {
            return Err(field(
                format!("{at}.name"),
                format!("duplicate pool name `{}`", pool.name),
            ));
        }
        if pool.base_url.trim().is_empty() {
            pool.base_url = pool
                .provider
                .default_base_url()
                .ok_or_else(|| {
                    field(
                        format!("{at}.base_url"),
                        format!(
                            "required for provider `{}` (your resource's endpoint, e.g. https://NAME.openai.azure.com)",
                            pool.provider.as_str()
                        ),
                    )
                })?
                .to_owned();
        }
        let base_url = reqwest::Url::parse(&pool.base_url)
            .map_err(|e| field(format!("{at}.base_url"), format!("not a URL: {e}")))?;
        if pool.http2_prior_knowledge && base_url.scheme() != "http" {
            return Err(field(
                format!("{at}.http2_prior_knowledge"),
                "only for http:// base URLs (https:// negotiates HTTP/2 through TLS by itself)",
            ));
        }
        if pool.http2_max_streams == 0 {
            return Err(at_least_one(format!("{at}.http2_max_streams")));
        }
        jiff::tz::TimeZone::get(pool.reset_timezone())
            .map_err(|e| field(format!("{at}.daily_reset_timezone"), e.to_string()))?;
        if pool.quota_period_secs == Some(0) {
            return Err(at_least_one(format!("{at}.quota_period_secs")));
        }
        if pool.rate_window_secs == 0 {
            return Err(at_least_one(format!("{at}.rate_window_secs")));
        }
        if pool.keys.is_empty() {
            return Err(field(format!("{at}.keys"), "a pool needs at least one key"));
        }
        check_spend(&at, pool)?;
        let mut key_names = HashSet::new();
        for (k, key) in pool.keys.iter_mut().enumerate() {
            let at = format!("{at}.keys[{k}]");
            check_name(&format!("{at}.name"), &key.name)?;
            if !key_names.insert(key.name.clone()) {
                return Err(field(
                    format!("{at}.name"),
                    format!("duplicate key name `{}` in pool `{}`", key.name, pool.name),
                ));
            }
            if key.concurrency == 0 {
                return Err(at_least_one(format!("{at}.concurrency")));
            }
            if !with_keys {
                continue;
            }
            if let Some(var) = key.api_key_env.as_deref()
                && key.api_key_file.is_none()
                && is_env_name(var)
                && !var.chars().any(|c| c.is_ascii_lowercase())
                && std::env::var_os(var).is_none()
            {
                unset.push((format!("{at}.api_key_env"), var.to_owned()));
                continue;
            }
            key.secret = resolve_secret(&at, key)?;
        }
        check_lanes(&at, pool)?;
    }
    warn_unfit_template_schemas(config);
    report_unset(unset)
}

/// A template's schema that a pool's provider cannot take would fail every
/// job sent there with `invalid_job`: said once at start-up. Not an error:
/// templates are shared, and a template may be meant for other pools only.
fn warn_unfit_template_schemas(config: &Config) {
    use crate::job::ResponseFormat;
    use crate::provider::{ProviderRequest, registry};
    for (name, template) in &config.templates {
        let Some(format @ ResponseFormat::JsonSchema(_)) = &template.compiled else {
            continue;
        };
        let request = ProviderRequest {
            model: String::new(),
            messages: Vec::new(),
            output: format.output(),
            max_output_tokens: None,
            temperature: None,
            user: None,
        };
        for pool in &config.pools {
            if let Err(reason) = registry::check_request(pool.provider, &request) {
                tracing::warn!(template = %name, pool = %pool.name, %reason, "jobs using this template will be refused on this pool");
            }
        }
    }
}

/// Every key variable that is not set, in one error.
fn report_unset(unset: Vec<(String, String)>) -> Result<(), ConfigError> {
    match unset.as_slice() {
        [] => Ok(()),
        [(at, var)] => Err(field(
            at.clone(),
            format!("environment variable {var} is not set"),
        )),
        [(first, _), ..] => {
            let names: Vec<String> = unset
                .iter()
                .map(|(at, var)| format!("{var} ({at})"))
                .collect();
            Err(field(
                first.clone(),
                format!(
                    "{} environment variables holding keys are not set: {}",
                    unset.len(),
                    names.join(", ")
                ),
            ))
        }
    }
}

/// Each lane is a client of its own (~2 ms and ~30 KiB to build): a pool
/// needing thousands is a configuration mistake, not a plan.
fn check_lanes(at: &str, pool: &PoolConfig) -> Result<(), ConfigError> {
    use crate::provider::connections::MAX_LANES;
    let (calls, lanes) = (pool.calls_at_once(), pool.http_lanes());
    if lanes > MAX_LANES {
        return Err(field(
            format!("{at}.http2_max_streams"),
            format!(
                "{calls} calls at once would need {lanes} connections (at most {MAX_LANES} per pool); \
                 raise http2_max_streams or lower the keys' concurrency"
            ),
        ));
    }
    Ok(())
}

fn check_tls(broker: &BrokerConfig) -> Result<(), ConfigError> {
    let files = [
        ("broker.tls_ca_file", &broker.tls_ca_file),
        ("broker.tls_client_cert_file", &broker.tls_client_cert_file),
        ("broker.tls_client_key_file", &broker.tls_client_key_file),
    ];
    for (at, path) in files {
        if let Some(path) = path
            && std::fs::metadata(path).is_err()
        {
            return Err(field(at, format!("cannot read {}", path.display())));
        }
    }
    if broker.tls_client_cert_file.is_some() != broker.tls_client_key_file.is_some() {
        return Err(field(
            "broker.tls_client_cert_file",
            "a client certificate needs both tls_client_cert_file and tls_client_key_file",
        ));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), ConfigError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| field("broker.url", format!("not a URL: {e}")))?;
    match parsed.scheme() {
        "amqp" | "amqps" => Ok(()),
        other => Err(field(
            "broker.url",
            format!("scheme must be amqp or amqps, not `{other}`"),
        )),
    }
}

/// Names end up in queue names, metric labels and URLs: keep them plain.
fn check_name(at: &str, name: &str) -> Result<(), ConfigError> {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.len() > 120 || !plain {
        return Err(field(
            at,
            format!("`{name}` must be 1-120 characters of letters, digits, `-`, `_` or `.`"),
        ));
    }
    Ok(())
}

fn resolve_secret(at: &str, key: &KeyConfig) -> Result<ApiKey, ConfigError> {
    let value = match (&key.api_key_env, &key.api_key_file) {
        (Some(var), None) if !is_env_name(var) => {
            // Never echo it: it may be the key itself, pasted in the wrong field.
            return Err(field(
                format!("{at}.api_key_env"),
                "must name an environment variable (letters, digits, `_`), not hold the key",
            ));
        }
        (Some(var), None) => std::env::var(var).map_err(|_| {
            // Variable names are upper-case by convention; a mixed-case "name"
            // is more likely a pasted key (Gemini keys are letters, digits, `_`).
            let message = if var.chars().any(|c| c.is_ascii_lowercase()) {
                "the environment variable it names is not set (name not shown: it has lower-case letters and may be a key)".to_owned()
            } else {
                format!("environment variable {var} is not set")
            };
            field(format!("{at}.api_key_env"), message)
        })?,
        (None, Some(path)) => read_key_file(&format!("{at}.api_key_file"), path)?,
        _ => {
            return Err(field(
                at,
                "set exactly one of api_key_env or api_key_file (never the key itself)",
            ));
        }
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(field(at, "the API key is empty"));
    }
    Ok(ApiKey::new(value))
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn read_key_file(at: &str, path: &PathBuf) -> Result<String, ConfigError> {
    warn_if_world_readable(at, path);
    // The path is not echoed: it may be a key pasted into the wrong field.
    std::fs::read_to_string(path)
        .map_err(|e| field(at, format!("cannot read the file it names: {e}")))
}

#[cfg(unix)]
fn warn_if_world_readable(at: &str, path: &PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(field = at, path = %path.display(), "API key file is readable by other users");
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_at: &str, _path: &PathBuf) {}
