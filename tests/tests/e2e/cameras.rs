//! Several cameras at once: a second synthetic camera (another animal path) beside the default rig's, each
//! on its own capture thread, both estimated by the one inference thread and recorded on the one host clock.

use std::collections::BTreeMap;
use std::sync::Arc;

use reflex_daemon::camera::synthetic::{SyntheticCamera, SyntheticConfig};
use reflex_daemon::clock::ManualClock;
use reflex_daemon::config::Config;
use reflex_daemon::pipeline::Report;
use reflex_daemon::session::files;
use reflex_daemon::{latency_report, replay};
use reflex_plugins::pose::Pose;

use crate::default_session::Csv;

/// The shipped `examples/two_cameras.toml`: the embedded default rig and a second synthetic camera, `side`,
/// whose animal follows seed 2's path at 60 frames/s.
pub fn two_camera_config() -> Config {
    Config::parse(
        include_str!("../../../examples/two_cameras.toml"),
        "two_cameras.toml",
    )
    .unwrap()
}

/// Camera 1's frame rate in the example.
const SIDE_FPS: f64 = 60.0;

/// One two-camera session for the tests that read it: 240 frames of camera 0 at half real time.
fn session() -> &'static (tempfile::TempDir, Report) {
    static SESSION: std::sync::OnceLock<(tempfile::TempDir, Report)> = std::sync::OnceLock::new();
    SESSION.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("s");
        let report = crate::default_session::run_at(Some(out), Some(240), two_camera_config(), 0.5)
            .expect("the two-camera session runs");
        (tmp, report)
    })
}

