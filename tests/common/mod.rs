//! Test harness: the real broker, the mock provider over real HTTP, and a
//! keyrelay started in-process with its own queue names and data directory.
#![allow(dead_code)]

#[allow(dead_code)]
pub mod proxy;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use keyrelay::amqp::{Broker, PublishOutcome, Publisher};
use keyrelay::app::App;
use keyrelay_core::config::Config;
use keyrelay_core::job::JobResult;
use keyrelay_mock::{MockKey, MockProvider, MockSettings};
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;

/// Logs to the test output when `RUST_LOG` is set (`RUST_LOG=info cargo test ...`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// How long a test waits for one event before failing (never a sleep).
pub const WAIT: Duration = Duration::from_secs(30);

/// One key of a test pool.
pub struct TestKey {
    pub name: &'static str,
    pub priority: u8,
    pub concurrency: u16,
    pub mock: MockKey,
    /// Extra TOML lines for this key (`rpm = 8`, `quota_group = "x"`).
    pub extra: String,
}

impl TestKey {
    /// A valid key whose secret is unique to this test run.
    pub fn new(name: &'static str, priority: u8) -> TestKey {
        let secret = format!("test-secret-{name}-{}", uuid::Uuid::now_v7().simple());
        TestKey {
            name,
            priority,
            concurrency: 4,
            mock: MockKey::new(name, secret),
            extra: String::new(),
        }
    }

    pub fn mock(mut self, f: impl FnOnce(MockKey) -> MockKey) -> TestKey {
        self.mock = f(self.mock);
        self
    }

    /// Add TOML lines to this key's config.
    pub fn limits(mut self, toml: &str) -> TestKey {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn concurrency(mut self, n: u16) -> TestKey {
        self.concurrency = n;
        self
    }
}

pub struct TestPool {
    pub name: &'static str,
    pub provider: &'static str,
    pub keys: Vec<TestKey>,
}

pub struct TestEnv {
    pub app: Option<App>,
    pub mock: MockProvider,
    pub config: Config,
    pub dir: tempfile::TempDir,
    pub broker: Arc<Broker>,
    pub publisher: Publisher,
    pub replies: String,
    consumer: lapin::Consumer,
}

impl TestEnv {
    pub async fn start(pools: Vec<TestPool>) -> TestEnv {
        Self::start_with(pools, MockSettings::default(), "").await
    }

    /// Start the mock, write key files, start keyrelay, open a reply queue.
    pub async fn start_with(
        pools: Vec<TestPool>,
        settings: MockSettings,
        extra_toml: &str,
    ) -> TestEnv {
        Self::start_pools_with(pools, settings, extra_toml, "").await
    }

    /// Like `start_with`, with `pool_toml` lines added to every `[[pools]]`.
    pub async fn start_pools_with(
        pools: Vec<TestPool>,
        settings: MockSettings,
        extra_toml: &str,
        pool_toml: &str,
    ) -> TestEnv {
        Self::start_through(&amqp_url(), pools, settings, extra_toml, pool_toml).await
    }

    /// Like `start_pools_with`, with keyrelay (only) reaching the broker at
    /// `broker_url`; the test's own connection goes to the broker directly.
    pub async fn start_through(
        broker_url: &str,
        pools: Vec<TestPool>,
        settings: MockSettings,
        extra_toml: &str,
        pool_toml: &str,
    ) -> TestEnv {
        let url = broker_url.to_owned();
        Self::start_adjusted(pools, settings, extra_toml, pool_toml, |c| {
            c.broker.url = url
        })
        .await
    }

