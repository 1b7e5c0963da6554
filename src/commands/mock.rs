//! `keyrelay mock-provider`: serve the mock provider API until interrupted.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;

use crate::mock_provider::{MockProvider, MockSettings};

pub async fn run(listen: SocketAddr, config: Option<&Path>) -> anyhow::Result<()> {
    let settings = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str::<MockSettings>(&text)
                .with_context(|| format!("{} is not valid mock settings", path.display()))?
        }
        None => anyhow::bail!("--config is required: the mock answers only the keys it is given"),
    };
    let mock = MockProvider::start(settings, listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!(
        "mock provider on {}: gemini {} | openai {} | anthropic {}",
        mock.addr(),
        mock.gemini_base_url(),
        mock.openai_base_url(),
        mock.anthropic_base_url()
    );
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for SIGINT")?;
    mock.stop().await;
    Ok(())
}
