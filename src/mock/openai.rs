//! OpenAI `chat/completions` wire format: bearer key, request, `chat.completion` body,
//! `x-ratelimit-*` / `retry-after(-ms)` headers and the `{"error": {...}}` bodies.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use serde_json::{Value, json};

use super::common::{self, Failure, Parsed, Usage};
use super::state::{Limited, Window};
use super::structured::{self, MediaSeen};

const CONTENT_TYPE: &str = "application/json";
/// Token limits are not modelled; these nominal values keep the headers complete.
const TOKEN_LIMIT: u32 = 200_000;
/// Request limit advertised for keys without an `rpm`.
const NOMINAL_RPM: u32 = 10_000;

/// The key from `Authorization: Bearer KEY`.
pub(crate) fn key(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let key = value.strip_prefix("Bearer ")?.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// Parses a chat completion request.
pub(crate) fn parse(body: &[u8]) -> Result<Parsed, String> {
    let parsed = parse_without_model(body)?;
    if parsed.model.is_empty() {
        return Err("you must provide a model parameter".to_string());
    }
    Ok(parsed)
}

/// Parses a chat completion request whose `model` is optional (Azure names
/// the model in the URL).
pub(crate) fn parse_without_model(body: &[u8]) -> Result<Parsed, String> {
    let request: Value = serde_json::from_slice(body).map_err(|_| {
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't \
         using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was \
         sent was not valid JSON.)"
            .to_string()
    })?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("Missing required parameter: 'messages'.")?;
    let mut input_chars = 0;
    let mut last_user = None;
    let mut media = MediaSeen::default();
    for (i, message) in messages.iter().enumerate() {
        if let Some(Value::Array(parts)) = message.get("content") {
            structured::openai_parts(model, i, parts, &mut media)?;
        }
        let text = message
            .get("content")
            .and_then(common::content_text)
            .unwrap_or_default();
        input_chars += text.chars().count();
        if message.get("role").and_then(Value::as_str) == Some("user") {
            last_user = Some(text);
        }
    }
    if rejects_max_tokens(model) && request.get("max_tokens").is_some() {
        return Err(UNSUPPORTED_MAX_TOKENS.to_string());
    }
    let format = request
        .pointer("/response_format/type")
        .and_then(Value::as_str);
    let schema = request
        .pointer("/response_format/json_schema/schema")
        .cloned();
    if let Some(schema) = &schema
        && request.pointer("/response_format/json_schema/strict") == Some(&Value::Bool(true))
    {
        let name = request
            .pointer("/response_format/json_schema/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(error) = structured::openai_strict_error(name, schema) {
            return Err(error);
        }
    }
    Ok(Parsed {
        model: model.to_string(),
        last_user: last_user.ok_or("'messages' must contain a message with role 'user'.")?,
        input_chars,
        json_output: matches!(format, Some("json_object" | "json_schema")),
        schema,
        forced_tool: None,
        media,
    })
}

/// OpenAI's answer to `max_tokens` for a reasoning model (o-series, gpt-5);
/// recorded in tests/fixtures/providers/openai.json
/// (`openai_400_unsupported_parameter_max_tokens`).
const UNSUPPORTED_MAX_TOKENS: &str = "Unsupported parameter: 'max_tokens' is not supported with \
     this model. Use 'max_completion_tokens' instead.";

/// The model families that take only `max_completion_tokens`.
fn rejects_max_tokens(model: &str) -> bool {
    ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|p| model.starts_with(p))
}

/// A `chat.completion` object carrying `text`.
pub(crate) fn success(parsed: &Parsed, text: &str, usage: Usage) -> Value {
    json!({
        "id": common::fresh_id("chatcmpl-"),
        "object": "chat.completion",
        "created": common::unix_now(),
        "model": parsed.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text, "refusal": null, "annotations": [] },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            // Cached tokens are part of prompt_tokens, reasoning tokens
            // part of completion_tokens (API reference, CompletionUsage).
            "prompt_tokens": usage.input,
            "completion_tokens": usage.billed_output(),
            "total_tokens": usage.total(),
            "prompt_tokens_details": { "cached_tokens": usage.cached, "audio_tokens": 0 },
            "completion_tokens_details": {
                "reasoning_tokens": usage.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        },
        "service_tier": "default",
        "system_fingerprint": "fp_mock0001"
    })
}

/// Removes the assistant message, leaving a choice without text.
pub(crate) fn strip_text(body: &mut Value) {
    if let Some(choice) = body
        .pointer_mut("/choices/0")
        .and_then(Value::as_object_mut)
    {
        choice.remove("message");
    }
}

/// A 200 with the request id and the key's rate-limit position.
pub(crate) fn ok(window: &Window) -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    builder.content_type(CONTENT_TYPE);
    common_headers(&mut builder);
    let limit = window.limit.unwrap_or(NOMINAL_RPM);
    let remaining = window.remaining.min(limit);
    limit_headers(&mut builder, limit, remaining, window.reset);
    builder
}

