//! The admin API under `/v1` (JSON, bearer-token auth): pools, keys, jobs,
//! stats, alerts, budgets, the fleet; the status page at `/`; and the queue-depth poller.
//! Documented in `docs/api.md` and `docs/openapi.yaml`.

pub mod alerts;
pub mod auth;
pub mod batch_eta;
pub mod batches;
pub mod budgets;
pub mod errors;
pub mod heavy;
pub mod jobs;
pub mod keys;
pub mod monitor;
pub mod params;
pub mod peers;
pub mod pools;
pub mod spend_stats;
pub mod stats;
pub mod status;

use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, web};

use crate::http::state::HttpState;
pub use errors::ApiError;
pub use heavy::HeavyReads;
pub use monitor::Monitor;

/// Largest request body read at all, unless `jobs.max_body_bytes` is larger
/// (a job with inline images); job bodies over `jobs.max_body_bytes` are
/// refused by the job decoder with a 400 naming the limit.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// What the admin handlers of every HTTP worker share.
#[derive(Clone)]
pub struct Shared {
    monitor: web::Data<Monitor>,
    heavy: web::Data<HeavyReads>,
    body_limit: usize,
}

/// Start the background work of the operations surface (the queue-depth
/// poller) and the heavy-read cap; mount them with [`Shared::routes`].
pub fn start(state: &HttpState) -> Shared {
    let monitor = Arc::new(Monitor::default());
    monitor::start(
        &state.broker,
        state.config.clone(),
        &state.store,
        monitor.clone(),
    );
    Shared {
        monitor: web::Data::from(monitor),
        heavy: web::Data::new(HeavyReads::new(state.config.admin.max_heavy_reads)),
        // One byte over the job limit, so the decoder, not the extractor,
        // answers an oversized job (with a message naming the limit).
        body_limit: BODY_LIMIT.max(state.config.jobs.max_body_bytes.saturating_add(1)),
    }
}

impl Shared {
    /// Mount the status page and the `/v1` routes, with the shared state.
    pub fn routes(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.monitor.clone())
            .app_data(self.heavy.clone())
            .app_data(web::PayloadConfig::new(self.body_limit));
        routes(cfg);
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PathConfig::default().error_handler(|e, _| errors::extractor_error(e)))
        .app_data(web::QueryConfig::default().error_handler(|e, _| errors::extractor_error(e)))
        .route("/", web::get().to(status::page))
        .service(
            web::scope("/v1")
                .wrap(from_fn(auth::require_token))
                .route("/pools", web::get().to(pools::list))
                .route("/keys", web::get().to(keys::list))
                .route("/keys/{pool}/{name}/{action}", web::post().to(keys::act))
                .route("/jobs", web::get().to(jobs::list))
                .route("/jobs", web::post().to(jobs::submit))
                .route("/jobs/{id}", web::get().to(jobs::get))
                .route("/jobs/{id}/cancel", web::post().to(batches::cancel_job))
                .route("/batches", web::get().to(batches::list))
                .route("/batches", web::post().to(batches::declare))
                .route("/batches/{id}", web::get().to(batches::get))
                .route(
                    "/batches/{id}/cancel",
                    web::post().to(batches::cancel_batch),
                )
                .route("/stats", web::get().to(stats::get))
                .route("/alerts", web::get().to(alerts::list))
                .route("/budgets", web::get().to(budgets::list))
                .route("/budgets", web::put().to(budgets::set))
                .route("/fleet", web::get().to(peers::fleet))
                .default_service(web::to(not_found)),
        );
}

async fn not_found() -> HttpResponse {
    ApiError::NotFound("no such endpoint or method (see docs/api.md)".into()).into()
}

impl From<ApiError> for HttpResponse {
    fn from(e: ApiError) -> HttpResponse {
        actix_web::ResponseError::error_response(&e)
    }
}
