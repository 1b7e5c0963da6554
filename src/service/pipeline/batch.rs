//! A job's batch and cancellation on the job's path: counted once when first
//! delivered and once when answered, and answered `cancelled` without a call
//! when an operator cancelled it or its batch.

use tracing::warn;

use super::context::Services;
use keyrelay_core::job::{Job, JobResult};
use keyrelay_core::spend::to_nano;
use keyrelay_core::store::batches::Cancel;

/// Count a delivered job in its batch (once, whatever the redeliveries).
pub(super) fn seen(services: &Services, job: &Job, declared_total: Option<u64>) {
    let Some(batch) = &job.batch else {
        return;
    };
    let now = jiff::Timestamp::now();
    if let Err(e) = services
        .store
        .batch_seen(batch, &job.pool, &job.id, declared_total, now)
    {
        warn!(job_id = %job.id, batch, error = %e, "cannot count the job in its batch");
    }
}

/// An invalid job of a batch (read leniently from its body) is answered
/// too: counted as seen and failed with `invalid_job`, or its batch would
/// never be done. Returns the batch it was counted in.
pub(super) fn invalid(
    services: &Services,
    pool: &str,
    body: &[u8],
    id: &str,
    declared_total: Option<u64>,
) -> Option<String> {
    let value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let batch = value["batch"].as_str()?;
    keyrelay_core::job::valid_batch(batch).ok()?;
    let store = &services.store;
    let counted = store
        .batch_seen(batch, pool, id, declared_total, jiff::Timestamp::now())
        .and_then(|_| store.batch_done(batch, id, "invalid_job", 0));
    if let Err(e) = counted {
        warn!(job_id = %id, batch, error = %e, "cannot count the invalid job in its batch");
    }
    Some(batch.to_owned())
}

/// Why the job must not run, if it or its batch was cancelled.
pub(super) fn cancelled(services: &Services, job: &Job) -> Option<String> {
    let store = &services.store;
    let by_id = store.cancelled(&Cancel::Job(&job.id)).ok().flatten();
    if let Some(at) = by_id {
        return Some(format!("the job was cancelled at {at}"));
    }
    let batch = job.batch.as_deref()?;
    let at = store.cancelled(&Cancel::Batch(batch)).ok().flatten()?;
    Some(format!("its batch `{batch}` was cancelled at {at}"))
}

/// Count an answered job in its batch (its first answer only), and mark the
/// batch finished when every declared job is answered.
pub(super) fn done(services: &Services, batch: Option<&str>, result: &JobResult) {
    let Some(batch) = batch else {
        return;
    };
    let store = &services.store;
    let nano = to_nano(result.usage.cost_usd.unwrap_or(0.0));
    match store.batch_done(batch, &result.id, result.outcome_label(), nano) {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            warn!(job_id = %result.id, batch, error = %e, "cannot count the answer in its batch");
            return;
        }
    }
    let finished = store.batch_meta(batch).ok().flatten().and_then(|meta| {
        let total = meta.declared_total?;
        let counts = store.batch_counts(batch).ok()?;
        (counts.done() >= total).then_some(())
    });
    if finished.is_some()
        && let Err(e) = store.batch_finished(batch, jiff::Timestamp::now())
    {
        warn!(batch, error = %e, "cannot mark the batch finished");
    }
}
