//! The sled store: results by job id, per-key counters and key states.
//!
//! One sled `Tree` per logical table. Writes that must survive a crash go through
//! [`Store::persist_result`], which returns only after the data is flushed to disk;
//! concurrent callers share one flush ([`group_commit`]).

mod counters;
mod group_commit;
pub mod history;
pub mod manifest;
mod recovery;
pub mod response_cache;
mod unsaved;
mod usage;
mod write_health;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

use crate::job::{CacheKey, JobResult};

pub use group_commit::GroupCommit;
pub use usage::{UsageRow, hour_of};

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
    #[error("store is being reopened after a write failure")]
    Reopening,
    #[error(
        "the store at {} is damaged: {why} (sled dropped what followed a corrupt part of its \
         files, and rewrote those parts while opening: the lost results are not in that \
         directory any more). Restore it from a backup; or start with an empty store by setting \
         store.on_damage = \"move_aside\" (KEYRELAY__STORE__ON_DAMAGE=move_aside), which keeps \
         the damaged directory beside it as {}.damaged-<time>",
        path.display(),
        path.display()
    )]
    Damaged { path: PathBuf, why: String },
    #[error("store manifest {}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store at {}: {source}", path.display())]
    Open { path: PathBuf, source: sled::Error },
    #[error("cannot move the damaged store aside to {}: {source}", path.display())]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
}

const RESULTS: &str = "results";
const KEY_STATES: &str = "key_states";
const KEY_COUNTERS: &str = "key_counters";
const RESULTS_BY_TIME: &str = "results_by_time";
const KEY_BUDGETS: &str = "key_budgets";
const OLD_RESPONSE_CACHE: &str = "response_cache";
const USAGE_HOURLY: &str = "usage_hourly";
/// Written by [`Store::recover`] to check that writes go through again.
const WRITE_PROBE: &str = "_write_probe";
/// Marks a store whose results were all written keyed by pool and id.
const KEYED_BY_POOL: &str = "_results_keyed_by_pool";

/// Page cache when none is configured: 16 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// The open tables; replaced whole by [`Store::recover`].
    tables: Arc<RwLock<Option<Arc<Tables>>>>,
    /// Where the database lives and its page cache, to reopen it.
    location: Arc<(PathBuf, u64)>,
    response_cache: Arc<response_cache::CacheIndex>,
    pending_counters: Arc<counters::PendingCounters>,
    write_health: Arc<write_health::WriteHealth>,
    /// Results answered while the store could not write them.
    unsaved: Arc<unsaved::Unsaved>,
    /// The newest result on disk, for the manifest (damage detection).
    watermark: Arc<manifest::Watermark>,
    manifest_writer: Arc<std::sync::Mutex<()>>,
    /// Whether results may be stored under the bare job id (written by a
    /// keyrelay before results were kept per pool): only then is a second
    /// lookup worth its cost.
    legacy_ids: bool,
}

/// One sled `Tree` per table, and the committer of their database. sled
/// refuses every write after an I/O error (ENOSPC) until it is reopened, so
/// the whole set is replaced when the store recovers.
struct Tables {
    results: sled::Tree,
    key_states: sled::Tree,
    key_counters: sled::Tree,
    /// Index: completion time (ns since the epoch, big-endian) ++ job id → ().
    /// Ordered by time, so history is a range scan, newest first in reverse.
    results_by_time: sled::Tree,
    key_budgets: sled::Tree,
    /// `pool/key/YYYY-MM-DDTHH/field` → u64 (merged): per key and hour.
    usage_hourly: sled::Tree,
    commit: GroupCommit,
}

impl Tables {
    fn open(path: &Path, cache_bytes: u64) -> Result<Tables, StoreError> {
        let db = open_db(path, cache_bytes)?;
        let key_counters = db.open_tree(KEY_COUNTERS)?;
        key_counters.set_merge_operator(add_u64);
        let usage_hourly = db.open_tree(USAGE_HOURLY)?;
        // The response cache's tree of earlier versions; the index is in memory now.
        db.drop_tree(OLD_RESPONSE_CACHE)?;
        usage_hourly.set_merge_operator(add_u64);
        Ok(Tables {
            results: db.open_tree(RESULTS)?,
            key_states: db.open_tree(KEY_STATES)?,
            key_counters,
            results_by_time: db.open_tree(RESULTS_BY_TIME)?,
            key_budgets: db.open_tree(KEY_BUDGETS)?,
            usage_hourly,
            // keyrelay flushes sled only through the committer (see `flush`).
            commit: GroupCommit::spawn(db),
        })
    }
}

