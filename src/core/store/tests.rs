use super::tables::RESULTS;
use super::*;
use crate::job::{JobResult, JobStatus};
use crate::provider::Usage;

fn result(id: &str) -> JobResult {
    JobResult {
        id: id.into(),
        status: JobStatus::Succeeded,
        text: Some("hi".into()),
        json: None,
        error: None,
        pool: "p".into(),
        model: Some("m".into()),
        key: Some("k".into()),
        usage: Usage {
            input_tokens: 1,
            output_tokens: 2,
            ..Usage::default()
        },
        attempts: 1,
        latency_ms: 3,
        metadata: serde_json::json!({}),
        user: None,
        cached: false,
        batch: None,
        completed_at: jiff::Timestamp::now(),
    }
}

#[tokio::test]
async fn results_and_counters_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        assert!(store.result_of("p", "a").unwrap().is_none());
        store
            .persist_result(&result("a"), Some("p/k"))
            .await
            .unwrap();
        store
            .persist_result(&result("b"), Some("p/k"))
            .await
            .unwrap();
        assert_eq!(
            store.result_of("p", "a").unwrap(),
            Some(result_with_time("a", &store))
        );
        // Results are durable on return; counters are written each second
        // and at shutdown, which this flush stands for.
        store.flush().await.unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.result_of("p", "b").unwrap().unwrap().id, "b");
    let counters = store.counters("p/k").unwrap();
    assert!(counters.contains(&("completed".into(), 2)));
    assert!(counters.contains(&("succeeded".into(), 2)));
}

fn result_with_time(id: &str, store: &Store) -> JobResult {
    // The stored timestamp is whatever was written; compare everything else.
    let stored = store.result_of("p", id).unwrap().unwrap();
    JobResult {
        completed_at: stored.completed_at,
        ..result(id)
    }
}

#[tokio::test]
async fn concurrent_persists_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.persist_result(&result(&format!("j{i}")), None).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for i in 0..64 {
        assert!(store.result_of("p", &format!("j{i}")).unwrap().is_some());
    }
}

#[tokio::test]
async fn corrupt_record_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    store
        .tables()
        .unwrap()
        .results
        .insert(b"bad", b"{not json".to_vec())
        .unwrap();
    assert!(matches!(
        store.record("bad"),
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn hourly_usage_adds_up_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    store
        .add_usage(
            "p/k",
            t("2026-01-01T10:05:00Z"),
            &[("requests", 1), ("tokens_in", 7)],
        )
        .unwrap();
    store
        .add_usage(
            "p/k",
            t("2026-01-01T10:55:00Z"),
            &[("requests", 1), ("tokens_in", 3)],
        )
        .unwrap();
    store
        .add_usage("p/k", t("2026-01-01T11:00:00Z"), &[("requests", 1)])
        .unwrap();
    let rows = store.usage(None).unwrap();
    let get = |hour: &str, field: &str| {
        rows.iter()
            .find(|r| r.hour == hour && r.field == field)
            .map(|r| r.value)
    };
    assert_eq!(get("2026-01-01T10", "requests"), Some(2));
    assert_eq!(get("2026-01-01T10", "tokens_in"), Some(10));
    assert_eq!(get("2026-01-01T11", "requests"), Some(1));
    assert_eq!(
        store.usage(Some(t("2026-01-01T11:30:00Z"))).unwrap().len(),
        1
    );
    assert_eq!(store.prune_usage(t("2026-01-01T11:00:00Z")).unwrap(), 2);
    assert_eq!(store.usage(None).unwrap().len(), 1);
}

#[tokio::test]
async fn cached_answers_are_rebuilt_from_the_store_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let ttl = std::time::Duration::from_secs(3600);
    let (cached, uncached) = ([7; 16], [8; 16]);
    {
        let store = Store::open(&path).unwrap();
        store.load_response_cache(ttl, 10).unwrap();
        let a = result("a");
        let body = serde_json::to_vec(&a).unwrap();
        store
            .persist_encoded(&a, &body, None, Some(cached))
            .await
            .unwrap();
        store.persist_result(&result("b"), None).await.unwrap();
        assert_eq!(store.cached_result(&cached).unwrap().unwrap().id, "a");
    }
    let store = Store::open(&path).unwrap();
    assert!(
        store.cached_result(&cached).unwrap().is_none(),
        "not loaded yet"
    );
    assert_eq!(store.load_response_cache(ttl, 10).unwrap(), 1);
    assert_eq!(store.cached_result(&cached).unwrap().unwrap().id, "a");
    assert!(store.cached_result(&uncached).unwrap().is_none());
    // A cache turned off loads nothing.
    assert_eq!(
        store
            .load_response_cache(std::time::Duration::ZERO, 10)
            .unwrap(),
        0
    );
    assert!(store.cached_result(&cached).unwrap().is_none());
}

