//! `GET /v1/alerts`: the conditions of `docker/prometheus/alerts.yml` that
//! keyrelay can judge by itself, evaluated now (no `for:` durations).
//!
//! - `KeyrelayPoolNoKeyAvailable`: no key of a pool is usable.
//! - `KeyrelayPoolDegraded`: fewer than `admin.pool_degraded_below` (0.75) of
//!   a pool's keys are usable.
//! - `KeyrelayKeyDisabled`: a key is disabled (revoked or by an operator).
//! - `KeyrelayKeyUpstreamFailures`: a key's stored results of the last 10
//!   minutes hold at least 3 failures and at least 20 % of them failed
//!   (Prometheus judges provider calls instead; keyrelay keeps no call history).
//! - `KeyrelayDeadLettersGrowing`: the dead-letter queue is deeper than at its
//!   lowest in the last 10 minutes (samples every 15 s and on each request).
//!
//! - `KeyrelayKeyNearDailyLimit`: a key has used over 80 % of a declared daily
//!   limit (`rpd` or `tpd`).
//! - `KeyrelayBudgetNearlySpent` (warning, 80 %) and `KeyrelayBudgetSpent`
//!   (critical, 100 %): a key, pool or user has spent that share of a budget.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::errors::ApiError;
use super::heavy::{HeavyReads, Slot};
use super::keys::{KeyView, fleet_key_views};
use super::monitor::{Monitor, queue_depth};
use crate::http::state::HttpState;
use keyrelay_core::store::Store;

const FAILURE_WINDOW: SignedDuration = SignedDuration::from_secs(600);
const FAILURE_MIN: u64 = 3;
const FAILURE_RATIO: f64 = 0.2;

#[derive(Debug, Serialize)]
pub struct Alert {
    pub name: &'static str,
    pub severity: &'static str,
    pub pool: Option<String>,
    pub key: Option<String>,
    pub message: String,
}

pub async fn list(
    state: web::Data<HttpState>,
    monitor: web::Data<Monitor>,
    heavy: web::Data<HeavyReads>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let slot = heavy.enter().await?;
    let alerts = evaluate(&state, &monitor, &slot, &req).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "alerts": alerts })))
}

/// Keys past 80 % of a declared daily limit.
fn daily_limit_alerts(keys: &[KeyView]) -> Vec<Alert> {
    keys.iter()
        .filter_map(|k| Some((k, k.daily_share.filter(|s| *s > 0.8)?)))
        .map(|(k, share)| Alert {
            name: "KeyrelayKeyNearDailyLimit",
            severity: "info",
            pool: Some(k.pool.clone()),
            key: Some(k.name.clone()),
            message: format!(
                "key {}/{} has used {:.0} % of its daily limit; it resets at {}",
                k.pool,
                k.name,
                share * 100.0,
                k.usage.day_ends
            ),
        })
        .collect()
}

/// Budgets at 80 % (warning) and 100 % (critical) of their period.
fn budget_alerts(state: &HttpState) -> Vec<Alert> {
    state
        .spend
        .status(Timestamp::now())
        .into_iter()
        .filter(|b| b.share() >= super::budgets::WARN_SHARE)
        .map(|b| {
            let spent = b.share() >= 1.0;
            let (pool, key) = match b.scope {
                keyrelay_core::spend::BudgetScope::Key => match b.name.split_once('/') {
                    Some((p, k)) => (Some(p.to_owned()), Some(k.to_owned())),
                    None => (None, None),
                },
                _ => (b.name.split('/').next().map(str::to_owned), None),
            };
            Alert {
                name: if spent {
                    "KeyrelayBudgetSpent"
                } else {
                    "KeyrelayBudgetNearlySpent"
                },
                severity: if spent { "critical" } else { "warning" },
                pool,
                key,
                message: format!(
                    "{} {} has spent ${:.2} of its {} of ${:.2} ({:.0} %); it resets at {}",
                    b.scope.as_str(),
                    b.name,
                    b.spent_usd,
                    b.period.setting(),
                    b.limit_usd,
                    b.share() * 100.0,
                    b.resets_at
                ),
            }
        })
        .collect()
}

