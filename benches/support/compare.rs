//! keyrelay against what people would otherwise run: a Python worker with
//! LiteLLM's Router (`litellm`) and a Celery worker calling the same Router
//! (`celery`). Same quorum job queue, same preloaded jobs, same keys, same
//! mock provider, same jobs in flight, measured the way `e2e` measures keyrelay.
//! The workers live in `scripts/compare/`; `scripts/compare/setup.sh` installs them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Connection};
use serde_json::{Value, json};

use crate::setup::{Env, amqp_url};
use crate::{Args, Report, amqp, child, drain_timeout};

/// Which comparison worker.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// `scripts/compare/litellm_worker.py`: aio-pika + LiteLLM Router, asyncio.
    Litellm,
    /// `scripts/compare/celery_worker.py`: Celery (prefork) + LiteLLM Router.
    Celery,
}

impl Worker {
    fn name(self) -> &'static str {
        match self {
            Worker::Litellm => "litellm",
            Worker::Celery => "celery",
        }
    }
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
    let n = args.jobs_or(20_000);
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
    let mut processes = spawn(
        worker,
        python,
        env,
        &queue,
        in_flight,
        RouterOptions::default(),
    )?;
    let pids: Vec<u32> = processes
        .iter()
        .filter_map(tokio::process::Child::id)
        .collect();
    let cpu_now = || pids.iter().map(|&pid| tree_cpu_seconds(pid)).sum::<f64>();
    let watch = conn.create_channel().await?;
    let (broker, own) = (child::broker_pid(), std::process::id());
    let (mut cpu0, mut broker0, mut own0) = (0.0, 0.0, 0.0);
    let window = amqp::wait_for_replies(
        &watch,
        &replies,
        n,
        drain_timeout(n),
        || {
            cpu0 = cpu_now();
            broker0 = broker
                .and_then(|p| child::cpu_seconds(p).ok())
                .unwrap_or(0.0);
            own0 = child::cpu_seconds(own).unwrap_or(0.0);
        },
        |_| pids.iter().try_for_each(|&pid| child::ensure_running(pid)),
    )
    .await;
    let cpu = cpu_now() - cpu0;
    let broker_cpu = broker
        .and_then(|p| child::cpu_seconds(p).ok())
        .unwrap_or(0.0)
        - broker0;
    let own_cpu = child::cpu_seconds(own)? - own0;
    let peak_rss: u64 = pids.iter().map(|&pid| tree_peak_rss_kib(pid)).sum();
    for process in &mut processes {
        let _ = process.kill().await;
    }
    let window = window.with_context(|| log_tail(&env.log_path(worker.name())))?;
    let (jobs, secs) = window.measured(n);
    report.put(
        "measured_jobs",
        jobs,
        "(from the first reply seen to the last)",
    );
    report.put("jobs_per_s", jobs as f64 / secs, "jobs/s");
    report.put(
        "worker_cpu_s_per_1k_jobs",
        cpu / jobs as f64 * 1000.0,
        "CPU s (the worker's processes)",
    );
    report.put(
        "broker_cpu_s_per_1k_jobs",
        broker_cpu / jobs as f64 * 1000.0,
        "CPU s (beam.smp)",
    );
    report.put(
        "mock_cpu_s_per_1k_jobs",
        own_cpu / jobs as f64 * 1000.0,
        "CPU s (bench process: mock provider)",
    );
    report.put(
        "worker_peak_rss_mib",
        peak_rss as f64 / 1024.0,
        "MiB (VmHWM, all processes)",
    );
    let read = read_replies(conn, &replies, n, worker).await?;
    report.put("succeeded_replies", read.succeeded, "");
    if read.succeeded < n {
        bail!(
            "{}: only {} of {n} replies say the job succeeded (first error: {}); see {}",
            worker.name(),
            read.succeeded,
            read.first_error.unwrap_or_default(),
            env.log_path(worker.name()).display()
        );
    }
    Ok(report)
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

