//! Protocols on recorded poses: `reflex replay` of a session with its own config reproduces the live events
//! exactly, and each example protocol in `examples/` fires when (and only when) its definition says, checked
//! against the recorded poses.
//!
//! One live session is recorded for all of them: the embedded default rig with the examples' triggers and a
//! few more that read the predicted pose (zone, speed with a rate limit, sequence, likelihood; marks and
//! recording markers), 1200 frames (10 s of the synthetic camera).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use reflex_daemon::config::Config;
use reflex_daemon::pipeline::Report;
use reflex_daemon::record::EventRecord;
use reflex_daemon::replay::{self, Recording, Replayed};
use reflex_daemon::session::files;
use reflex_firmware_bridge::OutputCommand;

/// The example protocols, by file name.
const EXAMPLES: [(&str, &str); 4] = [
    (
        "zone_optogenetics.toml",
        include_str!("../../../examples/zone_optogenetics.toml"),
    ),
    (
        "speed_closed_loop.toml",
        include_str!("../../../examples/speed_closed_loop.toml"),
    ),
    (
        "head_angle_feedback.toml",
        include_str!("../../../examples/head_angle_feedback.toml"),
    ),
    (
        "delayed_feedback.toml",
        include_str!("../../../examples/delayed_feedback.toml"),
    ),
];

/// More triggers for the live session, on the predicted pose, with actions that use no channel.
const EXTRA: &str = r#"
[[trigger]]
name = "nose_in_zone_predicted"
keypoint = "nose"
zone = { shape = "circle", cx = 250.0, cy = 270.0, r = 45.0 }
hysteresis = 3.0
actions = [
    { kind = "recording", marker = "start" },
    { kind = "recording", marker = "stop", at = "off" },
]

[[trigger]]
name = "fast_predicted"
kind = "speed"
body_centre = true
above = 200.0
hysteresis = 30.0
max_rate = { count = 3, per_s = 2.0 }
actions = [{ kind = "mark", code = 7 }]

[[trigger]]
name = "zone_then_fast"
kind = "sequence"
of = ["nose_in_zone_predicted", "fast_predicted"]
window_s = 1.0
actions = [{ kind = "mark", code = 8, at = "off" }]

[[trigger]]
name = "tracked"
kind = "likelihood"
keypoints = ["nose", "tail_base"]
above = 0.9
hysteresis = 0.1
"#;

/// Frames of the shared protocol session.
const FRAMES: u64 = 1200;

/// The live session all tests here replay, recorded once.
pub(crate) fn session() -> &'static (tempfile::TempDir, Report) {
    static SESSION: OnceLock<(tempfile::TempDir, Report)> = OnceLock::new();
    SESSION.get_or_init(|| {
        let mut config = Config::embedded();
        config.triggers.clear();
        for (name, text) in EXAMPLES {
            let example = Config::parse(text, name).unwrap_or_else(|e| panic!("{e}"));
            config.triggers.extend(example.triggers);
        }
        config
            .triggers
            .extend(Config::parse(EXTRA, "extra").unwrap().triggers);
        let tmp = tempfile::tempdir().expect("temp dir");
        let report = crate::default_session::run_default(
            Some(tmp.path().join("session")),
            Some(FRAMES),
            config,
        )
        .expect("the protocol session runs");
        assert_eq!(
            report.summary.records_lost, 0,
            "a live session that lost records cannot be compared"
        );
        (tmp, report)
    })
}

/// Replay `config_text` (named `file`) on the shared session.
fn replay_on_session(config_text: &str, file: &str) -> Replayed {
    let (_, report) = session();
    let config = Config::parse(config_text, file).unwrap_or_else(|e| panic!("{e}"));
    let mut recording = Recording::session(&report.dir).expect("the session opens for replay");
    replay::replay(&mut recording, &config, config_text, file).expect("the replay runs")
}

/// One processed frame of the session, read back from `poses.csv`.
#[derive(Debug, Clone)]
struct Row {
    frame: u64,
    t_ns: u64,
    /// Measured (x, y, score) per keypoint, in model order; NaN when empty.
    measured: Vec<(f64, f64, f64)>,
    /// Predicted (x, y) per keypoint.
    predicted: Vec<(f64, f64)>,
}

const NOSE: usize = 0;
const TAIL: usize = 3;

fn rows(dir: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join(files::POSES)).unwrap();
    let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
    let mut out: Vec<Row> = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let frame: u64 = f[0].parse().unwrap();
        if out.last().is_none_or(|r| r.frame != frame) {
            out.push(Row {
                frame,
                t_ns: f[1].parse().unwrap(),
                measured: Vec::new(),
                predicted: Vec::new(),
            });
        }
        let r = out.last_mut().unwrap();
        r.measured.push((num(f[4]), num(f[5]), num(f[6])));
        r.predicted.push((num(f[7]), num(f[8])));
    }
    out
}

