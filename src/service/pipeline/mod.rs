//! What happens to one job: decode it, answer it from the store if it already
//! completed, call the provider on a key, and hand the outcome to [`finish`] or
//! back to the supervisor for rerouting.
//!
//! Job tasks run on the tokio runtime, not inside actors: a job outlives a
//! worker restart, and the supervisor can start one on any key.

pub mod context;
mod finish;
mod hand_back;
mod in_progress;
mod inbound;
mod prior;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use context::{InFlight, KeyContext, PoolContext, Services, Timing};
pub use hand_back::return_to_broker;
pub use in_progress::{Claim, InProgress};
pub use inbound::Inbound;
use prior::{Prior, prior_answer};

use crate::actors::messages::{BudgetSpent, KeyOutcome, Reroute, RerouteReason};
use crate::amqp::retry;
use keyrelay_core::job::{self, ErrorKind};
use keyrelay_core::keys::Ticket;
use keyrelay_core::provider::{FailureKind, JobFailure, Outcome, OutcomeClass};

/// Entry point for a delivery consumed by `key`'s worker.
pub async fn on_delivery(key: Arc<KeyContext>, services: Arc<Services>, inbound: Inbound) {
    let guard = services.job_started();
    let timing = Timing::start();
    let props = crate::amqp::job_properties(inbound.properties());
    let decoded = job::decode(
        inbound.body(),
        &props,
        &key.pool.decode_context(&services),
        || content_id(&key.pool.name, inbound.body()),
    );
    let job = match decoded {
        Ok(job) => job,
        Err(invalid) => {
            return Box::pin(finish::reject_invalid(
                &services, &key.pool, inbound, invalid, timing,
            ))
            .await;
        }
    };
    let claim = services.in_progress.claim(&job.id).await;
    let cache_key = (job.cache && services.jobs.cache_ttl_secs > 0).then(|| job.cache_key());
    let mut store_unreadable = false;
    match prior_answer(&services, &key.pool, &job, cache_key) {
        Prior::Stored(stored) => {
            return Box::pin(finish::answer_from_store(
                &services, &key.pool, inbound, &job, stored,
            ))
            .await;
        }
        Prior::Cached(answer) => {
            return Box::pin(finish::answer_from_cache(
                &services, &key.pool, inbound, &job, answer, timing,
            ))
            .await;
        }
        Prior::Unknown => store_unreadable = true,
        Prior::None => {}
    }
    // A job back from a delay queue carries its attempts and the key that failed.
    let headers = inbound.properties().headers().as_ref();
    let attempts = retry::header_u32(headers, retry::ATTEMPTS_HEADER)
        .unwrap_or(0)
        .min(services.jobs.max_attempts);
    let failed_here =
        retry::header_text(headers, retry::LAST_KEY_HEADER).as_deref() == Some(key.name.as_str());
    let last_error = retry::header_text(headers, retry::LAST_ERROR_HEADER);
    let inflight = InFlight {
        job,
        inbound,
        guard,
        claim,
        attempts,
        timing,
        last_error,
        cache_key,
    };
    // The store cannot say whether the job was answered (being reopened):
    // running it could pay twice. Back to the queue until it can.
    if store_unreadable {
        return Box::pin(return_to_broker(&services, &key.pool, inflight)).await;
    }
    if attempts > 0 && failed_here {
        // Retry on another key of the pool when one is available.
        return reroute(&services, &key, inflight, RerouteReason::Transient);
    }
    Box::pin(run_on_key(key, services, inflight)).await;
}

/// The id of a job that names none (neither `id` nor AMQP `message_id`): derived
/// from its content, so a redelivery is recognised and answered from the store.
fn content_id(pool: &str, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(pool.as_bytes())
        .chain_update([0])
        .chain_update(body)
        .finalize();
    format!("auto-{}", hex::encode(&digest[..16]))
}

/// Run a job on `key`: one provider call, then finish or reroute.
pub async fn run_on_key(key: Arc<KeyContext>, services: Arc<Services>, mut inflight: InFlight) {
    // The store cannot write (consumers are being paused): an answer now could
    // not be recorded, so a redelivery would pay again. Back to the queue.
    if services.store.write_error().is_some() {
        return Box::pin(return_to_broker(&services, &key.pool, inflight)).await;
    }
    if deadline_passed(&inflight) {
        return Box::pin(fail_deadline(&services, &key, inflight)).await;
    }
    if let Some(failure) = larger_than_any_key(&key.pool, &inflight.job.request) {
        return Box::pin(finish::fail_job(
            &services, &key.pool, None, inflight, failure,
        ))
        .await;
    }
    let admission = match admit(&key, &services, &inflight).await {
        Ok(admission) => admission,
        Err(reason) => return reroute(&services, &key, inflight, reason),
    };
    // Waiting for a slot can take a while: the deadline is checked again.
    if deadline_passed(&inflight) {
        drop(admission);
        return Box::pin(fail_deadline(&services, &key, inflight)).await;
    }
    let guard = key.track();
    let started = Instant::now();
    let outcome = call(&key, &inflight).await;
    let latency = started.elapsed();
    inflight.timing.provider += latency;
    note_call(&key, &mut inflight, &outcome, admission.ticket);
    drop(guard);
    drop(admission);
    report(&services, &key, &outcome, latency);
    settle(services, key, inflight, outcome).await;
}

