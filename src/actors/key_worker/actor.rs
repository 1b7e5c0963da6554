//! KeyWorker lifecycle: open the channel on start, consume while the key is in
//! rotation, tell the supervisor when it stops.

use actix::prelude::*;
use futures_util::{StreamExt, stream};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use tracing::{error, info};

use super::KeyWorker;
use crate::actors::messages::{ConsumerState, WorkerStopped};
use crate::amqp::AmqpError;

/// One item of a consumer stream, tagged with the consumer's generation;
/// `None` marks the end of that consumer's stream.
pub(super) struct ConsumerItem(pub u64, pub Option<lapin::Result<lapin::message::Delivery>>);

impl Actor for KeyWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let broker = self.broker.clone();
        let prefetch = self.key.concurrency;
        let open = async move {
            let channel = broker.channel().await?;
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(AmqpError::op("basic.qos"))?;
            Ok::<_, AmqpError>(channel)
        };
        ctx.wait(open.into_actor(self).map(|result, act, ctx| match result {
            Ok(channel) => {
                act.channel = Some(channel);
                if act.key.is_available() {
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
            self.supervisor.do_send(WorkerStopped { key: self.key.id });
        }
    }
}

impl KeyWorker {
    pub(super) fn report_consuming(&self, consuming: bool) {
        self.supervisor.do_send(ConsumerState {
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
        let consume_tag = tag.clone();
        let consume = async move {
            channel
                .basic_consume(
                    queue.into(),
                    consume_tag.into(),
                    BasicConsumeOptions::default(),
                    args,
                )
                .await
                .map_err(AmqpError::op("basic.consume"))
        };
        ctx.wait(consume.into_actor(self).map(move |result, act, ctx| match result {
            Ok(consumer) => {
                info!(pool = %act.key.pool.name, key = %act.key.name, "consuming");
                act.consumer = Some((tag, generation));
                act.report_consuming(true);
                let items = consumer
                    .map(move |d| ConsumerItem(generation, Some(d)))
                    .chain(stream::once(async move { ConsumerItem(generation, None) }));
                ctx.add_stream(items);
            }
            Err(e) => {
                error!(pool = %act.key.pool.name, key = %act.key.name, error = %e, "cannot start consuming");
                ctx.stop();
            }
        }));
    }
}
