//! No API key leaks: the real binary runs with recognisable fake keys
//! (`AIzaLEAKCANARY…`, `sk-LEAKCANARY-…`) through successes, rate limits, daily
//! exhaustion, transient errors, invalid keys and a provider whose error bodies
//! echo the key; then every log line (JSON, `RUST_LOG=debug`), `/metrics`,
//! `/healthz`, `/readyz`, every reply, every dead letter and every byte of the
//! sled directory is searched for the keys.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{OutputLog, Relay, ReplyQueue, TestKey, TestPool};
use keyrelay::amqp::{Broker, PublishOutcome, Publisher};
use keyrelay_core::job::{ErrorKind, JobResult, JobStatus};
use keyrelay_mock::MockSettings;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn canary(prefix: &str) -> String {
    format!("{prefix}LEAKCANARY{}", uuid::Uuid::now_v7().simple())
}

fn key_with(name: &'static str, priority: u8, secret: String) -> TestKey {
    let mut key = TestKey::new(name, priority);
    key.mock.secret = secret;
    key
}

/// A provider that echoes the caller's key in every error body (OpenAI wire
/// format; the status comes from an `ECHO<status>` marker in the request).
/// Reports every request it receives.
async fn echo_provider() -> (String, tokio::sync::mpsc::UnboundedReceiver<u16>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Some((headers, body)) = read_request(&mut socket).await else {
                    return;
                };
                let key = headers
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization")
                            .then(|| value.trim().trim_start_matches("Bearer ").to_string())
                    })
                    .unwrap_or_default();
                let status = [400u16, 401, 500, 503]
                    .into_iter()
                    .find(|s| body.contains(&format!("ECHO{s}")))
                    .unwrap_or(500);
                let _ = tx.send(status);
                // `invalid_api_key` only on the 401: with that code any status
                // would (rightly) disable the key.
                let code = (status == 401).then_some("invalid_api_key");
                let text = serde_json::json!({"error": {
                    "message": format!("Incorrect API key provided: {key}. You can find your API key at https://example.invalid/?key={key}"),
                    "type": "invalid_request_error", "param": key, "code": code}})
                .to_string();
                let reason = match status {
                    400 => "Bad Request",
                    401 => "Unauthorized",
                    503 => "Service Unavailable",
                    _ => "Internal Server Error",
                };
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nx-echo-key: {key}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/v1"), rx)
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = headers
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = socket.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..]).into_owned();
            return Some((headers, body));
        }
    }
}

