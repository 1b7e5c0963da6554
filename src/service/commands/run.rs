//! `keyrelay run`: start the service and run until SIGINT or SIGTERM.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use tracing::{error, info};

use crate::app::App;
use keyrelay_core::config::Config;

/// Run until a shutdown signal, then stop gracefully.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    let grace = Duration::from_secs(config.jobs.shutdown_grace_secs);
    let dev_token = super::dev_token::ensure(&mut config)?;
    let (listen, token_file) = (config.metrics.listen, super::dev_token::path(&config));
    // Listen before starting: consumers run as soon as App::start returns (even
    // before), and a SIGTERM with no handler yet would kill the process outright.
    let signal = shutdown_signal()?;
    let app = App::start(config)
        .await
        .context("keyrelay could not start")?;
    // Said once started: a start-up error stays the one line it is. The
    // token itself never goes to the logs (they may be shipped): only to a
    // terminal.
    if let Some(token) = dev_token {
        info!(
            %listen,
            file = %token_file.display(),
            "dev admin token in use (no [admin] token, loopback only): the CLI reads it from the file"
        );
        if std::io::stderr().is_terminal() {
            eprintln!("status page: http://{listen}/  dev admin token: {token}");
        }
    }
    signal.await?;
    info!(grace_secs = grace.as_secs(), "shutting down");
    if let Err(e) = app.shutdown(grace).await {
        // Exit now: dropping the store would flush sled again, and that may be
        // what hung. sled recovers on the next start; unacked jobs return.
        error!(error = %e, "exiting without a clean shutdown");
        std::process::exit(1);
    }
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now; the future resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        Ok(())
    })
}
