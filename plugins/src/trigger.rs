//! Decisions and actions: triggers turn poses into [`Action`]s for the output stage.
//!
//! A [`Trigger`] is evaluated once per frame on the loop thread. It holds a boolean state
//! (active or not) and, when that state changes, pushes the hardware-independent actions of
//! the change into a caller-owned [`ActionBuf`]; the daemon routes them to an `Output`.

use serde::{Deserialize, Serialize};

use crate::error::{PluginError, ZoneError};
use crate::pose::{Keypoint, Pose};

/// What a trigger asks the output stage to do; channels are the output device's logical
/// channel numbers, mapped to pins or ports by the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Drive `channel` high or low until told otherwise.
    SetLevel {
        /// Output channel number.
        channel: u8,
        /// True = high (on), false = low (rest).
        high: bool,
    },
    /// Emit one pulse of `width_us` microseconds on `channel`, then return to low.
    Pulse {
        /// Output channel number.
        channel: u8,
        /// Pulse width in microseconds.
        width_us: u32,
    },
    /// Record an event marker `code` (e.g. on a sync line or in the event log).
    Mark {
        /// User-defined event code.
        code: u16,
    },
}

/// A fixed-capacity list of [`Action`]s, inline so filling it never allocates.
///
/// When full, [`ActionBuf::push`] refuses the action and counts it in
/// [`ActionBuf::dropped`], so the caller can report the overflow after the frame.
#[derive(Clone, Copy, Debug)]
pub struct ActionBuf {
    actions: [Action; ActionBuf::CAPACITY],
    len: usize,
    dropped: u32,
}

impl ActionBuf {
    /// Most actions one buffer holds.
    pub const CAPACITY: usize = 16;

    /// An empty buffer.
    pub const fn new() -> Self {
        ActionBuf {
            actions: [Action::Mark { code: 0 }; ActionBuf::CAPACITY],
            len: 0,
            dropped: 0,
        }
    }

    /// Append `action`; returns false (and counts a drop) when the buffer is full.
    #[must_use = "a full buffer drops the action; check it or rely on `dropped()`"]
    pub fn push(&mut self, action: Action) -> bool {
        match self.actions.get_mut(self.len) {
            Some(slot) => {
                *slot = action;
                self.len += 1;
                true
            }
            None => {
                self.dropped = self.dropped.saturating_add(1);
                false
            }
        }
    }

    /// Remove all actions and zero the drop count (call once per frame before evaluating).
    pub fn clear(&mut self) {
        self.len = 0;
        self.dropped = 0;
    }

    /// Number of actions held.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True when no actions are held.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Actions refused since the last [`ActionBuf::clear`] because the buffer was full.
    pub const fn dropped(&self) -> u32 {
        self.dropped
    }

    /// The actions held, in push order.
    pub fn as_slice(&self) -> &[Action] {
        &self.actions[..self.len]
    }

    /// Iterate over the actions held, in push order.
    pub fn iter(&self) -> std::slice::Iter<'_, Action> {
        self.as_slice().iter()
    }
}

impl Default for ActionBuf {
    fn default() -> Self {
        ActionBuf::new()
    }
}

impl<'a> IntoIterator for &'a ActionBuf {
    type Item = &'a Action;
    type IntoIter = std::slice::Iter<'a, Action>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Everything a trigger may look at for one frame.
#[derive(Clone, Copy, Debug)]
pub struct TriggerInput<'a> {
    /// Camera frame counter of the frame being decided.
    pub frame_id: u64,
    /// Host monotonic time the frame was exposed, in ns.
    pub frame_time_ns: u64,
    /// Host monotonic time of this evaluation, in ns.
    pub now_ns: u64,
    /// The pose measured on this frame by the pose model.
    pub measured: &'a Pose,
    /// The pose predicted for the horizon target time.
    pub predicted: &'a Pose,
}

