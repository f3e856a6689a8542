//! No allocation per frame on the actuation thread, measured inside a real session; what inference allocates
//! is measured and printed.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use reflex_daemon::pipeline::{PROBES, Probes};

/// Frames each thread processes before counting starts (lazy thread-locals, first-touch buffers).
const WARMUP_FRAMES: u64 = 20;

static ACT_FRAMES: AtomicU64 = AtomicU64::new(0);
static ACT_ALLOCS: AtomicU64 = AtomicU64::new(0);
static INF_FRAMES: AtomicU64 = AtomicU64::new(0);
static INF_ALLOCS: AtomicU64 = AtomicU64::new(0);
static INF_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

fn warmed_up() -> bool {
    SEEN.with(|s| {
        s.set(s.get() + 1);
        s.get() > WARMUP_FRAMES
    })
}

fn actuation_probe(begin: bool) {
    if begin {
        crate::count_begin();
    } else {
        let (n, _) = crate::count_end();
        if warmed_up() {
            ACT_FRAMES.fetch_add(1, Ordering::Relaxed);
            ACT_ALLOCS.fetch_add(n, Ordering::Relaxed);
        }
    }
}

fn inference_probe(begin: bool) {
    if begin {
        crate::count_begin();
    } else {
        let (n, bytes) = crate::count_end();
        if warmed_up() {
            INF_FRAMES.fetch_add(1, Ordering::Relaxed);
            INF_ALLOCS.fetch_add(n, Ordering::Relaxed);
            INF_BYTES.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// Install the counting probes (once per process).
pub fn install_probes() {
    let _ = PROBES.set(Probes {
        inference: inference_probe,
        actuation: actuation_probe,
    });
}

#[test]
fn actuation_allocates_nothing_per_frame_after_warmup() {
    let (_, report) = crate::default_session::default_session();
    let frames = ACT_FRAMES.load(Ordering::Relaxed);
    assert!(
        frames + WARMUP_FRAMES >= report.summary.frames.processed && frames > 50,
        "{frames} frames counted"
    );
    assert_eq!(
        ACT_ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations on the actuation thread over {frames} frames"
    );
    let inf = INF_FRAMES.load(Ordering::Relaxed).max(1);
    eprintln!(
        "inference ({}): {:.1} allocations, {:.0} bytes per frame over {inf} frames; actuation: 0 over {frames} frames",
        report.summary.backend,
        INF_ALLOCS.load(Ordering::Relaxed) as f64 / inf as f64,
        INF_BYTES.load(Ordering::Relaxed) as f64 / inf as f64,
    );
}
