//! The per-frame decision step: **predict → evaluate the triggers → the frame's actions**, and how an action
//! is routed (an output command, or an event for `events.jsonl`).
//!
//! One code path for the live loop and for `reflex replay`: the actuation thread
//! ([`crate::pipeline`]) and the replay ([`crate::replay`]) both run [`DecisionStep::step`] on each frame's
//! measured pose and its timestamps, and both turn the resulting actions into commands and events with
//! [`route`]. What differs is only where the stamps come from (the clock live, the recorded stamps in replay)
//! and where commands go (the output device live, the event list in replay), so a protocol tested by
//! replaying recorded poses decides the same way in the rig.
//!
//! The step never allocates and never blocks: the predictor, the triggers and the action buffer are built
//! in [`DecisionStep::new`] (the counting-allocator test in `tests/e2e/alloc.rs` checks it inside a session).
//!
//! A protocol script (`[script]`, Lua) runs inside the step, after the built-in triggers: it hears each of
//! their state changes (`on_event`), then the frame (`on_frame`), and its actions follow theirs. Its Lua
//! state allocates only from its own preallocated arena (see `reflex_plugins::script`). When a call fails
//! (a Lua error, the instruction budget, the memory limit), the actions it pushed in that frame are taken
//! back, every channel it left high is set low, and the failure is kept for the caller
//! ([`DecisionStep::take_script_failure`]), which stops the session or goes on without the script
//! (`[script] on_error`).

use anyhow::{Context, anyhow};
use reflex_firmware_bridge::OutputCommand;
use reflex_plugins::pose::Pose;
use reflex_plugins::predict::{
    Horizon, KalmanPredictor, LastMeasurement, Predictor, RobustPredictor,
};
use reflex_plugins::script::{Script, ScriptError};
use reflex_plugins::trigger::{
    Action, ActionBuf, Trigger, TriggerConfig, TriggerInput, TriggerSet,
};

use crate::config::{Config, PredictorKind, line_of};
use crate::record::{EventRecord, ScriptEvent};

/// A moment of the step whose host time the caller supplies: live, a clock read; in replay, the stamp
/// recorded for it (`predicted_ns`, `decided_ns` of `frames.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Forward prediction done.
    Predicted,
    /// Trigger decisions done.
    Decided,
}

/// One frame's input to the step.
#[derive(Debug, Clone, Copy)]
pub struct FrameInput<'a> {
    /// Frame id from the source.
    pub frame: u64,
    /// Host time the frame was exposed (ns): the triggers' time, and the predictor's observation time.
    pub exposure_ns: u64,
    /// Host time the actuation thread took the pose up (ns): "now" of the latency-adaptive horizon.
    pub actuation_ns: u64,
    /// The pose the model measured on this frame.
    pub measured: &'a Pose,
}

/// The times of one step (ns, host clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decided {
    /// The time the predicted pose is for.
    pub target_ns: u64,
    /// When the prediction was done.
    pub predicted_ns: u64,
    /// When the trigger decisions were done.
    pub decided_ns: u64,
}

/// The predictor, the horizon, the triggers and the protocol script of a rig, with the buffers one frame
/// needs.
pub struct DecisionStep {
    predictor: Box<dyn Predictor>,
    horizon: Horizon,
    triggers: Box<dyn Trigger>,
    actions: ActionBuf,
    predicted: Pose,
    dropped_actions: u64,
    script: Option<Running>,
    /// The triggers' state changes of the current frame, for the script's `on_event` (capacity fixed in
    /// [`DecisionStep::new`]).
    changes: Vec<(u16, bool)>,
    failure: Option<ScriptFailure>,
    /// The script's file and the text it was loaded from (for the session's copy and hot reload).
    script_source: Option<(std::path::PathBuf, String)>,
}

/// The protocol script in use.
struct Running {
    script: Box<Script>,
    /// Its name in events (the script file's name), the trigger index after the built-in triggers.
    name: String,
    started: bool,
    failed: bool,
    version: u32,
}

/// A protocol script's call that failed, with the frame it failed on.
#[derive(Debug)]
pub struct ScriptFailure {
    /// Frame being decided (for `on_stop`, the last one).
    pub frame: u64,
    /// Which version of the script (0: the one the session started with; +1 per accepted reload).
    pub version: u32,
    /// What went wrong, with the script's file and line.
    pub error: ScriptError,
}

