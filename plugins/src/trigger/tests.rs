//! Frame-exact tests of the built-in triggers on hand-made trajectories: each kind fires on exactly
//! the expected frames (hysteresis, minimum duration, refractory and rate edges included), the
//! combinators, unknown handling, actions and config errors.

use serde::Deserialize;

use super::*;
use crate::pose::Keypoint;

const NAMES: [&str; 4] = ["nose", "ear_left", "ear_right", "tail_base"];
const T0_NS: u64 = 1_000_000_000;
/// 100 frames/s.
const FRAME_NS: u64 = 10_000_000;

fn configs(text: &str) -> Vec<TriggerConfig> {
    #[derive(Deserialize)]
    struct File {
        trigger: Vec<TriggerConfig>,
    }
    toml::from_str::<File>(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .trigger
}

fn build(text: &str) -> TriggerSet {
    TriggerSet::new(&configs(text), &NAMES).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    TriggerSet::new(&configs(text), &NAMES)
        .unwrap_err()
        .to_string()
}

/// A pose with the given keypoints (index, x, y) at score 0.9; the others missing.
fn pose(points: &[(usize, f32, f32)]) -> Pose {
    let mut p = Pose::new(NAMES.len());
    for &(k, x, y) in points {
        p.points_mut()[k] = Keypoint::new(x, y, 0.9);
    }
    p
}

/// The nose at (`x`, `y`).
fn nose(x: f32, y: f32) -> Pose {
    pose(&[(0, x, y)])
}

/// What one frame did.
#[derive(Debug, Default)]
struct Frame {
    changes: Vec<(usize, bool)>,
    actions: Vec<Action>,
}

/// Evaluate frame `k` (time T0 + k frames) with measured = `measured`, predicted = `predicted`.
fn step2(set: &mut TriggerSet, k: usize, measured: &Pose, predicted: &Pose) -> Frame {
    let t = T0_NS + k as u64 * FRAME_NS;
    let input = TriggerInput {
        frame_id: k as u64,
        frame_time_ns: t,
        now_ns: t + 5_000_000,
        target_ns: t,
        measured,
        predicted,
    };
    let mut buf = ActionBuf::new();
    let mut frame = Frame::default();
    set.evaluate(&input, &mut buf, &mut |i, active| {
        frame.changes.push((i, active))
    });
    assert_eq!(buf.dropped(), 0);
    frame.actions = buf.as_slice().to_vec();
    frame
}

/// Run `poses` as frames 0.. (measured = predicted).
fn run(set: &mut TriggerSet, poses: &[Pose]) -> Vec<Frame> {
    poses
        .iter()
        .enumerate()
        .map(|(k, p)| step2(set, k, p, p))
        .collect()
}

/// Frames on which trigger `i` became active (`to = true`) or inactive.
fn edges(frames: &[Frame], i: usize, to: bool) -> Vec<usize> {
    frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.changes.contains(&(i, to)))
        .map(|(k, _)| k)
        .collect()
}

fn ons(frames: &[Frame], i: usize) -> Vec<usize> {
    edges(frames, i, true)
}

fn offs(frames: &[Frame], i: usize) -> Vec<usize> {
    edges(frames, i, false)
}

const LEGACY: &str = r#"
    [[trigger]]
    name = "nose_in_port"
    keypoint = "nose"
    zone = { shape = "circle", cx = 100, cy = 100, r = 10 }
    channel = 3
"#;

#[test]
fn legacy_zone_level_fires_on_the_entry_frame_and_drops_on_exit() {
    let mut set = build(LEGACY);
    // x = 80, 85, 90 (the boundary, inside), 100, then y = 111 (outside).
    let poses = [
        nose(80.0, 100.0),
        nose(85.0, 100.0),
        nose(90.0, 100.0),
        nose(100.0, 100.0),
        nose(100.0, 111.0),
    ];
    let frames = run(&mut set, &poses);
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![2], vec![4]));
    let high = |high| vec![Action::SetLevel { channel: 3, high }];
    assert_eq!(frames[2].actions, high(true));
    assert_eq!(frames[4].actions, high(false));
    assert!(frames[0].actions.is_empty() && frames[3].actions.is_empty());
    assert_eq!(
        (set.len(), set.name(0), set.name(9)),
        (1, "nose_in_port", "")
    );
    assert!(!set.is_active(0));
}

#[test]
fn legacy_pulse_mode_fires_once_per_entry() {
    let mut set = build(&format!(
        "{LEGACY}\nmode = {{ kind = \"pulse\", width_us = 5000 }}\n"
    ));
    let xs = [0.0, 100.0, 101.0, 102.0, 0.0, 0.0, 100.0, 100.0];
    let poses: Vec<Pose> = xs.iter().map(|&x| nose(x, 100.0)).collect();
    let frames = run(&mut set, &poses);
    let pulses: Vec<usize> = (0..frames.len())
        .filter(|&k| !frames[k].actions.is_empty())
        .collect();
    assert_eq!(pulses, [1, 6]);
    assert_eq!(
        frames[1].actions,
        [Action::Pulse {
            channel: 3,
            width_us: 5000
        }]
    );
    assert_eq!(offs(&frames, 0), [4], "exit changes state, emits nothing");
    let mut buf = ActionBuf::new();
    set.reset(&mut buf);
    assert!(buf.is_empty(), "pulse outputs need no rest action");
}

