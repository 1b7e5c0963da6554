//! Job contract v2 end to end: structured output with a JSON Schema, and
//! images and PDF documents as input, through each provider's native form
//! (real RabbitMQ, the mock provider over HTTP, which checks each form as
//! the provider does: OpenAI's strict-schema rules, Anthropic's image
//! types, Gemini's mime types).

mod common;

use common::{TestEnv, TestKey, TestPool};
use keyrelay_core::job::{ErrorKind, JobStatus};
use keyrelay_mock::MockSettings;
use serde_json::{Value, json};

fn pools() -> Vec<TestPool> {
    ["gemini", "openai", "anthropic"]
        .into_iter()
        .map(|provider| TestPool {
            name: &provider[..1],
            provider,
            keys: vec![TestKey::new(&provider[..2], 1)],
        })
        .collect()
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "age": {"type": "integer", "minimum": 0},
            "role": {"enum": ["author", "editor"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "address": {"$ref": "#/$defs/Address"},
        },
        "required": ["name", "age"],
        "$defs": {"Address": {"type": "object", "properties": {"city": {"type": ["string", "null"]}}}},
    })
}

fn schema_job(id: &str, prompt: &str) -> Value {
    json!({
        "id": id,
        "prompt": prompt,
        "cache": true,
        "response_format": {"type": "json_schema", "name": "person", "schema": person_schema()},
    })
}

#[actix::test]
async fn schema_answers_through_each_provider_conform_or_fail_uncached() {
    let mut env = TestEnv::start(pools()).await;
    for p in ["g", "o", "a"] {
        env.publish(
            p,
            &schema_job(&format!("{p}-ok"), &format!("who wrote it, {p}?")),
        )
        .await;
    }
    let replies = env.replies(3).await;
    for p in ["g", "o", "a"] {
        let r = &replies[&format!("{p}-ok")];
        assert_eq!(r.status, JobStatus::Succeeded, "{p}: {r:?}");
        let json = r.json.as_ref().expect("parsed JSON");
        assert_eq!(json["name"], format!("mock answer: who wrote it, {p}?"));
        assert_eq!(json["role"], "author");
        assert!(json["age"].is_i64(), "{json}");
    }

    // The model ignores the schema: invalid_output with where it broke,
    // the raw text kept; asked again, the provider is asked again.
    for round in 0..2 {
        for p in ["g", "o", "a"] {
            let job = schema_job(
                &format!("{p}-off-{round}"),
                &format!("[[mock:off_schema]] {p}"),
            );
            env.publish(p, &job).await;
        }
        let replies = env.replies(3).await;
        for p in ["g", "o", "a"] {
            let r = &replies[&format!("{p}-off-{round}")];
            assert_eq!(r.status, JobStatus::Failed, "{p}: {r:?}");
            let error = r.error.as_ref().unwrap();
            assert_eq!(error.kind, ErrorKind::InvalidOutput);
            assert_eq!(error.reason.as_deref(), Some("schema"));
            assert!(
                error
                    .violations
                    .iter()
                    .any(|v| v.contains("\"name\" is a required property")),
                "{p}: {:?}",
                error.violations
            );
            assert!(r.text.as_deref().unwrap().contains("off_schema"));
        }
    }
    let stats = env.mock.stats();
    for p in ["g", "o", "a"] {
        let prompt = format!("[[mock:off_schema]] {p}");
        assert_eq!(
            stats.successes_by_prompt.get(&prompt),
            Some(&2),
            "a non-conforming answer is never cached ({p})"
        );
    }
    // A conforming answer is: the same job again costs no call.
    env.publish("o", &schema_job("o-again", "who wrote it, o?"))
        .await;
    let (again, _) = env.next_reply().await;
    assert_eq!(again.status, JobStatus::Succeeded);
    assert_eq!(
        env.mock.stats().successes_by_prompt.get("who wrote it, o?"),
        Some(&1)
    );
    env.finish().await;
}

#[actix::test]
async fn a_template_carries_its_schema() {
    let templates = r#"
[templates.person]
text = "Who is {{input.who}}?"
schema_name = "person"
schema = { type = "object", properties = { name = { type = "string" }, born = { type = "integer" } }, required = ["name", "born"] }
"#;
    let mut env = TestEnv::start_with(pools(), MockSettings::default(), templates).await;
    for p in ["g", "o", "a"] {
        env.publish(
            p,
            &json!({"id": format!("{p}-t"), "template": "person", "input": {"who": "Ada"}}),
        )
        .await;
    }
    let replies = env.replies(3).await;
    for p in ["g", "o", "a"] {
        let r = &replies[&format!("{p}-t")];
        assert_eq!(r.status, JobStatus::Succeeded, "{p}: {r:?}");
        let json = r.json.as_ref().unwrap();
        assert_eq!(json["name"], "mock answer: Who is Ada?");
        assert!(json["born"].is_i64());
    }
    env.finish().await;
}

