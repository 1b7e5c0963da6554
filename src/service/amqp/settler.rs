//! Settles one channel's deliveries (ack, nack), folding runs of consecutive
//! acks into a single `basic.ack` with `multiple = true`.
//!
//! Why: every ack is a frame for lapin to write and, on a quorum queue, a Raft
//! command for the broker. Jobs finish in bursts (a sled group commit releases
//! ~16 at once), so most acks arrive as a run of consecutive delivery tags. In
//! the broker-limit loop folding cut the broker's CPU per job by 20-28 %, in
//! keyrelay by ~18 % (docs/performance.md).
//!
//! Safety: a `multiple` ack at tag T settles *every* outstanding delivery up to
//! T on the channel, so T is only ever the top of a contiguous run of tags this
//! settler has itself been told to ack or has already settled (delivery tags on
//! a channel count up from 1). A tag it has not heard of blocks folding past
//! it. An ack stuck behind such a gap (a slow job) is sent on its own after
//! [`OUT_OF_ORDER_HOLD`], so it never holds a prefetch slot for long. Nacks go
//! out at once, in the order they arrive, through the same task, so no fold can
//! overtake them; a nack that could not be sent stops folding past its tag.
//! Once an ack has waited out the hold, the gap is a slow job, and acks behind
//! it go out at once until the floor moves again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::warn;

use keyrelay_core::metrics as m;

/// How long an ack may wait for an earlier tag to finish before it is sent on
/// its own. Short next to any provider call, so prefetch slots stay busy.
pub const OUT_OF_ORDER_HOLD: Duration = Duration::from_millis(5);

/// What to do with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ack,
    Nack { requeue: bool },
}

struct Settlement<A> {
    tag: u64,
    acker: A,
    verdict: Verdict,
}

/// The handle job tasks settle through. Cheap to clone; the settling task ends
/// (after sending everything it holds) once every handle is gone.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Settlement<Acker>>,
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
        // panicked; then settle directly, unfolded, if a runtime is left.
        if let Err(mpsc::error::SendError(s)) = self.tx.send(settlement) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(send_one(s.acker, s.verdict, false, 1))),
                Err(_) => lost(s.verdict, 1),
            }
        }
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Settlement<Acker>>, channel: lapin::Channel) {
    let mut book = Book::new(Instant::now());
    loop {
        let received = match book.next_deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline, rx.recv()).await.ok(),
            None => Some(rx.recv().await),
        };
        let closing = matches!(received, Some(None));
        if let Some(Some(first)) = received {
            take(&mut book, first).await;
            while let Ok(more) = rx.try_recv() {
                take(&mut book, more).await;
            }
        }
        // Every handle gone: send everything held, folded where possible.
        let now = Instant::now()
            + if closing {
                OUT_OF_ORDER_HOLD
            } else {
                Duration::ZERO
            };
        send_due(&mut book, now).await;
        if closing {
            break;
        }
    }
    drop(channel);
}

async fn take(book: &mut Book<Acker>, s: Settlement<Acker>) {
    if let Some(nack) = book.take(s, Instant::now()) {
        let tag = nack.tag;
        let sent = send_one(nack.acker, nack.verdict, false, 1).await;
        book.nack_sent(tag, sent, Instant::now());
    }
}

async fn send_due(book: &mut Book<Acker>, now: Instant) {
    if let Some((acker, count)) = book.take_folded() {
        // A run of one needs no `multiple`.
        send_one(acker, Verdict::Ack, count > 1, count).await;
    }
    for acker in book.take_overdue(now) {
        send_one(acker, Verdict::Ack, false, 1).await;
    }
}

