//! Queue depths from the broker: a passive `queue.declare` per queue (ready
//! messages and consumers; RabbitMQ's AMQP interface does not report unacked
//! messages — that needs the management API, which keyrelay does not use), a
//! poller that exports them as gauges every 15 s, the dead-letter depth
//! history behind the `KeyrelayDeadLettersGrowing` alert, and each pool's
//! completed jobs per minute over the last half hour (the status page's
//! sparkline, kept here so a reload does not lose it).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tracing::debug;

use crate::amqp::Broker;
use keyrelay_core::config::Config;
use keyrelay_core::metrics as m;
use keyrelay_core::store::{Store, WeakStore};

/// How often the poller asks the broker.
pub const POLL_EVERY: Duration = Duration::from_secs(15);
/// How far back dead-letter growth is judged.
pub const GROWTH_WINDOW: SignedDuration = SignedDuration::from_secs(600);

pub use crate::amqp::depth::{QueueDepth, queue_depth};

/// Dead-letter depth samples, shared by the poller and `/v1/alerts`.
#[derive(Default)]
pub struct Monitor {
    dead_letters: Mutex<VecDeque<(Timestamp, u64)>>,
    /// Per batch: (when, jobs answered), sampled on each request for it.
    batches: Samples,
    /// Per pool: (when, jobs completed), sampled on each `/v1/pools`.
    pools: Samples,
    /// Per pool: jobs this instance completed, sampled by the poller.
    completed: Mutex<std::collections::HashMap<String, VecDeque<(Timestamp, u64)>>>,
}

/// How far back the per-minute history goes.
pub const HISTORY_MINUTES: i64 = 30;

/// Per name: (when, a count that only grows), sampled on each request.
type Samples = Mutex<std::collections::HashMap<String, VecDeque<(std::time::Instant, u64)>>>;

/// Add the sample (`now`, `count`) of `name`, drop those older than
/// [`RATE_WINDOW`], and say how fast the count grew since the oldest one,
/// per second, when it is at least `min_span` seconds old.
fn sampled_rate(
    samples: &Samples,
    name: &str,
    now: std::time::Instant,
    count: u64,
    min_span: f64,
) -> Option<f64> {
    let mut all = samples.lock().ok()?;
    let samples = all.entry(name.to_owned()).or_default();
    samples.push_back((now, count));
    while samples
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
    {
        samples.pop_front();
    }
    let (first_at, first) = *samples.front()?;
    let span = now.duration_since(first_at).as_secs_f64();
    (span >= min_span).then(|| count.saturating_sub(first) as f64 / span)
}

/// Rates are measured over samples this recent.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

impl Monitor {
    /// Record that `pool` had `completed` jobs at `now` (its keys' lifetime
    /// counters); its rate in jobs/s over the samples of the last 5 minutes
    /// at least 10 s apart, `None` before there are two such.
    pub fn pool_rate(&self, pool: &str, now: std::time::Instant, completed: u64) -> Option<f64> {
        sampled_rate(&self.pools, pool, now, completed, 10.0)
    }

    /// Record that `batch` had `done` jobs answered at `now`; its rate in
    /// jobs/s over the samples of the last 5 minutes (at least 5 s apart),
    /// else over its whole life since `started`.
    pub fn batch_rate(
        &self,
        batch: &str,
        now: std::time::Instant,
        done: u64,
        started: Option<Timestamp>,
    ) -> Option<f64> {
        sampled_rate(&self.batches, batch, now, done, 5.0).or_else(|| {
            let lived = Timestamp::now().duration_since(started?).as_secs_f64();
            (lived >= 1.0).then(|| done as f64 / lived)
        })
    }

    /// Record that `pool`'s keys had completed `count` jobs at `at`.
    pub fn record_completed(&self, pool: &str, at: Timestamp, count: u64) {
        let Ok(mut all) = self.completed.lock() else {
            return;
        };
        let samples = all.entry(pool.to_owned()).or_default();
        samples.push_back((at, count));
        let keep = SignedDuration::from_mins(HISTORY_MINUTES + 1);
        while samples
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > keep)
        {
            samples.pop_front();
        }
    }

    /// `pool`'s completed jobs in each of the last minutes, oldest first
    /// (at most [`HISTORY_MINUTES`]; empty before two samples a minute apart).
    pub fn per_minute(&self, pool: &str, now: Timestamp) -> Vec<u64> {
        let Ok(all) = self.completed.lock() else {
            return Vec::new();
        };
        let Some(samples) = all.get(pool) else {
            return Vec::new();
        };
        per_minute(samples, now)
    }

    /// Record a dead-letter depth sample; drop those older than the window.
    pub fn record_dead_letters(&self, at: Timestamp, depth: u64) {
        let Ok(mut samples) = self.dead_letters.lock() else {
            return;
        };
        samples.push_back((at, depth));
        while samples
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > GROWTH_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// How much the dead-letter queue grew over the window: now minus the
    /// lowest sample seen in it (0 when it did not grow).
    pub fn dead_letter_growth(&self) -> u64 {
        let Ok(samples) = self.dead_letters.lock() else {
            return 0;
        };
        let (Some(low), Some((_, now))) = (samples.iter().map(|(_, d)| *d).min(), samples.back())
        else {
            return 0;
        };
        now.saturating_sub(low)
    }
}