/// sled 0.34.7's `flush_async` can wait forever when two run at once
/// (spacejam/sled#1308, fixed on sled's main branch, never released). Until
/// `Store::flush` went through the group committer, this hung every time.
/// The work runs on its own thread: a deadlocked sled also hangs on drop, and
/// the test must fail rather than hang with it.
#[test]
fn concurrent_flushes_all_finish() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(flush_from_many_tasks_at_once());
        let _ = done.send(());
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("every flush finished within 60 s");
}

async fn flush_from_many_tasks_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    for round in 0..200 {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let job = result(&format!("r{round}-{i}"));
                    store.persist_result(&job, Some("p/k")).await.unwrap();
                    store.flush().await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
}

/// Retention that removes every result (an idle store), then a crash before
/// the next manifest tick, then a longer retention: never taken for damage.
#[tokio::test]
async fn pruning_everything_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Store::open(&path).unwrap();
    let mut old = result("old");
    old.completed_at = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 10);
    store.persist_result(&old, None).await.unwrap();
    store.write_manifest().unwrap();
    let week_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 7);
    assert_eq!(store.prune_results(week_ago).unwrap(), 1);
    store.flush().await.unwrap();
    drop(store); // no manifest write after the prune: as a kill -9 would leave it
    let store = Store::open(&path).expect("an emptied store is not a damaged one");
    let month_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 30);
    store.prune_results(month_ago).unwrap();
    store.write_manifest().unwrap();
    drop(store);
    Store::open(&path).expect("a longer retention afterwards is not damage either");
}

/// The same job id in two pools is two jobs; a result stored under the bare
/// id by an earlier keyrelay answers only for its own pool.
#[tokio::test]
async fn results_are_kept_per_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let mut a = result("42");
    a.pool = "a".into();
    a.text = Some("from a".into());
    let mut b = result("42");
    b.pool = "b".into();
    b.text = Some("from b".into());
    store.persist_result(&a, None).await.unwrap();
    store.persist_result(&b, None).await.unwrap();
    let text = |pool| store.result_of(pool, "42").unwrap().and_then(|r| r.text);
    assert_eq!(text("a").as_deref(), Some("from a"));
    assert_eq!(text("b").as_deref(), Some("from b"));
    assert_eq!(text("c"), None);
}

/// A store written by an earlier keyrelay, under bare job ids: its results
/// answer only for their own pool.
#[tokio::test]
async fn results_under_bare_ids_answer_for_their_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = sled::open(&path).unwrap();
        let mut legacy = result("7");
        legacy.pool = "a".into();
        let raw = serde_json::to_vec(&legacy).unwrap();
        db.open_tree(RESULTS).unwrap().insert(b"7", raw).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert!(store.result_of("a", "7").unwrap().is_some());
    assert!(
        store.result_of("b", "7").unwrap().is_none(),
        "not another pool's"
    );
}

// Per-key lifetime counters (`counters.rs`), through the store.

fn sorted(mut counts: Vec<(String, u64)>) -> Vec<(String, u64)> {
    counts.sort();
    counts
}

