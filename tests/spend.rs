//! Spend and budgets over the real broker and the mock provider: what each
//! reply says it cost adds up to the stats; a pool at its budget stops taking
//! jobs (they wait in the queue) and resumes when an operator raises it; a
//! user at its cap gets `budget_exceeded` while others run.

mod common;

use std::time::Duration;

use common::{TestEnv, TestKey, TestPool, WAIT};
use keyrelay_core::job::{ErrorKind, JobStatus};
use keyrelay_mock::MockSettings;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "spend-admin-token-0123456789abcdef";

/// The admin API of a test environment.
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn of(env: &TestEnv) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: env.http_url(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("keyrelay answers");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn set_budget(&self, body: Value) -> Value {
        let (status, answer) = self.call(Method::PUT, "/v1/budgets", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    }
}

/// Start one pool `g` of two keys (one call at a time each) with the admin
/// API on; `pool_toml` goes into the pool's table.
async fn start(pool_toml: &str) -> (TestEnv, tempfile::TempDir) {
    let tokens = tempfile::tempdir().unwrap();
    let extra = common::admin_toml(tokens.path(), ADMIN);
    let keys = vec![
        TestKey::new("k1", 1).concurrency(1),
        TestKey::new("k2", 1).concurrency(1),
    ];
    let pools = vec![TestPool {
        name: "g",
        provider: "openai",
        keys,
    }];
    let env = TestEnv::start_pools_with(pools, MockSettings::default(), &extra, pool_toml).await;
    (env, tokens)
}

fn cost(reply: &keyrelay_core::job::JobResult) -> f64 {
    reply.usage.cost_usd.expect("a priced model has a cost")
}

/// Ready messages in the pool's job queue.
async fn queued(env: &TestEnv) -> u32 {
    let channel = env.broker.channel().await.unwrap();
    let q = channel
        .queue_declare(
            env.queue("g").as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let _ = channel.close(200, "counted".into()).await;
    q.message_count()
}

/// Poll until `check` holds (each second), or fail after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix::test]
async fn a_pool_at_its_budget_keeps_jobs_queued_until_raised_and_costs_add_up() {
    // $1 per prompt token and $2 per output token: costs large enough to read.
    let prices = "prices = { \"model-a\" = { input = 1000000.0, output = 2000000.0 } }\n";
    let (mut env, _tokens) = start(prices).await;
    let api = Api::of(&env);

    // One job tells what a job costs here. Prompts are of one length, each
    // its own: the same one twice is answered from the response cache.
    env.publish(
        "g",
        &json!({"id": "first", "prompt": "prompt of job first"}),
    )
    .await;
    let first = env.replies(1).await.remove("first").unwrap();
    let per_job = cost(&first);
    let want = first.usage.input_tokens as f64 + 2.0 * first.usage.output_tokens as f64;
    assert!(
        (per_job - want).abs() < 1e-6,
        "cost {per_job} != tokens at the price {want}"
    );

    // Room for four more jobs today; ten are sent.
    api.set_budget(json!({"scope": "pool", "name": "g", "usd_per_day": per_job * 5.5}))
        .await;
    let ids: Vec<String> = (0..10).map(|i| format!("j{i}")).collect();
    for id in &ids {
        env.publish(
            "g",
            &json!({"id": id, "prompt": format!("prompt of job {id:>5}")}),
        )
        .await;
    }
    // The estimate counts no output (no max_tokens), so the calls in flight
    // (at most one per key) may pass the budget: 4 fit, up to 2 more.
    let paid = env.replies(4).await;
    let keys_parked = || async {
        let (_, keys) = api.call(Method::GET, "/v1/keys", None).await;
        keys["keys"].as_array().unwrap().iter().all(|k| {
            k["state"] == "exhausted"
                && k["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("budget_usd_per_day")
        })
    };
    eventually("every key parked by the pool's budget", keys_parked).await;
    let mut all = paid;
    // Calls in flight when the budget ran out still answer.
    while let Ok((reply, _)) =
        tokio::time::timeout(Duration::from_millis(500), env.next_reply()).await
    {
        all.insert(reply.id.clone(), reply);
    }
    let answered = all.len();
    assert!(
        (4..=6).contains(&answered),
        "{answered} jobs paid for a budget of 5.5 jobs"
    );
    let waiting = 10 - answered as u32;
    eventually("the rest wait in the queue", || async {
        queued(&env).await == waiting
    })
    .await;
    let (_, alerts) = api.call(Method::GET, "/v1/alerts", None).await;
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "KeyrelayBudgetSpent" && a["pool"] == "g"),
        "{alerts}"
    );

    // Raised: the keys come back and the rest is answered, each job once.
    let raised = api
        .set_budget(json!({"scope": "pool", "name": "g", "usd_per_day": per_job * 100.0}))
        .await;
    assert_eq!(raised["keys_back_in_rotation"], 2, "{raised}");
    let rest = env.replies(waiting as usize).await;
    all.extend(rest);
    assert_eq!(all.len(), 10);
    assert!(all.values().all(|r| r.status == JobStatus::Succeeded));

    // The replies' costs add up to the spend counters' figure.
    let replied: f64 = per_job + all.values().map(cost).sum::<f64>();
    eventually("stats by pool match the replies", || async {
        let (_, stats) = api.call(Method::GET, "/v1/stats?by=pool", None).await;
        let counted = stats["groups"]["g"]["cost_usd"].as_f64().unwrap_or(0.0);
        (counted - replied).abs() < 1e-6
    })
    .await;
    // Lifetime per-key counters carry the keys' cost too.
    let (_, by_key) = api.call(Method::GET, "/v1/stats?by=key", None).await;
    let keys_cost: f64 = by_key["groups"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|g| g["cost_usd"].as_f64())
        .sum();
    assert!((keys_cost - replied).abs() < 1e-6, "{by_key}");
    // The CLI prints the same figure.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyrelay"))
        .args([
            "spend",
            "--by",
            "pool",
            "--admin-url",
            &env.http_url(),
            "--token",
            ADMIN,
        ])
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains(&format!("${replied:.4}")), "{printed}");
    assert!(
        printed.contains("pool g") && printed.contains("day"),
        "budgets listed: {printed}"
    );
    let (_, by_model) = api
        .call(Method::GET, "/v1/stats?by=model&bucket=day", None)
        .await;
    assert!(by_model["groups"]["model-a"].is_object(), "{by_model}");
    let metrics = common::scrape(env.app().http_addr()).await;
    assert!(
        metrics.contains("keyrelay_cost_usd_total{"),
        "cost metric exported"
    );
    env.finish().await;
}

