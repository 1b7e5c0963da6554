//! OpenAI-compatible `chat/completions`: request body, success parsing and the
//! OpenAI error rules (quota and billing codes, too-large requests, per-day
//! limits, `x-ratelimit-*`). Azure OpenAI reuses the wire format ([`super::azure`]).

use std::time::Duration;

use jiff::Timestamp;
use reqwest::Url;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{ProviderApi, join_path, secret_header};
use super::classify::{
    self, by_status, header_str, message_or_body, number_after, parse_go_duration,
};
use super::content::{ContentPart, MessageContent, PDF};
use super::outcome::{Completion, FailureKind, JobFailure, Outcome, Usage};
use super::request::{OutputFormat, ProviderRequest, Role};
use super::schema_subset::{self, Subset};
use super::token_field::{TokenField, TokenFields};
use crate::secret::ApiKey;

/// OpenAI and every compatible server (`Authorization: Bearer`).
#[derive(Debug, Default)]
pub struct OpenAi {
    tokens: TokenFields,
}

impl OpenAi {
    /// An OpenAI-compatible api that puts a job's `max_tokens` where `tokens` says.
    pub fn new(tokens: TokenFields) -> OpenAi {
        OpenAi { tokens }
    }
}

impl ProviderApi for OpenAi {
    fn endpoint(&self, base: &Url, _request: &ProviderRequest) -> Url {
        join_path(base, &["chat", "completions"])
    }

    fn auth_headers(&self, key: &ApiKey) -> Option<HeaderMap> {
        secret_header("authorization", &format!("Bearer {}", key.expose()))
    }

    fn body(&self, request: &ProviderRequest) -> serde_json::Result<Vec<u8>> {
        let body = request_body(request, self.tokens.for_model(&request.model))
            .map_err(<serde_json::Error as serde::ser::Error>::custom)?;
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

    fn limit_until(&self, headers: &HeaderMap, now: Timestamp) -> Option<Timestamp> {
        let delay = ["requests", "tokens"]
            .iter()
            .filter(|w| classify::is_spent(headers, &format!("x-ratelimit-remaining-{w}")))
            .filter_map(|w| {
                parse_go_duration(header_str(headers, &format!("x-ratelimit-reset-{w}"))?)
            })
            .max();
        classify::limit_instant(now, delay)
    }

    fn tpm_counts_output_allowance(&self) -> bool {
        true
    }

    fn adjust_after_rejection(&self, request: &ProviderRequest, status: u16, body: &[u8]) -> bool {
        adjust_token_field(&self.tokens, request, status, body)
    }
}

/// A 400 "Unsupported parameter: 'max_tokens' ... Use 'max_completion_tokens'
/// instead" (or the reverse): switch the model's field, and say to resend.
pub fn adjust_token_field(
    tokens: &TokenFields,
    request: &ProviderRequest,
    status: u16,
    body: &[u8],
) -> bool {
    if status != 400 || request.max_output_tokens.is_none() {
        return false;
    }
    let fields = error_fields(body);
    let message = fields.message.as_deref().unwrap_or_default();
    let unsupported =
        fields.code == "unsupported_parameter" || message.starts_with("Unsupported parameter");
    // The refused field, as the provider names it: not the one configured
    // now, which a concurrent refusal may have switched already.
    let refused = match fields.param.as_str() {
        "max_tokens" => Some(TokenField::MaxTokens),
        "max_completion_tokens" => Some(TokenField::MaxCompletionTokens),
        _ if message.starts_with("Unsupported parameter: 'max_tokens'") => {
            Some(TokenField::MaxTokens)
        }
        _ if message.starts_with("Unsupported parameter: 'max_completion_tokens'") => {
            Some(TokenField::MaxCompletionTokens)
        }
        _ => None,
    };
    match refused {
        Some(field) if unsupported => tokens.switch_from(&request.model, field),
        _ => false,
    }
}

/// The JSON body of a `chat/completions` call.
#[derive(Debug, Serialize)]
pub struct Body<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
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
    Parts(Vec<Value>),
}

/// What strict structured output takes ("Supported schemas" in OpenAI's
/// structured-outputs guide; the refusals are the shapes it rejects with
/// "'<keyword>' is not permitted", tests/fixtures/providers/openai.json).
pub const STRICT_SUBSET: Subset = Subset {
    feature: "OpenAI structured output (strict json_schema)",
    kept: &[
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "anyOf",
        "oneOf",
        "enum",
        "const",
        "$ref",
        "$defs",
        "definitions",
        "title",
        "description",
        "pattern",
        "format",
        "multipleOf",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
    ],
    hinted: &[schema_subset::NARROWING],
    refused: &[schema_subset::STRUCTURAL, &["prefixItems"]],
    strict_objects: true,
    object_root: true,
    formats: Some(&[
        "date-time",
        "time",
        "date",
        "duration",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "uuid",
    ]),
};

