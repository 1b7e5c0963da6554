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
    // An invalid job of the batch is answered, and counted as such.
    let mut headers = FieldTable::default();
    headers.insert("x-keyrelay-batch-total".into(), AMQPValue::LongLongInt(8));
    let props = BasicProperties::default()
        .with_reply_to(env.replies.as_str().into())
        .with_headers(headers);
    let bad = json!({"id": "b1-bad", "prompt": "p", "batch": "b1", "max_output_tokens": 0});
    env.publish_raw("g", bad.to_string().as_bytes(), props)
        .await;
    let (invalid, _) = env.next_reply().await;
    assert_eq!(invalid.error.unwrap().kind, ErrorKind::InvalidJob);
    let (status, batch) = call(&env, reqwest::Method::GET, "/v1/batches/b1").await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["total"], 8, "{batch}");
    assert_eq!(batch["total_declared"], true, "{batch}");
    assert_eq!(batch["succeeded"], 5, "each job once: {batch}");
    assert_eq!(batch["failed"]["invalid_job"], 1, "{batch}");
    assert_eq!(batch["queued"], 2, "{batch}");
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

/// `keyrelay batch run` killed half-way and run again: every line has one
/// result in the out file, and no job was paid twice.
#[actix::test]
async fn batch_run_stopped_half_way_resumes_without_paying_twice() {
    let settings = keyrelay_mock::MockSettings {
        latency: std::time::Duration::from_millis(60),
        ..keyrelay_mock::MockSettings::default()
    };
    let env = TestEnv::start_with(
        vec![TestPool {
            name: "g",
            provider: "gemini",
            keys: vec![TestKey::new("k1", 1).concurrency(1)],
        }],
        settings,
        "",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("jobs.jsonl");
    let lines: Vec<String> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                json!({"id": format!("run-{i}"), "prompt": format!("line {i}")}).to_string()
            } else {
                json!({"prompt": format!("line {i} without an id")}).to_string()
            }
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    // The CLI reads a config naming the same broker and queue prefix.
    let config = dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nurl = \"{}\"\nqueue_prefix = \"{}\"\n\n[[pools]]\nname = \"g\"\nprovider = \"gemini\"\ndefault_model = \"model-a\"\n  [[pools.keys]]\n  name = \"k1\"\n  api_key_env = \"BATCH_TEST_KEY\"\n",
            common::amqp_url(),
            env.config.broker.queue_prefix
        ),
    )
    .unwrap();
    let out = dir.path().join("results.jsonl");
    let run = || {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyrelay"));
        cmd.args(["batch", "run"])
            .arg(&input)
            .args(["--pool", "g", "--batch", "resume-test", "--out"])
            .arg(&out)
            .arg("-c")
            .arg(&config)
            .env("BATCH_TEST_KEY", "unused-by-the-cli")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    };
    // First run: stopped once some results are written.
    let mut first = run().spawn().unwrap();
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let written = std::fs::read_to_string(&out)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if written >= 8 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no results written");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    first.kill().await.unwrap();
    let partial = std::fs::read_to_string(&out).unwrap().lines().count();
    assert!(partial < 40, "stopped half-way: {partial} results");

    // Second run: completes.
    let second = run().output().await.unwrap();
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        said.contains("40 jobs") && said.contains("already in"),
        "{said}"
    );
    let results: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ids: std::collections::HashSet<&str> =
        results.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(results.len(), 40, "one result per line");
    assert_eq!(ids.len(), 40, "each id once");
    assert!(
        ids.contains("run-0") && ids.iter().any(|id| id.starts_with("resume-test:2:")),
        "{ids:?}"
    );
    assert!(results.iter().all(|r| r["status"] == "succeeded"));
    assert_eq!(env.mock.stats().total().successes, 40, "no job paid twice");
    env.finish().await;
}

