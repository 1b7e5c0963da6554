//! The docs keep up with the code: every metric in `docs/operations.md`, every
//! admin route in `docs/openapi.yaml`, every config field in
//! `docs/configuration.md` and the example config, every error kind in
//! `docs/messages.md` and the result schema.

const METRICS_RS: &str = concat!(
    include_str!("../src/core/metrics.rs"),
    include_str!("../src/core/metrics/names.rs")
);
const OPERATIONS: &str = include_str!("../docs/operations.md");
const OPENAPI: &str = include_str!("../docs/openapi.yaml");
const CONFIGURATION: &str = include_str!("../docs/configuration.md");
const EXAMPLE: &str = include_str!("../config/keyrelay.example.toml");
const ALERTS_RS: &str = include_str!("../src/service/admin/alerts.rs");
const ALERT_RULES: &str = include_str!("../docker/prometheus/alerts.yml");
/// The config's structs, wherever in the config and job modules they live.
const CONFIG_RS: &str = concat!(
    include_str!("../src/core/config/schema.rs"),
    include_str!("../src/core/config/pool.rs"),
    include_str!("../src/core/job/template.rs")
);
const CONFIG_ADMIN_RS: &str = include_str!("../src/core/config/admin.rs");
const RESULT_RS: &str = include_str!("../src/core/job/result.rs");
const MESSAGES: &str = include_str!("../docs/messages.md");
const RESULT_SCHEMA: &str = include_str!("../docs/schema/result.schema.json");
const JOB_SCHEMA: &str = include_str!("../docs/schema/job.schema.json");
const ADMIN_ROUTES_RS: &str = include_str!("../src/service/admin/mod.rs");

