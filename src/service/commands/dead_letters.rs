//! `keyrelay dead-letters list|replay`: read the dead-letter queue, and send
//! dead letters back to their pool's job queue after a fix.
//!
//! `list` takes messages without acking them and hands them all back at the
//! end (nack with requeue), so it changes nothing. `replay` republishes each one
//! to the job queue of the pool named in its `x-keyrelay-pool` header (or, for a
//! job the broker dead-lettered after its delivery limit, the queue named in
//! `x-death`) with publisher confirms, and acks the dead letter only once the
//! broker confirmed the copy.

use std::sync::Arc;

use anyhow::Context as _;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::json;

use crate::amqp::{Broker, PublishOutcome, Publisher};
use keyrelay_core::config::Config;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub replayed: u64,
    /// No pool header, unknown pool, or filtered out by `--pool`.
    pub skipped: u64,
    pub failed: u64,
}

/// Print up to `limit` dead letters as JSON lines; returns how many.
pub async fn list(config: &Config, limit: usize) -> anyhow::Result<usize> {
    let broker = Broker::connect(&config.broker.url).await?;
    let channel = broker.channel().await?;
    let mut held = Vec::new();
    while held.len() < limit {
        let Some(message) = get(&channel, &config.jobs.dead_letter_queue).await? else {
            break;
        };
        let delivery = message.delivery;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let line = json!({
            "pool": header(&headers, "x-keyrelay-pool"),
            "reason": header(&headers, "x-keyrelay-reason"),
            "error_kind": header(&headers, "x-keyrelay-error-kind"),
            "death_queue": death_queue(&headers),
            "message_id": delivery.properties.message_id().as_ref().map(|s| s.to_string()),
            "body": String::from_utf8_lossy(&delivery.data),
        });
        println!("{line}");
        held.push(delivery);
    }
    let n = held.len();
    requeue(held).await;
    let _ = channel.close(200, "dead letters listed".into()).await;
    // The work is done and confirmed; a close that fails changes nothing.
    let _ = broker.close().await;
    Ok(n)
}

/// Replay up to `limit` dead letters (only those of `pool` when given).
pub async fn replay(
    config: &Config,
    limit: usize,
    pool: Option<&str>,
) -> anyhow::Result<ReplaySummary> {
    let broker = Arc::new(Broker::connect(&config.broker.url).await?);
    let publisher = Publisher::new(broker.clone()).await?;
    let channel = broker.channel().await?;
    let mut summary = ReplaySummary::default();
    let mut held = Vec::new();
    for _ in 0..limit {
        let Some(message) = get(&channel, &config.jobs.dead_letter_queue).await? else {
            break;
        };
        let delivery = message.delivery;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let Some(queue) = target_queue(config, &headers, pool) else {
            summary.skipped += 1;
            held.push(delivery);
            continue;
        };
        let props = cleaned(&delivery.properties, headers);
        match publisher.publish(&queue, &delivery.data, props, true).await {
            Ok(PublishOutcome::Delivered) => {
                delivery.ack(BasicAckOptions::default()).await.context(
                    "replayed, but the dead letter could not be acked (it stays queued)",
                )?;
                summary.replayed += 1;
            }
            Ok(PublishOutcome::Unroutable) | Err(_) => {
                summary.failed += 1;
                held.push(delivery);
            }
        }
    }
    requeue(held).await;
    let _ = channel.close(200, "dead letters replayed".into()).await;
    // The work is done and confirmed; a close that fails changes nothing.
    let _ = broker.close().await;
    Ok(summary)
}

/// Put back the dead letters looked at but not replayed, in their order.
async fn requeue(held: Vec<lapin::message::Delivery>) {
    for delivery in held {
        let _ = delivery
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await;
    }
}

async fn get(
    channel: &Channel,
    queue: &str,
) -> anyhow::Result<Option<lapin::message::BasicGetMessage>> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .with_context(|| format!("cannot read the dead-letter queue `{queue}`"))
}

/// The job queue a dead letter goes back to, if it can be told.
fn target_queue(config: &Config, headers: &FieldTable, only: Option<&str>) -> Option<String> {
    let pool = match header(headers, "x-keyrelay-pool") {
        Some(pool) => pool,
        None => {
            let queue = death_queue(headers)?;
            config
                .pools
                .iter()
                .find(|p| config.job_queue(&p.name) == queue)?
                .name
                .clone()
        }
    };
    if only.is_some_and(|o| o != pool) || !config.pools.iter().any(|p| p.name == pool) {
        return None;
    }
    Some(config.job_queue(&pool))
}

/// The original properties without keyrelay's and the broker's dead-letter headers.
fn cleaned(props: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut kept = FieldTable::default();
    for (name, value) in headers.inner() {
        let n = name.as_str();
        if !n.starts_with("x-keyrelay-")
            && !n.starts_with("x-death")
            && !n.starts_with("x-first-death")
            && !n.starts_with("x-last-death")
        {
            kept.insert(name.clone(), value.clone());
        }
    }
    props.clone().with_headers(kept)
}

fn header(headers: &FieldTable, name: &str) -> Option<String> {
    text(headers.inner().get(name)?)
}

/// The queue the broker dead-lettered the message from (first `x-death` entry).
fn death_queue(headers: &FieldTable) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    text(first.inner().get("queue")?)
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}
