//! `/healthz` (the process is alive), `/readyz` (keyrelay can do its work
//! right now, or every reason it cannot) and `/metrics` (the Prometheus scrape).

use actix_web::{HttpResponse, web};

use super::state::HttpState;
use keyrelay_core::readiness;

pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// 200 when keyrelay can do its work; 503 with every reason it cannot. Reads
/// only facts that are at hand (no lock held across I/O, no actor round trip).
pub(super) async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
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

pub(super) async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
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
