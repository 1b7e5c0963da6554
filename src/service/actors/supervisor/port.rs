//! The supervisor's side of the key-events port: job tasks report through
//! [`KeyEvents`]; this turns each event into a message in the supervisor's
//! mailbox, so events of one task arrive in the order they were sent.

use std::time::Duration;

use actix::Addr;

use super::state::Supervisor;
use crate::actors::messages::{BudgetSpent, KeyOutcome};
use crate::pipeline::KeyEvents;
use keyrelay_core::keys::{Blocked, KeyId};
use keyrelay_core::provider::Outcome;

/// The supervisor's address, as the port job tasks report to.
pub(super) struct SupervisorPort(pub(super) Addr<Supervisor>);

impl KeyEvents for SupervisorPort {
    fn outcome(&self, key: KeyId, outcome: Outcome, latency: Duration) {
        self.0.do_send(KeyOutcome {
            key,
            outcome,
            latency,
        });
    }

    fn budget_spent(&self, key: KeyId, blocked: Blocked) {
        self.0.do_send(BudgetSpent { key, blocked });
    }
}