/// A 1×1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
/// A one-page PDF (its header and page object are what matter here).
const PDF: &str = "JVBERi0xLjQKMSAwIG9iaiA8PCAvVHlwZSAvUGFnZXMgL0NvdW50IDEgPj4gZW5kb2JqCjIgMCBvYmogPDwgL1R5cGUgL1BhZ2UgPj4gZW5kb2JqCiUlRU9G";

#[actix::test]
async fn images_and_documents_reach_each_provider_in_its_form() {
    let mut env = TestEnv::start(pools()).await;
    let ask = |id: String, parts: Value| json!({"id": id, "messages": [{"role": "user", "content": parts}]});
    let image_data = json!({"type": "image", "data": PNG, "media_type": "image/png"});
    let image_url =
        json!({"type": "image", "url": "https://example.com/cat.png", "media_type": "image/png"});
    let pdf_data = json!({"type": "document", "data": PDF, "media_type": "application/pdf"});
    let pdf_url = json!({"type": "document", "url": "https://example.com/report.pdf"});
    let mut expected = Vec::new();
    for p in ["g", "o", "a"] {
        let mut jobs = vec![
            (
                "img",
                json!([{"type": "text", "text": "What is it?"}, image_data.clone()]),
                "[saw 1 image(s), 0 document(s)]",
            ),
            (
                "imgurl",
                json!([{"type": "text", "text": "And this?"}, image_url.clone()]),
                "[saw 1 image(s), 0 document(s)]",
            ),
            (
                "pdf",
                json!([pdf_data.clone(), {"type": "text", "text": "Summarise."}]),
                "[saw 0 image(s), 1 document(s)]",
            ),
        ];
        if p != "o" {
            // chat/completions takes a PDF only as bytes (refused below).
            jobs.push((
                "pdfurl",
                json!([pdf_url.clone(), {"type": "text", "text": "Summarise."}]),
                "[saw 0 image(s), 1 document(s)]",
            ));
        }
        for (name, parts, note) in jobs {
            let id = format!("{p}-{name}");
            env.publish(p, &ask(id.clone(), parts)).await;
            expected.push((id, note));
        }
    }
    let replies = env.replies(expected.len()).await;
    for (id, note) in expected {
        let r = &replies[&id];
        assert_eq!(r.status, JobStatus::Succeeded, "{id}: {r:?}");
        let text = r.text.as_deref().unwrap();
        assert!(text.ends_with(note), "{id}: {text}");
        assert!(
            r.usage.input_tokens >= 258,
            "{id}: media is counted: {:?}",
            r.usage
        );
    }
    env.finish().await;
}

#[actix::test]
async fn what_a_provider_cannot_take_is_refused_before_any_call() {
    let mut env = TestEnv::start(pools()).await;
    let user = |parts: Value| json!([{"role": "user", "content": parts}]);
    let refused = [
        (
            "o",
            json!({"id": "o-pdfurl", "messages": user(json!([{"type": "document", "url": "https://example.com/a.pdf"}]))}),
            "not a `url`",
        ),
        (
            "g",
            json!({"id": "g-gif", "messages": user(json!([{"type": "image", "data": "R0lGODlhAQABAAAAACw=", "media_type": "image/gif"}]))}),
            "`image/gif`",
        ),
        (
            "a",
            json!({"id": "a-array", "prompt": "list", "response_format": {"type": "json_schema", "schema": {"type": "array", "items": {"type": "string"}}}}),
            "root",
        ),
        (
            "o",
            json!({"id": "o-pattern", "prompt": "x", "response_format": {"type": "json_schema", "schema": {"type": "object", "patternProperties": {"^x-": {"type": "string"}}}}}),
            "`patternProperties` (at the root)",
        ),
        (
            "g",
            json!({"id": "g-remote", "prompt": "x", "response_format": {"type": "json_schema", "schema": {"$ref": "https://example.com/schema.json"}}}),
            "only local `$ref`s",
        ),
        (
            "a",
            json!({"id": "a-video", "messages": user(json!([{"type": "video", "url": "https://example.com/v.mp4"}]))}),
            "unknown part type `video`",
        ),
    ];
    for (pool, job, _) in &refused {
        env.publish(pool, job).await;
    }
    let replies = env.replies(refused.len()).await;
    for (_, job, wanted) in &refused {
        let id = job["id"].as_str().unwrap();
        let r = &replies[id];
        let error = r.error.as_ref().unwrap();
        assert_eq!(error.kind, ErrorKind::InvalidJob, "{id}: {r:?}");
        assert!(error.message.contains(wanted), "{id}: {}", error.message);
    }
    let dead = env.dead_letters(refused.len()).await;
    assert_eq!(dead.len(), refused.len());
    assert_eq!(env.mock.stats().total().requests, 0, "no call was made");
    env.finish().await;
}

