//! GenICam cameras through Aravis, against Aravis's own fake GigE Vision camera in a separate process on
//! 127.0.0.1 (real GVCP/GVSP over loopback): discovery, streaming with the camera's timestamps and frame ids,
//! exposure and gain changing the image, a pixel format the camera lacks, the camera killed mid-stream (and
//! mid-session: outputs off, files valid), a whole `reflex run` session, and what the capture path allocates
//! per frame.
//!
//! The fake camera's image is known: pixel (x, y) of the frame with GigE Vision id `n` is
//! `((x + y + n) mod 255) × s`, clamped to 0–255, with `s = 1 + gain + log10(exposure_us / 10000)`
//! (`arvfakecamera.c`).
//!
//! Without libaravis or the fake camera, each test prints why and passes; `REFLEX_REQUIRE_ARAVIS=1` (set by
//! tools/test.sh, which installs both) makes that a failure. The fake cameras run one at a time.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

#[path = "support/fake_gv.rs"]
mod fake_gv;
#[path = "support/run.rs"]
mod run;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use fake_gv::FakeCamera;
use reflex_daemon::camera::aravis::{AravisConfig, AravisSource};
use reflex_daemon::camera::{CameraError, Frame, FrameSource, PixelFormat};
use reflex_daemon::clock::{Clock, MonotonicClock};
use run::{frame_stamps, reflex, summary};

/// One fake camera at a time: they would share 127.0.0.1's GVCP port.
static ONE_CAMERA: Mutex<()> = Mutex::new(());

/// A fake camera with serial `serial`, with the lock that keeps others off 127.0.0.1 while it runs; `None`
/// (after saying why) when this machine cannot run one and `REFLEX_REQUIRE_ARAVIS` is not `1`.
fn fake_camera(serial: &str) -> Option<(FakeCamera, MutexGuard<'static, ()>)> {
    if let Some(why) = fake_gv::unavailable() {
        if std::env::var("REFLEX_REQUIRE_ARAVIS").is_ok_and(|v| v == "1") {
            panic!(
                "{why} (REFLEX_REQUIRE_ARAVIS=1: tools/test.sh installs libaravis-0.8-0 and aravis-tools)"
            );
        }
        // Once, and past the test harness's capture (which only takes the print macros), so a plain
        // `cargo test` shows it.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            let line = format!(
                "tests/aravis.rs: GenICam tests skipped: {why}; tools/test.sh installs libaravis-0.8-0 and \
                 aravis-tools (REFLEX_REQUIRE_ARAVIS=1 makes this a failure)\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        });
        return None;
    }
    let lock = ONE_CAMERA.lock().unwrap_or_else(|e| e.into_inner());
    let camera = FakeCamera::start(serial).unwrap_or_else(|e| panic!("fake camera: {e}"));
    Some((camera, lock))
}

/// 640×480 Mono8 at 100 frames/s, exposure 10 ms and gain 0 (scale 1 in the fake camera's image). The
/// camera is opened by its address: Aravis then talks to it on the loopback interface, the one it sends on.
/// (Opened by id, Aravis uses the interface whose discovery socket heard it first, which may be another of
/// this host's; as root it then listens for the stream with a packet socket on that interface and never
/// sees the loopback's packets. A real camera answers on its own link only.)
fn config(_camera: &FakeCamera) -> AravisConfig {
    AravisConfig {
        camera: fake_gv::ADDRESS.into(),
        width: 640,
        height: 480,
        fps: Some(100.0),
        exposure_us: Some(10_000.0),
        gain_db: Some(0.0),
        ..AravisConfig::default()
    }
}

fn open(config: &AravisConfig) -> AravisSource {
    AravisSource::open(config, Arc::new(MonotonicClock::new()))
        .unwrap_or_else(|e| panic!("opening {}: {e}", config.camera))
}

/// The fake camera's pixel at (x, y) for GigE Vision frame id `n`, scale `s`.
fn pattern(x: usize, y: usize, n: u64, s: f64) -> u8 {
    (((x as u64 + y as u64 + n) % 255) as f64 * s).clamp(0.0, 255.0) as u8
}

