//! keyrelay performance benchmarks against the real RabbitMQ.
//!
//! `cargo bench --bench keyrelay_bench -- <scenario> [--jobs N] [--keys K] [--concurrency C]`
//! (`quota` also takes `[--rpm R] [--window-secs W] [--latency-ms L]`)
//!
//! Scenarios: `broker-limit` (`--call`, `--store`: a bare worker's steps added),
//! `e2e`, `all` (both, and their ratio), `ladder` (broker-limit without and
//! with the bare worker's steps, then e2e, and keyrelay's ratio to each), `many-keys`,
//! `backlog-memory`, `quota`, `fleet` (1, 2 and 3 instances on one broker, and the
//! failover time), `priority` (high jobs overtaking a 20,000-job backlog), `routing`, and against the alternatives: `litellm`,
//! `celery`, `compare` (e2e, litellm and celery, and keyrelay's ratio to each),
//! `quota-litellm` (the quota scenario with the LiteLLM worker). See
//! docs/performance.md for what each measures.

#[path = "support/amqp.rs"]
mod amqp;
#[path = "support/bare.rs"]
mod bare;
#[path = "support/child.rs"]
mod child;
#[path = "support/compare.rs"]
mod compare;
#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/priority.rs"]
mod priority;
#[path = "support/quota.rs"]
mod quota;
#[path = "support/scale.rs"]
mod scale;
#[path = "support/setup.rs"]
mod setup;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use keyrelay::amqp::{Settler, Verdict};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use serde_json::{Map, Value, json};
use tokio_util::task::TaskTracker;

use child::Keyrelay;
use setup::{Env, Shape, amqp_url};

/// A reply about as large as keyrelay's (≈ 400 bytes of contract JSON).
const REPLY_BODY: &[u8] = br#"{"id":"bench-0","status":"succeeded","text":"Hello! This is a canned answer of about the size the mock provider returns.","json":null,"error":null,"pool":"p0","model":"model-a","key":"k000","usage":{"input_tokens":12,"output_tokens":40},"attempts":1,"latency_ms":3,"metadata":{"n":0},"user":null,"completed_at":"2026-01-01T00:00:00Z"}"#;

#[derive(Clone)]
pub struct Args {
    scenario: String,
    jobs: Option<usize>,
    keys: usize,
    concurrency: Option<u16>,
    /// Quota scenario: declared and enforced requests per key per window.
    rpm: Option<u32>,
    window_secs: Option<u64>,
    latency_ms: Option<u64>,
    /// `all`: alternate broker-limit and e2e this many times.
    repeat: usize,
    /// broker-limit: ack through keyrelay's own settler, which folds
    /// consecutive acks into `multiple` acks (the plain loop acks each delivery).
    folded_acks: bool,
    /// keyrelay's pools speak clear-text HTTP/2 to the mock (one connection per
    /// lane: ⌈calls / http2_max_streams⌉ per pool) instead of HTTP/1.1 (one
    /// connection per call in flight).
    http2: bool,
    /// broker-limit: also call the mock provider per delivery (`bare.rs`).
    call: bool,
    /// broker-limit with `--call`: also store the answer in sled, flushed.
    store: bool,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            scenario: String::new(),
            jobs: None,
            keys: 4,
            concurrency: None,
            rpm: None,
            window_secs: None,
            latency_ms: None,
            repeat: 1,
            folded_acks: false,
            http2: false,
            call: false,
            store: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--bench" => {} // passed by `cargo bench`
                "--jobs" => args.jobs = Some(value()?.parse()?),
                "--keys" => args.keys = value()?.parse()?,
                "--concurrency" => args.concurrency = Some(value()?.parse()?),
                "--rpm" => args.rpm = Some(value()?.parse()?),
                "--window-secs" => args.window_secs = Some(value()?.parse()?),
                "--latency-ms" => args.latency_ms = Some(value()?.parse()?),
                "--repeat" => args.repeat = value()?.parse::<usize>()?.max(1),
                "--folded-acks" => args.folded_acks = true,
                "--http2" => args.http2 = true,
                "--call" => args.call = true,
                "--store" => args.store = true,
                s if !s.starts_with('-') && args.scenario.is_empty() => args.scenario = s.into(),
                other => bail!("unknown argument {other}"),
            }
        }
        if args.scenario.is_empty() {
            bail!(
                "usage: keyrelay_bench <broker-limit|e2e|all|ladder|many-keys|backlog-memory|quota|priority|fleet|quota-litellm|routing|litellm|celery|compare> [--jobs N] [--keys K] [--concurrency C] [--repeat R] [--folded-acks] [--call] [--store] [--http2] [--rpm R] [--window-secs W] [--latency-ms L]"
            );
        }
        Ok(args)
    }

    pub fn jobs_or(&self, default: usize) -> usize {
        self.jobs.unwrap_or(default)
    }

    pub fn concurrency_or(&self, default: u16) -> u16 {
        self.concurrency.unwrap_or(default)
    }

    /// Pool shape of scenarios 1, 2 and 4: one pool, K keys, concurrency C.
    pub fn one_pool(&self) -> Shape {
        Shape {
            pools: 1,
            keys_per_pool: self.keys,
            concurrency: self.concurrency_or(32),
            http2: self.http2,
        }
    }
}

