//! How many keys an instance should hold: with K keys and N live instances,
//! each holds between ⌊K/N⌋ and ⌈K/N⌉. Every instance decides for itself from
//! the same picture of the fleet (its members and what each holds), so the
//! fleet converges without a coordinator: instances above ⌈K/N⌉ let keys go,
//! the fullest one lets one go while another is below ⌊K/N⌋, and instances
//! below ⌈K/N⌉ take free keys.

use std::collections::BTreeMap;

/// What one instance should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Free keys it may take.
    pub acquire: usize,
    /// Keys it should hand over.
    pub release: usize,
}

/// The plan for `me`, given the number of keys and what every live instance
/// (`me` included) holds.
pub fn plan(total_keys: usize, me: &str, fleet: &BTreeMap<String, usize>) -> Plan {
    let mine = fleet.get(me).copied().unwrap_or(0);
    let members = (fleet.len() + usize::from(!fleet.contains_key(me))).max(1);
    let high = total_keys.div_ceil(members);
    let low = total_keys / members;
    if mine > high {
        return Plan {
            acquire: 0,
            release: mine - high,
        };
    }
    let someone_starved = fleet.iter().any(|(name, held)| name != me && *held < low);
    if !someone_starved {
        return Plan {
            acquire: high - mine,
            release: 0,
        };
    }
    // Keys freed now are for the starved: the fullest instance (ties: the
    // first name) gives one up, and nobody at ⌊K/N⌋ or above takes more.
    let fullest = fleet
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .is_some_and(|(name, _)| name == me);
    Plan {
        acquire: low.saturating_sub(mine),
        release: usize::from(fullest && mine > low),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(members: &[(&str, usize)]) -> BTreeMap<String, usize> {
        members.iter().map(|(n, h)| (n.to_string(), *h)).collect()
    }

    /// (total keys, what each instance holds, who plans, its plan)
    type Case<'a> = (usize, &'a [(&'a str, usize)], &'a str, Plan);

    #[test]
    fn plans() {
        let cases: &[Case] = &[
            // Alone: take every key.
            (
                4,
                &[("a", 0)],
                "a",
                Plan {
                    acquire: 4,
                    release: 0,
                },
            ),
            (
                4,
                &[],
                "a",
                Plan {
                    acquire: 4,
                    release: 0,
                },
            ),
            // A second instance appeared: the first lets half go.
            (
                4,
                &[("a", 4), ("b", 0)],
                "a",
                Plan {
                    acquire: 0,
                    release: 2,
                },
            ),
            (
                4,
                &[("a", 4), ("b", 0)],
                "b",
                Plan {
                    acquire: 2,
                    release: 0,
                },
            ),
            // 4 keys, 3 instances: 2/2/0 is within ⌈4/3⌉ but starves c;
            // the fullest (a, by name) gives one up, b does not.
            (
                4,
                &[("a", 2), ("b", 2), ("c", 0)],
                "a",
                Plan {
                    acquire: 0,
                    release: 1,
                },
            ),
            (
                4,
                &[("a", 2), ("b", 2), ("c", 0)],
                "b",
                Plan {
                    acquire: 0,
                    release: 0,
                },
            ),
            (
                4,
                &[("a", 2), ("b", 2), ("c", 0)],
                "c",
                Plan {
                    acquire: 2,
                    release: 0,
                },
            ),
            // Balanced: 1/2/1.
            (
                4,
                &[("a", 1), ("b", 2), ("c", 1)],
                "b",
                Plan {
                    acquire: 0,
                    release: 0,
                },
            ),
            // More instances than keys: some hold none, and that is fine.
            (
                2,
                &[("a", 1), ("b", 1), ("c", 0)],
                "c",
                Plan {
                    acquire: 1,
                    release: 0,
                },
            ),
            (
                2,
                &[("a", 1), ("b", 1), ("c", 0)],
                "a",
                Plan {
                    acquire: 0,
                    release: 0,
                },
            ),
            // An instance gone from the picture: survivors take its keys.
            (
                6,
                &[("a", 2), ("b", 2)],
                "a",
                Plan {
                    acquire: 1,
                    release: 0,
                },
            ),
        ];
        for (total, members, me, expected) in cases {
            assert_eq!(
                plan(*total, me, &fleet(members)),
                *expected,
                "{total} {members:?} {me}"
            );
        }
    }

    #[test]
    fn independent_plans_converge_to_the_promised_range() {
        // Every instance applies its own plan each round on the same picture;
        // released keys are free, and free keys go to whoever asks (lowest first).
        for total in 1..=12 {
            for members in 1..=5 {
                let names: Vec<String> = (0..members).map(|i| format!("i{i}")).collect();
                let mut held: BTreeMap<String, usize> =
                    names.iter().map(|n| (n.clone(), 0)).collect();
                held.insert(names[0].clone(), total);
                for _ in 0..50 {
                    let picture = held.clone();
                    let mut free = total - picture.values().sum::<usize>();
                    for name in &names {
                        let p = plan(total, name, &picture);
                        let entry = held.get_mut(name).unwrap();
                        *entry -= p.release;
                        free += p.release;
                    }
                    for name in &names {
                        let p = plan(total, name, &picture);
                        let take = p.acquire.min(free);
                        *held.get_mut(name).unwrap() += take;
                        free -= take;
                    }
                }
                let (low, high) = (total / members, total.div_ceil(members));
                assert_eq!(
                    held.values().sum::<usize>(),
                    total,
                    "{total}/{members}: every key held"
                );
                for (name, h) in &held {
                    assert!(
                        (low..=high).contains(h),
                        "{total}/{members}: {name} holds {h}: {held:?}"
                    );
                }
            }
        }
    }
}
