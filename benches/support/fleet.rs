//! Scenario `fleet`: several keyrelay processes on one broker (issue 21).
//! For 1, 2 and 3 instances: start them, wait until they share the keys,
//! publish N jobs and time the drain. Then, with 3 instances draining a
//! backlog, SIGKILL one and time until the survivors drive every key.
//!
//! Every process runs on the same machine as the broker and the mock: on two
//! cores the instances share the CPU, so this shows what coordination costs
//! and how fast keys move, not how a fleet on several hosts scales.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::child::{self, Keyrelay};
use crate::setup::{Env, Shape, amqp_url};
use crate::{Args, Report, amqp, drain_timeout};

/// Fleet sizes measured.
const SIZES: [usize; 3] = [1, 2, 3];

pub async fn fleet(args: &Args) -> anyhow::Result<Report> {
    let n = args.jobs_or(20_000);
    let shape = Shape {
        pools: 1,
        // Six keys share out evenly over 1, 2 and 3 instances.
        keys_per_pool: if args.keys == 4 { 6 } else { args.keys },
        concurrency: args.concurrency_or(32),
        http2: args.http2,
    };
    let mut report = Report::new("fleet");
    report.put("jobs", n, "");
    report.put(
        "keys_x_concurrency",
        format!("{} x {}", shape.keys(), shape.concurrency),
        "",
    );
    for size in SIZES {
        let (jobs_per_s, cpu) = drain_with(shape, size, n).await?;
        report.put(
            &format!("instances_{size}_jobs_per_s"),
            jobs_per_s,
            "jobs/s",
        );
        report.put(
            &format!("instances_{size}_keyrelay_cpu_s_per_1k_jobs"),
            cpu,
            "CPU s, all keyrelay processes",
        );
    }
    let one = report.get("instances_1_jobs_per_s").unwrap_or(f64::NAN);
    for size in [2, 3] {
        let many = report
            .get(&format!("instances_{size}_jobs_per_s"))
            .unwrap_or(f64::NAN);
        report.put(&format!("ratio_{size}_to_1"), many / one, "");
    }
    let failover = failover(shape, n).await?;
    report.put(
        "failover_s",
        failover.as_secs_f64(),
        "s from SIGKILL until survivors drive every key",
    );
    Ok(report)
}

/// `size` instances on fresh queues: the drain's jobs/s and their CPU per 1,000 jobs.
async fn drain_with(shape: Shape, size: usize, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut env = Env::new(shape, true).await?;
    let conn = amqp::connect(&amqp_url()).await?;
    let result = async {
        amqp::declare_topology(&conn, &env.config).await?;
        let fleet = start(&env, size, shape.keys()).await?;
        let replies = env.reply_queue();
        amqp::preload(&conn, &env.job_queues(), n, &replies).await?;
        let watch = conn.create_channel().await?;
        let mut cpu0 = 0.0;
        let window = amqp::wait_for_replies(
            &watch,
            &replies,
            n,
            drain_timeout(n),
            || cpu0 = fleet.iter().map(|k| k.cpu_seconds().unwrap_or(0.0)).sum(),
            |_| fleet.iter().try_for_each(|k| child::ensure_running(k.pid)),
        )
        .await?;
        let cpu: f64 = fleet
            .iter()
            .map(|k| k.cpu_seconds().unwrap_or(0.0))
            .sum::<f64>()
            - cpu0;
        let (jobs, secs) = window.measured(n);
        for kr in fleet {
            kr.stop().await?;
        }
        Ok((jobs as f64 / secs, cpu / jobs as f64 * 1000.0))
    }
    .await;
    amqp::delete_queues(&conn, &keyrelay_queues(&env)).await;
    let _ = conn.close(200, "done".into()).await;
    env.stop_mock().await;
    result
}

/// Three instances draining a backlog; one is SIGKILLed a third of the way
/// through: how long until the other two drive every key.
async fn failover(shape: Shape, n: usize) -> anyhow::Result<Duration> {
    let mut env = Env::new(shape, true).await?;
    let conn = amqp::connect(&amqp_url()).await?;
    let result = async {
        amqp::declare_topology(&conn, &env.config).await?;
        let mut fleet = start(&env, 3, shape.keys()).await?;
        let replies = env.reply_queue();
        amqp::preload(&conn, &env.job_queues(), n, &replies).await?;
        let watch = conn.create_channel().await?;
        amqp::wait_for_replies(&watch, &replies, n / 3, drain_timeout(n), || {}, |_| Ok(()))
            .await?;
        let victim = fleet.remove(1);
        let killed = Instant::now();
        victim.kill().await?;
        let taken = loop {
            if driven(&fleet).await.iter().sum::<usize>() == shape.keys() {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("the survivors did not take every key within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        amqp::wait_for_replies(&watch, &replies, n, drain_timeout(n), || {}, |_| Ok(())).await?;
        for kr in fleet {
            kr.stop().await?;
        }
        Ok(taken)
    }
    .await;
    amqp::delete_queues(&conn, &keyrelay_queues(&env)).await;
    let _ = conn.close(200, "done".into()).await;
    env.stop_mock().await;
    result
}

/// Start `size` instances (own store, port and name each) and wait until
/// each drives its share of `keys`.
async fn start(env: &Env, size: usize, keys: usize) -> anyhow::Result<Vec<Keyrelay>> {
    let mut fleet = Vec::new();
    for i in 0..size {
        let addr = crate::setup::free_port()?;
        let store = env.dir.path().join(format!("store-{i}"));
        let envs = [
            ("KEYRELAY__INSTANCE__NAME", format!("bench-{i}")),
            ("KEYRELAY__STORE__PATH", store.display().to_string()),
            ("KEYRELAY__METRICS__LISTEN", addr.to_string()),
        ];
        let log = env.log_path(&format!("keyrelay-{i}"));
        let mut kr = Keyrelay::spawn_with(&env.config_path, &log, addr, &envs)?;
        kr.wait_http(Duration::from_secs(30)).await?;
        fleet.push(kr);
    }
    let started = Instant::now();
    let (low, high) = (keys / size, keys.div_ceil(size));
    loop {
        let held = driven(&fleet).await;
        if held.iter().sum::<usize>() == keys && held.iter().all(|h| (low..=high).contains(h)) {
            return Ok(fleet);
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{size} instances did not share {keys} keys within 60 s: {held:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `keyrelay_keys_driven` of each instance (0 for one that does not answer).
async fn driven(fleet: &[Keyrelay]) -> Vec<usize> {
    let mut held = Vec::new();
    for kr in fleet {
        let metrics = kr.scrape().await.map(|(m, _)| m).unwrap_or_default();
        held.push(child::counter_sum(&metrics, "keyrelay_keys_driven") as usize);
    }
    held
}

/// The run's queues (the per-key state queues included).
fn keyrelay_queues(env: &Env) -> Vec<String> {
    env.all_queues()
}
