//! Metric names (one constant each, in `metrics/names.rs`), their descriptions,
//! and the Prometheus recorder.
//! The per-key families are kept and rendered apart, in `metrics/key_series.rs`, for a
//! fast 1,000-key scrape.
//!
//! Label values come from bounded sets only: pool and key names from the config,
//! outcome classes, error kinds and reasons from enums. Never a job id.

use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

mod key_series;
mod names;
use key_series::key_series_table;
pub use key_series::{KeySeries, QuotaWindow, key_series};
pub use names::*;

/// How often buffered histogram samples are folded into their buckets.
pub const UPKEEP_PERIOD: Duration = Duration::from_secs(1);

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The exporter refused its configuration, or a recorder is already installed.
    #[error(transparent)]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    /// The upkeep thread could not be spawned.
    #[error("cannot start the metrics upkeep thread: {0}")]
    Upkeep(#[from] std::io::Error),
}

/// Install the global Prometheus recorder, start its upkeep and describe every
/// metric. Returns the handle that renders `/metrics`.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ],
        )?
        // keyrelay's own part of a job is tens of microseconds, and a whole
        // overhead a few milliseconds: finer buckets for both, or an
        // interpolated p50 inside a 1–2.5 ms bucket is off by up to 0.7 ms.
        .set_buckets_for_metric(Matcher::Full(JOB_STAGE.into()), OVERHEAD_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(JOB_OVERHEAD.into()), OVERHEAD_BUCKETS)?
        .install_recorder()?;
    spawn_upkeep(handle.clone(), UPKEEP_PERIOD)?;
    describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Exported from the first scrape, before the first lease is taken.
    metrics::gauge!(KEYS_DRIVEN).set(0.0);
    metrics::gauge!(FLEET_INSTANCES).set(1.0);
    metrics::counter!(ACKS_LOST_TOTAL).increment(0);
    Ok(handle)
}

/// Buckets of the overhead histograms, in seconds.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003,
    0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// The `/metrics` page: the recorder's families, then the per-key ones.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut page = handle.render();
    key_series_table().render_into(&mut page);
    page
}

/// `install_recorder` leaves upkeep to its caller. Without it every histogram
/// sample stays buffered until the next scrape: ~100 bytes per job, unbounded
/// when nothing scrapes. A plain thread, because the recorder outlives any one
/// actix System (tests start and stop many).
fn spawn_upkeep(handle: PrometheusHandle, period: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                handle.run_upkeep();
            }
        })
        .map(drop)
}