/// The frame's GigE Vision id modulo 255, read from its first pixel at scale 1.
fn id_mod_255(frame: &Frame) -> u64 {
    u64::from(frame.data[0])
}

/// Whether a gray frame is the fake camera's pattern at scale `s` for some frame id; returns that id mod 255.
fn matches_pattern(frame: &Frame, s: f64) -> Option<u64> {
    let w = frame.width as usize;
    (0..255u64).find(|&n| {
        frame
            .data
            .chunks_exact(w)
            .enumerate()
            .step_by(37)
            .all(|(y, row)| {
                row.iter()
                    .enumerate()
                    .step_by(13)
                    .all(|(x, &v)| v == pattern(x, y, n, s))
            })
    })
}

#[test]
fn the_fake_camera_is_listed_by_aravis_and_by_reflex_devices() {
    let Some((camera, _lock)) = fake_camera("RFXLIST") else {
        return;
    };
    let devices = reflex_daemon::camera::aravis::list_devices().unwrap();
    let entry = devices
        .iter()
        .find(|d| d.id == camera.id)
        .unwrap_or_else(|| panic!("{} not in {devices:?}", camera.id));
    assert_eq!(
        (
            entry.vendor.as_str(),
            entry.model.as_str(),
            entry.serial.as_str(),
            entry.address.as_str(),
            entry.protocol.as_str()
        ),
        ("Aravis", "Fake", "RFXLIST", "127.0.0.1", "GigEVision")
    );

    // An empty name opens the first camera found, under the id discovery lists.
    if devices.len() == 1 {
        let first = AravisConfig {
            camera: String::new(),
            ..config(&camera)
        };
        assert_eq!(open(&first).info().name, "aravis(Aravis-Fake-RFXLIST)");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .arg("devices")
        .output()
        .expect("run reflex devices");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l
                .starts_with("aravis:Aravis-Fake-RFXLIST  Aravis Fake  serial RFXLIST  127.0.0.1")),
        "{stdout}"
    );
}

#[test]
fn frames_stream_with_rising_ids_and_camera_times_mapped_before_capture() {
    let Some((camera, _lock)) = fake_camera("RFXSTREAM") else {
        return;
    };
    let clock = MonotonicClock::new();
    let mut source = open(&config(&camera));
    let info = source.info().clone();
    assert_eq!(info.name, "aravis(127.0.0.1)");
    assert_eq!(
        (info.width, info.height, info.format),
        (640, 480, PixelFormat::Gray8)
    );
    assert!((info.fps - 100.0).abs() < 1e-6, "{}", info.fps);
    assert_eq!(source.exposure_us(), 10_000.0);
    assert_eq!(source.gain().unwrap(), 0.0);

    let mut frame = Frame::for_source(&info);
    let mut seen: Vec<(u64, u64, u64, u64)> = Vec::new();
    for _ in 0..40 {
        assert!(source.next_frame(&mut frame).unwrap());
        let now = clock.now_ns();
        assert!(frame.t_capture_ns <= now);
        // The image is the fake camera's pattern for a frame whose id agrees with `Frame::id`.
        let n = matches_pattern(&frame, 1.0).expect("the fake camera's pattern at scale 1");
        seen.push((
            frame.id,
            source.timing().camera_timestamp_ns,
            frame.t_exposure_ns,
            frame.t_capture_ns,
        ));
        assert_eq!(n, id_mod_255(&frame));
    }
    assert_eq!(seen[0].0, 0, "ids count from 0");
    for w in seen.windows(2) {
        let ((id_a, cam_a, exp_a, _), (id_b, cam_b, exp_b, _)) = (w[0], w[1]);
        assert!(id_b > id_a, "ids rise: {w:?}");
        assert!(cam_b > cam_a, "camera timestamps rise: {w:?}");
        assert!(exp_b > exp_a, "mapped exposure times rise: {w:?}");
    }
    // The camera's clock counts 10 ms a frame (its first frame comes whenever acquisition started; the fake
    // camera then sends on a 10 ms grid of its clock).
    let (first, last) = (seen[1], seen[39]);
    let camera_period = (last.1 - first.1) as f64 / (last.0 - first.0) as f64;
    assert!(
        (9.5e6..10.5e6).contains(&camera_period),
        "{camera_period} ns a frame"
    );
    // The mapped times keep the camera's spacing, but where a frame faster than all before it lowers the
    // line (the first frames after the start are slow): never wider, and not by much in all.
    let mut lowered_ns = 0;
    for w in seen.windows(2) {
        let (camera_ns, mapped_ns) = (w[1].1 - w[0].1, w[1].2 - w[0].2);
        assert!(mapped_ns <= camera_ns + 1, "{w:?}");
        lowered_ns += camera_ns - mapped_ns;
    }
    assert!(
        lowered_ns < 20_000_000,
        "the line came down {lowered_ns} ns"
    );
    for &(id, _, exposure, capture) in &seen {
        assert!(
            exposure < capture,
            "frame {id}: exposure {exposure} ≥ capture {capture}"
        );
        // On the host's monotonic clock, not the wall clock: the capture follows within a fraction of a second.
        assert!(
            capture - exposure < 500_000_000,
            "frame {id}: {} ns",
            capture - exposure
        );
    }
    let stats = source.stats();
    assert_eq!(stats.delivered, 40);
    assert_eq!(stats.clock_steps, 0, "{stats:?}");
    // Frames never delivered (skipped for a newer one, or incomplete) are exactly the gaps in the ids.
    assert_eq!(
        seen[39].0 - seen[0].0 + 1 - 40,
        stats.skipped + stats.incomplete,
        "{stats:?}"
    );
}

