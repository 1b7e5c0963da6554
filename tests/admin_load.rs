//! Admin load must not starve the health endpoints (issue 19, part 3).
//!
//! 15,000 results are written through the store API (publishing that many jobs
//! would measure the pipeline, not the admin API), then 2,000 concurrent
//! `GET /v1/alerts`, plus `/v1/pools`, `/v1/stats` and `/v1/jobs` pages, hit
//! the running keyrelay while `/healthz`, `/readyz` and `/metrics` are probed,
//! each probe on a fresh connection as a kubelet makes it. Every probe must
//! answer 200 within 1 s; every admin request must get its normal answer or the
//! documented busy error (503 `{"error": "busy"}` with `Retry-After`): no hang,
//! no 500. The load and the probes run on threads of their own, so the test's
//! client never competes with keyrelay's actors for the test's thread.
//!
//! `cargo test --test admin_load -- --nocapture` prints the figures.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{READ_TOKEN, TestEnv, TestKey, TestPool};
use futures_util::StreamExt;
use jiff::{SignedDuration, Timestamp};
use keyrelay_core::job::{ErrorKind, JobError, JobResult, JobStatus};
use keyrelay_core::provider::Usage;
use keyrelay_core::store::Store;
use reqwest::StatusCode;
use serde_json::Value;

const RESULTS: usize = 15_000;
const ALERTS: usize = 2_000;
/// The other reads fired alongside the alerts: the heavy ones (capped) and
/// two that read only counters (never capped, so always answered).
const OTHERS: [(&str, usize); 6] = [
    ("/v1/pools", 200),
    ("/v1/stats?by=hour&since=1h", 100),
    ("/v1/stats?by=upstream", 50),
    ("/v1/jobs?limit=1000", 50),
    ("/v1/keys", 100),
    ("/v1/stats?by=key", 100),
];
/// Read only counters and key states: answered 200 whatever the load.
const NEVER_BUSY: [&str; 2] = ["/v1/keys", "/v1/stats?by=key"];
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];
/// What every probe must beat.
const PROBE_BUDGET: Duration = Duration::from_secs(1);
/// A probe slower than this is recorded as this (and fails the budget).
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// An admin request unanswered after this counts as hung.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

#[actix::test]
async fn health_endpoints_answer_within_a_second_under_admin_load() {
    let env = TestEnv::start_admin(vec![TestPool {
        name: "g",
        provider: "gemini",
        keys: vec![TestKey::new("k1", 1), TestKey::new("k2", 2)],
    }])
    .await;
    let started = Instant::now();
    store_results(env.app().store(), RESULTS).await;
    let stored_in = started.elapsed();
    let base = env.http_url();

    let stop = Arc::new(AtomicBool::new(false));
    let probes = {
        let (base, stop) = (base.clone(), stop.clone());
        std::thread::spawn(move || probe_until(&base, &stop))
    };
    let load = {
        let base = base.clone();
        std::thread::spawn(move || fire(&base))
    };
    let (load, load_took) = tokio::task::spawn_blocking(move || load.join())
        .await
        .unwrap()
        .expect("load thread");
    stop.store(true, Ordering::Release);
    let probes = tokio::task::spawn_blocking(move || probes.join())
        .await
        .unwrap()
        .expect("probe thread");

    eprintln!(
        "stored {RESULTS} results in {:.1} s; load of {} requests took {:.1} s",
        stored_in.as_secs_f64(),
        load.len(),
        load_took.as_secs_f64()
    );
    report_probes(&probes);
    report_admin_answers(&load);
    check_probes(&probes);
    check_admin_answers(&load);
    env.finish().await;
}