impl Store {
    /// Open (or create) the database at `path`. Must run inside a tokio runtime
    /// (the group-commit task is spawned here).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Open with a page cache of `cache_bytes`. sled's own default (1 GiB)
    /// lets resident memory grow with every stored result.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let tables = Tables::open(path, cache_bytes).map_err(|e| match e {
            StoreError::Sled(sled::Error::Corruption { .. }) => StoreError::Damaged {
                path: path.to_owned(),
                why: format!("sled reports {e}"),
            },
            StoreError::Sled(source) => StoreError::Open {
                path: path.to_owned(),
                source,
            },
            other => other,
        })?;
        let manifest_error = |source| StoreError::Manifest {
            path: manifest::path_in(path),
            source,
        };
        let recorded = manifest::read(path).map_err(manifest_error)?;
        let newest = tables.results_by_time.last()?.map(|(key, _)| key);
        if let Some(why) = manifest::missing(&recorded, newest.as_deref()) {
            return Err(StoreError::Damaged {
                path: path.to_owned(),
                why,
            });
        }
        let legacy_ids = may_hold_legacy_ids(&tables)?;
        Ok(Store {
            legacy_ids,
            watermark: Arc::new(manifest::Watermark::starting_from(recorded)),
            manifest_writer: Arc::default(),
            tables: Arc::new(RwLock::new(Some(Arc::new(tables)))),
            location: Arc::new((path.to_owned(), cache_bytes)),
            response_cache: Default::default(),
            pending_counters: Default::default(),
            write_health: Default::default(),
            unsaved: Default::default(),
        })
    }

    /// The open tables, or `Reopening` while [`Store::recover`] replaces them.
    fn tables(&self) -> Result<Arc<Tables>, StoreError> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.clone().ok_or(StoreError::Reopening)
    }

    /// The stored result of job `id` of `pool`, if it completed before (or
    /// was answered while the store could not write it). Results are kept
    /// per pool: the same id in two pools is two jobs. A result stored by an
    /// earlier keyrelay under the bare id answers only for its own pool.
    pub fn result_of(&self, pool: &str, id: &str) -> Result<Option<JobResult>, StoreError> {
        if let Some(found) = self.record(&record_key(pool, id))? {
            return Ok(Some(found));
        }
        if !self.legacy_ids {
            return Ok(None);
        }
        Ok(self.record(id)?.filter(|legacy| legacy.pool == pool))
    }

    /// The result stored under `record` (a [`record_key`], or the bare id
    /// an earlier keyrelay used).
    pub fn record(&self, record: &str) -> Result<Option<JobResult>, StoreError> {
        if let Some(unsaved) = self.unsaved.get(record) {
            return Ok(Some(unsaved));
        }
        read_json(&self.tables()?.results, RESULTS, record)
    }

    /// Record a result and bump its key's counters, durably: returns after the
    /// write is on disk, so acking the job afterwards cannot lose it.
    pub async fn persist_result(
        &self,
        result: &JobResult,
        counters_key: Option<&str>,
    ) -> Result<(), StoreError> {
        let encoded = serde_json::to_vec(result).map_err(|e| StoreError::Flush(e.to_string()))?;
        self.persist_encoded(result, &encoded, counters_key, None)
            .await
    }

    /// Like [`Store::persist_result`], with `result` already serialized as
    /// `encoded` (the reply's bytes: one serialization serves both), and
    /// indexed as the response cache's answer to `cache_key` once durable.
    pub async fn persist_encoded(
        &self,
        result: &JobResult,
        encoded: &[u8],
        counters_key: Option<&str>,
        cache_key: Option<CacheKey>,
    ) -> Result<(), StoreError> {
        let written = self
            .write_durably(result, encoded, counters_key, cache_key)
            .await;
        match &written {
            Ok(()) => self.note_write_ok(),
            Err(e) => {
                // Kept in memory, written when the store recovers: a redelivery
                // meanwhile is answered from here, not paid again.
                self.unsaved.keep(result, encoded);
                self.note_write_failed(e);
            }
        }
        written
    }

    fn note_write_ok(&self) {
        if self.write_health.succeeded() {
            tracing::info!("the store writes again; taking jobs again");
        }
    }

    fn note_write_failed(&self, e: &StoreError) {
        if self.write_health.failed(&e.to_string()) {
            tracing::error!(error = %e, "the store cannot write; no new jobs are taken until it can");
        }
    }

    /// Record the newest durable result in the manifest, if it changed
    /// (blocking file I/O: a small write, an fsync and a rename).
    pub fn write_manifest(&self) -> Result<(), StoreError> {
        // One writer at a time: they share the temporary file.
        let _one = self
            .manifest_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(manifest) = self.watermark.take_changed() else {
            return Ok(());
        };
        let dir = &self.location.0;
        manifest::write(dir, &manifest).map_err(|source| {
            self.watermark.unwritten();
            StoreError::Manifest {
                path: manifest::path_in(dir),
                source,
            }
        })
    }

    /// Why the store cannot write, while its last durable write failed.
    pub fn write_error(&self) -> Option<String> {
        self.write_health.error()
    }

    /// Changes of [`Store::write_error`]: `true` while the store can write.
    pub fn writable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.write_health.subscribe()
    }

    async fn write_durably(
        &self,
        result: &JobResult,
        encoded: &[u8],
        counters_key: Option<&str>,
        cache_key: Option<CacheKey>,
    ) -> Result<(), StoreError> {
        let tables = self.tables()?;
        tables
            .results
            .insert(record_key(&result.pool, &result.id).as_bytes(), encoded)?;
        // The time index's value is the cache key, so the cache can be rebuilt.
        let cache_bytes: &[u8] = cache_key.as_ref().map_or(&[], |k| k.as_slice());
        tables
            .results_by_time
            .insert(index_key(result), cache_bytes)?;
        // Counted even if the flush fails: the job is answered either way.
        if let Some(key) = counters_key {
            self.bump(key, "completed");
            self.bump(key, result.outcome_label());
        }
        tables.commit.flush().await?;
        self.watermark.durable(&index_key(result));
        if let Some(key) = cache_key {
            self.index_answer(key, result);
        }
        Ok(())
    }

    /// Persisted state of a key (written by the supervisor).
    pub fn key_state<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        read_json(&self.tables()?.key_states, KEY_STATES, key)
    }

    /// Record a key's state. Not flushed here: the next result's group commit (or
    /// sled's periodic flush, or shutdown) makes it durable.
    pub fn save_key_state<T: Serialize>(&self, key: &str, state: &T) -> Result<(), StoreError> {
        write_json(&self.tables()?.key_states, key, state)
    }

    /// Usage of a key's declared limits, saved by the supervisor.
    pub fn budget(&self, key: &str) -> Result<Option<crate::keys::Budget>, StoreError> {
        read_json(&self.tables()?.key_budgets, KEY_BUDGETS, key)
    }

    pub fn save_budget(&self, key: &str, budget: &crate::keys::Budget) -> Result<(), StoreError> {
        write_json(&self.tables()?.key_budgets, key, budget)
    }

    /// Flush everything (shutdown). Through the group committer, like every
    /// other flush: two sled flushes at once can wait forever (see
    /// `group_commit.rs`).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let counters = self.flush_counters();
        self.tables()?.commit.flush().await?;
        counters?;
        Ok(())
    }
}

