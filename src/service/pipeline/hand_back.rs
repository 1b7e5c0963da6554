//! Jobs that leave without an answer for now: parked in a delay queue for a
//! retry, handed back to their queue when no key can run them, or given up on
//! (failed and dead-lettered) when retries or hand-backs run out.

use lapin::types::{AMQPValue, FieldTable};
use tracing::{info, warn};

use super::context::{InFlight, KeyContext, PoolContext, Services};
use super::finish::{dead_letter, fail};
use crate::amqp::PublishOutcome;
use crate::amqp::retry;
use keyrelay_core::job::ErrorKind;
use keyrelay_core::metrics as m;

/// Header counting how often a job went back to its queue for want of a key.
const RETURNS_HEADER: &str = "x-keyrelay-returns";

/// No key of the pool can take the job now: put it back on its queue to wait
/// (republished, so waiting does not count against the delivery limit). A job
/// that came back `jobs.max_returns` times is failed and dead-lettered instead,
/// so a job every key rejects cannot circle forever.
pub async fn return_to_broker(services: &Services, pool: &PoolContext, inflight: InFlight) {
    let returns = returns_of(inflight.inbound.properties());
    if returns >= services.jobs.max_returns {
        let message = format!(
            "went back to the queue {returns} times without any key of pool `{}` being able to run it",
            pool.name
        );
        if !dead_letter(
            services,
            pool,
            &inflight.inbound,
            ErrorKind::AllKeysUnavailable,
            &message,
        )
        .await
        {
            return inflight.inbound.nack(true);
        }
        return fail(
            services,
            pool,
            None,
            inflight,
            ErrorKind::AllKeysUnavailable,
            message,
        )
        .await;
    }
    let mut properties = inflight.inbound.properties().clone();
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(RETURNS_HEADER.into(), AMQPValue::LongUInt(returns + 1));
    properties = properties.with_headers(headers);
    // Back to the lane it came from: a high job stays ahead of the backlog.
    let queue = if inflight.inbound.is_high() {
        &pool.high_queue
    } else {
        &pool.queue
    };
    let published = services
        .publisher
        .publish(queue, inflight.inbound.body(), properties, true)
        .await;
    match published {
        Ok(PublishOutcome::Delivered) => {
            metrics::counter!(m::RETURNED_TO_BROKER_TOTAL, "pool" => pool.name.clone())
                .increment(1);
            inflight.inbound.ack();
        }
        other => {
            warn!(job_id = %inflight.job.id, outcome = ?other, "republish failed; requeueing instead");
            inflight.inbound.nack(true);
        }
    }
}

fn returns_of(properties: &lapin::BasicProperties) -> u32 {
    let headers: Option<&FieldTable> = properties.headers().as_ref();
    match headers.and_then(|h| h.inner().get(RETURNS_HEADER)) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::LongLongInt(n)) => (*n).clamp(0, i64::from(u32::MAX)) as u32,
        _ => 0,
    }
}

/// Stop trying (transient failures outlasted `jobs.max_attempts`): a failed
/// result of `kind` with the last error, and the job dead-lettered so it can be
/// replayed after a fix.
pub async fn give_up(
    services: &Services,
    key: &KeyContext,
    inflight: InFlight,
    kind: ErrorKind,
    message: String,
) {
    info!(job_id = %inflight.job.id, pool = %key.pool.name, kind = kind.as_str(), %message, "giving up on the job: dead letter, failed reply");
    if !dead_letter(services, &key.pool, &inflight.inbound, kind, &message).await {
        warn!(job_id = %inflight.job.id, "dead letter not confirmed; the job goes back to its queue");
        return inflight.inbound.nack(true);
    }
    fail(services, &key.pool, Some(key), inflight, kind, message).await;
}

/// Park a job in its pool's delay queue for its backoff; the broker brings it
/// back to the job queue when the TTL ends, with the attempt count and the key
/// that failed in its headers. `Err` gives the job back when that fails.
pub async fn delay_retry(
    services: &Services,
    key: &KeyContext,
    inflight: InFlight,
) -> Result<(), InFlight> {
    let attempt = inflight.attempts;
    let mut properties = inflight.inbound.properties().clone();
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(retry::ATTEMPTS_HEADER.into(), AMQPValue::LongUInt(attempt));
    headers.insert(
        retry::LAST_KEY_HEADER.into(),
        AMQPValue::LongString(key.name.as_str().into()),
    );
    let last_error = inflight.last_error.as_deref().unwrap_or_default();
    headers.insert(
        retry::LAST_ERROR_HEADER.into(),
        AMQPValue::LongString(last_error.into()),
    );
    let wait_ms = retry::backoff(attempt).as_millis().to_string();
    // Persistent whatever the producer chose: a pending retry survives a broker restart.
    properties = properties
        .with_headers(headers)
        .with_expiration(wait_ms.as_str().into())
        .with_delivery_mode(2);
    let queue = key.pool.delay_queue(attempt);
    match services
        .publisher
        .publish(&queue, inflight.inbound.body(), properties, true)
        .await
    {
        Ok(PublishOutcome::Delivered) => {
            metrics::counter!(m::RETRIES_TOTAL, "pool" => key.pool.name.clone()).increment(1);
            inflight.inbound.ack();
            Ok(())
        }
        other => {
            warn!(job_id = %inflight.job.id, outcome = ?other, "cannot park the job for its retry");
            Err(inflight)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_header_is_read_in_any_integer_type() {
        let with = |v: AMQPValue| {
            let mut h = FieldTable::default();
            h.insert(RETURNS_HEADER.into(), v);
            lapin::BasicProperties::default().with_headers(h)
        };
        assert_eq!(returns_of(&lapin::BasicProperties::default()), 0);
        assert_eq!(returns_of(&with(AMQPValue::LongUInt(3))), 3);
        assert_eq!(returns_of(&with(AMQPValue::LongInt(-2))), 0);
        assert_eq!(returns_of(&with(AMQPValue::LongLongInt(7))), 7);
        assert_eq!(returns_of(&with(AMQPValue::LongString("x".into()))), 0);
    }
}
