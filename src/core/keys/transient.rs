//! Transient failures (5xx, 529, timeouts) do not blame a key for one event;
//! repeated ones within a minute rest it for a short, growing cooldown.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::Timestamp;

/// Failures within this window count together.
const WINDOW: Duration = Duration::from_secs(60);
/// Failures in the window that put a key to rest.
const THRESHOLD: usize = 3;
const FIRST_COOLDOWN: Duration = Duration::from_secs(5);
const MAX_COOLDOWN: Duration = Duration::from_secs(300);

/// One key's recent transient failures and how long its next rest is.
#[derive(Debug, Default, Clone)]
pub struct TransientTracker {
    recent: VecDeque<Timestamp>,
    /// Cooldowns in a row without a success in between.
    level: u32,
}

impl TransientTracker {
    /// Record a failure at `now`; returns a cooldown when the key should rest.
    pub fn failure(&mut self, now: Timestamp) -> Option<Duration> {
        let cutoff = now
            .checked_sub(jiff::SignedDuration::from_secs(WINDOW.as_secs() as i64))
            .unwrap_or(Timestamp::MIN);
        while self.recent.front().is_some_and(|t| *t <= cutoff) {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        if self.recent.len() < THRESHOLD {
            return None;
        }
        self.recent.clear();
        let cooldown = FIRST_COOLDOWN
            .saturating_mul(1 << self.level.min(10))
            .min(MAX_COOLDOWN);
        self.level += 1;
        Some(cooldown)
    }

    /// A success forgives everything.
    pub fn success(&mut self) {
        self.recent.clear();
        self.level = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn one_failure_is_not_blamed_repeated_ones_grow_a_cooldown() {
        let mut tr = TransientTracker::default();
        assert_eq!(tr.failure(t(0)), None);
        assert_eq!(tr.failure(t(1)), None);
        assert_eq!(tr.failure(t(2)), Some(Duration::from_secs(5)));
        for s in 3..5 {
            assert_eq!(tr.failure(t(s)), None);
        }
        assert_eq!(tr.failure(t(5)), Some(Duration::from_secs(10)));
        tr.success();
        tr.failure(t(6));
        tr.failure(t(7));
        assert_eq!(
            tr.failure(t(8)),
            Some(Duration::from_secs(5)),
            "a success resets the growth"
        );
    }

    #[test]
    fn failures_far_apart_never_add_up() {
        let mut tr = TransientTracker::default();
        for i in 0..20 {
            assert_eq!(tr.failure(t(i * 61)), None);
        }
    }

    #[test]
    fn cooldown_is_capped() {
        let mut tr = TransientTracker::default();
        let mut last = None;
        for i in 0..60 {
            if let Some(c) = tr.failure(t(i)) {
                last = Some(c);
            }
        }
        assert_eq!(last, Some(MAX_COOLDOWN));
    }
}