/// The image types OpenAI's vision models read (non-animated GIF included).
const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/webp", "image/gif"];

/// The prompt tokens of an image or a PDF, before the call. An image: the
/// vision guide's `detail: high` rule (fit in 2,048², short side down to
/// 768, 170 a 512-px tile plus 85), the most tiles when its size is not
/// known. A PDF page: its extracted text and an image of it.
pub fn media_tokens(part: &ContentPart) -> u64 {
    const PAGE: u64 = 2_500;
    match part {
        ContentPart::Text { .. } => 0,
        ContentPart::Image(media) => {
            let (w, h) = media.size().unwrap_or((768, 2_048));
            let (w, h) = super::content::fit_long_edge(w, h, 2_048);
            let short = w.min(h).max(1);
            let (w, h) = if short > 768 {
                (w * 768 / short, h * 768 / short)
            } else {
                (w, h)
            };
            85 + 170 * w.div_ceil(512) * h.div_ceil(512)
        }
        ContentPart::Document(media) => PAGE * media.pages_or_guess(),
    }
}

/// What chat/completions cannot take, found before any call.
pub fn check_request(req: &ProviderRequest) -> Result<(), String> {
    if let OutputFormat::Schema(schema) = &req.output {
        schema_subset::fit(&schema.schema, &STRICT_SUBSET)?;
    }
    let pdf_by_url = req
        .messages
        .iter()
        .flat_map(|m| m.content.media())
        .any(|part| matches!(part, ContentPart::Document(media) if media.url.is_some()));
    if pdf_by_url {
        return Err("OpenAI chat/completions takes a PDF only as bytes (`file_data`): send the document's `data`, not a `url`".into());
    }
    if let Some(t) = req.image_type_outside(IMAGE_TYPES) {
        return Err(format!(
            "OpenAI does not read `{t}` images (png, jpeg, webp or gif)"
        ));
    }
    Ok(())
}

/// Build the request body, with the output allowance in `field`; the error
/// is the schema refusal [`check_request`] reports.
pub fn request_body(req: &ProviderRequest, field: TokenField) -> Result<Body<'_>, String> {
    let messages = req
        .messages
        .iter()
        .map(|m| Message {
            role: match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content: content_of(&m.content),
        })
        .collect();
    let completion_field = field == TokenField::MaxCompletionTokens;
    let response_format = match &req.output {
        OutputFormat::Text => None,
        OutputFormat::Json => Some(serde_json::json!({"type": "json_object"})),
        OutputFormat::Schema(s) => Some(serde_json::json!({
            "type": "json_schema",
            "json_schema": {
                "name": s.name,
                "schema": schema_subset::fit(&s.schema, &STRICT_SUBSET)?,
                "strict": true,
            },
        })),
    };
    Ok(Body {
        model: &req.model,
        messages,
        max_tokens: req.max_output_tokens.filter(|_| !completion_field),
        max_completion_tokens: req.max_output_tokens.filter(|_| completion_field),
        temperature: req.temperature,
        user: req.user.as_deref(),
        response_format,
    })
}

/// A string stays a string; parts become `text`, `image_url` (a URL or a
/// data URL) and `file` (a PDF as a data URL) parts.
fn content_of(content: &MessageContent) -> Content<'_> {
    let parts = match content {
        MessageContent::Text(text) => return Content::Text(text),
        MessageContent::Parts(parts) => parts,
    };
    Content::Parts(
        parts
            .iter()
            .map(|part| match part {
                ContentPart::Text { text } => serde_json::json!({"type": "text", "text": text}),
                ContentPart::Image(media) => serde_json::json!({
                    "type": "image_url",
                    "image_url": {"url": media.url.clone().or_else(|| media.data_url())},
                }),
                ContentPart::Document(media) => serde_json::json!({
                    "type": "file",
                    "file": {
                        "filename": "document.pdf",
                        "file_data": media.data_url().unwrap_or_else(|| format!("data:{PDF};base64,")),
                    },
                }),
            })
            .collect(),
    )
}

