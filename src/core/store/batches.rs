//! Batches and cancellations.
//!
//! A batch is the jobs that carry one `batch` name. Each job is counted once
//! however often it is delivered: `batch_jobs` holds `batch␟id` → `q` (seen)
//! or `d` (done), and `batch_counts` the merged counters of each batch
//! (`seen`, `succeeded`, `failed.<kind>`, `nano_usd`). `batch_meta` keeps
//! what is known of a batch as a whole: its pool, the total its producer
//! declared, when it was first seen. `cancelled` holds `job␟id` and
//! `batch␟name`: a cancelled job is answered `cancelled` without a call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::db::Store;
use super::error::StoreError;
use super::layout::decode_u64;

const SEP: char = '\u{1f}';
const SEEN: &[u8] = b"q";
const DONE: &[u8] = b"d";

/// What is known of a batch as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchMeta {
    /// The pool its jobs were consumed from (the first seen).
    pub pool: String,
    /// How many jobs the producer said it has (`x-keyrelay-batch-total`).
    #[serde(default)]
    pub declared_total: Option<u64>,
    /// When its first job was seen.
    pub started_at: jiff::Timestamp,
    /// When its last job finished, if every job is done.
    #[serde(default)]
    pub finished_at: Option<jiff::Timestamp>,
}

/// A batch's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchCounts {
    /// Jobs seen (each once).
    pub seen: u64,
    /// Jobs answered with a success.
    pub succeeded: u64,
    /// Jobs answered with a failure, by error kind.
    pub failed: BTreeMap<String, u64>,
    /// What its calls cost, billionths of a dollar.
    pub nano_usd: u64,
}

impl BatchCounts {
    /// Jobs answered, successes and failures.
    pub fn done(&self) -> u64 {
        self.succeeded + self.failed.values().sum::<u64>()
    }
}

