//! keyrelay's configuration: the TOML schema, defaults, and loading.
//!
//! Layers: built-in defaults < TOML file < environment (`KEYRELAY__SECTION__FIELD`,
//! see [`env_overlay`]). Loading validates everything and resolves key secrets, so a
//! config that loads is a config that runs.

mod admin;
mod env_overlay;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::provider::client::{HttpSettings, HttpTimeouts, HttpVersion};
use crate::provider::token_field::{TokenField, TokenFields};
use crate::provider::{ProviderKind, ProviderOptions};
use crate::secret::ApiKey;

pub use admin::AdminConfig;
pub use validate::ConfigError;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub broker: BrokerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub jobs: JobsConfig,
    /// Named prompt templates, used by jobs with `template` + `input`.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateConfig>,
    pub pools: Vec<PoolConfig>,
    /// Admin API tokens (`[admin]`); absent: the admin API refuses every request.
    #[serde(default)]
    pub admin: AdminConfig,
}

/// `[broker]`: the RabbitMQ connection and queue layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// AMQP URI (`amqp://` or `amqps://`). Env: `KEYRELAY__BROKER__URL`.
    pub url: String,
    /// Prefix of every queue keyrelay declares. Env: `KEYRELAY__BROKER__QUEUE_PREFIX`.
    #[serde(default = "defaults::queue_prefix")]
    pub queue_prefix: String,
    /// Job queue type: `quorum` (delivery limit for poison jobs) or `classic`.
    #[serde(default)]
    pub queue_type: QueueType,
    /// Deliveries of one job before the broker dead-letters it (quorum queues only).
    #[serde(default = "defaults::delivery_limit")]
    pub delivery_limit: u32,
    /// AMQP heartbeat in seconds, unless the URL sets `heartbeat=`: a broker
    /// silent for twice this long (frozen, partitioned) counts as gone, so
    /// `/readyz` says so and keyrelay reconnects. 0 turns heartbeats off.
    /// Env: `KEYRELAY__BROKER__HEARTBEAT_SECS`.
    #[serde(default = "defaults::heartbeat_secs")]
    pub heartbeat_secs: u16,
    /// `amqps://` only: PEM file of CA certificates to trust instead of the
    /// system's. Env: `KEYRELAY__BROKER__TLS_CA_FILE`.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// `amqps://` only: PEM client certificate, for brokers that authenticate
    /// clients by certificate (with `tls_client_key_file`).
    #[serde(default)]
    pub tls_client_cert_file: Option<PathBuf>,
    /// `amqps://` only: PEM (PKCS#8) private key of the client certificate.
    #[serde(default)]
    pub tls_client_key_file: Option<PathBuf>,
}

/// RabbitMQ queue type for the job queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    #[default]
    Quorum,
    Classic,
}

/// `[store]`: where results and key state live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// sled database directory. Env: `KEYRELAY__STORE__PATH`.
    #[serde(default = "defaults::store_path")]
    pub path: PathBuf,
    /// sled page cache in MiB: bounds resident memory. Env: `KEYRELAY__STORE__CACHE_MB`.
    #[serde(default = "defaults::cache_mb")]
    pub cache_mb: u64,
    /// What to do when the store is found damaged at start (results missing
    /// that were on disk): `refuse` to start, or `move_aside` the damaged
    /// directory and start with an empty store. Env: `KEYRELAY__STORE__ON_DAMAGE`.
    #[serde(default)]
    pub on_damage: OnDamage,
}

/// `store.on_damage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDamage {
    /// Refuse to start, naming the path and what to do.
    #[default]
    Refuse,
    /// Rename the damaged directory to `<path>.damaged-<time>` and start empty.
    MoveAside,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP listener serving `GET /metrics`. Env: `KEYRELAY__METRICS__LISTEN`.
    #[serde(default = "defaults::metrics_listen")]
    pub listen: SocketAddr,
}

