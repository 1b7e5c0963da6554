//! Anthropic `v1/messages`: request body, success parsing (refusals, empty and
//! cut answers) and the Anthropic error rules (credit and spend limits with
//! their dates, disabled organisations, too-long prompts,
//! `anthropic-ratelimit-*` resets).

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{ProviderApi, join_path, secret_header};
use super::classify::{self, by_status, header_str, message_or_body, number_after};
use super::content::{ContentPart, Media, MessageContent};
use super::outcome::{Completion, FailureKind, JobFailure, Outcome, Usage};
use super::request::{OutputFormat, ProviderRequest, Role};
use crate::secret::ApiKey;

/// Anthropic's Messages API (`x-api-key` + `anthropic-version`).
#[derive(Debug, Default)]
pub struct Anthropic;

impl ProviderApi for Anthropic {
    fn endpoint(&self, base: &Url, _request: &ProviderRequest) -> Url {
        join_path(base, &["v1", "messages"])
    }

    fn auth_headers(&self, key: &ApiKey) -> Option<HeaderMap> {
        let mut headers = secret_header("x-api-key", key.expose())?;
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        Some(headers)
    }

    fn body(&self, request: &ProviderRequest) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&request_body(request))
    }

    fn parse_success(&self, body: &[u8]) -> Outcome {
        parse_success(body)
    }

    fn classify_error(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Outcome {
        classify_error(status, headers, body, now)
    }

    fn limit_until(&self, headers: &HeaderMap, now: Timestamp) -> Option<Timestamp> {
        let delay = ["requests", "tokens", "input-tokens", "output-tokens"]
            .iter()
            .filter(|w| classify::is_spent(headers, &format!("anthropic-ratelimit-{w}-remaining")))
            .filter_map(|w| {
                classify::rfc3339_header_delay(
                    headers,
                    &format!("anthropic-ratelimit-{w}-reset"),
                    now,
                )
            })
            .max();
        classify::limit_instant(now, delay)
    }
}

/// The API version keyrelay speaks (sent as `anthropic-version`).
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by the Messages API.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Appended to the system prompt: Anthropic has no JSON mode.
pub const JSON_INSTRUCTION: &str =
    "Answer with a single JSON value only: no prose, no code fences.";

/// The JSON body of a `v1/messages` call.
#[derive(Debug, Serialize)]
pub struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Content<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    Blocks(Vec<Value>),
}

#[derive(Debug, Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

/// The image types the Messages API reads ("Input should be 'image/jpeg',
/// 'image/png', 'image/gif' or 'image/webp'", tests/fixtures/providers/anthropic.json).
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// The forced tool's description: the schema is what the answer is.
const TOOL_DESCRIPTION: &str = "Give your answer as this tool's input.";

/// What `v1/messages` cannot take, found before any call. A schema is a
/// tool's `input_schema`, whose root must be an object; the rest of it is
/// sent as written (without `strict`, Anthropic treats it as guidance, so
/// keyrelay validates the answer).
pub fn check_request(req: &ProviderRequest) -> Result<(), String> {
    if let OutputFormat::Schema(schema) = &req.output
        && schema.schema.get("type").and_then(Value::as_str) != Some("object")
    {
        return Err("Anthropic structured output (a forced tool's input_schema) needs a schema whose root is `\"type\": \"object\"`; wrap the value in an object".into());
    }
    if let Some(t) = req.image_type_outside(IMAGE_TYPES) {
        return Err(format!(
            "Anthropic does not read `{t}` images (jpeg, png, gif or webp)"
        ));
    }
    Ok(())
}

/// The prompt tokens of an image or a PDF, before the call (vision docs:
/// width × height / 750 after the long edge is cut to 1,568 px, about 1,600
/// at most; a PDF page is its text and an image of it, measured at up to
/// ~2,500).
pub fn media_tokens(part: &ContentPart) -> u64 {
    const PAGE: u64 = 2_500;
    match part {
        ContentPart::Text { .. } => 0,
        ContentPart::Image(media) => match media.size() {
            Some((w, h)) => {
                let (w, h) = super::content::fit_long_edge(w, h, 1_568);
                (w * h).div_ceil(750).min(1_600)
            }
            None => 1_600,
        },
        ContentPart::Document(media) => PAGE * media.pages_or_guess(),
    }
}