#[test]
fn unknown_holds_by_default_and_counts_as_false_when_asked() {
    // Frame 1..: low score, NaN score, NaN position, all missing, a pose too short for the keypoint.
    let mut unknown = vec![
        {
            let mut p = Pose::new(4);
            p.points_mut()[0] = Keypoint::new(100.0, 100.0, 0.49);
            p
        },
        {
            let mut p = Pose::new(4);
            p.points_mut()[0] = Keypoint::new(100.0, 100.0, f32::NAN);
            p
        },
        nose(f32::NAN, 100.0),
        Pose::new(4),
        Pose::new(0),
    ];
    let mut poses = vec![nose(100.0, 100.0)];
    poses.append(&mut unknown);
    poses.push(nose(0.0, 0.0));

    let mut hold = build(LEGACY);
    let frames = run(&mut hold, &poses);
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![0], vec![6]));
    for (k, frame) in frames.iter().enumerate().take(6).skip(1) {
        assert!(frame.actions.is_empty(), "frame {k}");
    }

    let mut as_false = build(&format!("{LEGACY}\nunknown = \"false\"\n"));
    let frames = run(&mut as_false, &poses);
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![0], vec![1]));
    // Each kind of unknown alone turns it off again.
    for (i, bad) in poses[1..6].iter().enumerate() {
        let mut set = build(&format!("{LEGACY}\nunknown = \"false\"\n"));
        let frames = run(&mut set, &[nose(100.0, 100.0), *bad]);
        assert_eq!(offs(&frames, 0), [1], "case {i}");
    }
}

#[test]
fn predicted_pose_decides_unless_use_measured() {
    let (inside, outside) = (nose(100.0, 100.0), nose(0.0, 0.0));
    let mut by_prediction = build(LEGACY);
    assert_eq!(
        step2(&mut by_prediction, 0, &outside, &inside).changes,
        [(0, true)]
    );
    let mut by_measurement = build(&format!("{LEGACY}\nuse_measured = true\n"));
    assert!(
        step2(&mut by_measurement, 0, &outside, &inside)
            .changes
            .is_empty()
    );
    assert_eq!(
        step2(&mut by_measurement, 1, &inside, &outside).changes,
        [(0, true)]
    );
}

#[test]
fn reset_drives_level_outputs_low_and_restarts() {
    let mut set = build(LEGACY);
    run(&mut set, &[nose(100.0, 100.0)]);
    assert!(set.is_active(0));
    let mut buf = ActionBuf::new();
    set.reset(&mut buf);
    assert_eq!(
        buf.as_slice(),
        [Action::SetLevel {
            channel: 3,
            high: false
        }]
    );
    assert!(!set.is_active(0) && set.value(0).is_none());
    assert_eq!(
        step2(&mut set, 1, &nose(100.0, 100.0), &nose(100.0, 100.0)).changes,
        [(0, true)],
        "after reset the next inside frame is an entry again"
    );
}

#[test]
fn zone_rect_and_polygon_inside_enter_exit() {
    let mut set = build(
        r#"
        [[trigger]]
        name = "rect"
        keypoint = "nose"
        zone = { shape = "rect", x0 = 10, y0 = 0, x1 = 30, y1 = 100 }
        [[trigger]]
        name = "tri_enter"
        kind = "zone"
        keypoint = "nose"
        when = "enter"
        zone = { shape = "polygon", points = [[20, 0], [60, 0], [20, 100]] }
        [[trigger]]
        name = "tri_exit"
        keypoint = "nose"
        when = "exit"
        zone = { shape = "polygon", points = [[20, 0], [60, 0], [20, 100]] }
        "#,
    );
    // The nose walks right along y = 50: the polygon spans x 20..40 there.
    let xs = [0.0, 10.0, 19.0, 21.0, 30.0, 31.0, 39.0, 41.0, 25.0];
    let poses: Vec<Pose> = xs.iter().map(|&x| nose(x, 50.0)).collect();
    let frames = run(&mut set, &poses);
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![1, 8], vec![5]));
    // Enter / exit are one-frame conditions: active on the frame, inactive on the next.
    assert_eq!((ons(&frames, 1), offs(&frames, 1)), (vec![3, 8], vec![4]));
    assert_eq!((ons(&frames, 2), offs(&frames, 2)), (vec![7], vec![8]));
}

#[test]
fn zone_hysteresis_keeps_inside_until_past_the_margin() {
    let mut set = build(&format!("{LEGACY}\nhysteresis = 3.0\n"));
    // Distance from the centre: 15, 11, 10 (enter), 5, 11, 13 (still in: <= r + 3), 13.5 (out), 11
    // (not back in: outside r), 10 (enter).
    let ds = [15.0, 11.0, 10.0, 5.0, 11.0, 13.0, 13.5, 11.0, 10.0];
    let poses: Vec<Pose> = ds.iter().map(|&d| nose(100.0 + d, 100.0)).collect();
    let frames = run(&mut set, &poses);
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![2, 8], vec![6]));
}

/// The nose still until `start`, then moving right at 1000 px/s (10 px per 10 ms frame) until `stop`,
/// then still again.
fn burst(frames: usize, start: usize, stop: usize) -> Vec<Pose> {
    (0..frames)
        .map(|k| {
            let moved = k.clamp(start, stop) - start;
            nose(100.0 + 10.0 * moved as f32, 200.0)
        })
        .collect()
}

#[test]
fn speed_fires_on_the_frame_the_smoothed_speed_crosses() {
    // Over a 50 ms window (5 frames), frame k of the burst (k >= 10) has speed 200 (k - 10) px/s until
    // the window is full of motion (1000 px/s); after the stop at 30 it falls by 200 per frame.
    let base = r#"
        [[trigger]]
        name = "fast"
        kind = "speed"
        keypoint = "nose"
        above = 500.0
        smoothing_s = 0.05
    "#;
    let poses = burst(40, 10, 30);
    let frames = run(&mut build(base), &poses);
    // 400 px/s at frame 12, 600 at 13; 600 at 32, 400 at 33.
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![13], vec![33]));

    let frames = run(&mut build(&format!("{base}\nhysteresis = 150.0\n")), &poses);
    // Stays on while >= 350: 400 at 33, 200 at 34.
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![13], vec![34]));

    // Calibrated: 10 px per cm, so 50 cm/s is 500 px/s.
    let cm = base.replace("above = 500.0", "above = 50.0\npx_per_cm = 10.0");
    let frames = run(&mut build(&cm), &poses);
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![13], vec![33]));
}

