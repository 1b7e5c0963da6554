//! The sled trees keyrelay keeps, opened together from one database: their
//! names, and the opening itself (waiting for a previous instance's lock,
//! marking a new store as keyed by pool).

use std::path::Path;

use super::error::StoreError;
use super::group_commit::GroupCommit;
use super::layout::add_u64;

pub(super) const RESULTS: &str = "results";
pub(super) const KEY_STATES: &str = "key_states";
const KEY_COUNTERS: &str = "key_counters";
const RESULTS_BY_TIME: &str = "results_by_time";
pub(super) const KEY_BUDGETS: &str = "key_budgets";
const OLD_RESPONSE_CACHE: &str = "response_cache";
const USAGE_HOURLY: &str = "usage_hourly";
const SPEND_HOURLY: &str = "spend_hourly";
const SPEND_BUDGETS: &str = "spend_budgets";
const META: &str = "meta";
const BATCH_JOBS: &str = "batch_jobs";
const BATCH_COUNTS: &str = "batch_counts";
const BATCH_META: &str = "batch_meta";
const CANCELLED: &str = "cancelled";
/// Written by [`Store::recover`](super::Store::recover) to check that writes
/// go through again.
pub(super) const WRITE_PROBE: &str = "_write_probe";
/// Marks a store whose results were all written keyed by pool and id.
const KEYED_BY_POOL: &str = "_results_keyed_by_pool";

/// One sled `Tree` per table, and the committer of their database. sled
/// refuses every write after an I/O error (ENOSPC) until it is reopened, so
/// the whole set is replaced when the store recovers.
pub(super) struct Tables {
    pub(super) results: sled::Tree,
    pub(super) key_states: sled::Tree,
    pub(super) key_counters: sled::Tree,
    /// Index: completion time (ns since the epoch, big-endian) ++ job id → ().
    /// Ordered by time, so history is a range scan, newest first in reverse.
    pub(super) results_by_time: sled::Tree,
    pub(super) key_budgets: sled::Tree,
    /// `pool/key/YYYY-MM-DDTHH/field` → u64 (merged): per key and hour.
    pub(super) usage_hourly: sled::Tree,
    /// `hour␟pool␟key␟model␟user␟field` → u64 (merged): spend per hour.
    pub(super) spend_hourly: sled::Tree,
    /// `scope␟name` → a budget set through the admin API (JSON).
    pub(super) spend_budgets: sled::Tree,
    /// Facts about the store itself (its id).
    pub(super) meta: sled::Tree,
    /// `batch␟id` → `q` (seen) or `d` (done): each job of a batch once.
    pub(super) batch_jobs: sled::Tree,
    /// `batch␟field` → u64 (merged): a batch's counters.
    pub(super) batch_counts: sled::Tree,
    /// `batch` → its meta (JSON).
    pub(super) batch_meta: sled::Tree,
    /// `job␟id` or `batch␟name` → when it was cancelled.
    pub(super) cancelled: sled::Tree,
    pub(super) commit: GroupCommit,
}

impl Tables {
    pub(super) fn open(path: &Path, cache_bytes: u64) -> Result<Tables, StoreError> {
        let db = open_db(path, cache_bytes)?;
        let key_counters = db.open_tree(KEY_COUNTERS)?;
        key_counters.set_merge_operator(add_u64);
        let usage_hourly = db.open_tree(USAGE_HOURLY)?;
        // The response cache's tree of earlier versions; the index is in memory now.
        db.drop_tree(OLD_RESPONSE_CACHE)?;
        usage_hourly.set_merge_operator(add_u64);
        let spend_hourly = db.open_tree(SPEND_HOURLY)?;
        spend_hourly.set_merge_operator(add_u64);
        let batch_counts = db.open_tree(BATCH_COUNTS)?;
        batch_counts.set_merge_operator(add_u64);
        Ok(Tables {
            results: db.open_tree(RESULTS)?,
            key_states: db.open_tree(KEY_STATES)?,
            key_counters,
            results_by_time: db.open_tree(RESULTS_BY_TIME)?,
            key_budgets: db.open_tree(KEY_BUDGETS)?,
            usage_hourly,
            spend_hourly,
            spend_budgets: db.open_tree(SPEND_BUDGETS)?,
            meta: db.open_tree(META)?,
            batch_jobs: db.open_tree(BATCH_JOBS)?,
            batch_counts,
            batch_meta: db.open_tree(BATCH_META)?,
            cancelled: db.open_tree(CANCELLED)?,
            // keyrelay flushes sled only through the committer (see `flush`).
            commit: GroupCommit::spawn(db),
        })
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

/// Whether `tables` may hold results under bare job ids. A store that had no
/// result when this keyrelay first opened it is marked as keyed by pool from
/// the start, and never needs the second lookup.
pub(super) fn may_hold_legacy_ids(tables: &Tables) -> Result<bool, StoreError> {
    if tables.key_states.contains_key(KEYED_BY_POOL)? {
        return Ok(false);
    }
    if tables.results.first()?.is_none() {
        tables.key_states.insert(KEYED_BY_POOL, b"1".as_slice())?;
        return Ok(false);
    }
    Ok(true)
}
