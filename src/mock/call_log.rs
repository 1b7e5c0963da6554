//! Every request's key, caller and time span, when asked for
//! (`MockSettings::record_calls`): lets a test prove that no key was used by
//! two keyrelay instances at once. Callers are told apart by the User-Agent
//! keyrelay sends (`keyrelay/VERSION (instance NAME)`).

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;

/// One request as the mock saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    /// The key's label (`unknown` for a missing or unknown key).
    pub key: String,
    /// The request's User-Agent.
    pub caller: String,
    /// Microseconds since the mock started, when the request arrived.
    pub start_us: u64,
    /// Microseconds since the mock started, when the answer was ready to go.
    pub end_us: u64,
}

/// The log; empty and free when recording is off.
pub(crate) struct CallLog {
    enabled: bool,
    origin: Instant,
    calls: Mutex<Vec<CallRecord>>,
}

impl CallLog {
    pub fn new(enabled: bool) -> CallLog {
        CallLog {
            enabled,
            origin: Instant::now(),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Record a request that arrived at `start` and is answered now.
    pub fn record(&self, key: &str, caller: &str, start: Instant) {
        if !self.enabled {
            return;
        }
        let micros = |at: Instant| at.saturating_duration_since(self.origin).as_micros() as u64;
        let record = CallRecord {
            key: key.to_owned(),
            caller: caller.to_owned(),
            start_us: micros(start),
            end_us: micros(Instant::now()),
        };
        self.lock().push(record);
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().clone()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CallRecord>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
