//! What is known of a job before it runs: its stored result (a redelivery,
//! a re-sent id), an identical request's cached answer, or that the store
//! cannot say right now.

use tracing::warn;

use super::context::{PoolContext, Services};
use keyrelay_core::job;

/// What is known of a job before it runs.
pub(super) enum Prior {
    /// Its final result is stored (or kept while the store could not write).
    Stored(job::JobResult),
    /// An identical request was answered within the cache TTL.
    Cached(job::JobResult),
    /// The store cannot be read right now.
    Unknown,
    /// Nothing: run it.
    None,
}

pub(super) fn prior_answer(
    services: &Services,
    pool: &PoolContext,
    job: &job::Job,
    cache_key: Option<job::CacheKey>,
) -> Prior {
    match services.store.result_of(&pool.name, &job.id) {
        Ok(Some(stored)) if stored.is_final() => Prior::Stored(stored),
        // A job given up on (upstream, no key) that comes back was replayed from
        // the dead-letter queue on purpose: it runs again.
        Ok(Some(_)) => Prior::None,
        Ok(None) => cached_answer(services, job, cache_key).map_or(Prior::None, Prior::Cached),
        // A corrupt record is overwritten by the new result; say so.
        Err(e @ keyrelay_core::store::StoreError::Corrupt { .. }) => {
            warn!(job_id = %job.id, error = %e, "stored result unreadable; running the job again");
            Prior::None
        }
        Err(e) => {
            warn!(job_id = %job.id, error = %e, "the store cannot be read; the job goes back to its queue");
            Prior::Unknown
        }
    }
}

fn cached_answer(
    services: &Services,
    job: &job::Job,
    key: Option<job::CacheKey>,
) -> Option<job::JobResult> {
    match services.store.cached_result(&key?) {
        Ok(answer) => answer,
        Err(e) => {
            warn!(job_id = %job.id, error = %e, "response cache unreadable; calling the provider");
            None
        }
    }
}