/// Numbers of one scenario: printed as they come, collected for the JSON line.
pub struct Report {
    fields: Map<String, Value>,
}

impl Report {
    pub fn new(name: &str) -> Report {
        println!("\n== {name} ==");
        Report { fields: Map::new() }
    }

    pub fn put(&mut self, key: &str, value: impl Into<Value>, unit: &str) {
        let value = value.into();
        match &value {
            Value::Number(v) if v.is_f64() => {
                println!(
                    "  {key:<34} {:>12.3} {unit}",
                    v.as_f64().unwrap_or(f64::NAN)
                )
            }
            Value::String(s) => println!("  {key:<34} {s:>12} {unit}"),
            other => println!("  {key:<34} {other:>12} {unit}"),
        }
        self.fields.insert(key.into(), value);
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.fields.get(key).and_then(Value::as_f64)
    }

    /// Nest `other`'s numbers under `key` in the JSON line (printed already).
    pub fn nest(&mut self, key: &str, other: Report) {
        self.fields.insert(key.into(), Value::Object(other.fields));
    }
}

fn main() -> ExitCode {
    // `cargo test --all-targets` builds and runs benches too, without the
    // `--bench` flag `cargo bench` passes: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("keyrelay_bench: run with `cargo bench --bench keyrelay_bench -- <scenario>`");
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    match system.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut out = Map::new();
    let mut add = |name: &str, report: Report| {
        out.insert(name.into(), Value::Object(report.fields));
    };
    match args.scenario.as_str() {
        "broker-limit" => add("broker_limit", broker_limit(&args).await?),
        "e2e" => add("e2e", e2e(&args).await?),
        "all" if args.repeat == 1 => {
            let ceiling = broker_limit(&args).await?;
            let mut e2e = e2e(&args).await?;
            let ratio = e2e.get("jobs_per_s").unwrap_or(0.0)
                / ceiling.get("jobs_per_s").unwrap_or(f64::NAN);
            e2e.put("ratio_to_broker_limit", ratio, "(target >= 0.80)");
            add("broker_limit", ceiling);
            add("e2e", e2e);
        }
        "all" => add("all_repeated", all_repeated(&args).await?),
        "ladder" => add("ladder", ladder(&args).await?),
        "many-keys" => add("many_keys", scale::many_keys(&args).await?),
        "backlog-memory" => add("backlog_memory", scale::backlog_memory(&args).await?),
        "quota" => add("quota", quota::quota(&args).await?),
        "priority" => add("priority", priority::priority(&args).await?),
        "fleet" => add("fleet", fleet::fleet(&args).await?),
        "quota-litellm" => add("quota_litellm", quota::quota_litellm(&args).await?),
        "routing" => add("routing", routing()),
        "litellm" => add(
            "litellm",
            compare::run(&args, compare::Worker::Litellm).await?,
        ),
        "celery" => add(
            "celery",
            compare::run(&args, compare::Worker::Celery).await?,
        ),
        "compare" => {
            // keyrelay drains 5,000 jobs in about a second: at least 20,000
            // give it a steady rate, as the slower workers get from any N.
            let steady = Args {
                jobs: Some(args.jobs_or(20_000).max(20_000)),
                ..args.clone()
            };
            let keyrelay = e2e(&steady).await?;
            let litellm = compare::run(&args, compare::Worker::Litellm).await?;
            let celery = compare::run(&args, compare::Worker::Celery).await?;
            let summary =
                compare::summary(&keyrelay, &[("litellm", &litellm), ("celery", &celery)]);
            add("e2e", keyrelay);
            add("litellm", litellm);
            add("celery", celery);
            add("compare", summary);
        }
        other => bail!("unknown scenario {other}"),
    }
    let line = json!({
        "date": jiff::Timestamp::now().to_string(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "scenarios": out,
    });
    println!("\n{line}");
    Ok(())
}

/// Routing a job that must leave its key: `route::decide` over the pool's
/// key states (read from each key's gate as the job task does). (A delivery
/// needs no routing: the broker hands it to a key's consumer, by consumer
/// priority.)
fn routing() -> Report {
    use keyrelay_core::keys::KeyId;
    use keyrelay_core::route::{Candidate, Event, Progress, decide};
    let mut report = Report::new("routing");
    for keys in [4usize, 100, 1000] {
        let pool: Vec<(u8, usize, bool)> = (0..keys)
            .map(|i| ((i % 3) as u8, i * 7 % 32, i % 5 != 0))
            .collect();
        let rounds = 2_000_000 / keys;
        let started = std::time::Instant::now();
        for round in 0..rounds {
            let candidates =
                pool.iter()
                    .enumerate()
                    .map(|(i, &(priority, in_flight, available))| Candidate {
                        id: KeyId(i),
                        priority,
                        in_flight: in_flight + round % 3,
                        concurrency: 32,
                        available,
                        shares_quota: false,
                    });
            let job = Progress {
                on: KeyId(round % keys),
                attempts: 1,
                max_attempts: 3,
            };
            std::hint::black_box(decide(
                Event::RetryDue,
                std::hint::black_box(job),
                candidates,
            ));
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        report.put(
            &format!("route_{keys}_keys_us"),
            per,
            "µs per reroute (key states read + decision)",
        );
    }
    report
}

/// `all --repeat R`: broker-limit and e2e alternately, R times each, so a
/// shared machine's slow minutes hit both alike; the ratio of the medians
/// and each pair's ratio.
async fn all_repeated(args: &Args) -> anyhow::Result<Report> {
    let (mut ceilings, mut rates, mut ratios, mut cpus) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.repeat {
        let ceiling = broker_limit(args)
            .await?
            .get("jobs_per_s")
            .unwrap_or(f64::NAN);
        let e2e = e2e(args).await?;
        let rate = e2e.get("jobs_per_s").unwrap_or(f64::NAN);
        ceilings.push(ceiling);
        rates.push(rate);
        ratios.push(rate / ceiling);
        cpus.push(e2e.get("keyrelay_cpu_s_per_1k_jobs").unwrap_or(f64::NAN));
    }
    let mut report = Report::new(&format!("all x {}", args.repeat));
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    report.put("ratios", list(&ratios), "e2e / broker-limit, each pair");
    report.put("keyrelay_cpu_s_per_1k_jobs", list(&cpus), "each e2e run");
    let (ceiling, rate) = (child::median(ceilings), child::median(rates));
    report.put("broker_limit_median_jobs_per_s", ceiling, "jobs/s");
    report.put("e2e_median_jobs_per_s", rate, "jobs/s");
    report.put("ratio_of_medians", rate / ceiling, "(target >= 0.80)");
    report.put("median_pair_ratio", child::median(ratios), "");
    Ok(report)
}

/// `ladder --repeat R`: the broker loop, then the same loop with a provider
/// call, then with the call and a flushed sled write, then keyrelay; R rounds,
/// alternated. Each rung adds one thing any worker doing keyrelay's job must
/// do, so keyrelay's ratio to the last rung is what its own machinery costs.
/// Every rung folds its acks as keyrelay does (`--folded-acks`), so the
/// comparison is with a bare worker that has that optimisation too.
async fn ladder(args: &Args) -> anyhow::Result<Report> {
    let rungs = [
        ("broker", false, false),
        ("call", true, false),
        ("call_store", true, true),
    ];
    let mut rates = vec![Vec::new(); rungs.len() + 1];
    let mut cpus = vec![Vec::new(); rungs.len() + 1];
    for _ in 0..args.repeat {
        for (i, &(_, call, store)) in rungs.iter().enumerate() {
            let rung = Args {
                call,
                store,
                folded_acks: true,
                ..args.clone()
            };
            let report = broker_limit(&rung).await?;
            rates[i].push(report.get("jobs_per_s").unwrap_or(f64::NAN));
            cpus[i].push(
                report.get("client_cpu_s_per_1k_jobs").unwrap_or(f64::NAN)
                    + report.get("broker_cpu_s_per_1k_jobs").unwrap_or(f64::NAN),
            );
        }
        let report = e2e(args).await?;
        rates[rungs.len()].push(report.get("jobs_per_s").unwrap_or(f64::NAN));
        cpus[rungs.len()].push(
            ["keyrelay", "broker", "mock"]
                .iter()
                .map(|p| {
                    report
                        .get(&format!("{p}_cpu_s_per_1k_jobs"))
                        .unwrap_or(f64::NAN)
                })
                .sum(),
        );
    }
    let mut report = Report::new(&format!("ladder x {}", args.repeat));
    report.put("acks", "folded (multiple) on every rung", "");
    let pairs = rates[rungs.len()]
        .iter()
        .zip(&rates[rungs.len() - 1])
        .map(|(keyrelay, bare)| format!("{:.3}", keyrelay / bare))
        .collect::<Vec<_>>()
        .join(" ");
    report.put("keyrelay_over_call_store_each_round", pairs, "");
    let names = rungs.iter().map(|r| r.0).chain(["keyrelay"]);
    let keyrelay_rate = child::median(rates[rungs.len()].clone());
    for (i, name) in names.enumerate() {
        let rate = child::median(rates[i].clone());
        report.put(&format!("{name}_jobs_per_s"), rate, "jobs/s (median)");
        report.put(
            &format!("{name}_total_cpu_s_per_1k_jobs"),
            child::median(cpus[i].clone()),
            "CPU s, every process (median)",
        );
        if i < rungs.len() {
            report.put(
                &format!("keyrelay_over_{name}"),
                keyrelay_rate / rate,
                "ratio of median jobs/s",
            );
        }
    }
    Ok(report)
}

/// Scenario 1: the same AMQP work as keyrelay with nothing else — a quorum job
/// queue, K consumers with prefetch C on one connection, one shared confirm
/// channel, and per delivery: persistent reply, wait for its confirm, ack.
async fn broker_limit(args: &Args) -> anyhow::Result<Report> {
    let mut env = Env::new(args.one_pool(), args.call).await?;
    let conn = amqp::connect(&amqp_url()).await?;
    let result = broker_limit_run(args, &env, &conn).await;
    amqp::delete_queues(&conn, &env.all_queues()).await;
    let _ = conn.close(200, "done".into()).await;
    env.stop_mock().await;
    result
}

async fn broker_limit_run(
    args: &Args,
    env: &Env,
    conn: &lapin::Connection,
) -> anyhow::Result<Report> {
    let n = args.jobs_or(20_000);
    let shape = args.one_pool();
    let mut report = Report::new("broker-limit");
    let work = Arc::new(bare::BareWork::new(
        bare::Steps {
            call: args.call,
            store: args.store,
            http2: args.http2,
        },
        env.mock.as_ref().map(|m| m.gemini_base_url()),
        &env.key_files(),
    )?);
    let failure = Failure::default();
    report.put("jobs", n, "");
    report.put("per_delivery", work.label(), "");
    report.put(
        "consumers_x_prefetch",
        format!("{} x {}", shape.keys(), shape.concurrency),
        "",
    );
    report.put(
        "acks",
        if args.folded_acks {
            "folded (multiple)"
        } else {
            "one per delivery"
        },
        "",
    );
    amqp::declare_topology(conn, &env.config).await?;
    let (queue, replies) = (env.job_queues()[0].clone(), env.reply_queue());
    let took = amqp::preload(conn, std::slice::from_ref(&queue), n, &replies).await?;
    report.put(
        "preload_jobs_per_s",
        n as f64 / took.as_secs_f64(),
        "jobs/s (confirms pipelined)",
    );
    let settled = child::wait_for_quiet_broker().await;
    report.put(
        "broker_settle_s",
        settled.as_secs_f64(),
        "s waited for the broker to go quiet after the preload",
    );

    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let (mut channels, mut tasks) = (Vec::new(), Vec::new());
    let times = AckTimes::default();
    for k in 0..shape.keys() {
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(shape.concurrency, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("bench-{k}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (publisher, replies, times) = (publisher.clone(), replies.clone(), times.clone());
        let (work, failure) = (work.clone(), failure.clone());
        // `--folded-acks`: keyrelay's own settler for this channel.
        let settler = args
            .folded_acks
            .then(|| Settler::spawn(channel.clone(), &TaskTracker::new()));
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                tokio::spawn(reply_then_ack(
                    publisher.clone(),
                    replies.clone(),
                    delivery,
                    settler.clone(),
                    (work.clone(), k, failure.clone()),
                    (times.clone(), Instant::now()),
                ));
            }
        }));
        channels.push(channel);
    }
    let watch = conn.create_channel().await?;
    let broker = child::broker_pid();
    let own = std::process::id();
    let (mut cpu0, mut broker0) = (0.0, 0.0);
    let window = amqp::wait_for_replies(
        &watch,
        &replies,
        n,
        drain_timeout(n),
        || {
            cpu0 = child::cpu_seconds(own).unwrap_or(0.0);
            broker0 = broker
                .and_then(|p| child::cpu_seconds(p).ok())
                .unwrap_or(0.0);
        },
        |_| failure.check(),
    )
    .await?;
    let cpu = child::cpu_seconds(own)? - cpu0;
    let broker_cpu = broker
        .and_then(|p| child::cpu_seconds(p).ok())
        .unwrap_or(0.0)
        - broker0;
    for channel in &channels {
        let _ = channel.close(200, "drained".into()).await;
    }
    tasks.iter().for_each(|t| t.abort());
    let (jobs, secs) = window.measured(n);
    report.put(
        "measured_jobs",
        jobs,
        "(from the first reply seen to the last)",
    );
    report.put("jobs_per_s", jobs as f64 / secs, "jobs/s");
    report.put(
        "client_cpu_s_per_1k_jobs",
        cpu / jobs as f64 * 1000.0,
        "CPU s (this minimal lapin client, and the mock when it calls one)",
    );
    report.put(
        "broker_cpu_s_per_1k_jobs",
        broker_cpu / jobs as f64 * 1000.0,
        "CPU s (beam.smp)",
    );
    let times = times.sorted_ms();
    for q in [0.5, 0.99] {
        let at = ((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1));
        report.put(
            &format!("delivery_to_ack_p{}_ms", (q * 100.0) as u32),
            times.get(at).copied().unwrap_or(f64::NAN),
            "ms (the broker's round trips alone: compare keyrelay's overhead)",
        );
    }
    Ok(report)
}

