//! Logging set-up: human-readable by default, JSON lines with `--log-format json`.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Default filter of the service: one line per job at info. lapin is off:
/// it logs a refused login or a lost connection as five ERROR lines, and
/// every returned (unroutable) message with its whole body as bytes, while
/// keyrelay says each of these itself in one line (naming `broker.url`) and
/// counts them. `RUST_LOG=info,lapin=warn` shows lapin's own lines.
pub const SERVICE_FILTER: &str = "info,lapin=off,actix_server=warn";
/// Default filter of the demo: only what goes wrong (keys leaving rotation).
pub const DEMO_FILTER: &str = "warn,lapin=off";

/// Install the global subscriber. `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours_wanted())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Colour only for a person at a terminal: a log file, a pipe or journald
/// would keep the escape codes as text (and `grep " WARN "` would miss them).
fn colours_wanted() -> bool {
    use std::io::IsTerminal as _;
    // no-color.org: an empty NO_COLOR does not count.
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
