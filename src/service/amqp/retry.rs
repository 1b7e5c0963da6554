//! Retry timing for transient failures: exponential backoff with jitter, and
//! the delay queues that hold a job while it waits (per-message TTL plus
//! dead-lettering back to the job queue: plain RabbitMQ, no plugin).

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};

/// Header carrying the provider calls a job has made so far.
pub const ATTEMPTS_HEADER: &str = "x-keyrelay-attempts";
/// Header naming the key whose call failed, so the retry prefers another.
pub const LAST_KEY_HEADER: &str = "x-keyrelay-last-key";
/// Header with the last transient error (for operators reading the queue).
pub const LAST_ERROR_HEADER: &str = "x-keyrelay-last-error";

/// Longest wait after the `attempt`-th failed call: 0.25 s doubling, ≤ 8 s.
/// Also the TTL of that attempt's delay queue.
pub fn ceiling(attempt: u32) -> Duration {
    let ms = 250u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(8_000);
    Duration::from_millis(ms)
}

/// The wait itself: uniformly between half the ceiling and the ceiling, so
/// retries of jobs that failed together do not come back together. Every
/// message of a delay queue expires within [ceiling/2, ceiling], so one at the
/// head never holds those behind it back by more than half the ceiling.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = ceiling(attempt).as_millis() as u64;
    Duration::from_millis(rand::random_range(ceiling / 2..=ceiling))
}

/// Name of the delay queue for jobs that failed their `attempt`-th call.
/// A quorum job queue gets quorum delay queues (`.delay.N`): their expired
/// messages are dead-lettered back at least once, where a classic queue's
/// are dropped if the job queue cannot take them at that moment (a broker
/// restart). The names differ so that a broker holding the classic
/// `.retry.N` queues of an older keyrelay is not asked to redeclare them.
pub fn delay_queue(job_queue: &str, attempt: u32, quorum: bool) -> String {
    match quorum {
        true => format!("{job_queue}.delay.{attempt}"),
        false => format!("{job_queue}.retry.{attempt}"),
    }
}

/// Read an unsigned integer header, whatever integer type the producer used.
pub fn header_u32(headers: Option<&FieldTable>, name: &str) -> Option<u32> {
    match headers?.inner().get(name)? {
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
        _ => None,
    }
}

/// Read a text header.
pub fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        for attempt in 1..20 {
            let (c, d) = (ceiling(attempt), backoff(attempt));
            assert!(d <= c && d >= c / 2, "{attempt}: {d:?} vs {c:?}");
        }
        assert_eq!(ceiling(1), Duration::from_millis(250));
        assert_eq!(ceiling(3), Duration::from_secs(1));
        assert_eq!(ceiling(30), Duration::from_secs(8));
    }

    #[test]
    fn headers_in_any_integer_type() {
        let mut h = FieldTable::default();
        h.insert("a".into(), AMQPValue::LongInt(3));
        h.insert("b".into(), AMQPValue::LongInt(-1));
        h.insert("c".into(), AMQPValue::LongString("k1".into()));
        assert_eq!(header_u32(Some(&h), "a"), Some(3));
        assert_eq!(header_u32(Some(&h), "b"), None);
        assert_eq!(header_u32(Some(&h), "z"), None);
        assert_eq!(header_text(Some(&h), "c").as_deref(), Some("k1"));
        assert_eq!(header_u32(None, "a"), None);
    }
}