#[test]
fn speed_of_the_body_centre_and_of_a_keypoint_list() {
    let text = |points: &str| {
        format!(
            "[[trigger]]\nname = \"fast\"\nkind = \"speed\"\n{points}\nabove = 500.0\nsmoothing_s = 0.05\n"
        )
    };
    // Two keypoints moving together; ear_right drops out on frame 12 (one of two: still a centre).
    let poses: Vec<Pose> = burst(40, 10, 30)
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let x = p.points()[0].x;
            if k == 12 {
                pose(&[(0, x, 200.0)])
            } else {
                pose(&[(0, x, 200.0), (2, x, 220.0)])
            }
        })
        .collect();
    for points in [
        "body_centre = true",
        "keypoints = [\"nose\", \"ear_right\"]",
    ] {
        let frames = run(&mut build(&text(points)), &poses);
        assert_eq!(
            (ons(&frames, 0), offs(&frames, 0)),
            (vec![13], vec![33]),
            "{points}"
        );
    }
}

#[test]
fn speed_is_unknown_without_a_known_reference_and_holds() {
    let base = "[[trigger]]\nname = \"fast\"\nkind = \"speed\"\nkeypoint = \"nose\"\nabove = 500.0\nsmoothing_s = 0.05\n";
    let mut set = build(base);
    // Moving fast from frame 0; the nose is lost on frames 20..=22, then still.
    let poses: Vec<Pose> = (0..30)
        .map(|k| match k {
            20..=22 => Pose::new(4),
            _ => nose(10.0 * k.min(19) as f32, 0.0),
        })
        .collect();
    let frames = run(&mut set, &poses);
    // Frame 0 has no reference (unknown); frame 1 has 1000 px/s over one frame.
    assert_eq!(set.value(0), Some(false));
    assert_eq!(ons(&frames, 0), [1]);
    // Lost on 20..=22: held active. Frame 23: still since 19, which is 40 ms back: 0 px/s.
    assert_eq!(offs(&frames, 0), [23]);
}

#[test]
fn angle_at_three_keypoints_and_of_a_segment_to_an_axis() {
    // The angle at ear_left (100, 100) between the nose at (0, 100) and ear_right at 20 px on a ray
    // at `deg` degrees from the nose's direction.
    let three = |deg: f32| {
        let r = deg.to_radians();
        pose(&[
            (0, 0.0, 100.0),
            (1, 100.0, 100.0),
            (2, 100.0 - 20.0 * r.cos(), 100.0 + 20.0 * r.sin()),
        ])
    };
    let mut set = build(
        r#"
        [[trigger]]
        name = "bent"
        kind = "angle"
        keypoints = ["nose", "ear_left", "ear_right"]
        below = 100.0
        hysteresis = 10.0
        "#,
    );
    let degs = [170.0, 150.0, 101.0, 99.0, 60.0, 105.0, 111.0, 95.0];
    let poses: Vec<Pose> = degs.iter().map(|&d| three(d)).collect();
    let frames = run(&mut set, &poses);
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![3, 7], vec![6]));

    // Heading of tail_base → nose within 30° of image-up.
    let heading = |deg: f32| {
        let r = deg.to_radians();
        pose(&[
            (3, 50.0, 50.0),
            (0, 50.0 + 10.0 * r.cos(), 50.0 + 10.0 * r.sin()),
        ])
    };
    let mut set = build(
        r#"
        [[trigger]]
        name = "facing_up"
        kind = "angle"
        keypoints = ["tail_base", "nose"]
        axis = "-y"
        below = 30.0
        "#,
    );
    // Image-up is -90° (y grows downwards): 0° is 90° away, -179° 89°, -119° and -61° 29° (on),
    // -59° 31° (off), 200° (= -160°) 70°, 250° (= -110°) 20° (on).
    let degs = [0.0, -179.0, -119.0, -61.0, -59.0, 200.0, 250.0];
    let poses: Vec<Pose> = degs.iter().map(|&d| heading(d)).collect();
    let frames = run(&mut set, &poses);
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![2, 6], vec![4]));
    // A zero-length segment is unknown.
    let frames = run(&mut set, &[pose(&[(3, 1.0, 1.0), (0, 1.0, 1.0)])]);
    assert!(frames[0].changes.is_empty() && set.value(0).is_none());
}

#[test]
fn distance_between_keypoints_with_hysteresis_and_calibration() {
    let text = r#"
        [[trigger]]
        name = "paw_at_nose"
        kind = "distance"
        keypoints = ["nose", "ear_left"]
        below = 2.0
        hysteresis = 0.5
        px_per_cm = 10.0
    "#;
    let mut set = build(text);
    // Distances in px: 30, 21, 20 (2 cm: on), 24 (within 2.5 cm), 25.5 (off), 22, 19 (on).
    let ds = [30.0, 21.0, 20.0, 24.0, 25.5, 22.0, 19.0];
    let poses: Vec<Pose> = ds
        .iter()
        .map(|&d| pose(&[(0, 100.0, 100.0), (1, 100.0, 100.0 + d)]))
        .collect();
    let frames = run(&mut set, &poses);
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![2, 6], vec![4]));
}

#[test]
fn distance_between_animals_is_refused_until_poses_hold_several() {
    let e = err(
        "[[trigger]]\nname = \"close\"\nkind = \"distance\"\nkeypoints = [\"nose\", \"nose\"]\nanimals = [0, 1]\nbelow = 50.0\n",
    );
    assert_eq!(
        e,
        "trigger `close`: `animals` is not supported until multi-animal poses land (a pose holds one animal)"
    );
}