impl std::fmt::Display for ScriptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "protocol script failed on frame {}: {}; its outputs were turned off",
            self.frame, self.error
        )
    }
}

/// Push a `SetLevel` low for every channel bit set in `high`.
fn push_lows(high: u64, actions: &mut ActionBuf) {
    for channel in 0..64u8 {
        if high & (1 << channel) != 0 {
            let _ = actions.push(Action::SetLevel {
                channel,
                high: false,
            });
        }
    }
}

impl DecisionStep {
    /// A step over `keypoints` keypoints per pose; allocates everything it will use.
    pub fn new(
        predictor: Box<dyn Predictor>,
        horizon: Horizon,
        triggers: Box<dyn Trigger>,
        keypoints: usize,
    ) -> Self {
        let changes = Vec::with_capacity(2 * triggers.len() + 8);
        Self {
            predictor,
            horizon,
            triggers,
            actions: ActionBuf::new(),
            predicted: Pose::new(keypoints),
            dropped_actions: 0,
            script: None,
            changes,
            failure: None,
            script_source: None,
        }
    }

    /// Adds the protocol script, evaluated after the triggers on every frame; `on_start` runs on the first
    /// frame. Its name in events is its file's name.
    pub fn with_script(mut self, script: Script) -> Self {
        self.script = Some(Running {
            name: script_name(script.file()),
            script: Box::new(script),
            started: false,
            failed: false,
            version: 0,
        });
        self
    }

    /// The step of a rig config, for a pose model whose keypoints are `keypoint_names` (pose order). Errors
    /// name the config file and the trigger's line (`rig.toml line 9: trigger `a`: unknown keypoint …`).
    ///
    /// The decisions are the built-in triggers (`[[trigger]]`), then the protocol script of `[script]` when
    /// there is one (its path relative to the config file's folder; errors name the script's file and line).
    pub fn from_config(
        config: &Config,
        config_text: &str,
        config_file: &str,
        keypoint_names: &[&str],
    ) -> anyhow::Result<Self> {
        let triggers = trigger_set(config, config_text, config_file, keypoint_names)?;
        let (predictor, horizon) = predictor(config)?;
        let names: Vec<&str> = config
            .triggers
            .iter()
            .map(|t| t.get_ref().name.as_str())
            .collect();
        let loaded = match &config.script {
            Some(sc) => Some(crate::script::load(
                sc,
                config_file,
                keypoint_names,
                &names,
            )?),
            None => None,
        };
        let step = Self::new(predictor, horizon, Box::new(triggers), keypoint_names.len());
        Ok(match loaded {
            Some(loaded) => {
                let mut step = step.with_script(loaded.script);
                step.script_source = Some((loaded.path, loaded.text));
                step
            }
            None => step,
        })
    }

    /// The protocol script's file and the text it was loaded from, when it came from a config.
    pub fn script_source(&self) -> Option<(&std::path::Path, &str)> {
        self.script_source
            .as_ref()
            .map(|(p, t)| (p.as_path(), t.as_str()))
    }

