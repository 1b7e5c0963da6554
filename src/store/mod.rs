//! The sled store: results by job id, per-key counters and key states.
//!
//! One sled `Tree` per logical table. Writes that must survive a crash go through
//! [`Store::persist_result`], which returns only after the data is flushed to disk;
//! concurrent callers share one flush ([`group_commit`]).

mod group_commit;
pub mod history;

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

use crate::job::JobResult;

pub use group_commit::GroupCommit;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store record {tree}/{key} is corrupt: {message}")]
    Corrupt {
        tree: &'static str,
        key: String,
        message: String,
    },
    #[error("store flush failed: {0}")]
    Flush(String),
}

const RESULTS: &str = "results";
const KEY_STATES: &str = "key_states";
const KEY_COUNTERS: &str = "key_counters";
const RESULTS_BY_TIME: &str = "results_by_time";

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    results: sled::Tree,
    key_states: sled::Tree,
    key_counters: sled::Tree,
    /// Index: completion time (ns since the epoch, big-endian) ++ job id → ().
    /// Ordered by time, so history is a range scan, newest first in reverse.
    results_by_time: sled::Tree,
    commit: GroupCommit,
}

impl Store {
    /// Open (or create) the database at `path`. Must run inside a tokio runtime
    /// (the group-commit task is spawned here).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = open_db(path)?;
        Ok(Store {
            results: db.open_tree(RESULTS)?,
            key_states: db.open_tree(KEY_STATES)?,
            key_counters: db.open_tree(KEY_COUNTERS)?,
            results_by_time: db.open_tree(RESULTS_BY_TIME)?,
            commit: GroupCommit::spawn(db.clone()),
            db,
        })
    }

    /// The stored result of a job, if it completed before.
    pub fn result(&self, id: &str) -> Result<Option<JobResult>, StoreError> {
        read_json(&self.results, RESULTS, id)
    }

    /// Record a result and bump its key's counters, durably: returns after the
    /// write is on disk, so acking the job afterwards cannot lose it.
    pub async fn persist_result(
        &self,
        result: &JobResult,
        counters_key: Option<&str>,
    ) -> Result<(), StoreError> {
        write_json(&self.results, &result.id, result)?;
        self.results_by_time
            .insert(time_key(result.completed_at, &result.id), &[])?;
        if let Some(key) = counters_key {
            self.bump(key, "completed")?;
            self.bump(key, result.outcome_label())?;
        }
        self.commit.flush().await
    }

    /// Add one to the counter `name` of `key` (`pool/key`).
    pub fn bump(&self, key: &str, name: &str) -> Result<u64, StoreError> {
        let id = format!("{key}/{name}");
        let new = self.key_counters.update_and_fetch(id.as_bytes(), |old| {
            let n = old.and_then(decode_u64).unwrap_or(0) + 1;
            Some(n.to_be_bytes().to_vec())
        })?;
        Ok(new.as_deref().and_then(decode_u64).unwrap_or(0))
    }

    /// Every counter of `key` (`pool/key`), by name.
    pub fn counters(&self, key: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let prefix = format!("{key}/");
        let mut out = Vec::new();
        for entry in self.key_counters.scan_prefix(prefix.as_bytes()) {
            let (k, v) = entry?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((name, decode_u64(&v).unwrap_or(0)));
        }
        Ok(out)
    }

    /// Persisted state of a key (written by the supervisor).
    pub fn key_state<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        read_json(&self.key_states, KEY_STATES, key)
    }

    /// Record a key's state. Not flushed here: the next result's group commit (or
    /// sled's periodic flush, or shutdown) makes it durable.
    pub fn save_key_state<T: Serialize>(&self, key: &str, state: &T) -> Result<(), StoreError> {
        write_json(&self.key_states, key, state)
    }

    /// Flush everything (shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

/// Open sled, waiting up to 5 s for the lock when a previous instance (an
/// overlapping restart) is still letting go of it.
fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new().path(path).flush_every_ms(Some(1000));
    let mut waited = std::time::Duration::ZERO;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if is_lock_busy(&e) && waited.as_secs() < 5 => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                waited += std::time::Duration::from_millis(100);
            }
            other => return Ok(other?),
        }
    }
}

fn is_lock_busy(e: &std::io::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

/// Index key of a result: its completion time, then its id.
pub fn time_key(at: jiff::Timestamp, id: &str) -> Vec<u8> {
    let nanos = u64::try_from(at.as_nanosecond()).unwrap_or(0);
    let mut key = Vec::with_capacity(8 + id.len());
    key.extend_from_slice(&nanos.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn read_json<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let Some(bytes) = tree.get(key.as_bytes())? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            tree: name,
            key: key.to_owned(),
            message: e.to_string(),
        })
}

fn write_json<T: Serialize>(tree: &sled::Tree, key: &str, value: &T) -> Result<(), StoreError> {
    // Serializing our own types cannot fail (no non-string map keys).
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Flush(e.to_string()))?;
    tree.insert(key.as_bytes(), bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests;