/// Delivery-to-ack times of the broker-limit loop, in ms.
#[derive(Clone, Default)]
struct AckTimes(Arc<std::sync::Mutex<Vec<f64>>>);

impl AckTimes {
    fn record(&self, since: Instant) {
        let ms = since.elapsed().as_secs_f64() * 1000.0;
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
    }

    fn sorted_ms(&self) -> Vec<f64> {
        let mut times = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        times.sort_by(f64::total_cmp);
        times
    }
}

async fn reply_then_ack(
    publisher: Channel,
    queue: String,
    delivery: lapin::message::Delivery,
    settler: Option<Settler>,
    (work, consumer, failure): (Arc<bare::BareWork>, usize, Failure),
    (times, received): (AckTimes, Instant),
) {
    let correlation = delivery
        .properties
        .correlation_id()
        .clone()
        .unwrap_or_default();
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_correlation_id(correlation)
        .with_message_id(format!("m-{}", delivery.delivery_tag).into())
        .with_app_id("keyrelay-bench".into());
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirmed = async {
        let body = work.reply(consumer, &delivery.data).await?;
        let body = body.as_deref().unwrap_or(REPLY_BODY);
        let confirm = publisher
            .basic_publish("".into(), queue.as_str().into(), options, body, props)
            .await?
            .await?;
        anyhow::ensure!(
            confirm.is_ack() && confirm.take_message().is_none(),
            "reply not delivered"
        );
        match settler {
            Some(settler) => {
                settler.settle(delivery.delivery_tag, delivery.acker.clone(), Verdict::Ack)
            }
            None => {
                delivery.ack(BasicAckOptions::default()).await?;
            }
        }
        times.record(received);
        Ok(())
    };
    if let Err(e) = confirmed.await {
        // The job keeps its prefetch slot and never gets a reply: end the run
        // now instead of at the drain timeout.
        failure.set(format!("{e:#}"));
    }
}

