//! The status page (`GET /`) in a real headless Chromium against a running
//! keyrelay: it must show the pools, the keys with their states, the cooldown
//! and the alerts. Skips, saying why on the terminal, when no Chromium can be
//! found (`scripts/ensure-chromium.sh` installs Debian's `chromium`).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{ADMIN_TOKEN, READ_TOKEN, TestEnv, TestKey, TestPool};

/// Say something on the real terminal, past the test harness's capture.
fn announce(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Load `url` and return the DOM once scripts had `budget_ms` of virtual time.
async fn dump_dom(chromium: &PathBuf, url: &str, budget_ms: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--virtual-time-budget={budget_ms}"),
            "--dump-dom",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("chromium finishes within 90 s")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[actix::test]
async fn status_page_shows_pools_keys_states_and_alerts() {
    let Some(chromium) = find_chromium() else {
        announce(
            "SKIPPED status_page_shows_pools_keys_states_and_alerts: no Chromium found \
             (install Debian's `chromium`, e.g. scripts/ensure-chromium.sh, or set CHROMIUM=/path)",
        );
        return;
    };
    let env = TestEnv::start_admin(vec![TestPool {
        name: "g",
        provider: "gemini",
        keys: vec![
            TestKey::new("alpha", 1),
            TestKey::new("bravo", 2),
            TestKey::new("charlie", 3),
        ],
    }])
    .await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{}{path}", env.http_url()))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    post(
        "/v1/keys/g/bravo/disable",
        serde_json::json!({"reason": "revoked in console"}),
    )
    .await
    .unwrap();
    post("/v1/keys/g/charlie/disable", serde_json::json!({}))
        .await
        .unwrap();
    let budget = client
        .put(format!("{}/v1/budgets", env.http_url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"scope": "pool", "name": "g", "usd_per_day": 25.0}))
        .send()
        .await
        .unwrap();
    assert!(budget.status().is_success());

    // Without a token the page asks for one and shows no data.
    let dom = dump_dom(&chromium, &format!("{}/", env.http_url()), 3000).await;
    assert!(dom.contains("id=\"login\""), "{dom}");
    assert!(!dom.contains("data-key=\"g/alpha\""), "{dom}");

    // With ?token= it shows every key and its state, and the pool alert.
    let url = format!("{}/?token={READ_TOKEN}", env.http_url());
    let dom = dump_dom(&chromium, &url, 5000).await;
    for (key, state) in [
        ("alpha", "active"),
        ("bravo", "disabled"),
        ("charlie", "disabled"),
    ] {
        let row = format!("data-key=\"g/{key}\" data-state=\"{state}\"");
        assert!(dom.contains(&row), "missing {row} in:\n{dom}");
    }
    assert!(dom.contains("revoked in console"), "{dom}");
    assert!(dom.contains("data-pool=\"g\""), "{dom}");
    assert!(dom.contains("data-alert=\"KeyrelayPoolDegraded\""), "{dom}");
    // The spend table shows the pool's budget, nothing of it spent.
    assert!(dom.contains("data-spend=\"g\""), "{dom}");
    assert!(dom.contains("data-share=\"0.000\""), "{dom}");
    assert!(dom.contains("$0.00 / $25.00"), "{dom}");
    assert!(dom.contains("No batch running"), "{dom}");
    assert!(dom.contains("updated "), "{dom}");
    // The token never lands in the page itself.
    assert!(!dom.contains(READ_TOKEN));
    env.finish().await;
}