#[test]
fn exposure_and_gain_change_the_image() {
    let Some((camera, _lock)) = fake_camera("RFXEXPO") else {
        return;
    };
    let mut source = open(&config(&camera));
    let mut frame = Frame::for_source(source.info());
    source.next_frame(&mut frame).unwrap();
    assert!(matches_pattern(&frame, 1.0).is_some());

    // 100 ms: scale 1 + log10(10) = 2. Frames exposed before the change may still be queued: the new
    // exposure shows within the buffers' worth of frames.
    assert_eq!(source.set_exposure_us(100_000.0).unwrap(), 100_000.0);
    assert_eq!(source.exposure_us(), 100_000.0);
    let doubled = (0..10).any(|_| {
        source.next_frame(&mut frame).unwrap();
        matches_pattern(&frame, 2.0).is_some()
    });
    assert!(
        doubled,
        "no frame at twice the brightness after exposure 100 ms"
    );

    // 1 ms: scale 1 + log10(0.1) = 0, a black image.
    assert_eq!(source.set_exposure_us(1_000.0).unwrap(), 1_000.0);
    let black = (0..10).any(|_| {
        source.next_frame(&mut frame).unwrap();
        frame.data.iter().all(|&v| v == 0)
    });
    assert!(black, "no black frame after exposure 1 ms");
    drop(source);

    // Gain (the fake camera has only a raw gain): 2 at 10 ms gives scale 3.
    let gained = AravisConfig {
        gain_db: Some(2.0),
        ..config(&camera)
    };
    let mut source = open(&gained);
    assert_eq!(source.gain().unwrap(), 2.0);
    source.next_frame(&mut frame).unwrap();
    assert!(
        matches_pattern(&frame, 3.0).is_some(),
        "gain 2: not at scale 3"
    );
}

#[test]
fn bayer_and_rgb_formats_come_as_rgb_frames() {
    let Some((camera, _lock)) = fake_camera("RFXBAYER") else {
        return;
    };
    for format in ["BayerRG8", "RGB8"] {
        let c = AravisConfig {
            pixel_format: format.into(),
            ..config(&camera)
        };
        let mut source = open(&c);
        assert_eq!(source.info().format, PixelFormat::Rgb8, "{format}");
        let mut frame = Frame::for_source(source.info());
        for _ in 0..3 {
            source.next_frame(&mut frame).unwrap();
        }
        assert_eq!(frame.data.len(), 640 * 480 * 3);
        // The fake camera paints a colour map along the diagonal: red and blue differ somewhere.
        assert!(
            frame
                .data
                .chunks_exact(3)
                .any(|p| p[0].abs_diff(p[2]) > 100),
            "{format}: no colour"
        );
    }
}