/// `[jobs]`: limits and retry policy that apply to every pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Largest accepted job body in bytes; larger ones fail with `invalid_job`.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Provider calls one job may make on transient failures before it fails.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Reply queue for jobs that carry no `reply_to`.
    #[serde(default = "defaults::results_queue")]
    pub results_queue: String,
    /// Queue receiving dead letters (with an `x-keyrelay-reason` header).
    #[serde(default = "defaults::dead_letter_queue")]
    pub dead_letter_queue: String,
    /// Connect timeout for provider calls, in seconds.
    #[serde(default = "defaults::connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Total timeout for one provider call, in seconds.
    #[serde(default = "defaults::request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Identical requests within this many seconds are answered from the
    /// response cache without a provider call (0 turns the cache off).
    #[serde(default = "defaults::cache_ttl_secs")]
    pub cache_ttl_secs: u64,
    /// Days a job's result is kept in the store (0: forever). A job delivered
    /// again after its result was pruned runs again.
    #[serde(default = "defaults::results_retention_days")]
    pub results_retention_days: u32,
    /// Most answers the response cache holds (oldest dropped first); each
    /// costs about 200 bytes of memory.
    #[serde(default = "defaults::cache_max_entries")]
    pub cache_max_entries: usize,
    /// Whether jobs that do not say (`"cache": true|false`) may use the cache.
    #[serde(default = "defaults::cache_by_default")]
    pub cache_by_default: bool,
    /// Days of hourly usage statistics kept in the store.
    #[serde(default = "defaults::stats_retention_days")]
    pub stats_retention_days: u32,
    /// Times a job may go back to its queue for want of a usable key before it
    /// is failed (`all_keys_unavailable`) and dead-lettered.
    #[serde(default = "defaults::max_returns")]
    pub max_returns: u32,
    /// On SIGTERM/SIGINT, how long in-flight jobs may take to finish, in seconds.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
}

/// `[templates.NAME]`: a named prompt; `{{input}}` is replaced by the job's input JSON,
/// `{{input.FIELD}}` by one top-level field of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// Optional system prompt.
    pub system: Option<String>,
    /// The user prompt text with placeholders.
    pub text: String,
    /// Default `response_format` of jobs using this template (`text` or `json`).
    #[serde(default)]
    pub response_format: Option<crate::job::ResponseFormat>,
}

/// `[[pools]]`: one provider account and its keys, fed by one queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Pool name; jobs are consumed from `<queue_prefix>.jobs.<name>`.
    pub name: String,
    pub provider: ProviderKind,
    /// API base URL (mock provider, vLLM, Ollama ... for `openai`; the
    /// resource's endpoint for `azure`). Optional for the built-in public
    /// providers: validation fills in their public endpoint.
    #[serde(default)]
    pub base_url: String,
    /// Model used by jobs that name none.
    pub default_model: String,
    /// When set, jobs naming another model fail with `invalid_job`.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Cooldown after a rate limit whose answer gave no retry delay, in seconds.
    #[serde(default = "defaults::cooldown_secs")]
    pub default_cooldown_secs: u64,
    /// IANA time zone of the provider's daily quota reset (Gemini: America/Los_Angeles).
    #[serde(default)]
    pub daily_reset_timezone: Option<String>,
    /// When set, quota "days" last this many seconds instead of a calendar day
    /// (emulators, custom quotas): exhaustion and rpd/tpd reset at multiples of it.
    #[serde(default)]
    pub quota_period_secs: Option<u64>,
    /// Length of the rpm/tpm window in seconds (60 for real providers).
    #[serde(default = "defaults::rate_window_secs")]
    pub rate_window_secs: u64,
    /// Speak HTTP/2 from the first byte to an `http://` endpoint that serves it in
    /// clear text (h2c). `https://` endpoints negotiate HTTP/2 through TLS anyway.
    #[serde(default)]
    pub http2_prior_knowledge: bool,
    /// Calls one HTTP/2 connection carries at once. A pool that may speak
    /// HTTP/2 (https, or `http2_prior_knowledge`) builds ⌈sum of its keys'
    /// `concurrency` / this⌉ clients, one HTTP/2 connection each, so no call
    /// waits behind a server's stream limit (RFC 9113 asks servers for at
    /// least 100). A plain http:// pool speaks HTTP/1.1 and builds one.
    #[serde(default = "defaults::http2_max_streams")]
    pub http2_max_streams: u32,
    /// `openai`/`azure`: the field carrying a job's `max_tokens`: `auto` (by
    /// model: `max_completion_tokens` for o1/o3/o4/gpt-5, else `max_tokens`),
    /// `max_tokens` or `max_completion_tokens`. A provider answering
    /// "Unsupported parameter" for one gets the other, once per call.
    #[serde(default)]
    pub max_tokens_field: TokenField,
    /// Per-model overrides of `max_tokens_field` (Azure deployments have names
    /// of their own: `{ "my-o3" = "max_completion_tokens" }`).
    #[serde(default)]
    pub max_tokens_field_by_model: BTreeMap<String, TokenField>,
    /// `azure`: the `api-version` query parameter (default 2024-10-21).
    #[serde(default)]
    pub api_version: Option<String>,
    pub keys: Vec<KeyConfig>,
}

