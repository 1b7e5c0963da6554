//! A budget that changes hands between instances of a fleet.
//!
//! The owner of a key publishes snapshots of its budget; the next owner starts
//! from the last one. Calls made after a snapshot are invisible to it, so the
//! owner may only make calls an [`Allowance`] in a published (confirmed)
//! snapshot covers. An owner that dies without handing over leaves its
//! allowance behind, and the next owner counts all of it as spent: the fleet
//! never exceeds a key's limits, and a crash costs at most one allowance.

use jiff::Timestamp;

use super::{Admitted, Allowance, Blocked, Budget, Headroom, Limits, Spent};

/// The `limit` of a [`Blocked`] that only waits for the next snapshot: the
/// key's own limits still have room.
pub(super) const FLEET_ALLOWANCE: &str = "fleet allowance";

impl Blocked {
    /// Whether only the fleet allowance stopped the call (a new one is
    /// normally granted within milliseconds; the key needs no parking).
    pub fn is_fleet_allowance(&self) -> bool {
        self.limit == FLEET_ALLOWANCE
    }
}

impl Budget {
    /// What the limits still allow at `now`.
    pub fn headroom(
        &mut self,
        limits: &Limits,
        window: std::time::Duration,
        now: Timestamp,
        next_reset: impl Fn(Timestamp) -> Timestamp,
    ) -> Headroom {
        self.roll(window, now, &next_reset);
        let in_window = self.recent.len() as u64;
        let window_tokens: u64 = self.recent.iter().map(|e| e.2).sum();
        let calls = [
            limits
                .rpm
                .map(|l| u64::from(l.max(1)).saturating_sub(in_window)),
            limits
                .rpd
                .map(|l| u64::from(l).saturating_sub(u64::from(self.day_requests))),
        ];
        let tokens = [
            limits.tpm.map(|l| l.saturating_sub(window_tokens)),
            limits.tpd.map(|l| l.saturating_sub(self.day_tokens)),
        ];
        Headroom {
            calls: calls.into_iter().flatten().min(),
            tokens: tokens.into_iter().flatten().min(),
        }
    }

    /// Calls and tokens admitted so far (to size and date an allowance).
    pub fn admitted(&self) -> Admitted {
        self.admitted
    }

    /// Start enforcing an allowance granted by a snapshot taken when
    /// `admitted_then` had been admitted: what was admitted since counts
    /// against it already.
    pub fn grant(&mut self, allowance: Allowance, admitted_then: Admitted) {
        let since_calls = self.admitted.calls.saturating_sub(admitted_then.calls);
        let since_tokens = self.admitted.tokens.saturating_sub(admitted_then.tokens);
        self.allowance = Some(Allowance {
            calls: allowance.calls.saturating_sub(since_calls),
            tokens: allowance.tokens.saturating_sub(since_tokens),
        });
    }

    /// Stop enforcing an allowance (the key left the fleet's rules: the
    /// process drives it alone, or no longer at all).
    pub fn revoke_allowance(&mut self) {
        self.allowance = None;
    }

    /// What is left of the current allowance (`None`: not enforced).
    pub fn allowance_left(&self) -> Option<Allowance> {
        self.allowance
    }

    /// Count calls someone else may have made (a previous owner that did not
    /// hand over) as made at `at`, in the window and in the day.
    pub fn assume_spent(
        &mut self,
        spent: Allowance,
        window: std::time::Duration,
        at: Timestamp,
        next_reset: impl Fn(Timestamp) -> Timestamp,
    ) {
        // The snapshot may be from an earlier day: start from today's counts.
        self.roll(window, at, &next_reset);
        let per_call = spent.tokens.checked_div(spent.calls).unwrap_or(0);
        let mut tokens_left = spent.tokens;
        for i in 0..spent.calls {
            let tokens = if i + 1 == spent.calls {
                tokens_left
            } else {
                per_call
            };
            tokens_left -= tokens;
            let seq = self.next_seq;
            self.next_seq += 1;
            self.recent.push_back((seq, at, tokens));
        }
        if spent.calls == 0 && spent.tokens > 0 {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.recent.push_back((seq, at, spent.tokens));
        }
        // Keep the window ordered by time: phantom calls sit at `at`.
        self.recent
            .make_contiguous()
            .sort_by_key(|(seq, time, _)| (*time, *seq));
        self.day_requests = self
            .day_requests
            .saturating_add(u32::try_from(spent.calls).unwrap_or(u32::MAX));
        self.day_tokens = self.day_tokens.saturating_add(spent.tokens);
    }

    /// Take one call of `tokens` from the allowance, if one is enforced.
    pub(super) fn take_allowance(&mut self, now: Timestamp, tokens: u64) -> Result<(), Blocked> {
        if let Some(allowance) = &mut self.allowance {
            // The whole estimate must be covered: a crash leaves the next
            // owner only the allowance to count. (The lease keeper grants at
            // least what a waiting call needs.)
            if allowance.calls == 0 || allowance.tokens < tokens {
                return Err(Blocked {
                    // A new snapshot is normally confirmed within milliseconds.
                    until: now
                        .checked_add(jiff::SignedDuration::from_millis(100))
                        .unwrap_or(Timestamp::MAX),
                    spent: Spent::Window,
                    limit: FLEET_ALLOWANCE,
                });
            }
            allowance.calls -= 1;
            allowance.tokens -= tokens;
        }
        self.admitted.calls += 1;
        self.admitted.tokens = self.admitted.tokens.saturating_add(tokens);
        Ok(())
    }
}
