//! Several keyrelay processes on one broker (issue 21): each key driven by
//! exactly one of them, the keys shared out as instances come, and taken
//! over within seconds when one is SIGKILLed, without a job lost, a declared
//! limit broken, or a key used by two instances at once.
//!
//! Real processes (`keyrelay run`), the real RabbitMQ, the mock provider over
//! HTTP recording which instance (User-Agent) made each call and when.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{OutputLog, Relay, ReplyQueue, TestKey, TestPool};
use keyrelay::amqp::{Broker, PublishOutcome, Publisher};
use keyrelay_core::job::JobStatus;
use keyrelay_mock::{CallRecord, MockSettings};
use lapin::BasicProperties;

const KEYS: [&str; 6] = ["k1", "k2", "k3", "k4", "k5", "k6"];
/// Declared and enforced per key: this many calls in any window.
const RPM: u32 = 20;
const WINDOW: Duration = Duration::from_secs(2);
const CONCURRENCY: u16 = 4;
const JOBS: usize = 1_200;
const FAILOVER_LIMIT: Duration = Duration::from_secs(5);
const TOKEN: &str = "fleet-test-admin-token-0123456789";
const BALANCE_LIMIT: Duration = Duration::from_secs(30);

/// One child keyrelay with its own name, store and log.
struct Member {
    name: &'static str,
    relay: Relay,
}

async fn spawn(name: &'static str, config: &Path, dir: &Path) -> Member {
    spawn_with(name, config, dir, &[]).await
}

async fn spawn_with(
    name: &'static str,
    config: &Path,
    dir: &Path,
    extra: &[(&str, &str)],
) -> Member {
    let log: OutputLog = Arc::default();
    let store = dir.join(format!("store-{name}"));
    let store = store.to_str().unwrap().to_owned();
    let mut envs = vec![
        ("KEYRELAY__INSTANCE__NAME", name),
        ("KEYRELAY__STORE__PATH", store.as_str()),
    ];
    envs.extend_from_slice(extra);
    let relay = Relay::spawn_with(config, "info,lapin=warn", &log, &envs).await;
    Member { name, relay }
}

/// The tests' one pool, `g`.
fn one_pool(keys: Vec<TestKey>) -> Vec<TestPool> {
    vec![TestPool {
        name: "g",
        provider: "gemini",
        keys,
    }]
}

/// Pool `g` of the six [`KEYS`], each declaring (and the mock enforcing) [`RPM`].
fn rpm_limited_pool() -> Vec<TestPool> {
    let keys = KEYS
        .iter()
        .map(|k| {
            TestKey::new(k, 1)
                .concurrency(CONCURRENCY)
                .limits(&format!("  rpm = {RPM}"))
                .mock(|m| m.with_rpm(RPM))
        })
        .collect();
    one_pool(keys)
}

/// The mock for `pools`, answering in 20 ms, its rate window `minute` long,
/// recording who called with which key and when.
async fn recording_mock(pools: &[TestPool], minute: Duration) -> keyrelay_mock::MockProvider {
    let settings = MockSettings {
        latency: Duration::from_millis(20),
        minute,
        record_calls: true,
        ..MockSettings::default()
    };
    common::start_mock(pools, settings).await
}

/// The test's producer: a broker connection, a publisher, and its reply queue.
async fn producer(prefix: &str) -> (Arc<Broker>, Publisher, String, ReplyQueue) {
    let broker = Arc::new(Broker::connect(&common::amqp_url()).await.unwrap());
    let publisher = Publisher::new(broker.clone()).await.unwrap();
    let replies_name = format!("{prefix}.replies");
    let replies = ReplyQueue::open(&broker, &replies_name).await;
    (broker, publisher, replies_name, replies)
}

/// `n` persistent jobs `<tag>-00000`… on `queue`, replies to `replies`,
/// each confirmed as routed to the queue.
async fn publish_backlog(publisher: &Publisher, queue: &str, replies: &str, tag: &str, n: usize) {
    for i in 0..n {
        let id = format!("{tag}-{i:05}");
        let body = serde_json::json!({"id": id, "prompt": format!("{tag} job {id}")});
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_reply_to(replies.into());
        let outcome = publisher
            .publish(queue, body.to_string().as_bytes(), props, true)
            .await
            .unwrap();
        assert_eq!(outcome, PublishOutcome::Delivered);
    }
}