#[test]
fn a_pixel_format_the_camera_lacks_is_refused_with_what_it_offers() {
    let Some((camera, _lock)) = fake_camera("RFXFORMAT") else {
        return;
    };
    let c = AravisConfig {
        pixel_format: "BGR8".into(),
        ..config(&camera)
    };
    let e = AravisSource::open(&c, Arc::new(MonotonicClock::new())).unwrap_err();
    assert!(matches!(e, CameraError::Open(_)), "{e:?}");
    let e = e.to_string();
    for part in [
        "aravis camera `127.0.0.1`: [source.aravis] pixel_format: `BGR8` is not offered; ",
        "the camera offers ",
        " (reflex takes ",
    ] {
        assert!(e.contains(part), "`{part}` missing from: {e}");
    }
    // Every format the fake camera has, in the camera's order; those reflex converts again in brackets.
    let (offers, takes) = e
        .split_once("the camera offers ")
        .unwrap()
        .1
        .split_once(" (reflex takes ")
        .unwrap();
    let mut offers: Vec<&str> = offers.split(", ").collect();
    let mut takes: Vec<&str> = takes.trim_end_matches(')').split(", ").collect();
    offers.sort_unstable();
    takes.sort_unstable();
    assert_eq!(
        offers,
        [
            "BayerBG8", "BayerGB8", "BayerGR8", "BayerRG8", "Mono16", "Mono8", "RGB8"
        ]
    );
    assert_eq!(
        takes,
        [
            "BayerBG8", "BayerGB8", "BayerGR8", "BayerRG8", "Mono8", "RGB8"
        ]
    );

    let c = AravisConfig {
        trigger: "Line7".into(),
        ..config(&camera)
    };
    let e = AravisSource::open(&c, Arc::new(MonotonicClock::new()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`Line7` is not a trigger source")
            && e.contains("Software")
            && e.contains("Line0"),
        "{e}"
    );

    let c = AravisConfig {
        camera: "Nobody-Here-0".into(),
        ..config(&camera)
    };
    let e = AravisSource::open(&c, Arc::new(MonotonicClock::new()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("camera `Nobody-Here-0`") && e.contains("reflex devices"),
        "{e}"
    );
}

#[test]
fn a_hardware_trigger_that_never_fires_times_out_naming_the_camera() {
    let Some((camera, _lock)) = fake_camera("RFXTRIG") else {
        return;
    };
    let c = AravisConfig {
        trigger: "Line0".into(),
        timeout_ms: 300,
        ..config(&camera)
    };
    let mut source = open(&c);
    assert!(
        (source.info().fps - 100.0).abs() < 1e-9,
        "the configured rate, for buffer sizes"
    );
    let mut frame = Frame::for_source(source.info());
    let e = source.next_frame(&mut frame).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, CameraError::Stream(_)), "{e:?}");
    assert!(
        text.contains("aravis camera `127.0.0.1`")
            && text.contains("no frame for 300 ms")
            && text.contains("timeout_ms"),
        "{text}"
    );
}

#[test]
fn killing_the_camera_mid_stream_is_a_stream_error_naming_it() {
    let Some((mut camera, _lock)) = fake_camera("RFXKILL") else {
        return;
    };
    let c = AravisConfig {
        timeout_ms: 500,
        ..config(&camera)
    };
    let mut source = open(&c);
    let mut frame = Frame::for_source(source.info());
    for _ in 0..5 {
        assert!(source.next_frame(&mut frame).unwrap());
    }
    camera.kill();
    // Frames already received may still come (at most the buffers); then the stream breaks.
    let mut after = 0;
    let e = loop {
        match source.next_frame(&mut frame) {
            Ok(true) => after += 1,
            Ok(false) => panic!("the stream ended instead of failing"),
            Err(e) => break e,
        }
        assert!(after <= 8, "{after} frames after the camera was killed");
    };
    assert!(matches!(e, CameraError::Stream(_)), "{e:?}");
    assert!(e.to_string().contains("aravis camera `127.0.0.1`"), "{e}");
    // Dropping the source after its camera died returns (stop acquisition fails quietly).
    drop(source);
}

