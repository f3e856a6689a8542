//! Cost per frame of a protocol script: `Script::frame` (plus the frame's `Script::event` calls) over
//! 100 000 frames of a moving 8-keypoint pose, for (a) an empty `on_frame`, (b) a zone + speed check
//! written in Lua, (c) a catch-trial block design (a shuffled block of trials, a state machine, a pulse and
//! a mark on trigger events), (d) a script that makes garbage every frame (a table and formatted strings),
//! (e) the same with about 5 MB of live state, (f) the shipped example `examples/catch_trials.lua` with its
//! own settings; each with both collector modes, so the default
//! ([`DEFAULT_GC`]) is the one with the lower p99 on (d).
//!
//! Run: `cargo bench -p reflex-plugins --bench script_cost` (release profile). Prints, in µs per frame,
//! the wall-clock p50 and p99 and the thread-CPU-time p50, p99, p99.9 and maximum (CPU time leaves out
//! the time the thread was preempted, so its tails show the script's own pauses even on a busy machine),
//! medians of 5 interleaved runs; then the arena in use at the end.
#![allow(clippy::disallowed_methods)] // reason: a benchmark times itself; there is no loop clock here

#[path = "support/moving_poses.rs"]
mod moving_poses;

use std::hint::black_box;
use std::time::Instant;

use moving_poses::moving_poses;

use hdrhistogram::Histogram;
use reflex_plugins::script::{DEFAULT_GC, GcMode, Script, ScriptConfig};
use reflex_plugins::{ActionBuf, Pose, TriggerInput};

const NAMES: [&str; 8] = [
    "nose", "ear_l", "ear_r", "neck", "paw_l", "paw_r", "body", "tail",
];
const TRIGGERS: [&str; 1] = ["port"];
const FRAMES: usize = 100_000;
const WARM_UP: usize = 2_000;
const FRAME_NS: u64 = 8_333_333; // 120 fps
const HORIZON_NS: u64 = 20_000_000;
/// The port zone of the catch-trial case, as a built-in trigger would test it (nose within the circle).
const PORT: (f32, f32, f32) = (400.0, 300.0, 80.0);

const EMPTY: &str = "function on_frame(ctx, pose) end\n";

const ZONE_SPEED: &str = r#"
local cx, cy, r = 400, 300, 80
function on_frame(ctx, pose)
  local n, s = pose.nose, ctx.state
  if not n.ok or n.p < 0.5 then return end
  local dx, dy = n.x - cx, n.y - cy
  local inside = dx * dx + dy * dy <= r * r
  local speed = 0
  if s.px then
    local dt = ctx.t - s.pt
    if dt > 0 then speed = math.sqrt((n.x - s.px) ^ 2 + (n.y - s.py) ^ 2) / dt end
  end
  s.px, s.py, s.pt = n.x, n.y, ctx.t
  local on = inside and speed < 300
  if on ~= s.on then ctx:set(0, on); s.on = on end
end
"#;

const CATCH_TRIALS: &str = r#"
local BLOCK, CATCH = 10, 2
function on_start(ctx)
  local s = ctx.state
  s.phase, s.until_t, s.trial, s.pos, s.block = "iti", 1.0, 0, 1, {}
end
local function new_block(s, ctx)
  local b = {}
  for i = 1, BLOCK do b[i] = i <= CATCH end
  for i = BLOCK, 2, -1 do local j = ctx:random(i); b[i], b[j] = b[j], b[i] end
  s.block, s.pos = b, 1
end
function on_event(ctx, ev)
  local s = ctx.state
  if ev.trigger ~= "port" or not ev.active or s.phase ~= "ready" then return end
  if s.pos > #s.block then new_block(s, ctx) end
  local catch = s.block[s.pos]
  s.pos, s.trial = s.pos + 1, s.trial + 1
  if catch then ctx:mark(2) else ctx:mark(1); ctx:pulse(0, 10000) end
  s.phase, s.until_t = "iti", ctx.t + 0.5 + ctx:random() * 0.5
end
function on_frame(ctx, pose)
  local s = ctx.state
  if s.phase == "iti" and ctx.t >= s.until_t then s.phase = "ready" end
end
"#;

