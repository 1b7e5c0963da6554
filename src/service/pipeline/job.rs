//! The path of one job, as a straight line: decode → (answer from the store) →
//! admit → call → settle, where settling applies the routing decision — finish
//! (reply, ack), fail, retry later, give up, run on another key, or hand back.
//!
//! Job tasks run on the tokio runtime, not inside actors: a job outlives a
//! worker restart, and moves to another key without passing through an actor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use super::admit::{admit, larger_than_any_key};
use super::batch;
use super::call::{call, report};
use super::context::{InFlight, KeyContext, Services, Timing};
use super::finish;
use super::hand_back::{self, return_to_broker};
use super::inbound::Inbound;
use super::prior::{Prior, prior_answer};
use super::route;
use super::spend::{self, OverBudget};
use crate::amqp::retry;
use keyrelay_core::config::OnBudgetExceeded;
use keyrelay_core::job::{self, ErrorKind};
use keyrelay_core::keys::{Blocked, Spent, Ticket};
use keyrelay_core::provider::Outcome;
use keyrelay_core::route::{Decision, Event};
use keyrelay_core::spend::{BudgetScope, Period, Refused};

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
    // Counted at its first delivery, whatever answers it (store, cache, a call).
    batch::seen(&services, &job, props.batch_total);
    let cancelled = batch::cancelled(&services, &job);
    match prior_answer(&services, &key.pool, &job, cache_key) {
        Prior::Stored(stored) => {
            return Box::pin(finish::answer_from_store(
                &services, &key.pool, inbound, &job, stored,
            ))
            .await;
        }
        // A cancelled job is answered `cancelled`, not from the cache.
        Prior::Cached(answer) if cancelled.is_none() => {
            return Box::pin(finish::answer_from_cache(
                &services, &key.pool, inbound, &job, answer, timing,
            ))
            .await;
        }
        Prior::Unknown => store_unreadable = true,
        Prior::None | Prior::Cached(_) => {}
    }
    // A job back from a delay queue carries its attempts and the key that failed.
    let headers = inbound.properties().headers().as_ref();
    let attempts = retry::header_u32(headers, retry::ATTEMPTS_HEADER)
        .unwrap_or(0)
        .min(services.jobs.max_attempts);
    let failed_here =
        retry::header_text(headers, retry::LAST_KEY_HEADER).as_deref() == Some(key.name.as_str());
    let last_error = retry::header_text(headers, retry::LAST_ERROR_HEADER);
    let batch_running = job
        .batch
        .as_deref()
        .map(|b| services.batches_running.enter(b));
    let inflight = InFlight {
        job,
        inbound,
        guard,
        claim,
        attempts,
        timing,
        last_error,
        cache_key,
        batch_running,
    };
    // The store cannot say whether the job was answered (being reopened):
    // running it could pay twice. Back to the queue until it can.
    if store_unreadable {
        return Box::pin(return_to_broker(&services, &key.pool, inflight)).await;
    }
    if let Some(why) = cancelled {
        let pool = &key.pool;
        return Box::pin(finish::fail(
            &services,
            pool,
            None,
            inflight,
            ErrorKind::Cancelled,
            why,
        ))
        .await;
    }
    if attempts > 0 && failed_here {
        // A retry prefers another key of the pool.
        return Box::pin(move_on(services, &key, inflight, Event::RetryDue)).await;
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

/// Run a job on `key`: one provider call, then settle.
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
    // Money before the key: a call whose estimate would pass a budget does
    // not go. The reservation holds the estimate until the cost is counted.
    let reservation = match spend::reserve(&services, &key, &inflight) {
        Ok(reservation) => reservation,
        Err(over) => return Box::pin(over_budget(services, key, inflight, over)).await,
    };
    let admission = match admit(&key, &services, &inflight).await {
        Ok(admission) => admission,
        Err(refusal) => {
            // Not reserved while it looks for another key.
            drop(reservation);
            let event = Event::NotAdmitted(refusal);
            return Box::pin(move_on(services, &key, inflight, event)).await;
        }
    };
    // Waiting for a slot can take a while: the deadline is checked again.
    if deadline_passed(&inflight) {
        drop(admission);
        return Box::pin(fail_deadline(&services, &key, inflight)).await;
    }
    let guard = key.track();
    let started = Instant::now();
    let mut outcome = call(&key, &inflight).await;
    let latency = started.elapsed();
    inflight.timing.provider += latency;
    note_call(&key, &mut inflight, &outcome, admission.ticket);
    spend::record(&services, &key, &inflight, &mut outcome);
    drop(reservation);
    drop(guard);
    drop(admission);
    report(&services, &key, &outcome, latency);
    Box::pin(settle(services, key, inflight, outcome)).await;
}

