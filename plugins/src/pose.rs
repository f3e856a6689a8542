//! Pose types shared by pose models, predictors and triggers.
//!
//! A [`Pose`] is a fixed-capacity, `Copy` array of [`Keypoint`]s for one animal, so it can
//! move through lock-free rings and preallocated slots without touching the heap.

use crate::PluginError;

/// Most keypoints one [`Pose`] can hold; fixed so a pose is `Copy` and never allocates.
pub const MAX_KEYPOINTS: usize = 32;

/// One body part: image coordinates in pixels and the pose model's likelihood for it.
///
/// A keypoint the model did not report is [`Keypoint::MISSING`] (all NaN). Because NaN is
/// never equal to itself, test for it with [`Keypoint::is_missing`], not `==`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Keypoint {
    /// Horizontal image coordinate in pixels (0 = left edge).
    pub x: f32,
    /// Vertical image coordinate in pixels (0 = top edge).
    pub y: f32,
    /// Likelihood the pose model gives this keypoint (usually 0..=1); NaN when unknown.
    pub score: f32,
}

impl Keypoint {
    /// A keypoint with no data: NaN coordinates and score.
    pub const MISSING: Keypoint = Keypoint {
        x: f32::NAN,
        y: f32::NAN,
        score: f32::NAN,
    };

    /// A keypoint at (`x`, `y`) pixels with likelihood `score`.
    pub const fn new(x: f32, y: f32, score: f32) -> Self {
        Keypoint { x, y, score }
    }

    /// True when the keypoint has no usable position: either coordinate is NaN or infinite.
    ///
    /// The score is not looked at; a finite position with a NaN score is present but
    /// untrusted, and consumers gate it by their own score threshold.
    pub fn is_missing(&self) -> bool {
        !(self.x.is_finite() && self.y.is_finite())
    }
}

impl Default for Keypoint {
    /// [`Keypoint::MISSING`]: no data until a model writes some.
    fn default() -> Self {
        Keypoint::MISSING
    }
}

/// The keypoints of one animal in one frame, in the pose model's keypoint order.
///
/// Storage is an inline array of [`MAX_KEYPOINTS`]; `len` says how many are in use.
#[derive(Clone, Copy, Debug)]
pub struct Pose {
    len: usize,
    points: [Keypoint; MAX_KEYPOINTS],
}

impl Pose {
    /// A pose of `len` keypoints, all [`Keypoint::MISSING`].
    ///
    /// `len` is clamped to [`MAX_KEYPOINTS`]; use [`Pose::try_new`] where `len` comes from a
    /// user's model or config and an oversized value must be reported rather than truncated.
    pub const fn new(len: usize) -> Self {
        let len = if len > MAX_KEYPOINTS {
            MAX_KEYPOINTS
        } else {
            len
        };
        Pose {
            len,
            points: [Keypoint::MISSING; MAX_KEYPOINTS],
        }
    }

    /// A pose of `len` keypoints, all [`Keypoint::MISSING`], or an error if `len` exceeds
    /// [`MAX_KEYPOINTS`].
    pub fn try_new(len: usize) -> Result<Self, PluginError> {
        if len > MAX_KEYPOINTS {
            return Err(PluginError::TooManyKeypoints { count: len });
        }
        Ok(Pose::new(len))
    }

    /// Number of keypoints in use.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True when the pose has no keypoints.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keypoints in use, in model order.
    pub fn points(&self) -> &[Keypoint] {
        &self.points[..self.len]
    }

    /// The keypoints in use, for a model or predictor to write in place.
    pub fn points_mut(&mut self) -> &mut [Keypoint] {
        &mut self.points[..self.len]
    }

    /// Set every keypoint in use to [`Keypoint::MISSING`], keeping the length.
    pub fn clear(&mut self) {
        self.points_mut().fill(Keypoint::MISSING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_pose_is_all_missing() {
        let p = Pose::new(3);
        assert_eq!(p.len(), 3);
        assert!(!p.is_empty());
        assert!(p.points().iter().all(Keypoint::is_missing));
        assert!(Pose::new(0).is_empty());
    }

    #[test]
    fn oversized_pose_is_clamped_or_refused() {
        assert_eq!(Pose::new(MAX_KEYPOINTS + 5).len(), MAX_KEYPOINTS);
        let err = Pose::try_new(40).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a pose has at most 32 keypoints, but 40 were requested"
        );
        assert_eq!(Pose::try_new(MAX_KEYPOINTS).unwrap().len(), MAX_KEYPOINTS);
    }

    #[test]
    fn missing_means_non_finite_position() {
        assert!(Keypoint::MISSING.is_missing());
        assert!(Keypoint::new(f32::INFINITY, 1.0, 0.9).is_missing());
        assert!(Keypoint::new(1.0, f32::NAN, 0.9).is_missing());
        assert!(!Keypoint::new(1.0, 2.0, f32::NAN).is_missing());
    }

    #[test]
    fn points_mut_writes_through_and_clear_resets() {
        let mut p = Pose::new(2);
        p.points_mut()[1] = Keypoint::new(3.0, 4.0, 0.5);
        assert_eq!(p.points()[1], Keypoint::new(3.0, 4.0, 0.5));
        p.clear();
        assert!(p.points()[1].is_missing());
    }
}
