//! `GET /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches` (declare a
//! batch's total), `POST /v1/batches/{id}/cancel` and `POST /v1/jobs/{id}/cancel`.
//!
//! A batch's counts are each instance's (every instance counts the jobs it
//! consumed); `/v1/batches/{id}` sums the fleet's, asking the others.

use std::collections::BTreeMap;
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::batch_eta::{Eta, eta};
use super::errors::ApiError;
use super::keys::fleet_key_views;
use super::monitor::Monitor;
use super::peers;
use crate::http::state::HttpState;
use keyrelay_core::store::batches::{BatchCounts, BatchMeta, Cancel};

/// One batch as the API shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchView {
    pub id: String,
    pub pool: String,
    /// Declared by the producer, else the jobs seen so far.
    pub total: u64,
    pub total_declared: bool,
    /// Not answered and not held by an instance: in the queue, or waiting
    /// out a retry's delay (`total - answered - running`).
    pub queued: u64,
    /// Held by an instance right now: in a call, or waiting for a key.
    pub running: u64,
    pub succeeded: u64,
    /// Failed jobs, by error kind.
    pub failed: BTreeMap<String, u64>,
    pub cost_usd: f64,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub cancelled_at: Option<String>,
    /// Answered jobs per second over the last minutes (this instance's view).
    pub rate_per_s: Option<f64>,
    pub eta: Option<Eta>,
    /// Jobs delivered at least once.
    pub seen: u64,
    /// Jobs answered, as each instance counted them (fleet sums only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_instance: BTreeMap<String, u64>,
}

impl BatchView {
    fn of(
        id: &str,
        meta: &BatchMeta,
        counts: &BatchCounts,
        cancelled_at: Option<String>,
        running: u64,
    ) -> BatchView {
        let mut view = BatchView {
            id: id.to_owned(),
            pool: meta.pool.clone(),
            total_declared: meta.declared_total.is_some(),
            succeeded: counts.succeeded,
            failed: counts.failed.clone(),
            cost_usd: counts.nano_usd as f64 / 1e9,
            started_at: Some(meta.started_at),
            finished_at: meta.finished_at,
            cancelled_at,
            seen: counts.seen,
            running,
            total: meta.declared_total.unwrap_or(0),
            ..BatchView::default()
        };
        view.settle();
        view
    }

    fn done(&self) -> u64 {
        self.succeeded + self.failed.values().sum::<u64>()
    }

    /// Derive the total and what is queued from the counts. Without a
    /// declared total, the jobs seen stand for it (each instance counts the
    /// jobs it was delivered: one redelivered to another counts twice).
    fn settle(&mut self) {
        if !self.total_declared {
            self.total = self.seen.max(self.done() + self.running);
        }
        self.queued = self
            .total
            .saturating_sub(self.done())
            .saturating_sub(self.running);
    }

    /// Add another instance's counts of the same batch.
    fn add(&mut self, other: &BatchView) {
        self.succeeded += other.succeeded;
        for (kind, n) in &other.failed {
            *self.failed.entry(kind.clone()).or_default() += n;
        }
        self.cost_usd += other.cost_usd;
        self.seen += other.seen;
        self.running += other.running;
        // Finished when the fleet's answers make the declared total.
        self.finished_at = self.finished_at.max(other.finished_at);
        if other.total_declared {
            self.total_declared = true;
            self.total = self.total.max(other.total);
        }
        self.started_at = match (self.started_at, other.started_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.settle();
        if !(self.total_declared && self.done() >= self.total) {
            self.finished_at = None;
        }
    }
}

fn local_view(state: &HttpState, id: &str) -> Result<Option<BatchView>, ApiError> {
    let Some(meta) = state.store.batch_meta(id)? else {
        return Ok(None);
    };
    let counts = state.store.batch_counts(id)?;
    let cancelled = state.store.cancelled(&Cancel::Batch(id))?;
    let running = state.batches_running.of(id);
    Ok(Some(BatchView::of(id, &meta, &counts, cancelled, running)))
}

/// `GET /v1/batches`: every batch this instance has seen, newest first.
pub async fn list(state: web::Data<HttpState>) -> Result<HttpResponse, ApiError> {
    let mut views = Vec::new();
    for (id, meta) in state.store.batches()? {
        let counts = state.store.batch_counts(&id)?;
        let cancelled = state.store.cancelled(&Cancel::Batch(&id))?;
        let running = state.batches_running.of(&id);
        views.push(BatchView::of(&id, &meta, &counts, cancelled, running));
    }
    views.sort_by_key(|v| std::cmp::Reverse(v.started_at));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "batches": views })))
}

