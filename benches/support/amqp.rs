//! Broker helpers: declare keyrelay's topology, preload jobs with pipelined
//! confirms, watch queue counts, clean up.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::future::join_all;
use keyrelay_core::config::Config;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// Confirms outstanding at once while preloading.
const PUBLISH_WINDOW: usize = 1_000;

pub async fn connect(url: &str) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name("keyrelay-bench".into());
    Connection::connect(url, props)
        .await
        .context("connect to RabbitMQ")
}

/// Declare exactly what keyrelay declares (quorum job queues with delivery limit
/// and dead-lettering, results and dead-letter queues), with keyrelay's own code.
pub async fn declare_topology(conn: &Connection, config: &Config) -> anyhow::Result<()> {
    let channel = conn.create_channel().await?;
    keyrelay::amqp::topology::declare(&channel, config).await?;
    channel.close(200, "declared".into()).await?;
    Ok(())
}

/// A job as producers send it: persistent, JSON, with `reply_to` and `correlation_id`.
pub fn job(i: usize, reply_to: &str) -> (Vec<u8>, BasicProperties) {
    let body =
        format!(r#"{{"id":"bench-{i}","prompt":"Say hello to job {i}","metadata":{{"n":{i}}}}}"#);
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_reply_to(reply_to.into())
        .with_correlation_id(format!("corr-{i}").into());
    (body.into_bytes(), props)
}

/// Publish `n` jobs round-robin over `queues`, confirms pipelined in windows.
/// Returns the time it took.
pub async fn preload(
    conn: &Connection,
    queues: &[String],
    n: usize,
    reply_to: &str,
) -> anyhow::Result<Duration> {
    publish_confirmed(conn, n, |i| {
        let (body, props) = job(i, reply_to);
        Ok((queues[i % queues.len()].clone(), body, props))
    })
    .await
}

/// Publish the `n` messages `message(i)` gives (queue, body, properties)
/// through the default exchange, confirms pipelined in windows. Returns the
/// time it took.
pub async fn publish_confirmed(
    conn: &Connection,
    n: usize,
    mut message: impl FnMut(usize) -> anyhow::Result<(String, Vec<u8>, BasicProperties)>,
) -> anyhow::Result<Duration> {
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(PUBLISH_WINDOW);
    for i in 0..n {
        let (queue, body, props) = message(i)?;
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await?;
        pending.push(confirm);
        if pending.len() == PUBLISH_WINDOW || i + 1 == n {
            for confirm in join_all(pending.drain(..)).await {
                if !confirm?.is_ack() {
                    bail!("the broker nacked a preloaded message");
                }
            }
        }
    }
    let took = started.elapsed();
    channel.close(200, "preloaded".into()).await?;
    Ok(took)
}

/// (ready messages, consumers) of a queue, from a passive declare.
pub async fn counts(channel: &Channel, queue: &str) -> anyhow::Result<(u32, u32)> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("passive declare of {queue}"))?;
    Ok((q.message_count(), q.consumer_count()))
}

/// Sum of consumers over `queues`.
pub async fn consumers(channel: &Channel, queues: &[String]) -> anyhow::Result<u32> {
    let mut total = 0;
    for q in queues {
        total += counts(channel, q).await?.1;
    }
    Ok(total)
}

/// When the replies arrived: first seen (count `first`) and complete.
pub struct Window {
    pub first_seen: Instant,
    pub first: u32,
    pub done: Instant,
}

impl Window {
    /// Jobs completed inside the window, and the window's length.
    pub fn measured(&self, total: usize) -> (usize, f64) {
        let jobs = total - self.first as usize;
        (jobs, (self.done - self.first_seen).as_secs_f64())
    }
}

/// Poll the reply queue every 20 ms until it holds `n` messages. `on_start` runs
/// when the first replies are seen, `on_tick` on every poll with the replies so
/// far (an error ends the wait).
pub async fn wait_for_replies(
    channel: &Channel,
    queue: &str,
    n: usize,
    timeout: Duration,
    mut on_start: impl FnMut(),
    mut on_tick: impl FnMut(u32) -> anyhow::Result<()>,
) -> anyhow::Result<Window> {
    let deadline = Instant::now() + timeout;
    let mut first: Option<(Instant, u32)> = None;
    loop {
        let (count, _) = counts(channel, queue).await?;
        let now = Instant::now();
        if first.is_none() && count > 0 {
            first = Some((now, count));
            on_start();
        }
        on_tick(count)?;
        if count as usize >= n {
            let (first_seen, first) = first.unwrap_or((now, count));
            return Ok(Window {
                first_seen,
                first,
                done: now,
            });
        }
        if now > deadline {
            bail!("only {count} of {n} replies after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Delete the queues (best effort; reports failures).
pub async fn delete_queues(conn: &Connection, queues: &[String]) {
    let Ok(channel) = conn.create_channel().await else {
        eprintln!("cleanup: cannot open a channel; queues left: {queues:?}");
        return;
    };
    for q in queues {
        if let Err(e) = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            eprintln!("cleanup: cannot delete {q}: {e}");
        }
    }
    let _ = channel.close(200, "cleaned up".into()).await;
}