/// Open sled, waiting up to 5 s for the lock when a previous instance (an
/// overlapping restart) is still letting go of it.
fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .flush_every_ms(Some(1000));
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

/// Whether `tables` may hold results under bare job ids. A store that had no
/// result when this keyrelay first opened it is marked as keyed by pool from
/// the start, and never needs the second lookup.
fn may_hold_legacy_ids(tables: &Tables) -> Result<bool, StoreError> {
    if tables.key_states.contains_key(KEYED_BY_POOL)? {
        return Ok(false);
    }
    if tables.results.first()?.is_none() {
        tables.key_states.insert(KEYED_BY_POOL, b"1".as_slice())?;
        return Ok(false);
    }
    Ok(true)
}

/// Where a job's result is stored: pool and id (ids are the producers', and
/// two pools may use the same one). The separator cannot be in a valid pool
/// name, and a job id holds no control character.
pub fn record_key(pool: &str, id: &str) -> String {
    format!("{pool}\u{1f}{id}")
}

/// A result's entry in the time index: completion time ++ its record key.
pub fn index_key(result: &JobResult) -> Vec<u8> {
    time_key(result.completed_at, &record_key(&result.pool, &result.id))
}

/// The completion time and job id of an index key (see [`time_key`]).
pub fn split_time_key(key: &[u8]) -> Option<(jiff::Timestamp, &str)> {
    let (nanos, id) = key.split_first_chunk::<8>()?;
    let at = jiff::Timestamp::from_nanosecond(i128::from(u64::from_be_bytes(*nanos))).ok()?;
    Some((at, std::str::from_utf8(id).ok()?))
}

/// sled merge operator: counters are big-endian u64s that merges add to.
fn add_u64(_key: &[u8], old: Option<&[u8]>, delta: &[u8]) -> Option<Vec<u8>> {
    let old = old.and_then(decode_u64).unwrap_or(0);
    let delta = decode_u64(delta).unwrap_or(0);
    Some(old.saturating_add(delta).to_be_bytes().to_vec())
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
