//! The capture hand-off of the video-file camera, per frame: decode (read the coded frame, H.264 → the
//! decoder's I420 picture) and hand-off (the decoder's picture → the frame's RGB8 buffer, ready for
//! inference), p50/p99/max, at 640×480 (synthetic arena frames encoded with OpenH264) and at the native
//! 1024×1024 of `shared/data/clip.mp4`.
//!
//! `cargo bench -p reflex-daemon --bench capture` (release build). `REFLEX_BENCH_VIDEO=path.mp4` measures
//! another file instead of the clip.

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
    // `cargo bench` passes `--bench`; nothing else is taken.
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
    Ok(())
}