    /// Like `start_pools_with`, with the generated config adjusted by `adjust`
    /// before keyrelay starts (the test's own broker connection is direct).
    pub async fn start_adjusted(
        pools: Vec<TestPool>,
        settings: MockSettings,
        extra_toml: &str,
        pool_toml: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> TestEnv {
        init_logs();
        let mock = start_mock(&pools, settings).await;
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("kr-test.{}", uuid::Uuid::now_v7().simple());
        let mut config = config_for(&pools, &mock, dir.path(), &prefix, extra_toml, pool_toml);
        adjust(&mut config);
        let app = App::start(config.clone()).await.expect("keyrelay starts");
        let key_count: usize = pools.iter().map(|p| p.keys.len()).sum();
        tokio::time::timeout(WAIT, app.wait_for_consumers(key_count))
            .await
            .expect("all keys consuming");
        let broker = Arc::new(Broker::connect(&amqp_url()).await.unwrap());
        let publisher = Publisher::new(broker.clone()).await.unwrap();
        let replies = format!("{prefix}.replies");
        let channel = broker.channel().await.unwrap();
        channel
            .queue_declare(
                replies.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                replies.as_str().into(),
                "test".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        TestEnv {
            app: Some(app),
            mock,
            config,
            dir,
            broker,
            publisher,
            replies,
            consumer,
        }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("app running")
    }

    pub fn queue(&self, pool: &str) -> String {
        self.config.job_queue(pool)
    }

    /// Publish a job body to a pool with `reply_to` set to this test's queue.
    pub async fn publish(&self, pool: &str, body: &serde_json::Value) {
        let id = body["id"].as_str().unwrap_or("").to_string();
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_reply_to(self.replies.as_str().into())
            .with_correlation_id(format!("corr-{id}").into());
        self.publish_raw(pool, body.to_string().as_bytes(), props)
            .await;
    }

    pub async fn publish_raw(&self, pool: &str, body: &[u8], props: BasicProperties) {
        let outcome = self
            .publisher
            .publish(&self.queue(pool), body, props, true)
            .await
            .unwrap();
        assert_eq!(outcome, PublishOutcome::Delivered);
    }

    /// The next reply on this test's reply queue.
    pub async fn next_reply(&mut self) -> (JobResult, Delivery) {
        let delivery = tokio::time::timeout(WAIT, self.consumer.next())
            .await
            .expect("a reply within the wait")
            .expect("reply stream open")
            .expect("reply delivery");
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        let result: JobResult =
            serde_json::from_slice(&delivery.data).expect("reply is contract JSON");
        (result, delivery)
    }

    /// Collect `n` replies, by job id.
    pub async fn replies(&mut self, n: usize) -> HashMap<String, JobResult> {
        let mut out = HashMap::new();
        for _ in 0..n {
            let (result, _) = self.next_reply().await;
            assert!(
                out.insert(result.id.clone(), result).is_none(),
                "one reply per job"
            );
        }
        out
    }

    /// Fetch every message currently in the dead-letter queue.
    pub async fn dead_letters(&self, expected: usize) -> Vec<Delivery> {
        let channel = self.broker.channel().await.unwrap();
        let mut consumer = channel
            .basic_consume(
                self.config.jobs.dead_letter_queue.as_str().into(),
                "dead-reader".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        while out.len() < expected {
            let d = tokio::time::timeout(WAIT, consumer.next())
                .await
                .expect("dead letter")
                .unwrap()
                .unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
            out.push(d);
        }
        out
    }

    /// Stop keyrelay and remove this test's queues.
    pub async fn finish(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown(Duration::from_secs(5)).await.unwrap();
        }
        let mut queues = keyrelay_queues(&self.config);
        queues.push(self.replies.clone());
        delete_queues(&self.broker, &queues).await;
        self.broker.close().await.unwrap();
        self.mock.stop().await;
    }
}

/// Every queue keyrelay declares for `config`.
pub fn keyrelay_queues(config: &Config) -> Vec<String> {
    keyrelay::amqp::topology::declared_queues(config)
}

fn config_for(
    pools: &[TestPool],
    mock: &MockProvider,
    dir: &Path,
    prefix: &str,
    extra: &str,
    pool_toml: &str,
) -> Config {
    let mut text = format!(
        "[broker]\nurl = \"{}\"\nqueue_prefix = \"{prefix}\"\n\n[store]\npath = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[jobs]\nresults_queue = \"{prefix}.results\"\ndead_letter_queue = \"{prefix}.dead\"\n{extra}\n",
        amqp_url(),
        dir.join("store").display()
    );
    for pool in pools {
        let base_url = match pool.provider {
            "gemini" => mock.gemini_base_url(),
            "openai" => mock.openai_base_url(),
            "azure" => mock.azure_base_url(),
            _ => mock.anthropic_base_url(),
        };
        text += &format!(
            "[[pools]]\nname = \"{}\"\nprovider = \"{}\"\nbase_url = \"{base_url}\"\ndefault_model = \"model-a\"\n{pool_toml}",
            pool.name, pool.provider
        );
        for key in &pool.keys {
            let path = dir.join(format!("{}-{}.key", pool.name, key.name));
            std::fs::write(&path, &key.mock.secret).unwrap();
            text += &format!(
                "  [[pools.keys]]\n  name = \"{}\"\n  api_key_file = \"{}\"\n  priority = {}\n  concurrency = {}\n{}",
                key.name,
                path.display(),
                key.priority,
                key.concurrency,
                key.extra
            );
        }
    }
    Config::from_toml_str(&text, std::iter::empty()).expect("test config is valid")
}

/// Force-close keyrelay's broker connection (named `keyrelay <queue_prefix>`)
/// through `rabbitmqctl`, as a network cut or broker-side kill would.
pub fn close_service_connection(config: &Config) {
    let name = format!("keyrelay {}", config.broker.queue_prefix);
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let listing = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains(&name))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        !pids.is_empty(),
        "keyrelay's connection is listed:\n{listing}"
    );
    for pid in pids {
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test: forced close"])
            .status()
            .expect("rabbitmqctl runs");
        assert!(status.success());
    }
}

impl TestEnv {
    /// Replies until every id in `ids` has at least one; duplicates are counted.
    pub async fn replies_for(
        &mut self,
        ids: &[String],
        already: Vec<JobResult>,
    ) -> (HashMap<String, JobResult>, usize) {
        let mut seen: HashMap<String, JobResult> =
            already.into_iter().map(|r| (r.id.clone(), r)).collect();
        let mut duplicates = 0;
        while seen.len() < ids.len() {
            let (result, _) = self.next_reply().await;
            assert!(ids.contains(&result.id), "unexpected reply {}", result.id);
            if seen.insert(result.id.clone(), result).is_some() {
                duplicates += 1;
            }
        }
        (seen, duplicates)
    }
}

/// Admin token of environments started with [`TestEnv::start_admin`].
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
/// Read-only token of environments started with [`TestEnv::start_admin`].
pub const READ_TOKEN: &str = "read-token-for-tests-0123456789";

/// An `[admin]` section whose admin token is `token`, kept in a file in `dir`.
pub fn admin_toml(dir: &Path, token: &str) -> String {
    let file = dir.join("admin.token");
    std::fs::write(&file, token).unwrap();
    format!("[admin]\nadmin_token_file = \"{}\"\n", file.display())
}

impl TestEnv {
    /// Start with the admin API enabled (tokens from files).
    pub async fn start_admin(pools: Vec<TestPool>) -> TestEnv {
        let tokens = tempfile::tempdir().unwrap();
        let admin = tokens.path().join("admin.token");
        let read = tokens.path().join("read.token");
        std::fs::write(&admin, format!("{ADMIN_TOKEN}\n")).unwrap();
        std::fs::write(&read, READ_TOKEN).unwrap();
        let extra = format!(
            "[admin]\nadmin_token_file = \"{}\"\nread_token_file = \"{}\"\n",
            admin.display(),
            read.display()
        );
        Self::start_with(pools, MockSettings::default(), &extra).await
    }

