//! `keyrelay batch run FILE --pool P --out RESULTS`: a JSONL file of jobs as
//! one batch. Every line is published (its id from the line, else
//! `<batch>:<line>`), results are collected into RESULTS as they come (one
//! line per input, each with its id), with a progress bar. Stopped and run
//! again, it publishes only the lines without a result in RESULTS and
//! collects the rest: keyrelay answers a job it answered before from its
//! store, so no job is paid twice.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;

use crate::amqp::{BATCH_TOTAL_HEADER, Broker, PublishOutcome, Publisher};
use keyrelay_core::config::Config;

/// Confirms awaited at once.
const WINDOW: usize = 512;

pub struct BatchRun<'a> {
    pub config: &'a Config,
    pub pool: &'a str,
    pub input: &'a Path,
    pub out: &'a Path,
    /// The batch's name; default: the file's name and a hash of its content.
    pub batch: Option<String>,
}

/// What a run ended with.
#[derive(Debug, Default)]
pub struct BatchSummary {
    pub batch: String,
    pub total: usize,
    /// Results already in the out file when the run started.
    pub resumed: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub cost_usd: f64,
}

/// One input line as it is sent.
struct Line {
    id: String,
    body: Vec<u8>,
}

pub async fn run(args: BatchRun<'_>) -> anyhow::Result<BatchSummary> {
    let text = std::fs::read_to_string(args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let batch = match args.batch.clone() {
        Some(batch) => batch,
        None => derived_name(args.input, &text),
    };
    keyrelay_core::job::valid_batch(&batch).map_err(anyhow::Error::msg)?;
    let lines = parse_lines(&text, &batch)?;
    let done = already_done(args.out)?;
    let mut summary = BatchSummary {
        batch: batch.clone(),
        total: lines.len(),
        resumed: lines.iter().filter(|l| done.contains(&l.id)).count(),
        ..BatchSummary::default()
    };
    let broker = Arc::new(Broker::connect(&args.config.broker.url).await?);
    super::pool_queues::ensure(&broker, args.config, args.pool).await?;
    let replies = format!("{}.batch.{batch}", args.config.broker.queue_prefix);
    let channel = broker.channel().await?;
    // Durable: results that come while this command is stopped wait for the rerun.
    channel
        .queue_declare(
            replies.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .context("cannot declare the batch's reply queue")?;
    let mut consumer = channel
        .basic_consume(
            replies.as_str().into(),
            "keyrelay-batch".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("cannot consume the batch's reply queue")?;
    let bar = progress_bar(lines.len() as u64, summary.resumed as u64);
    let todo: Vec<&Line> = lines.iter().filter(|l| !done.contains(&l.id)).collect();
    let wanted: HashSet<&str> = todo.iter().map(|l| l.id.as_str()).collect();
    publish(
        &broker,
        &args.config.job_queue(args.pool),
        &replies,
        &todo,
        lines.len(),
    )
    .await?;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.out)
        .with_context(|| format!("cannot open {}", args.out.display()))?;
    let mut written: HashMap<String, ()> = HashMap::new();
    while written.len() < wanted.len() {
        let Some(delivery) = consumer.next().await else {
            bail!(
                "the broker closed the reply queue {replies}; run the same command again to resume"
            );
        };
        let delivery = delivery.context("reading a result")?;
        let result: Value = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
        let id = result["id"].as_str().unwrap_or_default().to_owned();
        if wanted.contains(id.as_str()) && !written.contains_key(&id) {
            writeln!(out, "{result}").context("cannot write a result")?;
            // On disk before the ack: an acked result is never lost.
            out.sync_data().context("cannot write a result")?;
            tally(&mut summary, &result);
            written.insert(id, ());
            bar.inc(1);
        }
        // Written (or a duplicate): the result is safe in the file.
        delivery.ack(BasicAckOptions::default()).await?;
    }
    bar.finish_and_clear();
    out.sync_all()?;
    // Every result is in the file: the queue is no longer needed.
    let _ = channel
        .queue_delete(replies.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = broker.close().await;
    Ok(summary)
}

/// `<file stem>-<first 8 hex of the content's SHA-256>`, in batch-name characters.
fn derived_name(input: &Path, text: &str) -> String {
    use sha2::{Digest, Sha256};
    let stem = input
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("batch");
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    let digest = Sha256::digest(text.as_bytes());
    format!("{stem}-{}", hex::encode(&digest[..4]))
}

/// Every non-empty line as a job of `batch`; a line that is not a JSON
/// object, or a repeated id, stops the run before anything is sent.
fn parse_lines(text: &str, batch: &str) -> anyhow::Result<Vec<Line>> {
    let mut lines = Vec::new();
    let mut ids = HashSet::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let mut job: Value =
            serde_json::from_str(raw).with_context(|| format!("line {number} is not JSON"))?;
        let Some(fields) = job.as_object_mut() else {
            bail!("line {number} is not a JSON object (a job)");
        };
        let id = match fields.get("id") {
            Some(Value::String(id)) => id.clone(),
            Some(_) => bail!("line {number}: `id` must be a string"),
            // The line's number and content: the same line of the same file
            // gets the same id (a rerun), another file's line never does.
            None => format!("{batch}:{number}:{}", short_hash(raw)),
        };
        // As keyrelay checks ids: one it refuses would be answered under
        // another id, and never collected.
        if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
            bail!("line {number}: `id` must be 1-255 bytes of printable characters");
        }
        if !ids.insert(id.clone()) {
            bail!("line {number}: id `{id}` appears twice in the file");
        }
        fields.insert("id".into(), Value::String(id.clone()));
        fields.insert("batch".into(), Value::String(batch.to_owned()));
        lines.push(Line {
            id,
            body: job.to_string().into_bytes(),
        });
    }
    if lines.is_empty() {
        bail!("the file holds no jobs");
    }
    Ok(lines)
}

fn short_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..4])
}

