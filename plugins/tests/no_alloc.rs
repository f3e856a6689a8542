//! Proves the per-frame calls (`observe`, `predict`, `evaluate`) never touch the heap once
//! constructed, with a counting global allocator. Its own test binary, because a global
//! allocator is process-wide.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_in;

use reflex_plugins::{
    ActionBuf, Horizon, KalmanConfig, KalmanPredictor, Keypoint, LastMeasurement, Pose, Predictor,
    RobustConfig, RobustPredictor, Trigger, TriggerConfig, TriggerInput, TriggerSet,
};

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
    // Every built-in kind, every zone shape and `when`, every gate and every action.
    #[derive(serde::Deserialize)]
    struct File {
        trigger: Vec<TriggerConfig>,
    }
    let configs = toml::from_str::<File>(EVERY_KIND).unwrap().trigger;
    let mut triggers = TriggerSet::new(&configs, &NAMES).unwrap();
    let mut changes_per_trigger = vec![0usize; triggers.len()];
    let mut measured = Pose::new(NAMES.len());
    let mut predicted = Pose::new(NAMES.len());
    let mut actions = ActionBuf::new();
    let mut changes = 0usize;
    let mut counted = 0u64;

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

        let ((), allocations) = allocations_in(|| {
            for predictor in predictors.iter_mut() {
                predictor.observe(&measured, frame_time_ns);
                predictor.predict(horizon.target_ns(frame_time_ns, now_ns), &mut predicted);
            }
            actions.clear();
            let input = TriggerInput {
                frame_id: k,
                frame_time_ns,
                now_ns,
                target_ns: horizon.target_ns(frame_time_ns, now_ns),
                measured: &measured,
                predicted: &predicted,
            };
            triggers.evaluate(&input, &mut actions, &mut |i, _| {
                changes += 1;
                changes_per_trigger[i] += 1;
            });
            for i in 0..triggers.len() {
                let _ = triggers.name(i);
                let _ = triggers.is_active(i);
                let _ = triggers.value(i);
            }
            if k % 500 == 499 {
                actions.clear();
                triggers.reset(&mut actions);
            }
        });
        if count {
            counted += allocations;
        }
    };

    for k in 0..10 {
        run_frame(k, false); // warm-up (none is needed, but the contract only promises this)
    }
    for k in 10..2_000 {
        run_frame(k, true);
    }
    assert_eq!(counted, 0, "per-frame calls allocated");
    assert!(
        changes > 10,
        "the scenario should exercise state changes, saw {changes}"
    );
    eprintln!("state changes per trigger: {changes_per_trigger:?}");
    for (i, n) in changes_per_trigger.iter().enumerate() {
        assert!(
            *n >= 2,
            "trigger `{}` should change state in the scenario, changed {n} times",
            triggers.name(i)
        );
    }
}

/// One trigger of every kind, over the scenario's keypoints (a circling nose, a paw that drops
/// out, a tail with alternating low scores).
const EVERY_KIND: &str = r#"
[[trigger]]
name = "circle"
keypoint = "nose"
zone = { shape = "circle", cx = 400, cy = 200, r = 60 }
hysteresis = 5.0
channel = 1
[[trigger]]
name = "rect_enter"
keypoint = "nose"
when = "enter"
zone = { shape = "rect", x0 = 350, y0 = 100, x1 = 450, y1 = 300 }
channel = 2
mode = { kind = "pulse", width_us = 2000 }
[[trigger]]
name = "polygon_exit"
keypoint = "nose"
when = "exit"
zone = { shape = "polygon", points = [[150, 120], [250, 200], [150, 280], [170, 200]] }
actions = [{ kind = "mark", code = 3 }, { kind = "pulse", channel = 3, width_us = 500, delay_s = 0.02 }]
[[trigger]]
name = "speed"
kind = "speed"
keypoint = "paw"
above = 30.0
hysteresis = 5.0
px_per_cm = 10.0
refractory_s = 0.05
actions = [{ kind = "train", channel = 0, width_us = 100, period_us = 1000, count = 5 }]
[[trigger]]
name = "body_speed"
kind = "speed"
body_centre = true
below = 100.0
smoothing_s = 0.05
use_measured = true
[[trigger]]
name = "angle3"
kind = "angle"
keypoints = ["nose", "paw", "tail_base"]
above = 90.0
min_score = 0.05
[[trigger]]
name = "heading"
kind = "angle"
keypoints = ["tail_base", "nose"]
axis = "x"
below = 35.0
min_score = 0.05
min_duration_s = 0.02
[[trigger]]
name = "distance"
kind = "distance"
keypoints = ["nose", "paw"]
below = 120.0
hysteresis = 10.0
[[trigger]]
name = "likelihood"
kind = "likelihood"
keypoints = ["tail_base"]
above = 0.5
max_rate = { count = 3, per_s = 0.5 }
[[trigger]]
name = "all"
kind = "all"
of = ["circle", "distance"]
actions = [{ kind = "set", channel = 3, high = true }, { kind = "set", channel = 3, high = false, at = "off" }]
[[trigger]]
name = "any"
kind = "any"
of = ["rect_enter", "polygon_exit", "heading"]
actions = [{ kind = "recording", marker = "start" }, { kind = "recording", marker = "stop", at = "off" }]
[[trigger]]
name = "not"
kind = "not"
of = ["circle"]
unknown = "false"
actions = [{ kind = "level", channel = 0 }, { kind = "pulse", channel = 1, width_us = 10, at = "off" }]
[[trigger]]
name = "sequence"
kind = "sequence"
of = ["polygon_exit", "rect_enter"]
window_s = 2.0
actions = [{ kind = "mark", code = 9 }]
"#;
