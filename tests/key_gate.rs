//! A key stops starting calls the moment its first quota answer arrives: the
//! gate is on the key's own call path, not behind a round trip through the
//! supervisor. With 16 calls in flight and 429s that come back at once while
//! successes take 50 ms, the key may waste only the calls already in flight.

mod common;

use common::{TestEnv, TestKey, TestPool};
use keyrelay_core::job::JobStatus;
use serde_json::json;

#[actix::test]
async fn a_quota_answer_closes_the_key_before_the_supervisor_hears_it() {
    const DAILY: u32 = 100;
    const IN_FLIGHT: u16 = 16;
    // Undeclared to keyrelay: it learns the limit from the provider's answer.
    let key = TestKey::new("gate", 1)
        .mock(|k| k.with_rpd(DAILY))
        .concurrency(IN_FLIGHT);
    let pools = vec![TestPool {
        name: "kg",
        provider: "openai",
        keys: vec![key],
    }];
    let mut env = TestEnv::start(pools).await;
    for i in 0..200 {
        let prompt = format!("[[mock:sleep_ms=50]] job {i}");
        env.publish("kg", &json!({"id": format!("kg-{i}"), "prompt": prompt}))
            .await;
    }
    let replies = env.replies(DAILY as usize).await;
    assert!(replies.values().all(|r| r.status == JobStatus::Succeeded));
    // The calls in flight at the first refusal come back; the jobs the key
    // could not take go back to the queue: nothing is left in flight.
    let mut in_flight = env.app().in_flight_watch();
    tokio::time::timeout(common::WAIT, in_flight.wait_for(|n| *n == 0))
        .await
        .expect("every job settled")
        .unwrap();
    let stats = env.mock.stats().key("gate");
    println!("{stats:?}");
    assert_eq!(stats.successes, DAILY);
    // Every refused call was one already in flight when the first refusal
    // came back (at most IN_FLIGHT - 1 of them, plus that first one).
    assert!(
        stats.exhausted <= u32::from(IN_FLIGHT),
        "{} calls refused: calls started after the key said no more",
        stats.exhausted
    );
    env.finish().await;
}