#[actix::test]
async fn a_model_that_reads_no_images_answers_with_the_providers_reason() {
    let mut env = TestEnv::start(pools()).await;
    env.publish(
        "o",
        &json!({"id": "old", "model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is it?"},
            {"type": "image", "url": "https://example.com/cat.png"},
        ]}]}),
    )
    .await;
    let (r, _) = env.next_reply().await;
    let error = r.error.unwrap();
    assert_eq!(error.kind, ErrorKind::BadRequest, "{}", error.message);
    assert!(
        error
            .message
            .contains("image_url is only supported by certain models"),
        "{}",
        error.message
    );
    env.finish().await;
}

/// A schema as pydantic writes it (a described `$ref` in a one-entry
/// `allOf`, an optional nested object, `definitions`, a `oneOf`, an unknown
/// `format`) passes OpenAI's strict-mode checks and Gemini's once fitted.
#[actix::test]
async fn generated_schemas_pass_each_providers_rules() {
    let mut env = TestEnv::start(pools()).await;
    let schema = json!({
        "title": "Order",
        "type": "object",
        "properties": {
            "customer": {"allOf": [{"$ref": "#/definitions/Customer"}], "description": "Who ordered"},
            "shipping": {"anyOf": [{"$ref": "#/definitions/Address"}, {"type": "null"}], "default": null},
            "note": {"type": ["object", "null"], "properties": {"text": {"type": "string", "maxLength": 80}}},
            "status": {"oneOf": [{"const": "open"}, {"const": "closed"}]},
            "site": {"type": "string", "format": "uri"},
        },
        "required": ["customer", "status"],
        "definitions": {
            "Customer": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
            "Address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    });
    for p in ["g", "o", "a"] {
        env.publish(
            p,
            &json!({"id": format!("{p}-order"), "prompt": format!("order {p}"), "response_format": {"type": "json_schema", "name": "order", "schema": schema}}),
        )
        .await;
    }
    let replies = env.replies(3).await;
    for p in ["g", "o", "a"] {
        let r = &replies[&format!("{p}-order")];
        assert_eq!(r.status, JobStatus::Succeeded, "{p}: {r:?}");
        assert_eq!(r.json.as_ref().unwrap()["status"], "open", "{p}");
    }
    env.finish().await;
}

/// A 3 MiB inline image travels the whole way when `jobs.max_body_bytes`
/// allows it, and a body over the limit is refused naming it.
#[actix::test]
async fn a_large_inline_image_goes_through_within_the_configured_limit() {
    let mut env = TestEnv::start_with(
        pools(),
        MockSettings::default(),
        "max_body_bytes = 8388608\n",
    )
    .await;
    use base64::Engine as _;
    let mut png = base64::engine::general_purpose::STANDARD
        .decode(PNG)
        .unwrap();
    png.resize(3 << 20, 0); // trailing bytes after IEND: still a PNG header
    let data = base64::engine::general_purpose::STANDARD.encode(&png);
    let job = |id: &str, data: &str| {
        json!({"id": id, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is it?"},
            {"type": "image", "data": data, "media_type": "image/png"},
        ]}]})
    };
    env.publish("a", &job("big", &data)).await;
    let too_big = data.repeat(3);
    env.publish("a", &job("too-big", &too_big)).await;
    let replies = env.replies(2).await;
    assert_eq!(
        replies["big"].status,
        JobStatus::Succeeded,
        "{:?}",
        replies["big"].error
    );
    // Over the limit, the body is not read: its reply has a generated id.
    let refused = replies.values().find(|r| r.id != "big").unwrap();
    let error = refused.error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidJob);
    assert!(
        error.message.contains("over the limit of 8388608"),
        "{}",
        error.message
    );
    env.finish().await;
}
