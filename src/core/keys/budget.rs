//! A key's declared limits, enforced before each call: at most `rpm` requests
//! and `tpm` tokens in ANY window of `window` (60 s for real providers), and
//! `rpd`/`tpd` per provider day.
//!
//! Sliding windows, not token buckets: a backlog gets the whole burst at once
//! (no smoothing to rpm/60 per second), and no 60-second window ever holds
//! more than the limit, which also satisfies providers that enforce token
//! buckets or calendar minutes. Pure: the caller passes `now`.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Declared limits of one key (all optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Requests in any window (`rate_window_secs`, 60 s for real providers).
    pub rpm: Option<u32>,
    /// Tokens in any window (estimated before a call, corrected after).
    pub tpm: Option<u64>,
    /// Requests per provider day.
    pub rpd: Option<u32>,
    /// Tokens per provider day.
    pub tpd: Option<u64>,
}

impl Limits {
    /// Whether no limit is declared at all.
    pub fn is_unlimited(&self) -> bool {
        *self == Limits::default()
    }
}

/// Which limit stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// A per-window limit (rpm, tpm, or a limit learned from response headers):
    /// budget returns at `until`.
    Window,
    /// A per-day limit (rpd, tpd): budget returns at the next reset.
    Day,
}

/// Why a call may not go now, and when it may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// When the spent budget returns (the window slides past, or the day resets).
    pub until: Timestamp,
    /// Whether a window limit or a daily one stopped the call.
    pub spent: Spent,
    /// Which limit: `rpm`, `tpm`, `rpd`, `tpd` or `provider headers`.
    pub limit: &'static str,
}

/// What a key has used of its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Requests in the current window.
    pub window_requests: u64,
    /// Tokens in the current window.
    pub window_tokens: u64,
    /// Requests since the quota day began.
    pub day_requests: u64,
    /// Tokens since the quota day began.
    pub day_tokens: u64,
    /// When the current quota day ends.
    pub day_ends: Timestamp,
}

impl Usage {
    /// The largest share (0.0-1.0+) of a daily limit used, if one is declared.
    pub fn daily_share(&self, limits: &Limits) -> Option<f64> {
        let requests = limits
            .rpd
            .map(|l| self.day_requests as f64 / f64::from(l.max(1)));
        let tokens = limits.tpd.map(|l| self.day_tokens as f64 / l.max(1) as f64);
        match (requests, tokens) {
            (Some(r), Some(t)) => Some(r.max(t)),
            (r, t) => r.or(t),
        }
    }
}

/// Proof of one admitted call, to correct its token count afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    seq: u64,
    estimated: u64,
}

/// Usage of one key in its current windows. Serializable, so restarts keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// (sequence, time, tokens) of every call in the current window.
    recent: VecDeque<(u64, Timestamp, u64)>,
    next_seq: u64,
    /// The current provider day ends (resets) at this instant.
    day_ends: Timestamp,
    day_requests: u32,
    day_tokens: u64,
    /// Learned from response headers: no calls before this instant.
    learned_until: Option<Timestamp>,
    /// In a fleet: what this owner may still admit beyond its last published
    /// snapshot (see [`Allowance`]); `None` outside a fleet or without limits.
    #[serde(skip)]
    allowance: Option<Allowance>,
    /// Calls and tokens admitted since this budget was created (never reset):
    /// how far past a snapshot the owner has gone.
    #[serde(default)]
    admitted: Admitted,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            recent: VecDeque::new(),
            next_seq: 0,
            day_ends: Timestamp::UNIX_EPOCH,
            day_requests: 0,
            day_tokens: 0,
            learned_until: None,
            allowance: None,
            admitted: Admitted::default(),
        }
    }
}

impl Budget {
    /// Admit one call of about `tokens` tokens at `now`, or say when one may go.
    /// `next_reset` gives the end of the provider day containing an instant.
    pub fn try_take(
        &mut self,
        limits: &Limits,
        window: Duration,
        now: Timestamp,
        tokens: u64,
        next_reset: impl Fn(Timestamp) -> Timestamp,
    ) -> Result<Ticket, Blocked> {
        self.roll(window, now, &next_reset);
        if let Some(until) = self.learned_until.filter(|u| *u > now) {
            return Err(Blocked {
                until,
                spent: Spent::Window,
                limit: "provider headers",
            });
        }
        self.check_day(limits, tokens)?;
        self.check_window(limits, window, tokens)?;
        self.take_allowance(now, tokens)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.recent.push_back((seq, now, tokens));
        self.day_requests = self.day_requests.saturating_add(1);
        self.day_tokens = self.day_tokens.saturating_add(tokens);
        Ok(Ticket {
            seq,
            estimated: tokens,
        })
    }

    /// Replace a call's estimate with the provider's reported usage.
    pub fn correct(&mut self, ticket: Ticket, actual: u64) {
        if let Some(entry) = self
            .recent
            .iter_mut()
            .rev()
            .find(|(seq, _, _)| *seq == ticket.seq)
        {
            entry.2 = actual;
        }
        self.day_tokens = self
            .day_tokens
            .saturating_sub(ticket.estimated)
            .saturating_add(actual);
    }

