//! Shared mock state: per-key sliding windows, revoke/exhaust flags and the counters.
//!
//! One `std::sync::Mutex` guards everything: critical sections are a few deque
//! operations and never span an await.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::call_log::CallLog;
use super::settings::{MockKey, MockSettings, UNKNOWN_LABEL};
use super::stats::{MockStats, Tally};

/// A limit answer a directive asks for, whatever the real windows say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forced {
    /// Per-minute 429; retry after this long (None: as the window says).
    RateLimit(Option<Duration>),
    /// Per-day answer; retry after this long (None: as the window says).
    Exhausted(Option<Duration>),
}

/// Rate-limit position of a key after an admitted request (for success headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Per-minute limit, if the key has one.
    pub limit: Option<u32>,
    /// Requests left in the current minute window.
    pub remaining: u32,
    /// Until the oldest request leaves the minute window.
    pub reset: Duration,
}

/// A limit the request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    /// The configured limit (0 when the key has none and a directive forced it).
    pub limit: u32,
    pub retry_after: Duration,
}

/// What the key and its windows say about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Missing, unknown (label `unknown`), invalid or revoked key.
    Unauthorized {
        label: String,
    },
    RateLimited {
        label: String,
        limited: Limited,
    },
    Exhausted {
        label: String,
        limited: Limited,
    },
    /// The key is set to answer with a recorded real answer.
    Replay {
        label: String,
        fixture: String,
    },
    /// The request counts against the key's windows and may be answered.
    Admitted {
        label: String,
        window: Window,
    },
}

impl Admission {
    pub fn label(&self) -> &str {
        match self {
            Admission::Unauthorized { label }
            | Admission::RateLimited { label, .. }
            | Admission::Exhausted { label, .. }
            | Admission::Replay { label, .. }
            | Admission::Admitted { label, .. } => label,
        }
    }
}

struct KeyState {
    config: MockKey,
    revoked: bool,
    exhausted_until: Option<Instant>,
    minute_log: VecDeque<Instant>,
    day_log: VecDeque<Instant>,
    /// Requests answered with the key's `replay` so far.
    replayed: u32,
}

impl KeyState {
    fn new(config: MockKey) -> KeyState {
        KeyState {
            config,
            revoked: false,
            exhausted_until: None,
            minute_log: VecDeque::new(),
            day_log: VecDeque::new(),
            replayed: 0,
        }
    }
}

struct Inner {
    keys: Vec<KeyState>,
    stats: MockStats,
}

/// Everything the handlers share.
pub(crate) struct MockState {
    pub latency: Duration,
    pub fault_rate: f64,
    minute: Duration,
    day: Duration,
    configured: Vec<MockKey>,
    inner: Mutex<Inner>,
    pub calls: CallLog,
}

impl MockState {
    pub fn new(settings: &MockSettings) -> MockState {
        MockState {
            latency: settings.latency,
            fault_rate: settings.fault_rate,
            minute: settings.minute,
            day: settings.day,
            configured: settings.keys.clone(),
            calls: CallLog::new(settings.record_calls),
            inner: Mutex::new(Inner {
                keys: settings.keys.iter().cloned().map(KeyState::new).collect(),
                stats: MockStats::default(),
            }),
        }
    }

    // A panic elsewhere while holding the lock leaves plain counters behind: still usable.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides and counts (as a request) one call with this key.
    pub fn admit(&self, secret: Option<&str>, forced: Option<Forced>, now: Instant) -> Admission {
        let mut inner = self.lock();
        let admission =
            match secret.and_then(|s| inner.keys.iter().position(|k| k.config.secret == s)) {
                None => Admission::Unauthorized {
                    label: UNKNOWN_LABEL.to_string(),
                },
                Some(index) => decide(&mut inner.keys[index], forced, now, self.minute, self.day),
            };
        inner.stats.count_request(admission.label());
        admission
    }

    pub fn count(&self, label: &str, tally: Tally) {
        self.lock().stats.count(label, tally);
    }

    pub fn stats(&self) -> MockStats {
        self.lock().stats.clone()
    }

    /// Applies `change` to the key with this label; false when there is none.
    fn with_key(&self, label: &str, change: impl FnOnce(&mut KeyState)) -> bool {
        let mut inner = self.lock();
        match inner.keys.iter_mut().find(|k| k.config.label == label) {
            Some(key) => {
                change(key);
                true
            }
            None => false,
        }
    }

    /// The key's daily quota is spent for one `day` from now.
    pub fn exhaust(&self, label: &str) -> bool {
        let until = Instant::now() + self.day;
        self.with_key(label, |k| k.exhausted_until = Some(until))
    }

    pub fn revoke(&self, label: &str) -> bool {
        self.with_key(label, |k| k.revoked = true)
    }

    /// Undoes `revoke` and `exhaust` (the sliding windows keep their history).
    pub fn restore(&self, label: &str) -> bool {
        self.with_key(label, |k| {
            k.revoked = false;
            k.exhausted_until = None;
        })
    }

    /// Back to the state right after start: windows, flags and counters cleared.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.keys = self.configured.iter().cloned().map(KeyState::new).collect();
        inner.stats = MockStats::default();
        self.calls.clear();
    }
}

