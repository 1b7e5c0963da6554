//! Whether the store can write right now: set by the last durable write that
//! failed, cleared by the next one that succeeds. `/readyz` and the
//! consumers' gate read it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub(crate) struct WriteHealth {
    /// Fast path for the common case: a successful write checks one atomic.
    failing: AtomicBool,
    error: Mutex<Option<String>>,
    /// `true` while writable: the supervisor pauses consumers on `false`.
    writable: tokio::sync::watch::Sender<bool>,
}

impl Default for WriteHealth {
    fn default() -> Self {
        WriteHealth {
            failing: AtomicBool::new(false),
            error: Mutex::new(None),
            writable: tokio::sync::watch::Sender::new(true),
        }
    }
}

impl WriteHealth {
    /// A durable write failed with `error`. True when the store was healthy
    /// until now (the caller logs the change once).
    pub(crate) fn failed(&self, error: &str) -> bool {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_owned());
        let changed = !self.failing.swap(true, Ordering::AcqRel);
        if changed {
            self.writable.send_replace(false);
        }
        changed
    }

    /// A durable write succeeded. True when the store was failing until now.
    pub(crate) fn succeeded(&self) -> bool {
        if !self.failing.load(Ordering::Acquire) {
            return false;
        }
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let changed = self.failing.swap(false, Ordering::AcqRel);
        if changed {
            self.writable.send_replace(true);
        }
        changed
    }

    /// `true` while writable, `false` while failing.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.writable.subscribe()
    }

    /// Why the store cannot write, while it cannot.
    pub(crate) fn error(&self) -> Option<String> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_holds_until_a_success() {
        let health = WriteHealth::default();
        assert_eq!(health.error(), None);
        assert!(!health.succeeded(), "healthy to healthy is no change");
        assert!(health.failed("No space left on device"));
        assert!(!health.failed("No space left on device"), "logged once");
        assert_eq!(health.error().as_deref(), Some("No space left on device"));
        assert!(health.succeeded());
        assert_eq!(health.error(), None);
    }
}
