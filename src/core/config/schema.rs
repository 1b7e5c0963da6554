//! The configuration file's schema: the whole file ([`Config`]) and its
//! sections, with their defaults. Pools and keys are in `pool.rs`, `[admin]`
//! in `admin.rs`, `[templates.NAME]` with the job contract; loading the file
//! is `load.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::admin::AdminConfig;
use super::defaults;
use super::pool::PoolConfig;
use crate::job::TemplateConfig;
use crate::provider::client::HttpTimeouts;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[broker]`: the RabbitMQ connection and queue layout (required).
    pub broker: BrokerConfig,
    /// `[store]`: where results and key state live.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[metrics]`: the Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[jobs]`: limits and retry policy of every pool.
    #[serde(default)]
    pub jobs: JobsConfig,
    /// Named prompt templates, used by jobs with `template` + `input`.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateConfig>,
    /// `[[pools]]`: at least one.
    pub pools: Vec<PoolConfig>,
    /// Admin API tokens (`[admin]`); absent: the admin API refuses every request.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[instance]`: this process among several on one broker.
    #[serde(default)]
    pub instance: InstanceConfig,
    /// `[spend]`: where prices come from.
    #[serde(default)]
    pub spend: SpendConfig,
}

/// `[spend]`: the price table (budgets are set per pool and key).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendConfig {
    /// A price file replacing the built-in `config/prices.toml` (same shape).
    /// Env: `KEYRELAY__SPEND__PRICES_FILE`.
    #[serde(default)]
    pub prices_file: Option<std::path::PathBuf>,
}

impl Config {
    /// Name of the queue a pool consumes from.
    pub fn job_queue(&self, pool: &str) -> String {
        format!("{}.jobs.{}", self.broker.queue_prefix, pool)
    }

    /// The queue of a pool's high-priority jobs: its keys take them ahead of
    /// the pool's backlog (a slot of their own on each key).
    pub fn high_queue(&self, pool: &str) -> String {
        format!("{}.high", self.job_queue(pool))
    }

    /// The exclusive queue whose holder drives a key (its lease).
    pub fn lease_queue(&self, pool: &str, key: &str) -> String {
        format!("{}.lease.{}.{}", self.broker.queue_prefix, pool, key)
    }

    /// The queue that keeps the last snapshot of a key's state and budget,
    /// for whoever drives the key next.
    pub fn key_state_queue(&self, pool: &str, key: &str) -> String {
        format!("{}.keystate.{}.{}", self.broker.queue_prefix, pool, key)
    }

    /// The fanout exchange the instances announce themselves on.
    pub fn fleet_exchange(&self) -> String {
        format!("{}.fleet", self.broker.queue_prefix)
    }
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
    /// A quorum queue: the broker dead-letters a job delivered more than
    /// `delivery_limit` times.
    #[default]
    Quorum,
    /// A classic queue: declared without a delivery limit.
    Classic,
}

/// `[instance]`: how this process is known to the other instances on the
/// broker (several processes may run the same file; see docs/scaling.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// The instance's name in the fleet, in logs and in `/v1/keys`; unique
    /// per running process. Default: hostname and pid (`host-1234`).
    /// Env: `KEYRELAY__INSTANCE__NAME`.
    pub name: Option<String>,
    /// `host:port` at which the other instances reach this one's HTTP
    /// listener (to ask for a key's state or a stored result). Default: the
    /// listen address, or the hostname with its port when it listens on
    /// every interface. Env: `KEYRELAY__INSTANCE__ADVERTISE`.
    pub advertise: Option<String>,
}

impl InstanceConfig {
    /// The configured name, else hostname and pid.
    pub fn resolved_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()))
    }

    /// Where the others reach this instance's HTTP listener, bound at `bound`.
    pub fn advertised(&self, bound: SocketAddr) -> String {
        match &self.advertise {
            Some(address) => address.clone(),
            None if bound.ip().is_unspecified() => format!("{}:{}", hostname(), bound.port()),
            None => bound.to_string(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "keyrelay".to_owned())
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
    /// Reply queue for jobs that carry no `reply_to`; `<queue_prefix>.results`
    /// when not set (filled in by validation).
    #[serde(default)]
    pub results_queue: String,
    /// Queue receiving dead letters (with an `x-keyrelay-reason` header);
    /// `<queue_prefix>.dead` when not set.
    #[serde(default)]
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

impl JobsConfig {
    /// The provider-call timeouts (`connect_timeout_secs`, `request_timeout_secs`).
    pub fn timeouts(&self) -> HttpTimeouts {
        HttpTimeouts {
            connect: Duration::from_secs(self.connect_timeout_secs),
            total: Duration::from_secs(self.request_timeout_secs),
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
            results_queue: String::new(),
            dead_letter_queue: String::new(),
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
