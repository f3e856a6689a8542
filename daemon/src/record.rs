//! What the loop threads hand to the writer thread: fixed-size `Copy` records, moved through SPSC rings, so
//! producing one never allocates.

use reflex_firmware_bridge::{DeviceError, OutputCommand};
use reflex_plugins::pose::Pose;

/// The wire tag of a command caused by `frame`: frame id + 1, so that tag 0 means "no frame" (protocol/SPEC.md).
pub fn frame_tag(frame: Option<u64>) -> u32 {
    frame.map_or(0, |f| (f as u32).wrapping_add(1).max(1))
}

/// The frame a wire tag refers to (inverse of [`frame_tag`] within 2³² − 1 frames).
pub fn tag_frame(tag: u32) -> Option<u64> {
    tag.checked_sub(1).map(u64::from)
}

/// Host timestamps (ns) of one frame's way through the loop; 0 = did not happen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamps {
    /// Exposure (driver/camera time mapped to the host clock).
    pub exposure_ns: u64,
    /// Frame complete on the host.
    pub capture_ns: u64,
    /// Inference started.
    pub infer_start_ns: u64,
    /// Inference (with decoding) finished.
    pub infer_end_ns: u64,
    /// Actuation thread picked the pose up.
    pub actuation_ns: u64,
    /// Forward prediction done.
    pub predicted_ns: u64,
    /// Trigger decisions done.
    pub decided_ns: u64,
    /// Last output command of this frame written to the device (0 when the frame commanded nothing).
    pub written_ns: u64,
}

/// One processed frame: measured and predicted pose with its stamps (`poses.csv`; a further camera's in
/// `cameraN/poses.csv`, measured only).
#[derive(Debug, Clone, Copy)]
pub struct PoseRecord {
    /// The camera: 0 for `[source]`, which drives the loop; 1, 2, … for `[[camera]]` tables.
    pub camera: u8,
    /// Frame id from the source.
    pub frame: u64,
    /// The frame's stamps.
    pub stamps: Stamps,
    /// Host time (ns) the prediction is for.
    pub target_ns: u64,
    /// The pose the network measured.
    pub measured: Pose,
    /// The pose predicted for `target_ns`.
    pub predicted: Pose,
}

/// The true pose of a captured frame, from sources that know it (`ground_truth.csv`).
#[derive(Debug, Clone, Copy)]
pub struct TruthRecord {
    /// Frame id.
    pub frame: u64,
    /// Exposure time (ns).
    pub exposure_ns: u64,
    /// The true keypoints.
    pub truth: Pose,
}

/// Something that happened, for `events.jsonl`.
#[derive(Debug, Clone, Copy)]
pub enum EventRecord {
    /// A trigger changed state.
    Trigger {
        /// Frame that caused it.
        frame: u64,
        /// Host time (ns) of the decision.
        t_ns: u64,
        /// Index of the trigger in the config.
        trigger: u16,
        /// New state.
        active: bool,
    },
    /// A command was written to the output device.
    Command {
        /// Frame that caused it; `None` for commands sent while stopping.
        frame: Option<u64>,
        /// Host time (ns) of the write.
        t_ns: u64,
        /// Sequence number the device will acknowledge.
        seq: u16,
        /// The command.
        command: OutputCommand,
        /// Sent while stopping (outputs to rest), not by a frame.
        shutdown: bool,
    },
    /// The device acknowledged a command with its own timestamp of the output change.
    Ack {
        /// Frame id the command carried; `None` for commands not caused by a frame.
        frame: Option<u64>,
        /// Sequence number acknowledged.
        seq: u16,
        /// Device clock (µs) at the output change.
        device_time_us: u64,
        /// That moment on the host clock (ns), through clock sync; 0 when not synchronised.
        t_ns: u64,
    },
    /// A protocol marked an event (no output).
    Mark {
        /// Frame that caused it.
        frame: u64,
        /// Host time (ns).
        t_ns: u64,
        /// The mark's code.
        code: u16,
        /// Index of the trigger that marked it, in the config.
        trigger: u16,
    },
    /// A trigger wrote a recording start or stop marker (no output).
    Recording {
        /// Frame that caused it.
        frame: u64,
        /// Host time (ns).
        t_ns: u64,
        /// Index of the trigger, in the config.
        trigger: u16,
        /// True = start, false = stop.
        start: bool,
    },
    /// The device reported an error.
    DeviceError {
        /// Host time (ns) it was received.
        t_ns: u64,
        /// Sequence number concerned.
        seq: u16,
        /// What the device reported.
        error: DeviceError,
    },
    /// The protocol script failed, or a new version of it was loaded or refused (hot reload).
    Script {
        /// Frame being decided when it happened (for a failure, the frame whose call failed).
        frame: u64,
        /// Host time (ns).
        t_ns: u64,
        /// What happened.
        what: ScriptEvent,
        /// The script's version: 0 for the one the session started with, +1 for each accepted reload.
        version: u32,
    },
}

/// What happened to the protocol script (see [`EventRecord::Script`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptEvent {
    /// A call failed (a Lua error, the instruction budget, the memory limit): its outputs were turned off
    /// and it is not called again until a reload replaces it.
    Failed,
    /// A changed script file passed its checks and replaced the running script between two frames.
    Reloaded,
    /// A changed script file failed its checks; the running script goes on.
    ReloadRejected,
}

impl ScriptEvent {
    /// The name written in `events.jsonl`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ScriptEvent::Failed => "failed",
            ScriptEvent::Reloaded => "reloaded",
            ScriptEvent::ReloadRejected => "reload_rejected",
        }
    }
}

impl EventRecord {
    /// The frame the event refers to, if any.
    pub fn frame(&self) -> Option<u64> {
        match *self {
            EventRecord::Trigger { frame, .. }
            | EventRecord::Mark { frame, .. }
            | EventRecord::Recording { frame, .. }
            | EventRecord::Script { frame, .. } => Some(frame),
            EventRecord::Ack { frame, .. } | EventRecord::Command { frame, .. } => frame,
            EventRecord::DeviceError { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_tags_keep_zero_for_no_frame() {
        assert_eq!(frame_tag(None), 0);
        assert_eq!(frame_tag(Some(0)), 1);
        for f in [0u64, 1, 41, u64::from(u32::MAX) - 1] {
            assert_eq!(tag_frame(frame_tag(Some(f))), Some(f));
        }
        assert_eq!(tag_frame(0), None);
    }
}
