//! Every metric's name, one constant each: the recorder's families and the
//! per-key ones kept apart in `key_series.rs` both name their metrics from here.

/// Counter: jobs completed, by pool and outcome (`succeeded` or the error kind).
pub const JOBS_TOTAL: &str = "keyrelay_jobs_total";
/// Histogram, seconds: delivery to result, by pool.
pub const JOB_DURATION: &str = "keyrelay_job_duration_seconds";
/// Histogram, seconds: keyrelay's own time per job (delivery to ack minus
/// provider time), by pool.
pub const JOB_OVERHEAD: &str = "keyrelay_job_overhead_seconds";
/// Histogram, seconds: the overhead of every pool split by stage (`store`,
/// `reply`, `keyrelay`).
pub const JOB_STAGE: &str = "keyrelay_job_stage_seconds";
/// Per-key counter: provider calls, by pool, key and outcome class.
pub const UPSTREAM_REQUESTS_TOTAL: &str = "keyrelay_upstream_requests_total";
/// Histogram, seconds: one provider call, by pool.
pub const UPSTREAM_DURATION: &str = "keyrelay_upstream_duration_seconds";
/// Per-key gauge: 1 for the key's current state, by pool, key and state.
pub const KEY_STATE: &str = "keyrelay_key_state";
/// Gauge: keys of the pool in rotation.
pub const KEYS_AVAILABLE: &str = "keyrelay_pool_keys_available";
/// Gauge: keys whose lease this instance holds (the keys it drives).
pub const KEYS_DRIVEN: &str = "keyrelay_keys_driven";
/// Gauge: instances on the broker this instance hears from, itself included.
pub const FLEET_INSTANCES: &str = "keyrelay_fleet_instances";
/// Counter: jobs moved to another key in-process, by pool and reason.
pub const REROUTES_TOTAL: &str = "keyrelay_reroutes_total";
/// Per-key gauge: jobs being processed, by pool and key.
pub const JOBS_IN_FLIGHT: &str = "keyrelay_jobs_in_flight";
/// Counter: messages dead-lettered by keyrelay, by pool and reason.
pub const DEAD_LETTERS_TOTAL: &str = "keyrelay_dead_letters_total";
/// Counter: results whose reply queue does not exist (kept in the store).
pub const REPLIES_UNROUTABLE_TOTAL: &str = "keyrelay_replies_unroutable_total";
/// Counter: redelivered jobs answered from the store without a provider call.
pub const ANSWERED_FROM_STORE_TOTAL: &str = "keyrelay_jobs_answered_from_store_total";
/// Counter: jobs handed back to their queue because no key could take them.
pub const RETURNED_TO_BROKER_TOTAL: &str = "keyrelay_jobs_returned_to_broker_total";
/// Counter: acks that could not be sent (channel gone; the broker redelivers).
pub const ACKS_LOST_TOTAL: &str = "keyrelay_acks_lost_total";
/// Counter: ack and nack frames sent, by kind.
pub const SETTLE_FRAMES_TOTAL: &str = "keyrelay_settle_frames_total";
/// Counter: key workers restarted by the supervisor, by pool and key.
pub const WORKER_RESTARTS_TOTAL: &str = "keyrelay_worker_restarts_total";
/// Histogram: results made durable by one sled flush.
pub const STORE_FLUSH_BATCH: &str = "keyrelay_store_flush_batch_size";
/// Histogram, seconds: one sled flush (group commit).
pub const STORE_FLUSH_SECONDS: &str = "keyrelay_store_flush_seconds";
/// Per-key counter: tokens reported by providers, by pool, key and direction.
pub const TOKENS_TOTAL: &str = "keyrelay_tokens_total";
/// Counter: results that could not be written to the store (replied without it).
pub const STORE_ERRORS_TOTAL: &str = "keyrelay_store_errors_total";
/// Counter: jobs parked in a delay queue after a transient failure, by pool.
pub const RETRIES_TOTAL: &str = "keyrelay_retries_total";
/// Gauge, always 1: its `version` label says which keyrelay runs.
pub const BUILD_INFO: &str = "keyrelay_build_info";
/// Per-key gauge: share of a declared limit used, by pool, key and window
/// (`minute`: rpm/tpm, `day`: rpd/tpd).
pub const KEY_QUOTA_USED: &str = "keyrelay_key_quota_used_ratio";
/// Gauge, seconds: until a key of the pool is usable again (0 while one is).
pub const POOL_NEXT_KEY_SECONDS: &str = "keyrelay_pool_next_key_seconds";
/// Counter: jobs answered from the response cache, by pool.
pub const CACHE_HITS_TOTAL: &str = "keyrelay_cache_hits_total";
/// Gauge: messages ready in the pool's job queue (polled every 15 s), by pool.
pub const QUEUE_MESSAGES: &str = "keyrelay_queue_messages";
/// Gauge: consumers on the pool's job queue, all instances (polled every 15 s), by pool.
pub const QUEUE_CONSUMERS: &str = "keyrelay_queue_consumers";
/// Gauge: messages ready in the dead-letter queue (polled every 15 s).
pub const DEAD_LETTER_MESSAGES: &str = "keyrelay_dead_letter_messages";
/// Counter: operator probes, by pool, key and outcome class.
pub const PROBES_TOTAL: &str = "keyrelay_probes_total";
/// Gauge: 1 while the broker connection is up, 0 while it is down or reconnecting.
pub const BROKER_CONNECTED: &str = "keyrelay_broker_connected";
/// Gauge: 1 while the store can write, 0 while writes fail.
pub const STORE_WRITABLE: &str = "keyrelay_store_writable";
/// Gauge: keys of the pool with a consumer on its queue right now.
pub const POOL_CONSUMERS: &str = "keyrelay_pool_consumers";
/// Counter: admin API requests, by result (`ok`, `unauthorized`, `forbidden`).
pub const ADMIN_REQUESTS_TOTAL: &str = "keyrelay_admin_requests_total";
/// Gauge that only grows, USD: what calls cost, by pool, key and model (a
/// gauge because the metrics crate's counters count integers).
pub const COST_USD_TOTAL: &str = "keyrelay_cost_usd_total";
/// Counter: billed calls whose model has no price (`cost_usd: null`), by pool and model.
pub const UNPRICED_CALLS_TOTAL: &str = "keyrelay_cost_unpriced_calls_total";
/// Gauge: spend as a share of a key's or pool's budget, by scope, name and period.
pub const BUDGET_USED_RATIO: &str = "keyrelay_budget_used_ratio";