const GARBAGE: &str = r#"
function on_start(ctx) ctx.state.hist = {} end
function on_frame(ctx, pose)
  local s, n = ctx.state, pose.nose
  local parts = {}
  for i, name in ipairs(ctx.keypoints) do
    local kp = pose[name]
    parts[i] = string.format("%s=%.1f,%.1f", name, kp.x, kp.y)
  end
  s.hist[ctx.frame % 64 + 1] = { x = n.x, y = n.y, t = ctx.t, label = table.concat(parts, ";") }
end
"#;

/// As [`GARBAGE`], with about 5 MB of live state (a 20 000-entry history): what a full collection
/// must traverse.
const GARBAGE_BIG_STATE: &str = r#"
function on_start(ctx)
  local keep = {}
  for i = 1, 20000 do keep[i] = { x = i, y = -i, label = "sample " .. i } end
  ctx.state.keep, ctx.state.hist = keep, {}
end
function on_frame(ctx, pose)
  local s, n = ctx.state, pose.nose
  local parts = {}
  for i, name in ipairs(ctx.keypoints) do
    local kp = pose[name]
    parts[i] = string.format("%s=%.1f,%.1f", name, kp.x, kp.y)
  end
  s.hist[ctx.frame % 64 + 1] = { x = n.x, y = n.y, t = ctx.t, label = table.concat(parts, ";") }
  s.keep[ctx.frame % 20000 + 1] = { x = n.x, y = n.y, label = "sample " .. ctx.frame }
end
"#;

/// (label, script, `memory_mb`). Case (e) gets 32 MiB: in the default 8 its peak (twice the live heap,
/// Lua's default pause) would not fit, and Lua would fall back to emergency full collections.
const CASES: [(&str, &str, u32); 6] = [
    ("(a) empty on_frame", EMPTY, 8),
    ("(b) zone + speed in Lua", ZONE_SPEED, 8),
    ("(c) catch-trial blocks", CATCH_TRIALS, 8),
    ("(d) garbage every frame", GARBAGE, 8),
    ("(e) (d) + 5 MB live state", GARBAGE_BIG_STATE, 32),
    ("(f) examples/catch_trials", EXAMPLE_CATCH_TRIALS, 8),
];

/// The shipped example, run with its own `[script]` settings (params, seed); its trigger `zone_entry` is
/// the bench's port zone.
const EXAMPLE_CATCH_TRIALS: &str = include_str!("../../examples/catch_trials.lua");
const EXAMPLE_CONFIG: &str = include_str!("../../examples/catch_trials.toml");

/// The `[script]` settings of a case: the example's own for (f), the defaults otherwise.
fn case_config(source: &str, memory_mb: u32) -> (ScriptConfig, &'static [&'static str]) {
    if source == EXAMPLE_CATCH_TRIALS {
        #[derive(serde::Deserialize)]
        struct Rig {
            script: ScriptConfig,
        }
        // The example's triggers are not the bench's business: only its [script] table is read.
        let script_table = &EXAMPLE_CONFIG[EXAMPLE_CONFIG.find("[script]").expect("[script]")..];
        let rig: Rig = toml::from_str(script_table).expect("the example's [script] parses");
        (rig.script, &["zone_entry"])
    } else {
        let config = ScriptConfig {
            path: "bench.lua".into(),
            memory_mb,
            ..ScriptConfig::default()
        };
        (config, &TRIGGERS)
    }
}

fn poses() -> Vec<Pose> {
    moving_poses(FRAMES + WARM_UP, NAMES.len(), 0.5)
}

/// This thread's CPU time in ns (`CLOCK_THREAD_CPUTIME_ID`): unlike the wall clock, it does not count
/// the time the thread was preempted, so tails measured with it show the script's own cost (GC pauses)
/// even on a busy machine. One read costs a system call (a few hundred ns, included in the figures).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the thread CPU clock exists on Linux.
    #[allow(unsafe_code)] // reason: FFI to clock_gettime, the one way to read a thread's CPU clock
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn in_port(pose: &Pose) -> Option<bool> {
    let nose = pose.points()[0];
    if nose.is_missing() {
        return None;
    }
    let (dx, dy) = (nose.x - PORT.0, nose.y - PORT.1);
    Some(dx * dx + dy * dy <= PORT.2 * PORT.2)
}

struct Figures {
    /// Wall clock, µs.
    p50: f64,
    p99: f64,
    /// Thread CPU time, µs.
    cpu_p50: f64,
    cpu_p99: f64,
    cpu_p999: f64,
    cpu_max: f64,
    actions: usize,
    memory_kib: usize,
}

