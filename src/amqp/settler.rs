//! Settles one channel's deliveries (ack, nack), folding runs of consecutive
//! acks into a single `basic.ack` with `multiple = true`.
//!
//! Why: every ack is a frame for lapin to write and, on a quorum queue, a Raft
//! command for the broker. Jobs finish in bursts (a sled group commit releases
//! ~16 at once), so most acks arrive as a run of consecutive delivery tags. In
//! the broker-limit loop, folding them cut the broker's CPU per job by ~20 %.
//!
//! Safety: a `multiple` ack at tag T settles *every* outstanding delivery up to
//! T on the channel, so T is only ever the top of a contiguous run of tags this
//! settler has itself been told to ack or has already settled (delivery tags on
//! a channel count up from 1). A tag it has not heard of blocks folding past
//! it. An ack stuck behind such a gap (a slow job) is sent on its own after
//! [`OUT_OF_ORDER_HOLD`], so it never holds a prefetch slot for long. Nacks go
//! out at once, in the order they arrive, through the same task, so no fold can
//! overtake them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::metrics as m;

/// How long an ack may wait for an earlier tag to finish before it is sent on
/// its own. Short next to any provider call, so prefetch slots stay busy.
pub const OUT_OF_ORDER_HOLD: Duration = Duration::from_millis(5);

/// What to do with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ack,
    Nack { requeue: bool },
}

struct Settlement {
    tag: u64,
    acker: Acker,
    verdict: Verdict,
}

/// The handle job tasks settle through. Cheap to clone; the settling task ends
/// (after sending everything it holds) once every handle is gone.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Settlement>,
}

impl Settler {
    /// Start the settling task for `channel`, which it keeps open until the
    /// last settlement is sent.
    pub fn spawn(channel: lapin::Channel, tasks: &TaskTracker) -> Settler {
        let (tx, rx) = mpsc::unbounded_channel();
        tasks.spawn(run(rx, channel));
        Settler { tx }
    }

    /// Queue a delivery's settlement. Never blocks; the frame goes out within
    /// [`OUT_OF_ORDER_HOLD`].
    pub fn settle(&self, tag: u64, acker: Acker, verdict: Verdict) {
        let settlement = Settlement {
            tag,
            acker,
            verdict,
        };
        // The task lives as long as any handle, so this only fails if it
        // panicked; then settle directly, unfolded.
        if let Err(mpsc::error::SendError(s)) = self.tx.send(settlement) {
            tokio::spawn(send_one(s.acker, s.verdict, false, 1));
        }
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Settlement>, channel: lapin::Channel) {
    let mut book = Book::default();
    loop {
        let received = match book.next_deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline, rx.recv()).await.ok(),
            None => Some(rx.recv().await),
        };
        match received {
            // Every handle is gone: send what is held and stop.
            Some(None) => break,
            Some(Some(first)) => {
                book.take(first).await;
                while let Ok(more) = rx.try_recv() {
                    book.take(more).await;
                }
            }
            None => {}
        }
        book.send_folded().await;
        book.send_overdue(Instant::now()).await;
    }
    book.send_folded().await;
    book.send_overdue(Instant::now() + OUT_OF_ORDER_HOLD).await;
    drop(channel);
}

/// The settler's bookkeeping, apart from the task so it can be tested alone.
#[derive(Default)]
struct Book {
    /// Every tag up to and including this one is settled (or covered by an ack
    /// already handed to `folded`).
    floor: u64,
    /// Acks above a gap, with when they arrived.
    waiting: BTreeMap<u64, (Acker, Instant)>,
    /// Tags above the floor already settled on their own (nacks, overdue acks).
    settled_ahead: BTreeSet<u64>,
    /// The acker of the top of the contiguous run, not yet sent.
    folded: Option<(Acker, u64)>,
    /// How many acks `folded` stands for.
    folded_count: u64,
}

impl Book {
    fn next_deadline(&self) -> Option<Instant> {
        self.waiting
            .values()
            .map(|(_, since)| *since + OUT_OF_ORDER_HOLD)
            .min()
    }

    async fn take(&mut self, s: Settlement) {
        match s.verdict {
            Verdict::Nack { .. } => {
                // Out at once: a fold sent later may cover this tag.
                send_one(s.acker, s.verdict, false, 1).await;
                self.settled_ahead.insert(s.tag);
            }
            Verdict::Ack => {
                self.waiting.insert(s.tag, (s.acker, Instant::now()));
            }
        }
        self.advance();
    }

    /// Move the floor up over consecutive settled or acked tags.
    fn advance(&mut self) {
        loop {
            let next = self.floor + 1;
            if let Some((acker, _)) = self.waiting.remove(&next) {
                self.folded = Some((acker, next));
                self.folded_count += 1;
            } else if !self.settled_ahead.remove(&next) {
                return;
            }
            self.floor = next;
        }
    }

    async fn send_folded(&mut self) {
        if let Some((acker, _tag)) = self.folded.take() {
            let count = std::mem::take(&mut self.folded_count);
            send_one(acker, Verdict::Ack, true, count).await;
        }
    }

    /// Send, one by one, the acks that waited `OUT_OF_ORDER_HOLD` for a gap.
    async fn send_overdue(&mut self, now: Instant) {
        let overdue: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (_, since))| *since + OUT_OF_ORDER_HOLD <= now)
            .map(|(tag, _)| *tag)
            .collect();
        for tag in overdue {
            if let Some((acker, _)) = self.waiting.remove(&tag) {
                send_one(acker, Verdict::Ack, false, 1).await;
                self.settled_ahead.insert(tag);
            }
        }
    }
}

/// Send one frame; `count` is how many deliveries it settles (for the lost
/// counter when the channel is gone: the broker then redelivers them all).
async fn send_one(acker: Acker, verdict: Verdict, multiple: bool, count: u64) {
    let kind = match (verdict, multiple) {
        (Verdict::Nack { .. }, _) => "nack",
        (Verdict::Ack, true) => "ack_folded",
        (Verdict::Ack, false) => "ack",
    };
    metrics::counter!(m::SETTLE_FRAMES_TOTAL, "kind" => kind).increment(1);
    let sent = match verdict {
        Verdict::Ack => acker.ack(BasicAckOptions { multiple }).await,
        Verdict::Nack { requeue } => {
            acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue,
                })
                .await
        }
    };
    if !matches!(sent, Ok(true)) {
        metrics::counter!(m::ACKS_LOST_TOTAL).increment(count);
        warn!(
            ?verdict,
            deliveries = count,
            "not sent (channel gone); the broker redelivers the job(s)"
        );
    }
}
