//! Supervisor: the one actor that knows every key's state. It starts the key
//! workers (and restarts those that stop), moves keys in and out of rotation on
//! the events job tasks report (through the [`KeyEvents`](crate::pipeline::KeyEvents)
//! port it implements), gates each key (job tasks route by the keys' gates),
//! and persists key states so a restart honours cooldowns and exhaustion.

mod actor;
mod admin_handlers;
mod handlers;
mod lease_handlers;
mod port;
mod quota;
mod readiness;
mod state;
mod store_health;

pub use actor::{KeySetup, PoolSetup, SupervisorSetup, Watches};
pub use state::Supervisor;