/// A per-frame decision with a boolean state (active or not).
pub trait Trigger: Send {
    /// The trigger's configured name, used in events and error messages.
    fn name(&self) -> &str;

    /// Evaluate one frame. Returns Some(new_state) when the trigger's state changed on this frame, and pushes the actions of that change into `actions`.
    ///
    /// Runs on the loop thread: never allocates, never panics on NaN or missing data.
    fn evaluate(&mut self, input: &TriggerInput<'_>, actions: &mut ActionBuf) -> Option<bool>;

    /// Whether the trigger is currently active.
    fn is_active(&self) -> bool;

    /// Actions that return outputs to rest (used at stop).
    ///
    /// Also returns the trigger to inactive.
    fn reset(&mut self, actions: &mut ActionBuf);
}

/// A region of the image, in pixels. In a config: a table tagged `shape = "circle"` (with
/// `cx`, `cy`, `r`) or `shape = "rect"` (with `x0`, `y0`, `x1`, `y1`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "lowercase", deny_unknown_fields)]
pub enum Zone {
    /// A disc centred on (`cx`, `cy`) px with radius `r` px, boundary included.
    Circle {
        /// Centre x in pixels.
        cx: f32,
        /// Centre y in pixels.
        cy: f32,
        /// Radius in pixels (> 0).
        r: f32,
    },
    /// An axis-aligned rectangle from (`x0`, `y0`) to (`x1`, `y1`) px, edges included.
    Rect {
        /// Left edge in pixels.
        x0: f32,
        /// Top edge in pixels.
        y0: f32,
        /// Right edge in pixels (> x0).
        x1: f32,
        /// Bottom edge in pixels (> y0).
        y1: f32,
    },
}

impl Zone {
    /// Whether (`x`, `y`) px lies in the zone; NaN coordinates are never inside.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        // Every comparison with NaN is false, so NaN falls out as "not inside".
        match *self {
            Zone::Circle { cx, cy, r } => {
                let (dx, dy) = (x - cx, y - cy);
                dx * dx + dy * dy <= r * r
            }
            Zone::Rect { x0, y0, x1, y1 } => x >= x0 && x <= x1 && y >= y0 && y <= y1,
        }
    }

    /// Check the zone is a real shape: finite numbers, positive radius, ordered corners.
    pub fn validate(&self) -> Result<(), ZoneError> {
        let finite = |field, value: f32| {
            if value.is_finite() {
                Ok(())
            } else {
                Err(ZoneError::NonFinite { field, value })
            }
        };
        match *self {
            Zone::Circle { cx, cy, r } => {
                finite("cx", cx)?;
                finite("cy", cy)?;
                finite("r", r)?;
                if r <= 0.0 {
                    return Err(ZoneError::NonPositiveRadius { r });
                }
            }
            Zone::Rect { x0, y0, x1, y1 } => {
                finite("x0", x0)?;
                finite("y0", y0)?;
                finite("x1", x1)?;
                finite("y1", y1)?;
                if x0 >= x1 || y0 >= y1 {
                    return Err(ZoneError::EmptyRect { x0, y0, x1, y1 });
                }
            }
        }
        Ok(())
    }
}

/// How a trigger drives its output channel. In a config: `mode = { kind = "level" }` or
/// `mode = { kind = "pulse", width_us = 5000 }`.
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

fn default_min_score() -> f32 {
    0.5
}

/// Settings of a [`ZoneTrigger`], as read from a config table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneTriggerConfig {
    /// Name used in events and error messages, e.g. `paw_in_zone`.
    pub name: String,
    /// The pose model's name of the keypoint to watch.
    pub keypoint: String,
    /// The region that activates the trigger.
    pub zone: Zone,
    /// Decide on the measured pose instead of the predicted one (default false: predicted).
    #[serde(default)]
    pub use_measured: bool,
    /// A keypoint scoring below this (or NaN) counts as not inside (default 0.5).
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    /// Output channel driven by this trigger.
    pub channel: u8,
    /// Level (default) or one pulse per entry.
    #[serde(default)]
    pub mode: OutputMode,
}

