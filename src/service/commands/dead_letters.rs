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
    /// No pool header, unknown pool, or filtered out.
    pub skipped: u64,
    /// Of the skipped, kinds that would fail the same way again (without `--force`).
    pub would_fail_again: u64,
    pub failed: u64,
}

/// Which dead letters a replay takes (all given filters must match).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ReplayFilter {
    /// Only dead letters of this pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// Only this error kind (`upstream`, `all_keys_unavailable`, `budget_exceeded`,
    /// `invalid_job`, or `delivery_limit` for jobs the broker dead-lettered).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only jobs of this batch.
    #[arg(long)]
    pub batch: Option<String>,
    /// Only this job id.
    #[arg(long)]
    pub id: Option<String>,
    /// Only dead-lettered at or after: RFC 3339 or a duration ago (30m, 6h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Replay kinds that would fail the same way again (`invalid_job`) too.
    #[arg(long)]
    pub force: bool,
    /// Print what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Kinds that a replay would answer the same way: skipped unless forced.
const WOULD_FAIL_AGAIN: &[&str] = &["invalid_job"];

/// What a replay knows of one dead letter.
struct DeadLetter {
    kind: String,
    id: Option<String>,
    batch: Option<String>,
    at: Option<jiff::Timestamp>,
}

impl DeadLetter {
    fn of(delivery: &lapin::message::Delivery, headers: &FieldTable) -> DeadLetter {
        let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
        let kind = header(headers, "x-keyrelay-error-kind").unwrap_or_else(|| {
            if death_queue(headers).is_some() {
                "delivery_limit"
            } else {
                "unknown"
            }
            .to_owned()
        });
        DeadLetter {
            kind,
            id: body["id"].as_str().map(str::to_owned).or_else(|| {
                delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.to_string())
            }),
            batch: body["batch"].as_str().map(str::to_owned),
            at: header(headers, "x-keyrelay-dead-lettered-at")
                .and_then(|t| t.parse().ok())
                .or_else(|| death_time(headers)),
        }
    }
}

impl ReplayFilter {
    /// Whether `letter` is to be replayed; `Err` says why not.
    fn admits(&self, letter: &DeadLetter, since: Option<jiff::Timestamp>) -> Result<(), Skip> {
        let matches = self.kind.as_ref().is_none_or(|k| *k == letter.kind)
            && self
                .batch
                .as_ref()
                .is_none_or(|b| letter.batch.as_ref() == Some(b))
            && self
                .id
                .as_ref()
                .is_none_or(|i| letter.id.as_ref() == Some(i))
            && since.is_none_or(|s| letter.at.is_some_and(|at| at >= s));
        if !matches {
            return Err(Skip::Filtered);
        }
        if !self.force && WOULD_FAIL_AGAIN.contains(&letter.kind.as_str()) {
            return Err(Skip::WouldFailAgain);
        }
        Ok(())
    }
}

enum Skip {
    Filtered,
    WouldFailAgain,
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

/// Replay up to `limit` dead letters that `filter` admits.
pub async fn replay(
    config: &Config,
    limit: usize,
    filter: &ReplayFilter,
) -> anyhow::Result<ReplaySummary> {
    let since = match &filter.since {
        Some(text) => Some(since_time(text)?),
        None => None,
    };
    let broker = Arc::new(Broker::connect(&config.broker.url).await?);
    let publisher = Publisher::new(broker.clone()).await?;
    let channel = broker.channel().await?;
    let mut summary = ReplaySummary::default();
    let mut held = Vec::new();
    // Only the dead letters there now: a replayed job that fails at once is
    // dead-lettered again behind them, and must not be replayed twice.
    let queue = &config.jobs.dead_letter_queue;
    let there = crate::amqp::depth::queue_depth(&broker, queue)
        .await
        .with_context(|| format!("cannot read the dead-letter queue `{queue}`"))?
        .ready as usize;
    for _ in 0..limit.min(there) {
        let Some(message) = get(&channel, &config.jobs.dead_letter_queue).await? else {
            break;
        };
        let delivery = message.delivery;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let letter = DeadLetter::of(&delivery, &headers);
        let target = target_queue(config, &headers, filter.pool.as_deref());
        let verdict = match target {
            None => Err(Skip::Filtered),
            Some(queue) => filter.admits(&letter, since).map(|()| queue),
        };
        let queue = match verdict {
            Ok(queue) => queue,
            Err(skip) => {
                summary.skipped += 1;
                if matches!(skip, Skip::WouldFailAgain) {
                    summary.would_fail_again += 1;
                }
                held.push(delivery);
                continue;
            }
        };
        if filter.dry_run {
            let line = json!({"would_replay_to": queue, "id": letter.id, "kind": letter.kind,
                "batch": letter.batch, "dead_lettered_at": letter.at});
            println!("{line}");
            summary.replayed += 1;
            held.push(delivery);
            continue;
        }
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

/// RFC 3339, or a duration ago (`30s`, `15m`, `6h`, `7d`).
fn since_time(text: &str) -> anyhow::Result<jiff::Timestamp> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().with_context(|| {
        format!("--since `{text}`: expected RFC 3339 or a duration like 30m, 6h, 7d")
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("--since `{text}`: the unit must be s, m, h or d"),
    };
    Ok(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(secs))
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
            // Dead-lettered by the broker from a job queue or a high queue.
            let queue = death_queue(headers)?;
            config
                .pools
                .iter()
                .find(|p| {
                    config.job_queue(&p.name) == queue || config.high_queue(&p.name) == queue
                })?
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

/// When the broker dead-lettered the message (first `x-death` entry).
fn death_time(headers: &FieldTable) -> Option<jiff::Timestamp> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    match first.inner().get("time")? {
        AMQPValue::Timestamp(secs) => jiff::Timestamp::from_second(i64::try_from(*secs).ok()?).ok(),
        _ => None,
    }
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}