#[actix::test]
async fn api_keys_never_appear_in_any_output() {
    common::init_logs();
    let g_good = canary("AIza");
    let g_bad = canary("AIza");
    let g_spare = canary("AIza");
    let o_bad = format!("sk-{}", canary("")) + "-invalid";
    let o_good = format!("sk-{}", canary(""));
    let a_good = format!("sk-ant-{}", canary(""));
    let e_key = format!("sk-{}", canary("")) + "-echoed";
    let secrets = [&g_good, &g_bad, &g_spare, &o_bad, &o_good, &a_good, &e_key];

    let pools = vec![
        TestPool {
            name: "g",
            provider: "gemini",
            keys: vec![
                // Invalid: disabled at its first call, its job moves on.
                key_with("g-bad", 1, g_bad.clone()).mock(|k| k.invalid()),
                // Rate limited (rpm 3 per short minute), then spent for the "day".
                key_with("g-good", 2, g_good.clone()).mock(|k| k.with_rpm(3)),
                key_with("g-spare", 3, g_spare.clone()).mock(|k| k.with_rpd(2)),
            ],
        },
        TestPool {
            name: "o",
            provider: "openai",
            keys: vec![
                key_with("o-bad", 1, o_bad.clone()).mock(|k| k.invalid()),
                key_with("o-good", 2, o_good.clone()),
            ],
        },
        TestPool {
            name: "a",
            provider: "anthropic",
            keys: vec![key_with("a-good", 1, a_good.clone())],
        },
    ];
    let settings = MockSettings {
        minute: Duration::from_millis(1500),
        day: Duration::from_secs(3),
        ..MockSettings::default()
    };
    let mock = common::start_mock(&pools, settings).await;
    let (echo_url, mut echo_requests) = echo_provider().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("kr-secrets.{}", uuid::Uuid::now_v7().simple());
    let config_path = common::write_config_file(
        &pools,
        &mock,
        dir.path(),
        &prefix,
        "",
        "max_attempts = 2\nmax_body_bytes = 4096",
    );
    // A fourth pool on the echoing provider (its config written by hand).
    let echo_key_file = dir.path().join("e-echo.key");
    std::fs::write(&echo_key_file, &e_key).unwrap();
    // Readable by others: keyrelay warns (naming the file, not the key).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&echo_key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut text = std::fs::read_to_string(&config_path).unwrap();
    text += &format!(
        "[[pools]]\nname = \"e\"\nprovider = \"openai\"\nbase_url = \"{echo_url}\"\ndefault_model = \"m\"\n  [[pools.keys]]\n  name = \"echo\"\n  api_key_file = \"{}\"\n",
        echo_key_file.display()
    );
    std::fs::write(&config_path, text).unwrap();
    let config = keyrelay_core::config::Config::load(&config_path).unwrap();

    let log: OutputLog = Arc::default();
    let relay = Relay::spawn(&config_path, "debug", &log).await;
    let broker = Arc::new(Broker::connect(&common::amqp_url()).await.unwrap());
    let publisher = Publisher::new(broker.clone()).await.unwrap();
    let replies_name = format!("{prefix}.replies");
    let mut replies = ReplyQueue::open(&broker, &replies_name).await;
    let publish = |pool: &'static str, body: Vec<u8>| {
        let publisher = &publisher;
        let queue = config.job_queue(pool);
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_reply_to(replies_name.as_str().into());
        async move {
            let outcome = publisher.publish(&queue, &body, props, true).await.unwrap();
            assert_eq!(outcome, PublishOutcome::Delivered);
        }
    };
    let job = |id: &str, prompt: &str| {
        serde_json::json!({"id": id, "prompt": prompt})
            .to_string()
            .into_bytes()
    };

    // Gemini: an invalid key, rate limits and a spent key on the way; transient faults.
    let mut expected = Vec::new();
    for i in 0..8 {
        let id = format!("g-{i}");
        publish("g", job(&id, &format!("hello {i}"))).await;
        expected.push(id);
    }
    publish("g", job("g-503", "[[mock:status=503]] down")).await;
    publish("g", job("g-reset", "[[mock:reset]] gone")).await;
    publish("g", job("g-400", "[[mock:status=400]] rejected")).await;
    publish("o", job("o-1", "openai hello")).await;
    publish("o", job("o-500", "[[mock:status=500]] down")).await;
    publish("a", job("a-1", "anthropic hello")).await;
    publish("a", job("a-529", "[[mock:status=529]] overloaded")).await;
    // The echoing provider: a 400 and a 500 whose bodies carry the key.
    publish("e", job("e-400", "ECHO400")).await;
    publish("e", job("e-500", "ECHO500")).await;
    // Invalid jobs: failed replies and dead letters.
    publish("g", b"not json at all".to_vec()).await;
    publish("o", vec![b'x'; 5000]).await;
    expected.extend(
        [
            "g-503", "g-reset", "g-400", "o-1", "o-500", "a-1", "a-529", "e-400", "e-500",
        ]
        .map(String::from),
    );
    let mut all_replies: Vec<String> = Vec::new();
    let mut results: Vec<JobResult> = Vec::new();
    for _ in 0..expected.len() + 2 {
        let d = replies.next_raw().await;
        all_replies.push(String::from_utf8_lossy(&d.data).into_owned());
        all_replies.push(format!("{:?}", d.properties));
        results.push(serde_json::from_slice(&d.data).unwrap());
    }
    let by_id = |id: &str| results.iter().find(|r| r.id == id).unwrap();
    for i in 0..8 {
        assert_eq!(by_id(&format!("g-{i}")).status, JobStatus::Succeeded);
    }
    assert_eq!(by_id("o-1").status, JobStatus::Succeeded);
    assert_eq!(by_id("a-1").status, JobStatus::Succeeded);
    let e400 = by_id("e-400").error.clone().unwrap();
    assert_eq!(e400.kind, ErrorKind::BadRequest);
    assert!(
        e400.message.contains("Incorrect API key provided: [key "),
        "the echoed key is redacted, the rest kept: {}",
        e400.message
    );
    assert_eq!(
        by_id("e-500").error.as_ref().unwrap().kind,
        ErrorKind::Upstream
    );
    let stats = mock.stats();
    assert!(stats.key("g-bad").unauthorized >= 1, "{stats:?}");
    assert!(
        stats.total().rate_limited >= 1,
        "a key was rate limited: {stats:?}"
    );
    // The echo key last: a 401 echoing the key disables it (its reason is stored).
    publish("e", job("e-401", "ECHO401")).await;
    log.wait_for(|l| {
        l.contains("every key of the pool is disabled") && l.contains("\"pool\":\"e\"")
    })
    .await;
    let mut statuses = Vec::new();
    while let Ok(s) = echo_requests.try_recv() {
        statuses.push(s);
    }
    assert!(
        statuses.contains(&401) && statuses.contains(&400),
        "{statuses:?}"
    );

    // Every HTTP surface.
    let mut http_text = relay.metrics().await;
    for path in ["healthz", "readyz", "v1/keys", "v1/pools"] {
        if let Ok(r) = reqwest::get(format!("http://{}/{path}", relay.http)).await {
            http_text += &r.text().await.unwrap_or_default();
        }
    }
    assert!(http_text.contains("keyrelay_jobs_total"));
    let status = relay.terminate().await;
    assert!(status.success(), "{status}");
    let dead = read_dead_letters(&broker, &config.jobs.dead_letter_queue, 2).await;
    assert!(
        log.text().contains("readable by other users"),
        "a world-readable key file is reported"
    );

    // Search everything for every key (and for the distinctive part alone).
    let output = log.text();
    let sled_bytes = read_dir_bytes(&config.store.path);
    assert!(!sled_bytes.is_empty());
    let key_states_text = String::from_utf8_lossy(&sled_bytes);
    assert!(
        key_states_text.contains("[key "),
        "the disabled key's reason (the redacted echo) is in the store"
    );
    let replies_text = all_replies.join("\n");
    let dead_text = dead.join("\n");
    for secret in secrets {
        let core = secret.split("LEAKCANARY").nth(1).unwrap();
        let core = &core[..24.min(core.len())];
        for needle in [secret.as_str(), core] {
            assert!(
                !output.contains(needle),
                "key in the log output:\n{}",
                find_line(&output, needle)
            );
            assert!(!http_text.contains(needle), "key in an HTTP response");
            assert!(!replies_text.contains(needle), "key in a reply");
            assert!(!dead_text.contains(needle), "key in a dead letter");
            assert!(
                !contains_bytes(&sled_bytes, needle.as_bytes()),
                "key in the sled files"
            );
        }
    }
    println!(
        "secrets: {} log lines ({} bytes), {} replies, {} dead letters, {} sled bytes searched; no key found",
        log.len(),
        output.len(),
        results.len(),
        dead.len(),
        sled_bytes.len()
    );

    let mut queues = common::keyrelay_queues(&config);
    queues.push(replies_name);
    common::delete_queues(&broker, &queues).await;
    let _ = broker.close().await;
    mock.stop().await;
}