/// Build the request body. System messages are joined into `system`; a
/// schema becomes a tool the model is made to call.
pub fn request_body(req: &ProviderRequest) -> Body<'_> {
    let mut system: Vec<String> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.text())
        .collect();
    if req.output == OutputFormat::Json {
        system.push(JSON_INSTRUCTION.to_owned());
    }
    let messages = req
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| Message {
            role: if m.role == Role::Assistant {
                "assistant"
            } else {
                "user"
            },
            content: content_of(&m.content),
        })
        .collect();
    let (tools, tool_choice) = match req.output.schema() {
        Some(s) => (
            Some(vec![serde_json::json!({
                "name": s.name,
                "description": TOOL_DESCRIPTION,
                "input_schema": s.schema,
            })]),
            Some(serde_json::json!({"type": "tool", "name": s.name})),
        ),
        None => (None, None),
    };
    Body {
        model: &req.model,
        max_tokens: req.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        temperature: req.temperature,
        metadata: req.user.as_deref().map(|user_id| Metadata { user_id }),
        tools,
        tool_choice,
    }
}

/// A string stays a string; parts become `text`, `image` and `document`
/// blocks with a `base64` or `url` source.
fn content_of(content: &MessageContent) -> Content<'_> {
    let parts = match content {
        MessageContent::Text(text) => return Content::Text(text),
        MessageContent::Parts(parts) => parts,
    };
    Content::Blocks(
        parts
            .iter()
            .map(|part| match part {
                ContentPart::Text { text } => serde_json::json!({"type": "text", "text": text}),
                ContentPart::Image(media) => {
                    serde_json::json!({"type": "image", "source": source(media)})
                }
                ContentPart::Document(media) => {
                    serde_json::json!({"type": "document", "source": source(media)})
                }
            })
            .collect(),
    )
}

fn source(media: &Media) -> Value {
    match (&media.data, &media.url) {
        (Some(data), _) => serde_json::json!({
            "type": "base64",
            "media_type": media.media_type,
            "data": data,
        }),
        (None, url) => serde_json::json!({"type": "url", "url": url}),
    }
}

#[derive(Debug, Deserialize)]
struct Response {
    content: Vec<Block>,
    stop_reason: Option<String>,
    usage: Option<ResponseUsage>,
}

#[derive(Debug, Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    /// A `tool_use` block's arguments: the structured answer.
    input: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ResponseUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    /// Cached prompt tokens are reported apart from `input_tokens`.
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

/// Parse a 2xx body: a success only when the answer has text and the model
/// did not refuse.
pub fn parse_success(body: &[u8]) -> Outcome {
    let resp: Response = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Transient {
                message: format!("malformed success body: {e}"),
            };
        }
    };
    // A forced tool's input is the answer (a schema job); else the text.
    let tool_input = resp
        .content
        .iter()
        .find(|b| b.kind == "tool_use")
        .and_then(|b| b.input.as_ref())
        .map(Value::to_string);
    let from_tool = tool_input.is_some();
    let text: String = match tool_input {
        Some(input) => input,
        None => resp
            .content
            .into_iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text)
            .collect(),
    };
    let usage = resp.usage.map_or(Usage::default(), |u| {
        let (read, written) = (
            u.cache_read_input_tokens.unwrap_or(0),
            u.cache_creation_input_tokens.unwrap_or(0),
        );
        Usage {
            // Disjoint in Anthropic's usage: input + cache reads + cache writes
            // is the whole prompt (docs: "Tracking cache performance").
            input_tokens: u.input_tokens.saturating_add(read).saturating_add(written),
            // Thinking included (`output_tokens` is the billed total).
            output_tokens: u.output_tokens,
            cached_input_tokens: read,
            cache_write_tokens: written,
            ..Usage::default()
        }
    });
    let stop = resp.stop_reason.unwrap_or_default();
    let failure = |kind, message: String, partial: Option<String>| {
        Outcome::JobFailed(JobFailure {
            partial_text: partial,
            usage,
            ..JobFailure::new(kind, message).with_reason(if stop.is_empty() {
                "none"
            } else {
                &stop
            })
        })
    };
    if stop == "refusal" {
        let partial = (!text.is_empty()).then_some(text);
        let message = "the model refused (stop_reason refusal)".to_owned();
        return failure(FailureKind::Blocked, message, partial);
    }
    if from_tool && stop == "max_tokens" {
        // The tool's input was cut off: whatever parsed of it is not the answer.
        let message = format!(
            "the output allowance ran out inside the structured answer ({} output tokens, stop_reason max_tokens)",
            usage.output_tokens
        );
        return failure(FailureKind::Truncated, message, Some(text));
    }
    if !text.is_empty() {
        return Outcome::Success(Completion {
            text,
            usage,
            limit_until: None,
            cut_short: stop == "max_tokens",
        });
    }
    if stop == "max_tokens" {
        let message = format!(
            "the output allowance ran out before any text ({} output tokens, stop_reason max_tokens)",
            usage.output_tokens
        );
        return failure(FailureKind::Truncated, message, None);
    }
    let message = format!(
        "the model answered without text (stop_reason {})",
        if stop.is_empty() { "none" } else { &stop }
    );
    failure(FailureKind::EmptyOutput, message, None)
}

