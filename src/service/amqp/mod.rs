//! The AMQP edge: connection, topology, publishing with confirms, and the
//! mapping between AMQP properties and the job contract.

mod broker;
pub mod depth;
mod error;
mod properties;
mod publisher;
pub mod retry;
mod settler;
pub mod topology;

pub use broker::Broker;
pub use error::AmqpError;
pub use properties::{
    BATCH_TOTAL_HEADER, dead_letter_properties, job_properties, reply_properties,
};
pub use publisher::{PublishOutcome, Publisher, SERVICE_CONFIRM_TIMEOUT};
pub use settler::{Settler, Verdict};
