//! [`TriggerSet`]: the built-in triggers of a config, compiled once into a flat, preallocated
//! evaluator and run once per frame.
//!
//! Each trigger is one node: a **condition** (a predicate on the pose, or on other nodes for the
//! combinators, with its own hysteresis state), a **timing gate** (minimum duration, refractory period,
//! maximum rate) that turns the condition into the trigger's active state, and the **actions** of that
//! state's changes. Nodes are evaluated children first; everything a node needs at run time (keypoint
//! indices, polygon vertices, speed histories, activation times, child indices, actions) lives in a few
//! pools allocated when the set is built, so [`Trigger::evaluate`] never allocates.
//!
//! Time is the frame's host timestamp given in [`TriggerInput`] (never a clock read), so replaying
//! recorded poses with their timestamps gives the same decisions as the live loop.
//!
//! # Unknown
//!
//! A condition is *unknown* on a frame when a keypoint it reads is missing (NaN) or scores below
//! `min_score`, or when a combinator's children leave the answer open. With `unknown = "hold"` (the
//! default) the trigger keeps its state: it never activates or deactivates on an unknown frame, and a
//! pending minimum duration is neither interrupted nor completed; combinators over it see unknown.
//! With `unknown = "false"` unknown counts as false (the trigger ends, combinators see false).
//! Combinators follow Kleene's three-valued logic:
//!
//! - `all`: false if any child is false, else unknown if any is unknown, else true;
//! - `any`: true if any child is true, else unknown if any is unknown, else false;
//! - `not`: unknown stays unknown;
//! - `sequence`: an unknown step neither completes nor breaks the sequence (its onset is judged against
//!   its last known value); once complete, the sequence is unknown while its last step is.
//!
//! The likelihood gate is never unknown: a missing keypoint scores 0.

use std::collections::HashMap;
use std::ops::Range;

use super::config::{
    ActionConfig, Edge, OutputMode, RecordingMarker, TriggerConfig, TriggerKind, UnknownPolicy,
    ZoneWhen,
};
use super::zone::Shape;
use super::{Action, ActionBuf, Trigger, TriggerInput};
use crate::error::{PluginError, TriggerConfigError};
use crate::pose::Pose;

/// Most steps a `sequence` trigger may have.
pub const MAX_SEQUENCE_STEPS: usize = 8;
/// Frames of history a `speed` trigger keeps; `smoothing_s` longer than this many frames is cut to it.
pub const SPEED_HISTORY_FRAMES: usize = 64;
/// Largest `max_rate.count`.
pub const MAX_RATE_COUNT: u32 = 64;
/// `min_score` when a trigger does not set it.
pub const DEFAULT_MIN_SCORE: f32 = 0.5;
/// `smoothing_s` when a speed trigger does not set it.
pub const DEFAULT_SMOOTHING_S: f64 = 0.1;
/// Most delayed actions (`delay_s`) a set holds waiting at once; one more is refused and counted in
/// [`ActionBuf::dropped`] of the frame that asked for it.
pub const MAX_DELAYED: usize = 64;

/// Longest time (s) any timing field may take: about 11.6 days.
const MAX_SECONDS: f64 = 1e6;

/// A range in one of the set's pools.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of_tail(pool_len_before: usize, pool_len_after: usize) -> Span {
        Span {
            start: pool_len_before as u32,
            len: (pool_len_after - pool_len_before) as u32,
        }
    }

    fn range(self) -> Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

/// A scalar test `above <= value <= below` (either bound may be infinite) with hysteresis: once true,
/// it stays true while the value is within `hysteresis` of the bounds.
#[derive(Clone, Copy, Debug)]
struct Threshold {
    above: f32,
    below: f32,
    hysteresis: f32,
    /// The last known result.
    on: bool,
}

impl Threshold {
    /// The result for `value`; NaN is unknown and leaves the state as it was.
    fn test(&mut self, value: f32) -> Option<bool> {
        if value.is_nan() {
            return None;
        }
        let h = if self.on { self.hysteresis } else { 0.0 };
        self.on = value >= self.above - h && value <= self.below + h;
        Some(self.on)
    }
}

/// One position of a speed trigger's point, at the pose's time.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    t_ns: u64,
    x: f32,
    y: f32,
    known: bool,
}

/// The condition of one node, with its state (hysteresis, history).
#[derive(Clone, Copy, Debug)]
enum Cond {
    Zone {
        keypoint: u16,
        shape: Shape,
        hysteresis_px: f32,
        when: ZoneWhen,
        /// Last known inside state (after hysteresis).
        inside: bool,
    },
    Speed {
        /// Keypoint indices whose centre is tracked.
        points: Span,
        threshold: Threshold,
        /// 1 / px_per_cm, or 1.
        scale: f32,
        window_ns: u64,
        /// Ring of [`SPEED_HISTORY_FRAMES`] samples in the sample pool.
        history: Span,
        head: u32,
        filled: u32,
    },
    Angle {
        a: u16,
        b: u16,
        /// The third point of a three-point angle (the angle is at `b`); `None`: segment `a`→`b` to the axis.
        c: Option<u16>,
        axis_deg: f32,
        threshold: Threshold,
    },
    Distance {
        a: u16,
        b: u16,
        scale: f32,
        threshold: Threshold,
    },
    Likelihood {
        points: Span,
        threshold: Threshold,
    },
    All {
        children: Span,
    },
    Any {
        children: Span,
    },
    Not {
        /// One child.
        children: Span,
    },
    Sequence {
        children: Span,
        window_ns: u64,
        /// `starts[k]`: the first-step onset time of the latest chain completed through step k.
        starts: [Option<u64>; MAX_SEQUENCE_STEPS],
        /// Last known value of each step, for onset detection.
        last: [bool; MAX_SEQUENCE_STEPS],
        /// The sequence completed and its last step is still active.
        completed: bool,
    },
}

