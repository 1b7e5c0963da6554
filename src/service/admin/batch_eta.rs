//! When a batch will be done: from the pool's declared quotas (what the keys
//! may still do today and per window) and the rate observed so far, naming
//! the limit that binds. Pure, tested below.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// What one key of the pool may do.
#[derive(Debug, Clone)]
pub struct KeyQuota {
    /// Requests per window (`rate_window_secs`), if declared.
    pub rpm: Option<u32>,
    /// The window's length.
    pub window: SignedDuration,
    /// Requests per quota day, if declared.
    pub rpd: Option<u32>,
    /// Requests made in the current quota day.
    pub day_used: u64,
    /// When the quota day ends.
    pub day_ends: Timestamp,
    /// In rotation, or coming back by itself (not disabled).
    pub usable: bool,
}

/// When the batch is expected to be done, and why then.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Eta {
    pub seconds: f64,
    pub at: Timestamp,
    /// The binding limit, in words: "rpm of 3 keys", "rpd of 3 keys; next reset
    /// 2026-12-07T08:00:00Z", "the observed rate of 12.5 jobs/s".
    pub limited_by: String,
}

/// The quotas of `pool`'s keys, from the keys' views (the fleet's).
pub fn pool_quotas(
    config: &keyrelay_core::config::Config,
    keys: &[super::keys::KeyView],
    pool: &str,
) -> Vec<KeyQuota> {
    let window = config
        .pools
        .iter()
        .find(|p| p.name == pool)
        .map_or(60, |p| p.rate_window_secs);
    keys.iter()
        .filter(|k| k.pool == pool)
        .map(|k| KeyQuota {
            rpm: k.limits.rpm,
            window: SignedDuration::from_secs(window as i64),
            rpd: k.limits.rpd,
            day_used: k.usage.day_requests,
            day_ends: k.usage.day_ends,
            usable: k.state != "disabled",
        })
        .collect()
}

/// The ETA of `remaining` jobs on `keys`, at `observed` jobs/s if known.
pub fn eta(
    remaining: u64,
    keys: &[KeyQuota],
    observed: Option<f64>,
    now: Timestamp,
) -> Option<Eta> {
    if remaining == 0 {
        return Some(Eta {
            seconds: 0.0,
            at: now,
            limited_by: "nothing left".into(),
        });
    }
    let usable: Vec<&KeyQuota> = keys.iter().filter(|k| k.usable).collect();
    let mut candidates: Vec<(f64, String)> = Vec::new();
    if let Some(rate) = observed.filter(|r| *r > 0.0) {
        candidates.push((
            remaining as f64 / rate,
            format!("the observed rate of {rate:.2} jobs/s"),
        ));
    }
    if !usable.is_empty() && usable.iter().all(|k| k.rpm.is_some()) {
        let per_sec: f64 = usable
            .iter()
            .map(|k| f64::from(k.rpm.unwrap_or(0)) / k.window.as_secs_f64().max(1.0))
            .sum();
        if per_sec > 0.0 {
            candidates.push((
                remaining as f64 / per_sec,
                format!("rpm of {} keys", usable.len()),
            ));
        }
    }
    if !usable.is_empty() && usable.iter().all(|k| k.rpd.is_some()) {
        let left_today: u64 = usable
            .iter()
            .map(|k| u64::from(k.rpd.unwrap_or(0)).saturating_sub(k.day_used))
            .sum();
        let per_day: u64 = usable.iter().map(|k| u64::from(k.rpd.unwrap_or(0))).sum();
        if remaining > left_today && per_day > 0 {
            let reset = usable.iter().map(|k| k.day_ends).min().unwrap_or(now);
            let until_reset = reset.duration_since(now).as_secs_f64().max(0.0);
            // Whole quota days after the reset for what today cannot take.
            let more_days = ((remaining - left_today) as f64 / per_day as f64).ceil() - 1.0;
            let seconds = until_reset + more_days.max(0.0) * 86_400.0;
            candidates.push((
                seconds,
                format!("rpd of {} keys; next reset {reset}", usable.len()),
            ));
        }
    }
    let (seconds, limited_by) = candidates.into_iter().max_by(|a, b| a.0.total_cmp(&b.0))?;
    let at = now
        .checked_add(SignedDuration::from_secs_f64(seconds.min(1e9)))
        .unwrap_or(now);
    Some(Eta {
        seconds,
        at,
        limited_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rpm: Option<u32>, rpd: Option<u32>, used: u64, ends: &str) -> KeyQuota {
        KeyQuota {
            rpm,
            window: SignedDuration::from_secs(60),
            rpd,
            day_used: used,
            day_ends: ends.parse().unwrap(),
            usable: true,
        }
    }

    #[test]
    fn the_slowest_limit_binds_and_is_named() {
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let ends = "2026-12-07T08:00:00Z";
        // 3 keys × 60 rpm = 3 jobs/s: 600 jobs take 200 s; observed 5/s.
        let keys = vec![key(Some(60), None, 0, ends); 3];
        let e = eta(600, &keys, Some(5.0), now).unwrap();
        assert!((e.seconds - 200.0).abs() < 1e-6, "{e:?}");
        assert_eq!(e.limited_by, "rpm of 3 keys");
        // Slower observed than declared: the observed rate binds.
        let e = eta(600, &keys, Some(1.0), now).unwrap();
        assert!(e.limited_by.starts_with("the observed rate"), "{e:?}");
        // rpd: 3 keys × 100 a day, 250 used: 50 left today, 600 remaining ->
        // the reset at 08:00, then 550 more = 2 days' worth (300 a day), the
        // second partly: reset + 1 day.
        let keys = vec![key(Some(60), Some(100), 250 / 3 + 1, ends); 3];
        let e = eta(600, &keys, Some(5.0), now).unwrap();
        assert!(
            e.limited_by
                .starts_with("rpd of 3 keys; next reset 2026-12-07T08:00:00Z"),
            "{e:?}"
        );
        assert!(
            (e.seconds - (22.0 * 3600.0 + 86_400.0)).abs() < 1.0,
            "{e:?}"
        );
    }

    #[test]
    fn no_limits_and_no_rate_means_no_eta() {
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let keys = vec![key(None, None, 0, "2026-12-07T00:00:00Z")];
        assert!(eta(10, &keys, None, now).is_none());
        assert_eq!(eta(0, &keys, None, now).unwrap().seconds, 0.0);
    }
}