    /// Base URL of keyrelay's HTTP endpoint.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.app().http_addr())
    }
}

// ---------------------------------------------------------------------------
// keyrelay as a child process (crash, secrets, soak tests): the real binary,
// `keyrelay run --config FILE --log-format json`, its output captured.

/// A config file for a child keyrelay: same layout as the in-process one, with a
/// fixed queue prefix and sled directory so restarts share queues and store.
/// Key files are written `0600` next to it. Returns the config path.
pub fn write_config_file(
    pools: &[TestPool],
    mock: &MockProvider,
    dir: &Path,
    prefix: &str,
    broker_extra: &str,
    jobs_extra: &str,
) -> std::path::PathBuf {
    write_config_file_with(pools, mock, dir, prefix, broker_extra, jobs_extra, "")
}

/// [`write_config_file`] with `pool_toml` lines in every pool (and each
/// key's own extra lines, such as its limits).
pub fn write_config_file_with(
    pools: &[TestPool],
    mock: &MockProvider,
    dir: &Path,
    prefix: &str,
    broker_extra: &str,
    jobs_extra: &str,
    pool_toml: &str,
) -> std::path::PathBuf {
    let config = config_for(pools, mock, dir, prefix, jobs_extra, pool_toml);
    for pool in pools {
        for key in &pool.keys {
            let path = dir.join(format!("{}-{}.key", pool.name, key.name));
            restrict(&path);
        }
    }
    let mut text = format!(
        "[broker]\nurl = \"{}\"\nqueue_prefix = \"{prefix}\"\n{broker_extra}\n\n[store]\npath = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[jobs]\nresults_queue = \"{prefix}.results\"\ndead_letter_queue = \"{prefix}.dead\"\n{jobs_extra}\n",
        amqp_url(),
        config.store.path.display()
    );
    for (pool, test_pool) in config.pools.iter().zip(pools) {
        text += &format!(
            "[[pools]]\nname = \"{}\"\nprovider = \"{}\"\nbase_url = \"{}\"\ndefault_model = \"{}\"\n{pool_toml}",
            pool.name,
            match pool.provider {
                keyrelay_core::provider::ProviderKind::Gemini => "gemini",
                keyrelay_core::provider::ProviderKind::Openai => "openai",
                keyrelay_core::provider::ProviderKind::Anthropic => "anthropic",
                keyrelay_core::provider::ProviderKind::Azure => "azure",
            },
            pool.base_url,
            pool.default_model
        );
        for (key, test_key) in pool.keys.iter().zip(&test_pool.keys) {
            text += &format!(
                "  [[pools.keys]]\n  name = \"{}\"\n  api_key_file = \"{}\"\n  priority = {}\n  concurrency = {}\n{}",
                key.name,
                key.api_key_file.as_ref().unwrap().display(),
                key.priority,
                key.concurrency,
                test_key.extra
            );
        }
    }
    let path = dir.join("keyrelay.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

/// Every line a child keyrelay wrote (stdout and stderr), shared across restarts.
pub struct Output {
    lines: std::sync::Mutex<Vec<String>>,
    count: tokio::sync::watch::Sender<usize>,
}

pub type OutputLog = Arc<Output>;

impl Default for Output {
    fn default() -> Output {
        Output {
            lines: std::sync::Mutex::default(),
            count: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Output {
    pub fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap();
        lines.push(line);
        self.count.send_replace(lines.len());
    }

    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Wait until a line written from now on, or already, matches `pred`.
    pub async fn wait_for(&self, pred: impl Fn(&str) -> bool) {
        let mut changes = self.count.subscribe();
        let mut checked = 0;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if lines[checked..].iter().any(|l| pred(l)) {
                    return;
                }
                checked = lines.len();
            }
            tokio::time::timeout(WAIT, changes.changed())
                .await
                .unwrap_or_else(|_| {
                    panic!("no matching log line within the wait:\n{}", self.text())
                })
                .expect("output open");
        }
    }
}

/// `keyrelay run` as a child process.
pub struct Relay {
    pub child: tokio::process::Child,
    pub pid: u32,
    /// `/metrics`, `/healthz`, `/readyz` of this run.
    pub http: std::net::SocketAddr,
}

impl Relay {
    /// Spawn `keyrelay run --config <config> --log-format json` with `RUST_LOG=<filter>`
    /// and wait for its "keyrelay running" line (store open, topology declared;
    /// `filter` must let `keyrelay::app` at info through).
    /// Panics with the output if it exits first.
    pub async fn spawn(config: &Path, filter: &str, log: &OutputLog) -> Relay {
        Self::spawn_with(config, filter, log, &[]).await
    }

    pub async fn spawn_with(
        config: &Path,
        filter: &str,
        log: &OutputLog,
        envs: &[(&str, &str)],
    ) -> Relay {
        use std::process::Stdio;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyrelay"))
            .args(["run", "--log-format", "json", "--config"])
            .arg(config)
            .env("RUST_LOG", filter)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn keyrelay");
        let pid = child.id().expect("child pid");
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(pump(stdout, log.clone(), ready_tx.clone()));
        tokio::spawn(pump(stderr, log.clone(), ready_tx));
        let http = tokio::time::timeout(WAIT, async {
            tokio::select! {
                addr = ready_rx.recv() => addr.ok_or_else(|| "output closed".to_string()),
                status = child.wait() => Err(format!("exited with {status:?}")),
            }
        })
        .await
        .expect("keyrelay starts within the wait");
        match http {
            Ok(http) => Relay { child, pid, http },
            Err(why) => panic!("keyrelay did not start: {why}\n{}", log.text()),
        }
    }

    /// SIGKILL, then wait for the process to be gone.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let status = self.child.wait().await.expect("wait");
        assert!(!status.success(), "killed, not exited: {status}");
    }

    /// SIGTERM (graceful shutdown); the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("keyrelay stops after SIGTERM")
            .expect("wait")
    }

    /// `GET /metrics` of this run.
    pub async fn metrics(&self) -> String {
        scrape(self.http).await
    }
}

