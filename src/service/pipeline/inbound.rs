//! A delivery that must be settled, acked or nacked, exactly once.
//!
//! Settling goes through the channel's [`Settler`], which folds consecutive
//! acks into one frame. Dropping an unsettled [`Inbound`] (a panic in a job
//! task, a reroute message lost while the supervisor stops) nacks it with
//! requeue, so no path can leave a job stuck unacked on its channel.

use lapin::message::Delivery;
use tracing::warn;

use crate::amqp::{Settler, Verdict};

pub struct Inbound {
    pub delivery: Delivery,
    /// Settles on the channel the delivery came on, and keeps that channel
    /// open until the job is settled (lapin closes a channel when its last
    /// handle drops).
    settler: Settler,
    settled: bool,
    /// From the pool's high-priority queue: runs in the key's high slot.
    high: bool,
}

impl Inbound {
    pub fn new(delivery: Delivery, settler: Settler) -> Inbound {
        Inbound {
            delivery,
            settler,
            settled: false,
            high: false,
        }
    }

    /// A delivery from the pool's high-priority queue.
    pub fn in_high_lane(mut self) -> Inbound {
        self.high = true;
        self
    }

    /// Whether it came from the pool's high-priority queue.
    pub fn is_high(&self) -> bool {
        self.high
    }

    pub fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    pub fn properties(&self) -> &lapin::BasicProperties {
        &self.delivery.properties
    }

    /// Ack: the job is done. A lost ack is counted; the broker redelivers and
    /// the store answers.
    pub fn ack(mut self) {
        self.settle(Verdict::Ack);
    }

    /// Nack, requeueing the job or not.
    pub fn nack(mut self, requeue: bool) {
        self.settle(Verdict::Nack { requeue });
    }

    fn settle(&mut self, verdict: Verdict) {
        self.settled = true;
        let acker = self.delivery.acker.clone();
        self.settler
            .settle(self.delivery.delivery_tag, acker, verdict);
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        warn!(
            delivery_tag = self.delivery.delivery_tag,
            "job dropped unsettled; requeueing it"
        );
        self.settle(Verdict::Nack { requeue: true });
    }
}