impl Cond {
    /// Back to the state of a freshly built node.
    fn reset(&mut self) {
        match self {
            Cond::Zone { inside, .. } => *inside = false,
            Cond::Speed {
                threshold,
                head,
                filled,
                ..
            } => {
                threshold.on = false;
                *head = 0;
                *filled = 0;
            }
            Cond::Angle { threshold, .. }
            | Cond::Distance { threshold, .. }
            | Cond::Likelihood { threshold, .. } => threshold.on = false,
            Cond::All { .. } | Cond::Any { .. } | Cond::Not { .. } => {}
            Cond::Sequence {
                starts,
                last,
                completed,
                ..
            } => {
                *starts = [None; MAX_SEQUENCE_STEPS];
                *last = [false; MAX_SEQUENCE_STEPS];
                *completed = false;
            }
        }
    }
}

/// Minimum duration, refractory period and maximum rate between a condition and the trigger's state.
#[derive(Clone, Copy, Debug, Default)]
struct Gate {
    min_duration_ns: u64,
    refractory_ns: u64,
    rate_window_ns: u64,
    /// Ring of the last `max_rate.count` activation times in the onset pool (empty: no rate limit).
    onsets: Span,
    head: u32,
    filled: u32,
    active: bool,
    /// Start of the current run of true frames.
    true_since: Option<u64>,
    last_onset: Option<u64>,
}

impl Gate {
    /// Feed one frame's condition at time `t_ns`; returns the new state when it changed.
    fn step(&mut self, value: Option<bool>, t_ns: u64, pool: &mut [u64]) -> Option<bool> {
        match value {
            None => None,
            Some(false) => {
                self.true_since = None;
                if self.active {
                    self.active = false;
                    Some(false)
                } else {
                    None
                }
            }
            Some(true) => {
                let since = *self.true_since.get_or_insert(t_ns);
                if self.active || t_ns.saturating_sub(since) < self.min_duration_ns {
                    return None;
                }
                if self
                    .last_onset
                    .is_some_and(|last| t_ns.saturating_sub(last) < self.refractory_ns)
                {
                    return None;
                }
                let ring = &mut pool[self.onsets.range()];
                if !ring.is_empty() {
                    // Full ring: its oldest entry is the `count`-th last activation.
                    if self.filled as usize == ring.len()
                        && t_ns.saturating_sub(ring[self.head as usize]) < self.rate_window_ns
                    {
                        return None;
                    }
                    ring[self.head as usize] = t_ns;
                    self.head = (self.head + 1) % ring.len() as u32;
                    self.filled = (self.filled + 1).min(ring.len() as u32);
                }
                self.active = true;
                self.last_onset = Some(t_ns);
                Some(true)
            }
        }
    }

    fn reset(&mut self) {
        self.head = 0;
        self.filled = 0;
        self.active = false;
        self.true_since = None;
        self.last_onset = None;
    }
}

/// An action of a node, ready to push.
#[derive(Clone, Copy, Debug)]
enum ActionSpec {
    /// High on activation, low on deactivation and at reset.
    Level { channel: u8 },
    /// `action` on one edge, `delay_ns` after it (0: at once).
    Once {
        action: Action,
        at: Edge,
        delay_ns: u64,
    },
}

/// An action waiting for its frame: pushed on the first frame whose time is at least `due_ns`.
#[derive(Clone, Copy, Debug)]
struct Delayed {
    due_ns: u64,
    /// Order of scheduling, so actions due at the same time keep it.
    seq: u64,
    action: Action,
}

/// One compiled trigger.
#[derive(Clone, Debug)]
struct Node {
    name: String,
    cond: Cond,
    use_measured: bool,
    min_score: f32,
    unknown_false: bool,
    gate: Gate,
    actions: Span,
}

/// The built-in triggers of a config, compiled into a flat evaluator; see the [module
/// docs](self) for the semantics. Built once (allocates), evaluated per frame (never allocates).
///
/// Triggers keep their config order for [`Trigger::name`], [`Trigger::is_active`] and the indices
/// reported to `changes`; they are evaluated children first (a combinator after the triggers it
/// names), otherwise in config order, and push their actions in that order.
#[derive(Clone, Debug)]
pub struct TriggerSet {
    nodes: Vec<Node>,
    /// Evaluation order: node indices, children before parents.
    order: Vec<u16>,
    /// Each node's output on the last frame: its state, or `None` when its condition was unknown.
    values: Vec<Option<bool>>,
    keypoints: Vec<u16>,
    children: Vec<u16>,
    vertices: Vec<[f32; 2]>,
    samples: Vec<Sample>,
    onsets: Vec<u64>,
    actions: Vec<ActionSpec>,
    /// Delayed actions waiting for their frame, in free slots (fixed size: scheduling never allocates).
    delayed: [Option<Delayed>; MAX_DELAYED],
    /// Delayed actions scheduled so far (their order).
    delayed_seq: u64,
}

impl TriggerSet {
    /// Compile `configs` for a pose model whose keypoints are `keypoint_names`, in pose order.
    ///
    /// An error says which config (index) is at fault, and its message names the trigger and field.
    pub fn new(
        configs: &[TriggerConfig],
        keypoint_names: &[&str],
    ) -> Result<Self, TriggerConfigError> {
        Self::build(configs, Some(keypoint_names))
    }

    /// Check `configs` without a pose model: everything [`TriggerSet::new`] checks except that
    /// keypoint names exist (for a config check before the model is loaded).
    pub fn validate(configs: &[TriggerConfig]) -> Result<(), TriggerConfigError> {
        Self::build(configs, None).map(|_| ())
    }

    /// The output of trigger `index` on the last evaluated frame: its state, or `None` when its
    /// condition was unknown (with `unknown = "hold"`), or before the first frame.
    pub fn value(&self, index: usize) -> Option<bool> {
        self.values.get(index).copied().flatten()
    }

