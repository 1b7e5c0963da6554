//! Results answered while the store could not write them (a full disk): kept
//! in memory so a redelivery of the job is answered from here instead of
//! paying the provider again, and written by `Store::recover` once the store
//! writes again. Bounded by what was in flight when writes began to fail:
//! keyrelay takes no new jobs while the store cannot write. Memory only: what
//! is still here at exit is lost (logged by id at shutdown).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::layout::record_key;
use crate::job::JobResult;

#[derive(Debug, Default)]
pub(crate) struct Unsaved {
    by_id: Mutex<HashMap<String, (JobResult, Vec<u8>)>>,
    /// Whether anything is kept: every job's lookup checks this, not the lock.
    any: AtomicBool,
}

impl Unsaved {
    /// Keep `result` (serialized as `encoded`) until the store recovers.
    pub(crate) fn keep(&self, result: &JobResult, encoded: &[u8]) {
        let record = record_key(&result.pool, &result.id);
        let mut by_record = self.lock();
        by_record.insert(record, (result.clone(), encoded.to_vec()));
        self.any.store(true, Ordering::Release);
    }

    /// The result kept under `record` (a record key).
    pub(crate) fn get(&self, record: &str) -> Option<JobResult> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let by_record = self.lock();
        by_record.get(record).map(|(result, _)| result.clone())
    }

    pub(crate) fn all(&self) -> Vec<(JobResult, Vec<u8>)> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn remove(&self, record: &str) {
        let mut by_record = self.lock();
        by_record.remove(record);
        self.any.store(!by_record.is_empty(), Ordering::Release);
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// The job ids kept (for the log line at exit).
    pub(crate) fn ids(&self) -> Vec<String> {
        self.lock().values().map(|(r, _)| r.id.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (JobResult, Vec<u8>)>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}
