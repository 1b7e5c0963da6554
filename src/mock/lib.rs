//! A faithful mock of the Gemini, OpenAI, Azure OpenAI and Anthropic APIs, for tests, benches and the demo.
//!
//! It answers with the providers' real success and error bodies and headers, enforces
//! per-key rpm/rpd sliding windows, and injects faults on request (`[[mock:...]]`
//! directives in the last user message) or at random (`fault_rate`). Public API:
//! [`MockProvider`], [`MockSettings`], [`MockKey`], [`MockStats`].

mod anthropic;
mod api;
mod azure;
mod bodies;
mod call_log;
mod common;
mod directives;
mod gemini;
mod handler;
mod openai;
mod replay;
mod routes;
mod settings;
mod state;
mod stats;
mod structured;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_faults;
#[cfg(test)]
mod tests_keys;

use std::io;
use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};

pub use call_log::CallRecord;
pub use settings::{MockKey, MockSettings, UNKNOWN_LABEL};
pub use stats::{KeyStats, MockStats};

use state::MockState;

/// Largest request body accepted (the real APIs accept about 20-32 MB).
const BODY_LIMIT: usize = 32 * 1024 * 1024;
/// Two workers: enough for concurrent slow answers, cheap to start in every test.
const WORKERS: usize = 2;

/// A running mock provider on one listener.
pub struct MockProvider {
    addr: SocketAddr,
    state: web::Data<MockState>,
    handle: ServerHandle,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl MockProvider {
    /// Binds `listen` (port 0 picks a free port) and serves in the background.
    ///
    /// Works from any tokio runtime, actix `System`s included: the server runs its
    /// own worker threads and its driving future is spawned with `tokio::spawn`.
    pub async fn start(settings: MockSettings, listen: SocketAddr) -> io::Result<MockProvider> {
        settings
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let state = web::Data::new(MockState::new(&settings));
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(web::PayloadConfig::new(BODY_LIMIT))
                .configure(routes::configure)
        })
        .workers(WORKERS)
        .disable_signals()
        .shutdown_timeout(1)
        // HTTP/1.1 and cleartext HTTP/2 (prior knowledge) on one port: real providers
        // speak HTTP/2, and a pool with `http2_prior_knowledge = true` uses it here.
        .bind_auto_h2c(listen)?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .ok_or_else(|| io::Error::other("the mock provider bound no address"))?;
        let server = server.run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        tracing::info!(%addr, keys = settings.keys.len(), "mock provider listening");
        Ok(MockProvider {
            addr,
            state,
            handle,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for Gemini clients (they append `/v1beta/models/...`).
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Base URL for OpenAI-compatible clients (they append `/chat/completions`).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for Azure OpenAI clients (they append
    /// `/openai/deployments/{deployment}/chat/completions`).
    pub fn azure_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Base URL for Anthropic clients (they append `/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.state.stats()
    }

    /// Every request so far, when `record_calls` is on.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.state.calls.calls()
    }

    /// Spends the key's daily quota for one `day` window from now (unknown labels: no-op).
    pub fn exhaust(&self, label: &str) {
        if !self.state.exhaust(label) {
            tracing::warn!(label, "mock exhaust: no such key");
        }
    }

    /// Makes the key answer as an invalid key until restored.
    pub fn revoke(&self, label: &str) {
        if !self.state.revoke(label) {
            tracing::warn!(label, "mock revoke: no such key");
        }
    }

    /// Undoes `revoke` and `exhaust`.
    pub fn restore(&self, label: &str) {
        if !self.state.restore(label) {
            tracing::warn!(label, "mock restore: no such key");
        }
    }

    /// Clears windows, flags and counters, as right after start.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Stops the server (without waiting for open connections) and waits for it.
    pub async fn stop(mut self) {
        self.handle.stop(false).await;
        if let Some(task) = self.task.take()
            && let Ok(Err(e)) = task.await
        {
            tracing::warn!(error = %e, "mock provider stopped with an error");
        }
    }
}

impl Drop for MockProvider {
    // A mock dropped without `stop` (a failing test) must not leave worker threads behind.
    fn drop(&mut self) {
        if self.task.is_some() {
            // The stop command is sent when `stop` is called; the future only awaits it.
            drop(self.handle.stop(false));
        }
    }
}