impl Store {
    /// A job of `batch` was delivered: counted once, and the batch's meta
    /// made (or its declared total learnt). Returns whether it was new.
    pub fn batch_seen(
        &self,
        batch: &str,
        pool: &str,
        id: &str,
        declared_total: Option<u64>,
        now: jiff::Timestamp,
    ) -> Result<bool, StoreError> {
        let tables = self.tables()?;
        let key = format!("{batch}{SEP}{id}");
        let fresh = tables
            .batch_jobs
            .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(SEEN))?
            .is_ok();
        if fresh {
            bump(&tables.batch_counts, batch, "seen", 1)?;
        }
        let meta = self.batch_meta(batch)?;
        let wanted = match meta {
            None => Some(BatchMeta {
                pool: pool.to_owned(),
                declared_total,
                started_at: now,
                finished_at: None,
            }),
            Some(m) if declared_total.is_some() && m.declared_total != declared_total => {
                Some(BatchMeta {
                    declared_total,
                    ..m
                })
            }
            Some(_) => None,
        };
        if let Some(meta) = wanted {
            let value = serde_json::to_vec(&meta).unwrap_or_default();
            tables.batch_meta.insert(batch.as_bytes(), value)?;
        }
        Ok(fresh)
    }

    /// A job of `batch` was answered (`outcome`: `succeeded` or an error
    /// kind): counted once. Returns whether it was the first answer.
    pub fn batch_done(
        &self,
        batch: &str,
        id: &str,
        outcome: &str,
        nano_usd: u64,
    ) -> Result<bool, StoreError> {
        let tables = self.tables()?;
        let key = format!("{batch}{SEP}{id}");
        let before = tables.batch_jobs.insert(key.as_bytes(), DONE)?;
        if before.as_deref() == Some(DONE) {
            return Ok(false);
        }
        if before.is_none() {
            bump(&tables.batch_counts, batch, "seen", 1)?;
        }
        let field = match outcome {
            "succeeded" => "succeeded".to_owned(),
            kind => format!("failed.{kind}"),
        };
        bump(&tables.batch_counts, batch, &field, 1)?;
        bump(&tables.batch_counts, batch, "nano_usd", nano_usd)?;
        Ok(true)
    }

    /// Declare `batch` of `pool` with `total` jobs (before or while its jobs
    /// are published).
    pub fn batch_declare(
        &self,
        batch: &str,
        pool: &str,
        total: u64,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let meta = match self.batch_meta(batch)? {
            Some(meta) => BatchMeta {
                declared_total: Some(total),
                ..meta
            },
            None => BatchMeta {
                pool: pool.to_owned(),
                declared_total: Some(total),
                started_at: now,
                finished_at: None,
            },
        };
        let value = serde_json::to_vec(&meta).unwrap_or_default();
        self.tables()?.batch_meta.insert(batch.as_bytes(), value)?;
        Ok(())
    }

    /// Record that `batch` has every job done (once).
    pub fn batch_finished(&self, batch: &str, at: jiff::Timestamp) -> Result<(), StoreError> {
        if let Some(mut meta) = self.batch_meta(batch)?
            && meta.finished_at.is_none()
        {
            meta.finished_at = Some(at);
            let value = serde_json::to_vec(&meta).unwrap_or_default();
            self.tables()?.batch_meta.insert(batch.as_bytes(), value)?;
        }
        Ok(())
    }

    /// What is known of `batch` as a whole.
    pub fn batch_meta(&self, batch: &str) -> Result<Option<BatchMeta>, StoreError> {
        let raw = self.tables()?.batch_meta.get(batch.as_bytes())?;
        Ok(raw.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// The counters of `batch`.
    pub fn batch_counts(&self, batch: &str) -> Result<BatchCounts, StoreError> {
        let prefix = format!("{batch}{SEP}");
        let mut counts = BatchCounts::default();
        for entry in self.tables()?.batch_counts.scan_prefix(prefix.as_bytes()) {
            let (k, v) = entry?;
            let field = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let n = decode_u64(&v).unwrap_or(0);
            match field.as_str() {
                "seen" => counts.seen = n,
                "succeeded" => counts.succeeded = n,
                "nano_usd" => counts.nano_usd = n,
                other => {
                    if let Some(kind) = other.strip_prefix("failed.") {
                        counts.failed.insert(kind.to_owned(), n);
                    }
                }
            }
        }
        Ok(counts)
    }

    /// Every batch this store knows, with its meta.
    pub fn batches(&self) -> Result<Vec<(String, BatchMeta)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tables()?.batch_meta.iter() {
            let (k, v) = entry?;
            if let Ok(meta) = serde_json::from_slice::<BatchMeta>(&v) {
                out.push((String::from_utf8_lossy(&k).into_owned(), meta));
            }
        }
        Ok(out)
    }

    /// Cancel job `id` of `pool`, or (`id` None) every job of `batch`: kept
    /// durably, checked on each delivery.
    pub fn cancel(&self, what: &Cancel<'_>, at: jiff::Timestamp) -> Result<(), StoreError> {
        let tables = self.tables()?;
        tables
            .cancelled
            .insert(what.key().as_bytes(), at.to_string().as_bytes())?;
        tables.cancelled.flush()?;
        Ok(())
    }

    /// Drop cancellations made before `cutoff` (results are kept as long:
    /// a job redelivered after both are gone runs as a new one). Returns how
    /// many went.
    pub fn prune_cancellations(&self, cutoff: jiff::Timestamp) -> Result<usize, StoreError> {
        let tables = self.tables()?;
        let mut removed = 0;
        for entry in tables.cancelled.iter() {
            let (key, at) = entry?;
            let old = std::str::from_utf8(&at)
                .ok()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t < cutoff);
            if old {
                tables.cancelled.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// When `what` was cancelled, if it was.
    pub fn cancelled(&self, what: &Cancel<'_>) -> Result<Option<String>, StoreError> {
        let tables = self.tables()?;
        if tables.cancelled.is_empty() {
            return Ok(None);
        }
        let raw = tables.cancelled.get(what.key().as_bytes())?;
        Ok(raw.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

/// What a cancellation names.
pub enum Cancel<'a> {
    /// One job, by id (in whichever pool).
    Job(&'a str),
    /// Every job of a batch.
    Batch(&'a str),
}

impl Cancel<'_> {
    fn key(&self) -> String {
        match self {
            Cancel::Job(id) => format!("job{SEP}{id}"),
            Cancel::Batch(name) => format!("batch{SEP}{name}"),
        }
    }
}

fn bump(tree: &sled::Tree, batch: &str, field: &str, n: u64) -> Result<(), StoreError> {
    if n > 0 {
        let key = format!("{batch}{SEP}{field}");
        tree.merge(key.as_bytes(), n.to_be_bytes())?;
    }
    Ok(())
}