/// Ids that already have a result in `out` (from an earlier run). A last
/// line cut short by a crash is cut off, so the next result starts a line.
fn already_done(out: &Path) -> anyhow::Result<HashSet<String>> {
    cut_partial_line(out)?;
    let file = match std::fs::File::open(out) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", out.display())),
    };
    let mut done = HashSet::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if let Ok(result) = serde_json::from_str::<Value>(&line)
            && let Some(id) = result["id"].as_str()
        {
            done.insert(id.to_owned());
        }
    }
    Ok(done)
}

fn cut_partial_line(out: &Path) -> anyhow::Result<()> {
    let Ok(bytes) = std::fs::read(out) else {
        return Ok(());
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(out)
        .with_context(|| format!("cannot repair {}", out.display()))?;
    file.set_len(keep as u64)?;
    file.sync_all()?;
    Ok(())
}

async fn publish(
    broker: &Arc<Broker>,
    queue: &str,
    replies: &str,
    todo: &[&Line],
    total: usize,
) -> anyhow::Result<()> {
    let publisher = Publisher::new(broker.clone()).await?;
    let mut headers = FieldTable::default();
    headers.insert(
        BATCH_TOTAL_HEADER.into(),
        AMQPValue::LongLongInt(total as i64),
    );
    let mut pending = FuturesUnordered::new();
    let mut failed = 0;
    for line in todo {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_reply_to(replies.into())
            .with_headers(headers.clone());
        let props = match lapin::types::ShortString::try_new(line.id.as_str()) {
            Ok(id) => props.with_message_id(id.clone()).with_correlation_id(id),
            Err(_) => props,
        };
        let publisher = &publisher;
        pending.push(async move { publisher.publish(queue, &line.body, props, true).await });
        if pending.len() >= WINDOW
            && !matches!(pending.next().await, Some(Ok(PublishOutcome::Delivered)))
        {
            failed += 1;
        }
    }
    while let Some(done) = pending.next().await {
        if !matches!(done, Ok(PublishOutcome::Delivered)) {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!(
            "{failed} jobs were not confirmed by the broker (into {queue}); run the same command again to send them"
        );
    }
    Ok(())
}

fn tally(summary: &mut BatchSummary, result: &Value) {
    if result["status"] == "succeeded" {
        summary.succeeded += 1;
    } else {
        summary.failed += 1;
    }
    summary.cost_usd += result["usage"]["cost_usd"].as_f64().unwrap_or(0.0);
}

fn progress_bar(total: u64, done: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40} {pos}/{len} results ({per_sec}, ETA {eta}) {elapsed}",
    ) {
        bar.set_style(style);
    }
    bar.set_position(done);
    bar.reset_eta();
    bar
}

/// Where the results of `input` go by default: `<input>.results.jsonl`.
pub fn default_out(input: &Path) -> PathBuf {
    let mut name = input
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".results.jsonl");
    input.with_file_name(name)
}
