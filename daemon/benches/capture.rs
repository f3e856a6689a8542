//! The capture hand-off of the video-file camera, per frame: decode (read the coded frame, H.264 → the
//! decoder's I420 picture) and hand-off (the decoder's picture → the frame's RGB8 buffer, ready for
//! inference), p50/p99/max, at 640×480 (synthetic arena frames encoded with OpenH264) and at the native
//! 1024×1024 of `shared/data/clip.mp4`.
//!
//! `cargo bench -p reflex-daemon --bench capture` (release build). `REFLEX_BENCH_VIDEO=path.mp4` measures
//! another file instead of the clip.
//!
//! Then a GenICam camera's hand-off through Aravis (buffer popped → newer buffers looked for, image converted
//! into the frame, buffer queued back), at 640×480 Mono8, BayerRG8 and RGB8, from Aravis's fake GigE Vision
//! camera started on 127.0.0.1 (`arv-fake-gv-camera-0.8`, Debian package aravis-tools); skipped, saying so,
//! where it or libaravis is missing. `cargo bench -p reflex-daemon --bench capture -- aravis` runs these
//! alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hdrhistogram::Histogram;
use openh264::OpenH264API;
use openh264::encoder::{Encoder, EncoderConfig, RateControlMode};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use reflex_daemon::camera::mp4_write::{CodedFrame, write_h264_mp4};
use reflex_daemon::camera::synthetic::{SyntheticCamera, SyntheticConfig};
use reflex_daemon::camera::video::{VideoConfig, VideoRate, VideoSource};
use reflex_daemon::camera::{Frame, FrameSource};
use reflex_daemon::clock::{ManualClock, MonotonicClock};
use reflex_daemon::latency::{Quantiles, new_histogram};

#[path = "../tests/support/fake_gv.rs"]
#[allow(dead_code)] // reason: shared with tests/aravis.rs, which uses all of it
mod fake_gv;

const WARMUP: usize = 20;

fn row(name: &str, h: &Histogram<u64>) {
    let q = Quantiles::of(h);
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
    println!(
        "{name:<46} {:>7} {:>9} {:>9} {:>9}",
        q.count,
        us(q.p50),
        us(q.p99),
        us(q.max)
    );
}

/// Replays `path` as fast as it decodes for up to `frames` frames after the warm-up; prints decode,
/// hand-off and their sum.
fn measure(label: &str, path: &Path, frames: usize) -> anyhow::Result<()> {
    let config = VideoConfig {
        path: path.display().to_string(),
        fps: VideoRate::Max,
        repeat: true,
    };
    let mut source = VideoSource::open(&config, Arc::new(MonotonicClock::new()))?;
    let mut frame = Frame::for_source(source.info());
    let (mut decode, mut handoff, mut total) = (new_histogram(), new_histogram(), new_histogram());
    for i in 0..WARMUP + frames {
        anyhow::ensure!(source.next_frame(&mut frame)?, "the video ended");
        if i >= WARMUP {
            let t = source.timing();
            decode.saturating_record(t.decode_ns.max(1));
            handoff.saturating_record(t.handoff_ns.max(1));
            total.saturating_record((t.decode_ns + t.handoff_ns).max(1));
        }
    }
    let info = source.info();
    println!(
        "\n{label}: {}x{} ({} frames in the file)",
        info.width,
        info.height,
        source.video().frames()
    );
    println!(
        "{:<46} {:>7} {:>9} {:>9} {:>9}",
        "per frame (µs)", "frames", "p50", "p99", "max"
    );
    row("decode (read + H.264 → I420)", &decode);
    row("hand-off (decoder I420 → frame RGB8)", &handoff);
    row("decode + hand-off", &total);
    Ok(())
}

