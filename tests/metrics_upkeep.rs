//! Histogram samples must not pile up in memory when nothing scrapes `/metrics`.
//!
//! The Prometheus recorder buffers every histogram sample until upkeep folds it
//! into its buckets. This binary counts the bytes it holds live, records a
//! burst of samples without ever rendering, and waits for the buffer to go.
//! Every allocation of the process counts, so keep this the binary's only test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SAMPLES: usize = 1_000_000;
/// 1M samples hold ~16 MB before upkeep (measured); the folded buckets a few hundred bytes.
const LEFT_AFTER_UPKEEP: usize = 1024 * 1024;

#[test]
fn histogram_samples_are_folded_without_a_scrape() {
    let _handle = keyrelay::app::metrics_handle().expect("install the recorder");
    let histogram = metrics::histogram!(keyrelay_core::metrics::JOB_STAGE, "stage" => "keyrelay");
    // Registering the series allocates once; count from after it.
    histogram.record(0.0);
    let before = LIVE_BYTES.load(Ordering::Relaxed);

    for i in 0..SAMPLES {
        histogram.record(i as f64 * 1e-9);
    }

    // Upkeep runs every UPKEEP_PERIOD; give it several chances, then fail.
    let deadline = Instant::now() + keyrelay_core::metrics::UPKEEP_PERIOD * 10;
    let mut held = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    while held > LEFT_AFTER_UPKEEP {
        assert!(
            Instant::now() < deadline,
            "{held} bytes still buffered for {SAMPLES} histogram samples after {:?} without a scrape",
            keyrelay_core::metrics::UPKEEP_PERIOD * 10
        );
        // A live service keeps recording; the blocks upkeep drained are freed
        // once later records and drains move crossbeam's epoch on.
        histogram.record(0.0);
        // Polling a counter: there is no event to await for a background thread's upkeep.
        std::thread::sleep(Duration::from_millis(50));
        held = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    }
}