#[derive(Debug, Deserialize)]
struct Response {
    choices: Vec<Choice>,
    /// Some compatible servers omit usage; count it as zero rather than fail.
    usage: Option<ResponseUsage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: ResponseMessage,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponseMessage {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponseUsage {
    #[serde(default)]
    prompt_tokens: u64,
    /// Reasoning tokens are included in it.
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionTokensDetails>,
}

/// `usage.prompt_tokens_details`: `cached_tokens` is part of `prompt_tokens`.
#[derive(Debug, Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// `usage.completion_tokens_details`: `reasoning_tokens` is part of
/// `completion_tokens` ("still counted in the total completion tokens").
#[derive(Debug, Deserialize)]
struct CompletionTokensDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// Parse a 2xx body: a success only when the answer has text and was neither
/// filtered nor refused.
pub fn parse_success(body: &[u8]) -> Outcome {
    let resp: Response = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Transient {
                message: format!("malformed success body: {e}"),
            };
        }
    };
    let Some(choice) = resp.choices.into_iter().next() else {
        return Outcome::Transient {
            message: "malformed success body: no choices".to_owned(),
        };
    };
    let usage = resp.usage.map_or(Usage::default(), |u| Usage {
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
        cached_input_tokens: u
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(u.prompt_tokens),
        reasoning_tokens: u
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
            .min(u.completion_tokens),
        ..Usage::default()
    });
    let text = choice.message.content.filter(|t| !t.is_empty());
    let finish = choice.finish_reason.unwrap_or_default();
    let failure = |kind, message: String, reason: &str, partial: Option<String>| {
        Outcome::JobFailed(JobFailure {
            partial_text: partial,
            usage,
            ..JobFailure::new(kind, message).with_reason(reason)
        })
    };
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
        return failure(
            FailureKind::Blocked,
            format!("refused: {refusal}"),
            "refusal",
            text,
        );
    }
    if finish == "content_filter" {
        let message =
            "the answer was withheld by the content filter (finish_reason content_filter)";
        return failure(
            FailureKind::Blocked,
            message.to_owned(),
            "content_filter",
            text,
        );
    }
    match (text, finish.as_str()) {
        (Some(text), finish) => Outcome::Success(Completion {
            text,
            usage,
            limit_until: None,
            cut_short: finish == "length",
        }),
        (None, "length") => failure(
            FailureKind::Truncated,
            format!(
                "the output allowance ran out before any text ({} output tokens, finish_reason length)",
                usage.output_tokens
            ),
            "length",
            None,
        ),
        (None, reason) => failure(
            FailureKind::EmptyOutput,
            format!(
                "the model answered without text (finish_reason {})",
                or_none(reason)
            ),
            reason,
            None,
        ),
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "none" } else { s }
}

/// The fields of an OpenAI error body that classification needs. Compatible
/// servers vary: `{"error": {...}}`, `{"error": "text"}`, or top-level fields.
#[derive(Debug, Default)]
pub struct ErrorFields {
    /// The human-readable `message`.
    pub message: Option<String>,
    /// The error's `type` (`insufficient_quota`, `tokens`, ...); empty when absent.
    pub kind: String,
    /// The error's `code` (a number is kept as text); empty when absent.
    pub code: String,
    /// The request parameter the error is about (`max_tokens`); empty when absent.
    pub param: String,
    /// Azure's `innererror.code` (`ResponsibleAIPolicyViolation`).
    pub inner_code: String,
}

