//! `keyrelay-mock`: serve the mock provider API until interrupted (SIGINT or SIGTERM).
//!
//! The first line on stdout is `listening on ADDR`, so a parent process (the demo,
//! a script) can start it on port 0 and read where it landed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use keyrelay_mock::{MockProvider, MockSettings};

/// Serve a mock of the Gemini, OpenAI, Azure OpenAI and Anthropic APIs.
#[derive(Parser)]
#[command(name = "keyrelay-mock", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// TOML file with mock settings (keys, limits, latency); the mock answers only its keys.
    #[arg(long)]
    config: PathBuf,
}

#[actix_web::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyrelay-mock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let path = &args.config;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --config {}", path.display()))?;
    let settings = toml::from_str::<MockSettings>(&text)
        .with_context(|| format!("{} is not valid mock settings", path.display()))?;
    let mock = MockProvider::start(settings, args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", mock.addr())?;
    writeln!(
        out,
        "gemini {} | openai {} | anthropic {} | azure {}",
        mock.gemini_base_url(),
        mock.openai_base_url(),
        mock.anthropic_base_url(),
        mock.azure_base_url()
    )?;
    out.flush()?;
    drop(out);
    stopped().await?;
    mock.stop().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (the demo and compose stop it with either).
async fn stopped() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT"),
        _ = term.recv() => Ok(()),
    }
}
