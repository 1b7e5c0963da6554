//! Mock configuration: the keys it accepts, their limits, window lengths and fault rate.
//!
//! Deserialisable (TOML or JSON) with durations as `*_ms` integer fields, so a CLI can
//! load a mock from a file.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Label under which requests with a missing or unknown key are counted.
pub const UNKNOWN_LABEL: &str = "unknown";

/// One API key the mock knows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockKey {
    /// Name used in stats and control endpoints.
    pub label: String,
    /// What clients send as the key.
    pub secret: String,
    /// At most this many requests in any sliding `minute` window (None: unlimited).
    #[serde(default)]
    pub rpm: Option<u32>,
    /// At most this many requests in any sliding `day` window (None: unlimited).
    #[serde(default)]
    pub rpd: Option<u32>,
    /// Answer every request with this key as an invalid key.
    #[serde(default)]
    pub invalid: bool,
    /// Answer requests with this key with the recorded real answer of this
    /// name (tests/fixtures/providers/*.json): an account that is disabled,
    /// out of credit, or limited the way a real provider says it.
    #[serde(default)]
    pub replay: Option<String>,
    /// Only the first this-many requests get `replay` (None: every request).
    #[serde(default)]
    pub replay_times: Option<u32>,
}

impl MockKey {
    /// A valid key without limits.
    pub fn new(label: impl Into<String>, secret: impl Into<String>) -> MockKey {
        MockKey {
            label: label.into(),
            secret: secret.into(),
            rpm: None,
            rpd: None,
            invalid: false,
            replay: None,
            replay_times: None,
        }
    }

    /// Every request (or the first `times`) answered with a recorded answer.
    pub fn replaying(mut self, fixture: impl Into<String>, times: Option<u32>) -> MockKey {
        self.replay = Some(fixture.into());
        self.replay_times = times;
        self
    }

    pub fn with_rpm(mut self, rpm: u32) -> MockKey {
        self.rpm = Some(rpm);
        self
    }

    pub fn with_rpd(mut self, rpd: u32) -> MockKey {
        self.rpd = Some(rpd);
        self
    }

    pub fn invalid(mut self) -> MockKey {
        self.invalid = true;
        self
    }
}

/// Everything the mock needs to run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockSettings {
    #[serde(default)]
    pub keys: Vec<MockKey>,
    /// Added to every answer, errors included.
    #[serde(default, rename = "latency_ms", with = "millis")]
    pub latency: Duration,
    /// Length of the sliding per-minute window (short in tests).
    #[serde(default = "default_minute", rename = "minute_ms", with = "millis")]
    pub minute: Duration,
    /// Length of the sliding per-day window (short in tests).
    #[serde(default = "default_day", rename = "day_ms", with = "millis")]
    pub day: Duration,
    /// Share (0.0..=1.0) of requests answered with a random transient fault.
    #[serde(default)]
    pub fault_rate: f64,
    /// Keep every request's key, caller and time span (`/_mock/calls`).
    #[serde(default)]
    pub record_calls: bool,
}

fn default_minute() -> Duration {
    Duration::from_secs(60)
}

fn default_day() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

impl Default for MockSettings {
    fn default() -> MockSettings {
        MockSettings {
            keys: Vec::new(),
            latency: Duration::ZERO,
            minute: default_minute(),
            day: default_day(),
            fault_rate: 0.0,
            record_calls: false,
        }
    }
}

impl MockSettings {
    /// Settings with these keys and default windows.
    pub fn with_keys(keys: Vec<MockKey>) -> MockSettings {
        MockSettings {
            keys,
            ..MockSettings::default()
        }
    }

    /// Rejects settings the mock could not honour (duplicate keys, empty windows, ...).
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.fault_rate) {
            return Err(format!(
                "fault_rate {} is not within 0.0..=1.0",
                self.fault_rate
            ));
        }
        if self.minute.is_zero() || self.day.is_zero() {
            return Err("minute_ms and day_ms must be positive".to_string());
        }
        let mut labels = HashSet::new();
        let mut secrets = HashSet::new();
        for key in &self.keys {
            if key.label == UNKNOWN_LABEL {
                return Err(format!("key label {UNKNOWN_LABEL:?} is reserved"));
            }
            if !labels.insert(key.label.as_str()) {
                return Err(format!("duplicate key label {:?}", key.label));
            }
            if let Some(name) = &key.replay
                && !super::replay::exists(name)
            {
                return Err(format!(
                    "key {:?}: no recorded answer named {name:?} in tests/fixtures/providers",
                    key.label
                ));
            }
            if !secrets.insert(key.secret.as_str()) {
                return Err(format!("duplicate secret for key {:?}", key.label));
            }
        }
        Ok(())
    }
}

/// `Duration` as whole milliseconds, the unit the settings file uses.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        let ms = u64::try_from(value.as_millis()).unwrap_or(u64::MAX);
        serializer.serialize_u64(ms)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}
