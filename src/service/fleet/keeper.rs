//! The lease keeper: one task per process that takes, keeps and hands over
//! the leases of the keys this instance drives, and publishes each key's
//! state and budget so whoever drives it next starts where it left off.
//!
//! Every tick it announces itself (a beacon), forgets silent instances,
//! finishes hand-overs whose calls are done, renews allowances, and moves
//! towards its share of the keys (`lease::plan`).

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

use super::view::{Beacon, FleetPicture, FleetView, KeyOwner};
use super::wire::{self, Attempt, AttemptChannels};
use crate::actors::messages::{Booted, KeyStateOf, LetKeyGo, TakeKeys};
use crate::actors::supervisor::Supervisor;
use crate::amqp::{AmqpError, Broker};
use crate::pipeline::{KeyContext, LeaseGate};
use keyrelay_core::config::Config;
use keyrelay_core::keys::{Admitted, Allowance, KeyId, KeyState};
use keyrelay_core::lease::{HandoverSnapshot, plan, size_allowance, take_over};
use keyrelay_core::metrics as m;

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
        }
    }

    /// Move towards this instance's share: let keys go above it, take free
    /// keys below it, and take any key nobody has held for a while. Lease
    /// attempts run [`PARALLEL_ATTEMPTS`] at a time (a thousand keys at start).
    async fn balance(&mut self, channel: &Channel) {
        let mine = self.held.values().filter(|h| h.releasing.is_none()).count();
        let share = plan(self.keys.len(), &self.me, &self.view.holdings(mine));
        for key in self.to_release(share.release) {
            self.begin_hand_over(key);
        }
        let Some(generation) = self.fleet.as_ref().map(|(_, g)| *g) else {
            return;
        };
        let mut wanted = share.acquire;
        let channels = Arc::new(AttemptChannels::new(self.broker.clone(), generation));
        let mut candidates = self.candidates(Instant::now()).into_iter().peekable();
        while candidates.peek().is_some() {
            // Orphans always; free keys while this instance is below its share.
            let batch: Vec<KeyId> = candidates
                .by_ref()
                .filter(|(_, orphan)| *orphan || wanted > 0)
                .map(|(key, _)| key)
                .take(wanted.max(1))
                .collect();
            if batch.is_empty() {
                break;
            }
            let queues: Vec<(KeyId, String, String)> = batch
                .into_iter()
                .map(|key| {
                    let ctx = &self.keys[key.0];
                    let lease = self.config.lease_queue(&ctx.pool.name, &ctx.name);
                    (
                        key,
                        lease,
                        self.config.key_state_queue(&ctx.pool.name, &ctx.name),
                    )
                })
                .collect();
            // All attempts first, then the keys: taking leases and starting
            // keys at once is slower on the broker (measured: 6.5 s against
            // 4.7 s for a thousand keys), which does both one at a time.
            let attempts =
                futures_util::stream::iter(queues.into_iter().map(|(key, lease, state)| {
                    let channels = channels.clone();
                    async move {
                        let sent = Instant::now();
                        (key, sent, wire::take_lease(&channels, &lease, &state).await)
                    }
                }))
                .buffer_unordered(PARALLEL_ATTEMPTS)
                .collect::<Vec<_>>()
                .await;
            let mut broken = None;
            let mut taken = Vec::new();
            for (key, sent, attempt) in attempts {
                match attempt {
                    Ok(Attempt::Held) => {}
                    Ok(Attempt::Taken(snapshot)) => {
                        taken.push((key, sent, snapshot.map(|s| *s)));
                    }
                    Ok(Attempt::Unreadable(e)) => {
                        let ctx = &self.keys[key.0];
                        warn!(pool = %ctx.pool.name, key = %ctx.name, error = %e, "key lease taken but its state unreadable; letting it go");
                        let lease_queue = self.config.lease_queue(&ctx.pool.name, &ctx.name);
                        self.drop_lease(channel, &lease_queue).await;
                    }
                    Err(e) => broken = Some(e),
                }
            }
            // Leases taken before a failure are driven all the same.
            let driven = self.start_driving(taken, channel).await;
            wanted = wanted.saturating_sub(driven);
            if let Some(e) = broken {
                warn!(error = %e, "cannot take key leases now");
                break;
            }
        }
        channels.close().await;
    }

    /// The most recently numbered keys first: any choice balances.
    fn to_release(&self, n: usize) -> Vec<KeyId> {
        self.held
            .iter()
            .rev()
            .filter(|(_, h)| h.releasing.is_none())
            .map(|(id, _)| *id)
            .take(n)
            .collect()
    }

    /// Keys this instance could take, free ones first; `true` marks a key
    /// nobody has held for [`ORPHAN_AFTER`].
    fn candidates(&mut self, now: Instant) -> Vec<(KeyId, bool)> {
        let mut free = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            let id = KeyId(i);
            if self.held.contains_key(&id) {
                self.orphaned_since.remove(&id);
                continue;
            }
            if self.view.owner_of(&key.store_key).is_some() {
                self.orphaned_since.remove(&id);
                continue;
            }
            let since = *self.orphaned_since.entry(id).or_insert(now);
            let orphan = now.saturating_duration_since(since) >= ORPHAN_AFTER;
            let recently_let_go = self
                .let_go_at
                .get(&id)
                .is_some_and(|at| now.saturating_duration_since(*at) < RETAKE_AFTER);
            // A key let go to balance is left to the others, unless none of
            // them takes it.
            if !recently_let_go || orphan {
                free.push((id, orphan));
            }
        }
        free
    }

    /// This connection holds the leases of `taken`: start each key from its
    /// last snapshot (or this instance's own state) and have the supervisor
    /// drive it at once; its first allowance comes with the broker's confirm
    /// of its first snapshot (see [`LeaseKeeper::first_confirmed`]), and until
    /// then the key admits no call. The snapshots go out together, each
    /// confirm awaited on its own task: a thousand keys start in about a
    /// second. Returns how many keys are now driven.
    async fn start_driving(
        &mut self,
        taken: Vec<(KeyId, Instant, Option<HandoverSnapshot>)>,
        fleet: &Channel,
    ) -> usize {
        if taken.is_empty() {
            return 0;
        }
        let keys: Vec<(KeyId, Option<KeyState>)> = taken
            .into_iter()
            .map(|(key, sent, snapshot)| (key, self.begin_driving(key, sent, snapshot)))
            .collect();
        let ids: Vec<KeyId> = keys.iter().map(|(key, _)| *key).collect();
        // One round trip for the lot: the states they are driven in.
        let asked = self.supervisor.send(TakeKeys { keys });
        let states = match tokio::time::timeout(SUPERVISOR_TIMEOUT, asked).await {
            Ok(Ok(states)) => states,
            // The supervisor is gone (the process is stopping) or stuck.
            _ => {
                for key in ids {
                    self.let_go_unconfirmed(key, fleet, &AmqpError::Closed)
                        .await;
                }
                return 0;
            }
        };
        let mut driven = 0;
        for (key, state) in ids.into_iter().zip(states) {
            match self.prepare(key, Some(state), false).await {
                Ok(Some(prepared)) => {
                    if let Some(held) = self.held.get_mut(&key) {
                        held.confirming = true;
                    }
                    let channel = fleet.clone();
                    self.first_confirms.push(tokio::spawn(async move {
                        let confirm =
                            wire::publish_snapshot(&channel, &prepared.queue, &prepared.snapshot)
                                .await;
                        (key, prepared, confirm)
                    }));
                    driven += 1;
                }
                Ok(None) => {}
                Err(e) => self.let_go_unconfirmed(key, fleet, &e).await,
            }
        }
        driven
    }

    /// `key` was taken, but its first snapshot cannot be confirmed: stop it
    /// and let its lease go again.
    async fn let_go_unconfirmed(&mut self, key: KeyId, fleet: &Channel, why: &AmqpError) {
        self.keys[key.0].stop_admitting();
        self.supervisor.do_send(LetKeyGo { key });
        self.abandon(key, fleet, why).await;
    }

    /// The broker answered `key`'s first snapshot: with a confirm the key
    /// gets its allowance; without one its lease goes again.
    async fn first_confirmed(&mut self, answer: Result<FirstConfirm, tokio::task::JoinError>) {
        let Ok((key, prepared, confirm)) = answer else {
            return;
        };
        // Let go (or lost with the connection) meanwhile: nothing to grant.
        let Some(held) = self.held.get_mut(&key) else {
            return;
        };
        held.confirming = false;
        if held.releasing.is_some() {
            return;
        }
        match confirm {
            Ok(()) => self.confirmed(key, &prepared),
            Err(e) => match self.fleet.as_ref().map(|(c, _)| c.clone()) {
                Some(fleet) => self.let_go_unconfirmed(key, &fleet, &e).await,
                None => {
                    self.keys[key.0].stop_admitting();
                    self.supervisor.do_send(LetKeyGo { key });
                    self.held.remove(&key);
                }
            },
        }
    }

    /// Take `key` over locally: its budget from `snapshot` (or as it is),
    /// admitting nothing until the first allowance; the state to drive it in.
    fn begin_driving(
        &mut self,
        key: KeyId,
        sent: Instant,
        snapshot: Option<HandoverSnapshot>,
    ) -> Option<KeyState> {
        let ctx = self.keys[key.0].clone();
        // The declaration was a round trip on the lease connection.
        let (_, validity) = super::freshness::timing(self.broker.heartbeat_secs());
        self.gate.extend(sent, validity);
        let state = match snapshot {
            Some(s) => {
                let (from, released) = (s.owner.clone(), s.released);
                let policy = &ctx.pool.policy;
                let (state, budget) = take_over(
                    s,
                    &ctx.limits,
                    policy.budget_window(),
                    jiff::Timestamp::now(),
                    |t| policy.next_reset(t),
                );
                info!(pool = %ctx.pool.name, key = %ctx.name, from = %from, released, "key taken over with its state and budget");
                ctx.begin_lease(Some(budget));
                Some(state)
            }
            None => {
                ctx.begin_lease(None);
                None
            }
        };
        // Sized from what this owner admits, not from the key's whole history.
        let (_, admitted) = ctx.allowance_status();
        self.held.insert(
            key,
            Held {
                releasing: None,
                last_publish: Instant::now(),
                admitted,
                granted: Allowance::default(),
                dirty: false,
                confirming: false,
            },
        );
        state
    }

    /// The first snapshot of `key` failed: let its lease go again.
    async fn abandon(&mut self, key: KeyId, fleet: &Channel, why: &AmqpError) {
        let ctx = &self.keys[key.0];
        warn!(pool = %ctx.pool.name, key = %ctx.name, error = %why, "cannot publish the key's first snapshot; letting the lease go");
        self.held.remove(&key);
        let lease_queue = self.config.lease_queue(&ctx.pool.name, &ctx.name);
        self.drop_lease(fleet, &lease_queue).await;
    }

    /// Delete a lease this connection holds: on the fleet channel, or on a
    /// fresh channel of the same connection if that one is closed (a lease
    /// left behind would keep the key from every instance until this
    /// connection ends).
    async fn drop_lease(&self, fleet: &Channel, lease_queue: &str) {
        if wire::drop_lease(fleet, lease_queue).await.is_ok() {
            return;
        }
        let leases_on = self.generation.load(Ordering::Acquire);
        if let Ok((channel, generation)) = self.broker.channel_with_generation().await
            && generation == leases_on
        {
            if let Err(e) = wire::drop_lease(&channel, lease_queue).await {
                warn!(queue = %lease_queue, error = %e, "cannot drop a key lease; it goes with the connection");
            }
            let _ = channel.close(200, "lease dropped".into()).await;
        }
    }

    /// Publish `key`'s snapshot (its state from the supervisor unless given)
    /// and, once confirmed, grant the allowance it carries.
    async fn publish(
        &mut self,
        key: KeyId,
        channel: &Channel,
        state: Option<KeyState>,
        released: bool,
    ) -> Result<(), AmqpError> {
        let Some(prepared) = self.prepare(key, state, released).await? else {
            return Ok(());
        };
        wire::publish_snapshot(channel, &prepared.queue, &prepared.snapshot).await?;
        self.confirmed(key, &prepared);
        Ok(())
    }

    /// `key`'s snapshot and the allowance it grants (`None`: not held).
    async fn prepare(
        &self,
        key: KeyId,
        state: Option<KeyState>,
        released: bool,
    ) -> Result<Option<Prepared>, AmqpError> {
        let ctx = &self.keys[key.0];
        let state = match state {
            Some(state) => state,
            None => {
                let asked = self.supervisor.send(KeyStateOf { key });
                match tokio::time::timeout(SUPERVISOR_TIMEOUT, asked).await {
                    Ok(Ok(state)) => state,
                    // The supervisor is gone (the process is stopping) or stuck.
                    _ => return Err(AmqpError::Closed),
                }
            }
        };
        let Some(held) = self.held.get(&key) else {
            return Ok(None);
        };
        let snap = ctx.budget_snapshot();
        let allowance = if released {
            Allowance::default()
        } else {
            let used = Allowance {
                calls: snap.admitted.calls.saturating_sub(held.admitted.calls),
                tokens: snap.admitted.tokens.saturating_sub(held.admitted.tokens),
            };
            let fresh = size_allowance(snap.headroom, used, ctx.concurrency);
            // Never less than what is left: calls the old allowance lets
            // through before the confirm must be covered by this snapshot.
            let left = snap.allowance_left.unwrap_or_default();
            // And enough for the call waiting for it, which the key's own
            // limits admitted already.
            let needed = ctx.allowance_needed();
            Allowance {
                calls: fresh.calls.max(left.calls).max(u64::from(needed > 0)),
                tokens: fresh.tokens.max(left.tokens).max(needed),
            }
        };
        Ok(Some(Prepared {
            queue: self.config.key_state_queue(&ctx.pool.name, &ctx.name),
            snapshot: HandoverSnapshot {
                version: HandoverSnapshot::VERSION,
                owner: self.me.clone(),
                taken_at: jiff::Timestamp::now(),
                state,
                budget: snap.budget,
                allowance,
                released,
            },
            admitted: snap.admitted,
        }))
    }

    /// The broker confirmed `prepared`: its allowance may be used.
    fn confirmed(&mut self, key: KeyId, prepared: &Prepared) {
        let allowance = prepared.snapshot.allowance;
        if !prepared.snapshot.released {
            self.keys[key.0].grant_allowance(allowance, prepared.admitted);
        }
        if let Some(held) = self.held.get_mut(&key) {
            held.last_publish = Instant::now();
            held.admitted = prepared.admitted;
            held.granted = allowance;
            held.dirty = false;
        }
    }

    /// Publish the snapshots that are due (see [`Held::due`]).
    async fn renew_allowances(&mut self, periodic: bool) {
        let Some((channel, _)) = self.fleet.clone() else {
            return;
        };
        let now = Instant::now();
        let due: Vec<KeyId> = self
            .held
            .iter()
            .filter(|(id, held)| {
                let ctx = &self.keys[id.0];
                let (left, admitted) = ctx.allowance_status();
                held.due(left, admitted, ctx.allowance_needed() > 0, now, periodic)
            })
            .map(|(id, _)| *id)
            .collect();
        for key in due {
            if let Err(e) = self.publish(key, &channel, None, false).await {
                let ctx = &self.keys[key.0];
                warn!(pool = %ctx.pool.name, key = %ctx.name, error = %e, "cannot publish the key's snapshot; it admits no more calls until one is confirmed");
                if !channel.status().connected() {
                    return;
                }
            }
        }
    }

    /// Stop driving `key`; the hand-over ends once its calls are done.
    fn begin_hand_over(&mut self, key: KeyId) {
        let Some(held) = self.held.get_mut(&key) else {
            return;
        };
        let ctx = &self.keys[key.0];
        info!(pool = %ctx.pool.name, key = %ctx.name, "handing the key over to balance the fleet");
        held.releasing = Some(Instant::now());
        // At once, not when the supervisor gets to it: the last snapshot
        // must count every call this instance makes with the key.
        ctx.stop_admitting();
        self.supervisor.do_send(LetKeyGo { key });
    }

    /// Hand-overs whose calls are done: last snapshot, then the lease goes.
    async fn finish_hand_overs(&mut self, channel: &Channel) {
        let now = Instant::now();
        let ready: Vec<(KeyId, bool)> = self
            .held
            .iter()
            .filter_map(|(id, h)| {
                let waited = now.saturating_duration_since(h.releasing?);
                // A job past its admission checks is counted in flight
                // within moments; give it those before trusting a 0.
                let quiet = waited >= SETTLE && self.keys[id.0].in_flight() == 0;
                let overdue = waited >= HAND_OVER_LIMIT;
                (quiet || overdue).then_some((*id, quiet))
            })
            .collect();
        for (key, quiet) in ready {
            self.hand_over(key, channel, quiet).await;
        }
    }

    async fn hand_over(&mut self, key: KeyId, channel: &Channel, released: bool) {
        let ctx = self.keys[key.0].clone();
        if let Err(e) = self.publish(key, channel, None, released).await {
            // The last confirmed snapshot still covers every call (its
            // allowance counts as spent): the lease can go all the same.
            warn!(pool = %ctx.pool.name, key = %ctx.name, error = %e, "cannot publish the key's last snapshot");
        }
        let lease_queue = self.config.lease_queue(&ctx.pool.name, &ctx.name);
        self.drop_lease(channel, &lease_queue).await;
        self.held.remove(&key);
        self.let_go_at.insert(key, Instant::now());
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
