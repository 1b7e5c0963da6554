//! Scenario 5: quota utilisation. N jobs over K keys that each declare `rpm`
//! R over a sliding window of W seconds, against a mock that enforces exactly
//! that limit with a realistic latency. How close does keyrelay come to the
//! fastest drain the limits allow, and does it ever earn a 429?

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::child::{self, Keyrelay};
use crate::setup::{Env, MockProfile, RateLimit, Shape, amqp_url};
use crate::{Args, Report, amqp, compare};

/// Completion time may exceed the theoretical minimum by this share.
const TARGET_RATIO: f64 = 1.05;

/// The quota run's parameters, from the command line or the defaults (a quick
/// 10-second window; `--window-secs 60` gives the example).
struct Plan {
    jobs: usize,
    shape: Shape,
    limit: RateLimit,
    latency: Duration,
}

impl Plan {
    fn from(args: &Args) -> Plan {
        let rpm = args.rpm.unwrap_or(300);
        Plan {
            jobs: args.jobs_or(2_400),
            shape: Shape {
                pools: 1,
                keys_per_pool: args.keys,
                // A whole window's budget may be in flight at once, so the
                // concurrency is never what holds a key back.
                concurrency: args.concurrency_or(u16::try_from(rpm).unwrap_or(u16::MAX)),
                http2: args.http2,
            },
            limit: RateLimit {
                rpm,
                window: Duration::from_secs(args.window_secs.unwrap_or(10)),
            },
            latency: Duration::from_millis(args.latency_ms.unwrap_or(300)),
        }
    }

    /// Windows the jobs need: every key can make `rpm` calls per window.
    fn windows(&self) -> usize {
        let per_window = self.shape.keys() * self.limit.rpm as usize;
        self.jobs.div_ceil(per_window.max(1))
    }

    /// The fastest any client can drain the jobs: one window's worth at once,
    /// the next a window later, ..., the last one answered one latency after
    /// its window opens.
    fn minimum(&self) -> Duration {
        self.limit.window * (self.windows() as u32 - 1) + self.latency
    }

    /// keyrelay's safety margin on top of the declared window
    /// (`ResetPolicy::budget_window`: window/60, at least 50 ms).
    fn margin(&self) -> Duration {
        (self.limit.window / 60).max(Duration::from_millis(50))
    }

    /// The minimum with keyrelay's margin added to every window it waits out.
    fn minimum_with_margin(&self) -> Duration {
        self.minimum() + self.margin() * (self.windows() as u32 - 1)
    }
}

/// Scenario 5: keyrelay running and consuming, then N jobs published at once.
pub async fn quota(args: &Args) -> anyhow::Result<Report> {
    let plan = Plan::from(args);
    let profile = MockProfile {
        latency: plan.latency,
        limit: Some(plan.limit),
    };
    let mut env = Env::with_mock(plan.shape, Some(profile)).await?;
    let conn = amqp::connect(&amqp_url()).await?;
    let result = quota_run(&plan, &env, &conn).await;
    amqp::delete_queues(&conn, &env.all_queues()).await;
    let _ = conn.close(200, "done".into()).await;
    env.stop_mock().await;
    result
}

async fn quota_run(plan: &Plan, env: &Env, conn: &lapin::Connection) -> anyhow::Result<Report> {
    let mut report = Report::new("quota");
    let (n, keys) = (plan.jobs, plan.shape.keys());
    put_plan(&mut report, plan, "mock enforces, keyrelay declares");
    amqp::declare_topology(conn, &env.config).await?;
    let mut kr = Keyrelay::spawn(
        &env.config_path,
        &env.log_path("keyrelay"),
        env.metrics_addr,
    )?;
    let watch = conn.create_channel().await?;
    wait_for_consumers(&mut kr, &watch, &env.job_queues(), keys as u32).await?;
    kr.wait_http(Duration::from_secs(10)).await?;

    let stats = publish_and_drain(plan, env, &watch, &mut report, || {
        child::ensure_running(kr.pid)
    })
    .await?;

    // The last acks follow the replies' confirms; let the counters settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (metrics, _) = kr.scrape().await?;
    report.put(
        "jobs_succeeded",
        child::counter_matching(&metrics, "keyrelay_jobs_total", "outcome=\"succeeded\""),
        "keyrelay_jobs_total{outcome=\"succeeded\"}",
    );
    report.put(
        "reroutes_budget_spent",
        child::counter_matching(
            &metrics,
            "keyrelay_reroutes_total",
            "reason=\"budget_spent\"",
        ),
        "jobs a spent key passed on",
    );
    report.put(
        "returned_to_broker",
        child::counter_sum(&metrics, "keyrelay_jobs_returned_to_broker_total"),
        "jobs requeued for want of a key with budget",
    );
    let ratio = report.get("ratio_to_min").unwrap_or(f64::INFINITY);
    let met = ratio <= TARGET_RATIO && stats.rate_limited == 0 && stats.successes as usize == n;
    report.put(
        "target_met",
        if met { "yes" } else { "no" },
        &format!("(<= {TARGET_RATIO:.2} x minimum, 0 429s, every job succeeded)"),
    );
    report.put(
        "log_warnings",
        crate::scale::log_problems(&env.log_path("keyrelay")),
        "WARN/ERROR lines",
    );
    kr.stop().await?;
    Ok(report)
}

