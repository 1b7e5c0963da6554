//! A benchmark environment: unique queue names, a temp dir (sled, key files,
//! config, logs), a keyrelay config file and, optionally, the mock provider.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use keyrelay_core::config::Config;
use keyrelay_mock::{MockKey, MockProvider, MockSettings};

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Shape of the pools: `pools` pools of `keys_per_pool` keys, each with `concurrency`;
/// with `http2`, the pools speak clear-text HTTP/2 to the mock (`http2_prior_knowledge`).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub pools: usize,
    pub keys_per_pool: usize,
    pub concurrency: u16,
    pub http2: bool,
}

impl Shape {
    pub fn keys(&self) -> usize {
        self.pools * self.keys_per_pool
    }

    /// What keyrelay speaks to the mock, for reports.
    pub fn http_version(&self) -> &'static str {
        if self.http2 { "h2c" } else { "http/1.1" }
    }
}

/// How the mock behaves. `Default` is the plain mock: zero latency, no limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct MockProfile {
    /// Added to every answer.
    pub latency: Duration,
    /// A per-key rate limit the mock enforces and keyrelay declares.
    pub limit: Option<RateLimit>,
}

/// At most `rpm` requests per key in any sliding `window`: the mock enforces
/// it (`MockSettings.minute = window`) and keyrelay declares it (`rpm`,
/// `rate_window_secs`).
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub rpm: u32,
    pub window: Duration,
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub prefix: String,
    pub config: Config,
    pub config_path: PathBuf,
    pub metrics_addr: SocketAddr,
    pub mock: Option<MockProvider>,
}

impl Env {
    /// Write key files and the config; start the mock (zero latency, no limits,
    /// no faults, one secret per key) when `with_mock`.
    pub async fn new(shape: Shape, with_mock: bool) -> anyhow::Result<Env> {
        Env::with_mock(shape, with_mock.then(MockProfile::default)).await
    }

    /// Like `new`, with the mock (if any) behaving as `profile` says; a rate
    /// limit in it is declared to keyrelay too.
    pub async fn with_mock(shape: Shape, profile: Option<MockProfile>) -> anyhow::Result<Env> {
        let limit = profile.and_then(|p| p.limit);
        let dir = tempfile::tempdir().context("temp dir")?;
        let prefix = format!("kr-bench.{}", uuid::Uuid::now_v7().simple());
        let mut keys = Vec::new();
        for p in 0..shape.pools {
            for k in 0..shape.keys_per_pool {
                let (pool, key) = (format!("p{p}"), format!("k{k:03}"));
                let secret = format!(
                    "bench-secret-{pool}-{key}-{}",
                    uuid::Uuid::now_v7().simple()
                );
                let path = dir.path().join(format!("{pool}-{key}.key"));
                write_private(&path, &secret)?;
                keys.push((pool, key, secret, path));
            }
        }
        let mock = match profile {
            Some(profile) => {
                let settings = mock_settings(&profile, &keys);
                Some(MockProvider::start(settings, "127.0.0.1:0".parse()?).await?)
            }
            None => None,
        };
        // Broker-only runs never call the provider; any URL validates.
        let base_url = mock
            .as_ref()
            .map_or_else(|| "http://127.0.0.1:9".to_string(), |m| m.gemini_base_url());
        let metrics_addr = free_port()?;
        let mut text = format!(
            "[broker]\nurl = \"{}\"\nqueue_prefix = \"{prefix}\"\n\n[store]\npath = \"{}\"\n\n\
             [metrics]\nlisten = \"{metrics_addr}\"\n\n[jobs]\nresults_queue = \"{prefix}.results\"\n\
             dead_letter_queue = \"{prefix}.dead\"\nshutdown_grace_secs = 10\n",
            amqp_url(),
            dir.path().join("store").display()
        );
        // The mock's model is priced, so a clean run logs no warning.
        for p in 0..shape.pools {
            text += &format!(
                "\n[[pools]]\nname = \"p{p}\"\nprovider = \"gemini\"\nbase_url = \"{base_url}\"\n\
                 default_model = \"model-a\"\nhttp2_prior_knowledge = {}\n\
                 prices = {{ \"model-a\" = {{ input = 0.10, output = 0.40 }} }}\n",
                shape.http2
            );
            if let Some(limit) = limit {
                text += &format!("rate_window_secs = {}\n", limit.window.as_secs());
            }
            for (_, key, _, path) in keys.iter().filter(|(pool, ..)| *pool == format!("p{p}")) {
                text += &format!(
                    "  [[pools.keys]]\n  name = \"{key}\"\n  api_key_file = \"{}\"\n  priority = 1\n  concurrency = {}\n",
                    path.display(),
                    shape.concurrency
                );
                if let Some(limit) = limit {
                    text += &format!("  rpm = {}\n", limit.rpm);
                }
            }
        }
        let config_path = dir.path().join("keyrelay.toml");
        std::fs::write(&config_path, &text)?;
        let config = Config::from_toml_str(&text, std::iter::empty()).context("bench config")?;
        Ok(Env {
            dir,
            prefix,
            config,
            config_path,
            metrics_addr,
            mock,
        })
    }

    pub fn job_queues(&self) -> Vec<String> {
        let pools = &self.config.pools;
        pools
            .iter()
            .map(|p| self.config.job_queue(&p.name))
            .collect()
    }

    /// Where replies go (keyrelay's results queue, also used by the broker-only loop).
    pub fn reply_queue(&self) -> String {
        self.config.jobs.results_queue.clone()
    }

    /// Every queue this run created, the retry delay queues of each job queue included.
    pub fn all_queues(&self) -> Vec<String> {
        keyrelay::amqp::topology::declared_queues(&self.config)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The key files of every configured key, in config order.
    pub fn key_files(&self) -> Vec<PathBuf> {
        let keys = self.config.pools.iter().flat_map(|p| &p.keys);
        keys.filter_map(|k| k.api_key_file.clone()).collect()
    }

    /// The mock's OpenAI-compatible base URL (the comparison workers use it).
    pub fn openai_base_url(&self) -> Option<String> {
        self.mock.as_ref().map(MockProvider::openai_base_url)
    }

    /// Size of the sled directory, bytes.
    pub fn store_bytes(&self) -> u64 {
        dir_size(&self.dir.path().join("store"))
    }

    pub async fn stop_mock(&mut self) {
        if let Some(mock) = self.mock.take() {
            mock.stop().await;
        }
    }
}

/// One mock key per configured key (label `<pool>-<key>`), with the profile's
/// latency and rate limit.
fn mock_settings(
    profile: &MockProfile,
    keys: &[(String, String, String, PathBuf)],
) -> MockSettings {
    let keys = keys
        .iter()
        .map(|(p, k, s, _)| {
            let key = MockKey::new(format!("{p}-{k}"), s.clone());
            match profile.limit {
                Some(limit) => key.with_rpm(limit.rpm),
                None => key,
            }
        })
        .collect();
    let mut settings = MockSettings::with_keys(keys);
    settings.latency = profile.latency;
    if let Some(limit) = profile.limit {
        settings.minute = limit.window;
    }
    settings
}

/// A key file as an operator keeps one: readable by its owner only (keyrelay
/// warns about any other file, once per key).
fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())
}

/// A port that was free a moment ago (the child binds it right after).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
