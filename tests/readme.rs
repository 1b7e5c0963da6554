//! The README's quick start, run as written: the block that starts the mock
//! provider and keyrelay, runs a one-line batch and asks for the status. Only
//! what isolates the run is changed: the binaries are this build's, and the
//! copied dev config gets its own queue prefix and ports.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const README: &str = include_str!("../README.md");

/// The first `sh` block after `marker`.
fn block_after(marker: &str) -> String {
    let start = README.find(marker).expect("marker in README.md");
    let rest = &README[start..];
    let open = rest.find("```sh\n").expect("a sh block after the marker") + 6;
    let close = rest[open..].find("```").expect("closing fence");
    rest[open..open + close].to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[actix::test]
async fn the_quick_start_runs_as_written() {
    let block = block_after("Against the mock provider instead of real APIs");
    let keyrelay = env!("CARGO_BIN_EXE_keyrelay");
    let mock = Path::new(keyrelay).with_file_name("keyrelay-mock");
    if !mock.is_file() {
        let built = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "keyrelay-mock"])
            .status()
            .unwrap();
        assert!(built.success(), "cannot build keyrelay-mock");
    }
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir(dir.path().join("config")).unwrap();
    let (mock_port, http_port) = (free_port(), free_port());
    let prefix = format!("readme-{}", uuid::Uuid::now_v7().simple());
    let dev = std::fs::read_to_string(root.join("config/keyrelay.toml"))
        .unwrap()
        .replace("127.0.0.1:8089", &format!("127.0.0.1:{mock_port}"))
        .replace("127.0.0.1:9464", &format!("127.0.0.1:{http_port}"))
        .replacen(
            "[broker]\n",
            &format!("[broker]\nqueue_prefix = \"{prefix}\"\n"),
            1,
        )
        .replace("amqp://guest:guest@127.0.0.1:5672/%2f", &common::amqp_url());
    std::fs::write(dir.path().join("config/keyrelay.toml"), &dev).unwrap();
    std::fs::copy(
        root.join("config/mock-provider.toml"),
        dir.path().join("config/mock-provider.toml"),
    )
    .unwrap();
    let script = block
        .replace("target/release/keyrelay-mock", &mock.display().to_string())
        .replace("target/release/keyrelay", keyrelay)
        .replace(
            "--config config/mock-provider.toml",
            &format!("--config config/mock-provider.toml --listen 127.0.0.1:{mock_port}"),
        );
    let script = format!("set -eu\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{script}");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("bash")
            .args(["-c", &script])
            .current_dir(dir.path())
            .env_remove("KEYRELAY_CONFIG")
            .env_remove("KEYRELAY_ADMIN_URL")
            .env_remove("KEYRELAY_ADMIN_TOKEN")
            .env_remove("KEYRELAY_READ_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the quick start ends")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let results = std::fs::read_to_string(dir.path().join("hello.jsonl.results.jsonl")).unwrap();
    let result: serde_json::Value = serde_json::from_str(results.lines().next().unwrap()).unwrap();
    assert_eq!(result["id"], "hello-1", "{results}");
    assert_eq!(result["status"], "succeeded", "{results}");
    // `keyrelay status` found the dev admin token by itself.
    assert!(
        stdout.contains("primary") && stdout.contains("gemini"),
        "{stdout}\n{stderr}"
    );
    assert!(
        dir.path()
            .join("data/keyrelay.sled.dev-admin-token")
            .is_file(),
        "the dev token is beside the store"
    );
    // Leave no queues behind.
    let key = dir.path().join("cleanup.key");
    std::fs::write(&key, "x").unwrap();
    let with_file = format!("api_key_file = \"{}\"", key.display());
    let text = dev
        .replace("api_key_env = \"GEMINI_KEY_1\"", &with_file)
        .replace("api_key_env = \"GEMINI_KEY_2\"", &with_file);
    let config = keyrelay_core::config::Config::from_toml_str(&text, std::iter::empty())
        .expect("the copied dev config reads");
    let broker = keyrelay::amqp::Broker::connect(&config.broker.url)
        .await
        .unwrap();
    common::delete_queues(&broker, &common::keyrelay_queues(&config)).await;
}