    /// Index of the trigger called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn build(
        configs: &[TriggerConfig],
        names: Option<&[&str]>,
    ) -> Result<Self, TriggerConfigError> {
        let at = |index: usize| move |error: PluginError| TriggerConfigError { index, error };
        if configs.len() > usize::from(u16::MAX) {
            return Err(at(configs.len() - 1)(PluginError::InvalidTrigger {
                trigger: configs[configs.len() - 1].name.clone(),
                field: "name".into(),
                problem: format!("is one trigger too many (at most {})", u16::MAX),
            }));
        }
        let mut by_name = HashMap::new();
        for (i, cfg) in configs.iter().enumerate() {
            if cfg.name.is_empty() {
                return Err(at(i)(bad(cfg, "name", "must not be empty")));
            }
            if by_name.insert(cfg.name.as_str(), i).is_some() {
                return Err(at(i)(bad(cfg, "name", "is used by another trigger")));
            }
        }
        let mut set = TriggerSet {
            nodes: Vec::with_capacity(configs.len()),
            order: Vec::with_capacity(configs.len()),
            values: vec![None; configs.len()],
            keypoints: Vec::new(),
            children: Vec::new(),
            vertices: Vec::new(),
            samples: Vec::new(),
            onsets: Vec::new(),
            actions: Vec::new(),
            delayed: [None; MAX_DELAYED],
            delayed_seq: 0,
        };
        for (i, cfg) in configs.iter().enumerate() {
            let node = set.compile(i, cfg, names, &by_name).map_err(at(i))?;
            set.nodes.push(node);
        }
        set.order_children_first(configs)
            .map_err(|(i, e)| at(i)(e))?;
        Ok(set)
    }

    /// Depth-first post-order over the combinators' children; a cycle is an error at the trigger that
    /// closes it.
    fn order_children_first(
        &mut self,
        configs: &[TriggerConfig],
    ) -> Result<(), (usize, PluginError)> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Visiting,
            Done,
        }
        fn visit(
            set: &mut TriggerSet,
            configs: &[TriggerConfig],
            marks: &mut [Mark],
            i: usize,
        ) -> Result<(), (usize, PluginError)> {
            match marks[i] {
                Mark::Done => return Ok(()),
                Mark::Visiting => {
                    return Err((
                        i,
                        bad(
                            &configs[i],
                            "of",
                            "makes a cycle: the trigger depends on itself",
                        ),
                    ));
                }
                Mark::New => {}
            }
            marks[i] = Mark::Visiting;
            let children = match set.nodes[i].cond {
                Cond::All { children }
                | Cond::Any { children }
                | Cond::Not { children }
                | Cond::Sequence { children, .. } => children.range(),
                _ => 0..0,
            };
            for k in children {
                let c = usize::from(set.children[k]);
                visit(set, configs, marks, c)?;
            }
            marks[i] = Mark::Done;
            set.order.push(i as u16);
            Ok(())
        }
        let mut marks = vec![Mark::New; self.nodes.len()];
        for i in 0..self.nodes.len() {
            visit(self, configs, &mut marks, i)?;
        }
        Ok(())
    }

    fn compile(
        &mut self,
        index: usize,
        cfg: &TriggerConfig,
        names: Option<&[&str]>,
        by_name: &HashMap<&str, usize>,
    ) -> Result<Node, PluginError> {
        check_fields_apply(cfg)?;
        let min_score = cfg.min_score.unwrap_or(DEFAULT_MIN_SCORE);
        if !(0.0..=1.0).contains(&min_score) {
            return Err(PluginError::InvalidMinScore {
                trigger: cfg.name.clone(),
                value: min_score,
            });
        }
        let cond = match cfg.kind {
            TriggerKind::Zone => self.zone(cfg, names)?,
            TriggerKind::Speed => self.speed(cfg, names)?,
            TriggerKind::Angle => self.angle(cfg, names)?,
            TriggerKind::Distance => self.distance(cfg, names)?,
            TriggerKind::Likelihood => {
                let before = self.keypoints.len();
                match (&cfg.keypoint, &cfg.keypoints) {
                    (Some(k), None) => {
                        let k = resolve(cfg, k, names)?;
                        self.keypoints.push(k);
                    }
                    (None, Some(list)) if !list.is_empty() => {
                        for k in list {
                            let k = resolve(cfg, k, names)?;
                            self.keypoints.push(k);
                        }
                    }
                    _ => {
                        return Err(bad(
                            cfg,
                            "keypoint",
                            "or `keypoints` (not both, not empty) is required for kind = \"likelihood\"",
                        ));
                    }
                }
                Cond::Likelihood {
                    points: Span::of_tail(before, self.keypoints.len()),
                    threshold: threshold(cfg)?,
                }
            }
            TriggerKind::All | TriggerKind::Any | TriggerKind::Not | TriggerKind::Sequence => {
                self.combinator(index, cfg, by_name)?
            }
        };
        let gate = self.gate(cfg, &cond)?;
        let actions = self.actions(index, cfg)?;
        Ok(Node {
            name: cfg.name.clone(),
            cond,
            use_measured: cfg.use_measured,
            min_score,
            unknown_false: cfg.unknown == UnknownPolicy::False,
            gate,
            actions,
        })
    }

    fn zone(&mut self, cfg: &TriggerConfig, names: Option<&[&str]>) -> Result<Cond, PluginError> {
        let keypoint = resolve(
            cfg,
            required(cfg, "keypoint", cfg.keypoint.as_ref())?,
            names,
        )?;
        let zone = required(cfg, "zone", cfg.zone.as_ref())?;
        zone.validate()
            .map_err(|problem| PluginError::InvalidZone {
                trigger: cfg.name.clone(),
                problem,
            })?;
        Ok(Cond::Zone {
            keypoint,
            shape: Shape::compile(zone, &mut self.vertices),
            hysteresis_px: non_negative(cfg, "hysteresis", cfg.hysteresis)?,
            when: cfg.when.unwrap_or_default(),
            inside: false,
        })
    }

    fn speed(&mut self, cfg: &TriggerConfig, names: Option<&[&str]>) -> Result<Cond, PluginError> {
        let before = self.keypoints.len();
        match (&cfg.keypoint, &cfg.keypoints, cfg.body_centre) {
            (Some(k), None, None) => {
                let k = resolve(cfg, k, names)?;
                self.keypoints.push(k);
            }
            (None, Some(list), None) if !list.is_empty() => {
                for k in list {
                    let k = resolve(cfg, k, names)?;
                    self.keypoints.push(k);
                }
            }
            (None, None, Some(true)) => {
                let n = names.map_or(0, <[&str]>::len);
                self.keypoints.extend((0..n).map(|k| k as u16));
            }
            _ => {
                return Err(bad(
                    cfg,
                    "keypoint",
                    "(one), `keypoints` (their centre) or `body_centre = true` is required for kind = \"speed\", and only one of them",
                ));
            }
        }
        let window_s = positive_seconds(cfg, "smoothing_s", cfg.smoothing_s, DEFAULT_SMOOTHING_S)?;
        let history = Span {
            start: self.samples.len() as u32,
            len: SPEED_HISTORY_FRAMES as u32,
        };
        self.samples
            .resize(self.samples.len() + SPEED_HISTORY_FRAMES, Sample::default());
        Ok(Cond::Speed {
            points: Span::of_tail(before, self.keypoints.len()),
            threshold: threshold(cfg)?,
            scale: scale(cfg)?,
            window_ns: window_s,
            history,
            head: 0,
            filled: 0,
        })
    }

    fn angle(&mut self, cfg: &TriggerConfig, names: Option<&[&str]>) -> Result<Cond, PluginError> {
        let list = required(cfg, "keypoints", cfg.keypoints.as_ref())?;
        let idx = |k: usize| resolve(cfg, &list[k], names);
        let axis_deg = match (cfg.axis, cfg.axis_deg) {
            (Some(a), None) => Some(a.degrees()),
            (None, Some(d)) if d.is_finite() => Some(d),
            (None, Some(d)) => {
                return Err(bad(
                    cfg,
                    "axis_deg",
                    format!("must be a finite number, got {d}"),
                ));
            }
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(bad(cfg, "axis", "and `axis_deg` cannot both be given"));
            }
        };
        let (a, b, c, axis_deg) = match (list.len(), axis_deg) {
            (3, None) => (idx(0)?, idx(1)?, Some(idx(2)?), 0.0),
            (3, Some(_)) => {
                return Err(bad(
                    cfg,
                    "axis",
                    "does not apply to a three-keypoint angle (the angle is at the middle keypoint)",
                ));
            }
            (2, Some(d)) => (idx(0)?, idx(1)?, None, d),
            (2, None) => {
                return Err(bad(
                    cfg,
                    "axis",
                    "(or `axis_deg`) is required for the angle of a two-keypoint segment",
                ));
            }
            (n, _) => {
                return Err(bad(
                    cfg,
                    "keypoints",
                    format!(
                        "must name 3 keypoints (angle at the middle one) or 2 (a segment, with `axis`), got {n}"
                    ),
                ));
            }
        };
        Ok(Cond::Angle {
            a,
            b,
            c,
            axis_deg,
            threshold: threshold(cfg)?,
        })
    }

    fn distance(
        &mut self,
        cfg: &TriggerConfig,
        names: Option<&[&str]>,
    ) -> Result<Cond, PluginError> {
        if cfg.animals.is_some() {
            return Err(bad(
                cfg,
                "animals",
                "is not supported until multi-animal poses land (a pose holds one animal)",
            ));
        }
        let list = required(cfg, "keypoints", cfg.keypoints.as_ref())?;
        if list.len() != 2 {
            return Err(bad(
                cfg,
                "keypoints",
                format!("must name 2 keypoints, got {}", list.len()),
            ));
        }
        Ok(Cond::Distance {
            a: resolve(cfg, &list[0], names)?,
            b: resolve(cfg, &list[1], names)?,
            scale: scale(cfg)?,
            threshold: threshold(cfg)?,
        })
    }

    fn combinator(
        &mut self,
        index: usize,
        cfg: &TriggerConfig,
        by_name: &HashMap<&str, usize>,
    ) -> Result<Cond, PluginError> {
        let of = required(cfg, "of", cfg.of.as_ref())?;
        let (min, max) = match cfg.kind {
            TriggerKind::Not => (1, 1),
            TriggerKind::Sequence => (2, MAX_SEQUENCE_STEPS),
            _ => (1, usize::from(u16::MAX)),
        };
        if of.len() < min || of.len() > max {
            let want = if min == max {
                format!("exactly {min}")
            } else if max == MAX_SEQUENCE_STEPS {
                format!("{min} to {max}")
            } else {
                format!("at least {min}")
            };
            return Err(bad(
                cfg,
                "of",
                format!(
                    "must name {want} trigger(s) for kind = \"{}\", got {}",
                    cfg.kind.as_str(),
                    of.len()
                ),
            ));
        }
        let before = self.children.len();
        for child in of {
            let Some(&c) = by_name.get(child.as_str()) else {
                let mut known: Vec<(usize, &str)> = by_name.iter().map(|(n, i)| (*i, *n)).collect();
                known.sort_unstable();
                let known: Vec<&str> = known.into_iter().map(|(_, n)| n).collect();
                return Err(bad(
                    cfg,
                    "of",
                    format!(
                        "names unknown trigger `{child}` (known: {})",
                        known.join(", ")
                    ),
                ));
            };
            if c == index {
                return Err(bad(
                    cfg,
                    "of",
                    "makes a cycle: the trigger depends on itself",
                ));
            }
            self.children.push(c as u16);
        }
        let children = Span::of_tail(before, self.children.len());
        Ok(match cfg.kind {
            TriggerKind::All => Cond::All { children },
            TriggerKind::Any => Cond::Any { children },
            TriggerKind::Not => Cond::Not { children },
            _ => Cond::Sequence {
                children,
                window_ns: positive_seconds(cfg, "window_s", cfg.window_s, f64::NAN)?,
                starts: [None; MAX_SEQUENCE_STEPS],
                last: [false; MAX_SEQUENCE_STEPS],
                completed: false,
            },
        })
    }

    fn gate(&mut self, cfg: &TriggerConfig, cond: &Cond) -> Result<Gate, PluginError> {
        let min_duration_ns = seconds(cfg, "min_duration_s", cfg.min_duration_s)?;
        if min_duration_ns > 0
            && let Cond::Zone { when, .. } = cond
            && *when != ZoneWhen::Inside
        {
            return Err(bad(
                cfg,
                "min_duration_s",
                format!(
                    "cannot be used with when = \"{}\": that condition holds for one frame only",
                    if *when == ZoneWhen::Enter {
                        "enter"
                    } else {
                        "exit"
                    }
                ),
            ));
        }
        let mut gate = Gate {
            min_duration_ns,
            refractory_ns: seconds(cfg, "refractory_s", cfg.refractory_s)?,
            ..Gate::default()
        };
        if let Some(rate) = cfg.max_rate {
            if !(1..=MAX_RATE_COUNT).contains(&rate.count) {
                return Err(bad(
                    cfg,
                    "max_rate.count",
                    format!("must be between 1 and {MAX_RATE_COUNT}, got {}", rate.count),
                ));
            }
            gate.rate_window_ns = positive_seconds(cfg, "max_rate.per_s", Some(rate.per_s), 0.0)?;
            let before = self.onsets.len();
            self.onsets.resize(before + rate.count as usize, 0);
            gate.onsets = Span::of_tail(before, self.onsets.len());
        }
        Ok(gate)
    }

    fn actions(&mut self, index: usize, cfg: &TriggerConfig) -> Result<Span, PluginError> {
        let before = self.actions.len();
        match (cfg.channel, cfg.mode) {
            (Some(channel), None | Some(OutputMode::Level)) => {
                self.actions.push(ActionSpec::Level { channel });
            }
            (Some(_), Some(OutputMode::Pulse { width_us: 0 })) => {
                return Err(PluginError::ZeroPulseWidth {
                    trigger: cfg.name.clone(),
                });
            }
            (Some(channel), Some(OutputMode::Pulse { width_us })) => {
                self.actions.push(ActionSpec::Once {
                    action: Action::Pulse { channel, width_us },
                    at: Edge::On,
                    delay_ns: 0,
                });
            }
            (None, Some(_)) => return Err(bad(cfg, "mode", "needs `channel`")),
            (None, None) => {}
        }
        let trigger = index as u16;
        for (k, action) in cfg.actions.iter().enumerate() {
            let field = |name: &str| format!("actions[{k}].{name}");
            let spec = match *action {
                ActionConfig::Level { channel } => ActionSpec::Level { channel },
                ActionConfig::Set { channel, high, at } => ActionSpec::Once {
                    action: Action::SetLevel { channel, high },
                    at,
                    delay_ns: 0,
                },
                ActionConfig::Pulse {
                    channel,
                    width_us,
                    at,
                    delay_s,
                } => {
                    if width_us == 0 {
                        return Err(bad(cfg, field("width_us"), "must be > 0, got 0"));
                    }
                    ActionSpec::Once {
                        action: Action::Pulse { channel, width_us },
                        at,
                        delay_ns: seconds(cfg, &field("delay_s"), delay_s)?,
                    }
                }
                ActionConfig::Train {
                    channel,
                    width_us,
                    period_us,
                    count,
                    at,
                    delay_s,
                } => {
                    if width_us == 0 {
                        return Err(bad(cfg, field("width_us"), "must be > 0, got 0"));
                    }
                    if count == 0 {
                        return Err(bad(cfg, field("count"), "must be > 0, got 0"));
                    }
                    if count > 1 && period_us <= width_us {
                        return Err(bad(
                            cfg,
                            field("period_us"),
                            format!(
                                "must be greater than width_us ({width_us}) when count > 1, got {period_us}"
                            ),
                        ));
                    }
                    ActionSpec::Once {
                        action: Action::PulseTrain {
                            channel,
                            period_us,
                            width_us,
                            count,
                        },
                        at,
                        delay_ns: seconds(cfg, &field("delay_s"), delay_s)?,
                    }
                }
                ActionConfig::Mark { code, at } => ActionSpec::Once {
                    action: Action::Mark { code, trigger },
                    at,
                    delay_ns: 0,
                },
                ActionConfig::Recording { marker, at } => ActionSpec::Once {
                    action: Action::Recording {
                        trigger,
                        start: marker == RecordingMarker::Start,
                    },
                    at,
                    delay_ns: 0,
                },
            };
            self.actions.push(spec);
        }
        Ok(Span::of_tail(before, self.actions.len()))
    }
}