/// frame id → exposure (ns), from a `frames.csv`.
fn exposures(csv: &Csv) -> BTreeMap<u64, u64> {
    csv.rows
        .iter()
        .map(|r| {
            (
                csv.get(r, "frame").parse().unwrap(),
                csv.get(r, "exposure_ns").parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn each_camera_has_its_own_files_counts_and_latency() {
    let (_, report) = session();
    let s = &report.summary;
    assert!(s.complete, "{:?}", s.error);
    assert_eq!(s.cameras.len(), 2);
    assert_eq!(
        s.cameras[0].frames, s.frames,
        "camera 0's counts are the loop's"
    );
    let side = &s.cameras[1];
    assert_eq!(
        (
            side.camera,
            side.name.as_str(),
            side.source.as_str(),
            side.dir.as_str()
        ),
        (1, "side", "synthetic(seed=2)", "camera1")
    );
    let f = side.frames;
    assert!(f.processed > 0, "{f:?}");
    // Every frame camera 1 delivered was estimated, replaced by a newer one (latest frame wins) or refused
    // by a full hand-off: none is unaccounted for.
    assert_eq!(
        f.captured,
        f.processed + f.stale + f.actuation_full,
        "{f:?}"
    );

    let dir = report.dir.join("camera1");
    let frames = Csv::read(&dir.join(files::FRAMES));
    let cols: Vec<&str> = {
        let mut c: Vec<(&String, &usize)> = frames.cols.iter().collect();
        c.sort_by_key(|(_, i)| **i);
        c.into_iter().map(|(n, _)| n.as_str()).collect()
    };
    assert_eq!(
        cols,
        [
            "frame",
            "exposure_ns",
            "capture_ns",
            "infer_start_ns",
            "infer_end_ns"
        ]
    );
    assert_eq!(frames.rows.len() as u64, f.processed);
    for r in &frames.rows {
        let t: Vec<f64> = [
            "exposure_ns",
            "capture_ns",
            "infer_start_ns",
            "infer_end_ns",
        ]
        .iter()
        .map(|c| frames.num(r, c))
        .collect();
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "stamps in order: {r:?}");
    }
    let poses = Csv::read(&dir.join(files::POSES));
    assert!(!poses.cols.contains_key("pred_x"), "measured only");
    assert_eq!(
        poses.rows.len() as u64,
        4 * f.processed,
        "4 keypoints a frame"
    );

    // Its own histograms, in the summary and the interval log.
    let q = s.latency_ns["camera1.exposure_to_pose"];
    assert_eq!(q.count, f.processed);
    assert!(q.p50 > s.latency_ns["camera1.inference"].p50);
    let hlog = std::fs::read_to_string(report.dir.join(files::LATENCY)).unwrap();
    for tag in [
        "camera1.capture",
        "camera1.queue_inference",
        "camera1.inference",
    ] {
        assert!(
            hlog.contains(&format!("Tag={tag},")),
            "{tag} in latency.hlog"
        );
    }

    // The session's config.toml keeps the camera, so the rig runs again as it ran.
    let config = Config::load(&report.dir.join(files::CONFIG)).unwrap();
    assert_eq!(config.cameras.len(), 1);
    assert_eq!(config.cameras[0].get_ref().synthetic.seed, 2);
}

#[test]
fn the_second_cameras_poses_are_its_own_animals() {
    let (_, report) = session();
    // The truth of camera 1's frames: seed 2's animal, rendered at each frame's time.
    let mut truth_camera = SyntheticCamera::new(
        &SyntheticConfig {
            seed: 2,
            fps: SIDE_FPS,
            ..SyntheticConfig::default()
        },
        Arc::new(ManualClock::new()),
    )
    .unwrap();
    let mut pixels = vec![0; 640 * 480 * 3];
    let poses = Csv::read(&report.dir.join("camera1").join(files::POSES));
    let mut by_frame: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    for r in &poses.rows {
        by_frame
            .entry(poses.get(r, "frame").parse().unwrap())
            .or_default()
            .push((poses.num(r, "x"), poses.num(r, "y")));
    }
    let last = *by_frame.keys().last().unwrap();
    let mut truth = Pose::new(4);
    let (mut near, mut total) = (0, 0);
    for id in 0..=last {
        // Every frame in order, as the camera renders them (the heading follows the path).
        truth_camera.render(id as f64 / SIDE_FPS, &mut pixels, &mut truth);
        let Some(points) = by_frame.get(&id) else {
            continue;
        };
        total += 1;
        let worst = points
            .iter()
            .zip(truth.points())
            .map(|(&(x, y), t)| (x - f64::from(t.x)).hypot(y - f64::from(t.y)))
            .fold(
                0.0,
                |a: f64, e| if e.is_nan() { f64::INFINITY } else { a.max(e) },
            );
        near += usize::from(worst <= 2.0);
    }
    assert!(
        near * 100 >= total * 99,
        "only {near} of {total} frames of camera 1 within 2 px of seed 2's animal"
    );

    // Camera 0's animal is elsewhere: the two cameras' poses are not the same frames twice.
    let ours = Csv::read(&report.dir.join(files::POSES));
    let nose0: BTreeMap<u64, (f64, f64)> = ours
        .rows
        .iter()
        .filter(|r| ours.get(r, "node") == "nose")
        .map(|r| {
            (
                ours.get(r, "frame").parse().unwrap(),
                (ours.num(r, "x"), ours.num(r, "y")),
            )
        })
        .collect();
    let apart = by_frame
        .iter()
        .filter_map(|(id, p)| Some((nose0.get(id)?, p[0])))
        .filter(|((x0, y0), (x1, y1))| (x0 - x1).hypot(y0 - y1) > 20.0)
        .count();
    assert!(
        apart * 2 > by_frame.len(),
        "camera 0's and camera 1's noses mostly apart ({apart} of {} frames)",
        by_frame.len()
    );
}

#[test]
fn both_cameras_are_stamped_on_one_clock() {
    let (_, report) = session();
    let s = &report.summary;
    let end_ns = s.start_ns + (s.duration_s * 1e9) as u64;
    let mut origins = Vec::new();
    for (dir, fps) in [
        (report.dir.clone(), 120.0),
        (report.dir.join("camera1"), SIDE_FPS),
    ] {
        let exposed = exposures(&Csv::read(&dir.join(files::FRAMES)));
        assert!(
            exposed.len() > 20,
            "{}: {} frames",
            dir.display(),
            exposed.len()
        );
        assert!(
            exposed
                .values()
                .all(|&t| (s.start_ns..=end_ns).contains(&t)),
            "{}: exposures within the session on the host clock ({}..={end_ns})",
            dir.display(),
            s.start_ns
        );
        // Each camera's frames on its own rate's grid: exposure − id × period is one instant, however late
        // its thread ran.
        let period = (1e9 / fps).round() as u64;
        let origin: Vec<u64> = exposed.iter().map(|(id, t)| t - id * period).collect();
        assert!(
            origin.iter().all(|&o| o == origin[0]),
            "{}: frames on a {period} ns grid",
            dir.display()
        );
        origins.push(origin[0]);
    }
    // The two cameras started together, on one clock: camera 1's first exposure falls among camera 0's
    // first frames, not at some other clock's zero.
    let apart = origins[0].abs_diff(origins[1]);
    assert!(
        apart < end_ns - s.start_ns,
        "the cameras' first exposures {apart} ns apart within a {} ns session",
        end_ns - s.start_ns
    );
}

#[test]
fn the_loop_replays_exactly_beside_a_second_camera() {
    // Camera 1's poses pass the actuation thread too; the loop's decisions are still camera 0's alone, so
    // `reflex replay` of the session (its poses.csv, its config.toml with the camera) reproduces them.
    let (_, report) = session();
    let file = report.dir.join(files::CONFIG);
    let text = std::fs::read_to_string(&file).unwrap();
    let config = Config::parse(&text, &file.display().to_string()).unwrap();
    let mut recording = replay::Recording::session(&report.dir).unwrap();
    let replayed =
        replay::replay(&mut recording, &config, &text, &file.display().to_string()).unwrap();
    let (mut jsonl, mut line) = (Vec::new(), String::new());
    for e in &replayed.events {
        reflex_daemon::session::write_event(&mut jsonl, &mut line, e, &replayed.trigger_names)
            .unwrap();
    }
    let live = std::fs::read_to_string(report.dir.join(files::EVENTS)).unwrap();
    let cmp = replay::compare_with_live(&live, &String::from_utf8(jsonl).unwrap()).unwrap();
    assert!(cmp.identical, "{:?}", cmp.first_difference);
    assert!(
        live.contains(r#""type":"trigger""#),
        "the zone trigger changed in the live session"
    );
}

#[test]
fn the_latency_reports_show_the_second_camera() {
    let (_, report) = session();
    let s = latency_report::SessionLatency::load(&report.dir).unwrap();
    let side = report.summary.cameras[1].frames;
    let line = format!(
        "camera 1 (side) `synthetic(seed=2)` 640x480 at 60 frames/s, in camera1/: captured {}  estimated {}",
        side.captured, side.processed
    );
    let text = latency_report::text(&s, 5);
    assert!(text.contains(&line), "{text}");
    let rows = text
        .lines()
        .skip_while(|l| !l.starts_with("camera 1 (side)"))
        .skip(1)
        .take(4)
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>();
    let n = side.processed.to_string();
    assert_eq!(
        rows,
        [
            "capture",
            "queue_inference",
            "inference",
            "exposure_to_pose"
        ]
        .map(|st| format!("{st} {n}")),
        "{text}"
    );
    let html = latency_report::html::report(&[&s], 5);
    assert!(
        html.contains(&format!("<p>{line}")),
        "the HTML report names camera 1"
    );
}
