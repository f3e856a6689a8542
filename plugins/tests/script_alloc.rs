//! Proves a protocol script's per-frame calls (`Script::frame`, `Script::event`) never touch the process
//! heap once loaded and warmed up, even when the script makes tables and strings every frame: Lua allocates
//! only from the script's own arena. Its own test binary, because a global allocator is process-wide.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_in;

use reflex_plugins::script::{GcMode, Script, ScriptConfig};
use reflex_plugins::{Action, ActionBuf, Keypoint, Pose, TriggerInput};

const KEYPOINTS: [&str; 4] = ["nose", "paw_l", "paw_r", "tail"];
const TRIGGERS: [&str; 2] = ["zone", "rearing"];

/// Reads keypoints, makes a table and a formatted string every frame (garbage), keeps a bounded history,
/// draws random numbers, pulses, marks, sets levels, and answers events.
const BUSY: &str = r#"
function on_start(ctx)
  ctx.state.hist = {}
  ctx.state.trials = 0
end

function on_frame(ctx, pose)
  local s, n = ctx.state, pose.nose
  local sample = { x = n.x, y = n.y, ok = n.ok, t = ctx.t, m = ctx.measured.tail.p }
  s.hist[ctx.frame % 64 + 1] = sample
  s.label = string.format("frame %d at %.2f: %s", ctx.frame, ctx.t, n.ok and "seen" or "lost")
  local words = {}
  for i = 1, 4 do words[i] = ctx.keypoints[i] .. "=" .. tostring(pose[ctx.keypoints[i]].ok) end
  s.joined = table.concat(words, ",")
  if ctx:random() < 0.2 then
    s.trials = s.trials + 1
    ctx:pulse(1, 5000)
    ctx:mark(ctx:random(1, 9))
  end
  if ctx.frame % 50 == 0 then ctx:set(2, ctx.frame % 100 == 0) end
  if ctx.frame % 97 == 0 then ctx:train(3, 20000, 5000, 3) end
end

function on_event(ctx, ev)
  ctx.state.last_event = ev.trigger .. (ev.active and ":on" or ":off")
  if ev.active then ctx:mark(100 + ev.index) end
end
"#;

fn pose(k: u64) -> Pose {
    let mut pose = Pose::new(KEYPOINTS.len());
    for (j, p) in pose.points_mut().iter_mut().enumerate() {
        let phase = k as f32 * 0.05 + j as f32;
        // Every 13th frame the nose is lost, so the tables see missing keypoints too.
        *p = if j == 0 && k.is_multiple_of(13) {
            Keypoint::MISSING
        } else {
            Keypoint::new(300.0 + 100.0 * phase.cos(), 200.0 + 80.0 * phase.sin(), 0.9)
        };
    }
    pose
}

fn input(k: u64, pose: &Pose) -> TriggerInput<'_> {
    let t = 1_000_000_000 + k * 8_333_333;
    TriggerInput {
        frame_id: k,
        frame_time_ns: t,
        now_ns: t + 2_000_000,
        target_ns: t + 20_000_000,
        measured: pose,
        predicted: pose,
    }
}

/// Runs frames `range` (with an event every 10th frame), checking each call succeeds; returns the
/// actions seen.
fn run(script: &mut Script, poses: &[Pose], range: std::ops::Range<u64>) -> usize {
    let mut actions = ActionBuf::new();
    let mut seen = 0;
    for k in range {
        let pose = &poses[k as usize];
        actions.clear();
        if k.is_multiple_of(10) {
            let event = script.event(
                &input(k, pose),
                (k / 10 % 2) as usize,
                k % 20 == 0,
                &mut actions,
            );
            assert!(event.is_ok(), "frame {k}: event failed");
        }
        let frame = script.frame(&input(k, pose), &mut actions);
        assert!(frame.is_ok(), "frame {k}: failed");
        seen += actions.len();
    }
    seen
}

#[test]
fn script_frames_and_events_do_not_allocate() {
    let poses: Vec<Pose> = (0..1011).map(pose).collect();
    let (_boxed, counted) = allocations_in(|| std::hint::black_box(Box::new(1u64)));
    assert_eq!(counted, 1, "the counter sees an allocation");
    for gc in [GcMode::Incremental, GcMode::Generational] {
        let config = ScriptConfig {
            path: "busy.lua".into(),
            memory_mb: 2,
            ..ScriptConfig::default()
        };
        let mut script = Script::load(BUSY, "busy.lua", &config, &KEYPOINTS, &TRIGGERS).unwrap();
        script.set_gc_mode(gc).unwrap();
        let mut actions = ActionBuf::new();
        script.start(&input(0, &poses[0]), &mut actions).unwrap();
        run(&mut script, &poses, 0..10);

        let (seen, allocations) = allocations_in(|| run(&mut script, &poses, 10..1010));
        assert_eq!(allocations, 0, "{gc:?}: heap allocations in 1000 frames");
        assert!(seen > 100, "{gc:?}: the script acted ({seen} actions)");
        assert!(script.memory_used() < script.memory_limit());
    }
}

#[test]
fn the_first_failure_does_not_allocate_either() {
    let poses: Vec<Pose> = (0..20).map(pose).collect();
    let source = "function on_frame(ctx, pose)\n  ctx:set(4, true)\n  if ctx.frame == 15 then while true do end end\nend\n";
    let config = ScriptConfig::default();
    let mut script = Script::load(source, "spin.lua", &config, &KEYPOINTS, &TRIGGERS).unwrap();
    run(&mut script, &poses, 0..15);

    let mut actions = ActionBuf::new();
    let (result, allocations) = allocations_in(|| {
        script
            .frame(&input(15, &poses[15]), &mut actions)
            .map_err(|e| (e.line, e.call))
    });
    assert_eq!(allocations, 0, "heap allocations while failing");
    assert_eq!(result, Err((Some(3), "on_frame")));
    assert_eq!(script.channels_high(), 1 << 4);
    assert_eq!(
        actions.as_slice().first(),
        Some(&Action::SetLevel {
            channel: 4,
            high: true
        })
    );
}
