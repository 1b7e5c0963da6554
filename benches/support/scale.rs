//! Scenarios 3 and 4: many keys (start-up, memory, scrape time) and memory
//! under a large backlog.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::child::{self, Keyrelay};
use crate::setup::{Env, Shape, amqp_url};
use crate::{Args, Report, amqp, drain_timeout};

const MIB: f64 = 1024.0;

/// What keyrelay's start-up asks of the broker, without keyrelay: connect,
/// then for every key at once open a channel, set its prefetch and start a
/// consumer (with keyrelay's `x-priority` argument). Closes the connection.
async fn bare_start(queues: &[String], shape: Shape) -> anyhow::Result<Duration> {
    use lapin::options::{BasicConsumeOptions, BasicQosOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let started = Instant::now();
    let conn = amqp::connect(&amqp_url()).await?;
    let conn = &conn;
    let starts = queues.iter().flat_map(|queue| {
        (0..shape.keys_per_pool).map(move |k| async move {
            let channel = conn.create_channel().await?;
            channel
                .basic_qos(shape.concurrency, BasicQosOptions::default())
                .await?;
            let mut args = FieldTable::default();
            args.insert("x-priority".into(), AMQPValue::LongInt(1));
            channel
                .basic_consume(
                    queue.as_str().into(),
                    format!("bare-{k}").into(),
                    BasicConsumeOptions::default(),
                    args,
                )
                .await?;
            anyhow::Ok(channel)
        })
    });
    let channels = futures_util::future::try_join_all(starts).await?;
    let took = started.elapsed();
    // Closed one by one first: lapin fails a connection whose close races
    // the background close of dropped channels (see `Broker::close`).
    let closes = channels.iter().map(|c| c.close(200, "measured".into()));
    futures_util::future::try_join_all(closes).await?;
    conn.close(200, "measured".into()).await?;
    Ok(took)
}

/// Scenario 3: 1,000 keys in 10 pools.
pub async fn many_keys(args: &Args) -> anyhow::Result<Report> {
    let shape = Shape {
        pools: 10,
        keys_per_pool: 100,
        concurrency: args.concurrency_or(4),
        http2: args.http2,
    };
    let mut env = Env::new(shape, true).await?;
    let conn = amqp::connect(&amqp_url()).await?;
    let result = many_keys_run(args, shape, &env, &conn).await;
    amqp::delete_queues(&conn, &env.all_queues()).await;
    let _ = conn.close(200, "done".into()).await;
    env.stop_mock().await;
    result
}

async fn many_keys_run(
    args: &Args,
    shape: Shape,
    env: &Env,
    conn: &lapin::Connection,
) -> anyhow::Result<Report> {
    let n = args.jobs_or(20_000);
    let mut report = Report::new("many-keys");
    let keys = shape.keys() as u32;
    report.put(
        "keys",
        keys,
        &format!(
            "in {} pools, concurrency {} each",
            shape.pools, shape.concurrency
        ),
    );
    report.put("provider_http", shape.http_version(), "");
    amqp::declare_topology(conn, &env.config).await?;
    let queues = env.job_queues();
    let watch = conn.create_channel().await?;
    let floor = bare_start(&queues, shape).await?;
    report.put(
        "bare_start_s",
        floor.as_secs_f64(),
        "s a bare lapin client takes to connect and start the same consumers (the broker's floor under start-up)",
    );
    while amqp::consumers(&watch, &queues).await? > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut kr = Keyrelay::spawn(
        &env.config_path,
        &env.log_path("keyrelay"),
        env.metrics_addr,
    )?;
    let (startup, polls) = wait_for_consumers(&mut kr, &watch, &queues, keys).await?;
    report.put("startup_s", startup.as_secs_f64(), "s spawn -> 1,000 consumers on a broker new to these keys: 2,000 queues created (passive queue.declare consumer_count, polled every 5 ms)");
    report.put("startup_polls", polls, "polls");
    kr.wait_http(Duration::from_secs(10)).await?;
    report.put(
        "rabbitmqctl_consumers",
        rabbitmqctl_consumers(&env.prefix).await,
        "consumers listed by rabbitmqctl (cross-check)",
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    report.put(
        "idle_rss_mib",
        kr.rss_kib()? as f64 / MIB,
        "MiB VmRSS 2 s after start-up (target < 64 MiB)",
    );
    let (idle_scrape, idle_bytes) = scrape_median(&kr).await?;
    report.put(
        "idle_scrape_ms",
        idle_scrape,
        "ms median of 20 GET /metrics",
    );
    report.put("idle_scrape_kib", idle_bytes as f64 / 1024.0, "KiB body");

    let replies = env.reply_queue();
    let publisher = {
        let (queues, replies) = (queues.clone(), replies.clone());
        tokio::spawn(async move {
            let conn = amqp::connect(&amqp_url()).await?;
            let took = amqp::preload(&conn, &queues, n, &replies).await;
            let _ = conn.close(200, "published".into()).await;
            took
        })
    };
    let mut peak = 0;
    let window = amqp::wait_for_replies(
        &watch,
        &replies,
        n,
        drain_timeout(n),
        || {},
        |_| {
            child::ensure_running(kr.pid)?;
            peak = peak.max(kr.rss_kib().unwrap_or(0));
            Ok(())
        },
    )
    .await?;
    publisher.await??;
    let (jobs, secs) = window.measured(n);
    report.put(
        "load_jobs",
        n,
        "jobs published round-robin over the 10 pools while draining",
    );
    report.put("load_jobs_per_s", jobs as f64 / secs, "jobs/s");
    report.put(
        "load_peak_rss_mib",
        peak as f64 / MIB,
        "MiB max VmRSS sampled every 20 ms",
    );
    report.put(
        "end_rss_mib",
        kr.rss_kib()? as f64 / MIB,
        "MiB VmRSS after the drain",
    );
    let (scrape, bytes) = scrape_median(&kr).await?;
    report.put(
        "loaded_scrape_ms",
        scrape,
        "ms median of 20 GET /metrics, every series populated (target < 10 ms)",
    );
    report.put("loaded_scrape_kib", bytes as f64 / 1024.0, "KiB body");
    report.put(
        "log_warnings",
        log_problems(&env.log_path("keyrelay")),
        "WARN/ERROR lines",
    );
    kr.stop().await?;

    // A restart: the keys' state queues exist; only the leases are new.
    while amqp::consumers(&watch, &queues).await? > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut kr = Keyrelay::spawn(
        &env.config_path,
        &env.log_path("keyrelay-restart"),
        env.metrics_addr,
    )?;
    let (restart, _) = wait_for_consumers(&mut kr, &watch, &queues, keys).await?;
    report.put(
        "restart_s",
        restart.as_secs_f64(),
        "s spawn -> 1,000 consumers when the same config starts again (target < 1 s)",
    );
    kr.stop().await?;
    Ok(report)
}

/// Time from spawn until `keys` consumers are on `queues`, and the polls.
async fn wait_for_consumers(
    kr: &mut Keyrelay,
    watch: &lapin::Channel,
    queues: &[String],
    keys: u32,
) -> anyhow::Result<(Duration, u32)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut polls = 0;
    while amqp::consumers(watch, queues).await? < keys {
        kr.check_alive()?;
        if Instant::now() > deadline {
            bail!("not all {keys} consumers active after 60 s");
        }
        polls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((kr.spawned.elapsed(), polls))
}

/// Median time of 20 scrapes (ms) and the body size.
async fn scrape_median(kr: &Keyrelay) -> anyhow::Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        let (body, took) = kr.scrape().await?;
        bytes = body.len();
        times.push(took.as_secs_f64() * 1000.0);
    }
    Ok((child::median(times), bytes))
}

