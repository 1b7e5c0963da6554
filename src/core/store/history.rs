//! Reading the results back: history pages (newest first, opaque cursor), time
//! window scans for statistics, and clearing a key's counters (admin reset).
//!
//! The `results_by_time` index may hold two entries for a job that ran twice
//! (its result was overwritten); an entry counts only when it matches the stored
//! result's `completed_at`.

use jiff::Timestamp;

use super::db::Store;
use super::error::StoreError;
use super::layout::{index_key, time_key};
use crate::job::{JobResult, JobStatus};

/// Index entries one page may walk past before it returns (a filter matching
/// little must not scan the whole store in one request); the cursor continues.
const SCAN_BUDGET: usize = 50_000;

/// Which results a history page holds.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only results of this end user.
    pub user: Option<String>,
    /// Only results of this pool.
    pub pool: Option<String>,
    /// Only results of this batch.
    pub batch: Option<String>,
    /// Only results with this status.
    pub status: Option<JobStatus>,
    /// Completed at or after.
    pub since: Option<Timestamp>,
    /// Completed at or before.
    pub until: Option<Timestamp>,
    /// Most results on the page.
    pub limit: usize,
    /// Continue after this position (from a previous page's `next_cursor`).
    pub cursor: Option<Vec<u8>>,
}

/// One page of history, newest first.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// At most `limit` results, newest first.
    pub results: Vec<JobResult>,
    /// Where the next page starts; `None` when there is nothing older.
    pub next_cursor: Option<String>,
}

/// The cursor as clients see it: the index key in hex.
pub fn encode_cursor(key: &[u8]) -> String {
    hex::encode(key)
}

