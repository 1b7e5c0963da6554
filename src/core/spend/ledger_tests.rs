use super::*;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn record(pool: &str, key: &str, user: Option<&str>, usd: f64) -> SpendRecord {
    SpendRecord {
        pool: pool.into(),
        key: key.into(),
        model: "m".into(),
        user: user.map(Into::into),
        cost_usd: Some(usd),
    }
}

fn day_budget(usd: f64) -> Budget {
    Budget {
        usd_per_day: Some(usd),
        usd_per_month: None,
    }
}

#[test]
fn a_call_that_would_cross_the_pool_budget_is_refused_until_midnight() {
    let ledger = Arc::new(SpendLedger::default());
    ledger.set_budget(BudgetScope::Pool, "p", day_budget(1.0));
    let now = at("2026-12-06T10:00:00Z");
    let scopes = || scopes_of("p", "k1", None);
    let first = ledger.admit(scopes(), 0.4, now).unwrap();
    ledger.record(&record("p", "k1", None, 0.4), now);
    drop(first);
    // 0.4 spent + 0.4 in flight + 0.4 estimated > 1.0: wait for the flight.
    let second = ledger.admit(scopes(), 0.4, now).unwrap();
    let waits = ledger.admit(scopes(), 0.4, now).unwrap_err();
    assert_eq!(waits.refused, Refused::InFlight);
    assert!((waits.spent_usd - 0.4).abs() < 1e-9, "{waits:?}");
    drop(second); // never made: its reservation goes
    assert!(ledger.admit(scopes(), 0.4, now).is_ok());
    // Spent: 0.4 + 0.4 more + 0.4 > 1.0 whatever is in flight.
    ledger.record(&record("p", "k1", None, 0.4), now);
    let spent = ledger.admit(scopes(), 0.4, now).unwrap_err();
    assert_eq!(spent.refused, Refused::Spent);
    assert_eq!(spent.scope, BudgetScope::Pool);
    assert_eq!(spent.until, at("2026-12-07T00:00:00Z"));
    // A job larger than the whole budget never fits.
    let never = ledger.admit(scopes(), 1.5, now).unwrap_err();
    assert_eq!(never.refused, Refused::NeverFits);
    assert!(never.to_string().contains("more than the whole"), "{never}");
    // The next day starts from zero; a late `now` does not roll it back.
    assert!(
        ledger
            .admit(scopes(), 0.9, at("2026-12-07T00:00:01Z"))
            .is_ok()
    );
    ledger.record(&record("p", "k1", None, 0.5), at("2026-12-07T00:00:02Z"));
    ledger
        .admit(scopes(), 0.0, at("2026-12-06T23:59:59Z"))
        .unwrap();
    assert_eq!(
        ledger
            .spent(BudgetScope::Pool, "p", at("2026-12-07T00:00:03Z"))
            .0,
        0.5
    );
}

#[test]
fn an_unlimited_user_is_exempt_from_the_pools_default_cap() {
    let ledger = Arc::new(SpendLedger::default());
    ledger.set_user_default("p", day_budget(0.0));
    ledger.set_budget(BudgetScope::User, "p/vip", Budget::default());
    let now = at("2026-12-06T10:00:00Z");
    assert!(
        ledger
            .admit(scopes_of("p", "k1", Some("vip")), 5.0, now)
            .is_ok()
    );
    assert!(
        ledger
            .admit(scopes_of("p", "k1", Some("other")), 0.0, now)
            .is_err()
    );
}

#[test]
fn a_user_cap_stops_that_user_only() {
    let ledger = Arc::new(SpendLedger::default());
    ledger.set_user_default("p", day_budget(0.5));
    let now = at("2026-12-06T10:00:00Z");
    ledger.record(&record("p", "k1", Some("alice"), 0.5), now);
    let refused = ledger
        .admit(scopes_of("p", "k1", Some("alice")), 0.01, now)
        .unwrap_err();
    assert_eq!(
        (refused.scope, refused.name.as_str()),
        (BudgetScope::User, "p/alice")
    );
    assert!(
        ledger
            .admit(scopes_of("p", "k1", Some("bob")), 0.01, now)
            .is_ok()
    );
    assert!(ledger.admit(scopes_of("p", "k1", None), 0.01, now).is_ok());
}

