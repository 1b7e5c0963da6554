//! `keyrelay run`: start the service and run until SIGINT or SIGTERM.

use std::time::Duration;

use anyhow::Context as _;
use tracing::info;

use crate::app::App;
use crate::config::Config;

/// Run until a shutdown signal, then stop gracefully.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let grace = Duration::from_secs(config.jobs.shutdown_grace_secs);
    let app = App::start(config)
        .await
        .context("keyrelay could not start")?;
    wait_for_signal().await?;
    info!(grace_secs = grace.as_secs(), "shutting down");
    app.shutdown(grace).await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