fn measure(source: &str, memory_mb: u32, gc: GcMode, poses: &[Pose]) -> Figures {
    let (config, triggers) = case_config(source, memory_mb);
    let mut script =
        Script::load(source, "bench.lua", &config, &NAMES, triggers).expect("bench scripts load");
    script.set_gc_mode(gc).expect("gc mode");
    let mut wall = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let mut cpu = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let mut actions = ActionBuf::new();
    let mut port = false;
    let mut total_actions = 0;
    for (k, pose) in poses.iter().enumerate() {
        let t = 1_000_000_000 + k as u64 * FRAME_NS;
        let input = TriggerInput {
            frame_id: k as u64,
            frame_time_ns: t,
            now_ns: t + 5_000_000,
            target_ns: t + HORIZON_NS,
            measured: black_box(pose),
            predicted: black_box(pose),
        };
        // The built-in trigger the script hears: the nose in the port (held while unknown).
        let change = in_port(pose).filter(|&inside| inside != port);
        actions.clear();
        let cpu_begin = thread_cpu_ns();
        let begin = Instant::now();
        if k == 0 {
            script.start(&input, &mut actions).expect("on_start");
        }
        if let Some(inside) = change {
            script
                .event(&input, 0, inside, &mut actions)
                .expect("on_event");
        }
        script.frame(&input, &mut actions).expect("on_frame");
        let ns = begin.elapsed().as_nanos() as u64;
        let cpu_ns = thread_cpu_ns() - cpu_begin;
        port = change.unwrap_or(port);
        black_box(&actions);
        if k >= WARM_UP {
            wall.record(ns.max(1)).unwrap();
            cpu.record(cpu_ns.max(1)).unwrap();
            total_actions += actions.len();
        }
    }
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Figures {
        p50: us(&wall, 0.5),
        p99: us(&wall, 0.99),
        cpu_p50: us(&cpu, 0.5),
        cpu_p99: us(&cpu, 0.99),
        cpu_p999: us(&cpu, 0.999),
        cpu_max: cpu.max() as f64 / 1000.0,
        actions: total_actions,
        memory_kib: script.memory_used() / 1024,
    }
}

/// Runs of each (case, mode), interleaved; the figures printed are medians over them, so one run
/// disturbed by another process does not decide.
const REPEATS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let poses = poses();
    println!(
        "Script::frame (with the frame's on_event calls), {} keypoints, {FRAMES} frames after {WARM_UP} warm-up, µs per frame;",
        NAMES.len()
    );
    println!(
        "wall clock and thread CPU time (the latter without preemptions, with its clock reads); median of {REPEATS} runs, max of all:"
    );
    println!(
        "{:<28} {:<13} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8}",
        "case",
        "gc",
        "wall p50",
        "wall p99",
        "cpu p50",
        "cpu p99",
        "cpu p99.9",
        "cpu max",
        "actions",
        "mem KiB"
    );
    let modes = [GcMode::Incremental, GcMode::Generational];
    let mut p99 = vec![[0.0; 2]; CASES.len()];
    for (c, &(label, source, memory_mb)) in CASES.iter().enumerate() {
        let mut runs: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..REPEATS {
            for (g, gc) in modes.into_iter().enumerate() {
                runs[g].push(measure(source, memory_mb, gc, &poses));
            }
        }
        for (g, gc) in modes.into_iter().enumerate() {
            let of = |f: fn(&Figures) -> f64| median(runs[g].iter().map(f).collect());
            p99[c][g] = of(|f| f.cpu_p99);
            let last = runs[g].last().expect("REPEATS > 0");
            println!(
                "{label:<28} {:<13} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>9.1} {:>8} {:>8}",
                format!("{gc:?}").to_lowercase(),
                of(|f| f.p50),
                of(|f| f.p99),
                of(|f| f.cpu_p50),
                p99[c][g],
                of(|f| f.cpu_p999),
                runs[g].iter().map(|f| f.cpu_max).fold(0.0, f64::max),
                last.actions,
                last.memory_kib
            );
        }
    }
    for (c, (label, _, _)) in CASES.iter().enumerate().skip(3).take(2) {
        println!(
            "cpu p99 of {label}: incremental {:.2} µs, generational {:.2} µs",
            p99[c][0], p99[c][1]
        );
    }
    println!("scripts start in {DEFAULT_GC:?} mode (DEFAULT_GC)");
}