#[tokio::test]
async fn counts_read_the_same_before_and_after_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).unwrap();
    store.bump("p/a", "completed");
    store.bump("p/a", "completed");
    store.bump("p/a", "succeeded");
    let expected = vec![("completed".to_owned(), 2), ("succeeded".to_owned(), 1)];
    assert_eq!(sorted(store.counters("p/a").unwrap()), expected);
    store.flush_counters().unwrap();
    assert_eq!(sorted(store.counters("p/a").unwrap()), expected);
    store.bump("p/a", "completed");
    assert_eq!(
        sorted(store.counters("p/a").unwrap())[0],
        ("completed".to_owned(), 3)
    );
    store.flush_counters().unwrap();
    assert_eq!(
        sorted(store.counters("p/a").unwrap())[0],
        ("completed".to_owned(), 3)
    );
}

#[tokio::test]
async fn counters_survive_a_reopen_once_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    {
        let store = Store::open(&path).unwrap();
        store.bump("p/a", "completed");
        store.flush().await.unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.counters("p/a").unwrap(),
        vec![("completed".to_owned(), 1)]
    );
}

#[tokio::test]
async fn reset_counters_clears_only_that_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).unwrap();
    store.bump("p/a", "completed");
    store.bump("p/ab", "completed");
    store.flush_counters().unwrap();
    store.bump("p/a", "completed");
    store.reset_counters("p/a").unwrap();
    assert!(store.counters("p/a").unwrap().is_empty());
    assert_eq!(store.counters("p/ab").unwrap().len(), 1);
}

#[tokio::test]
async fn spend_counters_merge_per_hour_and_budgets_survive_a_reopen() {
    use crate::spend::{Budget, BudgetScope, SpendCount, SpendKey};
    let dir = tempfile::tempdir().unwrap();
    let key = |hour: &str, user: &str| SpendKey {
        hour: hour.into(),
        pool: "p".into(),
        key: "k1".into(),
        model: "gpt-4o-mini".into(),
        user: user.into(),
    };
    let count = SpendCount {
        nano_usd: 1_500,
        calls: 1,
        unpriced: 0,
    };
    {
        let store = Store::open(&dir.path().join("db")).unwrap();
        store
            .add_spend(&[
                (key("2026-12-06T10", "a\u{1f}b"), count),
                (key("2026-12-06T11", ""), count),
            ])
            .unwrap();
        store
            .add_spend(&[(key("2026-12-06T10", "a\u{1f}b"), count)])
            .unwrap();
        let day = Budget {
            usd_per_day: Some(2.5),
            usd_per_month: None,
        };
        store.set_budget(BudgetScope::Pool, "p", &day).unwrap();
        store.flush().await.unwrap();
    }
    let store = Store::open(&dir.path().join("db")).unwrap();
    let rows = store.spend(Some("2026-12-06T10")).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0.user, "a?b");
    assert_eq!(rows[0].1.nano_usd, 3_000);
    assert_eq!(rows[0].1.calls, 2);
    assert_eq!(store.spend(Some("2026-12-06T11")).unwrap().len(), 1);
    let budgets = store.budgets().unwrap();
    assert_eq!(budgets.len(), 1);
    assert_eq!(budgets[0].2.usd_per_day, Some(2.5));
}

#[tokio::test]
async fn persist_if_absent_never_replaces_a_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).unwrap();
    let mut first = result("j");
    first.text = Some("the answer".into());
    assert!(store.persist_if_absent(&first).await.unwrap());
    let mut second = result("j");
    second.text = Some("an invalid resend".into());
    assert!(!store.persist_if_absent(&second).await.unwrap());
    let stored = store.result_of(&first.pool, "j").unwrap().unwrap();
    assert_eq!(stored.text.as_deref(), Some("the answer"));
}

#[tokio::test]
async fn cancellations_past_the_cutoff_are_pruned() {
    use super::batches::Cancel;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).unwrap();
    let old = jiff::Timestamp::from_second(1_000).unwrap();
    let new = jiff::Timestamp::from_second(5_000).unwrap();
    store.cancel(&Cancel::Job("old"), old).unwrap();
    store.cancel(&Cancel::Batch("kept"), new).unwrap();
    let cutoff = jiff::Timestamp::from_second(2_000).unwrap();
    assert_eq!(store.prune_cancellations(cutoff).unwrap(), 1);
    assert!(store.cancelled(&Cancel::Job("old")).unwrap().is_none());
    assert!(store.cancelled(&Cancel::Batch("kept")).unwrap().is_some());
}
