//! Property tests for the scheduling arithmetic (`keys`): the daily reset, the
//! state machine's ordering, `after_outcome`'s bounds and key choice.
//!
//! Longer runs: `PROPTEST_CASES=100000 cargo test --release --test properties`.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use keyrelay_core::keys::{KeyId, KeyState, ResetPolicy, after_outcome, next_daily_reset};
use keyrelay_core::provider::Outcome;
use keyrelay_core::route::{Candidate, Decision, Event, Progress, Refusal, decide};
use proptest::prelude::*;

/// 2,000 cases per property unless `PROPTEST_CASES` says otherwise.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// Every zone of the bundled tz database.
fn zones() -> Vec<String> {
    let mut names: Vec<String> = jiff::tz::db()
        .available()
        .map(|n| n.as_str().to_string())
        .collect();
    names.sort();
    names
}

fn zone() -> impl Strategy<Value = (String, TimeZone)> {
    let names = zones();
    (0..names.len()).prop_map(move |i| {
        let name = names[i].clone();
        let tz = TimeZone::get(&name).unwrap();
        (name, tz)
    })
}

/// 1970-01-01 .. 2100-01-01, to the nanosecond.
fn instant() -> impl Strategy<Value = Timestamp> {
    (0i64..4_102_444_800, 0i32..1_000_000_000).prop_map(|(s, ns)| Timestamp::new(s, ns).unwrap())
}