/// `GET /v1/batches/{id}`: the fleet's counts, its rate and ETA.
pub async fn get(
    state: web::Data<HttpState>,
    monitor: web::Data<Monitor>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let local = local_view(&state, &id)?;
    if peers::local_only(&req) {
        return match local {
            Some(view) => Ok(HttpResponse::Ok().json(view)),
            None => Err(ApiError::NotFound(format!("no batch `{id}` here"))),
        };
    }
    let mut view = local.clone();
    let mut by_instance = BTreeMap::new();
    if let Some(v) = &local {
        by_instance.insert(state.fleet.borrow().me.clone(), v.done());
    }
    for peer in peers::others(&state) {
        let path = format!("/v1/batches/{id}");
        if let Ok((200, body)) = peers::ask(&peer, &req, reqwest::Method::GET, &path, None).await
            && let Ok(theirs) = serde_json::from_value::<BatchView>(body)
        {
            by_instance.insert(peer.beacon.instance.clone(), theirs.done());
            match &mut view {
                Some(v) => v.add(&theirs),
                None => view = Some(theirs),
            }
        }
    }
    let Some(mut view) = view else {
        return Err(ApiError::NotFound(format!("no batch `{id}`")));
    };
    view.by_instance = by_instance;
    view.rate_per_s = monitor.batch_rate(&id, Instant::now(), view.done(), view.started_at);
    view.eta = batch_eta(&state, &req, &view).await;
    Ok(HttpResponse::Ok().json(view))
}

async fn batch_eta(state: &HttpState, req: &HttpRequest, view: &BatchView) -> Option<Eta> {
    if view.finished_at.is_some() || view.cancelled_at.is_some() {
        return None;
    }
    let keys = fleet_key_views(state, req).await.ok()?;
    let quotas = super::batch_eta::pool_quotas(&state.config, &keys, &view.pool);
    let remaining = view.queued + view.running;
    eta(remaining, &quotas, view.rate_per_s, Timestamp::now())
}

/// `POST /v1/batches` body: declare a batch and its size before (or while)
/// its jobs are published.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declare {
    id: String,
    pool: String,
    total: u64,
}

pub async fn declare(
    state: web::Data<HttpState>,
    body: web::Json<Declare>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if !state.config.pools.iter().any(|p| p.name == body.pool) {
        return Err(ApiError::NotFound(format!("no pool `{}`", body.pool)));
    }
    keyrelay_core::job::valid_batch(&body.id).map_err(ApiError::BadRequest)?;
    state
        .store
        .batch_declare(&body.id, &body.pool, body.total, Timestamp::now())?;
    let view = local_view(&state, &body.id)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "batch": view })))
}

/// `POST /v1/batches/{id}/cancel`: its jobs not yet run are answered
/// `cancelled` without a call, on every instance.
pub async fn cancel_batch(
    state: web::Data<HttpState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    keyrelay_core::job::valid_batch(&id).map_err(ApiError::BadRequest)?;
    state.store.cancel(&Cancel::Batch(&id), Timestamp::now())?;
    let fleet = tell_the_fleet(&state, &req, &format!("/v1/batches/{id}/cancel")).await;
    tracing::info!(batch = %id, "batch cancelled by operator");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cancelled": id, "fleet": fleet })))
}

/// `POST /v1/jobs/{id}/cancel`.
pub async fn cancel_job(
    state: web::Data<HttpState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    state.store.cancel(&Cancel::Job(&id), Timestamp::now())?;
    let fleet = tell_the_fleet(&state, &req, &format!("/v1/jobs/{id}/cancel")).await;
    tracing::info!(job_id = %id, "job cancelled by operator");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cancelled": id, "fleet": fleet })))
}

/// POST `path` to every other instance (unless this request was passed on).
async fn tell_the_fleet(
    state: &HttpState,
    req: &HttpRequest,
    path: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut answers = serde_json::Map::new();
    if peers::local_only(req) {
        return answers;
    }
    for peer in peers::others(state) {
        let answer = match peers::ask(&peer, req, reqwest::Method::POST, path, None).await {
            Ok((200, _)) => "ok".to_owned(),
            Ok((status, body)) => format!("refused ({status}): {body}"),
            Err(e) => e.to_string(),
        };
        answers.insert(
            peer.beacon.instance.clone(),
            serde_json::Value::String(answer),
        );
    }
    answers
}
