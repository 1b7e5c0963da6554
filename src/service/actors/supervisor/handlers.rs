//! Supervisor message handlers, one `impl Handler` per message.

use std::time::Duration;

use actix::prelude::*;
use tracing::{info, warn};

use super::state::Supervisor;
use crate::actors::messages::*;
use keyrelay_core::keys::{KeyId, KeyState, after_outcome};
use keyrelay_core::metrics as m;
use keyrelay_core::provider::Outcome;

/// Longest wait before a stopped worker is started again: after a broker
/// outage, consuming resumes within this long of the broker being back.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(4);

impl Handler<KeyOutcome> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: KeyOutcome, ctx: &mut Self::Context) {
        let now = jiff::Timestamp::now();
        let next = match &msg.outcome {
            Outcome::Success(_) => return self.on_success(msg.key),
            Outcome::Transient { .. } => {
                self.keys[msg.key.0].ctx.set_report_success(true);
                self.after_transient(msg.key, now)
            }
            outcome => {
                let policy = &self.pools[self.keys[msg.key.0].pool].ctx.policy;
                after_outcome(outcome, now, policy)
            }
        };
        let Some(next) = next else {
            return;
        };
        if !self.keys[msg.key.0].state.is_superseded_by(&next) {
            return;
        }
        let slot = &self.keys[msg.key.0];
        warn!(
            pool = %slot.ctx.pool.name,
            key = %slot.ctx.name,
            state = next.label(),
            until = ?next.until(),
            outcome = msg.outcome.class().as_str(),
            "key out of rotation"
        );
        if matches!(msg.outcome, Outcome::QuotaExhausted { .. }) {
            self.park_quota_group(msg.key, &next, ctx);
        }
        self.apply(msg.key, next, true, ctx);
    }
}

impl Handler<ConsumerState> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ConsumerState, _ctx: &mut Self::Context) {
        let slot = &mut self.keys[msg.key.0];
        slot.consuming = msg.consuming;
        if msg.consuming {
            // Consuming again: the next failure starts the backoff over.
            slot.restarts = 0;
        }
        let n = self.keys.iter().filter(|k| k.consuming).count();
        self.consumers.send_replace(n);
        self.publish_pool_consumers();
    }
}

impl Handler<CooldownOver> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: CooldownOver, ctx: &mut Self::Context) {
        let slot = &mut self.keys[msg.key.0];
        slot.timer = None;
        let now = jiff::Timestamp::now();
        match slot.state.until() {
            Some(until) if until <= now => {
                // After a daily reset one real job probes the key before it
                // takes a full load again.
                let probe = matches!(slot.state, KeyState::Exhausted { .. });
                slot.ctx.set_probing(probe);
                info!(pool = %slot.ctx.pool.name, key = %slot.ctx.name, probe, "key back in rotation");
                self.apply(msg.key, KeyState::Active, true, ctx);
            }
            // Timers can fire a hair early; check again at the deadline.
            Some(until) => {
                let wait = until
                    .duration_since(now)
                    .max(jiff::SignedDuration::ZERO)
                    .unsigned_abs();
                slot.timer = Some(ctx.notify_later(msg, wait.max(Duration::from_millis(1))));
            }
            None => {}
        }
    }
}

impl Handler<WorkerStopped> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: WorkerStopped, ctx: &mut Self::Context) {
        let slot = &mut self.keys[msg.key.0];
        slot.worker = None;
        if self.stopping || !slot.leased {
            return;
        }
        slot.restarts += 1;
        slot.ctx.set_report_success(true);
        let delay = Duration::from_millis(100u64 << slot.restarts.min(8)).min(MAX_RESTART_DELAY);
        metrics::counter!(m::WORKER_RESTARTS_TOTAL, "pool" => slot.ctx.pool.name.clone(), "key" => slot.ctx.name.clone())
            .increment(1);
        warn!(pool = %slot.ctx.pool.name, key = %slot.ctx.name, delay_ms = delay.as_millis() as u64, "restarting key worker");
        let id = msg.key;
        ctx.run_later(delay, move |act, ctx| {
            let slot = &act.keys[id.0];
            if !act.stopping && slot.leased && slot.worker.is_none() {
                act.start_worker(id, ctx);
            }
        });
    }
}

impl Handler<EnableKey> for Supervisor {
    type Result = Result<(), KeyCommandError>;

    fn handle(&mut self, msg: EnableKey, ctx: &mut Self::Context) -> Self::Result {
        let id = self.find(&msg.pool, &msg.key)?;
        if self.stopping {
            return Err(KeyCommandError::ShuttingDown);
        }
        info!(pool = %msg.pool, key = %msg.key, "key enabled by operator");
        self.apply(id, KeyState::Active, true, ctx);
        Ok(())
    }
}

impl Handler<DisableKey> for Supervisor {
    type Result = Result<(), KeyCommandError>;

    fn handle(&mut self, msg: DisableKey, ctx: &mut Self::Context) -> Self::Result {
        let id = self.find(&msg.pool, &msg.key)?;
        info!(pool = %msg.pool, key = %msg.key, reason = %msg.reason, "key disabled by operator");
        self.apply(id, KeyState::Disabled { reason: msg.reason }, true, ctx);
        Ok(())
    }
}

impl Handler<GetKeys> for Supervisor {
    type Result = Vec<KeySnapshot>;

    fn handle(&mut self, _: GetKeys, _ctx: &mut Self::Context) -> Self::Result {
        self.keys
            .iter()
            .map(|slot| KeySnapshot {
                pool: slot.ctx.pool.name.clone(),
                name: slot.ctx.name.clone(),
                fingerprint: slot.ctx.secret.fingerprint(),
                priority: slot.ctx.priority,
                concurrency: slot.ctx.concurrency,
                in_flight: slot.ctx.in_flight(),
                state: slot.state.clone(),
                limits: slot.ctx.limits,
                usage: slot.ctx.usage(),
                last: slot.ctx.last_use(),
            })
            .collect()
    }
}

impl Handler<StopAll> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: StopAll, _ctx: &mut Self::Context) {
        self.stopping = true;
        for slot in &self.keys {
            // Deliveries still arriving start no call: they are handed back.
            slot.ctx.set_available(false);
            if let Some(worker) = &slot.worker {
                worker.do_send(StopWorker);
            }
        }
    }
}

impl Handler<Terminate> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Self::Context) {
        self.persist_budgets();
        self.flush_usage();
        self.flush_spend();
        for slot in &mut self.keys {
            if let Some(worker) = slot.worker.take() {
                worker.do_send(StopWorker);
            }
        }
        ctx.stop();
    }
}

impl Supervisor {
    /// The key `key` of pool `pool`, for an operator's command.
    pub(super) fn find(&self, pool: &str, key: &str) -> Result<KeyId, KeyCommandError> {
        self.keys
            .iter()
            .position(|s| s.ctx.pool.name == pool && s.ctx.name == key)
            .map(KeyId)
            .ok_or_else(|| KeyCommandError::NoSuchKey {
                pool: pool.to_owned(),
                key: key.to_owned(),
            })
    }
}
