//! The end of a job: build its result, make it durable, publish the reply with a
//! confirm, and only then ack the delivery. Every failure path says whether the
//! job goes back to the queue.

use std::time::Instant;

use serde_json::Value;
use tracing::{debug, error, info, warn};

use super::context::{InFlight, KeyContext, PoolContext, Services, Timing};
use super::inbound::Inbound;
use crate::amqp::{PublishOutcome, dead_letter_properties, reply_properties};
use keyrelay_core::job::{
    CacheKey, ErrorKind, InvalidJob, Job, JobError, JobResult, JobStatus, ReplyAddress,
    ResponseFormat,
};
use keyrelay_core::metrics as m;
use keyrelay_core::provider::{Completion, JobFailure, Usage};

/// A successful provider call: parse JSON output when asked for, then deliver.
pub async fn complete(
    services: &Services,
    key: &KeyContext,
    inflight: InFlight,
    completion: Completion,
) {
    let mut result = base_result(&inflight, &key.pool, Some(key), JobStatus::Succeeded);
    result.usage = completion.usage;
    match check_output(
        &inflight.job.response_format,
        &completion.text,
        completion.cut_short,
    ) {
        Ok(json) => result.json = json,
        Err(error) => {
            result.status = JobStatus::Failed;
            result.error = Some(error);
        }
    }
    result.text = Some(completion.text);
    deliver(services, &key.pool, Some(key), inflight, result).await;
}

/// A job that ends in failure (bad request, retries exhausted).
pub async fn fail(
    services: &Services,
    pool: &PoolContext,
    key: Option<&KeyContext>,
    inflight: InFlight,
    kind: ErrorKind,
    message: String,
) {
    let mut result = base_result(&inflight, pool, key, JobStatus::Failed);
    result.error = Some(JobError::new(kind, message));
    deliver(services, pool, key, inflight, result).await;
}

/// A job whose call was probably billed but whose answer is unusable: its
/// usage, and so its cost, is unknown (`cost_usd: null`).
pub async fn fail_billed_unknown(
    services: &Services,
    pool: &PoolContext,
    key: &KeyContext,
    inflight: InFlight,
    kind: ErrorKind,
    message: String,
) {
    let mut result = base_result(&inflight, pool, Some(key), JobStatus::Failed);
    result.usage.cost_usd = None;
    result.error = Some(JobError::new(kind, message));
    deliver(services, pool, Some(key), inflight, result).await;
}

/// A job the provider (or the pool's limits) says cannot succeed: the reply
/// carries the provider's reason, any partial text and the tokens billed.
/// Final, and never cached (only successes are).
pub async fn fail_job(
    services: &Services,
    pool: &PoolContext,
    key: Option<&KeyContext>,
    inflight: InFlight,
    failure: JobFailure,
) {
    let mut result = base_result(&inflight, pool, key, JobStatus::Failed);
    result.usage = failure.usage;
    result.text = failure.partial_text;
    result.error = Some(JobError {
        kind: failure.kind.into(),
        message: failure.message,
        reason: failure.reason,
        limit: failure.limit,
        requested: failure.requested,
        violations: Vec::new(),
    });
    info!(
        job_id = %result.id,
        pool = %pool.name,
        kind = failure.kind.as_str(),
        "the provider says the job cannot succeed; failed without retry"
    );
    deliver(services, pool, key, inflight, result).await;
}

/// A job that breaks the contract: failed reply, dead letter with the reason, ack.
pub async fn reject_invalid(
    services: &Services,
    pool: &PoolContext,
    inbound: Inbound,
    invalid: InvalidJob,
    timing: Timing,
) {
    warn!(job_id = %invalid.id, pool = %pool.name, reason = %invalid.reason, "invalid job");
    let declared = crate::amqp::job_properties(inbound.properties()).batch_total;
    let batch = super::batch::invalid(services, &pool.name, inbound.body(), &invalid.id, declared);
    if !dead_letter(
        services,
        pool,
        &inbound,
        ErrorKind::InvalidJob,
        &invalid.reason,
    )
    .await
    {
        // Without its dead letter the job must not disappear: back to the queue.
        return inbound.nack(true);
    }
    let result = JobResult {
        id: invalid.id,
        status: JobStatus::Failed,
        text: None,
        json: None,
        error: Some(JobError::new(ErrorKind::InvalidJob, invalid.reason)),
        pool: pool.name.clone(),
        model: None,
        key: None,
        usage: no_call(),
        attempts: 0,
        latency_ms: timing.received.elapsed().as_millis() as u64,
        metadata: Value::Object(Default::default()),
        user: None,
        cached: false,
        batch,
        completed_at: jiff::Timestamp::now(),
    };
    store_invalid(services, &result).await;
    // The dead letter is already safe, so a lost reply must not dead-letter it twice.
    publish_and_ack(
        services,
        pool,
        inbound,
        &invalid.reply,
        &result,
        timing,
        OnReplyFailure::Ack,
    )
    .await;
}

