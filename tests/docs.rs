//! The operations docs keep up with the code: every metric in
//! `docs/operations.md`, every admin route in `docs/openapi.yaml`, every
//! `[admin]` field in `docs/configuration.md` and the example config.

const METRICS_RS: &str = include_str!("../src/metrics.rs");
const OPERATIONS: &str = include_str!("../docs/operations.md");
const OPENAPI: &str = include_str!("../docs/openapi.yaml");
const CONFIGURATION: &str = include_str!("../docs/configuration.md");
const EXAMPLE: &str = include_str!("../config/keyrelay.example.toml");
const ALERTS_RS: &str = include_str!("../src/admin/alerts.rs");
const ALERT_RULES: &str = include_str!("../docker/prometheus/alerts.yml");

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
