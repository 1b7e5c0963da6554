//! Anthropic `v1/messages` wire format: request body, success parsing and the
//! Anthropic-specific error rules (spend limits, `anthropic-ratelimit-*` resets).

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::classify::{self, by_status, header_str, message_or_body};
use super::{Completion, Outcome, ProviderRequest, Role, Usage};

/// The API version keyrelay speaks (sent as `anthropic-version`).
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by the Messages API.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Appended to the system prompt: Anthropic has no JSON mode.
pub const JSON_INSTRUCTION: &str =
    "Answer with a single JSON value only: no prose, no code fences.";

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
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Debug, Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

/// Build the request body. System messages are joined into `system`.
pub fn request_body(req: &ProviderRequest) -> Body<'_> {
    let mut system: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    if req.json_output {
        system.push(JSON_INSTRUCTION);
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
            content: &m.content,
        })
        .collect();
    Body {
        model: &req.model,
        max_tokens: req.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        temperature: req.temperature,
        metadata: req.user.as_deref().map(|user_id| Metadata { user_id }),
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

/// Parse a 2xx body. A refusal without text is the job's fault: BadRequest.
pub fn parse_success(body: &[u8]) -> Outcome {
    let resp: Response = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Transient {
                message: format!("malformed success body: {e}"),
            };
        }
    };
    let text: String = resp
        .content
        .into_iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text)
        .collect();
    if text.is_empty() && resp.stop_reason.as_deref() == Some("refusal") {
        return Outcome::BadRequest {
            message: "refused: stop_reason refusal".to_owned(),
        };
    }
    let usage = resp.usage.map_or(Usage::default(), |u| Usage {
        input_tokens: u.input_tokens
            + u.cache_creation_input_tokens.unwrap_or(0)
            + u.cache_read_input_tokens.unwrap_or(0),
        output_tokens: u.output_tokens,
    });
    Outcome::Success(Completion {
        text,
        usage,
        limit_until: None,
    })
}

/// Anthropic's rules for a non-2xx answer.
pub fn classify_error(status: u16, headers: &HeaderMap, body: &[u8], now: Timestamp) -> Outcome {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = v.get("error").unwrap_or(&Value::Null);
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let raw_message = error.get("message").and_then(Value::as_str);
    let message = message_or_body(raw_message, status, body);
    let error_code = error
        .pointer("/details/error_code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if error_code == "enforced_spend_limit_reached" {
        // The usage tier's monthly cap: access resumes on the 1st, 00:00 UTC.
        return Outcome::QuotaExhausted {
            until: next_month_utc(now),
            message,
        };
    }
    if status == 400 && is_out_of_money(raw_message.unwrap_or_default()) {
        return Outcome::QuotaExhausted {
            until: None,
            message,
        };
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
    if kind == "overloaded_error" {
        return Outcome::Transient { message };
    }
    by_status(status, headers, message, now)
}

/// A 400 for an empty credit balance or a spend limit the organisation set.
fn is_out_of_money(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("credit balance is too low") || lower.contains("spend limit")
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
mod tests {
    use super::*;
    use crate::provider::ChatMessage;
    use serde_json::json;

    fn request() -> ProviderRequest {
        let msg = |role, content: &str| ChatMessage {
            role,
            content: content.to_owned(),
        };
        ProviderRequest {
            model: "claude-sonnet-4-5".to_owned(),
            messages: vec![
                msg(Role::System, "You sort fruit."),
                msg(Role::System, "Be brief."),
                msg(Role::User, "Apple?"),
                msg(Role::Assistant, "Pome."),
                msg(Role::User, "Plum?"),
            ],
            json_output: true,
            max_output_tokens: None,
            temperature: Some(0.0),
            user: Some("u-7".to_owned()),
        }
    }

    #[test]
    fn body_joins_system_adds_json_instruction_and_defaults_max_tokens() {
        let body = serde_json::to_value(request_body(&request())).unwrap();
        let system = format!("You sort fruit.\n\nBe brief.\n\n{JSON_INSTRUCTION}");
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "system": system,
                "messages": [
                    {"role": "user", "content": "Apple?"},
                    {"role": "assistant", "content": "Pome."},
                    {"role": "user", "content": "Plum?"}
                ],
                "temperature": 0.0,
                "metadata": {"user_id": "u-7"}
            })
        );
    }

    #[test]
    fn body_omits_unset_fields() {
        let mut req = request();
        req.messages.retain(|m| m.role == Role::User);
        req.json_output = false;
        req.max_output_tokens = Some(50);
        req.temperature = None;
        req.user = None;
        let body = serde_json::to_value(request_body(&req)).unwrap();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["max_tokens", "messages", "model"]);
        assert_eq!(body["max_tokens"], 50);
    }

    #[test]
    fn parses_text_blocks_and_usage() {
        let body = json!({
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "Drupe"}, {"type": "text", "text": "."}
            ],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 20, "output_tokens": 4,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100}
        });
        let expected = Completion {
            text: "Drupe.".to_owned(),
            usage: Usage {
                input_tokens: 120,
                output_tokens: 4,
            },
            limit_until: None,
        };
        assert_eq!(
            parse_success(body.to_string().as_bytes()),
            Outcome::Success(expected)
        );
    }

    #[test]
    fn refusal_and_malformed() {
        let refusal = json!({"content": [], "stop_reason": "refusal",
                             "usage": {"input_tokens": 5, "output_tokens": 0}});
        assert!(matches!(
            parse_success(refusal.to_string().as_bytes()),
            Outcome::BadRequest { .. }
        ));
        for body in [&b"oops"[..], b"{}", b"{\"content\": \"text\"}"] {
            assert!(matches!(parse_success(body), Outcome::Transient { message }
                if message.starts_with("malformed success body")));
        }
    }

    #[test]
    fn next_month_rolls_over_the_year() {
        let now: Timestamp = "2025-12-31T23:59:59Z".parse().unwrap();
        let expected: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(next_month_utc(now), Some(expected));
    }
}
