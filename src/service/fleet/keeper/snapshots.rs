//! Publishing keys' snapshots (each confirm grants the allowance it
//! carries) and handing keys over: the last snapshot, then the lease goes.

use std::time::Instant;

use lapin::Channel;
use tracing::{info, warn};

use super::{HAND_OVER_LIMIT, LeaseKeeper, Prepared, SETTLE, SUPERVISOR_TIMEOUT};
use crate::actors::messages::{KeyStateOf, LetKeyGo};
use crate::amqp::AmqpError;
use crate::fleet::wire;
use keyrelay_core::keys::{Allowance, KeyId, KeyState};
use keyrelay_core::lease::{HandoverSnapshot, size_allowance};

impl LeaseKeeper {
    /// Publish `key`'s snapshot (its state from the supervisor unless given)
    /// and, once confirmed, grant the allowance it carries.
    pub(super) async fn publish(
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
    pub(super) async fn prepare(
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
    pub(super) fn confirmed(&mut self, key: KeyId, prepared: &Prepared) {
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
    pub(super) async fn renew_allowances(&mut self, periodic: bool) {
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
    pub(super) fn begin_hand_over(&mut self, key: KeyId) {
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
    pub(super) async fn finish_hand_overs(&mut self, channel: &Channel) {
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

    pub(super) async fn hand_over(&mut self, key: KeyId, channel: &Channel, released: bool) {
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
}
