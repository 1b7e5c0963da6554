//! Heavy admin reads: the cap on how many run at once, and the threads their
//! store work runs on.
//!
//! `/v1/alerts`, `/v1/pools`, `/v1/stats` over results or usage and `/v1/jobs`
//! pages scan stored results, ask the broker and ask the supervisor. Each takes
//! a slot of [`HeavyReads`] (`[admin] max_heavy_reads`) for its whole run; one
//! that finds no slot free within [`SLOT_WAIT`], or finds [`QUEUE_PER_SLOT`]
//! requests per slot already waiting, is answered 503 `busy` with
//! `Retry-After`. The queue is bounded so that a flood is refused as it
//! arrives rather than held and refused all at once. Their sled work runs
//! through [`Slot::run`], on background-priority threads, never on the HTTP
//! worker, which therefore only ever waits: `/healthz`, `/readyz` and
//! `/metrics` share that worker and answer in milliseconds whatever the admin
//! load (`tests/admin_load.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::errors::{ApiError, RETRY_AFTER_SECS};

/// How long a heavy read waits for a slot before it is answered `busy`.
pub const SLOT_WAIT: Duration = Duration::from_secs(1);
/// Requests that may wait for a slot, per slot; more are `busy` at once.
pub const QUEUE_PER_SLOT: usize = 16;

/// The slots of heavy reads, shared by every HTTP worker.
pub struct HeavyReads {
    slots: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
    /// Requests waiting for a slot now.
    waiting: AtomicUsize,
}

/// A slot, held until the request's answer is built and until the work it
/// started with [`Slot::run`] has finished (a client that goes away does not
/// free the slot while its scan still runs).
#[must_use = "the slot is released when dropped"]
pub struct Slot {
    permit: Arc<OwnedSemaphorePermit>,
}

impl HeavyReads {
    /// `limit` slots, each waited for up to [`SLOT_WAIT`].
    pub fn new(limit: usize) -> HeavyReads {
        Self::with_wait(limit, SLOT_WAIT)
    }

    fn with_wait(limit: usize, wait: Duration) -> HeavyReads {
        let limit = limit.max(1);
        HeavyReads {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            wait,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A slot: at once if one is free, else after waiting up to [`SLOT_WAIT`]
    /// in a queue of at most [`QUEUE_PER_SLOT`] per slot; otherwise `busy`.
    pub async fn enter(&self) -> Result<Slot, ApiError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot::from(permit));
        }
        let Some(_queued) = self.queue() else {
            return Err(self.busy());
        };
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot::from(permit)),
            // Timed out (the semaphore is never closed).
            _ => Err(self.busy()),
        }
    }

    /// A place in the queue, unless it is full. Left when dropped, so a
    /// request whose client went away leaves it too.
    fn queue(&self) -> Option<Queued<'_>> {
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        let queued = Queued(&self.waiting);
        (ahead < self.limit.saturating_mul(QUEUE_PER_SLOT)).then_some(queued)
    }

    fn busy(&self) -> ApiError {
        ApiError::Busy(format!(
            "{} heavy admin reads (alerts, pools, stats, job history) are already running; retry in {RETRY_AFTER_SECS} s",
            self.limit
        ))
    }
}

struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Nice value of the threads heavy reads run on (0 is normal, 19 lowest).
const BACKGROUND_NICE: i32 = 10;

impl From<OwnedSemaphorePermit> for Slot {
    fn from(permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            permit: Arc::new(permit),
        }
    }
}

impl Slot {
    /// Run `f` (sled reads, serialization) on a thread of its own, at
    /// background priority: a scan then takes only CPU that the HTTP worker,
    /// the job pipeline and the broker do not want. The thread holds the slot
    /// too, so at most `max_heavy_reads` exist. (Not the blocking pool: a
    /// thread's priority cannot be raised back, and that pool reuses threads.)
    pub async fn run<T, F>(&self, what: &'static str, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let permit = self.permit.clone();
        std::thread::Builder::new()
            .name("admin-read".into())
            .spawn(move || {
                lower_priority();
                let _ = tx.send(f());
                drop(permit);
            })
            .map_err(|e| ApiError::Unavailable(format!("{what} did not start: {e}")))?;
        rx.await
            .map_err(|_| ApiError::Unavailable(format!("{what} stopped without an answer")))?
    }
}

/// Give the calling thread background priority (best effort).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain integer arguments; on Linux the nice value is per thread,
    // and `who` is this thread's id. A failure leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn a_full_cap_answers_busy_after_the_wait_and_frees_on_drop() {
        let wait = Duration::from_millis(50);
        let heavy = HeavyReads::with_wait(2, wait);
        let a = heavy.enter().await.unwrap();
        let _b = heavy.enter().await.unwrap();
        let started = Instant::now();
        let err = heavy.enter().await.err().unwrap();
        assert!(started.elapsed() >= wait);
        assert_eq!(err.code(), "busy");
        assert!(err.to_string().contains("2 heavy admin reads"), "{err}");
        drop(a);
        assert!(heavy.enter().await.is_ok());
    }

    #[tokio::test]
    async fn work_keeps_its_slot_until_it_is_done() {
        let heavy = HeavyReads::with_wait(1, Duration::from_millis(50));
        let slot = heavy.enter().await.unwrap();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let work = slot.run("test work", move || Ok(wait.recv().is_ok()));
        // The request is dropped (its client went away): the work goes on.
        drop(tokio::time::timeout(Duration::from_millis(10), work).await);
        drop(slot);
        assert_eq!(heavy.enter().await.err().map(|e| e.code()), Some("busy"));
        go.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while heavy.enter().await.is_err() {
            assert!(Instant::now() < deadline, "the slot came back");
        }
    }

    #[tokio::test]
    async fn a_waiting_read_gets_a_slot_freed_within_the_wait() {
        let heavy = Arc::new(HeavyReads::with_wait(1, Duration::from_secs(30)));
        let held = heavy.enter().await.unwrap();
        let waiter = tokio::spawn({
            let heavy = heavy.clone();
            async move { heavy.enter().await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_is_busy_at_once_and_shrinks_as_waiters_leave() {
        let heavy = Arc::new(HeavyReads::with_wait(1, Duration::from_secs(30)));
        let _held = heavy.enter().await.unwrap();
        let waiters: Vec<_> = (0..QUEUE_PER_SLOT)
            .map(|_| {
                let heavy = heavy.clone();
                tokio::spawn(async move { heavy.enter().await.is_ok() })
            })
            .collect();
        while heavy.waiting.load(Ordering::Acquire) < QUEUE_PER_SLOT {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        assert_eq!(heavy.enter().await.err().unwrap().code(), "busy");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused at once"
        );
        assert_eq!(heavy.waiting.load(Ordering::Acquire), QUEUE_PER_SLOT);
        // A waiter that goes away (its client disconnected) leaves the queue.
        waiters[0].abort();
        while heavy.waiting.load(Ordering::Acquire) == QUEUE_PER_SLOT {
            tokio::task::yield_now().await;
        }
        assert_eq!(heavy.waiting.load(Ordering::Acquire), QUEUE_PER_SLOT - 1);
    }
}
