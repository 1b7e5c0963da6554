use super::*;
use crate::provider::ProviderKind;
use serde_json::json;

fn templates() -> BTreeMap<String, TemplateConfig> {
    let mut t = BTreeMap::new();
    t.insert(
        "fitness".to_string(),
        TemplateConfig {
            system: Some("You are a coach.".into()),
            text: "Analyse {{input}} and answer as JSON".into(),
            response_format: Some(FormatSpec::Json),
            schema: None,
            schema_file: None,
            schema_name: None,
            compiled: Some(ResponseFormat::Json),
        },
    );
    t
}

fn run(body: &[u8], props: JobProperties) -> Result<Job, InvalidJob> {
    let templates = templates();
    let models = vec!["m1".to_string(), "m2".to_string()];
    let ctx = DecodeContext {
        pool: "p",
        default_model: "m1",
        models: Some(&models),
        templates: &templates,
        max_body_bytes: 1024,
        results_queue: "results",
        cache_by_default: true,
        provider: None,
    };
    decode(body, &props, &ctx, || "generated".into())
}

fn reason(body: &[u8]) -> String {
    run(body, JobProperties::default()).unwrap_err().reason
}

#[test]
fn invalid_jobs_name_their_problem() {
    let deep = "[".repeat(200) + &"]".repeat(200);
    let long_id = format!("{{\"prompt\": \"a\", \"id\": \"{}\"}}", "x".repeat(256));
    let big = format!("{{\"prompt\": \"{}\"}}", "x".repeat(2000));
    let cases: &[(&[u8], &str)] = &[
        (b"not json", "not a valid job"),
        (b"\xff\xfe{}", "not a valid job"),
        (b"{\"prompt\": 5}", "invalid type"),
        (b"{}", "exactly one of"),
        (b"{\"prompt\": \"a\", \"messages\": []}", "exactly one of"),
        (b"{\"prompt\": \"  \"}", "`prompt` is empty"),
        (
            b"{\"prompt\": \"a\", \"input\": {}}",
            "only allowed with `template`",
        ),
        (
            b"{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}",
            "at least one user",
        ),
        (
            b"{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}",
            "unknown variant",
        ),
        (
            b"{\"template\": \"nope\", \"input\": {}}",
            "unknown template `nope`",
        ),
        (b"{\"template\": \"fitness\"}", "needs `input`"),
        (
            b"{\"prompt\": \"a\", \"model\": \"gpt-9\"}",
            "unknown model `gpt-9`",
        ),
        (b"{\"prompt\": \"a\", \"temperature\": 3.5}", "temperature"),
        (
            b"{\"prompt\": \"a\", \"max_output_tokens\": 0}",
            "max_output_tokens",
        ),
        (
            b"{\"prompt\": \"a\", \"colour\": \"red\"}",
            "unknown field `colour`",
        ),
        (b"{\"prompt\": \"a\", \"id\": \"\"}", "`id` must be"),
        (long_id.as_bytes(), "1-255 bytes"),
        (
            b"{\"prompt\": \"a\", \"response_format\": \"xml\"}",
            "unknown response_format `xml`",
        ),
        (deep.as_bytes(), "not a valid job"),
        (big.as_bytes(), "over the limit of 1024"),
    ];
    for (body, expected) in cases {
        let got = reason(body);
        assert!(
            got.contains(expected),
            "body {:?}: expected {expected:?} in {got:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn wrong_content_type_is_invalid() {
    let props = JobProperties {
        content_type: Some("application/xml".into()),
        ..Default::default()
    };
    let err = run(b"{\"prompt\": \"a\"}", props).unwrap_err();
    assert!(err.reason.contains("application/xml"));
}

#[test]
fn invalid_job_keeps_reply_address_and_best_id() {
    let props = JobProperties {
        message_id: Some("amqp-id".into()),
        reply_to: Some("my.replies".into()),
        correlation_id: Some("corr-1".into()),
        content_type: None,
        batch_total: None,
    };
    let err = run(b"garbage", props.clone()).unwrap_err();
    assert_eq!(err.id, "amqp-id");
    assert_eq!(err.reply.queue, "my.replies");
    assert_eq!(err.reply.correlation_id, "corr-1");

    let err = run(
        b"{\"id\": \"body-id\", \"prompt\": 1}",
        JobProperties::default(),
    );
    // A body that is JSON but breaks the contract still names the job: the
    // reply carries its id (it is not stored under it).
    assert_eq!(err.unwrap_err().id, "body-id");
    let err = run(b"{\"id\": \"\", \"prompt\": 1}", JobProperties::default());
    assert_eq!(
        err.unwrap_err().id,
        "generated",
        "an invalid id is not used"
    );
}

#[test]
fn id_falls_back_to_message_id_then_generated() {
    let props = JobProperties {
        message_id: Some("amqp-id".into()),
        ..Default::default()
    };
    assert_eq!(run(b"{\"prompt\": \"a\"}", props).unwrap().id, "amqp-id");
    let job = run(b"{\"prompt\": \"a\"}", JobProperties::default()).unwrap();
    assert_eq!(job.id, "generated");
    assert_eq!(job.reply.queue, "results");
    assert_eq!(job.reply.correlation_id, "generated");
}

#[test]
fn prompt_job_uses_pool_defaults() {
    let body = json!({"id": "j1", "prompt": "hello", "user": "u-1", "metadata": {"k": 1}});
    let job = run(body.to_string().as_bytes(), JobProperties::default()).unwrap();
    assert_eq!(job.id, "j1");
    assert_eq!(job.request.model, "m1");
    assert_eq!(job.request.messages, vec![user_message("hello".into())]);
    assert_eq!(job.request.output, crate::provider::OutputFormat::Text);
    assert_eq!(job.user.as_deref(), Some("u-1"));
    assert_eq!(job.metadata, json!({"k": 1}));
}

#[test]
fn template_job_renders_and_inherits_json_format() {
    let body = json!({"template": "fitness", "input": {"steps": 3}, "model": "m2"});
    let job = run(body.to_string().as_bytes(), JobProperties::default()).unwrap();
    assert_eq!(job.request.model, "m2");
    assert_eq!(job.request.messages.len(), 2);
    assert_eq!(job.request.messages[0].role, Role::System);
    assert!(
        job.request.messages[1]
            .content
            .text()
            .contains("\"steps\": 3")
    );
    assert_eq!(job.request.output, crate::provider::OutputFormat::Json);
    assert!(matches!(job.response_format, ResponseFormat::Json));
}

proptest::proptest! {
    #[test]
    fn decode_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = run(&body, JobProperties::default());
    }

    #[test]
    fn decode_never_panics_on_json_like_text(body in "\\{(\"[a-z_]{1,16}\": ?(\"[^\"]{0,8}\"|[0-9]{1,3}|null|\\[\\]|\\{\\}), ?){0,6}\\}") {
        let _ = run(body.as_bytes(), JobProperties::default());
    }
}

#[test]
fn batch_and_priority_are_read_and_checked() {
    let job = run(
        br#"{"prompt": "p", "batch": "nightly-2026-12-06", "priority": "high"}"#,
        JobProperties::default(),
    )
    .unwrap();
    assert_eq!(job.batch.as_deref(), Some("nightly-2026-12-06"));
    assert_eq!(job.priority, crate::job::Priority::High);
    let bad = run(
        br#"{"prompt": "p", "batch": "no spaces"}"#,
        JobProperties::default(),
    )
    .unwrap_err();
    assert!(bad.reason.contains("`batch`"), "{}", bad.reason);
    let bad = run(
        br#"{"prompt": "p", "priority": "urgent"}"#,
        JobProperties::default(),
    )
    .unwrap_err();
    assert!(
        bad.reason.contains("expected `normal` or `high`"),
        "{}",
        bad.reason
    );
}

fn run_on(body: serde_json::Value, provider: ProviderKind) -> Result<Job, InvalidJob> {
    let templates = templates();
    let ctx = DecodeContext {
        pool: "p",
        default_model: "m1",
        models: None,
        templates: &templates,
        max_body_bytes: 1 << 20,
        results_queue: "results",
        cache_by_default: true,
        provider: Some(provider),
    };
    decode(
        body.to_string().as_bytes(),
        &JobProperties::default(),
        &ctx,
        || "generated".into(),
    )
}

const PERSON: &str =
    r#"{"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}"#;

#[test]
fn schema_jobs_ask_each_provider_for_it() {
    let schema: serde_json::Value = serde_json::from_str(PERSON).unwrap();
    let body = json!({"prompt": "who?", "response_format": {"type": "json_schema", "name": "person", "schema": schema}});
    for provider in [
        ProviderKind::Openai,
        ProviderKind::Gemini,
        ProviderKind::Anthropic,
    ] {
        let job = run_on(body.clone(), provider).unwrap();
        let crate::provider::OutputFormat::Schema(s) = &job.request.output else {
            panic!("{provider:?}")
        };
        assert_eq!(s.name, "person");
        assert!(matches!(job.response_format, ResponseFormat::JsonSchema(_)));
    }
}

#[test]
fn what_a_provider_cannot_take_is_refused_by_name() {
    let pattern_props = json!({"prompt": "x", "response_format": {"type": "json_schema", "schema": {"type": "object", "patternProperties": {"^a": {}}}}});
    let array_root = json!({"prompt": "x", "response_format": {"type": "json_schema", "schema": {"type": "array"}}});
    let pdf_url = json!({"messages": [{"role": "user", "content": [{"type": "document", "url": "https://example.com/a.pdf"}]}]});
    let gif = json!({"messages": [{"role": "user", "content": [{"type": "image", "data": "R0lGODlh", "media_type": "image/gif"}]}]});
    let bmp = json!({"messages": [{"role": "user", "content": [{"type": "image", "data": "Qk0=", "media_type": "image/bmp"}]}]});
    let cases = [
        (&pattern_props, ProviderKind::Openai, "`patternProperties`"),
        (&pattern_props, ProviderKind::Gemini, "`patternProperties`"),
        (&array_root, ProviderKind::Openai, "root"),
        (&array_root, ProviderKind::Anthropic, "root"),
        (&pdf_url, ProviderKind::Openai, "not a `url`"),
        (&gif, ProviderKind::Gemini, "`image/gif`"),
        (&bmp, ProviderKind::Anthropic, "`image/bmp`"),
        (&bmp, ProviderKind::Openai, "`image/bmp`"),
    ];
    for (body, provider, wanted) in cases {
        let err = run_on(body.clone(), provider).unwrap_err();
        assert!(
            err.reason.contains(wanted),
            "{provider:?} {body}: {}",
            err.reason
        );
    }
    // What one provider refuses, another takes.
    assert!(run_on(array_root.clone(), ProviderKind::Gemini).is_ok());
    assert!(run_on(pdf_url.clone(), ProviderKind::Anthropic).is_ok());
    assert!(run_on(gif.clone(), ProviderKind::Openai).is_ok());
}

#[test]
fn media_only_in_user_messages() {
    let body = json!({"messages": [
        {"role": "system", "content": [{"type": "image", "url": "https://example.com/a.png"}]},
        {"role": "user", "content": "hi"},
    ]});
    let err = run_on(body, ProviderKind::Anthropic).unwrap_err();
    assert!(
        err.reason.contains("`user` messages only"),
        "{}",
        err.reason
    );
    let empty = json!({"messages": [{"role": "user", "content": []}]});
    let err = run_on(empty, ProviderKind::Anthropic).unwrap_err();
    assert!(err.reason.contains("no content"), "{}", err.reason);
}

#[test]
fn the_cache_key_sees_parts_and_schemas() {
    let text = json!({"messages": [{"role": "user", "content": "a"}]});
    let parts = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "url": "https://example.com/a.png"}]}]});
    let other = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "url": "https://example.com/b.png"}]}]});
    let mut schema = text.clone();
    schema["response_format"] = json!({"type": "json_schema", "schema": {"type": "object"}});
    let mut schema2 = text.clone();
    schema2["response_format"] =
        json!({"type": "json_schema", "schema": {"type": "object", "required": ["x"]}});
    let keys: std::collections::HashSet<_> = [text, parts, other, schema, schema2]
        .into_iter()
        .map(|b| run_on(b, ProviderKind::Anthropic).unwrap().cache_key())
        .collect();
    assert_eq!(keys.len(), 5);
}

#[test]
fn a_body_that_breaks_the_contract_keeps_its_id_in_the_reply() {
    let body =
        json!({"id": "mine", "messages": [{"role": "user", "content": [{"type": "video"}]}]});
    let err = run(body.to_string().as_bytes(), JobProperties::default()).unwrap_err();
    assert_eq!(err.id, "mine");
    assert!(
        err.reason.contains("unknown part type `video`"),
        "{}",
        err.reason
    );
}
