//! What keyrelay does with the answers real providers send when an account or
//! a job goes wrong, over the real broker, with the mock replaying recorded
//! real answers (tests/fixtures/providers, each naming its source).

mod common;

use std::time::{Duration, Instant};

use common::{TestEnv, TestKey, TestPool};
use keyrelay::actors::messages::GetKeys;
use keyrelay_core::job::{ErrorKind, JobStatus};
use keyrelay_core::keys::KeyState;
use serde_json::json;

fn pool(name: &'static str, provider: &'static str, keys: Vec<TestKey>) -> TestPool {
    TestPool {
        name,
        provider,
        keys,
    }
}

/// A key whose every call is answered with the recorded answer `fixture`.
fn replaying(name: &'static str, priority: u8, fixture: &str) -> TestKey {
    TestKey::new(name, priority).mock(|k| k.replaying(fixture, None))
}

async fn key_state(env: &TestEnv, pool: &str, key: &str) -> KeyState {
    let keys = env.app().supervisor().send(GetKeys).await.unwrap();
    keys.into_iter()
        .find(|k| k.pool == pool && k.name == key)
        .map(|k| k.state)
        .expect("key known to the supervisor")
}

/// A 400/403/429 that says the account behind the key is finished takes the
/// key out (disabled, the provider's words as the reason); its jobs run on
/// the healthy key without being charged the refused call.
#[actix::test]
async fn dead_accounts_leave_rotation_and_their_jobs_succeed_elsewhere() {
    let cases = [
        (
            "dg",
            "gemini",
            "dg-dead",
            "user_location_not_supported",
            "location is not supported",
        ),
        (
            "da",
            "anthropic",
            "da-dead",
            "organization_disabled",
            "organization has been disabled",
        ),
        (
            "do",
            "openai",
            "do-dead",
            "openai_429_billing_not_active",
            "not active",
        ),
    ];
    let pools = cases
        .iter()
        .map(|(name, provider, dead, fixture, _)| {
            let ok: &'static str = Box::leak(format!("{name}-ok").into_boxed_str());
            pool(
                name,
                provider,
                vec![
                    replaying(dead, 1, fixture).concurrency(1),
                    TestKey::new(ok, 2),
                ],
            )
        })
        .collect();
    let mut env = TestEnv::start(pools).await;
    let per_pool = 4;
    for (name, ..) in &cases {
        for i in 0..per_pool {
            env.publish(
                name,
                &json!({"id": format!("{name}-{i}"), "prompt": format!("job {i}")}),
            )
            .await;
        }
    }
    let replies = env.replies(cases.len() * per_pool).await;
    for (id, r) in &replies {
        let pool = &r.pool;
        assert_eq!(r.status, JobStatus::Succeeded, "{id}: {r:?}");
        assert_eq!(
            r.key.as_deref(),
            Some(format!("{pool}-ok").as_str()),
            "{id}"
        );
        assert_eq!(
            r.attempts, 1,
            "{id}: the dead key's refusal is not charged to the job"
        );
    }
    let stats = env.mock.stats();
    for (name, _, dead, _, reason) in cases {
        match key_state(&env, name, dead).await {
            KeyState::Disabled { reason: why } => assert!(why.contains(reason), "{name}: {why}"),
            other => panic!("{name}: the dead key is {other:?}"),
        }
        // One call in flight when the first refusal arrived; none after it.
        assert_eq!(stats.key(dead).replayed, 1, "{name}: calls on the dead key");
        assert_eq!(stats.key(dead).successes, 0);
    }
    env.finish().await;
}

