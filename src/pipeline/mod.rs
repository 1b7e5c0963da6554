//! What happens to one job: decode it, answer it from the store if it already
//! completed, call the provider on a key, and hand the outcome to [`finish`] or
//! back to the supervisor for rerouting.
//!
//! Job tasks run on the tokio runtime, not inside actors: a job outlives a
//! worker restart, and the supervisor can start one on any key.

pub mod context;
mod finish;
mod in_progress;
mod inbound;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

pub use context::{InFlight, KeyContext, PoolContext, Services, Timing};
pub use finish::return_to_broker;
pub use in_progress::{Claim, InProgress};
pub use inbound::Inbound;

use crate::actors::messages::{KeyOutcome, Reroute, RerouteReason};
use crate::job::{self, ErrorKind};
use crate::provider::Outcome;

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
            return finish::reject_invalid(&services, &key.pool, inbound, invalid, timing).await;
        }
    };
    let claim = services.in_progress.claim(&job.id).await;
    match services.store.result(&job.id) {
        Ok(Some(stored)) => {
            return finish::answer_from_store(&services, &key.pool, inbound, &job, stored).await;
        }
        Ok(None) => {}
        // A corrupt record is overwritten by the new result; say so.
        Err(e) => {
            warn!(job_id = %job.id, error = %e, "stored result unreadable; running the job again")
        }
    }
    let inflight = InFlight {
        job,
        inbound,
        guard,
        claim,
        attempts: 0,
        timing,
        last_error: None,
    };
    run_on_key(key, services, inflight).await;
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
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("auto-{hex}")
}

/// Run a job on `key`: one provider call, then finish or reroute.
pub async fn run_on_key(key: Arc<KeyContext>, services: Arc<Services>, mut inflight: InFlight) {
    if !key.is_available() {
        return reroute(&services, &key, inflight, RerouteReason::KeyUnavailable);
    }
    let Ok(permit) = key.permits.acquire().await else {
        return reroute(&services, &key, inflight, RerouteReason::KeyUnavailable);
    };
    // The key may have left rotation while this job waited for a permit.
    if !key.is_available() {
        drop(permit);
        return reroute(&services, &key, inflight, RerouteReason::KeyUnavailable);
    }
    let guard = key.track();
    inflight.attempts += 1;
    let started = Instant::now();
    let outcome = call(&key, &inflight).await;
    inflight.timing.provider += started.elapsed();
    drop(guard);
    drop(permit);
    services.outcomes.do_send(KeyOutcome {
        key: key.id,
        outcome: summary(&outcome),
    });
    match outcome {
        Outcome::Success(completion) => {
            finish::complete(&services, &key, inflight, completion).await;
        }
        Outcome::BadRequest { message } => {
            finish::fail(
                &services,
                &key.pool,
                Some(&key),
                inflight,
                ErrorKind::BadRequest,
                message,
            )
            .await;
        }
        Outcome::InvalidResponse { message } => {
            let message = format!("{message} (not retried: the call was probably billed)");
            finish::fail(
                &services,
                &key.pool,
                Some(&key),
                inflight,
                ErrorKind::Upstream,
                message,
            )
            .await;
        }
        Outcome::Transient { message } => retry_transient(&services, &key, inflight, message).await,
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
    if let Outcome::Success(c) = &outcome {
        key.metrics.tokens_in.increment(c.usage.input_tokens);
        key.metrics.tokens_out.increment(c.usage.output_tokens);
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
        return finish::fail(
            services,
            &key.pool,
            Some(key),
            inflight,
            ErrorKind::Upstream,
            message,
        )
        .await;
    }
    inflight.last_error = Some(message);
    tokio::time::sleep(backoff(inflight.attempts)).await;
    reroute(services, key, inflight, RerouteReason::Transient);
}

/// The outcome as the supervisor needs it: a success's text is left behind.
fn summary(outcome: &Outcome) -> Outcome {
    match outcome {
        Outcome::Success(c) => Outcome::Success(crate::provider::Completion {
            text: String::new(),
            usage: c.usage,
        }),
        other => other.clone(),
    }
}

/// Exponential backoff with full jitter: 0.25 s, 0.5 s, 1 s ... capped at 8 s.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 250u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(8_000);
    Duration::from_millis(rand::random_range(ceiling_ms / 2..=ceiling_ms))
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

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..20 {
            let d = backoff(attempt);
            let ceiling = 250u64 * (1 << (attempt - 1).min(5));
            assert!(
                d <= Duration::from_millis(ceiling.min(8_000)),
                "{attempt}: {d:?}"
            );
            assert!(
                d >= Duration::from_millis(ceiling.min(8_000) / 2),
                "{attempt}: {d:?}"
            );
        }
    }
}
