//! A pool's HTTP connections: enough independent reqwest clients that the calls
//! its keys may make at once never wait behind a server's HTTP/2 stream limit.
//!
//! hyper sends every HTTP/2 request of one client to a host over a single
//! connection, and a request past the server's `SETTINGS_MAX_CONCURRENT_STREAMS`
//! waits for a stream with its timeout running (hyperium/hyper#2197, #3623).
//! Providers advertise about 100 streams; a pool of 100 keys × 4 calls would
//! otherwise run 100 calls and queue 300. Each lane here is its own client (its
//! own connection pool), and a call takes the lane with the fewest calls open.
//! Admin probes share the lanes and are not counted in their number: with
//! every key's calls open at once, a probe may wait for a stream.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Most lanes a pool may have (config validation rejects more).
pub const MAX_LANES: usize = 256;

/// Lanes for `calls_in_flight` concurrent calls at `streams_per_connection`
/// each: at least one.
pub fn lanes_needed(calls_in_flight: usize, streams_per_connection: usize) -> usize {
    calls_in_flight
        .div_ceil(streams_per_connection.max(1))
        .max(1)
}

/// A fixed set of HTTP clients, each with its own connection pool.
#[derive(Debug)]
pub struct Lanes {
    lanes: Box<[Lane]>,
}

#[derive(Debug)]
struct Lane {
    http: reqwest::Client,
    open_calls: AtomicUsize,
}

impl Lanes {
    /// `count` clients (at least one), each made by `build`.
    pub fn new(
        count: usize,
        build: impl Fn() -> reqwest::Result<reqwest::Client>,
    ) -> reqwest::Result<Self> {
        let lanes = (0..count.max(1))
            .map(|_| {
                Ok(Lane {
                    http: build()?,
                    open_calls: AtomicUsize::new(0),
                })
            })
            .collect::<reqwest::Result<_>>()?;
        Ok(Lanes { lanes })
    }

    /// How many lanes (never zero).
    pub fn count(&self) -> usize {
        self.lanes.len()
    }

    /// The lane with the fewest open calls, held until the guard drops.
    ///
    /// While fewer than `len × streams` calls are open, some lane is under
    /// `streams`, so the least loaded one has a free stream. The
    /// compare-and-swap stops two takers from filling the same lane; a taker
    /// racing a release elsewhere can still overshoot a lane by one call for a
    /// moment, which only makes that call wait for a stream.
    pub fn acquire(&self) -> LaneGuard<'_> {
        loop {
            let (lane, open) = self
                .lanes
                .iter()
                .map(|lane| (lane, lane.open_calls.load(Ordering::Relaxed)))
                .min_by_key(|&(_, open)| open)
                .expect("Lanes::new makes at least one lane");
            if lane
                .open_calls
                .compare_exchange(open, open + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return LaneGuard { lane };
            }
        }
    }
}

/// One open call on a lane; the lane's count drops with it.
pub struct LaneGuard<'a> {
    lane: &'a Lane,
}

impl LaneGuard<'_> {
    /// The lane's client, to send the call on.
    pub fn http(&self) -> &reqwest::Client {
        &self.lane.http
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        self.lane.open_calls.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes(count: usize) -> Lanes {
        Lanes::new(count, || reqwest::Client::builder().build()).unwrap()
    }

    fn open_calls(lanes: &Lanes) -> Vec<usize> {
        let count = |lane: &Lane| lane.open_calls.load(Ordering::Relaxed);
        lanes.lanes.iter().map(count).collect()
    }

    #[test]
    fn lanes_cover_every_call_in_flight() {
        for (calls, streams, expected) in [
            (0, 100, 1),
            (1, 100, 1),
            (100, 100, 1),
            (101, 100, 2),
            (4000, 100, 40),
            (400, 256, 2),
            (5, 0, 5),
        ] {
            assert_eq!(
                lanes_needed(calls, streams),
                expected,
                "{calls} / {streams}"
            );
        }
    }

    #[test]
    fn calls_spread_evenly_and_release_on_drop() {
        let lanes = lanes(3);
        let held: Vec<_> = (0..7).map(|_| lanes.acquire()).collect();
        assert_eq!(open_calls(&lanes), [3, 2, 2]);

        drop(held);
        assert_eq!(open_calls(&lanes), [0, 0, 0]);
    }

    #[test]
    fn a_freed_lane_is_taken_next() {
        let lanes = lanes(3);
        let mut held: Vec<_> = (0..5).map(|_| lanes.acquire()).collect();
        assert_eq!(open_calls(&lanes), [2, 2, 1]);
        held.swap_remove(0); // a call on lane 0 ends
        held.push(lanes.acquire());
        // Round robin would have picked lane 2.
        assert_eq!(open_calls(&lanes), [2, 2, 1]);
    }

    #[test]
    fn concurrent_takers_stay_near_the_bound_and_lose_no_count() {
        // 4 lanes × 25 streams, up to 100 calls open at once from 4 threads.
        let lanes = lanes(4);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        let held: Vec<_> = (0..25).map(|_| lanes.acquire()).collect();
                        // Each racing thread can push a lane one call over.
                        assert!(open_calls(&lanes).iter().all(|&n| n <= 25 + 3));
                        drop(held);
                    }
                });
            }
        });
        assert_eq!(open_calls(&lanes), [0, 0, 0, 0]);
    }
}