/// A high-priority job goes ahead of a backlog: with 1,500 normal jobs
/// queued, it is answered within a few normal answers of being published.
#[actix::test]
async fn a_high_job_overtakes_the_backlog() {
    let settings = keyrelay_mock::MockSettings {
        latency: std::time::Duration::from_millis(20),
        ..keyrelay_mock::MockSettings::default()
    };
    let mut env = TestEnv::start_with(
        vec![TestPool {
            name: "g",
            provider: "gemini",
            keys: vec![TestKey::new("k1", 1).concurrency(2)],
        }],
        settings,
        "",
    )
    .await;
    let backlog = 1_500;
    for i in 0..backlog {
        env.publish(
            "g",
            &json!({"id": format!("n-{i}"), "prompt": format!("normal {i}")}),
        )
        .await;
    }
    // The backlog is draining.
    for _ in 0..10 {
        env.next_reply().await;
    }
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_reply_to(env.replies.as_str().into());
    let body = json!({"id": "urgent", "prompt": "urgent", "priority": "high"});
    let sent = std::time::Instant::now();
    let outcome = env
        .publisher
        .publish(
            &env.config.high_queue("g"),
            body.to_string().as_bytes(),
            props,
            true,
        )
        .await
        .unwrap();
    assert_eq!(outcome, keyrelay::amqp::PublishOutcome::Delivered);
    let (urgent, _) = loop {
        let (reply, delivery) = env.next_reply().await;
        if reply.id == "urgent" {
            break (reply, delivery);
        }
    };
    let waited = sent.elapsed();
    // Answers made before it (read from the reply queue or not yet): the
    // backlog it overtook is the rest.
    let done_before = env.mock.stats().total().successes - 1;
    assert_eq!(urgent.status, keyrelay_core::job::JobStatus::Succeeded);
    assert!(
        waited < std::time::Duration::from_secs(1),
        "high job answered after {waited:?}"
    );
    assert!(
        (done_before as usize) < backlog / 5,
        "{done_before} of {backlog} normal jobs were answered before the high one"
    );
    eprintln!(
        "high job answered {waited:?} after publishing, ahead of {} queued jobs",
        backlog - done_before as usize
    );
    env.finish().await;
}

/// `dead-letters replay` filters by kind and batch, skips kinds that would
/// fail the same way again unless forced, and a dry run changes nothing.
#[actix::test]
async fn dead_letter_replay_filters_and_refuses_hopeless_kinds() {
    // Users may spend nothing: a user's job is refused with budget_exceeded.
    let env = TestEnv::start_pools_with(
        vec![TestPool {
            name: "g",
            provider: "gemini",
            keys: vec![TestKey::new("k1", 1)],
        }],
        keyrelay_mock::MockSettings::default(),
        "",
        "user_budget_usd_per_day = 0.0\n",
    )
    .await;
    let mut env = env;
    env.publish(
        "g",
        &json!({"id": "broke-1", "prompt": "hi", "user": "u", "batch": "b9"}),
    )
    .await;
    env.publish_raw(
        "g",
        b"not json at all",
        BasicProperties::default().with_reply_to(env.replies.as_str().into()),
    )
    .await;
    env.replies(2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nurl = \"{}\"\nqueue_prefix = \"{}\"\n\n[jobs]\ndead_letter_queue = \"{}\"\n\n[[pools]]\nname = \"g\"\nprovider = \"gemini\"\ndefault_model = \"model-a\"\n  [[pools.keys]]\n  name = \"k1\"\n  api_key_env = \"DL_TEST_KEY\"\n",
            common::amqp_url(),
            env.config.broker.queue_prefix,
            env.config.jobs.dead_letter_queue
        ),
    )
    .unwrap();
    let replay = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyrelay"));
        cmd.args(["dead-letters", "replay", "-c"])
            .arg(&config)
            .args(args)
            .env("DL_TEST_KEY", "unused");
        cmd
    };
    // Both are dead-lettered once the replies are out; wait for the second.
    let out = replay(&["--dry-run"]).output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("would replay 1 dead letters"), "{said}");
    assert!(said.contains("1 of them would fail again"), "{said}");
    assert!(
        said.contains("\"kind\":\"budget_exceeded\"") && said.contains("\"batch\":\"b9\""),
        "{said}"
    );

    let out = replay(&["--kind", "budget_exceeded", "--batch", "other"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed 0 dead letters"));
    let out = replay(&["--kind", "invalid_job", "--force"])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("replayed 1 dead letters"), "{said}");
    let out = replay(&["--since", "yesterday"]).output().await.unwrap();
    assert!(!out.status.success(), "a bad --since is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
    env.finish().await;
}

/// The ETA of a batch on keys with declared limits is within 10 % of the
/// time the rest of it actually takes (the limits bind, the mock enforces them).
#[actix::test]
async fn a_batch_eta_on_declared_limits_is_within_ten_percent() {
    let tokens = tempfile::tempdir().unwrap();
    let extra = common::admin_toml(tokens.path(), ADMIN_TOKEN);
    // Two keys of 30 calls per 2 s window: 30 jobs/s together.
    let settings = keyrelay_mock::MockSettings {
        minute: std::time::Duration::from_secs(2),
        ..keyrelay_mock::MockSettings::default()
    };
    let keys = ["e1", "e2"]
        .into_iter()
        .map(|k| {
            TestKey::new(k, 1)
                .mock(|m| m.with_rpm(30))
                .limits("rpm = 30")
        })
        .collect();
    let mut env = TestEnv::start_pools_with(
        vec![TestPool {
            name: "g",
            provider: "gemini",
            keys,
        }],
        settings,
        &extra,
        "rate_window_secs = 2\n",
    )
    .await;
    let total = 300;
    for i in 0..total {
        publish_in_batch(&env, &format!("eta-{i}"), "eta", total).await;
    }
    for _ in 0..60 {
        env.next_reply().await;
    }
    let asked = std::time::Instant::now();
    let (_, batch) = call(&env, reqwest::Method::GET, "/v1/batches/eta").await;
    let eta = batch["eta"]["seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no ETA: {batch}"));
    assert!(
        batch["eta"]["limited_by"]
            .as_str()
            .unwrap()
            .starts_with("rpm of 2 keys"),
        "{batch}"
    );
    let left = total as usize - 60;
    for _ in 0..left {
        env.next_reply().await;
    }
    let actual = asked.elapsed().as_secs_f64();
    assert!(
        (eta - actual).abs() <= actual * 0.1,
        "ETA {eta:.2} s, actual {actual:.2} s ({batch})"
    );
    assert_eq!(env.mock.stats().total().rate_limited, 0, "the limits held");
    env.finish().await;
}

