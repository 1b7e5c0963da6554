//! `keyrelay enqueue`: publish a JSONL file of jobs to a pool's queue with
//! publisher confirms, a progress bar and a summary line.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::BasicProperties;

use crate::amqp::{Broker, PublishOutcome, Publisher};

/// Confirms awaited at once: enough to keep the broker busy, bounded memory.
const WINDOW: usize = 512;

pub struct EnqueueArgs<'a> {
    pub broker_url: &'a str,
    pub queue: String,
    /// A JSONL file, or `-` for standard input.
    pub input: &'a Path,
    pub reply_to: Option<String>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Publish at most this many jobs per second (no burst).
    pub rate: Option<std::num::NonZeroU32>,
}

/// What an enqueue run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnqueueSummary {
    pub published: u64,
    /// Lines that are not JSON (reported, not sent).
    pub rejected: Vec<(u64, String)>,
    pub failed: u64,
}

pub async fn enqueue(args: EnqueueArgs<'_>) -> anyhow::Result<EnqueueSummary> {
    let reader = open_input(args.input)?;
    let broker = Arc::new(Broker::connect(args.broker_url).await?);
    if let Some(queue) = &args.reply_to {
        ensure_reply_queue(&broker, queue).await?;
    }
    let publisher = Publisher::new(broker.clone()).await?;
    let bar = progress_bar(args.progress);
    let started = Instant::now();
    let mut summary = EnqueueSummary::default();
    let mut pending = FuturesUnordered::new();
    let limiter = args.rate.map(|rate| {
        governor::RateLimiter::direct(
            governor::Quota::per_second(rate).allow_burst(std::num::NonZeroU32::MIN),
        )
    });
    for (index, line) in reader.lines().enumerate() {
        let number = index as u64 + 1;
        let line = line.with_context(|| format!("cannot read line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let props = match job_properties(&line, args.reply_to.as_deref()) {
            Ok(props) => props,
            Err(reason) => {
                summary.rejected.push((number, reason));
                continue;
            }
        };
        // Wait for the rate limiter, settling confirms meanwhile (a pushed
        // publish only runs while `pending` is polled).
        while let Some(limiter) = &limiter {
            tokio::select! {
                _ = limiter.until_ready() => break,
                Some(done) = pending.next(), if !pending.is_empty() => settle(Some(done), &mut summary, &bar),
            }
        }
        let publisher = &publisher;
        let queue = args.queue.as_str();
        pending.push(async move { publisher.publish(queue, line.as_bytes(), props, true).await });
        if pending.len() >= WINDOW {
            settle(pending.next().await, &mut summary, &bar);
        }
    }
    while let Some(done) = pending.next().await {
        settle(Some(done), &mut summary, &bar);
    }
    bar.finish_and_clear();
    // The work is done and confirmed; a close that fails changes nothing.
    let _ = broker.close().await;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "enqueued {} jobs to {} in {:.2} s ({:.0} jobs/s); {} lines rejected, {} publishes failed",
        summary.published,
        args.queue,
        secs,
        summary.published as f64 / secs,
        summary.rejected.len(),
        summary.failed
    );
    for (line, reason) in &summary.rejected {
        eprintln!("line {line}: {reason}");
    }
    Ok(summary)
}

/// The reply queue must exist, or keyrelay's replies to it are returned
/// unroutable (results stay in the store only): a missing one is declared,
/// durable. One that exists is left as it is.
async fn ensure_reply_queue(broker: &Broker, queue: &str) -> anyhow::Result<()> {
    use crate::amqp::depth::queue_depth;
    use crate::amqp::topology::declare_plain;
    if queue_depth(broker, queue).await.is_ok() {
        return Ok(());
    }
    let channel = broker.channel().await?;
    declare_plain(&channel, queue)
        .await
        .with_context(|| format!("cannot declare the reply queue `{queue}`"))?;
    eprintln!("declared the reply queue {queue} (durable): read the results from it");
    let _ = channel.close(200, "reply queue declared".into()).await;
    Ok(())
}

fn settle(
    done: Option<Result<PublishOutcome, crate::amqp::AmqpError>>,
    summary: &mut EnqueueSummary,
    bar: &ProgressBar,
) {
    match done {
        Some(Ok(PublishOutcome::Delivered)) => summary.published += 1,
        Some(Ok(PublishOutcome::Unroutable)) | Some(Err(_)) => summary.failed += 1,
        None => {}
    }
    bar.inc(1);
}

/// Persistent JSON message; the job's `id` doubles as AMQP `message_id`.
fn job_properties(line: &str, reply_to: Option<&str>) -> Result<BasicProperties, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    // An id too long for an AMQP short string stays in the body only; keyrelay
    // will reject it with a clear invalid_job reply.
    if let Some(id) = value.get("id").and_then(|v| v.as_str())
        && let Ok(short) = lapin::types::ShortString::try_new(id)
    {
        props = props
            .with_message_id(short.clone())
            .with_correlation_id(short);
    }
    if let Some(queue) = reply_to {
        props = props.with_reply_to(queue.into());
    }
    Ok(props)
}

fn open_input(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        bail!("{} is a directory, not a JSONL file", path.display());
    }
    Ok(Box::new(BufReader::new(file)))
}

fn progress_bar(enabled: bool) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {pos} jobs confirmed ({per_sec}) {elapsed}")
    {
        bar.set_style(style);
    }
    bar
}
