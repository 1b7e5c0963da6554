//! Every metric's name, one constant each: the recorder's families and the
//! per-key ones kept apart in `key_series.rs` both name their metrics from here.

pub const JOBS_TOTAL: &str = "keyrelay_jobs_total";
pub const JOB_DURATION: &str = "keyrelay_job_duration_seconds";
pub const JOB_OVERHEAD: &str = "keyrelay_job_overhead_seconds";
pub const JOB_STAGE: &str = "keyrelay_job_stage_seconds";
pub const UPSTREAM_REQUESTS_TOTAL: &str = "keyrelay_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "keyrelay_upstream_duration_seconds";
pub const KEY_STATE: &str = "keyrelay_key_state";
pub const KEYS_AVAILABLE: &str = "keyrelay_pool_keys_available";
pub const REROUTES_TOTAL: &str = "keyrelay_reroutes_total";
pub const JOBS_IN_FLIGHT: &str = "keyrelay_jobs_in_flight";
pub const DEAD_LETTERS_TOTAL: &str = "keyrelay_dead_letters_total";
pub const REPLIES_UNROUTABLE_TOTAL: &str = "keyrelay_replies_unroutable_total";
pub const ANSWERED_FROM_STORE_TOTAL: &str = "keyrelay_jobs_answered_from_store_total";
pub const RETURNED_TO_BROKER_TOTAL: &str = "keyrelay_jobs_returned_to_broker_total";
pub const ACKS_LOST_TOTAL: &str = "keyrelay_acks_lost_total";
pub const SETTLE_FRAMES_TOTAL: &str = "keyrelay_settle_frames_total";
pub const WORKER_RESTARTS_TOTAL: &str = "keyrelay_worker_restarts_total";
pub const STORE_FLUSH_BATCH: &str = "keyrelay_store_flush_batch_size";
pub const STORE_FLUSH_SECONDS: &str = "keyrelay_store_flush_seconds";
pub const TOKENS_TOTAL: &str = "keyrelay_tokens_total";
pub const STORE_ERRORS_TOTAL: &str = "keyrelay_store_errors_total";
pub const RETRIES_TOTAL: &str = "keyrelay_retries_total";
pub const BUILD_INFO: &str = "keyrelay_build_info";
pub const KEY_QUOTA_USED: &str = "keyrelay_key_quota_used_ratio";
pub const POOL_NEXT_KEY_SECONDS: &str = "keyrelay_pool_next_key_seconds";
pub const CACHE_HITS_TOTAL: &str = "keyrelay_cache_hits_total";
pub const QUEUE_MESSAGES: &str = "keyrelay_queue_messages";
pub const QUEUE_CONSUMERS: &str = "keyrelay_queue_consumers";
pub const DEAD_LETTER_MESSAGES: &str = "keyrelay_dead_letter_messages";
pub const PROBES_TOTAL: &str = "keyrelay_probes_total";
pub const BROKER_CONNECTED: &str = "keyrelay_broker_connected";
pub const STORE_WRITABLE: &str = "keyrelay_store_writable";
pub const POOL_CONSUMERS: &str = "keyrelay_pool_consumers";
pub const ADMIN_REQUESTS_TOTAL: &str = "keyrelay_admin_requests_total";
