//! The supervisor's state: every key's slot (its state, worker, timer,
//! restarts) and every pool's, plus what it publishes for readiness.

use std::sync::Arc;

use actix::{Addr, SpawnHandle};

use crate::actors::key_worker::KeyWorker;
use crate::amqp::Broker;
use crate::pipeline::{KeyContext, PoolContext, Services};
use keyrelay_core::keys::{KeyId, KeyState};

pub struct Supervisor {
    pub(super) keys: Vec<KeySlot>,
    pub(super) pools: Vec<PoolSlot>,
    pub(super) services: Arc<Services>,
    pub(super) broker: Arc<Broker>,
    /// Set by `StopAll`: workers that stop are not restarted.
    pub(super) stopping: bool,
    /// False while the store cannot write: no worker consumes.
    pub(super) store_writable: bool,
    /// Number of keys consuming right now (readiness, tests, shutdown).
    pub(super) consumers: tokio::sync::watch::Sender<usize>,
    /// Per pool: keys in rotation and keys consuming (`/readyz`).
    pub(super) pool_consumers:
        tokio::sync::watch::Sender<Vec<keyrelay_core::readiness::PoolConsumers>>,
    /// Told of every state change of a leased key, so the lease keeper
    /// publishes it to the fleet at once.
    pub(super) state_changes: tokio::sync::mpsc::UnboundedSender<KeyId>,
    /// `keyrelay_budget_used_ratio` series published at the last flush: one
    /// whose budget went is set to 0, so its alert stops.
    pub(super) budget_series: std::collections::HashSet<(&'static str, String, &'static str)>,
}

/// The supervisor's view of one key.
pub(super) struct KeySlot {
    pub(super) ctx: Arc<KeyContext>,
    pub(super) pool: usize,
    pub(super) state: KeyState,
    pub(super) worker: Option<Addr<KeyWorker>>,
    /// Fires when the key's cooldown or exhaustion ends.
    pub(super) timer: Option<SpawnHandle>,
    /// Consecutive restarts, for the restart backoff; cleared by a success.
    pub(super) restarts: u32,
    pub(super) consuming: bool,
    /// Whether this process holds the key's lease (drives it).
    pub(super) leased: bool,
    /// Recent transient failures, for the growing cooldown.
    pub(super) transient: keyrelay_core::keys::TransientTracker,
}

pub(super) struct PoolSlot {
    pub(super) ctx: Arc<PoolContext>,
    pub(super) keys: Vec<KeyId>,
    /// Whether "every key is unavailable" has been logged since the last time
    /// a key was available (one warning per outage, not one per job).
    pub(super) outage_logged: bool,
    /// Whether "no consumer on the queue" has been logged since the pool last
    /// had one (the queue deleted, the broker gone).
    pub(super) starved_logged: bool,
    /// Whether the pool has consumed since start (start-up is not a loss).
    pub(super) had_consumer: bool,
}

impl KeySlot {
    /// A key as it starts: active until its stored state says otherwise, not
    /// driven until its lease is taken.
    pub(super) fn new(ctx: Arc<KeyContext>, pool: usize) -> KeySlot {
        KeySlot {
            ctx,
            pool,
            state: KeyState::Active,
            worker: None,
            timer: None,
            restarts: 0,
            consuming: false,
            leased: false,
            transient: Default::default(),
        }
    }
}

impl PoolSlot {
    pub(super) fn new(ctx: Arc<PoolContext>, keys: Vec<KeyId>) -> PoolSlot {
        PoolSlot {
            ctx,
            keys,
            outage_logged: false,
            starved_logged: false,
            had_consumer: false,
        }
    }
}
