//! Anthropic `v1/messages` wire format: `x-api-key`, request, `message` body,
//! `anthropic-ratelimit-*` / `retry-after` headers and the `{"type":"error"}` bodies.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use serde_json::{Value, json};

use super::common::{self, Failure, Parsed, Usage};
use super::state::{Limited, Window};
use super::structured::{self, MediaSeen};

const CONTENT_TYPE: &str = "application/json";
const ORGANIZATION: &str = "00000000-0000-4000-8000-00000000c0de";
/// Token limits are not modelled; these nominal values keep the headers complete.
const TOKEN_LIMIT: u32 = 400_000;
/// Request limit advertised for keys without an `rpm`.
const NOMINAL_RPM: u32 = 4_000;

/// The key from `x-api-key`.
pub(crate) fn key(req: &HttpRequest) -> Option<String> {
    let key = req.headers().get("x-api-key")?.to_str().ok()?.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// Parses a Messages request; the real API also insists on `anthropic-version`.
pub(crate) fn parse(req: &HttpRequest, body: &[u8]) -> Result<Parsed, String> {
    if !req.headers().contains_key("anthropic-version") {
        return Err("anthropic-version: header is required".to_string());
    }
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| format!("There was an issue with your request body: invalid JSON ({e})"))?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or("model: Field required")?;
    if request.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err("max_tokens: Field required".to_string());
    }
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("messages: Field required")?;
    let system = request
        .get("system")
        .and_then(common::content_text)
        .unwrap_or_default();
    let mut input_chars = system.chars().count();
    let mut last_user = None;
    let mut media = MediaSeen::default();
    for (i, message) in messages.iter().enumerate() {
        if let Some(Value::Array(blocks)) = message.get("content") {
            structured::anthropic_blocks(i, blocks, &mut media)?;
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
    let (forced_tool, schema) = forced_tool(&request)?;
    Ok(Parsed {
        model: model.to_string(),
        last_user: last_user.ok_or("messages: must contain a user message")?,
        input_chars,
        // Anthropic has no JSON mode: callers ask for JSON in the system
        // prompt, or force a tool whose input is the answer.
        json_output: system.contains("JSON") || forced_tool.is_some(),
        schema,
        forced_tool,
        media,
    })
}

/// `tool_choice: {"type": "tool", "name"}`: the tool's name and input schema.
fn forced_tool(request: &Value) -> Result<(Option<String>, Option<Value>), String> {
    let tools = request.get("tools").and_then(Value::as_array);
    for (i, tool) in tools.into_iter().flatten().enumerate() {
        if tool.pointer("/input_schema/type").and_then(Value::as_str) != Some("object") {
            return Err(format!(
                "tools.{i}.custom.input_schema.type: Input should be 'object'"
            ));
        }
    }
    if request.pointer("/tool_choice/type").and_then(Value::as_str) != Some("tool") {
        return Ok((None, None));
    }
    let name = request
        .pointer("/tool_choice/name")
        .and_then(Value::as_str)
        .ok_or("tool_choice.tool.name: Field required")?;
    let schema = tools
        .into_iter()
        .flatten()
        .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|t| t.get("input_schema").cloned())
        .ok_or_else(|| format!("Tool '{name}' not found in provided tools"))?;
    Ok((Some(name.to_owned()), Some(schema)))
}

/// A `message` object carrying `text`.
pub(crate) fn success(parsed: &Parsed, text: &str, usage: Usage) -> Value {
    // A forced tool answers with a `tool_use` block whose input is the JSON.
    let (content, stop_reason) = match &parsed.forced_tool {
        Some(name) => (
            json!([{
                "type": "tool_use",
                "id": common::fresh_id("toolu_"),
                "name": name,
                "input": serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.to_owned())),
            }]),
            "tool_use",
        ),
        None => (json!([{ "type": "text", "text": text }]), "end_turn"),
    };
    json!({
        "id": common::fresh_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": parsed.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            // Disjoint: the prompt is input + cache reads + cache writes
            // (prompt caching docs); output_tokens includes thinking.
            "input_tokens": usage.input - usage.cached,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": usage.cached,
            "output_tokens": usage.billed_output(),
            "service_tier": "standard"
        }
    })
}

/// Removes the content blocks.
pub(crate) fn strip_text(body: &mut Value) {
    if let Some(message) = body.as_object_mut() {
        message.remove("content");
    }
}

