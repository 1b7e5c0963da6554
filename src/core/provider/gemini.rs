//! Gemini `generateContent`: request body, success parsing (safety blocks,
//! empty and cut answers) and the Gemini error rules (google.rpc
//! `QuotaFailure`, `RetryInfo`, `ErrorInfo`, `FAILED_PRECONDITION`).

use jiff::Timestamp;
use reqwest::Url;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{ProviderApi, join_path, secret_header};
use super::classify::{self, by_status, message_or_body, number_after, parse_go_duration};
use super::content::{ContentPart, Media, MessageContent, PDF};
use super::outcome::{Completion, FailureKind, JobFailure, Outcome, Usage};
use super::request::{ChatMessage, OutputFormat, ProviderRequest, Role};
use super::schema_subset::{self, Subset};
use crate::secret::ApiKey;

/// Google's Gemini API (`x-goog-api-key`).
#[derive(Debug, Default)]
pub struct Gemini;

impl ProviderApi for Gemini {
    fn endpoint(&self, base: &Url, request: &ProviderRequest) -> Url {
        join_path(base, &["v1beta", "models", &method_segment(&request.model)])
    }

    fn auth_headers(&self, key: &ApiKey) -> Option<HeaderMap> {
        secret_header("x-goog-api-key", key.expose())
    }

    fn body(&self, request: &ProviderRequest) -> serde_json::Result<Vec<u8>> {
        let body =
            request_body(request).map_err(<serde_json::Error as serde::ser::Error>::custom)?;
        serde_json::to_vec(&body)
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
}

/// The `models/{model}:generateContent` path segment for `model`
/// (a leading `models/` is tolerated).
pub fn method_segment(model: &str) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    format!("{model}:generateContent")
}

/// The JSON body of a `generateContent` call.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content>,
    generation_config: GenerationConfig,
}

#[derive(Debug, Serialize)]
struct Content {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<Value>,
}

/// What `responseJsonSchema` takes: the list in the API's field doc
/// ("only the following properties are supported", python-genai
/// `types.py`, `GenerationConfig.response_json_schema`). Gemini ignores the
/// others; the structural ones are refused rather than ignored, so a paid
/// call never answers a shape the schema does not describe.
pub const JSON_SCHEMA_SUBSET: Subset = Subset {
    feature: "Gemini structured output (responseJsonSchema)",
    kept: &[
        "$id",
        "$defs",
        // Draft-07 generators (pydantic v1, zod-to-json-schema) keep their
        // definitions here; a `$ref` into it must still resolve.
        "definitions",
        "$ref",
        "$anchor",
        "type",
        "format",
        "title",
        "description",
        "enum",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "anyOf",
        "oneOf",
        "properties",
        "additionalProperties",
        "required",
        "propertyOrdering",
    ],
    hinted: &[
        schema_subset::NARROWING,
        &[
            "pattern",
            "const",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "multipleOf",
        ],
    ],
    refused: &[schema_subset::STRUCTURAL],
    strict_objects: false,
    object_root: false,
    formats: None,
};

/// The image types Gemini reads (no GIF).
const IMAGE_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/heic",
    "image/heif",
];

/// What `generateContent` cannot take, found before any call.
pub fn check_request(req: &ProviderRequest) -> Result<(), String> {
    if let OutputFormat::Schema(schema) = &req.output {
        schema_subset::fit(&schema.schema, &JSON_SCHEMA_SUBSET)?;
    }
    let untyped_url = req.messages.iter().flat_map(|m| m.content.media()).any(
        |part| matches!(part, ContentPart::Image(m) if m.url.is_some() && m.media_type.is_none()),
    );
    if untyped_url {
        return Err("Gemini needs the `media_type` of a `url` part (fileData.mimeType)".into());
    }
    if let Some(t) = req.image_type_outside(IMAGE_TYPES) {
        return Err(format!(
            "Gemini does not read `{t}` images (png, jpeg, webp, heic or heif)"
        ));
    }
    Ok(())
}

/// The prompt tokens of an image or a PDF, before the call (token docs: an
/// image within 384 px is 258, a larger one 258 a 768-px tile; a PDF page
/// 258 on Gemini 2, measured at ~560 on Gemini 3, so 560). An image of
/// unknown size counts as Gemini 3's default resolution, 1,120.
pub fn media_tokens(part: &ContentPart) -> u64 {
    const PAGE: u64 = 560;
    match part {
        ContentPart::Text { .. } => 0,
        ContentPart::Image(media) => match media.size() {
            Some((w, h)) if w <= 384 && h <= 384 => 258,
            Some((w, h)) => {
                let (w, h) = super::content::fit_long_edge(w, h, 3_072);
                258 * w.div_ceil(768) * h.div_ceil(768)
            }
            None => 1_120,
        },
        ContentPart::Document(media) => PAGE * media.pages_or_guess(),
    }
}

