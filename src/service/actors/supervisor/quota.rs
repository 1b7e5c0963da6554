//! The supervisor's quota bookkeeping: declared budgets running out, repeated
//! transient failures, quota groups, probes after a reset, and persisting
//! budgets so a restart does not forget what a key has already spent.

use std::time::Duration;

use actix::prelude::*;
use tracing::{info, warn};

use super::state::Supervisor;
use crate::actors::messages::BudgetSpent;
use keyrelay_core::keys::{KeyId, KeyState, Spent};
use keyrelay_core::metrics as m;

/// How often changed budgets are written to the store.
pub(super) const BUDGET_PERSIST_EVERY: Duration = Duration::from_secs(1);
/// How often old statistics and cached answers are pruned.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Seconds until one of `states` is usable: 0 if one is now, infinity if all
/// are disabled.
pub fn next_usable_in<'a>(states: impl Iterator<Item = &'a KeyState>, now: jiff::Timestamp) -> f64 {
    let mut soonest = f64::INFINITY;
    for state in states {
        match state.until() {
            _ if state.is_available() => return 0.0,
            Some(until) => soonest = soonest.min(until.duration_since(now).as_secs_f64().max(0.0)),
            None => {}
        }
    }
    soonest
}

impl Handler<BudgetSpent> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: BudgetSpent, ctx: &mut Self::Context) {
        let blocked = msg.blocked;
        let reason = format!("declared {} limit reached", blocked.limit);
        let next = match blocked.spent {
            Spent::Window => KeyState::CoolingDown {
                until: blocked.until,
                reason,
            },
            Spent::Day => KeyState::Exhausted {
                until: blocked.until,
                reason,
            },
        };
        let slot = &self.keys[msg.key.0];
        if !slot.state.is_superseded_by(&next) {
            return;
        }
        info!(pool = %slot.ctx.pool.name, key = %slot.ctx.name, limit = blocked.limit, until = %blocked.until, "key budget spent; parked until it returns");
        self.apply(msg.key, next, true, ctx);
    }
}

impl Supervisor {
    /// A success: clears restart backoff, transient history and probing.
    pub(super) fn on_success(&mut self, key: KeyId) {
        let slot = &mut self.keys[key.0];
        slot.restarts = 0;
        slot.transient.success();
        slot.ctx.set_report_success(false);
        if slot.ctx.is_probing() {
            slot.ctx.set_probing(false);
            info!(pool = %slot.ctx.pool.name, key = %slot.ctx.name, "probe succeeded; key fully back");
        }
    }

    /// A transient failure: a cooldown once they repeat.
    pub(super) fn after_transient(&mut self, key: KeyId, now: jiff::Timestamp) -> Option<KeyState> {
        let cooldown = self.keys[key.0].transient.failure(now)?;
        let until = now
            .checked_add(jiff::SignedDuration::try_from(cooldown).ok()?)
            .ok()?;
        Some(KeyState::CoolingDown {
            until,
            reason: format!(
                "repeated transient failures; resting {} s",
                cooldown.as_secs()
            ),
        })
    }

    /// A daily exhaustion of one key parks every key of its quota group.
    pub(super) fn park_quota_group(
        &mut self,
        key: KeyId,
        state: &KeyState,
        ctx: &mut Context<Self>,
    ) {
        let Some(group) = self.keys[key.0].ctx.quota_group.clone() else {
            return;
        };
        let members: Vec<KeyId> = (0..self.keys.len())
            .map(KeyId)
            .filter(|id| {
                *id != key && self.keys[id.0].ctx.quota_group.as_deref() == Some(group.as_str())
            })
            .filter(|id| self.keys[id.0].state.is_superseded_by(state))
            .collect();
        for member in members {
            warn!(key = %self.keys[member.0].ctx.store_key, group = %group, "quota group exhausted; parking key");
            self.apply(member, state.clone(), true, ctx);
        }
    }

    /// Write each key's calls since the last flush to the hourly usage
    /// statistics (once a second: calls are tallied by the job tasks).
    pub(super) fn flush_usage(&mut self) {
        let now = jiff::Timestamp::now();
        for slot in &self.keys {
            let fields = slot.ctx.calls.drain();
            if fields.is_empty() {
                continue;
            }
            let store_key = &slot.ctx.store_key;
            if let Err(e) = self.services.store.add_usage(store_key, now, &fields) {
                warn!(key = %store_key, error = %e, "cannot record usage statistics");
            }
        }
    }

