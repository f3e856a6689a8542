//! The `reflex` binary on bad input: a clear error naming the file, key or line, a non-zero exit, no panic.

#[path = "support/run.rs"]
mod run;
use run::reflex;

use std::process::Output;

/// Fails unless the run failed cleanly: exit code 1 (not a panic's 101), message on stderr, and returns it.
fn failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a clean failure, got {:?}: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
    stderr
}

#[test]
fn config_typo_names_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("rig.toml"),
        "[source.synthetic]\nfps = 60.0\nseeed = 3\n",
    )
    .unwrap();
    let err = failure(&reflex(
        &["run", "--config", "rig.toml", "--frames", "1"],
        tmp.path(),
    ));
    assert!(
        err.contains("rig.toml line 3") && err.contains("seeed"),
        "{err}"
    );
}

#[test]
fn unknown_keypoint_names_the_trigger_and_the_known_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let rig = "[[trigger]]\nname = \"paw_in_zone\"\nkeypoint = \"paww\"\nzone = { shape = \"circle\", cx = 1.0, cy = 1.0, r = 5.0 }\nchannel = 0\n";
    std::fs::write(tmp.path().join("rig.toml"), rig).unwrap();
    let err = failure(&reflex(
        &[
            "run",
            "--config",
            "rig.toml",
            "--frames",
            "1",
            "--backend",
            "tract",
        ],
        tmp.path(),
    ));
    assert!(
        err.contains("rig.toml line 1") && err.contains("paww") && err.contains("nose"),
        "{err}"
    );
}

