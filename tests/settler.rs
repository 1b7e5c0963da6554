//! The settler folds consecutive acks into `multiple` acks: against the real
//! broker, no fold may cover a nacked delivery, and an ack stuck behind an
//! unsettled delivery still goes out on its own.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use keyrelay::amqp::{Settler, Verdict};
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio_util::task::TaskTracker;

struct Fixture {
    conn: Connection,
    queue: String,
    channel: Channel,
}

/// A fresh queue holding `n` messages, consumed (prefetch `n`) on `channel`;
/// returns the `n` deliveries.
async fn fixture(n: u16) -> (Fixture, Vec<Delivery>) {
    let conn = Connection::connect(&common::amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let queue = format!("kr-test.settler.{}", uuid::Uuid::now_v7());
    let setup = conn.create_channel().await.unwrap();
    setup
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    setup
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        setup
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_qos(n, BasicQosOptions::default())
        .await
        .unwrap();
    let consumer_tag = format!("settler-test-{}", uuid::Uuid::now_v7());
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            consumer_tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    while deliveries.len() < usize::from(n) {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("deliveries within 10 s")
            .expect("consumer open")
            .expect("delivery");
        deliveries.push(d);
    }
    // No more deliveries: requeued messages must stay in the queue to be counted.
    channel
        .basic_cancel(consumer_tag.as_str().into(), BasicCancelOptions::default())
        .await
        .unwrap();
    let fixture = Fixture {
        conn,
        queue,
        channel,
    };
    (fixture, deliveries)
}

impl Fixture {
    async fn ready(&self) -> u32 {
        let probe = self.conn.create_channel().await.unwrap();
        let q = probe
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = probe.close(200, "counted".into()).await;
        q.message_count()
    }

    /// Poll (every 20 ms, up to 10 s) until the queue holds `expected` ready
    /// messages.
    async fn wait_ready(&self, expected: u32) {
        for _ in 0..500 {
            if self.ready().await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "queue {} never held {expected} ready messages (has {})",
            self.queue,
            self.ready().await
        );
    }

    async fn cleanup(self) {
        let setup = self.conn.create_channel().await.unwrap();
        let _ = setup
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// Settle in a scrambled order, every seventh delivery nacked with requeue.
/// Exactly the nacked ones come back; the channel survives (a fold over a
/// nacked tag would make the nack an unknown tag and close it), and closing
/// it returns nothing more (every ack landed).
#[tokio::test]
async fn folds_acks_without_covering_nacks() {
    let (fx, deliveries) = fixture(140).await;
    let tasks = TaskTracker::new();
    let settler = Settler::spawn(fx.channel.clone(), &tasks);
    let mut order: Vec<usize> = (0..deliveries.len()).collect();
    // Deterministic scramble: runs of consecutive tags with gaps between them.
    order.sort_by_key(|i| (i * 37) % 11);
    let mut requeued = 0;
    for i in order {
        let d = &deliveries[i];
        let verdict = if d.delivery_tag % 7 == 0 {
            requeued += 1;
            Verdict::Nack { requeue: true }
        } else {
            Verdict::Ack
        };
        settler.settle(d.delivery_tag, d.acker.clone(), verdict);
    }
    fx.wait_ready(requeued).await;
    assert!(
        fx.channel.status().connected(),
        "channel closed: a fold covered a nacked delivery"
    );
    // The settler ends once its last handle is gone, after sending all it holds.
    drop(settler);
    tasks.close();
    tasks.wait().await;
    fx.channel.close(200, "settled".into()).await.unwrap();
    assert_eq!(fx.ready().await, requeued, "an ack was lost");
    fx.cleanup().await;
}

/// One delivery stays unsettled (a slow job). The acks after it are not held
/// back behind it: they go out on their own, leaving just that one unacked,
/// while the channel is still open.
#[tokio::test]
async fn acks_behind_a_gap_go_out_on_their_own() {
    let (fx, deliveries) = fixture(20).await;
    let tasks = TaskTracker::new();
    let settler = Settler::spawn(fx.channel.clone(), &tasks);
    let slow = &deliveries[4];
    for d in deliveries
        .iter()
        .filter(|d| d.delivery_tag != slow.delivery_tag)
    {
        settler.settle(d.delivery_tag, d.acker.clone(), Verdict::Ack);
    }
    // The 19 acks reach the broker while the gap is still open (AMQP cannot
    // read a queue's unacked count, so ask rabbitmqctl).
    wait_unacked(&fx.queue, 1).await;
    settler.settle(
        slow.delivery_tag,
        slow.acker.clone(),
        Verdict::Nack { requeue: true },
    );
    fx.wait_ready(1).await;
    // The settler ends once its last handle is gone, after sending all it holds.
    drop(settler);
    tasks.close();
    tasks.wait().await;
    fx.channel.close(200, "settled".into()).await.unwrap();
    assert_eq!(fx.ready().await, 1);
    fx.cleanup().await;
}

/// Poll `rabbitmqctl` (up to 20 s) until `queue` has `expected` unacked messages.
async fn wait_unacked(queue: &str, expected: u32) {
    let mut last = String::new();
    for _ in 0..40 {
        let out = tokio::process::Command::new("rabbitmqctl")
            .args([
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "messages_unacknowledged",
            ])
            .output()
            .await
            .expect("run rabbitmqctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let unacked = text.lines().find_map(|line| {
            let mut cols = line.split_whitespace();
            (cols.next() == Some(queue)).then(|| cols.next()?.parse::<u32>().ok())?
        });
        if unacked == Some(expected) {
            return;
        }
        last = text;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{queue} never had {expected} unacked messages; rabbitmqctl said:\n{last}");
}
