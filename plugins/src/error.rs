//! The crate's typed error: every variant names the offending item and value so a user can
//! fix their config from the message alone.

use crate::pose::MAX_KEYPOINTS;

/// Why a pose, predictor or trigger could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// A pose was asked to hold more keypoints than [`MAX_KEYPOINTS`].
    #[error("a pose has at most {MAX_KEYPOINTS} keypoints, but {count} were requested")]
    TooManyKeypoints {
        /// The keypoint count that was requested.
        count: usize,
    },

    /// A trigger refers to a keypoint the pose model does not have.
    #[error("trigger `{trigger}`: unknown keypoint `{keypoint}` (known: {known})")]
    UnknownKeypoint {
        /// The trigger's configured name.
        trigger: String,
        /// The keypoint name it asked for.
        keypoint: String,
        /// The model's keypoint names, comma-separated.
        known: String,
    },

    /// A trigger's zone is not a usable shape.
    #[error("trigger `{trigger}`: {problem}")]
    InvalidZone {
        /// The trigger's configured name.
        trigger: String,
        /// What is wrong with the zone.
        problem: ZoneError,
    },

    /// A trigger's `min_score` is outside the likelihood range.
    #[error("trigger `{trigger}`: min_score must be between 0 and 1, got {value}")]
    InvalidMinScore {
        /// The trigger's configured name.
        trigger: String,
        /// The configured value.
        value: f32,
    },

    /// A trigger's field has a value it cannot take, or does not apply to the trigger's kind.
    #[error("trigger `{trigger}`: `{field}` {problem}")]
    InvalidTrigger {
        /// The trigger's configured name.
        trigger: String,
        /// The field at fault, as in the config (`actions[1].width_us` for an action's field).
        field: String,
        /// What is wrong, in words that follow the field's name (`must be > 0, got 0`).
        problem: String,
    },

    /// A pulse-mode trigger has a zero pulse width.
    #[error("trigger `{trigger}`: pulse width_us must be > 0, got 0")]
    ZeroPulseWidth {
        /// The trigger's configured name.
        trigger: String,
    },

    /// A Kalman predictor parameter is out of its valid range.
    #[error("kalman predictor: `{param}` must be {requirement}, got {value}")]
    InvalidKalmanParam {
        /// The parameter's name, as in the config (DeepLabCut-Live's name).
        param: &'static str,
        /// The range it must lie in, in words.
        requirement: &'static str,
        /// The configured value.
        value: f64,
    },

    /// The Kalman predictor was asked for more derivatives than it supports.
    #[error(
        "kalman predictor: `nderiv` must be 0, 1 or 2 (up to constant acceleration), got {nderiv}"
    )]
    InvalidNderiv {
        /// The configured value.
        nderiv: usize,
    },

    /// The Kalman predictor's `priors` list does not have one entry per derivative.
    #[error(
        "kalman predictor: `priors` must have nderiv = {nderiv} entries (prior variances of velocity, then acceleration), got {got}"
    )]
    PriorsLength {
        /// The configured `nderiv`.
        nderiv: usize,
        /// How many priors were given.
        got: usize,
    },

    /// A parameter of another predictor (e.g. `robust`) is out of its valid range.
    #[error("{predictor} predictor: `{param}` must be {requirement}, got {value}")]
    InvalidPredictorParam {
        /// The predictor's name (`robust`).
        predictor: &'static str,
        /// The parameter's name, as in the config.
        param: &'static str,
        /// The range it must lie in, in words.
        requirement: &'static str,
        /// The configured value.
        value: f64,
    },
}

/// What is wrong with a zone's geometry (all values in pixels).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// A coordinate or size is NaN or infinite.
    #[error("zone `{field}` must be a finite number, got {value}")]
    NonFinite {
        /// The zone field's name in the config.
        field: &'static str,
        /// The configured value.
        value: f32,
    },
    /// A circle's radius is zero or negative.
    #[error("zone radius must be > 0, got {r}")]
    NonPositiveRadius {
        /// The configured radius in pixels.
        r: f32,
    },
    /// A rectangle's corners are not ordered (it would contain nothing).
    #[error(
        "zone rectangle must have x0 < x1 and y0 < y1, got x0 = {x0}, x1 = {x1}, y0 = {y0}, y1 = {y1}"
    )]
    EmptyRect {
        /// Left edge in pixels.
        x0: f32,
        /// Top edge in pixels.
        y0: f32,
        /// Right edge in pixels.
        x1: f32,
        /// Bottom edge in pixels.
        y1: f32,
    },
    /// A polygon has fewer than 3 vertices.
    #[error("zone polygon needs at least 3 points, got {count}")]
    TooFewPoints {
        /// The number of vertices given.
        count: usize,
    },
    /// A polygon's vertices lie on one line (it would contain nothing).
    #[error("zone polygon encloses no area (its points lie on one line)")]
    ZeroAreaPolygon,
}

/// A trigger configuration that cannot be built: which `[[trigger]]` table (0-based, in config
/// order) and why, so a caller holding the tables' positions can name the line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct TriggerConfigError {
    /// Index of the offending trigger in the list given to the trigger set.
    pub index: usize,
    /// What is wrong; its message names the trigger and the field.
    pub error: PluginError,
}