#[test]
fn likelihood_gate_with_hysteresis_counts_missing_as_zero() {
    let mut set = build(
        r#"
        [[trigger]]
        name = "confident"
        kind = "likelihood"
        keypoints = ["nose", "ear_left"]
        above = 0.9
        hysteresis = 0.1
        "#,
    );
    let scored = |s: f32| {
        let mut p = pose(&[(0, 5.0, 5.0)]);
        p.points_mut()[1] = Keypoint::new(6.0, 6.0, s);
        p
    };
    let poses = [
        scored(0.95),
        scored(0.92),
        scored(0.85),   // still >= 0.8
        scored(0.6),    // off
        scored(0.85),   // not back on: below 0.9
        scored(0.95),   // on
        nose(5.0, 5.0), // ear_left missing: 0, off (known, not unknown)
    ];
    let frames = run(&mut set, &poses);
    assert_eq!(
        (ons(&frames, 0), offs(&frames, 0)),
        (vec![0, 5], vec![3, 6])
    );
    assert_eq!(set.value(0), Some(false));
}

#[test]
fn minimum_duration_fires_on_frame_n_not_n_minus_1() {
    let text = format!("{LEGACY}\nmin_duration_s = 0.05\n");
    let inside = nose(100.0, 100.0);
    let outside = nose(0.0, 0.0);
    let lost = Pose::new(4);
    // Inside from frame 10: 50 ms later is frame 15.
    let mut poses = vec![outside; 10];
    poses.extend([inside; 10]);
    let frames = run(&mut build(&text), &poses);
    assert_eq!(ons(&frames, 0), [15]);
    // Leaving on frame 12 restarts the wait: inside again from 13, on at 18.
    let mut p2 = poses.clone();
    p2[12] = outside;
    assert_eq!(ons(&run(&mut build(&text), &p2), 0), [18]);
    // Unknown on frame 12 neither interrupts nor completes it: still on at 15.
    let mut p3 = poses.clone();
    p3[12] = lost;
    assert_eq!(ons(&run(&mut build(&text), &p3), 0), [15]);
    // Unknown on frame 15 itself: on at the next known frame.
    let mut p4 = poses.clone();
    p4[15] = lost;
    assert_eq!(ons(&run(&mut build(&text), &p4), 0), [16]);
}

#[test]
fn refractory_period_counts_from_the_previous_activation() {
    let text = format!("{LEGACY}\nrefractory_s = 0.1\n");
    let inside = nose(100.0, 100.0);
    let outside = nose(0.0, 0.0);
    // In on 0..=2, out on 3..=4, in from 5: blocked until 100 ms after frame 0, i.e. frame 10.
    let mut poses = vec![inside, inside, inside, outside, outside];
    poses.extend([inside; 8]);
    let frames = run(&mut build(&text), &poses);
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![0, 10], vec![3]));
    // Back in on frame 11 instead: fires at once (the period is over).
    let mut p2 = vec![inside, outside];
    p2.extend([outside; 9]);
    p2.push(inside);
    let frames = run(&mut build(&text), &p2);
    assert_eq!(ons(&frames, 0), [0, 11]);
}

#[test]
fn max_rate_limits_activations_in_any_window() {
    let text = format!("{LEGACY}\nmax_rate = {{ count = 2, per_s = 0.1 }}\n");
    // In on even frames, out on odd ones: an entry every 20 ms, at most 2 per 100 ms.
    let poses: Vec<Pose> = (0..30)
        .map(|k| {
            if k % 2 == 0 {
                nose(100.0, 100.0)
            } else {
                nose(0.0, 0.0)
            }
        })
        .collect();
    let frames = run(&mut build(&text), &poses);
    assert_eq!(ons(&frames, 0), [0, 2, 10, 12, 20, 22]);
}

/// Zone A (left circle) for the nose, zone B (right circle) for ear_left.
const TWO_ZONES: &str = r#"
    [[trigger]]
    name = "a"
    keypoint = "nose"
    zone = { shape = "circle", cx = 0, cy = 0, r = 10 }
    [[trigger]]
    name = "b"
    keypoint = "ear_left"
    zone = { shape = "circle", cx = 100, cy = 0, r = 10 }
"#;

/// Nose in A or not, ear_left in B or not; `None` = that keypoint missing.
fn ab(a: Option<bool>, b: Option<bool>) -> Pose {
    let mut points = Vec::new();
    if let Some(a) = a {
        points.push((0, if a { 0.0 } else { 50.0 }, 0.0));
    }
    if let Some(b) = b {
        points.push((1, if b { 100.0 } else { 50.0 }, 0.0));
    }
    pose(&points)
}

#[test]
fn all_any_not_follow_their_children_with_kleene_logic() {
    let mut set = build(&format!(
        r#"{TWO_ZONES}
        [[trigger]]
        name = "both"
        kind = "all"
        of = ["a", "b"]
        [[trigger]]
        name = "either"
        kind = "any"
        of = ["a", "b"]
        [[trigger]]
        name = "not_a"
        kind = "not"
        of = ["a"]
        "#
    ));
    let (t, f, u) = (Some(true), Some(false), None);
    // Each row: inputs, then (both, either, not_a) values after the frame.
    let rows = [
        (f, f, (f, f, t)),
        (t, f, (f, t, f)),
        (t, t, (t, t, f)),
        // a unknown (held active, as seen by parents: unknown).
        (u, t, (u, t, u)),
        (u, f, (f, u, u)),
        (f, u, (f, u, t)),
        (t, u, (u, t, f)),
        (u, u, (u, u, u)),
    ];
    for (k, (a, b, (both, either, not_a))) in rows.into_iter().enumerate() {
        step2(&mut set, k, &ab(a, b), &ab(a, b));
        assert_eq!(
            (set.value(2), set.value(3), set.value(4)),
            (both, either, not_a),
            "row {k}: a = {a:?}, b = {b:?}"
        );
    }
}

