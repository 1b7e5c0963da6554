//! A key's state as it passes from one owner to the next.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::keys::{Allowance, Budget, Headroom, KeyState, Limits};

/// What the owner of a key publishes: its state, its usage, and the calls it
/// may still make before publishing again. The broker keeps the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoverSnapshot {
    /// Format version, for owners of different releases in one fleet.
    pub version: u32,
    /// The instance that published it.
    pub owner: String,
    /// When it was taken (the owner's clock).
    pub taken_at: Timestamp,
    /// The key's state (active, cooling down, exhausted, disabled).
    pub state: KeyState,
    /// Calls and tokens in the current windows and day.
    pub budget: Budget,
    /// What the owner may admit beyond `budget` until its next snapshot.
    pub allowance: Allowance,
    /// Set on the last snapshot of an orderly hand-over: nothing was admitted
    /// after it, so the allowance was not used.
    pub released: bool,
}

impl HandoverSnapshot {
    /// The snapshot format this build writes.
    pub const VERSION: u32 = 1;
}

/// The state and budget the next owner starts from at `now`. Unless the
/// previous owner released the key, all of its allowance counts as spent at
/// `now`: it may have made those calls up to the moment it lost the lease,
/// which was before this owner got it. Phantom calls beyond the largest
/// declared limit change nothing (the key is blocked either way), so no more
/// are counted: an unlimited allowance costs no memory and no overflow.
pub fn take_over(
    snapshot: HandoverSnapshot,
    limits: &Limits,
    window: std::time::Duration,
    now: Timestamp,
    next_reset: impl Fn(Timestamp) -> Timestamp,
) -> (KeyState, Budget) {
    let mut budget = snapshot.budget;
    if !snapshot.released {
        let call_limit = limits.rpm.max(limits.rpd).map_or(0, u64::from);
        let token_limit = limits.tpm.max(limits.tpd).unwrap_or(0);
        let spent = Allowance {
            calls: snapshot.allowance.calls.min(call_limit),
            tokens: snapshot.allowance.tokens.min(token_limit),
        };
        budget.assume_spent(spent, window, now, next_reset);
    }
    (snapshot.state.as_of(now), budget)
}

