//! OpenAI-compatible `chat/completions` wire format: request body, success
//! parsing and the OpenAI-specific error rules (quota codes, `x-ratelimit-*`).

use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::classify::{self, by_status, header_str, message_or_body, parse_go_duration};
use super::{Completion, Outcome, ProviderRequest, Role, Usage};

#[derive(Debug, Serialize)]
pub struct Body<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    /// `max_tokens` rather than `max_completion_tokens`: every compatible
    /// server (vLLM, Ollama, llama.cpp, ...) understands it.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat>,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Debug, Serialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// Build the request body.
pub fn request_body(req: &ProviderRequest) -> Body<'_> {
    let messages = req
        .messages
        .iter()
        .map(|m| Message {
            role: match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content: &m.content,
        })
        .collect();
    Body {
        model: &req.model,
        messages,
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        user: req.user.as_deref(),
        response_format: req.json_output.then_some(ResponseFormat {
            kind: "json_object",
        }),
    }
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
    #[serde(default)]
    completion_tokens: u64,
}

/// Parse a 2xx body. A refusal or a content-filtered answer without text is
/// the job's fault: BadRequest.
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
    });
    match (choice.message.content, choice.message.refusal) {
        (Some(text), _) => Outcome::Success(Completion {
            text,
            usage,
            limit_until: None,
        }),
        (None, Some(refusal)) => Outcome::BadRequest {
            message: format!("refused: {refusal}"),
        },
        (None, None) => Outcome::BadRequest {
            message: format!(
                "no content, finish_reason {}",
                choice.finish_reason.as_deref().unwrap_or("none")
            ),
        },
    }
}

/// The fields of an OpenAI error body that classification needs. Compatible
/// servers vary: `{"error": {...}}`, `{"error": "text"}`, or top-level fields.
#[derive(Debug, Default)]
struct ErrorFields {
    message: Option<String>,
    kind: String,
    code: String,
}

fn error_fields(body: &[u8]) -> ErrorFields {
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

/// OpenAI's rules for a non-2xx answer.
pub fn classify_error(status: u16, headers: &HeaderMap, body: &[u8], now: Timestamp) -> Outcome {
    let fields = error_fields(body);
    let message = message_or_body(fields.message.as_deref(), status, body);
    let is_quota =
        QUOTA_CODES.contains(&fields.code.as_str()) || QUOTA_CODES.contains(&fields.kind.as_str());
    if is_quota {
        return Outcome::QuotaExhausted {
            until: None,
            message,
        };
    }
    if status != 429 {
        return by_status(status, headers, message, now);
    }
    // "Rate limit reached ... on requests per day (RPD)": the minute-scale reset
    // headers would have the key retried all day long.
    if message.contains("per day") {
        return Outcome::QuotaExhausted {
            until: None,
            message,
        };
    }
    let retry_after = classify::retry_after_from_headers(headers, now)
        .or_else(|| reset_headers_delay(headers, &fields.kind))
        .or_else(|| classify::retry_hint_in(&message));
    Outcome::RateLimited {
        retry_after,
        message,
    }
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
mod tests {
    use super::*;
    use crate::provider::ChatMessage;
    use serde_json::json;

    fn request() -> ProviderRequest {
        ProviderRequest {
            model: "gpt-4o-mini".to_owned(),
            messages: vec![
                ChatMessage {
                    role: Role::System,
                    content: "Answer in JSON.".to_owned(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "Colour?".to_owned(),
                },
                ChatMessage {
                    role: Role::Assistant,
                    content: "{}".to_owned(),
                },
            ],
            json_output: true,
            max_output_tokens: Some(100),
            temperature: Some(0.25),
            user: Some("user-42".to_owned()),
        }
    }

    #[test]
    fn body_has_all_fields() {
        let body = serde_json::to_value(request_body(&request())).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Answer in JSON."},
                    {"role": "user", "content": "Colour?"},
                    {"role": "assistant", "content": "{}"}
                ],
                "max_tokens": 100,
                "temperature": 0.25,
                "user": "user-42",
                "response_format": {"type": "json_object"}
            })
        );
    }

    #[test]
    fn body_omits_unset_fields() {
        let mut req = request();
        req.json_output = false;
        req.max_output_tokens = None;
        req.temperature = None;
        req.user = None;
        let body = serde_json::to_value(request_body(&req)).unwrap();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["messages", "model"]);
    }

    #[test]
    fn parses_text_and_usage() {
        let body = json!({
            "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1_741_569_952,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant",
                "content": "{\"colour\":\"blue\"}", "refusal": null},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}
        });
        let expected = Completion {
            text: "{\"colour\":\"blue\"}".to_owned(),
            usage: Usage {
                input_tokens: 19,
                output_tokens: 10,
            },
            limit_until: None,
        };
        assert_eq!(
            parse_success(body.to_string().as_bytes()),
            Outcome::Success(expected)
        );
    }

    #[test]
    fn missing_usage_counts_zero() {
        let body = json!({"choices": [{"message": {"content": "hi"}}]});
        let Outcome::Success(c) = parse_success(body.to_string().as_bytes()) else {
            panic!("expected success");
        };
        assert_eq!(c.usage, Usage::default());
    }

    #[test]
    fn refusal_is_bad_request_and_garbage_is_transient() {
        let refusal = json!({"choices": [{"message": {"content": null,
            "refusal": "I can't help with that."}, "finish_reason": "stop"}]});
        assert!(matches!(
            parse_success(refusal.to_string().as_bytes()),
            Outcome::BadRequest { message } if message.contains("can't help")
        ));
        for body in [&b"not json"[..], b"{}", b"{\"choices\": []}"] {
            assert!(matches!(parse_success(body), Outcome::Transient { message }
                if message.starts_with("malformed success body")));
        }
    }
}