/// What a call's answer means for its key at once, on the call path: the
/// key's gate, its budget, a limit its headers taught; and whether the job is
/// charged the call.
fn note_call(key: &KeyContext, inflight: &mut InFlight, outcome: &Outcome, ticket: Option<Ticket>) {
    if outcome.is_the_keys_fault() {
        // The key said "no more": no further call starts on it from now,
        // without waiting for the supervisor to hear it (calls already in
        // flight finish). The supervisor sets the state and its timer.
        key.set_available(false);
    } else {
        // A call the key refused (rate limit, quota, dead key) is not the job's.
        inflight.attempts += 1;
    }
    if let Outcome::Success(c) = outcome {
        if let Some(ticket) = ticket {
            key.settle_budget(ticket, c.usage.input_tokens + c.usage.output_tokens);
        }
        if let Some(until) = c.limit_until {
            key.learn_limit(until);
        }
    }
}

/// The job's ending after its call: finished, failed, retried or rerouted.
async fn settle(
    services: Arc<Services>,
    key: Arc<KeyContext>,
    inflight: InFlight,
    outcome: Outcome,
) {
    // Each ending is boxed: inline, the largest of them would make every job's
    // spawned future ~18 KiB, copied on each spawn.
    match outcome {
        Outcome::Success(completion) => {
            Box::pin(finish::complete(&services, &key, inflight, completion)).await;
        }
        Outcome::JobFailed(failure) => {
            Box::pin(finish::fail_job(
                &services,
                &key.pool,
                Some(&key),
                inflight,
                failure,
            ))
            .await;
        }
        Outcome::InvalidResponse { message } => {
            let message = format!("{message} (not retried: the call was probably billed)");
            Box::pin(finish::fail(
                &services,
                &key.pool,
                Some(&key),
                inflight,
                ErrorKind::Upstream,
                message,
            ))
            .await;
        }
        Outcome::Transient { message } => {
            Box::pin(retry_transient(&services, &key, inflight, message)).await
        }
        Outcome::RateLimited { .. } => {
            reroute(&services, &key, inflight, RerouteReason::RateLimited)
        }
        Outcome::QuotaExhausted { .. } => {
            reroute(&services, &key, inflight, RerouteReason::QuotaExhausted)
        }
        Outcome::Unauthorized { .. } => {
            reroute(&services, &key, inflight, RerouteReason::Unauthorized)
        }
    }
}

/// A job whose estimated tokens exceed every key's declared `tpm` can never
/// be admitted, and a provider would refuse it as too large anyway.
fn larger_than_any_key(
    pool: &PoolContext,
    request: &keyrelay_core::provider::ProviderRequest,
) -> Option<JobFailure> {
    let limit = pool.max_tpm?;
    let with_allowance = pool.client.tpm_counts_output_allowance();
    let requested = if with_allowance {
        estimate_tokens(request)
    } else {
        prompt_tokens(request)
    };
    let counted = if with_allowance {
        "prompt plus max_output_tokens, as the provider counts them"
    } else {
        "prompt"
    };
    (requested > limit).then(|| JobFailure {
        limit: Some(limit),
        requested: Some(requested),
        ..JobFailure::new(
            FailureKind::TooLarge,
            format!(
                "the job needs about {requested} tokens ({counted}), more than the {limit} \
                 tokens per minute of the pool's largest key; not sent"
            ),
        )
    })
}

fn deadline_passed(inflight: &InFlight) -> bool {
    inflight
        .job
        .deadline
        .is_some_and(|d| d <= jiff::Timestamp::now())
}

async fn fail_deadline(services: &Services, key: &KeyContext, inflight: InFlight) {
    let deadline = inflight
        .job
        .deadline
        .map(|d| d.to_string())
        .unwrap_or_default();
    let message = format!("deadline {deadline} passed before the job could run");
    finish::fail(
        services,
        &key.pool,
        None,
        inflight,
        ErrorKind::DeadlineExceeded,
        message,
    )
    .await;
}

/// What lets one call go on a key: a concurrency permit, the probe slot when
/// the key is being probed, and its share of the declared limits.
struct Admission<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    _probe: Option<tokio::sync::MutexGuard<'a, ()>>,
    ticket: Option<Ticket>,
}