/// `GET http://<addr>/metrics`, checked with [`assert_well_formed_exposition`].
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    assert_well_formed_exposition(&body);
    body
}

/// What Prometheus' text parser rejects: a family's lines split in two
/// places, a second HELP or TYPE line for a family or one after its samples,
/// a malformed series name or label set, a series twice, a value that is not
/// a number. `/metrics` joins two renderers (the recorder's and the per-key
/// table's), so every scrape in the tests checks this.
pub fn assert_well_formed_exposition(body: &str) {
    use std::collections::HashSet;
    let mut kinds: HashMap<&str, &str> = HashMap::new();
    let mut helped = HashSet::new();
    let mut sampled = HashSet::new();
    let mut series = HashSet::new();
    let mut finished = HashSet::new();
    let mut current: Option<&str> = None;
    // Move to `family`'s block; a family whose block ended may not come back.
    fn enter<'a>(family: &'a str, current: &mut Option<&'a str>, finished: &mut HashSet<&'a str>) {
        if *current != Some(family) {
            assert!(
                !finished.contains(family),
                "family {family} appears in two places of /metrics"
            );
            if let Some(done) = current.replace(family) {
                finished.insert(done);
            }
        }
    }
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(helped.insert(name), "second HELP line for {name}");
            assert!(!sampled.contains(name), "HELP for {name} after its samples");
            enter(name, &mut current, &mut finished);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                kinds.insert(name, kind).is_none(),
                "second TYPE line for {name}"
            );
            assert!(!sampled.contains(name), "TYPE for {name} after its samples");
            enter(name, &mut current, &mut finished);
        } else if !line.starts_with('#') {
            let (id, value) = line.rsplit_once(' ').expect("a sample is `series value`");
            assert!(
                matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok(),
                "not a sample value: {line}"
            );
            assert_series_syntax(id);
            let name = id.split('{').next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|base| matches!(kinds.get(base), Some(&"histogram" | &"summary")))
                .unwrap_or(name);
            enter(family, &mut current, &mut finished);
            sampled.insert(family);
            assert!(series.insert(id), "series twice in /metrics: {id}");
        }
    }
}

