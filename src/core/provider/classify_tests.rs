//! Table and property tests of the shared classification rules.

use super::*;
use crate::provider::{FailureKind, ProviderKind, ProviderOptions, registry};
use ProviderKind::{Anthropic as A, Gemini as G, Openai as O};
use proptest::prelude::*;
use reqwest::header::{HeaderName, HeaderValue};
use std::sync::Arc;

fn api(kind: ProviderKind) -> Arc<dyn ProviderApi> {
    registry::build(kind, &ProviderOptions::default())
}

#[test]
fn rate_limit_headers_on_a_success_tighten_the_budget() {
    let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut h = HeaderMap::new();
    h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
    h.insert("x-ratelimit-reset-requests", "6m0s".parse().unwrap());
    h.insert("x-ratelimit-remaining-tokens", "100".parse().unwrap());
    h.insert("x-ratelimit-reset-tokens", "1s".parse().unwrap());
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    assert_eq!(
        api(O).limit_until(&h, now),
        Some(at("2026-01-01T00:06:00Z"))
    );
    h.insert("x-ratelimit-remaining-requests", "5".parse().unwrap());
    assert_eq!(api(O).limit_until(&h, now), None, "budget left");
    let mut a = HeaderMap::new();
    a.insert("anthropic-ratelimit-tokens-remaining", "0".parse().unwrap());
    a.insert(
        "anthropic-ratelimit-tokens-reset",
        "2026-01-01T00:00:42Z".parse().unwrap(),
    );
    assert_eq!(
        api(A).limit_until(&a, now),
        Some(at("2026-01-01T00:00:42Z"))
    );
    assert_eq!(api(G).limit_until(&a, now), None);
}

const NOW: &str = "2025-03-01T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
        map.insert(name, HeaderValue::from_str(v).unwrap());
    }
    map
}

/// What a row expects: the class plus the payload that matters to the supervisor.
#[derive(Debug, PartialEq)]
enum Want {
    Ok,
    Rate(Option<Duration>),
    Quota(Option<Timestamp>),
    Transient,
    Unauth,
    Job(FailureKind),
    Invalid,
}

fn want_of(outcome: &Outcome) -> Want {
    match outcome {
        Outcome::Success(_) => Want::Ok,
        Outcome::RateLimited { retry_after, .. } => Want::Rate(*retry_after),
        Outcome::QuotaExhausted { until, .. } => Want::Quota(*until),
        Outcome::Transient { .. } => Want::Transient,
        Outcome::Unauthorized { .. } => Want::Unauth,
        Outcome::JobFailed(f) => Want::Job(f.kind),
        Outcome::InvalidResponse { .. } => Want::Invalid,
    }
}

fn message_of(outcome: &Outcome) -> &str {
    outcome.message()
}

fn secs(s: f64) -> Want {
    Want::Rate(Some(Duration::from_secs_f64(s)))
}

const G_QUOTA: &str = r#"{"error": {"code": 429, "message": "You exceeded your current quota, please check your plan and billing details.", "status": "RESOURCE_EXHAUSTED", "details": [
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
        {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"}, "quotaValue": "15"},
        {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"}, "quotaValue": "200"}]},
    {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]}}"#;
const G_TOKENS_PER_DAY: &str = r#"{"error": {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count", "quotaId": "GenerateContentPaidTierInputTokensPerModelPerDay"}]}]}}"#;
const G_PER_MINUTE: &str = r#"{"error": {"code": 429, "message": "You exceeded your current quota. Please retry in 17.5s.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]}, {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]}}"#;
const G_PER_MINUTE_NO_DELAY: &str = r#"{"error": {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier"}]}]}}"#;
const G_EXHAUSTED_BARE: &str = r#"{"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}}"#;
const G_KEY_INVALID: &str = r#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}, {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": "API key not valid. Please pass a valid API key."}]}}"#;
const G_KEY_MESSAGE_ONLY: &str = r#"[{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}]"#;
const G_DENIED: &str = r#"{"error": {"code": 403, "message": "Your API key was reported as leaked. Please use another API key.", "status": "PERMISSION_DENIED"}}"#;
const G_UNAUTHENTICATED: &str = r#"{"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}"#;
const G_BAD_ARG: &str = r#"{"error": {"code": 400, "message": "* GenerateContentRequest.contents: contents is not specified\n", "status": "INVALID_ARGUMENT"}}"#;
const G_NOT_FOUND: &str = r#"{"error": {"code": 404, "message": "models/gemini-9 is not found for API version v1beta, or is not supported for generateContent.", "status": "NOT_FOUND"}}"#;
const G_INTERNAL: &str = r#"{"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}}"#;
const G_UNAVAILABLE: &str = r#"{"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}"#;
const G_DEADLINE: &str =
    r#"{"error": {"code": 504, "message": "Deadline exceeded", "status": "DEADLINE_EXCEEDED"}}"#;
