//! `reflex bench`: where a frame's time goes, stage by stage, on each inference backend, run as fast as
//! possible (no pacing, no threads), so numbers from different machines or builds compare directly.

use std::fmt::Write as _;
use std::sync::Arc;

use hdrhistogram::Histogram;
use reflex_plugins::pose::Pose;

use crate::camera::synthetic::{SyntheticCamera, SyntheticConfig};
use crate::camera::{Frame, FrameSource};
use crate::clock::{Clock, ManualClock, MonotonicClock};
use crate::inference::{self, BackendChoice, ModelConfig, PoseModel, decode_dlc, preprocess_rgb};
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

fn row(out: &mut String, name: &str, h: &Histogram<u64>) {
    let q = Quantiles::of(h);
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
    let _ = writeln!(
        out,
        "{name:<28} {:>8} {:>9} {:>9} {:>9} {:>9}",
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
    let _ = writeln!(
        out,
        "{:<28} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "per frame (µs)", "frames", "p50", "p90", "p99", "max"
    );
    for &backend in &opts.backends {
        let config = ModelConfig {
            backend,
            ..opts.model.clone()
        };
        let mut model = inference::load(&config, &mut |_| {})?;
        let name = model.spec().keypoints.len();
        let mut camera =
            SyntheticCamera::new(&SyntheticConfig::default(), Arc::new(ManualClock::new()))?;
        let mut frame = Frame::for_source(camera.info());
        let mut scratch = vec![0f32; frame.data.len()];
        let mut pose = Pose::new(name);
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
            preprocess_rgb(&frame, &mut scratch);
            let t2 = clock.now_ns();
            let (stride, locref_stdev) = (model.spec().stride, model.spec().locref_stdev);
            let outputs = model.run_raw(&frame)?;
            let t3 = clock.now_ns();
            decode_dlc(&outputs, name, stride, locref_stdev, &mut pose)?;
            let t4 = clock.now_ns();
            if i >= opts.warmup {
                render.saturating_record(t1 - t0);
                pre.saturating_record(t2 - t1);
                // run_raw pre-processes too: the network's own share is the difference.
                net.saturating_record((t3 - t2).saturating_sub(t2 - t1).max(1));
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