/// Admit a call on `key`, or say why the job must go elsewhere. A key whose
/// budget is spent tells the supervisor, which parks it until the budget
/// returns: no call ever goes out that would break a declared limit.
async fn admit<'a>(
    key: &'a KeyContext,
    services: &Services,
    inflight: &InFlight,
) -> Result<Admission<'a>, RerouteReason> {
    if !key.is_available() {
        return Err(RerouteReason::KeyUnavailable);
    }
    let permit = key
        .permits
        .acquire()
        .await
        .map_err(|_| RerouteReason::KeyUnavailable)?;
    let probe = match key.is_probing() {
        true => Some(key.probe.lock().await),
        false => None,
    };
    // The key may have left rotation while this job waited.
    if !key.is_available() {
        return Err(RerouteReason::KeyUnavailable);
    }
    let ticket = key
        .take_budget(estimate_tokens(&inflight.job.request))
        .map_err(|blocked| {
            services.budget.do_send(BudgetSpent {
                key: key.id,
                blocked,
            });
            RerouteReason::BudgetSpent
        })?;
    Ok(Admission {
        _permit: permit,
        _probe: probe,
        ticket,
    })
}

/// Tokens a call may use, before it is made: ~4 characters a token for the
/// prompt, plus the output allowance (providers count it against tpm).
pub fn estimate_tokens(request: &keyrelay_core::provider::ProviderRequest) -> u64 {
    prompt_tokens(request) + u64::from(request.max_output_tokens.unwrap_or(0))
}

/// The prompt's tokens, estimated at ~4 characters a token.
fn prompt_tokens(request: &keyrelay_core::provider::ProviderRequest) -> u64 {
    let chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
    (chars as u64).div_ceil(4)
}

async fn call(key: &KeyContext, inflight: &InFlight) -> Outcome {
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

/// Transient failures are retried with backoff, preferably on another key,
/// until `jobs.max_attempts` calls have been made.
async fn retry_transient(
    services: &Arc<Services>,
    key: &Arc<KeyContext>,
    mut inflight: InFlight,
    message: String,
) {
    if inflight.attempts >= services.jobs.max_attempts {
        let message = format!("gave up after {} attempts: {message}", inflight.attempts);
        return hand_back::give_up(services, key, inflight, message).await;
    }
    inflight.last_error = Some(message);
    if let Err(inflight) = hand_back::delay_retry(services, key, inflight).await {
        // No delay queue (broker trouble): wait here instead, then reroute.
        tokio::time::sleep(retry::backoff(inflight.attempts)).await;
        reroute(services, key, inflight, RerouteReason::Transient);
    }
}

/// Tally the call for the usage statistics, and tell the supervisor when the
/// outcome can change the key's state: every failure, but a success only when
/// the key has something for it to clear (most successes cost no message).
fn report(services: &Services, key: &KeyContext, outcome: &Outcome, latency: Duration) {
    key.calls
        .record(outcome.class(), outcome.billed_usage(), latency);
    match outcome.class() {
        OutcomeClass::Success if !key.success_reportable() => return,
        // Set here, not only when the supervisor handles it: successes that
        // finish before then must still reach it to reset the streak.
        OutcomeClass::Transient => key.set_report_success(true),
        _ => {}
    }
    services.outcomes.do_send(KeyOutcome {
        key: key.id,
        outcome: summary(outcome),
        latency,
    });
}

/// The outcome as the supervisor needs it: answer text (a success's, a
/// failure's partial one) is left behind.
fn summary(outcome: &Outcome) -> Outcome {
    match outcome {
        Outcome::Success(c) => Outcome::Success(keyrelay_core::provider::Completion {
            text: String::new(),
            usage: c.usage,
            limit_until: c.limit_until,
        }),
        Outcome::JobFailed(f) => Outcome::JobFailed(JobFailure {
            partial_text: None,
            ..f.clone()
        }),
        other => other.clone(),
    }
}

fn reroute(services: &Services, key: &KeyContext, inflight: InFlight, reason: RerouteReason) {
    services.reroutes.do_send(Reroute {
        from: key.id,
        reason,
        inflight,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyrelay_core::provider::{ChatMessage, ProviderRequest, Role};

    #[test]
    fn token_estimate_counts_prompt_and_output_allowance() {
        let request = ProviderRequest {
            model: "m".into(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: "x".repeat(10),
            }],
            json_output: false,
            max_output_tokens: Some(100),
            temperature: None,
            user: None,
        };
        assert_eq!(estimate_tokens(&request), 3 + 100);
    }

    #[test]
    fn content_ids_are_stable_and_pool_specific() {
        assert_eq!(content_id("p", b"{}"), content_id("p", b"{}"));
        assert_ne!(content_id("p", b"{}"), content_id("q", b"{}"));
        assert!(content_id("p", b"{}").starts_with("auto-"));
    }
}

#[cfg(test)]
mod future_size {
    use super::*;

    fn size_of_output<A, B, C, F>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every job is a spawned `on_delivery` future, which tokio copies on
    /// spawn. With its endings inline it was ~18 KiB, and copying it was 6 %
    /// of keyrelay's instructions per job; boxed, it stays small.
    #[test]
    fn job_futures_stay_small() {
        assert!(
            size_of_output(on_delivery) < 4096,
            "{}",
            size_of_output(on_delivery)
        );
        assert!(
            size_of_output(run_on_key) < 4096,
            "{}",
            size_of_output(run_on_key)
        );
    }
}
