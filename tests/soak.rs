//! Soak: the release binary at steady mixed load — random provider faults, a
//! key with a per-minute limit, a key whose quota runs out every minute (its
//! jobs reroute), and one broker restart half-way — with its memory (VmRSS),
//! open file descriptors, store size on disk and job-queue depth sampled every
//! 10 s. Not part of the default test run; `scripts/soak.sh [--minutes N]` runs
//! it as `cargo test --release --test soak -- --ignored --nocapture`. It
//! restarts the local RabbitMQ (`rabbitmqctl stop_app` / `start_app`), so it
//! runs alone.
//!
//! Settings (environment): SOAK_MINUTES (20), SOAK_RATE jobs/s (40),
//! SOAK_FAULT_RATE (0.05), SOAK_SAMPLE_SECS (10), SOAK_BROKER_RESTART (1),
//! SOAK_CACHE (1; 0 runs with `jobs.cache_by_default = false`: the response
//! cache keeps every answer for an hour by default, which memory shows).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{OutputLog, Relay, TestKey, TestPool};
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
    /// The sled directory's size on disk.
    store_bytes: u64,
    /// Messages ready in the pool's job queue (None while the broker is down).
    depth: Option<u32>,
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Ready messages in `queue` (a passive declare), if the broker answers.
async fn queue_depth(broker: &Broker, queue: &str) -> Option<u32> {
    let channel = broker.channel().await.ok()?;
    let options = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = channel
        .queue_declare(queue.into(), options, lapin::types::FieldTable::default())
        .await
        .ok()?;
    let _ = channel.close(200, "sampled".into()).await;
    Some(declared.message_count())
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
}

/// Publish one job, through broker restarts: retried (on a fresh publisher)
/// until the broker confirms it.
async fn publish_until_confirmed(
    broker: &Arc<Broker>,
    publisher: &mut Arc<Publisher>,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) {
    loop {
        match publisher.publish(queue, body, props.clone(), true).await {
            Ok(PublishOutcome::Delivered) => return,
            outcome => {
                eprintln!("soak: publish not confirmed ({outcome:?}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(fresh) = Publisher::new(broker.clone()).await {
                    *publisher = Arc::new(fresh);
                }
            }
        }
    }
}

