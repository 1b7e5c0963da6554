//! Closing the broker connection right after channels were let go of, as
//! shutdown does once the key workers have stopped.

mod common;

use keyrelay::amqp::Broker;

/// lapin closes a dropped channel in the background; if that close started
/// after the connection began closing, lapin failed the whole connection
/// ("invalid channel state: Closing (channel.close)"), every round.
#[tokio::test]
async fn closing_right_after_channels_were_dropped_is_clean() {
    for round in 0..30 {
        let broker = Broker::connect(&common::amqp_url()).await.unwrap();
        for _ in 0..8 {
            drop(broker.channel().await.unwrap());
        }
        let closed = broker.close().await;
        assert!(closed.is_ok(), "round {round}: {closed:?}");
    }
}
