//! How many jobs of each batch this process holds right now: a batch's
//! `running` jobs, summed over the fleet by the admin API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Jobs of each batch this process holds right now (between delivery and
/// settlement): a batch's `running` jobs, summed over the fleet.
#[derive(Default)]
pub struct RunningBatches(Mutex<HashMap<String, u64>>);

impl RunningBatches {
    /// Count a job of `batch` as running until the guard drops.
    pub fn enter(self: &Arc<Self>, batch: &str) -> RunningGuard {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(batch.to_owned())
            .or_default() += 1;
        RunningGuard {
            batches: self.clone(),
            batch: batch.to_owned(),
        }
    }

    /// Jobs of `batch` running here now.
    pub fn of(&self, batch: &str) -> u64 {
        let running = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        running.get(batch).copied().unwrap_or(0)
    }
}

/// A running job of a batch; dropping it ends it.
pub struct RunningGuard {
    batches: Arc<RunningBatches>,
    batch: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut running = self
            .batches
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = running.get_mut(&self.batch) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.batch);
            }
        }
    }
}