impl Trigger for TriggerSet {
    fn len(&self) -> usize {
        self.nodes.len()
    }

    fn name(&self, index: usize) -> &str {
        self.nodes.get(index).map_or("", |n| n.name.as_str())
    }

    fn evaluate(
        &mut self,
        input: &TriggerInput<'_>,
        actions: &mut ActionBuf,
        changes: &mut dyn FnMut(usize, bool),
    ) {
        let TriggerSet {
            nodes,
            order,
            values,
            keypoints,
            children,
            vertices,
            samples,
            onsets,
            actions: specs,
            delayed,
            delayed_seq,
        } = self;
        fire_due(delayed, input.frame_time_ns, actions);
        let pools = Pools {
            keypoints,
            children,
            vertices,
        };
        for &i in order.iter() {
            let i = usize::from(i);
            let node = &mut nodes[i];
            let (pose, pose_t_ns) = if node.use_measured {
                (input.measured, input.frame_time_ns)
            } else {
                (input.predicted, input.target_ns)
            };
            let raw = condition(
                &mut node.cond,
                pose,
                pose_t_ns,
                input.frame_time_ns,
                node.min_score,
                &pools,
                samples,
                values,
            );
            let value = match raw {
                None if node.unknown_false => Some(false),
                other => other,
            };
            let change = node.gate.step(value, input.frame_time_ns, onsets);
            values[i] = value.map(|_| node.gate.active);
            if let Some(active) = change {
                for spec in &specs[node.actions.range()] {
                    let (action, delay_ns) = match *spec {
                        ActionSpec::Level { channel } => (
                            Some(Action::SetLevel {
                                channel,
                                high: active,
                            }),
                            0,
                        ),
                        ActionSpec::Once {
                            action,
                            at,
                            delay_ns,
                        } => (((at == Edge::On) == active).then_some(action), delay_ns),
                    };
                    match action {
                        None => {}
                        // A full buffer is counted in `actions.dropped()` for the caller to report.
                        Some(action) if delay_ns == 0 => {
                            let _ = actions.push(action);
                        }
                        Some(action) => match delayed.iter_mut().find(|d| d.is_none()) {
                            Some(slot) => {
                                *delayed_seq += 1;
                                *slot = Some(Delayed {
                                    due_ns: input.frame_time_ns.saturating_add(delay_ns),
                                    seq: *delayed_seq,
                                    action,
                                });
                            }
                            None => actions.count_dropped(),
                        },
                    }
                }
                changes(i, active);
            }
        }
    }