    /// One frame: observe the measured pose, predict for the horizon, evaluate the triggers.
    ///
    /// `now` supplies the host time of each [`Moment`]; `events` receives each trigger change (as
    /// [`EventRecord::Trigger`], stamped with the prediction time). The frame's actions are then in
    /// [`DecisionStep::actions`], in evaluation order. Never allocates.
    pub fn step(
        &mut self,
        input: &FrameInput<'_>,
        now: &mut dyn FnMut(Moment) -> u64,
        events: &mut dyn FnMut(EventRecord),
    ) -> Decided {
        self.predictor.observe(input.measured, input.exposure_ns);
        let target_ns = self
            .horizon
            .target_ns(input.exposure_ns, input.actuation_ns);
        self.predictor.predict(target_ns, &mut self.predicted);
        let predicted_ns = now(Moment::Predicted);

        self.actions.clear();
        let trigger_input = TriggerInput {
            frame_id: input.frame,
            frame_time_ns: input.exposure_ns,
            now_ns: predicted_ns,
            target_ns,
            measured: input.measured,
            predicted: &self.predicted,
        };
        let frame = input.frame;
        let changes = &mut self.changes;
        changes.clear();
        let mut lost_changes = 0u64;
        self.triggers
            .evaluate(&trigger_input, &mut self.actions, &mut |i, active| {
                events(EventRecord::Trigger {
                    frame,
                    t_ns: predicted_ns,
                    trigger: i as u16,
                    active,
                });
                if changes.len() < changes.capacity() {
                    changes.push((i as u16, active));
                } else {
                    lost_changes += 1;
                }
            });
        if let Some(run) = self.script.as_mut().filter(|r| !r.failed) {
            let before = self.actions.len();
            let called = call_script(run, &trigger_input, &self.changes, &mut self.actions);
            if let Err(error) = called {
                // The failed call's actions are taken back; what it left on goes off.
                self.actions.truncate(before);
                run.failed = true;
                push_lows(run.script.channels_high(), &mut self.actions);
                events(EventRecord::Script {
                    frame,
                    t_ns: predicted_ns,
                    what: ScriptEvent::Failed,
                    version: run.version,
                });
                self.failure = Some(ScriptFailure {
                    frame,
                    version: run.version,
                    error,
                });
            }
        }
        self.dropped_actions += u64::from(self.actions.dropped()) + lost_changes;
        Decided {
            target_ns,
            predicted_ns,
            decided_ns: now(Moment::Decided),
        }
    }

    /// The actions of the last [`DecisionStep::step`], in order.
    pub fn actions(&self) -> &[Action] {
        self.actions.as_slice()
    }

    /// The pose predicted on the last step (for `target_ns`).
    pub fn predicted(&self) -> &Pose {
        &self.predicted
    }

    /// The triggers (names, states).
    pub fn triggers(&self) -> &dyn Trigger {
        &*self.triggers
    }

    /// The trigger names by index, as events name them; the protocol script, when there is one, comes last
    /// (its marks and recording markers carry that index), named by its file's name.
    pub fn trigger_names(&self) -> Vec<String> {
        (0..self.triggers.len())
            .map(|i| self.triggers.name(i).to_string())
            .chain(self.script.iter().map(|r| r.name.clone()))
            .collect()
    }

    /// The failure of the protocol script's last call, once: the step has already taken back that call's
    /// actions and set its channels low; the caller stops the session or goes on without the script.
    pub fn take_script_failure(&mut self) -> Option<ScriptFailure> {
        self.failure.take()
    }

    /// The protocol script's version in use (0 = the first; +1 per [`DecisionStep::replace_script`]), if
    /// there is a script.
    pub fn script_version(&self) -> Option<u32> {
        self.script.as_ref().map(|r| r.version)
    }

    /// Hot reload, between two frames: the running script's `on_stop` (or, if it failed, nothing) and every
    /// channel it left high set low — those actions are returned for the caller to send now — then `script`
    /// takes its place (its `on_start` on the next frame). The old script is returned too, so the caller can
    /// drop it off the loop thread (dropping frees its arena).
    pub fn replace_script(&mut self, script: Box<Script>) -> (ActionBuf, Option<Box<Script>>) {
        let mut rest = ActionBuf::new();
        let version = self.script.as_ref().map_or(0, |r| r.version + 1);
        let name = script_name(script.file());
        let old = self.script.replace(Running {
            script,
            name,
            started: false,
            failed: false,
            version,
        });
        let old = old.map(|mut old| {
            stop_script(&mut old, &mut rest);
            old.script
        });
        (rest, old)
    }

    /// Actions lost so far because a frame's action buffer (or a trigger's delay queue) was full.
    pub fn dropped_actions(&self) -> u64 {
        self.dropped_actions
    }

    /// The actions that return every output to rest (at stop): the triggers' (they go back to their initial
    /// state), then the script's `on_stop` and a low for every channel it left high. A failing `on_stop` is
    /// kept for [`DecisionStep::take_script_failure`].
    pub fn rest(&mut self) -> ActionBuf {
        let mut rest = ActionBuf::new();
        self.triggers.reset(&mut rest);
        if let Some(run) = &mut self.script
            && let Some(error) = stop_script(run, &mut rest)
        {
            self.failure = Some(ScriptFailure {
                frame: 0,
                version: run.version,
                error,
            });
        }
        rest
    }
}

