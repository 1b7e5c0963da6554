//! What calls cost and who may spend more: the price table ([`prices`]),
//! the cost of one call ([`cost`]), what budgets and spend figures are
//! ([`figures`]), and the budgets of keys, pools and users with the spend
//! counted against them ([`ledger`]).

pub mod cost;
pub mod figures;
pub mod ledger;
pub mod prices;

pub use cost::cost_usd;
pub use ledger::{
    Budget, BudgetScope, BudgetStatus, Exceeded, Period, Refused, Reservation, ScopeSpend,
    SpendCount, SpendKey, SpendLedger, SpendRecord, SpendShare, from_nano, period_end, scopes_of,
    to_nano,
};
pub use prices::{Price, PriceError, PriceTable};