/// The deserialized fields of `pub struct <name>` in `source`: every
/// `pub <field>:` line up to the struct's closing brace, except fields marked
/// `#[serde(skip...)]` (filled by validation, never read from the file).
fn struct_fields(source: &str, name: &str) -> Vec<String> {
    let header = format!("pub struct {name} {{");
    let start = source
        .find(&header)
        .unwrap_or_else(|| panic!("struct {name} not found"));
    let mut fields = Vec::new();
    let mut skipped = false;
    for line in source[start + header.len()..].lines() {
        let line = line.trim();
        if line == "}" {
            break;
        }
        if line.starts_with("#[serde(skip") {
            skipped = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("pub ")
            && let Some((field, _)) = rest.split_once(':')
        {
            if !skipped {
                fields.push(field.trim().to_owned());
            }
            skipped = false;
        }
    }
    assert!(!fields.is_empty(), "no fields parsed from {name}");
    fields
}

#[test]
fn every_metric_is_in_the_operations_catalogue() {
    let names: Vec<&str> = METRICS_RS
        .lines()
        .filter(|l| l.starts_with("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(names.len() > 20);
    for name in names {
        assert!(
            OPERATIONS.contains(&format!("`{name}`")),
            "{name} missing from docs/operations.md"
        );
    }
}

#[test]
fn every_admin_route_is_in_the_openapi_file() {
    for path in [
        "/healthz:",
        "/readyz:",
        "/metrics:",
        "  /:",
        "/v1/pools:",
        "/v1/keys:",
        "/v1/keys/{pool}/{name}/disable:",
        "/v1/keys/{pool}/{name}/enable:",
        "/v1/keys/{pool}/{name}/probe:",
        "/v1/keys/{pool}/{name}/reset:",
        "/v1/jobs:",
        "/v1/jobs/{id}:",
        "/v1/stats:",
        "/v1/alerts:",
    ] {
        assert!(
            OPENAPI.contains(path),
            "{path} missing from docs/openapi.yaml"
        );
    }
    // Every `/v1` route the admin API mounts (the key actions are listed one by one above).
    let mounted: Vec<&str> = ADMIN_ROUTES_RS
        .lines()
        .filter_map(|l| l.trim().strip_prefix(".route(\""))
        .filter_map(|l| l.split('"').next())
        .filter(|p| *p != "/" && !p.contains("{action}"))
        .collect();
    assert!(mounted.len() >= 10, "only {mounted:?} parsed");
    for path in mounted {
        let documented = format!("/v1{path}:");
        assert!(
            OPENAPI.contains(&documented),
            "{documented} missing from docs/openapi.yaml"
        );
    }
    assert!(OPENAPI.starts_with("openapi: 3.1"));
}

#[test]
fn admin_fields_are_documented() {
    for field in [
        "read_token_env",
        "read_token_file",
        "admin_token_env",
        "admin_token_file",
    ] {
        assert!(
            CONFIGURATION.contains(field),
            "{field} missing from docs/configuration.md"
        );
        assert!(
            EXAMPLE.contains(field),
            "{field} missing from the example config"
        );
        let var = format!("KEYRELAY__ADMIN__{}", field.to_uppercase());
        assert!(
            EXAMPLE.contains(&var),
            "{var} missing from the example config"
        );
    }
}

#[test]
fn api_alerts_have_prometheus_rules() {
    for name in ALERTS_RS
        .split('"')
        .filter(|s| s.starts_with("Keyrelay") && !s.contains(' '))
    {
        assert!(
            ALERT_RULES.contains(&format!("alert: {name}")),
            "{name} has no rule in alerts.yml"
        );
    }
}

#[test]
fn every_config_field_is_documented() {
    // Sections of the file: `[broker]`, `[[pools]]`, `[templates.NAME]`, ...
    for section in struct_fields(CONFIG_RS, "Config") {
        assert!(
            CONFIGURATION.contains(&format!("[{section}")),
            "section [{section}] missing from docs/configuration.md"
        );
        assert!(
            EXAMPLE.contains(&format!("[{section}")),
            "section [{section}] missing from the example config"
        );
    }
    let structs = [
        (CONFIG_RS, "BrokerConfig", Some("BROKER")),
        (CONFIG_RS, "StoreConfig", Some("STORE")),
        (CONFIG_RS, "MetricsConfig", Some("METRICS")),
        (CONFIG_RS, "InstanceConfig", Some("INSTANCE")),
        (CONFIG_RS, "SpendConfig", Some("SPEND")),
        (CONFIG_RS, "JobsConfig", Some("JOBS")),
        (CONFIG_RS, "TemplateConfig", None),
        (CONFIG_RS, "PoolConfig", None),
        (CONFIG_RS, "KeyConfig", None),
        (CONFIG_ADMIN_RS, "AdminConfig", Some("ADMIN")),
    ];
    let mut count = 0;
    for (source, name, section) in structs {
        for field in struct_fields(source, name) {
            count += 1;
            assert!(
                CONFIGURATION.contains(&format!("| `{field}` |")),
                "{name}.{field} missing from the tables of docs/configuration.md"
            );
            // A field holding an array of tables appears as `[[pools.keys]]`.
            assert!(
                EXAMPLE.contains(&format!("{field} =")) || EXAMPLE.contains(&format!(".{field}]]")),
                "{name}.{field} missing from the example config"
            );
            // Fixed sections: the example names each field's environment variable.
            if let Some(section) = section {
                let var = format!("KEYRELAY__{section}__{}", field.to_uppercase());
                assert!(
                    EXAMPLE.contains(&var),
                    "{var} missing from the example config"
                );
            }
        }
    }
    assert!(count > 35, "only {count} config fields parsed");
    // Struct fields the deserializer never reads must not be documented as fields.
    for hidden in ["secret", "read_token", "admin_token"] {
        assert!(
            !CONFIGURATION.contains(&format!("| `{hidden}` |")),
            "{hidden} is not a config field"
        );
    }
}

#[test]
fn every_error_kind_is_documented() {
    let kinds: Vec<&str> = RESULT_RS
        .lines()
        .filter(|l| l.trim_start().starts_with("ErrorKind::") && l.contains("=> \""))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(kinds.len() >= 6, "only {kinds:?} parsed");
    for kind in kinds {
        assert!(
            MESSAGES.contains(&format!("| `{kind}` |")),
            "{kind} missing from the error kinds table of docs/messages.md"
        );
        assert!(
            RESULT_SCHEMA.contains(&format!("\"{kind}\"")),
            "{kind} missing from docs/schema/result.schema.json"
        );
    }
}

/// Every job example in docs/messages.md is valid under docs/schema/job.schema.json,
/// and the schema refuses what the decoder refuses.
#[test]
fn the_job_schema_takes_the_documented_jobs() {
    let schema: serde_json::Value = serde_json::from_str(JOB_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("job.schema.json compiles");
    let mut jobs = 0;
    for block in MESSAGES.split("```json").skip(1) {
        let text = block.split("```").next().unwrap_or_default();
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            continue;
        };
        if value.get("prompt").is_none() && value.get("messages").is_none() {
            continue; // a result, not a job
        }
        let value = replace_placeholders(value);
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
        jobs += 1;
    }
    assert!(jobs >= 3, "only {jobs} job examples found");
    let refused = [
        serde_json::json!({"prompt": "x", "response_format": {"type": "json_schema"}}),
        serde_json::json!({"messages": [{"role": "user", "content": [{"type": "video", "url": "https://x"}]}]}),
        serde_json::json!({"messages": [{"role": "user", "content": [{"type": "image", "data": "AA=="}]}]}),
    ];
    for job in refused {
        assert!(!validator.is_valid(&job), "{job} should be refused");
    }
}

/// `"<base64>"` in the examples stands for bytes.
fn replace_placeholders(value: serde_json::Value) -> serde_json::Value {
    let text = value.to_string().replace("<base64>", "AAAA");
    serde_json::from_str(&text).unwrap()
}
