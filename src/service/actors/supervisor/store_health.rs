//! While the store cannot write (a full disk), no key takes new jobs: a job
//! answered now could not be recorded, and a redelivery would pay again. The
//! supervisor pauses every consumer, tries to recover the store every few
//! seconds (sled must be reopened after an I/O error), and resumes the keys
//! in rotation once a durable write goes through again.

use std::time::Duration;

use actix::prelude::*;
use tracing::{info, warn};

use super::state::Supervisor;
use crate::actors::messages::{PauseConsuming, ResumeConsuming};

/// How often a store that cannot write is reopened and tried.
const RECOVER_EVERY: Duration = Duration::from_secs(2);

/// The store became writable (`true`) or stopped being writable.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct StoreWritable(pub bool);

impl Supervisor {
    /// Forward the store's writability changes to this actor.
    pub(super) fn watch_store(&mut self, ctx: &mut Context<Self>) {
        let mut writable = self.services.store.writable();
        let supervisor = ctx.address();
        actix::spawn(async move {
            while writable.changed().await.is_ok() {
                let now = *writable.borrow_and_update();
                supervisor.do_send(StoreWritable(now));
            }
        });
    }

    fn try_recover_store(&mut self, ctx: &mut Context<Self>) {
        if self.store_writable || self.stopping {
            return;
        }
        let store = self.services.store.clone();
        let recover = async move { store.recover().await };
        ctx.spawn(recover.into_actor(self).map(|result, act, ctx| {
            let failing_again = act.services.store.write_error().is_some();
            if let Err(e) = &result {
                warn!(error = %e, retry_in_s = RECOVER_EVERY.as_secs(), "the store still cannot write");
            }
            // A write that failed right after a recovery can reach this actor
            // as no change at all (the watch keeps the latest value only).
            if result.is_err() || failing_again {
                ctx.run_later(RECOVER_EVERY, |act, ctx| act.try_recover_store(ctx));
            }
        }));
    }
}

impl Supervisor {
    /// Write every key's state and budget again: ones changed while the
    /// store could not write (an operator's disable, a cooldown) would
    /// otherwise be lost at the next restart.
    fn persist_key_states(&mut self) {
        for slot in &self.keys {
            if let Err(e) = self
                .services
                .store
                .save_key_state(&slot.ctx.store_key, &slot.state)
            {
                warn!(key = %slot.ctx.store_key, error = %e, "cannot persist key state");
            }
            slot.ctx.mark_budget_changed();
        }
        self.persist_budgets();
    }
}

impl Handler<StoreWritable> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: StoreWritable, ctx: &mut Self::Context) {
        if msg.0 == self.store_writable {
            return;
        }
        self.store_writable = msg.0;
        for slot in &self.keys {
            let Some(worker) = &slot.worker else { continue };
            if !msg.0 {
                worker.do_send(PauseConsuming);
            } else if slot.state.is_available() && !self.stopping {
                worker.do_send(ResumeConsuming);
            }
        }
        if msg.0 {
            info!("the store writes again; consumers resumed");
            self.persist_key_states();
        } else {
            warn!("the store cannot write; consumers paused until it can");
            ctx.run_later(RECOVER_EVERY, |act, ctx| act.try_recover_store(ctx));
        }
    }
}