/// `name` or `name{label="value",…}`, values escaped as the text format says.
fn assert_series_syntax(id: &str) {
    let bad = |why: &str| -> ! { panic!("malformed series ({why}): {id}") };
    let is_name = |s: &str, colon: bool| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    };
    let (name, labels) = match id.split_once('{') {
        Some((name, rest)) => (
            name,
            Some(rest.strip_suffix('}').unwrap_or_else(|| bad("no }"))),
        ),
        None => (id, None),
    };
    if !is_name(name, true) {
        bad("metric name");
    }
    let mut rest = labels.unwrap_or_default();
    while !rest.is_empty() {
        let (label, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| bad("label without =\""));
        if !is_name(label, false) {
            bad("label name");
        }
        // The value runs to the first quote not escaped by a backslash.
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => bad("escape"),
                },
                Some((i, '"')) => break i,
                Some(_) => {}
                None => bad("unterminated value"),
            }
        };
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(next) => next,
            None if rest.is_empty() => rest,
            None => bad("label separator"),
        };
    }
}

/// Sum of every sample of `name` (any labels) in a Prometheus text body.
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// Copy a child's output into `log`, line by line; report the HTTP address of
/// the "keyrelay running" line on `ready`.
async fn pump(
    out: impl tokio::io::AsyncRead + Unpin,
    log: OutputLog,
    ready: tokio::sync::mpsc::UnboundedSender<std::net::SocketAddr>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("keyrelay running")
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(addr) = v["http"].as_str().and_then(|a| a.parse().ok())
        {
            let _ = ready.send(addr);
        }
        log.push(line);
    }
}

/// A reply queue read by the test (declared durable, deleted by `delete`).
pub struct ReplyQueue {
    pub name: String,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
}

impl ReplyQueue {
    pub async fn open(broker: &Broker, name: &str) -> ReplyQueue {
        let channel = broker.channel().await.unwrap();
        channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                name.into(),
                "test-replies".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        ReplyQueue {
            name: name.to_string(),
            channel,
            consumer,
        }
    }

    /// The next reply (acked), raw.
    pub async fn next_raw(&mut self) -> Delivery {
        let delivery = tokio::time::timeout(WAIT, self.consumer.next())
            .await
            .unwrap_or_else(|_| panic!("a message on {} within the wait", self.name))
            .expect("stream open")
            .expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        delivery
    }

    /// The next reply, decoded.
    pub async fn next(&mut self) -> JobResult {
        let d = self.next_raw().await;
        serde_json::from_slice(&d.data).expect("reply is contract JSON")
    }
}

/// The mock provider on a free port, knowing every key of `pools`.
pub async fn start_mock(pools: &[TestPool], mut settings: MockSettings) -> MockProvider {
    settings.keys = pools
        .iter()
        .flat_map(|p| p.keys.iter().map(|k| k.mock.clone()))
        .collect();
    MockProvider::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Delete queues (best effort).
pub async fn delete_queues(broker: &Broker, queues: &[String]) {
    let channel = broker.channel().await.unwrap();
    for q in queues {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}
