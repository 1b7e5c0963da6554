//! keyrelay against what people would otherwise run: a Python worker with
//! LiteLLM's Router (`litellm`) and a Celery worker calling the same Router
//! (`celery`). Same quorum job queue, same preloaded jobs, same keys, same
//! mock provider, same jobs in flight, measured the way `e2e` measures keyrelay.
//! The workers live in `scripts/compare/`; `scripts/compare/setup.sh` installs them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Connection};
use serde_json::{Value, json};

use crate::setup::{Env, amqp_url};
use crate::{Args, Report, amqp, child};

/// Jobs per run unless `--jobs` says otherwise: the workers drain ~100-170 a second.
const DEFAULT_JOBS: usize = 5_000;

/// Which comparison worker.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// `scripts/compare/litellm_worker.py`: aio-pika + LiteLLM Router, asyncio.
    Litellm,
    /// `scripts/compare/celery_worker.py`: Celery (prefork) + LiteLLM Router.
    Celery,
}

impl Worker {
    pub fn name(self) -> &'static str {
        match self {
            Worker::Litellm => "litellm",
            Worker::Celery => "celery",
        }
    }
}

/// How the LiteLLM worker deals with limits (the quota comparison).
#[derive(Clone, Copy, Default)]
pub struct RouterOptions {
    /// Each key's requests per minute, told to the Router.
    pub rpm: Option<u32>,
    /// Retry a rate-limited call (waiting as long as the error says) instead
    /// of failing the job.
    pub retry_rate_limited: bool,
}

/// Run one comparison worker over a preloaded backlog, like `e2e` runs keyrelay.
pub async fn run(args: &Args, worker: Worker) -> anyhow::Result<Report> {
    let python = python()?;
    let mut env = Env::new(args.one_pool(), true).await?;
    let conn = amqp::connect(&amqp_url()).await?;
    let result = run_with(args, worker, &python, &env, &conn).await;
    amqp::delete_queues(&conn, &env.all_queues()).await;
    let _ = conn.close(200, "done".into()).await;
    env.stop_mock().await;
    result
}

async fn run_with(
    args: &Args,
    worker: Worker,
    python: &Path,
    env: &Env,
    conn: &Connection,
) -> anyhow::Result<Report> {
    let n = args.jobs_or(DEFAULT_JOBS);
    let shape = args.one_pool();
    let in_flight = shape.keys() * usize::from(shape.concurrency);
    let mut report = Report::new(worker.name());
    report.put("jobs", n, "");
    report.put("keys", shape.keys(), "");
    report.put(
        "jobs_in_flight",
        in_flight,
        "(prefetch: keyrelay's keys x concurrency)",
    );
    amqp::declare_topology(conn, &env.config).await?;
    let (queue, replies) = (env.job_queues()[0].clone(), env.reply_queue());
    match worker {
        Worker::Litellm => amqp::preload(conn, std::slice::from_ref(&queue), n, &replies)
            .await
            .map(drop)?,
        Worker::Celery => preload_celery(conn, &queue, n, &replies).await?,
    }
    let settled = child::wait_for_quiet_broker().await;
    report.put(
        "broker_settle_s",
        settled.as_secs_f64(),
        "s waited for the broker to go quiet",
    );
    let processes = processes_for(worker);
    report.put("worker_processes", processes, "");
    let mut workers = Workers::spawn(
        worker,
        python,
        env,
        &queue,
        in_flight,
        processes,
        RouterOptions::default(),
    )?;
    let drained = drain(&workers, conn, &replies, n).await;
    workers.kill().await;
    let drained = drained.with_context(|| log_tail(&env.log_path(worker.name())))?;
    drained.report(&mut report);
    let read = read_replies(conn, &replies, n, worker).await?;
    read.report(&mut report);
    if read.succeeded < n {
        bail!(
            "{}: only {} of {n} jobs have a reply that says succeeded (first error: {})\n{}",
            worker.name(),
            read.succeeded,
            read.first_error.unwrap_or_default(),
            log_tail(&env.log_path(worker.name()))
        );
    }
    Ok(report)
}

/// What one drain cost, over the window from the first reply to the last.
struct Drained {
    jobs: usize,
    secs: f64,
    worker_cpu: f64,
    broker_cpu: f64,
    mock_cpu: f64,
    peak_pss_kib: u64,
}

