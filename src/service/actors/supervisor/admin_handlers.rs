//! Supervisor handlers for operator requests added by the admin API: reset a
//! key, hand out a key's context for a probe.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{info, warn};

use super::state::Supervisor;
use crate::actors::messages::{KeyCommandError, ProbeTarget, ResetKey};
use crate::pipeline::KeyContext;
use keyrelay_core::keys::KeyState;

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

impl Handler<ProbeTarget> for Supervisor {
    type Result = Result<Arc<KeyContext>, KeyCommandError>;

    fn handle(&mut self, msg: ProbeTarget, _ctx: &mut Self::Context) -> Self::Result {
        let id = self.find(&msg.pool, &msg.key)?;
        Ok(self.keys[id.0].ctx.clone())
    }
}
