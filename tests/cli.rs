//! The operator CLI (`status`, `keys`, `results`, `enqueue --rate`,
//! `dead-letters`) run as a real process against a running keyrelay.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, READ_TOKEN, TestEnv, TestKey, TestPool};
use keyrelay::actors::messages::GetKeys;
use keyrelay::amqp::PublishOutcome;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use tokio::io::AsyncWriteExt;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `keyrelay args...`, with nothing in its environment about the admin API.
fn cli(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyrelay"));
    cmd.args(args)
        .env_remove("KEYRELAY_ADMIN_URL")
        .env_remove("KEYRELAY_ADMIN_TOKEN")
        .env_remove("KEYRELAY_READ_TOKEN")
        .env_remove("KEYRELAY_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Run `cmd`, writing `stdin` to it, until it ends (60 s at most).
async fn output_of(mut cmd: tokio::process::Command, stdin: Option<&str>) -> Run {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("keyrelay binary runs");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command ends")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `keyrelay args...` with the admin URL and `token` in its environment.
async fn keyrelay(env: &TestEnv, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = cli(args);
    cmd.env("KEYRELAY_ADMIN_URL", env.http_url());
    if let Some(token) = token {
        cmd.env("KEYRELAY_ADMIN_TOKEN", token);
    }
    output_of(cmd, stdin).await
}

/// A config file for the AMQP commands, pointing at this test's queues.
fn config_file(env: &TestEnv) -> String {
    let c = &env.config;
    let key = env.dir.path().join("g-k1.key");
    let text = format!(
        "[broker]\nurl = \"{}\"\nqueue_prefix = \"{}\"\n[jobs]\nresults_queue = \"{}\"\ndead_letter_queue = \"{}\"\n[[pools]]\nname = \"g\"\nprovider = \"gemini\"\nbase_url = \"http://127.0.0.1:1\"\ndefault_model = \"model-a\"\n  [[pools.keys]]\n  name = \"k1\"\n  api_key_file = \"{}\"\n",
        c.broker.url,
        c.broker.queue_prefix,
        c.jobs.results_queue,
        c.jobs.dead_letter_queue,
        key.display()
    );
    let path = env.dir.path().join("cli.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn state_of(env: &TestEnv, key: &str) -> String {
    let keys = env.app().supervisor().send(GetKeys).await.unwrap();
    keys.iter()
        .find(|k| k.name == key)
        .unwrap()
        .state
        .label()
        .to_string()
}

async fn start() -> TestEnv {
    TestEnv::start_admin(vec![TestPool {
        name: "g",
        provider: "gemini",
        keys: vec![TestKey::new("k1", 1)],
    }])
    .await
}

#[actix::test]
async fn status_and_its_errors() {
    let env = start().await;
    let run = keyrelay(&env, Some(READ_TOKEN), &["status"], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("POOL"), "{}", run.stdout);
    assert!(
        run.stdout.contains("k1") && run.stdout.contains("active"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("alerts: none"), "{}", run.stdout);
    // Wrong token, no token, nothing listening: one line, non-zero exit.
    let run = keyrelay(&env, Some("wrong-token-wrong-token"), &["status"], None).await;
    assert_ne!(run.code, 0);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("refused the token"), "{}", run.stderr);
    let run = keyrelay(&env, None, &["status"], None).await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("KEYRELAY_ADMIN_TOKEN"),
        "{}",
        run.stderr
    );
    let run = keyrelay(
        &env,
        Some(READ_TOKEN),
        &["status", "--admin-url", "http://127.0.0.1:1"],
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    // A read-only token cannot act on keys.
    let run = keyrelay(
        &env,
        Some(READ_TOKEN),
        &["keys", "disable", "g", "k1"],
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    env.finish().await;
}

#[actix::test]
async fn keys_commands_change_and_probe_the_key() {
    let env = start().await;
    let run = keyrelay(
        &env,
        Some(ADMIN_TOKEN),
        &["keys", "disable", "g", "k1", "--reason", "rotating"],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("g/k1: disabled (rotating)"),
        "{}",
        run.stdout
    );
    assert_eq!(state_of(&env, "k1").await, "disabled");
    let run = keyrelay(
        &env,
        Some(ADMIN_TOKEN),
        &["keys", "enable", "g", "k1"],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(state_of(&env, "k1").await, "active");
    let run = keyrelay(&env, Some(ADMIN_TOKEN), &["keys", "probe", "g", "k1"], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("probe g/k1: success"), "{}", run.stdout);
    env.mock.revoke("k1");
    let run = keyrelay(&env, Some(ADMIN_TOKEN), &["keys", "probe", "g", "k1"], None).await;
    assert_ne!(run.code, 0, "a failed probe exits non-zero");
    assert!(run.stdout.contains("unauthorized"), "{}", run.stdout);
    let run = keyrelay(&env, Some(ADMIN_TOKEN), &["keys", "reset", "g", "k1"], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = keyrelay(
        &env,
        Some(ADMIN_TOKEN),
        &["keys", "enable", "g", "nope"],
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("no key `nope`"), "{}", run.stderr);
    env.finish().await;
}

#[actix::test]
async fn enqueue_with_a_rate_then_export_results() {
    let mut env = start().await;
    let config = config_file(&env);
    let jobs: String = (0..10)
        .map(|i| {
            let user = if i < 4 { "ann" } else { "ben" };
            format!("{{\"id\": \"cli-{i}\", \"prompt\": \"p{i}\", \"user\": \"{user}\"}}\n")
        })
        .collect();
    let started = Instant::now();
    let run = keyrelay(
        &env,
        None,
        &[
            "enqueue",
            "--pool",
            "g",
            "--rate",
            "20",
            "--config",
            &config,
            "-",
            "--reply-to",
            &env.replies.clone(),
        ],
        Some(&jobs),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("enqueued 10 jobs"), "{}", run.stdout);
    // 10 jobs at 20/s with no burst: at least 9 intervals of 50 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(430),
        "{:?}",
        started.elapsed()
    );
    env.replies(10).await;
    let run = keyrelay(&env, Some(READ_TOKEN), &["results", "--since", "1h"], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSONL"))
        .collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[0]["id"], "cli-9", "newest first");
    let run = keyrelay(
        &env,
        Some(READ_TOKEN),
        &["results", "--user", "ann", "--status", "succeeded"],
        None,
    )
    .await;
    assert_eq!(run.stdout.lines().count(), 4, "{}", run.stdout);
    let run = keyrelay(&env, Some(READ_TOKEN), &["results", "--max", "3"], None).await;
    assert_eq!(run.stdout.lines().count(), 3);
    let run = keyrelay(
        &env,
        Some(READ_TOKEN),
        &["results", "--since", "soon"],
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("since"), "{}", run.stderr);
    env.finish().await;
}

#[actix::test]
async fn dead_letters_list_and_replay() {
    let mut env = start().await;
    let config = config_file(&env);
    // A job that was dead-lettered (e.g. no key for too long), with keyrelay's headers.
    let mut headers = FieldTable::default();
    headers.insert("x-keyrelay-pool".into(), AMQPValue::LongString("g".into()));
    headers.insert(
        "x-keyrelay-reason".into(),
        AMQPValue::LongString("returned too often".into()),
    );
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_reply_to(env.replies.as_str().into())
        .with_headers(headers);
    let body = br#"{"id": "dl-1", "prompt": "second chance"}"#;
    let outcome = env
        .publisher
        .publish(&env.config.jobs.dead_letter_queue, body, props, true)
        .await
        .unwrap();
    assert_eq!(outcome, PublishOutcome::Delivered);
    for _ in 0..2 {
        // Listing leaves the message in the queue.
        let run = keyrelay(
            &env,
            None,
            &["dead-letters", "list", "--config", &config],
            None,
        )
        .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let line: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        assert_eq!(line["pool"], "g");
        assert_eq!(line["reason"], "returned too often");
        assert!(line["body"].as_str().unwrap().contains("dl-1"));
    }
    let run = keyrelay(
        &env,
        None,
        &["dead-letters", "replay", "--config", &config],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("replayed 1 dead letters"),
        "{}",
        run.stdout
    );
    let (result, _) = env.next_reply().await;
    assert_eq!(result.id, "dl-1");
    assert!(result.is_success());
    let run = keyrelay(
        &env,
        None,
        &["dead-letters", "list", "--config", &config],
        None,
    )
    .await;
    assert_eq!(run.stdout.trim(), "", "the queue is empty after the replay");
    let run = keyrelay(
        &env,
        None,
        &["dead-letters", "list", "--config", "/nonexistent.toml"],
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    env.finish().await;
}

/// `keyrelay run` on a config of one pool on `env`'s mock, with `vars` set
/// (each start-up failure test overrides one setting); its stderr and code.
async fn run_service(env: &TestEnv, vars: &[(&str, &std::ffi::OsStr)]) -> (String, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config_file(
        &[TestPool {
            name: "g",
            provider: "gemini",
            keys: vec![TestKey::new("k1", 1)],
        }],
        &env.mock,
        dir.path(),
        &format!("kr-start.{}", uuid::Uuid::now_v7().simple()),
        "",
        "",
    );
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyrelay"));
    cmd.args(["run", "--config"])
        .arg(&config)
        .env("KEYRELAY__METRICS__LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG");
    for (name, value) in vars {
        cmd.env(name, value);
    }
    let out = cmd.output().await.unwrap();
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

/// `keyrelay run` with its HTTP port taken: one line naming the setting,
/// exit 1, no panic (it used to panic while unwinding the started actors).
#[actix::test]
async fn run_with_its_port_in_use_says_so_in_one_line() {
    let env = start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (stderr, code) = run_service(&env, &[("KEYRELAY__METRICS__LISTEN", addr.as_ref())]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("metrics.listen") && stderr.contains(&addr),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    env.finish().await;
}

/// `keyrelay run` with a broker that refuses it (nothing listening, or a
/// wrong password): one line naming `broker.url`, its password masked, exit 1.
#[actix::test]
async fn run_against_a_refusing_broker_says_so_in_one_line() {
    let env = start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (url, says) in [
        (
            format!("amqp://guest:secret-pw@{closed}/%2f"),
            "Connection refused",
        ),
        (
            "amqp://guest:secret-pw@127.0.0.1:5672/%2f".to_owned(),
            "ACCESS_REFUSED",
        ),
    ] {
        let (stderr, code) = run_service(&env, &[("KEYRELAY__BROKER__URL", url.as_ref())]).await;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("broker.url") && stderr.contains(says),
            "{stderr}"
        );
        assert!(
            !stderr.contains("secret-pw"),
            "the password is masked: {stderr}"
        );
        assert_eq!(stderr.matches(says).count(), 1, "said once: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    env.finish().await;
}

/// `keyrelay run` on a store another process holds: one line naming
/// `store.path`, exit 1 (after waiting 5 s for an overlapping restart).
#[actix::test]
async fn run_on_a_held_store_says_so_in_one_line() {
    let env = start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("held-store");
    let _held = keyrelay_core::store::Store::open(&store).unwrap();
    let (stderr, code) = run_service(&env, &[("KEYRELAY__STORE__PATH", store.as_os_str())]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("store.path") && stderr.contains("another process holds it"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    env.finish().await;
}

/// `keyrelay enqueue --reply-to Q` declares Q when it does not exist (the
/// result would otherwise be returned unroutable), and the publishing
/// commands do not need the keys' variables.
#[actix::test]
async fn enqueue_declares_a_missing_reply_queue_and_needs_no_keys() {
    let env = start().await;
    let dir = tempfile::tempdir().unwrap();
    // The keys come from an environment variable the command does not have.
    let text = std::fs::read_to_string(config_file(&env)).unwrap().replace(
        &format!(
            "api_key_file = \"{}\"",
            env.dir.path().join("g-k1.key").display()
        ),
        "api_key_env = \"KR_CLI_TEST_UNSET_KEY\"",
    );
    let config = dir.path().join("no-keys.toml");
    std::fs::write(&config, text).unwrap();
    let queue = format!("{}.my-results", env.config.broker.queue_prefix);
    let run = keyrelay(
        &env,
        None,
        &[
            "enqueue",
            "--pool",
            "g",
            "--config",
            config.to_str().unwrap(),
            "-",
            "--reply-to",
            &queue,
        ],
        Some("{\"id\": \"declared-1\", \"prompt\": \"hi\"}\n"),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("declared the reply queue"),
        "{}",
        run.stderr
    );
    let channel = env.broker.channel().await.unwrap();
    let deadline = Instant::now() + common::WAIT;
    loop {
        let q = channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if q.message_count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the result reaches the declared queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = channel
        .queue_delete(
            queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await;
    env.finish().await;
}

/// `keyrelay ARGS` with nothing in the environment about the admin API but `vars`.
async fn bare(args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut cmd = cli(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    output_of(cmd, None).await
}

#[actix::test]
async fn admin_commands_find_the_url_and_token_in_the_config() {
    let env = start().await;
    let token = env.dir.path().join("cli-admin.token");
    std::fs::write(&token, ADMIN_TOKEN).unwrap();
    let config = config_file(&env);
    let listen = env.app().http_addr();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "[jobs]",
        &format!(
            "[metrics]\nlisten = \"0.0.0.0:{}\"\n[admin]\nadmin_token_file = \"{}\"\n[jobs]",
            listen.port(),
            token.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    // Only -c: the URL from metrics.listen (0.0.0.0 reached on loopback), the token from [admin].
    let run = bare(&["status", "-c", &config], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("k1"), "{}", run.stdout);
    let run = bare(&["keys", "disable", "g", "k1", "-c", &config], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(state_of(&env, "k1").await, "disabled");
    // A read-only token in KEYRELAY_READ_TOKEN is enough to read.
    let url = env.http_url();
    let vars = [
        ("KEYRELAY_ADMIN_URL", url.as_str()),
        ("KEYRELAY_READ_TOKEN", READ_TOKEN),
    ];
    let run = bare(&["status"], &vars).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // A -c that cannot be read is named.
    let run = bare(&["status", "-c", "/no/such/keyrelay.toml"], &[]).await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("/no/such/keyrelay.toml"),
        "{}",
        run.stderr
    );
    env.finish().await;
}

#[actix::test]
async fn results_filter_by_pool_and_batch_and_invalid_jobs_are_found() {
    let mut env = start().await;
    for i in 0..3 {
        env.publish(
            "g",
            &serde_json::json!({"id": format!("b-{i}"), "prompt": "x", "batch": "nightly"}),
        )
        .await;
    }
    env.publish("g", &serde_json::json!({"id": "loose", "prompt": "y"}))
        .await;
    // Invalid (temperature out of range): stored, so it can be looked up.
    env.publish(
        "g",
        &serde_json::json!({"id": "fixme", "prompt": "z", "temperature": 9}),
    )
    .await;
    let replies = env.replies(5).await;
    assert_eq!(replies["b-0"].batch.as_deref(), Some("nightly"));
    let run = keyrelay(
        &env,
        Some(READ_TOKEN),
        &["results", "--batch", "nightly"],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
    let run = keyrelay(&env, Some(READ_TOKEN), &["results", "--pool", "g"], None).await;
    assert_eq!(run.stdout.lines().count(), 5, "{}", run.stdout);
    let run = keyrelay(
        &env,
        Some(READ_TOKEN),
        &["results", "--pool", "other"],
        None,
    )
    .await;
    assert_eq!(run.stdout.lines().count(), 0, "{}", run.stdout);

    let client = reqwest::Client::new();
    let base = env.http_url();
    let get = |id: &str| {
        client
            .get(format!("{base}/v1/jobs/{id}"))
            .bearer_auth(READ_TOKEN)
            .send()
    };
    let found: serde_json::Value = get("fixme").await.unwrap().json().await.unwrap();
    assert_eq!(found["error"]["kind"], "invalid_job", "{found}");
    // Corrected and sent again under the same id: it runs.
    env.publish("g", &serde_json::json!({"id": "fixme", "prompt": "z"}))
        .await;
    let (again, _) = env.next_reply().await;
    assert_eq!(again.id, "fixme");
    assert_eq!(again.status, keyrelay_core::job::JobStatus::Succeeded);
    let found: serde_json::Value = get("fixme").await.unwrap().json().await.unwrap();
    assert_eq!(found["status"], "succeeded", "{found}");
    // A broken resend under a good job's id does not hide its answer.
    env.publish("g", &serde_json::json!({"id": "fixme", "prompt": 3}))
        .await;
    let (broken, _) = env.next_reply().await;
    assert_eq!(
        broken.error.unwrap().kind,
        keyrelay_core::job::ErrorKind::InvalidJob
    );
    let found: serde_json::Value = get("fixme").await.unwrap().json().await.unwrap();
    assert_eq!(found["status"], "succeeded", "{found}");
    env.finish().await;
}

#[actix::test]
async fn version_names_the_git_revision() {
    let run = bare(&["--version"], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let version = run.stdout.trim();
    assert!(
        version.starts_with(&format!("keyrelay {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    // From a git checkout, the revision is HEAD's; elsewhere `unknown`.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let wanted = head.unwrap_or_else(|| "unknown".into());
    assert!(
        version.ends_with(&format!("({wanted})")),
        "{version} vs {wanted}"
    );
}

/// A worker-thread count that is not a number is refused by name, before
/// anything starts (tokio would panic on it).
#[actix::test]
async fn a_bad_worker_thread_count_is_refused_by_name() {
    for bad in ["abc", "0", "-2"] {
        let mut cmd = cli(&["status"]);
        cmd.env("TOKIO_WORKER_THREADS", bad);
        let run = output_of(cmd, None).await;
        assert_eq!(run.code, 1, "{bad}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("TOKIO_WORKER_THREADS must be a whole number above 0"),
            "{bad}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
}
