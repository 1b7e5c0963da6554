//! `GET /v1/stats?since=&by=hour|key|error|upstream|pool|user|model`.
//!
//! `by=pool|user|model` (and `by=key&source=spend`) read the hourly spend
//! counters (see `spend_stats`).
//!
//! `by=upstream` reads the per-key, per-hour provider-call statistics the
//! supervisor records (requests, outcomes by class, tokens, latency sum),
//! kept `jobs.stats_retention_days`.
//!
//! Two sources. Without `since`, `by=key` and `by=error` read the per-key
//! counters in the store (lifetime totals since the key's last reset; jobs
//! without a key, such as invalid ones, are not in them). With `since`, and
//! always for `by=hour` (default: the last 24 h), the stored results in the
//! window are aggregated (at most 200 000 of them; `truncated` says when more
//! existed). There are no pre-aggregated per-hour statistics in the store.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::errors::ApiError;
use super::heavy::{HeavyReads, Slot};
use super::params::Params;
use crate::http::state::HttpState;
use keyrelay_core::job::JobResult;
use keyrelay_core::spend::from_nano;

const SCAN_CAP: usize = 200_000;

#[derive(Debug, Default, Serialize)]
struct Row {
    completed: u64,
    succeeded: u64,
    failed: u64,
    input_tokens: u64,
    output_tokens: u64,
    /// What the jobs' calls cost (unpriced models count 0).
    cost_usd: f64,
    /// Answered from the response cache (no call).
    cached: u64,
    /// Needed more than one provider call.
    retried: u64,
    /// Only from results: mean latency in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    mean_latency_ms: Option<u64>,
    #[serde(skip)]
    latency_sum: u64,
}

/// Hourly provider-call statistics: hour → key → field → value.
async fn upstream(
    state: &HttpState,
    slot: &Slot,
    since: Timestamp,
) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let (rows, spend) = slot
        .run("the stats query", move || {
            let hour = keyrelay_core::store::hour_of(since);
            Ok((store.usage(Some(since))?, store.spend(Some(&hour))?))
        })
        .await?;
    let mut groups: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>> = BTreeMap::new();
    for row in rows {
        let hour = format!("{}:00:00Z", row.hour);
        groups
            .entry(hour)
            .or_default()
            .entry(row.key)
            .or_default()
            .insert(row.field, row.value);
    }
    let mut groups = serde_json::to_value(groups).unwrap_or_default();
    for (key, count) in spend {
        let (hour, name) = (
            format!("{}:00:00Z", key.hour),
            format!("{}/{}", key.pool, key.key),
        );
        if let Some(group) = groups.get_mut(&hour).and_then(|h| h.get_mut(&name)) {
            let so_far = group["cost_usd"].as_f64().unwrap_or(0.0);
            group["cost_usd"] = serde_json::json!(so_far + from_nano(count.nano_usd));
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "by": "upstream", "source": "usage", "since": since, "groups": groups
    })))
}

