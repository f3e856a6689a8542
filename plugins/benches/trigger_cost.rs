//! Cost per frame of the built-in triggers: `TriggerSet::evaluate` for one trigger of each kind
//! (8-keypoint poses on a noisy path with dropouts and varied scores), and for all of them together.
//! Combinators are measured over two zone triggers; their own cost is the difference from those two
//! alone, printed beside.
//!
//! Run: `cargo bench -p reflex-plugins --bench trigger_cost` (release profile). Prints the median over
//! 9 repeats of 20 000 frames, in ns per evaluate.
#![allow(clippy::disallowed_methods)] // reason: a benchmark times itself; there is no loop clock here

#[path = "support/moving_poses.rs"]
mod moving_poses;

use std::hint::black_box;
use std::time::Instant;

use moving_poses::moving_poses;

use reflex_plugins::{ActionBuf, Pose, Trigger, TriggerConfig, TriggerInput, TriggerSet};

const NAMES: [&str; 8] = [
    "nose", "ear_l", "ear_r", "neck", "paw_l", "paw_r", "body", "tail",
];
const FRAMES: usize = 20_000;
const FRAME_NS: u64 = 8_333_333; // 120 fps
const HORIZON_NS: u64 = 20_000_000;

/// Two zones the nose and the tail cross, used as the combinators' children.
const CHILDREN: &str = r#"
[[trigger]]
name = "a"
keypoint = "nose"
zone = { shape = "circle", cx = 400, cy = 300, r = 80 }
[[trigger]]
name = "b"
keypoint = "tail"
zone = { shape = "rect", x0 = 150, y0 = 150, x1 = 350, y1 = 450 }
"#;

/// (label, config, whether the config includes [`CHILDREN`]).
const CASES: [(&str, &str, bool); 16] = [
    (
        "zone circle",
        r#"keypoint = "nose"
zone = { shape = "circle", cx = 400, cy = 300, r = 80 }
channel = 0"#,
        false,
    ),
    (
        "zone rect",
        r#"keypoint = "nose"
zone = { shape = "rect", x0 = 350, y0 = 200, x1 = 500, y1 = 400 }
channel = 0"#,
        false,
    ),
    (
        "zone polygon (8 vertices)",
        r#"keypoint = "nose"
zone = { shape = "polygon", points = [[300, 200], [400, 180], [480, 220], [500, 300], [470, 380], [400, 420], [320, 390], [290, 300]] }
channel = 0"#,
        false,
    ),
    (
        "zone enter + gates",
        r#"keypoint = "nose"
when = "enter"
zone = { shape = "circle", cx = 400, cy = 300, r = 80 }
hysteresis = 5.0
refractory_s = 0.2
max_rate = { count = 10, per_s = 60.0 }
actions = [{ kind = "pulse", channel = 1, width_us = 5000 }, { kind = "mark", code = 1 }]"#,
        false,
    ),
    (
        "zone circle + min duration",
        r#"keypoint = "nose"
zone = { shape = "circle", cx = 400, cy = 300, r = 80 }
min_duration_s = 0.05
channel = 0"#,
        false,
    ),
    (
        "speed (keypoint)",
        r#"kind = "speed"
keypoint = "nose"
above = 300.0
hysteresis = 50.0
channel = 0"#,
        false,
    ),
    (
        "speed (body centre)",
        r#"kind = "speed"
body_centre = true
px_per_cm = 10.0
above = 30.0
channel = 0"#,
        false,
    ),
    (
        "angle (3 keypoints)",
        r#"kind = "angle"
keypoints = ["nose", "neck", "tail"]
below = 150.0
channel = 0"#,
        false,
    ),
    (
        "angle (segment to axis)",
        r#"kind = "angle"
keypoints = ["tail", "nose"]
axis = "-y"
below = 45.0
channel = 0"#,
        false,
    ),
    (
        "distance",
        r#"kind = "distance"
keypoints = ["paw_l", "nose"]
below = 89.0
hysteresis = 1.0
channel = 0"#,
        false,
    ),
    (
        "likelihood (3 keypoints)",
        r#"kind = "likelihood"
keypoints = ["nose", "ear_l", "ear_r"]
above = 0.6
channel = 0"#,
        false,
    ),
    (
        "all",
        r#"kind = "all"
of = ["a", "b"]
channel = 0"#,
        true,
    ),
    (
        "any",
        r#"kind = "any"
of = ["a", "b"]
channel = 0"#,
        true,
    ),
    (
        "not",
        r#"kind = "not"
of = ["a"]
channel = 0"#,
        true,
    ),
    (
        "sequence",
        r#"kind = "sequence"
of = ["a", "b"]
window_s = 2.0
channel = 0"#,
        true,
    ),
    ("(the two children alone)", "", true),
];

fn inputs() -> Vec<Pose> {
    moving_poses(FRAMES, NAMES.len(), 0.0)
}

fn compile(text: &str) -> TriggerSet {
    #[derive(serde::Deserialize)]
    struct File {
        trigger: Vec<TriggerConfig>,
    }
    let configs = toml::from_str::<File>(text)
        .expect("bench configs parse")
        .trigger;
    TriggerSet::new(&configs, &NAMES).expect("bench configs are valid")
}

/// Median ns per evaluate over 9 runs of [`FRAMES`] frames.
fn cost(text: &str, poses: &[Pose]) -> (f64, usize) {
    let mut runs = Vec::new();
    let mut changes = 0;
    for _ in 0..9 {
        let mut set = compile(text);
        let mut actions = ActionBuf::new();
        changes = 0;
        let start = Instant::now();
        for (k, pose) in poses.iter().enumerate() {
            let t_ns = 1_000_000_000 + k as u64 * FRAME_NS;
            let input = TriggerInput {
                frame_id: k as u64,
                frame_time_ns: t_ns,
                now_ns: t_ns + 5_000_000,
                target_ns: t_ns + HORIZON_NS,
                measured: black_box(pose),
                predicted: black_box(pose),
            };
            actions.clear();
            set.evaluate(&input, &mut actions, &mut |_, _| changes += 1);
            black_box(&actions);
        }
        runs.push(start.elapsed().as_nanos() as f64 / poses.len() as f64);
    }
    runs.sort_by(f64::total_cmp);
    (runs[runs.len() / 2], changes)
}

fn main() {
    let poses = inputs();
    let _warm_up = cost(CHILDREN, &poses);
    let children_alone = cost(CHILDREN, &poses).0;
    println!(
        "cost per frame, TriggerSet::evaluate, {} keypoints, {FRAMES} frames (median of 9):",
        NAMES.len()
    );
    let mut every = String::new();
    for (n, (label, body, with_children)) in CASES.into_iter().enumerate() {
        let mut text = if with_children {
            CHILDREN.to_string()
        } else {
            String::new()
        };
        if !body.is_empty() {
            text.push_str(&format!("[[trigger]]\nname = \"t\"\n{body}\n"));
            every.push_str(&format!("[[trigger]]\nname = \"t{n}\"\n{body}\n"));
        }
        let (ns, changes) = cost(&text, &poses);
        let own = if with_children && !body.is_empty() {
            format!(
                "  (own {:.0} ns beside its 2 zone children)",
                ns - children_alone
            )
        } else {
            String::new()
        };
        println!("{label:<28} {ns:>7.0} ns/evaluate  {changes:>6} state changes{own}");
    }
    let all = format!("{CHILDREN}{every}");
    let (ns, changes) = cost(&all, &poses);
    println!(
        "{:<28} {ns:>7.0} ns/evaluate  {changes:>6} state changes",
        format!("every row above ({} triggers)", compile(&all).len())
    );
}