impl Row {
    /// The measured keypoint `k` when it scores at least the triggers' default `min_score` (0.5).
    fn known(&self, k: usize) -> Option<(f64, f64)> {
        let (x, y, s) = self.measured[k];
        (x.is_finite() && y.is_finite() && s >= 0.5).then_some((x, y))
    }
}

/// Frames of the commands on `channel` that `pick` accepts, in order (frame-caused commands only).
fn command_frames(
    events: &[EventRecord],
    channel: u8,
    pick: impl Fn(&OutputCommand) -> bool,
) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            EventRecord::Command {
                frame: Some(f),
                command,
                shutdown: false,
                ..
            } if command_channel(command) == Some(channel) && pick(command) => Some(*f),
            _ => None,
        })
        .collect()
}

fn command_channel(c: &OutputCommand) -> Option<u8> {
    match *c {
        OutputCommand::SetLevel { channel, .. }
        | OutputCommand::Pulse { channel, .. }
        | OutputCommand::PulseTrain { channel, .. } => Some(channel),
        OutputCommand::AllOff => None,
    }
}

/// Whether `channel`'s level output is high on each row (after the frame's commands).
fn level_per_row(rows: &[Row], events: &[EventRecord], channel: u8) -> Vec<bool> {
    let ups: BTreeSet<u64> = command_frames(events, channel, |c| {
        matches!(c, OutputCommand::SetLevel { high: true, .. })
    })
    .into_iter()
    .collect();
    let downs: BTreeSet<u64> = command_frames(events, channel, |c| {
        matches!(c, OutputCommand::SetLevel { high: false, .. })
    })
    .into_iter()
    .collect();
    let mut high = false;
    rows.iter()
        .map(|r| {
            if ups.contains(&r.frame) {
                high = true;
            }
            if downs.contains(&r.frame) {
                high = false;
            }
            high
        })
        .collect()
}

/// The decisions of an `events.jsonl` text as JSON objects: trigger changes (with their `t_ns`, the recorded
/// prediction stamp), commands caused by a frame, marks and recording markers; write times, sequence numbers
/// and acks removed.
fn decisions(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| match e["type"].as_str().unwrap() {
            "trigger" | "mark" | "recording" => true,
            "command" => e["frame"].is_u64() && e["shutdown"] == false,
            _ => false,
        })
        .map(|mut e| {
            let o = e.as_object_mut().unwrap();
            if o["type"] != "trigger" {
                o.remove("t_ns");
            }
            o.remove("seq");
            e
        })
        .collect()
}

#[test]
fn replay_with_its_own_config_reproduces_the_live_events_exactly() {
    let (_, report) = session();
    let dir = &report.dir;
    let (config, text) = replay::load_config(&dir.join(files::CONFIG)).unwrap();
    let mut recording = Recording::session(dir).unwrap();
    let replayed = replay::replay(&mut recording, &config, &text, "config.toml").unwrap();

    let live = decisions(&std::fs::read_to_string(dir.join(files::EVENTS)).unwrap());
    let mine = decisions(&replay::events_jsonl(
        &replayed.events,
        &replayed.trigger_names,
    ));
    if let Some(k) = (0..live.len().min(mine.len())).find(|&k| live[k] != mine[k]) {
        panic!(
            "decision {k} differs:\n live   {}\n replay {}",
            live[k], mine[k]
        );
    }
    assert_eq!(live.len(), mine.len(), "as many decisions");

    // Every kind of decision took part, from most triggers.
    let kinds: BTreeSet<&str> = live.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["command", "mark", "recording", "trigger"])
    );
    let changed: BTreeSet<&str> = live.iter().filter_map(|e| e["trigger"].as_str()).collect();
    assert!(changed.len() >= 6, "triggers that changed: {changed:?}");
    let s = &replayed.summary;
    assert_eq!(s.frames, report.summary.frames.processed);
    let p = s.predictions.expect("a session has recorded predictions");
    assert_eq!(
        (p.frames, p.frames_differing),
        (s.frames, 0),
        "the replayed predictions are the recorded ones, bit for bit"
    );
    assert_eq!(s.dropped_actions, 0);
    eprintln!(
        "replay: {} decisions on {} frames reproduced; {:.0} frames/s in the decision step (debug build)",
        live.len(),
        s.frames,
        s.speed.decide_frames_per_s
    );
}