#[test]
fn combinators_fire_on_the_expected_frames_and_may_come_first() {
    // Parents before their children in the file: evaluation still goes children first.
    let mut set = build(&format!(
        r#"
        [[trigger]]
        name = "both"
        kind = "all"
        of = ["a", "b"]
        channel = 1
        [[trigger]]
        name = "not_a"
        kind = "not"
        of = ["a"]
        {TWO_ZONES}
        "#
    ));
    let (t, f) = (Some(true), Some(false));
    let seq = [(f, f), (t, f), (t, t), (t, t), (f, t), (t, t)];
    let poses: Vec<Pose> = seq.iter().map(|&(a, b)| ab(a, b)).collect();
    let frames = run(&mut set, &poses);
    assert_eq!((ons(&frames, 0), offs(&frames, 0)), (vec![2, 5], vec![4]));
    assert_eq!(
        (ons(&frames, 1), offs(&frames, 1)),
        (vec![0, 4], vec![1, 5])
    );
    // Children change before their parents within a frame.
    assert_eq!(frames[2].changes, [(3, true), (0, true)]);
}

#[test]
fn sequence_fires_when_steps_come_in_order_within_the_window() {
    let text = format!(
        r#"{TWO_ZONES}
        [[trigger]]
        name = "a_then_b"
        kind = "sequence"
        of = ["a", "b"]
        window_s = 0.2
        actions = [{{ kind = "mark", code = 7 }}]
        "#
    );
    let (t, f, u) = (Some(true), Some(false), None);
    let frames_of = |seq: &[(Option<bool>, Option<bool>)]| {
        let poses: Vec<Pose> = seq.iter().map(|&(a, b)| ab(a, b)).collect();
        run(&mut build(&text), &poses)
    };
    // A's onset at 0, B's at 20: exactly 200 ms, on the window's edge: fires, until B ends at 22.
    let mut seq = vec![(t, f), (f, f)];
    seq.extend([(f, f); 18]);
    seq.extend([(f, t), (f, t), (f, f)]);
    let frames = frames_of(&seq);
    assert_eq!((ons(&frames, 2), offs(&frames, 2)), (vec![20], vec![22]));
    assert_eq!(
        frames[20].actions,
        [Action::Mark {
            code: 7,
            trigger: 2
        }]
    );
    // B one frame later (210 ms): too late.
    let mut late = seq.clone();
    late.insert(1, (f, f));
    assert!(ons(&frames_of(&late), 2).is_empty());
    // B before A: nothing; B again after A: fires.
    let frames = frames_of(&[(f, t), (t, f), (f, f), (f, t)]);
    assert_eq!(ons(&frames, 2), [3]);
    // A long-held A counts from its onset; a fresh onset of A restarts the window.
    let mut held = vec![(t, f); 25];
    held.push((t, t));
    assert!(ons(&frames_of(&held), 2).is_empty());
    let mut fresh = held.clone();
    fresh[23] = (f, f);
    assert_eq!(ons(&frames_of(&fresh), 2), [25]);
    // Each completion uses its chain up: B again without a new A does not fire.
    let frames = frames_of(&[(t, f), (f, t), (f, f), (f, t), (t, f), (f, t)]);
    assert_eq!(ons(&frames, 2), [1, 5]);
    // Unknown steps neither complete nor break it; unknown B after completion holds it.
    let frames = frames_of(&[(t, f), (u, u), (f, t), (u, u), (f, t), (f, f)]);
    assert_eq!((ons(&frames, 2), offs(&frames, 2)), (vec![2], vec![5]));
}

#[test]
fn sequence_of_three_steps_needs_each_in_order() {
    let text = format!(
        r#"{TWO_ZONES}
        [[trigger]]
        name = "c"
        kind = "zone"
        keypoint = "ear_right"
        zone = {{ shape = "circle", cx = 200, cy = 0, r = 10 }}
        [[trigger]]
        name = "abc"
        kind = "sequence"
        of = ["a", "b", "c"]
        window_s = 1.0
        "#
    );
    // Frames: A, B, C (fires at 2); then A, C, B, C (fires at the second C, 6).
    let steps: [usize; 7] = [0, 1, 2, 0, 2, 1, 2];
    let poses: Vec<Pose> = steps
        .iter()
        .map(|&s| {
            let mut points = vec![(0, 50.0, 0.0), (1, 50.0, 0.0), (2, 50.0, 0.0)];
            points[s].1 = 100.0 * s as f32;
            pose(&points)
        })
        .collect();
    let frames = run(&mut build(&text), &poses);
    assert_eq!(ons(&frames, 3), [2, 6]);
}

#[test]
fn several_actions_per_trigger_on_their_edges() {
    let mut set = build(&format!(
        r#"{LEGACY}
        actions = [
            {{ kind = "pulse", channel = 1, width_us = 2000 }},
            {{ kind = "train", channel = 2, width_us = 1000, period_us = 5000, count = 10 }},
            {{ kind = "set", channel = 0, high = true, at = "off" }},
            {{ kind = "mark", code = 42, at = "off" }},
            {{ kind = "recording", marker = "start" }},
            {{ kind = "recording", marker = "stop", at = "off" }},
        ]
        "#
    ));
    let frames = run(&mut set, &[nose(100.0, 100.0), nose(0.0, 0.0)]);
    assert_eq!(
        frames[0].actions,
        [
            Action::SetLevel {
                channel: 3,
                high: true
            },
            Action::Pulse {
                channel: 1,
                width_us: 2000
            },
            Action::PulseTrain {
                channel: 2,
                period_us: 5000,
                width_us: 1000,
                count: 10
            },
            Action::Recording {
                trigger: 0,
                start: true
            },
        ]
    );
    assert_eq!(
        frames[1].actions,
        [
            Action::SetLevel {
                channel: 3,
                high: false
            },
            Action::SetLevel {
                channel: 0,
                high: true
            },
            Action::Mark {
                code: 42,
                trigger: 0
            },
            Action::Recording {
                trigger: 0,
                start: false
            },
        ]
    );
    let mut buf = ActionBuf::new();
    set.reset(&mut buf);
    let low = |channel| Action::SetLevel {
        channel,
        high: false,
    };
    assert_eq!(buf.as_slice(), [low(3), low(0)]);
    let cfg = &configs(&format!(
        "{LEGACY}\nactions = [{{ kind = \"pulse\", channel = 1, width_us = 5 }}, {{ kind = \"mark\", code = 1 }}]\n"
    ))[0];
    assert_eq!(cfg.channels().collect::<Vec<_>>(), [3, 1]);
}