async fn rabbitmqctl_consumers(prefix: &str) -> usize {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(["list_consumers", "-q", "queue_name"])
        .output()
        .await;
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with(prefix))
            .count(),
        Err(_) => 0,
    }
}

/// Scenario 4: the same keyrelay drains a backlog of N/10, then (fresh queues,
/// fresh store, fresh process) one of N; peak memory must not grow with N.
pub async fn backlog_memory(args: &Args) -> anyhow::Result<Report> {
    let large = args.jobs_or(100_000);
    let mut report = Report::new("backlog-memory");
    let mut peaks = Vec::new();
    for (label, n) in [("small", large / 10), ("large", large)] {
        let mut env = Env::new(args.one_pool(), true).await?;
        let conn = amqp::connect(&amqp_url()).await?;
        let result = backlog_drain(&mut report, label, n, &env, &conn).await;
        amqp::delete_queues(&conn, &env.all_queues()).await;
        let _ = conn.close(200, "done".into()).await;
        env.stop_mock().await;
        peaks.push(result?);
    }
    report.put(
        "peak_rss_growth",
        peaks[1] / peaks[0],
        "x (large / small peak VmRSS)",
    );
    Ok(report)
}

/// Preload `n`, start keyrelay, sample VmRSS every 20 ms until drained.
/// Returns the peak RSS in MiB.
async fn backlog_drain(
    report: &mut Report,
    label: &str,
    n: usize,
    env: &Env,
    conn: &lapin::Connection,
) -> anyhow::Result<f64> {
    amqp::declare_topology(conn, &env.config).await?;
    let replies = env.reply_queue();
    amqp::preload(conn, &env.job_queues(), n, &replies).await?;
    let kr = Keyrelay::spawn(
        &env.config_path,
        &env.log_path("keyrelay"),
        env.metrics_addr,
    )?;
    let watch = conn.create_channel().await?;
    let (mut samples, mut peak) = (Vec::new(), 0);
    let window = amqp::wait_for_replies(
        &watch,
        &replies,
        n,
        drain_timeout(n),
        || {},
        |_| {
            child::ensure_running(kr.pid)?;
            let rss = kr.rss_kib().unwrap_or(0);
            peak = peak.max(rss);
            samples.push(rss);
            Ok(())
        },
    )
    .await?;
    let (jobs, secs) = window.measured(n);
    let quarter = |i: usize| samples[(samples.len() - 1) * i / 4] as f64 / MIB;
    report.put(&format!("{label}_jobs"), n, "jobs preloaded");
    report.put(&format!("{label}_jobs_per_s"), jobs as f64 / secs, "jobs/s");
    report.put(
        &format!("{label}_peak_rss_mib"),
        peak as f64 / MIB,
        "MiB max VmRSS while draining",
    );
    report.put(
        &format!("{label}_rss_quartiles_mib"),
        format!(
            "{:.1}/{:.1}/{:.1}/{:.1}",
            quarter(1),
            quarter(2),
            quarter(3),
            quarter(4)
        ),
        "MiB VmRSS at 25/50/75/100 % of the drain time",
    );
    report.put(
        &format!("{label}_store_mib"),
        env.store_bytes() as f64 / MIB / MIB,
        "MiB sled directory",
    );
    report.put(
        &format!("{label}_log_warnings"),
        log_problems(&env.log_path("keyrelay")),
        "WARN/ERROR lines",
    );
    kr.stop().await?;
    Ok(peak as f64 / MIB)
}

/// WARN and ERROR lines in keyrelay's log (a clean run has none).
pub fn log_problems(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|log| {
            log.lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .count()
        })
        .unwrap_or(0)
}
