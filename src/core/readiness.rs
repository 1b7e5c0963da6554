//! What `/readyz` says: derived from what the broker connection, the store and
//! each pool's consumers can do right now, never from a flag someone forgot
//! to clear. [`assess`] is a pure function of those facts; the HTTP handler
//! only gathers them (without waiting on any lock held across I/O).

use serde::Serialize;

/// A pool's consumers as the supervisor last saw them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolConsumers {
    /// The pool's name.
    pub pool: String,
    /// The job queue its keys consume from.
    pub queue: String,
    /// Keys in rotation: each should have a consumer on the queue.
    pub in_rotation: usize,
    /// Keys whose consumer is on the queue right now.
    pub consuming: usize,
}

impl PoolConsumers {
    /// Keys that could take jobs, and not one consumer to take them.
    pub fn is_starved(&self) -> bool {
        self.in_rotation > 0 && self.consuming == 0
    }
}

/// Everything readiness depends on, read at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Whether the broker connection is up.
    pub broker_connected: bool,
    /// Why the store cannot write, while it cannot.
    pub store_error: Option<&'a str>,
    /// Every pool's consumers.
    pub pools: &'a [PoolConsumers],
}

/// One reason keyrelay is not ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "component", rename_all = "snake_case")]
pub enum NotReady {
    /// The broker connection is down.
    Broker {
        /// What is wrong, for people.
        reason: String,
    },
    /// The store cannot write, so no new jobs are taken.
    Store {
        /// What is wrong, with the store's error.
        reason: String,
    },
    /// A pool has keys in rotation but no consumer on its queue.
    Pool {
        /// The pool's name.
        pool: String,
        /// The queue that has no consumer.
        queue: String,
        /// What is wrong, for people.
        reason: String,
    },
}

/// Every reason keyrelay cannot do its work right now; empty means ready.
/// A pool whose keys are all out of rotation (spent for the day, disabled) is
/// not a readiness problem: restarting would not help, and the key alerts say
/// so. A pool with keys in rotation but no consumer is.
pub fn assess(facts: Facts<'_>) -> Vec<NotReady> {
    let mut reasons = Vec::new();
    if !facts.broker_connected {
        reasons.push(NotReady::Broker {
            reason: "the broker connection is down (reconnecting)".to_owned(),
        });
    }
    if let Some(error) = facts.store_error {
        reasons.push(NotReady::Store {
            reason: format!("the store cannot write: {error}; no new jobs are taken"),
        });
    }
    for pool in facts.pools.iter().filter(|p| p.is_starved()) {
        reasons.push(NotReady::Pool {
            pool: pool.pool.clone(),
            queue: pool.queue.clone(),
            reason: format!(
                "{} key(s) in rotation but no consumer on the queue",
                pool.in_rotation
            ),
        });
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(in_rotation: usize, consuming: usize) -> PoolConsumers {
        PoolConsumers {
            pool: "p".into(),
            queue: "kr.jobs.p".into(),
            in_rotation,
            consuming,
        }
    }

    #[test]
    fn each_fact_gives_its_reason() {
        let components = |facts| -> Vec<&'static str> {
            assess(facts)
                .iter()
                .map(|r| match r {
                    NotReady::Broker { .. } => "broker",
                    NotReady::Store { .. } => "store",
                    NotReady::Pool { .. } => "pool",
                })
                .collect()
        };
        type Row<'a> = (bool, Option<&'a str>, &'a [PoolConsumers], &'a [&'a str]);
        let healthy = [pool(2, 2), pool(0, 0)];
        let rows: [Row; 6] = [
            (true, None, &healthy, &[]),
            (false, None, &healthy, &["broker"]),
            (true, Some("No space left on device"), &healthy, &["store"]),
            (true, None, &[pool(2, 0)], &["pool"]),
            (true, None, &[pool(2, 1)], &[]),
            (
                false,
                Some("x"),
                &[pool(1, 0)],
                &["broker", "store", "pool"],
            ),
        ];
        for (broker_connected, store_error, pools, want) in rows {
            let facts = Facts {
                broker_connected,
                store_error,
                pools,
            };
            assert_eq!(components(facts), want, "{facts:?}");
        }
    }
}
