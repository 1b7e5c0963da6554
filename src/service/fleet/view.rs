//! Who else is in the fleet and which keys each drives, from the beacons
//! every instance publishes on the fleet exchange.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

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

/// An instance counts as gone when no beacon came for this long (six
/// beacons missed): its keys are anybody's to take. Too short costs only
/// lease attempts the broker refuses (the lease, not this view, decides who
/// drives a key); too long delays a failover.
pub const ALIVE_FOR: Duration = Duration::from_millis(1_500);

/// What an instance says about itself, every tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beacon {
    /// The instance's name (`[instance] name`, or hostname-pid).
    pub instance: String,
    /// Its admin and metrics endpoint, for operators and `/v1/jobs` lookups.
    pub http: String,
    /// The keys it drives, as `pool/key`.
    pub keys: Vec<String>,
    /// Set by an instance shutting down: its keys are free, it takes none.
    #[serde(default)]
    pub leaving: bool,
    /// What it spent on budgeted scopes today and this month, so that the
    /// fleet holds a budget together (absent from instances of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<SpendBeacon>,
}

/// An instance's spend in its beacon, named by its store (see
/// `pipeline::spend::store_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendBeacon {
    pub store: String,
    #[serde(flatten)]
    pub share: keyrelay_core::spend::SpendShare,
}

/// One other instance as last heard of.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    #[serde(flatten)]
    pub beacon: Beacon,
    /// Milliseconds since its last beacon.
    pub last_seen_ms: u64,
}

/// The other live instances.
pub struct FleetView {
    me: String,
    members: BTreeMap<String, (Beacon, Instant)>,
}

impl FleetView {
    pub fn new(me: &str) -> FleetView {
        FleetView {
            me: me.to_owned(),
            members: BTreeMap::new(),
        }
    }

    /// A beacon arrived (this instance's own are ignored).
    pub fn heard(&mut self, beacon: Beacon, at: Instant) {
        if beacon.instance == self.me {
            return;
        }
        if beacon.leaving {
            self.members.remove(&beacon.instance);
            return;
        }
        self.members.insert(beacon.instance.clone(), (beacon, at));
    }

    /// Forget instances silent for longer than [`ALIVE_FOR`]; their names.
    pub fn forget_silent(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, (_, seen))| now.saturating_duration_since(*seen) > ALIVE_FOR)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            self.members.remove(name);
        }
        gone
    }

    /// Keys held per live instance, this one (holding `mine`) included.
    pub fn holdings(&self, mine: usize) -> BTreeMap<String, usize> {
        let mut held: BTreeMap<String, usize> = self
            .members
            .iter()
            .map(|(name, (beacon, _))| (name.clone(), beacon.keys.len()))
            .collect();
        held.insert(self.me.clone(), mine);
        held
    }

    /// The other live instance that drives `key` (`pool/key`), if any.
    pub fn owner_of(&self, key: &str) -> Option<&str> {
        self.members
            .values()
            .find(|(beacon, _)| beacon.keys.iter().any(|k| k == key))
            .map(|(beacon, _)| beacon.instance.as_str())
    }

    /// The other live instances, for operators.
    pub fn members(&self, now: Instant) -> Vec<Member> {
        self.members
            .values()
            .map(|(beacon, seen)| Member {
                beacon: beacon.clone(),
                last_seen_ms: now.saturating_duration_since(*seen).as_millis() as u64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beacon(name: &str, keys: &[&str]) -> Beacon {
        Beacon {
            instance: name.into(),
            http: "127.0.0.1:1".into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            leaving: false,
            spend: None,
        }
    }

    #[test]
    fn tracks_owners_and_forgets_the_silent_and_the_leaving() {
        let t0 = Instant::now();
        let mut view = FleetView::new("me");
        view.heard(beacon("me", &["p/x"]), t0);
        view.heard(beacon("a", &["p/a1", "p/a2"]), t0);
        view.heard(beacon("b", &["p/b1"]), t0 + Duration::from_secs(2));
        assert_eq!(view.owner_of("p/a2"), Some("a"));
        assert_eq!(view.owner_of("p/x"), None, "its own beacons are not news");
        assert_eq!(
            view.holdings(3),
            BTreeMap::from([("a".into(), 2), ("b".into(), 1), ("me".into(), 3)])
        );
        let gone = view.forget_silent(t0 + ALIVE_FOR + Duration::from_millis(1));
        assert_eq!(gone, vec!["a".to_string()]);
        assert_eq!(view.owner_of("p/a2"), None);
        view.heard(
            Beacon {
                leaving: true,
                spend: None,
                ..beacon("b", &[])
            },
            t0,
        );
        assert_eq!(view.holdings(0), BTreeMap::from([("me".into(), 0)]));
    }
}