/// OpenAI's 429 "Request too large ... Limit 30000, Requested 36321" is the
/// job's, not the key's: the job fails once as too_large with the numbers,
/// and the key keeps serving at once. A job larger than every key's declared
/// tpm is not sent at all.
#[actix::test]
async fn too_large_jobs_fail_once_and_no_key_cools() {
    let keys = vec![
        TestKey::new("tl-a", 1).limits("tpm = 4000"),
        TestKey::new("tl-b", 2).limits("tpm = 3000"),
    ];
    let mut env = TestEnv::start(vec![pool("tl", "openai", keys)]).await;
    env.publish(
        "tl",
        &json!({"id": "huge", "prompt": "[[mock:replay=openai_429_request_too_large_tpm]] long"}),
    )
    .await;
    let (r, _) = env.next_reply().await;
    let error = r.error.as_ref().expect("failed");
    assert_eq!((error.kind, r.attempts), (ErrorKind::TooLarge, 1), "{r:?}");
    assert!(
        error.limit.is_some() && error.requested > error.limit,
        "{error:?}"
    );
    for key in ["tl-a", "tl-b"] {
        assert_eq!(
            key_state(&env, "tl", key).await,
            KeyState::Active,
            "{key} not cooled"
        );
    }
    let started = Instant::now();
    env.publish("tl", &json!({"id": "next", "prompt": "small"}))
        .await;
    let (r, _) = env.next_reply().await;
    assert_eq!(r.status, JobStatus::Succeeded);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served at once, not after a cooldown"
    );

    // ~4,100 tokens (prompt / 4 + max_output_tokens) > 4,000, the largest tpm.
    let calls_before =
        env.mock.stats().key("tl-a").requests + env.mock.stats().key("tl-b").requests;
    env.publish(
        "tl",
        &json!({"id": "never", "prompt": "x".repeat(400), "max_output_tokens": 4000}),
    )
    .await;
    let (r, _) = env.next_reply().await;
    let error = r.error.as_ref().expect("failed");
    assert_eq!(
        (error.kind, error.limit, error.requested),
        (ErrorKind::TooLarge, Some(4000), Some(4100))
    );
    assert_eq!(r.attempts, 0, "{r:?}");
    let calls_after = env.mock.stats().key("tl-a").requests + env.mock.stats().key("tl-b").requests;
    assert_eq!(
        calls_after, calls_before,
        "no provider call for a job no key can take"
    );
    env.finish().await;
}

/// A per-day 429 that names its own time ("Please try again in 8.64s") parks
/// the key until then, not until the daily reset: the job waits and then
/// succeeds on that same key.
#[actix::test]
async fn per_day_limits_honour_the_providers_try_again_time() {
    let key =
        TestKey::new("rpd", 1).mock(|k| k.replaying("openai_429_rpd_short_hint_8_64s", Some(1)));
    let mut env = TestEnv::start(vec![pool("pd", "openai", vec![key])]).await;
    let started = Instant::now();
    env.publish("pd", &json!({"id": "daily", "prompt": "hello"}))
        .await;
    let (r, _) = tokio::time::timeout(Duration::from_secs(60), env.next_reply())
        .await
        .expect("answered long before the daily reset");
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    assert_eq!((r.key.as_deref(), r.attempts), (Some("rpd"), 1));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(8),
        "the provider's 8.64 s were honoured: {waited:?}"
    );
    let stats = env.mock.stats().key("rpd");
    assert_eq!(
        (stats.replayed, stats.successes),
        (1, 1),
        "no call while parked"
    );
    env.finish().await;
}