/// Results of two keys over the last 5 minutes; a third of k2's failed (so
/// `KeyrelayKeyUpstreamFailures` fires for k2). Written concurrently so the
/// group commit shares flushes, as it does for real jobs.
async fn store_results(store: &Store, n: usize) {
    let now = Timestamp::now();
    let text = "lorem ipsum dolor sit amet ".repeat(15);
    let written: Vec<_> = futures_util::stream::iter(0..n)
        .map(|i| {
            let key = if i % 2 == 0 { "k1" } else { "k2" };
            let failed = key == "k2" && i % 3 == 0;
            let result = JobResult {
                id: format!("load-{i}"),
                status: if failed {
                    JobStatus::Failed
                } else {
                    JobStatus::Succeeded
                },
                text: (!failed).then(|| text.clone()),
                json: None,
                error: failed.then(|| JobError::new(ErrorKind::Upstream, "gave up")),
                pool: "g".into(),
                model: Some("model-a".into()),
                key: Some(key.into()),
                usage: Usage {
                    input_tokens: 12,
                    output_tokens: 80,
                    ..Usage::default()
                },
                attempts: 1,
                latency_ms: 120,
                metadata: serde_json::json!({"batch": i / 100}),
                user: Some(format!("user-{}", i % 7)),
                cached: false,
                batch: None,
                completed_at: now - SignedDuration::from_millis(20 * i as i64),
            };
            async move {
                store
                    .persist_result(&result, Some(&format!("g/{key}")))
                    .await
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    assert!(written.iter().all(Result::is_ok), "every result stored");
}

/// One admin answer.
struct Answer {
    path: &'static str,
    status: Option<StatusCode>,
    retry_after: Option<String>,
    body: Value,
}

/// Fire every admin request at once; their answers and how long it took.
fn fire(base: &str) -> (Vec<Answer>, Duration) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(ADMIN_TIMEOUT)
            .build()
            .unwrap();
        let started = Instant::now();
        let requests = interleaved().into_iter().map(|path| {
            let req = client
                .get(format!("{base}{path}"))
                .bearer_auth(READ_TOKEN)
                .send();
            tokio::spawn(async move {
                let resp = match req.await {
                    Ok(resp) => resp,
                    Err(e) => {
                        return Answer {
                            path,
                            status: None,
                            retry_after: None,
                            body: Value::String(e.to_string()),
                        };
                    }
                };
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let text = resp.text().await.unwrap_or_default();
                Answer {
                    path,
                    status: Some(status),
                    retry_after,
                    body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                }
            })
        });
        let handles: Vec<_> = requests.collect();
        let mut answers = Vec::with_capacity(handles.len());
        for handle in handles {
            answers.push(handle.await.unwrap());
        }
        (answers, started.elapsed())
    })
}

/// Every request of the load, each kind spread evenly over the sequence (an
/// alerts request first), so no kind only arrives once the queue is full.
fn interleaved() -> Vec<&'static str> {
    let kinds = std::iter::once(("/v1/alerts", ALERTS)).chain(OTHERS);
    let mut paths: Vec<(f64, &'static str)> = kinds
        .flat_map(|(path, n)| (0..n).map(move |i| (i as f64 / n as f64, path)))
        .collect();
    paths.sort_by(|a, b| a.0.total_cmp(&b.0));
    paths.into_iter().map(|(_, path)| path).collect()
}

/// One probe: which endpoint, how long, what status (`None`: no answer).
type Probe = (&'static str, Duration, Option<StatusCode>);

/// Probe every health endpoint in turn until `stop`, each on a new connection.
fn probe_until(base: &str, stop: &AtomicBool) -> Vec<Probe> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(PROBE_TIMEOUT)
            .build()
            .unwrap();
        let mut probes = Vec::new();
        while !stop.load(Ordering::Acquire) {
            for path in PROBES {
                let started = Instant::now();
                let status = match client.get(format!("{base}{path}")).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.bytes().await.ok().map(|_| status)
                    }
                    Err(_) => None,
                };
                probes.push((path, started.elapsed(), status));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        probes
    })
}

