//! keyrelay as a child process (the release binary cargo built for this bench),
//! its CPU time and memory from /proc, and its `/metrics`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The `keyrelay` binary built by the same `cargo bench` invocation.
const BINARY: &str = env!("CARGO_BIN_EXE_keyrelay");

pub struct Keyrelay {
    child: tokio::process::Child,
    pub pid: u32,
    pub spawned: Instant,
    metrics_url: String,
    http: reqwest::Client,
}

impl Keyrelay {
    /// `keyrelay run --config <config>` with the service's default log filter,
    /// its log going to `log`.
    pub fn spawn(config: &Path, log: &Path, http_addr: SocketAddr) -> anyhow::Result<Keyrelay> {
        Self::spawn_with(config, log, http_addr, &[])
    }

    /// [`Keyrelay::spawn`] with extra environment variables (`KEYRELAY__…`).
    pub fn spawn_with(
        config: &Path,
        log: &Path,
        http_addr: SocketAddr,
        envs: &[(&str, String)],
    ) -> anyhow::Result<Keyrelay> {
        let log = std::fs::File::create(log)?;
        let spawned = Instant::now();
        let child = command()
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {BINARY}"))?;
        let pid = child.id().context("child pid")?;
        Ok(Keyrelay {
            child,
            pid,
            spawned,
            metrics_url: format!("http://{http_addr}/metrics"),
            http: reqwest::Client::new(),
        })
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid)
    }

    /// Resident set size, KiB (`VmRSS`).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        status_kib(self.pid, "VmRSS")
    }

    /// Peak resident set size, KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        status_kib(self.pid, "VmHWM")
    }

    /// Fail if the process has exited (a crash must not look like a slow run).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("keyrelay exited early with {status}");
        }
        Ok(())
    }

    /// One `GET /metrics`: the body and how long it took (keep-alive connection).
    pub async fn scrape(&self) -> anyhow::Result<(String, Duration)> {
        let started = Instant::now();
        let response = self.http.get(&self.metrics_url).send().await?;
        let body = response.error_for_status()?.text().await?;
        Ok((body, started.elapsed()))
    }

    /// Wait until `/metrics` answers (the HTTP endpoint starts last).
    pub async fn wait_http(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.scrape().await.is_err() {
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("keyrelay's /metrics did not answer within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM (graceful shutdown), then wait up to 20 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(status.success(), "keyrelay exited with {status}");
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("keyrelay did not stop within 20 s of SIGTERM; killed")
            }
        }
    }
}

/// User + system CPU seconds of a process (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces: fields are counted after its ')'.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("{field} not in /proc/{pid}/status"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// Fail if keyrelay's process is gone or a zombie (it crashed while we waited).
pub fn ensure_running(pid: u32) -> anyhow::Result<()> {
    ensure_process_running(pid, "keyrelay")
}

/// Fail if process `pid` (`what`, for the message) is gone or a zombie.
pub fn ensure_process_running(pid: u32, what: &str) -> anyhow::Result<()> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("{what} (pid {pid}) is gone"))?;
    let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
    if state.is_none_or(|s| s.starts_with(['Z', 'X'])) {
        bail!("{what} (pid {pid}) exited during the run");
    }
    Ok(())
}

/// Wait until the broker uses under a tenth of a core over 300 ms (at most
/// 30 s). After a preload, and after the previous scenario of an `all` run, a
/// quorum queue keeps the broker busy for a while (WAL writes, snapshots,
/// deleting the last run's queues); measuring through that charged its work to
/// whichever scenario came second. Returns how long it waited.
pub async fn wait_for_quiet_broker() -> Duration {
    let started = Instant::now();
    let Some(pid) = broker_pid() else {
        return Duration::ZERO;
    };
    let step = Duration::from_millis(300);
    while started.elapsed() < Duration::from_secs(30) {
        let before = cpu_seconds(pid).unwrap_or(0.0);
        tokio::time::sleep(step).await;
        let used = cpu_seconds(pid).unwrap_or(0.0) - before;
        if used < 0.1 * step.as_secs_f64() {
            break;
        }
    }
    started.elapsed()
}

/// The RabbitMQ node's process (`beam.smp`), to report the broker's CPU too.
pub fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "beam.smp")
        })
}

/// Cumulative buckets `(le, count)` of a Prometheus histogram, summed over
/// every label set (all pools).
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    histogram_buckets_with(text, name, "")
}

/// Like [`histogram_buckets`], over the label sets that contain `label`
/// (e.g. `stage="store"`).
pub fn histogram_buckets_with(text: &str, name: &str, label: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(label))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(le) = labels
            .split("le=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        let count: f64 = value.parse().unwrap_or(0.0);
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some(slot) => slot.1 += count,
            None => buckets.push((le, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// Quantile `q` from cumulative buckets, interpolated linearly within the bucket
/// it falls in (as Prometheus' `histogram_quantile` does; the first bucket starts
/// at 0). `None` without observations; the last finite bound if it falls in +Inf.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (le - lower) * fraction);
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

/// Value of a counter summed over its label sets.
pub fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Value of a counter summed over the label sets that contain `label`
/// (e.g. `outcome="succeeded"`).
pub fn counter_matching(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Mean of a Prometheus histogram (`_sum / _count`, all label sets).
pub fn histogram_mean(text: &str, name: &str) -> f64 {
    counter_sum(text, &format!("{name}_sum")) / counter_sum(text, &format!("{name}_count"))
}

pub fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The keyrelay binary, or the binary under the wrapper command named by
/// `KEYRELAY_BENCH_WRAP` (e.g. `valgrind --tool=callgrind --callgrind-out-file=/tmp/kr.cg`):
/// instruction counts do not vary with the machine's load as CPU seconds do.
fn command() -> tokio::process::Command {
    let wrap = std::env::var("KEYRELAY_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut command = tokio::process::Command::new(program);
            command.args(words).arg(BINARY);
            command
        }
        None => tokio::process::Command::new(BINARY),
    }
}
