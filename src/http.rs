//! The HTTP surface on `metrics.listen`: `/metrics`, `/healthz`, `/readyz`, and
//! the admin API under `/v1` (see [`crate::admin`]).

use std::net::SocketAddr;
use std::sync::Arc;

use actix::Addr;
use actix_web::{App as WebApp, HttpResponse, HttpServer, web};
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::warn;

use crate::actors::supervisor::Supervisor;
use crate::amqp::Broker;
use crate::app::AppError;
use crate::config::Config;
use crate::store::Store;

/// What HTTP handlers can reach.
#[derive(Clone)]
pub struct HttpState {
    pub prometheus: PrometheusHandle,
    pub broker: Arc<Broker>,
    pub supervisor: Addr<Supervisor>,
    pub store: Store,
    pub config: Arc<Config>,
}

/// Bind and start the server; returns its handle and the bound address.
pub fn serve(
    listen: SocketAddr,
    state: HttpState,
) -> Result<(actix_web::dev::ServerHandle, SocketAddr), AppError> {
    let admin = crate::admin::start(&state);
    // No handler blocks a worker: heavy admin reads run on threads of their
    // own, under a cap (`admin::heavy`). What a flood of admin requests still
    // costs a worker is parsing and refusing them; with two workers a probe
    // waits behind half of such a burst (`tests/admin_load.rs`).
    let server = HttpServer::new(move || {
        let admin = admin.clone();
        WebApp::new()
            .app_data(web::Data::new(state.clone()))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .configure(move |cfg| admin.routes(cfg))
    })
    .workers(2)
    .disable_signals()
    .bind(listen)
    .map_err(|source| AppError::Listen {
        addr: listen,
        source,
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

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    if state.broker.is_connected().await {
        HttpResponse::Ok().json(serde_json::json!({"ready": true}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"ready": false, "reason": "broker disconnected"}))
    }
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render(&state.prometheus))
}
