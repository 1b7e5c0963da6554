//! The built-in default of every optional config field (the first layer,
//! under the TOML file and the environment).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::secret::ApiKey;

pub(super) fn queue_prefix() -> String {
    "keyrelay".into()
}
pub(super) fn delivery_limit() -> u32 {
    20
}
pub(super) fn heartbeat_secs() -> u16 {
    3
}
/// Results are written once and read rarely (a redelivery, the history
/// API), so a small cache costs no throughput and keeps memory flat.
pub(super) fn cache_mb() -> u64 {
    16
}
pub(super) fn store_path() -> PathBuf {
    PathBuf::from("data/keyrelay.sled")
}
pub(super) fn metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
pub(super) fn max_body_bytes() -> usize {
    1024 * 1024
}
pub(super) fn max_attempts() -> u32 {
    3
}
pub(super) fn connect_timeout_secs() -> u64 {
    10
}
pub(super) fn request_timeout_secs() -> u64 {
    120
}
pub(super) fn cache_ttl_secs() -> u64 {
    3600
}
pub(super) fn results_retention_days() -> u32 {
    30
}
pub(super) fn cache_max_entries() -> usize {
    100_000
}
pub(super) fn cache_by_default() -> bool {
    true
}
pub(super) fn stats_retention_days() -> u32 {
    30
}
pub(super) fn max_returns() -> u32 {
    50
}
pub(super) fn shutdown_grace_secs() -> u64 {
    30
}
pub(super) fn rate_window_secs() -> u64 {
    60
}
pub(super) fn cooldown_secs() -> u64 {
    60
}
pub(super) fn priority() -> u8 {
    1
}
pub(super) fn concurrency() -> u16 {
    4
}
pub(super) fn http2_max_streams() -> u32 {
    100
}
pub(super) fn empty_key() -> ApiKey {
    ApiKey::new("")
}