/// Keys each live member drives, from its `/metrics`.
async fn driven(members: &[Member]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for m in members {
        let body = m.relay.metrics().await;
        out.insert(
            m.name,
            common::metric_sum(&body, "keyrelay_keys_driven") as usize,
        );
    }
    out
}

/// Poll the members' metrics (every 50 ms) until `done` holds; how long it took.
async fn until_driven(
    members: &[Member],
    limit: Duration,
    what: &str,
    done: impl Fn(&BTreeMap<&'static str, usize>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let now = driven(members).await;
        if done(&now) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what} within {limit:?}; keys driven: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix::test]
async fn three_instances_share_the_keys_and_survive_a_sigkill() {
    common::init_logs();
    let pools = rpm_limited_pool();
    let mock = recording_mock(&pools, WINDOW).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("kr-fleet.{}", uuid::Uuid::now_v7().simple());
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config_path = common::write_config_file_with(
        &pools,
        &mock,
        dir.path(),
        &prefix,
        "",
        &format!(
            "shutdown_grace_secs = 10\n\n[admin]\nadmin_token_file = \"{}\"\n",
            token_file.display()
        ),
        &format!("rate_window_secs = {}\n", WINDOW.as_secs()),
    );
    let config = keyrelay_core::config::Config::load(&config_path).unwrap();

    // One instance alone drives every key.
    let mut members = vec![spawn("a", &config_path, dir.path()).await];
    until_driven(&members, common::WAIT, "a alone drives every key", |d| {
        d["a"] == KEYS.len()
    })
    .await;

    // A backlog, then two more instances join while it drains.
    let (broker, publisher, replies_name, mut replies) = producer(&prefix).await;
    let queue = config.job_queue("g");
    publish_backlog(&publisher, &queue, &replies_name, "fleet", JOBS).await;
    members.push(spawn("b", &config_path, dir.path()).await);
    members.push(spawn("c", &config_path, dir.path()).await);
    let balanced = until_driven(&members, BALANCE_LIMIT, "the three share the keys", |d| {
        d.values().all(|n| *n == KEYS.len() / 3)
    })
    .await;
    eprintln!("balanced 2/2/2 {balanced:?} after b and c started");

    // Any instance shows every key with its driver, and acts on a key where
    // it is driven: disable one of b's keys through a. (a hears of b's and
    // c's keys by their beacons, moments after their metrics say so.)
    let a_http = members[0].relay.http;
    let start = Instant::now();
    loop {
        let fleet = admin(a_http, reqwest::Method::GET, "/v1/fleet").await;
        let owners = fleet["owners"].as_object().unwrap();
        if owners.values().all(|o| o["kind"] != "nobody") {
            break;
        }
        assert!(
            start.elapsed() < common::WAIT,
            "a sees every key driven: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys = admin(a_http, reqwest::Method::GET, "/v1/keys").await;
    let drivers: BTreeMap<String, String> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_owned(),
                k["driven_by"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    for name in ["a", "b", "c"] {
        let n = drivers.values().filter(|d| *d == name).count();
        assert_eq!(n, 2, "{name} drives 2 keys in a's /v1/keys: {drivers:?}");
    }
    let b_key = drivers.iter().find(|(_, d)| *d == "b").unwrap().0.clone();
    let disabled = admin(
        a_http,
        reqwest::Method::POST,
        &format!("/v1/keys/g/{b_key}/disable"),
    )
    .await;
    assert_eq!(
        disabled["answered_by"], "b",
        "done where the key is driven: {disabled}"
    );
    assert_eq!(disabled["key"]["state"], "disabled", "{disabled}");

    // Half-way through, SIGKILL b: a and c take its keys.
    let mut answers: HashMap<String, usize> = HashMap::new();
    let mut succeeded = 0usize;
    while answers.len() < JOBS / 2 {
        let reply = replies.next().await;
        succeeded += usize::from(reply.status == JobStatus::Succeeded);
        *answers.entry(reply.id.clone()).or_default() += 1;
    }
    let b = members.remove(1);
    assert_eq!(b.name, "b");
    b.relay.kill9().await;
    let failover = until_driven(&members, FAILOVER_LIMIT, "survivors drive b's keys", |d| {
        d.values().sum::<usize>() == KEYS.len()
    })
    .await;
    eprintln!("failover: survivors drive every key {failover:?} after the SIGKILL");
    // b's disabled key stays disabled with its new driver.
    let keys = admin(a_http, reqwest::Method::GET, "/v1/keys").await;
    let taken = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == b_key.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        taken["state"], "disabled",
        "the state followed the key: {taken}"
    );
    assert!(
        taken["driven_by"] == "a" || taken["driven_by"] == "c",
        "a survivor drives it: {taken}"
    );

    // Every job answered; duplicates only for what b had in flight.
    while answers.len() < JOBS {
        let reply = replies.next().await;
        succeeded += usize::from(reply.status == JobStatus::Succeeded);
        *answers.entry(reply.id.clone()).or_default() += 1;
    }
    let duplicates: usize = answers.values().map(|n| n - 1).sum();
    let b_in_flight_bound = 2 * usize::from(CONCURRENCY) * 2;
    assert!(
        duplicates <= b_in_flight_bound,
        "{duplicates} duplicate answers; at most what b could have in flight ({b_in_flight_bound})"
    );
    assert_eq!(succeeded, JOBS + duplicates, "every answer a success");

    // The provider's view: no 429, no key used by two instances at once,
    // never more than RPM calls of a key in any window.
    let stats = mock.stats();
    assert_eq!(stats.total().rate_limited, 0, "no upstream 429: {stats:?}");
    assert!(
        stats.total().successes as usize <= JOBS + b_in_flight_bound,
        "paid at most once per job plus b's calls in flight: {stats:?}"
    );
    let calls = mock.calls();
    let callers = check_calls(&calls);
    for name in ["a", "b", "c"] {
        assert!(
            callers
                .iter()
                .any(|c| c.contains(&format!("(instance {name})"))),
            "instance {name} made calls: {callers:?}"
        );
    }

    // A result is found from any instance, or the 404 says who was asked.
    // (The last jobs ran on a and c, after b was gone.)
    let (mut here, mut there) = (0, 0);
    for i in JOBS - 60..JOBS {
        let url = format!("http://{a_http}/v1/jobs/fleet-{i:05}");
        let response = reqwest::Client::new()
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        match (status, body["answered_by"].as_str()) {
            (200, None) => here += 1,
            (200, Some("c")) => there += 1,
            (404, _) => assert!(
                body["message"].as_str().unwrap().contains("nor on c"),
                "{body}"
            ),
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    assert!(
        here > 0 && there > 0,
        "results found on a ({here}) and through c ({there})"
    );

    for m in members {
        let status = m.relay.terminate().await;
        assert!(
            status.success(),
            "{} exits 0 after SIGTERM: {status}",
            m.name
        );
    }
    let mut queues = common::keyrelay_queues(&config);
    queues.push(replies_name);
    common::delete_queues(&broker, &queues).await;
}

/// An instance cut off from the broker (its TCP connection frozen, no
/// reset) stops starting calls before the broker gives its keys away: on
/// every key, the calls of the cut-off instance all come before the first
/// call of the instance that took the key over.
#[actix::test]
async fn a_partitioned_instance_stops_calling_before_its_keys_move() {
    common::init_logs();
    let keys = ["p1", "p2"]
        .iter()
        .map(|k| TestKey::new(k, 1).concurrency(CONCURRENCY))
        .collect();
    let pools = one_pool(keys);
    let mock = recording_mock(&pools, Duration::from_secs(60)).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("kr-partition.{}", uuid::Uuid::now_v7().simple());
    let config_path = common::write_config_file(&pools, &mock, dir.path(), &prefix, "", "");
    let config = keyrelay_core::config::Config::load(&config_path).unwrap();
    let upstream = {
        let url = reqwest::Url::parse(&common::amqp_url()).unwrap();
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5672))
            .parse()
            .unwrap()
    };
    let proxy = common::proxy::FreezeProxy::start(upstream).await;
    let proxied = proxy.url();

    // a (behind the proxy) drives both keys, then shares them with b.
    let a = spawn_with(
        "a",
        &config_path,
        dir.path(),
        &[("KEYRELAY__BROKER__URL", &proxied)],
    )
    .await;
    until_driven(
        std::slice::from_ref(&a),
        common::WAIT,
        "a drives both keys",
        |d| d["a"] == 2,
    )
    .await;
    let b = spawn("b", &config_path, dir.path()).await;
    let members = vec![a, b];
    until_driven(&members, common::WAIT, "a and b drive one key each", |d| {
        d["a"] == 1 && d["b"] == 1
    })
    .await;

    // A steady stream of jobs while a is cut off.
    let (broker, publisher, replies_name, mut replies) = producer(&prefix).await;
    let queue = config.job_queue("g");
    let jobs = 400;
    for i in 0..jobs {
        let body = serde_json::json!({"id": format!("part-{i:04}"), "prompt": format!("partition job {i}")});
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_reply_to(replies_name.as_str().into());
        publisher
            .publish(&queue, body.to_string().as_bytes(), props, true)
            .await
            .unwrap();
        if i == jobs / 4 {
            proxy.freeze();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // b alone drives both keys once the broker dropped a's connection.
    let b_only = &members[1..];
    until_driven(
        b_only,
        Duration::from_secs(30),
        "b drives a's key too",
        |d| d["b"] == 2,
    )
    .await;
    let mut answered: HashMap<String, usize> = HashMap::new();
    while answered.len() < jobs {
        let reply = replies.next().await;
        *answered.entry(reply.id).or_default() += 1;
    }

    // Per key, by start time: a's calls, then b's, never a after b.
    let calls = mock.calls();
    let mut by_key: BTreeMap<&str, Vec<&CallRecord>> = BTreeMap::new();
    for call in &calls {
        by_key.entry(call.key.as_str()).or_default().push(call);
    }
    for (key, mut calls) in by_key {
        calls.sort_by_key(|c| c.start_us);
        let first_b = calls.iter().position(|c| c.caller.contains("(instance b)"));
        if let Some(first_b) = first_b {
            let late_a: Vec<_> = calls[first_b..]
                .iter()
                .filter(|c| c.caller.contains("(instance a)"))
                .collect();
            assert!(
                late_a.is_empty(),
                "key {key}: a called after b took it over: {late_a:?}"
            );
            if first_b > 0 {
                assert!(
                    calls[first_b - 1].end_us <= calls[first_b].start_us,
                    "key {key}: a's last call still running when b's first began"
                );
            }
        }
    }

    proxy.thaw();
    for m in members {
        // a may still be reconnecting: either way it must stop.
        let _ = m.relay.terminate().await;
    }
    let mut queues = common::keyrelay_queues(&config);
    queues.push(replies_name);
    common::delete_queues(&broker, &queues).await;
}

/// `method path` on an instance's admin API; its JSON (200 expected).
async fn admin(
    http: std::net::SocketAddr,
    method: reqwest::Method,
    path: &str,
) -> serde_json::Value {
    let response = reqwest::Client::new()
        .request(method, format!("http://{http}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Per key: calls of different instances never overlap, no window of
/// `WINDOW` holds more than `RPM` calls, and the key never sat idle for 5 s
/// while the backlog drained (hand-overs and the failover included).
/// Returns the callers seen.
fn check_calls(calls: &[CallRecord]) -> Vec<String> {
    let mut by_key: BTreeMap<&str, Vec<&CallRecord>> = BTreeMap::new();
    for call in calls {
        by_key.entry(call.key.as_str()).or_default().push(call);
    }
    let mut callers: Vec<String> = calls.iter().map(|c| c.caller.clone()).collect();
    callers.sort();
    callers.dedup();
    let window_us = WINDOW.as_micros() as u64;
    for (key, mut calls) in by_key {
        calls.sort_by_key(|c| c.start_us);
        let idle = calls
            .windows(2)
            .map(|w| w[1].start_us.saturating_sub(w[0].end_us))
            .max()
            .unwrap_or(0);
        assert!(
            idle < 5_000_000,
            "key {key} idle for {} ms while jobs waited",
            idle / 1000
        );
        for (i, a) in calls.iter().enumerate() {
            for b in &calls[i + 1..] {
                if b.start_us >= a.end_us {
                    break;
                }
                assert_eq!(
                    a.caller, b.caller,
                    "key {key} used by two instances at once: {a:?} and {b:?}"
                );
            }
            let in_window = calls[i..]
                .iter()
                .take_while(|c| c.start_us < a.start_us + window_us)
                .count();
            assert!(
                in_window <= RPM as usize,
                "key {key}: {in_window} calls within {WINDOW:?} from {a:?}"
            );
        }
    }
    callers
}

/// A pool budget is held by the fleet together: two instances, one key each,
/// spend no more than the budget plus what was in flight and what the other
/// spent since its last beacon (alone, each would spend the whole budget).
/// A raise through one instance reaches the other, and the rest drains.
#[actix::test]
async fn two_instances_hold_one_pool_budget_together() {
    common::init_logs();
    let keys = ["b1", "b2"]
        .iter()
        .map(|k| TestKey::new(k, 1).concurrency(1))
        .collect();
    let pools = one_pool(keys);
    // 300 ms a call: at most one call per key between two beacons (250 ms).
    let settings = MockSettings {
        latency: Duration::from_millis(300),
        ..MockSettings::default()
    };
    let mock = common::start_mock(&pools, settings).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("kr-fleet-budget.{}", uuid::Uuid::now_v7().simple());
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // $1 a prompt token, $2 an output token: a job here costs tens of dollars.
    let per_job = job_cost("fleet budget job 0000");
    let budget = per_job * 10.5;
    let config_path = common::write_config_file_with(
        &pools,
        &mock,
        dir.path(),
        &prefix,
        "",
        &format!(
            "\n[admin]\nadmin_token_file = \"{}\"\n",
            token_file.display()
        ),
        &format!(
            "prices = {{ \"model-a\" = {{ input = 1000000.0, output = 2000000.0 }} }}\nbudget_usd_per_day = {budget}\n"
        ),
    );
    let config = keyrelay_core::config::Config::load(&config_path).unwrap();
    let a = spawn("a", &config_path, dir.path()).await;
    let b = spawn("b", &config_path, dir.path()).await;
    let members = vec![a, b];
    until_driven(&members, common::WAIT, "a and b drive one key each", |d| {
        d.get("a") == Some(&1) && d.get("b") == Some(&1)
    })
    .await;

    let (broker, publisher, replies_name, mut replies) = producer(&prefix).await;
    let queue = config.job_queue("g");
    let jobs = 40;
    for i in 0..jobs {
        let body = serde_json::json!({"id": format!("fb-{i:04}"), "prompt": format!("fleet budget job {i:04}")});
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_reply_to(replies_name.as_str().into());
        publisher
            .publish(&queue, body.to_string().as_bytes(), props, true)
            .await
            .unwrap();
    }
    // Replies until none came for 2 s: both keys parked by the budget.
    let mut spent = 0.0;
    let mut answered = HashMap::new();
    while let Ok(reply) = tokio::time::timeout(Duration::from_secs(2), replies.next()).await {
        let cost = reply.usage.cost_usd.unwrap();
        assert!((cost - per_job).abs() < 1e-6, "{cost} != {per_job}");
        spent += cost;
        answered.insert(reply.id.clone(), reply);
    }
    // In flight: one call per key; stale: one more per key between beacons.
    let slack = 4.0 * per_job;
    assert!(
        spent <= budget + slack,
        "the fleet spent ${spent:.0} of a ${budget:.0} budget (+${slack:.0} slack); alone, each instance would spend the budget"
    );
    assert!(
        spent >= budget - per_job,
        "${spent:.0} spent, budget ${budget:.0}: stopped early"
    );
    for m in &members {
        let seen = admin(m.relay.http, reqwest::Method::GET, "/v1/budgets").await;
        let fleet_spent = seen["budgets"][0]["spent_usd"].as_f64().unwrap();
        assert!(
            (fleet_spent - spent).abs() < 1e-6,
            "{}: sees ${fleet_spent} spent by the fleet, the replies say ${spent}",
            m.name
        );
    }

    // Raised on a only: b takes it too, and the rest drains.
    let raised = reqwest::Client::new()
        .put(format!("http://{}/v1/budgets", members[0].relay.http))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"scope": "pool", "name": "g", "usd_per_day": per_job * 100.0}))
        .send()
        .await
        .unwrap();
    let raised: serde_json::Value = raised.json().await.unwrap();
    assert_eq!(raised["fleet"]["b"], "ok", "{raised}");
    while answered.len() < jobs {
        let reply = replies.next().await;
        answered.insert(reply.id.clone(), reply);
    }
    assert!(answered.values().all(|r| r.status == JobStatus::Succeeded));

    for m in members {
        let _ = m.relay.terminate().await;
    }
    let mut queues = common::keyrelay_queues(&config);
    queues.push(replies_name);
    common::delete_queues(&broker, &queues).await;
}

/// What a job with `prompt` costs at $1 a prompt token and $2 an output
/// token: the mock answers "mock answer: <prompt>", ~4 characters a token
/// (each reply's own cost is checked against it).
fn job_cost(prompt: &str) -> f64 {
    let tokens = |chars: usize| chars.div_ceil(4) as f64;
    tokens(prompt.len()) + 2.0 * tokens(format!("mock answer: {prompt}").len())
}

/// Three instances started at the same moment, a backlog waiting: they race
/// for the same free keys, and still share them with none driven by two at
/// once and no job lost.
#[actix::test]
async fn three_instances_started_at_once_share_the_keys() {
    common::init_logs();
    let pools = rpm_limited_pool();
    let mock = recording_mock(&pools, WINDOW).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("kr-fleet-race.{}", uuid::Uuid::now_v7().simple());
    let config_path = common::write_config_file_with(
        &pools,
        &mock,
        dir.path(),
        &prefix,
        "",
        "",
        &format!("rate_window_secs = {}\n", WINDOW.as_secs()),
    );
    let config = keyrelay_core::config::Config::load(&config_path).unwrap();
    let (broker, publisher, replies_name, mut replies) = producer(&prefix).await;
    {
        // The job queue exists before any instance does.
        let channel = broker.channel().await.unwrap();
        keyrelay::amqp::topology::declare(&channel, &config)
            .await
            .unwrap();
    }
    let jobs = 240;
    publish_backlog(
        &publisher,
        &config.job_queue("g"),
        &replies_name,
        "race",
        jobs,
    )
    .await;

    let (a, b, c) = tokio::join!(
        spawn("a", &config_path, dir.path()),
        spawn("b", &config_path, dir.path()),
        spawn("c", &config_path, dir.path()),
    );
    let members = vec![a, b, c];
    let mut answered: HashMap<String, usize> = HashMap::new();
    while answered.len() < jobs {
        let reply = replies.next().await;
        assert_eq!(reply.status, JobStatus::Succeeded, "{reply:?}");
        *answered.entry(reply.id).or_default() += 1;
    }
    until_driven(&members, BALANCE_LIMIT, "the three share the keys", |d| {
        d.values().all(|n| *n == KEYS.len() / 3)
    })
    .await;
    check_calls(&mock.calls());

    for m in members {
        assert!(m.relay.terminate().await.success());
    }
    let mut queues = common::keyrelay_queues(&config);
    queues.push(replies_name);
    common::delete_queues(&broker, &queues).await;
}
