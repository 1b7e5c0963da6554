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
use keyrelay_core::config::Config;
use keyrelay_core::readiness;
use keyrelay_core::store::Store;

/// What HTTP handlers can reach.
#[derive(Clone)]
pub struct HttpState {
    pub prometheus: PrometheusHandle,
    pub broker: Arc<Broker>,
    pub supervisor: Addr<Supervisor>,
    pub store: Store,
    pub config: Arc<Config>,
    /// Per pool: keys in rotation and keys consuming (from the supervisor).
    pub pool_consumers: tokio::sync::watch::Receiver<Vec<keyrelay_core::readiness::PoolConsumers>>,
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

/// 200 when keyrelay can do its work; 503 with every reason it cannot. Reads
/// only facts that are at hand (no lock held across I/O, no actor round trip).
async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let reasons = not_ready(&state);
    if reasons.is_empty() {
        return HttpResponse::Ok().json(serde_json::json!({"ready": true}));
    }
    let summary: Vec<String> = reasons.iter().map(reason_text).collect();
    HttpResponse::ServiceUnavailable().json(serde_json::json!({
        "ready": false,
        "reason": summary.join("; "),
        "reasons": reasons,
    }))
}

fn not_ready(state: &HttpState) -> Vec<readiness::NotReady> {
    let store_error = state.store.write_error();
    let pools = state.pool_consumers.borrow();
    readiness::assess(readiness::Facts {
        broker_connected: state.broker.is_connected(),
        store_error: store_error.as_deref(),
        pools: &pools,
    })
}

fn reason_text(reason: &readiness::NotReady) -> String {
    match reason {
        readiness::NotReady::Broker { reason } => format!("broker: {reason}"),
        readiness::NotReady::Store { reason } => format!("store: {reason}"),
        readiness::NotReady::Pool {
            pool,
            queue,
            reason,
        } => {
            format!("pool {pool} (queue {queue}): {reason}")
        }
    }
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    publish_readiness_gauges(&state);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(keyrelay_core::metrics::render(&state.prometheus))
}

/// The readiness facts as gauges, current at every scrape (the alert rules
/// read these; see docker/prometheus/alerts.yml).
fn publish_readiness_gauges(state: &HttpState) {
    use keyrelay_core::metrics as m;
    metrics::gauge!(m::BROKER_CONNECTED).set(f64::from(u8::from(state.broker.is_connected())));
    metrics::gauge!(m::STORE_WRITABLE)
        .set(f64::from(u8::from(state.store.write_error().is_none())));
    for pool in state.pool_consumers.borrow().iter() {
        metrics::gauge!(m::POOL_CONSUMERS, "pool" => pool.pool.clone()).set(pool.consuming as f64);
    }
}
