//! Every field the running admin API answers with is in docs/api.md: the
//! field lists are read from the binary's own answers, so they cannot drift.

mod common;

use common::{ADMIN_TOKEN, TestEnv, TestKey, TestPool};
use serde_json::{Value, json};

const API_DOC: &str = include_str!("../docs/api.md");
const RESULT_SCHEMA: &str = include_str!("../docs/schema/result.schema.json");

async fn get(env: &TestEnv, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", env.http_url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Field names of `object` not named in docs/api.md (as `"name"` or `` `name` ``).
fn undocumented(endpoint: &str, object: &Value) -> Vec<String> {
    let Some(fields) = object.as_object() else {
        return vec![format!("{endpoint}: no object to check")];
    };
    fields
        .keys()
        .filter(|f| !API_DOC.contains(&format!("\"{f}\"")) && !API_DOC.contains(&format!("`{f}`")))
        .map(|f| format!("{endpoint}: {f}"))
        .collect()
}

#[actix::test]
async fn every_field_the_admin_api_answers_with_is_documented() {
    let mut env = TestEnv::start_admin(vec![TestPool {
        name: "g",
        provider: "gemini",
        keys: vec![TestKey::new("k1", 1)],
    }])
    .await;
    // Something in every list: a job of a batch, a budget.
    env.publish(
        "g",
        &json!({"id": "doc-1", "prompt": "hi", "batch": "docs"}),
    )
    .await;
    env.next_reply().await;
    reqwest::Client::new()
        .put(format!("{}/v1/budgets", env.http_url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"scope": "pool", "name": "g", "usd_per_day": 5.0}))
        .send()
        .await
        .unwrap();
    let keys = get(&env, "/v1/keys").await;
    let pools = get(&env, "/v1/pools").await;
    let budgets = get(&env, "/v1/budgets").await;
    let batch = get(&env, "/v1/batches/docs").await;
    let fleet = get(&env, "/v1/fleet").await;
    let jobs = get(&env, "/v1/jobs").await;
    let mut missing = Vec::new();
    missing.extend(undocumented("/v1/jobs", &jobs));
    // A stored result's fields are the result schema's.
    let schema: Value = serde_json::from_str(RESULT_SCHEMA).unwrap();
    let result = &jobs["jobs"][0];
    let one = get(&env, "/v1/jobs/doc-1").await;
    for (endpoint, answer) in [("/v1/jobs", result), ("/v1/jobs/{id}", &one)] {
        for field in answer.as_object().expect("a result").keys() {
            if schema["properties"].get(field).is_none() {
                missing.push(format!(
                    "{endpoint}: {field} (docs/schema/result.schema.json)"
                ));
            }
        }
    }
    for by in ["key", "error", "hour", "upstream", "pool", "user", "model"] {
        let stats = get(&env, &format!("/v1/stats?by={by}")).await;
        missing.extend(undocumented(&format!("/v1/stats?by={by}"), &stats));
        let groups = stats["groups"].as_object().expect("groups");
        if let Some((_, group)) = groups.iter().next()
            && by != "upstream"
        {
            missing.extend(undocumented(&format!("/v1/stats?by={by} group"), group));
        }
    }
    missing.extend(undocumented("/v1/keys", &keys["keys"][0]));
    missing.extend(undocumented("/v1/pools", &pools["pools"][0]));
    missing.extend(undocumented("/v1/budgets", &budgets["budgets"][0]));
    missing.extend(undocumented("/v1/batches/{id}", &batch));
    missing.extend(undocumented("/v1/fleet", &fleet));
    assert!(
        missing.is_empty(),
        "fields missing from docs/api.md: {missing:?}"
    );
    env.finish().await;
}
