//! Protocol scripts: a Lua 5.4 program that decides, frame by frame, what the outputs do, for protocols the
//! declarative `[[trigger]]` tables cannot say (trial structure, catch trials, adaptive thresholds, state
//! machines).
//!
//! A rig config names the script in `[script]` ([`ScriptConfig`]). The daemon loads it into a [`Script`]
//! and calls it on the actuation thread after the built-in triggers, on every frame: [`Script::start`] on the
//! first, then [`Script::event`] for each change of a built-in trigger and [`Script::frame`]; at the end
//! [`Script::stop`]. What the script asks for goes into the frame's [`ActionBuf`] as ordinary [`Action`]s.
//!
//! # Real time
//!
//! Each script has its own Lua state, and the state allocates only from its own arena: `memory_mb` MiB
//! taken from the system when the script loads, every page touched then, managed by TLSF (an O(1)
//! allocator; the approach Ardour takes for real-time Lua). Calls into the script never touch the process
//! heap (a counting-allocator test, `plugins/tests/script_alloc.rs`, checks it), so tables and strings
//! made per frame, and the garbage collector cleaning them up, stay inside the arena. When the arena is
//! full, Lua's own "not enough memory" error ends the call: that is the memory limit. The collector runs
//! in generational mode ([`GcMode`]); its work is not counted in the instruction budget, and a full
//! collection traverses everything the script keeps, so keep the state small (kilobytes, not megabytes:
//! with ~5 MB live, one frame now and then takes tens of ms) and below half the arena, past which Lua
//! falls back to emergency full collections. Calls need a few hundred KiB of the calling thread's stack
//! (Lua caps C-level nesting at 200; 512 KiB is tested).
//!
//! Each call may run at most `budget` VM instructions (the top-level chunk and `on_start`, 10×): a count
//! hook stops it past that with an error naming the line it was at. A call that fails — a Lua error, the
//! budget, the memory limit — marks the script failed: every later call returns the same error without
//! running Lua, and [`Script::channels_high`] still says which outputs it left on, for the caller to turn
//! off (`[script] on_error` says whether the session then stops or goes on without the script).
//!
//! # The Lua API
//!
//! The script's top level defines global functions (looked up once, when it loads); at least one of
//! `on_frame` and `on_event`:
//!
//! - `on_start(ctx)`: once, on the first frame, before the others of that frame.
//! - `on_frame(ctx, pose)`: every frame, after the frame's `on_event` calls.
//! - `on_event(ctx, ev)`: when a built-in trigger (`[[trigger]]`) becomes active or inactive.
//! - `on_stop(ctx)`: once when the session stops (or the script is replaced by a reload).
//!
//! `pose` is the predicted pose, the one the built-in triggers decide on by default: `pose.nose.x`,
//! `pose.nose.y` (pixels), `pose.nose.p` (the model's likelihood; NaN when it gave none), `pose.nose.ok`
//! (false when the keypoint is missing; then `x` and `y` are NaN, never nil). The keypoint tables are made once and updated in
//! place, so keep numbers, not the tables, across frames.
//!
//! `ctx` (the same table on every call):
//!
//! | field | what |
//! | --- | --- |
//! | `ctx.frame` | the frame id (integer) |
//! | `ctx.t` | seconds since the first frame's exposure (float) |
//! | `ctx.t_ns` | the frame's exposure time, host clock, ns (integer) |
//! | `ctx.target_t` | the time the prediction is for, seconds on the same scale as `ctx.t` |
//! | `ctx.predicted` | the same table as `pose` |
//! | `ctx.measured` | the pose measured on this frame, same shape |
//! | `ctx.keypoints` | the keypoint names in model order (`ctx.keypoints[1]` …) |
//! | `ctx.params` | `[script.params]` from the config: numbers, booleans, strings |
//! | `ctx.state` | a table for the script's own state; kept across calls |
//! | `ctx:pulse(channel, width_us)` | one pulse of `width_us` µs |
//! | `ctx:train(channel, period_us, width_us, count)` | `count` pulses, one rising edge every `period_us` µs |
//! | `ctx:set(channel, high)` | drive a channel high (`true`) or low (`false`) until told otherwise |
//! | `ctx:mark(code)` | an event marker `code` (0..=65535) in `events.jsonl` |
//! | `ctx:record(start)` | a recording start (`true`) or stop (`false`) marker |
//! | `ctx:random()` | a float in [0, 1); `ctx:random(n)`: an integer in 1..=n; `ctx:random(m, n)`: in m..=n |
//!
//! Channels are 0..=63; `width_us`, `period_us` and `count` are integers > 0, and `period_us` > `width_us`
//! when `count` > 1 — the limits of the TOML actions. A bad argument is a Lua error that names it, at the
//! script's line: `catch.lua:14: ctx:pulse: `width_us` must be an integer from 1 to 4294967295, got 0`.
//! The methods return nothing. Actions a full frame buffer cannot take are dropped and counted, as for the
//! built-in triggers. Marks and recording markers carry the trigger index one past the built-in triggers.
//!
//! `ev` (in `on_event`, one table reused for every event: copy what you keep): `ev.trigger` (the trigger's
//! name), `ev.index` (0-based, config order), `ev.active` (boolean), `ev.frame`, `ev.t` (as `ctx.t`).
//!
//! `ctx:random` is a generator of its own (xoshiro256**) seeded from `[script] seed`, and `math.random` is
//! seeded from it too, so replaying recorded poses makes the same choices as the live session. (Iteration
//! order of `pairs` over string keys is not reproducible between runs, as in any Lua; iterate arrays with
//! `ipairs` where the order decides something.)
//!
//! # The sandbox
//!
//! Libraries: base, `string`, `table`, `math`, `utf8`. Not there: `io`, `os`, `package`/`require`,
//! `debug`, `coroutine` (a coroutine would run outside the budget hook), `load`, `loadstring`,
//! `dofile`, `loadfile`, `string.dump`, `math.randomseed` (a reseed from the clock would break replay),
//! `print` and `warn` (no writing to a terminal from the loop thread: use `ctx:mark`, or `error` to stop).
//! `collectgarbage` answers only `collectgarbage("count")` (KiB in use). `setmetatable` refuses metatables
//! with `__gc` (finalizers run inside the collector, where no budget applies). Scripts load as text only,
//! never precompiled bytecode. Standard-library functions written in C (pattern matching, `table.concat`,
//! `string.rep`) run to completion inside one instruction: their cost is bounded by the arena, not by the
//! budget.
//!
//! # Example
//!
//! A catch-trial design: each time the nose enters the port zone (after an inter-trial interval), one
//! trial; 80 % get a light train, 20 % are catch trials without light; each is marked.
//!
//! ```toml
//! [script]
//! path = "catch_trials.lua"    # relative to this config file
//! budget = 100000              # VM instructions per call
//! memory_mb = 8
//! seed = 42
//! on_error = "stop"            # or "disable": outputs off, the session goes on without the script
//!
//! [script.params]
//! port_x = 400.0
//! port_y = 300.0
//! radius = 60.0
//! catch_p = 0.2
//! iti_s = 5.0
//! laser = 0
//! ```
//!
//! ```lua
//! -- catch_trials.lua
//! local function in_port(kp, p)
//!   if not kp.ok or kp.p < 0.5 then return nil end -- unknown: keep the state
//!   local dx, dy = kp.x - p.port_x, kp.y - p.port_y
//!   return dx * dx + dy * dy <= p.radius * p.radius
//! end
//!
//! function on_start(ctx)
//!   local s = ctx.state
//!   s.trial, s.inside, s.next_t = 0, false, 0
//!   ctx:record(true)
//! end
//!
//! function on_frame(ctx, pose)
//!   local s, p = ctx.state, ctx.params
//!   local inside = in_port(pose.nose, p)
//!   if inside == nil then return end
//!   if inside and not s.inside and ctx.t >= s.next_t then
//!     s.trial = s.trial + 1
//!     if ctx:random() < p.catch_p then
//!       ctx:mark(2)                          -- catch trial: no light
//!     else
//!       ctx:mark(1)
//!       ctx:train(p.laser, 50000, 10000, 5)  -- 5 pulses of 10 ms at 20 Hz
//!     end
//!     s.next_t = ctx.t + p.iti_s
//!   end
//!   s.inside = inside
//! end
//!
//! function on_event(ctx, ev)                 -- a built-in trigger named "rearing" in [[trigger]]
//!   if ev.trigger == "rearing" and ev.active then ctx:mark(3) end
//! end
//!
//! function on_stop(ctx)
//!   ctx:record(false)
//! end
//! ```

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pose::{Keypoint, MAX_KEYPOINTS, Pose};
use crate::trigger::{Action, ActionBuf, TriggerInput};

