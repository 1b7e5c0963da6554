//! Group commit: many writers wait for one sled flush instead of one flush each.
//!
//! A writer inserts, then asks for a flush and waits. The committer task takes the
//! first request, drains every other request already queued, flushes once, and
//! answers them all: under load one fsync covers a whole batch of jobs.
//!
//! It is also keyrelay's only caller of sled's `flush_async`: two calls at once
//! can wait forever in sled 0.34.7 (spacejam/sled#1308, fixed on sled's main
//! branch and never released), so every flush keyrelay asks for is serialized
//! here. (sled's own flusher thread also flushes, once a second.)

use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;

type Waiter = oneshot::Sender<Result<(), String>>;

/// Each request carries its own handle to the database, so the committer holds
/// none while idle and dropping the last `Store` really closes sled.
#[derive(Clone)]
pub struct GroupCommit {
    db: sled::Db,
    requests: mpsc::UnboundedSender<(sled::Db, Waiter)>,
}

impl GroupCommit {
    /// Start the committer task for `db` (needs a tokio runtime).
    pub fn spawn(db: sled::Db) -> GroupCommit {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        GroupCommit { db, requests: tx }
    }

    /// Resolve once everything written before this call is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((self.db.clone(), tx))
            .map_err(|_| StoreError::Flush("committer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Flush("committer stopped".into()))?
            .map_err(StoreError::Flush)
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<(sled::Db, Waiter)>) {
    let mut batch = Vec::new();
    while let Some((db, first)) = rx.recv().await {
        batch.push(first);
        gather(&mut rx, &mut batch).await;
        let started = std::time::Instant::now();
        let result = db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        drop(db);
        metrics::histogram!(crate::metrics::STORE_FLUSH_SECONDS)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::metrics::STORE_FLUSH_BATCH).record(batch.len() as f64);
        for waiter in batch.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}

/// Take every request already queued, then give the other tasks a few turns
/// to finish their writes and queue theirs: each flush wakes several sled
/// threads, so fewer, larger batches cost less CPU than many small ones.
/// Stops as soon as a turn brings nothing new, so an idle service does not wait.
async fn gather(rx: &mut mpsc::UnboundedReceiver<(sled::Db, Waiter)>, batch: &mut Vec<Waiter>) {
    for turn in 0..GATHER_TURNS {
        let before = batch.len();
        while let Ok((_, more)) = rx.try_recv() {
            batch.push(more);
        }
        if batch.len() == before && turn > 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
    while let Ok((_, more)) = rx.try_recv() {
        batch.push(more);
    }
}

/// Turns given to other tasks before a flush.
const GATHER_TURNS: usize = 4;
