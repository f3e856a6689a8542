//! The `reflex` binary on bad input: a clear error naming the file, key or line, a non-zero exit, no panic.

use std::path::Path;
use std::process::{Command, Output};

fn reflex(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run reflex")
}

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
        &["run", "--source", "v4l:/dev/video9", "--frames", "1"],
        tmp.path(),
    ));
    assert!(
        err.contains("v4l:/dev/video9") && err.contains("synthetic"),
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
    let tmp = tempfile::tempdir().unwrap();
    let rig =
        "[output]\nkind = \"serial\"\n\n[output.serial]\nport = \"/dev/no-such-reflex-port\"\n";
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
    std::fs::write(tmp.path().join("rig.toml"), "[output]\nkind = \"serial\"\n").unwrap();
    let err = failure(&reflex(
        &["run", "--config", "rig.toml", "--frames", "1"],
        tmp.path(),
    ));
    assert!(err.contains("output.serial.port"), "{err}");
}
