//! The core pipeline end to end: real RabbitMQ, the mock provider over HTTP,
//! keyrelay in-process. Each test has its own queues and store.

mod common;

use common::{TestEnv, TestKey, TestPool};
use keyrelay::actors::messages::GetKeys;
use keyrelay_core::job::{ErrorKind, JobStatus};
use keyrelay_mock::MockSettings;
use lapin::BasicProperties;
use serde_json::json;

fn pool(name: &'static str, provider: &'static str, keys: Vec<TestKey>) -> TestPool {
    TestPool {
        name,
        provider,
        keys,
    }
}

async fn key_state(env: &TestEnv, key: &str) -> String {
    let keys = env.app().supervisor().send(GetKeys).await.unwrap();
    keys.iter()
        .find(|k| k.name == key)
        .unwrap()
        .state
        .label()
        .to_string()
}

#[actix::test]
async fn happy_path_through_each_provider() {
    let mut env = TestEnv::start(vec![
        pool("g", "gemini", vec![TestKey::new("g1", 1)]),
        pool("o", "openai", vec![TestKey::new("o1", 1)]),
        pool("a", "anthropic", vec![TestKey::new("a1", 1)]),
    ])
    .await;
    for p in ["g", "o", "a"] {
        env.publish(p, &json!({"id": format!("{p}-text"), "prompt": format!("hello from {p}"), "metadata": {"n": 1}})).await;
        env.publish(p, &json!({"id": format!("{p}-json"), "messages": [{"role": "system", "content": "Answer in JSON"}, {"role": "user", "content": format!("json please {p}")}], "response_format": "json"})).await;
    }
    let replies = env.replies(6).await;
    for p in ["g", "o", "a"] {
        let text = &replies[&format!("{p}-text")];
        assert_eq!(text.status, JobStatus::Succeeded, "{text:?}");
        assert_eq!(
            text.text.as_deref(),
            Some(format!("mock answer: hello from {p}").as_str())
        );
        assert_eq!(text.pool, p);
        assert_eq!(text.key.as_deref(), Some(format!("{p}1").as_str()));
        assert_eq!(text.model.as_deref(), Some("model-a"));
        assert_eq!(text.metadata, json!({"n": 1}));
        assert_eq!(text.attempts, 1);
        assert!(text.usage.input_tokens > 0 && text.usage.output_tokens > 0);
        let js = &replies[&format!("{p}-json")];
        assert_eq!(js.status, JobStatus::Succeeded, "{js:?}");
        assert_eq!(
            js.json.as_ref().unwrap()["echo"],
            format!("json please {p}")
        );
    }
    // Results are in the store too.
    let stored = env.app().store().result_of("g", "g-text").unwrap().unwrap();
    assert_eq!(stored.text, replies["g-text"].text);
    env.finish().await;
}

#[actix::test]
async fn reply_carries_correlation_id_and_properties() {
    let mut env = TestEnv::start(vec![pool("g", "gemini", vec![TestKey::new("k", 1)])]).await;
    env.publish("g", &json!({"id": "c1", "prompt": "hi"})).await;
    let (result, delivery) = env.next_reply().await;
    assert_eq!(result.id, "c1");
    let props = &delivery.properties;
    assert_eq!(
        props.correlation_id().as_ref().map(|s| s.as_str()),
        Some("corr-c1")
    );
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    env.finish().await;
}

