//! Whether this process may start calls with the keys it leases right now.
//!
//! A key's lease is an exclusive queue on this process's broker connection:
//! the broker deletes it, and another instance can take the key, once it
//! stops hearing from this process (about one heartbeat interval after the
//! last frame). So calls may start only while a round trip to the broker
//! succeeded recently: the lease keeper extends the gate after each one, by
//! half the heartbeat interval from when the round trip was sent. Cut off
//! from the broker, this process stops starting calls before the broker can
//! give its keys to anyone else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The freshness of this process's leases, and the fleet's wake-up call.
pub struct LeaseGate {
    base: Instant,
    /// Nanoseconds after `base` until which calls may start; 0: none.
    open_until: AtomicU64,
    /// Rung when a key ran out of its fleet allowance: the lease keeper
    /// publishes a snapshot and grants the next one now, not at its next tick.
    allowance_wanted: Notify,
}

impl Default for LeaseGate {
    fn default() -> Self {
        LeaseGate {
            base: Instant::now(),
            open_until: AtomicU64::new(0),
            allowance_wanted: Notify::new(),
        }
    }
}

impl LeaseGate {
    /// Whether a call may start now.
    pub fn is_open(&self) -> bool {
        let now = self.nanos(Instant::now());
        now < self.open_until.load(Ordering::Acquire)
    }

    /// A round trip sent at `sent` succeeded: calls may start until
    /// `sent + validity` (never moves the deadline back).
    pub fn extend(&self, sent: Instant, validity: Duration) {
        let until = self.nanos(sent + validity);
        self.open_until.fetch_max(until, Ordering::AcqRel);
    }

    /// The leases are gone (connection lost): no call starts from now on.
    pub fn close(&self) {
        self.open_until.store(0, Ordering::Release);
    }

    /// A key needs a new fleet allowance.
    pub fn want_allowance(&self) {
        self.allowance_wanted.notify_one();
    }

    /// Resolves when some key wants a new allowance.
    pub async fn allowance_wanted(&self) {
        self.allowance_wanted.notified().await
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_for_the_validity_of_a_round_trip_and_closes_at_once() {
        let gate = LeaseGate::default();
        assert!(!gate.is_open(), "closed until a round trip succeeded");
        gate.extend(Instant::now(), Duration::from_secs(60));
        assert!(gate.is_open());
        // An older round trip does not shorten it.
        gate.extend(
            Instant::now() - Duration::from_secs(59),
            Duration::from_secs(1),
        );
        assert!(gate.is_open());
        gate.close();
        assert!(!gate.is_open());
        gate.extend(
            Instant::now() - Duration::from_secs(2),
            Duration::from_secs(1),
        );
        assert!(
            !gate.is_open(),
            "a round trip older than its validity opens nothing"
        );
    }
}
