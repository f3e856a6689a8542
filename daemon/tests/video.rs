//! Video files as a camera, end to end: `reflex run --source video:…` on the real recorded clip, a corrupt
//! copy that must stop the session cleanly, and what the capture path allocates per frame (counted by this
//! binary's allocator, per thread, so tests running beside it do not disturb the count).

#[path = "support/run.rs"]
mod run;
use run::{frame_stamps, reflex, summary};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reflex_daemon::camera::convert::{self, MjpegDecoder, Plane, YuvRange};
use reflex_daemon::camera::video::{VideoConfig, VideoRate, VideoSource};
use reflex_daemon::camera::{Frame, FrameSource};
use reflex_daemon::clock::ManualClock;

/// The real recorded video in the shared data folder (used from there, never copied into the repository).
fn clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/clip.mp4")
}

/// Every line of events.jsonl parses, and the outputs were turned off at the end.
fn check_events_and_all_off(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("events.jsonl")).expect("events.jsonl");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("events.jsonl: {e}: {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "command" && e["command"] == "all_off" && e["shutdown"] == true),
        "outputs turned off at the end: {text}"
    );
}

/// frames.csv has its header and one complete row per captured frame.
fn check_frames_csv(dir: &Path, captured: u64) {
    let text = std::fs::read_to_string(dir.join("frames.csv")).expect("frames.csv");
    let mut lines = text.lines();
    let cols = lines.next().expect("header").split(',').count();
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.len() as u64 <= captured && !rows.is_empty(),
        "{} rows",
        rows.len()
    );
    assert!(rows.iter().all(|r| r.split(',').count() == cols), "{text}");
}

#[test]
fn replaying_the_clip_runs_a_session_at_the_files_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let source = format!("video:{}", clip().display());
    let out = reflex(
        &[
            "run",
            "--source",
            &source,
            "--frames",
            "10",
            "--backend",
            "tract",
            "--out",
            "s",
        ],
        tmp.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let dir = tmp.path().join("s");
    let s = summary(&dir);
    assert_eq!(s["source"], "video(clip.mp4)");
    assert_eq!(s["complete"], true, "{s}");
    assert_eq!(s["frames"]["captured"], 10);
    check_events_and_all_off(&dir);
    check_frames_csv(&dir, 10);
    // Exposure stamps 40 ms apart, the file's own timestamps on the host clock.
    let exposure = frame_stamps(&dir.join("frames.csv"));
    for w in exposure.windows(2) {
        let ((a, ta, _), (b, tb, _)) = (w[0], w[1]);
        assert_eq!(tb - ta, (b - a) * 40_000_000, "frames {a} and {b}");
    }
    // The session's config.toml names the video, so it runs again as it is.
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(
        config.contains("kind = \"video\"") && config.contains("clip.mp4"),
        "{config}"
    );
}

/// Writes `corrupt.mp4` into `dir`: clip.mp4 with frame 20 (decode order) broken, its first NAL unit's length
/// overwritten.
fn write_corrupt_clip(dir: &Path) {
    let mut bytes = std::fs::read(clip()).unwrap();
    let offset = sample_offset(&bytes, 20);
    bytes[offset..offset + 4].copy_from_slice(&[0xFF; 4]);
    std::fs::write(dir.join("corrupt.mp4"), &bytes).unwrap();
}

/// Runs `reflex run ARGS --backend tract --out s` beside `corrupt.mp4`, which breaks at its frame 20, and
/// checks the clean failure every camera owes: exit 1 without a panic, the frame named, `summary.json`
/// incomplete with the error, outputs off at the end. Returns stderr, the session folder (kept in `tmp`)
/// and its summary.
fn run_into_corrupt_frame(
    args: &[&str],
    tmp: &tempfile::TempDir,
) -> (String, PathBuf, serde_json::Value) {
    write_corrupt_clip(tmp.path());
    let args: Vec<&str> = [&["run"], args, &["--backend", "tract", "--out", "s"]].concat();
    let out = reflex(&args, tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "a clean failure: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("frame 20 of 1500"), "{stderr}");
    let dir = tmp.path().join("s");
    let s = summary(&dir);
    assert_eq!(s["complete"], false);
    let error = s["error"].as_str().expect("summary.json has the error");
    assert!(error.contains("corrupt H.264 data"), "{error}");
    check_events_and_all_off(&dir);
    (stderr, dir, s)
}

#[test]
fn a_corrupt_frame_mid_file_stops_the_session_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (stderr, dir, s) = run_into_corrupt_frame(
        &["--source", "video:corrupt.mp4@max", "--frames", "100"],
        &tmp,
    );
    assert!(stderr.contains("corrupt.mp4"), "{stderr}");
    assert!(s["error"].as_str().unwrap().contains("corrupt.mp4"), "{s}");
    let captured = s["frames"]["captured"].as_u64().unwrap();
    assert!(
        (17..=20).contains(&captured),
        "{captured} frames before the error"
    );
    check_frames_csv(&dir, captured);
}

