//! Supervisor construction, start-up and the state transitions every handler uses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;
use tracing::{info, warn};

use super::port::SupervisorPort;
use super::state::{KeySlot, PoolSlot, Supervisor};
use crate::actors::key_worker::{KeyWorker, WorkerEvents};
use crate::actors::messages::CooldownOver;
use crate::amqp::{Broker, Publisher};
use crate::pipeline::{KeyContext, LeaseGate, PoolContext, Services};
use keyrelay_core::config::{JobsConfig, TemplateConfig};
use keyrelay_core::keys::{KeyId, KeyState};
use keyrelay_core::metrics as m;
use keyrelay_core::store::Store;

/// Counts the rest of the process can wait on.
#[derive(Clone)]
pub struct Watches {
    /// Keys consuming right now.
    pub consumers: watch::Receiver<usize>,
    /// Jobs between delivery and ack.
    pub in_flight: watch::Receiver<usize>,
    /// Per pool: keys in rotation and keys consuming.
    pub pools: watch::Receiver<Vec<keyrelay_core::readiness::PoolConsumers>>,
    /// Every key, indexed by `KeyId` (for the lease keeper).
    pub keys: Vec<Arc<KeyContext>>,
}

/// Everything the supervisor is built from.
pub struct SupervisorSetup {
    pub broker: Arc<Broker>,
    pub store: Store,
    pub publisher: Publisher,
    pub jobs: JobsConfig,
    pub templates: std::collections::BTreeMap<String, TemplateConfig>,
    pub pools: Vec<PoolSetup>,
    /// The freshness of this process's key leases.
    pub lease: Arc<LeaseGate>,
    /// Where the supervisor reports leased keys' state changes.
    pub state_changes: tokio::sync::mpsc::UnboundedSender<KeyId>,
    /// Budgets and spend (loaded from the store).
    pub spend: Arc<keyrelay_core::spend::SpendLedger>,
    /// Jobs of each batch held right now (shared with the admin API).
    pub batches_running: Arc<crate::pipeline::batch_running::RunningBatches>,
}

pub struct PoolSetup {
    pub ctx: Arc<PoolContext>,
    pub keys: Vec<KeySetup>,
}

pub use crate::pipeline::context::KeySpec as KeySetup;

impl Supervisor {
    /// Start the supervisor; it starts a key's worker once the key's lease
    /// is taken (`TakeKeys`).
    pub fn launch(setup: SupervisorSetup) -> (Addr<Supervisor>, Watches) {
        let (consumers, consumers_rx) = watch::channel(0);
        let (in_flight, in_flight_rx) = watch::channel(0);
        let (pools, pools_rx) = watch::channel(Vec::new());
        let (addr, keys) = Self::launch_with(setup, consumers, pools, Arc::new(in_flight));
        let watches = Watches {
            consumers: consumers_rx,
            in_flight: in_flight_rx,
            pools: pools_rx,
            keys,
        };
        (addr, watches)
    }

    fn launch_with(
        setup: SupervisorSetup,
        consumers: watch::Sender<usize>,
        pool_consumers: watch::Sender<Vec<keyrelay_core::readiness::PoolConsumers>>,
        in_flight: Arc<watch::Sender<usize>>,
    ) -> (Addr<Supervisor>, Vec<Arc<KeyContext>>) {
        // Key contexts first: the job tasks' services list every pool's keys.
        let mut pools = Vec::new();
        let mut keys = Vec::new();
        let mut pool_keys = BTreeMap::new();
        for (p, pool) in setup.pools.into_iter().enumerate() {
            let mut ids = Vec::new();
            let mut contexts = Vec::new();
            for key in pool.keys {
                let id = KeyId(keys.len());
                let ctx = Arc::new(KeyContext::new(id, key, pool.ctx.clone()));
                contexts.push(ctx.clone());
                keys.push(KeySlot::new(ctx, p));
                ids.push(id);
            }
            pool_keys.insert(pool.ctx.name.clone(), contexts);
            pools.push(PoolSlot::new(pool.ctx, ids));
        }
        let contexts = keys.iter().map(|k: &KeySlot| k.ctx.clone()).collect();
        let addr = Supervisor::create(move |ctx| {
            let services = Arc::new(Services {
                store: setup.store,
                publisher: setup.publisher,
                jobs: setup.jobs,
                templates: setup.templates,
                events: Arc::new(SupervisorPort(ctx.address())),
                pool_keys,
                jobs_in_progress: in_flight,
                in_progress: Default::default(),
                lease: setup.lease,
                spend: setup.spend,
                batches_running: setup.batches_running,
            });
            Supervisor {
                keys,
                pools,
                services,
                broker: setup.broker,
                stopping: false,
                store_writable: true,
                consumers,
                pool_consumers,
                state_changes: setup.state_changes,
                budget_series: Default::default(),
            }
        });
        (addr, contexts)
    }

