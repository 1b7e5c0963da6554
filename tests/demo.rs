//! The README's first command, end to end: `keyrelay demo` starts the mock
//! provider's own binary, runs keyrelay against the real RabbitMQ, answers every
//! sample job, shows the primary key running out of quota, and stops the mock.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// `keyrelay-mock`, built next to `keyrelay` (built here when this test runs alone).
fn mock_binary() -> PathBuf {
    let keyrelay = PathBuf::from(env!("CARGO_BIN_EXE_keyrelay"));
    let mock = keyrelay.with_file_name("keyrelay-mock");
    if !mock.exists() {
        let built = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "keyrelay-mock"])
            .status()
            .expect("cargo runs");
        assert!(built.success(), "cannot build keyrelay-mock");
    }
    mock
}

#[tokio::test]
async fn the_demo_answers_every_job_and_leaves_no_mock_running() {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyrelay"))
        .args(["demo", "--mock-bin"])
        .arg(mock_binary())
        .env("AMQP_URL", common::amqp_url())
        .env_remove("KEYRELAY_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the demo finishes within 2 minutes")
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    // 24 jobs: 20 Gemini prompts (more than the primary key's 5 a day), a template
    // job, one per other provider, one broken.
    assert!(stdout.contains("succeeded per key"), "{stdout}");
    assert!(stdout.contains("broken-01"), "{stdout}");
    assert!(stdout.contains("invalid_job"), "{stdout}");
    assert!(
        stdout.contains("gemini/primary") && stdout.contains("exhausted until"),
        "the primary key ran out of its daily quota:\n{stdout}"
    );
    assert!(
        stdout.contains("provider calls seen by the mock"),
        "the demo read the mock's counters over HTTP:\n{stdout}"
    );
    // The mock was a child process on its own port, and it is gone.
    let addr = stdout
        .lines()
        .find_map(|l| l.strip_prefix("mock provider listening on http://"))
        .expect("the demo names the mock's address")
        .trim()
        .to_owned();
    let gone = tokio::net::TcpStream::connect(&addr).await;
    assert!(gone.is_err(), "the mock provider still listens on {addr}");
}
