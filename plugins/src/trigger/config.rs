//! The configuration of the built-in triggers: one [`TriggerConfig`] per `[[trigger]]` table, its
//! [`TriggerKind`] chosen by `kind` (default `zone`), keypoints by the pose model's names.
//!
//! Every field but `name` is optional here; which ones a kind needs or accepts is checked when a
//! [`TriggerSet`](super::TriggerSet) is built, and a field that does not apply to the kind is an
//! error rather than silently ignored.

use serde::{Deserialize, Serialize};

use super::zone::Zone;

/// Which condition a trigger tests. In a config: `kind = "zone"` (the default), `"speed"`, `"angle"`,
/// `"distance"`, `"likelihood"`, or the combinators `"all"`, `"any"`, `"not"`, `"sequence"` over
/// other triggers named in `of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// A keypoint is inside a [`Zone`] (or enters or leaves it, see [`ZoneWhen`]).
    #[default]
    Zone,
    /// The speed of a keypoint or of the centre of several, in px/s (or cm/s with `px_per_cm`).
    Speed,
    /// The angle at the middle of three keypoints, or of a two-keypoint segment to an axis, in degrees.
    Angle,
    /// The distance between two keypoints, in px (or cm with `px_per_cm`).
    Distance,
    /// The lowest likelihood (score) of some keypoints; missing keypoints score 0.
    Likelihood,
    /// Every trigger named in `of` is active.
    All,
    /// At least one trigger named in `of` is active.
    Any,
    /// The one trigger named in `of` is not active.
    Not,
    /// The triggers named in `of` became active in that order within `window_s`.
    Sequence,
}

impl TriggerKind {
    /// The kind's name as written in a config.
    pub const fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Zone => "zone",
            TriggerKind::Speed => "speed",
            TriggerKind::Angle => "angle",
            TriggerKind::Distance => "distance",
            TriggerKind::Likelihood => "likelihood",
            TriggerKind::All => "all",
            TriggerKind::Any => "any",
            TriggerKind::Not => "not",
            TriggerKind::Sequence => "sequence",
        }
    }
}

/// When a zone trigger's condition holds. In a config: `when = "inside" | "enter" | "exit"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoneWhen {
    /// On every frame the keypoint is inside (a level condition).
    #[default]
    Inside,
    /// Only on the frame the keypoint comes inside (one frame; a keypoint inside on the first frame
    /// it is seen counts as entering).
    Enter,
    /// Only on the frame the keypoint leaves (one frame).
    Exit,
}

/// What a trigger does on a frame whose condition is unknown (a keypoint it reads is missing or
/// scores below `min_score`, or a combinator's children leave the answer open). In a config:
/// `unknown = "hold" | "false"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPolicy {
    /// Keep the state: an inactive trigger does not fire, an active one stays active; pending
    /// minimum durations are neither interrupted nor completed. Combinators over it see unknown.
    #[default]
    Hold,
    /// Treat unknown as false: an active trigger ends (a lost keypoint turns a level output off).
    False,
}

/// The reference direction of a segment angle. In a config: `axis = "x" | "y" | "-x" | "-y"`, image
/// axes (x to the right, y down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Axis {
    /// Pointing right (0°).
    #[serde(rename = "x")]
    X,
    /// Pointing down in the image (90°).
    #[serde(rename = "y")]
    Y,
    /// Pointing left (180°).
    #[serde(rename = "-x")]
    NegX,
    /// Pointing up in the image (270°).
    #[serde(rename = "-y")]
    NegY,
}

impl Axis {
    /// The axis direction in degrees from +x towards +y (image down).
    pub const fn degrees(self) -> f32 {
        match self {
            Axis::X => 0.0,
            Axis::Y => 90.0,
            Axis::NegX => 180.0,
            Axis::NegY => 270.0,
        }
    }
}

/// At most `count` activations in any `per_s`-second window. In a config:
/// `max_rate = { count = 5, per_s = 60.0 }`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxRate {
    /// Activations allowed per window (1..=64).
    pub count: u32,
    /// Window length in seconds (> 0).
    pub per_s: f64,
}

/// Which change of a trigger's state an action follows. In a config: `at = "on" | "off"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    /// When the trigger becomes active.
    #[default]
    On,
    /// When the trigger stops being active.
    Off,
}

/// Which recording marker an action writes. In a config: `marker = "start" | "stop"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingMarker {
    /// Marks the start of a segment to record.
    Start,
    /// Marks its end.
    Stop,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// One thing a trigger does when its state changes. In a config: an element of `actions`, tagged by
