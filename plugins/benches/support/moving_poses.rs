//! Inputs shared by the plugins' benchmarks (included with `#[path]`): a seeded random stream and poses of
//! keypoints circling the arena with noise and dropouts, the same in every run so runs compare.

#![allow(dead_code)] // reason: each benchmark that includes this file uses only some of it

use reflex_plugins::{Keypoint, Pose};

/// Uniform numbers in [0, 1) from xorshift64, always from the same seed.
pub fn uniform() -> impl FnMut() -> f64 {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `frames` poses of `keypoints` points circling (320, 300) at 150 px with 4 px of noise; 3 % of points
/// missing; scores uniform in [`min_score`, 1).
pub fn moving_poses(frames: usize, keypoints: usize, min_score: f64) -> Vec<Pose> {
    let mut next = uniform();
    (0..frames)
        .map(|k| {
            let mut pose = Pose::new(keypoints);
            for (j, p) in pose.points_mut().iter_mut().enumerate() {
                let phase = k as f64 * 0.02 + j as f64 * 0.15;
                *p = if next() < 0.03 {
                    Keypoint::MISSING
                } else {
                    Keypoint::new(
                        (320.0 + 150.0 * phase.cos() + 4.0 * next()) as f32,
                        (300.0 + 150.0 * phase.sin() + 4.0 * next()) as f32,
                        (min_score + (1.0 - min_score) * next()) as f32,
                    )
                };
            }
            pose
        })
        .collect()
}