/// Store an invalid job's failure so `GET /v1/jobs/{id}` finds it, unless
/// its id already has a result: a broken body resent under a good job's id
/// must not hide that job's answer. It is not final ([`JobResult::is_final`]):
/// a corrected job with the same id runs.
async fn store_invalid(services: &Services, result: &JobResult) {
    if let Err(e) = services.store.persist_if_absent(result).await {
        warn!(job_id = %result.id, error = %e, "cannot store the invalid job's failure");
    }
}

/// A redelivered job that already completed: the stored result, no provider call.
pub async fn answer_from_store(
    services: &Services,
    pool: &PoolContext,
    inbound: Inbound,
    job: &Job,
    stored: JobResult,
) {
    info!(job_id = %job.id, pool = %pool.name, "already completed; answering from the store");
    // A rerun of a batch finds its answered jobs here: counted once all the same.
    super::batch::done(services, job.batch.as_deref(), &stored);
    metrics::counter!(m::ANSWERED_FROM_STORE_TOTAL, "pool" => pool.name.clone()).increment(1);
    publish_and_ack(
        services,
        pool,
        inbound,
        &job.reply,
        &stored,
        Timing::start(),
        OnReplyFailure::Requeue,
    )
    .await;
}

/// An identical request answered within the cache TTL: that answer, no call.
pub async fn answer_from_cache(
    services: &Services,
    pool: &PoolContext,
    inbound: Inbound,
    job: &Job,
    answer: JobResult,
    timing: Timing,
) {
    metrics::counter!(m::CACHE_HITS_TOTAL, "pool" => pool.name.clone()).increment(1);
    let result = JobResult {
        id: job.id.clone(),
        status: JobStatus::Succeeded,
        text: answer.text,
        json: answer.json,
        error: None,
        pool: pool.name.clone(),
        model: Some(job.request.model.clone()),
        key: answer.key,
        // No tokens were spent on this job, and nothing paid.
        usage: no_call(),
        attempts: 0,
        latency_ms: 0,
        metadata: job.metadata.clone(),
        user: job.user.clone(),
        cached: true,
        batch: job.batch.clone(),
        completed_at: jiff::Timestamp::now(),
    };
    let store = Persist {
        counters_key: None,
        cache_key: None,
        batch: job.batch.clone(),
    };
    persist_and_reply(services, pool, store, inbound, &job.reply, result, timing).await;
}

/// Publish the original message to the dead-letter queue with the reason.
/// True only when the broker confirmed it was queued.
pub(super) async fn dead_letter(
    services: &Services,
    pool: &PoolContext,
    inbound: &Inbound,
    kind: ErrorKind,
    reason: &str,
) -> bool {
    let props = dead_letter_properties(inbound.properties(), &pool.name, kind.as_str(), reason);
    let queue = &services.jobs.dead_letter_queue;
    match services
        .publisher
        .publish(queue, inbound.body(), props, true)
        .await
    {
        Ok(PublishOutcome::Delivered) => {
            metrics::counter!(m::DEAD_LETTERS_TOTAL, "pool" => pool.name.clone(), "reason" => kind.as_str())
                .increment(1);
            true
        }
        other => {
            error!(queue = %queue, outcome = ?other, "dead-lettering failed");
            false
        }
    }
}

fn base_result(
    inflight: &InFlight,
    pool: &PoolContext,
    key: Option<&KeyContext>,
    status: JobStatus,
) -> JobResult {
    JobResult {
        id: inflight.job.id.clone(),
        status,
        text: None,
        json: None,
        error: None,
        pool: pool.name.clone(),
        model: Some(inflight.job.request.model.clone()),
        key: key.map(|k| k.name.clone()),
        usage: no_call(),
        attempts: inflight.attempts,
        latency_ms: 0,
        metadata: inflight.job.metadata.clone(),
        user: inflight.job.user.clone(),
        cached: false,
        batch: inflight.job.batch.clone(),
        completed_at: jiff::Timestamp::now(),
    }
}

/// The usage of a result no provider call paid for: no tokens, $0.
fn no_call() -> Usage {
    Usage {
        cost_usd: Some(0.0),
        ..Usage::default()
    }
}

