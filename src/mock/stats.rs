//! What the mock counted: per key label, and successes per prompt.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Counters of one key label (or `unknown`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct KeyStats {
    /// Every request that reached a provider endpoint with this key.
    pub requests: u32,
    /// Well-formed success answers (including `invalid_json`, which the provider "billed").
    pub successes: u32,
    /// Per-minute 429s, real or forced.
    pub rate_limited: u32,
    /// Per-day answers, real, forced or after a control `exhaust`.
    pub exhausted: u32,
    /// Missing, unknown, invalid or revoked key.
    pub unauthorized: u32,
    /// Injected faults: error statuses, broken bodies, resets, slow or huge bodies.
    pub faults: u32,
    /// Requests the mock could not parse (answered with the provider's 400).
    pub bad_requests: u32,
    /// Requests answered with a recorded real answer (`replay`).
    #[serde(default)]
    pub replayed: u32,
}

/// Snapshot of everything counted since start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct MockStats {
    /// Per key label; ordered so the JSON is stable.
    pub keys: BTreeMap<String, KeyStats>,
    /// Success answers per last-user-message text: proves a job was paid for once.
    pub successes_by_prompt: HashMap<String, u32>,
}

impl MockStats {
    /// Counters of one label (zeroes when it never saw a request).
    pub fn key(&self, label: &str) -> KeyStats {
        self.keys.get(label).copied().unwrap_or_default()
    }

    /// Counters summed over all labels.
    pub fn total(&self) -> KeyStats {
        self.keys
            .values()
            .fold(KeyStats::default(), |acc, k| KeyStats {
                requests: acc.requests + k.requests,
                successes: acc.successes + k.successes,
                rate_limited: acc.rate_limited + k.rate_limited,
                exhausted: acc.exhausted + k.exhausted,
                unauthorized: acc.unauthorized + k.unauthorized,
                faults: acc.faults + k.faults,
                bad_requests: acc.bad_requests + k.bad_requests,
                replayed: acc.replayed + k.replayed,
            })
    }

    /// How many success answers carried this prompt.
    pub fn successes_for(&self, prompt: &str) -> u32 {
        self.successes_by_prompt.get(prompt).copied().unwrap_or(0)
    }
}

/// How one answered request is counted (besides `requests`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tally {
    /// Answered with a recorded real answer.
    Replayed,
    Success {
        prompt: String,
    },
    RateLimited,
    Exhausted,
    Unauthorized,
    Fault,
    BadRequest,
}

impl MockStats {
    pub(crate) fn count_request(&mut self, label: &str) {
        self.entry(label).requests += 1;
    }

    pub(crate) fn count(&mut self, label: &str, tally: Tally) {
        let entry = self.entry(label);
        match tally {
            Tally::Success { prompt } => {
                entry.successes += 1;
                *self.successes_by_prompt.entry(prompt).or_insert(0) += 1;
            }
            Tally::RateLimited => entry.rate_limited += 1,
            Tally::Exhausted => entry.exhausted += 1,
            Tally::Unauthorized => entry.unauthorized += 1,
            Tally::Fault => entry.faults += 1,
            Tally::BadRequest => entry.bad_requests += 1,
            Tally::Replayed => entry.replayed += 1,
        }
    }

    fn entry(&mut self, label: &str) -> &mut KeyStats {
        self.keys.entry(label.to_string()).or_default()
    }
}
