//! The store's handle: the struct every part of the store hangs off, opening
//! it, and what it does itself (results, key states and budgets, durability,
//! the manifest). The lifetime counters and the response cache are parts it
//! holds; usage, history and recovery add methods of their own beside it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use super::counters::PendingCounters;
use super::error::StoreError;
use super::layout::{index_key, read_json, record_key, write_json};
use super::manifest::{self, Watermark};
use super::response_cache::CacheIndex;
use super::tables::{KEY_BUDGETS, KEY_STATES, RESULTS, Tables, may_hold_legacy_ids};
use super::unsaved::Unsaved;
use super::write_health::WriteHealth;
use crate::job::{CacheKey, JobResult};

/// Page cache when none is configured: 16 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// The open tables; replaced whole by [`Store::recover`].
    pub(super) tables: Arc<RwLock<Option<Arc<Tables>>>>,
    /// Where the database lives and its page cache, to reopen it.
    pub(super) location: Arc<(PathBuf, u64)>,
    response_cache: Arc<CacheIndex>,
    pending_counters: Arc<PendingCounters>,
    write_health: Arc<WriteHealth>,
    /// Results answered while the store could not write them.
    pub(super) unsaved: Arc<Unsaved>,
    /// The newest result on disk, for the manifest (damage detection).
    pub(super) watermark: Arc<Watermark>,
    manifest_writer: Arc<std::sync::Mutex<()>>,
    /// Whether results may be stored under the bare job id (written by a
    /// keyrelay before results were kept per pool): only then is a second
    /// lookup worth its cost.
    legacy_ids: bool,
}

/// A [`Store`] that may be gone: reads only while the store is open.
#[derive(Clone)]
pub struct WeakStore {
    tables: Weak<RwLock<Option<Arc<Tables>>>>,
    pending_counters: Weak<PendingCounters>,
}

impl WeakStore {
    /// A key's counters, as [`Store::counters`]; `None` once the store is gone.
    pub fn counters(&self, key: &str) -> Option<Vec<(String, u64)>> {
        let tables = self.tables.upgrade()?;
        let pending = self.pending_counters.upgrade()?;
        let tables = tables.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        pending.read(&tables.key_counters, key).ok()
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
                reason: open_failure(&source),
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
            watermark: Arc::new(Watermark::starting_from(recorded)),
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
    pub(super) fn tables(&self) -> Result<Arc<Tables>, StoreError> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.clone().ok_or(StoreError::Reopening)
    }

    /// A handle that does not keep the database open: a background task that
    /// outlives the app (a poller) must not hold sled's lock after shutdown.
    pub fn downgrade(&self) -> WeakStore {
        WeakStore {
            tables: Arc::downgrade(&self.tables),
            pending_counters: Arc::downgrade(&self.pending_counters),
        }
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

    pub(super) fn note_write_ok(&self) {
        if self.write_health.succeeded() {
            tracing::info!("the store writes again; taking jobs again");
        }
    }

    pub(super) fn note_write_failed(&self, e: &StoreError) {
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
            self.response_cache.index(key, result);
        }
        Ok(())
    }

    /// Record `result` only if its job has no result yet (an atomic
    /// compare-and-swap on the record): `Ok(false)` when one was there.
    /// Durable like [`Store::persist_result`]; no counters, no cache.
    pub async fn persist_if_absent(&self, result: &JobResult) -> Result<bool, StoreError> {
        let encoded = serde_json::to_vec(result).map_err(|e| StoreError::Flush(e.to_string()))?;
        let tables = self.tables()?;
        let record = record_key(&result.pool, &result.id);
        // A result answered while the store could not write counts as there.
        if self.unsaved.get(&record).is_some() {
            return Ok(false);
        }
        let swapped = tables.results.compare_and_swap(
            record.as_bytes(),
            None as Option<&[u8]>,
            Some(encoded.as_slice()),
        )?;
        if swapped.is_err() {
            return Ok(false);
        }
        tables.results_by_time.insert(index_key(result), &[][..])?;
        tables.commit.flush().await?;
        self.watermark.durable(&index_key(result));
        Ok(true)
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

    /// Record a key's budget usage; durable like [`Store::save_key_state`].
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

    /// Add one to the counter `name` of `key` (`pool/key`).
    pub fn bump(&self, key: &str, name: &'static str) {
        self.pending_counters.bump(key, name);
    }

    /// Every counter of `key` (`pool/key`), by name, unwritten counts included.
    pub fn counters(&self, key: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.pending_counters
            .read(&self.tables()?.key_counters, key)
    }

    /// Merge the counts summed since the last flush into sled.
    /// Counts that fail to merge stay pending for the next flush.
    pub fn flush_counters(&self) -> Result<(), StoreError> {
        self.pending_counters.flush(&self.tables()?.key_counters)
    }

    /// Remove every counter of `key` (`pool/key`); the admin API's reset.
    pub fn reset_counters(&self, key: &str) -> Result<(), StoreError> {
        self.pending_counters
            .reset(&self.tables()?.key_counters, key)
    }

    /// Turn the response cache on: answers younger than `ttl`, at most
    /// `max_entries`, rebuilt from the results already stored. Returns how
    /// many were loaded.
    pub fn load_response_cache(
        &self,
        ttl: Duration,
        max_entries: usize,
    ) -> Result<usize, StoreError> {
        self.response_cache
            .load(&self.tables()?.results_by_time, ttl, max_entries)
    }

    /// The stored successful result answering request `key`, if it is still
    /// cached (not past the TTL, not dropped for newer answers).
    pub fn cached_result(&self, key: &CacheKey) -> Result<Option<JobResult>, StoreError> {
        let Some(record) = self.response_cache.answer(key) else {
            return Ok(None);
        };
        Ok(self.record(&record)?.filter(JobResult::is_success))
    }

    /// Drop cached answers past the TTL; returns how many.
    pub fn prune_cache(&self) -> usize {
        self.response_cache.prune()
    }
}

/// Why sled could not open a store, for an operator.
fn open_failure(error: &sled::Error) -> String {
    match error {
        sled::Error::Io(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock") => {
            "another process holds it (is another keyrelay running on it? each instance needs a store of its own)".to_owned()
        }
        sled::Error::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}
