//! Cost per frame of each predictor: `observe` + `predict` for 2 animals × 13 keypoints (one
//! predictor per animal), on noisy trajectories with dropouts and varied scores.
//!
//! Run: `cargo bench -p reflex-plugins --bench predict_cost` (release profile). Prints the median
//! over 9 repeats of 20 000 frames, in ns per frame.
#![allow(clippy::disallowed_methods)] // reason: a benchmark times itself; there is no loop clock here

#[path = "support/moving_poses.rs"]
mod moving_poses;

use std::hint::black_box;
use std::time::Instant;

use moving_poses::uniform;

use reflex_plugins::{
    KalmanConfig, KalmanPredictor, Keypoint, LastMeasurement, Pose, Predictor, RobustConfig,
    RobustPredictor,
};

const ANIMALS: usize = 2;
const KEYPOINTS: usize = 13;
const FRAMES: usize = 20_000;
const FRAME_NS: u64 = 40_000_000; // 25 fps
const HORIZON_NS: u64 = 20_000_000;

fn inputs() -> Vec<Pose> {
    let mut next = uniform();
    (0..FRAMES * ANIMALS)
        .map(|i| {
            let (k, a) = ((i / ANIMALS) as f64, (i % ANIMALS) as f64);
            let mut pose = Pose::new(KEYPOINTS);
            for (j, p) in pose.points_mut().iter_mut().enumerate() {
                let phase = k * 0.03 + a + j as f64 * 0.1;
                *p = if next() < 0.03 {
                    Keypoint::MISSING
                } else {
                    Keypoint::new(
                        (300.0 + 150.0 * phase.cos() + 4.0 * next()) as f32,
                        (300.0 + 150.0 * phase.sin() + 4.0 * next()) as f32,
                        next() as f32,
                    )
                };
            }
            pose
        })
        .collect()
}

fn main() {
    let poses = inputs();
    type Make = fn() -> Box<dyn Predictor>;
    let predictors: [(&str, Make); 3] = [
        ("none", || Box::new(LastMeasurement::new())),
        ("kalman", || {
            Box::new(KalmanPredictor::new(&KalmanConfig::default()).expect("defaults are valid"))
        }),
        ("robust", || {
            Box::new(RobustPredictor::new(&RobustConfig::default()).expect("defaults are valid"))
        }),
    ];
    println!("cost per frame, observe + predict, {ANIMALS} animals x {KEYPOINTS} keypoints:");
    for (name, make) in predictors {
        let mut runs = Vec::new();
        for _ in 0..9 {
            let mut animals: Vec<Box<dyn Predictor>> = (0..ANIMALS).map(|_| make()).collect();
            let mut out = Pose::new(KEYPOINTS);
            let start = Instant::now();
            for k in 0..FRAMES {
                let t_ns = 1_000_000_000 + k as u64 * FRAME_NS;
                for (a, p) in animals.iter_mut().enumerate() {
                    p.observe(black_box(&poses[k * ANIMALS + a]), t_ns);
                    p.predict(t_ns + HORIZON_NS, &mut out);
                    black_box(&out);
                }
            }
            runs.push(start.elapsed().as_nanos() as f64 / FRAMES as f64);
        }
        runs.sort_by(f64::total_cmp);
        println!(
            "{name:<8} {:>8.0} ns/frame (min {:.0}, max {:.0})",
            runs[runs.len() / 2],
            runs[0],
            runs[runs.len() - 1]
        );
    }
}
