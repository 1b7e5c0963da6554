//! A broker memory alarm longer than the old 30 s confirm timeout, while
//! replies are in flight: every job answered exactly once, none paid twice.
//!
//! `#[ignore]`: the alarm blocks every publisher on the broker, so it would
//! stall tests running beside it. Run alone: `scripts/broker-alarm.sh`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{TestEnv, TestKey, TestPool};
use keyrelay_mock::MockSettings;
use serde_json::json;

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
}

/// Clears the alarm even when the test fails.
struct Alarm;

impl Alarm {
    fn raise() -> Alarm {
        rabbitmqctl(&["set_vm_memory_high_watermark", "absolute", "1"]);
        Alarm
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]);
    }
}

#[actix::test]
#[ignore = "blocks every publisher on the broker; run alone with scripts/broker-alarm.sh"]
async fn a_long_memory_alarm_gives_no_duplicate_replies() {
    let settings = MockSettings {
        latency: Duration::from_secs(2),
        ..MockSettings::default()
    };
    let pools = vec![TestPool {
        name: "ma",
        provider: "gemini",
        keys: vec![TestKey::new("ma-k", 1).concurrency(8)],
    }];
    let mut env = TestEnv::start_with(pools, settings, "").await;
    let ids: Vec<String> = (0..8).map(|i| format!("ma-{i}")).collect();
    for id in &ids {
        env.publish("ma", &json!({"id": id, "prompt": format!("p {id}")}))
            .await;
    }
    // The calls are running (2 s each); their replies meet the alarm.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alarm = Alarm::raise();
    tokio::time::sleep(Duration::from_secs(40)).await;
    drop(alarm);
    let mut replies: HashMap<String, u32> = HashMap::new();
    while let Ok((r, _)) = tokio::time::timeout(Duration::from_secs(15), env.next_reply()).await {
        *replies.entry(r.id).or_default() += 1;
    }
    for id in &ids {
        assert_eq!(replies.get(id), Some(&1), "{id} answered once: {replies:?}");
    }
    let paid = env.mock.stats().successes_by_prompt;
    assert!(paid.values().all(|n| *n == 1), "{paid:?}");
    env.finish().await;
}