/// The quota scenario with the LiteLLM Router worker in keyrelay's place, each
/// deployment told its key's `rpm` (usage-based routing). LiteLLM counts rpm
/// per minute, so the window is 60 s.
pub async fn quota_litellm(args: &Args) -> anyhow::Result<Report> {
    if args.window_secs.is_some_and(|w| w != 60) {
        bail!("LiteLLM counts rpm per minute: quota-litellm runs with --window-secs 60");
    }
    let mut plan = Plan::from(args);
    plan.limit.window = Duration::from_secs(60);
    let python = compare::python()?;
    let profile = MockProfile {
        latency: plan.latency,
        limit: Some(plan.limit),
    };
    let mut report = Report::new("quota-litellm");
    put_plan(&mut report, &plan, "mock enforces, the Router is told");
    // As written first (a rate-limited job fails), then with the retry loop
    // a careful author adds: fresh queues and a fresh mock for each.
    for retry_rate_limited in [false, true] {
        let mut env = Env::with_mock(plan.shape, Some(profile)).await?;
        let conn = amqp::connect(&amqp_url()).await?;
        let options = compare::RouterOptions {
            rpm: Some(plan.limit.rpm),
            retry_rate_limited,
        };
        let name = match retry_rate_limited {
            false => "quota-litellm: a rate-limited job fails",
            true => "quota-litellm: rate-limited calls retried when told",
        };
        let result = quota_litellm_run(&plan, &python, &env, &conn, options, name).await;
        amqp::delete_queues(&conn, &env.all_queues()).await;
        let _ = conn.close(200, "done".into()).await;
        env.stop_mock().await;
        let key = if retry_rate_limited { "retry" } else { "fail" };
        report.nest(key, result?);
    }
    Ok(report)
}

