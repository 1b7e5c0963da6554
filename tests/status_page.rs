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
    render(chromium, url, budget_ms, (1280, 900), "--dump-dom").await
}

/// Run Chromium on `url` in a window of `size` with `output` (`--dump-dom`,
/// or `--screenshot=FILE`); its standard output.
async fn render(
    chromium: &PathBuf,
    url: &str,
    budget_ms: u32,
    size: (u32, u32),
    output: &str,
) -> String {
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
            &format!("--window-size={},{}", size.0, size.1),
            "--hide-scrollbars",
            output,
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
    // A provider's long message must not push the table off the page.
    let long = format!(
        "revoked in console {}",
        "because the provider said so ".repeat(6)
    );
    let disabled = post(
        "/v1/keys/g/bravo/disable",
        serde_json::json!({ "reason": long }),
    )
    .await
    .unwrap();
    assert!(disabled.status().is_success(), "{:?}", disabled.status());
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
    // Last hour's outcomes, and key actions by the state of each key.
    assert!(dom.contains("id=\"outcomes\""), "{dom}");
    assert!(dom.contains("No job in the last hour"), "{dom}");
    let alpha = row_of(&dom, "data-key=\"g/alpha\"");
    assert!(
        alpha.contains("data-action=\"disable\"") && alpha.contains("data-action=\"probe\""),
        "{alpha}"
    );
    let bravo = row_of(&dom, "data-key=\"g/bravo\"");
    assert!(
        bravo.contains("data-action=\"enable\"") && !bravo.contains("data-action=\"disable\""),
        "{bravo}"
    );
    // The server keeps the throughput history: the sparkline has its points.
    assert!(dom.contains("data-points="), "{dom}");
    // The token never lands in the page itself.
    assert!(!dom.contains(READ_TOKEN));

    // The page fits a laptop and a phone: its own width never scrolls
    // sideways, whatever the long texts (tables scroll in their boxes).
    for (width, height, name) in [
        (1280, 900, "status-1280.png"),
        (390, 844, "status-phone.png"),
    ] {
        let dom = render(&chromium, &url, 5000, (width, height), "--dump-dom").await;
        assert!(
            dom.contains("data-fits=\"true\""),
            "{width} px: the page is wider than its window"
        );
        if let Some(dir) = std::env::var_os("KEYRELAY_SCREENSHOTS") {
            let file = PathBuf::from(dir).join(name);
            render(
                &chromium,
                &url,
                5000,
                (width, height),
                &format!("--screenshot={}", file.display()),
            )
            .await;
            assert!(file.is_file(), "{} written", file.display());
        }
    }
    env.finish().await;
}

/// The `<tr ...>...</tr>` holding `marker`.
fn row_of<'a>(dom: &'a str, marker: &str) -> &'a str {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in the page"));
    let start = dom[..at].rfind("<tr").unwrap();
    let end = at + dom[at..].find("</tr>").unwrap();
    &dom[start..end]
}
