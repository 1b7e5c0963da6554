//! Money on the call path: the budget check before a call (with the
//! estimate its reservation holds), the cost of its answer, and the count
//! of what it spent; and the ledger and price table at start-up.

use super::context::{InFlight, KeyContext, Services};
use keyrelay_core::metrics as m;
use keyrelay_core::provider::Outcome;
use keyrelay_core::spend::{Exceeded, PriceTable, Reservation, SpendRecord, scopes_of};

/// Why a call may not go for money.
pub(super) enum OverBudget {
    /// A budget refused it (see [`keyrelay_core::spend::Refused`]).
    Exceeded(Exceeded),
    /// Its model has no price, and a budget applies: its cost could not be
    /// checked (the message names the budget and the model).
    Unpriced(String),
}

/// Reserve the call's estimated cost against its key's, pool's and user's
/// budgets, or say why it may not go.
pub(super) fn reserve(
    services: &Services,
    key: &KeyContext,
    inflight: &InFlight,
) -> Result<Reservation, OverBudget> {
    let scopes = scopes_of(&key.pool.name, &key.name, inflight.job.user.as_deref());
    let request = &inflight.job.request;
    if key.pool.prices.price(&request.model).is_none()
        && let Some((scope, name)) = services.spend.first_budgeted(&scopes)
    {
        return Err(OverBudget::Unpriced(format!(
            "model `{}` has no price and {} {name} has a budget: its cost cannot be checked; add its price to the pool's `prices` (docs/spend.md)",
            request.model,
            scope.as_str()
        )));
    }
    let estimate = key.pool.prices.estimate(request);
    services
        .spend
        .admit(scopes, estimate, jiff::Timestamp::now())
        .map_err(OverBudget::Exceeded)
}

/// Count what the call cost (a billed answer: a success or a failed job),
/// and write the cost into the answer's usage for the reply.
pub(super) fn record(
    services: &Services,
    key: &KeyContext,
    inflight: &InFlight,
    outcome: &mut Outcome,
) {
    let Some(usage) = outcome.billed_usage_mut() else {
        return;
    };
    let model = &inflight.job.request.model;
    let cost = key.pool.prices.cost(model, usage);
    usage.cost_usd = cost;
    if usage.is_empty() {
        return;
    }
    if let Some(usd) = cost {
        metrics::gauge!(m::COST_USD_TOTAL, "pool" => key.pool.name.clone(), "key" => key.name.clone(), "model" => model.clone())
            .increment(usd);
    }
    let record = SpendRecord {
        pool: key.pool.name.clone(),
        key: key.name.clone(),
        model: model.clone(),
        user: inflight.job.user.clone(),
        cost_usd: cost,
    };
    services.spend.record(&record, jiff::Timestamp::now());
}

/// The price table the config asks for: the built-in one, or its file.
pub fn price_table(
    config: &keyrelay_core::config::Config,
) -> Result<PriceTable, keyrelay_core::spend::PriceError> {
    match &config.spend.prices_file {
        Some(path) => PriceTable::from_file(path),
        None => PriceTable::built_in(),
    }
}

/// The ledger: budgets from the config, then those set through the admin
/// API (they win), and this month's spend from the store.
pub fn ledger(
    config: &keyrelay_core::config::Config,
    store: &keyrelay_core::store::Store,
) -> Result<keyrelay_core::spend::SpendLedger, keyrelay_core::store::StoreError> {
    use keyrelay_core::spend::{BudgetScope, SpendLedger};
    let ledger = SpendLedger::default();
    for pool in &config.pools {
        ledger.set_budget(BudgetScope::Pool, &pool.name, pool.budget());
        ledger.set_user_default(&pool.name, pool.user_budget());
        for key in &pool.keys {
            let name = format!("{}/{}", pool.name, key.name);
            ledger.set_budget(BudgetScope::Key, &name, key.budget());
        }
    }
    for (scope, name, budget) in store.budgets()? {
        ledger.set_budget(scope, &name, budget);
    }
    let now = jiff::Timestamp::now();
    let month_start = now
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .first_of_month()
        .strftime("%Y-%m-%dT00")
        .to_string();
    ledger.load(&store.spend(Some(&month_start))?, now);
    Ok(ledger)
}
