//! Unit tests of the gemini wire format.

use super::*;
use crate::provider::ChatMessage;
use serde_json::json;

fn request(json_output: bool) -> ProviderRequest {
    let msg = |role, content: &str| ChatMessage {
        role,
        content: content.into(),
    };
    ProviderRequest {
        model: "gemini-2.0-flash".to_owned(),
        messages: vec![
            msg(Role::System, "Be terse."),
            msg(Role::User, "Hi"),
            msg(Role::Assistant, "Hello"),
            msg(Role::User, "Name a colour"),
        ],
        output: if json_output {
            OutputFormat::Json
        } else {
            OutputFormat::Text
        },
        max_output_tokens: Some(256),
        temperature: Some(0.5),
        user: Some("u-1".to_owned()),
    }
}

#[test]
fn body_maps_roles_system_and_generation_config() {
    let body = serde_json::to_value(request_body(&request(true)).unwrap()).unwrap();
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
    let body = serde_json::to_value(request_body(&req).unwrap()).unwrap();
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
            reasoning_tokens: 5,
            ..Usage::default()
        },
        limit_until: None,
        cut_short: false,
    };
    assert_eq!(outcome, Outcome::Success(expected));
}

#[test]
fn blocked_empty_and_cut_answers_fail_the_job() {
    let prompt_blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
    let no_candidates = json!({"usageMetadata": {"promptTokenCount": 3}});
    let safety = json!({"candidates": [{"finishReason": "SAFETY", "index": 0}]});
    let empty = json!({"candidates": [{"content": {"role": "model"}, "finishReason": "STOP"}]});
    let cut = json!({"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {"promptTokenCount": 3, "thoughtsTokenCount": 100}});
    let rows = [
        (prompt_blocked, FailureKind::Blocked, "SAFETY"),
        (no_candidates, FailureKind::EmptyOutput, "NO_CANDIDATES"),
        (safety, FailureKind::Blocked, "SAFETY"),
        (empty, FailureKind::EmptyOutput, "STOP"),
        (cut, FailureKind::Truncated, "MAX_TOKENS"),
    ];
    for (body, kind, reason) in rows {
        match parse_success(body.to_string().as_bytes()) {
            Outcome::JobFailed(f) => {
                assert_eq!(
                    (f.kind, f.reason.as_deref()),
                    (kind, Some(reason)),
                    "{body}"
                )
            }
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

/// Gemini's `usageMetadata`: `cachedContentTokenCount` is part of
/// `promptTokenCount`; `thoughtsTokenCount` is billed as output but not in
/// `candidatesTokenCount`.
#[test]
fn usage_metadata_names_cached_and_thought_tokens() {
    let body = json!({
        "candidates": [{"content": {"parts": [{"text": "ok"}], "role": "model"},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 4200, "candidatesTokenCount": 35,
            "totalTokenCount": 4835, "cachedContentTokenCount": 4000,
            "thoughtsTokenCount": 600}
    });
    let Outcome::Success(c) = parse_success(body.to_string().as_bytes()) else {
        panic!("expected success");
    };
    let want = Usage {
        input_tokens: 4200,
        output_tokens: 635,
        cached_input_tokens: 4000,
        reasoning_tokens: 600,
        ..Usage::default()
    };
    assert_eq!(c.usage, want);
}

/// Golden body: parts as `inlineData` and `fileData`, the schema as
/// `responseJsonSchema` with `$ref`s kept and `pattern` moved to the
/// description; the schema stays open (Gemini takes `additionalProperties`).
#[test]
fn v2_body_maps_parts_and_a_json_schema() {
    use crate::provider::{ContentPart, Media, MessageContent, OutputSchema};
    let mut req = request(false);
    req.messages = vec![ChatMessage {
        role: Role::User,
        content: MessageContent::Parts(vec![
            ContentPart::Text {
                text: "Read.".into(),
            },
            ContentPart::Image(Media {
                url: None,
                data: Some("iVBORw0KGgo=".into()),
                media_type: Some("image/png".into()),
                ..Media::default()
            }),
            ContentPart::Document(Media {
                url: Some("https://example.com/a.pdf".into()),
                data: None,
                media_type: None,
                ..Media::default()
            }),
        ]),
    }];
    req.output = OutputFormat::Schema(std::sync::Arc::new(OutputSchema {
        name: "doc".into(),
        schema: json!({
            "type": "object",
            "properties": {"id": {"type": "string", "pattern": "^[a-z]+$"}, "p": {"$ref": "#/$defs/P"}},
            "$defs": {"P": {"type": ["number", "null"]}},
        }),
    }));
    let body = serde_json::to_value(request_body(&req).unwrap()).unwrap();
    assert_eq!(
        body["contents"],
        json!([{"role": "user", "parts": [
            {"text": "Read."},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/a.pdf"}},
        ]}])
    );
    assert_eq!(
        body["generationConfig"],
        json!({
            "maxOutputTokens": 256,
            "temperature": 0.5,
            "responseMimeType": "application/json",
            "responseJsonSchema": {
                "type": "object",
                "properties": {"id": {"type": "string", "description": "{\"pattern\":\"^[a-z]+$\"}"}, "p": {"$ref": "#/$defs/P"}},
                "$defs": {"P": {"type": ["number", "null"]}},
            },
        })
    );
}
