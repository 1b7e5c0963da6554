//! What can go wrong talking to RabbitMQ.

use thiserror::Error;

/// What can go wrong talking to RabbitMQ.
#[derive(Debug, Error)]
pub enum AmqpError {
    /// `url` has its password masked; `reason` is the innermost cause (one
    /// line, not lapin's error chain, which says the same words three times).
    #[error("cannot connect to the broker at {url} (broker.url, KEYRELAY__BROKER__URL): {reason}")]
    Connect { url: String, reason: String },
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
    /// Whether the broker said the queue (or exchange) does not exist:
    /// AMQP's NOT_FOUND (404), as a passive declare of a missing queue gets.
    pub fn is_not_found(&self) -> bool {
        match self {
            AmqpError::Op { source, .. } => {
                matches!(source.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 404)
            }
            _ => false,
        }
    }

    /// A connection to `url` failed with `error`.
    pub(crate) fn connect(url: &str, error: &(dyn std::error::Error + 'static)) -> AmqpError {
        let mut innermost = error;
        while let Some(source) = innermost.source() {
            innermost = source;
        }
        AmqpError::Connect {
            url: masked(url),
            reason: innermost.to_string(),
        }
    }

    pub(crate) fn op(op: &'static str) -> impl FnOnce(lapin::Error) -> AmqpError {
        move |source| AmqpError::Op { op, source }
    }
}

/// `url` without its password (`amqp://guest:***@host/vhost`).
fn masked(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}