#[actix::test]
async fn daily_exhaustion_mid_run_moves_jobs_to_the_next_key() {
    let mut env = TestEnv::start(vec![pool(
        "g",
        "gemini",
        vec![
            TestKey::new("primary", 1)
                .mock(|k| k.with_rpd(3))
                .concurrency(1),
            TestKey::new("secondary", 2).concurrency(1),
        ],
    )])
    .await;
    for i in 0..12 {
        env.publish(
            "g",
            &json!({"id": format!("j{i}"), "prompt": format!("job {i}")}),
        )
        .await;
    }
    let replies = env.replies(12).await;
    assert!(
        replies.values().all(|r| r.status == JobStatus::Succeeded),
        "{replies:?}"
    );
    let on_primary = replies
        .values()
        .filter(|r| r.key.as_deref() == Some("primary"))
        .count();
    assert_eq!(on_primary, 3, "primary answers exactly its daily quota");
    let stats = env.mock.stats();
    // Three successes and the one call that found the quota spent; nothing after.
    assert_eq!(stats.key("primary").successes, 3);
    assert_eq!(stats.key("primary").exhausted, 1);
    assert_eq!(stats.key("primary").requests, 4);
    assert_eq!(key_state(&env, "primary").await, "exhausted");
    // Every job was paid for once.
    assert!(stats.successes_by_prompt.values().all(|n| *n == 1));
    assert_eq!(stats.successes_by_prompt.len(), 12);
    env.finish().await;
}

#[actix::test]
async fn invalid_key_is_disabled_after_its_first_failure() {
    let mut env = TestEnv::start(vec![pool(
        "o",
        "openai",
        vec![
            TestKey::new("revoked", 1).mock(|k| k.invalid()),
            TestKey::new("good", 2),
        ],
    )])
    .await;
    for i in 0..8 {
        env.publish(
            "o",
            &json!({"id": format!("j{i}"), "prompt": format!("job {i}")}),
        )
        .await;
    }
    let replies = env.replies(8).await;
    assert!(
        replies
            .values()
            .all(|r| r.status == JobStatus::Succeeded && r.key.as_deref() == Some("good"))
    );
    // Calls already in flight when the first 401 came back cannot be recalled:
    // at most the key's concurrency, all of them answered 401.
    let calls = env.mock.stats().key("revoked").requests;
    assert!((1..=4).contains(&calls), "{calls} calls");
    assert_eq!(env.mock.stats().key("revoked").unauthorized, calls);
    assert_eq!(key_state(&env, "revoked").await, "disabled");
    // Disabled means never used again.
    for i in 8..16 {
        env.publish(
            "o",
            &json!({"id": format!("j{i}"), "prompt": format!("job {i}")}),
        )
        .await;
    }
    env.replies(8).await;
    assert_eq!(
        env.mock.stats().key("revoked").requests,
        calls,
        "no call after disabling"
    );
    env.finish().await;
}

#[actix::test]
async fn malformed_jobs_get_invalid_job_replies_and_dead_letters() {
    let mut env = TestEnv::start_with(
        vec![pool("g", "gemini", vec![TestKey::new("k", 1)])],
        MockSettings::default(),
        "max_body_bytes = 2048\n",
    )
    .await;
    let big = json!({"prompt": "x".repeat(4096)}).to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad-1", b"this is not json".to_vec(), "not a valid job"),
        ("bad-2", br#"{"prompt": 7}"#.to_vec(), "invalid type"),
        (
            "bad-3",
            br#"{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}"#.to_vec(),
            "exactly one of",
        ),
        (
            "bad-4",
            br#"{"template": "missing", "input": {}}"#.to_vec(),
            "unknown template",
        ),
        ("bad-5", big.into_bytes(), "over the limit"),
        ("bad-6", b"\xff\xfe\xfd".to_vec(), "not a valid job"),
    ];
    for (id, body, _) in &cases {
        let props = BasicProperties::default()
            .with_message_id((*id).into())
            .with_reply_to(env.replies.as_str().into());
        env.publish_raw("g", body, props).await;
    }
    // The consumer goes on: a good job after the garbage still succeeds.
    env.publish("g", &json!({"id": "good", "prompt": "still alive"}))
        .await;
    let replies = env.replies(cases.len() + 1).await;
    for (id, _, expected) in &cases {
        let r = &replies[*id];
        assert_eq!(r.status, JobStatus::Failed);
        let error = r.error.as_ref().unwrap();
        assert_eq!(error.kind, ErrorKind::InvalidJob);
        assert!(error.message.contains(expected), "{id}: {}", error.message);
    }
    assert_eq!(replies["good"].status, JobStatus::Succeeded);
    let dead = env.dead_letters(cases.len()).await;
    for d in &dead {
        let id = d
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str()
            .to_string();
        let (_, body, expected) = cases
            .iter()
            .find(|(c, _, _)| *c == id)
            .expect("a dead letter per case");
        assert_eq!(&d.data, body, "{id}: the original body is kept");
        let headers = d.properties.headers().as_ref().unwrap();
        let reason = match headers.inner().get("x-keyrelay-reason") {
            Some(lapin::types::AMQPValue::LongString(s)) => {
                String::from_utf8_lossy(s.as_bytes()).into_owned()
            }
            other => panic!("{id}: reason header missing: {other:?}"),
        };
        assert!(reason.contains(expected), "{id}: {reason}");
    }
    assert_eq!(
        env.mock.stats().total().requests,
        1,
        "no provider call for garbage"
    );
    env.finish().await;
}

