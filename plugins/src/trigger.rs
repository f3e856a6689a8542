//! Decisions and actions: triggers turn poses into [`Action`]s for the output stage.
//!
//! A [`Trigger`] is evaluated once per frame on the loop thread. It keeps named on/off states
//! and, when one changes, pushes the hardware-independent actions of the change into a
//! caller-owned [`ActionBuf`]; the daemon routes them to an `Output` (or a replay tool records
//! them). [`TriggerSet`] is the built-in, declarative implementation: `[[trigger]]` tables
//! ([`TriggerConfig`]) compiled into a flat evaluator (module [`set`] has the semantics).

mod config;
pub mod set;
mod zone;

pub use config::{
    ActionConfig, Axis, Edge, MaxRate, OutputMode, RecordingMarker, TriggerConfig, TriggerKind,
    UnknownPolicy, ZoneWhen,
};
pub use set::TriggerSet;
pub use zone::Zone;

use crate::pose::Pose;

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
    /// `count` pulses of `width_us` µs on `channel`, one rising edge every `period_us` µs.
    PulseTrain {
        /// Output channel number.
        channel: u8,
        /// Time between rising edges in microseconds.
        period_us: u32,
        /// Pulse width in microseconds.
        width_us: u32,
        /// Number of pulses.
        count: u32,
    },
    /// Record an event marker `code` in the event log (no output).
    Mark {
        /// User-defined event code.
        code: u16,
        /// Index of the trigger that marked it.
        trigger: u16,
    },
    /// Record a recording start or stop marker in the event log (no output).
    Recording {
        /// Index of the trigger that marked it.
        trigger: u16,
        /// True = start, false = stop.
        start: bool,
    },
}

impl Action {
    /// The output channel the action drives; `None` for marks and recording markers, which only go to the
    /// event log.
    pub const fn channel(&self) -> Option<u8> {
        match *self {
            Action::SetLevel { channel, .. }
            | Action::Pulse { channel, .. }
            | Action::PulseTrain { channel, .. } => Some(channel),
            Action::Mark { .. } | Action::Recording { .. } => None,
        }
    }
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
    /// Most actions one buffer holds (one frame's actions of every trigger together).
    pub const CAPACITY: usize = 64;

    /// An empty buffer.
    pub const fn new() -> Self {
        ActionBuf {
            actions: [Action::Mark {
                code: 0,
                trigger: 0,
            }; ActionBuf::CAPACITY],
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

    /// Count one action refused elsewhere on its way to this buffer (e.g. a full delay queue), so
    /// [`ActionBuf::dropped`] reports every action of the frame that was lost.
    pub fn count_dropped(&mut self) {
        self.dropped = self.dropped.saturating_add(1);
    }

    /// Remove all actions and zero the drop count (call once per frame before evaluating).
    pub fn clear(&mut self) {
        self.len = 0;
        self.dropped = 0;
    }

    /// Keep only the first `len` actions (a no-op when fewer are held): takes back what a failed step pushed.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
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
    /// Host monotonic time the frame was exposed, in ns. Triggers take all their time from here
    /// (minimum durations, refractory periods, rates, windows), never from a clock, so recorded
    /// poses replayed with their timestamps give the same decisions.
    pub frame_time_ns: u64,
    /// Host monotonic time of this evaluation, in ns (informational; decisions do not use it).
    pub now_ns: u64,
    /// Host time (ns) the predicted pose is for; speeds on the predicted pose are differences over
    /// these times. Without a predictor, `frame_time_ns`.
    pub target_ns: u64,
    /// The pose measured on this frame by the pose model.
    pub measured: &'a Pose,
    /// The pose predicted for `target_ns`.
    pub predicted: &'a Pose,
}

/// The per-frame decision seam: named triggers, each active or not, evaluated together on every
/// frame. [`TriggerSet`] (the built-in triggers) is one; a scripted protocol can be another.
pub trait Trigger: Send {
    /// Number of named triggers.
    fn len(&self) -> usize;

    /// True when there are no triggers.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of trigger `index` (config order), used in events and messages; "" out of range.
    fn name(&self, index: usize) -> &str;

    /// Evaluate one frame: push the actions of every state change into `actions` and report each
    /// change as `changes(index, now_active)`, in evaluation order.
    ///
    /// Runs on the loop thread: never allocates, never panics on NaN or missing data.
    fn evaluate(
        &mut self,
        input: &TriggerInput<'_>,
        actions: &mut ActionBuf,
        changes: &mut dyn FnMut(usize, bool),
    );

    /// Whether trigger `index` is active; false out of range.
    fn is_active(&self, index: usize) -> bool;

    /// Push the actions that return outputs to rest (used at stop: every level output low), and
    /// return every trigger to its initial state.
    fn reset(&mut self, actions: &mut ActionBuf);
}

#[cfg(test)]
mod tests;
