//! What budgets and spend are: whose (a key, a pool, a user), per what
//! period, what a refusal says, one call's spend record, the hourly
//! counters the store keeps, and the figures an instance shares with its
//! fleet.

use jiff::Timestamp;
use serde::Serialize;

/// Whose budget.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// One key (`pool/key`).
    Key,
    /// One pool (`pool`).
    Pool,
    /// One user of a pool (`pool/user`).
    User,
}

impl BudgetScope {
    /// The scope as a label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Key => "key",
            BudgetScope::Pool => "pool",
            BudgetScope::User => "user",
        }
    }
}

/// A budget's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// The UTC calendar day.
    Day,
    /// The UTC calendar month.
    Month,
}

impl Period {
    /// The setting that names the budget (`budget_usd_per_day`, ...).
    pub fn setting(self) -> &'static str {
        match self {
            Period::Day => "budget_usd_per_day",
            Period::Month => "budget_usd_per_month",
        }
    }
}

/// US dollars a scope may spend per day and per month (either optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Per UTC day.
    #[serde(default)]
    pub usd_per_day: Option<f64>,
    /// Per UTC month.
    #[serde(default)]
    pub usd_per_month: Option<f64>,
}

impl Budget {
    /// Whether neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.usd_per_day.is_none() && self.usd_per_month.is_none()
    }

    /// The budget for `period`, if one is set.
    pub(super) fn limit(&self, period: Period) -> Option<f64> {
        match period {
            Period::Day => self.usd_per_day,
            Period::Month => self.usd_per_month,
        }
    }
}

/// Why a budget refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refused {
    /// What was spent leaves no room for the call: no call on the scope
    /// until the period ends (or the budget is raised).
    Spent,
    /// Calls in flight may still spend what is left: the call can go once
    /// they are counted.
    InFlight,
    /// The call's estimate alone is more than the whole budget: it never fits.
    NeverFits,
}

/// A call refused because a budget would be exceeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exceeded {
    /// Why, and so what to do with the call.
    pub refused: Refused,
    /// Whose budget.
    pub scope: BudgetScope,
    /// The key (`pool/key`), pool, or `pool/user`.
    pub name: String,
    /// Which of its budgets.
    pub period: Period,
    /// The budget, USD.
    pub limit_usd: f64,
    /// Spent in the period, calls in flight included, USD.
    pub spent_usd: f64,
    /// When the period ends and the budget is whole again.
    pub until: Timestamp,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.refused == Refused::NeverFits {
            return write!(
                f,
                "the job's estimated cost is more than the whole {} of ${:.2} of {} {}",
                self.period.setting(),
                self.limit_usd,
                self.scope.as_str(),
                self.name
            );
        }
        write!(
            f,
            "{} {} has spent ${:.4} of its {} of ${:.2}; it resets at {}",
            self.scope.as_str(),
            self.name,
            self.spent_usd,
            self.period.setting(),
            self.limit_usd,
            self.until
        )
    }
}

/// One call's cost, to count.
#[derive(Debug, Clone)]
pub struct SpendRecord {
    /// The pool.
    pub pool: String,
    /// The key's name.
    pub key: String,
    /// The model the job asked for.
    pub model: String,
    /// The job's user, if it named one.
    pub user: Option<String>,
    /// What it cost, USD (`None`: the model has no price).
    pub cost_usd: Option<f64>,
}

/// One hourly spend counter, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SpendKey {
    /// `YYYY-MM-DDTHH` (UTC).
    pub hour: String,
    /// The pool.
    pub pool: String,
    /// The key's name.
    pub key: String,
    /// The model.
    pub model: String,
    /// The user (`""` for jobs without one).
    pub user: String,
}

/// What one hourly counter holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpendCount {
    /// Cost in billionths of a dollar (integers merge exactly).
    pub nano_usd: u64,
    /// Calls counted.
    pub calls: u64,
    /// Of them, calls whose model has no price.
    pub unpriced: u64,
}

/// Dollars as the counters keep them.
pub fn to_nano(usd: f64) -> u64 {
    (usd * 1e9).round().max(0.0) as u64
}

/// Dollars from the counters.
pub fn from_nano(nano: u64) -> f64 {
    nano as f64 / 1e9
}

/// What one instance spent on every budgeted scope in the current UTC day
/// and month, for the other instances of its fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SpendShare {
    /// The UTC day (`YYYY-MM-DD`) the figures are of; its month is theirs too.
    pub day: String,
    /// Spend per scope that has a budget.
    pub scopes: Vec<ScopeSpend>,
}

/// One scope's spend in a [`SpendShare`].
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ScopeSpend {
    /// Whose.
    pub scope: BudgetScope,
    /// The key (`pool/key`), pool, or `pool/user`.
    pub name: String,
    /// Spent in the day, USD.
    pub day_usd: f64,
    /// Spent in the month, USD.
    pub month_usd: f64,
}

/// One scope's spend against one of its budgets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetStatus {
    /// Whose budget.
    pub scope: BudgetScope,
    /// The key (`pool/key`), pool, or `pool/user`.
    pub name: String,
    /// Which budget.
    pub period: Period,
    /// The budget, USD.
    pub limit_usd: f64,
    /// Spent in the period, USD.
    pub spent_usd: f64,
    /// When the period ends.
    pub resets_at: Timestamp,
}

impl BudgetStatus {
    /// Spent as a share of the budget (0.0-1.0+).
    pub fn share(&self) -> f64 {
        if self.limit_usd <= 0.0 {
            return if self.spent_usd > 0.0 {
                f64::INFINITY
            } else {
                1.0
            };
        }
        self.spent_usd / self.limit_usd
    }
}