/// The first error of a broker-limit job; the drain stops on it.
#[derive(Clone, Default)]
struct Failure(Arc<std::sync::OnceLock<String>>);

impl Failure {
    fn set(&self, message: String) {
        let _ = self.0.set(message);
    }

    fn check(&self) -> anyhow::Result<()> {
        match self.0.get() {
            Some(message) => bail!("a job failed: {message}"),
            None => Ok(()),
        }
    }
}

/// Scenario 2: keyrelay (release binary, child process) on the same workload,
/// against the mock provider (in this process) with zero latency and no limits.
async fn e2e(args: &Args) -> anyhow::Result<Report> {
    let mut env = Env::new(args.one_pool(), true).await?;
    let conn = amqp::connect(&amqp_url()).await?;
    let result = e2e_run(args, &env, &conn).await;
    amqp::delete_queues(&conn, &env.all_queues()).await;
    let _ = conn.close(200, "done".into()).await;
    env.stop_mock().await;
    result
}

async fn e2e_run(args: &Args, env: &Env, conn: &lapin::Connection) -> anyhow::Result<Report> {
    let n = args.jobs_or(20_000);
    let shape = args.one_pool();
    let mut report = Report::new("e2e");
    report.put("jobs", n, "");
    report.put(
        "keys_x_concurrency",
        format!("{} x {}", shape.keys(), shape.concurrency),
        "",
    );
    report.put("provider_http", shape.http_version(), "");
    amqp::declare_topology(conn, &env.config).await?;
    let replies = env.reply_queue();
    amqp::preload(conn, &env.job_queues(), n, &replies).await?;
    let settled = child::wait_for_quiet_broker().await;
    report.put(
        "broker_settle_s",
        settled.as_secs_f64(),
        "s waited for the broker to go quiet after the preload",
    );
    let kr = Keyrelay::spawn(
        &env.config_path,
        &env.log_path("keyrelay"),
        env.metrics_addr,
    )?;
    let watch = conn.create_channel().await?;
    let (broker, own) = (child::broker_pid(), std::process::id());
    let (mut cpu0, mut broker0, mut own0) = (0.0, 0.0, 0.0);
    let window = amqp::wait_for_replies(
        &watch,
        &replies,
        n,
        drain_timeout(n),
        || {
            cpu0 = kr.cpu_seconds().unwrap_or(0.0);
            broker0 = broker
                .and_then(|p| child::cpu_seconds(p).ok())
                .unwrap_or(0.0);
            own0 = child::cpu_seconds(own).unwrap_or(0.0);
        },
        |_| child::ensure_running(kr.pid),
    )
    .await?;
    let cpu = kr.cpu_seconds()? - cpu0;
    let broker_cpu = broker
        .and_then(|p| child::cpu_seconds(p).ok())
        .unwrap_or(0.0)
        - broker0;
    let own_cpu = child::cpu_seconds(own)? - own0;
    let (jobs, secs) = window.measured(n);
    report.put(
        "measured_jobs",
        jobs,
        "(from the first reply seen to the last)",
    );
    report.put("jobs_per_s", jobs as f64 / secs, "jobs/s");
    report.put(
        "keyrelay_cpu_s_per_1k_jobs",
        cpu / jobs as f64 * 1000.0,
        "CPU s (keyrelay process)",
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
        "keyrelay_peak_rss_mib",
        kr.peak_rss_kib()? as f64 / 1024.0,
        "MiB (VmHWM)",
    );
    // Acks follow the reply's confirm; give the last ones a moment to be counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (metrics, _) = kr.scrape().await?;
    let overhead = child::histogram_buckets(&metrics, "keyrelay_job_overhead_seconds");
    let ms = |q| child::quantile(&overhead, q).map_or(f64::NAN, |s| s * 1000.0);
    report.put("overhead_p50_ms", ms(0.5), "ms (bucket-interpolated)");
    report.put(
        "overhead_p99_ms",
        ms(0.99),
        "ms (bucket-interpolated; target < 1 ms)",
    );
    // The overhead split: waits on the store and the broker, and keyrelay's own part.
    for stage in ["store", "reply", "keyrelay"] {
        let label = format!("stage=\"{stage}\"");
        let buckets = child::histogram_buckets_with(&metrics, "keyrelay_job_stage_seconds", &label);
        for q in [0.5, 0.99] {
            let value = child::quantile(&buckets, q).map_or(f64::NAN, |s| s * 1000.0);
            report.put(
                &format!("stage_{stage}_p{}_ms", (q * 100.0) as u32),
                value,
                "ms (keyrelay_job_stage_seconds, bucket-interpolated)",
            );
        }
    }
    let upstream = child::histogram_buckets(&metrics, "keyrelay_upstream_duration_seconds");
    let up_ms = |q| child::quantile(&upstream, q).map_or(f64::NAN, |s| s * 1000.0);
    report.put(
        "upstream_p50_ms",
        up_ms(0.5),
        "ms provider call (mock, bucket-interpolated)",
    );
    report.put(
        "upstream_p99_ms",
        up_ms(0.99),
        "ms provider call (mock, bucket-interpolated)",
    );
    let batch = child::histogram_mean(&metrics, "keyrelay_store_flush_batch_size");
    report.put(
        "store_flush_batch_mean",
        batch,
        "results per sled flush (group commit)",
    );
    let flush_ms = 1000.0 * child::histogram_mean(&metrics, "keyrelay_store_flush_seconds");
    report.put(
        "store_flush_mean_ms",
        flush_ms,
        "ms per sled flush (group commit)",
    );
    let jobs_total = child::counter_sum(&metrics, "keyrelay_jobs_total");
    report.put("jobs_total_metric", jobs_total, "");
    report.put(
        "jobs_per_settle_frame",
        jobs_total / child::counter_sum(&metrics, "keyrelay_settle_frames_total").max(1.0),
        "deliveries settled per ack/nack frame (folded acks)",
    );
    report.put(
        "log_warnings",
        scale::log_problems(&env.log_path("keyrelay")),
        "WARN/ERROR lines",
    );
    kr.stop().await?;
    Ok(report)
}

/// Generous: the slowest drains seen were ~1,000 jobs/s.
pub fn drain_timeout(n: usize) -> Duration {
    Duration::from_secs(120 + n as u64 / 200)
}
