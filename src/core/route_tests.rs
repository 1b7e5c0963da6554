//! The routing table: every event against the key states that matter.

use super::*;
use crate::job::ErrorKind as K;
use crate::provider::OutcomeClass as C;

fn key(id: usize, priority: u8, in_flight: usize, available: bool) -> Candidate {
    Candidate {
        id: KeyId(id),
        priority,
        in_flight,
        concurrency: 4,
        available,
        shares_quota: false,
    }
}

/// `key` that shares the quota of the key the job is on.
fn sharing(mut c: Candidate) -> Candidate {
    c.shares_quota = true;
    c
}

/// Job on key 0 after `attempts` of 3 calls.
fn on_0(attempts: u32) -> Progress {
    Progress {
        on: KeyId(0),
        attempts,
        max_attempts: 3,
    }
}

#[test]
fn routing_table() {
    let two_free = || vec![key(0, 1, 0, true), key(1, 2, 0, true)];
    let only_0 = || vec![key(0, 1, 0, true), key(1, 1, 0, false)];
    let none = || vec![key(0, 1, 0, false), key(1, 1, 0, false)];
    let refused = Event::NotAdmitted(Refusal::KeyUnavailable);
    let spent = Event::NotAdmitted(Refusal::BudgetSpent);
    #[rustfmt::skip]
    let cases: Vec<(&str, Event, Progress, Vec<Candidate>, Decision)> = vec![
        ("success finishes", Event::Answered(C::Success), on_0(1), two_free(), Decision::Finish),
        ("bad request fails at once", Event::Answered(C::BadRequest), on_0(1), two_free(), Decision::Fail(K::BadRequest)),
        ("too large fails at once", Event::Answered(C::TooLarge), on_0(1), two_free(), Decision::Fail(K::TooLarge)),
        ("blocked fails at once", Event::Answered(C::Blocked), on_0(1), two_free(), Decision::Fail(K::Blocked)),
        ("empty output fails at once", Event::Answered(C::EmptyOutput), on_0(1), two_free(), Decision::Fail(K::EmptyOutput)),
        ("truncated fails at once", Event::Answered(C::Truncated), on_0(1), two_free(), Decision::Fail(K::Truncated)),
        ("invalid response is not retried (billed)", Event::Answered(C::InvalidResponse), on_0(1), two_free(), Decision::Fail(K::Upstream)),
        ("transient with attempts left waits", Event::Answered(C::Transient), on_0(2), two_free(), Decision::RetryLater),
        ("transient on the last attempt gives up", Event::Answered(C::Transient), on_0(3), two_free(), Decision::GiveUp(K::Upstream)),
        ("rate limited moves to the other key", Event::Answered(C::RateLimited), on_0(0), two_free(), Decision::RunOn(KeyId(1))),
        ("quota exhausted moves to the other key", Event::Answered(C::QuotaExhausted), on_0(0), two_free(), Decision::RunOn(KeyId(1))),
        ("unauthorized moves to the other key", Event::Answered(C::Unauthorized), on_0(0), two_free(), Decision::RunOn(KeyId(1))),
        ("exhausted quota skips keys of its quota group",
            Event::Answered(C::QuotaExhausted), on_0(0), vec![key(0, 1, 0, true), sharing(key(1, 1, 0, true)), key(2, 2, 0, true)], Decision::RunOn(KeyId(2))),
        ("exhausted quota with only its group left waits",
            Event::Answered(C::QuotaExhausted), on_0(0), vec![key(0, 1, 0, true), sharing(key(1, 1, 0, true))], Decision::HandBack),
        ("a rate limit is the key's own: its quota group may take the job",
            Event::Answered(C::RateLimited), on_0(0), vec![key(0, 1, 0, true), sharing(key(1, 1, 0, true))], Decision::RunOn(KeyId(1))),
        ("rate limited never goes back to its key", Event::Answered(C::RateLimited), on_0(0), only_0(), Decision::HandBack),
        ("refused never goes back to its key", refused, on_0(0), only_0(), Decision::HandBack),
        ("budget spent moves on", spent, on_0(0), two_free(), Decision::RunOn(KeyId(1))),
        ("nothing available: back to the queue", spent, on_0(0), none(), Decision::HandBack),
        ("retry prefers another key", Event::RetryDue, on_0(1), two_free(), Decision::RunOn(KeyId(1))),
        ("retry takes its key when alone", Event::RetryDue, on_0(1), only_0(), Decision::RunOn(KeyId(0))),
        ("retry with no key waits in the queue", Event::RetryDue, on_0(1), none(), Decision::HandBack),
        ("no keys at all", refused, on_0(0), vec![], Decision::HandBack),
        ("lowest priority number wins",
            refused, on_0(0), vec![key(0, 1, 0, false), key(1, 3, 0, true), key(2, 2, 3, true)], Decision::RunOn(KeyId(2))),
        ("least loaded among equals",
            refused, on_0(0), vec![key(0, 1, 0, false), key(1, 2, 3, true), key(2, 2, 1, true)], Decision::RunOn(KeyId(2))),
        ("ties by id",
            refused, on_0(0), vec![key(2, 1, 0, true), key(1, 1, 0, true), key(0, 1, 0, true)], Decision::RunOn(KeyId(1))),
    ];
    for (name, event, job, keys, expected) in cases {
        assert_eq!(decide(event, job, keys), expected, "{name}");
    }
}

#[test]
fn a_finished_job_reads_no_key_state() {
    let keys = std::iter::from_fn(|| panic!("key states read for a success"));
    assert_eq!(
        decide(Event::Answered(C::Success), on_0(1), keys),
        Decision::Finish
    );
}

#[test]
fn every_class_has_a_decision_and_reroutes_are_labelled() {
    for class in C::ALL {
        let decision = decide(Event::Answered(class), on_0(1), vec![key(1, 1, 0, true)]);
        let moved = matches!(decision, Decision::RunOn(_) | Decision::HandBack);
        assert_eq!(
            moved,
            Event::Answered(class).reroute_reason().is_some(),
            "{class:?}"
        );
    }
}
