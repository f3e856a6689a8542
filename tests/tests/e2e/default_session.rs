//! The embedded default, end to end: one real session (synthetic camera → bundled model → Kalman → zone
//! trigger → simulated device) on an accelerated clock, then its files are checked against each other and
//! against the synthetic camera's ground truth.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use reflex_daemon::config::Config;
use reflex_daemon::pipeline::Report;
use reflex_daemon::session::{Summary, files};
use reflex_plugins::trigger::Zone;

/// Frames the shared default session captures.
pub const FRAMES: u64 = 480;

/// The shared default session, run once for all the tests that read it.
pub fn default_session() -> &'static (tempfile::TempDir, Report) {
    static SESSION: OnceLock<(tempfile::TempDir, Report)> = OnceLock::new();
    SESSION.get_or_init(|| {
        crate::alloc::install_probes();
        let tmp = tempfile::tempdir().expect("temp dir");
        let out = tmp.path().join("session");
        let report = run_default(Some(out), Some(FRAMES), Config::embedded())
            .expect("the default session runs");
        (tmp, report)
    })
}

/// Run `config` for `frames` frames into `out`, at twice real time.
pub fn run_default(
    out: Option<PathBuf>,
    frames: Option<u64>,
    config: Config,
) -> anyhow::Result<Report> {
    run_at(out, frames, config, 2.0)
}

/// Run `config` for `frames` frames into `out` on a clock running `speed` times real time.
pub fn run_at(
    out: Option<PathBuf>,
    frames: Option<u64>,
    config: Config,
    speed: f64,
) -> anyhow::Result<Report> {
    reflex_tests::run_session(out, frames, config, speed)
}

/// A parsed CSV: header names → column index, and rows.
pub(crate) struct Csv {
    pub(crate) cols: BTreeMap<String, usize>,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Csv {
    pub(crate) fn read(path: &Path) -> Csv {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut lines = text.lines();
        let cols = lines
            .next()
            .unwrap()
            .split(',')
            .enumerate()
            .map(|(i, c)| (c.to_string(), i))
            .collect();
        let rows = lines
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect();
        Csv { cols, rows }
    }
    pub(crate) fn get<'a>(&self, row: &'a [String], col: &str) -> &'a str {
        &row[self.cols[col]]
    }
    pub(crate) fn num(&self, row: &[String], col: &str) -> f64 {
        self.get(row, col).parse().unwrap_or(f64::NAN)
    }
}

fn evs_count(dir: &Path, kind: &str) -> u64 {
    events(dir).iter().filter(|e| e["type"] == kind).count() as u64
}

fn events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(files::EVENTS))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l}: {e}")))
        .collect()
}

#[test]
fn decoded_keypoints_match_ground_truth() {
    let (_, report) = default_session();
    let poses = Csv::read(&report.dir.join(files::POSES));
    let truth = Csv::read(&report.dir.join(files::GROUND_TRUTH));
    let mut true_pos = BTreeMap::new();
    for r in &truth.rows {
        true_pos.insert(
            (
                truth.get(r, "frame").to_string(),
                truth.get(r, "node").to_string(),
            ),
            (truth.num(r, "x"), truth.num(r, "y")),
        );
    }
    let mut frames_ok = BTreeMap::<String, bool>::new();
    let mut worst = 0.0f64;
    for r in &poses.rows {
        let key = (
            poses.get(r, "frame").to_string(),
            poses.get(r, "node").to_string(),
        );
        let (tx, ty) = true_pos[&key];
        let err = (poses.num(r, "x") - tx).hypot(poses.num(r, "y") - ty);
        worst = worst.max(if err.is_nan() { f64::INFINITY } else { err });
        let ok = frames_ok.entry(key.0).or_insert(true);
        *ok &= err <= 2.0;
    }
    let good = frames_ok.values().filter(|&&ok| ok).count();
    let total = frames_ok.len();
    assert!(
        total as u64 == report.summary.frames.processed,
        "{total} frames in poses.csv"
    );
    assert!(
        good * 100 >= total * 99,
        "only {good} of {total} frames within 2 px (worst {worst:.2} px)"
    );
    eprintln!(
        "keypoints: {good}/{total} frames within 2 px of ground truth; worst point {worst:.3} px"
    );
}