#[allow(unsafe_code)]
// reason: a raw memory pool handed to Lua as its `lua_Alloc`; each block says why it is sound
mod arena;
mod rng;
#[allow(unsafe_code)]
// reason: the Lua C API (state, hook, C functions); each block says why it is sound
mod vm;

use vm::{Fault, FrameJob, Job, Setup, Vm};

/// `budget` when the config does not set it: VM instructions per call.
pub const DEFAULT_BUDGET: u64 = 100_000;
/// `memory_mb` when the config does not set it.
pub const DEFAULT_MEMORY_MB: u32 = 8;
/// Largest `memory_mb`.
pub const MAX_MEMORY_MB: u32 = 1024;
/// How many times `budget` the top-level chunk and `on_start` may run.
pub const SETUP_BUDGET_FACTOR: u64 = 10;
/// The collector mode a script starts with (see [`GcMode`] for why).
pub const DEFAULT_GC: GcMode = GcMode::Generational;

/// Bytes of an error message kept (longer ones are cut): room fixed at load, so reporting a failure on
/// the loop thread does not allocate.
const MESSAGE_CAPACITY: usize = 1024;

fn default_budget() -> u64 {
    DEFAULT_BUDGET
}
fn default_memory_mb() -> u32 {
    DEFAULT_MEMORY_MB
}
fn default_seed() -> u64 {
    1
}
fn default_true() -> bool {
    true
}
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// `[script]` of a rig config: the protocol script and its limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptConfig {
    /// The `.lua` file; the daemon resolves a relative path against the config file's folder.
    pub path: String,
    /// VM instructions one call may run (the top-level chunk and `on_start`: 10×); default 100 000.
    #[serde(default = "default_budget")]
    pub budget: u64,
    /// Size of the script's memory arena in MiB, 1..=1024; default 8.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Seed of `ctx:random` and `math.random`; default 1.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Watch the file and reload it when it changes (the daemon watches); default true.
    #[serde(default = "default_true")]
    pub reload: bool,
    /// What a failing call does to the session; default `stop`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_error: OnScriptError,
    /// `[script.params]`: values the script reads as `ctx.params`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, ParamValue>,
}