#[test]
fn a_session_runs_on_the_camera_and_names_it() {
    let Some((_camera, _lock)) = fake_camera("RFXRUN") else {
        return;
    };
    // The camera from the command line, its settings from the rig's file.
    let tmp = tempfile::tempdir().unwrap();
    let rig = tmp.path().join("rig.toml");
    std::fs::write(
        &rig,
        "[source.aravis]\nwidth = 640\nheight = 480\npixel_format = \"RGB8\"\nfps = 100.0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(["run", "--config"])
        .arg(&rig)
        .args([
            "--source",
            "aravis:127.0.0.1",
            "--frames",
            "20",
            "--backend",
            "tract",
        ])
        .args(["--out", "s", "-q"])
        .current_dir(tmp.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run reflex");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tmp.path().join("s");
    let summary = summary(&dir);
    assert_eq!(summary["source"], "aravis(127.0.0.1)");
    assert_eq!(summary["complete"], true, "{summary}");
    assert_eq!(summary["frames"]["captured"], 20);
    let stamps = frame_stamps(&dir.join("frames.csv"));
    assert!(!stamps.is_empty());
    assert!(
        stamps
            .windows(2)
            .all(|w| w[1].0 > w[0].0 && w[1].1 > w[0].1),
        "{stamps:?}"
    );
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(
        config.contains("kind = \"aravis\"") && config.contains("127.0.0.1"),
        "{config}"
    );
    assert!(Path::new(&dir).join("latency.hlog").exists());
}

#[test]
fn a_genicam_camera_beside_the_synthetic_one_shares_its_clock() {
    let Some((_camera, _lock)) = fake_camera("RFXTWO") else {
        return;
    };
    // Camera 0 synthetic (drives the loop), camera 1 the GenICam camera with its own clock, mapped onto the
    // host's: both cameras' exposures interleave on the one session clock.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("rig.toml"),
        "[session]\nstatus_interval_ms = 0\n\n[[camera]]\nname = \"top\"\nkind = \"aravis\"\n[camera.aravis]\ncamera = \"127.0.0.1\"\nwidth = 640\nheight = 480\nfps = 100.0\n",
    )
    .unwrap();
    let out = reflex(
        &[
            "run",
            "--config",
            "rig.toml",
            "--frames",
            "120",
            "--backend",
            "tract",
            "--out",
            "s",
            "-q",
        ],
        tmp.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let dir = tmp.path().join("s");
    let summary = summary(&dir);
    assert_eq!(summary["complete"], true, "{summary}");
    let top = &summary["cameras"][1];
    assert_eq!(top["source"], "aravis(127.0.0.1)", "{summary}");
    assert_eq!(top["name"], "top");
    let start = summary["start_ns"].as_u64().unwrap();
    let end = start + (summary["duration_s"].as_f64().unwrap() * 1e9) as u64;

    let cam0 = frame_stamps(&dir.join("frames.csv"));
    let cam1 = frame_stamps(&dir.join("camera1/frames.csv"));
    assert!(!cam0.is_empty() && !cam1.is_empty());
    assert_eq!(
        cam1.len() as u64,
        top["frames"]["processed"].as_u64().unwrap()
    );
    for &(id, exposure, capture) in &cam1 {
        assert!(
            (start..=end).contains(&exposure) && exposure <= capture,
            "camera 1 frame {id}: exposure {exposure} (camera time mapped) within the session {start}..={end}, before its capture {capture}"
        );
    }
    assert!(cam1.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 > w[0].1));
    // The two cameras ran at the same time: their exposure spans overlap on the one clock.
    let span = |c: &[(u64, u64, u64)]| (c[0].1, c[c.len() - 1].1);
    let ((a0, a1), (b0, b1)) = (span(&cam0), span(&cam1));
    assert!(
        a0.max(b0) < a1.min(b1),
        "camera 0 exposed {a0}..{a1}, camera 1 {b0}..{b1}"
    );
}

#[test]
fn a_camera_lost_mid_session_ends_it_cleanly_with_outputs_off() {
    let Some((mut camera, _lock)) = fake_camera("RFXLOST") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rig = tmp.path().join("rig.toml");
    // A trigger that holds channel 0 high while the nose is anywhere, so an output is on when the camera goes.
    std::fs::write(
        &rig,
        "[source.aravis]\nwidth = 640\nheight = 480\npixel_format = \"Mono8\"\nfps = 100.0\ntimeout_ms = 500\n\n\
         [[trigger]]\nname = \"anywhere\"\nkeypoint = \"nose\"\nzone = { shape = \"rect\", x0 = -1e6, y0 = -1e6, x1 = 1e6, y1 = 1e6 }\nunknown = \"false\"\nmin_score = 0.0\nchannel = 0\n",
    )
    .unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(["run", "--config"])
        .arg(&rig)
        .args(["--source", "aravis:127.0.0.1", "--backend", "tract"])
        .args(["--out", "s", "-q"])
        .current_dir(tmp.path())
        .env("RUST_BACKTRACE", "0")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run reflex");
    // The session is streaming once frames reach frames.csv (the writer flushes every ~10 ms).
    let dir = tmp.path().join("s");
    let clock = MonotonicClock::new();
    while std::fs::read_to_string(dir.join("frames.csv")).map_or(0, |t| t.lines().count()) < 20 {
        assert!(
            run.try_wait().unwrap().is_none(),
            "the session ended before streaming"
        );
        // A poll interval while the condition is re-read, not a guess at how long anything takes.
        clock.sleep_until(clock.now_ns() + 10_000_000);
    }
    camera.kill();
    let out = run.wait_with_output().expect("reflex ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("aravis camera `127.0.0.1`"), "{stderr}");
    let summary = summary(&dir);
    assert_eq!(summary["complete"], false, "{summary}");
    assert!(
        summary["error"]
            .as_str()
            .unwrap()
            .contains("aravis camera `127.0.0.1`"),
        "{summary}"
    );
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line whole"))
        .collect();
    let high = lines
        .iter()
        .position(|e| e["command"] == "set_level" && e["high"] == true)
        .expect("channel 0 went high while streaming");
    let low = lines
        .iter()
        .rposition(|e| e["command"] == "set_level" && e["high"] == false)
        .expect("channel 0 set low");
    let all_off = lines
        .iter()
        .rposition(|e| e["command"] == "all_off")
        .expect("all outputs off");
    assert!(high < low && low < all_off, "{events}");
    assert_eq!(lines[all_off]["shutdown"], true);
    // poses.csv holds whole lines only, up to the loss.
    let poses = std::fs::read_to_string(dir.join("poses.csv")).unwrap();
    assert!(poses.ends_with('\n') && poses.lines().count() > 20);
}

#[test]
fn the_capture_path_allocates_nothing_per_frame() {
    let Some((camera, _lock)) = fake_camera("RFXALLOC") else {
        return;
    };
    for format in ["Mono8", "BayerRG8"] {
        let c = AravisConfig {
            pixel_format: format.into(),
            ..config(&camera)
        };
        let mut source = open(&c);
        let mut frame = Frame::for_source(source.info());
        for _ in 0..5 {
            source.next_frame(&mut frame).unwrap();
        }
        // Aravis's own allocations (GLib's malloc) are not this allocator's: this counts reflex's side.
        let n = allocations(|| {
            for _ in 0..30 {
                assert!(source.next_frame(&mut frame).unwrap());
            }
        });
        assert_eq!(n, 0, "{format}: {n} allocations in 30 frames");
    }
}