fn find_line(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n")
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn read_dir_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(read_dir_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

/// Body, properties and headers of `n` dead letters.
async fn read_dead_letters(broker: &Broker, queue: &str, n: usize) -> Vec<String> {
    use futures_util::StreamExt;
    let channel = broker.channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "dead".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(common::WAIT, consumer.next())
            .await
            .expect("dead letter")
            .unwrap()
            .unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
        out.push(format!(
            "{}\n{:?}",
            String::from_utf8_lossy(&d.data),
            d.properties
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// Config errors: a key pasted where a variable name belongs is never echoed.

fn config_error(dir: &Path, key_line: &str) -> String {
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        format!(
            "[broker]\nurl = \"amqp://127.0.0.1:5672/%2f\"\n\n[[pools]]\nname = \"g\"\nprovider = \"gemini\"\nbase_url = \"http://127.0.0.1:9\"\ndefault_model = \"m\"\n  [[pools.keys]]\n  name = \"k\"\n  {key_line}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyrelay"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_world_readable_key_file_is_warned_about_in_plain_text() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, canary("")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A second key with concurrency 0 ends `run` right after the file was
    // read (validation reads each key's file before it checks the next key).
    let line = format!(
        "api_key_file = \"{}\"\n  [[pools.keys]]\n  name = \"k2\"\n  concurrency = 0",
        key.display()
    );
    let out = config_error(dir.path(), &line);
    assert!(
        out.contains(" WARN ") && out.contains("API key file is readable by other users"),
        "{out}"
    );
    // stderr is a pipe here, as under systemd or in a log file.
    assert!(!out.contains('\x1b'), "escape codes in the log: {out:?}");
}

#[test]
fn a_key_pasted_into_the_config_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // OpenAI / Anthropic shaped: has `-`, cannot be a variable name.
        format!("sk-{}", canary("")),
        // Gemini shaped, no `-`: letters, digits and `_` only, like a variable name.
        format!("AIzaSy{}_x", canary("")),
    ];
    for key in &cases {
        for line in [
            format!("api_key_env = \"{key}\""),
            format!("api_key_file = \"{key}\""),
            format!("api_key_env = {key}"),
        ] {
            let out = config_error(dir.path(), &line);
            assert!(
                out.contains("error") && (out.contains("api_key") || out.contains("TOML")),
                "{out}"
            );
            assert!(!out.contains(key.as_str()), "`{line}` is echoed:\n{out}");
        }
    }
}
