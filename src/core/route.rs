//! Where a job goes next, decided by one pure function: [`decide`] maps what
//! just happened to the job (an answer's class, a key that could not take it, a
//! retry that is due), how far along the job is, and the states of its pool's
//! keys to a [`Decision`]. The service's job task applies the decision; nothing
//! here does I/O.

use crate::job::ErrorKind;
use crate::keys::KeyId;
use crate::provider::OutcomeClass;

/// What routing needs to know about one key of a pool, as of now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Which key.
    pub id: KeyId,
    /// Its configured priority: 1 is preferred over 2.
    pub priority: u8,
    /// Calls running on it now.
    pub in_flight: usize,
    /// Its configured concurrency (calls at once).
    pub concurrency: u16,
    /// Whether it is in rotation (its gate is open).
    pub available: bool,
    /// Whether it shares a `quota_group` with the key the job is on: when
    /// that key's quota is exhausted, so is this one's (the supervisor parks
    /// them together a moment later).
    pub shares_quota: bool,
}

/// What just happened to a job on key `on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The provider answered the call with this class.
    Answered(OutcomeClass),
    /// The key could not take the call: it left rotation, or its declared
    /// limits allow no call now. No call was made.
    NotAdmitted(Refusal),
    /// A transient failure on `on` is to be retried now: the job is back from
    /// its delay queue on the key that failed, or it could not be parked.
    RetryDue,
}

/// Why a key could not take a job's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The key is out of rotation (or left it while the job waited).
    KeyUnavailable,
    /// The key's declared rpm/tpm/rpd/tpd budget allows no call now.
    BudgetSpent,
}

/// How far along a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The key the event happened on.
    pub on: KeyId,
    /// Provider calls charged to the job so far (a call the key refused is not).
    pub attempts: u32,
    /// `jobs.max_attempts`.
    pub max_attempts: u32,
}

/// What to do with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Reply with the answer, store it, ack.
    Finish,
    /// The provider says the job cannot succeed as sent: fail it with this
    /// kind at once (no retry: another key would answer the same).
    Fail(ErrorKind),
    /// Park the job in its delay queue; it comes back after its backoff.
    RetryLater,
    /// Stop trying: fail the job with this kind and dead-letter it.
    GiveUp(ErrorKind),
    /// Run the job on this key now.
    RunOn(KeyId),
    /// No key of the pool can run it now: back to its queue to wait.
    HandBack,
}

impl Event {
    /// The reroute reason this event is counted under, when it moves the job
    /// off its key (`keyrelay_reroutes_total{reason}`).
    pub fn reroute_reason(self) -> Option<&'static str> {
        match self {
            Event::Answered(OutcomeClass::RateLimited) => Some("rate_limited"),
            Event::Answered(OutcomeClass::QuotaExhausted) => Some("quota_exhausted"),
            Event::Answered(OutcomeClass::Unauthorized) => Some("unauthorized"),
            Event::NotAdmitted(Refusal::KeyUnavailable) => Some("key_unavailable"),
            Event::NotAdmitted(Refusal::BudgetSpent) => Some("budget_spent"),
            Event::RetryDue => Some("transient"),
            Event::Answered(_) => None,
        }
    }
}

/// The decision for `event`. `keys` are the states of the pool's keys; they
/// are read only when the job has to move, so a success costs no scan.
pub fn decide(event: Event, job: Progress, keys: impl IntoIterator<Item = Candidate>) -> Decision {
    match event {
        Event::Answered(class) => match class {
            OutcomeClass::Success => Decision::Finish,
            OutcomeClass::BadRequest => Decision::Fail(ErrorKind::BadRequest),
            OutcomeClass::TooLarge => Decision::Fail(ErrorKind::TooLarge),
            OutcomeClass::Blocked => Decision::Fail(ErrorKind::Blocked),
            OutcomeClass::EmptyOutput => Decision::Fail(ErrorKind::EmptyOutput),
            OutcomeClass::Truncated => Decision::Fail(ErrorKind::Truncated),
            // Not retried: the call was probably billed.
            OutcomeClass::InvalidResponse => Decision::Fail(ErrorKind::Upstream),
            OutcomeClass::Transient if job.attempts >= job.max_attempts => {
                Decision::GiveUp(ErrorKind::Upstream)
            }
            OutcomeClass::Transient => Decision::RetryLater,
            // The key said "no more": never back to it, whatever else is free.
            OutcomeClass::RateLimited | OutcomeClass::Unauthorized => {
                place(keys, Avoid::Never(job.on))
            }
            // Nor to a key whose quota it shares.
            OutcomeClass::QuotaExhausted => place(
                keys.into_iter().filter(|c| !c.shares_quota),
                Avoid::Never(job.on),
            ),
        },
        Event::NotAdmitted(_) => place(keys, Avoid::Never(job.on)),
        // The key only failed transiently: another is better, it will do.
        Event::RetryDue => place(keys, Avoid::UnlessAlone(job.on)),
    }
}

/// How a rerouted job treats the key it leaves.
#[derive(Debug, Clone, Copy)]
enum Avoid {
    Never(KeyId),
    UnlessAlone(KeyId),
}

/// The best available key (lowest priority number first, as the broker's
/// consumer priorities do, then the least loaded relative to its
/// concurrency, then the lowest id), or back to the queue.
fn place(keys: impl IntoIterator<Item = Candidate>, avoid: Avoid) -> Decision {
    let (left, allow_alone) = match avoid {
        Avoid::Never(k) => (k, false),
        Avoid::UnlessAlone(k) => (k, true),
    };
    let mut best: Option<Candidate> = None;
    let mut left_available = false;
    for c in keys.into_iter().filter(|c| c.available) {
        if c.id == left {
            left_available = true;
        } else if best.is_none_or(|b| better(&c, &b)) {
            best = Some(c);
        }
    }
    match best {
        Some(c) => Decision::RunOn(c.id),
        None if allow_alone && left_available => Decision::RunOn(left),
        None => Decision::HandBack,
    }
}

fn better(a: &Candidate, b: &Candidate) -> bool {
    a.priority
        .cmp(&b.priority)
        .then_with(|| load(a).total_cmp(&load(b)))
        .then_with(|| a.id.cmp(&b.id))
        .is_lt()
}

fn load(c: &Candidate) -> f64 {
    c.in_flight as f64 / f64::from(c.concurrency.max(1))
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