/// Build the request body. System messages become `systemInstruction`; the
/// assistant role is called `model`. Gemini has no end-user field. The
/// error is the schema refusal [`check_request`] reports.
pub fn request_body(req: &ProviderRequest) -> Result<Body, String> {
    let system: Vec<Value> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .flat_map(|m| parts_of(&m.content))
        .collect();
    let contents = req
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(content_of)
        .collect();
    let response_json_schema = match req.output.schema() {
        Some(s) => Some(schema_subset::fit(&s.schema, &JSON_SCHEMA_SUBSET)?),
        None => None,
    };
    Ok(Body {
        contents,
        system_instruction: (!system.is_empty()).then_some(Content {
            role: None,
            parts: system,
        }),
        generation_config: GenerationConfig {
            max_output_tokens: req.max_output_tokens,
            temperature: req.temperature,
            response_mime_type: req.output.is_json().then_some("application/json"),
            response_json_schema,
        },
    })
}

fn content_of(m: &ChatMessage) -> Content {
    let role = if m.role == Role::Assistant {
        "model"
    } else {
        "user"
    };
    Content {
        role: Some(role),
        parts: parts_of(&m.content),
    }
}

/// Text parts, `inlineData` for bytes, `fileData` for a URL.
fn parts_of(content: &MessageContent) -> Vec<Value> {
    let parts = match content {
        MessageContent::Text(text) => return vec![serde_json::json!({ "text": text })],
        MessageContent::Parts(parts) => parts,
    };
    parts
        .iter()
        .map(|part| match part {
            ContentPart::Text { text } => serde_json::json!({ "text": text }),
            ContentPart::Image(media) => media_part(media, None),
            ContentPart::Document(media) => media_part(media, Some(PDF)),
        })
        .collect()
}

fn media_part(media: &Media, default_type: Option<&str>) -> Value {
    let mime_type = media.media_type.as_deref().or(default_type);
    match (&media.data, &media.url) {
        (Some(data), _) => serde_json::json!({"inlineData": {"mimeType": mime_type, "data": data}}),
        (None, url) => serde_json::json!({"fileData": {"mimeType": mime_type, "fileUri": url}}),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<CandidateContent>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<ResponsePart>,
}

#[derive(Debug, Deserialize)]
struct ResponsePart {
    text: Option<String>,
    /// Thinking models return their thoughts as parts flagged `thought`.
    #[serde(default)]
    thought: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    /// Billed as output but not included in `candidatesTokenCount`.
    #[serde(default)]
    thoughts_token_count: u64,
    /// Part of `promptTokenCount` ("this includes the number of tokens in
    /// the cached content"), billed at the cached rate.
    #[serde(default)]
    cached_content_token_count: u64,
}

/// Finish reasons that mean a filter stopped the answer (the job's content,
/// not the key, is the cause; the same prompt would be stopped again).
const BLOCKING_FINISH_REASONS: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "IMAGE_SAFETY",
    "LANGUAGE",
];

/// Parse a 2xx body: a success only when a candidate finished with text and
/// no filter stopped it.
pub fn parse_success(body: &[u8]) -> Outcome {
    let resp: Response = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return malformed(e),
    };
    let meta = resp.usage_metadata.unwrap_or_default();
    let usage = Usage {
        input_tokens: meta.prompt_token_count,
        output_tokens: meta
            .candidates_token_count
            .saturating_add(meta.thoughts_token_count),
        cached_input_tokens: meta.cached_content_token_count.min(meta.prompt_token_count),
        reasoning_tokens: meta.thoughts_token_count,
        ..Usage::default()
    };
    let failure = |kind, message: String, reason: &str, partial: Option<String>| {
        Outcome::JobFailed(JobFailure {
            partial_text: partial,
            usage,
            ..JobFailure::new(kind, message).with_reason(reason)
        })
    };
    if let Some(reason) = resp.prompt_feedback.and_then(|f| f.block_reason) {
        let message = format!("the prompt was blocked (promptFeedback.blockReason {reason})");
        return failure(FailureKind::Blocked, message, &reason, None);
    }
    let Some(candidate) = resp.candidates.into_iter().next() else {
        let message = "the answer has no candidates".to_owned();
        return failure(FailureKind::EmptyOutput, message, "NO_CANDIDATES", None);
    };
    let finish = candidate.finish_reason.unwrap_or_default();
    let text: String = candidate
        .content
        .map(|c| c.parts)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.thought)
        .filter_map(|p| p.text)
        .collect();
    if BLOCKING_FINISH_REASONS.contains(&finish.as_str()) {
        let message = format!("the answer was stopped by a filter (finishReason {finish})");
        let partial = (!text.is_empty()).then_some(text);
        return failure(FailureKind::Blocked, message, &finish, partial);
    }
    if !text.is_empty() {
        return Outcome::Success(Completion {
            text,
            usage,
            limit_until: None,
            cut_short: finish == "MAX_TOKENS",
        });
    }
    if finish == "MAX_TOKENS" {
        let message = format!(
            "the output allowance ran out before any text ({} output tokens incl. {} thinking, finishReason MAX_TOKENS)",
            usage.output_tokens, meta.thoughts_token_count
        );
        return failure(FailureKind::Truncated, message, &finish, None);
    }
    let reason = if finish.is_empty() { "none" } else { &finish };
    let message = format!("the model answered without text (finishReason {reason})");
    failure(FailureKind::EmptyOutput, message, reason, None)
}