/// The settler's bookkeeping: which frames to send, not how. Generic over the
/// acker so it can be tested without a broker.
struct Book<A> {
    /// Every tag up to and including this one is settled (or covered by the
    /// fold in `folded`).
    floor: u64,
    /// When the floor last moved.
    floor_moved: Instant,
    /// An ack has waited out the hold since the floor last moved: the gap is a
    /// slow job, so acks behind it are not held.
    gap_is_slow: bool,
    /// Acks above a gap, with when they arrived.
    waiting: BTreeMap<u64, (A, Instant)>,
    /// Tags above the floor already settled on their own (nacks, overdue acks).
    settled_ahead: BTreeSet<u64>,
    /// The acker of the top of the contiguous run, and how many acks it stands for.
    folded: Option<(A, u64)>,
}

impl<A> Book<A> {
    fn new(now: Instant) -> Book<A> {
        Book {
            floor: 0,
            floor_moved: now,
            gap_is_slow: false,
            waiting: BTreeMap::new(),
            settled_ahead: BTreeSet::new(),
            folded: None,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let oldest = self.waiting.values().map(|(_, since)| *since).min()?;
        Some(if self.gap_is_slow {
            oldest
        } else {
            oldest + OUT_OF_ORDER_HOLD
        })
    }

    /// Record a settlement. A nack comes back: send it now, then report with
    /// [`Book::nack_sent`].
    fn take(&mut self, s: Settlement<A>, now: Instant) -> Option<Settlement<A>> {
        match s.verdict {
            Verdict::Nack { .. } => Some(s),
            Verdict::Ack => {
                self.waiting.insert(s.tag, (s.acker, now));
                self.advance(now);
                None
            }
        }
    }

    /// A nack's frame went out (`sent`) or not. One that did not stays a gap:
    /// folding past it could ack a job meant for requeue or dead-lettering.
    fn nack_sent(&mut self, tag: u64, sent: bool, now: Instant) {
        if sent {
            self.settled_ahead.insert(tag);
            self.advance(now);
        }
    }

    /// Move the floor up over consecutive settled or acked tags.
    fn advance(&mut self, now: Instant) {
        let start = self.floor;
        loop {
            let next = self.floor + 1;
            if let Some((acker, _)) = self.waiting.remove(&next) {
                let count = self.folded.take().map_or(0, |(_, n)| n);
                self.folded = Some((acker, count + 1));
            } else if !self.settled_ahead.remove(&next) {
                break;
            }
            self.floor = next;
        }
        if self.floor != start {
            self.floor_moved = now;
            self.gap_is_slow = false;
        }
    }

    /// The fold to send now, if any: one acker with `multiple`, and its count.
    fn take_folded(&mut self) -> Option<(A, u64)> {
        self.folded.take()
    }

    /// Acks to send on their own: those that waited out the hold, or all of
    /// them once the gap is known to be slow.
    fn take_overdue(&mut self, now: Instant) -> Vec<A> {
        let due = |since: Instant| self.gap_is_slow || since + OUT_OF_ORDER_HOLD <= now;
        let overdue: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (_, since))| due(*since))
            .map(|(tag, _)| *tag)
            .collect();
        if !overdue.is_empty() {
            self.gap_is_slow = true;
        }
        let mut ackers = Vec::with_capacity(overdue.len());
        for tag in overdue {
            if let Some((acker, _)) = self.waiting.remove(&tag) {
                self.settled_ahead.insert(tag);
                ackers.push(acker);
            }
        }
        ackers
    }
}

/// Send one frame; `count` is how many deliveries it settles. Returns whether
/// it was sent.
async fn send_one(acker: Acker, verdict: Verdict, multiple: bool, count: u64) -> bool {
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
        lost(verdict, count);
        return false;
    }
    let kind = match (verdict, multiple) {
        (Verdict::Nack { .. }, _) => "nack",
        (Verdict::Ack, true) => "ack_folded",
        (Verdict::Ack, false) => "ack",
    };
    metrics::counter!(m::SETTLE_FRAMES_TOTAL, "kind" => kind).increment(1);
    true
}