    /// Write the spend counted since the last flush, and publish how much
    /// of each key's and pool's budget is used. Counts that cannot be
    /// written wait for the next flush.
    pub(super) fn flush_spend(&mut self) {
        let spend = self.services.spend.clone();
        let mut rows = spend.take_pending().into_iter();
        // Row by row: a failure puts back only the rows not written.
        while let Some(row) = rows.next() {
            if let Err(e) = self.services.store.add_spend(std::slice::from_ref(&row)) {
                warn!(error = %e, "cannot record spend statistics");
                spend.restore_pending(std::iter::once(row).chain(rows).collect());
                break;
            }
        }
        let mut published = std::collections::HashSet::new();
        for status in spend.status(jiff::Timestamp::now()) {
            if status.scope == keyrelay_core::spend::BudgetScope::User {
                // Users are unbounded: in /v1/budgets and /v1/alerts only.
                continue;
            }
            let period = match status.period {
                keyrelay_core::spend::Period::Day => "day",
                keyrelay_core::spend::Period::Month => "month",
            };
            let series = (status.scope.as_str(), status.name.clone(), period);
            metrics::gauge!(keyrelay_core::metrics::BUDGET_USED_RATIO, "scope" => series.0, "name" => series.1.clone(), "period" => series.2)
                .set(status.share());
            published.insert(series);
        }
        for (scope, name, period) in self.budget_series.difference(&published) {
            metrics::gauge!(keyrelay_core::metrics::BUDGET_USED_RATIO, "scope" => *scope, "name" => name.clone(), "period" => *period)
                .set(0.0);
        }
        self.budget_series = published;
    }

    /// Drop results, usage statistics and cached answers past their
    /// retention, on a blocking thread: scans must not hold up the supervisor.
    pub(super) fn prune_store(&self) {
        let store = self.services.store.clone();
        let days = i64::from(self.services.jobs.stats_retention_days);
        let result_days = i64::from(self.services.jobs.results_retention_days);
        tokio::task::spawn_blocking(move || {
            if result_days > 0
                && let Ok(cutoff) = jiff::Timestamp::now()
                    .checked_sub(jiff::SignedDuration::from_hours(24 * result_days))
            {
                match store.prune_results(cutoff) {
                    Ok(n) if n > 0 => info!(removed = n, "pruned results past their retention"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "cannot prune old results"),
                }
                // Cancellations are kept as long as results (and checked
                // on every delivery while any exist).
                match store.prune_cancellations(cutoff) {
                    Ok(n) if n > 0 => info!(
                        removed = n,
                        "pruned cancellations past the results' retention"
                    ),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "cannot prune old cancellations"),
                }
            }
            if let Ok(cutoff) =
                jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(24 * days))
            {
                match store.prune_usage(cutoff) {
                    Ok(n) if n > 0 => info!(removed = n, "pruned old usage statistics"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "cannot prune usage statistics"),
                }
            }
            store.prune_cache();
        });
    }

    /// Every second: quota gauges per key, next-usable time per pool.
    pub(super) fn publish_quota_gauges(&self) {
        let now = jiff::Timestamp::now();
        for slot in self.keys.iter().filter(|s| !s.ctx.limits.is_unlimited()) {
            let (limits, usage) = (slot.ctx.limits, slot.ctx.usage());
            let minute = [
                limits
                    .rpm
                    .map(|l| usage.window_requests as f64 / f64::from(l.max(1))),
                limits
                    .tpm
                    .map(|l| usage.window_tokens as f64 / l.max(1) as f64),
            ];
            if let Some(share) = minute.into_iter().flatten().reduce(f64::max) {
                slot.ctx.metrics.quota_used(m::QuotaWindow::Minute, share);
            }
            if let Some(share) = usage.daily_share(&limits) {
                slot.ctx.metrics.quota_used(m::QuotaWindow::Day, share);
            }
        }
        for pool in &self.pools {
            let states = pool.keys.iter().map(|k| &self.keys[k.0].state);
            let wait = next_usable_in(states, now);
            metrics::gauge!(m::POOL_NEXT_KEY_SECONDS, "pool" => pool.ctx.name.clone()).set(wait);
        }
    }

    /// Write every budget that changed since the last time.
    pub(super) fn persist_budgets(&self) {
        for slot in &self.keys {
            if let Some(budget) = slot.ctx.budget_if_changed()
                && let Err(e) = self
                    .services
                    .store
                    .save_budget(&slot.ctx.store_key, &budget)
            {
                warn!(key = %slot.ctx.store_key, error = %e, "cannot persist key budget");
            }
        }
    }

    /// Restore budgets saved by an earlier run (start-up).
    pub(super) fn restore_budgets(&self) {
        for slot in &self.keys {
            match self.services.store.budget(&slot.ctx.store_key) {
                Ok(Some(budget)) => slot.ctx.restore_budget(budget),
                Ok(None) => {}
                Err(e) => {
                    warn!(key = %slot.ctx.store_key, error = %e, "stored budget unreadable; starting fresh")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_usable_in_picks_the_soonest_return() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let cool = KeyState::CoolingDown {
            until: at("2026-01-01T00:00:30Z"),
            reason: "r".into(),
        };
        let spent = KeyState::Exhausted {
            until: at("2026-01-01T08:00:00Z"),
            reason: "r".into(),
        };
        let off = KeyState::Disabled { reason: "r".into() };
        assert_eq!(next_usable_in([&spent, &cool].into_iter(), now), 30.0);
        assert_eq!(
            next_usable_in([&cool, &KeyState::Active].into_iter(), now),
            0.0
        );
        assert!(next_usable_in([&off].into_iter(), now).is_infinite());
    }
}
