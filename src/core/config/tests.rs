use std::time::Duration;

use super::*;
use crate::provider::client::{HttpTimeouts, HttpVersion};

const BASE: &str = r#"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"

[[pools]]
name = "gemini"
provider = "gemini"
base_url = "https://generativelanguage.googleapis.com"
default_model = "gemini-2.0-flash"

  [[pools.keys]]
  name = "primary"
  api_key_env = "KR_TEST_KEY_PRIMARY"
"#;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, env(vars))
}

fn key_file(content: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, content).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

#[test]
fn minimal_config_gets_defaults() {
    let (_dir, path) = key_file("AIza-test-value\n");
    let text = BASE.replace(
        "api_key_env = \"KR_TEST_KEY_PRIMARY\"",
        &format!("api_key_file = \"{path}\""),
    );
    let config = load(&text, &[]).unwrap();
    assert_eq!(config.job_queue("gemini"), "keyrelay.jobs.gemini");
    assert_eq!(config.jobs.results_queue, "keyrelay.results");
    assert_eq!(config.pools[0].keys[0].concurrency, 4);
    assert_eq!(config.pools[0].keys[0].secret.expose(), "AIza-test-value");
    assert_eq!(config.pools[0].reset_timezone(), "America/Los_Angeles");
    assert_eq!(config.broker.queue_type, QueueType::Quorum);
}

#[test]
fn a_pool_opens_a_connection_per_http2_max_streams_calls() {
    let (_dir, path) = key_file("k");
    let key = |name: &str, concurrency: u16| {
        format!(
            "\n  [[pools.keys]]\n  name = \"{name}\"\n  api_key_file = \"{path}\"\n  concurrency = {concurrency}\n"
        )
    };
    let timeouts = HttpTimeouts {
        connect: Duration::from_secs(1),
        total: Duration::from_secs(1),
    };
    // Default concurrency 4 + 150 + 50 = 204 calls at once.
    let text = format!(
        "{}{}{}",
        BASE.replace(
            "api_key_env = \"KR_TEST_KEY_PRIMARY\"",
            &format!("api_key_file = \"{path}\"")
        ),
        key("big", 150),
        key("mid", 50)
    );
    for (extra, lanes) in [
        ("", 3),
        ("http2_max_streams = 256\n", 1),
        ("http2_max_streams = 1\n", 204),
    ] {
        let text = text.replace("default_model = ", &format!("{extra}default_model = "));
        let config = load(&text, &[]).unwrap();
        let settings = config.pools[0].http_settings(timeouts);
        assert_eq!(settings.lanes, lanes, "{extra:?}");
        assert_eq!(settings.version, HttpVersion::Negotiated);
    }
    // Plain http:// speaks HTTP/1.1 unless told otherwise: one client does.
    let plain = text.replace(
        "https://generativelanguage.googleapis.com",
        "http://127.0.0.1:8080",
    );
    for (extra, lanes) in [("", 1), ("http2_prior_knowledge = true\n", 3)] {
        let text = plain.replace("default_model = ", &format!("{extra}default_model = "));
        let config = load(&text, &[]).unwrap();
        assert_eq!(config.pools[0].http_lanes(), lanes, "{extra:?}");
    }
    for url in [" HTTP://127.0.0.1:8080", "Http://mock:8080/v1"] {
        let text = text.replace("https://generativelanguage.googleapis.com", url);
        assert_eq!(load(&text, &[]).unwrap().pools[0].http_lanes(), 1, "{url}");
    }
}

