//! The HTTP server on `metrics.listen`: the probes and `/metrics`
//! ([`super::probes`]) and the admin API ([`crate::admin`]) on two workers.

use std::net::SocketAddr;

use actix_web::{App as WebApp, HttpServer, web};
use thiserror::Error;
use tracing::warn;

use super::probes;
use super::state::HttpState;

/// The HTTP listener could not be opened.
#[derive(Debug, Error)]
#[error("cannot listen on {addr} (metrics.listen, KEYRELAY__METRICS__LISTEN): {cause}")]
pub struct ListenError {
    /// The address `metrics.listen` names.
    pub addr: SocketAddr,
    /// Said in the message, not chained: one line, not the same words twice.
    pub cause: std::io::Error,
}

/// Bind the listener `metrics.listen` names: done first of all at start-up,
/// so a port in use stops keyrelay before anything else has started.
pub fn bind(listen: SocketAddr) -> Result<std::net::TcpListener, ListenError> {
    std::net::TcpListener::bind(listen).map_err(|cause| ListenError {
        addr: listen,
        cause,
    })
}

/// Start the server on `listener`; returns its handle and the bound address.
pub fn serve(
    listener: std::net::TcpListener,
    state: HttpState,
) -> Result<(actix_web::dev::ServerHandle, SocketAddr), ListenError> {
    let listen = listener.local_addr().map_err(|cause| ListenError {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        cause,
    })?;
    let admin = crate::admin::start(&state);
    // No handler blocks a worker: heavy admin reads run on threads of their
    // own, under a cap (`admin::heavy`). What a flood of admin requests still
    // costs a worker is parsing and refusing them; with two workers a probe
    // waits behind half of such a burst (`tests/admin_load.rs`).
    let server = HttpServer::new(move || {
        let admin = admin.clone();
        WebApp::new()
            .app_data(web::Data::new(state.clone()))
            .route("/healthz", web::get().to(probes::healthz))
            .route("/readyz", web::get().to(probes::readyz))
            .route("/metrics", web::get().to(probes::metrics))
            .configure(move |cfg| admin.routes(cfg))
    })
    .workers(2)
    .disable_signals()
    .listen(listener)
    .map_err(|cause| ListenError {
        addr: listen,
        cause,
    })?;
    let addr = server.addrs().first().copied().unwrap_or(listen);
    let server = server.run();
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            warn!(error = %e, "HTTP endpoint stopped");
        }
    });
    Ok((handle, addr))
}
