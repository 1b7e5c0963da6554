//! The supervisor's part of `/readyz`: per pool, how many keys are in rotation
//! and how many consume, published on a watch so readiness never waits on the
//! actor; and one log line when a pool loses its last consumer.

use tracing::{info, warn};

use super::state::Supervisor;
use keyrelay_core::readiness::PoolConsumers;

impl Supervisor {
    /// Publish every pool's consumer counts; log a pool's starvation once.
    pub(super) fn publish_pool_consumers(&mut self) {
        let snapshot: Vec<PoolConsumers> = (0..self.pools.len())
            .map(|p| self.pool_consumers_of(p))
            .collect();
        // Start-up (nothing consumed yet), shutdown and a paused store (logged
        // on its own) are not a pool losing its consumers.
        let expected = !self.stopping && self.store_writable;
        for (pool, facts) in self.pools.iter_mut().zip(&snapshot) {
            let lost = pool.had_consumer && facts.is_starved();
            pool.had_consumer |= facts.consuming > 0;
            match (lost, pool.starved_logged) {
                (true, false) if expected => {
                    pool.starved_logged = true;
                    warn!(pool = %facts.pool, queue = %facts.queue, in_rotation = facts.in_rotation, "no consumer on the pool's queue (queue deleted, channel closed?); restarting its workers");
                }
                (false, true) if facts.consuming > 0 => {
                    pool.starved_logged = false;
                    info!(pool = %facts.pool, queue = %facts.queue, consuming = facts.consuming, "consuming from the pool's queue again");
                }
                _ => {}
            }
        }
        self.pool_consumers.send_replace(snapshot);
    }

    fn pool_consumers_of(&self, p: usize) -> PoolConsumers {
        let pool = &self.pools[p];
        let slots = || pool.keys.iter().map(|k| &self.keys[k.0]);
        PoolConsumers {
            pool: pool.ctx.name.clone(),
            queue: pool.ctx.queue.clone(),
            // Keys another instance drives are its to consume with.
            in_rotation: slots()
                .filter(|s| s.leased && s.state.is_available())
                .count(),
            consuming: slots().filter(|s| s.consuming).count(),
        }
    }
}