/// Count deliveries whose settlement could not be sent: the channel is gone,
/// and the broker redelivers them.
fn lost(verdict: Verdict, count: u64) {
    metrics::counter!(m::ACKS_LOST_TOTAL).increment(count);
    warn!(
        ?verdict,
        deliveries = count,
        "not sent (channel gone); the broker redelivers the job(s)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In the tests an acker is just its tag.
    fn ack(book: &mut Book<u64>, tag: u64, now: Instant) {
        let s = Settlement {
            tag,
            acker: tag,
            verdict: Verdict::Ack,
        };
        assert!(book.take(s, now).is_none());
    }

    fn nack(book: &mut Book<u64>, tag: u64, sent: bool, now: Instant) {
        let s = Settlement {
            tag,
            acker: tag,
            verdict: Verdict::Nack { requeue: true },
        };
        let out = book.take(s, now).expect("a nack goes out at once");
        book.nack_sent(out.tag, sent, now);
    }

    #[test]
    fn consecutive_acks_fold_into_one() {
        let t = Instant::now();
        let mut book = Book::new(t);
        for tag in [2, 1, 3, 5, 4] {
            ack(&mut book, tag, t);
        }
        assert_eq!(book.take_folded(), Some((5, 5)));
        assert!(book.take_overdue(t + OUT_OF_ORDER_HOLD).is_empty());
        assert_eq!(book.next_deadline(), None);
    }

    #[test]
    fn acks_behind_a_gap_wait_the_hold_then_go_alone() {
        let t = Instant::now();
        let mut book = Book::new(t);
        for tag in [1, 2, 4, 5] {
            ack(&mut book, tag, t);
        }
        assert_eq!(
            book.take_folded(),
            Some((2, 2)),
            "the fold stops at the gap"
        );
        assert_eq!(book.next_deadline(), Some(t + OUT_OF_ORDER_HOLD));
        assert!(book.take_overdue(t).is_empty(), "held");
        assert_eq!(book.take_overdue(t + OUT_OF_ORDER_HOLD), vec![4, 5]);
        // The gap closes: the floor moves over 3 and the already-sent 4 and 5;
        // only 3 is in the fold (a run of one: sent without `multiple`).
        ack(&mut book, 3, t);
        assert_eq!(book.take_folded(), Some((3, 1)));
        ack(&mut book, 6, t);
        assert_eq!(book.take_folded(), Some((6, 1)));
    }

    #[test]
    fn a_slow_gap_does_not_hold_later_acks() {
        let t = Instant::now();
        let mut book = Book::new(t);
        ack(&mut book, 2, t);
        assert_eq!(book.take_overdue(t + OUT_OF_ORDER_HOLD), vec![2]);
        // Tag 1 is a slow job: the next ack behind it is due at once.
        let later = t + OUT_OF_ORDER_HOLD * 3;
        ack(&mut book, 3, later);
        assert_eq!(book.next_deadline(), Some(later));
        assert_eq!(book.take_overdue(later), vec![3]);
        // The slow job ends: the floor moves, holding resumes.
        ack(&mut book, 1, later);
        assert_eq!(book.take_folded(), Some((1, 1)));
        ack(&mut book, 5, later);
        assert!(book.take_overdue(later).is_empty());
    }

    #[test]
    fn a_fold_passes_a_sent_nack_but_never_a_failed_one() {
        let t = Instant::now();
        let mut book = Book::new(t);
        ack(&mut book, 1, t);
        nack(&mut book, 2, true, t);
        ack(&mut book, 3, t);
        // One `multiple` ack at 3 settles 1 and 3 (2 is already nacked).
        assert_eq!(book.take_folded(), Some((3, 2)));

        let mut book = Book::new(t);
        ack(&mut book, 1, t);
        nack(&mut book, 2, false, t);
        ack(&mut book, 3, t);
        assert_eq!(
            book.take_folded(),
            Some((1, 1)),
            "stops below the failed nack"
        );
        assert_eq!(book.take_overdue(t + OUT_OF_ORDER_HOLD), vec![3]);
    }
}
