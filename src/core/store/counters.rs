//! Per-key lifetime counters (`completed`, `succeeded`, one per error kind).
//!
//! Every job bumps two of them, so they are summed in memory and merged into
//! sled once a second
//! ([`Store::flush_counters`](super::Store::flush_counters), also run at
//! shutdown) rather than written per job: two sled merges cost more than the
//! job's result write. Reads add what is not written yet. A crash loses at most the last
//! second of counts; they are statistics, the stored results are the record.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::error::StoreError;
use super::layout::decode_u64;

/// Counts not yet merged into sled: `pool/key` → counter name → count.
#[derive(Default)]
pub(super) struct PendingCounters(Mutex<HashMap<String, HashMap<&'static str, u64>>>);

impl PendingCounters {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<&'static str, u64>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add one to the counter `name` of `key` (`pool/key`).
    pub(super) fn bump(&self, key: &str, name: &'static str) {
        let mut pending = self.lock();
        let counts = match pending.get_mut(key) {
            Some(counts) => counts,
            None => pending.entry(key.to_owned()).or_default(),
        };
        *counts.entry(name).or_default() += 1;
    }

    /// Every counter of `key` (`pool/key`) in `tree`, by name, unwritten
    /// counts included.
    pub(super) fn read(
        &self,
        tree: &sled::Tree,
        key: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        // Held while reading sled, so a flush cannot move counts in between.
        let pending = self.lock();
        let prefix = format!("{key}/");
        let mut counts: Vec<(String, u64)> = Vec::new();
        for entry in tree.scan_prefix(prefix.as_bytes()) {
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

    /// Merge the counts summed since the last flush into `tree`.
    /// Counts that fail to merge stay pending for the next flush.
    pub(super) fn flush(&self, tree: &sled::Tree) -> Result<(), StoreError> {
        let mut pending = self.lock();
        let mut first_error = None;
        for (key, counts) in pending.iter_mut() {
            counts.retain(|name, n| {
                let id = format!("{key}/{name}");
                match tree.merge(id.as_bytes(), n.to_be_bytes()) {
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

    /// Remove every counter of `key` (`pool/key`), pending and in `tree`.
    pub(super) fn reset(&self, tree: &sled::Tree, key: &str) -> Result<(), StoreError> {
        let mut pending = self.lock();
        pending.remove(key);
        let prefix = format!("{key}/");
        for entry in tree.scan_prefix(prefix.as_bytes()) {
            let (k, _) = entry?;
            tree.remove(k)?;
        }
        Ok(())
    }
}
