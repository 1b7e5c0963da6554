//! Supervisor handlers for operator requests added by the admin API: reset a
//! key, hand out a key's context for a probe, bring back keys parked by a
//! budget that changed.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{info, warn};

use super::state::Supervisor;
use crate::actors::messages::{BudgetsChanged, KeyCommandError, ProbeTarget, ResetKey};
use crate::pipeline::KeyContext;
use keyrelay_core::keys::{KeyId, KeyState};

impl Handler<ResetKey> for Supervisor {
    type Result = Result<(), KeyCommandError>;

    fn handle(&mut self, msg: ResetKey, ctx: &mut Self::Context) -> Self::Result {
        let id = self.find(&msg.pool, &msg.key)?;
        let store_key = self.keys[id.0].ctx.store_key.clone();
        if self.stopping {
            return Err(KeyCommandError::ShuttingDown);
        }
        if let Err(e) = self.services.store.reset_counters(&store_key) {
            warn!(key = %store_key, error = %e, "cannot clear the key's counters");
            return Err(KeyCommandError::Store {
                key: store_key,
                source: e,
            });
        }
        info!(pool = %msg.pool, key = %msg.key, "key reset by operator");
        // A reset forgets the key's usage too (declared limits and learned ones).
        self.keys[id.0].ctx.reset_budget();
        self.keys[id.0].ctx.set_probing(false);
        self.apply(id, KeyState::Active, true, ctx);
        Ok(())
    }
}

impl Handler<BudgetsChanged> for Supervisor {
    type Result = usize;

    /// Returns how many keys came back.
    fn handle(&mut self, _: BudgetsChanged, ctx: &mut Self::Context) -> usize {
        let parked: Vec<KeyId> = self
            .keys
            .iter()
            .enumerate()
            .filter(|(_, slot)| {
                matches!(&slot.state, KeyState::Exhausted { reason, .. } if reason.contains("budget_usd_per"))
            })
            .map(|(i, _)| KeyId(i))
            .collect();
        for &id in &parked {
            let slot = &self.keys[id.0];
            info!(pool = %slot.ctx.pool.name, key = %slot.ctx.name, "budgets changed; key parked by a budget comes back");
            self.apply(id, KeyState::Active, true, ctx);
        }
        parked.len()
    }
}

impl Handler<ProbeTarget> for Supervisor {
    type Result = Result<Arc<KeyContext>, KeyCommandError>;

    fn handle(&mut self, msg: ProbeTarget, _ctx: &mut Self::Context) -> Self::Result {
        let id = self.find(&msg.pool, &msg.key)?;
        Ok(self.keys[id.0].ctx.clone())
    }
}