    /// Forget all usage (operator reset). Ticket numbers keep counting, so a
    /// call still in flight cannot correct another call's entry; the fleet
    /// allowance and the admitted counts stay (they describe what was published).
    pub fn reset(&mut self) {
        *self = Budget {
            next_seq: self.next_seq,
            allowance: self.allowance,
            admitted: self.admitted,
            ..Budget::default()
        };
    }

    /// A limit learned from provider headers that still holds at `now`.
    pub fn learned_block(&self, now: Timestamp) -> Option<Blocked> {
        let until = self.learned_until.filter(|u| *u > now)?;
        Some(Blocked {
            until,
            spent: Spent::Window,
            limit: "provider headers",
        })
    }

    /// The provider said no more requests (or tokens) until `until`.
    pub fn learn(&mut self, until: Timestamp) {
        self.learned_until = Some(self.learned_until.map_or(until, |u| u.max(until)));
    }

    /// Calls in the current window and today, as of `now`, for operators.
    pub fn usage(
        &mut self,
        window: Duration,
        now: Timestamp,
        next_reset: impl Fn(Timestamp) -> Timestamp,
    ) -> Usage {
        self.roll(window, now, &next_reset);
        Usage {
            window_requests: self.recent.len() as u64,
            window_tokens: self.recent.iter().map(|e| e.2).sum(),
            day_requests: u64::from(self.day_requests),
            day_tokens: self.day_tokens,
            day_ends: self.day_ends,
        }
    }

    fn roll(
        &mut self,
        window: Duration,
        now: Timestamp,
        next_reset: &impl Fn(Timestamp) -> Timestamp,
    ) {
        let cutoff = now.checked_sub(signed(window)).unwrap_or(Timestamp::MIN);
        while self.recent.front().is_some_and(|(_, at, _)| *at <= cutoff) {
            self.recent.pop_front();
        }
        if now >= self.day_ends {
            self.day_ends = next_reset(now);
            self.day_requests = 0;
            self.day_tokens = 0;
        }
    }

    fn check_day(&self, limits: &Limits, tokens: u64) -> Result<(), Blocked> {
        let blocked = |limit| {
            Err(Blocked {
                until: self.day_ends,
                spent: Spent::Day,
                limit,
            })
        };
        if limits.rpd.is_some_and(|rpd| self.day_requests >= rpd) {
            return blocked("rpd");
        }
        // A call larger than the whole daily budget is not held back (it could
        // never fit, and parking the key for it would stall every other job).
        if let Some(tpd) = limits.tpd
            && tokens <= tpd
            && self.day_tokens.saturating_add(tokens) > tpd
        {
            return blocked("tpd");
        }
        Ok(())
    }

    fn check_window(&self, limits: &Limits, window: Duration, tokens: u64) -> Result<(), Blocked> {
        let frees_at = |index: usize| {
            let (_, at, _) = self.recent[index];
            at.checked_add(signed(window)).unwrap_or(Timestamp::MAX)
        };
        if let Some(rpm) = limits.rpm {
            let rpm = rpm.max(1) as usize;
            if self.recent.len() >= rpm {
                // The call may go once enough of the oldest calls leave the window.
                let until = frees_at(self.recent.len() - rpm);
                return Err(Blocked {
                    until,
                    spent: Spent::Window,
                    limit: "rpm",
                });
            }
        }
        if let Some(tpm) = limits.tpm {
            let used: u64 = self.recent.iter().map(|e| e.2).sum();
            // A call larger than tpm itself is not held back either.
            if tokens <= tpm && used.saturating_add(tokens) > tpm {
                let need = used.saturating_add(tokens).saturating_sub(tpm);
                let mut released = 0u64;
                for (index, (_, _, t)) in self.recent.iter().enumerate() {
                    released = released.saturating_add(*t);
                    if released >= need {
                        return Err(Blocked {
                            until: frees_at(index),
                            spent: Spent::Window,
                            limit: "tpm",
                        });
                    }
                }
                return Err(Blocked {
                    until: frees_at(self.recent.len() - 1),
                    spent: Spent::Window,
                    limit: "tpm",
                });
            }
        }
        Ok(())
    }
}

fn signed(d: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX)
}

// The fleet's part of a budget (allowances, hand-over); the types are here,
// so the child only looks up to this module.
#[path = "budget_handover.rs"]
mod handover;

/// Calls and tokens an owner may admit beyond the snapshot that grants them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    /// Calls.
    pub calls: u64,
    /// Estimated tokens.
    pub tokens: u64,
}

/// Calls and tokens admitted since a budget was created (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    /// Calls.
    pub calls: u64,
    /// Estimated tokens.
    pub tokens: u64,
}

/// What a key's declared limits still allow right now; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    /// Calls before the tightest request limit (rpm, rpd).
    pub calls: Option<u64>,
    /// Tokens before the tightest token limit (tpm, tpd).
    pub tokens: Option<u64>,
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
