//! KeyWorker: one per API key. Owns an AMQP channel with `basic_qos(concurrency)`
//! and a consumer on its pool's queue whose `x-priority` comes from the key's
//! priority, so the broker itself fills preferred keys first. Each delivery
//! becomes a job task ([`crate::pipeline`]), spawned by the consumer's delivery
//! loop; the worker only manages consuming (start, pause, resume, stop). A
//! second consumer, prefetch 1, takes the pool's high-priority queue.

mod actor;
mod handlers;

use std::sync::Arc;

use actix::Recipient;
use lapin::Channel;

use super::messages::{ConsumerState, WorkerStopped};
use crate::amqp::{Broker, Settler};
use crate::pipeline::{KeyContext, Services};

pub struct KeyWorker {
    key: Arc<KeyContext>,
    services: Arc<Services>,
    broker: Arc<Broker>,
    /// Where the worker reports to (the supervisor).
    events: WorkerEvents,
    channel: Option<Channel>,
    /// Settles the channel's deliveries (one per channel: delivery tags count
    /// up per channel, across consumer generations).
    settler: Option<Settler>,
    /// The live consumer, if consuming: its tag and generation.
    consumer: Option<(String, u64)>,
    /// The consumer on the pool's high-priority queue (prefetch 1), started
    /// and cancelled with `consumer`.
    high_consumer: Option<String>,
    /// Bumped for every new consumer, so the end of an old (cancelled) consumer's
    /// stream is not mistaken for the loss of the current one.
    generation: u64,
    /// Set by `StopWorker`: stopping is intended, do not ask for a restart.
    retiring: bool,
    /// Dropped with the worker, which ends its delivery loops.
    alive: tokio::sync::watch::Sender<()>,
    /// Declare the pool's queues before consuming (a restarted worker: its
    /// queue may have been deleted).
    redeclare: bool,
}

/// What a worker tells its owner: that it stopped (restart it), and when its
/// consumer starts or stops.
#[derive(Clone)]
pub struct WorkerEvents {
    pub stopped: Recipient<WorkerStopped>,
    pub consuming: Recipient<ConsumerState>,
}

impl KeyWorker {
    pub fn new(
        key: Arc<KeyContext>,
        services: Arc<Services>,
        broker: Arc<Broker>,
        events: WorkerEvents,
        redeclare: bool,
    ) -> KeyWorker {
        KeyWorker {
            key,
            services,
            broker,
            events,
            channel: None,
            settler: None,
            consumer: None,
            high_consumer: None,
            generation: 0,
            retiring: false,
            alive: tokio::sync::watch::Sender::new(()),
            redeclare,
        }
    }

    /// `x-priority` of the consumer: priority 1 (preferred) ranks above 2.
    pub fn consumer_priority(priority: u8) -> i32 {
        -i32::from(priority)
    }
}