    fn is_active(&self, index: usize) -> bool {
        self.nodes.get(index).is_some_and(|n| n.gate.active)
    }

    fn reset(&mut self, actions: &mut ActionBuf) {
        for node in &mut self.nodes {
            for spec in &self.actions[node.actions.range()] {
                let channel = match *spec {
                    ActionSpec::Level { channel }
                    | ActionSpec::Once {
                        action: Action::SetLevel { channel, .. },
                        ..
                    } => channel,
                    ActionSpec::Once { .. } => continue,
                };
                // Always drive low, even if we think it is low already: stop must leave rest.
                let _ = actions.push(Action::SetLevel {
                    channel,
                    high: false,
                });
            }
            node.cond.reset();
            node.gate.reset();
        }
        self.values.fill(None);
        // Delayed actions not yet due are dropped: stop leaves the outputs at rest.
        self.delayed = [None; MAX_DELAYED];
    }
}

/// Push every delayed action due by `t_ns` (earliest first, ties in scheduling order) and forget it.
fn fire_due(delayed: &mut [Option<Delayed>], t_ns: u64, actions: &mut ActionBuf) {
    loop {
        let next = delayed
            .iter_mut()
            .filter(|d| d.is_some_and(|d| d.due_ns <= t_ns))
            .min_by_key(|d| d.map(|d| (d.due_ns, d.seq)));
        let Some(Some(d)) = next.map(Option::take) else {
            break;
        };
        // A full buffer is counted in `actions.dropped()` for the caller to report.
        let _ = actions.push(d.action);
    }
}

