//! Provider-neutral pieces the wire formats share (Azure speaks OpenAI's): the parsed request, the
//! failures each provider renders in its own shape, answer text and token counts.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::{Value, json};

use super::state::Limited;
use super::structured::{self, MediaSeen};

/// What the mock needs from a provider request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub model: String,
    /// Text of the last user message: the echoed prompt, and where directives live.
    pub last_user: String,
    /// Characters of every message and the system prompt, for the usage numbers.
    pub input_chars: usize,
    pub json_output: bool,
    /// The JSON Schema the answer must follow (OpenAI `json_schema`, Gemini
    /// `responseJsonSchema`/`responseSchema`, Anthropic the forced tool's
    /// `input_schema`).
    pub schema: Option<Value>,
    /// Anthropic: the tool the request forces (the answer is its input).
    pub forced_tool: Option<String>,
    /// The images and documents the request carried.
    pub media: MediaSeen,
}

/// Token usage of one answer: ceil(chars / 4) each way, and, when a
/// directive asks for them, prompt tokens read from a cache and reasoning
/// tokens spent before the text. Each provider reports them in its own
/// fields (see each `success`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Every prompt token, cached ones included.
    pub input: u64,
    /// Tokens of the answer's text.
    pub output: u64,
    /// Of `input`, read from the prompt cache (`cached=N`).
    pub cached: u64,
    /// Reasoning tokens, billed as output besides the text (`reasoning=N`).
    pub reasoning: u64,
}

impl Usage {
    pub fn of(parsed: &Parsed, text: &str) -> Usage {
        Usage {
            input: tokens(parsed.input_chars) + parsed.media.tokens(),
            output: tokens(text.chars().count()),
            ..Usage::default()
        }
    }

    /// With the cached and reasoning tokens a request's directives ask for
    /// (cached ones capped at the prompt).
    pub fn with_details(mut self, cached: Option<u64>, reasoning: Option<u64>) -> Usage {
        self.cached = cached.unwrap_or(0).min(self.input);
        self.reasoning = reasoning.unwrap_or(0);
        self
    }

    /// Output billed: the text's tokens and the reasoning.
    pub fn billed_output(&self) -> u64 {
        self.output + self.reasoning
    }

    pub fn total(&self) -> u64 {
        self.input + self.billed_output()
    }
}

fn tokens(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX)
}

/// An error answer, described once; each provider renders its real shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    MissingKey,
    /// Unknown, invalid or revoked key (the secret goes into OpenAI's message, masked).
    InvalidKey {
        secret: String,
    },
    RateLimited {
        limited: Limited,
        model: String,
    },
    Exhausted {
        limited: Limited,
        model: String,
    },
    /// An injected error status.
    Status(u16),
    /// The request could not be understood.
    BadRequest(String),
}

/// The answer text: a deterministic function of the request. With a
/// schema, a value that conforms to it, unless `off_schema` asks for JSON
/// that ignores it.
pub(crate) fn answer_text(parsed: &Parsed, invalid_json: bool, off_schema: bool) -> String {
    let echo = format!("{}{}", parsed.last_user, parsed.media.note());
    if let Some(schema) = parsed.schema.as_ref().filter(|_| !invalid_json) {
        if off_schema {
            return json!({ "echo": echo, "off_schema": true }).to_string();
        }
        return structured::instance(schema, &format!("mock answer: {echo}")).to_string();
    }
    if invalid_json {
        // Looks like the start of the requested JSON but never closes: not parseable.
        let echo = Value::String(parsed.last_user.clone());
        return format!("Sure! Here is the JSON you asked for: {{\"echo\": {echo}, \"model\": ");
    }
    if parsed.json_output {
        json!({ "echo": echo, "model": parsed.model }).to_string()
    } else {
        format!("mock answer: {echo}")
    }
}

/// Text of a message `content`: a string, or the `text` of each block of an array.
pub(crate) fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(blocks) => Some(
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
        ),
        _ => None,
    }
}

/// A JSON answer with this status and content type.
pub(crate) fn json_response(status: u16, content_type: &str, body: &Value) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type(content_type)
        .body(body.to_string())
}

/// Whole seconds, rounded up (what `retry-after` carries).
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 { secs + 1 } else { secs }
}

/// Whole milliseconds, rounded up.
pub(crate) fn ceil_millis(d: Duration) -> u64 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if !d.as_nanos().is_multiple_of(1_000_000) {
        ms.saturating_add(1)
    } else {
        ms
    }
}

/// A fresh id with this prefix, in the providers' style (`chatcmpl-...`, `msg_...`).
pub(crate) fn fresh_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub(crate) fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json_output: bool) -> Parsed {
        Parsed {
            model: "m".into(),
            last_user: "say \"hi\"".into(),
            input_chars: 9,
            json_output,
            ..Parsed::default()
        }
    }

    #[test]
    fn answer_text_variants() {
        assert_eq!(
            answer_text(&parsed(false), false, false),
            "mock answer: say \"hi\""
        );
        let json: Value = serde_json::from_str(&answer_text(&parsed(true), false, false)).unwrap();
        assert_eq!(json, json!({"echo": "say \"hi\"", "model": "m"}));
        assert!(serde_json::from_str::<Value>(&answer_text(&parsed(true), true, false)).is_err());
        assert_eq!(
            Usage::of(&parsed(false), "12345"),
            Usage {
                input: 3,
                output: 2,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn rounding_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ceil_millis(Duration::from_millis(7)), 7);
    }
}