/// The allowance to publish with a snapshot: twice what the key used since
/// the last one (so a backlog ramps up in a few snapshots), at least enough to
/// fill every concurrency slot, never more than the limits allow now. A key
/// with no limit of a kind gets an unlimited allowance of that kind: nothing
/// it does can break a limit nobody declared.
pub fn size_allowance(
    headroom: Headroom,
    used_since_last: Allowance,
    concurrency: u16,
) -> Allowance {
    let floor = u64::from(concurrency.max(1));
    let calls = headroom.calls.map_or(u64::MAX, |room| {
        room.min(used_since_last.calls.saturating_mul(2).max(floor))
    });
    let tokens = headroom.tokens.map_or(u64::MAX, |room| {
        // Tokens per call are unknown before the calls: a tenth of the room
        // at least, so the first calls after a quiet spell are not held back.
        room.min(
            used_since_last
                .tokens
                .saturating_mul(2)
                .max(room / 10)
                .max(1),
        )
    });
    Allowance { calls, tokens }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Limits;
    use std::time::Duration;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn day(_: Timestamp) -> Timestamp {
        t(100_000)
    }

    const MIN: Duration = Duration::from_secs(60);

    fn rpm(n: u32) -> Limits {
        Limits {
            rpm: Some(n),
            ..Limits::default()
        }
    }

    fn snapshot(budget: Budget, allowance: Allowance, released: bool) -> HandoverSnapshot {
        HandoverSnapshot {
            version: HandoverSnapshot::VERSION,
            owner: "a".into(),
            taken_at: t(0),
            state: KeyState::Active,
            budget,
            allowance,
            released,
        }
    }

    #[test]
    fn a_crashed_owner_allowance_counts_as_spent_until_the_window_passes() {
        let limits = rpm(10);
        let mut budget = Budget::default();
        for _ in 0..3 {
            budget.try_take(&limits, MIN, t(0), 1, day).unwrap();
        }
        let allowance = Allowance {
            calls: 4,
            tokens: 40,
        };
        let (_, mut next) = take_over(
            snapshot(budget.clone(), allowance, false),
            &limits,
            MIN,
            t(5),
            day,
        );
        // 3 recorded + 4 assumed: 3 left now.
        for _ in 0..3 {
            next.try_take(&limits, MIN, t(5), 1, day).unwrap();
        }
        let blocked = next.try_take(&limits, MIN, t(5), 1, day).unwrap_err();
        assert_eq!(blocked.limit, "rpm");
        assert_eq!(
            blocked.until,
            t(60),
            "the recorded calls of t=0 leave first"
        );
        // A released key's allowance was not used.
        let (_, mut released) =
            take_over(snapshot(budget, allowance, true), &limits, MIN, t(5), day);
        for _ in 0..7 {
            released.try_take(&limits, MIN, t(5), 1, day).unwrap();
        }
        assert!(released.try_take(&limits, MIN, t(5), 1, day).is_err());
    }

    #[test]
    fn an_unlimited_allowance_is_counted_up_to_the_limits_only() {
        let limits = rpm(10);
        let unlimited = Allowance {
            calls: u64::MAX,
            tokens: u64::MAX,
        };
        let (_, mut next) = take_over(
            snapshot(Budget::default(), unlimited, false),
            &limits,
            MIN,
            t(1),
            day,
        );
        assert_eq!(
            next.try_take(&limits, MIN, t(1), 1, day).unwrap_err().limit,
            "rpm"
        );
        let (_, mut free) = take_over(
            snapshot(Budget::default(), unlimited, false),
            &Limits::default(),
            MIN,
            t(1),
            day,
        );
        free.try_take(&Limits::default(), MIN, t(1), 1, day)
            .unwrap();
    }

    #[test]
    fn assumed_calls_of_a_snapshot_from_yesterday_count_today() {
        let limits = Limits {
            rpd: Some(5),
            ..Limits::default()
        };
        // Yesterday: the day's 5 calls spent; the day ended at t(100).
        let yesterday = |_: Timestamp| t(100);
        let mut budget = Budget::default();
        for _ in 0..5 {
            budget.try_take(&limits, MIN, t(0), 1, yesterday).unwrap();
        }
        let two = Allowance {
            calls: 2,
            tokens: 2,
        };
        let (_, mut next) = take_over(snapshot(budget, two, false), &limits, MIN, t(200), day);
        // A new day: 5 - 2 assumed = 3 left, not 5 (the roll kept the phantoms).
        for _ in 0..3 {
            next.try_take(&limits, MIN, t(200), 1, day).unwrap();
        }
        assert_eq!(
            next.try_take(&limits, MIN, t(200), 1, day)
                .unwrap_err()
                .limit,
            "rpd"
        );
    }

    #[test]
    fn assumed_calls_count_against_the_day_too() {
        let limits = Limits {
            rpd: Some(5),
            ..Limits::default()
        };
        let mut budget = Budget::default();
        budget.try_take(&limits, MIN, t(0), 1, day).unwrap();
        let (_, mut next) = take_over(
            snapshot(
                budget,
                Allowance {
                    calls: 3,
                    tokens: 3,
                },
                false,
            ),
            &limits,
            MIN,
            t(1),
            day,
        );
        next.try_take(&limits, MIN, t(1), 1, day).unwrap();
        assert_eq!(
            next.try_take(&limits, MIN, t(1), 1, day).unwrap_err().limit,
            "rpd"
        );
    }

    #[test]
    fn an_owner_never_admits_beyond_its_allowance() {
        let limits = rpm(100);
        let mut budget = Budget::default();
        let then = budget.admitted();
        budget.try_take(&limits, MIN, t(0), 5, day).unwrap();
        // Granted by a snapshot taken before that call: it counts already.
        budget.grant(
            Allowance {
                calls: 3,
                tokens: 1_000,
            },
            then,
        );
        budget.try_take(&limits, MIN, t(0), 5, day).unwrap();
        budget.try_take(&limits, MIN, t(0), 5, day).unwrap();
        let blocked = budget.try_take(&limits, MIN, t(0), 5, day).unwrap_err();
        assert_eq!(blocked.limit, "fleet allowance");
        budget.revoke_allowance();
        assert!(budget.try_take(&limits, MIN, t(0), 5, day).is_ok());
        // A call must fit the tokens left whole: a crash leaves the next
        // owner only the allowance to count.
        let now = budget.admitted();
        budget.grant(
            Allowance {
                calls: 3,
                tokens: 10,
            },
            now,
        );
        let blocked = budget.try_take(&limits, MIN, t(0), 11, day).unwrap_err();
        assert!(blocked.is_fleet_allowance());
        budget.try_take(&limits, MIN, t(0), 10, day).unwrap();
    }

    #[test]
    fn allowance_sizes() {
        let room = |calls, tokens| Headroom { calls, tokens };
        let used = |calls, tokens| Allowance { calls, tokens };
        let cases = [
            // No limits: unlimited.
            (room(None, None), used(50, 500), 4, used(u64::MAX, u64::MAX)),
            // Quiet key: concurrency slots; a tenth of the token room.
            (room(Some(100), Some(10_000)), used(0, 0), 4, used(4, 1_000)),
            // Busy key: twice the recent use.
            (
                room(Some(100), Some(10_000)),
                used(20, 2_000),
                4,
                used(40, 4_000),
            ),
            // Never beyond what the limits allow now.
            (room(Some(10), Some(500)), used(20, 2_000), 4, used(10, 500)),
            (room(Some(0), None), used(0, 0), 4, used(0, u64::MAX)),
        ];
        for (headroom, used_since, concurrency, expected) in cases {
            assert_eq!(
                size_allowance(headroom, used_since, concurrency),
                expected,
                "{headroom:?} {used_since:?}"
            );
        }
    }

    #[test]
    fn headroom_is_the_tightest_limit() {
        let limits = Limits {
            rpm: Some(10),
            rpd: Some(4),
            tpm: Some(100),
            tpd: None,
        };
        let mut budget = Budget::default();
        budget.try_take(&limits, MIN, t(0), 30, day).unwrap();
        assert_eq!(
            budget.headroom(&limits, MIN, t(1), day),
            Headroom {
                calls: Some(3),
                tokens: Some(70)
            }
        );
    }
}