impl Drained {
    fn report(&self, report: &mut Report) {
        let per_1k = |cpu: f64| cpu / self.jobs as f64 * 1000.0;
        report.put(
            "measured_jobs",
            self.jobs,
            "(from the first reply seen to the last)",
        );
        report.put("jobs_per_s", self.jobs as f64 / self.secs, "jobs/s");
        report.put(
            "worker_cpu_s_per_1k_jobs",
            per_1k(self.worker_cpu),
            "CPU s (the worker's processes)",
        );
        report.put(
            "worker_cores_used",
            self.worker_cpu / self.secs,
            "cores, on average",
        );
        report.put(
            "broker_cpu_s_per_1k_jobs",
            per_1k(self.broker_cpu),
            "CPU s (beam.smp)",
        );
        report.put(
            "mock_cpu_s_per_1k_jobs",
            per_1k(self.mock_cpu),
            "CPU s (bench process: mock provider)",
        );
        report.put(
            "worker_peak_pss_mib",
            self.peak_pss_kib as f64 / 1024.0,
            "MiB (all processes, sampled every 200 ms; PSS counts shared pages once)",
        );
    }
}

/// Wait for `n` replies while the workers drain the queue, measuring CPU and memory.
async fn drain(
    workers: &Workers,
    conn: &Connection,
    replies: &str,
    n: usize,
) -> anyhow::Result<Drained> {
    let watch = conn.create_channel().await?;
    let (broker, own) = (child::broker_pid(), std::process::id());
    let broker_cpu = || {
        broker
            .and_then(|p| child::cpu_seconds(p).ok())
            .unwrap_or(0.0)
    };
    let (mut cpu0, mut broker0, mut own0) = (0.0, 0.0, 0.0);
    let (mut peak_pss_kib, mut last_sample) = (0, Instant::now());
    let timeout = Duration::from_secs(120 + n as u64 / 20);
    let window = amqp::wait_for_replies(
        &watch,
        replies,
        n,
        timeout,
        || {
            cpu0 = workers.cpu_seconds();
            broker0 = broker_cpu();
            own0 = child::cpu_seconds(own).unwrap_or(0.0);
        },
        |_| {
            if last_sample.elapsed() >= Duration::from_millis(200) {
                peak_pss_kib = peak_pss_kib.max(workers.pss_kib());
                last_sample = Instant::now();
            }
            workers.ensure_running()
        },
    )
    .await?;
    let (jobs, secs) = window.measured(n);
    Ok(Drained {
        jobs,
        secs,
        worker_cpu: workers.cpu_seconds() - cpu0,
        broker_cpu: broker_cpu() - broker0,
        mock_cpu: child::cpu_seconds(own)? - own0,
        peak_pss_kib: peak_pss_kib.max(workers.pss_kib()),
    })
}

/// keyrelay's throughput and CPU per job against each other worker's.
pub fn summary(keyrelay: &Report, others: &[(&str, &Report)]) -> Report {
    let mut report = Report::new("compare");
    let rate = keyrelay.get("jobs_per_s").unwrap_or(f64::NAN);
    let cpu = keyrelay
        .get("keyrelay_cpu_s_per_1k_jobs")
        .unwrap_or(f64::NAN);
    for (name, other) in others {
        let their_rate = other.get("jobs_per_s").unwrap_or(f64::NAN);
        let their_cpu = other.get("worker_cpu_s_per_1k_jobs").unwrap_or(f64::NAN);
        report.put(
            &format!("throughput_x_{name}"),
            rate / their_rate,
            "keyrelay jobs/s over theirs",
        );
        report.put(
            &format!("cpu_per_job_x_{name}"),
            their_cpu / cpu,
            "their CPU per job over keyrelay's",
        );
    }
    report
}

/// The comparison venv (`KEYRELAY_COMPARE_VENV`, as for `scripts/compare/setup.sh`,
/// by default `target/compare-venv`) and its Python.
pub fn python() -> anyhow::Result<PathBuf> {
    let venv = std::env::var_os("KEYRELAY_COMPARE_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compare-venv"),
        PathBuf::from,
    );
    let path = venv.join("bin/python");
    if !path.exists() {
        bail!(
            "{} not found: run scripts/compare/setup.sh first (installs LiteLLM, aio-pika and Celery)",
            path.display()
        );
    }
    Ok(path)
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/compare")
}

/// Processes per run: one per core, as a Python deployment would run
/// (`KEYRELAY_COMPARE_CELERY_PROCESSES` overrides Celery's pool size).
pub fn processes_for(worker: Worker) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let celery = std::env::var("KEYRELAY_COMPARE_CELERY_PROCESSES").ok();
    match worker {
        Worker::Celery => celery.and_then(|v| v.parse().ok()).unwrap_or(cores),
        Worker::Litellm => cores,
    }
}

