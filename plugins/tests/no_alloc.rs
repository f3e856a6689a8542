//! Proves the per-frame calls (`observe`, `predict`, `evaluate`) never touch the heap once
//! constructed, with a counting global allocator. Its own test binary, because a global
//! allocator is process-wide.
#![allow(unsafe_code)] // reason: implementing `GlobalAlloc` is unsafe by definition; it only forwards to `System`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use reflex_plugins::{
    ActionBuf, Horizon, KalmanConfig, KalmanPredictor, Keypoint, LastMeasurement, OutputMode, Pose,
    Predictor, RobustConfig, RobustPredictor, Trigger, TriggerInput, Zone, ZoneTrigger,
    ZoneTriggerConfig,
};

/// Heap operations (alloc, realloc, alloc_zeroed) made while counting was on.
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the measuring thread counts, so the test harness's own threads cannot interfere.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

struct CountingAlloc;

impl CountingAlloc {
    fn note(&self) {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards unchanged to `System`, which upholds the contract; the
// bookkeeping touches only an atomic and a const-initialised thread-local (no allocation).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note();
        // SAFETY: `ptr` came from `System` via this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` via this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn per_frame_calls_do_not_allocate() {
    const NAMES: [&str; 3] = ["nose", "paw", "tail_base"];
    let kalman_cfg = KalmanConfig {
        lik_thresh: 0.3,
        ..KalmanConfig::default()
    };
    let horizon = Horizon {
        forward_ns: 30_000_000,
        adapt: true,
    };
    let mut predictors: [Box<dyn Predictor>; 3] = [
        Box::new(KalmanPredictor::new(&kalman_cfg).unwrap()),
        Box::new(LastMeasurement::new()),
        Box::new(RobustPredictor::new(&RobustConfig::default()).unwrap()),
    ];
    let trigger_cfg = |name: &str, keypoint: &str, mode| ZoneTriggerConfig {
        name: name.into(),
        keypoint: keypoint.into(),
        zone: Zone::Circle {
            cx: 300.0,
            cy: 200.0,
            r: 60.0,
        },
        use_measured: false,
        min_score: 0.5,
        channel: 1,
        mode,
    };
    let mut triggers: [Box<dyn Trigger>; 2] = [
        Box::new(
            ZoneTrigger::new(&trigger_cfg("level", "nose", OutputMode::Level), &NAMES).unwrap(),
        ),
        Box::new(
            ZoneTrigger::new(
                &trigger_cfg("pulse", "paw", OutputMode::Pulse { width_us: 2_000 }),
                &NAMES,
            )
            .unwrap(),
        ),
    ];
    let mut measured = Pose::new(NAMES.len());
    let mut predicted = Pose::new(NAMES.len());
    let mut actions = ActionBuf::new();
    let mut changes = 0usize;

    let mut run_frame = |k: u64, count: bool| {
        let frame_time_ns = 1_000_000_000 + k * 8_333_333;
        let now_ns = frame_time_ns + 12_000_000;
        // A circling nose that enters and leaves the zone, a paw that drops out and goes NaN,
        // a tail with low scores.
        let phase = k as f32 * 0.05;
        let points = measured.points_mut();
        points[0] = Keypoint::new(
            300.0 + 100.0 * phase.cos(),
            200.0 + 100.0 * phase.sin(),
            0.9,
        );
        points[1] = match k % 7 {
            0 => Keypoint::MISSING,
            1 => Keypoint::new(f32::NAN, 5.0, f32::NAN),
            _ => Keypoint::new(250.0 + (k % 40) as f32 * 3.0, 200.0, 0.8),
        };
        points[2] = Keypoint::new(10.0, 10.0, if k.is_multiple_of(2) { 0.1 } else { 0.7 });

        COUNTING.with(|c| c.set(count));
        for predictor in predictors.iter_mut() {
            predictor.observe(&measured, frame_time_ns);
            predictor.predict(horizon.target_ns(frame_time_ns, now_ns), &mut predicted);
        }
        actions.clear();
        let input = TriggerInput {
            frame_id: k,
            frame_time_ns,
            now_ns,
            measured: &measured,
            predicted: &predicted,
        };
        for trigger in triggers.iter_mut() {
            changes += usize::from(trigger.evaluate(&input, &mut actions).is_some());
            let _ = trigger.name();
            let _ = trigger.is_active();
        }
        COUNTING.with(|c| c.set(false));
    };

    for k in 0..10 {
        run_frame(k, false); // warm-up (none is needed, but the contract only promises this)
    }
    for k in 10..2_000 {
        run_frame(k, true);
    }
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "per-frame calls allocated"
    );
    assert!(
        changes > 10,
        "the scenario should exercise state changes, saw {changes}"
    );
}