/// The read-only pools a condition looks into.
struct Pools<'a> {
    keypoints: &'a [u16],
    children: &'a [u16],
    vertices: &'a [[f32; 2]],
}

/// The position of keypoint `k` when it is present and scores at least `min_score`.
fn point(pose: &Pose, k: u16, min_score: f32) -> Option<(f32, f32)> {
    let p = pose.points().get(usize::from(k))?;
    // `>=` is false for a NaN score.
    (!p.is_missing() && p.score >= min_score).then_some((p.x, p.y))
}

/// One node's condition on this frame: `Some(value)`, or `None` when unknown.
#[allow(clippy::too_many_arguments)] // reason: the pools are split so the node's state can be borrowed mutably beside them
fn condition(
    cond: &mut Cond,
    pose: &Pose,
    pose_t_ns: u64,
    frame_t_ns: u64,
    min_score: f32,
    pools: &Pools<'_>,
    samples: &mut [Sample],
    values: &[Option<bool>],
) -> Option<bool> {
    match cond {
        Cond::Zone {
            keypoint,
            shape,
            hysteresis_px,
            when,
            inside,
        } => {
            let (x, y) = point(pose, *keypoint, min_score)?;
            let now = shape.contains(pools.vertices, x, y)
                || (*inside
                    && *hysteresis_px > 0.0
                    && shape.distance_outside(pools.vertices, x, y) <= *hysteresis_px);
            let was = std::mem::replace(inside, now);
            Some(match when {
                ZoneWhen::Inside => now,
                ZoneWhen::Enter => now && !was,
                ZoneWhen::Exit => was && !now,
            })
        }
        Cond::Speed {
            points,
            threshold,
            scale,
            window_ns,
            history,
            head,
            filled,
        } => {
            let (mut sx, mut sy, mut n) = (0.0f32, 0.0f32, 0usize);
            let wanted = &pools.keypoints[points.range()];
            for &k in wanted {
                if let Some((x, y)) = point(pose, k, min_score) {
                    sx += x;
                    sy += y;
                    n += 1;
                }
            }
            // The centre of fewer than half of its points would wander with whichever are seen.
            let known = n > 0 && 2 * n >= wanted.len();
            let ring = &mut samples[history.range()];
            let cap = ring.len();
            let (x, y) = (sx / n.max(1) as f32, sy / n.max(1) as f32);
            ring[*head as usize] = Sample {
                t_ns: pose_t_ns,
                x,
                y,
                known,
            };
            let newest = *head as usize;
            *head = ((newest + 1) % cap) as u32;
            *filled = (*filled + 1).min(cap as u32);
            if !known {
                return None;
            }
            // The oldest known sample within the window; the previous frame when frames are further
            // apart than the window.
            let mut reference = None;
            for back in 1..*filled as usize {
                let s = ring[(newest + cap - back) % cap];
                if pose_t_ns.saturating_sub(s.t_ns) > *window_ns {
                    if back == 1 && s.known {
                        reference = Some(s);
                    }
                    break;
                }
                if s.known {
                    reference = Some(s);
                }
            }
            let r = reference?;
            let dt_ns = pose_t_ns.checked_sub(r.t_ns).filter(|&d| d > 0)?;
            let speed = (x - r.x).hypot(y - r.y) * *scale / (dt_ns as f32 * 1e-9);
            threshold.test(speed)
        }
        Cond::Angle {
            a,
            b,
            c,
            axis_deg,
            threshold,
        } => {
            let (ax, ay) = point(pose, *a, min_score)?;
            let (bx, by) = point(pose, *b, min_score)?;
            let degrees = match c {
                Some(c) => {
                    let (cx, cy) = point(pose, *c, min_score)?;
                    let (ux, uy, vx, vy) = (ax - bx, ay - by, cx - bx, cy - by);
                    if (ux == 0.0 && uy == 0.0) || (vx == 0.0 && vy == 0.0) {
                        return None;
                    }
                    (ux * vy - uy * vx)
                        .abs()
                        .atan2(ux * vx + uy * vy)
                        .to_degrees()
                }
                None => {
                    let (dx, dy) = (bx - ax, by - ay);
                    if dx == 0.0 && dy == 0.0 {
                        return None;
                    }
                    let diff = (dy.atan2(dx).to_degrees() - *axis_deg).rem_euclid(360.0);
                    if diff > 180.0 { 360.0 - diff } else { diff }
                }
            };
            threshold.test(degrees)
        }
        Cond::Distance {
            a,
            b,
            scale,
            threshold,
        } => {
            let (ax, ay) = point(pose, *a, min_score)?;
            let (bx, by) = point(pose, *b, min_score)?;
            threshold.test((ax - bx).hypot(ay - by) * *scale)
        }
        Cond::Likelihood { points, threshold } => {
            let mut lowest = f32::INFINITY;
            for &k in &pools.keypoints[points.range()] {
                let score = pose
                    .points()
                    .get(usize::from(k))
                    .filter(|p| !p.is_missing() && !p.score.is_nan())
                    .map_or(0.0, |p| p.score);
                lowest = lowest.min(score);
            }
            threshold.test(lowest)
        }
        Cond::All { children } => {
            let mut unknown = false;
            for &c in &pools.children[children.range()] {
                match values[usize::from(c)] {
                    Some(false) => return Some(false),
                    None => unknown = true,
                    Some(true) => {}
                }
            }
            (!unknown).then_some(true)
        }
        Cond::Any { children } => {
            let mut unknown = false;
            for &c in &pools.children[children.range()] {
                match values[usize::from(c)] {
                    Some(true) => return Some(true),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            (!unknown).then_some(false)
        }
        Cond::Not { children } => {
            values[usize::from(pools.children[children.range()][0])].map(|v| !v)
        }
        Cond::Sequence {
            children,
            window_ns,
            starts,
            last,
            completed,
        } => {
            let steps = &pools.children[children.range()];
            let n = steps.len();
            for start in starts.iter_mut() {
                if start.is_some_and(|s| frame_t_ns.saturating_sub(s) > *window_ns) {
                    *start = None;
                }
            }
            let mut completed_now = false;
            // Last step first, so one frame's onset advances a chain by one step only.
            for k in (0..n).rev() {
                let Some(v) = values[usize::from(steps[k])] else {
                    continue;
                };
                let onset = v && !last[k];
                last[k] = v;
                if !onset {
                    continue;
                }
                if k == 0 {
                    // The latest first-step onset leaves the most time for the rest.
                    starts[0] = Some(frame_t_ns);
                } else if let Some(s) = starts[k - 1] {
                    if k == n - 1 {
                        completed_now = true;
                    } else {
                        starts[k] = Some(starts[k].map_or(s, |o| o.max(s)));
                    }
                }
            }
            if completed_now {
                // Each completion uses up its chain: the next one needs fresh onsets of every step.
                *completed = true;
                *starts = [None; MAX_SEQUENCE_STEPS];
            }
            if !*completed {
                return Some(false);
            }
            match values[usize::from(steps[n - 1])] {
                Some(true) => Some(true),
                None => None,
                Some(false) => {
                    *completed = false;
                    Some(false)
                }
            }
        }
    }
}

fn bad(cfg: &TriggerConfig, field: impl Into<String>, problem: impl Into<String>) -> PluginError {
    PluginError::InvalidTrigger {
        trigger: cfg.name.clone(),
        field: field.into(),
        problem: problem.into(),
    }
}

fn required<'a, T>(
    cfg: &TriggerConfig,
    field: &str,
    value: Option<&'a T>,
) -> Result<&'a T, PluginError> {
    value.ok_or_else(|| {
        bad(
            cfg,
            field,
            format!("is required for kind = \"{}\"", cfg.kind.as_str()),
        )
    })
}

