//! The routing decision for a job, from the states of its pool's keys as they
//! are right now (each key's own flags, set by the supervisor and, at once, by
//! the call that found the key spent). The decision itself is
//! [`keyrelay_core::route::decide`]; the job task applies it.

use super::context::{InFlight, KeyContext, Services};
use keyrelay_core::metrics as m;
use keyrelay_core::route::Candidate;
use keyrelay_core::route::{self, Decision, Event, Progress};

/// Where the job on `key` goes after `event`.
pub(super) fn decide(
    services: &Services,
    key: &KeyContext,
    inflight: &InFlight,
    event: Event,
) -> Decision {
    let job = Progress {
        on: key.id,
        attempts: inflight.attempts,
        max_attempts: services.jobs.max_attempts,
    };
    let pool_keys = services.pool_keys.get(&key.pool.name);
    let keys = pool_keys.into_iter().flatten().map(|k| candidate(k, key));
    let decision = route::decide(event, job, keys);
    if let Some(reason) = event.reroute_reason() {
        metrics::counter!(m::REROUTES_TOTAL, "pool" => key.pool.name.clone(), "reason" => reason)
            .increment(1);
    }
    decision
}

/// `key` as routing sees it, for a job on `on`.
fn candidate(key: &KeyContext, on: &KeyContext) -> Candidate {
    Candidate {
        id: key.id,
        priority: key.priority,
        in_flight: key.in_flight(),
        concurrency: key.concurrency,
        available: key.is_available(),
        shares_quota: key.quota_group.is_some() && key.quota_group == on.quota_group,
    }
}
