//! The queues a command publishes jobs to, declared when keyrelay has not
//! declared them yet (it is starting, or not running): with the arguments
//! keyrelay itself uses, so the jobs wait in their queue instead of being
//! returned unroutable.

use anyhow::Context as _;

use crate::amqp::Broker;
use crate::amqp::depth::queue_depth;
use crate::amqp::topology::declare_pool;
use keyrelay_core::config::Config;

/// Declare `pool`'s job, high-priority, delay and dead-letter queues when
/// the broker says its job queue does not exist; one that exists belongs
/// to keyrelay, arguments and all, and any other answer is left to the
/// publish that follows.
pub async fn ensure(broker: &Broker, config: &Config, pool: &str) -> anyhow::Result<()> {
    match queue_depth(broker, &config.job_queue(pool)).await {
        Err(e) if e.is_not_found() => {}
        _ => return Ok(()),
    }
    let channel = broker.channel().await?;
    declare_pool(&channel, config, pool)
        .await
        .with_context(|| format!("cannot declare the queues of pool `{pool}`"))?;
    let _ = channel.close(200, "pool queues declared".into()).await;
    Ok(())
}
