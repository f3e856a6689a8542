//! V4L2 cameras without a camera: `reflex run --source v4l:…` on a node that does not exist must fail
//! cleanly before anything is written, and the streaming path (on the scripted `FakeDriver`) must allocate
//! nothing per frame, counted by this binary's allocator, per thread.

#[path = "support/run.rs"]
mod run;
use run::reflex;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

use std::sync::Arc;

use reflex_daemon::camera::v4l2::{FormatOffer, FourCc, Fraction, FrameIntervals, FrameSizes};
use reflex_daemon::camera::v4l2_stream::{
    BUF_FLAG_TIMESTAMP_MONOTONIC, BUF_FLAG_TSTAMP_SRC_SOE, FakeDriver, FakeFrame, FakeSpec,
    FormatChoice, V4l2Config, V4l2Source,
};
use reflex_daemon::camera::{Frame, FrameSource};
use reflex_daemon::clock::ManualClock;

#[test]
fn a_missing_camera_is_named_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    for source in ["v4l:/dev/video99", "v4l2:99"] {
        let out = reflex(
            &[
                "run", "--source", source, "--frames", "1", "--out", "s", "--quiet",
            ],
            tmp.path(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{source}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains("[source.v4l2]")
                && stderr.contains("camera /dev/video99: open failed: ENOENT")
                && stderr.contains("reflex devices"),
            "{source}: {stderr}"
        );
        assert!(
            !tmp.path().join("s").exists(),
            "no session folder for a camera that never opened"
        );
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written at all"
    );
}

fn offer(code: &[u8; 4], w: u32, h: u32) -> FormatOffer {
    FormatOffer {
        fourcc: FourCc::new(*code),
        sizes: FrameSizes::Discrete(vec![(w, h)]),
        intervals: vec![(
            w,
            h,
            FrameIntervals::Discrete(vec![Fraction { num: 1, den: 30 }]),
        )],
    }
}

/// A 640x480 source in `code` on the fake driver, with these payloads.
fn source(
    code: &[u8; 4],
    payloads: Vec<Vec<u8>>,
) -> (
    V4l2Source<FakeDriver>,
    reflex_daemon::camera::v4l2_stream::FakeCamera,
) {
    let (w, h) = (640, 480);
    let (driver, camera) = FakeDriver::new(FakeSpec::camera(vec![offer(code, w, h)], payloads));
    let config = V4l2Config {
        device: "/dev/video0".into(),
        width: w,
        height: h,
        fps: 30.0,
        format: FormatChoice::Only(FourCc::new(*code)),
        ..V4l2Config::default()
    };
    let clock = Arc::new(ManualClock::new());
    clock.set_ns(10_000_000_000);
    (
        V4l2Source::with_driver(driver, &config, clock).unwrap(),
        camera,
    )
}

/// Allocations over 50 frames after 5 of warm-up; every fifth iteration three frames are done at once, so
/// the latest-frame-wins drain runs too.
fn allocations_per_50_frames(code: &[u8; 4], payloads: Vec<Vec<u8>>) -> u64 {
    let (mut source, camera) = source(code, payloads);
    let mut frame = Frame::for_source(source.info());
    let mut sequence = 0;
    let mut step = |source: &mut V4l2Source<FakeDriver>, frame: &mut Frame, burst: u32| {
        for _ in 0..burst {
            camera.push(FakeFrame {
                payload: 0,
                sequence,
                timestamp_ns: 1_000_000 * u64::from(sequence),
                flags: BUF_FLAG_TIMESTAMP_MONOTONIC | BUF_FLAG_TSTAMP_SRC_SOE,
            });
            sequence += 1;
        }
        assert!(source.next_frame(frame).unwrap());
        assert_eq!(frame.id, u64::from(sequence - 1));
    };
    for _ in 0..5 {
        step(&mut source, &mut frame, 1);
    }
    let n = allocations(|| {
        for i in 0..50 {
            step(&mut source, &mut frame, if i % 5 == 0 { 3 } else { 1 });
        }
    });
    assert_eq!(source.skipped(), 2 * 10, "the bursts' older frames");
    n
}

#[test]
fn the_v4l2_capture_path_allocates_nothing_per_frame() {
    let (w, h) = (640usize, 480usize);
    let yuyv: Vec<u8> = (0..w * h)
        .flat_map(|i| [(i % 219 + 16) as u8, (i % 200 + 20) as u8])
        .collect();
    let n = allocations_per_50_frames(b"YUYV", vec![yuyv]);
    assert_eq!(n, 0, "YUYV: {n} allocations in 50 frames");
    let grey: Vec<u8> = (0..w * h).map(|i| (i % 251) as u8).collect();
    let n = allocations_per_50_frames(b"GREY", vec![grey]);
    assert_eq!(n, 0, "GREY: {n} allocations in 50 frames");

    // MJPEG: zune-jpeg's own scratch buffers, reported rather than hidden.
    let image: Vec<u8> = (0..w * h)
        .flat_map(|i| [(i % 251) as u8, (i / w % 241) as u8, 90])
        .collect();
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 85)
        .encode(&image, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    let n = allocations_per_50_frames(b"MJPG", vec![jpeg]);
    println!(
        "MJPEG 640x480 through V4l2Source: {} allocations per frame inside zune-jpeg",
        n as f64 / 50.0
    );
    assert!(n < 64 * 50, "MJPEG: {n} allocations in 50 frames");
}