#[test]
fn errors_name_the_trigger_and_the_field() {
    let zone = |extra: &str| {
        err(&format!(
            "[[trigger]]\nname = \"paw_in_zone\"\nkeypoint = \"nose\"\nzone = {{ shape = \"circle\", cx = 1, cy = 1, r = 3 }}\n{extra}\n"
        ))
    };
    assert_eq!(
        err(
            "[[trigger]]\nname = \"paw_in_zone\"\nkeypoint = \"paww\"\nzone = { shape = \"circle\", cx = 1, cy = 1, r = 3 }\n"
        ),
        "trigger `paw_in_zone`: unknown keypoint `paww` (known: nose, ear_left, ear_right, tail_base)"
    );
    assert_eq!(
        err(
            "[[trigger]]\nname = \"paw_in_zone\"\nkeypoint = \"nose\"\nzone = { shape = \"circle\", cx = 1, cy = 1, r = -3 }\n"
        ),
        "trigger `paw_in_zone`: zone radius must be > 0, got -3"
    );
    assert_eq!(
        err(
            "[[trigger]]\nname = \"paw_in_zone\"\nkeypoint = \"nose\"\nzone = { shape = \"rect\", x0 = 10, y0 = 0, x1 = 5, y1 = 8 }\n"
        ),
        "trigger `paw_in_zone`: zone rectangle must have x0 < x1 and y0 < y1, got x0 = 10, x1 = 5, y0 = 0, y1 = 8"
    );
    assert_eq!(
        err(
            "[[trigger]]\nname = \"paw_in_zone\"\nkeypoint = \"nose\"\nzone = { shape = \"polygon\", points = [[0, 0], [1, 1]] }\n"
        ),
        "trigger `paw_in_zone`: zone polygon needs at least 3 points, got 2"
    );
    let expect = [
        (
            "min_score = 1.5",
            "trigger `paw_in_zone`: min_score must be between 0 and 1, got 1.5",
        ),
        (
            "channel = 1\nmode = { kind = \"pulse\", width_us = 0 }",
            "trigger `paw_in_zone`: pulse width_us must be > 0, got 0",
        ),
        (
            "mode = { kind = \"level\" }",
            "trigger `paw_in_zone`: `mode` needs `channel`",
        ),
        (
            "above = 3.0",
            "trigger `paw_in_zone`: `above` does not apply to kind = \"zone\"",
        ),
        (
            "window_s = 3.0",
            "trigger `paw_in_zone`: `window_s` does not apply to kind = \"zone\"",
        ),
        (
            "hysteresis = -1.0",
            "trigger `paw_in_zone`: `hysteresis` must be a finite number >= 0, got -1",
        ),
        (
            "when = \"enter\"\nmin_duration_s = 0.1",
            "trigger `paw_in_zone`: `min_duration_s` cannot be used with when = \"enter\": that condition holds for one frame only",
        ),
        (
            "refractory_s = -1.0",
            "trigger `paw_in_zone`: `refractory_s` must be between 0 and 1000000 s, got -1",
        ),
        (
            "max_rate = { count = 0, per_s = 1.0 }",
            "trigger `paw_in_zone`: `max_rate.count` must be between 1 and 64, got 0",
        ),
        (
            "max_rate = { count = 2, per_s = 0.0 }",
            "trigger `paw_in_zone`: `max_rate.per_s` must be between 0 (excluded) and 1000000 s, got 0",
        ),
        (
            "actions = [{ kind = \"pulse\", channel = 0, width_us = 0 }]",
            "trigger `paw_in_zone`: `actions[0].width_us` must be > 0, got 0",
        ),
        (
            "actions = [{ kind = \"mark\", code = 1 }, { kind = \"train\", channel = 0, width_us = 10, period_us = 10, count = 3 }]",
            "trigger `paw_in_zone`: `actions[1].period_us` must be greater than width_us (10) when count > 1, got 10",
        ),
        (
            "actions = [{ kind = \"train\", channel = 0, width_us = 10, period_us = 0, count = 0 }]",
            "trigger `paw_in_zone`: `actions[0].count` must be > 0, got 0",
        ),
    ];
    for (extra, want) in expect {
        assert_eq!(zone(extra), want, "{extra}");
    }
    let other = [
        (
            "name = \"s\"\nkind = \"speed\"\nkeypoint = \"nose\"",
            "trigger `s`: `above` or `below` is required for kind = \"speed\"",
        ),
        (
            "name = \"s\"\nkind = \"speed\"\nabove = 1.0",
            "trigger `s`: `keypoint` (one), `keypoints` (their centre) or `body_centre = true` is required for kind = \"speed\", and only one of them",
        ),
        (
            "name = \"s\"\nkind = \"speed\"\nkeypoint = \"nose\"\nabove = 5.0\nbelow = 1.0",
            "trigger `s`: `above` must be less than `below` (1), got 5",
        ),
        (
            "name = \"s\"\nkind = \"speed\"\nkeypoint = \"nose\"\nabove = 5.0\npx_per_cm = 0.0",
            "trigger `s`: `px_per_cm` must be a finite number > 0, got 0",
        ),
        (
            "name = \"s\"\nkind = \"speed\"\nkeypoint = \"nose\"\nabove = 5.0\nsmoothing_s = 0.0",
            "trigger `s`: `smoothing_s` must be between 0 (excluded) and 1000000 s, got 0",
        ),
        (
            "name = \"s\"\nkind = \"speed\"\nkeypoints = [\"nose\", \"snout\"]\nabove = 5.0",
            "trigger `s`: unknown keypoint `snout` (known: nose, ear_left, ear_right, tail_base)",
        ),
        (
            "name = \"g\"\nkind = \"angle\"\nkeypoints = [\"nose\", \"ear_left\"]\nbelow = 5.0",
            "trigger `g`: `axis` (or `axis_deg`) is required for the angle of a two-keypoint segment",
        ),
        (
            "name = \"g\"\nkind = \"angle\"\nkeypoints = [\"nose\"]\nbelow = 5.0",
            "trigger `g`: `keypoints` must name 3 keypoints (angle at the middle one) or 2 (a segment, with `axis`), got 1",
        ),
        (
            "name = \"g\"\nkind = \"angle\"\nkeypoints = [\"nose\", \"ear_left\", \"tail_base\"]\naxis = \"x\"\nbelow = 5.0",
            "trigger `g`: `axis` does not apply to a three-keypoint angle (the angle is at the middle keypoint)",
        ),
        (
            "name = \"d\"\nkind = \"distance\"\nkeypoints = [\"nose\"]\nbelow = 5.0",
            "trigger `d`: `keypoints` must name 2 keypoints, got 1",
        ),
        (
            "name = \"d\"\nkind = \"distance\"\nkeypoint = \"nose\"\nbelow = 5.0",
            "trigger `d`: `keypoint` does not apply to kind = \"distance\"",
        ),
        (
            "name = \"l\"\nkind = \"likelihood\"\nkeypoint = \"nose\"\nabove = 0.5\nmin_score = 0.2",
            "trigger `l`: `min_score` does not apply to kind = \"likelihood\"",
        ),
        (
            "name = \"n\"\nkind = \"not\"\nof = [\"n2\", \"n3\"]",
            "trigger `n`: `of` must name exactly 1 trigger(s) for kind = \"not\", got 2",
        ),
        (
            "name = \"q\"\nkind = \"sequence\"\nof = [\"x\", \"x\"]",
            "trigger `q`: `window_s` is required for kind = \"sequence\"",
        ),
        (
            "name = \"q\"\nkind = \"sequence\"\nof = [\"x\"]\nwindow_s = 1.0",
            "trigger `q`: `of` must name 2 to 8 trigger(s) for kind = \"sequence\", got 1",
        ),
        (
            "name = \"q\"\nkind = \"all\"\nof = [\"x\", \"zz\"]",
            "trigger `q`: `of` names unknown trigger `zz` (known: x, q)",
        ),
        (
            "name = \"q\"\nkind = \"all\"\nof = [\"x\", \"q\"]",
            "trigger `q`: `of` makes a cycle: the trigger depends on itself",
        ),
        (
            "name = \"q\"\nkind = \"all\"\nof = [\"x\"]\nuse_measured = true",
            "trigger `q`: `use_measured` does not apply to kind = \"all\"",
        ),
        (
            "name = \"\"\nkind = \"all\"\nof = [\"x\"]",
            "trigger ``: `name` must not be empty",
        ),
    ];
    let x = "[[trigger]]\nname = \"x\"\nkeypoint = \"nose\"\nzone = { shape = \"circle\", cx = 1, cy = 1, r = 3 }\n";
    for (body, want) in other {
        assert_eq!(err(&format!("{x}[[trigger]]\n{body}\n")), want, "{body}");
    }
    // Which trigger: the error carries its index.
    let e = TriggerSet::new(
        &configs(&format!(
            "{x}[[trigger]]\nname = \"x\"\nkind = \"not\"\nof = [\"x\"]\n"
        )),
        &NAMES,
    )
    .unwrap_err();
    assert_eq!(
        (e.index, e.to_string()),
        (
            1,
            "trigger `x`: `name` is used by another trigger".to_string()
        )
    );
    // A longer cycle, reported at the trigger that closes it.
    let e = TriggerSet::new(
        &configs("[[trigger]]\nname = \"p\"\nkind = \"not\"\nof = [\"q\"]\n[[trigger]]\nname = \"q\"\nkind = \"any\"\nof = [\"p\"]\n"),
        &NAMES,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "trigger `p`: `of` makes a cycle: the trigger depends on itself"
    );
}

