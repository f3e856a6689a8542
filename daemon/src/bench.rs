//! `reflex bench` and `reflex model bench`: where a frame's time goes, stage by stage, on each inference
//! backend, run as fast as possible (no pacing, no threads), so numbers from different machines or builds
//! compare directly.

use std::fmt::Write as _;
use std::sync::Arc;

use hdrhistogram::Histogram;

use crate::camera::synthetic::{SyntheticCamera, SyntheticConfig};
use crate::camera::{Frame, FrameSource};
use crate::clock::{Clock, ManualClock, MonotonicClock};
use crate::inference::{self, BackendChoice, ModelConfig, PoseModel};
use crate::latency::{Quantiles, new_histogram};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Frames measured per backend (after `warmup`).
    pub frames: usize,
    /// Frames run first and not measured.
    pub warmup: usize,
    /// Backends to measure, in order.
    pub backends: Vec<BackendChoice>,
    /// The model and its runtime settings (`backend` is overridden per run).
    pub model: ModelConfig,
}

fn header(out: &mut String) {
    let _ = writeln!(
        out,
        "{:<34} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "per frame (µs)", "frames", "p50", "p90", "p99", "max"
    );
}

fn row(out: &mut String, name: &str, h: &Histogram<u64>) {
    let q = Quantiles::of(h);
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
    let _ = writeln!(
        out,
        "{name:<34} {:>8} {:>9} {:>9} {:>9} {:>9}",
        q.count,
        us(q.p50),
        us(q.p90),
        us(q.p99),
        us(q.max)
    );
}

/// Run the benchmark; returns the table to print.
pub fn run(opts: &BenchOptions) -> anyhow::Result<String> {
    let clock = MonotonicClock::new();
    let mut out = String::new();
    header(&mut out);
    for &backend in &opts.backends {
        let config = ModelConfig {
            backend,
            ..opts.model.clone()
        };
        let mut model = inference::load(&config, &mut |_| {})?;
        let mut camera =
            SyntheticCamera::new(&SyntheticConfig::default(), Arc::new(ManualClock::new()))?;
        let mut frame = Frame::for_source(camera.info());
        model.prepare(frame.width, frame.height, frame.format)?;
        let (mut render, mut pre, mut net, mut decode) = (
            new_histogram(),
            new_histogram(),
            new_histogram(),
            new_histogram(),
        );
        for i in 0..opts.warmup + opts.frames {
            let t0 = clock.now_ns();
            camera.next_frame(&mut frame)?;
            let t1 = clock.now_ns();
            model.stage_input(&frame)?;
            let t2 = clock.now_ns();
            model.stage_run()?;
            let t3 = clock.now_ns();
            model.stage_decode(&frame)?;
            let t4 = clock.now_ns();
            if i >= opts.warmup {
                render.saturating_record((t1 - t0).max(1));
                pre.saturating_record((t2 - t1).max(1));
                net.saturating_record((t3 - t2).max(1));
                decode.saturating_record((t4 - t3).max(1));
            }
        }
        let label = model.backend();
        if opts.backends.first() == Some(&backend) {
            row(&mut out, "synthetic render", &render);
            row(&mut out, "pre-process (u8 → f32)", &pre);
            row(&mut out, "decode (DeepLabCut argmax)", &decode);
        }
        row(&mut out, &format!("network ({label})"), &net);
    }
    Ok(out)
}

/// What `reflex model bench` measures.
#[derive(Debug, Clone)]
pub struct ModelBenchOptions {
    /// Frames measured per backend (after `warmup`).
    pub frames: usize,
    /// Frames run first and not measured.
    pub warmup: usize,
    /// Backends to measure, in order; one that cannot run the model is skipped with its reason.
    pub backends: Vec<BackendChoice>,
    /// The model (`backend` is overridden per run).
    pub model: ModelConfig,
    /// The frames, cycled; they should all have one size.
    pub images: Vec<Frame>,
    /// What the frames are, for the report.
    pub images_label: String,
}

/// Time pre-processing, the network and decoding of a model folder on each backend; returns the report.
pub fn run_model(opts: &ModelBenchOptions) -> anyhow::Result<String> {
    anyhow::ensure!(!opts.images.is_empty(), "no frames to run");
    let clock = MonotonicClock::new();
    let mut out = String::new();
    let first = &opts.images[0];
    let _ = writeln!(
        out,
        "model: {}\nframes: {} ({}x{}), {} measured per backend after {} warm-up",
        opts.model.path, opts.images_label, first.width, first.height, opts.frames, opts.warmup
    );
    for &backend in &opts.backends {
        let config = ModelConfig {
            backend,
            ..opts.model.clone()
        };
        let name = match backend {
            BackendChoice::Auto => "auto",
            BackendChoice::Onnxruntime => "onnxruntime",
            BackendChoice::Tract => "tract",
        };
        let loaded = inference::load(&config, &mut |_| {}).and_then(|mut m| {
            m.prepare(first.width, first.height, first.format)?;
            Ok(m)
        });
        let mut model = match loaded {
            Ok(m) => m,
            Err(e) => {
                let _ = writeln!(out, "\n{name}: skipped: {e}");
                continue;
            }
        };
        let (mut pre, mut net, mut decode, mut total) = (
            new_histogram(),
            new_histogram(),
            new_histogram(),
            new_histogram(),
        );
        let mut instances = 0usize;
        for i in 0..opts.warmup + opts.frames {
            let frame = &opts.images[i % opts.images.len()];
            let t0 = clock.now_ns();
            model.stage_input(frame)?;
            let t1 = clock.now_ns();
            model.stage_run()?;
            let t2 = clock.now_ns();
            let n = model.stage_decode(frame)?;
            let t3 = clock.now_ns();
            if i >= opts.warmup {
                instances += n;
                pre.saturating_record((t1 - t0).max(1));
                net.saturating_record((t2 - t1).max(1));
                decode.saturating_record((t3 - t2).max(1));
                total.saturating_record((t3 - t0).max(1));
            }
        }
        let second_stage = model.description().networks.len() > 1;
        let _ = writeln!(
            out,
            "\n{} ({:.2} instances per frame)",
            model.backend(),
            instances as f64 / opts.frames.max(1) as f64
        );
        header(&mut out);
        row(&mut out, "pre-process", &pre);
        row(&mut out, "network", &net);
        row(
            &mut out,
            if second_stage {
                "decode (+ centered-instance net)"
            } else {
                "decode"
            },
            &decode,
        );
        row(&mut out, "inference + decode", &total);
    }
    Ok(out)
}
