//! Soak: the release binary at steady load with random provider faults, its
//! memory (VmRSS) and open file descriptors sampled every 10 s. Not part of the
//! default test run; `scripts/soak.sh [--minutes N]` runs it as
//! `cargo test --release --test soak -- --ignored --nocapture`.
//!
//! Settings (environment): SOAK_MINUTES (20), SOAK_RATE jobs/s (40),
//! SOAK_FAULT_RATE (0.05), SOAK_SAMPLE_SECS (10).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{OutputLog, Relay, ReplyQueue, TestKey, TestPool};
use keyrelay::amqp::{Broker, PublishOutcome, Publisher};
use keyrelay_core::job::JobStatus;
use keyrelay_mock::MockSettings;
use lapin::BasicProperties;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: u64,
    published: usize,
    replied: usize,
    rss_kib: u64,
    fds: usize,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[actix::test]
#[ignore = "soak: minutes long; run with scripts/soak.sh"]
async fn soak_steady_load_with_faults() {
    common::init_logs();
    let minutes: f64 = env_or("SOAK_MINUTES", 20.0);
    let rate: f64 = env_or("SOAK_RATE", 40.0);
    let fault_rate: f64 = env_or("SOAK_FAULT_RATE", 0.05);
    let sample_every = Duration::from_secs(env_or("SOAK_SAMPLE_SECS", 10));
    let duration = Duration::from_secs_f64(minutes * 60.0);

    let pools = vec![TestPool {
        name: "s",
        provider: "gemini",
        keys: vec![
            // The preferred key hits its per-minute limit now and then.
            TestKey::new("k1", 1)
                .mock(|k| k.with_rpm((rate * 40.0) as u32))
                .concurrency(8),
            TestKey::new("k2", 1).concurrency(8),
            TestKey::new("k3", 2).concurrency(4),
        ],
    }];
    let settings = MockSettings {
        latency: Duration::from_millis(20),
        fault_rate,
        ..MockSettings::default()
    };
    let mock = common::start_mock(&pools, settings).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("kr-soak.{}", uuid::Uuid::now_v7().simple());
    let config_path = common::write_config_file(&pools, &mock, dir.path(), &prefix, "", "");
    let config = keyrelay_core::config::Config::load(&config_path).unwrap();
    let log: OutputLog = Arc::default();
    let relay = Relay::spawn(&config_path, "warn,lapin=error,keyrelay::app=info", &log).await;
    let pid = relay.pid;
    println!(
        "soak: {minutes} min at {rate} jobs/s, fault_rate {fault_rate}, binary {}, pid {pid}",
        env!("CARGO_BIN_EXE_keyrelay")
    );

    let broker = Arc::new(Broker::connect(&common::amqp_url()).await.unwrap());
    let publisher = Arc::new(Publisher::new(broker.clone()).await.unwrap());
    let replies_name = format!("{prefix}.replies");
    let mut replies = ReplyQueue::open(&broker, &replies_name).await;
    let published = Arc::new(AtomicUsize::new(0));
    let queue = config.job_queue("s");

    // Producer: a steady rate until the duration is over.
    let producer = {
        let publisher = publisher.clone();
        let published = published.clone();
        let replies_name = replies_name.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0usize;
            while started.elapsed() < duration {
                tick.tick().await;
                let id = format!("soak-{n:07}");
                let body = serde_json::json!({"id": id, "prompt": format!("soak job {id}")});
                let props = BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2)
                    .with_reply_to(replies_name.as_str().into());
                let outcome = publisher
                    .publish(&queue, body.to_string().as_bytes(), props, true)
                    .await
                    .unwrap();
                assert_eq!(outcome, PublishOutcome::Delivered);
                n += 1;
                published.store(n, Ordering::Release);
            }
            n
        })
    };

    // Replies are read by their own task: `ReplyQueue::next` acks after taking
    // a delivery, so cancelling it in the select below (when the sampler
    // ticks) could drop a reply it had already taken. A channel's `recv` is
    // cancel-safe.
    let (reply_tx, mut reply_rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            let r = replies.next().await;
            if reply_tx.send(r).is_err() {
                return;
            }
        }
    });

    // Consumer + sampler until every published job has a reply.
    let started = Instant::now();
    let mut sampler = tokio::time::interval(sample_every);
    let mut samples: Vec<Sample> = Vec::new();
    let mut seen: HashMap<String, JobStatus> = HashMap::new();
    let mut duplicates = 0usize;
    let mut producer = Some(producer);
    let mut total = None;
    loop {
        if let Some(n) = total
            && seen.len() >= n
        {
            break;
        }
        tokio::select! {
            Some(r) = reply_rx.recv() => {
                if seen.insert(r.id.clone(), r.status).is_some() {
                    duplicates += 1;
                }
            }
            _ = sampler.tick() => {
                let s = Sample {
                    at_s: started.elapsed().as_secs(),
                    published: published.load(Ordering::Acquire),
                    replied: seen.len(),
                    rss_kib: rss_kib(pid),
                    fds: fds(pid),
                };
                println!(
                    "soak t={:>5}s published={:>7} replied={:>7} rss={:>7.1} MiB fds={}",
                    s.at_s, s.published, s.replied, s.rss_kib as f64 / 1024.0, s.fds
                );
                assert!(s.rss_kib > 0, "keyrelay (pid {pid}) is gone:\n{}", log.text());
                // Retries back off for seconds, not minutes: replies still
                // missing this long after the producer stopped are lost.
                assert!(
                    started.elapsed() < duration + Duration::from_secs(300),
                    "{} of {} replies after the producer stopped + 5 min",
                    s.replied,
                    s.published
                );
                samples.push(s);
            }
            n = async { producer.as_mut().unwrap().await }, if producer.is_some() => {
                producer = None;
                total = Some(n.unwrap());
            }
        }
    }
    reader.abort();
    let total = total.unwrap();
    let metrics = relay.metrics().await;
    let status = relay.terminate().await;
    assert!(status.success(), "{status}");

    let store = keyrelay_core::store::Store::open(&config.store.path).unwrap();
    let mut missing = 0;
    for n in 0..total {
        if store
            .result_of("s", &format!("soak-{n:07}"))
            .unwrap()
            .is_none()
        {
            missing += 1;
        }
    }
    let failed = seen.values().filter(|s| **s == JobStatus::Failed).count();
    let stats = mock.stats();
    // Warm-up: compare against the first sample after one minute (or the second).
    let warm = samples
        .iter()
        .find(|s| s.at_s >= 60)
        .or(samples.get(1))
        .copied()
        .unwrap();
    let last = *samples.last().unwrap();
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap();
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap();
    println!(
        "soak summary: jobs={total} replied={} duplicates={duplicates} failed(upstream)={failed} \
         missing_in_store={missing} faults_injected={} rate_limited={} retries={} \
         rss_warm={:.1} MiB rss_last={:.1} MiB rss_max={:.1} MiB fds_warm={} fds_last={} fds_max={max_fds} \
         worker_restarts={} acks_lost={}",
        seen.len(),
        stats.total().faults,
        stats.total().rate_limited,
        common::metric_sum(&metrics, "keyrelay_reroutes_total"),
        warm.rss_kib as f64 / 1024.0,
        last.rss_kib as f64 / 1024.0,
        max_rss as f64 / 1024.0,
        warm.fds,
        last.fds,
        common::metric_sum(&metrics, "keyrelay_worker_restarts_total"),
        common::metric_sum(&metrics, "keyrelay_acks_lost_total"),
    );
    assert_eq!(seen.len(), total, "every job answered");
    assert_eq!(missing, 0, "every job stored");
    assert!(
        last.fds <= warm.fds + 8,
        "file descriptors grew: {} -> {}",
        warm.fds,
        last.fds
    );
    assert!(
        last.rss_kib <= warm.rss_kib * 2,
        "memory grew: {} -> {} KiB",
        warm.rss_kib,
        last.rss_kib
    );
    let mut queues = common::keyrelay_queues(&config);
    queues.push(replies_name);
    common::delete_queues(&broker, &queues).await;
    let _ = broker.close().await;
    mock.stop().await;
}