#[actix::test]
async fn completed_job_delivered_again_is_answered_from_the_store() {
    let mut env = TestEnv::start(vec![pool("a", "anthropic", vec![TestKey::new("k", 1)])]).await;
    let job = json!({"id": "once", "prompt": "pay me once"});
    env.publish("a", &job).await;
    let (first, _) = env.next_reply().await;
    env.publish("a", &job).await;
    let (second, _) = env.next_reply().await;
    assert_eq!(first, second, "the stored result, byte for byte");
    assert_eq!(env.mock.stats().successes_by_prompt["pay me once"], 1);
    assert_eq!(env.mock.stats().key("k").requests, 1);
    env.finish().await;
}

#[actix::test]
async fn consumer_priority_sends_work_to_the_primary_while_it_has_capacity() {
    let settings = MockSettings {
        latency: std::time::Duration::from_millis(300),
        ..MockSettings::default()
    };
    let mut env = TestEnv::start_with(
        vec![pool(
            "g",
            "gemini",
            vec![
                TestKey::new("backup", 3).concurrency(4),
                TestKey::new("primary", 1).concurrency(4),
            ],
        )],
        settings,
        "",
    )
    .await;
    // Four jobs fit the primary's prefetch: the broker gives it all of them.
    for i in 0..4 {
        env.publish(
            "g",
            &json!({"id": format!("first-{i}"), "prompt": format!("first {i}")}),
        )
        .await;
    }
    let first = env.replies(4).await;
    assert!(
        first.values().all(|r| r.key.as_deref() == Some("primary")),
        "{first:?}"
    );
    // Twelve at once overflow it: the backup takes what the primary cannot.
    for i in 0..12 {
        env.publish(
            "g",
            &json!({"id": format!("burst-{i}"), "prompt": format!("burst {i}")}),
        )
        .await;
    }
    let burst = env.replies(12).await;
    let on_backup = burst
        .values()
        .filter(|r| r.key.as_deref() == Some("backup"))
        .count();
    assert!(on_backup > 0, "overflow reaches the backup");
    assert!(on_backup < 12, "the primary keeps working");
    env.finish().await;
}

