//! Whether the store can write right now: set by the last durable write that
//! failed, cleared by the next one that succeeds. `/readyz` and the
//! consumers' gate read it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct WriteHealth {
    /// Fast path for the common case: a successful write checks one atomic.
    failing: AtomicBool,
    error: Mutex<Option<String>>,
}

impl WriteHealth {
    /// A durable write failed with `error`. True when the store was healthy
    /// until now (the caller logs the change once).
    pub fn failed(&self, error: &str) -> bool {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_owned());
        !self.failing.swap(true, Ordering::AcqRel)
    }

    /// A durable write succeeded. True when the store was failing until now.
    pub fn succeeded(&self) -> bool {
        if !self.failing.load(Ordering::Acquire) {
            return false;
        }
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.failing.swap(false, Ordering::AcqRel)
    }

    /// Why the store cannot write, while it cannot.
    pub fn error(&self) -> Option<String> {
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
