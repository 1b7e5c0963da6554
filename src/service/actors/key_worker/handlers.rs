//! KeyWorker message handlers: deliveries, pause, resume, stop.

use actix::prelude::*;
use lapin::options::BasicCancelOptions;
use tracing::{info, warn};

use super::KeyWorker;
use super::actor::ConsumerEnded;
use crate::actors::messages::{PauseConsuming, ResumeConsuming, StopWorker};
use crate::amqp::AmqpError;

impl Handler<ConsumerEnded> for KeyWorker {
    type Result = ();

    fn handle(&mut self, msg: ConsumerEnded, ctx: &mut Self::Context) {
        // The tail of a consumer we cancelled ends quietly.
        if !self.is_current(msg.generation) {
            return;
        }
        match msg.error {
            Some(error) => {
                warn!(pool = %self.key.pool.name, key = %self.key.name, error = %error, "consumer failed; restarting worker")
            }
            // Ended without us cancelling it: the broker cancelled it (queue
            // deleted) or the channel closed.
            None => {
                warn!(pool = %self.key.pool.name, key = %self.key.name, "consumer ended; restarting worker")
            }
        }
        ctx.stop();
    }
}

impl Handler<PauseConsuming> for KeyWorker {
    type Result = ();

    fn handle(&mut self, _: PauseConsuming, ctx: &mut Self::Context) {
        self.cancel_consumer(ctx);
    }
}

impl Handler<ResumeConsuming> for KeyWorker {
    type Result = ();

    fn handle(&mut self, _: ResumeConsuming, ctx: &mut Self::Context) {
        self.start_consuming(ctx);
    }
}

impl Handler<StopWorker> for KeyWorker {
    type Result = ();

    fn handle(&mut self, _: StopWorker, ctx: &mut Self::Context) {
        self.retiring = true;
        self.cancel_consumer(ctx);
        // Runs after the cancel (ctx.wait), so the consumer is gone first.
        ctx.wait(actix::fut::ready(()).map(|_, _, ctx: &mut Context<Self>| ctx.stop()));
    }
}

impl KeyWorker {
    fn is_current(&self, generation: u64) -> bool {
        self.consumer
            .as_ref()
            .is_some_and(|(_, g)| *g == generation)
    }

    /// Cancel the consumer. Messages the broker already sent still arrive on the
    /// old stream and are handed back by the job tasks (the key is unavailable).
    fn cancel_consumer(&mut self, ctx: &mut Context<Self>) {
        let (Some((tag, _)), Some(channel)) = (self.consumer.take(), self.channel.clone()) else {
            return;
        };
        info!(pool = %self.key.pool.name, key = %self.key.name, "pausing consumer");
        self.report_consuming(false);
        let high = self.high_consumer.take();
        let cancel = async move {
            for tag in std::iter::once(tag).chain(high) {
                channel
                    .basic_cancel(tag.into(), BasicCancelOptions::default())
                    .await
                    .map_err(AmqpError::op("basic.cancel"))?;
            }
            Ok::<_, AmqpError>(())
        };
        ctx.wait(cancel.into_actor(self).map(|result, act, ctx| {
            if let Err(e) = result {
                warn!(pool = %act.key.pool.name, key = %act.key.name, error = %e, "cancel failed; restarting worker");
                if !act.retiring {
                    ctx.stop();
                }
            }
        }));
    }
}
