//! Getting a store back after a write failed (a full disk): sled refuses every
//! write after an I/O error until it is reopened, so the tables are replaced
//! with freshly opened ones, the results answered meanwhile are written, and a
//! durable write is checked. Also: what is done at shutdown with results that
//! could not be written.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::db::Store;
use super::error::StoreError;
use super::layout::{index_key, record_key};
use super::tables::{Tables, WRITE_PROBE};

/// How long a reopen waits for the old tables' users (a flush, a prune) to
/// let go before it gives up and leaves them in place.
const LET_GO_WAIT: Duration = Duration::from_secs(10);

impl Store {
    /// After a failed write: reopen the database, write the results answered
    /// meanwhile and check that a durable write goes through. Ok when the
    /// store writes again.
    pub async fn recover(&self) -> Result<(), StoreError> {
        self.reopen().await?;
        let tables = self.tables()?;
        let unsaved = self.unsaved.all();
        for (result, encoded) in &unsaved {
            let record = record_key(&result.pool, &result.id);
            tables
                .results
                .insert(record.as_bytes(), encoded.as_slice())?;
            tables
                .results_by_time
                .insert(index_key(result), &[] as &[u8])?;
        }
        tables
            .key_states
            .insert(WRITE_PROBE, jiff::Timestamp::now().to_string().as_bytes())?;
        match tables.commit.flush().await {
            Ok(()) => {
                for (result, _) in &unsaved {
                    self.watermark.durable(&index_key(result));
                    // Only what was written: a result kept since stays.
                    self.unsaved.remove(&record_key(&result.pool, &result.id));
                }
                self.note_write_ok();
                Ok(())
            }
            Err(e) => {
                self.note_write_failed(&e);
                Err(e)
            }
        }
    }

    /// Replace the tables with freshly opened ones, once nobody else holds
    /// the old ones (sled keeps its file lock until its last handle is gone).
    /// Gives up after [`LET_GO_WAIT`] and leaves the old tables in place.
    async fn reopen(&self) -> Result<(), StoreError> {
        let slot = Arc::clone(&self.tables);
        let (path, cache) = (self.location.0.clone(), self.location.1);
        let swapped = tokio::task::spawn_blocking(move || swap_when_free(&slot, &path, cache))
            .await
            .map_err(|e| StoreError::Flush(format!("reopen task failed: {e}")))?;
        swapped?;
        tracing::info!("store reopened");
        Ok(())
    }

    /// At shutdown: results answered while the store could not write are
    /// written if the store can take them within `wait`; those that cannot
    /// are logged by id, loudly (their jobs were answered and acked: a
    /// producer re-sending one would pay again).
    pub async fn save_unsaved_before_exit(&self, wait: Duration) {
        if self.unsaved.is_empty() {
            return;
        }
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(wait, self.recover())
            .await
            .map_err(|_| StoreError::Flush("timed out".into()))
        {
            tracing::warn!(error = %e, "store not recovered before exit");
        }
        let lost = self.unsaved.ids();
        if !lost.is_empty() {
            tracing::error!(
                count = lost.len(),
                job_ids = ?lost,
                "results answered while the store could not write are lost: their jobs are done, but a re-sent id runs (and is paid) again"
            );
        }
    }
}

/// Blocking: wait until the tables are held only by `slot`, then replace them
/// under the write lock (no new user can take them meanwhile).
fn swap_when_free(
    slot: &RwLock<Option<Arc<Tables>>>,
    path: &std::path::Path,
    cache: u64,
) -> Result<(), StoreError> {
    let deadline = Instant::now() + LET_GO_WAIT;
    loop {
        {
            let mut guard = slot.write().unwrap_or_else(|e| e.into_inner());
            let free = guard.as_ref().is_none_or(|t| Arc::strong_count(t) == 1);
            if free {
                // Dropped before the open: sled's lock must be released first.
                drop(guard.take());
                let opened = Tables::open(path, cache);
                let result = opened
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| StoreError::Flush(e.to_string()));
                if let Ok(tables) = opened {
                    *guard = Some(Arc::new(tables));
                }
                return result;
            }
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Flush(
                "the store is still in use; reopen postponed".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