/// The per-key counters are read on the spot (one prefix scan per key); the
/// result and usage scans take a heavy-read slot and run off the HTTP worker.
pub async fn get(
    state: web::Data<HttpState>,
    heavy: web::Data<HeavyReads>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(
        req.query_string(),
        &["since", "until", "by", "bucket", "source"],
    )?;
    let by = p.choice(
        "by",
        &["hour", "key", "error", "upstream", "pool", "user", "model"],
        "key",
    )?;
    let now = Timestamp::now();
    let source = p.choice("source", &["results", "spend"], "results")?;
    let spend_by = matches!(by, "pool" | "user" | "model" | "key");
    if source == "spend" && !spend_by {
        return Err(ApiError::bad(format!(
            "`source=spend` groups by pool, key, user or model, not `{by}`"
        )));
    }
    if matches!(by, "pool" | "user" | "model") || source == "spend" {
        let since = p
            .time("since", now)?
            .unwrap_or(super::spend_stats::month_start(now));
        let until = p.time("until", now)?.unwrap_or(now);
        if since > until {
            return Err(ApiError::bad("`since` is after `until`"));
        }
        let bucket = p.optional_choice("bucket", &["hour", "day"])?;
        return super::spend_stats::answer(&state, by, since, until, bucket).await;
    }
    if p.text("bucket").is_some() {
        return Err(ApiError::bad(
            "`bucket` splits spend (`by=pool|user|model` or `source=spend`) only",
        ));
    }
    if by == "upstream" {
        let since = p
            .time("since", now)?
            .unwrap_or(now - SignedDuration::from_hours(24));
        let slot = heavy.enter().await?;
        return upstream(&state, &slot, since).await;
    }
    let until = p.time("until", now)?.unwrap_or(now);
    let since = p.time("since", now)?;
    if since.is_none() && by != "hour" {
        return counters(&state, by).await;
    }
    let since = since.unwrap_or(now - SignedDuration::from_hours(24));
    if since > until {
        return Err(ApiError::bad("`since` is after `until`"));
    }
    let slot = heavy.enter().await?;
    let store = state.store.clone();
    let group = by.to_owned();
    let (rows, truncated) = slot
        .run("the stats query", move || {
            let mut rows: BTreeMap<String, Row> = BTreeMap::new();
            let truncated = store.scan_results(since, until, SCAN_CAP, |r| {
                add(rows.entry(group_of(&group, r)).or_default(), r)
            })?;
            Ok((rows, truncated))
        })
        .await?;
    let rows: BTreeMap<String, Row> = rows
        .into_iter()
        .map(|(k, mut row)| {
            row.mean_latency_ms = row.latency_sum.checked_div(row.completed);
            (k, row)
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "by": by, "source": "results", "since": since, "until": until,
        "truncated": truncated, "groups": rows,
    })))
}

fn group_of(by: &str, r: &JobResult) -> String {
    match by {
        "hour" => r
            .completed_at
            .round(
                jiff::TimestampRound::new()
                    .smallest(jiff::Unit::Hour)
                    .mode(jiff::RoundMode::Trunc),
            )
            .unwrap_or(r.completed_at)
            .to_string(),
        "key" => format!("{}/{}", r.pool, r.key.as_deref().unwrap_or("-")),
        _ => r.outcome_label().to_owned(),
    }
}

fn add(row: &mut Row, r: &JobResult) {
    row.completed += 1;
    if r.is_success() {
        row.succeeded += 1;
    } else {
        row.failed += 1;
    }
    row.input_tokens += r.usage.input_tokens;
    row.output_tokens += r.usage.output_tokens;
    row.cost_usd += r.usage.cost_usd.unwrap_or(0.0);
    row.latency_sum += r.latency_ms;
    row.cached += u64::from(r.cached);
    row.retried += u64::from(r.attempts > 1);
}

/// Lifetime counters per key, or summed per outcome.
async fn counters(state: &HttpState, by: &str) -> Result<HttpResponse, ApiError> {
    let mut groups: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for pool in &state.config.pools {
        for key in &pool.keys {
            let name = format!("{}/{}", pool.name, key.name);
            for (counter, n) in state.store.counters(&name)? {
                if by == "key" {
                    *groups
                        .entry(name.clone())
                        .or_default()
                        .entry(counter)
                        .or_default() += n;
                } else if counter != "completed" {
                    *groups
                        .entry(counter)
                        .or_default()
                        .entry("completed".into())
                        .or_default() += n;
                }
            }
        }
    }
    let mut groups = serde_json::to_value(groups).unwrap_or_default();
    if by == "key" {
        // What each key's calls cost, from the spend counters (all kept).
        for (spend, count) in state.store.spend(None)? {
            let name = format!("{}/{}", spend.pool, spend.key);
            if let Some(group) = groups.get_mut(&name) {
                let so_far = group["cost_usd"].as_f64().unwrap_or(0.0);
                group["cost_usd"] = serde_json::json!(so_far + from_nano(count.nano_usd));
            }
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "by": by, "source": "counters", "since": null, "until": Timestamp::now(),
        "truncated": false, "groups": groups,
        "note": "lifetime per-key counters (since each key's last reset); pass `since` to aggregate stored results instead",
    })))
}
