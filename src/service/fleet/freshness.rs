//! Keeps the lease gate open while the connection that holds the leases
//! answers: a cheap round trip every quarter heartbeat, each opening the gate
//! for half a heartbeat from when it was sent (see `pipeline::lease_gate`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lapin::Channel;
use lapin::options::BasicQosOptions;

use crate::amqp::Broker;
use crate::pipeline::LeaseGate;

/// Round-trip period and gate validity for a heartbeat of `heartbeat_secs`.
/// The broker drops a silent connection (and its leases) after about one
/// heartbeat interval; the gate closes at half of it. Without heartbeats
/// the broker notices only a closed socket: 6 s is assumed for the gate.
pub fn timing(heartbeat_secs: u16) -> (Duration, Duration) {
    let heartbeat = match heartbeat_secs {
        0 => Duration::from_secs(6),
        secs => Duration::from_secs(u64::from(secs)),
    };
    (heartbeat / 4, heartbeat / 2)
}

/// Runs until the process ends. `generation` is the broker connection
/// generation that holds the leases (0: none): round trips on any other
/// connection prove nothing about them.
pub async fn keep_fresh(broker: Arc<Broker>, gate: Arc<LeaseGate>, generation: Arc<AtomicU64>) {
    let mut channel: Option<(Channel, u64)> = None;
    loop {
        // The heartbeat the broker agreed to (a URL may set its own).
        let (period, validity) = timing(broker.heartbeat_secs());
        tokio::time::sleep(period).await;
        let leased_on = generation.load(Ordering::Acquire);
        if leased_on == 0 {
            continue;
        }
        if channel
            .as_ref()
            .is_none_or(|(c, g)| *g != leased_on || !c.status().connected())
        {
            channel = match broker.channel_with_generation().await {
                Ok((c, g)) if g == leased_on => Some((c, g)),
                _ => None,
            };
        }
        let Some((ch, _)) = &channel else { continue };
        let sent = Instant::now();
        let answered =
            tokio::time::timeout(validity, ch.basic_qos(1, BasicQosOptions::default())).await;
        if matches!(answered, Ok(Ok(()))) && generation.load(Ordering::Acquire) == leased_on {
            gate.extend(sent, validity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_closes_well_before_the_broker_drops_the_connection() {
        assert_eq!(
            timing(3),
            (Duration::from_millis(750), Duration::from_millis(1500))
        );
        assert_eq!(
            timing(0),
            (Duration::from_millis(1500), Duration::from_secs(3))
        );
    }
}