/// The [`ErrorFields`] of an error body, whichever shape it has; all empty when
/// the body is not JSON.
pub fn error_fields(body: &[u8]) -> ErrorFields {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return ErrorFields::default();
    };
    let obj = match v.get("error") {
        Some(Value::String(s)) => {
            return ErrorFields {
                message: Some(s.clone()),
                ..ErrorFields::default()
            };
        }
        Some(inner) => inner,
        None => &v,
    };
    let text = |k: &str| match obj.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    ErrorFields {
        message: obj
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
        kind: text("type"),
        code: text("code"),
        param: text("param"),
        inner_code: obj
            .pointer("/innererror/code")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Codes meaning the account's money or quota is gone (retrying cannot help).
const QUOTA_CODES: &[&str] = &[
    "insufficient_quota",
    "billing_hard_limit_reached",
    "credit_balance_exhausted",
    "organization_usage_limit_exceeded",
    "organization_spend_limit_exceeded",
    "project_spend_limit_exceeded",
];

/// Codes meaning the key or its account is unusable until a human acts,
/// whatever the status they come with.
const DEAD_KEY_CODES: &[&str] = &[
    "invalid_api_key",
    "billing_not_active",
    "account_deactivated",
    "organization_deactivated",
    "no_organization",
    "unsupported_country_region_territory",
    "invalid_organization",
    "api_key_revoked",
    "access_terminated",
];

/// OpenAI's rules for a non-2xx answer.
pub fn classify_error(status: u16, headers: &HeaderMap, body: &[u8], now: Timestamp) -> Outcome {
    let fields = error_fields(body);
    let message = message_or_body(fields.message.as_deref(), status, body);
    if let Some(too_large) = too_large(status, &fields, &message) {
        return Outcome::JobFailed(too_large);
    }
    let is = |codes: &[&str]| {
        codes.contains(&fields.code.as_str()) || codes.contains(&fields.kind.as_str())
    };
    if is(QUOTA_CODES) {
        return Outcome::QuotaExhausted {
            until: None,
            message,
        };
    }
    if is(DEAD_KEY_CODES) {
        return Outcome::Unauthorized { message };
    }
    // "Project `proj_…` does not have access to model `o3`" comes as a 403:
    // the job named a model this key cannot use; the key itself is fine.
    if fields.code == "model_not_found" {
        return Outcome::job_failed(FailureKind::BadRequest, message);
    }
    if status != 429 {
        return by_status(status, headers, message, now);
    }
    // "Rate limit reached ... on requests per day (RPD) ... Please try again in
    // 7m12s": the provider's own time; the minute-scale reset headers are not
    // about this limit. Without a time, the pool's daily reset.
    if is_per_day(&message) {
        let wait = classify::retry_after_from_headers(headers, now)
            .or_else(|| classify::retry_hint_in(&message));
        return Outcome::QuotaExhausted {
            until: wait.and_then(|w| classify::after(now, w)),
            message,
        };
    }
    // The message's "try again in 3.89s" is the provider's time for this
    // request; a reset header is when the whole bucket is full again.
    let retry_after = classify::retry_after_from_headers(headers, now)
        .or_else(|| classify::retry_hint_in(&message))
        .or_else(|| reset_headers_delay(headers, &fields.kind));
    Outcome::RateLimited {
        retry_after,
        message,
    }
}

fn is_per_day(message: &str) -> bool {
    message.contains("per day") || message.contains("(RPD)") || message.contains("(TPD)")
}

/// A request no key of this size can ever run: 429 "Request too large for
/// gpt-4o ... on tokens per min (TPM): Limit 30000, Requested 50000", or 400
/// `context_length_exceeded` ("maximum context length is 128000 tokens.
/// However, your messages resulted in 150000 tokens").
pub fn too_large(status: u16, fields: &ErrorFields, message: &str) -> Option<JobFailure> {
    let request_too_large = status == 429 && message.starts_with("Request too large");
    let context = fields.code == "context_length_exceeded"
        || fields.code == "string_above_max_length"
        || message.contains("maximum context length");
    if !(request_too_large || context || status == 413) {
        return None;
    }
    let (limit, requested) = if request_too_large {
        (
            number_after(message, "Limit "),
            number_after(message, "Requested "),
        )
    } else {
        (
            number_after(message, "maximum context length is "),
            number_after(message, "resulted in ")
                .or_else(|| number_after(message, "you requested ")),
        )
    };
    Some(JobFailure {
        limit,
        requested,
        reason: (!fields.code.is_empty()).then(|| fields.code.clone()),
        ..JobFailure::new(FailureKind::TooLarge, message)
    })
}

/// The larger of `x-ratelimit-reset-{requests,tokens}` among the limits that
/// are hit (remaining 0, or named by the error type); both when unknown.
fn reset_headers_delay(headers: &HeaderMap, error_type: &str) -> Option<Duration> {
    let reset = |which: &str| {
        header_str(headers, &format!("x-ratelimit-reset-{which}")).and_then(parse_go_duration)
    };
    let hit = |which: &str| {
        error_type == which
            || header_str(headers, &format!("x-ratelimit-remaining-{which}")) == Some("0")
    };
    let limits = ["requests", "tokens"];
    let applicable: Vec<&str> = limits.iter().copied().filter(|w| hit(w)).collect();
    let chosen = if applicable.is_empty() {
        &limits[..]
    } else {
        &applicable[..]
    };
    chosen.iter().filter_map(|w| reset(w)).max()
}

#[cfg(test)]
#[path = "openai_tests.rs"]
mod tests;
