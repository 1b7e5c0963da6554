//! Taking keys: moving towards this instance's share of the fleet's keys,
//! taking their leases, and starting each key from its last snapshot.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::StreamExt;
use lapin::Channel;
use tracing::{info, warn};

use super::{
    FirstConfirm, Held, LeaseKeeper, ORPHAN_AFTER, PARALLEL_ATTEMPTS, RETAKE_AFTER,
    SUPERVISOR_TIMEOUT,
};
use crate::actors::messages::{LetKeyGo, TakeKeys};
use crate::amqp::AmqpError;
use crate::fleet::wire::{self, Attempt, AttemptChannels};
use keyrelay_core::keys::{Allowance, KeyId, KeyState};
use keyrelay_core::lease::{HandoverSnapshot, plan, take_over};

impl LeaseKeeper {
    /// Move towards this instance's share: let keys go above it, take free
    /// keys below it, and take any key nobody has held for a while. Lease
    /// attempts run [`PARALLEL_ATTEMPTS`] at a time (a thousand keys at start).
    pub(super) async fn balance(&mut self, channel: &Channel) {
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
        // Each instance starts at its own place in the list, so instances
        // starting together mostly go for different keys rather than all
        // racing for the first ones.
        if !free.is_empty() {
            let start = start_offset(&self.me) % free.len();
            free.rotate_left(start);
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
    pub(super) async fn first_confirmed(
        &mut self,
        answer: Result<FirstConfirm, tokio::task::JoinError>,
    ) {
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
        let (_, validity) = crate::fleet::freshness::timing(self.broker.heartbeat_secs());
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
    pub(super) async fn drop_lease(&self, fleet: &Channel, lease_queue: &str) {
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
}

/// Where in the list of free keys `instance` starts (stable for a name).
fn start_offset(instance: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    instance.hash(&mut hasher);
    hasher.finish() as usize
}
