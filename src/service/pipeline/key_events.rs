//! The one port through which job tasks tell the owner of the keys (the
//! supervisor) what happened on a key. Job tasks depend on this trait only; the
//! actors implement it, so the pipeline knows no actor.

use std::time::Duration;

use keyrelay_core::keys::{Blocked, KeyId};
use keyrelay_core::provider::Outcome;

/// Key events, fire and forget: the owner applies them to the key's state in
/// the order they were sent.
pub trait KeyEvents: Send + Sync {
    /// A provider call on `key` returned `outcome` (a success's text is
    /// dropped) after `latency`.
    fn outcome(&self, key: KeyId, outcome: Outcome, latency: Duration);

    /// `key` has no budget left under its declared limits until `blocked.until`.
    fn budget_spent(&self, key: KeyId, blocked: Blocked);
}
