//! Publishing with publisher confirms: a message counts as sent only when the
//! broker acks it; a nack is an error and an unroutable `mandatory` message is
//! reported, not mistaken for success.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel};
use tokio::sync::Mutex;

use super::broker::Broker;
use super::error::AmqpError;

/// How a confirmed publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Routed to at least one queue and confirmed.
    Delivered,
    /// `mandatory` and no queue matched: the broker returned it.
    Unroutable,
}

/// A broker that neither confirms nor fails a publish in this time (memory
/// alarm, half-dead connection) is treated as having failed it: what a
/// command-line client waits at most.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// The service's replies wait longer: a broker under a memory or disk alarm
/// blocks publishers and confirms once the alarm clears, and a reply given up
/// on at 30 s was requeued and answered again (16 duplicates after a 30+ s
/// alarm). A dead or silent connection still fails the publish within the
/// heartbeat (`broker.heartbeat_secs`).
pub const SERVICE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(600);

/// A confirm-mode channel shared by every task; replaced when it breaks.
pub struct Publisher {
    broker: Arc<Broker>,
    /// The channel and the connection generation it was opened on.
    channel: Mutex<(Channel, u64)>,
    confirm_timeout: Duration,
}

impl Publisher {
    pub async fn new(broker: Arc<Broker>) -> Result<Publisher, AmqpError> {
        let channel = confirm_channel(&broker).await?;
        Ok(Publisher {
            broker,
            channel: Mutex::new(channel),
            confirm_timeout: CONFIRM_TIMEOUT,
        })
    }

    /// The same publisher, waiting up to `timeout` for each confirm.
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Publisher {
        self.confirm_timeout = timeout;
        self
    }

    /// Publish through the default exchange to queue `queue` and wait for the confirm.
    pub async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<PublishOutcome, AmqpError> {
        let channel = self.live_channel().await?;
        let options = BasicPublishOptions {
            mandatory,
            ..BasicPublishOptions::default()
        };
        let publish = async {
            channel
                .basic_publish("".into(), queue.into(), options, body, properties)
                .await
                .map_err(AmqpError::op("basic.publish"))?
                .await
                .map_err(AmqpError::op("publisher confirm"))
        };
        let confirm = tokio::time::timeout(self.confirm_timeout, publish)
            .await
            .map_err(|_| AmqpError::Timeout(queue.to_owned(), self.confirm_timeout))??;
        if confirm.is_nack() {
            return Err(AmqpError::Nacked(queue.to_owned()));
        }
        Ok(match confirm.take_message() {
            Some(_) => PublishOutcome::Unroutable,
            None => PublishOutcome::Delivered,
        })
    }

    /// The current channel, or a fresh one when it has closed.
    async fn live_channel(&self) -> Result<Channel, AmqpError> {
        let mut guard = self.channel.lock().await;
        let (channel, generation) = &*guard;
        if !channel.status().connected() || *generation != self.broker.generation() {
            *guard = confirm_channel(&self.broker).await?;
        }
        Ok(guard.0.clone())
    }
}

async fn confirm_channel(broker: &Broker) -> Result<(Channel, u64), AmqpError> {
    let (channel, generation) = broker.channel_with_generation().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(AmqpError::op("confirm.select"))?;
    Ok((channel, generation))
}
