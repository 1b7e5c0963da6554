//! The end of a job: build its result, make it durable, publish the reply with a
//! confirm, and only then ack the delivery. Every failure path says whether the
//! job goes back to the queue.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use serde_json::Value;
use tracing::{error, info, warn};

use super::{InFlight, KeyContext, PoolContext, Services, Timing};
use crate::amqp::{PublishOutcome, reply_properties};
use crate::job::{
    ErrorKind, InvalidJob, Job, JobError, JobResult, JobStatus, ReplyAddress, ResponseFormat,
};
use crate::metrics as m;
use crate::provider::{Completion, Usage};

/// A successful provider call: parse JSON output when asked for, then deliver.
pub async fn complete(
    services: &Services,
    key: &KeyContext,
    inflight: InFlight,
    completion: Completion,
) {
    let json = match inflight.job.response_format {
        ResponseFormat::Text => None,
        ResponseFormat::Json => match parse_json_output(&completion.text) {
            Ok(value) => Some(value),
            Err(e) => {
                let message =
                    format!("response_format is json but the model's text is not JSON: {e}");
                let mut result = base_result(&inflight, &key.pool, Some(key), JobStatus::Failed);
                result.text = Some(completion.text);
                result.usage = completion.usage;
                result.error = Some(JobError {
                    kind: ErrorKind::InvalidOutput,
                    message,
                });
                return deliver(
                    services,
                    Some(key),
                    inflight.delivery,
                    &inflight.job.reply,
                    result,
                    inflight.timing,
                )
                .await;
            }
        },
    };
    let mut result = base_result(&inflight, &key.pool, Some(key), JobStatus::Succeeded);
    result.text = Some(completion.text);
    result.json = json;
    result.usage = completion.usage;
    deliver(
        services,
        Some(key),
        inflight.delivery,
        &inflight.job.reply,
        result,
        inflight.timing,
    )
    .await;
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
    result.error = Some(JobError { kind, message });
    deliver(
        services,
        key,
        inflight.delivery,
        &inflight.job.reply,
        result,
        inflight.timing,
    )
    .await;
}

/// A job that breaks the contract: failed reply, dead letter with the reason, ack.
pub async fn reject_invalid(
    services: &Services,
    pool: &PoolContext,
    delivery: Delivery,
    invalid: InvalidJob,
    timing: Timing,
) {
    warn!(job_id = %invalid.id, pool = %pool.name, reason = %invalid.reason, "invalid job");
    let kind = ErrorKind::InvalidJob.as_str();
    let props = crate::amqp::dead_letter_properties(
        &delivery.properties,
        &pool.name,
        kind,
        &invalid.reason,
    );
    let dead = services
        .publisher
        .publish(
            &services.jobs.dead_letter_queue,
            &delivery.data,
            props,
            true,
        )
        .await;
    if let Err(e) = dead {
        // Without its dead letter the job must not disappear: back to the queue.
        error!(job_id = %invalid.id, error = %e, "dead-lettering failed; requeueing");
        return nack(&delivery, true).await;
    }
    metrics::counter!(m::DEAD_LETTERS_TOTAL, "pool" => pool.name.clone(), "reason" => kind)
        .increment(1);
    let result = JobResult {
        id: invalid.id,
        status: JobStatus::Failed,
        text: None,
        json: None,
        error: Some(JobError {
            kind: ErrorKind::InvalidJob,
            message: invalid.reason,
        }),
        pool: pool.name.clone(),
        model: None,
        key: None,
        usage: Usage::default(),
        attempts: 0,
        latency_ms: timing.received.elapsed().as_millis() as u64,
        metadata: Value::Object(Default::default()),
        user: None,
        completed_at: jiff::Timestamp::now(),
    };
    // Not stored under its id: an invalid job's id is not trustworthy, and a later
    // valid job with the same id must not be answered with this failure.
    publish_and_ack(services, delivery, &invalid.reply, &result, timing).await;
}

/// A redelivered job that already completed: the stored result, no provider call.
pub async fn answer_from_store(
    services: &Services,
    pool: &PoolContext,
    delivery: Delivery,
    job: &Job,
    stored: JobResult,
) {
    info!(job_id = %job.id, pool = %pool.name, "already completed; answering from the store");
    metrics::counter!(m::ANSWERED_FROM_STORE_TOTAL, "pool" => pool.name.clone()).increment(1);
    publish_and_ack(services, delivery, &job.reply, &stored, Timing::start()).await;
}

