//! The queues a command publishes jobs to, declared when keyrelay has not
//! declared them yet (it is starting, or not running): with the arguments
//! keyrelay itself uses, so the jobs wait in their queue instead of being
//! returned unroutable.

use anyhow::Context as _;

use crate::amqp::Broker;
use crate::amqp::depth::queue_depth;
use crate::amqp::topology::declare_pool;
use keyrelay_core::config::Config;

/// Declare `pool`'s job, high-priority, delay and dead-letter queues unless
/// its job queue exists (then keyrelay owns them, arguments and all).
pub async fn ensure(broker: &Broker, config: &Config, pool: &str) -> anyhow::Result<()> {
    if queue_depth(broker, &config.job_queue(pool)).await.is_ok() {
        return Ok(());
    }
    let channel = broker.channel().await?;
    declare_pool(&channel, config, pool)
        .await
        .with_context(|| format!("cannot declare the queues of pool `{pool}`"))?;
    let _ = channel.close(200, "pool queues declared".into()).await;
    Ok(())
}