/// `frames` frames of the synthetic arena at `width`×`height`, H.264-encoded into an MP4 at 120 fps.
fn synthetic_video(dir: &Path, width: u32, height: u32, frames: usize) -> anyhow::Result<PathBuf> {
    let synthetic = SyntheticConfig {
        width,
        height,
        fps: 120.0,
        ..SyntheticConfig::default()
    };
    let mut camera = SyntheticCamera::new(&synthetic, Arc::new(ManualClock::new()))?;
    let mut frame = Frame::for_source(camera.info());
    let config = EncoderConfig::new()
        .skip_frames(false)
        .rate_control_mode(RateControlMode::Off);
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)?;
    let mut coded = Vec::with_capacity(frames);
    for _ in 0..frames {
        camera.next_frame(&mut frame)?;
        let rgb = RgbSliceU8::new(&frame.data, (width as usize, height as usize));
        let yuv = YUVBuffer::from_rgb8_source(rgb);
        coded.push(CodedFrame {
            annex_b: encoder.encode(&yuv)?.to_vec(),
            duration: 100,
        });
    }
    let path = dir.join(format!("synthetic_{width}x{height}.mp4"));
    write_h264_mp4(&path, width as u16, height as u16, 12_000, &coded)?;
    Ok(path)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `-- v4l2` or `-- aravis` measures those cases alone.
    if std::env::args().any(|a| a == "v4l2") {
        return measure_v4l2(2000);
    }
    if std::env::args().any(|a| a == "aravis") {
        return measure_aravis(1000);
    }
    let tmp = tempfile::tempdir()?;
    let small = synthetic_video(tmp.path(), 640, 480, 240)?;
    measure("synthetic arena, H.264 (OpenH264 encoder)", &small, 1000)?;
    let clip = std::env::var_os("REFLEX_BENCH_VIDEO").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/clip.mp4"),
        PathBuf::from,
    );
    if clip.exists() {
        measure(&clip.display().to_string(), &clip, 1000)?;
    } else {
        println!("\n{}: not found, skipped", clip.display());
    }
    measure_v4l2(2000)?;
    measure_aravis(1000)
}

/// A V4L2 camera's hand-off through `V4l2Source` on the scripted `FakeDriver`, `frames` frames per format
/// after the warm-up, at 640×480: from `poll` returning to the frame ready for inference (VIDIOC_DQBUF
/// until EAGAIN, the conversion; the buffer is queued back after). Payloads are synthetic arena frames
/// as YUYV (BT.601 limited range), GREY (their luma) and MJPEG (quality 85, 4:2:2, as webcams send). The
/// fake copies a payload into its buffer just before the wait returns, so the source reads a cache-warm
/// buffer; a real driver's DMA leaves it cold, which costs more on large frames.
fn measure_v4l2(frames: usize) -> anyhow::Result<()> {
    use reflex_daemon::camera::v4l2::{FormatOffer, FourCc, Fraction, FrameIntervals, FrameSizes};
    use reflex_daemon::camera::v4l2_stream::{
        BUF_FLAG_TIMESTAMP_MONOTONIC, BUF_FLAG_TSTAMP_SRC_SOE, FakeDriver, FakeFrame, FakeSpec,
        FormatChoice, V4l2Config, V4l2Source,
    };
    let (w, h) = (640u32, 480u32);
    let synthetic = SyntheticConfig {
        width: w,
        height: h,
        fps: 120.0,
        ..SyntheticConfig::default()
    };
    let mut camera = SyntheticCamera::new(&synthetic, Arc::new(ManualClock::new()))?;
    let mut rgb = Frame::for_source(camera.info());
    let (mut yuyv, mut grey, mut mjpeg) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..8 {
        camera.next_frame(&mut rgb)?;
        let luma = |p: &[u8]| {
            let (r, g, b) = (f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
            16.0 + 219.0 * (0.299 * r + 0.587 * g + 0.114 * b) / 255.0
        };
        let mut y = Vec::with_capacity((w * h * 2) as usize);
        for pair in rgb.data.chunks_exact(6) {
            let (a, b) = (&pair[..3], &pair[3..]);
            let (ya, yb) = (luma(a), luma(b));
            let avg = |i: usize| (f64::from(a[i]) + f64::from(b[i])) / 2.0;
            let ym = (ya + yb) / 2.0;
            let u = 128.0 + 224.0 * (avg(2) - (ym - 16.0) * 255.0 / 219.0) / (255.0 * 1.772);
            let v = 128.0 + 224.0 * (avg(0) - (ym - 16.0) * 255.0 / 219.0) / (255.0 * 1.402);
            let q = |x: f64| x.round().clamp(0.0, 255.0) as u8;
            y.extend_from_slice(&[q(ya), q(u), q(yb), q(v)]);
        }
        grey.push(
            rgb.data
                .chunks_exact(3)
                .map(|p| ((luma(p) - 16.0) * 255.0 / 219.0).round() as u8)
                .collect(),
        );
        yuyv.push(y);
        let mut jpeg = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut jpeg, 85);
        encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_2);
        encoder.encode(&rgb.data, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)?;
        mjpeg.push(jpeg);
    }
    let mean_jpeg = mjpeg.iter().map(Vec::len).sum::<usize>() / mjpeg.len();
    println!(
        "
V4L2 camera through V4l2Source on the fake driver: synthetic arena, {w}x{h}, 4 buffers (MJPEG frames {:.0} KiB)",
        mean_jpeg as f64 / 1024.0
    );
    println!(
        "{:<46} {:>7} {:>9} {:>9} {:>9}",
        "hand-off per frame (µs)", "frames", "p50", "p99", "max"
    );
    // (label, format, payloads, frames done at once)
    let cases = [
        ("YUYV → RGB8", b"YUYV", &yuyv, 1),
        ("YUYV → RGB8, 3 done at once (2 skipped)", b"YUYV", &yuyv, 3),
        ("GREY → gray", b"GREY", &grey, 1),
        ("MJPEG → RGB8 (zune-jpeg)", b"MJPG", &mjpeg, 1),
    ];
    for (label, code, payloads, burst) in cases {
        let offer = FormatOffer {
            fourcc: FourCc::new(*code),
            sizes: FrameSizes::Discrete(vec![(w, h)]),
            intervals: vec![(
                w,
                h,
                FrameIntervals::Discrete(vec![Fraction { num: 1, den: 30 }]),
            )],
        };
        let (driver, fake) = FakeDriver::new(FakeSpec::camera(vec![offer], payloads.clone()));
        let config = V4l2Config {
            width: w,
            height: h,
            format: FormatChoice::Only(FourCc::new(*code)),
            ..V4l2Config::default()
        };
        let mut source = V4l2Source::with_driver(driver, &config, Arc::new(MonotonicClock::new()))?;
        let mut frame = Frame::for_source(source.info());
        let mut handoff = new_histogram();
        let mut sequence = 0u32;
        for i in 0..WARMUP + frames {
            for _ in 0..burst {
                fake.push(FakeFrame {
                    payload: sequence as usize % payloads.len(),
                    sequence,
                    timestamp_ns: 1,
                    flags: BUF_FLAG_TIMESTAMP_MONOTONIC | BUF_FLAG_TSTAMP_SRC_SOE,
                });
                sequence += 1;
            }
            anyhow::ensure!(source.next_frame(&mut frame)?, "the stream ended");
            if i >= WARMUP {
                handoff.saturating_record(source.handoff_ns().max(1));
            }
        }
        row(label, &handoff);
    }
    Ok(())
}