#[test]
fn zone_optogenetics_trains_on_entries_never_within_the_refractory_period() {
    let (_, report) = session();
    let replayed = replay_on_session(EXAMPLES[0].1, EXAMPLES[0].0);
    let rows = rows(&report.dir);
    let trains = command_frames(&replayed.events, 1, |c| {
        matches!(
            c,
            OutputCommand::PulseTrain {
                count: 20,
                period_us: 50_000,
                width_us: 10_000,
                ..
            }
        )
    });
    // The definition, on the recorded predicted nose: an entry into the rectangle (the first known frame
    // inside after a known frame outside) fires unless within 3 s of the previous train.
    let (x0, y0, x1, y1) = (100.0, 100.0, 300.0, 300.0);
    let mut want = Vec::new();
    let (mut was_inside, mut last_ns) = (false, None::<u64>);
    let mut entries = 0;
    for r in &rows {
        let score = r.measured[NOSE].2;
        let (x, y) = r.predicted[NOSE];
        // Predictions carry the frame's measured score (Kalman); below 0.5 the nose is unknown and holds.
        if !(x.is_finite() && score >= 0.5) {
            continue;
        }
        let inside = (x0..=x1).contains(&x) && (y0..=y1).contains(&y);
        if inside && !was_inside {
            entries += 1;
            if last_ns.is_none_or(|l| r.t_ns - l >= 3_000_000_000) {
                want.push(r.frame);
                last_ns = Some(r.t_ns);
            }
        }
        was_inside = inside;
    }
    assert_eq!(
        trains, want,
        "trains on entries outside the refractory period"
    );
    assert!(trains.len() >= 2, "{} trains", trains.len());
    let t_of = |f: u64| rows.iter().find(|r| r.frame == f).unwrap().t_ns;
    for pair in trains.windows(2) {
        assert!(t_of(pair[1]) - t_of(pair[0]) >= 3_000_000_000, "{pair:?}");
    }
    let marks: Vec<u64> = replayed
        .events
        .iter()
        .filter_map(|e| match e {
            EventRecord::Mark { frame, code: 1, .. } => Some(*frame),
            _ => None,
        })
        .collect();
    assert_eq!(marks, trains, "a mark with every train");
    eprintln!(
        "zone_optogenetics: {entries} entries, {} trains",
        trains.len()
    );
}

/// The speed trigger's quantity, recomputed in f64 from the measured nose: displacement from the oldest
/// known sample within the last `window_ns` (the previous frame when that is older), per second; `None` when
/// unknown.
fn speeds(rows: &[Row], k: usize, window_ns: u64) -> Vec<Option<f64>> {
    (0..rows.len())
        .map(|i| {
            let (x, y) = rows[i].known(k)?;
            let t = rows[i].t_ns;
            let mut reference = None;
            for back in 1..=i.min(63) {
                let s = &rows[i - back];
                if t - s.t_ns > window_ns {
                    if back == 1 {
                        reference = s.known(k).map(|p| (p, s.t_ns));
                    }
                    break;
                }
                if let Some(p) = s.known(k) {
                    reference = Some((p, s.t_ns));
                }
            }
            let ((rx, ry), rt) = reference?;
            Some((x - rx).hypot(y - ry) / ((t - rt) as f64 * 1e-9))
        })
        .collect()
}

#[test]
fn speed_closed_loop_is_on_only_after_the_speed_held_for_the_minimum_duration() {
    let (_, report) = session();
    let replayed = replay_on_session(EXAMPLES[1].1, EXAMPLES[1].0);
    let rows = rows(&report.dir);
    let high = level_per_row(&rows, &replayed.events, 2);
    let speed = speeds(&rows, NOSE, 100_000_000);
    let (threshold, min_ns) = (250.0, 200_000_000u64);
    // f32 in the trigger, f64 here: a margin of 0.01 %.
    let fast = |i: usize| speed[i].is_some_and(|v| v >= threshold * (1.0 - 1e-4));
    let clearly_fast = |i: usize| speed[i].is_some_and(|v| v >= threshold * (1.0 + 1e-4));
    let mut activations = 0;
    for i in 0..rows.len() {
        if high[i] {
            assert!(
                fast(i),
                "frame {}: high at {:?} px/s",
                rows[i].frame,
                speed[i]
            );
        }
        if high[i] && (i == 0 || !high[i - 1]) {
            activations += 1;
            // Fast on every frame of the last 0.2 s.
            let t = rows[i].t_ns;
            for j in (0..=i).rev().take_while(|&j| t - rows[j].t_ns <= min_ns) {
                assert!(
                    fast(j),
                    "frame {} turned on though frame {} was at {:?} px/s",
                    rows[i].frame,
                    rows[j].frame,
                    speed[j]
                );
            }
            // ...and the run of fast frames began at least 0.2 s earlier.
            let start = (0..=i).rev().take_while(|&j| fast(j)).last().unwrap();
            assert!(
                t - rows[start].t_ns >= min_ns,
                "frame {}: fast only since frame {}",
                rows[i].frame,
                rows[start].frame
            );
        }
        // Clearly fast for longer than 0.2 s (and a frame): it must be on.
        let run_start = (0..=i).rev().take_while(|&j| clearly_fast(j)).last();
        if let Some(s) = run_start
            && rows[i].t_ns - rows[s].t_ns >= min_ns + 10_000_000
        {
            assert!(
                high[i],
                "frame {}: fast since frame {} but off",
                rows[i].frame, rows[s].frame
            );
        }
    }
    assert!(activations >= 2, "{activations} activations");
    eprintln!("speed_closed_loop: {activations} activations");
}

