//! Batches over the real broker and the mock provider: each job counted once
//! however often it is delivered, a declared total, and cancellation of a
//! batch or one job (answered `cancelled`, no provider call, durably).

mod common;

use common::{ADMIN_TOKEN, TestEnv, TestKey, TestPool};
use keyrelay_core::job::{ErrorKind, JobStatus};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};

async fn call(env: &TestEnv, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", env.http_url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Publish a job of `batch` whose producer declares `total` jobs.
async fn publish_in_batch(env: &TestEnv, id: &str, batch: &str, total: i64) {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-keyrelay-batch-total".into(),
        AMQPValue::LongLongInt(total),
    );
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_reply_to(env.replies.as_str().into())
        .with_headers(headers);
    let body = json!({"id": id, "prompt": format!("batch job {id}"), "batch": batch});
    env.publish_raw("g", body.to_string().as_bytes(), props)
        .await;
}

#[actix::test]
async fn a_batch_counts_each_job_once_and_cancelled_jobs_make_no_call() {
    let mut env = TestEnv::start_admin(vec![TestPool {
        name: "g",
        provider: "gemini",
        keys: vec![TestKey::new("k1", 1)],
    }])
    .await;

    // Five of a declared eight, one of them delivered twice.
    for i in 0..5 {
        publish_in_batch(&env, &format!("b1-{i}"), "b1", 8).await;
    }
    let replies = env.replies(5).await;
    assert!(replies.values().all(|r| r.status == JobStatus::Succeeded));
    publish_in_batch(&env, "b1-0", "b1", 8).await;
    let (again, _) = env.next_reply().await;
    assert_eq!(again.id, "b1-0", "answered from the store");
    let (status, batch) = call(&env, reqwest::Method::GET, "/v1/batches/b1").await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["total"], 8, "{batch}");
    assert_eq!(batch["total_declared"], true, "{batch}");
    assert_eq!(batch["succeeded"], 5, "each job once: {batch}");
    assert_eq!(batch["queued"], 3, "{batch}");
    assert_eq!(batch["running"], 0, "{batch}");
    assert_eq!(batch["pool"], "g", "{batch}");
    let (_, list) = call(&env, reqwest::Method::GET, "/v1/batches").await;
    assert_eq!(list["batches"][0]["id"], "b1", "{list}");

    // A cancelled batch, and a job cancelled by id: answered, no call.
    let calls_before = env.mock.stats().total().successes;
    let (status, body) = call(&env, reqwest::Method::POST, "/v1/batches/b2/cancel").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&env, reqwest::Method::POST, "/v1/jobs/lone-1/cancel").await;
    assert_eq!(status, 200, "{body}");
    for i in 0..3 {
        publish_in_batch(&env, &format!("b2-{i}"), "b2", 3).await;
    }
    env.publish("g", &json!({"id": "lone-1", "prompt": "never run"}))
        .await;
    let cancelled = env.replies(4).await;
    for reply in cancelled.values() {
        let error = reply.error.as_ref().expect("cancelled");
        assert_eq!(error.kind, ErrorKind::Cancelled, "{reply:?}");
        assert_eq!(reply.attempts, 0);
    }
    assert_eq!(
        env.mock.stats().total().successes,
        calls_before,
        "no provider call"
    );
    let (_, b2) = call(&env, reqwest::Method::GET, "/v1/batches/b2").await;
    assert_eq!(b2["failed"]["cancelled"], 3, "{b2}");
    assert!(b2["cancelled_at"].is_string(), "{b2}");

    // Bad requests are clear.
    let (status, _) = call(&env, reqwest::Method::GET, "/v1/batches/nope").await;
    assert_eq!(status, 404);
    let (status, _) = call(&env, reqwest::Method::POST, "/v1/batches/bad%20name/cancel").await;
    assert_eq!(status, 400);
    env.finish().await;
}
