//! The admin API against a running keyrelay (real RabbitMQ, mock provider):
//! auth, bad parameters, key actions, probes, jobs over HTTP, history, stats,
//! alerts and the queue-depth gauges.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, READ_TOKEN, TestEnv, TestKey, TestPool, WAIT};
use lapin::BasicProperties;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

fn one_pool(keys: Vec<TestKey>) -> Vec<TestPool> {
    vec![TestPool {
        name: "g",
        provider: "gemini",
        keys,
    }]
}

struct Api {
    client: Client,
    base: String,
}

impl Api {
    fn new(env: &TestEnv) -> Api {
        Api {
            client: Client::new(),
            base: env.http_url(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("keyrelay answers");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(READ_TOKEN), None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(ADMIN_TOKEN), body).await
    }

    async fn key(&self, name: &str) -> Value {
        let (status, body) = self.get("/v1/keys").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .cloned()
            .unwrap()
    }

    /// Poll `GET /v1/jobs/{id}` until the result is stored.
    async fn wait_result(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self.get(&format!("/v1/jobs/{id}")).await;
            if status == StatusCode::OK {
                return body;
            }
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
            assert!(tokio::time::Instant::now() < deadline, "no result for {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

const GETS: [&str; 7] = [
    "/v1/pools",
    "/v1/keys",
    "/v1/jobs",
    "/v1/jobs/some-id",
    "/v1/stats",
    "/v1/alerts",
    "/v1/stats?by=hour",
];
const POSTS: [&str; 5] = [
    "/v1/keys/g/k1/disable",
    "/v1/keys/g/k1/enable",
    "/v1/keys/g/k1/probe",
    "/v1/keys/g/k1/reset",
    "/v1/jobs?pool=g",
];

#[actix::test]
async fn every_endpoint_requires_a_token_and_posts_need_the_admin_one() {
    let env = TestEnv::start_admin(one_pool(vec![TestKey::new("k1", 1)])).await;
    let api = Api::new(&env);
    for path in GETS {
        for token in [None, Some("wrong-token-wrong-token")] {
            let (status, body) = api.call(Method::GET, path, token, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
            assert_eq!(body["error"], "unauthorized", "{path}: {body}");
            assert!(body["message"].as_str().unwrap().len() > 5);
        }
        let (status, body) = api.get(path).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{path}: {status} {body}"
        );
        let (status, _) = api.call(Method::GET, path, Some(ADMIN_TOKEN), None).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in POSTS {
        let (status, body) = api.call(Method::POST, path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        let (status, body) = api.call(Method::POST, path, Some(READ_TOKEN), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"], "forbidden");
    }
    // Health and metrics stay open; no response carries a key's secret.
    let (status, _) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, keys) = api.get("/v1/keys").await;
    assert!(!keys.to_string().contains("test-secret-"), "{keys}");
    env.finish().await;
}

#[actix::test]
async fn admin_api_is_closed_without_configured_tokens() {
    let env = TestEnv::start(one_pool(vec![TestKey::new("k1", 1)])).await;
    let api = Api::new(&env);
    let (status, body) = api.get("/v1/keys").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no token is configured")
    );
    env.finish().await;
}

#[actix::test]
async fn bad_parameters_are_400_with_a_message() {
    let env = TestEnv::start_admin(one_pool(vec![TestKey::new("k1", 1)])).await;
    let api = Api::new(&env);
    for (path, needle) in [
        ("/v1/jobs?limit=0", "limit"),
        ("/v1/jobs?limit=abc", "limit"),
        ("/v1/jobs?since=yesterday", "since"),
        ("/v1/jobs?status=done", "status"),
        ("/v1/jobs?cursor=zz", "cursor"),
        ("/v1/jobs?colour=red", "colour"),
        ("/v1/jobs?since=1h&until=2h", "since"),
        ("/v1/stats?by=day", "by"),
        ("/v1/stats?since=tomorrow", "since"),
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"], "bad_request");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    for (path, body, needle) in [
        ("/v1/jobs", json!({"prompt": "x"}), "pool"),
        ("/v1/jobs?pool=nope", json!({"prompt": "x"}), "nope"),
        ("/v1/jobs?pool=g", json!({"id": "x"}), "invalid job"),
        (
            "/v1/jobs?pool=g",
            json!({"prompt": "x", "temprature": 1}),
            "temprature",
        ),
        ("/v1/keys/g/k1/disable", json!({"why": 1}), "reason"),
    ] {
        let (status, answer) = api.post(path, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(needle),
            "{path}: {answer}"
        );
    }
    let (status, body) = api.post("/v1/keys/g/nope/enable", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = api.post("/v1/keys/g/k1/explode", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.get("/v1/jobs/never-ran").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    env.finish().await;
}

#[actix::test]
async fn disable_enable_reset_change_the_key_state() {
    let env =
        TestEnv::start_admin(one_pool(vec![TestKey::new("k1", 1), TestKey::new("k2", 2)])).await;
    let api = Api::new(&env);
    assert_eq!(api.key("k1").await["state"], "active");
    let (status, body) = api
        .post(
            "/v1/keys/g/k1/disable",
            Some(json!({"reason": "maintenance"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key"]["state"], "disabled");
    let key = api.key("k1").await;
    assert_eq!(key["state"], "disabled");
    assert_eq!(key["reason"], "maintenance");
    let (_, pools) = api.get("/v1/pools").await;
    assert_eq!(pools["pools"][0]["keys_usable"], 1, "{pools}");
    // One of two keys usable is not "fewer than half"; both out is an outage.
    api.post("/v1/keys/g/k2/disable", None).await;
    let (_, alerts) = api.get("/v1/alerts").await;
    let names: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"KeyrelayPoolNoKeyAvailable"), "{alerts}");
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "KeyrelayKeyDisabled")
            .count(),
        2
    );
    let (status, body) = api.post("/v1/keys/g/k1/enable", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(api.key("k1").await["state"], "active");
    let (status, _) = api.post("/v1/keys/g/k2/reset", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.key("k2").await["state"], "active");
    env.finish().await;
}

#[actix::test]
async fn probe_makes_one_real_request_through_the_key() {
    let env = TestEnv::start_admin(one_pool(vec![TestKey::new("k1", 1)])).await;
    let api = Api::new(&env);
    let (status, body) = api.post("/v1/keys/g/k1/probe", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["outcome"], "success");
    assert_eq!(env.mock.stats().keys["k1"].requests, 1);
    env.mock.revoke("k1");
    let (_, body) = api.post("/v1/keys/g/k1/probe", None).await;
    assert_eq!(body["ok"], false);
    assert_eq!(body["outcome"], "unauthorized", "{body}");
    // A probe reports; it does not move the key.
    assert_eq!(api.key("k1").await["state"], "active");
    env.finish().await;
}

#[actix::test]
async fn jobs_over_http_history_pages_and_stats() {
    let env = TestEnv::start_admin(one_pool(vec![TestKey::new("k1", 1)])).await;
    let api = Api::new(&env);
    let (status, body) = api
        .post(
            "/v1/jobs?pool=g",
            Some(json!({"id": "http-1", "prompt": "hello", "user": "alice"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["id"], "http-1");
    let result = api.wait_result("http-1").await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["text"], "mock answer: hello");
    // No id in the body: one is generated and returned.
    let (status, body) = api
        .post("/v1/jobs?pool=g", Some(json!({"prompt": "anon"})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let generated = body["id"].as_str().unwrap().to_owned();
    api.wait_result(&generated).await;
    for i in 0..5 {
        let user = if i % 2 == 0 { "bob" } else { "alice" };
        let job = json!({"id": format!("h-{i}"), "prompt": format!("n {i}"), "user": user});
        assert_eq!(
            api.post("/v1/jobs?pool=g", Some(job)).await.0,
            StatusCode::ACCEPTED
        );
        api.wait_result(&format!("h-{i}")).await;
    }
    // Seven results; pages of 3, newest first, each id once.
    let mut ids = Vec::new();
    let mut path = "/v1/jobs?limit=3".to_string();
    loop {
        let (status, page) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let jobs = page["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 3);
        ids.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/jobs?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(ids.len(), 7, "{ids:?}");
    assert_eq!(&ids[..2], ["h-4", "h-3"]);
    assert_eq!(ids.last().unwrap(), "http-1");
    let (_, bob) = api.get("/v1/jobs?user=bob&status=succeeded&since=1h").await;
    assert_eq!(bob["jobs"].as_array().unwrap().len(), 3, "{bob}");
    let (_, failed) = api.get("/v1/jobs?status=failed").await;
    assert!(failed["jobs"].as_array().unwrap().is_empty());
    // Stats: lifetime counters by key, and results by hour.
    let (_, stats) = api.get("/v1/stats?by=key").await;
    assert_eq!(stats["source"], "counters");
    assert_eq!(stats["groups"]["g/k1"]["completed"], 7, "{stats}");
    let (_, hourly) = api.get("/v1/stats?by=hour&since=2h").await;
    let total: u64 = hourly["groups"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r["completed"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 7, "{hourly}");
    let (_, errors) = api.get("/v1/stats?by=error&since=1h").await;
    assert_eq!(errors["groups"]["succeeded"]["completed"], 7, "{errors}");
    // Reset clears the key's counters.
    api.post("/v1/keys/g/k1/reset", None).await;
    assert!(
        api.key("k1").await["counters"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    env.finish().await;
}

#[actix::test]
async fn pools_show_queue_depth_and_dead_letters_raise_an_alert() {
    let mut env = TestEnv::start_admin(one_pool(vec![TestKey::new("k1", 1)])).await;
    let api = Api::new(&env);
    // No key consuming: jobs pile up in the queue.
    api.post("/v1/keys/g/k1/disable", None).await;
    env.app().wait_for_consumers(0).await;
    for i in 0..3 {
        let job = json!({"id": format!("wait-{i}"), "prompt": "later"});
        assert_eq!(
            api.post("/v1/jobs?pool=g", Some(job)).await.0,
            StatusCode::ACCEPTED
        );
    }
    let (_, pools) = api.get("/v1/pools").await;
    let pool = &pools["pools"][0];
    assert_eq!(pool["ready"], 3, "{pools}");
    assert_eq!(pool["consumers"], 0);
    assert_eq!(pool["keys_by_state"]["disabled"], 1);
    assert_eq!(pools["dead_letters"]["ready"], 0);
    let (_, alerts) = api.get("/v1/alerts").await;
    assert!(alerts.to_string().contains("KeyrelayPoolNoKeyAvailable"));
    assert!(!alerts.to_string().contains("KeyrelayDeadLettersGrowing"));
    // An invalid job is dead-lettered: the dead-letter queue grows.
    api.post("/v1/keys/g/k1/enable", None).await;
    let props = BasicProperties::default().with_reply_to(env.replies.as_str().into());
    env.publish_raw("g", b"not json", props).await;
    // Its invalid_job reply is published after the dead letter is confirmed.
    let (reply, _) = env.next_reply().await;
    assert_eq!(reply.error.unwrap().kind.as_str(), "invalid_job");
    let (_, alerts) = api.get("/v1/alerts").await;
    assert!(
        alerts.to_string().contains("KeyrelayDeadLettersGrowing"),
        "{alerts}"
    );
    // The poller exports the depths as gauges.
    let metrics = common::scrape(env.app().http_addr()).await;
    assert!(
        metrics.contains("keyrelay_dead_letter_messages"),
        "{metrics}"
    );
    assert!(metrics.contains("keyrelay_queue_messages{pool=\"g\"}"));
    env.finish().await;
}