fn common_headers(builder: &mut HttpResponseBuilder) {
    builder
        .insert_header(("x-request-id", common::fresh_id("req_")))
        .insert_header(("openai-version", "2020-10-01"))
        .insert_header(("openai-processing-ms", "1"));
}

fn limit_headers(builder: &mut HttpResponseBuilder, limit: u32, remaining: u32, reset: Duration) {
    builder
        .insert_header(("x-ratelimit-limit-requests", limit.to_string()))
        .insert_header(("x-ratelimit-remaining-requests", remaining.to_string()))
        .insert_header(("x-ratelimit-reset-requests", go_duration(reset)))
        .insert_header(("x-ratelimit-limit-tokens", TOKEN_LIMIT.to_string()))
        .insert_header(("x-ratelimit-remaining-tokens", TOKEN_LIMIT.to_string()))
        .insert_header(("x-ratelimit-reset-tokens", "0s"));
}

/// OpenAI's answer to a failure.
pub(crate) fn failure(failure: &Failure) -> HttpResponse {
    match failure {
        Failure::MissingKey => error(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization \
             header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an \
             API key from https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
        ),
        Failure::InvalidKey { secret } => error(
            401,
            &format!(
                "Incorrect API key provided: {}. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                mask(secret)
            ),
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        Failure::RateLimited { limited, model } => rate_limited(limited, model),
        Failure::Exhausted { .. } => error(
            429,
            "You exceeded your current quota, please check your plan and billing details. For \
             more information on this error, read the docs: \
             https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        Failure::Status(code) => {
            let (message, kind) = status_text(*code);
            error(*code, message, kind, None)
        }
        Failure::BadRequest(message) if message == UNSUPPORTED_MAX_TOKENS => {
            unsupported_parameter(message, "max_tokens")
        }
        Failure::BadRequest(message) => error(400, message, "invalid_request_error", None),
    }
}

fn error(status: u16, message: &str, kind: &str, code: Option<&str>) -> HttpResponse {
    let body = json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    builder.content_type(CONTENT_TYPE);
    common_headers(&mut builder);
    builder.body(body.to_string())
}

fn unsupported_parameter(message: &str, param: &str) -> HttpResponse {
    let body = json!({ "error": {
        "message": message, "type": "invalid_request_error",
        "param": param, "code": "unsupported_parameter"
    }});
    let mut builder = HttpResponse::BadRequest();
    builder.content_type(CONTENT_TYPE);
    common_headers(&mut builder);
    builder.body(body.to_string())
}

fn rate_limited(limited: &Limited, model: &str) -> HttpResponse {
    let retry = limited.retry_after;
    let body = json!({ "error": {
        "message": format!(
            "Rate limit reached for {model} in organization org-keyrelaymock on requests per min \
             (RPM): Limit {limit}, Used {limit}, Requested 1. Please try again in {}. Visit \
             https://platform.openai.com/account/rate-limits to learn more.",
            go_duration(retry),
            limit = limited.limit
        ),
        "type": "requests",
        "param": null,
        "code": "rate_limit_exceeded"
    }});
    let mut builder = HttpResponse::TooManyRequests();
    builder
        .content_type(CONTENT_TYPE)
        .insert_header(("retry-after", common::ceil_secs(retry).to_string()))
        .insert_header(("retry-after-ms", common::ceil_millis(retry).to_string()));
    common_headers(&mut builder);
    limit_headers(&mut builder, limited.limit, 0, retry);
    builder.body(body.to_string())
}

/// Message and error type OpenAI uses for an injected status.
fn status_text(code: u16) -> (&'static str, &'static str) {
    match code {
        400 => ("Invalid request.", "invalid_request_error"),
        404 => (
            "The model does not exist or you do not have access to it.",
            "invalid_request_error",
        ),
        500 => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        ),
        502 => ("Bad gateway.", "server_error"),
        503 | 529 => (
            "The engine is currently overloaded, please try again later.",
            "server_error",
        ),
        _ if code < 500 => ("Invalid request.", "invalid_request_error"),
        _ => (
            "The server had an error while processing your request.",
            "server_error",
        ),
    }
}

/// Shows the start and end of a key, as OpenAI's 401 message does.
fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// A duration the way OpenAI's headers and messages print it ("850ms", "1.5s", "6m0s").
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = common::ceil_millis(d);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = |ms: u64| {
        let text = format!("{}.{:03}", ms / 1000, ms % 1000);
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{text}s")
    };
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    match (hours, minutes) {
        (0, 0) => seconds(rest),
        (0, m) => format!("{m}m{}", seconds(rest)),
        (h, m) => format!("{h}h{m}m{}", seconds(rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_openai() {
        assert_eq!(go_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(20)), "20s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn masks_keys() {
        assert_eq!(mask("sk-abcdefghijkl"), "sk-********ijkl");
        assert_eq!(mask("short"), "*****");
    }
}
