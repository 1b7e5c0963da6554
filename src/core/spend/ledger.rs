//! Money spent today and this month per key, pool and user, against their
//! budgets; the check before each call; and the hourly spend counters the
//! store keeps.
//!
//! A call is admitted only if what its scopes spent, plus what calls in
//! flight may still spend (their estimates, held as a [`Reservation`] until
//! they are recorded), plus its own estimate fits every budget: the
//! overshoot is at most what the estimates of calls in flight miss. Periods
//! are UTC calendar days and months.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan, tz::TimeZone};

pub use super::figures::{
    Budget, BudgetScope, BudgetStatus, Exceeded, Period, Refused, ScopeSpend, SpendCount, SpendKey,
    SpendRecord, SpendShare, from_nano, to_nano,
};

/// Users whose spend an instance shares in its beacons, the largest first:
/// beyond them, a user's cap is held by each instance on its own.
pub const SHARED_USERS: usize = 200;

/// Spend of one scope in the current day and month.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    day: f64,
    month: f64,
}

#[derive(Default)]
struct Inner {
    /// The UTC day the totals' `day` counts.
    today: Option<Date>,
    totals: HashMap<(BudgetScope, String), Totals>,
    /// Estimates of calls admitted and not yet recorded.
    reserved: HashMap<(BudgetScope, String), f64>,
    budgets: HashMap<(BudgetScope, String), Budget>,
    /// A pool's default budget for each of its users.
    user_default: HashMap<String, Budget>,
    /// Counts not yet written to the store.
    pending: HashMap<SpendKey, SpendCount>,
    /// What the other instances of a fleet spent, by their store: each
    /// instance's spend is counted in its own store and shared in its beacons.
    peers: HashMap<String, SpendShare>,
}

/// Budgets, spend and reservations of every scope; shared by the calls.
#[derive(Default)]
pub struct SpendLedger {
    inner: Mutex<Inner>,
}

/// What an admitted call may spend, held until it is recorded (or dropped:
/// the call was never made).
pub struct Reservation {
    ledger: Arc<SpendLedger>,
    scopes: Vec<(BudgetScope, String)>,
    amount: f64,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("scopes", &self.scopes)
            .field("amount", &self.amount)
            .finish()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.amount <= 0.0 {
            return;
        }
        let mut inner = self.ledger.lock();
        for scope in &self.scopes {
            if let Some(held) = inner.reserved.get_mut(scope) {
                *held = (*held - self.amount).max(0.0);
            }
        }
    }
}

/// The scopes a call on `key` of `pool` for `user` spends from.
pub fn scopes_of(pool: &str, key: &str, user: Option<&str>) -> Vec<(BudgetScope, String)> {
    let mut scopes = vec![
        (BudgetScope::Key, format!("{pool}/{key}")),
        (BudgetScope::Pool, pool.to_owned()),
    ];
    if let Some(user) = user {
        scopes.push((BudgetScope::User, format!("{pool}/{user}")));
    }
    scopes
}

impl SpendLedger {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Set the budget of a scope. An unlimited one is kept as such: it
    /// overrides a user default and the config's budget.
    pub fn set_budget(&self, scope: BudgetScope, name: &str, budget: Budget) {
        self.lock().budgets.insert((scope, name.to_owned()), budget);
    }

    /// Set the budget each user of `pool` has unless set one by one.
    pub fn set_user_default(&self, pool: &str, budget: Budget) {
        let mut inner = self.lock();
        if budget.is_unlimited() {
            inner.user_default.remove(pool);
        } else {
            inner.user_default.insert(pool.to_owned(), budget);
        }
    }