#[test]
fn zone_trigger_commands_match_frames_with_predicted_nose_inside() {
    let (_, report) = default_session();
    let config = Config::embedded();
    let trigger = config.triggers[0].get_ref().clone();
    let Some(Zone::Circle { cx, cy, r }) = trigger.zone else {
        panic!("default zone is a circle")
    };
    let poses = Csv::read(&report.dir.join(files::POSES));
    // Frame order as processed, and whether the predicted nose is inside the zone in each.
    let mut inside = Vec::new();
    for row in poses
        .rows
        .iter()
        .filter(|row| trigger.keypoint.as_deref() == Some(poses.get(row, "node")))
    {
        let (x, y) = (poses.num(row, "pred_x"), poses.num(row, "pred_y"));
        let d = (x - f64::from(cx)).hypot(y - f64::from(cy));
        let ok_score = poses.num(row, "score") >= f64::from(trigger.min_score.unwrap_or(0.5));
        // CSV values are rounded to 1e-3 px: a point that close to the edge is undecidable from the file.
        let undecidable = (d - f64::from(r)).abs() < 2e-3;
        inside.push((
            poses.get(row, "frame").parse::<u64>().unwrap(),
            d <= f64::from(r) && ok_score,
            undecidable,
        ));
    }
    let mut expected_on = BTreeSet::new();
    let mut expected_off = BTreeSet::new();
    let mut undecidable = BTreeSet::new();
    let mut prev = false;
    for &(frame, now, edge) in &inside {
        if edge {
            undecidable.insert(frame);
        }
        if now && !prev {
            expected_on.insert(frame);
        } else if !now && prev {
            expected_off.insert(frame);
        }
        prev = now;
    }
    let (mut on, mut off) = (BTreeSet::new(), BTreeSet::new());
    for e in events(&report.dir) {
        if e["type"] == "command"
            && e["shutdown"] == false
            && e["channel"] == trigger.channel.expect("default trigger has a channel")
        {
            let frame = e["frame"].as_u64().unwrap();
            if e["high"] == true {
                on.insert(frame)
            } else {
                off.insert(frame)
            };
        }
    }
    let strip = |s: &BTreeSet<u64>| s.difference(&undecidable).copied().collect::<BTreeSet<_>>();
    assert!(
        !expected_on.is_empty() && !expected_off.is_empty(),
        "the default path must enter and leave the zone within {} frames",
        FRAMES
    );
    assert_eq!(strip(&on), strip(&expected_on), "output-on frames");
    assert_eq!(strip(&off), strip(&expected_off), "output-off frames");
    eprintln!(
        "zone trigger: {} entries, {} exits, all matching the predicted nose",
        on.len(),
        off.len()
    );
}

#[test]
fn session_files_parse_and_agree() {
    let (_, report) = default_session();
    let dir = &report.dir;
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.join(files::SUMMARY)).unwrap()).unwrap();
    assert_eq!(summary, report.summary);
    assert!(summary.complete && summary.error.is_none());
    let f = summary.frames;
    assert_eq!(f.captured, FRAMES);
    assert!(f.processed > 0 && f.processed <= f.captured);
    assert_eq!(
        f.captured,
        f.processed + f.stale + f.actuation_full,
        "every captured frame is processed or counted as dropped"
    );
    assert_eq!(summary.records_lost, 0);
    let device_errors = evs_count(dir, "device_error");
    assert_eq!(summary.device_errors, device_errors);
    assert!(["onnxruntime", "tract"].contains(&summary.backend.as_str()));

    let poses = Csv::read(&dir.join(files::POSES));
    assert_eq!(
        poses.cols.keys().cloned().collect::<BTreeSet<_>>(),
        [
            "frame", "t_ns", "track", "node", "x", "y", "score", "pred_x", "pred_y"
        ]
        .map(String::from)
        .into_iter()
        .collect()
    );
    assert_eq!(poses.rows.len() as u64, f.processed * 4);
    let frames: BTreeSet<u64> = poses
        .rows
        .iter()
        .map(|r| poses.get(r, "frame").parse().unwrap())
        .collect();
    assert_eq!(frames.len() as u64, f.processed);
    let truth = Csv::read(&dir.join(files::GROUND_TRUTH));
    assert_eq!(truth.rows.len() as u64, f.captured * 4);

    let evs = events(dir);
    assert_eq!(evs.len() as u64, summary.events);
    for e in &evs {
        match e["frame"].as_u64() {
            Some(frame) => assert!(
                frames.contains(&frame),
                "event refers to frame {frame}, which was not processed: {e}"
            ),
            // Not caused by a frame: commands while stopping, their acks, and device errors (a watchdog
            // expiry when this machine starved the loop thread for longer than the watchdog time).
            None => assert!(
                e["type"] == "ack" || e["type"] == "device_error" || e["shutdown"] == true,
                "only shutdown commands, their acks and device errors have no frame: {e}"
            ),
        }
    }
    let commands = evs
        .iter()
        .filter(|e| e["type"] == "command" && e["shutdown"] == false)
        .count();
    let acks = evs.iter().filter(|e| e["type"] == "ack").count();
    assert!(
        commands > 0 && acks >= commands,
        "{commands} commands, {acks} acks"
    );
    assert!(
        evs.iter()
            .any(|e| e["type"] == "command" && e["command"] == "all_off" && e["shutdown"] == true),
        "outputs turned off at the end"
    );

    for stage in [
        "capture",
        "inference",
        "predict",
        "trigger",
        "end_to_end",
        "outside_inference",
    ] {
        assert_eq!(summary.latency_ns[stage].count, f.processed, "{stage}");
    }
    assert!(summary.latency_ns["device_ack"].count > 0);
    assert!(summary.latency_ns["end_to_end"].p50 >= summary.latency_ns["inference"].p50);

    let hlog = std::fs::read_to_string(dir.join(files::LATENCY)).unwrap();
    assert!(
        hlog.contains("Tag=end_to_end,") && hlog.contains("Tag=inference,"),
        "interval log has per-stage tags"
    );
    let config = Config::parse(
        &std::fs::read_to_string(dir.join(files::CONFIG)).unwrap(),
        "config.toml",
    )
    .unwrap();
    assert_eq!(config.source, Config::embedded().source);
}
