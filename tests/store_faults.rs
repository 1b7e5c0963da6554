//! The disk under the store fills up while keyrelay runs (a small tmpfs, filled
//! by the test): keyrelay stops taking jobs, says why on /readyz, pays no job
//! twice, loses no answer, and resumes by itself once space returns.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{TestEnv, TestKey, TestPool};
use keyrelay_core::job::JobStatus;
use serde_json::{Value, json};

/// A tmpfs of `size` mounted for the test, unmounted when dropped.
struct SmallDisk {
    mount: PathBuf,
}

impl SmallDisk {
    /// None when this machine does not let the test mount (not root), unless
    /// `KEYRELAY_REQUIRE_TMPFS` is set (CI sets it: there the test must run).
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("mount runs");
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            assert!(
                std::env::var_os("KEYRELAY_REQUIRE_TMPFS").is_none(),
                "this test mounts a small tmpfs (it needs root): {why}"
            );
            eprintln!("SKIPPED: the disk-full test needs root to mount a tmpfs ({why})");
            return None;
        }
        Some(SmallDisk {
            mount: at.to_owned(),
        })
    }

    /// Write a file until the disk is full.
    fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.mount)
            .status();
    }
}

async fn readyz(env: &TestEnv) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("http://{}/readyz", env.app().http_addr()))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("readyz answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_ready(env: &TestEnv, want: u16, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = readyz(env).await;
        if status == want {
            return body;
        }
        assert!(
            started.elapsed() < within,
            "no {want} within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix::test]
async fn a_full_disk_pauses_jobs_and_recovers_without_paying_twice() {
    let scratch = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&scratch.path().join("disk"), "12m") else {
        return;
    };
    let store = disk.mount.join("store");
    let pools = vec![TestPool {
        name: "df",
        provider: "gemini",
        keys: vec![TestKey::new("df-k", 1).concurrency(2)],
    }];
    let mut env = TestEnv::start_adjusted(pools, Default::default(), "", "", |c| {
        c.store.path = store;
    })
    .await;
    let job = |id: &str| json!({"id": id, "prompt": format!("prompt {id}")});
    env.publish("df", &job("warm")).await;
    assert_eq!(env.next_reply().await.0.status, JobStatus::Succeeded);
    assert_eq!(readyz(&env).await.0, 200);

    let filler = disk.fill();
    let ids: Vec<String> = (0..30).map(|i| format!("full-{i}")).collect();
    for id in &ids {
        env.publish("df", &job(id)).await;
    }
    let body = wait_ready(&env, 503, Duration::from_secs(30)).await;
    assert_eq!(body["reasons"][0]["component"], "store", "{body}");
    // Jobs answered before the consumers paused came back without the store;
    // once nothing is in flight, every such reply is in the reply queue.
    let mut in_flight = env.app().in_flight_watch();
    tokio::time::timeout(common::WAIT, in_flight.wait_for(|n| *n == 0))
        .await
        .expect("the jobs in flight settle")
        .unwrap();
    let mut answered = std::collections::HashMap::new();
    while let Ok((r, _)) = tokio::time::timeout(Duration::from_secs(1), env.next_reply()).await {
        answered.insert(r.id.clone(), r);
    }
    let paid_during = env.mock.stats().key("df-k").successes - 1;
    println!(
        "answered while the disk was full: {}, paid: {paid_during}",
        answered.len()
    );
    assert!(answered.len() < ids.len(), "keyrelay stopped taking jobs");
    // A producer sends an answered job again: it must not be paid twice.
    for id in answered.keys() {
        env.publish("df", &job(id)).await;
    }

    std::fs::remove_file(filler).unwrap();
    let freed = Instant::now();
    wait_ready(&env, 200, Duration::from_secs(30)).await;
    println!("ready again {:?} after space returned", freed.elapsed());
    let expected = ids.len() - answered.len() + answered.len();
    let mut rest = env.replies(expected).await;
    rest.extend(answered);
    for id in &ids {
        let r = rest.get(id).unwrap_or_else(|| panic!("{id} answered"));
        assert_eq!(r.status, JobStatus::Succeeded, "{id}: {r:?}");
    }
    let paid = env.mock.stats().successes_by_prompt;
    for id in &ids {
        assert_eq!(
            paid.get(&format!("prompt {id}")),
            Some(&1),
            "{id} paid once"
        );
    }
    // What was answered during the outage is in the store now.
    for id in &ids {
        let stored = env.app().store().result_of("df", id).unwrap();
        assert!(stored.is_some_and(|r| r.is_success()), "{id} stored");
    }
    env.finish().await;
}

/// A store whose files were damaged while keyrelay was down (64 bytes flipped
/// in the middle of sled's log): sled would silently drop every result after
/// the damage; keyrelay refuses to start, naming the path and what to do, and
/// starts empty only when told to move the damaged files aside.
#[actix::test]
async fn a_damaged_store_is_refused_at_start_unless_moved_aside() {
    let pools = vec![TestPool {
        name: "dm",
        provider: "gemini",
        keys: vec![TestKey::new("dm-k", 1)],
    }];
    let mut env = TestEnv::start(pools).await;
    for i in 0..300 {
        env.publish(
            "dm",
            &json!({"id": format!("dm-{i}"), "prompt": format!("p {i}")}),
        )
        .await;
    }
    env.replies(300).await;
    let app = env.app.take().unwrap();
    app.shutdown(Duration::from_secs(5)).await.unwrap();
    let store = env.config.store.path.clone();
    let log = store.join("db");
    let mut bytes = std::fs::read(&log).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&log, bytes).unwrap();

    let refused = keyrelay::app::App::start(env.config.clone()).await;
    let message = refused
        .err()
        .expect("a damaged store is refused")
        .to_string();
    println!("{message}");
    assert!(message.contains("damaged"), "{message}");
    assert!(
        message.contains(&store.display().to_string()),
        "names the path: {message}"
    );
    assert!(message.contains("move_aside"), "says what to do: {message}");

    let mut config = env.config.clone();
    config.store.on_damage = keyrelay_core::config::OnDamage::MoveAside;
    let app = keyrelay::app::App::start(config)
        .await
        .expect("starts empty");
    let parent = store.parent().unwrap();
    let name = store.file_name().unwrap().to_string_lossy().into_owned();
    let aside = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.damaged-"))
        });
    assert!(aside, "the damaged store is kept beside the new one");
    env.app = Some(app);
    tokio::time::timeout(common::WAIT, env.app().wait_for_consumers(1))
        .await
        .unwrap();
    env.publish("dm", &json!({"id": "fresh", "prompt": "fresh"}))
        .await;
    assert_eq!(env.next_reply().await.0.status, JobStatus::Succeeded);
    env.finish().await;
}