fn describe() {
    describe_gauge!(
        COST_USD_TOTAL,
        Unit::Count,
        "US dollars spent on provider calls at keyrelay's price table, by pool, key and model. Only grows (a gauge: the metrics crate's counters count integers); resets with the process."
    );
    describe_counter!(
        UNPRICED_CALLS_TOTAL,
        "Billed calls whose model has no price (their cost_usd is null), by pool and model."
    );
    describe_gauge!(
        BUDGET_USED_RATIO,
        "Spend as a share of a budget (1 = at the budget), by scope (key, pool), name and period (day, month)."
    );
    describe_counter!(
        JOBS_TOTAL,
        "Jobs completed, by pool and outcome (succeeded or error kind)."
    );
    describe_histogram!(
        JOB_DURATION,
        Unit::Seconds,
        "Time from delivery to result, by pool."
    );
    describe_histogram!(
        JOB_OVERHEAD,
        Unit::Seconds,
        "keyrelay's own time per job: delivery to ack minus provider time, by pool."
    );
    describe_histogram!(
        JOB_STAGE,
        Unit::Seconds,
        "keyrelay_job_overhead_seconds of every pool split by stage: store (result made durable), reply (publish to the broker's confirm), keyrelay (the rest: decoding, routing, building the call, waiting for a permit or a CPU)."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Provider call latency, by pool."
    );
    describe_gauge!(KEYS_AVAILABLE, "Keys of the pool currently in rotation.");
    describe_gauge!(
        KEYS_DRIVEN,
        "Keys whose lease this instance holds: the keys it drives. Summed over every instance, the number of keys driven at all."
    );
    describe_gauge!(
        FLEET_INSTANCES,
        "keyrelay instances on the broker this instance hears from, itself included."
    );
    describe_gauge!(
        BROKER_CONNECTED,
        "1 while the broker connection is up, 0 while it is down or reconnecting."
    );
    describe_gauge!(
        STORE_WRITABLE,
        "1 while the store can write, 0 while writes fail (no new jobs are taken)."
    );
    describe_gauge!(
        POOL_CONSUMERS,
        "Keys of the pool with a consumer on its queue right now."
    );
    describe_counter!(
        REROUTES_TOTAL,
        "Jobs moved to another key in-process, by pool and reason."
    );
    describe_counter!(
        DEAD_LETTERS_TOTAL,
        "Messages dead-lettered by keyrelay, by pool and reason."
    );
    describe_counter!(
        REPLIES_UNROUTABLE_TOTAL,
        "Results whose reply queue does not exist (the result is kept in the store)."
    );
    describe_counter!(
        ANSWERED_FROM_STORE_TOTAL,
        "Redelivered jobs answered from the store without a provider call."
    );
    describe_counter!(
        RETURNED_TO_BROKER_TOTAL,
        "Jobs handed back to their queue because no key of the pool could take them."
    );
    describe_counter!(
        ACKS_LOST_TOTAL,
        "Acks that could not be sent (channel gone); the broker redelivers."
    );
    describe_counter!(
        SETTLE_FRAMES_TOTAL,
        "Ack and nack frames sent, by kind (ack_folded settles a run of deliveries at once)."
    );
    describe_counter!(
        WORKER_RESTARTS_TOTAL,
        "Key workers restarted by the supervisor, by pool and key."
    );
    describe_histogram!(STORE_FLUSH_BATCH, "Results made durable by one sled flush.");
    describe_histogram!(
        STORE_FLUSH_SECONDS,
        Unit::Seconds,
        "Time one sled flush (group commit) takes."
    );
    describe_gauge!(
        POOL_NEXT_KEY_SECONDS,
        Unit::Seconds,
        "Time until a key of the pool is usable again (0 while one is)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the `version` label says which keyrelay runs."
    );
    describe_counter!(
        RETRIES_TOTAL,
        "Jobs parked in a delay queue after a transient failure, by pool."
    );
    describe_counter!(
        CACHE_HITS_TOTAL,
        "Jobs answered from the response cache without a provider call, by pool."
    );
    describe_counter!(
        STORE_ERRORS_TOTAL,
        "Results that could not be written to the store (replied without it)."
    );
    describe_ops();
}

/// The operations surface's metrics (admin API, queue-depth poller).
fn describe_ops() {
    describe_gauge!(
        QUEUE_MESSAGES,
        "Messages ready for delivery in the pool's job queue (polled from the broker every 15 s), by pool."
    );
    describe_gauge!(
        QUEUE_CONSUMERS,
        "Consumers on the pool's job queue, all instances (polled every 15 s), by pool."
    );
    describe_gauge!(
        DEAD_LETTER_MESSAGES,
        "Messages ready in the dead-letter queue (polled from the broker every 15 s)."
    );
    describe_counter!(
        PROBES_TOTAL,
        "Operator probes (one tiny provider request), by pool, key and outcome class."
    );
    describe_counter!(
        ADMIN_REQUESTS_TOTAL,
        "Admin API requests refused or served, by result (ok, unauthorized, forbidden)."
    );
}

/// Handles of the per-job metrics of one pool, registered once: the hot path
/// then records without building label sets or looking series up.
pub struct PoolMetrics {
    jobs: Vec<(&'static str, metrics::Counter)>,
    /// `keyrelay_job_duration_seconds` of the pool: delivery to result.
    pub job_duration: metrics::Histogram,
    /// `keyrelay_job_overhead_seconds` of the pool: delivery to ack minus provider time.
    pub job_overhead: metrics::Histogram,
    /// `keyrelay_job_stage_seconds` by stage: store, reply, keyrelay.
    pub job_stages: [metrics::Histogram; 3],
    /// `keyrelay_upstream_duration_seconds` of the pool: one provider call.
    pub upstream_duration: metrics::Histogram,
}

/// Every `outcome` label of `keyrelay_jobs_total`: `succeeded` and each error kind.
fn job_outcomes() -> impl Iterator<Item = &'static str> {
    std::iter::once("succeeded").chain(crate::job::ErrorKind::ALL.iter().map(|k| k.as_str()))
}