/// The index of keypoint `name`; any name passes (as 0) when there is no model to check against.
fn resolve(cfg: &TriggerConfig, name: &str, names: Option<&[&str]>) -> Result<u16, PluginError> {
    let Some(names) = names else {
        return Ok(0);
    };
    names
        .iter()
        .position(|n| *n == name)
        .map(|k| k as u16)
        .ok_or_else(|| PluginError::UnknownKeypoint {
            trigger: cfg.name.clone(),
            keypoint: name.to_string(),
            known: names.join(", "),
        })
}

/// Refuse fields that the trigger's kind does not read, rather than silently ignore them.
fn check_fields_apply(cfg: &TriggerConfig) -> Result<(), PluginError> {
    let given = [
        ("keypoint", cfg.keypoint.is_some()),
        ("keypoints", cfg.keypoints.is_some()),
        ("body_centre", cfg.body_centre.is_some()),
        ("zone", cfg.zone.is_some()),
        ("when", cfg.when.is_some()),
        ("axis", cfg.axis.is_some()),
        ("axis_deg", cfg.axis_deg.is_some()),
        ("animals", cfg.animals.is_some()),
        ("of", cfg.of.is_some()),
        ("window_s", cfg.window_s.is_some()),
        ("above", cfg.above.is_some()),
        ("below", cfg.below.is_some()),
        ("hysteresis", cfg.hysteresis.is_some()),
        ("px_per_cm", cfg.px_per_cm.is_some()),
        ("smoothing_s", cfg.smoothing_s.is_some()),
        ("use_measured", cfg.use_measured),
        ("min_score", cfg.min_score.is_some()),
    ];
    const SCALAR: [&str; 4] = ["above", "below", "hysteresis", "use_measured"];
    let allowed: &[&str] = match cfg.kind {
        TriggerKind::Zone => &[
            "keypoint",
            "zone",
            "when",
            "hysteresis",
            "use_measured",
            "min_score",
        ],
        TriggerKind::Speed => &[
            "keypoint",
            "keypoints",
            "body_centre",
            "px_per_cm",
            "smoothing_s",
            "min_score",
        ],
        TriggerKind::Angle => &["keypoints", "axis", "axis_deg", "min_score"],
        TriggerKind::Distance => &["keypoints", "animals", "px_per_cm", "min_score"],
        TriggerKind::Likelihood => &["keypoint", "keypoints"],
        TriggerKind::All | TriggerKind::Any | TriggerKind::Not => &["of"],
        TriggerKind::Sequence => &["of", "window_s"],
    };
    let scalar = matches!(
        cfg.kind,
        TriggerKind::Speed | TriggerKind::Angle | TriggerKind::Distance | TriggerKind::Likelihood
    );
    for (field, is_given) in given {
        if is_given && !allowed.contains(&field) && !(scalar && SCALAR.contains(&field)) {
            return Err(bad(
                cfg,
                field,
                format!("does not apply to kind = \"{}\"", cfg.kind.as_str()),
            ));
        }
    }
    Ok(())
}

