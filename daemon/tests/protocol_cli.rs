//! `reflex check` and `reflex replay` as a user runs them: the example configs pass, each kind of mistake is an
//! error naming the file and line with exit code 1, and a pose CSV (ours, and real SLEAP tracking of two flies
//! from the shared data) replays into events.jsonl + summary.json.

#[path = "support/run.rs"]
mod run;
use run::reflex;

use std::path::PathBuf;
use std::process::Output;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Stdout of a run that must succeed.
fn success(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{:?}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Stderr of a run that must fail cleanly (exit code 1, an `error:` line, no panic).
fn failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
    stderr
}

#[test]
fn check_passes_the_examples() {
    let root = repo();
    for name in [
        "zone_optogenetics",
        "speed_closed_loop",
        "head_angle_feedback",
        "delayed_feedback",
        "two_cameras",
    ] {
        let path = format!("examples/{name}.toml");
        let out = success(&reflex(&["check", &path], &root));
        assert!(
            out.starts_with(
                "ok: 1 triggers, model builtin (4 keypoints: nose, ear_left, ear_right, tail_base), output simulated (4 channels)"
            ),
            "{name}: {out}"
        );
    }
    let out = success(&reflex(&["check", "examples/catch_trials.toml"], &root));
    assert!(
        out.contains("script dry run")
            && out
                .contains("on_event (frame 5, trigger `zone_entry` active): 2 actions: PulseTrain"),
        "{out}"
    );
    let out = success(&reflex(
        &[
            "check",
            "examples/fly_walking.toml",
            "--keypoints",
            "head,thorax",
        ],
        &root,
    ));
    assert!(
        out.starts_with("ok: 2 triggers, model --keypoints (2 keypoints"),
        "{out}"
    );
    // Without the names, the bundled model has no thorax.
    let err = failure(&reflex(&["check", "examples/fly_walking.toml"], &root));
    assert!(
        err.contains("examples/fly_walking.toml line 10: trigger `walking`")
            && err.contains("thorax"),
        "{err}"
    );
}

/// A good rig: two triggers; the second begins on line 8.
const RIG: &str = r#"[source.synthetic]
fps = 60.0

[[trigger]]
name = "in_port"
keypoint = "nose"
zone = { shape = "circle", cx = 250.0, cy = 270.0, r = 45.0 }
[[trigger]]
name = "fast"
kind = "speed"
keypoint = "tail_base"
above = 200.0
actions = [{ kind = "pulse", channel = 2, width_us = 1000, delay_s = 0.1 }]
"#;

fn check_rig(text: &str) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("rig.toml"), text).unwrap();
    reflex(&["check", "rig.toml"], tmp.path())
}

#[test]
fn check_names_file_and_line_of_each_mistake() {
    let out = success(&check_rig(RIG));
    assert!(
        out.starts_with("ok: 2 triggers, model builtin (4 keypoints"),
        "{out}"
    );

    let err = failure(&check_rig(&RIG.replace("\"tail_base\"", "\"tail\"")));
    assert!(
        err.contains("rig.toml line 8: trigger `fast`: unknown keypoint `tail`")
            && err.contains("nose, ear_left, ear_right, tail_base"),
        "{err}"
    );

    let err = failure(&check_rig(&RIG.replace("above = 200.0", "abov = 200.0")));
    assert!(
        err.contains("rig.toml line 12") && err.contains("abov"),
        "{err}"
    );

    let err = failure(&check_rig(&RIG.replace("channel = 2", "channel = 4")));
    assert!(
        err.contains("rig.toml line 8: trigger `fast`: channel 4 does not exist"),
        "{err}"
    );

    let err = failure(&check_rig(&RIG.replace("delay_s = 0.1", "delay_s = -0.1")));
    assert!(
        err.contains("rig.toml line 8: trigger `fast`") && err.contains("delay_s"),
        "{err}"
    );

    // A Pulse Pal has 4 channels, known without the device; our firmware says in its handshake.
    let pulsepal = format!(
        "{RIG}\n[output]\nkind = \"pulsepal\"\n[output.pulsepal]\nport = \"/dev/ttyACM9\"\n"
    );
    let err = failure(&check_rig(&pulsepal.replace("channel = 2", "channel = 5")));
    assert!(
        err.contains("rig.toml line 8: trigger `fast`: channel 5 does not exist (pulsepal /dev/ttyACM9 has channels 0..3)"),
        "{err}"
    );
    let serial =
        format!("{RIG}\n[output]\nkind = \"serial\"\n[output.serial]\nport = \"/dev/ttyACM9\"\n");
    let out = success(&check_rig(&serial.replace("channel = 2", "channel = 5")));
    assert!(
        out.contains("output serial /dev/ttyACM9 (its channels are checked when it connects)"),
        "{out}"
    );
}

