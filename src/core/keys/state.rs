//! A key's state machine: active, cooling down, exhausted, disabled.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::provider::Outcome;

/// Where a key stands. Persisted in the store so restarts honour it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KeyState {
    /// In rotation.
    Active,
    /// Rate limited: usable again at `until`.
    CoolingDown {
        /// When the key is usable again.
        until: Timestamp,
        /// The provider's message (or keyrelay's) that put it here.
        reason: String,
    },
    /// Daily quota or spend limit reached: usable again at `until`.
    Exhausted {
        /// When the key is usable again: the provider's date, else the next
        /// quota reset.
        until: Timestamp,
        /// The provider's message (or keyrelay's) that put it here.
        reason: String,
    },
    /// Invalid or revoked: unusable until an operator enables it.
    Disabled {
        /// The provider's message (or the operator's) that put it here.
        reason: String,
    },
}

impl KeyState {
    /// Whether the key may take jobs now (only while active).
    pub fn is_available(&self) -> bool {
        matches!(self, KeyState::Active)
    }

    /// When the key comes back by itself, if it does.
    pub fn until(&self) -> Option<Timestamp> {
        match self {
            KeyState::CoolingDown { until, .. } | KeyState::Exhausted { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// Bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::CoolingDown { .. } => "cooling_down",
            KeyState::Exhausted { .. } => "exhausted",
            KeyState::Disabled { .. } => "disabled",
        }
    }

    /// Every [`KeyState::label`], for series registered up front.
    pub const LABELS: [&'static str; 4] = ["active", "cooling_down", "exhausted", "disabled"];

    /// How far out of rotation the state puts a key.
    fn severity(&self) -> u8 {
        match self {
            KeyState::Active => 0,
            KeyState::CoolingDown { .. } => 1,
            KeyState::Exhausted { .. } => 2,
            KeyState::Disabled { .. } => 3,
        }
    }

    /// Whether an outcome-driven `next` state should replace `self`. Calls in
    /// flight report late: a 429 arriving after the key was found exhausted
    /// or disabled must not shorten that, and concurrent reports of one limit
    /// keep the latest deadline. (Operators' enable/disable bypass this.)
    pub fn is_superseded_by(&self, next: &KeyState) -> bool {
        match self.severity().cmp(&next.severity()) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => match (self.until(), next.until()) {
                (Some(old), Some(new)) => new > old,
                _ => false,
            },
        }
    }

    /// The state as of `now`: a cooldown or exhaustion that has ended is active.
    pub fn as_of(self, now: Timestamp) -> KeyState {
        match self.until() {
            Some(until) if until <= now => KeyState::Active,
            _ => self,
        }
    }
}

/// Longest cooldown a rate limit can impose.
const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);
/// Longest exhaustion (monthly spend limits reset within a month).
const MAX_EXHAUSTION: Duration = Duration::from_secs(32 * 24 * 3600);

/// A pool's rules for taking keys out of rotation.
#[derive(Debug, Clone)]
pub struct ResetPolicy {
    /// Time zone whose midnight resets daily quotas.
    pub timezone: TimeZone,
    /// When set, quota "days" are periods of this length (aligned to the Unix
    /// epoch) instead of calendar days: emulators, tests, custom quotas.
    pub period: Option<Duration>,
    /// Cooldown when a rate limit names no retry delay.
    pub default_cooldown: Duration,
    /// Length of the rpm/tpm window (60 s for real providers).
    pub window: Duration,
}

impl ResetPolicy {
    /// The window the budget enforces: the declared one plus a margin (1/60,
    /// at least 50 ms) so network jitter between our clock and the provider's
    /// cannot squeeze rpm + 1 requests into the provider's window.
    pub fn budget_window(&self) -> Duration {
        self.window + (self.window / 60).max(Duration::from_millis(50))
    }

    /// When the quota day containing `now` ends.
    pub fn next_reset(&self, now: Timestamp) -> Timestamp {
        match self.period {
            Some(period) => next_period_boundary(now, period),
            None => next_daily_reset(now, &self.timezone),
        }
    }
}

