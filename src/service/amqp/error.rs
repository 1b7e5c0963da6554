//! What can go wrong talking to RabbitMQ.

use thiserror::Error;

/// What can go wrong talking to RabbitMQ.
#[derive(Debug, Error)]
pub enum AmqpError {
    #[error("cannot connect to the broker: {0}")]
    Connect(#[source] lapin::Error),
    #[error("broker operation `{op}` failed: {source}")]
    Op {
        op: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("the broker refused (nacked) a publish to `{0}`")]
    Nacked(String),
    #[error("no confirm from the broker for a publish to `{0}` within {1:?}")]
    Timeout(String, std::time::Duration),
    /// The connection was closed for shutdown: nothing reconnects it.
    #[error("the broker connection was closed for shutdown")]
    Closed,
}

impl AmqpError {
    pub(crate) fn op(op: &'static str) -> impl FnOnce(lapin::Error) -> AmqpError {
        move |source| AmqpError::Op { op, source }
    }
}
