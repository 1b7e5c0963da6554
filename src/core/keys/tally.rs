//! What a key's provider calls added up to since the supervisor last wrote the
//! hourly usage statistics. Job tasks add with atomics, so a call costs no
//! message to the supervisor and no lock; the supervisor drains it each second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::provider::{OutcomeClass, Usage};

/// One key's calls, tokens and provider time since the last drain.
#[derive(Debug, Default)]
pub struct CallTally {
    /// Calls by outcome class, in `OutcomeClass::ALL` order.
    calls: [AtomicU64; OutcomeClass::ALL.len()],
    tokens_in: AtomicU64,
    tokens_out: AtomicU64,
    latency_ms: AtomicU64,
}

impl CallTally {
    /// Add one provider call: its outcome class, the tokens it used and how long it took.
    pub fn record(&self, class: OutcomeClass, usage: Usage, latency: Duration) {
        self.calls[class as usize].fetch_add(1, Ordering::Relaxed);
        self.tokens_in
            .fetch_add(usage.input_tokens, Ordering::Relaxed);
        self.tokens_out
            .fetch_add(usage.output_tokens, Ordering::Relaxed);
        self.latency_ms
            .fetch_add(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// Take everything added since the last drain, as the usage statistics'
    /// fields (`requests`, one per outcome class, `tokens_in`, `tokens_out`,
    /// `latency_ms`); zero fields are left out.
    pub fn drain(&self) -> Vec<(&'static str, u64)> {
        let mut fields = Vec::new();
        let mut requests = 0;
        for (class, n) in OutcomeClass::ALL.iter().zip(&self.calls) {
            let n = n.swap(0, Ordering::Relaxed);
            requests += n;
            fields.push((class.as_str(), n));
        }
        fields.push(("requests", requests));
        fields.push(("tokens_in", self.tokens_in.swap(0, Ordering::Relaxed)));
        fields.push(("tokens_out", self.tokens_out.swap(0, Ordering::Relaxed)));
        fields.push(("latency_ms", self.latency_ms.swap(0, Ordering::Relaxed)));
        fields.retain(|(_, n)| *n > 0);
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_sums_calls_and_starts_over() {
        let tally = CallTally::default();
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 3,
            ..Usage::default()
        };
        tally.record(OutcomeClass::Success, usage, Duration::from_millis(40));
        tally.record(OutcomeClass::Success, usage, Duration::from_millis(2));
        tally.record(
            OutcomeClass::Transient,
            Usage::default(),
            Duration::from_millis(5),
        );
        let mut fields = tally.drain();
        fields.sort();
        assert_eq!(
            fields,
            vec![
                ("latency_ms", 47),
                ("requests", 3),
                ("success", 2),
                ("tokens_in", 20),
                ("tokens_out", 6),
                ("transient", 1),
            ]
        );
        assert!(tally.drain().is_empty());
    }

    #[test]
    fn class_order_matches_the_enum() {
        for (i, class) in OutcomeClass::ALL.iter().enumerate() {
            assert_eq!(*class as usize, i);
        }
    }
}
