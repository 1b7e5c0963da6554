//! Money on the call path: the budget check before a call (with the
//! estimate its reservation holds), the cost of its answer, and the count
//! of what it spent; and the ledger and price table at start-up.

use super::context::{InFlight, KeyContext, Services};
use keyrelay_core::metrics as m;
use keyrelay_core::provider::Outcome;
use keyrelay_core::spend::{Exceeded, PriceTable, Reservation, SpendRecord, scopes_of};

/// Reserve the call's estimated cost against its key's, pool's and user's
/// budgets, or say which one it would exceed.
pub(super) fn reserve(
    services: &Services,
    key: &KeyContext,
    inflight: &InFlight,
) -> Result<Reservation, Exceeded> {
    let scopes = scopes_of(&key.pool.name, &key.name, inflight.job.user.as_deref());
    let estimate = key.pool.prices.estimate(&inflight.job.request);
    services
        .spend
        .admit(scopes, estimate, jiff::Timestamp::now())
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

/// Names this instance's store among a fleet's: the machine and the store's
/// path, so that an instance restarted on the same store (under a new
/// name: hostname-pid) replaces its own spend figures instead of adding them.
pub fn store_id(config: &keyrelay_core::config::Config) -> String {
    use sha2::{Digest, Sha256};
    let path =
        std::fs::canonicalize(&config.store.path).unwrap_or_else(|_| config.store.path.clone());
    let digest = Sha256::new()
        .chain_update(keyrelay_core::config::hostname().as_bytes())
        .chain_update([0])
        .chain_update(path.as_os_str().as_encoded_bytes())
        .finalize();
    hex::encode(&digest[..8])
}