/// Anthropic's rules for a non-2xx answer.
pub fn classify_error(status: u16, headers: &HeaderMap, body: &[u8], now: Timestamp) -> Outcome {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = v.get("error").unwrap_or(&Value::Null);
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let raw_message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let message = message_or_body(Some(raw_message), status, body);
    let error_code = error
        .pointer("/details/error_code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if error_code == "enforced_spend_limit_reached" {
        // The usage tier's monthly cap: access resumes on the 1st, 00:00 UTC.
        return Outcome::QuotaExhausted {
            until: regain_access_on(raw_message).or_else(|| next_month_utc(now)),
            message,
        };
    }
    if let Some(outcome) = account_problem(status, kind, raw_message, &message) {
        return outcome;
    }
    if let Some(too_large) = too_large(status, kind, raw_message, &message) {
        return Outcome::JobFailed(too_large);
    }
    if status == 429 || kind == "rate_limit_error" {
        let retry_after = classify::retry_after_from_headers(headers, now)
            .or_else(|| reset_headers_delay(headers, now))
            .or_else(|| classify::retry_hint_in(&message));
        return Outcome::RateLimited {
            retry_after,
            message,
        };
    }
    if kind == "overloaded_error" || kind == "api_error" {
        return Outcome::Transient { message };
    }
    by_status(status, headers, message, now)
}

/// A 4xx about the organisation behind the key, not the job: an empty credit
/// balance or a spend limit (out until the date named, else the next reset),
/// or a disabled organisation (dead until an operator acts).
fn account_problem(status: u16, kind: &str, raw_message: &str, message: &str) -> Option<Outcome> {
    // Only the error types an account problem comes as: a 404 "model: <name>"
    // echoes the job's model, which may say anything.
    let account_kind = matches!(
        kind,
        "invalid_request_error" | "permission_error" | "billing_error"
    );
    if !matches!(status, 400 | 402 | 403) || !account_kind {
        return None;
    }
    let lower = raw_message.to_ascii_lowercase();
    if lower.contains("organization has been disabled")
        || lower.contains("organization is disabled")
    {
        return Some(Outcome::Unauthorized {
            message: message.to_owned(),
        });
    }
    let out_of_money = lower.contains("credit balance is too low")
        || lower.contains("spend limit")
        || lower.contains("api usage limits");
    out_of_money.then(|| Outcome::QuotaExhausted {
        until: regain_access_on(raw_message),
        message: message.to_owned(),
    })
}

/// "... You will regain access on 2025-04-01 at 00:00 UTC."
fn regain_access_on(message: &str) -> Option<Timestamp> {
    let marker = "regain access on ";
    let rest = &message[message.find(marker)? + marker.len()..];
    let date: jiff::civil::Date = rest.get(..10)?.parse().ok()?;
    let time = rest[10..]
        .strip_prefix(" at ")
        .and_then(|t| t.get(..5))
        .and_then(|t| t.parse::<jiff::civil::Time>().ok())
        .unwrap_or(jiff::civil::Time::midnight());
    date.to_datetime(time)
        .to_zoned(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// "prompt is too long: 215000 tokens > 200000 maximum", or a 413
/// `request_too_large`.
fn too_large(status: u16, kind: &str, raw_message: &str, message: &str) -> Option<JobFailure> {
    let prompt = raw_message.contains("prompt is too long");
    if !(prompt || status == 413 || kind == "request_too_large") {
        return None;
    }
    let (limit, requested) = if prompt {
        (
            number_after(raw_message, "tokens > "),
            number_after(raw_message, "too long: "),
        )
    } else {
        (None, None)
    };
    Some(JobFailure {
        limit,
        requested,
        reason: (!kind.is_empty()).then(|| kind.to_owned()),
        ..JobFailure::new(FailureKind::TooLarge, message)
    })
}

/// The latest `anthropic-ratelimit-*-reset` among the limits at 0 remaining;
/// the requests reset when none says 0.
fn reset_headers_delay(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    let limits = ["requests", "tokens", "input-tokens", "output-tokens"];
    let reset = |which: &str| {
        classify::rfc3339_header_delay(headers, &format!("anthropic-ratelimit-{which}-reset"), now)
    };
    let exhausted = |which: &str| {
        header_str(headers, &format!("anthropic-ratelimit-{which}-remaining")) == Some("0")
    };
    limits
        .into_iter()
        .filter(|w| exhausted(w))
        .filter_map(reset)
        .max()
        .or_else(|| reset("requests"))
}

/// 00:00 UTC on the first day of the month after `now`.
fn next_month_utc(now: Timestamp) -> Option<Timestamp> {
    let today = now.to_zoned(TimeZone::UTC).date();
    let first = today.last_of_month().tomorrow().ok()?;
    first.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
