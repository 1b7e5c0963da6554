//! The lease keeper: one task per process that takes, keeps and hands over
//! the leases of the keys this instance drives, and publishes each key's
//! state and budget so whoever drives it next starts where it left off.
//!
//! Every tick it announces itself (a beacon), forgets silent instances,
//! finishes hand-overs whose calls are done, renews allowances, and moves
//! towards its share of the keys (`lease::plan`): taking keys in `taking`,
//! snapshots and hand-overs in `snapshots`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::Addr;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::Channel;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::view::{Beacon, FleetPicture, FleetView, KeyOwner, SpendBeacon};
use super::wire;
use crate::actors::messages::{Booted, LetKeyGo};
use crate::actors::supervisor::Supervisor;
use crate::amqp::{AmqpError, Broker};
use crate::pipeline::{KeyContext, LeaseGate};
use keyrelay_core::config::Config;
use keyrelay_core::keys::{Admitted, Allowance, KeyId};
use keyrelay_core::lease::HandoverSnapshot;
use keyrelay_core::metrics as m;
use keyrelay_core::spend::SpendLedger;

mod snapshots;
mod taking;

/// How often the keeper looks around.
const TICK: Duration = Duration::from_millis(250);
/// A key's snapshot is republished at least this often while it is used.
const REPUBLISH_EVERY: Duration = Duration::from_secs(5);
/// A key this instance let go is not taken back for this long (no ping-pong).
const RETAKE_AFTER: Duration = Duration::from_secs(5);
/// A key nobody holds for this long is taken whatever the balance says.
const ORPHAN_AFTER: Duration = Duration::from_secs(2);
/// A hand-over waits this long for the key's calls to finish; after it the
/// last snapshot says "not released" and the next owner assumes the worst.
const HAND_OVER_LIMIT: Duration = Duration::from_secs(120);
/// Lease attempts in flight at once.
const PARALLEL_ATTEMPTS: usize = 64;
/// The supervisor answers within this long, or the keeper goes on without.
const SUPERVISOR_TIMEOUT: Duration = Duration::from_secs(5);
/// A hand-over waits at least this long after the key stopped admitting.
const SETTLE: Duration = Duration::from_millis(300);

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
    /// Budgets and spend: this instance's goes out in its beacons, the
    /// others' comes in with theirs.
    pub spend: Arc<SpendLedger>,
    /// Names this instance's store in its spend figures.
    pub store_id: String,
}

/// Asks of the keeper from the rest of the process.
pub(super) enum Command {
    /// Hand every key over and announce the departure (shutdown).
    Leave(oneshot::Sender<()>),
}

/// A snapshot ready to publish, and what its confirm grants.
struct Prepared {
    queue: String,
    snapshot: HandoverSnapshot,
    /// Admitted when it was taken (dates the allowance).
    admitted: Admitted,
}

/// A first snapshot's key, what it grants, and the broker's answer.
type FirstConfirm = (KeyId, Prepared, Result<(), AmqpError>);

/// One key this instance holds the lease of.
struct Held {
    /// Set when the hand-over began: the key takes no new calls.
    releasing: Option<Instant>,
    last_publish: Instant,
    /// Admitted as of the last published snapshot.
    admitted: Admitted,
    /// The allowance that snapshot granted.
    granted: Allowance,
    /// The supervisor changed the key's state since the last snapshot.
    dirty: bool,
    /// The key's first snapshot awaits the broker's confirm: no other
    /// snapshot goes before it (a later confirm must not be overtaken).
    confirming: bool,
}

impl Held {
    /// Whether a new snapshot is due: the key's state changed, a call waits
    /// for an allowance, half of it is used, or, at a `periodic` check, the
    /// key was used since the last one a while ago.
    fn due(
        &self,
        left: Option<Allowance>,
        admitted: Admitted,
        call_waits: bool,
        now: Instant,
        periodic: bool,
    ) -> bool {
        if self.releasing.is_some() || self.confirming {
            return false;
        }
        let left = left.unwrap_or_default();
        // Unlimited allowances (no declared limit) never run low.
        let low = |left: u64, granted: u64| granted != u64::MAX && left < granted.div_ceil(2);
        let stale = periodic
            && now.saturating_duration_since(self.last_publish) >= REPUBLISH_EVERY
            && admitted != self.admitted;
        self.dirty
            || call_waits
            || low(left.calls, self.granted.calls)
            || low(left.tokens, self.granted.tokens)
            || stale
    }
}

