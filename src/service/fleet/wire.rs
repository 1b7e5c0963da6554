//! The fleet's broker operations: lease queues, key-state queues and the
//! beacon exchange. Each is one or two AMQP round trips.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use tracing::warn;

use super::view::Beacon;
use crate::amqp::{AmqpError, Broker};
use keyrelay_core::lease::HandoverSnapshot;

/// AMQP's RESOURCE_LOCKED: another connection holds the exclusive queue.
const RESOURCE_LOCKED: u16 = 405;

/// Open the fleet channel: publisher confirms on, the fleet exchange
/// declared, and a consumer of every instance's beacons.
pub async fn open_fleet_channel(
    channel: &Channel,
    exchange: &str,
) -> Result<lapin::Consumer, AmqpError> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(AmqpError::op("confirm.select"))?;
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::op("exchange.declare"))?;
    // Server-named, gone with the connection.
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::op("queue.declare"))?;
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::op("queue.bind"))?;
    channel
        .basic_consume(
            queue.name().clone(),
            "keyrelay.fleet".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::op("basic.consume"))
}

/// Announce this instance (no confirm awaited: the next one follows soon).
pub async fn publish_beacon(
    channel: &Channel,
    exchange: &str,
    beacon: &Beacon,
) -> Result<(), AmqpError> {
    let body = serde_json::to_vec(beacon).unwrap_or_default();
    channel
        .basic_publish(
            exchange.into(),
            "".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_expiration("5000".into()),
        )
        .await
        .map_err(AmqpError::op("basic.publish"))?;
    Ok(())
}

/// The next beacon from the consumer; pending forever without one.
pub async fn next_beacon(consumer: &mut Option<lapin::Consumer>) -> Option<Beacon> {
    let Some(stream) = consumer.as_mut() else {
        return std::future::pending().await;
    };
    match stream.next().await {
        Some(Ok(delivery)) => match serde_json::from_slice(&delivery.data) {
            Ok(beacon) => Some(beacon),
            Err(e) => {
                warn!(error = %e, "unreadable fleet beacon ignored");
                None
            }
        },
        // The channel closed: the next tick opens a new one.
        Some(Err(_)) | None => {
            *consumer = None;
            None
        }
    }
}

/// What a lease attempt found.
pub enum Attempt {
    /// This connection holds the lease now; the key's last snapshot, if any.
    Taken(Option<Box<HandoverSnapshot>>),
    /// Another instance holds it.
    Held,
    /// The lease was taken, but the key's snapshot could not be read: the
    /// lease must be let go again.
    Unreadable(AmqpError),
}

/// Channels for lease attempts, reused from one attempt to the next: an
/// exclusive queue belongs to the connection, not the channel, so a channel
/// outlives the leases it took. Only a refused declaration closes one.
pub struct AttemptChannels {
    broker: Arc<Broker>,
    generation: u64,
    idle: Mutex<Vec<Channel>>,
}

impl AttemptChannels {
    /// Channels on the connection of `generation` (the one leases live on).
    pub fn new(broker: Arc<Broker>, generation: u64) -> AttemptChannels {
        AttemptChannels {
            broker,
            generation,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle channel, or a new one; `None` if the connection changed.
    async fn take(&self) -> Result<Option<Channel>, AmqpError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(channel) = idle {
            return Ok(Some(channel));
        }
        let (channel, on) = self.broker.channel_with_generation().await?;
        Ok((on == self.generation).then_some(channel))
    }

    fn give_back(&self, channel: Channel) {
        if channel.status().connected() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(channel);
        }
    }

    /// Close every idle channel (the leases they took stay).
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        for channel in idle {
            let _ = channel.close(200, "lease attempts done".into()).await;
        }
    }
}

