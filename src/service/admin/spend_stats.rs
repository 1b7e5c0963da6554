//! `GET /v1/stats?by=pool|user|model` (and `by=key&source=spend`): spend
//! from the hourly counters kept as calls complete, not from a scan of the
//! results, so a month answers in milliseconds. `bucket=hour|day` splits
//! each group by time. Default window: this UTC month.

use std::collections::BTreeMap;

use actix_web::HttpResponse;
use jiff::Timestamp;
use serde::Serialize;

use super::errors::ApiError;
use crate::http::state::HttpState;
use keyrelay_core::spend::{SpendCount, SpendKey, from_nano};

/// One group's spend.
#[derive(Debug, Default, Serialize)]
pub struct SpendRow {
    pub cost_usd: f64,
    /// Billed calls counted.
    pub calls: u64,
    /// Of them, calls whose model has no price (not in `cost_usd`).
    pub unpriced_calls: u64,
}

impl SpendRow {
    fn add(&mut self, count: &SpendCount) {
        self.cost_usd += from_nano(count.nano_usd);
        self.calls += count.calls;
        self.unpriced_calls += count.unpriced;
    }
}

/// Spend grouped `by` (`pool`, `key`, `user`, `model`) between two hours,
/// optionally split into `bucket`s (`hour` or `day`).
pub async fn answer(
    state: &HttpState,
    by: &str,
    since: Timestamp,
    until: Timestamp,
    bucket: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) = (hour(since), hour(until));
    let store = state.store.clone();
    let rows = tokio::task::spawn_blocking(move || store.spend(Some(&from)))
        .await
        .map_err(|e| ApiError::Unavailable(format!("the spend query failed: {e}")))??;
    let mut groups: BTreeMap<String, SpendRow> = BTreeMap::new();
    let mut buckets: BTreeMap<String, BTreeMap<String, SpendRow>> = BTreeMap::new();
    for (key, count) in rows.iter().filter(|(k, _)| k.hour <= to) {
        let name = group_of(by, key);
        match bucket {
            Some(size) => buckets
                .entry(name)
                .or_default()
                .entry(bucket_of(size, &key.hour))
                .or_default()
                .add(count),
            None => groups.entry(name).or_default().add(count),
        }
    }
    let body = match bucket {
        Some(size) => serde_json::json!({
            "by": by, "bucket": size, "source": "spend", "since": since, "until": until, "groups": buckets,
        }),
        None => serde_json::json!({
            "by": by, "source": "spend", "since": since, "until": until, "groups": groups,
        }),
    };
    Ok(HttpResponse::Ok().json(body))
}

fn group_of(by: &str, key: &SpendKey) -> String {
    match by {
        "pool" => key.pool.clone(),
        "key" => format!("{}/{}", key.pool, key.key),
        "model" => key.model.clone(),
        // Jobs without a user are grouped under "-".
        _ if key.user.is_empty() => "-".to_owned(),
        _ => key.user.clone(),
    }
}

/// `2026-12-06T10` → `2026-12-06T10:00:00Z`, or its day `2026-12-06`.
fn bucket_of(size: &str, hour: &str) -> String {
    match size {
        "day" => hour.get(..10).unwrap_or(hour).to_owned(),
        _ => format!("{hour}:00:00Z"),
    }
}

fn hour(at: Timestamp) -> String {
    keyrelay_core::store::hour_of(at)
}

/// The start of the UTC month holding `now`.
pub fn month_start(now: Timestamp) -> Timestamp {
    now.to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .first_of_month()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_or(now, |z| z.timestamp())
}
