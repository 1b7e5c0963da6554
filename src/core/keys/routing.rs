//! Choosing the key a rerouted job goes to.

use super::id::KeyId;

/// What routing needs to know about one key of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The key.
    pub id: KeyId,
    /// Its configured priority: lower is preferred.
    pub priority: u8,
    /// Jobs it is running now.
    pub in_flight: usize,
    /// Jobs it may run at once (its configured `concurrency`).
    pub concurrency: u16,
    /// Whether its state lets it take a job
    /// ([`KeyState::is_available`](super::KeyState::is_available)).
    pub available: bool,
}

/// The best available key: lowest priority number first (as the broker's
/// consumer priorities do), then the least loaded relative to its concurrency.
/// `avoid` (the key that just failed transiently) is taken only when it is the
/// sole available key.
pub fn choose_key(candidates: &[Candidate], avoid: Option<KeyId>) -> Option<KeyId> {
    let best = |allow_avoided: bool| {
        candidates
            .iter()
            .filter(|c| c.available && (allow_avoided || Some(c.id) != avoid))
            .min_by(|a, b| {
                a.priority
                    .cmp(&b.priority)
                    .then_with(|| load(a).total_cmp(&load(b)))
                    .then_with(|| a.id.cmp(&b.id))
            })
            .map(|c| c.id)
    };
    best(false).or_else(|| best(true))
}

fn load(c: &Candidate) -> f64 {
    c.in_flight as f64 / f64::from(c.concurrency.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: usize, priority: u8, in_flight: usize, available: bool) -> Candidate {
        Candidate {
            id: KeyId(id),
            priority,
            in_flight,
            concurrency: 4,
            available,
        }
    }

    #[test]
    fn routing_table() {
        type Case = (&'static str, Vec<Candidate>, Option<usize>, Option<usize>);
        let cases: Vec<Case> = vec![
            ("no keys", vec![], None, None),
            (
                "none available",
                vec![key(0, 1, 0, false), key(1, 2, 0, false)],
                None,
                None,
            ),
            (
                "lowest priority wins",
                vec![key(0, 2, 0, true), key(1, 1, 3, true)],
                None,
                Some(1),
            ),
            (
                "least loaded among equals",
                vec![key(0, 1, 3, true), key(1, 1, 1, true)],
                None,
                Some(1),
            ),
            (
                "skips unavailable",
                vec![key(0, 1, 0, false), key(1, 3, 4, true)],
                None,
                Some(1),
            ),
            (
                "avoids failed key",
                vec![key(0, 1, 0, true), key(1, 2, 4, true)],
                Some(0),
                Some(1),
            ),
            (
                "failed key if alone",
                vec![key(0, 1, 0, true), key(1, 1, 0, false)],
                Some(0),
                Some(0),
            ),
            (
                "ties by id",
                vec![key(1, 1, 0, true), key(0, 1, 0, true)],
                None,
                Some(0),
            ),
        ];
        for (name, candidates, avoid, expected) in cases {
            assert_eq!(
                choose_key(&candidates, avoid.map(KeyId)),
                expected.map(KeyId),
                "{name}"
            );
        }
    }
}