/// A 200 with the request id and the key's rate-limit position.
pub(crate) fn ok(window: &Window) -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    builder.content_type(CONTENT_TYPE);
    common_headers(&mut builder, &common::fresh_id("req_"));
    let limit = window.limit.unwrap_or(NOMINAL_RPM);
    limit_headers(
        &mut builder,
        limit,
        window.remaining.min(limit),
        window.reset,
    );
    builder
}

fn common_headers(builder: &mut HttpResponseBuilder, request_id: &str) {
    builder
        .insert_header(("request-id", request_id))
        .insert_header(("anthropic-organization-id", ORGANIZATION));
}

/// `anthropic-ratelimit-*`: resets are RFC 3339 instants, not durations.
fn limit_headers(builder: &mut HttpResponseBuilder, limit: u32, remaining: u32, reset: Duration) {
    let reset_at = rfc3339_after(reset);
    let now = rfc3339_after(Duration::ZERO);
    builder
        .insert_header(("anthropic-ratelimit-requests-limit", limit.to_string()))
        .insert_header((
            "anthropic-ratelimit-requests-remaining",
            remaining.to_string(),
        ))
        .insert_header(("anthropic-ratelimit-requests-reset", reset_at));
    for kind in ["tokens", "input-tokens", "output-tokens"] {
        builder
            .insert_header((
                format!("anthropic-ratelimit-{kind}-limit"),
                TOKEN_LIMIT.to_string(),
            ))
            .insert_header((
                format!("anthropic-ratelimit-{kind}-remaining"),
                TOKEN_LIMIT.to_string(),
            ))
            .insert_header((format!("anthropic-ratelimit-{kind}-reset"), now.clone()));
    }
}

/// Now plus `after`, rounded up to the second, in RFC 3339.
fn rfc3339_after(after: Duration) -> String {
    let secs = i64::try_from(common::ceil_secs(after)).unwrap_or(i64::MAX / 2);
    let now = jiff::Timestamp::now().as_second();
    jiff::Timestamp::from_second(now.saturating_add(secs))
        .unwrap_or(jiff::Timestamp::MAX)
        .to_string()
}

/// Anthropic's answer to a failure.
pub(crate) fn failure(failure: &Failure) -> HttpResponse {
    match failure {
        Failure::MissingKey => error(401, "authentication_error", "x-api-key header is required"),
        Failure::InvalidKey { .. } => error(401, "authentication_error", "invalid x-api-key"),
        Failure::RateLimited { limited, .. } => rate_limited(limited),
        Failure::Exhausted { .. } => error(
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & \
             Billing to upgrade or purchase credits.",
        ),
        Failure::Status(code) => {
            let (kind, message) = status_text(*code);
            error(*code, kind, message)
        }
        Failure::BadRequest(message) => error(400, "invalid_request_error", message),
    }
}

fn error_response(status: u16, kind: &str, message: &str) -> (HttpResponseBuilder, String) {
    let request_id = common::fresh_id("req_");
    let body = json!({
        "type": "error",
        "error": { "type": kind, "message": message },
        "request_id": request_id
    });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    builder.content_type(CONTENT_TYPE);
    common_headers(&mut builder, &request_id);
    (builder, body.to_string())
}

fn error(status: u16, kind: &str, message: &str) -> HttpResponse {
    let (mut builder, body) = error_response(status, kind, message);
    builder.body(body)
}

fn rate_limited(limited: &Limited) -> HttpResponse {
    let message = format!(
        "This request would exceed the rate limit for your organization ({ORGANIZATION}) of {} \
         requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. \
         You can see the response headers for current usage. Please reduce the prompt length or \
         the maximum tokens requested, or try again later. You may also contact sales at \
         https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.",
        limited.limit
    );
    let (mut builder, body) = error_response(429, "rate_limit_error", &message);
    let retry = limited.retry_after;
    builder.insert_header(("retry-after", common::ceil_secs(retry).to_string()));
    limit_headers(&mut builder, limited.limit, 0, retry);
    builder.body(body)
}

/// Error type and message Anthropic uses for an injected status.
fn status_text(code: u16) -> (&'static str, &'static str) {
    match code {
        400 => ("invalid_request_error", "Invalid request."),
        401 => ("authentication_error", "invalid x-api-key"),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => (
            "not_found_error",
            "The requested resource could not be found.",
        ),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your rate limit.",
        ),
        504 => ("timeout_error", "Request timed out."),
        529 => ("overloaded_error", "Overloaded"),
        _ if code < 500 => ("invalid_request_error", "Invalid request."),
        _ => ("api_error", "Internal server error"),
    }
}
