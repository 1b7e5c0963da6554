//! What happens to one job, from delivery to ack. The path reads as a straight
//! line in [`job`]: decode → answer from the store if already done → [`admit`]
//! → [`call`] → settle by the routing decision ([`route`]) → [`finish`] (store,
//! reply, ack) or [`hand_back`] (delay queue, back to the queue, dead letter).
//!
//! Job tasks report key events through the [`KeyEvents`] port and know no actor.

mod admit;
pub mod batch;
pub mod batch_running;
mod call;
pub mod context;
mod estimate;
mod finish;
mod hand_back;
mod in_progress;
mod inbound;
mod job;
mod key_events;
pub mod lease_gate;
pub mod prices;
mod prior;
mod route;
pub mod spend;

pub use context::{
    BudgetSnapshot, InFlight, KeyContext, KeySpec, LastUse, PoolContext, Services, Timing,
};
pub use estimate::estimate_tokens;
pub use hand_back::return_to_broker;
pub use in_progress::{Claim, InProgress};
pub use inbound::Inbound;
pub use job::{on_delivery, run_on_key};
pub use key_events::KeyEvents;
pub use lease_gate::LeaseGate;
