//! What the lease keeper tells the supervisor: this process now drives a key
//! (its lease was taken), or no longer does (handed over, or lost with the
//! broker connection).

use actix::prelude::*;
use tracing::info;

use super::state::Supervisor;
use crate::actors::messages::{Booted, KeyStateOf, LetKeyGo, StopWorker, TakeKey};
use keyrelay_core::keys::KeyState;

impl Handler<TakeKey> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: TakeKey, ctx: &mut Self::Context) {
        let slot = &mut self.keys[msg.key.0];
        slot.leased = true;
        slot.restarts = 0;
        info!(pool = %slot.ctx.pool.name, key = %slot.ctx.name, handed_over = msg.state.is_some(), "key lease taken; driving the key");
        match msg.state {
            // Kept in this process's store too: it is the newest there is.
            Some(state) => self.apply(msg.key, state, true, ctx),
            None => {
                let state = slot.state.clone();
                self.apply(msg.key, state, false, ctx);
            }
        }
        if self.keys[msg.key.0].worker.is_none() && !self.stopping {
            self.start_worker(msg.key, ctx);
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
