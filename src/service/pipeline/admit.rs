//! Admission: whether a call may go on a key now — a concurrency permit, the
//! probe slot while the key is probed, and its share of the declared limits —
//! and the token estimate that share is taken for.

use std::time::Duration;

use tokio::sync::{MutexGuard, SemaphorePermit};

use super::context::{InFlight, KeyContext, PoolContext, Services};
use super::estimate::{estimate_tokens, prompt_tokens};
use keyrelay_core::keys::Ticket;
use keyrelay_core::provider::{FailureKind, JobFailure, ProviderRequest};
use keyrelay_core::route::Refusal;

/// What lets one call go on a key; dropping it frees the slot.
pub(super) struct Admission<'a> {
    _permit: SemaphorePermit<'a>,
    _probe: Option<MutexGuard<'a, ()>>,
    /// The key's budget taken for the call, to correct with the real count.
    pub ticket: Option<Ticket>,
}

/// Admit a call on `key`, or say why the job must go elsewhere. A key whose
/// budget is spent tells the supervisor, which parks it until the budget
/// returns: no call ever goes out that would break a declared limit.
pub(super) async fn admit<'a>(
    key: &'a KeyContext,
    services: &Services,
    inflight: &InFlight,
) -> Result<Admission<'a>, Refusal> {
    // Not while this process may have lost its leases (see `lease_gate`).
    if !key.is_available() || !services.lease.is_open() {
        return Err(Refusal::KeyUnavailable);
    }
    // A high-priority job has a slot of its own: it never queues behind the
    // normal jobs this key already holds.
    let slots = if inflight.inbound.is_high() {
        &key.high_permit
    } else {
        &key.permits
    };
    let permit = slots.acquire().await.map_err(|_| Refusal::KeyUnavailable)?;
    let probe = match key.is_probing() {
        true => Some(key.probe.lock().await),
        false => None,
    };
    // The key may have left rotation (or this process its lease) meanwhile.
    if !key.is_available() || !services.lease.is_open() {
        return Err(Refusal::KeyUnavailable);
    }
    let ticket = take_budget(
        key,
        services,
        estimate_tokens(&inflight.job.request, key.pool.provider),
    )
    .await?;
    Ok(Admission {
        _permit: permit,
        _probe: probe,
        ticket,
    })
}

/// How long a call waits for its key's next fleet allowance before the job
/// goes back to the queue. A grant normally takes one publish confirm.
const ALLOWANCE_WAIT: Duration = Duration::from_secs(2);

/// Take the call's share of the key's limits. A spent fleet allowance is
/// waited out (the lease keeper grants the next one at once); a spent
/// declared limit parks the key.
async fn take_budget(
    key: &KeyContext,
    services: &Services,
    tokens: u64,
) -> Result<Option<Ticket>, Refusal> {
    loop {
        if let Some(taken) = take_once(key, services, tokens) {
            return taken;
        }
        // Out of fleet allowance: wait for the next grant, registered before
        // a second look so that a grant in between is not missed. (Not done
        // up front: it takes a lock, and nearly every call never waits.)
        let granted = key.allowance_granted.notified();
        tokio::pin!(granted);
        granted.as_mut().enable();
        if let Some(taken) = take_once(key, services, tokens) {
            return taken;
        }
        key.need_allowance(tokens);
        services.lease.want_allowance();
        let waited = tokio::time::timeout(ALLOWANCE_WAIT, granted).await;
        if waited.is_err() || !key.is_available() || !services.lease.is_open() {
            return Err(Refusal::KeyUnavailable);
        }
    }
}

/// One try at the key's budget; `None` when only the fleet allowance is out.
fn take_once(
    key: &KeyContext,
    services: &Services,
    tokens: u64,
) -> Option<Result<Option<Ticket>, Refusal>> {
    match key.take_budget(tokens) {
        Ok(ticket) => Some(Ok(ticket)),
        Err(blocked) if blocked.is_fleet_allowance() => None,
        Err(blocked) => {
            // Closed at once, as for a provider's "no more": a job refused
            // here must not find this key open again while the supervisor,
            // which parks it and reopens it when the budget returns, has yet
            // to hear.
            key.set_available(false);
            services.events.budget_spent(key.id, blocked);
            Some(Err(Refusal::BudgetSpent))
        }
    }
}

/// A job whose estimated tokens exceed every key's declared `tpm` can never
/// be admitted, and a provider would refuse it as too large anyway.
pub(super) fn larger_than_any_key(
    pool: &PoolContext,
    request: &ProviderRequest,
) -> Option<JobFailure> {
    let limit = pool.max_tpm?;
    let with_allowance = pool.client.tpm_counts_output_allowance();
    let requested = if with_allowance {
        estimate_tokens(request, pool.provider)
    } else {
        prompt_tokens(request, pool.provider)
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
