//! reflex extension points: pose types, forward predictors, triggers and the actions they emit.
//!
//! This crate knows nothing of cameras or hardware. The daemon's loop thread moves each frame
//! through two seams defined here:
//!
//! - [`Predictor`] (module [`predict`]): fed every measured [`Pose`] with its exposure time,
//!   asked for the pose at a later host time chosen by a [`Horizon`], to cancel the loop's
//!   latency. [`LastMeasurement`] is the no-prediction baseline; [`KalmanPredictor`] is a
//!   DeepLabCut-Live-compatible constant-acceleration Kalman filter; [`RobustPredictor`] is a
//!   damped constant-velocity filter that rejects outliers and identity swaps.
//! - [`Trigger`] (module [`trigger`]): looks at the measured and predicted pose of a frame,
//!   keeps named active/inactive states, and on a change pushes [`Action`]s (levels, pulses,
//!   trains on logical channels; event and recording marks) into an [`ActionBuf`]; the daemon
//!   routes them to an output device. [`TriggerSet`] holds the built-in triggers of a config
//!   ([`TriggerConfig`]: zone, speed, angle, distance, likelihood; all / any / not / sequence;
//!   hysteresis, minimum duration, refractory period, maximum rate on each).
//! - [`script`]: a protocol script in Lua 5.4 ([`Script`]), called after the built-in triggers on every
//!   frame with the same input and pushing [`Action`]s into the same buffer; sandboxed, with an
//!   instruction budget per call and a preallocated memory arena of its own (TLSF), so its calls never
//!   touch the process heap either.
//!
//! Real-time contract: everything is allocated in the constructors; `observe`, `predict` and
//! `evaluate` never allocate and never panic on NaN or missing keypoints (a test with a
//! counting allocator checks this). Configuration errors are a typed [`PluginError`] whose
//! message names the item and the value at fault.

pub mod error;
pub mod pose;
pub mod predict;
pub mod script;
pub mod trigger;

pub use error::{PluginError, TriggerConfigError, ZoneError};
pub use pose::{Keypoint, MAX_KEYPOINTS, Pose};
pub use predict::{
    Horizon, KalmanConfig, KalmanPredictor, LastMeasurement, Predictor, RobustConfig,
    RobustPredictor,
};
pub use script::{Script, ScriptConfig, ScriptError};
pub use trigger::{
    Action, ActionBuf, ActionConfig, OutputMode, Trigger, TriggerConfig, TriggerInput, TriggerKind,
    TriggerSet, Zone,
};