fn malformed(e: serde_json::Error) -> Outcome {
    Outcome::Transient {
        message: format!("malformed success body: {e}"),
    }
}

/// The `error` object of a Google API error body (also seen wrapped in an array).
fn error_object(body: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let v = match v {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    v.get("error").cloned()
}

/// Gemini's rules for a non-2xx answer.
pub fn classify_error(status: u16, headers: &HeaderMap, body: &[u8], now: Timestamp) -> Outcome {
    let error = error_object(body).unwrap_or(Value::Null);
    let raw_message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let message = message_or_body(Some(raw_message), status, body);
    let rpc_status = error
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let details = error
        .get("details")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if status == 429 {
        return rate_or_quota(details, headers, message, now);
    }
    // (Only where Google answers a bad key: a 404 "models/<name> is not
    // found" echoes the job's model, which may say anything.)
    if matches!(status, 400 | 401 | 403) && is_bad_key(details, raw_message) {
        return Outcome::Unauthorized { message };
    }
    // Billing not enabled, free tier not offered in the country, "User location
    // is not supported for the API use": the key's project, not the job.
    if rpc_status == "FAILED_PRECONDITION" {
        return Outcome::Unauthorized { message };
    }
    if let Some(too_large) = too_large(status, raw_message, &message) {
        return Outcome::JobFailed(too_large);
    }
    by_status(status, headers, message, now)
}

/// A 429: the key cools for the delay Google names, or is out for the day
/// when a per-day quota is among the violations (until the delay Google names,
/// if it names one: honoured, at the cost of one refused probe call).
fn rate_or_quota(
    details: &[Value],
    headers: &HeaderMap,
    message: String,
    now: Timestamp,
) -> Outcome {
    let delay = details_of(details, "RetryInfo")
        .find_map(|d| d.get("retryDelay")?.as_str().and_then(parse_go_duration))
        .or_else(|| classify::retry_after_from_headers(headers, now))
        .or_else(|| classify::retry_hint_in(&message));
    if details_of(details, "QuotaFailure").any(has_per_day_violation) {
        return Outcome::QuotaExhausted {
            until: delay.and_then(|d| classify::after(now, d)),
            message,
        };
    }
    Outcome::RateLimited {
        retry_after: delay,
        message,
    }
}

/// "The input token count (1048577) exceeds the maximum number of tokens
/// allowed (1048576)." or "Request payload size exceeds the limit: 20971520 bytes."
fn too_large(status: u16, raw_message: &str, message: &str) -> Option<JobFailure> {
    let tokens = raw_message.contains("exceeds the maximum number of tokens");
    let payload = raw_message.contains("payload size exceeds the limit");
    if !(tokens || payload || status == 413) {
        return None;
    }
    let (limit, requested) = if tokens {
        (
            number_after(raw_message, "tokens allowed ("),
            number_after(raw_message, "token count (")
                .or_else(|| number_after(raw_message, "token count ")),
        )
    } else {
        (number_after(raw_message, "exceeds the limit: "), None)
    };
    Some(JobFailure {
        limit,
        requested,
        ..JobFailure::new(FailureKind::TooLarge, message)
    })
}

/// The `details[]` entries of one google.rpc type (`@type` ends with `name`).
fn details_of<'d>(details: &'d [Value], name: &'d str) -> impl Iterator<Item = &'d Value> {
    details.iter().filter(move |d| {
        d.get("@type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.rsplit('.').next() == Some(name))
    })
}

/// A daily quota (requests or tokens) does not come back within minutes.
fn has_per_day_violation(failure: &Value) -> bool {
    let Some(violations) = failure.get("violations").and_then(Value::as_array) else {
        return false;
    };
    violations.iter().any(|v| {
        let id = v.get("quotaId").and_then(Value::as_str).unwrap_or_default();
        let metric = v
            .get("quotaMetric")
            .and_then(Value::as_str)
            .unwrap_or_default();
        id.contains("PerDay") || metric.contains("per_day")
    })
}

/// Google reports a bad key as 400 INVALID_ARGUMENT with an `ErrorInfo` reason.
fn is_bad_key(details: &[Value], message: &str) -> bool {
    let by_reason = details_of(details, "ErrorInfo").any(|d| {
        matches!(
            d.get("reason").and_then(Value::as_str),
            Some("API_KEY_INVALID" | "API_KEY_EXPIRED")
        )
    });
    let lower = message.to_ascii_lowercase();
    by_reason
        || lower.contains("api key not valid")
        || lower.contains("api key expired")
        || lower.contains("reported as leaked")
}

#[cfg(test)]
#[path = "gemini_tests.rs"]
mod tests;