/// One frame of the script: `on_start` on its first frame, `on_event` for each of the triggers' changes,
/// then `on_frame`.
fn call_script(
    run: &mut Running,
    input: &TriggerInput<'_>,
    changes: &[(u16, bool)],
    actions: &mut ActionBuf,
) -> Result<(), ScriptError> {
    if !run.started {
        run.started = true;
        run.script.start(input, actions)?;
    }
    for &(trigger, active) in changes {
        run.script
            .event(input, usize::from(trigger), active, actions)?;
    }
    run.script.frame(input, actions)
}

/// The script's `on_stop` (when it started and has not failed) and a low for every channel it left high;
/// returns `on_stop`'s error, whose actions are taken back.
fn stop_script(run: &mut Running, rest: &mut ActionBuf) -> Option<ScriptError> {
    let mut error = None;
    if run.started && !run.failed {
        let before = rest.len();
        if let Err(e) = run.script.stop(rest) {
            rest.truncate(before);
            error = Some(e);
        }
    }
    run.failed = true;
    push_lows(run.script.channels_high(), rest);
    error
}

/// A script's name in events: its file's name (`catch_trials.lua`).
fn script_name(file: &str) -> String {
    std::path::Path::new(file)
        .file_name()
        .map_or_else(|| file.to_string(), |n| n.to_string_lossy().into_owned())
}

/// Where an action goes.
#[derive(Debug, Clone, Copy)]
pub enum Routed {
    /// A command for the output device.
    Command(OutputCommand),
    /// An event for `events.jsonl` only (marks, recording markers).
    Event(EventRecord),
}

/// Route one action: output actions become device commands; marks and recording markers become events of
/// `frame` (0 when sent while stopping) at the host time `now_ns()` (read only for those).
pub fn route(action: Action, frame: Option<u64>, now_ns: impl FnOnce() -> u64) -> Routed {
    match action {
        Action::SetLevel { channel, high } => {
            Routed::Command(OutputCommand::SetLevel { channel, high })
        }
        Action::Pulse { channel, width_us } => {
            Routed::Command(OutputCommand::Pulse { channel, width_us })
        }
        Action::PulseTrain {
            channel,
            period_us,
            width_us,
            count,
        } => Routed::Command(OutputCommand::PulseTrain {
            channel,
            period_us,
            width_us,
            count,
        }),
        Action::Mark { code, trigger } => Routed::Event(EventRecord::Mark {
            frame: frame.unwrap_or(0),
            t_ns: now_ns(),
            code,
            trigger,
        }),
        Action::Recording { trigger, start } => Routed::Event(EventRecord::Recording {
            frame: frame.unwrap_or(0),
            t_ns: now_ns(),
            trigger,
            start,
        }),
    }
}

/// The built-in triggers of `config`, checked against the model's keypoint names; errors name the file and
/// the trigger's line.
pub fn trigger_set(
    config: &Config,
    config_text: &str,
    config_file: &str,
    keypoint_names: &[&str],
) -> anyhow::Result<TriggerSet> {
    let configs: Vec<TriggerConfig> = config
        .triggers
        .iter()
        .map(|t| t.get_ref().clone())
        .collect();
    TriggerSet::new(&configs, keypoint_names).map_err(|e| {
        let start = config.triggers.get(e.index).map_or(0, |t| t.span().start);
        anyhow!("{config_file} line {}: {e}", line_of(config_text, start))
    })
}

/// The forward predictor of `[predictor]` and its horizon.
pub fn predictor(config: &Config) -> anyhow::Result<(Box<dyn Predictor>, Horizon)> {
    Ok(match config.predictor.kind {
        PredictorKind::Kalman => (
            Box::new(KalmanPredictor::new(&config.predictor.kalman).context("[predictor.kalman]")?),
            config.predictor.kalman.horizon(),
        ),
        PredictorKind::Robust => (
            Box::new(RobustPredictor::new(&config.predictor.robust).context("[predictor.robust]")?),
            config.predictor.kalman.horizon(),
        ),
        PredictorKind::None => (
            Box::new(LastMeasurement::new()),
            Horizon {
                forward_ns: 0,
                adapt: false,
            },
        ),
    })
}