/// `[[pools.keys]]`: one API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// What logs, metrics, replies and the store call this key.
    pub name: String,
    /// Environment variable holding the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the key (trailing whitespace ignored).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Lower is preferred: the broker serves the lowest-priority-number keys first.
    #[serde(default = "defaults::priority")]
    pub priority: u8,
    /// Jobs in flight on this key at once (the channel's prefetch).
    #[serde(default = "defaults::concurrency")]
    pub concurrency: u16,
    /// Requests per minute (any 60 s window), enforced before each call.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute (estimated before the call, corrected after).
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests per provider day.
    #[serde(default)]
    pub rpd: Option<u32>,
    /// Tokens per provider day.
    #[serde(default)]
    pub tpd: Option<u64>,
    /// Keys sharing one provider quota (Gemini: a Google Cloud project; OpenAI:
    /// an organisation): a daily exhaustion of one parks them all.
    #[serde(default)]
    pub quota_group: Option<String>,
    /// The resolved secret (filled by validation, never deserialized).
    #[serde(skip, default = "defaults::empty_key")]
    pub secret: ApiKey,
}

impl Config {
    /// Read, overlay the environment, validate and resolve secrets.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, std::env::vars())
    }

    /// Parse `text`, apply `env` overrides, validate. Split out for tests.
    pub fn from_toml_str(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        env_overlay::apply(&mut value, env)?;
        let mut config: Config =
            serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Field {
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        validate::validate(&mut config)?;
        config.admin.resolve()?;
        Ok(config)
    }

    /// Name of the queue a pool consumes from.
    pub fn job_queue(&self, pool: &str) -> String {
        format!("{}.jobs.{}", self.broker.queue_prefix, pool)
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

impl JobsConfig {
    pub fn timeouts(&self) -> HttpTimeouts {
        HttpTimeouts {
            connect: Duration::from_secs(self.connect_timeout_secs),
            total: Duration::from_secs(self.request_timeout_secs),
        }
    }
}

impl KeyConfig {
    pub fn limits(&self) -> crate::keys::Limits {
        crate::keys::Limits {
            rpm: self.rpm,
            tpm: self.tpm,
            rpd: self.rpd,
            tpd: self.tpd,
        }
    }
}

impl PoolConfig {
    /// The time zone of the daily reset: configured, else the provider's own.
    pub fn reset_timezone(&self) -> &str {
        match (&self.daily_reset_timezone, self.provider) {
            (Some(tz), _) => tz,
            (None, ProviderKind::Gemini) => "America/Los_Angeles",
            (None, _) => "UTC",
        }
    }

    /// Calls the pool's keys may make at once.
    pub fn calls_at_once(&self) -> usize {
        self.keys.iter().map(|k| usize::from(k.concurrency)).sum()
    }

    /// What the pool's provider implementation reads from its config.
    pub fn provider_options(&self) -> ProviderOptions {
        ProviderOptions {
            token_fields: TokenFields::new(
                self.max_tokens_field,
                self.max_tokens_field_by_model.clone(),
            ),
            api_version: self.api_version.clone(),
        }
    }

    /// The largest `tpm` any key declares, when every key declares one: a job
    /// estimated above it can run on no key of the pool.
    pub fn largest_declared_tpm(&self) -> Option<u64> {
        self.keys
            .iter()
            .map(|k| k.tpm)
            .collect::<Option<Vec<u64>>>()?
            .into_iter()
            .max()
    }

    /// HTTP clients (one HTTP/2 connection each) for every call at once; one
    /// when the pool can only speak HTTP/1.1, whose client opens a connection
    /// per call in flight anyway.
    pub fn http_lanes(&self) -> usize {
        if !self.may_speak_http2() {
            return 1;
        }
        let streams = usize::try_from(self.http2_max_streams).unwrap_or(usize::MAX);
        crate::provider::connections::lanes_needed(self.calls_at_once(), streams)
    }

    /// HTTP/2 needs TLS (negotiated through ALPN) or `http2_prior_knowledge`:
    /// a plain `http://` endpoint without it is spoken to in HTTP/1.1.
    fn may_speak_http2(&self) -> bool {
        // Parsed as validation and the client parse it (the parser itself
        // drops surrounding spaces).
        let plain = reqwest::Url::parse(&self.base_url).is_ok_and(|u| u.scheme() == "http");
        self.http2_prior_knowledge || !plain
    }

    /// How the pool's client connects: enough lanes for every call its keys
    /// may make at once.
    pub fn http_settings(&self, timeouts: HttpTimeouts) -> HttpSettings {
        HttpSettings {
            timeouts,
            version: if self.http2_prior_knowledge {
                HttpVersion::Http2PriorKnowledge
            } else {
                HttpVersion::Negotiated
            },
            lanes: self.http_lanes(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: defaults::store_path(),
            cache_mb: defaults::cache_mb(),
            on_damage: OnDamage::default(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: defaults::metrics_listen(),
        }
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            max_body_bytes: defaults::max_body_bytes(),
            max_attempts: defaults::max_attempts(),
            results_queue: defaults::results_queue(),
            dead_letter_queue: defaults::dead_letter_queue(),
            connect_timeout_secs: defaults::connect_timeout_secs(),
            request_timeout_secs: defaults::request_timeout_secs(),
            shutdown_grace_secs: defaults::shutdown_grace_secs(),
            max_returns: defaults::max_returns(),
            stats_retention_days: defaults::stats_retention_days(),
            cache_ttl_secs: defaults::cache_ttl_secs(),
            cache_max_entries: defaults::cache_max_entries(),
            results_retention_days: defaults::results_retention_days(),
            cache_by_default: defaults::cache_by_default(),
        }
    }
}

mod defaults {
    use super::*;

    pub fn queue_prefix() -> String {
        "keyrelay".into()
    }
    pub fn delivery_limit() -> u32 {
        20
    }
    pub fn heartbeat_secs() -> u16 {
        3
    }
    /// Results are written once and read rarely (a redelivery, the history
    /// API), so a small cache costs no throughput and keeps memory flat.
    pub fn cache_mb() -> u64 {
        16
    }
    pub fn store_path() -> PathBuf {
        PathBuf::from("data/keyrelay.sled")
    }
    pub fn metrics_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9464))
    }
    pub fn max_body_bytes() -> usize {
        1024 * 1024
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn results_queue() -> String {
        "keyrelay.results".into()
    }
    pub fn dead_letter_queue() -> String {
        "keyrelay.dead".into()
    }
    pub fn connect_timeout_secs() -> u64 {
        10
    }
    pub fn request_timeout_secs() -> u64 {
        120
    }
    pub fn cache_ttl_secs() -> u64 {
        3600
    }
    pub fn results_retention_days() -> u32 {
        30
    }
    pub fn cache_max_entries() -> usize {
        100_000
    }
    pub fn cache_by_default() -> bool {
        true
    }
    pub fn stats_retention_days() -> u32 {
        30
    }
    pub fn max_returns() -> u32 {
        50
    }
    pub fn shutdown_grace_secs() -> u64 {
        30
    }
    pub fn rate_window_secs() -> u64 {
        60
    }
    pub fn cooldown_secs() -> u64 {
        60
    }
    pub fn priority() -> u8 {
        1
    }
    pub fn concurrency() -> u16 {
        4
    }
    pub fn http2_max_streams() -> u32 {
        100
    }
    pub fn empty_key() -> ApiKey {
        ApiKey::new("")
    }
}

#[cfg(test)]
mod tests;