#[actix::test]
async fn transient_failures_are_retried_then_fail_with_upstream() {
    let mut env = TestEnv::start(vec![pool(
        "o",
        "openai",
        vec![TestKey::new("k1", 1), TestKey::new("k2", 1)],
    )])
    .await;
    env.publish(
        "o",
        &json!({"id": "flaky", "prompt": "[[mock:status=503]] always down"}),
    )
    .await;
    env.publish(
        "o",
        &json!({"id": "bad", "prompt": "[[mock:status=400]] rejected"}),
    )
    .await;
    let replies = env.replies(2).await;
    let flaky = &replies["flaky"];
    assert_eq!(flaky.error.as_ref().unwrap().kind, ErrorKind::Upstream);
    assert_eq!(flaky.attempts, 3);
    // Retries went through the delay queue and preferred the other key.
    let stats = env.mock.stats();
    assert!(
        stats.key("k1").requests >= 1 && stats.key("k2").requests >= 1,
        "{stats:?}"
    );
    // Given up: dead-lettered with the last error.
    let dead = env.dead_letters(1).await;
    let headers = dead[0].properties.headers().as_ref();
    let reason =
        keyrelay::amqp::retry::header_text(headers, "x-keyrelay-reason").unwrap_or_default();
    assert!(reason.contains("gave up after 3 attempts"), "{reason}");
    // Replayed from the dead-letter queue (as `keyrelay dead-letters replay`
    // does), the job runs again instead of being answered with the old failure.
    let calls = env.mock.stats().total().requests;
    let props = lapin::BasicProperties::default().with_reply_to(env.replies.as_str().into());
    env.publish_raw("o", &dead[0].data, props).await;
    let (again, _) = env.next_reply().await;
    assert_eq!(again.id, "flaky");
    assert_eq!(again.attempts, 3, "three new calls");
    assert_eq!(env.mock.stats().total().requests, calls + 3);
    let bad = &replies["bad"];
    assert_eq!(bad.error.as_ref().unwrap().kind, ErrorKind::BadRequest);
    assert_eq!(bad.attempts, 1, "a bad request is never retried");
    // Repeated transient errors may rest a key briefly, never disable or exhaust it.
    for key in ["k1", "k2"] {
        let state = key_state(&env, key).await;
        assert!(
            state == "active" || state == "cooling_down",
            "{key}: {state}"
        );
    }
    env.finish().await;
}

#[actix::test]
async fn invalid_json_output_is_a_failed_result() {
    let mut env = TestEnv::start(vec![pool("g", "gemini", vec![TestKey::new("k", 1)])]).await;
    env.publish(
        "g",
        &json!({"id": "j", "prompt": "[[mock:invalid_json]] give json", "response_format": "json"}),
    )
    .await;
    let (r, _) = env.next_reply().await;
    assert_eq!(r.status, JobStatus::Failed);
    assert_eq!(r.error.unwrap().kind, ErrorKind::InvalidOutput);
    assert!(r.text.is_some(), "the raw text is kept for debugging");
    env.finish().await;
}