#[actix::test]
async fn a_user_at_its_cap_gets_budget_exceeded_and_others_run() {
    // Every user has $0 a day unless raised; model-a has a price, model-b none.
    let pool =
        "user_budget_usd_per_day = 0.0\nprices = { \"model-a\" = { input = 1.0, output = 2.0 } }\n";
    let (mut env, _tokens) = start(pool).await;
    let api = Api::of(&env);
    api.set_budget(json!({"scope": "user", "name": "g/bob", "usd_per_day": 10.0}))
        .await;
    let jobs = [
        json!({"id": "alice-1", "prompt": "hi", "user": "alice"}),
        json!({"id": "bob-1", "prompt": "hi", "user": "bob"}),
        // No price, and carol's cap applies: refused, not run blind.
        json!({"id": "carol-1", "prompt": "hi", "user": "carol", "model": "model-b"}),
        // No price and no budget: runs, and its cost is null.
        json!({"id": "anon-1", "prompt": "hi", "model": "model-b"}),
    ];
    for job in &jobs {
        env.publish("g", job).await;
    }
    let replies = env.replies(jobs.len()).await;
    let alice = &replies["alice-1"];
    let error = alice.error.as_ref().expect("alice's job failed");
    assert_eq!(error.kind, ErrorKind::BudgetExceeded);
    assert!(
        error.message.contains("g/alice") && error.message.contains("budget_usd_per_day"),
        "{}",
        error.message
    );
    assert_eq!(alice.usage.cost_usd, Some(0.0), "no call, no cost");
    let carol = replies["carol-1"]
        .error
        .as_ref()
        .expect("carol's job failed");
    assert_eq!(carol.kind, ErrorKind::BudgetExceeded);
    assert!(carol.message.contains("no price"), "{}", carol.message);
    let dead = env.dead_letters(2).await;
    assert_eq!(
        dead.len(),
        2,
        "refused jobs are dead-lettered for a later replay"
    );
    let bob = &replies["bob-1"];
    assert_eq!(bob.status, JobStatus::Succeeded);
    assert!(bob.usage.cost_usd.unwrap() > 0.0);
    // No price for model-b: null, never a guess.
    let anon = &replies["anon-1"];
    assert_eq!(anon.status, JobStatus::Succeeded);
    assert_eq!(anon.usage.cost_usd, None);
    let metrics = common::scrape(env.app().http_addr()).await;
    assert!(
        metrics.contains("keyrelay_cost_unpriced_calls_total{"),
        "unpriced calls are counted"
    );
    // A period left out keeps its budget; null removes it.
    api.set_budget(json!({"scope": "user", "name": "g/bob", "usd_per_month": 50.0}))
        .await;
    let (_, budgets) = api.call(Method::GET, "/v1/budgets", None).await;
    let bob_budgets: Vec<&Value> = budgets["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["name"] == "g/bob")
        .collect();
    assert_eq!(bob_budgets.len(), 2, "day and month: {budgets}");
    api.set_budget(
        json!({"scope": "user", "name": "g/bob", "usd_per_day": null, "usd_per_month": null}),
    )
    .await;
    let (_, budgets) = api.call(Method::GET, "/v1/budgets", None).await;
    assert!(
        !budgets["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == "g/bob"),
        "bob has no budget now, not the pool's default: {budgets}"
    );
    // Bad input to the budget API is a clear 4xx.
    let (status, body) = api
        .call(
            Method::PUT,
            "/v1/budgets",
            Some(json!({"scope": "team", "name": "g"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = api
        .call(
            Method::PUT,
            "/v1/budgets",
            Some(json!({"scope": "key", "name": "g/nope", "usd_per_day": 1.0})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    env.finish().await;
}

/// Each provider reports cached and reasoning tokens in its own fields (the
/// mock renders them as the real APIs do); every reply means the same by
/// them, and the cost prices cached tokens at the cached rate.
#[actix::test]
async fn cached_and_reasoning_tokens_are_priced_the_same_through_every_provider() {
    let prices = "prices = { \"model-a\" = { input = 1000000.0, output = 2000000.0, cached_input = 100000.0 } }\n";
    let pools = [("gemini", "kg"), ("openai", "ko"), ("anthropic", "ka")]
        .into_iter()
        .map(|(provider, key)| TestPool {
            name: provider,
            provider,
            keys: vec![TestKey::new(key, 1)],
        })
        .collect();
    let mut env = TestEnv::start_pools_with(pools, MockSettings::default(), "", prices).await;
    for pool in ["gemini", "openai", "anthropic"] {
        let prompt = "a long enough prompt to cache [[mock:cached=3,reasoning=5]]";
        env.publish(pool, &json!({"id": pool, "prompt": prompt}))
            .await;
    }
    let replies = env.replies(3).await;
    for pool in ["gemini", "openai", "anthropic"] {
        let u = &replies[pool].usage;
        assert_eq!(u.cached_input_tokens, 3, "{pool}: {u:?}");
        // Anthropic folds thinking into output_tokens without a breakdown.
        let reasoning = if pool == "anthropic" { 0 } else { 5 };
        assert_eq!(u.reasoning_tokens, reasoning, "{pool}: {u:?}");
        let want = (u.input_tokens - 3) as f64 + 3.0 * 0.1 + 2.0 * u.output_tokens as f64;
        let got = u.cost_usd.unwrap();
        assert!(
            (got - want).abs() < 1e-6,
            "{pool}: cost {got} != {want} for {u:?}"
        );
    }
    // One prompt, one answer text: the same usage whichever provider spoke.
    assert_eq!(replies["gemini"].usage, replies["openai"].usage);
    let (a, g) = (&replies["anthropic"].usage, &replies["gemini"].usage);
    assert_eq!(
        (a.input_tokens, a.output_tokens),
        (g.input_tokens, g.output_tokens)
    );
    env.finish().await;
}
