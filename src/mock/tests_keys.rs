//! Over-the-wire tests of keys and bookkeeping: per-day limits, invalid, unknown and
//! missing keys, control endpoints, stats and malformed requests.

use reqwest::Response;
use serde_json::{Value, json};

use super::tests::{ALL, MODEL, P, call, client, start};
use super::*;

#[actix_web::test]
async fn rpd_exceeded_gives_each_providers_daily_shape() {
    let mock = start(vec![MockKey::new("k", "s").with_rpd(1)]).await;
    for p in ALL {
        mock.reset();
        assert_eq!(
            call(&mock, p, Some("s"), "first", false).await.status(),
            200
        );
        check_exhausted(p, call(&mock, p, Some("s"), "second", false).await).await;
    }
    mock.stop().await;
}

pub(super) async fn check_exhausted(p: P, r: Response) {
    match p {
        P::Gemini => {
            assert_eq!(r.status(), 429);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
            let quota_id = body["error"]["details"][0]["violations"][0]["quotaId"]
                .as_str()
                .unwrap();
            assert!(quota_id.contains("PerDay"), "{quota_id}");
        }
        P::Openai => {
            assert_eq!(r.status(), 429);
            assert!(r.headers().get("retry-after").is_none());
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "insufficient_quota");
            assert_eq!(body["error"]["type"], "insufficient_quota");
        }
        P::Anthropic => {
            assert_eq!(r.status(), 400);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["type"], "invalid_request_error");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("Your credit balance is too low"),
                "{message}"
            );
        }
    }
}

pub(super) async fn check_invalid_key(p: P, r: Response) {
    match p {
        P::Gemini => {
            assert_eq!(r.status(), 400);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
            assert_eq!(body["error"]["details"][0]["reason"], "API_KEY_INVALID");
        }
        P::Openai => {
            assert_eq!(r.status(), 401);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "invalid_api_key");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Incorrect API key provided")
            );
        }
        P::Anthropic => {
            assert_eq!(r.status(), 401);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["type"], "authentication_error");
            assert_eq!(body["error"]["message"], "invalid x-api-key");
        }
    }
}

#[actix_web::test]
async fn invalid_unknown_and_missing_keys() {
    let mock = start(vec![MockKey::new("bad", "bad-secret").invalid()]).await;
    for p in ALL {
        check_invalid_key(p, call(&mock, p, Some("bad-secret"), "x", false).await).await;
        check_invalid_key(
            p,
            call(&mock, p, Some("sk-never-configured"), "x", false).await,
        )
        .await;
    }
    let r = call(&mock, P::Gemini, None, "x", false).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["status"],
        "PERMISSION_DENIED"
    );
    let r = call(&mock, P::Openai, None, "x", false).await;
    assert_eq!(r.status(), 401);
    let message = r.json::<Value>().await.unwrap()["error"]["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .starts_with("You didn't provide an API key")
    );
    let r = call(&mock, P::Anthropic, None, "x", false).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["message"], "x-api-key header is required");
    let stats = mock.stats();
    assert_eq!(stats.key("bad").unauthorized, 3);
    assert_eq!(stats.key(UNKNOWN_LABEL).unauthorized, 6);
    assert_eq!(stats.total().successes, 0);
    mock.stop().await;
}

#[actix_web::test]
async fn control_endpoints_exhaust_revoke_restore_reset() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    let http = client();
    let control = |path: &str| format!("http://{}/_mock/{path}", mock.addr());
    let r = http.post(control("keys/k/exhaust")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for p in ALL {
        check_exhausted(p, call(&mock, p, Some("s"), "x", false).await).await;
    }
    http.post(control("keys/k/restore")).send().await.unwrap();
    assert_eq!(
        call(&mock, P::Openai, Some("s"), "back", false)
            .await
            .status(),
        200
    );
    http.post(control("keys/k/revoke")).send().await.unwrap();
    for p in ALL {
        check_invalid_key(p, call(&mock, p, Some("s"), "x", false).await).await;
    }
    let r = http
        .post(control("keys/nobody/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let stats: MockStats = http
        .get(control("stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, mock.stats());
    let k = stats.key("k");
    assert_eq!(
        (k.requests, k.exhausted, k.unauthorized, k.successes),
        (7, 3, 3, 1)
    );

    http.post(control("reset")).send().await.unwrap();
    assert_eq!(mock.stats(), MockStats::default());
    assert_eq!(
        call(&mock, P::Anthropic, Some("s"), "x", false)
            .await
            .status(),
        200
    );
    mock.stop().await;
}

#[actix_web::test]
async fn api_methods_match_control_endpoints() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    mock.exhaust("k");
    check_exhausted(
        P::Gemini,
        call(&mock, P::Gemini, Some("s"), "x", false).await,
    )
    .await;
    mock.restore("k");
    mock.revoke("k");
    check_invalid_key(
        P::Gemini,
        call(&mock, P::Gemini, Some("s"), "x", false).await,
    )
    .await;
    mock.restore("k");
    assert_eq!(
        call(&mock, P::Gemini, Some("s"), "x", false).await.status(),
        200
    );
    mock.stop().await;
}

#[actix_web::test]
async fn stats_count_successes_by_prompt() {
    let mock = start(vec![MockKey::new("a", "sa"), MockKey::new("b", "sb")]).await;
    for p in ALL {
        call(&mock, p, Some("sa"), "job-1", false).await;
    }
    call(&mock, P::Openai, Some("sb"), "job-2", true).await;
    call(
        &mock,
        P::Openai,
        Some("sb"),
        "job-3 [[mock:status=500]]",
        false,
    )
    .await;
    let stats = mock.stats();
    assert_eq!(stats.successes_for("job-1"), 3);
    assert_eq!(stats.successes_for("job-2"), 1);
    assert_eq!(stats.successes_for("job-3 [[mock:status=500]]"), 0);
    assert_eq!(
        stats.key("a"),
        KeyStats {
            requests: 3,
            successes: 3,
            ..KeyStats::default()
        }
    );
    assert_eq!(stats.key("b").faults, 1);
    assert_eq!(stats.total().requests, 5);
    mock.stop().await;
}

#[actix_web::test]
async fn malformed_requests_get_the_providers_400() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    let http = client();
    let r = http
        .post(format!("{}/chat/completions", mock.openai_base_url()))
        .bearer_auth("s")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
    let r = http
        .post(format!("{}/v1/messages", mock.anthropic_base_url()))
        .header("x-api-key", "s")
        .json(&json!({ "model": MODEL, "max_tokens": 5, "messages": [{ "role": "user", "content": "x" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "anthropic-version is required");
    let r = http
        .post(format!(
            "{}/v1beta/models/{MODEL}:generateContent",
            mock.gemini_base_url()
        ))
        .header("x-goog-api-key", "s")
        .json(&json!({ "contents": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["status"],
        "INVALID_ARGUMENT"
    );
    assert_eq!(mock.stats().key("k").bad_requests, 3);
    mock.stop().await;
}