    /// The first of `scopes` with a budget that limits anything.
    pub fn first_budgeted<'a>(
        &self,
        scopes: &'a [(BudgetScope, String)],
    ) -> Option<&'a (BudgetScope, String)> {
        let inner = self.lock();
        scopes.iter().find(|(scope, name)| {
            budget_of(&inner, *scope, name).is_some_and(|b| !b.is_unlimited())
        })
    }

    /// The budget of a scope, if it has one.
    pub fn budget(&self, scope: BudgetScope, name: &str) -> Option<Budget> {
        let inner = self.lock();
        budget_of(&inner, scope, name)
    }

    /// Count stored spend (the current month's hourly counters) at start-up.
    pub fn load(&self, rows: &[(SpendKey, SpendCount)], now: Timestamp) {
        let mut inner = self.lock();
        roll(&mut inner, now);
        let today = utc_date(now);
        let day = today.strftime("%Y-%m-%d").to_string();
        let month = today.strftime("%Y-%m").to_string();
        for (key, count) in rows {
            if !key.hour.starts_with(&month) {
                continue;
            }
            let usd = from_nano(count.nano_usd);
            let in_today = key.hour.starts_with(&day);
            let user = (!key.user.is_empty()).then_some(key.user.as_str());
            for scope in scopes_of(&key.pool, &key.key, user) {
                let totals = inner.totals.entry(scope).or_default();
                totals.month += usd;
                if in_today {
                    totals.day += usd;
                }
            }
        }
    }

    /// Admit a call estimated to cost `estimate_usd` for `scopes`, or say
    /// which budget it would exceed.
    pub fn admit(
        self: &Arc<Self>,
        scopes: Vec<(BudgetScope, String)>,
        estimate_usd: f64,
        now: Timestamp,
    ) -> Result<Reservation, Exceeded> {
        let mut inner = self.lock();
        roll(&mut inner, now);
        for (scope, name) in &scopes {
            let Some(budget) = budget_of(&inner, *scope, name) else {
                continue;
            };
            let id = (*scope, name.clone());
            let totals = fleet_totals(&inner, &id, now);
            let reserved = inner.reserved.get(&id).copied().unwrap_or(0.0);
            for period in [Period::Day, Period::Month] {
                let Some(limit) = budget.limit(period) else {
                    continue;
                };
                let spent = match period {
                    Period::Day => totals.day,
                    Period::Month => totals.month,
                };
                let refused = if estimate_usd > limit {
                    Refused::NeverFits
                } else if spent >= limit || spent + estimate_usd > limit {
                    Refused::Spent
                } else if spent + reserved + estimate_usd > limit {
                    Refused::InFlight
                } else {
                    continue;
                };
                return Err(Exceeded {
                    refused,
                    scope: *scope,
                    name: name.clone(),
                    period,
                    limit_usd: limit,
                    spent_usd: spent,
                    until: period_end(period, now),
                });
            }
        }
        let amount = estimate_usd.max(0.0);
        for scope in &scopes {
            *inner.reserved.entry(scope.clone()).or_default() += amount;
        }
        drop(inner);
        Ok(Reservation {
            ledger: self.clone(),
            scopes,
            amount,
        })
    }

    /// Count a call's cost (its reservation, if any, is released by the
    /// caller dropping it afterwards).
    pub fn record(&self, record: &SpendRecord, now: Timestamp) {
        let mut inner = self.lock();
        roll(&mut inner, now);
        let usd = record.cost_usd.unwrap_or(0.0);
        if usd > 0.0 {
            for scope in scopes_of(&record.pool, &record.key, record.user.as_deref()) {
                let totals = inner.totals.entry(scope).or_default();
                totals.day += usd;
                totals.month += usd;
            }
        }
        let key = SpendKey {
            hour: now.strftime("%Y-%m-%dT%H").to_string(),
            pool: record.pool.clone(),
            key: record.key.clone(),
            model: record.model.clone(),
            user: record.user.clone().unwrap_or_default(),
        };
        let count = inner.pending.entry(key).or_default();
        count.nano_usd += to_nano(usd);
        count.calls += 1;
        count.unpriced += u64::from(record.cost_usd.is_none());
    }

    /// The counts not yet in the store; the caller writes them.
    pub fn take_pending(&self) -> Vec<(SpendKey, SpendCount)> {
        self.lock().pending.drain().collect()
    }

    /// Put counts back that could not be written.
    pub fn restore_pending(&self, rows: Vec<(SpendKey, SpendCount)>) {
        let mut inner = self.lock();
        for (key, count) in rows {
            let held = inner.pending.entry(key).or_default();
            held.nano_usd += count.nano_usd;
            held.calls += count.calls;
            held.unpriced += count.unpriced;
        }
    }

    /// Every budgeted scope's spend against its budgets, now.
    pub fn status(&self, now: Timestamp) -> Vec<BudgetStatus> {
        let mut inner = self.lock();
        roll(&mut inner, now);
        let mut out = Vec::new();
        let mut ids: Vec<(BudgetScope, String)> = inner.budgets.keys().cloned().collect();
        // Users with the pool's default budget who spent this month.
        for (scope, name) in inner.totals.keys() {
            if *scope == BudgetScope::User && !inner.budgets.contains_key(&(*scope, name.clone())) {
                let pool = name.split('/').next().unwrap_or_default();
                if inner.user_default.contains_key(pool) {
                    ids.push((*scope, name.clone()));
                }
            }
        }
        ids.sort();
        for (scope, name) in ids {
            let Some(budget) = budget_of(&inner, scope, &name) else {
                continue;
            };
            let totals = fleet_totals(&inner, &(scope, name.clone()), now);
            for (period, spent) in [(Period::Day, totals.day), (Period::Month, totals.month)] {
                if let Some(limit) = budget.limit(period) {
                    out.push(BudgetStatus {
                        scope,
                        name: name.clone(),
                        period,
                        limit_usd: limit,
                        spent_usd: spent,
                        resets_at: period_end(period, now),
                    });
                }
            }
        }
        out
    }

    /// Spent today and this month by a scope, USD.
    pub fn spent(&self, scope: BudgetScope, name: &str, now: Timestamp) -> (f64, f64) {
        let mut inner = self.lock();
        roll(&mut inner, now);
        let totals = fleet_totals(&inner, &(scope, name.to_owned()), now);
        (totals.day, totals.month)
    }

    /// This instance's own spend on every budgeted scope, for its beacons.
    pub fn share(&self, now: Timestamp) -> SpendShare {
        let mut inner = self.lock();
        roll(&mut inner, now);
        let scopes: Vec<ScopeSpend> = inner
            .totals
            .iter()
            .filter(|((scope, name), _)| {
                budget_of(&inner, *scope, name).is_some_and(|b| !b.is_unlimited())
            })
            .map(|((scope, name), totals)| ScopeSpend {
                scope: *scope,
                name: name.clone(),
                day_usd: totals.day,
                month_usd: totals.month,
            })
            .collect();
        // Users are unbounded: the largest spenders, at most SHARED_USERS.
        let (mut users, mut others): (Vec<ScopeSpend>, Vec<ScopeSpend>) = scopes
            .into_iter()
            .partition(|s| s.scope == BudgetScope::User);
        users.sort_by(|a, b| b.month_usd.total_cmp(&a.month_usd));
        users.truncate(SHARED_USERS);
        others.extend(users);
        let mut scopes = others;
        scopes.sort_by(|a, b| (a.scope, &a.name).cmp(&(b.scope, &b.name)));
        SpendShare {
            day: day_of(now),
            scopes,
        }
    }

    /// What the instance with store `store` says it spent (newest wins).
    /// Kept after it leaves: what it spent stays spent until the period ends.
    pub fn set_peer(&self, store: &str, share: SpendShare) {
        self.lock().peers.insert(store.to_owned(), share);
    }
}

