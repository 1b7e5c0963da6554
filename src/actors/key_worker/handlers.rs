//! KeyWorker message handlers: deliveries, pause, resume, stop.

use actix::prelude::*;
use lapin::options::BasicCancelOptions;
use tracing::{info, warn};

use super::KeyWorker;
use super::actor::ConsumerItem;
use crate::actors::messages::{PauseConsuming, ResumeConsuming, StopWorker};
use crate::amqp::AmqpError;
use crate::pipeline;

impl StreamHandler<ConsumerItem> for KeyWorker {
    fn handle(&mut self, item: ConsumerItem, ctx: &mut Self::Context) {
        let ConsumerItem(generation, item) = item;
        match item {
            Some(Ok(delivery)) => {
                let Some(channel) = self.channel.clone() else {
                    return;
                };
                let inbound = pipeline::Inbound::new(delivery, channel);
                tokio::spawn(pipeline::on_delivery(
                    self.key.clone(),
                    self.services.clone(),
                    inbound,
                ));
            }
            Some(Err(e)) if self.is_current(generation) => {
                warn!(pool = %self.key.pool.name, key = %self.key.name, error = %e, "consumer failed; restarting worker");
                ctx.stop();
            }
            // The current consumer ended without us cancelling it: the broker
            // cancelled it (queue deleted) or the channel closed.
            None if self.is_current(generation) => {
                warn!(pool = %self.key.pool.name, key = %self.key.name, "consumer ended; restarting worker");
                ctx.stop();
            }
            // The tail of a consumer we cancelled.
            Some(Err(_)) | None => {}
        }
    }

    // Ends are signalled in-band (see `ConsumerItem`); never stop here.
    fn finished(&mut self, _ctx: &mut Self::Context) {}
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
        let cancel = async move {
            channel
                .basic_cancel(tag.into(), BasicCancelOptions::default())
                .await
                .map_err(AmqpError::op("basic.cancel"))
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