/// The next multiple of `period` (since the Unix epoch) after `now`.
pub fn next_period_boundary(now: Timestamp, period: Duration) -> Timestamp {
    let period_ns = i128::try_from(period.as_nanos())
        .unwrap_or(i128::MAX)
        .max(1);
    let now_ns = now.as_nanosecond();
    let next = (now_ns.div_euclid(period_ns) + 1).saturating_mul(period_ns);
    Timestamp::from_nanosecond(next).unwrap_or(Timestamp::MAX)
}

/// The state an outcome puts a key in; `None` leaves the key as it is.
pub fn after_outcome(outcome: &Outcome, now: Timestamp, policy: &ResetPolicy) -> Option<KeyState> {
    match outcome {
        Outcome::RateLimited {
            retry_after,
            message,
        } => {
            // A provider's absurd retry delay must not park a key for years.
            let wait = retry_after
                .unwrap_or(policy.default_cooldown)
                .min(MAX_COOLDOWN);
            Some(KeyState::CoolingDown {
                until: add(now, wait.max(Duration::from_millis(100))),
                reason: message.clone(),
            })
        }
        Outcome::QuotaExhausted { until, message } => Some(KeyState::Exhausted {
            until: until
                .filter(|u| *u > now)
                .unwrap_or_else(|| policy.next_reset(now))
                .min(add(now, MAX_EXHAUSTION)),
            reason: message.clone(),
        }),
        Outcome::Unauthorized { message } => Some(KeyState::Disabled {
            reason: message.clone(),
        }),
        Outcome::Success(_)
        | Outcome::Transient { .. }
        | Outcome::JobFailed(_)
        | Outcome::InvalidResponse { .. } => None,
    }
}

/// The next midnight in `tz` after `now` (DST-aware: a 23- or 25-hour day is
/// still one day).
pub fn next_daily_reset(now: Timestamp, tz: &TimeZone) -> Timestamp {
    let local = now.to_zoned(tz.clone());
    local
        .date()
        .checked_add(1.day())
        .ok()
        .and_then(|tomorrow| tomorrow.to_zoned(tz.clone()).ok())
        .map(|z| z.timestamp())
        // Only at the end of representable time; a day from now is as good.
        .unwrap_or_else(|| add(now, Duration::from_secs(86_400)))
}