/// A comparison worker's processes (Celery: its main process, which forks the pool).
pub struct Workers {
    children: Vec<tokio::process::Child>,
    pids: Vec<u32>,
    name: &'static str,
}

impl Workers {
    /// Start `worker` on `queue` with `processes` processes, `in_flight`
    /// deliveries between them.
    pub fn spawn(
        worker: Worker,
        python: &Path,
        env: &Env,
        queue: &str,
        in_flight: usize,
        processes: usize,
        options: RouterOptions,
    ) -> anyhow::Result<Workers> {
        let base_url = env.openai_base_url().context("the mock is not running")?;
        let prefetch = (in_flight / processes).max(1);
        let commands = match worker {
            Worker::Litellm => {
                let one = || litellm_command(python, env, queue, &base_url, prefetch, options);
                (0..processes).map(|_| one()).collect()
            }
            Worker::Celery => vec![celery_command(
                python, env, queue, &base_url, prefetch, processes,
            )?],
        };
        let log = std::fs::File::create(env.log_path(worker.name()))?;
        let mut children = Vec::new();
        for mut command in commands {
            let child = command
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log.try_clone()?)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| {
                    format!("spawn {} worker with {}", worker.name(), python.display())
                })?;
            children.push(child);
        }
        let pids = children
            .iter()
            .filter_map(tokio::process::Child::id)
            .collect();
        Ok(Workers {
            children,
            pids,
            name: worker.name(),
        })
    }

    /// How many processes consume (one consumer each; Celery's main process consumes).
    pub fn consumers(&self) -> usize {
        self.pids.len()
    }

    /// CPU seconds of every process and its descendants.
    pub fn cpu_seconds(&self) -> f64 {
        let tree = process_tree(&self.pids).into_iter();
        tree.filter_map(|pid| child::cpu_seconds(pid).ok()).sum()
    }

    /// Proportional set size of every process and its descendants, KiB.
    fn pss_kib(&self) -> u64 {
        process_tree(&self.pids)
            .into_iter()
            .filter_map(pss_kib)
            .sum()
    }

    pub fn ensure_running(&self) -> anyhow::Result<()> {
        let name = format!("the {} worker", self.name);
        self.pids
            .iter()
            .try_for_each(|&pid| child::ensure_process_running(pid, &name))
    }

    pub async fn kill(&mut self) {
        for child in &mut self.children {
            let _ = child.kill().await;
        }
    }
}

fn litellm_command(
    python: &Path,
    env: &Env,
    queue: &str,
    base_url: &str,
    prefetch: usize,
    options: RouterOptions,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python);
    command
        .arg(scripts_dir().join("litellm_worker.py"))
        .args([
            "--amqp-url",
            &amqp_url(),
            "--queue",
            queue,
            "--base-url",
            base_url,
        ])
        .args(["--prefetch", &prefetch.to_string()]);
    for key in env.key_files() {
        command.arg("--key-file").arg(key);
    }
    if let Some(rpm) = options.rpm {
        command.args(["--rpm", &rpm.to_string()]);
    }
    if options.retry_rate_limited {
        command.arg("--retry-rate-limited");
    }
    command
}

/// `celery worker` with a prefork pool of `processes`; its prefetch is the
/// multiplier times the pool size.
fn celery_command(
    python: &Path,
    env: &Env,
    queue: &str,
    base_url: &str,
    prefetch_per_process: usize,
    processes: usize,
) -> anyhow::Result<tokio::process::Command> {
    let mut command = tokio::process::Command::new(python);
    command
        .current_dir(scripts_dir())
        .args([
            "-m",
            "celery",
            "-A",
            "celery_worker",
            "worker",
            "--pool",
            "prefork",
        ])
        .args([
            "--concurrency",
            &processes.to_string(),
            "--loglevel",
            "WARNING",
        ])
        .args([
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ])
        .args(["-Q", queue])
        .env("COMPARE_AMQP_URL", amqp_url())
        .env("COMPARE_QUEUE", queue)
        .env("COMPARE_BASE_URL", base_url)
        .env("COMPARE_KEY_FILES", std::env::join_paths(env.key_files())?)
        .env(
            "COMPARE_PREFETCH_MULTIPLIER",
            prefetch_per_process.to_string(),
        );
    Ok(command)
}