/// The comparison venv's Python: `KEYRELAY_COMPARE_PYTHON`, or the one
/// `scripts/compare/setup.sh` makes.
pub fn python() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("KEYRELAY_COMPARE_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compare-venv/bin/python"),
        PathBuf::from,
    );
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

/// One process per core, as a Python deployment would run: asyncio workers
/// side by side (the prefetch split between them), or one Celery worker
/// whose prefork pool has a process per core.
pub fn processes_per_run() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// How the LiteLLM worker deals with limits (the quota comparison).
#[derive(Clone, Copy, Default)]
pub struct RouterOptions {
    /// Each key's requests per minute, told to the Router.
    pub rpm: Option<u32>,
    /// Retry a rate-limited call with backoff instead of failing the job.
    pub retry_rate_limited: bool,
}

/// Start the worker's processes on `queue`, `in_flight` deliveries in all.
pub fn spawn(
    worker: Worker,
    python: &Path,
    env: &Env,
    queue: &str,
    in_flight: usize,
    options: RouterOptions,
) -> anyhow::Result<Vec<tokio::process::Child>> {
    let base_url = env.openai_base_url().context("the mock is not running")?;
    let keys = env.key_files();
    let processes = processes_per_run();
    let log = std::fs::File::create(env.log_path(worker.name()))?;
    let mut commands = Vec::new();
    match worker {
        Worker::Litellm => {
            for _ in 0..processes {
                let mut command = tokio::process::Command::new(python);
                command
                    .arg(scripts_dir().join("litellm_worker.py"))
                    .args([
                        "--amqp-url",
                        &amqp_url(),
                        "--queue",
                        queue,
                        "--base-url",
                        &base_url,
                    ])
                    .args(["--prefetch", &(in_flight / processes).max(1).to_string()]);
                for key in &keys {
                    command.arg("--key-file").arg(key);
                }
                if let Some(rpm) = options.rpm {
                    command.args(["--rpm", &rpm.to_string()]);
                }
                if options.retry_rate_limited {
                    command.arg("--retry-rate-limited");
                }
                commands.push(command);
            }
        }
        Worker::Celery => {
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
                .env("COMPARE_BASE_URL", &base_url)
                .env("COMPARE_KEY_FILES", std::env::join_paths(&keys)?)
                .env(
                    "COMPARE_PREFETCH_MULTIPLIER",
                    (in_flight / processes).max(1).to_string(),
                );
            commands.push(command);
        }
    }
    commands
        .into_iter()
        .map(|mut command| {
            command
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log.try_clone()?)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| {
                    format!("spawn {} worker with {}", worker.name(), python.display())
                })
        })
        .collect()
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
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut pending = Vec::new();
    for i in 0..n {
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
        let body = serde_json::to_vec(&message)?;
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await?;
        pending.push(confirm);
        if pending.len() == 1_000 || i + 1 == n {
            for confirm in join_all(pending.drain(..)).await {
                anyhow::ensure!(confirm?.is_ack(), "the broker nacked a preloaded task");
            }
        }
    }
    channel.close(200, "preloaded".into()).await?;
    Ok(())
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
    pub succeeded: usize,
    pub failed: usize,
    /// The first failure's error, as the worker reported it.
    pub first_error: Option<String>,
}

/// Read every reply and count those that report success (a worker that fails
/// fast must not look fast).
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
    let mut replies = Replies::default();
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
        if job["status"] == "succeeded" {
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

/// CPU seconds of a process and all its descendants (Celery forks its pool).
fn tree_cpu_seconds(root: u32) -> f64 {
    process_tree(root)
        .into_iter()
        .filter_map(|pid| child::cpu_seconds(pid).ok())
        .sum()
}

/// Sum of every process's peak RSS in the tree, KiB.
fn tree_peak_rss_kib(root: u32) -> u64 {
    process_tree(root)
        .into_iter()
        .filter_map(|pid| child::status_kib(pid, "VmHWM").ok())
        .sum()
}

/// `root` and every process whose parent chain leads to it.
fn process_tree(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut tree = vec![root];
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

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("worker log {}:\n{tail}", path.display())
}