fn report_probes(probes: &[Probe]) {
    for path in PROBES {
        let mut took: Vec<Duration> = probes.iter().filter(|p| p.0 == path).map(|p| p.1).collect();
        took.sort();
        let ms = |d: Option<&Duration>| d.copied().unwrap_or_default().as_secs_f64() * 1e3;
        eprintln!(
            "{path}: {} probes, p50 {:.1} ms, worst {:.1} ms",
            took.len(),
            ms(took.get(took.len() / 2)),
            ms(took.last())
        );
    }
}

fn check_probes(probes: &[Probe]) {
    for path in PROBES {
        let mine: Vec<&Probe> = probes.iter().filter(|p| p.0 == path).collect();
        assert!(mine.len() >= 5, "{path} was probed during the load");
        for (_, took, status) in &mine {
            assert_eq!(*status, Some(StatusCode::OK), "{path} answered 200");
            assert!(
                *took < PROBE_BUDGET,
                "{path} took {took:?} under admin load (budget {PROBE_BUDGET:?})"
            );
        }
    }
}

fn report_admin_answers(answers: &[Answer]) {
    let mut tally: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for a in answers {
        let label = a
            .status
            .map_or("no answer".into(), |s| s.as_u16().to_string());
        *tally.entry((a.path, label)).or_default() += 1;
    }
    eprintln!("admin answers (path, status) -> count: {tally:?}");
}

fn check_admin_answers(answers: &[Answer]) {
    for a in answers {
        match a.status {
            Some(StatusCode::OK) => check_normal(a),
            Some(StatusCode::SERVICE_UNAVAILABLE) if !NEVER_BUSY.contains(&a.path) => {
                assert_eq!(a.body["error"], "busy", "{}: {}", a.path, a.body);
                assert!(a.body["message"].as_str().is_some_and(|m| m.len() > 10));
                let secs: u64 = a
                    .retry_after
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{}: busy without Retry-After", a.path));
                assert!(secs >= 1);
            }
            other => panic!("{}: {other:?} {}", a.path, a.body),
        }
    }
    let served = |path: &str| {
        answers
            .iter()
            .filter(|a| a.path == path && a.status == Some(StatusCode::OK))
            .count()
    };
    // The first request (an alerts one) finds a slot free.
    assert!(served("/v1/alerts") > 0, "some alerts requests were served");
}

/// A 200 must be the endpoint's normal answer, computed over the stored results.
fn check_normal(a: &Answer) {
    let body = &a.body;
    match a.path {
        "/v1/alerts" => {
            let alerts = body["alerts"].as_array().expect("alerts array");
            assert!(
                alerts
                    .iter()
                    .any(|x| x["name"] == "KeyrelayKeyUpstreamFailures" && x["key"] == "k2"),
                "{body}"
            );
        }
        "/v1/pools" => {
            assert_eq!(body["pools"][0]["name"], "g", "{body}");
            assert!(body["pools"][0]["jobs_last_minute"].is_u64(), "{body}");
        }
        "/v1/stats?by=hour&since=1h" => {
            let total: u64 = body["groups"]
                .as_object()
                .expect("groups")
                .values()
                .map(|r| r["completed"].as_u64().unwrap_or(0))
                .sum();
            assert_eq!(total, RESULTS as u64, "{body}");
        }
        "/v1/stats?by=upstream" => assert_eq!(body["source"], "usage", "{body}"),
        "/v1/jobs?limit=1000" => {
            assert_eq!(body["jobs"].as_array().map(Vec::len), Some(1000));
        }
        "/v1/keys" => assert_eq!(body["keys"].as_array().map(Vec::len), Some(2)),
        "/v1/stats?by=key" => {
            let completed = |key: &str| body["groups"][key]["completed"].as_u64().unwrap_or(0);
            assert_eq!(
                completed("g/k1") + completed("g/k2"),
                RESULTS as u64,
                "{body}"
            );
        }
        other => panic!("unexpected path {other}"),
    }
}
