//! Several instances on one broker: each key is driven by exactly one of
//! them, the holder of its lease (an exclusive queue on that instance's
//! connection). The lease keeper ([`keeper`]) takes and hands over leases and
//! publishes each key's state and budget; [`freshness`] stops calls as soon
//! as this process may have lost its leases; [`view`] is who else is out
//! there; [`wire`] is the AMQP of it. The decisions themselves are pure, in
//! `keyrelay_core::lease`. docs/scaling.md tells the whole story.

mod freshness;
mod keeper;
mod view;
mod wire;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

pub use keeper::FleetSetup;
use keeper::{Command, LeaseKeeper};
pub use view::{FleetPicture, KeyOwner, Member};

/// The running lease keeper.
pub struct Fleet {
    commands: mpsc::Sender<Command>,
}

impl Fleet {
    /// Start the lease keeper and its freshness keeper (on the tokio runtime);
    /// the keeper keeps `picture` up to date.
    pub fn launch(setup: FleetSetup, picture: watch::Sender<FleetPicture>) -> Fleet {
        let (commands, inbox) = mpsc::channel(4);
        let generation = Arc::new(AtomicU64::new(0));
        tokio::spawn(freshness::keep_fresh(
            setup.broker.clone(),
            setup.gate.clone(),
            generation.clone(),
        ));
        let keeper = LeaseKeeper::new(setup, generation, picture);
        tokio::spawn(keeper.run(inbox));
        Fleet { commands }
    }

    /// Hand every key over and tell the fleet this instance is leaving
    /// (shutdown, after the keys stopped taking calls). Bounded by `limit`.
    pub async fn leave(&self, limit: Duration) {
        let (done, left) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).await.is_ok() {
            let _ = tokio::time::timeout(limit, left).await;
        }
    }
}