/// The same jobs as `amqp::preload`, as Celery protocol-2 task messages for
/// `keyrelay_compare.complete(job)`, with `reply_to` the results queue (where
/// the `rpc://` backend publishes each result).
async fn preload_celery(
    conn: &Connection,
    queue: &str,
    n: usize,
    reply_to: &str,
) -> anyhow::Result<()> {
    amqp::publish_confirmed(conn, n, |i| {
        let (body, _) = amqp::job(i, reply_to);
        let job: Value = serde_json::from_slice(&body)?;
        let id = format!("bench-{i}");
        let message =
            json!([[job], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(2)
            .with_correlation_id(id.as_str().into())
            .with_reply_to(reply_to.into())
            .with_headers(celery_headers(&id));
        Ok((queue.to_owned(), serde_json::to_vec(&message)?, props))
    })
    .await
    .map(drop)
}

/// Headers of a Celery protocol-2 task message (what `apply_async` sends).
fn celery_headers(id: &str) -> FieldTable {
    let text = |s: &str| AMQPValue::LongString(s.into());
    let mut headers = FieldTable::default();
    headers.insert("lang".into(), text("py"));
    headers.insert("task".into(), text("keyrelay_compare.complete"));
    headers.insert("id".into(), text(id));
    headers.insert("root_id".into(), text(id));
    headers.insert("parent_id".into(), AMQPValue::Void);
    headers.insert("group".into(), AMQPValue::Void);
    headers.insert("shadow".into(), AMQPValue::Void);
    headers.insert("eta".into(), AMQPValue::Void);
    headers.insert("expires".into(), AMQPValue::Void);
    headers.insert("retries".into(), AMQPValue::LongInt(0));
    let no_limit = FieldArray::from(vec![AMQPValue::Void, AMQPValue::Void]);
    headers.insert("timelimit".into(), AMQPValue::FieldArray(no_limit));
    headers.insert("argsrepr".into(), text("(job,)"));
    headers.insert("kwargsrepr".into(), text("{}"));
    headers.insert("origin".into(), text("keyrelay-bench"));
    headers.insert("ignore_result".into(), AMQPValue::Boolean(false));
    headers
}

/// What the replies said.
#[derive(Default)]
pub struct Replies {
    /// Distinct jobs with a reply that says succeeded.
    pub succeeded: usize,
    pub failed: usize,
    /// Replies for a job already answered (a redelivery after a lost ack).
    pub duplicates: usize,
    /// The first failure's error, as the worker reported it.
    pub first_error: Option<String>,
}

impl Replies {
    pub fn report(&self, report: &mut Report) {
        report.put(
            "succeeded_jobs",
            self.succeeded,
            "distinct jobs with a succeeded reply",
        );
        report.put(
            "failed_replies",
            self.failed,
            "replies that say the job failed",
        );
        report.put(
            "duplicate_replies",
            self.duplicates,
            "second replies for a job",
        );
        if let Some(error) = &self.first_error {
            report.put("first_error", error.as_str(), "");
        }
    }
}

/// Read every reply: distinct jobs that succeeded, failures, duplicates (a
/// worker that fails fast, or answers one job twice, must not look fast).
/// Stops once 10 s pass without a reply.
pub async fn read_replies(
    conn: &Connection,
    queue: &str,
    n: usize,
    worker: Worker,
) -> anyhow::Result<Replies> {
    let channel = conn.create_channel().await?;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "bench-count".into(),
            options,
            FieldTable::default(),
        )
        .await?;
    let (mut replies, mut answered) = (Replies::default(), HashSet::new());
    while replies.succeeded + replies.failed < n {
        let next = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
        let Ok(Some(delivery)) = next else {
            break;
        };
        let reply: Value = serde_json::from_slice(&delivery?.data).unwrap_or(Value::Null);
        // Celery's rpc backend wraps the task's return value.
        let job = match worker {
            Worker::Litellm => &reply,
            Worker::Celery => &reply["result"],
        };
        if !answered.insert(job["id"].to_string()) {
            replies.duplicates += 1;
        } else if job["status"] == "succeeded" {
            replies.succeeded += 1;
        } else {
            replies.failed += 1;
            replies
                .first_error
                .get_or_insert_with(|| job["error"].to_string());
        }
    }
    let _ = channel.close(200, "counted".into()).await;
    Ok(replies)
}

/// `roots` and every process whose parent chain leads to one of them, from one
/// scan of /proc (it runs every 200 ms in the bench process, whose CPU is the mock's).
fn process_tree(roots: &[u32]) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut tree = roots.to_vec();
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `Pss` of `/proc/<pid>/smaps_rollup`, KiB: forked processes' shared pages count once.
fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find_map(|l| l.strip_prefix("Pss:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The last lines of a worker's log (the log's temp dir is gone after the run).
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("last lines of the worker's log:\n{tail}")
}
