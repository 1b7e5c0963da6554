//! The fleet's broker operations: key leases (exclusive consumers of
//! durable lease queues), key-state queues and the beacon exchange. Each is
//! one or two AMQP round trips.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
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

/// A key lease this connection holds: the one exclusive consumer of the
/// key's durable lease queue. Leases taken in one round share channels (see
/// [`LeaseChannels`]).
pub struct Lease {
    channel: Channel,
    tag: ShortString,
}

impl Lease {
    /// Let the lease go: once the broker confirms the cancel, the next
    /// instance can take the key. A failed cancel means the channel or the
    /// connection is gone, and the lease with it.
    pub async fn release(self) {
        let _ = self
            .channel
            .basic_cancel(self.tag, BasicCancelOptions::default())
            .await;
    }

    /// Whether the channel the lease lives on is still open.
    pub fn is_live(&self) -> bool {
        self.channel.status().connected()
    }
}

/// Leases taken in one round of attempts, [`LEASES_PER_CHANNEL`] to a
/// channel: a thousand leases on 16 channels, not a thousand (each costs a
/// round trip to open and a few KiB on both ends). A refused consume closes
/// its channel and every consumer on it; that can only happen while the
/// round runs, before any of its keys is driven, so the round's leases on a
/// closed channel are simply not taken (see [`Lease::is_live`]). Once the
/// round is over its channels take no new consume, and each closes when
/// its last lease is let go.
pub struct LeaseChannels {
    channels: Vec<Channel>,
}

/// How many leases of one round share a channel.
const LEASES_PER_CHANNEL: usize = 64;

impl LeaseChannels {
    /// Channels for `leases` attempts; `None` if the connection changed.
    pub async fn open(
        attempts: &AttemptChannels,
        leases: usize,
    ) -> Result<Option<LeaseChannels>, AmqpError> {
        let count = leases.div_ceil(LEASES_PER_CHANNEL).max(1);
        let opened =
            futures_util::future::try_join_all((0..count).map(|_| attempts.open())).await?;
        Ok(opened
            .into_iter()
            .collect::<Option<Vec<Channel>>>()
            .map(|channels| LeaseChannels { channels }))
    }

    /// The channel attempt number `n` of the round consumes on.
    pub fn for_attempt(&self, n: usize) -> &Channel {
        &self.channels[(n / LEASES_PER_CHANNEL) % self.channels.len()]
    }
}

/// What a lease attempt found.
pub enum Attempt {
    /// This connection holds the lease now; the key's last snapshot, if any,
    /// and the consumer whose end means the lease is gone.
    Taken(Lease, lapin::Consumer, Option<Box<HandoverSnapshot>>),
    /// Another instance holds it.
    Held,
    /// The lease was taken, but the key's snapshot could not be read: the
    /// lease must be let go again.
    Unreadable(Lease, AmqpError),
}

/// Channels for the declarations and snapshot reads of lease attempts,
/// reused from one attempt to the next (they hold no lease: a refused
/// declaration closes its channel and nothing else). All on the connection
/// of one generation: the one leases live on.
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
        self.open().await
    }

    /// A new channel; `None` if the connection changed.
    pub async fn open(&self) -> Result<Option<Channel>, AmqpError> {
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

    /// Close every idle channel.
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        for channel in idle {
            let _ = channel.close(200, "lease attempts done".into()).await;
        }
    }
}

/// Try to take the lease of a key: become the one exclusive consumer of its
/// durable `lease_queue`, then read its last snapshot from `state_queue`.
/// Declaring the lease queue is no lease (it only exists); on a restart it
/// exists already, so taking a thousand leases creates no queue. `Err` only
/// when the lease was not taken.
pub async fn take_lease(
    channels: &AttemptChannels,
    lease_channel: &Channel,
    lease_queue: &str,
    state_queue: &str,
) -> Result<Attempt, AmqpError> {
    let Some(channel) = channels.take().await? else {
        // The connection changed under us: the next tick starts over.
        return Ok(Attempt::Held);
    };
    match declare_lease_queue(&channel, lease_queue).await {
        Ok(LeaseQueue::Free) => {}
        Ok(LeaseQueue::Held) => {
            channels.give_back(channel);
            return Ok(Attempt::Held);
        }
        // The refusal closed the channel.
        Ok(LeaseQueue::OlderLease) => return Ok(Attempt::Held),
        Err(e) => return Err(e),
    }
    let (lease, consumer) = match consume_lease(lease_channel, lease_queue).await {
        Ok(Some(taken)) => taken,
        Ok(None) => {
            channels.give_back(channel);
            return Ok(Attempt::Held);
        }
        Err(e) => {
            channels.give_back(channel);
            return Err(e);
        }
    };
    let attempt = match read_snapshot(&channel, state_queue).await {
        Ok(snapshot) => Attempt::Taken(lease, consumer, snapshot.map(Box::new)),
        Err(e) => Attempt::Unreadable(lease, e),
    };
    channels.give_back(channel);
    Ok(attempt)
}

/// What the declaration of a lease queue says about its lease.
enum LeaseQueue {
    /// Nobody consumes it: the lease may be free.
    Free,
    /// It has its consumer: another instance holds the lease.
    Held,
    /// An exclusive queue of that name lives on another connection: an
    /// older keyrelay (leases as exclusive queues) holds the key.
    OlderLease,
}

async fn declare_lease_queue(
    channel: &Channel,
    lease_queue: &str,
) -> Result<LeaseQueue, AmqpError> {
    let declared = channel
        .queue_declare(
            lease_queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await;
    match declared {
        Ok(queue) if queue.consumer_count() > 0 => Ok(LeaseQueue::Held),
        Ok(_) => Ok(LeaseQueue::Free),
        Err(e) if amqp_code(&e) == Some(RESOURCE_LOCKED) => Ok(LeaseQueue::OlderLease),
        Err(e) => Err(AmqpError::op("queue.declare")(e)),
    }
}

/// Become the exclusive consumer of `lease_queue` on `channel`. `None`:
/// another connection got there first, and the refusal closed `channel`
/// (with the round's other consumers on it), or an earlier refusal did.
async fn consume_lease(
    channel: &Channel,
    lease_queue: &str,
) -> Result<Option<(Lease, lapin::Consumer)>, AmqpError> {
    if !channel.status().connected() {
        return Ok(None);
    }
    let options = BasicConsumeOptions {
        exclusive: true,
        // Nothing is published to a lease queue; should anything be, it is
        // dropped rather than held unacked.
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    // Unique on the channel: a round tries each key once.
    let tag = ShortString::from(lease_queue);
    let consumed = channel
        .basic_consume(
            lease_queue.into(),
            tag.clone(),
            options,
            FieldTable::default(),
        )
        .await;
    match consumed {
        Ok(consumer) => Ok(Some((
            Lease {
                channel: channel.clone(),
                tag,
            },
            consumer,
        ))),
        Err(_) if !channel.status().connected() => Ok(None),
        Err(e) => Err(AmqpError::op("basic.consume")(e)),
    }
}

/// A stream with one item, `(key, serial)`, once `consumer` ends: the lease
/// it stood for is gone (let go, its queue deleted, its channel closed).
pub fn lease_end<K: Send + 'static>(
    consumer: lapin::Consumer,
    key: K,
) -> futures_util::stream::BoxStream<'static, K> {
    consumer
        .filter_map(|_| std::future::ready(None))
        .chain(futures_util::stream::once(std::future::ready(key)))
        .boxed()
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