/// Blocked and empty answers fail the job with their own kind and are never
/// cached: the same request asked again goes to the provider again. (A
/// success, asked twice, is answered from the cache: the control.)
#[actix::test]
async fn blocked_and_empty_answers_are_not_cached() {
    let mut env = TestEnv::start(vec![pool("nc", "gemini", vec![TestKey::new("nc-k", 1)])]).await;
    let cases = [
        (
            "finish_safety_with_partial_text",
            ErrorKind::Blocked,
            Some("SAFETY"),
        ),
        (
            "prompt_blocked_safety_no_candidates",
            ErrorKind::Blocked,
            Some("SAFETY"),
        ),
        ("stop_with_no_parts", ErrorKind::EmptyOutput, Some("STOP")),
        (
            "max_tokens_spent_on_thoughts_no_parts",
            ErrorKind::Truncated,
            Some("MAX_TOKENS"),
        ),
    ];
    for (fixture, kind, reason) in cases {
        for round in 0..2 {
            let id = format!("{fixture}-{round}");
            env.publish(
                "nc",
                &json!({"id": id, "prompt": format!("[[mock:replay={fixture}]] same")}),
            )
            .await;
            let (r, _) = env.next_reply().await;
            let error = r.error.as_ref().unwrap_or_else(|| panic!("{id}: {r:?}"));
            assert_eq!(
                (error.kind, error.reason.as_deref()),
                (kind, reason),
                "{id}"
            );
            assert!(
                !r.cached,
                "{id}: a failure is never answered from the cache"
            );
            if fixture == "finish_safety_with_partial_text" {
                assert!(
                    r.text.as_deref().is_some_and(|t| !t.is_empty()),
                    "{id}: partial text kept"
                );
            }
        }
    }
    assert_eq!(
        env.mock.stats().key("nc-k").replayed,
        2 * cases.len() as u32,
        "every one called"
    );
    for round in 0..2 {
        env.publish(
            "nc",
            &json!({"id": format!("ok-{round}"), "prompt": "a fine question"}),
        )
        .await;
        let (r, _) = env.next_reply().await;
        assert_eq!(
            (r.status, r.cached),
            (JobStatus::Succeeded, round == 1),
            "control"
        );
    }
    env.finish().await;
}

/// An OpenAI reasoning model refuses `max_tokens` ("Unsupported parameter");
/// a pool told to send it anyway learns the other field from that answer:
/// the first job is resent once and succeeds, later jobs go right.
#[actix::test]
async fn an_unsupported_token_field_is_switched_and_the_call_resent_once() {
    let mut env = TestEnv::start_pools_with(
        vec![pool("tf", "openai", vec![TestKey::new("tf-k", 1)])],
        Default::default(),
        "",
        "max_tokens_field = \"max_tokens\"\n",
    )
    .await;
    for i in 0..3 {
        let job = json!({"id": format!("o3-{i}"), "model": "o3-mini", "prompt": format!("hi {i}"), "max_output_tokens": 50});
        env.publish("tf", &job).await;
        let (r, _) = env.next_reply().await;
        assert_eq!((r.status, r.attempts), (JobStatus::Succeeded, 1), "{r:?}");
    }
    let stats = env.mock.stats().key("tf-k");
    assert_eq!(
        (stats.bad_requests, stats.successes),
        (1, 3),
        "one refusal, then learned"
    );
    env.finish().await;
}

/// Azure OpenAI: calls go to the job's deployment with `api-key`; Azure's
/// 429 (`retry-after: 6`, "Please retry after 6 seconds") cools the key for
/// that long, and every job still succeeds.
#[actix::test]
async fn azure_pools_call_deployments_and_honour_azures_429s() {
    let fixture = "azure_429_token_rate_limit_retry_after_header";
    let key = TestKey::new("az-k", 1).mock(|k| k.replaying(fixture, Some(1)));
    let mut env = TestEnv::start(vec![pool("az", "azure", vec![key])]).await;
    let started = Instant::now();
    for i in 0..4 {
        let job =
            json!({"id": format!("az-{i}"), "model": "gpt-4o-prod", "prompt": format!("q {i}")});
        env.publish("az", &job).await;
    }
    let replies = env.replies(4).await;
    for (id, r) in &replies {
        assert_eq!(r.status, JobStatus::Succeeded, "{id}: {r:?}");
        assert_eq!((r.model.as_deref(), r.attempts), (Some("gpt-4o-prod"), 1));
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(6),
        "the key cooled as Azure said: {waited:?}"
    );
    let stats = env.mock.stats().key("az-k");
    assert_eq!(
        (stats.replayed, stats.successes),
        (1, 4),
        "no call while cooling: {stats:?}"
    );
    env.finish().await;
}
