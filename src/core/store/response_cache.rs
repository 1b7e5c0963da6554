//! The response cache: which stored result answers a request, by the
//! request's [`CacheKey`].
//!
//! The answers themselves are the results in sled. The index is in memory:
//! a sled tree keyed by request hash cost two random-key sled operations per
//! job (a lookup that misses and an insert), about 6 % of keyrelay's CPU when
//! prompts are unique. The key is stored instead as the value of the result's
//! `results_by_time` entry, written anyway, so the index is rebuilt from sled
//! at start-up
//! ([`Store::load_response_cache`](super::Store::load_response_cache)) and
//! survives restarts.
//!
//! The index holds at most `max_entries` answers (oldest dropped first) and
//! none older than the TTL.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;

use super::error::StoreError;
use super::layout::{record_key, split_time_key, time_key};
use crate::job::{CacheKey, JobResult};

/// Cached answers by request, oldest first in `order`.
#[derive(Default)]
pub(super) struct CacheIndex(Mutex<Entries>);

#[derive(Default)]
struct Entries {
    by_key: HashMap<CacheKey, Entry>,
    /// Insertion order (= completion order) for dropping the oldest.
    order: VecDeque<(CacheKey, Timestamp)>,
    max_entries: usize,
    ttl: Duration,
}

struct Entry {
    stored_at: Timestamp,
    result_id: String,
}

impl Entries {
    fn insert(&mut self, key: CacheKey, result_id: &str, stored_at: Timestamp) {
        if self.max_entries == 0 {
            return;
        }
        let entry = Entry {
            stored_at,
            result_id: result_id.to_owned(),
        };
        self.by_key.insert(key, entry);
        self.order.push_back((key, stored_at));
        while self.order.len() > self.max_entries {
            self.pop_oldest();
        }
    }

    /// Drop the oldest entry, unless a newer answer replaced it since.
    fn pop_oldest(&mut self) {
        if let Some((key, at)) = self.order.pop_front()
            && self.by_key.get(&key).is_some_and(|e| e.stored_at == at)
        {
            self.by_key.remove(&key);
        }
    }

    fn expired(&self, stored_at: Timestamp, now: Timestamp) -> bool {
        let age = now.duration_since(stored_at);
        age.is_positive() && age.unsigned_abs() > self.ttl
    }

    fn prune(&mut self, now: Timestamp) -> usize {
        let before = self.by_key.len();
        while let Some(&(_, at)) = self.order.front() {
            if !self.expired(at, now) {
                break;
            }
            self.pop_oldest();
        }
        before - self.by_key.len()
    }
}

impl CacheIndex {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Turn the cache on: answers younger than `ttl`, at most `max_entries`,
    /// rebuilt from the `results_by_time` index (whose values are the cache
    /// keys). Returns how many were loaded.
    pub(super) fn load(
        &self,
        results_by_time: &sled::Tree,
        ttl: Duration,
        max_entries: usize,
    ) -> Result<usize, StoreError> {
        let mut entries = self.lock();
        *entries = Entries {
            max_entries,
            ttl,
            ..Entries::default()
        };
        if ttl.is_zero() || max_entries == 0 {
            return Ok(0);
        }
        let since = Timestamp::now()
            .checked_sub(jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        for item in results_by_time.range(time_key(since, "")..) {
            let (index_entry, value) = item?;
            if let (Ok(key), Some((at, id))) = (
                CacheKey::try_from(value.as_ref()),
                split_time_key(&index_entry),
            ) {
                entries.insert(key, id, at);
            }
        }
        Ok(entries.by_key.len())
    }

    /// The record key of the stored result answering request `key`, if it is
    /// still cached (not past the TTL, not dropped for newer answers).
    pub(super) fn answer(&self, key: &CacheKey) -> Option<String> {
        let entries = self.lock();
        match entries.by_key.get(key) {
            Some(e) if !entries.expired(e.stored_at, Timestamp::now()) => Some(e.result_id.clone()),
            _ => None,
        }
    }

    /// Index a result that was just made durable as the answer to `key`.
    pub(super) fn index(&self, key: CacheKey, result: &JobResult) {
        let record = record_key(&result.pool, &result.id);
        self.lock().insert(key, &record, result.completed_at);
    }

    /// Drop cached answers past the TTL; returns how many.
    pub(super) fn prune(&self) -> usize {
        self.lock().prune(Timestamp::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(max_entries: usize, ttl_secs: u64) -> Entries {
        Entries {
            max_entries,
            ttl: Duration::from_secs(ttl_secs),
            ..Entries::default()
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn the_oldest_answers_go_first_when_full() {
        let mut e = entries(2, 3600);
        e.insert([1; 16], "a", at(10));
        e.insert([2; 16], "b", at(11));
        e.insert([3; 16], "c", at(12));
        assert!(!e.by_key.contains_key(&[1; 16]));
        assert_eq!(e.by_key.len(), 2);
    }

    #[test]
    fn a_newer_answer_for_the_same_request_survives_its_old_slot() {
        let mut e = entries(2, 3600);
        e.insert([1; 16], "old", at(10));
        e.insert([1; 16], "new", at(11));
        e.insert([2; 16], "b", at(12));
        // The first slot ("old") is dropped; the newer answer stays.
        assert_eq!(e.by_key[&[1; 16]].result_id, "new");
        assert_eq!(e.by_key.len(), 2);
    }

    #[test]
    fn prune_drops_only_expired_answers() {
        let mut e = entries(10, 60);
        e.insert([1; 16], "a", at(1_000));
        e.insert([2; 16], "b", at(1_050));
        assert_eq!(e.prune(at(1_070)), 1);
        assert!(e.by_key.contains_key(&[2; 16]));
        // A clock that stepped back does not expire fresh answers.
        assert!(!e.expired(at(1_100), at(1_070)));
    }

    #[test]
    fn a_zero_sized_cache_holds_nothing() {
        let mut e = entries(0, 60);
        e.insert([1; 16], "a", at(1_000));
        assert!(e.by_key.is_empty());
    }
}