/// Zones whose clocks move by two hours at once (Antarctica/Troll: +00 ↔ +02),
/// so a local day can last 26 hours. Every other zone's days are ≤ 25 h.
const TWO_HOUR_DST: &[&str] = &["Antarctica/Troll"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// The next reset is in the future, is the first instant of a later local
    /// date, no other local day starts between now and it, and it is at most
    /// one local day (≤ 25 h; 26 h with two-hour DST) away.
    #[test]
    fn next_daily_reset_is_the_next_local_midnight((name, tz) in zone(), now in instant()) {
        let reset = next_daily_reset(now, &tz);
        prop_assert!(reset > now, "{name}: {reset} <= {now}");
        let ahead = reset.duration_since(now);
        let limit = if TWO_HOUR_DST.contains(&name.as_str()) { 26 } else { 25 };
        prop_assert!(ahead <= SignedDuration::from_hours(limit), "{name}: {now} -> {reset} is {ahead:?}");
        let today = now.to_zoned(tz.clone()).date();
        let reset_day = reset.to_zoned(tz.clone()).date();
        prop_assert!(reset_day > today, "{name}: {now} -> {reset}");
        // The instant before the reset still belongs to an earlier day.
        let before = reset.checked_sub(SignedDuration::from_nanos(1)).unwrap();
        prop_assert!(before.to_zoned(tz.clone()).date() < reset_day, "{name}: {reset} is not a day start");
        // And no day started strictly between now and the reset.
        prop_assert!(before.to_zoned(tz.clone()).date() == today || before < now,
            "{name}: a day began between {now} and {reset}");
    }

    /// `after_outcome` never parks a key in the past, never longer than its
    /// caps (24 h for a rate limit, 32 days for exhaustion), and only limits,
    /// quota and auth failures change a key.
    #[test]
    fn after_outcome_is_bounded(
        (_, tz) in zone(),
        now in instant(),
        retry_ms in proptest::option::of(0u64..u64::MAX / 2),
        until_offset in proptest::option::of(-10_000_000_000i64..10_000_000_000),
        cooldown_s in 0u64..100_000,
        which in 0u8..6,
    ) {
        let policy = ResetPolicy { timezone: tz, period: None, default_cooldown: Duration::from_secs(cooldown_s), window: Duration::from_secs(60) };
        let until = until_offset.map(|s| now.checked_add(SignedDuration::from_secs(s)).unwrap_or(now));
        let message = "m".to_string();
        let outcome = match which {
            0 => Outcome::RateLimited { retry_after: retry_ms.map(Duration::from_millis), message },
            1 => Outcome::QuotaExhausted { until, message },
            2 => Outcome::Unauthorized { message },
            3 => Outcome::Transient { message },
            4 => Outcome::job_failed(keyrelay_core::provider::FailureKind::BadRequest, message),
            _ => Outcome::InvalidResponse { message },
        };
        let next = after_outcome(&outcome, now, &policy);
        match (&outcome, &next) {
            (Outcome::RateLimited { .. }, Some(KeyState::CoolingDown { until, .. })) => {
                prop_assert!(*until > now);
                prop_assert!(until.duration_since(now) <= SignedDuration::from_hours(24));
            }
            (Outcome::QuotaExhausted { .. }, Some(KeyState::Exhausted { until, .. })) => {
                prop_assert!(*until > now);
                prop_assert!(until.duration_since(now) <= SignedDuration::from_hours(32 * 24));
            }
            (Outcome::Unauthorized { .. }, Some(KeyState::Disabled { .. })) => {}
            (Outcome::Transient { .. } | Outcome::JobFailed(_) | Outcome::InvalidResponse { .. }, None) => {}
            other => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    /// The outcome-driven order of key states: Disabled is never replaced by
    /// anything but an operator; nothing replaces itself; the relation is
    /// antisymmetric; Active gives way to any state out of rotation.
    #[test]
    fn superseding_never_lets_disabled_go(a in key_state(), b in key_state()) {
        if matches!(a, KeyState::Disabled { .. }) {
            prop_assert!(!a.is_superseded_by(&b), "{a:?} replaced by {b:?}");
        }
        prop_assert!(!a.is_superseded_by(&a));
        prop_assert!(!(a.is_superseded_by(&b) && b.is_superseded_by(&a)));
        if matches!(a, KeyState::Active) {
            prop_assert_eq!(a.is_superseded_by(&b), !matches!(b, KeyState::Active));
        }
        // A deadline is only ever pushed later within the same kind of state.
        if a.is_superseded_by(&b) && a.label() == b.label() {
            prop_assert!(b.until() > a.until());
        }
    }

    /// A job that must move goes to an available key whenever one may take it,
    /// never to an unavailable one, to the lowest priority number, never back
    /// to a key that refused it, and back to the key that failed transiently
    /// only when that key is the sole available one.
    #[test]
    fn rerouting_only_picks_available_keys(
        keys in proptest::collection::vec((0u8..4, 0usize..10, 0u16..6, any::<bool>()), 1..12),
        on in 0usize..12,
        refused in any::<bool>(),
    ) {
        let candidates: Vec<Candidate> = keys.iter().enumerate().map(|(i, (priority, in_flight, concurrency, available))| Candidate {
            id: KeyId(i), priority: *priority, in_flight: *in_flight, concurrency: *concurrency, available: *available, shares_quota: false,
        }).collect();
        let on = KeyId(on % candidates.len());
        let event = if refused { Event::NotAdmitted(Refusal::KeyUnavailable) } else { Event::RetryDue };
        let job = Progress { on, attempts: 1, max_attempts: 3 };
        let decision = decide(event, job, candidates.iter().copied());
        let others: Vec<&Candidate> = candidates.iter().filter(|c| c.available && c.id != on).collect();
        let on_available = candidates.iter().any(|c| c.available && c.id == on);
        match decision {
            Decision::RunOn(id) => {
                let c = candidates.iter().find(|c| c.id == id).unwrap();
                prop_assert!(c.available, "chose unavailable {c:?}");
                if others.is_empty() {
                    prop_assert!(!refused && id == on, "{decision:?}");
                } else {
                    prop_assert!(id != on, "went back to its key though others were available");
                    let best = others.iter().map(|c| c.priority).min().unwrap();
                    prop_assert_eq!(c.priority, best);
                }
            }
            Decision::HandBack => prop_assert!(others.is_empty() && (refused || !on_available)),
            other => prop_assert!(false, "a move decided {other:?}"),
        }
    }
}

fn key_state() -> impl Strategy<Value = KeyState> {
    let at = (0i64..4_102_444_800).prop_map(|s| Timestamp::from_second(s).unwrap());
    prop_oneof![
        Just(KeyState::Active),
        at.clone().prop_map(|until| KeyState::CoolingDown {
            until,
            reason: "r".into()
        }),
        at.prop_map(|until| KeyState::Exhausted {
            until,
            reason: "q".into()
        }),
        Just(KeyState::Disabled { reason: "d".into() }),
    ]
}

/// DST days in a few named zones: the reset is the local midnight, 23 or 25 h
/// after the previous one.
#[test]
fn daily_reset_across_dst_in_named_zones() {
    let cases = [
        // (zone, now, expected reset)
        (
            "America/Los_Angeles",
            "2026-03-08T08:00:00Z",
            "2026-03-09T07:00:00Z",
        ), // 23 h day
        (
            "America/Los_Angeles",
            "2026-11-01T07:30:00Z",
            "2026-11-02T08:00:00Z",
        ), // 25 h day
        (
            "Europe/Berlin",
            "2026-03-28T23:00:00Z",
            "2026-03-29T22:00:00Z",
        ),
        (
            "Australia/Lord_Howe",
            "2026-04-04T13:00:00Z",
            "2026-04-05T13:30:00Z",
        ),
        ("UTC", "2026-06-30T23:59:59.999Z", "2026-07-01T00:00:00Z"),
        // Two-hour DST (+02 -> +00): a 26-hour local day.
        (
            "Antarctica/Troll",
            "2026-10-24T22:00:00Z",
            "2026-10-26T00:00:00Z",
        ),
    ];
    for (zone, now, expected) in cases {
        let tz = TimeZone::get(zone).unwrap();
        let now: Timestamp = now.parse().unwrap();
        let expected: Timestamp = expected.parse().unwrap();
        assert_eq!(next_daily_reset(now, &tz), expected, "{zone} at {now}");
    }
}
