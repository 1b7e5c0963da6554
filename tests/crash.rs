//! kill -9: the real `keyrelay` binary, killed with SIGKILL several times while
//! it drains a backlog, restarted on the same sled directory each time.
//!
//! At the end every job has exactly one stored result and at least one correct
//! reply, and the provider was paid at most once per job except for jobs in
//! flight at a kill. `CRASH_JOBS=N` changes the backlog (default 2,000).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{OutputLog, Relay, ReplyQueue, TestKey, TestPool};
use keyrelay::amqp::{Broker, PublishOutcome, Publisher};
use keyrelay_core::job::JobStatus;
use keyrelay_mock::MockSettings;
use lapin::BasicProperties;

/// Kill after every 15% of the jobs have a reply: five kills.
const KILL_EVERY_PERCENT: usize = 15;
const KEYS: usize = 2;
const CONCURRENCY: u16 = 4;

fn prompt(id: &str) -> String {
    format!("crash test job {id}: summarise the number {id}")
}

#[actix::test]
async fn sigkill_mid_run_loses_nothing_and_pays_once() {
    common::init_logs();
    let jobs: usize = std::env::var("CRASH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let keys: Vec<TestKey> = (0..KEYS)
        .map(|i| {
            let name: &'static str = if i == 0 { "k1" } else { "k2" };
            TestKey::new(name, 1).concurrency(CONCURRENCY)
        })
        .collect();
    let pools = vec![TestPool {
        name: "g",
        provider: "gemini",
        keys,
    }];
    let settings = MockSettings {
        latency: Duration::from_millis(10),
        ..MockSettings::default()
    };
    let mock = common::start_mock(&pools, settings).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("kr-crash.{}", uuid::Uuid::now_v7().simple());
    let config_path = common::write_config_file(
        &pools,
        &mock,
        dir.path(),
        &prefix,
        "",
        "shutdown_grace_secs = 10",
    );
    let config = keyrelay_core::config::Config::load(&config_path).unwrap();
    let log: OutputLog = Arc::default();
    let filter = "info,lapin=warn";

    // First run declares the topology; stop it and build a real backlog.
    let relay = Relay::spawn(&config_path, filter, &log).await;
    let status = relay.terminate().await;
    assert!(status.success(), "graceful stop exits 0: {status}");

    let broker = Arc::new(Broker::connect(&common::amqp_url()).await.unwrap());
    let publisher = Publisher::new(broker.clone()).await.unwrap();
    let replies_name = format!("{prefix}.replies");
    let mut replies = ReplyQueue::open(&broker, &replies_name).await;
    let queue = config.job_queue("g");
    let ids: Vec<String> = (0..jobs).map(|i| format!("crash-{i:05}")).collect();
    for id in &ids {
        let body = serde_json::json!({"id": id, "prompt": prompt(id)}).to_string();
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_reply_to(replies_name.as_str().into())
            .with_correlation_id(format!("corr-{id}").into());
        let outcome = publisher
            .publish(&queue, body.as_bytes(), props, true)
            .await
            .unwrap();
        assert_eq!(outcome, PublishOutcome::Delivered);
    }

    // Drain it, killing keyrelay each time another 15% of the jobs are answered.
    let started = Instant::now();
    let mut relay = Some(Relay::spawn(&config_path, filter, &log).await);
    let step = (jobs * KILL_EVERY_PERCENT / 100).max(1);
    let mut next_kill = step;
    let mut kills = 0usize;
    let mut restart_times = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut total_replies = 0usize;
    while seen.len() < jobs {
        let d = replies.next_raw().await;
        total_replies += 1;
        let r: keyrelay_core::job::JobResult = serde_json::from_slice(&d.data).unwrap();
        assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
        let expected = format!("mock answer: {}", prompt(&r.id));
        assert_eq!(
            r.text.as_deref(),
            Some(expected.as_str()),
            "reply for {}",
            r.id
        );
        assert_eq!(
            d.properties.correlation_id().as_ref().map(|c| c.as_str()),
            Some(format!("corr-{}", r.id).as_str())
        );
        *seen.entry(r.id.clone()).or_default() += 1;
        if seen.len() >= next_kill && seen.len() < jobs {
            relay.take().unwrap().kill9().await;
            kills += 1;
            next_kill += step;
            // sled must reopen on the same directory: the restart proves it
            // ("keyrelay running" is logged after Store::open succeeded).
            let t = Instant::now();
            relay = Some(Relay::spawn(&config_path, filter, &log).await);
            restart_times.push(t.elapsed());
        }
    }
    let elapsed = started.elapsed();
    let metrics = relay.as_ref().unwrap().metrics().await;
    let status = relay.take().unwrap().terminate().await;
    assert!(status.success(), "final graceful stop exits 0: {status}");

    // Every job: exactly one stored result, correct for it.
    let store_path = config.store.path.clone();
    let store =
        keyrelay_core::store::Store::open(&store_path).expect("sled reopens after the kills");
    for id in &ids {
        let stored = store
            .result_of("g", id)
            .unwrap()
            .unwrap_or_else(|| panic!("{id} has a stored result"));
        assert_eq!(stored.status, JobStatus::Succeeded);
        assert_eq!(
            stored.text.as_deref(),
            Some(format!("mock answer: {}", prompt(id)).as_str())
        );
    }
    drop(store);
    // The completion index gets one entry per persisted result: more entries
    // than jobs would mean a job was completed (stored) more than once.
    let persisted = count_index_entries(&store_path).await;

    let total_concurrency = KEYS * CONCURRENCY as usize;
    let bound = kills * total_concurrency;
    let stats = mock.stats();
    let paid: HashMap<&str, u32> = ids
        .iter()
        .map(|id| (id.as_str(), stats.successes_for(&prompt(id))))
        .collect();
    let unpaid = paid.values().filter(|n| **n == 0).count();
    let paid_twice = paid.values().filter(|n| **n > 1).count();
    let extra_calls: u32 = paid.values().map(|n| n.saturating_sub(1)).sum();
    let duplicate_replies = total_replies - jobs;
    let dup_jobs = seen.values().filter(|n| **n > 1).count();
    let answered_from_store =
        common::metric_sum(&metrics, "keyrelay_jobs_answered_from_store_total");
    println!(
        "crash: jobs={jobs} kills={kills} elapsed={elapsed:?} restarts={restart_times:?} \
         replies={total_replies} duplicate_replies={duplicate_replies} jobs_replied_twice+={dup_jobs} \
         paid_twice={paid_twice} extra_paid_calls={extra_calls} persisted_index_entries={persisted} \
         answered_from_store(last run)={answered_from_store} bound={bound}"
    );
    assert_eq!(kills, (100 - 1) / KILL_EVERY_PERCENT, "the kills happened");
    assert_eq!(unpaid, 0, "every job was paid for (it has a reply)");
    assert!(
        paid_twice <= bound && extra_calls as usize <= bound,
        "paid twice: {paid_twice} jobs, {extra_calls} extra calls; bound {bound}"
    );
    assert!(
        duplicate_replies <= bound,
        "{duplicate_replies} duplicate replies; bound {bound}"
    );
    assert!(persisted >= jobs.saturating_sub(bound) && persisted <= jobs + bound);
    assert_eq!(
        stats.total().successes as usize,
        jobs + extra_calls as usize,
        "no provider call for anything but these jobs"
    );

    let mut queues = common::keyrelay_queues(&config);
    queues.push(replies_name);
    common::delete_queues(&broker, &queues).await;
    broker.close().await.unwrap();
    mock.stop().await;
}

/// Entries in sled's `results_by_time` tree (one per persisted result).
async fn count_index_entries(path: &std::path::Path) -> usize {
    let path = path.to_path_buf();
    // Store handles close asynchronously; sled waits for its lock.
    tokio::task::spawn_blocking(move || {
        let db = open_with_retry(&path);
        db.open_tree("results_by_time").unwrap().len()
    })
    .await
    .unwrap()
}

fn open_with_retry(path: &std::path::Path) -> sled::Db {
    let deadline = Instant::now() + common::WAIT;
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if Instant::now() < deadline => {
                // Only the lock of the handle just dropped can be busy here.
                assert!(e.to_string().contains("lock"), "{e}");
                std::thread::yield_now();
            }
            Err(e) => panic!("sled does not reopen: {e}"),
        }
    }
}

/// SIGTERM the moment keyrelay says it is running (its consumers may already
/// have jobs): a graceful stop with exit status 0, not death by the signal.
#[actix::test]
async fn sigterm_right_after_start_is_graceful() {
    let pools = vec![TestPool {
        name: "t",
        provider: "gemini",
        keys: vec![TestKey::new("k", 1)],
    }];
    let mock = common::start_mock(&pools, MockSettings::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("kr-term.{}", uuid::Uuid::now_v7().simple());
    let config_path = common::write_config_file(&pools, &mock, dir.path(), &prefix, "", "");
    let config = keyrelay_core::config::Config::load(&config_path).unwrap();
    let log: OutputLog = Arc::default();
    for round in 0..5 {
        let relay = Relay::spawn(&config_path, "info,lapin=warn", &log).await;
        let status = relay.terminate().await;
        assert!(status.success(), "round {round}: {status}\n{}", log.text());
    }
    let broker = Broker::connect(&common::amqp_url()).await.unwrap();
    let queues = common::keyrelay_queues(&config);
    common::delete_queues(&broker, &queues).await;
    broker.close().await.unwrap();
    mock.stop().await;
}
