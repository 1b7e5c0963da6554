//! Spend counters per hour, pool, key, model and user (merged u64s, written
//! once a second from the ledger's pending counts), and the budgets set
//! through the admin API, which outlive restarts.

use std::collections::BTreeMap;

use super::db::Store;
use super::error::StoreError;
use super::layout::decode_u64;
use crate::spend::{Budget, BudgetScope, SpendCount, SpendKey};

/// Separates the parts of a counter's key (no name keyrelay accepts holds it).
const SEP: char = '\u{1f}';

impl Store {
    /// Add the ledger's pending counts.
    pub fn add_spend(&self, rows: &[(SpendKey, SpendCount)]) -> Result<(), StoreError> {
        let tree = &self.tables()?.spend_hourly;
        for (key, count) in rows {
            let fields = [
                ("nano_usd", count.nano_usd),
                ("calls", count.calls),
                ("unpriced", count.unpriced),
            ];
            for (field, n) in fields.into_iter().filter(|(_, n)| *n > 0) {
                tree.merge(encode(key, field).as_bytes(), n.to_be_bytes())?;
            }
        }
        Ok(())
    }

    /// Spend counters of the hours from `since` (`YYYY-MM-DDTHH`) on, or all.
    pub fn spend(&self, since: Option<&str>) -> Result<Vec<(SpendKey, SpendCount)>, StoreError> {
        let tree = &self.tables()?.spend_hourly;
        let entries = match since {
            Some(since) => tree.range(since.as_bytes()..),
            None => tree.iter(),
        };
        let mut rows: BTreeMap<SpendKey, SpendCount> = BTreeMap::new();
        for entry in entries {
            let (k, v) = entry?;
            let Some((key, field)) = decode(&String::from_utf8_lossy(&k)) else {
                continue;
            };
            let n = decode_u64(&v).unwrap_or(0);
            let count = rows.entry(key).or_default();
            match field.as_str() {
                "nano_usd" => count.nano_usd += n,
                "calls" => count.calls += n,
                "unpriced" => count.unpriced += n,
                _ => {}
            }
        }
        Ok(rows.into_iter().collect())
    }

    /// Keep a budget set through the admin API (an unlimited one too: it
    /// overrides the config's).
    pub fn set_budget(
        &self,
        scope: BudgetScope,
        name: &str,
        budget: &Budget,
    ) -> Result<(), StoreError> {
        let tree = &self.tables()?.spend_budgets;
        let id = format!("{}{SEP}{name}", scope.as_str());
        let value = serde_json::to_vec(budget).unwrap_or_default();
        tree.insert(id.as_bytes(), value)?;
        tree.flush()?;
        Ok(())
    }

    /// This store's id, made once: it names the store's spend figures in a
    /// fleet, so an instance restarted on it replaces them (whatever its
    /// host or name) instead of adding to them.
    pub fn id(&self) -> Result<String, StoreError> {
        let meta = &self.tables()?.meta;
        let fresh = {
            use sha2::{Digest, Sha256};
            let now = jiff::Timestamp::now().as_nanosecond();
            let digest = Sha256::new()
                .chain_update(now.to_be_bytes())
                .chain_update(std::process::id().to_be_bytes())
                .chain_update(self.location.0.as_os_str().as_encoded_bytes())
                .finalize();
            hex::encode(&digest[..12])
        };
        let _ =
            meta.compare_and_swap(b"store_id", None as Option<&[u8]>, Some(fresh.as_bytes()))?;
        meta.flush()?;
        let id = meta
            .get(b"store_id")?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        Ok(id.unwrap_or(fresh))
    }

    /// Every budget set through the admin API.
    pub fn budgets(&self) -> Result<Vec<(BudgetScope, String, Budget)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tables()?.spend_budgets.iter() {
            let (k, v) = entry?;
            let id = String::from_utf8_lossy(&k).into_owned();
            let Some((scope, name)) = id.split_once(SEP) else {
                continue;
            };
            let scope = match scope {
                "key" => BudgetScope::Key,
                "pool" => BudgetScope::Pool,
                "user" => BudgetScope::User,
                _ => continue,
            };
            if let Ok(budget) = serde_json::from_slice::<Budget>(&v) {
                out.push((scope, name.to_owned(), budget));
            }
        }
        Ok(out)
    }
}

fn encode(key: &SpendKey, field: &str) -> String {
    // A user is the producer's free text: the separator is replaced.
    let user = key.user.replace(SEP, "?");
    let parts: [&str; 6] = [&key.hour, &key.pool, &key.key, &key.model, &user, field];
    parts.join(&SEP.to_string())
}

fn decode(text: &str) -> Option<(SpendKey, String)> {
    let mut parts = text.split(SEP);
    let key = SpendKey {
        hour: parts.next()?.to_owned(),
        pool: parts.next()?.to_owned(),
        key: parts.next()?.to_owned(),
        model: parts.next()?.to_owned(),
        user: parts.next()?.to_owned(),
    };
    let field = parts.next()?.to_owned();
    Some((key, field))
}
