//! `keyrelay status [--watch]`: pools, keys and alerts as tables, from the admin API.

use std::time::Duration;

use serde_json::Value;

use super::admin_client::{AdminArgs, AdminClient};
use super::table;

pub async fn run(args: &AdminArgs, watch: bool, interval: Duration) -> anyhow::Result<()> {
    let client = AdminClient::new(args)?;
    loop {
        let text = snapshot(&client).await?;
        if watch {
            // Clear the screen and home the cursor, then redraw.
            print!("\x1b[2J\x1b[H{text}");
        } else {
            print!("{text}");
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn snapshot(client: &AdminClient) -> anyhow::Result<String> {
    let pools = client.get("/v1/pools").await?;
    let keys = client.get("/v1/keys").await?;
    let alerts = client.get("/v1/alerts").await?;
    let fleet = client.get("/v1/fleet").await?;
    Ok(render(&pools, &keys, &alerts, &fleet))
}

/// When a pool's backlog is done and what limits it, or `-`.
fn drained_by(drain: &Value) -> String {
    match (drain["seconds"].as_f64(), drain["limited_by"].as_str()) {
        (Some(0.0), _) => "empty".to_owned(),
        (Some(s), Some(why)) => format!("in {} ({why})", human(s.round() as i64)),
        _ => "-".to_owned(),
    }
}

/// The whole status text (pure, for tests).
pub fn render(pools: &Value, keys: &Value, alerts: &Value, fleet: &Value) -> String {
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let pool_rows: Vec<Vec<String>> = list(&pools["pools"])
        .map(|p| {
            vec![
                text(&p["name"]),
                text(&p["provider"]),
                text(&p["ready"]),
                text(&p["consumers"]),
                text(&p["in_flight"]),
                format!("{}/{}", text(&p["keys_usable"]), text(&p["keys_total"])),
                text(&p["jobs_last_minute"]),
                p["rate_per_s"]
                    .as_f64()
                    .map_or("-".to_owned(), |r| format!("{r:.2}/s")),
                drained_by(&p["drain"]),
            ]
        })
        .collect();
    let key_rows: Vec<Vec<String>> = list(&keys["keys"])
        .map(|k| {
            let detail = match (k["seconds_until"].as_i64(), k["reason"].as_str()) {
                (Some(s), _) => format!("{} left", human(s)),
                (None, Some(reason)) => reason.chars().take(40).collect(),
                _ => String::new(),
            };
            let rate = k["success_rate"]
                .as_f64()
                .map(|r| format!("{:.0}%", r * 100.0))
                .unwrap_or_else(|| "-".into());
            vec![
                text(&k["pool"]),
                text(&k["name"]),
                text(&k["fingerprint"]),
                text(&k["state"]),
                detail,
                format!("{}/{}", text(&k["in_flight"]), text(&k["concurrency"])),
                text(&k["counters"]["completed"]),
                rate,
                text(&k["driven_by"]),
            ]
        })
        .collect();
    let mut out = table::render(
        &[
            "POOL",
            "PROVIDER",
            "READY",
            "CONSUMERS",
            "IN-FLIGHT",
            "USABLE",
            "JOBS/MIN",
            "RATE",
            "DRAINED",
        ],
        &pool_rows,
    );
    out.push_str(&format!(
        "dead letters: {}\n\n",
        text(&pools["dead_letters"]["ready"])
    ));
    out.push_str(&table::render(
        &[
            "POOL",
            "KEY",
            "FINGERPRINT",
            "STATE",
            "UNTIL/REASON",
            "IN-FLIGHT",
            "COMPLETED",
            "SUCCESS",
            "DRIVEN BY",
        ],
        &key_rows,
    ));
    out.push_str(&fleet_line(fleet));
    let alert_lines: Vec<String> = list(&alerts["alerts"])
        .map(|a| {
            format!(
                "  [{}] {}: {}",
                text(&a["severity"]),
                text(&a["name"]),
                text(&a["message"])
            )
        })
        .collect();
    if alert_lines.is_empty() {
        out.push_str("\nalerts: none\n");
    } else {
        out.push_str(&format!("\nalerts:\n{}\n", alert_lines.join("\n")));
    }
    out
}

/// `fleet: a (this one, 2 keys), b (2 keys, seen 120 ms ago)`.
fn fleet_line(fleet: &Value) -> String {
    let me = fleet["me"].as_str().unwrap_or("?");
    let mine = fleet["owners"]
        .as_object()
        .map_or(0, |o| o.values().filter(|v| v["kind"] == "me").count());
    let mut members = vec![format!("{me} (this one, {mine} keys)")];
    for m in list(&fleet["members"]) {
        members.push(format!(
            "{} ({} keys, {}, seen {} ms ago)",
            m["instance"].as_str().unwrap_or("?"),
            list(&m["keys"]).count(),
            m["http"].as_str().unwrap_or("?"),
            m["last_seen_ms"]
        ));
    }
    format!("\nfleet: {}\n", members.join(", "))
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn human(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn renders_pools_keys_and_alerts() {
        let pools = json!({"pools": [{"name": "g", "provider": "gemini", "ready": 3, "consumers": 1,
            "in_flight": 0, "keys_usable": 1, "keys_total": 2, "jobs_last_minute": 7,
            "rate_per_s": 2.5, "drain": {"seconds": 100.0, "at": "2026-12-07T00:00:00Z", "limited_by": "rpm of 2 keys"}}],
            "dead_letters": {"ready": 0}});
        let keys = json!({"keys": [{"pool": "g", "name": "k1", "fingerprint": "abcd1234",
            "state": "cooling_down", "seconds_until": 90, "reason": "429", "in_flight": 0,
            "concurrency": 4, "counters": {"completed": 5}, "success_rate": 1.0}]});
        let alerts = json!({"alerts": [{"severity": "warning", "name": "KeyrelayPoolDegraded", "message": "m"}]});
        let fleet = json!({"me": "a", "owners": {"g/k1": {"kind": "me"}},
            "members": [{"instance": "b", "http": "127.0.0.1:9465", "keys": ["g/k2"], "last_seen_ms": 120}]});
        let out = super::render(&pools, &keys, &alerts, &fleet);
        assert!(
            out.contains(
                "fleet: a (this one, 1 keys), b (1 keys, 127.0.0.1:9465, seen 120 ms ago)"
            ),
            "{out}"
        );
        assert!(out.contains("cooling_down"), "{out}");
        assert!(out.contains("90s left"));
        assert!(out.contains("1/2"));
        assert!(
            out.contains("2.50/s") && out.contains("in 100s (rpm of 2 keys)"),
            "{out}"
        );
        assert!(out.contains("KeyrelayPoolDegraded"));
    }
}
