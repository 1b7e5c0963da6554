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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use actix::Addr;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::actors::supervisor::Supervisor;
use crate::amqp::Broker;
use crate::pipeline::{KeyContext, LeaseGate};
use keeper::{Command, LeaseKeeper};
use keyrelay_core::config::Config;
use keyrelay_core::keys::KeyId;
pub use view::Member;

/// Who drives a key, as this instance sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "instance")]
pub enum KeyOwner {
    /// This instance.
    Me,
    /// Another live instance.
    Other(String),
    /// Nobody right now (being handed over, or every instance is full).
    Nobody,
}

/// The fleet as this instance last saw it (for `/v1/keys` and `/v1/fleet`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetPicture {
    /// This instance's name.
    pub me: String,
    /// The other live instances.
    pub members: Vec<Member>,
    /// Every key (`pool/key`) and who drives it.
    pub owners: BTreeMap<String, KeyOwner>,
}

/// What the lease keeper is started with.
pub struct FleetSetup {
    pub broker: Arc<Broker>,
    pub config: Arc<Config>,
    /// This instance's name in the fleet.
    pub instance: String,
    /// Its HTTP endpoint, announced to the others.
    pub http: String,
    /// Every key, indexed by `KeyId`.
    pub keys: Vec<Arc<KeyContext>>,
    pub supervisor: Addr<Supervisor>,
    pub gate: Arc<LeaseGate>,
    pub state_changes: mpsc::UnboundedReceiver<KeyId>,
}

/// The running lease keeper.
pub struct Fleet {
    commands: mpsc::Sender<Command>,
    picture: watch::Receiver<FleetPicture>,
}

impl Fleet {
    /// Start the lease keeper and its freshness keeper (on the tokio runtime).
    pub fn launch(setup: FleetSetup) -> Fleet {
        let (commands, inbox) = mpsc::channel(4);
        let (picture_tx, picture) = watch::channel(FleetPicture {
            me: setup.instance.clone(),
            ..FleetPicture::default()
        });
        let generation = Arc::new(AtomicU64::new(0));
        tokio::spawn(freshness::keep_fresh(
            setup.broker.clone(),
            setup.gate.clone(),
            generation.clone(),
            setup.config.broker.heartbeat_secs,
        ));
        let keeper = LeaseKeeper::new(setup, generation, picture_tx);
        tokio::spawn(keeper.run(inbox));
        Fleet { commands, picture }
    }

    /// The fleet as last seen.
    pub fn picture(&self) -> watch::Receiver<FleetPicture> {
        self.picture.clone()
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