    /// Restore persisted key states. Workers start as leases are taken.
    fn boot(&mut self, ctx: &mut Context<Self>) {
        let now = jiff::Timestamp::now();
        for i in 0..self.keys.len() {
            let id = KeyId(i);
            let stored = self
                .services
                .store
                .key_state::<KeyState>(&self.keys[i].ctx.store_key);
            let state = match stored {
                // A daily exhaustion that ended while keyrelay was down: probe first.
                Ok(Some(state @ KeyState::Exhausted { .. }))
                    if state.until().is_some_and(|u| u <= now) =>
                {
                    self.keys[i].ctx.set_probing(true);
                    KeyState::Active
                }
                // Parked by a money budget, which the config may have raised
                // meanwhile: checked again at the key's next call.
                Ok(Some(KeyState::Exhausted { reason, .. }))
                    if reason.contains("budget_usd_per") =>
                {
                    KeyState::Active
                }
                Ok(Some(state)) => state.as_of(now),
                Ok(None) => KeyState::Active,
                Err(e) => {
                    warn!(key = %self.keys[i].ctx.store_key, error = %e, "stored key state unreadable; starting active");
                    KeyState::Active
                }
            };
            if !state.is_available() {
                info!(pool = %self.keys[i].ctx.pool.name, key = %self.keys[i].ctx.name, state = state.label(), "key restored out of rotation");
            }
            self.apply(id, state, false, ctx);
        }
        for p in 0..self.pools.len() {
            self.check_pool(p);
        }
    }

    pub(super) fn start_worker(&mut self, id: KeyId, ctx: &mut Context<Self>) {
        let slot = &mut self.keys[id.0];
        // A restarted worker declares its pool's queues again: the broker
        // cancels consumers when their queue is deleted.
        let redeclare = slot.restarts > 0;
        let worker = KeyWorker::new(
            slot.ctx.clone(),
            self.services.clone(),
            self.broker.clone(),
            WorkerEvents {
                stopped: ctx.address().recipient(),
                consuming: ctx.address().recipient(),
            },
            redeclare,
        );
        slot.worker = Some(worker.start());
    }

    /// Move a key to `state`: flag, metrics, timer, worker, and (if `persist`) store.
    pub(super) fn apply(
        &mut self,
        id: KeyId,
        state: KeyState,
        persist: bool,
        ctx: &mut Context<Self>,
    ) {
        let slot = &mut self.keys[id.0];
        let was_available = slot.state.is_available();
        // While stopping no key re-enters rotation (a cooldown ending, an
        // operator's enable): job tasks must start no new call.
        slot.ctx
            .set_available(state.is_available() && slot.leased && !self.stopping);
        if let Some(timer) = slot.timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(until) = state.until() {
            let wait = until
                .duration_since(jiff::Timestamp::now())
                .max(jiff::SignedDuration::ZERO)
                .unsigned_abs();
            slot.timer = Some(
                ctx.notify_later(CooldownOver { key: id }, wait.max(Duration::from_millis(1))),
            );
        }
        if let Some(worker) = &slot.worker {
            match (was_available, state.is_available()) {
                (true, false) => worker.do_send(crate::actors::messages::PauseConsuming),
                // Not while the store cannot write: it resumes them all.
                (false, true) if self.store_writable && !self.stopping => {
                    worker.do_send(crate::actors::messages::ResumeConsuming)
                }
                _ => {}
            }
        }
        slot.ctx.metrics.state(state.label());
        if persist && slot.leased {
            // The fleet hears of it at once (a dead or disabled key above all).
            let _ = self.state_changes.send(id);
        }
        if persist {
            // Written here, in order; only the flush to disk happens later.
            if let Err(e) = self
                .services
                .store
                .save_key_state(&slot.ctx.store_key, &state)
            {
                warn!(key = %slot.ctx.store_key, error = %e, "cannot persist key state");
            }
        }
        slot.state = state;
        let pool = slot.pool;
        self.check_pool(pool);
        self.publish_pool_consumers();
    }

    /// Update the pool's available-keys gauge; warn once when none is left.
    pub(super) fn check_pool(&mut self, p: usize) {
        let pool = &self.pools[p];
        let available = pool
            .keys
            .iter()
            .filter(|k| self.keys[k.0].state.is_available())
            .count();
        // The gauge counts the keys this instance drives, so that a fleet's
        // figures add up; the outage warning is about the pool's states.
        let driven = pool
            .keys
            .iter()
            .filter(|k| self.keys[k.0].leased && self.keys[k.0].state.is_available())
            .count();
        metrics::gauge!(m::KEYS_AVAILABLE, "pool" => pool.ctx.name.clone()).set(driven as f64);
        let next = pool
            .keys
            .iter()
            .filter_map(|k| self.keys[k.0].state.until())
            .min();
        let pool = &mut self.pools[p];
        match (available, pool.outage_logged) {
            (0, false) => {
                pool.outage_logged = true;
                match next {
                    Some(t) => {
                        warn!(pool = %pool.ctx.name, next_key_at = %t, "every key of the pool is unavailable; jobs wait in the queue")
                    }
                    None => {
                        warn!(pool = %pool.ctx.name, "every key of the pool is disabled; jobs wait in the queue until an operator enables one")
                    }
                }
            }
            (n, true) if n > 0 => {
                pool.outage_logged = false;
                info!(pool = %pool.ctx.name, available = n, "pool has usable keys again");
            }
            _ => {}
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.restore_budgets();
        self.boot(ctx);
        self.watch_store(ctx);
        ctx.run_interval(super::quota::BUDGET_PERSIST_EVERY, |act, _| {
            act.persist_budgets();
            act.flush_usage();
            act.flush_spend();
            if let Err(e) = act.services.store.flush_counters() {
                warn!(error = %e, "cannot write key counters");
            }
            // A small write, an fsync and a rename: off the actor's thread.
            let store = act.services.store.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.write_manifest() {
                    warn!(error = %e, "cannot write the store manifest");
                }
            });
            act.publish_quota_gauges();
        });
        // Once now (a service restarted often would otherwise never prune), then hourly.
        self.prune_store();
        ctx.run_interval(super::quota::PRUNE_EVERY, |act, _| act.prune_store());
    }
}
