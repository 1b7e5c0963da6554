//! Over-the-wire tests: the mock on port 0, called with reqwest, per provider:
//! success shapes, JSON output, per-minute limits, runtimes and settings; plus the
//! helpers the other test modules share.
//! Keys and bookkeeping are tested in `tests_keys`, fault directives in `tests_faults`.

use std::time::Duration;

use reqwest::Response;
use serde_json::{Value, json};

use super::*;

pub(super) const MODEL: &str = "test-model";

pub(super) async fn start(keys: Vec<MockKey>) -> MockProvider {
    start_with(MockSettings::with_keys(keys)).await
}

pub(super) async fn start_with(settings: MockSettings) -> MockProvider {
    let listen = "127.0.0.1:0".parse().unwrap();
    MockProvider::start(settings, listen).await.unwrap()
}

pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The three wire formats, so one test body can run against each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum P {
    Gemini,
    Openai,
    Anthropic,
}

pub(super) const ALL: [P; 3] = [P::Gemini, P::Openai, P::Anthropic];

/// Sends `prompt` as the last user message; `key: None` sends no key header.
pub(super) async fn call(
    mock: &MockProvider,
    p: P,
    key: Option<&str>,
    prompt: &str,
    json: bool,
) -> Response {
    let http = client();
    let request = match p {
        P::Gemini => {
            let url = format!(
                "{}/v1beta/models/{MODEL}:generateContent",
                mock.gemini_base_url()
            );
            let mut body =
                json!({ "contents": [{ "role": "user", "parts": [{ "text": prompt }] }] });
            if json {
                body["generationConfig"] = json!({ "responseMimeType": "application/json" });
            }
            let request = http.post(url).json(&body);
            match key {
                Some(k) => request.header("x-goog-api-key", k),
                None => request,
            }
        }
        P::Openai => {
            let url = format!("{}/chat/completions", mock.openai_base_url());
            let mut body =
                json!({ "model": MODEL, "messages": [{ "role": "user", "content": prompt }] });
            if json {
                body["response_format"] = json!({ "type": "json_object" });
            }
            let request = http.post(url).json(&body);
            match key {
                Some(k) => request.bearer_auth(k),
                None => request,
            }
        }
        P::Anthropic => {
            let url = format!("{}/v1/messages", mock.anthropic_base_url());
            let system = if json {
                "Answer in JSON only."
            } else {
                "Be brief."
            };
            let body = json!({
                "model": MODEL, "max_tokens": 100, "system": system,
                "messages": [{ "role": "user", "content": prompt }]
            });
            let request = http
                .post(url)
                .header("anthropic-version", "2023-06-01")
                .json(&body);
            match key {
                Some(k) => request.header("x-api-key", k),
                None => request,
            }
        }
    };
    request.send().await.unwrap()
}

/// The answer text of a success body, per provider.
pub(super) fn text_of(p: P, body: &Value) -> Option<String> {
    let text = match p {
        P::Gemini => body.pointer("/candidates/0/content/parts/0/text"),
        P::Openai => body.pointer("/choices/0/message/content"),
        P::Anthropic => body.pointer("/content/0/text"),
    };
    text.and_then(Value::as_str).map(str::to_string)
}

pub(super) fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
        .to_string()
}

#[actix_web::test]
async fn gemini_success_shape() {
    let mock = start(vec![MockKey::new("k", "secret-key-1")]).await;
    let r = call(
        &mock,
        P::Gemini,
        Some("secret-key-1"),
        "hello gemini",
        false,
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        text_of(P::Gemini, &body).unwrap(),
        "mock answer: hello gemini"
    );
    assert_eq!(body["candidates"][0]["content"]["role"], "model");
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
    assert_eq!(body["modelVersion"], MODEL);
    assert_eq!(body["usageMetadata"]["promptTokenCount"], 3); // ceil(12 / 4)
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 7); // ceil(26 / 4)
    assert_eq!(body["usageMetadata"]["totalTokenCount"], 10);
    mock.stop().await;
}

#[actix_web::test]
async fn openai_success_shape() {
    let mock = start(vec![MockKey::new("k", "secret-key-1")]).await;
    let r = call(
        &mock,
        P::Openai,
        Some("secret-key-1"),
        "hello openai",
        false,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "x-request-id").starts_with("req_"));
    assert!(
        header(&r, "x-ratelimit-limit-requests")
            .parse::<u32>()
            .is_ok()
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        text_of(P::Openai, &body).unwrap(),
        "mock answer: hello openai"
    );
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 10);
    mock.stop().await;
}

#[actix_web::test]
async fn anthropic_success_shape() {
    let mock = start(vec![MockKey::new("k", "secret-key-1")]).await;
    let r = call(
        &mock,
        P::Anthropic,
        Some("secret-key-1"),
        "hello claude",
        false,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "request-id").starts_with("req_"));
    assert!(header(&r, "anthropic-ratelimit-requests-reset").ends_with('Z'));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["content"][0]["type"], "text");
    assert_eq!(
        text_of(P::Anthropic, &body).unwrap(),
        "mock answer: hello claude"
    );
    // System prompt "Be brief." (9 chars) + prompt (12 chars) = 21 chars = 6 tokens.
    assert_eq!(body["usage"]["input_tokens"], 6);
    mock.stop().await;
}

#[actix_web::test]
async fn json_output_echoes_prompt_and_model() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    for p in ALL {
        let r = call(&mock, p, Some("s"), "job-42 \"quoted\"", true).await;
        assert_eq!(r.status(), 200, "{p:?}");
        let text = text_of(p, &r.json().await.unwrap()).unwrap();
        let echoed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            echoed,
            json!({ "echo": "job-42 \"quoted\"", "model": MODEL }),
            "{p:?}"
        );
    }
    mock.stop().await;
}