/// No key of the pool can take the job now: put it back on its queue to wait
/// (republished, so waiting does not count against the delivery limit).
pub async fn return_to_broker(services: &Services, pool: &PoolContext, inflight: InFlight) {
    let delivery = inflight.delivery;
    let published = services
        .publisher
        .publish(
            &pool.queue,
            &delivery.data,
            delivery.properties.clone(),
            true,
        )
        .await;
    match published {
        Ok(PublishOutcome::Delivered) => {
            metrics::counter!(m::RETURNED_TO_BROKER_TOTAL, "pool" => pool.name.clone())
                .increment(1);
            ack(&delivery).await;
        }
        other => {
            warn!(job_id = %inflight.job.id, outcome = ?other, "republish failed; requeueing instead");
            nack(&delivery, true).await;
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
        usage: Usage::default(),
        attempts: inflight.attempts,
        latency_ms: 0,
        metadata: inflight.job.metadata.clone(),
        user: inflight.job.user.clone(),
        completed_at: jiff::Timestamp::now(),
    }
}

/// Persist, then publish and ack. A store failure requeues the job untouched.
async fn deliver(
    services: &Services,
    key: Option<&KeyContext>,
    delivery: Delivery,
    reply: &ReplyAddress,
    mut result: JobResult,
    timing: Timing,
) {
    result.latency_ms = timing.received.elapsed().as_millis() as u64;
    result.completed_at = jiff::Timestamp::now();
    let store_key = key.map(|k| k.store_key.as_str());
    if let Err(e) = services.store.persist_result(&result, store_key).await {
        error!(job_id = %result.id, error = %e, "cannot persist result; requeueing the job");
        return nack(&delivery, true).await;
    }
    publish_and_ack(services, delivery, reply, &result, timing).await;
}

async fn publish_and_ack(
    services: &Services,
    delivery: Delivery,
    reply: &ReplyAddress,
    result: &JobResult,
    timing: Timing,
) {
    let body = match serde_json::to_vec(result) {
        Ok(body) => body,
        Err(e) => {
            error!(job_id = %result.id, error = %e, "cannot serialize result; requeueing");
            return nack(&delivery, true).await;
        }
    };
    let props = reply_properties(reply, &result.id);
    let published = services
        .publisher
        .publish(&reply.queue, &body, props, true)
        .await;
    match published {
        Ok(PublishOutcome::Delivered) => {}
        Ok(PublishOutcome::Unroutable) => {
            // The producer's reply queue does not exist. The result is stored;
            // requeueing would only loop, so count it and move on.
            warn!(job_id = %result.id, reply_to = %reply.queue, "reply queue does not exist; result kept in the store");
            metrics::counter!(m::REPLIES_UNROUTABLE_TOTAL, "pool" => result.pool.clone())
                .increment(1);
        }
        Err(e) => {
            // The stored result answers the redelivery without a provider call.
            warn!(job_id = %result.id, error = %e, "reply not confirmed; requeueing the job");
            return nack(&delivery, true).await;
        }
    }
    ack(&delivery).await;
    record_outcome(result, timing);
}

fn record_outcome(result: &JobResult, timing: Timing) {
    let outcome = result.outcome_label();
    metrics::counter!(m::JOBS_TOTAL, "pool" => result.pool.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!(m::JOB_DURATION, "pool" => result.pool.clone())
        .record(timing.received.elapsed().as_secs_f64());
    let overhead = timing.received.elapsed().saturating_sub(timing.provider);
    metrics::histogram!(m::JOB_OVERHEAD, "pool" => result.pool.clone())
        .record(overhead.as_secs_f64());
    info!(
        job_id = %result.id,
        pool = %result.pool,
        key = result.key.as_deref().unwrap_or("-"),
        outcome,
        attempts = result.attempts,
        latency_ms = result.latency_ms,
        "job finished"
    );
}

async fn ack(delivery: &Delivery) {
    match delivery.acker.ack(BasicAckOptions::default()).await {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            // The channel is gone; the broker redelivers and the store answers.
            metrics::counter!(m::ACKS_LOST_TOTAL).increment(1);
            warn!(
                delivery_tag = delivery.delivery_tag,
                "ack not sent; the job will be redelivered"
            );
        }
    }
}

async fn nack(delivery: &Delivery, requeue: bool) {
    let options = BasicNackOptions {
        requeue,
        ..Default::default()
    };
    if !matches!(delivery.acker.nack(options).await, Ok(true)) {
        metrics::counter!(m::ACKS_LOST_TOTAL).increment(1);
        warn!(
            delivery_tag = delivery.delivery_tag,
            "nack not sent; the broker redelivers when the channel closes"
        );
    }
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
    use super::parse_json_output;

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
