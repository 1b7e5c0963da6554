//! How deep a queue is: ready messages and consumers, from a passive
//! `queue.declare` (which never creates it). RabbitMQ's AMQP interface does
//! not report unacked messages; that needs the management API.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use super::broker::Broker;
use super::error::AmqpError;

/// What the broker says about one queue.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct QueueDepth {
    pub ready: u64,
    pub consumers: u64,
}

/// Ready messages and consumers of `queue` (passive declare: never creates it).
pub async fn queue_depth(broker: &Broker, queue: &str) -> Result<QueueDepth, AmqpError> {
    let channel = broker.channel().await?;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .map_err(AmqpError::op("queue.declare (passive)"))?;
    let _ = channel.close(200, "depth read".into()).await;
    Ok(QueueDepth {
        ready: u64::from(declared.message_count()),
        consumers: u64::from(declared.consumer_count()),
    })
}