/// Active while a chosen keypoint is inside a [`Zone`]; drives one output channel.
#[derive(Clone, Debug)]
pub struct ZoneTrigger {
    name: String,
    keypoint_index: usize,
    zone: Zone,
    use_measured: bool,
    min_score: f32,
    channel: u8,
    mode: OutputMode,
    active: bool,
}

impl ZoneTrigger {
    /// Build the trigger for a model whose keypoints are `keypoint_names`, in pose order.
    pub fn new(cfg: &ZoneTriggerConfig, keypoint_names: &[&str]) -> Result<Self, PluginError> {
        let keypoint_index = keypoint_names
            .iter()
            .position(|n| *n == cfg.keypoint)
            .ok_or_else(|| PluginError::UnknownKeypoint {
                trigger: cfg.name.clone(),
                keypoint: cfg.keypoint.clone(),
                known: keypoint_names.join(", "),
            })?;
        cfg.zone
            .validate()
            .map_err(|problem| PluginError::InvalidZone {
                trigger: cfg.name.clone(),
                problem,
            })?;
        if !(0.0..=1.0).contains(&cfg.min_score) {
            return Err(PluginError::InvalidMinScore {
                trigger: cfg.name.clone(),
                value: cfg.min_score,
            });
        }
        if cfg.mode == (OutputMode::Pulse { width_us: 0 }) {
            return Err(PluginError::ZeroPulseWidth {
                trigger: cfg.name.clone(),
            });
        }
        Ok(ZoneTrigger {
            name: cfg.name.clone(),
            keypoint_index,
            zone: cfg.zone,
            use_measured: cfg.use_measured,
            min_score: cfg.min_score,
            channel: cfg.channel,
            mode: cfg.mode,
            active: false,
        })
    }

    /// Whether `point` counts as inside: present, scored at least `min_score`, in the zone.
    fn is_inside(&self, point: Option<&Keypoint>) -> bool {
        point.is_some_and(|p| {
            // `>=` is false for a NaN score.
            !p.is_missing() && p.score >= self.min_score && self.zone.contains(p.x, p.y)
        })
    }
}

impl Trigger for ZoneTrigger {
    fn name(&self) -> &str {
        &self.name
    }

    fn evaluate(&mut self, input: &TriggerInput<'_>, actions: &mut ActionBuf) -> Option<bool> {
        let pose = if self.use_measured {
            input.measured
        } else {
            input.predicted
        };
        let inside = self.is_inside(pose.points().get(self.keypoint_index));
        if inside == self.active {
            return None;
        }
        self.active = inside;
        let action = match (self.mode, inside) {
            (OutputMode::Level, high) => Some(Action::SetLevel {
                channel: self.channel,
                high,
            }),
            (OutputMode::Pulse { width_us }, true) => Some(Action::Pulse {
                channel: self.channel,
                width_us,
            }),
            (OutputMode::Pulse { .. }, false) => None,
        };
        if let Some(action) = action {
            // A full buffer is counted in `actions.dropped()` for the caller to report.
            let _ = actions.push(action);
        }
        Some(inside)
    }

    fn is_active(&self) -> bool {
        self.active
    }

