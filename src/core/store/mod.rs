//! The sled store: results by job id, per-key counters and key states.
//!
//! One sled `Tree` per logical table. Writes that must survive a crash go through
//! [`Store::persist_result`], which returns only after the data is flushed to disk;
//! concurrent callers share one flush ([`GroupCommit`]).

pub mod batches;
mod counters;
mod db;
mod error;
mod group_commit;
pub mod history;
mod layout;
pub mod manifest;
mod recovery;
pub mod response_cache;
mod spend;
mod tables;
mod unsaved;
mod usage;
mod write_health;

pub use db::{DEFAULT_CACHE_BYTES, Store, WeakStore};
pub use error::StoreError;
pub use group_commit::GroupCommit;
pub use layout::{index_key, record_key, split_time_key, time_key};
pub use usage::{UsageRow, hour_of};

#[cfg(test)]
mod tests;
