//! Unit tests of the openai wire format.

use super::*;
use crate::provider::ChatMessage;
use serde_json::json;

fn request() -> ProviderRequest {
    ProviderRequest {
        model: "gpt-4o-mini".to_owned(),
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: "Answer in JSON.".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "Colour?".into(),
            },
            ChatMessage {
                role: Role::Assistant,
                content: "{}".into(),
            },
        ],
        output: OutputFormat::Json,
        max_output_tokens: Some(100),
        temperature: Some(0.25),
        user: Some("user-42".to_owned()),
    }
}

#[test]
fn body_has_all_fields() {
    let body =
        serde_json::to_value(request_body(&request(), TokenField::MaxTokens).unwrap()).unwrap();
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
    req.output = OutputFormat::Text;
    req.max_output_tokens = None;
    req.temperature = None;
    req.user = None;
    let body = serde_json::to_value(request_body(&req, TokenField::MaxTokens).unwrap()).unwrap();
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
        Outcome::JobFailed(f) if f.message.contains("can't help") && f.kind == FailureKind::Blocked
    ));
    for body in [&b"not json"[..], b"{}", b"{\"choices\": []}"] {
        assert!(matches!(parse_success(body), Outcome::Transient { message }
            if message.starts_with("malformed success body")));
    }
}

#[test]
fn calls_refused_at_once_all_switch_to_the_same_field() {
    use crate::provider::token_field::TokenFields;
    let tokens = TokenFields::new(TokenField::MaxTokens, Default::default());
    let mut req = request();
    req.model = "gpt-5".to_owned();
    let refusal = json!({"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}})
    .to_string();
    // Two calls sent with max_tokens, both refused: both resend, neither flips back.
    assert!(adjust_token_field(&tokens, &req, 400, refusal.as_bytes()));
    assert!(adjust_token_field(&tokens, &req, 400, refusal.as_bytes()));
    assert_eq!(tokens.for_model("gpt-5"), TokenField::MaxCompletionTokens);
    // Another 400 is not a reason to resend.
    let other = json!({"error": {"message": "Invalid value for 'temperature'", "param": "temperature", "code": null}}).to_string();
    assert!(!adjust_token_field(&tokens, &req, 400, other.as_bytes()));
}

/// OpenAI's usage details (API reference, CompletionUsage): `cached_tokens`
/// is part of `prompt_tokens`, `reasoning_tokens` part of `completion_tokens`.
#[test]
fn usage_details_name_cached_and_reasoning_tokens() {
    let body = json!({
        "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    });
    let Outcome::Success(c) = parse_success(body.to_string().as_bytes()) else {
        panic!("expected success");
    };
    let want = Usage {
        input_tokens: 2006,
        output_tokens: 300,
        cached_input_tokens: 1920,
        reasoning_tokens: 192,
        ..Usage::default()
    };
    assert_eq!(c.usage, want);
}

fn v2_request() -> ProviderRequest {
    use crate::provider::{ContentPart, Media, MessageContent, OutputSchema};
    let content = MessageContent::Parts(vec![
        ContentPart::Text {
            text: "Read these.".into(),
        },
        ContentPart::Image(Media {
            url: Some("https://example.com/cat.png".into()),
            data: None,
            media_type: None,
            ..Media::default()
        }),
        ContentPart::Image(Media {
            url: None,
            data: Some("iVBORw0KGgo=".into()),
            media_type: Some("image/png".into()),
            ..Media::default()
        }),
        ContentPart::Document(Media {
            url: None,
            data: Some("JVBERi0=".into()),
            media_type: Some("application/pdf".into()),
            ..Media::default()
        }),
    ]);
    let schema = json!({
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 1, "default": null},
            "kind": {"oneOf": [{"enum": ["cat", "dog"]}, {"type": "null"}]},
        },
        "required": ["title"],
    });
    ProviderRequest {
        model: "gpt-4o".into(),
        messages: vec![ChatMessage {
            role: Role::User,
            content,
        }],
        output: OutputFormat::Schema(std::sync::Arc::new(OutputSchema {
            name: "doc".into(),
            schema,
        })),
        max_output_tokens: None,
        temperature: None,
        user: None,
    }
}

/// Golden body: parts as `image_url` (URL and data URL) and `file`
/// (`file_data`), the schema as strict `json_schema` (closed, every
/// property required, `oneOf` as `anyOf`, `minLength` moved to the
/// description, the `null` default dropped).
#[test]
fn v2_body_maps_parts_and_a_strict_schema() {
    let body =
        serde_json::to_value(request_body(&v2_request(), TokenField::MaxTokens).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Read these."},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
            ]}],
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "doc",
                "strict": true,
                "schema": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "description": "{\"minLength\":1}"},
                        "kind": {"anyOf": [{"enum": ["cat", "dog"]}, {"type": "null"}]},
                    },
                    "required": ["kind", "title"],
                    "additionalProperties": false,
                },
            }},
        })
    );
}