#[test]
fn a_further_camera_failing_mid_stream_stops_the_session_cleanly() {
    // Camera 0 runs on; camera 1, the corrupt clip, breaks at its frame 20: the whole session stops, its
    // outputs off and every camera's files whole, the error naming the camera.
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--source",
        "synthetic",
        "--source",
        "video:corrupt.mp4@max",
        "--duration",
        "60s",
    ];
    let (stderr, dir, s) = run_into_corrupt_frame(&args, &tmp);
    assert!(stderr.contains("camera 1 `video(corrupt.mp4)`"), "{stderr}");
    let error = s["error"].as_str().unwrap();
    assert!(
        error.starts_with("camera 1 `video(corrupt.mp4)`: "),
        "{error}"
    );
    let side = &s["cameras"][1];
    assert_eq!(side["dir"], "camera1");
    let captured = side["frames"]["captured"].as_u64().unwrap();
    assert!(
        (17..=20).contains(&captured),
        "{captured} frames of camera 1 before the error"
    );
    check_frames_csv(&dir, s["frames"]["captured"].as_u64().unwrap());
    check_frames_csv(&dir.join("camera1"), captured);
}

/// Byte offset of coded frame `i` (decode order) in an MP4 whose frames lie in one chunk, as clip.mp4's
/// do: the chunk's offset (`stco`) plus the sizes of the frames before it (`stsz`).
fn sample_offset(mp4: &[u8], i: usize) -> usize {
    let u32_at = |at: usize| u32::from_be_bytes(mp4[at..at + 4].try_into().unwrap()) as usize;
    let find = |kind: &[u8]| mp4.windows(4).position(|w| w == kind).unwrap();
    let stco = find(b"stco");
    assert_eq!(u32_at(stco + 8), 1, "one chunk");
    let stsz = find(b"stsz");
    assert_eq!(u32_at(stsz + 8), 0, "sizes listed per frame");
    u32_at(stco + 12) + (0..i).map(|k| u32_at(stsz + 16 + 4 * k)).sum::<usize>()
}

#[test]
fn a_missing_video_is_named_before_anything_runs() {
    // As camera 0 on the command line, and as a further camera in a rig file (named with its line).
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("rig.toml"),
        "[session]\nstatus_interval_ms = 0\n\n[[camera]]\nname = \"side\"\nkind = \"video\"\n[camera.video]\npath = \"nowhere.mp4\"\n",
    )
    .unwrap();
    for (args, names) in [
        (&["--source", "video:nowhere.mp4"][..], "[source.video]"),
        (
            &["--config", "rig.toml"][..],
            "rig.toml line 4: camera 1 (side): [camera.video]",
        ),
    ] {
        let args: Vec<&str> = [&["run"], args, &["--frames", "1", "--out", "s"]].concat();
        let out = reflex(&args, tmp.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(names)
                && stderr.contains("nowhere.mp4")
                && stderr.contains("No such file"),
            "{stderr}"
        );
        assert!(
            !tmp.path().join("s").exists(),
            "no session folder for a source that never opened"
        );
    }
}

#[test]
fn the_capture_path_allocates_nothing_per_frame() {
    // Video: decode (OpenH264's C++ allocates through malloc, not this allocator: see README, measured
    // with valgrind) and the hand-off into the frame, counted over 50 frames after 5 of warm-up.
    let config = VideoConfig {
        path: clip().display().to_string(),
        fps: VideoRate::Max,
        repeat: false,
    };
    let mut source = VideoSource::open(&config, Arc::new(ManualClock::new())).unwrap();
    let mut frame = Frame::for_source(source.info());
    for _ in 0..5 {
        source.next_frame(&mut frame).unwrap();
    }
    let n = allocations(|| {
        for _ in 0..50 {
            assert!(source.next_frame(&mut frame).unwrap());
        }
    });
    assert_eq!(n, 0, "video source: {n} allocations in 50 frames");

    // The conversions: none.
    let (w, h) = (640, 480);
    let yuyv = vec![128u8; w * h * 2];
    let y = vec![100u8; w * h];
    let uv = vec![128u8; w * h / 2];
    let mut rgb = vec![0u8; w * h * 3];
    let mut gray = vec![0u8; w * h];
    let n = allocations(|| {
        convert::yuyv_to_rgb(Plane::new(&yuyv, w * 2), w, h, YuvRange::Limited, &mut rgb).unwrap();
        convert::yuyv_to_gray(Plane::new(&yuyv, w * 2), w, h, YuvRange::Limited, &mut gray)
            .unwrap();
        convert::i420_to_rgb(
            Plane::new(&y, w),
            Plane::new(&uv, w / 2),
            Plane::new(&uv[w * h / 4..], w / 2),
            w,
            h,
            YuvRange::Limited,
            &mut rgb,
        )
        .unwrap();
        convert::nv12_to_rgb(
            Plane::new(&y, w),
            Plane::new(&uv, w),
            w,
            h,
            YuvRange::Full,
            &mut rgb,
        )
        .unwrap();
        convert::gray_to_rgb(Plane::new(&y, w), w, h, &mut rgb).unwrap();
        convert::bayer_to_rgb(
            Plane::new(&y, w),
            w,
            h,
            convert::BayerPattern::Rggb,
            &mut rgb,
        )
        .unwrap();
    });
    assert_eq!(n, 0, "conversions: {n} allocations");

    // MJPEG: zune-jpeg's own scratch buffers, reported rather than hidden.
    let mut image = vec![0u8; w * h * 3];
    for (i, px) in image.chunks_exact_mut(3).enumerate() {
        px.copy_from_slice(&[(i % 251) as u8, (i / w % 241) as u8, 90]);
    }
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 85)
        .encode(&image, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    let mut decoder = MjpegDecoder::new(w, h, jpeg.len());
    decoder.decode(&jpeg, &mut rgb).unwrap();
    let n = allocations(|| decoder.decode(&jpeg, &mut rgb).unwrap());
    println!("MJPEG 640x480: {n} allocations per frame inside zune-jpeg");
    assert!(n < 64, "MJPEG: {n} allocations per frame");
}
