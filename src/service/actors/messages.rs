//! Every message the actors exchange.

use actix::Message;

use keyrelay_core::keys::{KeyId, KeyState};
use keyrelay_core::provider::Outcome;

/// Job task → supervisor (through the key-events port): what a provider call on `key` returned (a success's
/// text is dropped).
#[derive(Message)]
#[rtype(result = "()")]
pub struct KeyOutcome {
    pub key: KeyId,
    pub outcome: Outcome,
    /// How long the provider call took.
    pub latency: std::time::Duration,
}

/// Job task → supervisor (through the key-events port): `key` has no budget left under its declared limits
/// until `blocked.until`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BudgetSpent {
    pub key: KeyId,
    pub blocked: keyrelay_core::keys::Blocked,
}

/// Lease keeper → supervisor: this instance holds the leases of `keys`;
/// drive each, from the state given when another instance handed it over
/// (else from the state this process has). Their budgets are in place
/// already. Answers the state each key is driven in, in order.
#[derive(Message)]
#[rtype(result = "Vec<KeyState>")]
pub struct TakeKeys {
    pub keys: Vec<(KeyId, Option<KeyState>)>,
}

/// Lease keeper → supervisor: stop driving `key` (its lease is being handed
/// over, or was lost with the connection). In-flight calls finish.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LetKeyGo {
    pub key: KeyId,
}

/// Lease keeper → supervisor: answered once the supervisor has started
/// (stored states and budgets restored).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Booted;

/// Lease keeper → supervisor: `key`'s state, for a snapshot.
#[derive(Message)]
#[rtype(result = "KeyState")]
pub struct KeyStateOf {
    pub key: KeyId,
}

/// Worker → supervisor: the worker stopped (channel lost, consumer cancelled by
/// the broker); restart it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerStopped {
    pub key: KeyId,
}

/// Worker → supervisor: its consumer started (`true`) or stopped (`false`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConsumerState {
    pub key: KeyId,
    pub consuming: bool,
}

/// Supervisor → worker: stop consuming (cancel the consumer, keep the channel so
/// in-flight jobs can still be acked).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PauseConsuming;

/// Supervisor → worker: consume again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResumeConsuming;

/// Supervisor → worker: cancel the consumer and stop for good (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopWorker;

/// Timer → supervisor: `key`'s cooldown or exhaustion may have ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CooldownOver {
    pub key: KeyId,
}

/// Why an operator's command on a key failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyCommandError {
    #[error("no key `{key}` in pool `{pool}`")]
    NoSuchKey { pool: String, key: String },
    /// The command's write to the store failed; the key is unchanged.
    #[error("cannot clear the counters of `{key}`: {source}")]
    Store {
        /// `pool/key`.
        key: String,
        #[source]
        source: keyrelay_core::store::StoreError,
    },
    /// keyrelay is shutting down: keys do not re-enter rotation.
    #[error("keyrelay is shutting down")]
    ShuttingDown,
}

/// Operator → supervisor: put a key back into rotation.
#[derive(Message)]
#[rtype(result = "Result<(), KeyCommandError>")]
pub struct EnableKey {
    pub pool: String,
    pub key: String,
}

/// Operator → supervisor: take a key out of rotation.
#[derive(Message)]
#[rtype(result = "Result<(), KeyCommandError>")]
pub struct DisableKey {
    pub pool: String,
    pub key: String,
    pub reason: String,
}

/// Anyone → supervisor: a snapshot of every key.
#[derive(Message)]
#[rtype(result = "Vec<KeySnapshot>")]
pub struct GetKeys;

/// One key as seen by the supervisor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeySnapshot {
    pub pool: String,
    pub name: String,
    pub fingerprint: String,
    pub priority: u8,
    pub concurrency: u16,
    pub in_flight: usize,
    pub state: KeyState,
    /// Declared limits and what is used of them.
    pub limits: keyrelay_core::keys::Limits,
    pub usage: keyrelay_core::keys::Usage,
    /// Last provider call and last failure class.
    pub last: crate::pipeline::LastUse,
}

/// Shutdown → supervisor: stop for good (after `StopAll` and the drain).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Terminate;

/// Shutdown → supervisor: stop every worker's consumer; resolves when all have
/// been told.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAll;

/// Operator → supervisor: clear a key's cooldown, exhaustion or disablement and
/// its stored counters; the key is back in rotation.
#[derive(Message)]
#[rtype(result = "Result<(), KeyCommandError>")]
pub struct ResetKey {
    pub pool: String,
    pub key: String,
}

/// Operator → supervisor: the context of one key, to probe it with a tiny
/// provider request outside the actor.
#[derive(Message)]
#[rtype(result = "Result<std::sync::Arc<crate::pipeline::KeyContext>, KeyCommandError>")]
pub struct ProbeTarget {
    pub pool: String,
    pub key: String,
}

/// Admin API → supervisor: budgets changed (raised, or cleared): keys parked
/// by a money budget come back, each checked again on its next call.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct BudgetsChanged;