async fn quota_litellm_run(
    plan: &Plan,
    python: &std::path::Path,
    env: &Env,
    conn: &lapin::Connection,
    options: compare::RouterOptions,
    name: &str,
) -> anyhow::Result<Report> {
    let mut report = Report::new(name);
    amqp::declare_topology(conn, &env.config).await?;
    let queue = env.job_queues()[0].clone();
    let in_flight = plan.shape.keys() * usize::from(plan.shape.concurrency);
    let worker = compare::Worker::Litellm;
    // One process: without a shared Redis, each Router counts usage in its own
    // memory, so two processes would each allow the keys' whole rpm.
    let mut workers = compare::Workers::spawn(worker, python, env, &queue, in_flight, 1, options)?;
    let watch = conn.create_channel().await?;
    let consumers = u32::try_from(workers.consumers())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while amqp::consumers(&watch, std::slice::from_ref(&queue)).await? < consumers {
        workers.ensure_running()?;
        if Instant::now() > deadline {
            bail!("the LiteLLM worker did not start consuming within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained =
        publish_and_drain(plan, env, &watch, &mut report, || workers.ensure_running()).await;
    workers.kill().await;
    let stats = drained.with_context(|| compare::log_tail(&env.log_path(worker.name())))?;
    let read = compare::read_replies(conn, &env.reply_queue(), plan.jobs, worker).await?;
    read.report(&mut report);
    let succeeded = read.succeeded;
    let ratio = report.get("ratio_to_min").unwrap_or(f64::INFINITY);
    let met = ratio <= TARGET_RATIO && stats.rate_limited == 0 && succeeded == plan.jobs;
    report.put(
        "target_met",
        if met { "yes" } else { "no" },
        &format!(
            "(keyrelay's target: <= {TARGET_RATIO:.2} x minimum, 0 429s, every job succeeded)"
        ),
    );
    Ok(report)
}

/// The run's parameters, first in its report.
fn put_plan(report: &mut Report, plan: &Plan, who_limits: &str) {
    report.put("jobs", plan.jobs, "");
    report.put(
        "keys_x_concurrency",
        format!("{} x {}", plan.shape.keys(), plan.shape.concurrency),
        "",
    );
    report.put(
        "rpm_per_key",
        plan.limit.rpm,
        &format!(
            "per sliding {} s window ({who_limits})",
            plan.limit.window.as_secs()
        ),
    );
    report.put(
        "latency_ms",
        plan.latency.as_millis() as u64,
        "ms per mock answer",
    );
}

/// Publish the N jobs at once and wait for N replies; report how long that
/// took against the theoretical minimum, and what the mock saw. Returns the
/// mock's counts.
async fn publish_and_drain(
    plan: &Plan,
    env: &Env,
    watch: &lapin::Channel,
    report: &mut Report,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<keyrelay_mock::KeyStats> {
    let (n, replies) = (plan.jobs, env.reply_queue());
    let first_publish = Instant::now();
    let publisher = {
        let (queues, replies) = (env.job_queues(), replies.clone());
        tokio::spawn(async move {
            let conn = amqp::connect(&amqp_url()).await?;
            let took = amqp::preload(&conn, &queues, n, &replies).await;
            let _ = conn.close(200, "published".into()).await;
            took
        })
    };
    let timeout = plan.minimum_with_margin() * 2 + Duration::from_secs(60);
    // When the replies of each window's worth of jobs (K x rpm) were all in.
    let per_window = plan.shape.keys() * plan.limit.rpm as usize;
    let mut window_done = Vec::new();
    let window = amqp::wait_for_replies(
        watch,
        &replies,
        n,
        timeout,
        || {},
        |count| {
            while (window_done.len() + 1) * per_window <= count as usize {
                window_done.push(first_publish.elapsed().as_secs_f64());
            }
            alive()
        },
    )
    .await?;
    let publish_took = publisher.await??;
    let took = (window.done - first_publish).as_secs_f64();
    let minimum = plan.minimum().as_secs_f64();
    let ratio = took / minimum;

    report.put(
        "publish_s",
        publish_took.as_secs_f64(),
        "s to publish the N jobs",
    );
    report.put(
        "completion_s",
        took,
        "s first publish -> last reply (polled every 20 ms)",
    );
    report.put(
        "window_replies_done_s",
        window_done
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join("/"),
        "s after the first publish, each K x rpm replies in",
    );
    report.put("windows_needed", plan.windows(), "ceil(N / (K x rpm))");
    report.put(
        "theoretical_min_s",
        minimum,
        "s (windows - 1) x window + latency",
    );
    report.put(
        "margin_s",
        plan.margin().as_secs_f64(),
        "s keyrelay adds to each window (window/60, >= 50 ms)",
    );
    report.put(
        "min_with_margin_s",
        plan.minimum_with_margin().as_secs_f64(),
        "s the best keyrelay can do by design",
    );
    report.put(
        "ratio_to_min",
        ratio,
        &format!("(target <= {TARGET_RATIO:.2})"),
    );
    // The minimum assumes the first window's calls all start at once. A
    // sliding window reopens each slot a window after it was used, so when
    // the first window's answers took a while to come in (the producer's
    // publish, the machine), every later window can end no sooner.
    if let Some(first) = window_done.first().filter(|_| plan.windows() > 1) {
        let waits = (plan.limit.window + plan.margin()).as_secs_f64() * (plan.windows() - 1) as f64;
        report.put(
            "paced_bound_s",
            first + waits,
            "s first window's last reply + (windows - 1) x (window + margin): the sliding window's bound at the first window's pace",
        );
        report.put("ratio_to_paced_bound", took / (first + waits), "");
    }
    let stats = env.mock.as_ref().map(|m| m.stats().total());
    let stats = stats.unwrap_or_default();
    report.put("mock_requests", stats.requests, "requests the mock saw");
    report.put("mock_successes", stats.successes, "");
    report.put(
        "mock_429s",
        stats.rate_limited,
        "per-window 429s (target 0)",
    );
    Ok(stats)
}

/// Wait until the job queues have `want` consumers (every key consuming).
async fn wait_for_consumers(
    kr: &mut Keyrelay,
    watch: &lapin::Channel,
    queues: &[String],
    want: u32,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while amqp::consumers(watch, queues).await? < want {
        kr.check_alive()?;
        if Instant::now() > deadline {
            bail!("not all {want} consumers active after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
