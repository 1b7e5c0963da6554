//! How keyrelay's data is laid out in sled: the keys of result records and of
//! the time index, counters as big-endian u64s that merges add to, and values
//! as JSON.

use serde::{Serialize, de::DeserializeOwned};

use super::error::StoreError;
use crate::job::JobResult;

/// Index key of a result: its completion time, then its id.
pub fn time_key(at: jiff::Timestamp, id: &str) -> Vec<u8> {
    let nanos = u64::try_from(at.as_nanosecond()).unwrap_or(0);
    let mut key = Vec::with_capacity(8 + id.len());
    key.extend_from_slice(&nanos.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// Where a job's result is stored: pool and id (ids are the producers', and
/// two pools may use the same one). The separator cannot be in a valid pool
/// name, and a job id holds no control character.
pub fn record_key(pool: &str, id: &str) -> String {
    format!("{pool}\u{1f}{id}")
}

/// A result's entry in the time index: completion time ++ its record key.
pub fn index_key(result: &JobResult) -> Vec<u8> {
    time_key(result.completed_at, &record_key(&result.pool, &result.id))
}

/// The completion time and job id of an index key (see [`time_key`]).
pub fn split_time_key(key: &[u8]) -> Option<(jiff::Timestamp, &str)> {
    let (nanos, id) = key.split_first_chunk::<8>()?;
    let at = jiff::Timestamp::from_nanosecond(i128::from(u64::from_be_bytes(*nanos))).ok()?;
    Some((at, std::str::from_utf8(id).ok()?))
}

/// sled merge operator: counters are big-endian u64s that merges add to.
pub(super) fn add_u64(_key: &[u8], old: Option<&[u8]>, delta: &[u8]) -> Option<Vec<u8>> {
    let old = old.and_then(decode_u64).unwrap_or(0);
    let delta = decode_u64(delta).unwrap_or(0);
    Some(old.saturating_add(delta).to_be_bytes().to_vec())
}

pub(super) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

pub(super) fn read_json<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let Some(bytes) = tree.get(key.as_bytes())? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            tree: name,
            key: key.to_owned(),
            message: e.to_string(),
        })
}

pub(super) fn write_json<T: Serialize>(
    tree: &sled::Tree,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    // Serializing our own types cannot fail (no non-string map keys).
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Flush(e.to_string()))?;
    tree.insert(key.as_bytes(), bytes)?;
    Ok(())
}