#[test]
fn check_lists_further_cameras_and_names_a_cameras_bad_model() {
    let cameras = format!(
        "{RIG}\n[[camera]]\nname = \"side\"\nkind = \"video\"\n[camera.video]\npath = \"side.mp4\"\n\n[[camera]]\nkind = \"v4l2\"\n[camera.model]\npath = \"builtin\"\n"
    );
    let out = success(&check_rig(&cameras));
    assert!(
        out.contains("\n  camera 1 (side): video (side.mp4), the rig's model builtin; triggers and the script see camera 0")
            && out.contains("\n  camera 2: v4l2 (/dev/video0), model builtin (4 keypoints)"),
        "{out}"
    );
    // The 1-based line of camera 2's `[[camera]]`, just above its kind.
    let line = cameras
        .lines()
        .position(|l| l == "kind = \"v4l2\"")
        .unwrap();
    let err = failure(&check_rig(
        &cameras.replace("path = \"builtin\"", "path = \"side_model\""),
    ));
    assert!(
        err.contains(&format!(
            "rig.toml line {line}: camera 2: reading its pose model `side_model`"
        )),
        "{err}"
    );
}

#[test]
fn replay_of_a_pose_csv_writes_events_and_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    // A nose moving right 10 px per frame at 10 frames/s: inside the zone (x 200..300) on frames 20..=30.
    let mut csv = String::from("frame,track,node,x,y,score\n");
    for f in 0..50 {
        csv.push_str(&format!("{f},mouse,nose,{},100,0.9\n", f * 10));
        csv.push_str(&format!("{f},mouse,tail,{},100,0.9\n", f * 10 - 40));
    }
    std::fs::write(tmp.path().join("track.csv"), csv).unwrap();
    std::fs::write(tmp.path().join("track.json"), r#"{"fps": 10.0}"#).unwrap();
    let rig = r#"
[predictor]
kind = "none"

[[trigger]]
name = "in_zone"
keypoint = "nose"
zone = { shape = "rect", x0 = 200.0, y0 = 0.0, x1 = 300.0, y1 = 200.0 }
channel = 1
actions = [{ kind = "pulse", channel = 2, width_us = 500, delay_s = 0.5 }]
"#;
    std::fs::write(tmp.path().join("rig.toml"), rig).unwrap();

    let err = failure(&reflex(&["replay", "track.csv"], tmp.path()));
    assert!(err.contains("--config"), "{err}");

    let out = success(&reflex(
        &["replay", "track.csv", "--config", "rig.toml", "--out", "r"],
        tmp.path(),
    ));
    assert!(out.contains("in_zone") && out.contains("frames/s"), "{out}");
    let events: Vec<serde_json::Value> = std::fs::read_to_string(tmp.path().join("r/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let on: Vec<(u64, bool)> = events
        .iter()
        .filter(|e| e["type"] == "trigger")
        .map(|e| (e["frame"].as_u64().unwrap(), e["active"].as_bool().unwrap()))
        .collect();
    assert_eq!(on, [(20, true), (31, false)]);
    let pulses: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "command" && e["command"] == "pulse")
        .map(|e| e["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(pulses, [25], "0.5 s after frame 20 at 10 frames/s");
    assert!(events.iter().all(|e| e["type"] != "ack"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("r/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["frames"], 50);
    assert_eq!(summary["triggers"][0]["activations"], 1);
    assert_eq!(summary["triggers"][0]["first_frame"], 20);
    assert_eq!(summary["channels"][0]["channel"], 1);
    assert_eq!(summary["channels"][0]["commands"], 2);
    assert_eq!(summary["channels"][1]["pulses"], 1);

    // The default output folder sits beside the CSV.
    success(&reflex(
        &["replay", "track.csv", "-c", "rig.toml"],
        tmp.path(),
    ));
    let replays: Vec<_> = std::fs::read_dir(tmp.path().join("track-replays"))
        .unwrap()
        .collect();
    assert_eq!(replays.len(), 1);
}

#[test]
fn replay_of_real_fly_tracking_runs_the_example() {
    let data = repo().join("../shared/data/clip_pred2.csv");
    assert!(
        data.exists(),
        "shared test data {} is missing: these tests need ../shared/data next to the repository",
        data.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("fly");
    let out = success(&reflex(
        &[
            "replay",
            data.to_str().unwrap(),
            "--config",
            "examples/fly_walking.toml",
            "--track",
            "female",
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ],
        &repo(),
    ));
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["frames"], 1500);
    assert_eq!(summary["input_kind"], "poses");
    let walking = &summary["triggers"][0];
    assert_eq!(walking["name"], "walking");
    assert!(walking["activations"].as_u64().unwrap() > 0, "{summary}");
    // At most one mark per second (refractory_s = 1.0): 25 frames apart at least.
    let marks: Vec<u64> = std::fs::read_to_string(out_dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "mark")
        .map(|e| e["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(marks.len() as u64, walking["activations"].as_u64().unwrap());
    assert!(marks.windows(2).all(|w| w[1] - w[0] >= 25), "{marks:?}");
    eprintln!(
        "fly replay: {} walking bouts, {:.0} frames/s in the decision step",
        marks.len(),
        summary["speed"]["decide_frames_per_s"].as_f64().unwrap()
    );
}

#[test]
fn replay_of_a_recorded_session_says_it_reproduced_the_live_events() {
    let tmp = tempfile::tempdir().unwrap();
    success(&reflex(
        &["run", "--frames", "240", "--out", "s", "--quiet"],
        tmp.path(),
    ));
    let out = success(&reflex(&["replay", "s"], tmp.path()));
    assert!(
        out.contains("live events: reproduced exactly")
            && out.contains("predictions: identical to the recorded ones")
            && out.contains("frames/s"),
        "{out}"
    );
    // The default output folder is inside the session.
    let replays: Vec<_> = std::fs::read_dir(tmp.path().join("s/replays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(replays.len(), 1);
    assert!(replays[0].join("events.jsonl").exists() && replays[0].join("summary.json").exists());
    let err = failure(&reflex(&["replay", "s", "--fps", "30"], tmp.path()));
    assert!(err.contains("--fps and --track are for pose CSVs"), "{err}");
}

#[test]
fn check_names_each_script_mistake() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write("ok.lua", "function on_frame(ctx, pose) end\n");
    write(
        "syntax.lua",
        "function on_frame(ctx, pose)\n  if pose.nose.x > then end\nend\n",
    );
    write(
        "channel.lua",
        "function on_frame(ctx, pose) ctx:pulse(9, 100) end\n",
    );
    write("none.lua", "local x = 1\n");
    let cases = [
        (
            "path = \"missing.lua\"\n",
            "rig.toml: [script] path `missing.lua`: cannot read",
        ),
        (
            "path = \"syntax.lua\"\n",
            "syntax.lua:2: unexpected symbol near 'then' (in load)",
        ),
        (
            "path = \"channel.lua\"\n",
            "the dry run commands channel 9, which does not exist (simulated has channels 0..3)",
        ),
        (
            "path = \"none.lua\"\n",
            "defines neither on_frame nor on_event",
        ),
        (
            "path = \"ok.lua\"\nmemory_mb = 0\n",
            "rig.toml line 1: [script] memory_mb must be from 1 to 1024, got 0",
        ),
        (
            "path = \"ok.lua\"\nbudgett = 5\n",
            "rig.toml line 3: unknown field `budgett`",
        ),
    ];
    for (script, want) in cases {
        write("rig.toml", &format!("[script]\n{script}"));
        let err = failure(&reflex(&["check", "rig.toml"], dir));
        assert!(err.contains(want), "{script}: {err}");
    }
    write("rig.toml", "[script]\npath = \"ok.lua\"\n");
    success(&reflex(&["check", "rig.toml"], dir));
}