#[actix::test]
async fn reply_to_a_missing_queue_is_recorded_not_looped() {
    // Concurrency 1: "after" is delivered only once "lost" is acked (and stored).
    let mut env = TestEnv::start(vec![pool(
        "g",
        "gemini",
        vec![TestKey::new("k", 1).concurrency(1)],
    )])
    .await;
    let props = BasicProperties::default()
        .with_message_id("lost".into())
        .with_reply_to("no.such.queue.anywhere".into());
    env.publish_raw("g", br#"{"prompt": "where does this go"}"#, props)
        .await;
    env.publish("g", &json!({"id": "after", "prompt": "next"}))
        .await;
    let (r, _) = env.next_reply().await;
    assert_eq!(r.id, "after");
    assert!(
        env.app().store().result_of("g", "lost").unwrap().is_some(),
        "result kept in the store"
    );
    assert_eq!(env.mock.stats().key("k").requests, 2);
    env.finish().await;
}

#[actix::test]
async fn rate_limited_pool_waits_in_the_queue_and_resumes_by_itself() {
    // One key, two requests per (short) minute: most jobs find the key cooling
    // down, go back to the queue, and run when the window frees up.
    let settings = MockSettings {
        minute: std::time::Duration::from_millis(1500),
        ..MockSettings::default()
    };
    let mut env = TestEnv::start_with(
        vec![pool(
            "g",
            "gemini",
            vec![
                TestKey::new("only", 1)
                    .mock(|k| k.with_rpm(2))
                    .concurrency(2),
            ],
        )],
        settings,
        "",
    )
    .await;
    for i in 0..6 {
        env.publish(
            "g",
            &json!({"id": format!("j{i}"), "prompt": format!("job {i}")}),
        )
        .await;
    }
    let replies = env.replies(6).await;
    assert!(
        replies.values().all(|r| r.status == JobStatus::Succeeded),
        "{replies:?}"
    );
    let stats = env.mock.stats();
    assert_eq!(stats.key("only").successes, 6);
    assert!(
        stats.key("only").rate_limited >= 1,
        "the limit was hit: {stats:?}"
    );
    assert!(stats.successes_by_prompt.values().all(|n| *n == 1));
    assert_eq!(key_state(&env, "only").await, "active", "back in rotation");
    env.finish().await;
}

#[actix::test]
async fn key_state_survives_a_restart() {
    let mut env = TestEnv::start(vec![pool(
        "g",
        "gemini",
        vec![
            TestKey::new("spent", 1).mock(|k| k.with_rpd(1)),
            TestKey::new("spare", 2),
        ],
    )])
    .await;
    // One at a time, so each goes to the preferred key: the second spends it.
    for i in 0..2 {
        env.publish(
            "g",
            &json!({"id": format!("j{i}"), "prompt": format!("job {i}")}),
        )
        .await;
        env.next_reply().await;
    }
    assert_eq!(key_state(&env, "spent").await, "exhausted");
    let calls = env.mock.stats().key("spent").requests;
    // Restart keyrelay on the same store: the spent key stays out until its reset.
    env.app
        .take()
        .unwrap()
        .shutdown(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let app = keyrelay::app::App::start(env.config.clone()).await.unwrap();
    tokio::time::timeout(common::WAIT, app.wait_for_consumers(1))
        .await
        .unwrap();
    env.app = Some(app);
    assert_eq!(key_state(&env, "spent").await, "exhausted");
    for i in 2..7 {
        env.publish(
            "g",
            &json!({"id": format!("j{i}"), "prompt": format!("job {i}")}),
        )
        .await;
    }
    let replies = env.replies(5).await;
    assert!(replies.values().all(|r| r.key.as_deref() == Some("spare")));
    assert_eq!(
        env.mock.stats().key("spent").requests,
        calls,
        "not called again before its reset"
    );
    env.finish().await;
}

#[actix::test]
async fn hostile_ids_and_unusable_success_bodies() {
    let mut env = TestEnv::start(vec![pool("o", "openai", vec![TestKey::new("k", 1)])]).await;
    // An id one byte over an AMQP short string: a clear invalid_job, not a panic.
    let long = "a".repeat(256);
    let props = BasicProperties::default().with_reply_to(env.replies.as_str().into());
    env.publish_raw(
        "o",
        json!({"id": long, "prompt": "x"}).to_string().as_bytes(),
        props,
    )
    .await;
    // A 200 whose body is garbage was probably billed: failed once, not retried.
    env.publish(
        "o",
        &json!({"id": "garbled", "prompt": "[[mock:malformed]] hi"}),
    )
    .await;
    let replies = env.replies(2).await;
    let garbled = &replies["garbled"];
    assert_eq!(garbled.error.as_ref().unwrap().kind, ErrorKind::Upstream);
    assert_eq!(garbled.attempts, 1);
    let invalid = replies.values().find(|r| r.id != "garbled").unwrap();
    assert_eq!(invalid.error.as_ref().unwrap().kind, ErrorKind::InvalidJob);
    assert!(
        invalid
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("1-255 bytes")
    );
    assert_eq!(
        env.mock.stats().key("k").requests,
        1,
        "one call for the garbled job, none for the bad id"
    );
    env.finish().await;
}

#[actix::test]
async fn a_job_without_any_id_is_recognised_when_it_comes_again() {
    let mut env = TestEnv::start(vec![pool("g", "gemini", vec![TestKey::new("k", 1)])]).await;
    let body = br#"{"prompt": "no id anywhere"}"#;
    let replies = env.replies.clone();
    let props = || BasicProperties::default().with_reply_to(replies.as_str().into());
    env.publish_raw("g", body, props()).await;
    let (first, _) = env.next_reply().await;
    env.publish_raw("g", body, props()).await;
    let (second, _) = env.next_reply().await;
    assert!(first.id.starts_with("auto-"), "{}", first.id);
    assert_eq!(first, second, "the same content is the same job");
    assert_eq!(env.mock.stats().key("k").requests, 1);
    env.finish().await;
}