const G_OK: &str = r#"{"candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1}}"#;
const G_BLOCKED: &str = r#"{"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}}"#;

const O_TPM: &str = r#"{"error": {"message": "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2.5s.", "type": "tokens", "param": null, "code": "rate_limit_exceeded"}}"#;
const O_RPM: &str = r#"{"error": {"message": "Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): Limit 500, Used 500, Requested 1.", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#;
const O_RPD: &str = r#"{"error": {"message": "Rate limit reached for gpt-4o-mini in organization org-abc on requests per day (RPD): Limit 10000, Used 10000, Requested 1.", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#;
const O_RATE_UNTYPED: &str = r#"{"error": {"message": "Rate limit exceeded.", "type": null, "param": null, "code": "rate_limit_exceeded"}}"#;
const O_QUOTA: &str = r#"{"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}"#;
const O_HARD_LIMIT: &str = r#"{"error": {"message": "Billing hard limit has been reached", "type": "invalid_request_error", "param": null, "code": "billing_hard_limit_reached"}}"#;
const O_CREDIT: &str = r#"{"error": {"message": "Your credit balance is exhausted.", "type": "insufficient_quota", "param": null, "code": "credit_balance_exhausted"}}"#;
const O_BAD_KEY: &str = r#"{"error": {"message": "Incorrect API key provided: sk-proj-****abcd. You can find your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#;
const O_REGION: &str = r#"{"error": {"code": "unsupported_country_region_territory", "message": "Country, region, or territory not supported", "param": null, "type": "request_forbidden"}}"#;
const O_BAD_REQ: &str = r#"{"error": {"message": "Invalid value for 'temperature': must be between 0 and 2.", "type": "invalid_request_error", "param": "temperature", "code": null}}"#;
const O_NO_MODEL: &str = r#"{"error": {"message": "The model `gpt-9` does not exist or you do not have access to it.", "type": "invalid_request_error", "param": null, "code": "model_not_found"}}"#;
const O_VLLM_422: &str = r#"{"object": "error", "message": "[{'type': 'missing', 'loc': ('body', 'messages')}]", "type": "BadRequestError", "param": null, "code": 400}"#;
const O_SERVER: &str = r#"{"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": null, "code": null}}"#;
const O_OLLAMA: &str = r#"{"error": "model 'llama9' not found"}"#;

const A_RATE: &str = r#"{"type": "error", "error": {"type": "rate_limit_error", "message": "This request would exceed the rate limit for your organization of 50 requests per minute."}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}"#;
const A_SPEND_CAP: &str = r#"{"type": "error", "error": {"type": "rate_limit_error", "message": "You have reached your monthly usage limit.", "details": {"error_code": "enforced_spend_limit_reached"}}, "request_id": "req_011"}"#;
const A_OVERLOADED: &str = r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "req_012"}"#;
const A_AUTH: &str = r#"{"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}, "request_id": "req_013"}"#;
const A_PERM: &str = r#"{"type": "error", "error": {"type": "permission_error", "message": "Your API key does not have permission to use the specified resource."}}"#;
const A_CREDIT: &str = r#"{"type": "error", "error": {"type": "invalid_request_error", "message": "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}, "request_id": "req_014"}"#;
const A_BAD_REQ: &str = r#"{"type": "error", "error": {"type": "invalid_request_error", "message": "messages: roles must alternate between \"user\" and \"assistant\""}}"#;
const A_NOT_FOUND: &str =
    r#"{"type": "error", "error": {"type": "not_found_error", "message": "model: claude-9"}}"#;
const A_TOO_LARGE: &str = r#"{"type": "error", "error": {"type": "request_too_large", "message": "Request exceeds the maximum allowed number of bytes."}}"#;
const A_API_ERROR: &str =
    r#"{"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}"#;
