//! KeyWorker lifecycle: open the channel on start, consume while the key is in
//! rotation, tell the supervisor when it stops.

use actix::prelude::*;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use tracing::{error, info};

use super::KeyWorker;
use crate::actors::messages::{ConsumerState, WorkerStopped};
use crate::amqp::{AmqpError, Settler};
use crate::pipeline;

/// A consumer's delivery loop ended: the broker cancelled it, its channel
/// closed, or it failed (`error`).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ConsumerEnded {
    pub generation: u64,
    pub error: Option<String>,
}

impl Actor for KeyWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let broker = self.broker.clone();
        let prefetch = self.key.concurrency;
        let redeclare = self.redeclare.then(|| self.key.pool.name.clone());
        let open = async move {
            let channel = broker.channel().await?;
            if let Some(pool) = redeclare {
                broker.declare_pool(&channel, &pool).await?;
            }
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(AmqpError::op("basic.qos"))?;
            Ok::<_, AmqpError>(channel)
        };
        ctx.wait(open.into_actor(self).map(|result, act, ctx| match result {
            Ok(channel) => {
                act.settler = Some(act.broker.settler(channel.clone()));
                act.channel = Some(channel);
                // The supervisor resumes it once both hold again.
                if act.key.is_available() && act.services.store.write_error().is_none() {
                    act.start_consuming(ctx);
                }
            }
            Err(e) => {
                error!(pool = %act.key.pool.name, key = %act.key.name, error = %e, "key worker cannot open its channel");
                ctx.stop();
            }
        }));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if self.consumer.take().is_some() {
            self.report_consuming(false);
        }
        if !self.retiring {
            self.events
                .stopped
                .do_send(WorkerStopped { key: self.key.id });
        }
    }
}

impl KeyWorker {
    pub(super) fn report_consuming(&self, consuming: bool) {
        self.events.consuming.do_send(ConsumerState {
            key: self.key.id,
            consuming,
        });
    }

    /// Start a consumer on the pool's queue (no-op when already consuming).
    pub(super) fn start_consuming(&mut self, ctx: &mut Context<Self>) {
        let Some(channel) = self.channel.clone() else {
            return;
        };
        if self.consumer.is_some() {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let tag = format!(
            "keyrelay.{}.{}.{}",
            self.key.pool.name, self.key.name, generation
        );
        let mut args = FieldTable::default();
        args.insert(
            "x-priority".into(),
            AMQPValue::LongInt(Self::consumer_priority(self.key.priority)),
        );
        let queue = self.key.pool.queue.clone();
        let high_queue = self.key.pool.high_queue.clone();
        let prefetch = self.key.concurrency;
        let (consume_tag, high_tag) = (tag.clone(), format!("{tag}.high"));
        let high_consume_tag = high_tag.clone();
        let consume = async move {
            // Per consumer (`global: false`): the normal queue gets the key's
            // concurrency, the high queue one delivery at a time.
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(AmqpError::op("basic.qos"))?;
            let normal = channel
                .basic_consume(
                    queue.into(),
                    consume_tag.into(),
                    BasicConsumeOptions::default(),
                    args.clone(),
                )
                .await
                .map_err(AmqpError::op("basic.consume"))?;
            channel
                .basic_qos(1, BasicQosOptions::default())
                .await
                .map_err(AmqpError::op("basic.qos"))?;
            let high = channel
                .basic_consume(
                    high_queue.into(),
                    high_consume_tag.into(),
                    BasicConsumeOptions::default(),
                    args,
                )
                .await
                .map_err(AmqpError::op("basic.consume"))?;
            Ok::<_, AmqpError>((normal, high))
        };
        ctx.wait(consume.into_actor(self).map(move |result, act, ctx| match result {
            Ok((consumer, high)) => {
                info!(pool = %act.key.pool.name, key = %act.key.name, "consuming");
                act.consumer = Some((tag, generation));
                act.high_consumer = Some(high_tag);
                act.report_consuming(true);
                // Consuming started on this channel, so the worker still holds
                // it and its settler.
                if let Some(settler) = act.settler.clone() {
                    tokio::spawn(act.delivery_loop(consumer, settler.clone(), generation, false, ctx.address()));
                    tokio::spawn(act.delivery_loop(high, settler, generation, true, ctx.address()));
                }
            }
            Err(e) => {
                error!(pool = %act.key.pool.name, key = %act.key.name, error = %e, "cannot start consuming");
                ctx.stop();
            }
        }));
    }
}

impl KeyWorker {
    /// Turn each delivery into a job task, on the tokio workers: deliveries do
    /// not pass through the actor's thread (one thread hop less per job). The
    /// loop ends with its consumer, or when the worker is gone.
    fn delivery_loop(
        &self,
        mut consumer: lapin::Consumer,
        settler: Settler,
        generation: u64,
        high: bool,
        worker: Addr<KeyWorker>,
    ) -> impl Future<Output = ()> + use<> {
        let (key, services) = (self.key.clone(), self.services.clone());
        let mut alive = self.alive.subscribe();
        async move {
            let error = loop {
                let delivery = tokio::select! {
                    biased;
                    // The worker stopped: leave the rest to the channel's close.
                    _ = alive.changed() => return,
                    delivery = consumer.next() => delivery,
                };
                match delivery {
                    Some(Ok(delivery)) => {
                        let mut inbound = pipeline::Inbound::new(delivery, settler.clone());
                        if high {
                            inbound = inbound.in_high_lane();
                        }
                        tokio::spawn(pipeline::on_delivery(
                            key.clone(),
                            services.clone(),
                            inbound,
                        ));
                    }
                    Some(Err(e)) => break Some(e.to_string()),
                    None => break None,
                }
            };
            worker.do_send(ConsumerEnded { generation, error });
        }
    }
}
