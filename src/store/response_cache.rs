//! The response cache: which stored result answers a request, by the
//! request's [`CacheKey`]. An entry is a pointer (when it was stored and the
//! result's id), not a copy: the answer itself is already in the results tree.
//!
//! Entries are binary and short (16-byte key; a version byte, 8-byte time and the id) because every
//! job with caching on looks one up and every success writes one.

use std::time::Duration;

use jiff::Timestamp;

use super::{Store, StoreError};
use crate::job::{CacheKey, JobResult};

/// First byte of an entry: its layout (then 8 bytes of big-endian
/// nanoseconds, then the id). Entries of another layout read as misses.
const FORMAT: u8 = 1;

/// A decoded entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAnswer {
    pub stored_at: Timestamp,
    pub result_id: String,
}

impl CachedAnswer {
    fn encode(&self) -> Vec<u8> {
        let nanos = self.stored_at.as_nanosecond() as i64;
        let mut bytes = Vec::with_capacity(9 + self.result_id.len());
        bytes.push(FORMAT);
        bytes.extend_from_slice(&nanos.to_be_bytes());
        bytes.extend_from_slice(self.result_id.as_bytes());
        bytes
    }

    /// `None` for anything that is not an entry (e.g. one written by an
    /// older version): treated as a miss and pruned.
    fn decode(bytes: &[u8]) -> Option<CachedAnswer> {
        let (&format, rest) = bytes.split_first()?;
        if format != FORMAT {
            return None;
        }
        let (nanos, id) = rest.split_first_chunk::<8>()?;
        Some(CachedAnswer {
            stored_at: Timestamp::from_nanosecond(i64::from_be_bytes(*nanos).into()).ok()?,
            result_id: std::str::from_utf8(id).ok()?.to_owned(),
        })
    }

    fn expired(&self, now: Timestamp, ttl: Duration) -> bool {
        let age = now.duration_since(self.stored_at);
        age.is_positive() && age.unsigned_abs() > ttl
    }
}

impl Store {
    /// The stored successful result answering request `key`, if cached no
    /// longer than `ttl` ago (an expired or unreadable entry is removed).
    pub fn cached_result(
        &self,
        key: &CacheKey,
        ttl: Duration,
    ) -> Result<Option<JobResult>, StoreError> {
        let Some(bytes) = self.response_cache.get(key)? else {
            return Ok(None);
        };
        let entry = CachedAnswer::decode(&bytes);
        let Some(entry) = entry.filter(|e| !e.expired(Timestamp::now(), ttl)) else {
            self.response_cache.remove(key)?;
            return Ok(None);
        };
        Ok(self.result(&entry.result_id)?.filter(JobResult::is_success))
    }

    /// Remember that the stored result `result_id` answers request `key`.
    pub fn cache_answer(&self, key: &CacheKey, result_id: &str) -> Result<(), StoreError> {
        let entry = CachedAnswer {
            stored_at: Timestamp::now(),
            result_id: result_id.to_owned(),
        };
        self.response_cache.insert(key, entry.encode())?;
        Ok(())
    }

    /// Remove cached answers older than `ttl`; returns how many.
    pub fn prune_cache(&self, ttl: Duration) -> Result<usize, StoreError> {
        let now = Timestamp::now();
        let mut removed = 0;
        for entry in self.response_cache.iter() {
            let (k, v) = entry?;
            let expired = CachedAnswer::decode(&v).is_none_or(|a| a.expired(now, ttl));
            if expired {
                self.response_cache.remove(k)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_reject_garbage() {
        let entry = CachedAnswer {
            stored_at: Timestamp::from_second(1_700_000_000).unwrap(),
            result_id: "job-42".into(),
        };
        assert_eq!(CachedAnswer::decode(&entry.encode()), Some(entry));
        assert_eq!(CachedAnswer::decode(b"short"), None);
        assert_eq!(CachedAnswer::decode(br#"{"stored_at":"2026"}"#), None);
    }

    #[test]
    fn expiry_follows_the_ttl() {
        let now = Timestamp::from_second(1_000).unwrap();
        let entry = |secs| CachedAnswer {
            stored_at: Timestamp::from_second(secs).unwrap(),
            result_id: "j".into(),
        };
        let ttl = Duration::from_secs(60);
        assert!(!entry(950).expired(now, ttl));
        assert!(entry(900).expired(now, ttl));
        // A clock that stepped back does not expire fresh entries.
        assert!(!entry(1_010).expired(now, ttl));
    }
}