/// Read replies from the durable `queue` for ever, reconnecting after a broker
/// restart; each decoded reply goes to `tx` after it is acked.
async fn read_replies(
    broker: Arc<Broker>,
    queue: String,
    tx: tokio::sync::mpsc::UnboundedSender<keyrelay_core::job::JobResult>,
) {
    use futures_util::StreamExt;
    loop {
        let Ok(channel) = broker.channel().await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "soak-replies".into(),
                lapin::options::BasicConsumeOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await;
        let Ok(mut consumer) = consumer else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        while let Some(Ok(delivery)) = consumer.next().await {
            // Counted before the ack: an ack that errors may still have
            // reached the broker (a restart right after it), and a reply
            // seen twice is only a duplicate, while one never seen is "lost".
            let result = serde_json::from_slice(&delivery.data).expect("a contract reply");
            if tx.send(result).is_err() {
                return;
            }
            let acked = delivery
                .ack(lapin::options::BasicAckOptions::default())
                .await;
            if acked.is_err() {
                break; // the broker delivers it again if the ack did not arrive
            }
        }
        eprintln!("soak: reply consumer ended; reconnecting");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
    let broker_restart: u8 = env_or("SOAK_BROKER_RESTART", 1);
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
    // A "day" of one minute: k2's quota, spent every minute below, comes back
    // within the minute (the provider's RetryInfo says when).
    let settings = MockSettings {
        latency: Duration::from_millis(20),
        fault_rate,
        day: Duration::from_secs(50),
        ..MockSettings::default()
    };
    let mock = common::start_mock(&pools, settings).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("kr-soak.{}", uuid::Uuid::now_v7().simple());
    let spent_every_minute = pools[0].keys[1].mock.label.clone();
    let cache: u8 = env_or("SOAK_CACHE", 1);
    let jobs_toml = if cache == 0 {
        "cache_by_default = false"
    } else {
        ""
    };
    let config_path = common::write_config_file(&pools, &mock, dir.path(), &prefix, "", jobs_toml);
    let config = keyrelay_core::config::Config::load(&config_path).unwrap();
    let log: OutputLog = Arc::default();
    // Per-job lines at info (retries, give-ups) so a lost job can be traced.
    let relay = Relay::spawn(
        &config_path,
        "warn,lapin=error,keyrelay::app=info,keyrelay::pipeline=info",
        &log,
    )
    .await;
    let pid = relay.pid;
    println!(
        "soak: {minutes} min at {rate} jobs/s, fault_rate {fault_rate}, binary {}, pid {pid}",
        env!("CARGO_BIN_EXE_keyrelay")
    );

    let broker = Arc::new(Broker::connect(&common::amqp_url()).await.unwrap());
    let publisher = Arc::new(Publisher::new(broker.clone()).await.unwrap());
    let replies_name = format!("{prefix}.replies");
    // A durable reply queue (it outlives the broker restart), read by `read_replies`.
    let channel = broker.channel().await.unwrap();
    channel
        .queue_declare(
            replies_name.as_str().into(),
            lapin::options::QueueDeclareOptions::durable(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = channel.close(200, "declared".into()).await;
    let published = Arc::new(AtomicUsize::new(0));
    let queue = config.job_queue("s");

    // Producer: a steady rate until the duration is over.
    let producer = {
        let mut publisher = publisher.clone();
        let broker = broker.clone();
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
                let body = body.to_string();
                publish_until_confirmed(&broker, &mut publisher, &queue, body.as_bytes(), props)
                    .await;
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
    let reader = tokio::spawn(read_replies(broker.clone(), replies_name.clone(), reply_tx));

    // Disturbances: k2's quota runs out every minute (its jobs reroute), and
    // the broker restarts once, half-way.
    let disturber = {
        let mock_control = format!(
            "http://{}/_mock/keys/{spent_every_minute}/exhaust",
            mock.addr()
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let mut minute = tokio::time::interval(Duration::from_secs(60));
            minute.tick().await;
            let mut restarted = broker_restart == 0;
            let mut events = Vec::new();
            while started.elapsed() < duration {
                minute.tick().await;
                let spent = reqwest::Client::new().post(&mock_control).send().await;
                events.push(format!(
                    "t={}s quota of k2 spent: {}",
                    started.elapsed().as_secs(),
                    spent.is_ok()
                ));
                if !restarted && started.elapsed() >= duration / 2 {
                    restarted = true;
                    let at = started.elapsed().as_secs();
                    tokio::task::spawn_blocking(|| {
                        rabbitmqctl(&["stop_app"]);
                        std::thread::sleep(Duration::from_secs(5));
                        rabbitmqctl(&["start_app"]);
                    })
                    .await
                    .unwrap();
                    events.push(format!(
                        "t={at}s broker restarted (stop_app, 5 s, start_app)"
                    ));
                }
            }
            events
        })
    };

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
                let depth = tokio::time::timeout(Duration::from_secs(2), queue_depth(&broker, &config.job_queue("s")))
                    .await
                    .ok()
                    .flatten();
                let s = Sample {
                    at_s: started.elapsed().as_secs(),
                    published: published.load(Ordering::Acquire),
                    replied: seen.len(),
                    rss_kib: rss_kib(pid),
                    fds: fds(pid),
                    store_bytes: dir_bytes(&config.store.path),
                    depth,
                };
                println!(
                    "soak t={:>5}s published={:>7} replied={:>7} rss={:>7.1} MiB fds={} store={:>7.1} MiB depth={}",
                    s.at_s, s.published, s.replied, s.rss_kib as f64 / 1024.0, s.fds,
                    s.store_bytes as f64 / 1_048_576.0,
                    s.depth.map_or("-".to_owned(), |d| d.to_string())
                );
                assert!(s.rss_kib > 0, "keyrelay (pid {pid}) is gone:\n{}", log.text());
                // Retries back off for seconds, not minutes: replies still
                // missing this long after the producer stopped are lost.
                if started.elapsed() >= duration + Duration::from_secs(300) {
                    let missing: Vec<String> = (0..s.published)
                        .map(|n| format!("soak-{n:07}"))
                        .filter(|id| !seen.contains_key(id))
                        .collect();
                    let text = log.text();
                    let about: Vec<&str> = text
                        .lines()
                        .filter(|l| missing.iter().any(|id| l.contains(id.as_str())))
                        .collect();
                    panic!(
                        "{} of {} replies after the producer stopped + 5 min; missing {missing:?}; \
                         keyrelay's lines about them:\n{}",
                        s.replied,
                        s.published,
                        about.join("\n")
                    );
                }
                samples.push(s);
            }
            n = async { producer.as_mut().unwrap().await }, if producer.is_some() => {
                producer = None;
                total = Some(n.unwrap());
            }
        }
    }
    reader.abort();
    let events = disturber.await.unwrap();
    for e in &events {
        println!("soak event: {e}");
    }
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
    let max_depth = samples.iter().filter_map(|s| s.depth).max().unwrap_or(0);
    let store_per_job = last.store_bytes as f64 / total.max(1) as f64;
    println!(
        "soak summary: jobs={total} replied={} duplicates={duplicates} failed(upstream)={failed} \
         missing_in_store={missing} faults_injected={} rate_limited={} retries={} \
         rss_warm={:.1} MiB rss_last={:.1} MiB rss_max={:.1} MiB fds_warm={} fds_last={} fds_max={max_fds} \
         worker_restarts={} acks_lost={} max_queue_depth={max_depth} \
         store_warm={:.1} MiB store_last={:.1} MiB ({store_per_job:.0} B per stored job) events={}",
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
        warm.store_bytes as f64 / 1_048_576.0,
        last.store_bytes as f64 / 1_048_576.0,
        events.len(),
    );
    assert_eq!(seen.len(), total, "every job answered");
    // The keys' combined capacity is far above the rate: a queue that grows
    // would be a stall, not load.
    assert!(
        u64::from(max_depth) <= (rate * 60.0) as u64,
        "the job queue backed up to {max_depth}"
    );
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
