//! Every series the Grafana dashboard and the Prometheus rules name exists on
//! a freshly started keyrelay's `/metrics`, before any event: a panel or an
//! alert on a series that appears only after its first event shows "no
//! data" (or never fires) until then.

mod common;

use std::collections::BTreeSet;

use common::{TestEnv, TestKey, TestPool};

const DASHBOARD: &str = include_str!("../docker/grafana/dashboards/keyrelay.json");
const RULES: &str = include_str!("../docker/prometheus/alerts.yml");

/// `keyrelay_*` metric names in `text`, without histogram suffixes.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("keyrelay_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        out.insert(base);
    }
    out
}

#[actix::test]
async fn every_series_the_dashboard_and_rules_use_exists_from_the_start() {
    let env = TestEnv::start(vec![TestPool {
        name: "g",
        provider: "gemini",
        keys: vec![TestKey::new("k1", 1), TestKey::new("k2", 2)],
    }])
    .await;
    let page = common::scrape(env.app().http_addr()).await;
    let exported = names(
        &page
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let wanted: BTreeSet<String> = names(DASHBOARD).union(&names(RULES)).cloned().collect();
    // Series that exist only where they mean something, and say so by being
    // absent: a key's quota ratio with a declared limit, a budget's ratio with
    // a budget, unpriced calls per model with such a model, and the store's
    // flush histogram (a histogram has no sample to show before its first).
    let only_when_meaningful = [
        "keyrelay_key_quota_used_ratio",
        "keyrelay_budget_used_ratio",
        "keyrelay_cost_unpriced_calls_total",
        "keyrelay_store_flush_batch_size",
    ];
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !exported.contains(*n) && !only_when_meaningful.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "named in the dashboard or the rules but not exported before any event: {missing:?}"
    );
    env.finish().await;
}