/// Parse a cursor; `None` when it is not one of ours.
pub fn decode_cursor(text: &str) -> Option<Vec<u8>> {
    if text.len() < 16 || !text.len().is_multiple_of(2) || text.len() > 2 * (8 + 1024) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn nanos_key(at: Timestamp) -> Vec<u8> {
    u64::try_from(at.as_nanosecond())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec()
}

impl Store {
    /// A page of results matching `query`, newest first.
    pub fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let lower = nanos_key(query.since.unwrap_or(Timestamp::UNIX_EPOCH));
        let mut upper = match query.until {
            Some(until) => nanos_key(until + jiff::SignedDuration::from_nanos(1)),
            None => vec![0xff; 9],
        };
        if let Some(cursor) = &query.cursor
            && cursor < &upper
        {
            upper = cursor.clone();
        }
        let mut results = Vec::new();
        let mut walked = 0;
        let mut last = None;
        for entry in self.tables()?.results_by_time.range(lower..upper).rev() {
            let (key, _) = entry?;
            walked += 1;
            last = Some(key.to_vec());
            if let Some(result) = self.indexed(&key)?
                && matches(&result, query)
            {
                results.push(result);
                if results.len() >= query.limit {
                    break;
                }
            }
            if walked >= SCAN_BUDGET {
                break;
            }
        }
        let full = results.len() >= query.limit || walked >= SCAN_BUDGET;
        let next_cursor = match last {
            Some(key) if full && self.has_older(&key, &query.since)? => Some(encode_cursor(&key)),
            _ => None,
        };
        Ok(HistoryPage {
            results,
            next_cursor,
        })
    }

    /// Call `f` on every result completed in `[since, until]`, newest first, at
    /// most `max` of them; returns whether the scan stopped at `max`.
    pub fn scan_results(
        &self,
        since: Timestamp,
        until: Timestamp,
        max: usize,
        mut f: impl FnMut(&JobResult),
    ) -> Result<bool, StoreError> {
        let upper = nanos_key(until + jiff::SignedDuration::from_nanos(1));
        let mut seen = 0;
        for entry in self
            .tables()?
            .results_by_time
            .range(nanos_key(since)..upper)
            .rev()
        {
            let (key, _) = entry?;
            if let Some(result) = self.indexed(&key)? {
                f(&result);
                seen += 1;
                if seen >= max {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The result an index entry points to, unless the entry is stale.
    fn indexed(&self, key: &[u8]) -> Result<Option<JobResult>, StoreError> {
        let Some(record) = key.get(8..).and_then(|b| std::str::from_utf8(b).ok()) else {
            return Ok(None);
        };
        Ok(self.record(record)?.filter(|r| is_index_of(r, key)))
    }

    /// Remove results completed before `cutoff`, with their index entries;
    /// returns how many results. An index entry whose result was stored again
    /// later (the job ran twice) is dropped without touching the newer result.
    /// The result is removed only if it is still the very record that was
    /// checked (compare-and-swap): a job stored again meanwhile (a replayed
    /// dead letter) keeps its new result. An unreadable record is removed
    /// too, so one bad record cannot stall the retention for good.
    pub fn prune_results(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        // On disk before anything is removed: sled's own flush can make the
        // removals durable before the next manifest tick, and a crash then
        // must not look like damage.
        self.watermark.pruned(&nanos_key(cutoff));
        self.write_manifest()?;
        let mut removed = 0;
        let tables = self.tables()?;
        for entry in tables.results_by_time.range(..nanos_key(cutoff)) {
            let (key, _) = entry?;
            if let Some(id) = key.get(8..)
                && let Some(raw) = tables.results.get(id)?
                && is_old_record(&raw, &key)
                && tables
                    .results
                    .compare_and_swap(id, Some(&raw), None::<&[u8]>)?
                    .is_ok()
            {
                removed += 1;
            }
            tables.results_by_time.remove(key)?;
        }
        Ok(removed)
    }

    fn has_older(&self, key: &[u8], since: &Option<Timestamp>) -> Result<bool, StoreError> {
        let lower = nanos_key(since.unwrap_or(Timestamp::UNIX_EPOCH));
        Ok(self
            .tables()?
            .results_by_time
            .range(lower..key.to_vec())
            .next_back()
            .transpose()?
            .is_some())
    }
}

/// Whether a stored record is the one index entry `key` points to, or
/// unreadable (and so past saving).
fn is_old_record(raw: &[u8], key: &[u8]) -> bool {
    match serde_json::from_slice::<JobResult>(raw) {
        Ok(r) => is_index_of(&r, key),
        Err(_) => true,
    }
}

/// Whether index entry `key` points at this version of `result` (current
/// keys name the pool; an earlier keyrelay's only the id).
fn is_index_of(result: &JobResult, key: &[u8]) -> bool {
    index_key(result) == key || time_key(result.completed_at, &result.id) == key
}

fn matches(result: &JobResult, query: &HistoryQuery) -> bool {
    query
        .user
        .as_ref()
        .is_none_or(|u| result.user.as_ref() == Some(u))
        && query.pool.as_ref().is_none_or(|p| &result.pool == p)
        && query
            .batch
            .as_ref()
            .is_none_or(|b| result.batch.as_ref() == Some(b))
        && query.status.is_none_or(|s| result.status == s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Usage;

    fn result(id: &str, at: i64, user: &str, ok: bool) -> JobResult {
        JobResult {
            id: id.into(),
            status: if ok {
                JobStatus::Succeeded
            } else {
                JobStatus::Failed
            },
            text: None,
            json: None,
            error: None,
            pool: "p".into(),
            model: None,
            key: Some("k".into()),
            usage: Usage::default(),
            attempts: 1,
            latency_ms: 1,
            metadata: serde_json::Value::Null,
            cached: false,
            batch: None,
            user: Some(user.into()),
            completed_at: Timestamp::from_second(at).unwrap(),
        }
    }

    #[tokio::test]
    async fn pool_and_batch_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        for (i, (pool, batch)) in [("p", Some("b1")), ("q", Some("b1")), ("p", None)]
            .into_iter()
            .enumerate()
        {
            let mut r = result(&format!("j{i}"), 1000 + i as i64, "u", true);
            r.pool = pool.into();
            r.batch = batch.map(str::to_owned);
            store.persist_result(&r, None).await.unwrap();
        }
        let ids = |query: HistoryQuery| -> Vec<String> {
            let page = store.history(&HistoryQuery { limit: 10, ..query }).unwrap();
            page.results.into_iter().map(|r| r.id).collect()
        };
        let pool_p = HistoryQuery {
            pool: Some("p".into()),
            ..HistoryQuery::default()
        };
        assert_eq!(ids(pool_p), ["j2", "j0"]);
        let batch = HistoryQuery {
            batch: Some("b1".into()),
            ..HistoryQuery::default()
        };
        assert_eq!(ids(batch), ["j1", "j0"]);
    }

    #[tokio::test]
    async fn pages_newest_first_with_filters_and_rerun_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        for i in 0..10 {
            let user = if i % 2 == 0 { "even" } else { "odd" };
            store
                .persist_result(&result(&format!("j{i}"), 1000 + i, user, i != 3), None)
                .await
                .unwrap();
        }
        // j0 ran again later: only its newest entry counts.
        store
            .persist_result(&result("j0", 2000, "even", true), None)
            .await
            .unwrap();
        let mut query = HistoryQuery {
            limit: 4,
            ..HistoryQuery::default()
        };
        let mut ids = Vec::new();
        loop {
            let page = store.history(&query).unwrap();
            ids.extend(page.results.iter().map(|r| r.id.clone()));
            match page.next_cursor {
                Some(c) => query.cursor = Some(decode_cursor(&c).unwrap()),
                None => break,
            }
        }
        assert_eq!(
            ids,
            ["j0", "j9", "j8", "j7", "j6", "j5", "j4", "j3", "j2", "j1"]
        );
        let odd_failed = store
            .history(&HistoryQuery {
                user: Some("odd".into()),
                status: Some(JobStatus::Failed),
                limit: 10,
                ..HistoryQuery::default()
            })
            .unwrap();
        assert_eq!(odd_failed.results.len(), 1);
        let window = store
            .history(&HistoryQuery {
                since: Some(Timestamp::from_second(1002).unwrap()),
                until: Some(Timestamp::from_second(1004).unwrap()),
                limit: 10,
                ..HistoryQuery::default()
            })
            .unwrap();
        let ids: Vec<_> = window.results.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["j4", "j3", "j2"]);
        assert!(decode_cursor("zz").is_none());
    }

    #[tokio::test]
    async fn prune_removes_old_results_and_keeps_a_newer_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        for (id, at) in [("old", 1_000), ("twice", 1_001), ("new", 5_000)] {
            store
                .persist_result(&result(id, at, "u", true), None)
                .await
                .unwrap();
        }
        // An unreadable old record must not stall the prune.
        store
            .tables()
            .unwrap()
            .results
            .insert("bad", b"not json")
            .unwrap();
        store
            .tables()
            .unwrap()
            .results_by_time
            .insert(time_key(Timestamp::from_second(900).unwrap(), "bad"), &[])
            .unwrap();
        // "twice" ran again later: its newer result must survive the prune.
        store
            .persist_result(&result("twice", 6_000, "u", true), None)
            .await
            .unwrap();
        let removed = store
            .prune_results(Timestamp::from_second(2_000).unwrap())
            .unwrap();
        assert_eq!(removed, 2);
        assert!(store.result_of("p", "old").unwrap().is_none());
        assert!(
            store
                .tables()
                .unwrap()
                .results
                .get("bad")
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store.result_of("p", "twice").unwrap().unwrap().completed_at,
            Timestamp::from_second(6_000).unwrap()
        );
        let page = store
            .history(&HistoryQuery {
                limit: 10,
                ..HistoryQuery::default()
            })
            .unwrap();
        let ids: Vec<_> = page.results.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["twice", "new"]);
        assert_eq!(
            store.tables().unwrap().results_by_time.len(),
            2,
            "stale index entries dropped"
        );
    }
}