pub(super) struct LeaseKeeper {
    broker: Arc<Broker>,
    spend: Arc<SpendLedger>,
    store_id: String,
    config: Arc<Config>,
    me: String,
    http: String,
    keys: Vec<Arc<KeyContext>>,
    supervisor: Addr<Supervisor>,
    gate: Arc<LeaseGate>,
    /// The connection generation the leases live on (0: none).
    generation: Arc<AtomicU64>,
    state_changes: mpsc::UnboundedReceiver<KeyId>,
    picture: watch::Sender<FleetPicture>,
    /// The channel beacons, snapshots and lease deletions go on, and its
    /// connection generation.
    fleet: Option<(Channel, u64)>,
    beacons: Option<lapin::Consumer>,
    view: FleetView,
    held: BTreeMap<KeyId, Held>,
    /// First snapshots of keys just taken, awaiting the broker's confirm.
    first_confirms: FuturesUnordered<JoinHandle<FirstConfirm>>,
    let_go_at: HashMap<KeyId, Instant>,
    orphaned_since: HashMap<KeyId, Instant>,
    broker_trouble_logged: bool,
}

impl LeaseKeeper {
    pub(super) fn new(
        setup: FleetSetup,
        generation: Arc<AtomicU64>,
        picture: watch::Sender<FleetPicture>,
    ) -> LeaseKeeper {
        LeaseKeeper {
            view: FleetView::new(&setup.instance),
            broker: setup.broker,
            config: setup.config,
            me: setup.instance,
            http: setup.http,
            keys: setup.keys,
            supervisor: setup.supervisor,
            gate: setup.gate,
            generation,
            state_changes: setup.state_changes,
            spend: setup.spend,
            store_id: setup.store_id,
            picture,
            fleet: None,
            beacons: None,
            held: BTreeMap::new(),
            first_confirms: FuturesUnordered::new(),
            let_go_at: HashMap::new(),
            orphaned_since: HashMap::new(),
            broker_trouble_logged: false,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // Not before the supervisor restored the keys' stored budgets: a
        // lease's budget must not be overwritten by the store's.
        if self.supervisor.send(Booted).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.tick().await,
                _ = self.gate.allowance_wanted() => self.renew_allowances(false).await,
                Some(key) = self.state_changes.recv() => {
                    if let Some(held) = self.held.get_mut(&key) {
                        held.dirty = true;
                    }
                    self.renew_allowances(false).await;
                }
                Some(answer) = self.first_confirms.next(), if !self.first_confirms.is_empty() => {
                    self.first_confirmed(answer).await;
                }
                beacon = wire::next_beacon(&mut self.beacons) => {
                    if let Some(beacon) = beacon {
                        // Never this store's own figures (an older name of this
                        // process's store, still heard): they are counted already.
                        if let Some(spend) = &beacon.spend
                            && beacon.instance != self.me
                            && spend.store != self.store_id
                        {
                            self.spend.set_peer(&spend.store, spend.share.clone());
                        }
                        self.view.heard(beacon, Instant::now());
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Leave(done)) => {
                        self.leave().await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    async fn tick(&mut self) {
        let Some(channel) = self.fleet_channel().await else {
            return;
        };
        let beacon = self.beacon(false);
        let exchange = self.config.fleet_exchange();
        if let Err(e) = wire::publish_beacon(&channel, &exchange, &beacon).await {
            warn!(error = %e, "cannot publish the fleet beacon");
        }
        let now = Instant::now();
        for gone in self.view.forget_silent(now) {
            info!(instance = %gone, "instance silent; its keys are free to take");
        }
        let before = beacon.keys;
        self.finish_hand_overs(&channel).await;
        self.renew_allowances(true).await;
        self.balance(&channel).await;
        // Holdings changed: tell the others now, not at the next tick.
        let after = self.beacon(false);
        if after.keys != before
            && let Err(e) = wire::publish_beacon(&channel, &exchange, &after).await
        {
            warn!(error = %e, "cannot publish the fleet beacon");
        }
        self.publish_picture();
    }

    /// The channel of the connection the leases live on. A new connection
    /// means the broker dropped every lease with the old one: the keys stop
    /// at once, and are taken again on the new connection. A closed channel
    /// on the same connection is only reopened (the leases live on).
    async fn fleet_channel(&mut self) -> Option<Channel> {
        let current = self.broker.generation();
        if let Some((channel, generation)) = &self.fleet {
            if *generation != current || !self.broker.is_connected() {
                self.lose_all();
            } else if !channel.status().connected() {
                self.fleet = None;
                self.beacons = None;
            }
        }
        if self.fleet.is_none() {
            match self.open_fleet_channel().await {
                Ok(()) => self.broker_trouble_logged = false,
                Err(e) => {
                    if !self.broker_trouble_logged {
                        warn!(error = %e, "lease keeper cannot reach the broker; no key is driven until it can");
                        self.broker_trouble_logged = true;
                    }
                    return None;
                }
            }
        }
        self.fleet.as_ref().map(|(c, _)| c.clone())
    }

    async fn open_fleet_channel(&mut self) -> Result<(), AmqpError> {
        let (channel, generation) = self.broker.channel_with_generation().await?;
        let consumer = wire::open_fleet_channel(&channel, &self.config.fleet_exchange()).await?;
        if self.generation.load(Ordering::Acquire) != generation && !self.held.is_empty() {
            // Leases of an older connection: gone with it.
            self.lose_all();
        }
        self.beacons = Some(consumer);
        self.fleet = Some((channel, generation));
        self.generation.store(generation, Ordering::Release);
        Ok(())
    }

    /// The connection is gone, and every lease with it.
    fn lose_all(&mut self) {
        self.gate.close();
        self.generation.store(0, Ordering::Release);
        self.fleet = None;
        self.beacons = None;
        // Their answers are about leases gone with the connection.
        self.first_confirms = FuturesUnordered::new();
        if !self.held.is_empty() {
            warn!(
                keys = self.held.len(),
                "broker connection lost: every key lease with it; keys stop until taken again"
            );
        }
        for key in std::mem::take(&mut self.held).into_keys() {
            self.keys[key.0].stop_admitting();
            self.supervisor.do_send(LetKeyGo { key });
        }
    }

    fn beacon(&self, leaving: bool) -> Beacon {
        Beacon {
            instance: self.me.clone(),
            http: self.http.clone(),
            keys: self
                .held
                .iter()
                .filter(|(_, h)| h.releasing.is_none() && !leaving)
                .map(|(id, _)| self.keys[id.0].store_key.clone())
                .collect(),
            leaving,
            spend: Some(SpendBeacon {
                store: self.store_id.clone(),
                share: self.spend.share(jiff::Timestamp::now()),
            }),
        }
    }

    /// Shutdown: every key is stopped already; hand each over and say so.
    async fn leave(&mut self) {
        let Some((channel, _)) = self.fleet.clone() else {
            return;
        };
        let keys: Vec<KeyId> = self.held.keys().copied().collect();
        for key in keys {
            let quiet = self.keys[key.0].in_flight() == 0;
            self.hand_over(key, &channel, quiet).await;
        }
        let beacon = self.beacon(true);
        let _ = wire::publish_beacon(&channel, &self.config.fleet_exchange(), &beacon).await;
        self.gate.close();
    }

    fn publish_picture(&self) {
        let now = Instant::now();
        let driven = self.held.values().filter(|h| h.releasing.is_none()).count();
        metrics::gauge!(m::KEYS_DRIVEN).set(driven as f64);
        let members = self.view.members(now);
        metrics::gauge!(m::FLEET_INSTANCES).set((members.len() + 1) as f64);
        let mut owners = BTreeMap::new();
        for (i, key) in self.keys.iter().enumerate() {
            let owner = if self.held.contains_key(&KeyId(i)) {
                KeyOwner::Me
            } else {
                match self.view.owner_of(&key.store_key) {
                    Some(other) => KeyOwner::Other(other.to_owned()),
                    None => KeyOwner::Nobody,
                }
            };
            owners.insert(key.store_key.clone(), owner);
        }
        self.picture.send_replace(FleetPicture {
            me: self.me.clone(),
            members,
            owners,
        });
    }
}
