//! Breaking things on purpose: the broker connection cut mid-run, shutdown
//! with jobs in flight. Nothing may be lost.

mod common;

use std::time::Duration;

use common::{TestEnv, TestKey, TestPool, close_service_connection};
use keyrelay_core::job::JobStatus;
use keyrelay_mock::MockSettings;
use serde_json::json;

#[actix::test]
async fn connection_cut_mid_run_loses_nothing() {
    let settings = MockSettings {
        latency: Duration::from_millis(30),
        ..MockSettings::default()
    };
    let mut env = TestEnv::start_with(
        vec![TestPool {
            name: "g",
            provider: "gemini",
            keys: vec![
                TestKey::new("k1", 1).concurrency(3),
                TestKey::new("k2", 2).concurrency(3),
            ],
        }],
        settings,
        "",
    )
    .await;
    let ids: Vec<String> = (0..60).map(|i| format!("j{i}")).collect();
    for id in &ids {
        env.publish("g", &json!({"id": id, "prompt": format!("prompt {id}")}))
            .await;
    }
    // Cut the connection once work is under way.
    let (first, _) = env.next_reply().await;
    close_service_connection(&env.config);
    let (replies, duplicates) = env.replies_for(&ids, vec![first]).await;
    for (id, r) in &replies {
        assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
        assert_eq!(
            r.text.as_deref(),
            Some(format!("mock answer: prompt {id}").as_str())
        );
    }
    // Only jobs in flight at the cut may have been answered (or paid) twice.
    let stats = env.mock.stats();
    let paid_twice = stats
        .successes_by_prompt
        .values()
        .filter(|n| **n > 1)
        .count();
    assert!(paid_twice <= 6, "{paid_twice} jobs paid twice");
    assert!(duplicates <= 12, "{duplicates} duplicate replies");
    assert!(stats.successes_by_prompt.values().all(|n| *n <= 2));
    // keyrelay is consuming again on both keys.
    tokio::time::timeout(common::WAIT, env.app().wait_for_consumers(2))
        .await
        .unwrap();
    env.finish().await;
}

#[actix::test]
async fn graceful_shutdown_finishes_in_flight_jobs() {
    let (mut env, app) = four_of_ten_jobs_in_flight().await;
    let started = std::time::Instant::now();
    app.shutdown(Duration::from_secs(10)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within the deadline"
    );
    // The four in flight finished and were answered; the rest wait in the queue.
    let finished = env.replies(4).await;
    assert!(finished.values().all(|r| r.status == JobStatus::Succeeded));
    let channel = env.broker.channel().await.unwrap();
    let queue = channel
        .queue_declare(
            env.queue("g").as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        queue.message_count(),
        6,
        "unstarted jobs are back in the queue, none unacked"
    );
    env.finish().await;
}

#[actix::test]
async fn shutdown_right_after_a_connection_loss_ends() {
    let (env, app) = four_of_ten_jobs_in_flight().await;
    // The connection dies with four jobs in flight; shutdown starts at once.
    let config = env.config.clone();
    tokio::task::spawn_blocking(move || close_service_connection(&config))
        .await
        .unwrap();
    // Every step must finish on its own: none may need its 10 s limit.
    let shutdown = app.shutdown(Duration::from_secs(3));
    let limit = Duration::from_secs(60);
    match tokio::time::timeout(limit, shutdown).await {
        Ok(stopped) => stopped.unwrap(),
        Err(_) => panic!("shutdown still running after {limit:?}"),
    }
    env.finish().await;
}

/// One key with four slots, ten jobs queued, the provider answering after
/// 400 ms; returns once all four slots are busy, with the app taken out of the
/// environment for the test to shut down.
async fn four_of_ten_jobs_in_flight() -> (TestEnv, keyrelay::app::App) {
    let settings = MockSettings {
        latency: Duration::from_millis(400),
        ..MockSettings::default()
    };
    let mut env = TestEnv::start_with(
        vec![TestPool {
            name: "g",
            provider: "gemini",
            keys: vec![TestKey::new("k", 1).concurrency(4)],
        }],
        settings,
        "",
    )
    .await;
    for i in 0..10 {
        env.publish(
            "g",
            &json!({"id": format!("j{i}"), "prompt": format!("p{i}")}),
        )
        .await;
    }
    let app = env.app.take().unwrap();
    wait_until_in_flight(&app, 4).await;
    (env, app)
}

async fn wait_until_in_flight(app: &keyrelay::app::App, n: usize) {
    let mut watch = app.in_flight_watch();
    tokio::time::timeout(common::WAIT, watch.wait_for(|c| *c >= n))
        .await
        .unwrap()
        .unwrap();
}
