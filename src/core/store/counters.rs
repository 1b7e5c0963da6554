//! Per-key lifetime counters (`completed`, `succeeded`, one per error kind).
//!
//! Every job bumps two of them, so they are summed in memory and merged into
//! sled once a second ([`Store::flush_counters`], also run at shutdown) rather
//! than written per job: two sled merges cost more than the job's result
//! write. Reads add what is not written yet. A crash loses at most the last
//! second of counts; they are statistics, the stored results are the record.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{Store, StoreError, decode_u64};

/// Counts not yet merged into sled: `pool/key` → counter name → count.
#[derive(Default)]
pub(super) struct PendingCounters(Mutex<HashMap<String, HashMap<&'static str, u64>>>);

impl PendingCounters {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<&'static str, u64>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store {
    /// Add one to the counter `name` of `key` (`pool/key`).
    pub fn bump(&self, key: &str, name: &'static str) {
        let mut pending = self.pending_counters.lock();
        let counts = match pending.get_mut(key) {
            Some(counts) => counts,
            None => pending.entry(key.to_owned()).or_default(),
        };
        *counts.entry(name).or_default() += 1;
    }

    /// Every counter of `key` (`pool/key`), by name, unwritten counts included.
    pub fn counters(&self, key: &str) -> Result<Vec<(String, u64)>, StoreError> {
        // Held while reading sled, so a flush cannot move counts in between.
        let pending = self.pending_counters.lock();
        let prefix = format!("{key}/");
        let mut counts: Vec<(String, u64)> = Vec::new();
        for entry in self.tables()?.key_counters.scan_prefix(prefix.as_bytes()) {
            let (k, v) = entry?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            counts.push((name, decode_u64(&v).unwrap_or(0)));
        }
        for (name, n) in pending.get(key).into_iter().flatten() {
            match counts.iter_mut().find(|(c, _)| c == name) {
                Some((_, count)) => *count += n,
                None => counts.push(((*name).to_owned(), *n)),
            }
        }
        Ok(counts)
    }

    /// Merge the counts summed since the last flush into sled.
    /// Counts that fail to merge stay pending for the next flush.
    pub fn flush_counters(&self) -> Result<(), StoreError> {
        let tables = self.tables()?;
        let mut pending = self.pending_counters.lock();
        let mut first_error = None;
        for (key, counts) in pending.iter_mut() {
            counts.retain(|name, n| {
                let id = format!("{key}/{name}");
                match tables.key_counters.merge(id.as_bytes(), n.to_be_bytes()) {
                    Ok(_) => false,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        true
                    }
                }
            });
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Remove every counter of `key` (`pool/key`); the admin API's reset.
    pub fn reset_counters(&self, key: &str) -> Result<(), StoreError> {
        let mut pending = self.pending_counters.lock();
        pending.remove(key);
        let prefix = format!("{key}/");
        for entry in self.tables()?.key_counters.scan_prefix(prefix.as_bytes()) {
            let (k, _) = entry?;
            self.tables()?.key_counters.remove(k)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut counts: Vec<(String, u64)>) -> Vec<(String, u64)> {
        counts.sort();
        counts
    }

    #[tokio::test]
    async fn counts_read_the_same_before_and_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        store.bump("p/a", "completed");
        store.bump("p/a", "completed");
        store.bump("p/a", "succeeded");
        let expected = vec![("completed".to_owned(), 2), ("succeeded".to_owned(), 1)];
        assert_eq!(sorted(store.counters("p/a").unwrap()), expected);
        store.flush_counters().unwrap();
        assert_eq!(sorted(store.counters("p/a").unwrap()), expected);
        store.bump("p/a", "completed");
        assert_eq!(
            sorted(store.counters("p/a").unwrap())[0],
            ("completed".to_owned(), 3)
        );
        store.flush_counters().unwrap();
        assert_eq!(
            sorted(store.counters("p/a").unwrap())[0],
            ("completed".to_owned(), 3)
        );
    }

    #[tokio::test]
    async fn counters_survive_a_reopen_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        {
            let store = Store::open(&path).unwrap();
            store.bump("p/a", "completed");
            store.flush().await.unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.counters("p/a").unwrap(),
            vec![("completed".to_owned(), 1)]
        );
    }

    #[tokio::test]
    async fn reset_counters_clears_only_that_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        store.bump("p/a", "completed");
        store.bump("p/ab", "completed");
        store.flush_counters().unwrap();
        store.bump("p/a", "completed");
        store.reset_counters("p/a").unwrap();
        assert!(store.counters("p/a").unwrap().is_empty());
        assert_eq!(store.counters("p/ab").unwrap().len(), 1);
    }
}
