//! Poison and hostile input: garbage messages, odd AMQP properties, a job the
//! broker gives up on after its delivery limit, and every provider fault of the
//! mock. Each case ends in a reply or a dead letter with a reason, and the
//! consumer goes on. (Cases already in tests/pipeline.rs are not repeated.)

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{ReplyQueue, TestEnv, TestKey, TestPool};
use futures_util::StreamExt;
use keyrelay::app::App;
use keyrelay_core::job::{ErrorKind, JobResult, JobStatus};
use keyrelay_mock::MockSettings;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;

fn header_text(d: &lapin::message::Delivery, name: &str) -> Option<String> {
    match d.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

#[actix::test]
async fn hostile_messages_end_in_a_reply_or_a_dead_letter() {
    let mut env = TestEnv::start(vec![TestPool {
        name: "h",
        provider: "gemini",
        keys: vec![TestKey::new("k", 1)],
    }])
    .await;
    let replies = env.replies.clone();
    let to_replies = || BasicProperties::default().with_reply_to(replies.as_str().into());

    // Rejected before parsing or by the parser: (message_id, body, properties, reason).
    let ten_mb = format!(
        "{{\"id\": \"ten-mb\", \"prompt\": \"{}\"}}",
        "x".repeat(10 * 1024 * 1024)
    );
    let deep = format!(
        "{{\"id\": \"deep\", \"prompt\": \"p\", \"metadata\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let mut utf8 = br#"{"id": "bad-utf8", "prompt": "caf"#.to_vec();
    utf8.extend_from_slice(b"\xc3\x28 \xff\xfe\"}");
    let rejected: Vec<(&str, Vec<u8>, BasicProperties, &str)> = vec![
        (
            "ten-mb",
            ten_mb.into_bytes(),
            to_replies(),
            "over the limit",
        ),
        ("deep", deep.into_bytes(), to_replies(), "recursion limit"),
        (
            "text-plain",
            br#"{"id": "text-plain", "prompt": "hi"}"#.to_vec(),
            to_replies().with_content_type("text/plain".into()),
            "content_type `text/plain`",
        ),
        (
            "octets",
            br#"{"id": "octets", "prompt": "hi"}"#.to_vec(),
            to_replies().with_content_type("application/octet-stream; x=1".into()),
            "content_type",
        ),
        ("bad-utf8", utf8, to_replies(), "not a valid job"),
        (
            "array",
            b"[1, 2, 3]".to_vec(),
            to_replies(),
            "not a valid job",
        ),
        ("null", b"null".to_vec(), to_replies(), "not a valid job"),
        ("empty", Vec::new(), to_replies(), "not a valid job"),
        (
            "nul-id",
            br#"{"id": "a\u0000b", "prompt": "hi"}"#.to_vec(),
            to_replies(),
            "printable",
        ),
    ];
    for (id, body, props, _) in &rejected {
        let props = props.clone().with_message_id((*id).into());
        env.publish_raw("h", body, props).await;
    }
    // Accepted: odd but legal properties and content.
    let nested = (0..100).fold(json!("leaf"), |acc, _| json!([acc]));
    env.publish(
        "h",
        &json!({"id": "nested-100", "prompt": "deep but fine", "metadata": nested}),
    )
    .await;
    // No properties at all: the reply goes to the default results queue.
    env.publish_raw(
        "h",
        br#"{"id": "no-props", "prompt": "bare"}"#,
        BasicProperties::default(),
    )
    .await;
    // reply_to present but empty: also the default results queue.
    env.publish_raw(
        "h",
        br#"{"id": "empty-reply-to", "prompt": "where"}"#,
        BasicProperties::default().with_reply_to("".into()),
    )
    .await;
    let unicode_corr = "корреляция-🦀-\u{200b}-ñ";
    env.publish_raw(
        "h",
        r#"{"id": "задача-🦀", "prompt": "unicode id"}"#.as_bytes(),
        to_replies()
            .with_correlation_id(unicode_corr.into())
            .with_content_type("application/json; charset=utf-8".into())
            .with_priority(255)
            .with_expiration("600000".into())
            .with_type("weird-type".into())
            .with_headers({
                let mut h = FieldTable::default();
                h.insert("x-odd".into(), AMQPValue::Void);
                h.insert(
                    "x-nested".into(),
                    AMQPValue::FieldTable(FieldTable::default()),
                );
                h
            }),
    )
    .await;
    env.publish("h", &json!({"id": "after", "prompt": "still consuming"}))
        .await;

    let mut got: HashMap<String, (JobResult, lapin::message::Delivery)> = HashMap::new();
    for _ in 0..rejected.len() + 3 {
        let (r, d) = env.next_reply().await;
        assert!(got.insert(r.id.clone(), (r, d)).is_none());
    }
    for (id, _, _, reason) in &rejected {
        let (r, _) = got.get(*id).unwrap_or_else(|| panic!("a reply for {id}"));
        assert_eq!(r.status, JobStatus::Failed, "{id}");
        let error = r.error.as_ref().unwrap();
        assert_eq!(error.kind, ErrorKind::InvalidJob, "{id}");
        assert!(error.message.contains(reason), "{id}: {}", error.message);
    }
    let (nested_reply, _) = &got["nested-100"];
    assert_eq!(nested_reply.status, JobStatus::Succeeded);
    assert_eq!(nested_reply.metadata, nested);
    let (unicode, d) = &got["задача-🦀"];
    assert_eq!(unicode.status, JobStatus::Succeeded);
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|c| c.as_str()),
        Some(unicode_corr)
    );
    assert_eq!(got["after"].0.status, JobStatus::Succeeded);

    // The two without a usable reply_to were answered on the default queue.
    let mut defaults = ReplyQueue::open(&env.broker, &env.config.jobs.results_queue).await;
    let mut default_ids = vec![defaults.next().await.id, defaults.next().await.id];
    default_ids.sort();
    assert_eq!(default_ids, ["empty-reply-to", "no-props"]);

    // Every rejected message is dead-lettered with its reason and original body.
    let dead = env.dead_letters(rejected.len()).await;
    for d in &dead {
        let id = d
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str()
            .to_string();
        let (_, body, _, reason) = rejected.iter().find(|c| c.0 == id).unwrap();
        assert_eq!(&d.data, body, "{id}");
        let header = header_text(d, "x-keyrelay-reason").unwrap();
        assert!(header.contains(reason), "{id}: {header}");
        assert_eq!(
            header_text(d, "x-keyrelay-error-kind").as_deref(),
            Some("invalid_job")
        );
    }
    assert_eq!(
        env.mock.stats().total().requests,
        5,
        "calls only for valid jobs"
    );
    let metrics = common::scrape(env.app().http_addr()).await;
    assert_eq!(restarts(&metrics, "h"), 0.0);
    // The per-key series count exactly the calls the provider saw.
    for line in [
        r#"keyrelay_upstream_requests_total{pool="h",key="k",outcome="success"} 5"#,
        r#"keyrelay_key_state{pool="h",key="k",state="active"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    // The valid jobs' overhead lands in millisecond buckets (the other
    // `_seconds` families jump from 1 to 2.5 ms).
    for bucket in [
        r#"keyrelay_job_overhead_seconds_bucket{pool="h",le="0.0015"}"#,
        r#"keyrelay_job_stage_seconds_bucket{stage="reply",le="0.0015"}"#,
    ] {
        assert!(metrics.contains(bucket), "{bucket} not in\n{metrics}");
    }
    env.finish().await;
}

/// Worker restarts of `pool` in a Prometheus body (0 when absent).
fn restarts(metrics: &str, pool: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("keyrelay_worker_restarts_total{"))
        .filter(|l| l.contains(&format!("pool=\"{pool}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A job that keeps coming back (here: nacked with requeue by a consumer the
/// test controls, as a crashing worker would return it) is dead-lettered by the
/// quorum queue after `broker.delivery_limit` deliveries, with `x-death`.
#[actix::test]
async fn poison_job_is_dead_lettered_after_the_delivery_limit() {
    common::init_logs();
    let settings = MockSettings::default();
    let mock = keyrelay_mock::MockProvider::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("kr-poison.{}", uuid::Uuid::now_v7().simple());
    let path = common::write_config_file(
        &[TestPool {
            name: "p",
            provider: "gemini",
            keys: vec![TestKey::new("k", 1)],
        }],
        &mock,
        dir.path(),
        &prefix,
        "delivery_limit = 3",
        "",
    );
    let config = keyrelay_core::config::Config::load(&path).unwrap();
    assert_eq!(config.broker.delivery_limit, 3);
    // keyrelay declares its topology, then stops: the test is the only consumer.
    let app = App::start(config.clone()).await.unwrap();
    app.shutdown(Duration::from_secs(5)).await.unwrap();

    let broker = Arc::new(
        keyrelay::amqp::Broker::connect(&common::amqp_url())
            .await
            .unwrap(),
    );
    let publisher = keyrelay::amqp::Publisher::new(broker.clone())
        .await
        .unwrap();
    let queue = config.job_queue("p");
    let body = br#"{"id": "poison", "prompt": "crash me"}"#;
    publisher
        .publish(
            &queue,
            body,
            BasicProperties::default()
                .with_message_id("poison".into())
                .with_delivery_mode(2),
            true,
        )
        .await
        .unwrap();
    let channel = broker.channel().await.unwrap();
    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut crasher = channel
        .basic_consume(
            queue.as_str().into(),
            "crash-loop".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let dead_channel = broker.channel().await.unwrap();
    let mut dead = dead_channel
        .basic_consume(
            config.jobs.dead_letter_queue.as_str().into(),
            "dead".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut deliveries = 0u32;
    let mut delivery_counts = Vec::new();
    let dead_letter = loop {
        tokio::select! {
            d = crasher.next() => {
                let d = d.expect("consumer open").expect("delivery");
                deliveries += 1;
                delivery_counts.push(header_text(&d, "x-delivery-count"));
                d.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
            }
            d = dead.next() => break d.expect("dead consumer open").expect("dead letter"),
            _ = tokio::time::sleep(common::WAIT) => panic!("no dead letter after {deliveries} deliveries"),
        }
    };
    dead_letter.ack(BasicAckOptions::default()).await.unwrap();
    println!(
        "poison: {deliveries} deliveries before dead-lettering, x-delivery-count {delivery_counts:?}"
    );
    assert_eq!(&dead_letter.data, body);
    assert!(
        (3..=4).contains(&deliveries),
        "delivered {deliveries} times with delivery_limit 3"
    );
    let headers = dead_letter.properties.headers().as_ref().unwrap().inner();
    let Some(AMQPValue::FieldArray(deaths)) = headers.get("x-death") else {
        panic!("x-death header: {headers:?}");
    };
    let AMQPValue::FieldTable(death) = &deaths.as_slice()[0] else {
        panic!("x-death entry: {deaths:?}");
    };
    let text = |name: &str| match death.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("x-death {name}: {other:?}"),
    };
    assert_eq!(text("reason"), "delivery_limit");
    assert_eq!(text("queue"), queue);
    // Nothing left behind.
    let q = channel
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    let queues = common::keyrelay_queues(&config);
    common::delete_queues(&broker, &queues).await;
    let _ = broker.close().await;
    mock.stop().await;
}

/// Every provider fault of the mock, through keyrelay: transient faults are
/// retried up to `max_attempts` calls then fail with `upstream`; a 2xx whose body
/// is unusable fails with `upstream` at once (it was probably billed). No worker
/// restarts, both keys stay in rotation, the consumer goes on.
#[actix::test]
async fn provider_faults_end_in_the_documented_state() {
    let cases = [
        ("reset", 3, "gave up after 3 attempts"),
        ("status=500", 3, "gave up after 3 attempts"),
        ("status=503", 3, "gave up after 3 attempts"),
        ("status=529", 3, "gave up after 3 attempts"),
        ("truncate", 1, "unusable body"),
        ("huge", 1, "too large"),
        // (missing_fields: see success_body_missing_fields_is_upstream_for_every_provider;
        // Gemini's candidate without content is an empty answer, not `upstream`.)
    ];
    let mut env = fault_run("pf", "max_attempts = 3", &cases).await;

    // Connection refused: the same pool pointed at a closed port.
    let app = env.app.take().unwrap();
    app.shutdown(Duration::from_secs(5)).await.unwrap();
    let mut refused = env.config.clone();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    refused.pools[0].base_url = format!("http://127.0.0.1:{port}");
    let app = App::start(refused).await.unwrap();
    tokio::time::timeout(common::WAIT, app.wait_for_consumers(2))
        .await
        .unwrap();
    env.app = Some(app);
    env.publish("pf", &json!({"id": "refused", "prompt": "nobody home"}))
        .await;
    let (r, _) = env.next_reply().await;
    let error = r.error.as_ref().unwrap();
    assert_eq!((error.kind, r.attempts), (ErrorKind::Upstream, 3), "{r:?}");
    assert!(
        error.message.contains("gave up after 3 attempts"),
        "{}",
        error.message
    );
    let metrics = common::scrape(env.app().http_addr()).await;
    assert_eq!(restarts(&metrics, "pf"), 0.0);
    env.finish().await;
}

/// A 2xx body without the answer's fields is unusable whatever the provider:
/// a failure after one call (billed, not retried), never an empty success.
/// Gemini's finished candidate without `content` is an empty answer
/// (`empty_output`); the others' bodies break their schema (`upstream`).
#[actix::test]
async fn success_body_missing_fields_is_upstream_for_every_provider() {
    let pools =
        [("gemini", "kg"), ("openai", "ko"), ("anthropic", "ka")].map(|(provider, key)| TestPool {
            name: provider,
            provider,
            keys: vec![TestKey::new(key, 1)],
        });
    let mut env = TestEnv::start(pools.into()).await;
    for pool in ["gemini", "openai", "anthropic"] {
        env.publish(
            pool,
            &json!({"id": pool, "prompt": "[[mock:missing_fields]] where is it"}),
        )
        .await;
    }
    let replies = env.replies(3).await;
    for (pool, r) in &replies {
        let error = r.error.as_ref().unwrap_or_else(|| panic!("{pool}: {r:?}"));
        let kind = match pool.as_str() {
            "gemini" => ErrorKind::EmptyOutput,
            _ => ErrorKind::Upstream,
        };
        assert_eq!((error.kind, r.attempts), (kind, 1), "{pool}: {r:?}");
    }
    env.finish().await;
}

/// Timeouts (a short `jobs.request_timeout_secs`): headers too late is
/// transient; a 2xx body too slow is unusable (billed).
#[actix::test]
async fn provider_timeouts_end_in_the_documented_state() {
    let cases = [
        ("sleep_ms=5000", 3, "timed out"),
        ("slow_body=6000", 1, "unusable body"),
    ];
    let extra = "request_timeout_secs = 2\nconnect_timeout_secs = 1\nmax_attempts = 3";
    fault_run("pt", extra, &cases).await.finish().await;
}

/// Start keyrelay on a two-key pool, publish one job per `(directive, attempts,
/// message fragment)` and one without a fault; check each ends in `upstream`
/// after that many calls, the clean one succeeds, no worker restarted and both
/// keys are still in rotation.
async fn fault_run(pool: &'static str, extra: &str, cases: &[(&str, u32, &str)]) -> TestEnv {
    let mut env = TestEnv::start_with(
        vec![TestPool {
            name: pool,
            provider: "gemini",
            keys: vec![TestKey::new("k1", 1), TestKey::new("k2", 2)],
        }],
        MockSettings::default(),
        extra,
    )
    .await;
    for (directive, _, _) in cases {
        env.publish(
            pool,
            &json!({"id": directive, "prompt": format!("[[mock:{directive}]] fault")}),
        )
        .await;
    }
    env.publish(pool, &json!({"id": "fine", "prompt": "no fault"}))
        .await;
    let replies = env.replies(cases.len() + 1).await;
    let mut table = Vec::new();
    for (directive, attempts, fragment) in cases {
        let r = &replies[*directive];
        let error = r
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{directive}: {r:?}"));
        table.push(format!(
            "{directive}: {:?} attempts={} {}",
            error.kind, r.attempts, error.message
        ));
        assert_eq!(error.kind, ErrorKind::Upstream, "{directive}: {r:?}");
        assert_eq!(r.attempts, *attempts, "{directive}: {}", error.message);
        assert!(
            error.message.contains(fragment),
            "{directive}: {}",
            error.message
        );
    }
    println!("provider faults:\n{}", table.join("\n"));
    assert_eq!(replies["fine"].status, JobStatus::Succeeded);
    let metrics = common::scrape(env.app().http_addr()).await;
    assert_eq!(restarts(&metrics, pool), 0.0, "no worker restarted");
    // Repeated transient faults may rest a key briefly (cooling_down), but a
    // fault never disables or exhausts one.
    for state in ["disabled", "exhausted"] {
        let parked = metrics.lines().any(|l| {
            l.starts_with("keyrelay_key_state{")
                && l.contains(&format!("pool=\"{pool}\""))
                && l.contains(&format!("state=\"{state}\""))
                && l.ends_with(" 1")
        });
        assert!(!parked, "a key of {pool} is {state} after transient faults");
    }
    env
}