#[actix_web::test]
async fn gemini_accepts_key_in_query_and_rejects_other_methods() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    let base = mock.gemini_base_url();
    let body = json!({ "contents": [{ "parts": [{ "text": "q" }] }] });
    let url = format!("{base}/v1beta/models/{MODEL}:generateContent?key=s");
    let r = client().post(url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let url = format!("{base}/v1beta/models/{MODEL}:countTokens?key=s");
    let r = client().post(url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["status"],
        "NOT_FOUND"
    );
    mock.stop().await;
}

#[actix_web::test]
async fn rpm_exceeded_gives_each_providers_429() {
    let mock = start(vec![MockKey::new("k", "s").with_rpm(1)]).await;
    for p in ALL {
        mock.reset();
        assert_eq!(
            call(&mock, p, Some("s"), "first", false).await.status(),
            200
        );
        let r = call(&mock, p, Some("s"), "second", false).await;
        assert_eq!(r.status(), 429, "{p:?}");
        check_rate_limited(p, r).await;
    }
    assert_eq!(mock.stats().key("k").rate_limited, 1); // reset before the last provider
    mock.stop().await;
}

async fn check_rate_limited(p: P, r: Response) {
    let plausible = |secs: u64| (1..=60).contains(&secs);
    match p {
        P::Gemini => {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], 429);
            assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
            let details = body["error"]["details"].as_array().unwrap();
            let quota = details
                .iter()
                .find(|d| d["@type"] == "type.googleapis.com/google.rpc.QuotaFailure");
            let violation = &quota.unwrap()["violations"][0];
            assert_eq!(
                violation["quotaId"],
                "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
            );
            assert_eq!(violation["quotaDimensions"]["model"], MODEL);
            let retry = details
                .iter()
                .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo");
            let delay = retry.unwrap()["retryDelay"].as_str().unwrap();
            assert!(
                plausible(delay.trim_end_matches('s').parse().unwrap()),
                "{delay}"
            );
        }
        P::Openai => {
            assert!(plausible(header(&r, "retry-after").parse().unwrap()));
            let ms: u64 = header(&r, "retry-after-ms").parse().unwrap();
            assert!(ms > 0 && ms <= 60_000, "{ms}");
            assert_eq!(header(&r, "x-ratelimit-limit-requests"), "1");
            assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
            assert!(header(&r, "x-ratelimit-reset-requests").ends_with('s'));
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limit_exceeded");
            assert_eq!(body["error"]["type"], "requests");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("Please try again in")
            );
        }
        P::Anthropic => {
            assert!(plausible(header(&r, "retry-after").parse().unwrap()));
            assert_eq!(header(&r, "anthropic-ratelimit-requests-limit"), "1");
            assert_eq!(header(&r, "anthropic-ratelimit-requests-remaining"), "0");
            let reset = header(&r, "anthropic-ratelimit-requests-reset");
            assert!(reset.parse::<jiff::Timestamp>().is_ok(), "{reset}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], "rate_limit_error");
            assert!(body["request_id"].as_str().unwrap().starts_with("req_"));
        }
    }
}

#[actix_web::test]
async fn advertised_retry_delay_is_honest() {
    let settings = MockSettings {
        keys: vec![MockKey::new("k", "s").with_rpm(1)],
        minute: Duration::from_millis(300),
        ..MockSettings::default()
    };
    let mock = start_with(settings).await;
    assert_eq!(
        call(&mock, P::Openai, Some("s"), "a", false).await.status(),
        200
    );
    let r = call(&mock, P::Openai, Some("s"), "b", false).await;
    assert_eq!(r.status(), 429);
    let ms: u64 = header(&r, "retry-after-ms").parse().unwrap();
    assert!(ms <= 300, "{ms}");
    // Waiting exactly what the mock advertised must be enough.
    tokio::time::sleep(Duration::from_millis(ms)).await;
    assert_eq!(
        call(&mock, P::Openai, Some("s"), "c", false).await.status(),
        200
    );
    let stats = mock.stats().key("k");
    assert_eq!(
        (stats.requests, stats.successes, stats.rate_limited),
        (3, 2, 1)
    );
    mock.stop().await;
}

#[tokio::test]
async fn runs_on_a_plain_tokio_runtime() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    assert_eq!(
        call(&mock, P::Anthropic, Some("s"), "x", false)
            .await
            .status(),
        200
    );
    mock.stop().await;
}

#[test]
fn settings_load_from_toml() {
    let settings: MockSettings = toml::from_str(
        r#"
        latency_ms = 5
        minute_ms = 1000
        fault_rate = 0.25
        [[keys]]
        label = "a"
        secret = "sa"
        rpm = 3
        "#,
    )
    .unwrap();
    assert_eq!(settings.latency, Duration::from_millis(5));
    assert_eq!(settings.minute, Duration::from_secs(1));
    assert_eq!(settings.day, Duration::from_secs(86_400));
    assert_eq!(settings.keys, vec![MockKey::new("a", "sa").with_rpm(3)]);
    assert!(toml::from_str::<MockSettings>("latency = 5").is_err());
    assert!(
        MockSettings {
            fault_rate: 2.0,
            ..settings.clone()
        }
        .validate()
        .is_err()
    );
    let twice = MockSettings::with_keys(vec![MockKey::new("a", "x"), MockKey::new("a", "y")]);
    assert!(twice.validate().is_err());
}