#[test]
fn head_angle_feedback_follows_the_heading_with_hysteresis() {
    let (_, report) = session();
    let replayed = replay_on_session(EXAMPLES[2].1, EXAMPLES[2].0);
    let rows = rows(&report.dir);
    let high = level_per_row(&rows, &replayed.events, 3);
    // Degrees between the tail_base → nose direction and +x (0..180).
    let angle = |r: &Row| -> Option<f64> {
        let (nx, ny) = r.known(NOSE)?;
        let (tx, ty) = r.known(TAIL)?;
        Some((ny - ty).atan2(nx - tx).to_degrees().abs())
    };
    let mut activations = 0;
    for (i, r) in rows.iter().enumerate() {
        let a = angle(r);
        if high[i] {
            assert!(
                a.is_some_and(|a| a <= 35.0 + 1e-3),
                "frame {}: on at {a:?}°",
                r.frame
            );
            if i == 0 || !high[i - 1] {
                activations += 1;
                // An unknown frame turns it off but keeps the threshold's hysteresis state, so right after
                // one it may come back on within the hysteresis band.
                let after_unknown = i > 0 && angle(&rows[i - 1]).is_none();
                let limit = if after_unknown { 35.0 } else { 30.0 };
                assert!(
                    a.is_some_and(|a| a <= limit + 1e-3),
                    "frame {}: turned on at {a:?}°",
                    r.frame
                );
            }
        } else {
            assert!(
                a.is_none_or(|a| a > 30.0 - 1e-3),
                "frame {}: off at {a:?}°",
                r.frame
            );
            if i > 0 && high[i - 1] {
                assert!(
                    a.is_none_or(|a| a > 35.0 - 1e-3),
                    "frame {}: turned off at {a:?}° (within the hysteresis)",
                    r.frame
                );
            }
        }
    }
    assert!(activations >= 1, "{activations} activations");
    eprintln!("head_angle_feedback: {activations} activations");
}

#[test]
fn delayed_feedback_pulses_on_the_first_frame_at_least_the_delay_after_each_entry() {
    let (_, report) = session();
    let replayed = replay_on_session(EXAMPLES[3].1, EXAMPLES[3].0);
    let rows = rows(&report.dir);
    // Entries of the measured nose into the circle (unknown frames hold), recomputed.
    let mut entries = Vec::new();
    let mut was_inside = false;
    for r in &rows {
        let Some((x, y)) = r.known(NOSE) else {
            continue;
        };
        let inside = (x - 250.0).hypot(y - 270.0) <= 60.0;
        if inside && !was_inside {
            entries.push(r);
        }
        was_inside = inside;
    }
    let marks: Vec<u64> = replayed
        .events
        .iter()
        .filter_map(|e| match e {
            EventRecord::Mark { frame, code: 2, .. } => Some(*frame),
            _ => None,
        })
        .collect();
    assert_eq!(
        marks,
        entries.iter().map(|r| r.frame).collect::<Vec<_>>(),
        "a mark on each entry"
    );
    let want: Vec<u64> = entries
        .iter()
        .filter_map(|e| {
            rows.iter()
                .find(|r| r.t_ns >= e.t_ns + 250_000_000)
                .map(|r| r.frame)
        })
        .collect();
    let pulses = command_frames(&replayed.events, 0, |c| {
        matches!(c, OutputCommand::Pulse { width_us: 5000, .. })
    });
    assert_eq!(pulses, want, "one pulse per entry, 250 ms later");
    assert!(!pulses.is_empty());
    for (p, e) in pulses.iter().zip(&entries) {
        assert!(p > &e.frame);
    }
    eprintln!("delayed_feedback: {} entries → pulses", pulses.len());
}