#[test]
fn missing_model_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("rig.toml"),
        "[model]\npath = \"no/such/model\"\n",
    )
    .unwrap();
    let err = failure(&reflex(
        &["run", "--config", "rig.toml", "--frames", "1"],
        tmp.path(),
    ));
    assert!(
        err.contains("no/such/model") && err.contains("model.onnx"),
        "{err}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = failure(&reflex(&["run", "--config", "nope.toml"], tmp.path()));
    assert!(
        err.contains("nope.toml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn unwritable_output_dir_is_named_and_nothing_runs() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("occupied"), b"a file, not a folder").unwrap();
    let err = failure(&reflex(
        &[
            "run",
            "--out",
            "occupied/session",
            "--frames",
            "1",
            "--backend",
            "tract",
        ],
        tmp.path(),
    ));
    assert!(
        err.contains("session folder") && err.contains("occupied/session"),
        "{err}"
    );
}

#[test]
fn unknown_source_and_bad_duration_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = failure(&reflex(
        &["run", "--source", "gopro:9", "--frames", "1"],
        tmp.path(),
    ));
    assert!(
        err.contains("gopro:9") && err.contains("synthetic") && err.contains("v4l:/dev/videoN"),
        "{err}"
    );
    let out = reflex(&["run", "--duration", "ten"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
}

#[test]
fn print_default_config_is_the_embedded_default_and_runs_as_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = reflex(&["run", "--print-default-config"], tmp.path());
    assert!(out.status.success());
    std::fs::write(tmp.path().join("rig.toml"), &out.stdout).unwrap();
    let out = reflex(
        &[
            "run",
            "--config",
            "rig.toml",
            "--frames",
            "30",
            "--out",
            "s",
            "--backend",
            "tract",
            "--quiet",
        ],
        tmp.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("end_to_end") && stdout.contains("session: s"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("s/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["frames"]["captured"], 30);
    assert_eq!(summary["complete"], true);
}

#[test]
fn a_missing_serial_output_device_is_named_before_anything_runs() {
    for kind in ["serial", "pulsepal", "harp", "bpod"] {
        missing_device_is_named(kind);
    }
}

fn missing_device_is_named(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let rig = format!(
        "[output]\nkind = \"{kind}\"\n\n[output.{kind}]\nport = \"/dev/no-such-reflex-port\"\n"
    );
    std::fs::write(tmp.path().join("rig.toml"), rig).unwrap();
    let out = reflex(
        &[
            "run",
            "--config",
            "rig.toml",
            "--frames",
            "1",
            "--out",
            "s",
            "--backend",
            "tract",
        ],
        tmp.path(),
    );
    let err = failure(&out);
    assert!(err.contains("/dev/no-such-reflex-port"), "{err}");
    assert!(
        !tmp.path().join("s").exists(),
        "no session folder for a run that never started"
    );
    std::fs::write(
        tmp.path().join("rig.toml"),
        format!("[output]\nkind = \"{kind}\"\n"),
    )
    .unwrap();
    let err = failure(&reflex(
        &["run", "--config", "rig.toml", "--frames", "1"],
        tmp.path(),
    ));
    assert!(err.contains(&format!("output.{kind}.port")), "{err}");
}

#[test]
fn latency_reports_a_recorded_session_and_names_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let run = reflex(
        &["run", "--frames", "60", "--out", "s", "--quiet"],
        tmp.path(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = reflex(&["latency", "s", "--html", "r.html"], tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "end_to_end",
        "latency over time",
        "worst 10 frames",
        "dropped frames:",
        "report: r.html",
    ] {
        assert!(stdout.contains(part), "{part}:\n{stdout}");
    }
    let html = std::fs::read_to_string(tmp.path().join("r.html")).unwrap();
    assert!(html.contains("<svg ") && html.contains("queue_inference"));
    let out = reflex(&["latency", "--compare", "s", "s"], tmp.path());
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("p99 B/A"));

    let err = failure(&reflex(&["latency", "nope"], tmp.path()));
    assert!(err.contains("nope/summary.json"), "{err}");
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    for f in ["summary.json", "latency.hlog"] {
        std::fs::copy(tmp.path().join("s").join(f), bad.join(f)).unwrap();
    }
    let mut hlog = std::fs::read_to_string(bad.join("latency.hlog")).unwrap();
    hlog.push_str("Tag=end_to_end,9.0,1.0,1.0,@@@\n");
    std::fs::write(bad.join("latency.hlog"), &hlog).unwrap();
    let err = failure(&reflex(&["latency", "bad"], tmp.path()));
    let line = hlog.lines().count();
    assert!(
        err.contains(&format!("bad/latency.hlog line {line}")),
        "{err}"
    );
    assert_eq!(
        reflex(&["latency"], tmp.path()).status.code(),
        Some(2),
        "a session or --compare is required"
    );
}

/// `[source.synthetic] led` on the embedded default: the synthetic camera shows channel 3 of the simulated
/// device as a 16 px square at (600, 20). No watchdog: a test machine starved by other jobs must not trip it.
const LED_RIG: &str = "[source.synthetic]\nled = { channel = 3, x = 600, y = 20, size = 16 }\n\n[output.simulated]\nwatchdog_ms = 0\n\n[realtime]\nenabled = false\n";

#[test]
fn lightloop_measures_the_synthetic_led_as_json_and_csv() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("rig.toml"), LED_RIG).unwrap();
    let out = reflex(
        &[
            "lightloop",
            "--config",
            "rig.toml",
            "--trials",
            "5",
            "--json",
            "--out",
            "trials.csv",
        ],
        tmp.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["channel"], 3);
    assert_eq!(report["trials"].as_array().unwrap().len(), 5);
    let names: Vec<&str> = report["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "write_to_led",
            "led_to_exposure",
            "led_to_frame",
            "round_trip"
        ]
    );
    for span in report["spans"].as_array().unwrap() {
        assert_eq!(span["count"], 5, "{span}");
    }
    let csv = std::fs::read_to_string(tmp.path().join("trials.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert!(
        csv.starts_with("trial,wait_ns,written_ns,led_on_ns,"),
        "{csv}"
    );

    // The table, with --channel and --roi given explicitly.
    let out = reflex(
        &[
            "lightloop",
            "--config",
            "rig.toml",
            "--trials",
            "2",
            "--channel",
            "3",
            "--roi",
            "600,20,16,16",
        ],
        tmp.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for part in [
        "calibration",
        "write → LED on (device ack)",
        "LED on → first lit exposure",
        "write → lit frame on host",
    ] {
        assert!(stdout.contains(part), "{part}:\n{stdout}");
    }
}

#[test]
fn lightloop_refuses_an_roi_without_the_led_and_a_rig_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("rig.toml"), LED_RIG).unwrap();
    let err = failure(&reflex(
        &[
            "lightloop",
            "--config",
            "rig.toml",
            "--roi",
            "0,0,10,10",
            "--trials",
            "1",
        ],
        tmp.path(),
    ));
    assert!(err.contains("the LED is not visible in the ROI"), "{err}");
    let err = failure(&reflex(&["lightloop"], tmp.path()));
    assert!(err.contains("--channel") && err.contains("--roi"), "{err}");
    let err = failure(&reflex(
        &["lightloop", "--config", "rig.toml", "--channel", "7"],
        tmp.path(),
    ));
    assert!(err.contains("channel") && err.contains("0..3"), "{err}");
}

#[test]
fn a_further_cameras_led_is_wired_to_the_output_and_checked_against_it() {
    // The simulated device has channels 0..3: an LED on channel 9 in camera 1's view cannot be lit.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("rig.toml"),
        "[[camera]]\nname = \"side\"\nkind = \"synthetic\"\n[camera.synthetic]\nled = { channel = 9, x = 10, y = 10, size = 8 }\n",
    )
    .unwrap();
    let err = failure(&reflex(
        &["run", "--config", "rig.toml", "--frames", "1", "--out", "s"],
        tmp.path(),
    ));
    assert!(
        err.contains("camera 1 (side): [camera.synthetic]")
            && err.contains("camera.synthetic.led: channel 9 does not exist"),
        "{err}"
    );
}