#[test]
fn validate_checks_everything_but_keypoint_names() {
    let ok = configs(
        "[[trigger]]\nname = \"t\"\nkeypoint = \"anything\"\nzone = { shape = \"circle\", cx = 1, cy = 1, r = 3 }\n",
    );
    assert_eq!(TriggerSet::validate(&ok), Ok(()));
    assert!(TriggerSet::new(&ok, &NAMES).is_err());
    let bad = configs("[[trigger]]\nname = \"t\"\nkind = \"speed\"\nbody_centre = true\n");
    assert_eq!(
        TriggerSet::validate(&bad).unwrap_err().to_string(),
        "trigger `t`: `above` or `below` is required for kind = \"speed\""
    );
}

#[test]
fn unknown_fields_and_kinds_are_refused_by_the_parser() {
    let parse = |text: &str| {
        toml::from_str::<TriggerConfig>(text)
            .unwrap_err()
            .to_string()
    };
    let cases = [
        ("name = \"t\"\nnmae = \"x\"", "unknown field `nmae`"),
        (
            "name = \"t\"\nkind = \"speeed\"",
            "unknown variant `speeed`",
        ),
        (
            "name = \"t\"\nzone = { shape = \"circle\", cx = 1, cy = 1, r = 1, x0 = 3 }",
            "unknown field `x0`",
        ),
        (
            "name = \"t\"\nzone = { shape = \"hexagon\" }",
            "unknown variant `hexagon`",
        ),
        (
            "name = \"t\"\nactions = [{ kind = \"pulse\", channel = 1, width_us = 1, hz = 3 }]",
            "unknown field `hz`",
        ),
        (
            "name = \"t\"\nunknown = \"maybe\"",
            "unknown variant `maybe`",
        ),
    ];
    for (text, want) in cases {
        let e = parse(text);
        assert!(e.contains(want), "{text}: {e}");
    }
}