/// Try to take `lease_queue` (an exclusive queue: only one connection can
/// hold it) and read the key's last snapshot from `state_queue`. `Err` only
/// when the lease was not taken.
pub async fn take_lease(
    channels: &AttemptChannels,
    lease_queue: &str,
    state_queue: &str,
) -> Result<Attempt, AmqpError> {
    let Some(channel) = channels.take().await? else {
        // The connection changed under us: the next tick starts over.
        return Ok(Attempt::Held);
    };
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(lease_queue.into(), exclusive, FieldTable::default())
        .await;
    let attempt = match declared {
        Ok(_) => match read_snapshot(&channel, state_queue).await {
            Ok(snapshot) => Attempt::Taken(snapshot.map(Box::new)),
            Err(e) => Attempt::Unreadable(e),
        },
        // The refusal closed the channel.
        Err(e) if amqp_code(&e) == Some(RESOURCE_LOCKED) => return Ok(Attempt::Held),
        Err(e) => return Err(AmqpError::op("queue.declare")(e)),
    };
    channels.give_back(channel);
    Ok(attempt)
}

/// The key's last snapshot, left in its queue for the next owner after this one.
async fn read_snapshot(
    channel: &Channel,
    state_queue: &str,
) -> Result<Option<HandoverSnapshot>, AmqpError> {
    declare_state_queue(channel, state_queue).await?;
    let got = channel
        .basic_get(state_queue.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(AmqpError::op("basic.get"))?;
    let Some(message) = got else {
        return Ok(None);
    };
    let snapshot = serde_json::from_slice::<HandoverSnapshot>(&message.delivery.data);
    message
        .delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await
        .map_err(AmqpError::op("basic.nack"))?;
    match snapshot {
        Ok(snapshot) => Ok(Some(snapshot)),
        Err(e) => {
            warn!(queue = %state_queue, error = %e, "unreadable key snapshot; starting from this instance's own state");
            Ok(None)
        }
    }
}

/// Let a lease go: the next instance can take the key at once.
pub async fn drop_lease(channel: &Channel, lease_queue: &str) -> Result<(), AmqpError> {
    channel
        .queue_delete(lease_queue.into(), QueueDeleteOptions::default())
        .await
        .map_err(AmqpError::op("queue.delete"))?;
    Ok(())
}

/// A snapshot's confirm later than this fails the publish (the keeper must
/// not stop announcing itself while a broker hesitates).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Publish a key's snapshot and wait for the broker's confirm: only then
/// may the allowance it grants be used.
pub async fn publish_snapshot(
    channel: &Channel,
    state_queue: &str,
    snapshot: &HandoverSnapshot,
) -> Result<(), AmqpError> {
    tokio::time::timeout(
        CONFIRM_TIMEOUT,
        publish_confirmed(channel, state_queue, snapshot),
    )
    .await
    .map_err(|_| AmqpError::Timeout(state_queue.to_owned(), CONFIRM_TIMEOUT))?
}

async fn publish_confirmed(
    channel: &Channel,
    state_queue: &str,
    snapshot: &HandoverSnapshot,
) -> Result<(), AmqpError> {
    let body = serde_json::to_vec(snapshot).unwrap_or_default();
    let confirm = channel
        .basic_publish(
            "".into(),
            state_queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &body,
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into()),
        )
        .await
        .map_err(AmqpError::op("basic.publish"))?
        .await
        .map_err(AmqpError::op("publisher confirm"))?;
    if confirm.is_nack() {
        return Err(AmqpError::Nacked(state_queue.to_owned()));
    }
    if confirm.take_message().is_some() {
        // Returned unroutable: the queue is gone (deleted by hand?).
        return Err(AmqpError::Nacked(state_queue.to_owned()));
    }
    Ok(())
}

/// The key's state queue: durable, keeping only the newest snapshot.
async fn declare_state_queue(channel: &Channel, queue: &str) -> Result<(), AmqpError> {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await
        .map_err(AmqpError::op("queue.declare"))?;
    Ok(())
}

/// The AMQP reply code of a channel or connection error, if it is one.
fn amqp_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}
