//! Hourly usage statistics per key: merged counters in the `usage_hourly`
//! tree under `pool/key/YYYY-MM-DDTHH/field`, written by the supervisor each
//! second and read by the stats API.

use super::db::Store;
use super::error::StoreError;
use super::layout::decode_u64;

impl Store {
    /// Add to the usage statistics of `key` (`pool/key`) for the hour of `at`.
    pub fn add_usage(
        &self,
        key: &str,
        at: jiff::Timestamp,
        fields: &[(&str, u64)],
    ) -> Result<(), StoreError> {
        self.add_usage_in_hour(key, &hour_of(at), fields)
    }

    /// Like `add_usage`, for an hour given as `YYYY-MM-DDTHH` (see [`hour_of`]).
    pub fn add_usage_in_hour(
        &self,
        key: &str,
        hour: &str,
        fields: &[(&str, u64)],
    ) -> Result<(), StoreError> {
        for (field, n) in fields.iter().filter(|(_, n)| *n > 0) {
            let id = format!("{key}/{hour}/{field}");
            self.tables()?
                .usage_hourly
                .merge(id.as_bytes(), n.to_be_bytes())?;
        }
        Ok(())
    }

    /// Usage statistics as (pool/key, hour, field, value), optionally only
    /// hours at or after `since`.
    pub fn usage(&self, since: Option<jiff::Timestamp>) -> Result<Vec<UsageRow>, StoreError> {
        let since = since.map(hour_of);
        let mut rows = Vec::new();
        for entry in self.tables()?.usage_hourly.iter() {
            let (k, v) = entry?;
            let Some(row) =
                parse_usage_key(&String::from_utf8_lossy(&k), decode_u64(&v).unwrap_or(0))
            else {
                continue;
            };
            if since.as_ref().is_none_or(|s| row.hour >= *s) {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// Drop usage statistics of hours before `cutoff`; returns how many entries.
    pub fn prune_usage(&self, cutoff: jiff::Timestamp) -> Result<usize, StoreError> {
        let cutoff = hour_of(cutoff);
        let mut removed = 0;
        for entry in self.tables()?.usage_hourly.iter() {
            let (k, _) = entry?;
            let old = parse_usage_key(&String::from_utf8_lossy(&k), 0)
                .is_none_or(|row| row.hour < cutoff);
            if old {
                self.tables()?.usage_hourly.remove(k)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// One usage statistic: a counter of one key in one hour.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageRow {
    /// `pool/key`
    pub key: String,
    /// `YYYY-MM-DDTHH` (UTC)
    pub hour: String,
    /// What is counted: `requests`, one outcome class (`success`, `rate_limited`,
    /// ...), `tokens_in`, `tokens_out` or `latency_ms` (summed).
    pub field: String,
    /// The count (or sum) for that hour.
    pub value: u64,
}

/// The UTC hour of an instant, as sortable text.
pub fn hour_of(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H").to_string()
}

fn parse_usage_key(key: &str, value: u64) -> Option<UsageRow> {
    let mut parts = key.rsplitn(3, '/');
    let field = parts.next()?.to_owned();
    let hour = parts.next()?.to_owned();
    let key = parts.next()?.to_owned();
    Some(UsageRow {
        key,
        hour,
        field,
        value,
    })
}