/// What happens to a job whose reply could not be confirmed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnReplyFailure {
    /// Back to the queue: the redelivery is answered from the store.
    Requeue,
    /// Its result is not stored, so it must not run (and pay) again: nack
    /// without requeue, which the job queue's dead-letter exchange routes to
    /// the dead-letter queue.
    DeadLetter,
    /// Already dead-lettered by keyrelay (invalid job): just settle it.
    Ack,
}

/// Persist, then publish and ack.
async fn deliver(
    services: &Services,
    pool: &PoolContext,
    key: Option<&KeyContext>,
    inflight: InFlight,
    result: JobResult,
) {
    let store = Persist {
        counters_key: key.map(|k| k.store_key.as_str()),
        // Only successes answer later identical requests.
        cache_key: inflight.cache_key.filter(|_| result.is_success()),
        batch: inflight.job.batch.clone(),
    };
    let reply = &inflight.job.reply;
    persist_and_reply(
        services,
        pool,
        store,
        inflight.inbound,
        reply,
        result,
        inflight.timing,
    )
    .await;
}

/// Where a result is counted and cached when it is stored.
struct Persist<'a> {
    /// `pool/key` of the key that ran the job, for its counters.
    counters_key: Option<&'a str>,
    /// The request's response-cache key, for a success that may be reused.
    cache_key: Option<CacheKey>,
    /// The job's batch, to count its answer in.
    batch: Option<String>,
}

/// Persist, then publish and ack.
async fn persist_and_reply(
    services: &Services,
    pool: &PoolContext,
    store: Persist<'_>,
    inbound: Inbound,
    reply: &ReplyAddress,
    mut result: JobResult,
    mut timing: Timing,
) {
    result.latency_ms = timing.received.elapsed().as_millis() as u64;
    result.completed_at = jiff::Timestamp::now();
    // A provider's answer cannot fail to serialize (JSON in, JSON out); if it
    // ever did, the job must not run and pay again: dead-letter it.
    let Some(body) = encode(&result) else {
        return inbound.nack(false);
    };
    let store_started = Instant::now();
    let on_failure = match services
        .store
        .persist_encoded(&result, &body, store.counters_key, store.cache_key)
        .await
    {
        Ok(()) => OnReplyFailure::Requeue,
        Err(e) => {
            // The provider has answered (and maybe billed): a requeue would pay
            // again. Deliver the answer without the store's safety net instead.
            metrics::counter!(m::STORE_ERRORS_TOTAL).increment(1);
            error!(job_id = %result.id, error = %e, "cannot persist result; replying without it");
            OnReplyFailure::DeadLetter
        }
    };
    timing.store = store_started.elapsed();
    super::batch::done(services, store.batch.as_deref(), &result);
    publish_encoded(
        services, pool, inbound, reply, &result, &body, timing, on_failure,
    )
    .await;
}

fn encode(result: &JobResult) -> Option<Vec<u8>> {
    serde_json::to_vec(result)
        .inspect_err(|e| error!(job_id = %result.id, error = %e, "cannot serialize result"))
        .ok()
}

async fn publish_and_ack(
    services: &Services,
    pool: &PoolContext,
    inbound: Inbound,
    reply: &ReplyAddress,
    result: &JobResult,
    timing: Timing,
    on_failure: OnReplyFailure,
) {
    let Some(body) = encode(result) else {
        return settle_unreplied(inbound, on_failure);
    };
    publish_encoded(
        services, pool, inbound, reply, result, &body, timing, on_failure,
    )
    .await;
}

/// Publish the reply `body` (the serialized `result`) with a confirm, then ack.
#[allow(clippy::too_many_arguments)]
async fn publish_encoded(
    services: &Services,
    pool: &PoolContext,
    inbound: Inbound,
    reply: &ReplyAddress,
    result: &JobResult,
    body: &[u8],
    mut timing: Timing,
    on_failure: OnReplyFailure,
) {
    let props = reply_properties(reply, &result.id);
    let reply_started = Instant::now();
    let outcome = services
        .publisher
        .publish(&reply.queue, body, props, true)
        .await;
    timing.reply = reply_started.elapsed();
    match outcome {
        Ok(PublishOutcome::Delivered) => {}
        Ok(PublishOutcome::Unroutable) => {
            // The producer's reply queue does not exist. The result is stored;
            // requeueing would only loop, so count it and move on.
            warn!(job_id = %result.id, reply_to = %reply.queue, "reply queue does not exist; result kept in the store");
            metrics::counter!(m::REPLIES_UNROUTABLE_TOTAL, "pool" => result.pool.clone())
                .increment(1);
        }
        Err(e) => {
            warn!(job_id = %result.id, error = %e, "reply not confirmed");
            return settle_unreplied(inbound, on_failure);
        }
    }
    inbound.ack();
    record_outcome(pool, result, timing);
}