/// The TOML example of the README's "Triggers" section (one trigger of each kind), so the
/// documentation is checked by the tests.
fn readme_examples() -> &'static str {
    let readme = include_str!("../../../README.md");
    let section = &readme[readme
        .find("\n## Triggers\n")
        .expect("README has a Triggers section")..];
    let block = &section[section.find("```toml\n").expect("with a TOML example") + 8..];
    &block[..block.find("```").expect("closed")]
}

#[test]
fn every_kind_example_builds_and_runs() {
    let cfgs = configs(readme_examples());
    let kinds: std::collections::BTreeSet<&str> = cfgs.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds.len(), 9, "one example of each kind: {kinds:?}");
    let mut set = TriggerSet::new(&cfgs, &NAMES).unwrap();
    let poses: Vec<Pose> = (0..200)
        .map(|k| {
            let x = 250.0 + 100.0 * (k as f32 * 0.05).cos();
            pose(&[
                (0, x, 270.0),
                (1, x - 10.0, 260.0),
                (2, x - 10.0, 280.0),
                (3, x - 40.0, 270.0),
            ])
        })
        .collect();
    let frames = run(&mut set, &poses);
    assert!(frames.iter().any(|f| !f.changes.is_empty()));
    // The effective config (serialised and parsed again) is the same.
    #[derive(serde::Serialize)]
    struct File<'a> {
        trigger: &'a [TriggerConfig],
    }
    let again = configs(&toml::to_string(&File { trigger: &cfgs }).unwrap());
    assert_eq!(again, cfgs);
}

#[test]
fn action_buf_is_bounded_and_counts_drops() {
    let mut buf = ActionBuf::new();
    for code in 0..ActionBuf::CAPACITY as u16 {
        assert!(buf.push(Action::Mark { code, trigger: 0 }));
    }
    assert!(!buf.push(Action::Mark {
        code: 99,
        trigger: 0
    }));
    assert_eq!((buf.len(), buf.dropped()), (ActionBuf::CAPACITY, 1));
    assert_eq!(
        buf.iter().last(),
        Some(&Action::Mark {
            code: ActionBuf::CAPACITY as u16 - 1,
            trigger: 0
        })
    );
    buf.clear();
    assert!(buf.is_empty() && buf.dropped() == 0);
}

#[test]
fn delayed_actions_fire_on_the_first_frame_at_or_after_their_time() {
    // Entry on frame 2 (t = 20 ms): the pulse is due at 20 + 45 = 65 ms, i.e. frame 7 (70 ms), not 6;
    // the train at `at = "off"` (exit on frame 4, 40 ms) + 30 ms = 70 ms, frame 7 too, after the pulse.
    let mut set = build(&format!(
        r#"{LEGACY}
        actions = [
            {{ kind = "pulse", channel = 1, width_us = 2000, delay_s = 0.045 }},
            {{ kind = "train", channel = 2, width_us = 1000, period_us = 5000, count = 3, at = "off", delay_s = 0.03 }},
            {{ kind = "pulse", channel = 0, width_us = 100 }},
        ]
        "#
    ));
    let inside = nose(100.0, 100.0);
    let outside = nose(0.0, 0.0);
    let poses = [
        outside, outside, inside, inside, outside, outside, outside, outside, outside,
    ];
    let frames = run(&mut set, &poses);
    let pulse = Action::Pulse {
        channel: 1,
        width_us: 2000,
    };
    let train = Action::PulseTrain {
        channel: 2,
        period_us: 5000,
        width_us: 1000,
        count: 3,
    };
    let with = |a: Action| -> Vec<usize> {
        frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.actions.contains(&a))
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(with(pulse), [7]);
    assert_eq!(with(train), [7]);
    assert_eq!(frames[7].actions, [pulse, train], "earliest due first");
    // The undelayed action goes at once, with the level.
    assert_eq!(
        frames[2].actions,
        [
            Action::SetLevel {
                channel: 3,
                high: true
            },
            Action::Pulse {
                channel: 0,
                width_us: 100
            }
        ]
    );
}

#[test]
fn delayed_actions_are_dropped_at_reset_and_bounded() {
    let text = format!(
        "{LEGACY}\nactions = [{{ kind = \"pulse\", channel = 1, width_us = 10, delay_s = 1.0 }}]\n"
    );
    let mut set = build(&text);
    let inside = nose(100.0, 100.0);
    let outside = nose(0.0, 0.0);
    run(&mut set, &[inside]);
    let mut buf = ActionBuf::new();
    set.reset(&mut buf);
    // Long after the pulse would have been due: nothing fires after a reset.
    let later = step2(&mut set, 500, &outside, &outside);
    assert!(later.actions.is_empty(), "{:?}", later.actions);

    // One more entry than the queue holds, within the delay: the extra one is counted as dropped.
    let mut set = build(&text);
    let mut dropped = 0;
    for k in 0..=2 * super::set::MAX_DELAYED {
        let p = if k % 2 == 0 { inside } else { outside };
        let t = T0_NS + k as u64 * FRAME_NS / 100;
        let input = TriggerInput {
            frame_id: k as u64,
            frame_time_ns: t,
            now_ns: t,
            target_ns: t,
            measured: &p,
            predicted: &p,
        };
        let mut buf = ActionBuf::new();
        set.evaluate(&input, &mut buf, &mut |_, _| {});
        dropped += buf.dropped();
    }
    assert_eq!(dropped, 1);
    assert!(
        err(&format!(
            "{LEGACY}\nactions = [{{ kind = \"train\", channel = 1, width_us = 10, period_us = 20, count = 2, delay_s = -1.0 }}]\n"
        ))
        .contains("actions[0].delay_s")
    );
}
