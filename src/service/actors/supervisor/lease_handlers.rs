//! What the lease keeper tells the supervisor: this process now drives a key
//! (its lease was taken), or no longer does (handed over, or lost with the
//! broker connection).

use actix::prelude::*;
use tracing::{debug, info};

use super::state::Supervisor;
use crate::actors::messages::{Booted, KeyStateOf, LetKeyGo, StopWorker, TakeKeys};
use keyrelay_core::keys::{KeyId, KeyState};

impl Handler<TakeKeys> for Supervisor {
    type Result = MessageResult<TakeKeys>;

    fn handle(&mut self, msg: TakeKeys, ctx: &mut Self::Context) -> Self::Result {
        let mut states = Vec::with_capacity(msg.keys.len());
        // One line per batch (a thousand keys at start-up); each key at debug.
        info!(keys = msg.keys.len(), "key leases taken; driving the keys");
        for (key, state) in msg.keys {
            self.take_key(key, state, ctx);
            states.push(self.keys[key.0].state.clone());
        }
        MessageResult(states)
    }
}

impl Supervisor {
    fn take_key(&mut self, key: KeyId, state: Option<KeyState>, ctx: &mut Context<Self>) {
        let slot = &mut self.keys[key.0];
        slot.leased = true;
        slot.restarts = 0;
        debug!(pool = %slot.ctx.pool.name, key = %slot.ctx.name, handed_over = state.is_some(), "key lease taken; driving the key");
        match state {
            // Kept in this process's store too: it is the newest there is.
            Some(state) => self.apply(key, state, true, ctx),
            None => {
                let state = slot.state.clone();
                self.apply(key, state, false, ctx);
            }
        }
        if self.keys[key.0].worker.is_none() && !self.stopping {
            self.start_worker(key, ctx);
        }
    }
}

impl Handler<LetKeyGo> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: LetKeyGo, _ctx: &mut Self::Context) {
        let slot = &mut self.keys[msg.key.0];
        if !slot.leased {
            return;
        }
        slot.leased = false;
        // Deliveries still arriving start no call: they are handed back.
        slot.ctx.set_available(false);
        if let Some(worker) = slot.worker.take() {
            worker.do_send(StopWorker);
        }
        info!(pool = %slot.ctx.pool.name, key = %slot.ctx.name, "key lease let go; no longer driving the key");
        let pool = slot.pool;
        self.check_pool(pool);
        self.publish_pool_consumers();
    }
}

impl Handler<KeyStateOf> for Supervisor {
    type Result = MessageResult<KeyStateOf>;

    fn handle(&mut self, msg: KeyStateOf, _ctx: &mut Self::Context) -> Self::Result {
        let state: KeyState = self.keys[msg.key.0].state.clone();
        MessageResult(state)
    }
}

impl Handler<Booted> for Supervisor {
    type Result = ();

    // Messages are handled only after `started`: answering is enough.
    fn handle(&mut self, _: Booted, _ctx: &mut Self::Context) {}
}
