//! Several instances on one broker: each key is driven by exactly one of them
//! (its lease holder). Pure decisions only; the service holds the leases.
//!
//! - [`handover`]: what a key's owner publishes, and what the next owner
//!   starts from (a crashed owner's allowance counts as spent).
//! - [`balance`]: how many keys an instance should hold, given the fleet.

pub mod balance;
pub mod handover;

pub use balance::{Plan, plan};
pub use handover::{HandoverSnapshot, size_allowance, take_over};
