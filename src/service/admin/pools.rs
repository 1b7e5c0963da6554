//! `GET /v1/pools`: per pool, its queue depth (ready messages and consumers,
//! from the broker), this instance's jobs in flight, keys by state, and jobs
//! completed in the last minute (from the store).

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::errors::ApiError;
use super::heavy::HeavyReads;
use super::keys::{KeyView, fleet_key_views};
use super::monitor::queue_depth;
use crate::http::state::HttpState;
use keyrelay_core::store::Store;

/// Results scanned at most for the per-minute throughput.
const MINUTE_SCAN_CAP: usize = 100_000;

#[derive(Debug, Serialize)]
pub struct PoolView {
    pub name: String,
    pub provider: &'static str,
    pub queue: String,
    /// Messages ready in the queue; `None` when the broker could not be asked.
    pub ready: Option<u64>,
    /// Consumers on the queue (every instance's keys that are consuming).
    pub consumers: Option<u64>,
    /// Jobs this instance is running a provider call for. RabbitMQ's unacked
    /// count is only available through the management API, not used here.
    pub in_flight: usize,
    pub queue_error: Option<String>,
    pub keys_total: usize,
    pub keys_usable: usize,
    pub keys_by_state: BTreeMap<&'static str, usize>,
    /// Results stored in the last 60 s for this pool.
    pub jobs_last_minute: u64,
    /// Jobs completed per second over the last minutes (samples of the keys'
    /// counters at each request, at least 10 s apart); else the last minute's.
    pub rate_per_s: f64,
    /// When the ready jobs and those in flight will be done, and what limits
    /// it (the keys' rpm, their rpd left today, or the rate): see
    /// `batch_eta`. `None` with nothing to go on.
    pub drain: Option<super::batch_eta::Eta>,
    /// Jobs this instance completed in each of the last 30 minutes, oldest
    /// first (sampled every 15 s by the server, so a page reload keeps it).
    pub history_per_min: Vec<u64>,
}

pub async fn list(
    state: web::Data<HttpState>,
    heavy: web::Data<HeavyReads>,
    monitor: web::Data<super::monitor::Monitor>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let slot = heavy.enter().await?;
    // Each key as the instance driving it sees it.
    let keys = fleet_key_views(&state, &req).await?;
    let store = state.store.clone();
    let per_minute = slot
        .run("the last-minute scan", move || jobs_last_minute(&store))
        .await?;
    let mut pools = Vec::new();
    for pool in &state.config.pools {
        let queue = state.config.job_queue(&pool.name);
        let depth = queue_depth(&state.broker, &queue).await;
        let mine: Vec<&KeyView> = keys.iter().filter(|k| k.pool == pool.name).collect();
        let jobs_last_minute = per_minute.get(&pool.name).copied().unwrap_or(0);
        let completed: u64 = mine
            .iter()
            .filter_map(|k| k.counters.get("completed"))
            .sum();
        let rate_per_s = monitor
            .pool_rate(&pool.name, std::time::Instant::now(), completed)
            .unwrap_or(jobs_last_minute as f64 / 60.0);
        let in_flight: usize = mine.iter().map(|k| k.in_flight).sum();
        let drain = depth.as_ref().ok().and_then(|d| {
            let quotas = super::batch_eta::pool_quotas(&state.config, &keys, &pool.name);
            let remaining = d.ready + in_flight as u64;
            super::batch_eta::eta(remaining, &quotas, Some(rate_per_s), Timestamp::now())
        });
        let mut by_state = BTreeMap::new();
        for label in keyrelay_core::keys::KeyState::LABELS {
            by_state.insert(label, mine.iter().filter(|k| k.state == label).count());
        }
        pools.push(PoolView {
            provider: pool.provider.as_str(),
            ready: depth.as_ref().ok().map(|d| d.ready),
            consumers: depth.as_ref().ok().map(|d| d.consumers),
            queue_error: depth.err().map(|e| e.to_string()),
            in_flight: mine.iter().map(|k| k.in_flight).sum(),
            keys_total: mine.len(),
            keys_usable: mine.iter().filter(|k| k.usable()).count(),
            keys_by_state: by_state,
            jobs_last_minute,
            rate_per_s,
            drain,
            history_per_min: monitor.per_minute(&pool.name, Timestamp::now()),
            name: pool.name.clone(),
            queue,
        });
    }
    let dead = queue_depth(&state.broker, &state.config.jobs.dead_letter_queue).await;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "pools": pools,
        "dead_letters": {
            "queue": state.config.jobs.dead_letter_queue,
            "ready": dead.as_ref().ok().map(|d| d.ready),
            "error": dead.err().map(|e| e.to_string()),
        },
    })))
}

/// Blocking: scans the stored results of the last minute.
fn jobs_last_minute(store: &Store) -> Result<BTreeMap<String, u64>, ApiError> {
    let now = Timestamp::now();
    let mut counts = BTreeMap::new();
    store.scan_results(
        now - SignedDuration::from_secs(60),
        now,
        MINUTE_SCAN_CAP,
        |r| *counts.entry(r.pool.clone()).or_insert(0) += 1,
    )?;
    Ok(counts)
}