#[test]
fn config_errors_name_the_field() {
    let (_dir, path) = key_file("k");
    let with_file = BASE.replace(
        "api_key_env = \"KR_TEST_KEY_PRIMARY\"",
        &format!("api_key_file = \"{path}\""),
    );
    let cases: Vec<(String, &str)> = vec![
        (BASE.to_string(), "KR_TEST_KEY_PRIMARY is not set"),
        (
            with_file.replace("default_model", "colour = \"red\"\ndefault_model"),
            "unknown field `colour`",
        ),
        (
            with_file.replace("amqp://guest", "http://guest"),
            "broker.url",
        ),
        (
            with_file.replace("https://generativelanguage.googleapis.com", "not a url"),
            "pools[0].base_url",
        ),
        (
            with_file.replace("provider = \"gemini\"", "provider = \"cohere\""),
            "pools[0].provider",
        ),
        (
            format!(
                "{with_file}\n  [[pools.keys]]\n  name = \"primary\"\n  api_key_file = \"{path}\"\n"
            ),
            "duplicate key name `primary`",
        ),
        (
            with_file.replace("name = \"primary\"", "name = \"has space\""),
            "pools[0].keys[0].name",
        ),
        (
            with_file.replace(&format!("api_key_file = \"{path}\""), ""),
            "exactly one of api_key_env or api_key_file",
        ),
        (
            with_file.replace(
                "name = \"primary\"",
                "name = \"primary\"\n  concurrency = 0",
            ),
            "concurrency",
        ),
        (
            with_file.replace("[broker]", "[broker]\nqueue_type = \"stream\""),
            "broker.queue_type",
        ),
        (
            format!("{with_file}\n[jobs]\nmax_attempts = \"three\"\n"),
            "jobs.max_attempts",
        ),
        (
            with_file.replace(
                "default_model = ",
                "http2_prior_knowledge = true\ndefault_model = ",
            ),
            "`pools[0].http2_prior_knowledge`: only for http:// base URLs",
        ),
        (
            with_file.replace(
                "default_model = ",
                "http2_max_streams = 0\ndefault_model = ",
            ),
            "`pools[0].http2_max_streams`: must be at least 1",
        ),
        (
            with_file
                .replace(
                    "name = \"primary\"",
                    "name = \"primary\"\n  concurrency = 600",
                )
                .replace(
                    "default_model = ",
                    "http2_max_streams = 2\ndefault_model = ",
                ),
            "600 calls at once would need 300 connections (at most 256 per pool)",
        ),
        ("[broker\n".to_string(), "not valid TOML"),
    ];
    for (text, expected) in cases {
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

#[test]
fn environment_overrides_file_values() {
    let config = load(
        BASE,
        &[
            ("KR_TEST_KEY_PRIMARY", "ignored-here"),
            (
                "KEYRELAY__BROKER__URL",
                "amqps://user:pw@broker.example:5671/vhost",
            ),
            ("KEYRELAY__POOLS__GEMINI__KEYS__PRIMARY__CONCURRENCY", "9"),
            ("KEYRELAY__JOBS__MAX_ATTEMPTS", "5"),
        ],
    );
    // The key itself comes from the process environment, which the test does not set.
    let err = config.unwrap_err().to_string();
    assert!(err.contains("KR_TEST_KEY_PRIMARY"), "{err}");

    let (_dir, path) = key_file("k");
    let text = BASE.replace(
        "api_key_env = \"KR_TEST_KEY_PRIMARY\"",
        &format!("api_key_file = \"{path}\""),
    );
    let config = load(
        &text,
        &[
            (
                "KEYRELAY__BROKER__URL",
                "amqps://user:pw@broker.example:5671/vhost",
            ),
            ("KEYRELAY__POOLS__GEMINI__KEYS__PRIMARY__CONCURRENCY", "9"),
            ("KEYRELAY__JOBS__MAX_ATTEMPTS", "5"),
        ],
    )
    .unwrap();
    assert_eq!(
        config.broker.url,
        "amqps://user:pw@broker.example:5671/vhost"
    );
    assert_eq!(config.pools[0].keys[0].concurrency, 9);
    assert_eq!(config.jobs.max_attempts, 5);
}

#[test]
fn example_config_documents_a_valid_config() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/keyrelay.example.toml"
    ))
    .unwrap();
    // Keys come from env vars in the example; point them all at one file instead.
    let (_dir, path) = key_file("k");
    let mut text = text;
    while let Some(start) = text.find("api_key_env = \"") {
        let end = start + text[start + 15..].find('"').unwrap() + 16;
        text.replace_range(start..end, &format!("api_key_file = \"{path}\""));
    }
    let config = load(&text, &[]).unwrap();
    assert!(!config.pools.is_empty());
}

#[test]
fn every_unset_key_variable_is_named_in_one_error() {
    let text = format!(
        "{BASE}\n  [[pools.keys]]\n  name = \"second\"\n  api_key_env = \"KR_TEST_KEY_SECOND_UNSET\"\n"
    );
    let e = load(&text, &[]).unwrap_err().to_string();
    assert!(
        e.contains("2 environment variables")
            && e.contains("KR_TEST_KEY_PRIMARY (pools[0].keys[0].api_key_env)")
            && e.contains("KR_TEST_KEY_SECOND_UNSET (pools[0].keys[1].api_key_env)"),
        "{e}"
    );
}

#[test]
fn template_schemas_are_read_and_compiled_at_load() {
    let (_key_dir, key_path) = key_file("k");
    let base = BASE.replace(
        "api_key_env = \"KR_TEST_KEY_PRIMARY\"",
        &format!("api_key_file = \"{key_path}\""),
    );
    let vars = [];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("person.json");
    std::fs::write(
        &file,
        r#"{"type": "object", "properties": {"name": {"type": "string"}}}"#,
    )
    .unwrap();
    let with = |lines: &str| format!("{base}\n[templates.t]\ntext = \"x\"\n{lines}\n");
    let config = load(
        &with(&format!(
            "schema_file = \"{}\"\nschema_name = \"person\"",
            file.display()
        )),
        &vars,
    )
    .unwrap();
    let Some(crate::job::ResponseFormat::JsonSchema(c)) = &config.templates["t"].compiled else {
        panic!("compiled schema")
    };
    assert_eq!(c.spec.name, "person");
    let cases = [
        (
            "schema_file = \"/no/such/schema.json\"",
            "cannot read `schema_file`",
        ),
        ("schema = { type = \"nope\" }", "not a valid JSON Schema"),
        (
            "schema = { type = \"object\" }\nresponse_format = \"text\"",
            "answers JSON",
        ),
        ("schema_name = \"x\"", "needs `schema`"),
    ];
    for (lines, wanted) in cases {
        let err = load(&with(lines), &vars).unwrap_err().to_string();
        assert!(
            err.contains("templates.t") && err.contains(wanted),
            "{lines}: {err}"
        );
    }
}

#[test]
fn results_and_dead_letter_queues_follow_the_prefix() {
    let (_dir, path) = key_file("k");
    let text = BASE
        .replace(
            "api_key_env = \"KR_TEST_KEY_PRIMARY\"",
            &format!("api_key_file = \"{path}\""),
        )
        .replace("[broker]\n", "[broker]\nqueue_prefix = \"team-a\"\n");
    let config = load(&text, &[]).unwrap();
    assert_eq!(config.jobs.results_queue, "team-a.results");
    assert_eq!(config.jobs.dead_letter_queue, "team-a.dead");
    let set = text.replace("[[pools]]", "[jobs]\nresults_queue = \"mine\"\n\n[[pools]]");
    assert_eq!(load(&set, &[]).unwrap().jobs.results_queue, "mine");
}