    fn reset(&mut self, actions: &mut ActionBuf) {
        self.active = false;
        if self.mode == OutputMode::Level {
            // Always drive low, even if we think it is low already: stop must leave rest.
            let _ = actions.push(Action::SetLevel {
                channel: self.channel,
                high: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 4] = ["nose", "ear_left", "ear_right", "tail_base"];

    fn config(mode: OutputMode) -> ZoneTriggerConfig {
        ZoneTriggerConfig {
            name: "nose_in_port".into(),
            keypoint: "nose".into(),
            zone: Zone::Circle {
                cx: 100.0,
                cy: 100.0,
                r: 10.0,
            },
            use_measured: false,
            min_score: 0.5,
            channel: 3,
            mode,
        }
    }

    fn pose_at(x: f32, y: f32, score: f32) -> Pose {
        let mut p = Pose::new(NAMES.len());
        p.points_mut()[0] = Keypoint::new(x, y, score);
        p
    }

    /// Evaluate one frame where measured and predicted are the same pose.
    fn step(t: &mut ZoneTrigger, frame_id: u64, pose: &Pose, buf: &mut ActionBuf) -> Option<bool> {
        step2(t, frame_id, pose, pose, buf)
    }

    fn step2(
        t: &mut ZoneTrigger,
        frame_id: u64,
        measured: &Pose,
        predicted: &Pose,
        buf: &mut ActionBuf,
    ) -> Option<bool> {
        buf.clear();
        let input = TriggerInput {
            frame_id,
            frame_time_ns: frame_id * 10_000_000,
            now_ns: frame_id * 10_000_000 + 5_000_000,
            measured,
            predicted,
        };
        t.evaluate(&input, buf)
    }

    #[test]
    fn level_fires_on_the_entry_frame_and_drops_on_exit() {
        let mut t = ZoneTrigger::new(&config(OutputMode::Level), &NAMES).unwrap();
        let mut buf = ActionBuf::new();
        // x = 80, 85, 90, 95, 100, ...: the boundary (x = 90) is reached on frame 2.
        for n in 0..2 {
            assert_eq!(
                step(
                    &mut t,
                    n,
                    &pose_at(80.0 + 5.0 * n as f32, 100.0, 0.9),
                    &mut buf
                ),
                None
            );
            assert!(buf.is_empty() && !t.is_active(), "frame {n}");
        }
        assert_eq!(
            step(&mut t, 2, &pose_at(90.0, 100.0, 0.9), &mut buf),
            Some(true)
        );
        assert_eq!(
            buf.as_slice(),
            [Action::SetLevel {
                channel: 3,
                high: true
            }]
        );
        assert!(t.is_active());
        assert_eq!(step(&mut t, 3, &pose_at(100.0, 100.0, 0.9), &mut buf), None);
        assert!(buf.is_empty());
        assert_eq!(
            step(&mut t, 4, &pose_at(100.0, 111.0, 0.9), &mut buf),
            Some(false)
        );
        assert_eq!(
            buf.as_slice(),
            [Action::SetLevel {
                channel: 3,
                high: false
            }]
        );
        assert!(!t.is_active());
        assert_eq!(t.name(), "nose_in_port");
    }

    #[test]
    fn pulse_fires_once_per_entry() {
        let mut t =
            ZoneTrigger::new(&config(OutputMode::Pulse { width_us: 5_000 }), &NAMES).unwrap();
        let mut buf = ActionBuf::new();
        let xs = [0.0, 100.0, 101.0, 102.0, 0.0, 0.0, 100.0, 100.0];
        let mut pulses = Vec::new();
        for (n, x) in xs.into_iter().enumerate() {
            let change = step(&mut t, n as u64, &pose_at(x, 100.0, 0.9), &mut buf);
            if change == Some(false) {
                assert!(buf.is_empty(), "exit in pulse mode emits nothing");
            }
            for a in &buf {
                assert_eq!(
                    *a,
                    Action::Pulse {
                        channel: 3,
                        width_us: 5_000
                    }
                );
                pulses.push(n);
            }
        }
        assert_eq!(pulses, [1, 6]);
        let mut buf = ActionBuf::new();
        t.reset(&mut buf);
        assert!(buf.is_empty() && !t.is_active());
    }

    #[test]
    fn missing_nan_or_low_score_is_not_inside() {
        let mut t = ZoneTrigger::new(&config(OutputMode::Level), &NAMES).unwrap();
        let mut buf = ActionBuf::new();
        let not_inside = [
            pose_at(100.0, 100.0, 0.49),
            pose_at(100.0, 100.0, f32::NAN),
            pose_at(f32::NAN, 100.0, 0.9),
            Pose::new(NAMES.len()),
            Pose::new(0), // keypoint index beyond the pose
        ];
        for (i, pose) in not_inside.iter().enumerate() {
            assert_eq!(
                step(&mut t, 0, &pose_at(100.0, 100.0, 0.9), &mut buf),
                Some(true)
            );
            assert_eq!(step(&mut t, 1, pose, &mut buf), Some(false), "case {i}");
            assert_eq!(
                buf.as_slice(),
                [Action::SetLevel {
                    channel: 3,
                    high: false
                }]
            );
        }
    }

    #[test]
    fn predicted_pose_decides_unless_use_measured() {
        let inside = pose_at(100.0, 100.0, 0.9);
        let outside = pose_at(0.0, 0.0, 0.9);
        let mut buf = ActionBuf::new();
        let mut by_prediction = ZoneTrigger::new(&config(OutputMode::Level), &NAMES).unwrap();
        assert_eq!(
            step2(&mut by_prediction, 0, &outside, &inside, &mut buf),
            Some(true)
        );
        let cfg = ZoneTriggerConfig {
            use_measured: true,
            ..config(OutputMode::Level)
        };
        let mut by_measurement = ZoneTrigger::new(&cfg, &NAMES).unwrap();
        assert_eq!(
            step2(&mut by_measurement, 0, &outside, &inside, &mut buf),
            None
        );
        assert_eq!(
            step2(&mut by_measurement, 1, &inside, &outside, &mut buf),
            Some(true)
        );
    }

    #[test]
    fn reset_drives_level_outputs_low() {
        let mut t = ZoneTrigger::new(&config(OutputMode::Level), &NAMES).unwrap();
        let mut buf = ActionBuf::new();
        step(&mut t, 0, &pose_at(100.0, 100.0, 0.9), &mut buf);
        buf.clear();
        t.reset(&mut buf);
        assert_eq!(
            buf.as_slice(),
            [Action::SetLevel {
                channel: 3,
                high: false
            }]
        );
        assert!(!t.is_active());
        // After reset the next inside frame is an entry again.
        assert_eq!(
            step(&mut t, 1, &pose_at(100.0, 100.0, 0.9), &mut buf),
            Some(true)
        );
    }

    #[test]
    fn zone_contains_with_edges_and_nan() {
        let c = Zone::Circle {
            cx: 0.0,
            cy: 0.0,
            r: 5.0,
        };
        assert!(c.contains(3.0, 4.0) && !c.contains(3.0, 4.1));
        let r = Zone::Rect {
            x0: 0.0,
            y0: 0.0,
            x1: 10.0,
            y1: 5.0,
        };
        assert!(r.contains(0.0, 5.0) && r.contains(10.0, 0.0) && !r.contains(10.1, 1.0));
        for z in [c, r] {
            assert!(!z.contains(f32::NAN, 1.0) && !z.contains(1.0, f32::NAN));
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |cfg: ZoneTriggerConfig| ZoneTrigger::new(&cfg, &NAMES).unwrap_err().to_string();
        let base = || ZoneTriggerConfig {
            name: "paw_in_zone".into(),
            ..config(OutputMode::Level)
        };
        assert_eq!(
            err(ZoneTriggerConfig {
                keypoint: "paww".into(),
                ..base()
            }),
            "trigger `paw_in_zone`: unknown keypoint `paww` (known: nose, ear_left, ear_right, tail_base)"
        );
        assert_eq!(
            err(ZoneTriggerConfig {
                zone: Zone::Circle {
                    cx: 1.0,
                    cy: 1.0,
                    r: -3.0
                },
                ..base()
            }),
            "trigger `paw_in_zone`: zone radius must be > 0, got -3"
        );
        assert_eq!(
            err(ZoneTriggerConfig {
                zone: Zone::Rect {
                    x0: 10.0,
                    y0: 0.0,
                    x1: 5.0,
                    y1: 8.0
                },
                ..base()
            }),
            "trigger `paw_in_zone`: zone rectangle must have x0 < x1 and y0 < y1, got x0 = 10, x1 = 5, y0 = 0, y1 = 8"
        );
        assert_eq!(
            err(ZoneTriggerConfig {
                zone: Zone::Circle {
                    cx: f32::NAN,
                    cy: 1.0,
                    r: 3.0
                },
                ..base()
            }),
            "trigger `paw_in_zone`: zone `cx` must be a finite number, got NaN"
        );
        assert_eq!(
            err(ZoneTriggerConfig {
                min_score: 1.5,
                ..base()
            }),
            "trigger `paw_in_zone`: min_score must be between 0 and 1, got 1.5"
        );
        assert_eq!(
            err(ZoneTriggerConfig {
                mode: OutputMode::Pulse { width_us: 0 },
                ..base()
            }),
            "trigger `paw_in_zone`: pulse width_us must be > 0, got 0"
        );
    }

    #[test]
    fn config_parses_from_toml() {
        let cfg: ZoneTriggerConfig = toml::from_str(
            r#"
            name = "paw_in_zone"
            keypoint = "nose"
            channel = 2
            zone = { shape = "circle", cx = 320, cy = 240, r = 40 }
            "#,
        )
        .unwrap();
        assert_eq!(
            cfg.zone,
            Zone::Circle {
                cx: 320.0,
                cy: 240.0,
                r: 40.0
            }
        );
        assert_eq!(
            (cfg.use_measured, cfg.min_score, cfg.mode),
            (false, 0.5, OutputMode::Level)
        );

        let cfg: ZoneTriggerConfig = toml::from_str(
            r#"
            name = "reward"
            keypoint = "tail_base"
            channel = 0
            use_measured = true
            min_score = 0.8
            mode = { kind = "pulse", width_us = 10000 }
            [zone]
            shape = "rect"
            x0 = 0
            y0 = 0
            x1 = 100
            y1 = 50.5
            "#,
        )
        .unwrap();
        assert_eq!(
            cfg.zone,
            Zone::Rect {
                x0: 0.0,
                y0: 0.0,
                x1: 100.0,
                y1: 50.5
            }
        );
        assert_eq!(cfg.mode, OutputMode::Pulse { width_us: 10_000 });
        assert!(cfg.use_measured);

        let bad = [
            (
                "keypoint = \"nose\"\nchannel = 1\nzone = { shape = \"circle\", cx = 1, cy = 1, r = 1 }\nnmae = \"x\"",
                "unknown field `nmae`",
            ),
            (
                "name = \"t\"\nkeypoint = \"nose\"\nchannel = 1\nzone = { shape = \"circle\", cx = 1, cy = 1, r = 1, x0 = 3 }",
                "unknown field `x0`",
            ),
            (
                "name = \"t\"\nkeypoint = \"nose\"\nchannel = 1\nzone = { shape = \"polygon\" }",
                "unknown variant `polygon`",
            ),
        ];
        for (text, want) in bad {
            let e = toml::from_str::<ZoneTriggerConfig>(text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn action_buf_is_bounded_and_counts_drops() {
        let mut buf = ActionBuf::new();
        for code in 0..ActionBuf::CAPACITY as u16 {
            assert!(buf.push(Action::Mark { code }));
        }
        assert!(!buf.push(Action::Mark { code: 99 }));
        assert_eq!((buf.len(), buf.dropped()), (ActionBuf::CAPACITY, 1));
        assert_eq!(buf.iter().last(), Some(&Action::Mark { code: 15 }));
        buf.clear();
        assert!(buf.is_empty() && buf.dropped() == 0);
    }
}
