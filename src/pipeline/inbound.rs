//! A delivery that must be settled, acked or nacked, exactly once.
//!
//! Dropping an unsettled [`Inbound`] (a panic in a job task, a reroute message
//! lost while the supervisor stops) nacks it with requeue, so no path can
//! leave a job stuck unacked on its channel.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tracing::warn;

use crate::metrics as m;

pub struct Inbound {
    pub delivery: Delivery,
    /// The channel the delivery came on, kept open until the job is settled
    /// (lapin closes a channel when its last handle drops).
    _channel: lapin::Channel,
    settled: bool,
}

impl Inbound {
    pub fn new(delivery: Delivery, channel: lapin::Channel) -> Inbound {
        Inbound {
            delivery,
            _channel: channel,
            settled: false,
        }
    }

    pub fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    pub fn properties(&self) -> &lapin::BasicProperties {
        &self.delivery.properties
    }

    /// Ack: the job is done. A lost ack is counted; the broker redelivers and
    /// the store answers.
    pub async fn ack(mut self) {
        self.settled = true;
        match self.delivery.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => {}
            Ok(false) | Err(_) => self.lost("ack"),
        }
    }

    /// Nack, requeueing the job or not.
    pub async fn nack(mut self, requeue: bool) {
        self.settled = true;
        let options = BasicNackOptions {
            requeue,
            ..Default::default()
        };
        if !matches!(self.delivery.acker.nack(options).await, Ok(true)) {
            self.lost("nack");
        }
    }

    fn lost(&self, what: &'static str) {
        metrics::counter!(m::ACKS_LOST_TOTAL).increment(1);
        warn!(
            delivery_tag = self.delivery.delivery_tag,
            what, "not sent (channel gone); the broker redelivers the job"
        );
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
        let acker = self.delivery.acker.clone();
        let channel = self._channel.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let options = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                let _ = acker.nack(options).await;
                drop(channel);
            });
        }
    }
}
