//! Pure decisions about keys: what an outcome does to a key's state, when a key
//! may be used again, and what its declared limits allow. No I/O; table-tested.
//! Which key a job goes to next is [`crate::route`].

pub mod budget;
mod id;
pub mod state;
pub mod tally;
pub mod transient;

pub use budget::{Admitted, Allowance, Blocked, Budget, Headroom, Limits, Spent, Ticket, Usage};
pub use id::KeyId;
pub use state::{KeyState, ResetPolicy, after_outcome, next_daily_reset, next_period_boundary};
pub use tally::CallTally;
pub use transient::TransientTracker;
