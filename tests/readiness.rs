//! `/readyz` tells the truth about faults a real deployment has, and keyrelay
//! recovers from them by itself: a broker that goes silent (frozen through a
//! proxy, as under SIGSTOP or a partition), and a job queue deleted while
//! keyrelay is connected.

mod common;

use std::time::{Duration, Instant};

use common::proxy::FreezeProxy;
use common::{TestEnv, TestKey, TestPool};
use keyrelay_core::job::JobStatus;
use serde_json::{Value, json};

fn pool(name: &'static str) -> Vec<TestPool> {
    vec![TestPool {
        name,
        provider: "gemini",
        keys: vec![TestKey::new(name, 1), TestKey::new("spare", 2)],
    }]
}

/// One `/readyz` answer: its status, body and how long it took.
async fn probe(env: &TestEnv) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("http://{}/readyz", env.app().http_addr()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("readyz answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

/// Probe every 100 ms until `want` or `within` passes; the slowest probe too.
async fn probe_until(env: &TestEnv, want: u16, within: Duration) -> (Value, Duration, Duration) {
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    loop {
        let (status, body, took) = probe(env).await;
        slowest = slowest.max(took);
        if status == want {
            return (body, started.elapsed(), slowest);
        }
        assert!(
            started.elapsed() < within,
            "no {want} within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn broker_addr() -> std::net::SocketAddr {
    let url = reqwest::Url::parse(&common::amqp_url()).unwrap();
    let host = url.host_str().unwrap_or("127.0.0.1");
    format!("{host}:{}", url.port().unwrap_or(5672))
        .parse()
        .expect("the test broker is on an IP address")
}

#[actix::test]
async fn a_silent_broker_is_not_ready_within_10_s_and_recovers_by_itself() {
    let proxy = FreezeProxy::start(broker_addr()).await;
    let mut env =
        TestEnv::start_through(&proxy.url(), pool("fz"), Default::default(), "", "").await;
    let (status, _, _) = probe(&env).await;
    assert_eq!(status, 200);
    env.publish("fz", &json!({"id": "before", "prompt": "before"}))
        .await;
    assert_eq!(env.next_reply().await.0.status, JobStatus::Succeeded);

    proxy.freeze();
    let (body, after, slowest) = probe_until(&env, 503, Duration::from_secs(15)).await;
    println!("not ready {after:?} after the freeze; slowest probe {slowest:?}; {body}");
    assert!(
        after <= Duration::from_secs(10),
        "not ready within 10 s: {after:?}"
    );
    assert_eq!(body["reasons"][0]["component"], "broker", "{body}");
    // Published while keyrelay cannot hear the broker: answered after.
    env.publish("fz", &json!({"id": "during", "prompt": "during"}))
        .await;
    // Probes stay fast while the reconnect attempts hang on the frozen proxy.
    for _ in 0..10 {
        let (_, _, took) = probe(&env).await;
        assert!(took < Duration::from_secs(1), "a probe took {took:?}");
    }

    proxy.thaw();
    let thawed = Instant::now();
    let (_, back, slowest) = probe_until(&env, 200, Duration::from_secs(30)).await;
    println!("ready {back:?} after the thaw; slowest probe {slowest:?}");
    // "before" may come again: its ack can still have been in the settler's
    // hold when the connection died. It is answered from the store, not paid
    // twice.
    let r = loop {
        let (r, _) = env.next_reply().await;
        if r.id != "before" {
            break r;
        }
    };
    assert_eq!((r.id.as_str(), r.status), ("during", JobStatus::Succeeded));
    println!(
        "the job published during the freeze answered {:?} after the thaw",
        thawed.elapsed()
    );
    let paid = env.mock.stats().successes_by_prompt;
    assert_eq!(
        (paid.get("before"), paid.get("during")),
        (Some(&1), Some(&1)),
        "{paid:?}"
    );
    env.finish().await;
}

#[actix::test]
async fn a_deleted_job_queue_is_declared_and_consumed_again() {
    let mut env = TestEnv::start(pool("dq")).await;
    let queue = env.queue("dq");
    let deleted = std::process::Command::new("rabbitmqctl")
        .args(["delete_queue", &queue])
        .output()
        .expect("rabbitmqctl runs");
    assert!(deleted.status.success(), "{deleted:?}");
    let started = Instant::now();
    // Not ready while the pool has no consumer (the restart waits ≥ 200 ms).
    let (body, _, _) = probe_until(&env, 503, Duration::from_secs(10)).await;
    assert_eq!(body["reasons"][0]["component"], "pool", "{body}");
    assert_eq!(body["reasons"][0]["queue"], queue.as_str(), "{body}");
    let (_, back, _) = probe_until(&env, 200, Duration::from_secs(30)).await;
    println!("queue re-declared and consumed {back:?} after the deletion");
    assert!(started.elapsed() < Duration::from_secs(30));
    tokio::time::timeout(common::WAIT, env.app().wait_for_consumers(2))
        .await
        .expect("both keys consume again");
    env.publish(
        "dq",
        &json!({"id": "after", "prompt": "after the deletion"}),
    )
    .await;
    let (r, _) = env.next_reply().await;
    assert_eq!((r.id.as_str(), r.status), ("after", JobStatus::Succeeded));
    env.finish().await;
}

/// A minute of broker silence (long enough for the workers' restart backoff
/// to reach its cap): consuming resumes within 5 s of the broker being back.
/// `#[ignore]`: it takes over a minute; `cargo test --test readiness -- --ignored --nocapture`.
#[actix::test]
#[ignore = "takes over a minute"]
async fn a_minute_of_silence_resumes_within_5_s() {
    let proxy = FreezeProxy::start(broker_addr()).await;
    let mut env =
        TestEnv::start_through(&proxy.url(), pool("fm"), Default::default(), "", "").await;
    proxy.freeze();
    probe_until(&env, 503, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    env.publish("fm", &json!({"id": "after-a-minute", "prompt": "hello"}))
        .await;
    proxy.thaw();
    let thawed = Instant::now();
    let (_, back, _) = probe_until(&env, 200, Duration::from_secs(30)).await;
    let (r, _) = env.next_reply().await;
    let answered = thawed.elapsed();
    println!("after 60 s of silence: ready {back:?}, job answered {answered:?} after the thaw");
    assert_eq!(r.status, JobStatus::Succeeded);
    assert!(
        back <= Duration::from_secs(5),
        "ready {back:?} after the thaw"
    );
    env.finish().await;
}
