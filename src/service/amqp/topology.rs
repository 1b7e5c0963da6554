//! Declares keyrelay's queues: one job queue and one high-priority queue per
//! pool, their delay queues, the default results queue, and the dead-letter
//! queue. Declarations are idempotent.

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

use super::error::AmqpError;
use super::retry;
use keyrelay_core::config::{Config, QueueType};

/// Every durable queue this config makes: the results and dead-letter
/// queues, per pool its job queue and delay queues, and per key its state
/// queue (declared by the fleet, not by [`declare`]).
pub fn declared_queues(config: &Config) -> Vec<String> {
    let mut queues = vec![
        config.jobs.results_queue.clone(),
        config.jobs.dead_letter_queue.clone(),
    ];
    for pool in &config.pools {
        let queue = config.job_queue(&pool.name);
        for attempt in 1..config.jobs.max_attempts {
            let quorum = config.broker.queue_type == QueueType::Quorum;
            queues.push(retry::delay_queue(&queue, attempt, quorum));
        }
        queues.push(queue);
        queues.push(config.high_queue(&pool.name));
        // Durable, declared when a key is first driven (the fleet's).
        for key in &pool.keys {
            queues.push(config.key_state_queue(&pool.name, &key.name));
        }
    }
    queues
}

/// Declare every queue the config needs.
pub async fn declare(channel: &Channel, config: &Config) -> Result<(), AmqpError> {
    declare_plain(channel, &config.jobs.dead_letter_queue).await?;
    declare_plain(channel, &config.jobs.results_queue).await?;
    for pool in &config.pools {
        declare_pool(channel, config, &pool.name).await?;
    }
    Ok(())
}

/// Declare one pool's job queue and its delay queues (and the dead-letter
/// queue its job queue dead-letters to).
pub async fn declare_pool(channel: &Channel, config: &Config, pool: &str) -> Result<(), AmqpError> {
    declare_plain(channel, &config.jobs.dead_letter_queue).await?;
    let queue = config.job_queue(pool);
    declare_job_queue(channel, config, &queue).await?;
    // Same kind and dead-lettering as the job queue.
    declare_job_queue(channel, config, &config.high_queue(pool)).await?;
    for attempt in 1..config.jobs.max_attempts {
        declare_delay_queue(channel, config, &queue, attempt).await?;
    }
    Ok(())
}

/// The delay queue of a pool's retries after `attempt` failed calls: messages
/// wait out their TTL, then the broker dead-letters them back to the job queue
/// (at least once from a quorum delay queue: see `retry::delay_queue`).
async fn declare_delay_queue(
    channel: &Channel,
    config: &Config,
    job_queue: &str,
    attempt: u32,
) -> Result<(), AmqpError> {
    let quorum = config.broker.queue_type == QueueType::Quorum;
    let mut args = FieldTable::default();
    let ttl = retry::ceiling(attempt).as_millis() as i32;
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(job_queue.into()),
    );
    if quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        // At-least-once dead-lettering requires it.
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }
    let name = retry::delay_queue(job_queue, attempt, quorum);
    channel
        .queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
        .await
        .map_err(AmqpError::op("queue.declare"))?;
    Ok(())
}

/// A pool's job queue. Messages the broker gives up on (delivery limit reached on
/// a quorum queue) go to the dead-letter queue through the default exchange.
pub async fn declare_job_queue(
    channel: &Channel,
    config: &Config,
    queue: &str,
) -> Result<(), AmqpError> {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(config.jobs.dead_letter_queue.as_str().into()),
    );
    if config.broker.queue_type == QueueType::Quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(config.broker.delivery_limit as i32),
        );
    }
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await
        .map_err(AmqpError::op("queue.declare"))?;
    Ok(())
}

/// A durable queue without arguments (results, dead letters, reply queues).
pub async fn declare_plain(channel: &Channel, queue: &str) -> Result<(), AmqpError> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::op("queue.declare"))?;
    Ok(())
}
