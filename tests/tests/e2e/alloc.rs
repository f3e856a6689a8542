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

fn snapshot() -> [u64; 5] {
    [
        &ACT_FRAMES,
        &ACT_ALLOCS,
        &INF_FRAMES,
        &INF_ALLOCS,
        &INF_BYTES,
    ]
    .map(|c| c.load(Ordering::Relaxed))
}

fn report(backend: &str, before: [u64; 5], after: [u64; 5]) -> (u64, u64) {
    let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let inf = d[2].max(1);
    eprintln!(
        "inference ({backend}): {:.1} allocations, {:.0} bytes per frame over {inf} frames; actuation: {} allocations over {} frames",
        d[3] as f64 / inf as f64,
        d[4] as f64 / inf as f64,
        d[1],
        d[0],
    );
    (d[0], d[1])
}

#[test]
fn actuation_allocates_nothing_per_frame_after_warmup() {
    let (_, report_default) = crate::default_session::default_session();
    // The shared default session is the only one feeding the probes until it has finished.
    let after_default = snapshot();
    let (frames, allocs) = report(&report_default.summary.backend, [0; 5], after_default);
    assert!(
        frames + WARMUP_FRAMES >= report_default.summary.frames.processed && frames > 50,
        "{frames} frames counted"
    );
    assert_eq!(
        allocs, 0,
        "allocations on the actuation thread over {frames} frames"
    );

    // The same on the other backend, so what each runtime allocates is on record.
    let mut config = reflex_daemon::config::Config::embedded();
    config.model.backend = reflex_daemon::inference::BackendChoice::Tract;
    let tmp = tempfile::tempdir().unwrap();
    let tract =
        // A quarter of real time (30 frames/s), so the slower runtime processes most frames on a busy machine.
        crate::default_session::run_at(Some(tmp.path().join("s")), Some(60), config, 0.25).unwrap();
    let (frames, allocs) = report(&tract.summary.backend, after_default, snapshot());
    assert!(frames > 0);
    assert_eq!(
        allocs, 0,
        "allocations on the actuation thread (tract session) over {frames} frames"
    );
}

#[test]
fn a_protocol_script_allocates_nothing_on_the_actuation_thread() {
    // Garbage every frame (a table, a formatted string), the seeded RNG, outputs and marks: all of it in the
    // script's own arena, none from the process allocator.
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("busy.lua");
    std::fs::write(
        &script,
        r#"
function on_start(ctx) ctx.state.hist = {} end
function on_frame(ctx, pose)
  local n, s = pose.nose, ctx.state
  s.hist[ctx.frame % 32 + 1] = { x = n.x, y = n.y, t = ctx.t }
  s.label = string.format("%d:%.1f", ctx.frame, n.ok and n.x or -1)
  if ctx.frame % 25 == 0 then
    ctx:pulse(0, 1000)
    ctx:mark(ctx:random(3))
  end
end
"#,
    )
    .unwrap();
    install_probes();
    let mut config = reflex_daemon::config::Config::embedded();
    config.script = Some(reflex_plugins::script::ScriptConfig {
        path: script.display().to_string(),
        ..Default::default()
    });
    let before = snapshot();
    let report =
        crate::default_session::run_default(Some(tmp.path().join("s")), Some(240), config).unwrap();
    let (frames, allocs) = report_counts(before, snapshot());
    assert!(
        report.summary.events > 0 && frames > 0,
        "the script ran ({} events, {frames} frames counted)",
        report.summary.events
    );
    assert_eq!(
        allocs, 0,
        "allocations on the actuation thread with a script over {frames} frames (this and any concurrent session)"
    );
}

#[test]
fn a_second_camera_allocates_nothing_on_the_actuation_thread() {
    // Camera 1's poses pass the actuation thread too (its histograms, its records to the writer).
    install_probes();
    let tmp = tempfile::tempdir().unwrap();
    let before = snapshot();
    let report = crate::default_session::run_at(
        Some(tmp.path().join("s")),
        Some(240),
        crate::cameras::two_camera_config(),
        0.5,
    )
    .unwrap();
    let (frames, allocs) = report_counts(before, snapshot());
    let side = report.summary.cameras[1].frames.processed;
    assert!(
        side > 0 && frames > side,
        "both cameras' poses were counted ({frames} frames, {side} of camera 1)"
    );
    assert_eq!(
        allocs, 0,
        "allocations on the actuation thread with two cameras over {frames} frames (this and any concurrent session)"
    );
}

/// (actuation frames, actuation allocations) between two snapshots.
fn report_counts(before: [u64; 5], after: [u64; 5]) -> (u64, u64) {
    (after[0] - before[0], after[1] - before[1])
}
