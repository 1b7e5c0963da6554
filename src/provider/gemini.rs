//! Gemini `generateContent` wire format: request body, success parsing and the
//! Gemini-specific error rules (google.rpc `QuotaFailure`, `RetryInfo`, `ErrorInfo`).

use jiff::Timestamp;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::classify::{self, by_status, message_or_body, parse_go_duration};
use super::{ChatMessage, Completion, Outcome, ProviderRequest, Role, Usage};

/// The `models/{model}:generateContent` path segment for `model`
/// (a leading `models/` is tolerated).
pub fn method_segment(model: &str) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    format!("{model}:generateContent")
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Body<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content<'a>>,
    generation_config: GenerationConfig,
}

#[derive(Debug, Serialize)]
struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part<'a>>,
}

#[derive(Debug, Serialize)]
struct Part<'a> {
    text: &'a str,
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
}

/// Build the request body. System messages become `systemInstruction`; the
/// assistant role is called `model`. Gemini has no end-user field.
pub fn request_body(req: &ProviderRequest) -> Body<'_> {
    let system: Vec<Part<'_>> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| Part { text: &m.content })
        .collect();
    let contents = req
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(content_of)
        .collect();
    Body {
        contents,
        system_instruction: (!system.is_empty()).then_some(Content {
            role: None,
            parts: system,
        }),
        generation_config: GenerationConfig {
            max_output_tokens: req.max_output_tokens,
            temperature: req.temperature,
            response_mime_type: req.json_output.then_some("application/json"),
        },
    }
}

fn content_of(m: &ChatMessage) -> Content<'_> {
    let role = if m.role == Role::Assistant {
        "model"
    } else {
        "user"
    };
    Content {
        role: Some(role),
        parts: vec![Part { text: &m.content }],
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
}

/// Parse a 2xx body. A prompt or answer blocked by safety filters (no text)
/// is the job's fault: BadRequest.
pub fn parse_success(body: &[u8]) -> Outcome {
    let resp: Response = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return malformed(e),
    };
    if let Some(reason) = resp.prompt_feedback.and_then(|f| f.block_reason) {
        return Outcome::BadRequest {
            message: format!("blocked: prompt blockReason {reason}"),
        };
    }
    let Some(candidate) = resp.candidates.into_iter().next() else {
        return Outcome::BadRequest {
            message: "blocked: no candidates returned".to_owned(),
        };
    };
    // A finished candidate without `content` carries no answer at all: an
    // unusable body (probably billed), not an empty success.
    if candidate.content.is_none()
        && candidate
            .finish_reason
            .as_deref()
            .is_none_or(|f| f == "STOP")
    {
        return Outcome::InvalidResponse {
            message: "malformed success body: candidate without content".to_owned(),
        };
    }
    let text: String = candidate
        .content
        .map(|c| c.parts)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.thought)
        .filter_map(|p| p.text)
        .collect();
    let finish = candidate.finish_reason.unwrap_or_default();
    if text.is_empty() && finish != "STOP" {
        return Outcome::BadRequest {
            message: format!("blocked: no text, finishReason {finish}"),
        };
    }
    let usage = resp.usage_metadata.unwrap_or_default();
    Outcome::Success(Completion {
        text,
        usage: Usage {
            input_tokens: usage.prompt_token_count,
            output_tokens: usage.candidates_token_count + usage.thoughts_token_count,
        },
        limit_until: None,
    })
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
    let raw_message = error.get("message").and_then(Value::as_str);
    let message = message_or_body(raw_message, status, body);
    let details = error
        .get("details")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if status == 429 {
        if details_of(details, "QuotaFailure").any(has_per_day_violation) {
            return Outcome::QuotaExhausted {
                until: None,
                message,
            };
        }
        let delay = details_of(details, "RetryInfo")
            .find_map(|d| d.get("retryDelay")?.as_str().and_then(parse_go_duration));
        let retry_after = delay
            .or_else(|| classify::retry_after_from_headers(headers, now))
            .or_else(|| classify::retry_hint_in(&message));
        return Outcome::RateLimited {
            retry_after,
            message,
        };
    }
    if status == 400 && is_bad_key(details, raw_message.unwrap_or_default()) {
        return Outcome::Unauthorized { message };
    }
    by_status(status, headers, message, now)
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
    by_reason || lower.contains("api key not valid") || lower.contains("api key expired")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ChatMessage;
    use serde_json::json;

    fn request(json_output: bool) -> ProviderRequest {
        let msg = |role, content: &str| ChatMessage {
            role,
            content: content.to_owned(),
        };
        ProviderRequest {
            model: "gemini-2.0-flash".to_owned(),
            messages: vec![
                msg(Role::System, "Be terse."),
                msg(Role::User, "Hi"),
                msg(Role::Assistant, "Hello"),
                msg(Role::User, "Name a colour"),
            ],
            json_output,
            max_output_tokens: Some(256),
            temperature: Some(0.5),
            user: Some("u-1".to_owned()),
        }
    }

    #[test]
    fn body_maps_roles_system_and_generation_config() {
        let body = serde_json::to_value(request_body(&request(true))).unwrap();
        assert_eq!(
            body,
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "Hi"}]},
                    {"role": "model", "parts": [{"text": "Hello"}]},
                    {"role": "user", "parts": [{"text": "Name a colour"}]}
                ],
                "systemInstruction": {"parts": [{"text": "Be terse."}]},
                "generationConfig": {
                    "maxOutputTokens": 256,
                    "temperature": 0.5,
                    "responseMimeType": "application/json"
                }
            })
        );
    }

    #[test]
    fn body_omits_unset_fields() {
        let mut req = request(false);
        req.messages.retain(|m| m.role == Role::User);
        req.max_output_tokens = None;
        req.temperature = None;
        let body = serde_json::to_value(request_body(&req)).unwrap();
        assert!(body.get("systemInstruction").is_none());
        assert_eq!(body["generationConfig"], json!({}));
    }

    #[test]
    fn method_segment_tolerates_models_prefix() {
        assert_eq!(
            method_segment("models/gemini-pro"),
            "gemini-pro:generateContent"
        );
        assert_eq!(method_segment("gemini-pro"), "gemini-pro:generateContent");
    }

    #[test]
    fn parses_text_and_usage_skipping_thoughts() {
        let body = json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "thinking...", "thought": true},
                    {"text": "Blue"}, {"text": "!"}
                ]},
                "finishReason": "STOP", "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 2,
                              "thoughtsTokenCount": 5, "totalTokenCount": 19},
            "modelVersion": "gemini-2.0-flash"
        });
        let outcome = parse_success(body.to_string().as_bytes());
        let expected = Completion {
            text: "Blue!".to_owned(),
            usage: Usage {
                input_tokens: 12,
                output_tokens: 7,
            },
            limit_until: None,
        };
        assert_eq!(outcome, Outcome::Success(expected));
    }

    #[test]
    fn blocked_answers_are_bad_requests() {
        let prompt_blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        let no_candidates = json!({"usageMetadata": {"promptTokenCount": 3}});
        let safety = json!({"candidates": [{"finishReason": "SAFETY", "index": 0}]});
        for body in [prompt_blocked, no_candidates, safety] {
            let outcome = parse_success(body.to_string().as_bytes());
            match outcome {
                Outcome::BadRequest { message } => assert!(message.starts_with("blocked")),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_success_is_transient() {
        for body in [&b"<html>"[..], b"", b"{\"candidates\": 3}"] {
            assert!(matches!(parse_success(body), Outcome::Transient { message }
                if message.starts_with("malformed success body")));
        }
    }
}
