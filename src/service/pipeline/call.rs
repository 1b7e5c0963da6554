//! One provider call on a key, and what it tells the key's owner: the call's
//! metrics and tally, and the outcome reported through the key-events port.

use std::time::{Duration, Instant};

use super::context::{InFlight, KeyContext, Services};
use keyrelay_core::provider::{Completion, JobFailure, Outcome, OutcomeClass};

/// Call the provider with the job's request on `key`.
pub(super) async fn call(key: &KeyContext, inflight: &InFlight) -> Outcome {
    let started = Instant::now();
    let outcome = key
        .pool
        .client
        .call(&key.secret, &inflight.job.request)
        .await;
    key.pool
        .metrics
        .upstream_duration
        .record(started.elapsed().as_secs_f64());
    key.metrics.upstream(outcome.class());
    key.record_use(outcome.class());
    let billed = outcome.billed_usage();
    if billed != Default::default() {
        key.metrics
            .tokens(billed.input_tokens, billed.output_tokens);
    }
    outcome
}

/// Tally the call for the usage statistics, and tell the supervisor when the
/// outcome can change the key's state: every failure, but a success only when
/// the key has something for it to clear (most successes cost no message).
pub(super) fn report(services: &Services, key: &KeyContext, outcome: &Outcome, latency: Duration) {
    key.calls
        .record(outcome.class(), outcome.billed_usage(), latency);
    match outcome.class() {
        OutcomeClass::Success if !key.success_reportable() => return,
        // Set here, not only when the supervisor handles it: successes that
        // finish before then must still reach it to reset the streak.
        OutcomeClass::Transient => key.set_report_success(true),
        _ => {}
    }
    services.events.outcome(key.id, summary(outcome), latency);
}

/// The outcome as the supervisor needs it: answer text (a success's, a
/// failure's partial one) is left behind.
fn summary(outcome: &Outcome) -> Outcome {
    match outcome {
        Outcome::Success(c) => Outcome::Success(Completion {
            text: String::new(),
            usage: c.usage,
            limit_until: c.limit_until,
            cut_short: c.cut_short,
        }),
        Outcome::JobFailed(f) => Outcome::JobFailed(JobFailure {
            partial_text: None,
            ..f.clone()
        }),
        other => other.clone(),
    }
}