/// `kind`; channels are the output device's logical channel numbers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ActionConfig {
    /// `channel` high while the trigger is active, low when it ends (and when the session stops).
    Level {
        /// Output channel.
        channel: u8,
    },
    /// Set `channel` to `high` on one edge and leave it there (another trigger may set it back).
    Set {
        /// Output channel.
        channel: u8,
        /// True = high.
        high: bool,
        /// On activation (default) or on deactivation.
        #[serde(default, skip_serializing_if = "is_default")]
        at: Edge,
    },
    /// One pulse of `width_us` µs on `channel`.
    Pulse {
        /// Output channel.
        channel: u8,
        /// Pulse width in µs (> 0).
        width_us: u32,
        /// On activation (default) or on deactivation.
        #[serde(default, skip_serializing_if = "is_default")]
        at: Edge,
        /// Send the pulse this long (s) after the edge instead of at once: on the first frame whose
        /// exposure time is at least the edge's frame time + `delay_s` (so up to one frame period later).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_s: Option<f64>,
    },
    /// `count` pulses of `width_us` µs, one rising edge every `period_us` µs, on `channel`.
    Train {
        /// Output channel.
        channel: u8,
        /// Pulse width in µs (> 0).
        width_us: u32,
        /// Time between rising edges in µs (> `width_us` when `count` > 1).
        period_us: u32,
        /// Number of pulses (> 0).
        count: u32,
        /// On activation (default) or on deactivation.
        #[serde(default, skip_serializing_if = "is_default")]
        at: Edge,
        /// Start the train this long (s) after the edge, as for `pulse`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_s: Option<f64>,
    },
    /// An event marker `code` in the event log (no output).
    Mark {
        /// User-defined code.
        code: u16,
        /// On activation (default) or on deactivation.
        #[serde(default, skip_serializing_if = "is_default")]
        at: Edge,
    },
    /// A recording start or stop marker in the event log (no output).
    Recording {
        /// Start or stop.
        marker: RecordingMarker,
        /// On activation (default) or on deactivation.
        #[serde(default, skip_serializing_if = "is_default")]
        at: Edge,
    },
}

impl ActionConfig {
    /// The output channel the action drives, if any.
    pub const fn channel(&self) -> Option<u8> {
        match *self {
            ActionConfig::Level { channel }
            | ActionConfig::Set { channel, .. }
            | ActionConfig::Pulse { channel, .. }
            | ActionConfig::Train { channel, .. } => Some(channel),
            ActionConfig::Mark { .. } | ActionConfig::Recording { .. } => None,
        }
    }
}

/// How a trigger drives its `channel` (the short form of one action). In a config:
/// `mode = { kind = "level" }` (the default) or `mode = { kind = "pulse", width_us = 5000 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputMode {
    /// High while active, low when it ends.
    #[default]
    Level,
    /// One pulse of `width_us` µs each time the trigger becomes active; nothing on exit.
    Pulse {
        /// Pulse width in microseconds (> 0).
        width_us: u32,
    },
}

/// One `[[trigger]]` table: a named condition on the pose (or on other triggers), a timing gate, and
/// the actions of its state changes.
///
/// Units: pixels and seconds unless a field's name says otherwise; speeds and distances in cm when
/// `px_per_cm` is given. Each condition reads the predicted pose unless `use_measured = true`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Name used in events, error messages and by combinators' `of`, e.g. `paw_in_zone`.
    pub name: String,
    /// The condition (default `zone`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: TriggerKind,

    /// One keypoint (zone, speed, likelihood).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keypoint: Option<String>,
    /// Several keypoints: their centre (speed), the lowest score (likelihood), the segment or the
    /// three points of an angle (angle), the two ends (distance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keypoints: Option<Vec<String>>,
    /// Speed of the body centre: the mean of all keypoints that pass `min_score` (speed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_centre: Option<bool>,
    /// The region (zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<Zone>,
    /// Inside (default), enter or exit (zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<ZoneWhen>,
    /// Reference direction of a two-keypoint angle (angle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub axis: Option<Axis>,
    /// Reference direction of a two-keypoint angle in degrees from +x towards +y (angle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub axis_deg: Option<f32>,
    /// Track indices of two animals, for a distance between animals (not supported until poses carry
    /// more than one animal; refused with an error that says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub animals: Option<Vec<u32>>,
    /// Names of the triggers a combinator combines (all, any, not, sequence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<Vec<String>>,
    /// Longest time in s from the first step's onset to the last step's (sequence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,

    /// True when the value is at least this (speed, angle, distance, likelihood).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f32>,
    /// True when the value is at most this (speed, angle, distance, likelihood).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f32>,
    /// Once true, stays true until the value is this far past the threshold (in the value's unit;
    /// for a zone, px outside the shape). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hysteresis: Option<f32>,
    /// Calibration: pixels per cm; speeds become cm/s and distances cm (speed, distance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub px_per_cm: Option<f32>,
    /// Speed is the displacement over the last `smoothing_s` s (default 0.1; at most 64 frames),
    /// because frame-to-frame differences are noisy (speed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothing_s: Option<f64>,
    /// Decide on the measured pose instead of the predicted one (default false: predicted).
    #[serde(default, skip_serializing_if = "is_default")]
    pub use_measured: bool,
    /// A keypoint scoring below this (or NaN), or missing, makes the condition unknown (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f32>,
    /// What an unknown condition does: hold the state (default) or count as false.
    #[serde(default, skip_serializing_if = "is_default")]
    pub unknown: UnknownPolicy,

    /// The condition must hold this long (s) before the trigger activates (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration_s: Option<f64>,
    /// No new activation within this long (s) after the previous activation (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refractory_s: Option<f64>,
    /// At most this many activations in any window of this length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<MaxRate>,

    /// Output channel of the short form: one action given by `mode` (default level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u8>,
    /// How the short form drives `channel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutputMode>,
    /// Actions of the trigger's state changes, after the short form's, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionConfig>,
}

impl TriggerConfig {
    /// Every output channel the trigger drives (short form first, then `actions`), for checking them
    /// against the output device.
    pub fn channels(&self) -> impl Iterator<Item = u8> + '_ {
        self.channel
            .into_iter()
            .chain(self.actions.iter().filter_map(ActionConfig::channel))
    }
}
