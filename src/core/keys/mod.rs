//! Pure decisions about keys: what an outcome does to a key's state, when a key
//! may be used again, and which key a job goes to next. No I/O; table-tested.

pub mod budget;
pub mod routing;
pub mod state;
pub mod tally;
pub mod transient;

pub use budget::{Blocked, Budget, Limits, Spent, Ticket, Usage};
pub use routing::{Candidate, choose_key};
pub use state::{KeyState, ResetPolicy, after_outcome, next_daily_reset, next_period_boundary};
pub use tally::CallTally;
pub use transient::TransientTracker;

/// Index of a key in the supervisor's table (stable for the process lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub usize);