/// Admission of one request with a known key; records it in the windows when admitted.
fn decide(
    key: &mut KeyState,
    forced: Option<Forced>,
    now: Instant,
    minute: Duration,
    day: Duration,
) -> Admission {
    let label = key.config.label.clone();
    if key.config.invalid || key.revoked {
        return Admission::Unauthorized { label };
    }
    if let Some(fixture) = &key.config.replay
        && key
            .config
            .replay_times
            .is_none_or(|times| key.replayed < times)
    {
        key.replayed = key.replayed.saturating_add(1);
        let fixture = fixture.clone();
        return Admission::Replay { label, fixture };
    }
    prune(&mut key.minute_log, now, minute);
    prune(&mut key.day_log, now, day);
    let rpm = key.config.rpm;
    let rpd = key.config.rpd;
    let minute_retry = |key: &KeyState| until_free(&key.minute_log, now, minute);
    let day_retry = |key: &KeyState| {
        let window = until_free(&key.day_log, now, day);
        key.exhausted_until
            .map_or(window, |until| until.saturating_duration_since(now))
    };
    if let Some(forced) = forced {
        let (retry, limited_day) = match forced {
            Forced::RateLimit(retry) => (retry.unwrap_or_else(|| minute_retry(key)), false),
            Forced::Exhausted(retry) => (retry.unwrap_or_else(|| day_retry(key)), true),
        };
        return limited(
            label,
            limited_day,
            if limited_day { rpd } else { rpm },
            retry,
        );
    }
    if key.exhausted_until.is_some_and(|until| until > now) || over(&key.day_log, rpd) {
        return limited(label, true, rpd, day_retry(key));
    }
    if over(&key.minute_log, rpm) {
        return limited(label, false, rpm, minute_retry(key));
    }
    // Only admitted requests use quota: a rejected one never enters a window.
    if rpm.is_some() {
        key.minute_log.push_back(now);
    }
    if rpd.is_some() {
        key.day_log.push_back(now);
    }
    let window = Window {
        limit: rpm,
        remaining: rpm.map_or(u32::MAX, |limit| {
            limit.saturating_sub(count(&key.minute_log))
        }),
        // A key without rpm has no window to wait for.
        reset: rpm.map_or(Duration::ZERO, |_| until_free(&key.minute_log, now, minute)),
    };
    Admission::Admitted { label, window }
}

fn limited(label: String, day: bool, limit: Option<u32>, retry_after: Duration) -> Admission {
    let limited = Limited {
        limit: limit.unwrap_or(0),
        retry_after,
    };
    if day {
        Admission::Exhausted { label, limited }
    } else {
        Admission::RateLimited { label, limited }
    }
}

/// Drops the requests that have left the sliding window.
fn prune(log: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while log
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) >= window)
    {
        log.pop_front();
    }
}

fn count(log: &VecDeque<Instant>) -> u32 {
    u32::try_from(log.len()).unwrap_or(u32::MAX)
}

fn over(log: &VecDeque<Instant>, limit: Option<u32>) -> bool {
    limit.is_some_and(|limit| count(log) >= limit)
}

/// Until the oldest request leaves the window (the whole window when it is empty).
fn until_free(log: &VecDeque<Instant>, now: Instant, window: Duration) -> Duration {
    log.front().map_or(window, |&oldest| {
        (oldest + window).saturating_duration_since(now)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(key: MockKey, minute_ms: u64) -> MockState {
        MockState::new(&MockSettings {
            keys: vec![key],
            minute: Duration::from_millis(minute_ms),
            ..MockSettings::default()
        })
    }

    #[test]
    fn rpm_window_slides_and_rejections_use_no_quota() {
        let state = state(MockKey::new("a", "s").with_rpm(2), 1000);
        let t0 = Instant::now();
        assert!(matches!(
            state.admit(Some("s"), None, t0),
            Admission::Admitted { .. }
        ));
        let t1 = t0 + Duration::from_millis(400);
        assert!(matches!(
            state.admit(Some("s"), None, t1),
            Admission::Admitted { .. }
        ));
        let t2 = t0 + Duration::from_millis(700);
        match state.admit(Some("s"), None, t2) {
            Admission::RateLimited { limited, .. } => {
                assert_eq!(limited.retry_after, Duration::from_millis(300));
                assert_eq!(limited.limit, 2);
            }
            other => panic!("expected rate limit, got {other:?}"),
        }
        // The oldest left at t0+1000; the rejected t2 request must not hold a slot.
        let t3 = t0 + Duration::from_millis(1000);
        assert!(matches!(
            state.admit(Some("s"), None, t3),
            Admission::Admitted { .. }
        ));
        assert_eq!(state.stats().key("a").requests, 4);
    }

    #[test]
    fn unknown_revoked_and_exhausted_keys() {
        let state = state(MockKey::new("a", "s").with_rpd(1), 1000);
        let now = Instant::now();
        assert_eq!(state.admit(Some("nope"), None, now).label(), UNKNOWN_LABEL);
        assert!(matches!(
            state.admit(Some("s"), None, now),
            Admission::Admitted { .. }
        ));
        assert!(matches!(
            state.admit(Some("s"), None, now),
            Admission::Exhausted { .. }
        ));
        assert!(state.revoke("a"));
        assert!(matches!(
            state.admit(Some("s"), None, now),
            Admission::Unauthorized { .. }
        ));
        assert!(!state.revoke("missing"));
        state.reset();
        assert!(matches!(
            state.admit(Some("s"), None, now),
            Admission::Admitted { .. }
        ));
        assert_eq!(state.stats().key("a").requests, 1);
    }
}