/// Jobs completed in each whole minute before `now`, oldest first: for
/// each minute, the growth between the samples nearest its two ends.
fn per_minute(samples: &VecDeque<(Timestamp, u64)>, now: Timestamp) -> Vec<u64> {
    let at = |t: Timestamp| {
        samples
            .iter()
            .rev()
            .find(|(when, _)| *when <= t)
            .map(|(_, count)| *count)
    };
    let mut out = Vec::new();
    for back in (1..=HISTORY_MINUTES).rev() {
        let end = now - SignedDuration::from_mins(back - 1);
        let start = end - SignedDuration::from_mins(1);
        if let (Some(from), Some(to)) = (at(start), at(end)) {
            out.push(to.saturating_sub(from));
        }
    }
    out
}

/// Start the poller. It stops by itself once the broker is dropped (the app
/// shut down) and never reconnects a closed connection.
pub fn start(broker: &Arc<Broker>, config: Arc<Config>, store: &Store, monitor: Arc<Monitor>) {
    let broker = Arc::downgrade(broker);
    // Weak: this task must not keep sled's lock once the app has stopped.
    let store = store.downgrade();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(POLL_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            sample_completed(&config, &store, &monitor);
            if !poll_once(&broker, &config, &monitor).await {
                return;
            }
        }
    });
}

/// One round; `false` when the app is gone.
/// Each pool's completed jobs, from its keys' counters in the store (this
/// instance's share of the work).
fn sample_completed(config: &Config, store: &WeakStore, monitor: &Monitor) {
    let now = Timestamp::now();
    for pool in &config.pools {
        let completed: u64 = pool
            .keys
            .iter()
            .filter_map(|k| store.counters(&format!("{}/{}", pool.name, k.name)))
            .flatten()
            .filter(|(field, _)| field == "completed")
            .map(|(_, n)| n)
            .sum();
        monitor.record_completed(&pool.name, now, completed);
    }
}

async fn poll_once(broker: &Weak<Broker>, config: &Config, monitor: &Monitor) -> bool {
    let Some(broker) = broker.upgrade() else {
        return false;
    };
    if !broker.is_connected() {
        return true;
    }
    for pool in &config.pools {
        match queue_depth(&broker, &config.job_queue(&pool.name)).await {
            Ok(depth) => {
                metrics::gauge!(m::QUEUE_MESSAGES, "pool" => pool.name.clone())
                    .set(depth.ready as f64);
                metrics::gauge!(m::QUEUE_CONSUMERS, "pool" => pool.name.clone())
                    .set(depth.consumers as f64);
            }
            Err(e) => debug!(pool = %pool.name, error = %e, "queue depth poll failed"),
        }
    }
    match queue_depth(&broker, &config.jobs.dead_letter_queue).await {
        Ok(depth) => {
            metrics::gauge!(m::DEAD_LETTER_MESSAGES).set(depth.ready as f64);
            monitor.record_dead_letters(Timestamp::now(), depth.ready);
        }
        Err(e) => debug!(error = %e, "dead-letter depth poll failed"),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_minute_counts_the_growth_within_each_minute() {
        let now = Timestamp::from_second(10_000).unwrap();
        let mins = |m: i64| now - SignedDuration::from_mins(m);
        // Samples every 30 s over the last 3 minutes: 10 jobs a minute, then 40.
        let samples: VecDeque<(Timestamp, u64)> = [
            (mins(3), 100),
            (mins(3) + SignedDuration::from_secs(30), 105),
            (mins(2), 110),
            (mins(1), 120),
            (mins(1) + SignedDuration::from_secs(30), 140),
            (now, 160),
        ]
        .into();
        assert_eq!(per_minute(&samples, now), [10, 10, 40]);
        assert!(per_minute(&VecDeque::new(), now).is_empty());
    }

    #[test]
    fn growth_is_measured_against_the_window_low() {
        let monitor = Monitor::default();
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(monitor.dead_letter_growth(), 0);
        monitor.record_dead_letters(t0, 5);
        monitor.record_dead_letters(t0 + SignedDuration::from_secs(60), 3);
        monitor.record_dead_letters(t0 + SignedDuration::from_secs(120), 7);
        assert_eq!(monitor.dead_letter_growth(), 4);
        // 20 minutes later only the new sample is in the window.
        monitor.record_dead_letters(t0 + SignedDuration::from_secs(1320), 7);
        assert_eq!(monitor.dead_letter_growth(), 0);
    }
}
