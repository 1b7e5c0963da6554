//! Unit tests of the anthropic wire format.

use super::*;
use crate::provider::ChatMessage;
use serde_json::json;

fn request() -> ProviderRequest {
    let msg = |role, content: &str| ChatMessage {
        role,
        content: content.into(),
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
        output: OutputFormat::Json,
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
    req.output = OutputFormat::Text;
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
            cached_input_tokens: 100,
            ..Usage::default()
        },
        limit_until: None,
        cut_short: false,
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
        Outcome::JobFailed(f) if f.kind == FailureKind::Blocked
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

/// Anthropic's usage (prompt caching docs, "Tracking cache performance"):
/// `input_tokens`, `cache_read_input_tokens` and `cache_creation_input_tokens`
/// are disjoint; the prompt is their sum.
#[test]
fn usage_counts_cache_reads_and_writes_in_the_prompt() {
    let body = json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
        "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 21, "cache_creation_input_tokens": 188086,
            "cache_read_input_tokens": 0, "output_tokens": 393}
    });
    let Outcome::Success(c) = parse_success(body.to_string().as_bytes()) else {
        panic!("expected success");
    };
    let want = Usage {
        input_tokens: 21 + 188_086,
        output_tokens: 393,
        cache_write_tokens: 188_086,
        ..Usage::default()
    };
    assert_eq!(c.usage, want);
}

/// Golden body: parts as `image`/`document` blocks with `base64` and `url`
/// sources; the schema as a tool the model is made to call, sent as written.
#[test]
fn v2_body_maps_parts_and_forces_the_schema_tool() {
    use crate::provider::{ContentPart, Media, MessageContent, OutputSchema};
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"]});
    let req = ProviderRequest {
        model: "claude-sonnet-4-5".into(),
        messages: vec![ChatMessage {
            role: Role::User,
            content: MessageContent::Parts(vec![
                ContentPart::Image(Media {
                    url: None,
                    data: Some("/9j/4A==".into()),
                    media_type: Some("image/jpeg".into()),
                    ..Media::default()
                }),
                ContentPart::Document(Media {
                    url: Some("https://example.com/a.pdf".into()),
                    data: None,
                    media_type: None,
                    ..Media::default()
                }),
                ContentPart::Text {
                    text: "How many?".into(),
                },
            ]),
        }],
        output: OutputFormat::Schema(std::sync::Arc::new(OutputSchema {
            name: "count".into(),
            schema: schema.clone(),
        })),
        max_output_tokens: Some(200),
        temperature: None,
        user: None,
    };
    let body = serde_json::to_value(request_body(&req)).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 200,
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4A=="}},
                {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
                {"type": "text", "text": "How many?"},
            ]}],
            "tools": [{"name": "count", "description": TOOL_DESCRIPTION, "input_schema": schema}],
            "tool_choice": {"type": "tool", "name": "count"},
        })
    );
}

/// The forced tool's input is the answer; cut off by max_tokens it is not.
#[test]
fn a_tool_answer_is_the_structured_output() {
    let body = json!({
        "content": [{"type": "tool_use", "id": "toolu_01", "name": "count", "input": {"n": 3}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    });
    let Outcome::Success(c) = parse_success(body.to_string().as_bytes()) else {
        panic!()
    };
    assert_eq!(c.text, r#"{"n":3}"#);
    let cut = json!({
        "content": [{"type": "tool_use", "id": "toolu_01", "name": "count", "input": {}}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 10, "output_tokens": 200},
    });
    let Outcome::JobFailed(f) = parse_success(cut.to_string().as_bytes()) else {
        panic!()
    };
    assert_eq!(f.kind, FailureKind::Truncated);
}
