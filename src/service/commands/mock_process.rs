//! The demo's mock provider: the `keyrelay-mock` binary run as a child process.
//!
//! The mock is its own crate so that none of it is linked into this binary; the
//! demo starts it on port 0, reads the address from its first line of output,
//! and stops it (SIGTERM, then kill) when done.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// The mock gets SIGTERM when the demo's process dies, however it dies
/// (`kill_on_drop` covers only a demo that unwinds).
#[cfg(target_os = "linux")]
fn stop_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child's own
    // state, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn stop_with_parent(_command: &mut Command) {}

/// Name of the mock provider's binary, built next to `keyrelay` by cargo.
const MOCK_BIN: &str = "keyrelay-mock";
/// How long the mock may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `keyrelay-mock`.
pub struct MockProcess {
    child: Child,
    base: String,
    /// Kept open so the mock's later output never meets a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

/// Per-key counters from the mock's `/_mock/stats`.
#[derive(Debug, Deserialize)]
pub struct MockKeyStats {
    pub requests: u32,
    pub successes: u32,
    pub exhausted: u32,
}

#[derive(Deserialize)]
struct MockStats {
    keys: std::collections::BTreeMap<String, MockKeyStats>,
}

impl MockProcess {
    /// Starts the mock with the settings in `settings_file` on a free local port.
    pub async fn start(binary: &Path, settings_file: &Path) -> anyhow::Result<MockProcess> {
        let mut command = Command::new(binary);
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--config")
            .arg(settings_file)
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        stop_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start the mock provider {} (build it with `cargo build -p keyrelay-mock`, or pass --mock-bin)",
                    binary.display()
                )
            })?;
        let mut stdout = BufReader::new(child.stdout.take().context("mock provider stdout")?);
        let mut first = String::new();
        match tokio::time::timeout(START_TIMEOUT, stdout.read_line(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => bail!("the mock provider {} did not start", binary.display()),
        }
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line from the mock provider: {first:?}"))?;
        Ok(MockProcess {
            child,
            base: format!("http://{addr}"),
            _stdout: stdout,
        })
    }

    /// Where `keyrelay-mock` is by default: next to this executable.
    pub fn default_binary() -> PathBuf {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(MOCK_BIN)))
            .unwrap_or_else(|| PathBuf::from(MOCK_BIN))
    }

    /// Base URL of the Gemini and Anthropic endpoints (clients append their paths).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Base URL of the OpenAI-compatible endpoint.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base)
    }

    /// The mock's per-key counters.
    pub async fn key_stats(
        &self,
    ) -> anyhow::Result<std::collections::BTreeMap<String, MockKeyStats>> {
        let stats: MockStats = reqwest::get(format!("{}/_mock/stats", self.base))
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(stats.keys)
    }

    /// Stops the mock: SIGTERM, and a kill if it has not exited within 5 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: sending a signal to our own child process; no memory involved.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