/// A batch cancelled while it drains: what ran is answered, the rest is
/// answered `cancelled` without a call, each job exactly once.
#[actix::test]
async fn a_batch_cancelled_mid_drain_stops_paying() {
    let tokens = tempfile::tempdir().unwrap();
    let extra = common::admin_toml(tokens.path(), ADMIN_TOKEN);
    let settings = keyrelay_mock::MockSettings {
        latency: std::time::Duration::from_millis(20),
        ..keyrelay_mock::MockSettings::default()
    };
    let mut env = TestEnv::start_with(
        vec![TestPool {
            name: "g",
            provider: "gemini",
            keys: vec![TestKey::new("k1", 1).concurrency(2)],
        }],
        settings,
        &extra,
    )
    .await;
    let total = 200;
    for i in 0..total {
        publish_in_batch(&env, &format!("mid-{i}"), "mid", total).await;
    }
    let mut answers = std::collections::HashMap::new();
    while answers.len() < 20 {
        let (reply, _) = env.next_reply().await;
        answers.insert(reply.id.clone(), reply);
    }
    let (status, body) = call(&env, reqwest::Method::POST, "/v1/batches/mid/cancel").await;
    assert_eq!(status, 200, "{body}");
    while answers.len() < total as usize {
        let (reply, _) = env.next_reply().await;
        assert!(
            answers.insert(reply.id.clone(), reply).is_none(),
            "each job answered once"
        );
    }
    let ran = answers
        .values()
        .filter(|r| r.status == JobStatus::Succeeded)
        .count();
    let cancelled = answers
        .values()
        .filter(|r| {
            r.error
                .as_ref()
                .is_some_and(|e| e.kind == ErrorKind::Cancelled)
        })
        .count();
    assert_eq!(ran + cancelled, total as usize);
    // The 20 read, plus what was in flight or prefetched when the cancel landed.
    assert!(ran < 40, "{ran} ran after a cancel at 20");
    assert_eq!(
        env.mock.stats().total().successes as usize,
        ran,
        "no call for a cancelled job"
    );
    let (_, batch) = call(&env, reqwest::Method::GET, "/v1/batches/mid").await;
    assert_eq!(batch["failed"]["cancelled"], cancelled as u64, "{batch}");
    assert_eq!(batch["queued"], 0, "{batch}");
    env.finish().await;
}
