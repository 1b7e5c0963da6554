//! Pure decisions about keys: what an outcome does to a key's state, when a key
//! may be used again, and which key a job goes to next. No I/O; table-tested.

pub mod routing;
pub mod state;

pub use routing::{Candidate, choose_key};
pub use state::{KeyState, ResetPolicy, after_outcome, next_daily_reset};

/// Index of a key in the supervisor's table (stable for the process lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub usize);