/// A budget the call would pass.
///
/// - Spent: a key's (or, when its pool waits, the pool's) parks the key
///   until the period ends and the job goes elsewhere or back to the queue;
///   a user's (or a pool's that fails) fails the job with `budget_exceeded`,
///   dead-lettered so that it can be replayed.
/// - In flight: the calls in flight may still spend what is left; the job
///   waits for them to be counted and tries again.
/// - Never fits, or no price to check: the job fails with `budget_exceeded`.
async fn over_budget(
    services: Arc<Services>,
    key: Arc<KeyContext>,
    inflight: InFlight,
    over: OverBudget,
) {
    let exceeded = match over {
        OverBudget::Unpriced(message) => {
            return Box::pin(give_up_on_budget(&services, &key, inflight, message)).await;
        }
        OverBudget::Exceeded(exceeded) => exceeded,
    };
    match exceeded.refused {
        Refused::InFlight => {
            tokio::time::sleep(IN_FLIGHT_WAIT).await;
            return Box::pin(run_on_key(key, services, inflight)).await;
        }
        Refused::NeverFits => {
            let message = format!("budget exceeded: {exceeded}");
            return Box::pin(give_up_on_budget(&services, &key, inflight, message)).await;
        }
        Refused::Spent => {}
    }
    let parks_key = match exceeded.scope {
        BudgetScope::Key => true,
        BudgetScope::Pool => key.pool.on_budget_exceeded == OnBudgetExceeded::Wait,
        BudgetScope::User => false,
    };
    if !parks_key {
        let message = format!("budget exceeded: {exceeded}");
        return Box::pin(give_up_on_budget(&services, &key, inflight, message)).await;
    }
    let limit = match (exceeded.scope, exceeded.period) {
        (BudgetScope::Pool, Period::Day) => "pool budget_usd_per_day",
        (BudgetScope::Pool, Period::Month) => "pool budget_usd_per_month",
        (_, period) => period.setting(),
    };
    // At once, as for a provider's "no more" (see `admit::take_once`).
    key.set_available(false);
    let blocked = Blocked {
        until: exceeded.until,
        spent: Spent::Day,
        limit,
    };
    services.events.budget_spent(key.id, blocked);
    let event = Event::NotAdmitted(keyrelay_core::route::Refusal::BudgetSpent);
    Box::pin(move_on(services, &key, inflight, event)).await;
}

/// How long a job waits for the calls in flight to be counted when they may
/// still spend what is left of a budget.
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

async fn give_up_on_budget(
    services: &Services,
    key: &KeyContext,
    inflight: InFlight,
    message: String,
) {
    hand_back::give_up(services, key, inflight, ErrorKind::BudgetExceeded, message).await;
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

/// The job's ending after its call, as the routing decision says.
async fn settle(
    services: Arc<Services>,
    key: Arc<KeyContext>,
    inflight: InFlight,
    outcome: Outcome,
) {
    let event = Event::Answered(outcome.class());
    // Each ending is boxed: inline, the largest of them would make every job's
    // spawned future ~18 KiB, copied on each spawn.
    match (route::decide(&services, &key, &inflight, event), outcome) {
        (Decision::Finish, Outcome::Success(completion)) => {
            Box::pin(finish::complete(&services, &key, inflight, completion)).await;
        }
        (Decision::Fail(_), Outcome::JobFailed(failure)) => {
            let pool = &key.pool;
            Box::pin(finish::fail_job(
                &services,
                pool,
                Some(&key),
                inflight,
                failure,
            ))
            .await;
        }
        // Only an invalid response is failed with its message: it was billed.
        (Decision::Fail(kind), outcome) => {
            let message = format!(
                "{} (not retried: the call was probably billed)",
                outcome.message()
            );
            let pool = &key.pool;
            Box::pin(finish::fail_billed_unknown(
                &services, pool, &key, inflight, kind, message,
            ))
            .await;
        }
        (Decision::RetryLater, outcome) => {
            Box::pin(retry_later(
                services,
                key,
                inflight,
                outcome.message().to_owned(),
            ))
            .await;
        }
        (Decision::GiveUp(kind), outcome) => {
            let message = format!(
                "gave up after {} attempts: {}",
                inflight.attempts,
                outcome.message()
            );
            Box::pin(hand_back::give_up(&services, &key, inflight, kind, message)).await;
        }
        // RunOn or HandBack (a success always finishes).
        (decision, _) => Box::pin(apply_move(services, &key, inflight, decision)).await,
    }
}

/// Move the job off `key` after `event`, wherever routing says.
async fn move_on(services: Arc<Services>, key: &Arc<KeyContext>, inflight: InFlight, event: Event) {
    let decision = route::decide(&services, key, &inflight, event);
    apply_move(services, key, inflight, decision).await;
}

/// Run on the chosen key (a task of its own, as a fresh delivery would be)
/// or hand the job back to its queue.
async fn apply_move(
    services: Arc<Services>,
    key: &Arc<KeyContext>,
    inflight: InFlight,
    decision: Decision,
) {
    let target = match decision {
        Decision::RunOn(id) => services.key(&key.pool.name, id),
        _ => None,
    };
    match target {
        Some(target) => drop(tokio::spawn(run_on_key_task(target, services, inflight))),
        None => return_to_broker(&services, &key.pool, inflight).await,
    }
}

/// [`run_on_key`] as a task of its own. Its type is named, not inferred: a
/// job that moves runs `run_on_key` from inside `run_on_key`, and the
/// compiler proves such a future `Send` only through a named type.
fn run_on_key_task(
    key: Arc<KeyContext>,
    services: Arc<Services>,
    inflight: InFlight,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(run_on_key(key, services, inflight))
}

/// A transient failure with attempts left: park the job in its delay queue;
/// when that fails (broker trouble), wait here instead and retry elsewhere.
async fn retry_later(
    services: Arc<Services>,
    key: Arc<KeyContext>,
    mut inflight: InFlight,
    message: String,
) {
    inflight.last_error = Some(message);
    if let Err(inflight) = hand_back::delay_retry(&services, &key, inflight).await {
        tokio::time::sleep(retry::backoff(inflight.attempts)).await;
        move_on(services, &key, inflight, Event::RetryDue).await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
