//! Supervisor: the one actor that knows every key's state. It starts the key
//! workers (and restarts those that stop), moves keys in and out of rotation on
//! the outcomes job tasks report, reroutes jobs off keys that cannot run them,
//! and persists key states so a restart honours cooldowns and exhaustion.

mod actor;
mod admin_handlers;
mod handlers;
mod quota;
mod readiness;
mod store_health;

use std::sync::Arc;

use actix::{Addr, SpawnHandle};

use super::key_worker::KeyWorker;
use crate::amqp::Broker;
use crate::pipeline::{KeyContext, PoolContext, Services};
use keyrelay_core::keys::{KeyId, KeyState};

pub use actor::{KeySetup, PoolSetup, SupervisorSetup, Watches};

pub struct Supervisor {
    keys: Vec<KeySlot>,
    pools: Vec<PoolSlot>,
    services: Arc<Services>,
    broker: Arc<Broker>,
    /// Set by `StopAll`: workers that stop are not restarted.
    stopping: bool,
    /// False while the store cannot write: no worker consumes.
    store_writable: bool,
    /// Number of keys consuming right now (readiness, tests, shutdown).
    consumers: tokio::sync::watch::Sender<usize>,
    /// Per pool: keys in rotation and keys consuming (`/readyz`).
    pool_consumers: tokio::sync::watch::Sender<Vec<keyrelay_core::readiness::PoolConsumers>>,
}

/// The supervisor's view of one key.
struct KeySlot {
    ctx: Arc<KeyContext>,
    pool: usize,
    state: KeyState,
    worker: Option<Addr<KeyWorker>>,
    /// Fires when the key's cooldown or exhaustion ends.
    timer: Option<SpawnHandle>,
    /// Consecutive restarts, for the restart backoff; cleared by a success.
    restarts: u32,
    consuming: bool,
    /// Recent transient failures, for the growing cooldown.
    transient: keyrelay_core::keys::TransientTracker,
}

struct PoolSlot {
    ctx: Arc<PoolContext>,
    keys: Vec<KeyId>,
    /// Whether "every key is unavailable" has been logged since the last time
    /// a key was available (one warning per outage, not one per job).
    outage_logged: bool,
    /// Whether "no consumer on the queue" has been logged since the pool last
    /// had one (the queue deleted, the broker gone).
    starved_logged: bool,
    /// Whether the pool has consumed since start (start-up is not a loss).
    had_consumer: bool,
}