/// The fake GigE Vision camera at 640×480 and 200 frames/s, `frames` frames per pixel format after the
/// warm-up: the hand-off per frame, and the wait for the next frame beside it.
fn measure_aravis(frames: usize) -> anyhow::Result<()> {
    use reflex_daemon::camera::aravis::{AravisConfig, AravisSource};
    if let Some(why) = fake_gv::unavailable() {
        println!("\nGenICam (Aravis fake camera): skipped: {why}");
        return Ok(());
    }
    let camera = fake_gv::FakeCamera::start("RFXBENCH").map_err(anyhow::Error::msg)?;
    println!(
        "\nGenICam camera through Aravis: {} on 127.0.0.1, 640x480 at 200 frames/s",
        camera.id
    );
    println!(
        "{:<46} {:>7} {:>9} {:>9} {:>9}",
        "hand-off per frame (µs)", "frames", "p50", "p99", "max"
    );
    for format in ["Mono8", "BayerRG8", "RGB8"] {
        let config = AravisConfig {
            // By address: Aravis then uses the loopback interface (see tests/aravis.rs, `config`).
            camera: fake_gv::ADDRESS.into(),
            width: 640,
            height: 480,
            fps: Some(200.0),
            pixel_format: format.into(),
            ..AravisConfig::default()
        };
        let mut source = AravisSource::open(&config, Arc::new(MonotonicClock::new()))?;
        let mut frame = Frame::for_source(source.info());
        let mut handoff = new_histogram();
        for i in 0..WARMUP + frames {
            anyhow::ensure!(source.next_frame(&mut frame)?, "the camera stopped");
            if i >= WARMUP {
                handoff.saturating_record(source.timing().handoff_ns.max(1));
            }
        }
        let out = if format == "Mono8" { "gray" } else { "RGB8" };
        row(&format!("{format} → {out}"), &handoff);
        let stats = source.stats();
        println!(
            "{:<46} skipped {} incomplete {} underruns {}",
            "", stats.skipped, stats.incomplete, stats.underruns
        );
    }
    Ok(())
}
