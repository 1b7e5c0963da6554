use super::*;

const MIN: Duration = Duration::from_secs(60);

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn day(now: Timestamp) -> Timestamp {
    // A "day" of 1,000 s for the tests, aligned like a calendar.
    let s = now.as_second();
    Timestamp::from_second(s - s.rem_euclid(1000) + 1000).unwrap()
}

fn take(b: &mut Budget, l: &Limits, at: i64, tokens: u64) -> Result<Ticket, Blocked> {
    b.try_take(l, MIN, t(at), tokens, day)
}

#[test]
fn rpm_allows_the_whole_burst_then_waits_for_the_oldest_call_to_leave() {
    let l = Limits {
        rpm: Some(3),
        ..Limits::default()
    };
    let mut b = Budget::default();
    for at in [0, 0, 1] {
        assert!(take(&mut b, &l, at, 1).is_ok(), "burst call at {at}");
    }
    let blocked = take(&mut b, &l, 2, 1).unwrap_err();
    assert_eq!(
        blocked,
        Blocked {
            until: t(60),
            spent: Spent::Window,
            limit: "rpm"
        }
    );
    // Exactly 60 s after the first call, one slot frees: no window holds 4 calls.
    assert!(take(&mut b, &l, 60, 1).is_ok());
    assert!(
        take(&mut b, &l, 60, 1).is_ok(),
        "the second call of t=0 left too"
    );
    assert_eq!(take(&mut b, &l, 60, 1).unwrap_err().until, t(61));
}

#[test]
fn no_sixty_second_window_ever_exceeds_rpm() {
    // Greedy client: tries every second for 10 minutes.
    let l = Limits {
        rpm: Some(7),
        ..Limits::default()
    };
    let mut b = Budget::default();
    let mut sent = Vec::new();
    for at in 0..600 {
        while take(&mut b, &l, at, 1).is_ok() {
            sent.push(at);
        }
    }
    for start in 0..600 {
        let in_window = sent
            .iter()
            .filter(|s| **s >= start && **s < start + 60)
            .count();
        assert!(in_window <= 7, "window at {start}: {in_window}");
    }
    // And it uses the whole budget: 7 per minute over 10 minutes.
    assert_eq!(sent.len(), 70);
}

#[test]
fn tpm_counts_estimates_and_corrections() {
    let l = Limits {
        tpm: Some(1000),
        ..Limits::default()
    };
    let mut b = Budget::default();
    let first = take(&mut b, &l, 0, 600).unwrap();
    let blocked = take(&mut b, &l, 1, 600).unwrap_err();
    assert_eq!((blocked.limit, blocked.until), ("tpm", t(60)));
    // The provider reports the first call used only 300 tokens: room again.
    b.correct(first, 300);
    assert!(take(&mut b, &l, 2, 600).is_ok());
    // A single call bigger than tpm is never held back (it could never fit,
    // and parking the key for it would stall every other job).
    let mut fresh = Budget::default();
    assert!(take(&mut fresh, &l, 0, 5000).is_ok());
    assert!(take(&mut b, &l, 3, 5000).is_ok(), "even in a busy window");
}

#[test]
fn daily_limits_block_until_the_reset_then_start_over() {
    let l = Limits {
        rpd: Some(2),
        ..Limits::default()
    };
    let mut b = Budget::default();
    assert!(take(&mut b, &l, 0, 1).is_ok());
    assert!(take(&mut b, &l, 100, 1).is_ok());
    let blocked = take(&mut b, &l, 200, 1).unwrap_err();
    assert_eq!(blocked.spent, Spent::Day);
    assert_eq!(blocked.until, day(t(200)));
    let next_day = (blocked.until.as_second() - 1_800_000_000) + 1;
    assert!(take(&mut b, &l, next_day, 1).is_ok());
    let usage = b.usage(MIN, t(next_day), day);
    assert_eq!((usage.day_requests, usage.window_requests), (1, 1));
    assert_eq!(usage.daily_share(&l), Some(0.5));
}

#[test]
fn tpd_and_learned_limits() {
    let l = Limits {
        tpd: Some(100),
        ..Limits::default()
    };
    let mut b = Budget::default();
    assert!(take(&mut b, &l, 0, 80).is_ok());
    assert_eq!(take(&mut b, &l, 1, 30).unwrap_err().limit, "tpd");
    let mut b = Budget::default();
    b.learn(t(30));
    let blocked = take(&mut b, &Limits::default(), 10, 1).unwrap_err();
    assert_eq!((blocked.limit, blocked.until), ("provider headers", t(30)));
    assert!(take(&mut b, &Limits::default(), 30, 1).is_ok());
}

#[test]
fn budget_round_trips_through_json() {
    let l = Limits {
        rpm: Some(2),
        rpd: Some(10),
        ..Limits::default()
    };
    let mut b = Budget::default();
    take(&mut b, &l, 0, 5).unwrap();
    let restored: Budget = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
    assert_eq!(restored, b);
}

proptest::proptest! {
    #[test]
    fn any_call_pattern_respects_rpm(gaps in proptest::collection::vec(0i64..40, 1..200), rpm in 1u32..20) {
        let l = Limits { rpm: Some(rpm), ..Limits::default() };
        let mut b = Budget::default();
        let mut now = 0;
        let mut sent = Vec::new();
        for gap in gaps {
            now += gap;
            if take(&mut b, &l, now, 1).is_ok() {
                sent.push(now);
            }
        }
        for (i, start) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|s| **s < start + 60).count();
            proptest::prop_assert!(in_window <= rpm as usize);
        }
    }
}
