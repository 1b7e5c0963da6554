//! The actors: one [`Supervisor`](supervisor::Supervisor) that owns every key's
//! state, and one [`KeyWorker`](key_worker::KeyWorker) per key that owns its AMQP
//! channel and consumer. Every message is defined in [`messages`].

pub mod key_worker;
pub mod messages;
pub mod supervisor;