pub async fn evaluate(
    state: &HttpState,
    monitor: &Monitor,
    slot: &Slot,
    req: &HttpRequest,
) -> Result<Vec<Alert>, ApiError> {
    // Each key as the instance driving it sees it.
    let keys = fleet_key_views(state, req).await?;
    let mut alerts = pool_alerts(state, &keys);
    for key in keys.iter().filter(|k| k.state == "disabled") {
        alerts.push(Alert {
            name: "KeyrelayKeyDisabled",
            severity: "warning",
            pool: Some(key.pool.clone()),
            key: Some(key.name.clone()),
            message: format!(
                "key {}/{} is disabled ({}); fix it, then `keyrelay keys enable {} {}`",
                key.pool,
                key.name,
                key.reason.as_deref().unwrap_or("no reason"),
                key.pool,
                key.name
            ),
        });
    }
    let store = state.store.clone();
    alerts.extend(
        slot.run("the failure-window scan", move || failure_alerts(&store))
            .await?,
    );
    alerts.extend(daily_limit_alerts(&keys));
    alerts.extend(budget_alerts(state));
    if let Ok(depth) = queue_depth(&state.broker, &state.config.jobs.dead_letter_queue).await {
        monitor.record_dead_letters(Timestamp::now(), depth.ready);
    }
    let growth = monitor.dead_letter_growth();
    if growth > 0 {
        alerts.push(Alert {
            name: "KeyrelayDeadLettersGrowing",
            severity: "warning",
            pool: None,
            key: None,
            message: format!(
                "{growth} more message(s) in {} than 10 minutes ago; inspect with `keyrelay dead-letters list`",
                state.config.jobs.dead_letter_queue
            ),
        });
    }
    Ok(alerts)
}

fn pool_alerts(state: &HttpState, keys: &[KeyView]) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for pool in &state.config.pools {
        let total = keys.iter().filter(|k| k.pool == pool.name).count();
        let usable = keys
            .iter()
            .filter(|k| k.pool == pool.name && k.usable())
            .count();
        let (name, severity, what) = if usable == 0 {
            (
                "KeyrelayPoolNoKeyAvailable",
                "critical",
                "no key is usable; its jobs wait in the queue",
            )
        } else if (usable as f64) < (total as f64) * state.config.admin.pool_degraded_below {
            (
                "KeyrelayPoolDegraded",
                "warning",
                "fewer of its keys are usable than admin.pool_degraded_below asks",
            )
        } else {
            continue;
        };
        alerts.push(Alert {
            name,
            severity,
            pool: Some(pool.name.clone()),
            key: None,
            message: format!("pool {}: {what} ({usable} of {total})", pool.name),
        });
    }
    alerts
}

/// Blocking: scans the stored results of the last 10 minutes.
fn failure_alerts(store: &Store) -> Result<Vec<Alert>, ApiError> {
    let now = Timestamp::now();
    let mut per_key: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    store.scan_results(now - FAILURE_WINDOW, now, 100_000, |r| {
        if let Some(key) = &r.key {
            let entry = per_key.entry((r.pool.clone(), key.clone())).or_default();
            entry.0 += 1;
            entry.1 += u64::from(!r.is_success());
        }
    })?;
    Ok(per_key
        .into_iter()
        .filter(|(_, (all, failed))| {
            *failed >= FAILURE_MIN && *failed as f64 >= FAILURE_RATIO * *all as f64
        })
        .map(|((pool, key), (all, failed))| Alert {
            name: "KeyrelayKeyUpstreamFailures",
            severity: "warning",
            message: format!(
                "key {pool}/{key}: {failed} of its last {all} jobs failed in 10 minutes"
            ),
            pool: Some(pool),
            key: Some(key),
        })
        .collect())
}