#[test]
fn stored_counters_of_this_month_count_and_a_new_month_resets() {
    let ledger = Arc::new(SpendLedger::default());
    ledger.set_budget(
        BudgetScope::Key,
        "p/k1",
        Budget {
            usd_per_day: None,
            usd_per_month: Some(10.0),
        },
    );
    let row = |hour: &str, usd: f64| {
        (
            SpendKey {
                hour: hour.into(),
                pool: "p".into(),
                key: "k1".into(),
                model: "m".into(),
                user: String::new(),
            },
            SpendCount {
                nano_usd: to_nano(usd),
                calls: 1,
                unpriced: 0,
            },
        )
    };
    let now = at("2026-12-06T10:00:00Z");
    ledger.load(
        &[
            row("2026-12-01T03", 6.0),
            row("2026-12-06T09", 3.5),
            row("2026-11-30T23", 100.0),
        ],
        now,
    );
    assert_eq!(ledger.spent(BudgetScope::Key, "p/k1", now), (3.5, 9.5));
    let refused = ledger
        .admit(scopes_of("p", "k1", None), 1.0, now)
        .unwrap_err();
    assert_eq!(refused.period, Period::Month);
    assert_eq!(refused.until, at("2027-01-01T00:00:00Z"));
    assert!(
        ledger
            .admit(scopes_of("p", "k1", None), 1.0, at("2027-01-01T00:00:00Z"))
            .is_ok()
    );
}

#[test]
fn pending_counters_sum_per_hour_and_count_unpriced_calls() {
    let ledger = SpendLedger::default();
    let now = at("2026-12-06T10:15:00Z");
    ledger.record(&record("p", "k1", None, 0.25), now);
    ledger.record(&record("p", "k1", None, 0.25), now);
    let mut unpriced = record("p", "k1", None, 0.0);
    unpriced.cost_usd = None;
    ledger.record(&unpriced, now);
    let rows = ledger.take_pending();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0.hour, "2026-12-06T10");
    assert_eq!(
        rows[0].1,
        SpendCount {
            nano_usd: 500_000_000,
            calls: 3,
            unpriced: 1
        }
    );
    assert!(ledger.take_pending().is_empty());
}

#[test]
fn a_fleet_shares_budgets_and_a_peer_restarted_on_its_store_is_counted_once() {
    let now = at("2026-12-06T10:00:00Z");
    let (a, b) = (
        Arc::new(SpendLedger::default()),
        Arc::new(SpendLedger::default()),
    );
    for ledger in [&a, &b] {
        ledger.set_budget(BudgetScope::Pool, "p", day_budget(1.0));
    }
    a.record(&record("p", "k1", None, 0.6), now);
    // Only budgeted scopes are shared.
    let share = a.share(now);
    assert_eq!(share.day, "2026-12-06");
    assert_eq!(share.scopes.len(), 1, "{share:?}");
    b.set_peer("store-a", share.clone());
    b.set_peer("store-a", share); // the same store again: not twice
    let refused = b.admit(scopes_of("p", "k2", None), 0.5, now).unwrap_err();
    assert!((refused.spent_usd - 0.6).abs() < 1e-9, "{refused:?}");
    assert!(b.admit(scopes_of("p", "k2", None), 0.3, now).is_ok());
    // Yesterday's share counts for the month, not the day.
    let mut old = a.share(now);
    old.day = "2026-12-05".into();
    b.set_peer("store-a", old);
    assert_eq!(b.spent(BudgetScope::Pool, "p", now), (0.0, 0.6));
}