impl PoolMetrics {
    /// Register the handles of `pool` (one `keyrelay_jobs_total` series per
    /// outcome), and the pool's other counters at 0: a dashboard panel or an
    /// alert on a series that appears only at its first event shows nothing
    /// until then (`tests/dashboards.rs`).
    pub fn new(pool: &str) -> PoolMetrics {
        let pool = pool.to_owned();
        for reason in [
            "invalid_job",
            "upstream",
            "all_keys_unavailable",
            "budget_exceeded",
        ] {
            metrics::counter!(DEAD_LETTERS_TOTAL, "pool" => pool.clone(), "reason" => reason)
                .increment(0);
        }
        let reroutes = [
            "rate_limited",
            "quota_exhausted",
            "unauthorized",
            "key_unavailable",
            "budget_spent",
            "transient",
        ];
        for reason in reroutes {
            metrics::counter!(REROUTES_TOTAL, "pool" => pool.clone(), "reason" => reason)
                .increment(0);
        }
        for counter in [
            ANSWERED_FROM_STORE_TOTAL,
            RETURNED_TO_BROKER_TOTAL,
            REPLIES_UNROUTABLE_TOTAL,
        ] {
            metrics::counter!(counter, "pool" => pool.clone()).increment(0);
        }
        PoolMetrics {
            jobs: job_outcomes()
                .map(|o| {
                    (
                        o,
                        metrics::counter!(JOBS_TOTAL, "pool" => pool.clone(), "outcome" => o),
                    )
                })
                .collect(),
            job_duration: metrics::histogram!(JOB_DURATION, "pool" => pool.clone()),
            job_overhead: metrics::histogram!(JOB_OVERHEAD, "pool" => pool.clone()),
            // Not by pool: the store and the broker are shared by every pool,
            // and 66 lines per pool would be a tenth of a 1,000-key scrape.
            job_stages: ["store", "reply", "keyrelay"]
                .map(|stage| metrics::histogram!(JOB_STAGE, "stage" => stage)),
            upstream_duration: metrics::histogram!(UPSTREAM_DURATION, "pool" => pool),
        }
    }

    /// Split a finished job's overhead (delivery to ack minus provider time)
    /// into the store's and the broker's waits and what is left: keyrelay's own.
    pub fn job_stages(&self, overhead: Duration, store: Duration, reply: Duration) {
        let own = overhead.saturating_sub(store + reply);
        for (histogram, took) in self.job_stages.iter().zip([store, reply, own]) {
            histogram.record(took.as_secs_f64());
        }
    }

    /// Count one finished job under `outcome` (`succeeded` or an error kind);
    /// an unknown outcome is not counted.
    pub fn job(&self, outcome: &str) {
        if let Some((_, counter)) = self.jobs.iter().find(|(o, _)| *o == outcome) {
            counter.increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `_sum` of one stage of `keyrelay_job_stage_seconds`.
    fn stage_sum(handle: &PrometheusHandle, stage: &str) -> f64 {
        let prefix = format!("{JOB_STAGE}_sum{{stage=\"{stage}\"}} ");
        let text = handle.render();
        let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap();
        line[prefix.len()..].parse().unwrap()
    }

    #[test]
    fn job_stages_split_the_overhead_and_keyrelay_gets_the_rest() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let pool = PoolMetrics::new("p");
            let ms = Duration::from_millis;
            pool.job_stages(ms(10), ms(3), ms(5));
            // Waits longer than the overhead (clock granularity) leave keyrelay 0.
            pool.job_stages(ms(1), ms(1), ms(1));
        });
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(stage_sum(&handle, "store"), 0.004));
        assert!(close(stage_sum(&handle, "reply"), 0.006));
        assert!(close(stage_sum(&handle, "keyrelay"), 0.002));
    }
}