/// The `above` / `below` / `hysteresis` test of a scalar kind.
fn threshold(cfg: &TriggerConfig) -> Result<Threshold, PluginError> {
    let finite = |field: &str, v: Option<f32>| match v {
        Some(v) if !v.is_finite() => {
            Err(bad(cfg, field, format!("must be a finite number, got {v}")))
        }
        _ => Ok(v),
    };
    let above = finite("above", cfg.above)?;
    let below = finite("below", cfg.below)?;
    match (above, below) {
        (None, None) => {
            return Err(bad(
                cfg,
                "above",
                format!(
                    "or `below` is required for kind = \"{}\"",
                    cfg.kind.as_str()
                ),
            ));
        }
        (Some(a), Some(b)) if a >= b => {
            return Err(bad(
                cfg,
                "above",
                format!("must be less than `below` ({b}), got {a}"),
            ));
        }
        _ => {}
    }
    Ok(Threshold {
        above: above.unwrap_or(f32::NEG_INFINITY),
        below: below.unwrap_or(f32::INFINITY),
        hysteresis: non_negative(cfg, "hysteresis", cfg.hysteresis)?,
        on: false,
    })
}

fn non_negative(cfg: &TriggerConfig, field: &str, v: Option<f32>) -> Result<f32, PluginError> {
    match v {
        None => Ok(0.0),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Some(v) => Err(bad(
            cfg,
            field,
            format!("must be a finite number >= 0, got {v}"),
        )),
    }
}

/// 1 / `px_per_cm`, or 1 without calibration.
fn scale(cfg: &TriggerConfig) -> Result<f32, PluginError> {
    match cfg.px_per_cm {
        None => Ok(1.0),
        Some(p) if p.is_finite() && p > 0.0 => Ok(1.0 / p),
        Some(p) => Err(bad(
            cfg,
            "px_per_cm",
            format!("must be a finite number > 0, got {p}"),
        )),
    }
}

/// A duration >= 0 in s (default 0), in ns.
fn seconds(cfg: &TriggerConfig, field: &str, v: Option<f64>) -> Result<u64, PluginError> {
    match v {
        None => Ok(0),
        Some(s) if (0.0..=MAX_SECONDS).contains(&s) => Ok((s * 1e9).round() as u64),
        Some(s) => Err(bad(
            cfg,
            field,
            format!("must be between 0 and {MAX_SECONDS} s, got {s}"),
        )),
    }
}

/// A duration > 0 in s, in ns; a NaN `default` makes the field required.
fn positive_seconds(
    cfg: &TriggerConfig,
    field: &str,
    v: Option<f64>,
    default: f64,
) -> Result<u64, PluginError> {
    let s = match v {
        Some(s) => s,
        None if default.is_nan() => {
            return Err(bad(
                cfg,
                field,
                format!("is required for kind = \"{}\"", cfg.kind.as_str()),
            ));
        }
        None => default,
    };
    if s > 0.0 && s <= MAX_SECONDS {
        Ok((s * 1e9).round() as u64)
    } else {
        Err(bad(
            cfg,
            field,
            format!("must be between 0 (excluded) and {MAX_SECONDS} s, got {s}"),
        ))
    }
}