fn settle_unreplied(inbound: Inbound, on_failure: OnReplyFailure) {
    match on_failure {
        OnReplyFailure::Requeue => inbound.nack(true),
        OnReplyFailure::DeadLetter => inbound.nack(false),
        OnReplyFailure::Ack => inbound.ack(),
    }
}

fn record_outcome(pool: &PoolContext, result: &JobResult, timing: Timing) {
    let outcome = result.outcome_label();
    let elapsed = timing.received.elapsed();
    pool.metrics.job(outcome);
    pool.metrics.job_duration.record(elapsed.as_secs_f64());
    let overhead = elapsed.saturating_sub(timing.provider);
    pool.metrics.job_overhead.record(overhead.as_secs_f64());
    pool.metrics
        .job_stages(overhead, timing.store, timing.reply);
    // Debug, not info: at thousands of jobs a second the metrics tell the
    // story, and formatting a line per job cost ~2.5 % of keyrelay's CPU.
    debug!(
        job_id = %result.id,
        pool = %result.pool,
        key = result.key.as_deref().unwrap_or("-"),
        outcome,
        attempts = result.attempts,
        latency_ms = result.latency_ms,
        "job finished"
    );
}

/// The answer's JSON, when the job asked for JSON; the `invalid_output`
/// error when it is not JSON or breaks the job's schema (the raw text stays
/// in the result, and a failed result is never cached).
fn check_output(
    format: &ResponseFormat,
    text: &str,
    cut_short: bool,
) -> Result<Option<Value>, JobError> {
    if !format.is_json() {
        return Ok(None);
    }
    let value = parse_json_output(text).map_err(|e| {
        if cut_short {
            // The allowance ran out mid-answer: say so, not "not JSON".
            let mut error = JobError::new(
                ErrorKind::Truncated,
                format!(
                    "the output allowance ran out before the JSON answer was complete; raise max_output_tokens ({e})"
                ),
            );
            error.reason = Some("max_output_tokens".into());
            return error;
        }
        let mut error = JobError::new(
            ErrorKind::InvalidOutput,
            format!(
                "response_format is {} but the model's text is not JSON: {e}",
                format.as_str()
            ),
        );
        error.reason = Some("not_json".into());
        error
    })?;
    if let ResponseFormat::JsonSchema(schema) = format {
        let violations = schema.violations(&value);
        if !violations.is_empty() {
            let mut error = JobError::new(
                ErrorKind::InvalidOutput,
                format!(
                    "the answer does not conform to the schema `{}`: {}",
                    schema.spec.name,
                    violations.join("; ")
                ),
            );
            error.reason = Some("schema".into());
            error.violations = violations;
            return Err(error);
        }
    }
    Ok(Some(value))
}

/// Parse a model's JSON answer, tolerating the ```json fences models like to add.
fn parse_json_output(text: &str) -> Result<Value, serde_json::Error> {
    let trimmed = text.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.trim_end().strip_suffix("```"))
        .unwrap_or(trimmed);
    serde_json::from_str(unfenced.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_checks_name_what_is_wrong() {
        use keyrelay_core::job::FormatSpec;
        let spec: FormatSpec = serde_json::from_value(serde_json::json!({
            "type": "json_schema",
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        }))
        .unwrap();
        let format = ResponseFormat::compile(spec).unwrap();
        assert_eq!(
            check_output(&format, "{\"n\": 2}", false).unwrap().unwrap()["n"],
            2
        );
        let broken = check_output(&format, "{\"n\": \"two\"}", false).unwrap_err();
        assert_eq!(broken.kind, ErrorKind::InvalidOutput);
        assert_eq!(broken.reason.as_deref(), Some("schema"));
        assert!(
            broken.violations[0].starts_with("at /n:"),
            "{:?}",
            broken.violations
        );
        let not_json = check_output(&format, "{\"n\": ", false).unwrap_err();
        assert_eq!(not_json.reason.as_deref(), Some("not_json"));
        // Cut off by the output allowance: truncated, not invalid.
        let cut = check_output(&format, "{\"n\": ", true).unwrap_err();
        assert_eq!(cut.kind, ErrorKind::Truncated);
        assert!(
            check_output(&ResponseFormat::Text, "{", true)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn json_output_parsing() {
        assert_eq!(parse_json_output("{\"a\": 1}").unwrap()["a"], 1);
        assert_eq!(
            parse_json_output("```json\n{\"a\": 2}\n```").unwrap()["a"],
            2
        );
        assert_eq!(parse_json_output("```\n[1]\n```  ").unwrap()[0], 1);
        assert!(parse_json_output("Sure! Here is JSON: {}").is_err());
    }
}