const A_BILLING: &str = r#"{"type": "error", "error": {"type": "billing_error", "message": "There is an issue with your payment method."}}"#;

// Error messages that echo the job's model name must not read as the key's
// problem (a model named "spend limit" must not park the key).
const O_PROJECT_NO_ACCESS: &str = r#"{"error": {"message": "Project `proj_abc` does not have access to model `o3`", "type": "invalid_request_error", "param": null, "code": "model_not_found"}}"#;
const A_MODEL_ECHO: &str = r#"{"type": "error", "error": {"type": "not_found_error", "message": "model: spend limit organization has been disabled"}}"#;
const G_MODEL_ECHO: &str = r#"{"error": {"code": 404, "message": "models/api key not valid is not found for API version v1beta.", "status": "NOT_FOUND"}}"#;

/// (name, provider, status, headers, body, expected, text the message must contain)
type Row = (
    &'static str,
    ProviderKind,
    u16,
    Vec<(&'static str, &'static str)>,
    &'static str,
    Want,
    &'static str,
);

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    vec![
        ("g429 per-day + per-minute", G, 429, vec![], G_QUOTA, Want::Quota(Some(at("2025-03-01T12:00:17Z"))), "exceeded your current quota"),
        ("g429 per-day tokens", G, 429, vec![], G_TOKENS_PER_DAY, Want::Quota(None), ""),
        ("g429 per-minute RetryInfo", G, 429, vec![("retry-after", "99")], G_PER_MINUTE, secs(17.0), ""),
        ("g429 per-minute retry-after", G, 429, vec![("retry-after", "30")], G_PER_MINUTE_NO_DELAY, secs(30.0), ""),
        ("g429 bare", G, 429, vec![], G_EXHAUSTED_BARE, Want::Rate(None), "Resource has been exhausted"),
        ("g400 API_KEY_INVALID", G, 400, vec![], G_KEY_INVALID, Want::Unauth, "API key not valid"),
        ("g400 key message in array", G, 400, vec![], G_KEY_MESSAGE_ONLY, Want::Unauth, ""),
        ("g403 PERMISSION_DENIED", G, 403, vec![], G_DENIED, Want::Unauth, "leaked"),
        ("g401", G, 401, vec![], G_UNAUTHENTICATED, Want::Unauth, ""),
        ("g400 INVALID_ARGUMENT", G, 400, vec![], G_BAD_ARG, Want::Job(FailureKind::BadRequest), "contents is not specified"),
        ("g404", G, 404, vec![], G_NOT_FOUND, Want::Job(FailureKind::BadRequest), ""),
        ("g500", G, 500, vec![], G_INTERNAL, Want::Transient, ""),
        ("g503", G, 503, vec![], G_UNAVAILABLE, Want::Transient, "overloaded"),
        ("g504", G, 504, vec![], G_DEADLINE, Want::Transient, ""),
        ("g200 success", G, 200, vec![], G_OK, Want::Ok, "hi"),
        ("g200 blocked", G, 200, vec![], G_BLOCKED, Want::Job(FailureKind::Blocked), "blocked"),
        ("o429 retry-after-ms wins", O, 429, vec![("retry-after-ms", "1500"), ("retry-after", "2")], O_TPM, secs(1.5), "tokens per min"),
        ("o429 retry-after", O, 429, vec![("retry-after", "20")], O_TPM, secs(20.0), ""),
        ("o429 requests reset applies", O, 429, vec![("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "1s"), ("x-ratelimit-remaining-tokens", "29000"), ("x-ratelimit-reset-tokens", "6m0s")], O_RPM, secs(1.0), ""),
        ("o429 larger reset", O, 429, vec![("x-ratelimit-reset-requests", "20ms"), ("x-ratelimit-reset-tokens", "6m0s")], O_RATE_UNTYPED, secs(360.0), ""),
        ("o429 hint in message", O, 429, vec![], O_TPM, secs(2.5), ""),
        ("o429 per day", O, 429, vec![("x-ratelimit-reset-requests", "1s")], O_RPD, Want::Quota(None), "per day"),
        ("o429 insufficient_quota", O, 429, vec![], O_QUOTA, Want::Quota(None), "exceeded your current quota"),
        ("o400 billing_hard_limit_reached", O, 400, vec![], O_HARD_LIMIT, Want::Quota(None), ""),
        ("o429 credit_balance_exhausted", O, 429, vec![], O_CREDIT, Want::Quota(None), ""),
        ("o401 invalid_api_key", O, 401, vec![], O_BAD_KEY, Want::Unauth, "Incorrect API key"),
        ("o403", O, 403, vec![], O_REGION, Want::Unauth, ""),
        ("o400", O, 400, vec![], O_BAD_REQ, Want::Job(FailureKind::BadRequest), "temperature"),
        ("o404", O, 404, vec![], O_NO_MODEL, Want::Job(FailureKind::BadRequest), ""),
        ("o422 compatible server", O, 422, vec![], O_VLLM_422, Want::Job(FailureKind::BadRequest), "missing"),
        ("o404 ollama string error", O, 404, vec![], O_OLLAMA, Want::Job(FailureKind::BadRequest), "llama9"),
        ("o408", O, 408, vec![], "", Want::Transient, "408"),
        ("o409", O, 409, vec![], O_SERVER, Want::Transient, ""),
        ("o500", O, 500, vec![], O_SERVER, Want::Transient, "server had an error"),
        ("o503", O, 503, vec![], "", Want::Transient, ""),
        ("a429 retry-after", A, 429, vec![("retry-after", "12"), ("anthropic-ratelimit-requests-reset", "2025-03-01T12:01:00Z")], A_RATE, secs(12.0), "rate limit"),
        ("a429 requests reset", A, 429, vec![("anthropic-ratelimit-requests-reset", "2025-03-01T12:00:40Z")], A_RATE, secs(40.0), ""),
        ("a429 exhausted tokens reset", A, 429, vec![("anthropic-ratelimit-requests-remaining", "3"), ("anthropic-ratelimit-requests-reset", "2025-03-01T12:00:05Z"), ("anthropic-ratelimit-tokens-remaining", "0"), ("anthropic-ratelimit-tokens-reset", "2025-03-01T12:00:45Z")], A_RATE, secs(45.0), ""),
        ("a429 spend cap", A, 429, vec![], A_SPEND_CAP, Want::Quota(Some(at("2025-04-01T00:00:00Z"))), "monthly"),
        ("a529", A, 529, vec![], A_OVERLOADED, Want::Transient, "Overloaded"),
        ("a401", A, 401, vec![], A_AUTH, Want::Unauth, "invalid x-api-key"),
        ("a403", A, 403, vec![], A_PERM, Want::Unauth, ""),
        ("a400 credit balance", A, 400, vec![], A_CREDIT, Want::Quota(None), "credit balance"),
        ("a400", A, 400, vec![], A_BAD_REQ, Want::Job(FailureKind::BadRequest), "alternate"),
        ("a404", A, 404, vec![], A_NOT_FOUND, Want::Job(FailureKind::BadRequest), ""),
        ("a413", A, 413, vec![], A_TOO_LARGE, Want::Job(FailureKind::TooLarge), ""),
        ("a500", A, 500, vec![], A_API_ERROR, Want::Transient, ""),
        ("a402 billing_error", A, 402, vec![], A_BILLING, Want::Quota(None), ""),
        ("o403 model_not_found is the job's", O, 403, vec![], O_PROJECT_NO_ACCESS, Want::Job(FailureKind::BadRequest), "does not have access"),
        ("a404 echoed model is not the account's", A, 404, vec![], A_MODEL_ECHO, Want::Job(FailureKind::BadRequest), "spend limit"),
        ("g404 echoed model is not a bad key", G, 404, vec![], G_MODEL_ECHO, Want::Job(FailureKind::BadRequest), "not found"),
        ("any 429 text", A, 429, vec![], "Too Many Requests", Want::Rate(None), "Too Many Requests"),
        ("any 429 http-date", G, 429, vec![("retry-after", "Sat, 01 Mar 2025 12:01:00 GMT")], "<html>slow down</html>", secs(60.0), ""),
        ("any 401 empty", O, 401, vec![], "", Want::Unauth, "401 Unauthorized"),
        ("any 403 html", G, 403, vec![], "<html><body>Forbidden</body></html>", Want::Unauth, "Forbidden"),
        ("any 418 html", A, 418, vec![], "<h1>teapot</h1>", Want::Job(FailureKind::BadRequest), "teapot"),
        ("any 502 html", O, 502, vec![], "<html><body><h1>502 Bad Gateway</h1></body></html>", Want::Transient, "Bad Gateway"),
        ("any 301", G, 301, vec![("location", "https://elsewhere.example")], "", Want::Transient, "301"),
    ]
}

#[test]
fn classifies_every_known_answer() {
    for (name, kind, status, hdrs, body, want, needle) in rows() {
        let outcome = classify(&*api(kind), status, &headers(&hdrs), body.as_bytes(), now());
        assert_eq!(want_of(&outcome), want, "{name}: {outcome:?}");
        assert!(message_of(&outcome).contains(needle), "{name}: {outcome:?}");
    }
}

#[test]
fn parses_go_durations() {
    let ok = [
        ("17s", 17.0),
        ("0.5s", 0.5),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0", 0.0),
        ("250us", 0.000_25),
        ("1m30s", 90.0),
    ];
    for (text, want) in ok {
        assert_eq!(
            parse_go_duration(text),
            Some(Duration::from_secs_f64(want)),
            "{text}"
        );
    }
    for bad in [
        "",
        "-1s",
        "5",
        "1x",
        "s",
        "1.2.3s",
        "1e3s",
        "999999999999999999999h",
    ] {
        assert_eq!(parse_go_duration(bad), None, "{bad}");
    }
}

#[test]
fn parses_retry_after_seconds_and_dates() {
    let now = now();
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after(" 1.5 ", now),
        Some(Duration::from_millis(1500))
    );
    let date = "Sat, 01 Mar 2025 12:00:30 GMT";
    assert_eq!(parse_retry_after(date, now), Some(Duration::from_secs(30)));
    let past = "Fri, 28 Feb 2025 12:00:00 GMT";
    assert_eq!(parse_retry_after(past, now), Some(Duration::ZERO));
    for bad in ["soon", "-5", "inf", ""] {
        assert_eq!(parse_retry_after(bad, now), None, "{bad}");
    }
    let both = headers(&[("retry-after-ms", "250.5"), ("retry-after", "9")]);
    let want = Duration::from_secs_f64(0.2505);
    assert_eq!(retry_after_from_headers(&both, now), Some(want));
    let bad_ms = headers(&[("retry-after-ms", "x"), ("retry-after", "9")]);
    assert_eq!(
        retry_after_from_headers(&bad_ms, now),
        Some(Duration::from_secs(9))
    );
}

#[test]
fn truncates_on_char_boundaries() {
    assert_eq!(truncate_chars("héllo", 2), "hé…");
    assert_eq!(truncate_chars("hé", 2), "hé");
    let long = "é".repeat(2000);
    let message = message_or_body(Some(&long), 400, b"");
    assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
}

fn any_kind() -> impl Strategy<Value = ProviderKind> {
    prop_oneof![Just(G), Just(O), Just(A)]
}

/// Bodies shaped like provider errors, with arbitrary values in them.
fn error_like_body() -> impl Strategy<Value = Vec<u8>> {
    (any::<String>(), any::<String>(), any::<String>()).prop_map(|(a, b, c)| {
        serde_json::json!({"type": "error", "error": {"message": a, "type": b, "code": c,
            "details": [{"@type": c, "violations": [{"quotaId": a}], "retryDelay": b,
                         "reason": a, "error_code": b}]},
            "candidates": [{"content": {"parts": [{"text": a}]}}], "choices": [b]})
        .to_string()
        .into_bytes()
    })
}

proptest! {
    #[test]
    fn classify_never_panics(
        kind in any_kind(),
        status in 0u16..1000,
        body in prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), error_like_body()],
        retry in "[ -~]{0,40}",
    ) {
        let hdrs = headers(&[
            ("retry-after", retry.as_str()), ("retry-after-ms", retry.as_str()),
            ("x-ratelimit-reset-tokens", retry.as_str()),
            ("anthropic-ratelimit-requests-reset", retry.as_str()),
        ]);
        let outcome = classify(&*api(kind), status, &hdrs, &body, now());
        prop_assert!(message_of(&outcome).chars().count() <= MAX_MESSAGE_CHARS + 1
            || matches!(outcome, Outcome::Success(_)));
    }
}