fn budget_of(inner: &Inner, scope: BudgetScope, name: &str) -> Option<Budget> {
    if let Some(budget) = inner.budgets.get(&(scope, name.to_owned())) {
        return Some(*budget);
    }
    if scope == BudgetScope::User {
        let pool = name.split('/').next().unwrap_or_default();
        return inner.user_default.get(pool).copied();
    }
    None
}

fn day_of(now: Timestamp) -> String {
    utc_date(now).strftime("%Y-%m-%d").to_string()
}

/// A scope's own totals plus what the fleet's other instances said they spent
/// in the same day and month.
fn fleet_totals(inner: &Inner, id: &(BudgetScope, String), now: Timestamp) -> Totals {
    let mut totals = inner.totals.get(id).copied().unwrap_or_default();
    if inner.peers.is_empty() {
        return totals;
    }
    let today = day_of(now);
    let month = &today[..7];
    for share in inner.peers.values() {
        let same_day = share.day == today;
        if !share.day.starts_with(month) {
            continue;
        }
        let Some(spend) = share
            .scopes
            .iter()
            .find(|s| s.scope == id.0 && s.name == id.1)
        else {
            continue;
        };
        totals.month += spend.month_usd;
        if same_day {
            totals.day += spend.day_usd;
        }
    }
    totals
}

fn utc_date(now: Timestamp) -> Date {
    now.to_zoned(TimeZone::UTC).date()
}

/// A new day (or month) starts its totals from zero.
fn roll(inner: &mut Inner, now: Timestamp) {
    let today = utc_date(now);
    let Some(was) = inner.today else {
        inner.today = Some(today);
        return;
    };
    // Forward only: a `now` read just before midnight, locked after a call
    // that rolled the day, must not roll it back.
    if today <= was {
        return;
    }
    inner.today = Some(today);
    let new_month = (was.year(), was.month()) != (today.year(), today.month());
    for totals in inner.totals.values_mut() {
        totals.day = 0.0;
        if new_month {
            totals.month = 0.0;
        }
    }
}

/// When the period holding `now` ends (UTC midnight, or the 1st of next month).
pub fn period_end(period: Period, now: Timestamp) -> Timestamp {
    let today = utc_date(now);
    let next = match period {
        Period::Day => today.tomorrow().ok(),
        Period::Month => today.first_of_month().checked_add(1.month()).ok(),
    };
    next.and_then(|d| d.to_zoned(TimeZone::UTC).ok())
        .map_or(now, |z| z.timestamp())
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
