//! Scenario: a high-priority job overtaking a backlog. N normal jobs (20,000
//! by default) are queued on a pool of K keys; while they drain, 50 high jobs
//! are published to the pool's high queue one every 100 ms. Each high job's
//! delay, from its publish to its reply, is measured (the mock's latency is
//! part of it), with how much of the backlog was still queued then.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;

use crate::child::{self, Keyrelay};
use crate::setup::{Env, MockProfile, Shape, amqp_url};
use crate::{Args, Report, amqp};

const HIGH_JOBS: usize = 50;
const HIGH_EVERY: Duration = Duration::from_millis(100);

pub async fn priority(args: &Args) -> anyhow::Result<Report> {
    let shape = Shape {
        pools: 1,
        keys_per_pool: args.keys,
        concurrency: args.concurrency_or(8),
        http2: args.http2,
    };
    let latency = Duration::from_millis(args.latency_ms.unwrap_or(50));
    let profile = MockProfile {
        latency,
        limit: None,
    };
    let mut env = Env::with_mock(shape, Some(profile)).await?;
    let conn = amqp::connect(&amqp_url()).await?;
    let result = run(args, shape, latency, &env, &conn).await;
    let mut queues = env.all_queues();
    queues.push(high_replies(&env));
    amqp::delete_queues(&conn, &queues).await;
    let _ = conn.close(200, "done".into()).await;
    env.stop_mock().await;
    result
}

fn high_replies(env: &Env) -> String {
    format!("{}.high-replies", env.prefix)
}

async fn run(
    args: &Args,
    shape: Shape,
    latency: Duration,
    env: &Env,
    conn: &lapin::Connection,
) -> anyhow::Result<Report> {
    let n = args.jobs_or(20_000);
    let mut report = Report::new("priority");
    report.put("backlog_jobs", n, "normal jobs queued before the high ones");
    report.put(
        "keys",
        shape.keys(),
        &format!("concurrency {} each", shape.concurrency),
    );
    report.put("mock_latency_ms", latency.as_millis() as u64, "ms per call");
    amqp::declare_topology(conn, &env.config).await?;
    let queue = env.config.job_queue("p0");
    let high_queue = env.config.high_queue("p0");
    amqp::preload(conn, std::slice::from_ref(&queue), n, &env.reply_queue()).await?;
    let replies = high_replies(env);
    let channel = conn.create_channel().await?;
    channel
        .queue_declare(
            replies.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            replies.as_str().into(),
            "bench-high".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut kr = Keyrelay::spawn(
        &env.config_path,
        &env.log_path("keyrelay"),
        env.metrics_addr,
    )?;
    kr.wait_http(Duration::from_secs(30)).await?;
    // The backlog is draining once a first tenth of it is answered.
    let watch = conn.create_channel().await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (amqp::counts(&watch, &queue).await?.0 as usize) > n - n / 10 {
        kr.check_alive()?;
        anyhow::ensure!(Instant::now() < deadline, "the backlog does not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let publisher = conn.create_channel().await?;
    let mut sent = Vec::with_capacity(HIGH_JOBS);
    let mut delays = Vec::with_capacity(HIGH_JOBS);
    let mut queued_at_send = Vec::new();
    for i in 0..HIGH_JOBS {
        queued_at_send.push(amqp::counts(&watch, &queue).await?.0);
        let body = format!(r#"{{"id":"high-{i}","prompt":"urgent {i}","priority":"high"}}"#);
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_reply_to(replies.as_str().into());
        sent.push(Instant::now());
        publisher
            .basic_publish(
                "".into(),
                high_queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await?;
        // Replies that came meanwhile.
        let next = tokio::time::sleep(HIGH_EVERY);
        tokio::pin!(next);
        loop {
            tokio::select! {
                _ = &mut next => break,
                delivery = consumer.next() => {
                    record(delivery, &sent, &mut delays).await?;
                }
            }
        }
    }
    while delays.len() < HIGH_JOBS {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .context("a high job was not answered within 30 s")?;
        record(delivery, &sent, &mut delays).await?;
    }
    child::ensure_running(kr.pid)?;
    let still_queued = amqp::counts(&watch, &queue).await?.0;
    delays.sort_by(f64::total_cmp);
    let q = |p: f64| delays[((delays.len() as f64 - 1.0) * p).round() as usize];
    report.put(
        "high_jobs",
        HIGH_JOBS,
        "published one every 100 ms while the backlog drained",
    );
    report.put(
        "delay_p50_ms",
        q(0.5),
        "ms from publish to reply (includes the mock's latency)",
    );
    report.put("delay_p99_ms", q(0.99), "ms");
    report.put("delay_max_ms", q(1.0), "ms");
    report.put(
        "start_p99_ms",
        (q(0.99) - latency.as_secs_f64() * 1000.0).max(0.0),
        "ms: p99 delay less the mock's latency (target < 1000 ms)",
    );
    report.put(
        "backlog_queued_at_first_high",
        queued_at_send.first().copied().unwrap_or(0),
        "normal jobs still in the queue when the first high job was sent",
    );
    report.put(
        "backlog_queued_after_last_high",
        still_queued,
        "normal jobs still queued when the last high job was answered",
    );
    kr.stop().await?;
    Ok(report)
}

async fn record(
    delivery: Option<Result<lapin::message::Delivery, lapin::Error>>,
    sent: &[Instant],
    delays: &mut Vec<f64>,
) -> anyhow::Result<()> {
    let delivery = delivery.context("the reply consumer ended")??;
    let reply: serde_json::Value = serde_json::from_slice(&delivery.data)?;
    let i: usize = reply["id"]
        .as_str()
        .and_then(|id| id.strip_prefix("high-"))
        .and_then(|n| n.parse().ok())
        .context("a reply that is not a high job's")?;
    anyhow::ensure!(reply["status"] == "succeeded", "high job failed: {reply}");
    delays.push(sent[i].elapsed().as_secs_f64() * 1000.0);
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(())
}