fn add(now: Timestamp, wait: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(wait)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Completion, Usage};

    fn policy(tz: &str) -> ResetPolicy {
        ResetPolicy {
            timezone: TimeZone::get(tz).unwrap(),
            period: None,
            default_cooldown: Duration::from_secs(60),
            window: Duration::from_secs(60),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn outcomes_move_keys_as_the_table_says() {
        let now = ts("2026-03-07T12:00:00Z");
        let p = policy("America/Los_Angeles");
        let msg = || "m".to_string();
        let cases: Vec<(Outcome, Option<KeyState>)> = vec![
            (
                Outcome::Success(Completion {
                    text: "x".into(),
                    usage: Usage::default(),
                    limit_until: None,
                    cut_short: false,
                }),
                None,
            ),
            (Outcome::Transient { message: msg() }, None),
            (
                Outcome::job_failed(crate::provider::FailureKind::Blocked, msg()),
                None,
            ),
            (
                Outcome::RateLimited {
                    retry_after: Some(Duration::from_secs(17)),
                    message: msg(),
                },
                Some(KeyState::CoolingDown {
                    until: ts("2026-03-07T12:00:17Z"),
                    reason: msg(),
                }),
            ),
            (
                Outcome::RateLimited {
                    retry_after: None,
                    message: msg(),
                },
                Some(KeyState::CoolingDown {
                    until: ts("2026-03-07T12:01:00Z"),
                    reason: msg(),
                }),
            ),
            (
                // Midnight Pacific on 8 March 2026 is still PST (UTC-8).
                Outcome::QuotaExhausted {
                    until: None,
                    message: msg(),
                },
                Some(KeyState::Exhausted {
                    until: ts("2026-03-08T08:00:00Z"),
                    reason: msg(),
                }),
            ),
            (
                Outcome::QuotaExhausted {
                    until: Some(ts("2026-03-07T13:00:00Z")),
                    message: msg(),
                },
                Some(KeyState::Exhausted {
                    until: ts("2026-03-07T13:00:00Z"),
                    reason: msg(),
                }),
            ),
            (
                Outcome::Unauthorized { message: msg() },
                Some(KeyState::Disabled { reason: msg() }),
            ),
        ];
        for (outcome, expected) in cases {
            assert_eq!(after_outcome(&outcome, now, &p), expected, "{outcome:?}");
        }
    }

    #[test]
    fn daily_reset_follows_dst() {
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        // Summer: PDT, midnight is 07:00 UTC.
        assert_eq!(
            next_daily_reset(ts("2026-07-01T20:00:00Z"), &la),
            ts("2026-07-02T07:00:00Z")
        );
        // Day of the spring-forward switch (8 March 2026): next midnight is PDT.
        assert_eq!(
            next_daily_reset(ts("2026-03-08T12:00:00Z"), &la),
            ts("2026-03-09T07:00:00Z")
        );
        // Just before midnight local: the reset is minutes away, not a day.
        assert_eq!(
            next_daily_reset(ts("2026-07-02T06:59:00Z"), &la),
            ts("2026-07-02T07:00:00Z")
        );
        assert_eq!(
            next_daily_reset(ts("2026-07-02T06:59:00Z"), &TimeZone::UTC),
            ts("2026-07-03T00:00:00Z")
        );
    }

    #[test]
    fn late_reports_never_shorten_or_soften_a_state() {
        let t = |s: &str| ts(s);
        let cool = |u| KeyState::CoolingDown {
            until: t(u),
            reason: "r".into(),
        };
        let spent = |u| KeyState::Exhausted {
            until: t(u),
            reason: "r".into(),
        };
        let disabled = KeyState::Disabled { reason: "r".into() };
        let cases = [
            (KeyState::Active, cool("2026-01-01T00:01:00Z"), true),
            (
                cool("2026-01-01T00:01:00Z"),
                cool("2026-01-01T00:02:00Z"),
                true,
            ),
            (
                cool("2026-01-01T00:02:00Z"),
                cool("2026-01-01T00:01:00Z"),
                false,
            ),
            (
                cool("2026-01-01T00:02:00Z"),
                spent("2026-01-01T08:00:00Z"),
                true,
            ),
            (
                spent("2026-01-01T08:00:00Z"),
                cool("2026-01-01T09:00:00Z"),
                false,
            ),
            (disabled.clone(), cool("2026-01-01T00:01:00Z"), false),
            (disabled.clone(), disabled.clone(), false),
            (spent("2026-01-01T08:00:00Z"), disabled.clone(), true),
        ];
        for (old, new, expected) in cases {
            assert_eq!(old.is_superseded_by(&new), expected, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn absurd_delays_are_clamped() {
        let now = ts("2026-01-01T00:00:00Z");
        let p = policy("UTC");
        let rl = Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(10_000_000_000)),
            message: "m".into(),
        };
        assert_eq!(
            after_outcome(&rl, now, &p).unwrap().until(),
            Some(ts("2026-01-02T00:00:00Z"))
        );
        let ex = Outcome::QuotaExhausted {
            until: Some(ts("2099-01-01T00:00:00Z")),
            message: "m".into(),
        };
        assert_eq!(
            after_outcome(&ex, now, &p).unwrap().until(),
            Some(ts("2026-02-02T00:00:00Z"))
        );
    }

    #[test]
    fn configured_periods_replace_calendar_days() {
        let p = ResetPolicy {
            period: Some(Duration::from_secs(10)),
            ..policy("UTC")
        };
        assert_eq!(
            p.next_reset(ts("2026-01-01T00:00:03Z")),
            ts("2026-01-01T00:00:10Z")
        );
        assert_eq!(
            p.next_reset(ts("2026-01-01T00:00:10Z")),
            ts("2026-01-01T00:00:20Z")
        );
    }

    #[test]
    fn expired_states_become_active() {
        let now = ts("2026-01-01T00:00:00Z");
        let past = KeyState::Exhausted {
            until: ts("2025-12-31T23:00:00Z"),
            reason: "r".into(),
        };
        assert_eq!(past.as_of(now), KeyState::Active);
        let future = KeyState::CoolingDown {
            until: ts("2026-01-01T00:00:05Z"),
            reason: "r".into(),
        };
        assert_eq!(future.clone().as_of(now), future);
        let disabled = KeyState::Disabled { reason: "r".into() };
        assert_eq!(disabled.clone().as_of(now), disabled);
    }
}