impl ScriptConfig {
    /// Checks the limits: `memory_mb` in 1..=[`MAX_MEMORY_MB`], `budget` at least 1. The message names the
    /// field (`[script] memory_mb must be from 1 to 1024, got 0`).
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(format!(
                "[script] memory_mb must be from 1 to {MAX_MEMORY_MB}, got {}",
                self.memory_mb
            ));
        }
        if self.budget == 0 {
            return Err("[script] budget must be at least 1 instruction, got 0".into());
        }
        Ok(())
    }
}

impl Default for ScriptConfig {
    /// An empty `path` (to be filled in) and every other field at its default.
    fn default() -> Self {
        ScriptConfig {
            path: String::new(),
            budget: DEFAULT_BUDGET,
            memory_mb: DEFAULT_MEMORY_MB,
            seed: default_seed(),
            reload: true,
            on_error: OnScriptError::default(),
            params: BTreeMap::new(),
        }
    }
}

/// What happens when a script's call fails. In a config: `on_error = "stop" | "disable"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnScriptError {
    /// The session ends with the error.
    #[default]
    Stop,
    /// The script's outputs go off and the session goes on without it (a fixed reload brings it back).
    Disable,
}

/// One `[script.params]` value, as the script sees it in `ctx.params`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// An integer (a Lua integer).
    Int(i64),
    /// A float (a Lua float).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ParamValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, a boolean or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ParamValue, E> {
                Ok(ParamValue::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ParamValue, E> {
                i64::try_from(v)
                    .map(ParamValue::Int)
                    .map_err(|_| E::custom(format!("integer {v} is too large for Lua")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ParamValue, E> {
                Ok(ParamValue::Float(v))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ParamValue, E> {
                Ok(ParamValue::Bool(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ParamValue, E> {
                Ok(ParamValue::Str(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// How the collector of a script's state runs (Lua's default parameters in both modes).
///
/// The bench (`cargo bench -p reflex-plugins --bench script_cost`) measures both on scripts that make
/// garbage every frame; generational has the lower per-frame p99 there (about 10–20 % lower on a table
/// and nine strings per frame), so it is [`DEFAULT_GC`]. Neither bounds the pause of a collection by the
/// instruction budget: with megabytes of live state, one frame now and then pays for a full traversal
/// (tens of ms with ~5 MB), so keep the state a script holds small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GcMode {
    /// Incremental mark and sweep, a little work at each allocation (Lua's own default).
    Incremental,
    /// Generational: frequent minor collections of young objects, a full one when the old generation
    /// has doubled.
    #[default]
    Generational,
}

/// Which of the script's entry points a call was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// The top-level chunk (and the sandbox setup before it).
    Load,
    /// `on_start`.
    Start,
    /// `on_frame`.
    Frame,
    /// `on_event`.
    Event,
    /// `on_stop`.
    Stop,
}

impl Call {
    /// The name in error messages.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Call::Load => "load",
            Call::Start => "on_start",
            Call::Frame => "on_frame",
            Call::Event => "on_event",
            Call::Stop => "on_stop",
        }
    }

    /// The slot of the script function this call runs (`None` for the chunk).
    pub(crate) const fn function_slot(self) -> Option<usize> {
        match self {
            Call::Load => None,
            Call::Start => Some(0),
            Call::Frame => Some(1),
            Call::Event => Some(2),
            Call::Stop => Some(3),
        }
    }
}

/// A protocol script failed: where (file and line, as Lua reports them) and in which call.
///
/// Displays as a compiler does: `catch.lua:14: attempt to index a nil value (field 'nose') (in on_frame)`,
/// or without the line when there is none (`catch.lua: not enough memory … (in on_frame)`).
#[derive(Debug, PartialEq, Eq)]
pub struct ScriptError {
    /// The script's file, as given to [`Script::load`].
    pub file: String,
    /// The line the script was at, when known.
    pub line: Option<u32>,
    /// Which call: `"load"`, `"on_start"`, `"on_frame"`, `"on_event"` or `"on_stop"`.
    pub call: &'static str,
    /// What went wrong, without the `file:line:` prefix.
    pub message: String,
}

impl Clone for ScriptError {
    fn clone(&self) -> Self {
        ScriptError {
            file: self.file.clone(),
            line: self.line,
            call: self.call,
            message: self.message.clone(),
        }
    }

    /// Reuses `self`'s strings, so copying an error into a preallocated one does not allocate.
    fn clone_from(&mut self, source: &Self) {
        self.file.clone_from(&source.file);
        self.line = source.line;
        self.call = source.call;
        self.message.clone_from(&source.message);
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{line}: {} (in {})",
                self.file, self.message, self.call
            ),
            None => write!(f, "{}: {} (in {})", self.file, self.message, self.call),
        }
    }
}

impl std::error::Error for ScriptError {}

/// A loaded protocol script: its Lua state (sandboxed, over its own arena) and what the calls need.
///
/// `Send`, so the daemon can load it on one thread and run it on the actuation thread. Dropping it frees
/// the arena (do that off the loop thread).
pub struct Script {
    vm: Vm,
    file: String,
    budget: u64,
    memory_mb: u32,
    gc: GcMode,
    /// Lua's text of the last error, copied within its fixed capacity.
    scratch: String,
    /// The failure, once there is one (`failed`); its strings are allocated at load.
    kept: ScriptError,
    /// A second preallocated error, handed out on the first failure so that one needs no allocation.
    spare: Option<ScriptError>,
    failed: bool,
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("file", &self.file)
            .field("budget", &self.budget)
            .field("memory_mb", &self.memory_mb)
            .field("memory_used", &self.memory_used())
            .field("channels_high", &self.channels_high())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Script {
    /// Compiles `source` (as text; chunk name `file`, so Lua's messages say `file:line:`), runs its top
    /// level under 10× the budget, and checks that it defines `on_frame` or `on_event` (and that each of
    /// `on_start`, `on_frame`, `on_event`, `on_stop` it defines is a function). `keypoints` are the pose
    /// model's names in pose order (the fields of `pose`); `trigger_names` the built-in triggers' names by
    /// index (`ev.trigger`); the script's marks carry index `trigger_names.len()`.
    ///
    /// Allocates the arena (`memory_mb`, every page touched) and everything the calls will need.
    pub fn load(
        source: &str,
        file: &str,
        config: &ScriptConfig,
        keypoints: &[&str],
        trigger_names: &[&str],
    ) -> Result<Script, ScriptError> {
        let error = |message: String| ScriptError {
            file: file.to_string(),
            line: None,
            call: Call::Load.name(),
            message,
        };
        config.validate().map_err(error)?;
        if keypoints.len() > MAX_KEYPOINTS {
            return Err(error(format!(
                "a pose has at most {MAX_KEYPOINTS} keypoints, but the model has {}",
                keypoints.len()
            )));
        }
        let Ok(trigger_index) = u16::try_from(trigger_names.len()) else {
            return Err(error(format!(
                "too many triggers for a script's marks ({})",
                trigger_names.len()
            )));
        };
        let Ok(chunk_name) = CString::new(format!("@{file}")) else {
            return Err(error("the script's file name contains a NUL byte".into()));
        };
        let memory_bytes = config.memory_mb as usize * 1024 * 1024;
        let vm = Vm::new(memory_bytes, trigger_index, keypoints.len()).ok_or_else(|| {
            error(format!(
                "cannot reserve the script's memory arena of {} MiB ([script] memory_mb)",
                config.memory_mb
            ))
        })?;
        let kept = ScriptError {
            file: file.to_string(),
            line: None,
            call: Call::Load.name(),
            message: String::with_capacity(MESSAGE_CAPACITY),
        };
        let mut script = Script {
            vm,
            file: file.to_string(),
            budget: config.budget,
            memory_mb: config.memory_mb,
            gc: DEFAULT_GC,
            scratch: String::with_capacity(MESSAGE_CAPACITY),
            spare: Some(kept.clone_with_capacity()),
            kept,
            failed: false,
        };
        let setup = Setup {
            keypoints,
            trigger_names,
            params: &config.params,
            seed: config.seed,
            gc: DEFAULT_GC,
        };
        let limit = script.setup_limit();
        let loaded = script
            .vm
            .setup(&setup, &mut script.scratch)
            .and_then(|()| {
                script
                    .vm
                    .load(source, &chunk_name, limit, &mut script.scratch)
            })
            .and_then(|()| script.vm.bind(&mut script.scratch));
        let defined = match loaded {
            Ok(defined) => defined,
            Err(fault) => return Err(script.fail(Call::Load, fault, limit)),
        };
        for (ty, name) in defined
            .iter()
            .zip(["on_start", "on_frame", "on_event", "on_stop"])
        {
            if !matches!(*ty, vm::LUA_TNIL | vm::LUA_TFUNCTION) {
                return Err(error(format!(
                    "`{name}` must be a function, got a {}",
                    vm::type_name(*ty)
                )));
            }
        }
        if !script.vm.has(Call::Frame) && !script.vm.has(Call::Event) {
            return Err(error(
                "defines neither on_frame nor on_event: a protocol script needs at least one"
                    .into(),
            ));
        }
        Ok(script)
    }

    /// `on_start(ctx)`, on the first frame `input` (its exposure time is `ctx.t = 0`), under 10× the
    /// budget. Without an `on_start`, only sets `ctx` up for the frame.
    pub fn start(
        &mut self,
        input: &TriggerInput<'_>,
        actions: &mut ActionBuf,
    ) -> Result<(), ScriptError> {
        let limit = self.setup_limit();
        self.call(Call::Start, Some(input), 0, false, limit, actions)
    }

    /// `on_frame(ctx, pose)` for `input`. Allocates nothing on the process heap.
    pub fn frame(
        &mut self,
        input: &TriggerInput<'_>,
        actions: &mut ActionBuf,
    ) -> Result<(), ScriptError> {
        self.call(Call::Frame, Some(input), 0, false, self.budget, actions)
    }

    /// `on_event(ctx, ev)`: built-in trigger `trigger` (its index in `trigger_names`) became `active` (or
    /// inactive) on frame `input`. Without an `on_event`, does nothing but set `ctx` up for the frame.
    pub fn event(
        &mut self,
        input: &TriggerInput<'_>,
        trigger: usize,
        active: bool,
        actions: &mut ActionBuf,
    ) -> Result<(), ScriptError> {
        self.call(
            Call::Event,
            Some(input),
            trigger,
            active,
            self.budget,
            actions,
        )
    }

    /// `on_stop(ctx)` (with `ctx` as of the last frame), then a `SetLevel` low for every channel the script
    /// left high. If `on_stop` fails, nothing more is pushed and [`Script::channels_high`] still says
    /// which channels are on.
    pub fn stop(&mut self, actions: &mut ActionBuf) -> Result<(), ScriptError> {
        self.call(Call::Stop, None, 0, false, self.budget, actions)?;
        let high = self.vm.channels_high();
        let mut still_high = 0u64;
        for channel in 0..64u8 {
            let bit = 1u64 << channel;
            if high & bit != 0
                && !actions.push(Action::SetLevel {
                    channel,
                    high: false,
                })
            {
                still_high |= bit;
            }
        }
        self.vm.set_channels_high(still_high);
        Ok(())
    }

    /// Bit n set: the script set channel n high and has not set it low since. After a failed call, this
    /// includes every channel that was high before the call or went high during it (the call's actions
    /// being taken back by the caller).
    pub fn channels_high(&self) -> u64 {
        self.vm.channels_high()
    }

    /// The script's file, as given to [`Script::load`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Bytes in use in the script's arena (what Lua holds, without the allocator's own overhead).
    pub fn memory_used(&self) -> usize {
        self.vm.memory_used()
    }

    /// The arena's size in bytes (`memory_mb` MiB): the script's memory limit.
    pub fn memory_limit(&self) -> usize {
        self.memory_mb as usize * 1024 * 1024
    }

    /// The failure that stopped the script, if a call failed.
    pub fn failure(&self) -> Option<&ScriptError> {
        self.failed.then_some(&self.kept)
    }

    /// The collector mode in use.
    pub fn gc_mode(&self) -> GcMode {
        self.gc
    }

    /// Switches the collector to `mode` (the bench compares them; scripts start with [`DEFAULT_GC`]).
    /// Not on the loop thread: a switch to generational runs a full collection.
    pub fn set_gc_mode(&mut self, mode: GcMode) -> Result<(), ScriptError> {
        if self.failed {
            return Err(self.kept.clone());
        }
        match self.vm.set_gc_mode(mode, &mut self.scratch) {
            Ok(()) => {
                self.gc = mode;
                Ok(())
            }
            Err(fault) => Err(self.fail(Call::Load, fault, 0)),
        }
    }

    /// For `reflex check`: loads the script and calls each of its functions on made-up input — `on_start`
    /// and `on_frame` on frames with every keypoint present (moving), then with every keypoint missing;
    /// `on_event` once per trigger name (active); `on_stop` — and returns the actions of each call, or the
    /// first error. Runs in a state of its own.
    pub fn dry_run(
        source: &str,
        file: &str,
        config: &ScriptConfig,
        keypoints: &[&str],
        trigger_names: &[&str],
    ) -> Result<DryRun, ScriptError> {
        const FRAME_NS: u64 = 8_333_333;
        const PRESENT_FRAMES: u64 = 3;
        const MISSING_FRAMES: u64 = 2;
        let mut script = Script::load(source, file, config, keypoints, trigger_names)?;
        let present = |frame: u64| {
            let mut pose = Pose::new(keypoints.len());
            for (k, point) in pose.points_mut().iter_mut().enumerate() {
                let phase = frame as f32 * 0.1 + k as f32 * 0.5;
                *point = Keypoint::new(320.0 + 60.0 * phase.cos(), 240.0 + 60.0 * phase.sin(), 0.9);
            }
            pose
        };
        let missing = Pose::new(keypoints.len());
        let mut calls = Vec::new();
        let mut record = |call: Call, input: String, actions: &ActionBuf| {
            calls.push(DryCall {
                call: call.name(),
                input,
                actions: actions.as_slice().to_vec(),
                dropped: actions.dropped(),
            });
        };
        let mut frames = Vec::new();
        for frame in 0..PRESENT_FRAMES {
            frames.push((frame, present(frame), "every keypoint present"));
        }
        for frame in PRESENT_FRAMES..PRESENT_FRAMES + MISSING_FRAMES {
            frames.push((frame, missing, "every keypoint missing"));
        }
        for (frame, pose, what) in frames {
            let t = 1_000_000_000 + frame * FRAME_NS;
            let input = TriggerInput {
                frame_id: frame,
                frame_time_ns: t,
                now_ns: t,
                target_ns: t,
                measured: &pose,
                predicted: &pose,
            };
            if frame == 0 {
                let mut actions = ActionBuf::new();
                script.start(&input, &mut actions)?;
                if script.vm.has(Call::Start) {
                    record(Call::Start, format!("frame {frame}, {what}"), &actions);
                }
            }
            let mut actions = ActionBuf::new();
            script.frame(&input, &mut actions)?;
            if script.vm.has(Call::Frame) {
                record(Call::Frame, format!("frame {frame}, {what}"), &actions);
            }
        }
        if script.vm.has(Call::Event) {
            let frame = PRESENT_FRAMES + MISSING_FRAMES;
            let pose = present(frame);
            let t = 1_000_000_000 + frame * FRAME_NS;
            let input = TriggerInput {
                frame_id: frame,
                frame_time_ns: t,
                now_ns: t,
                target_ns: t,
                measured: &pose,
                predicted: &pose,
            };
            for (index, name) in trigger_names.iter().enumerate() {
                let mut actions = ActionBuf::new();
                script.event(&input, index, true, &mut actions)?;
                record(
                    Call::Event,
                    format!("frame {frame}, trigger `{name}` active"),
                    &actions,
                );
            }
        }
        let mut actions = ActionBuf::new();
        script.stop(&mut actions)?;
        let what = if script.vm.has(Call::Stop) {
            "end of session"
        } else {
            "end of session (no on_stop; lows for channels left high)"
        };
        record(Call::Stop, what.to_string(), &actions);
        Ok(DryRun {
            calls,
            memory_used: script.memory_used(),
        })
    }

    /// The instruction limit of the top-level chunk and `on_start`.
    fn setup_limit(&self) -> u64 {
        self.budget.saturating_mul(SETUP_BUDGET_FACTOR)
    }

    /// One call into Lua, or the kept failure without running Lua.
    fn call(
        &mut self,
        call: Call,
        input: Option<&TriggerInput<'_>>,
        trigger: usize,
        active: bool,
        limit: u64,
        actions: &mut ActionBuf,
    ) -> Result<(), ScriptError> {
        if self.failed {
            return Err(self.kept.clone());
        }
        let job = Job {
            call,
            frame: input.map(|input| FrameJob {
                frame_id: input.frame_id,
                frame_time_ns: input.frame_time_ns,
                target_ns: input.target_ns,
                measured: input.measured,
                predicted: input.predicted,
            }),
            trigger,
            active,
        };
        let before = self.vm.channels_high();
        match self.vm.run(job, limit, actions, &mut self.scratch) {
            Ok(()) => Ok(()),
            Err(fault) => {
                // The caller takes the call's actions back: a channel it set low may still be high.
                let during = self.vm.channels_high();
                self.vm.set_channels_high(before | during);
                Err(self.fail(call, fault, limit))
            }
        }
    }

    /// Marks the script failed with `fault` (text in `scratch`) and returns the error, built in the
    /// strings allocated at load.
    fn fail(&mut self, call: Call, fault: Fault, limit: u64) -> ScriptError {
        use std::fmt::Write as _;
        let kept = &mut self.kept;
        kept.call = call.name();
        kept.message.clear();
        match fault {
            Fault::Lua => {
                let (line, start) = split_position(&self.scratch, &self.file);
                kept.line = line;
                vm::push_lossy(&mut kept.message, &self.scratch.as_bytes()[start..]);
            }
            Fault::Budget(line) => {
                kept.line = line;
                let _ = write!(kept.message, "instruction budget of {limit} exceeded");
            }
            Fault::Memory => {
                kept.line = None;
                let _ = write!(
                    kept.message,
                    "not enough memory: the script's arena of {} MiB is used up ([script] memory_mb)",
                    self.memory_mb
                );
            }
        }
        self.failed = true;
        match self.spare.take() {
            Some(mut error) => {
                error.clone_from(&self.kept);
                error
            }
            None => self.kept.clone(),
        }
    }
}

impl ScriptError {
    /// A copy whose message has [`MESSAGE_CAPACITY`] of room.
    fn clone_with_capacity(&self) -> ScriptError {
        let mut message = String::with_capacity(MESSAGE_CAPACITY);
        message.push_str(&self.message);
        ScriptError {
            file: self.file.clone(),
            line: self.line,
            call: self.call,
            message,
        }
    }
}

/// Splits Lua's `source:line: text` into the line and the byte offset of `text`, when `source` names
/// `file` (in full, or as Lua shortens a long name: `...` and its end). `(None, 0)` otherwise.
fn split_position(message: &str, file: &str) -> (Option<u32>, usize) {
    for (colon, _) in message.match_indices(':') {
        let source = &message[..colon];
        let names_file = source == file
            || source
                .strip_prefix("...")
                .is_some_and(|tail| !tail.is_empty() && file.ends_with(tail));
        if !names_file {
            continue;
        }
        let rest = &message[colon + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || !rest[digits..].starts_with(':') {
            continue;
        }
        let Ok(line) = rest[..digits].parse::<u32>() else {
            continue;
        };
        let mut start = colon + 1 + digits + 1;
        if message[start..].starts_with(' ') {
            start += 1;
        }
        return (Some(line), start);
    }
    (None, 0)
}

/// What [`Script::dry_run`] saw: each call made, with the actions it produced.
#[derive(Clone, Debug, PartialEq)]
pub struct DryRun {
    /// The calls, in the order made.
    pub calls: Vec<DryCall>,
    /// Bytes in use in the script's arena at the end.
    pub memory_used: usize,
}

/// One call of a [`DryRun`].
#[derive(Clone, Debug, PartialEq)]
pub struct DryCall {
    /// `"on_start"`, `"on_frame"`, `"on_event"` or `"on_stop"`.
    pub call: &'static str,
    /// The made-up input, in words (`frame 3, every keypoint missing`).
    pub input: String,
    /// The actions it produced, in order (for `on_stop`, with the lows of channels left high).
    pub actions: Vec<Action>,
    /// Actions a full buffer refused.
    pub dropped: u32,
}

impl DryRun {
    /// The calls of one kind (`"on_frame"`, …).
    pub fn calls_of<'a>(&'a self, call: &'a str) -> impl Iterator<Item = &'a DryCall> + 'a {
        self.calls.iter().filter(move |c| c.call == call)
    }
}

impl fmt::Display for DryRun {
    /// One line per call: `on_frame (frame 0, every keypoint present): 2 actions: Pulse { .. }, Mark { .. }`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for call in &self.calls {
            let n = call.actions.len();
            write!(
                f,
                "{} ({}): {n} action{}",
                call.call,
                call.input,
                if n == 1 { "" } else { "s" }
            )?;
            for (i, action) in call.actions.iter().enumerate() {
                write!(f, "{}{action:?}", if i == 0 { ": " } else { ", " })?;
            }
            if call.dropped > 0 {
                write!(f, " ({} dropped: buffer full)", call.dropped)?;
            }
            writeln!(f)?;
        }
        write!(f, "memory in use: {} KiB", self.memory_used.div_ceil(1024))
    }
}

#[cfg(test)]
mod tests;
