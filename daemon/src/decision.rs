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

use anyhow::{Context, anyhow};
use reflex_firmware_bridge::OutputCommand;
use reflex_plugins::pose::Pose;
use reflex_plugins::predict::{
    Horizon, KalmanPredictor, LastMeasurement, Predictor, RobustPredictor,
};
use reflex_plugins::trigger::{
    Action, ActionBuf, Trigger, TriggerConfig, TriggerInput, TriggerSet,
};

use crate::config::{Config, PredictorKind, line_of};
use crate::record::EventRecord;

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

/// The predictor, the horizon and the triggers of a rig, with the buffers one frame needs.
pub struct DecisionStep {
    predictor: Box<dyn Predictor>,
    horizon: Horizon,
    triggers: Box<dyn Trigger>,
    actions: ActionBuf,
    predicted: Pose,
    dropped_actions: u64,
}

impl DecisionStep {
    /// A step over `keypoints` keypoints per pose; allocates everything it will use.
    pub fn new(
        predictor: Box<dyn Predictor>,
        horizon: Horizon,
        triggers: Box<dyn Trigger>,
        keypoints: usize,
    ) -> Self {
        Self {
            predictor,
            horizon,
            triggers,
            actions: ActionBuf::new(),
            predicted: Pose::new(keypoints),
            dropped_actions: 0,
        }
    }

    /// The step of a rig config, for a pose model whose keypoints are `keypoint_names` (pose order). Errors
    /// name the config file and the trigger's line (`rig.toml line 9: trigger `a`: unknown keypoint …`).
    ///
    /// The decisions are the built-in triggers (`[[trigger]]`). A scripted protocol (the Lua engine, to come)
    /// is another [`Trigger`]: it is built here from its config section and handed to [`DecisionStep::new`]
    /// in place of (or combined with) the [`TriggerSet`]; the live loop, `replay` and `check` need no change.
    pub fn from_config(
        config: &Config,
        config_text: &str,
        config_file: &str,
        keypoint_names: &[&str],
    ) -> anyhow::Result<Self> {
        let triggers = trigger_set(config, config_text, config_file, keypoint_names)?;
        let (predictor, horizon) = predictor(config)?;
        Ok(Self::new(
            predictor,
            horizon,
            Box::new(triggers),
            keypoint_names.len(),
        ))
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
        self.triggers
            .evaluate(&trigger_input, &mut self.actions, &mut |i, active| {
                events(EventRecord::Trigger {
                    frame,
                    t_ns: predicted_ns,
                    trigger: i as u16,
                    active,
                });
            });
        self.dropped_actions += u64::from(self.actions.dropped());
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

    /// The trigger names by index, as events name them.
    pub fn trigger_names(&self) -> Vec<String> {
        (0..self.triggers.len())
            .map(|i| self.triggers.name(i).to_string())
            .collect()
    }

    /// Actions lost so far because a frame's action buffer (or a trigger's delay queue) was full.
    pub fn dropped_actions(&self) -> u64 {
        self.dropped_actions
    }

    /// The actions that return every output to rest (at stop); the triggers go back to their initial state.
    pub fn rest(&mut self) -> ActionBuf {
        let mut rest = ActionBuf::new();
        self.triggers.reset(&mut rest);
        rest
    }
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
