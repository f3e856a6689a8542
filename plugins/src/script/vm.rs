//! The Lua state behind a [`Script`](super::Script), through Lua's C API (`mlua-sys`): creating it over
//! its [`Arena`], the sandbox, the `ctx`/`pose`/`ev` tables, the instruction-budget hook, the `ctx` methods,
//! and the protected call of each script function.
//!
//! Everything that may raise a Lua error (allocating, calling script code) runs inside `lua_pcall` of one
//! of the C functions here, so an error never reaches Lua's panic handler. Those C functions raise errors
//! with `lua_error`, a `longjmp`: every Rust frame it crosses holds only plain data (no value with a
//! `Drop`), which is what makes that jump sound. Rust code here never allocates on the process heap once a
//! script is loaded; the Lua side allocates only from the arena.

use std::ffi::{CStr, c_int, c_void};
use std::ptr::{self, NonNull};

use mlua_sys as ffi;
use mlua_sys::lua_State;

use super::arena::{Arena, lua_alloc};
use super::rng::Rng;
use super::{Call, GcMode, ParamValue};
use crate::pose::{Keypoint, MAX_KEYPOINTS, Pose};
use crate::trigger::{Action, ActionBuf};

/// The budget hook runs every this many VM instructions (or every `budget` when smaller), so a call stops
/// at most this many instructions past its budget.
pub(super) const HOOK_EVERY: u64 = 1000;

/// Highest output channel a script may drive (its channels are kept in a `u64` mask).
pub(super) const MAX_CHANNEL: i64 = 63;

/// The error value the budget hook raises: a light userdata no script can make, so the error is known
/// for what it is even if a script's `pcall` caught and re-raised it.
static BUDGET_SENTINEL: u8 = 0;

/// How a call into Lua failed (its text, when there is one, has been copied into the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// A Lua error: syntax, runtime, or raised by `error` or a `ctx` method.
    Lua,
    /// The instruction budget ran out; the line the script was at, when known.
    Budget(Option<u32>),
    /// The arena is full.
    Memory,
}

/// Registry references of the tables and functions a call needs (`LUA_NOREF` when absent).
#[derive(Clone, Copy, Debug)]
struct Refs {
    ctx: c_int,
    /// The predicted pose (`pose`, `ctx.predicted`).
    pose: c_int,
    /// Arrays of the keypoint tables in pose order: predicted, measured.
    points: [c_int; 2],
    ev: c_int,
    /// Array of the trigger names (interned strings).
    names: c_int,
    /// `on_start`, `on_frame`, `on_event`, `on_stop` in [`Call`] order from `Start`.
    functions: [c_int; 4],
}

/// One call's input, read by [`run_job`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Job {
    /// Which function.
    pub call: Call,
    /// Frame id, exposure time and prediction target (ns) of the frame, when the call has one.
    pub frame: Option<FrameJob>,
    /// For `on_event`: the trigger index and its new state.
    pub trigger: usize,
    /// For `on_event`: active or not.
    pub active: bool,
}

/// The frame part of a [`Job`].
#[derive(Clone, Copy, Debug)]
pub(super) struct FrameJob {
    pub frame_id: u64,
    pub frame_time_ns: u64,
    pub target_ns: u64,
    pub measured: *const Pose,
    pub predicted: *const Pose,
}

/// The Rust side of a state, reached from Lua through the state's extra space. Only touched on the thread
/// running the state; every access goes through the raw pointer, never a long-lived reference.
struct Host {
    /// Where `ctx` methods push actions during a call; null between calls.
    actions: *mut ActionBuf,
    /// Channels the script set high and not low since (bit n = channel n).
    channels_high: u64,
    /// The trigger index of the script's marks and recording markers.
    trigger_index: u16,
    rng: Rng,
    /// Instructions counted in the current call, its limit, and the hook period.
    used: u64,
    limit: u64,
    hook_every: c_int,
    /// The budget ran out in this call, at this line (0: unknown).
    exceeded: bool,
    exceeded_line: c_int,
    job: Job,
    refs: Refs,
    keypoints: usize,
    /// Exposure time of the first frame seen (`ctx.t` is counted from it).
    t0_ns: Option<u64>,
    /// The keypoints last written into the tables (predicted, measured), compared bitwise so unchanged
    /// keypoints are not written again; `cached` is false until the first write.
    last: [[Keypoint; MAX_KEYPOINTS]; 2],
    cached: bool,
}

/// What [`setup`] builds the state from.
pub(super) struct Setup<'a> {
    pub keypoints: &'a [&'a str],
    pub trigger_names: &'a [&'a str],
    pub params: &'a std::collections::BTreeMap<String, ParamValue>,
    pub seed: u64,
    pub gc: GcMode,
}

/// Which global functions a script defined: the Lua type of each of `on_start`, `on_frame`, `on_event`,
/// `on_stop` (`LUA_TNIL` when absent).
pub(super) type Defined = [c_int; 4];

pub(super) use ffi::{LUA_TFUNCTION, LUA_TNIL};

/// The name of Lua type `ty` (as `type()` says it).
pub(super) fn type_name(ty: c_int) -> &'static str {
    match ty {
        ffi::LUA_TNIL => "nil",
        ffi::LUA_TBOOLEAN => "boolean",
        ffi::LUA_TLIGHTUSERDATA | ffi::LUA_TUSERDATA => "userdata",
        ffi::LUA_TNUMBER => "number",
        ffi::LUA_TSTRING => "string",
        ffi::LUA_TTABLE => "table",
        ffi::LUA_TFUNCTION => "function",
        ffi::LUA_TTHREAD => "thread",
        _ => "value",
    }
}

/// The names of the script's functions, in [`Refs::functions`] order.
const FUNCTION_NAMES: [&CStr; 4] = [c"on_start", c"on_frame", c"on_event", c"on_stop"];

/// A Lua state over its own arena, with its [`Host`].
pub(super) struct Vm {
    state: NonNull<lua_State>,
    host: NonNull<Host>,
    arena: NonNull<Arena>,
}

// SAFETY: the state, its host and its arena are owned by the `Vm` alone (no Lua value or pointer into them
// leaves it), Lua keeps no thread-local state, and every use goes through `&mut Vm`: moving the whole to
// another thread (the actuation thread) is sound.
unsafe impl Send for Vm {}

impl Vm {
    /// A fresh state over an arena of `memory_bytes`; `None` when the memory cannot be had (or is too
    /// small for Lua's own state).
    pub(super) fn new(memory_bytes: usize, trigger_index: u16, keypoints: usize) -> Option<Vm> {
        let arena = NonNull::from(Box::leak(Arena::new(memory_bytes)?));
        let host = NonNull::from(Box::leak(Box::new(Host {
            actions: ptr::null_mut(),
            channels_high: 0,
            trigger_index,
            rng: Rng::new(0),
            used: 0,
            limit: 0,
            hook_every: 1,
            exceeded: false,
            exceeded_line: 0,
            job: Job {
                call: Call::Load,
                frame: None,
                trigger: 0,
                active: false,
            },
            refs: Refs {
                ctx: ffi::LUA_NOREF,
                pose: ffi::LUA_NOREF,
                points: [ffi::LUA_NOREF; 2],
                ev: ffi::LUA_NOREF,
                names: ffi::LUA_NOREF,
                functions: [ffi::LUA_NOREF; 4],
            },
            keypoints: keypoints.min(MAX_KEYPOINTS),
            t0_ns: None,
            last: [[Keypoint::MISSING; MAX_KEYPOINTS]; 2],
            cached: false,
        })));
        // SAFETY: `lua_alloc` follows the `lua_Alloc` contract over the arena, which outlives the state.
        let state = unsafe { ffi::lua_newstate(lua_alloc, arena.as_ptr().cast()) };
        let Some(state) = NonNull::new(state) else {
            // SAFETY: both were leaked above and nothing refers to them.
            unsafe {
                drop(Box::from_raw(host.as_ptr()));
                drop(Box::from_raw(arena.as_ptr()));
            }
            return None;
        };
        // SAFETY: the extra space is a pointer-sized slot Lua reserves for us; the host outlives the state.
        unsafe {
            *ffi::lua_getextraspace(state.as_ptr()).cast::<*mut Host>() = host.as_ptr();
            ffi::lua_atpanic(state.as_ptr(), at_panic);
        }
        Some(Vm { state, host, arena })
    }

    /// Opens the sandboxed libraries and builds `ctx`, the poses and `ev` (10× budget is not needed: no
    /// script code runs). On failure (the arena too small) the message is in `message`.
    pub(super) fn setup(&mut self, setup: &Setup<'_>, message: &mut String) -> Result<(), Fault> {
        let host = self.host.as_ptr();
        // SAFETY: the host lives as long as `self`; no Lua code runs while it is written.
        unsafe { (*host).rng = Rng::new(setup.seed) };
        // `setup` outlives the protected call that reads it.
        self.protected(setup_state, ptr::from_ref(setup).cast_mut().cast(), message)
    }

    /// Compiles `source` as a text chunk named `chunk_name` (Lua's `@file` convention) and runs its top level
    /// under `limit` instructions.
    pub(super) fn load(
        &mut self,
        source: &str,
        chunk_name: &CStr,
        limit: u64,
        message: &mut String,
    ) -> Result<(), Fault> {
        let l = self.state.as_ptr();
        // SAFETY: `lua_load` runs the parser in protected mode; the buffer and name outlive the call.
        let status = unsafe {
            ffi::lua_settop(l, 0);
            ffi::luaL_loadbufferx(
                l,
                source.as_ptr().cast(),
                source.len(),
                chunk_name.as_ptr(),
                c"t".as_ptr(),
            )
        };
        if status != ffi::LUA_OK {
            return Err(self.fault(status, message));
        }
        self.arm(limit, ptr::null_mut(), Call::Load);
        // SAFETY: the chunk is on the stack; `lua_pcall` catches every error.
        let status = unsafe { ffi::lua_pcall(l, 0, 0, 0) };
        self.finish(status, message)
    }

    /// Looks up the script's global functions, keeps a reference to each function, and returns the type
    /// of each (`LUA_TNIL` when absent).
    pub(super) fn bind(&mut self, message: &mut String) -> Result<Defined, Fault> {
        let mut defined: Defined = [ffi::LUA_TNIL; 4];
        self.protected(bind_functions, defined.as_mut_ptr().cast(), message)?;
        Ok(defined)
    }

    /// Whether the script defines function `call` (`on_start` … `on_stop`).
    pub(super) fn has(&self, call: Call) -> bool {
        call.function_slot().is_some_and(|slot| {
            // SAFETY: the host lives as long as `self`.
            unsafe { (*self.host.as_ptr()).refs.functions[slot] != ffi::LUA_NOREF }
        })
    }

    /// One call: updates `ctx` (and the poses and `ev` as the job says), then calls the script's function
    /// for `job.call` if it has one, under `limit` instructions, its actions going to `actions`.
    pub(super) fn run(
        &mut self,
        job: Job,
        limit: u64,
        actions: &mut ActionBuf,
        message: &mut String,
    ) -> Result<(), Fault> {
        let l = self.state.as_ptr();
        // SAFETY: the host lives as long as `self`; no Lua code runs while it is written.
        unsafe { (*self.host.as_ptr()).job = job };
        self.arm(limit, actions, job.call);
        // SAFETY: pushing a light C function never allocates; `lua_pcall` catches every error.
        let status = unsafe {
            ffi::lua_settop(l, 0);
            ffi::lua_pushcfunction(l, run_job);
            ffi::lua_pcall(l, 0, 0, 0)
        };
        self.finish(status, message)
    }

    /// Channels the script set high and not low since.
    pub(super) fn channels_high(&self) -> u64 {
        // SAFETY: the host lives as long as `self`.
        unsafe { (*self.host.as_ptr()).channels_high }
    }

    /// Replaces the high-channel mask (after a failed call, or once `on_stop` set them all low).
    pub(super) fn set_channels_high(&mut self, mask: u64) {
        // SAFETY: the host lives as long as `self`; no Lua code runs.
        unsafe { (*self.host.as_ptr()).channels_high = mask };
    }

    /// Bytes in use in the arena.
    pub(super) fn memory_used(&self) -> usize {
        // SAFETY: the arena lives as long as `self`; no Lua code runs.
        unsafe { (*self.arena.as_ptr()).used() }
    }

    /// Switches the collector to `mode`.
    pub(super) fn set_gc_mode(&mut self, mode: GcMode, message: &mut String) -> Result<(), Fault> {
        let mut mode = mode;
        self.protected(change_gc, ptr::from_mut(&mut mode).cast(), message)
    }

    /// Calls C function `f` with the light userdata `arg`, protected.
    fn protected(
        &mut self,
        f: ffi::lua_CFunction,
        arg: *mut c_void,
        message: &mut String,
    ) -> Result<(), Fault> {
        let l = self.state.as_ptr();
        // SAFETY: pushing a light C function and a light userdata never allocates; `lua_pcall` catches
        // every error.
        let status = unsafe {
            ffi::lua_settop(l, 0);
            ffi::lua_pushcfunction(l, f);
            ffi::lua_pushlightuserdata(l, arg);
            ffi::lua_pcall(l, 1, 0, 0)
        };
        let result = if status == ffi::LUA_OK {
            Ok(())
        } else {
            Err(self.fault(status, message))
        };
        // SAFETY: clearing the stack never allocates.
        unsafe { ffi::lua_settop(l, 0) };
        result
    }

    /// Readies the budget hook and the action buffer for a call.
    fn arm(&mut self, limit: u64, actions: *mut ActionBuf, call: Call) {
        let every = limit.clamp(1, HOOK_EVERY) as c_int;
        let host = self.host.as_ptr();
        // SAFETY: the host lives as long as `self`; setting a hook never allocates.
        unsafe {
            (*host).actions = actions;
            (*host).used = 0;
            (*host).limit = limit;
            (*host).hook_every = every;
            (*host).exceeded = false;
            (*host).exceeded_line = 0;
            (*host).job.call = call;
            ffi::lua_sethook(
                self.state.as_ptr(),
                Some(budget_hook),
                ffi::LUA_MASKCOUNT,
                every,
            );
        }
    }

    /// After a call: forget the action buffer, classify the outcome, clear the stack.
    fn finish(&mut self, status: c_int, message: &mut String) -> Result<(), Fault> {
        let host = self.host.as_ptr();
        // SAFETY: the host lives as long as `self`.
        let (exceeded, line) = unsafe {
            (*host).actions = ptr::null_mut();
            ((*host).exceeded, (*host).exceeded_line)
        };
        let result = if exceeded {
            // Even if the script's own `pcall` swallowed it, the call ran out of budget.
            message.clear();
            Err(Fault::Budget(u32::try_from(line).ok().filter(|&l| l > 0)))
        } else if status == ffi::LUA_OK {
            Ok(())
        } else {
            Err(self.fault(status, message))
        };
        // SAFETY: clearing the stack never allocates.
        unsafe { ffi::lua_settop(self.state.as_ptr(), 0) };
        result
    }

    /// The fault of a failed call whose error value is on top of the stack; its text goes into `message`
    /// (within its capacity: no allocation).
    fn fault(&mut self, status: c_int, message: &mut String) -> Fault {
        let l = self.state.as_ptr();
        message.clear();
        // SAFETY: the error value is at the top; reading a string or number, or a type's static name,
        // never allocates (numbers are formatted here, not converted by Lua).
        unsafe {
            match ffi::lua_type(l, -1) {
                ffi::LUA_TSTRING => {
                    let mut len = 0usize;
                    let text = ffi::lua_tolstring(l, -1, &mut len);
                    push_lossy(message, std::slice::from_raw_parts(text.cast::<u8>(), len));
                }
                ffi::LUA_TNUMBER => {
                    use std::fmt::Write as _;
                    let _ = if ffi::lua_isinteger(l, -1) != 0 {
                        write!(message, "{}", ffi::lua_tointeger(l, -1))
                    } else {
                        write!(message, "{}", ffi::lua_tonumber(l, -1))
                    };
                }
                ty => {
                    push_lossy(message, b"(error object is a ");
                    push_lossy(message, CStr::from_ptr(ffi::lua_typename(l, ty)).to_bytes());
                    push_lossy(message, b" value)");
                }
            }
        }
        if status == ffi::LUA_ERRMEM {
            Fault::Memory
        } else {
            Fault::Lua
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // SAFETY: the state is closed first (it frees its memory back into the arena and never runs script
        // code: `__gc` metamethods are refused by the sandbox), then the host and the arena it used.
        unsafe {
            ffi::lua_close(self.state.as_ptr());
            drop(Box::from_raw(self.host.as_ptr()));
            drop(Box::from_raw(self.arena.as_ptr()));
        }
    }
}

/// Appends `bytes` to `out` as UTF-8 (invalid sequences as U+FFFD) without growing it: what does not fit
/// its capacity is cut at a character boundary.
pub(super) fn push_lossy(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for piece in [
            chunk.valid(),
            if chunk.invalid().is_empty() {
                ""
            } else {
                "\u{FFFD}"
            },
        ] {
            let room = out.capacity() - out.len();
            if piece.len() <= room {
                out.push_str(piece);
            } else {
                let mut end = room;
                while !piece.is_char_boundary(end) {
                    end -= 1;
                }
                out.push_str(&piece[..end]);
                return;
            }
        }
    }
}

/// The host of state `l`.
///
/// # Safety
/// `l` is a state made by [`Vm::new`] (its extra space holds the host pointer).
unsafe fn host(l: *mut lua_State) -> *mut Host {
    // SAFETY: per the contract.
    unsafe { *ffi::lua_getextraspace(l).cast::<*mut Host>() }
}

/// Lua calls this on an error outside any protected call, then aborts. Every entry into Lua here is
/// protected, so reaching it is a bug in this module; say so before Lua aborts the process.
unsafe extern "C-unwind" fn at_panic(l: *mut lua_State) -> c_int {
    // SAFETY: Lua passes its state, with the error value on top.
    let text = unsafe {
        let mut len = 0usize;
        let p = ffi::lua_tolstring(l, -1, &mut len);
        if p.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts(p.cast::<u8>(), len)
        }
    };
    eprintln!(
        "reflex: Lua error outside a protected call (a bug in reflex_plugins::script): {}",
        String::from_utf8_lossy(text)
    );
    0
}

/// The count hook: adds the period to the call's count and, past the budget, raises the budget error.
/// Once over, it fires on every instruction so the error cannot be swallowed by a script's `pcall`.
unsafe extern "C-unwind" fn budget_hook(l: *mut lua_State, ar: *mut ffi::lua_Debug) {
    // SAFETY: `l` is one of our states; `ar` is the hook's activation record.
    unsafe {
        let host = host(l);
        if !(*host).exceeded {
            (*host).used += (*host).hook_every as u64;
            if (*host).used <= (*host).limit {
                return;
            }
            (*host).exceeded = true;
            (*host).exceeded_line = if ffi::lua_getinfo(l, c"l".as_ptr(), ar) != 0 {
                (*ar).currentline
            } else {
                0
            };
            ffi::lua_sethook(l, Some(budget_hook), ffi::LUA_MASKCOUNT, 1);
        }
        ffi::lua_pushlightuserdata(l, ptr::from_ref(&BUDGET_SENTINEL).cast_mut().cast());
        ffi::lua_error(l)
    }
}

/// `t[key] = value` without metamethods, `t` at absolute index `t`, value on top of the stack.
///
/// # Safety
/// `t` is an absolute index of a table; one value is on top.
unsafe fn raw_set(l: *mut lua_State, t: c_int, key: &CStr) {
    // SAFETY: per the contract; the key string is interned (cached by address after the first use).
    unsafe {
        ffi::lua_pushstring(l, key.as_ptr());
        ffi::lua_rotate(l, -2, 1);
        ffi::lua_rawset(l, t);
    }
}

/// Pushes a Rust string (any bytes) as a Lua string.
///
/// # Safety
/// Stack room for one value.
unsafe fn push_str(l: *mut lua_State, s: &str) {
    // SAFETY: the slice is valid for its length.
    unsafe { ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len()) };
}

/// Pushes a new table and returns its absolute index.
///
/// # Safety
/// Stack room for one value; inside a protected call.
unsafe fn new_table(l: *mut lua_State, narr: c_int, nrec: c_int) -> c_int {
    // SAFETY: per the contract.
    unsafe {
        ffi::lua_createtable(l, narr, nrec);
        ffi::lua_gettop(l)
    }
}

/// Pops the value on top into the registry and returns its reference.
///
/// # Safety
/// A value on top; inside a protected call.
unsafe fn keep(l: *mut lua_State) -> c_int {
    // SAFETY: per the contract.
    unsafe { ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX) }
}

/// Opens the sandboxed libraries and builds `ctx`; the light userdata argument is a [`Setup`].
unsafe extern "C-unwind" fn setup_state(l: *mut lua_State) -> c_int {
    // SAFETY: called by `Vm::setup` with a `Setup` that outlives the call; every Lua call below is one the
    // C API allows in a protected C function, with the stack kept within `LUA_MINSTACK` (tables are built
    // one at a time and popped or stored).
    unsafe {
        let setup = &*ffi::lua_touserdata(l, 1).cast::<Setup<'_>>();
        let host = host(l);
        ffi::lua_settop(l, 0);

        let libs: [(&CStr, ffi::lua_CFunction); 5] = [
            (c"_G", ffi::luaopen_base),
            (c"string", ffi::luaopen_string),
            (c"table", ffi::luaopen_table),
            (c"math", ffi::luaopen_math),
            (c"utf8", ffi::luaopen_utf8),
        ];
        for (name, open) in libs {
            ffi::luaL_requiref(l, name.as_ptr(), open, 1);
            ffi::lua_settop(l, 0);
        }

        ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
        let globals = ffi::lua_gettop(l);
        // Reading or running other code, and printing from the loop thread, are not for protocol scripts.
        for name in [
            c"dofile",
            c"loadfile",
            c"load",
            c"loadstring",
            c"require",
            c"print",
            c"warn",
        ] {
            ffi::lua_pushnil(l);
            raw_set(l, globals, name);
        }
        ffi::lua_pushcfunction(l, collectgarbage_count);
        raw_set(l, globals, c"collectgarbage");
        ffi::lua_pushstring(l, c"setmetatable".as_ptr());
        ffi::lua_rawget(l, globals);
        ffi::lua_pushcclosure(l, setmetatable_without_gc, 1);
        raw_set(l, globals, c"setmetatable");

        ffi::lua_pushstring(l, c"string".as_ptr());
        ffi::lua_rawget(l, globals);
        ffi::lua_pushnil(l);
        raw_set(l, ffi::lua_gettop(l) - 1, c"dump");
        ffi::lua_pop(l, 1);

        ffi::lua_pushstring(l, c"math".as_ptr());
        ffi::lua_rawget(l, globals);
        let math = ffi::lua_gettop(l);
        ffi::lua_pushstring(l, c"randomseed".as_ptr());
        ffi::lua_rawget(l, math);
        ffi::lua_pushinteger(l, setup.seed as ffi::lua_Integer);
        ffi::lua_call(l, 1, 0);
        // Reseeding (`math.randomseed()` seeds from the clock) would make a replay choose differently.
        ffi::lua_pushnil(l);
        raw_set(l, math, c"randomseed");
        ffi::lua_settop(l, 0);

        let ctx = new_table(l, 0, 16);
        let methods: [(&CStr, ffi::lua_CFunction); 6] = [
            (c"pulse", ctx_pulse),
            (c"train", ctx_train),
            (c"set", ctx_set),
            (c"mark", ctx_mark),
            (c"record", ctx_record),
            (c"random", ctx_random),
        ];
        for (name, f) in methods {
            ffi::lua_pushcfunction(l, f);
            raw_set(l, ctx, name);
        }
        ffi::lua_pushinteger(l, 0);
        raw_set(l, ctx, c"frame");
        ffi::lua_pushinteger(l, 0);
        raw_set(l, ctx, c"t_ns");
        ffi::lua_pushnumber(l, 0.0);
        raw_set(l, ctx, c"t");
        ffi::lua_pushnumber(l, 0.0);
        raw_set(l, ctx, c"target_t");
        new_table(l, 0, 0);
        raw_set(l, ctx, c"state");

        let params = new_table(l, 0, setup.params.len().min(1 << 16) as c_int);
        for (key, value) in setup.params {
            push_str(l, key);
            match value {
                ParamValue::Int(v) => ffi::lua_pushinteger(l, *v),
                ParamValue::Float(v) => ffi::lua_pushnumber(l, *v),
                ParamValue::Bool(v) => ffi::lua_pushboolean(l, c_int::from(*v)),
                ParamValue::Str(v) => push_str(l, v),
            }
            ffi::lua_rawset(l, params);
        }
        raw_set(l, ctx, c"params");

        let n = setup.keypoints.len() as c_int;
        let names = new_table(l, n, 0);
        for (k, name) in setup.keypoints.iter().enumerate() {
            push_str(l, name);
            ffi::lua_rawseti(l, names, k as ffi::lua_Integer + 1);
        }
        raw_set(l, ctx, c"keypoints");

        // Predicted then measured: a name → keypoint table, and the same tables in pose order.
        for (which, field) in [c"predicted", c"measured"].into_iter().enumerate() {
            let by_name = new_table(l, 0, n);
            let in_order = new_table(l, n, 0);
            for (k, name) in setup.keypoints.iter().enumerate() {
                let point = new_table(l, 0, 4);
                for key in [c"x", c"y", c"p"] {
                    ffi::lua_pushnumber(l, f64::NAN);
                    raw_set(l, point, key);
                }
                ffi::lua_pushboolean(l, 0);
                raw_set(l, point, c"ok");
                push_str(l, name);
                ffi::lua_pushvalue(l, point);
                ffi::lua_rawset(l, by_name);
                ffi::lua_rawseti(l, in_order, k as ffi::lua_Integer + 1);
            }
            (*host).refs.points[which] = keep(l);
            if which == 0 {
                ffi::lua_pushvalue(l, by_name);
                (*host).refs.pose = keep(l);
            }
            raw_set(l, ctx, field);
        }
        (*host).refs.ctx = keep(l);

        let triggers = new_table(l, setup.trigger_names.len() as c_int, 0);
        for (i, name) in setup.trigger_names.iter().enumerate() {
            push_str(l, name);
            ffi::lua_rawseti(l, triggers, i as ffi::lua_Integer + 1);
        }
        (*host).refs.names = keep(l);

        let ev = new_table(l, 0, 5);
        push_str(l, "");
        raw_set(l, ev, c"trigger");
        ffi::lua_pushinteger(l, 0);
        raw_set(l, ev, c"index");
        ffi::lua_pushboolean(l, 0);
        raw_set(l, ev, c"active");
        ffi::lua_pushinteger(l, 0);
        raw_set(l, ev, c"frame");
        ffi::lua_pushnumber(l, 0.0);
        raw_set(l, ev, c"t");
        (*host).refs.ev = keep(l);

        set_gc(l, setup.gc);
        0
    }
}

/// Switches the collector of `l` to `mode` (default parameters).
///
/// # Safety
/// Inside a protected call.
unsafe fn set_gc(l: *mut lua_State, mode: GcMode) {
    let default: c_int = 0;
    // SAFETY: `lua_gc` with 0 parameters keeps Lua's defaults.
    unsafe {
        match mode {
            GcMode::Incremental => ffi::lua_gc(l, ffi::LUA_GCINC, default, default, default),
            GcMode::Generational => ffi::lua_gc(l, ffi::LUA_GCGEN, default, default),
        };
    }
}

/// [`set_gc`] as a protected C function; the light userdata argument is a [`GcMode`].
unsafe extern "C-unwind" fn change_gc(l: *mut lua_State) -> c_int {
    // SAFETY: called by `Vm::set_gc_mode` with a `GcMode` that outlives the call.
    unsafe {
        let mode = *ffi::lua_touserdata(l, 1).cast::<GcMode>();
        set_gc(l, mode);
    }
    0
}

/// Looks up `on_start` … `on_stop` in the globals (raw, so a script's `_G` metatable cannot interfere),
/// keeps each function in the registry, and writes each one's type into the [`Defined`] argument.
unsafe extern "C-unwind" fn bind_functions(l: *mut lua_State) -> c_int {
    // SAFETY: called by `Vm::bind` with a `Defined` that outlives the call.
    unsafe {
        let defined = ffi::lua_touserdata(l, 1).cast::<c_int>();
        let host = host(l);
        ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
        let globals = ffi::lua_gettop(l);
        for (slot, name) in FUNCTION_NAMES.iter().enumerate() {
            ffi::lua_pushstring(l, name.as_ptr());
            let ty = ffi::lua_rawget(l, globals);
            *defined.add(slot) = ty;
            if ty == ffi::LUA_TFUNCTION {
                (*host).refs.functions[slot] = keep(l);
            } else {
                ffi::lua_pop(l, 1);
            }
        }
    }
    0
}

/// Seconds from `t0_ns` to `t_ns` (negative before it).
fn seconds_since(t_ns: u64, t0_ns: u64) -> f64 {
    (i128::from(t_ns) - i128::from(t0_ns)) as f64 * 1e-9
}

/// One call, protected: writes the frame into `ctx` and the pose tables (only keypoints that changed) and
/// the event into `ev`, then calls the script's function, if any.
unsafe extern "C-unwind" fn run_job(l: *mut lua_State) -> c_int {
    // SAFETY: called by `Vm::run`, which set the job; pose pointers in it are valid for the call. Writes
    // are raw (no metamethod, so no script code) into fields that exist since setup (no allocation unless
    // a script removed one).
    unsafe {
        let host = host(l);
        let job = (*host).job;
        let refs = (*host).refs;
        ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::lua_Integer::from(refs.ctx));
        let ctx = ffi::lua_gettop(l);
        if let Some(frame) = job.frame {
            let t0 = *(*host).t0_ns.get_or_insert(frame.frame_time_ns);
            ffi::lua_pushinteger(l, frame.frame_id as ffi::lua_Integer);
            raw_set(l, ctx, c"frame");
            ffi::lua_pushinteger(l, frame.frame_time_ns as ffi::lua_Integer);
            raw_set(l, ctx, c"t_ns");
            ffi::lua_pushnumber(l, seconds_since(frame.frame_time_ns, t0));
            raw_set(l, ctx, c"t");
            ffi::lua_pushnumber(l, seconds_since(frame.target_ns, t0));
            raw_set(l, ctx, c"target_t");
            write_pose(l, host, 0, &*frame.predicted, refs.points[0]);
            write_pose(l, host, 1, &*frame.measured, refs.points[1]);
            (*host).cached = true;
            if job.call == Call::Event {
                ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::lua_Integer::from(refs.ev));
                let ev = ffi::lua_gettop(l);
                ffi::lua_rawgeti(
                    l,
                    ffi::LUA_REGISTRYINDEX,
                    ffi::lua_Integer::from(refs.names),
                );
                if ffi::lua_rawgeti(l, -1, job.trigger as ffi::lua_Integer + 1) == ffi::LUA_TNIL {
                    ffi::lua_pop(l, 1);
                    push_str(l, "");
                }
                raw_set(l, ev, c"trigger");
                ffi::lua_pop(l, 1);
                ffi::lua_pushinteger(l, job.trigger as ffi::lua_Integer);
                raw_set(l, ev, c"index");
                ffi::lua_pushboolean(l, c_int::from(job.active));
                raw_set(l, ev, c"active");
                ffi::lua_pushinteger(l, frame.frame_id as ffi::lua_Integer);
                raw_set(l, ev, c"frame");
                ffi::lua_pushnumber(l, seconds_since(frame.frame_time_ns, t0));
                raw_set(l, ev, c"t");
                ffi::lua_settop(l, ctx);
            }
        }
        let Some(slot) = job.call.function_slot() else {
            return 0;
        };
        let function = refs.functions[slot];
        if function == ffi::LUA_NOREF {
            return 0;
        }
        ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::lua_Integer::from(function));
        ffi::lua_pushvalue(l, ctx);
        let nargs = match job.call {
            Call::Frame => {
                ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::lua_Integer::from(refs.pose));
                2
            }
            Call::Event => {
                ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::lua_Integer::from(refs.ev));
                2
            }
            _ => 1,
        };
        ffi::lua_call(l, nargs, 0);
    }
    0
}

/// Writes the keypoints of `pose` that changed since the last write into the keypoint tables of array
/// `points` (registry reference); `which` 0 = predicted, 1 = measured.
///
/// # Safety
/// Inside [`run_job`].
unsafe fn write_pose(l: *mut lua_State, host: *mut Host, which: usize, pose: &Pose, points: c_int) {
    // SAFETY: per the contract; the host is not otherwise referenced while this runs (no script code).
    unsafe {
        ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::lua_Integer::from(points));
        let array = ffi::lua_gettop(l);
        // The four field names once, at known slots: each write is then a copy of a slot, not a lookup.
        for key in [c"x", c"y", c"p", c"ok"] {
            ffi::lua_pushstring(l, key.as_ptr());
        }
        let (kx, ky, kp, kok) = (array + 1, array + 2, array + 3, array + 4);
        let cached = (*host).cached;
        for k in 0..(*host).keypoints {
            let point = pose.points().get(k).copied().unwrap_or(Keypoint::MISSING);
            let last = &mut (*host).last[which][k];
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits();
            let xy_same = same(point.x, last.x) && same(point.y, last.y);
            let p_same = same(point.score, last.score);
            if cached && xy_same && p_same {
                continue;
            }
            let ok = !point.is_missing();
            let ok_same = ok != last.is_missing();
            *last = point;
            ffi::lua_rawgeti(l, array, k as ffi::lua_Integer + 1);
            let table = ffi::lua_gettop(l);
            if !(cached && xy_same) {
                let (x, y) = if ok {
                    (f64::from(point.x), f64::from(point.y))
                } else {
                    (f64::NAN, f64::NAN)
                };
                ffi::lua_pushvalue(l, kx);
                ffi::lua_pushnumber(l, x);
                ffi::lua_rawset(l, table);
                ffi::lua_pushvalue(l, ky);
                ffi::lua_pushnumber(l, y);
                ffi::lua_rawset(l, table);
            }
            if !(cached && p_same) {
                ffi::lua_pushvalue(l, kp);
                ffi::lua_pushnumber(l, f64::from(point.score));
                ffi::lua_rawset(l, table);
            }
            if !(cached && ok_same) {
                ffi::lua_pushvalue(l, kok);
                ffi::lua_pushboolean(l, c_int::from(ok));
                ffi::lua_rawset(l, table);
            }
            ffi::lua_settop(l, kok);
        }
        ffi::lua_settop(l, array - 1);
    }
}

/// `collectgarbage("count")`: the memory in use in KiB, as standard Lua gives it. Every other option is
/// refused: a full collection or stopping the collector are not the script's to decide on the loop thread.
unsafe extern "C-unwind" fn collectgarbage_count(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua; errors are raised with no Rust value needing a drop.
    unsafe {
        let mut len = 0usize;
        let option = ffi::luaL_optlstring(l, 1, c"collect".as_ptr(), &mut len);
        if CStr::from_ptr(option) != c"count" {
            ffi::luaL_error(
                l,
                c"collectgarbage: only collectgarbage(\"count\") is available to protocol scripts, not \"%s\"".as_ptr(),
                option,
            );
        }
        let kib = ffi::lua_gc(l, ffi::LUA_GCCOUNT);
        let bytes = ffi::lua_gc(l, ffi::LUA_GCCOUNTB);
        ffi::lua_pushnumber(l, f64::from(kib) + f64::from(bytes) / 1024.0);
    }
    1
}

/// `setmetatable` that refuses metatables with a `__gc` field: finalizers run inside the collector, where
/// the count hook is off, so a slow one would escape the instruction budget. Forwards to the original
/// (upvalue 1) otherwise.
unsafe extern "C-unwind" fn setmetatable_without_gc(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua; errors are raised with no Rust value needing a drop.
    unsafe {
        if ffi::lua_type(l, 2) == ffi::LUA_TTABLE {
            ffi::lua_pushstring(l, c"__gc".as_ptr());
            if ffi::lua_rawget(l, 2) != ffi::LUA_TNIL {
                ffi::luaL_error(
                    l,
                    c"setmetatable: __gc metamethods are not allowed in protocol scripts (they would run outside the instruction budget)".as_ptr(),
                );
            }
            ffi::lua_pop(l, 1);
        }
        let nargs = ffi::lua_gettop(l);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_insert(l, 1);
        ffi::lua_call(l, nargs, 1);
    }
    1
}

/// Checks that argument 1 is the `ctx` table (the method was called with `:`); raises otherwise.
///
/// # Safety
/// A C function's state.
unsafe fn check_self(l: *mut lua_State, method: &CStr, usage: &CStr) {
    // SAFETY: raising with no Rust value needing a drop.
    unsafe {
        if ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
            ffi::luaL_error(
                l,
                c"ctx:%s: call it with a colon: %s".as_ptr(),
                method.as_ptr(),
                usage.as_ptr(),
            );
        }
    }
}

/// A description of argument `idx` for an error message, pushed on the stack: its value (`tostring`),
/// a string in quotes, or `no value` when absent.
///
/// # Safety
/// A C function's state.
unsafe fn describe(l: *mut lua_State, idx: c_int) -> *const std::ffi::c_char {
    // SAFETY: per the contract; each branch pushes one string.
    unsafe {
        match ffi::lua_type(l, idx) {
            ffi::LUA_TNONE => ffi::lua_pushstring(l, c"no value".as_ptr()),
            ffi::LUA_TSTRING => {
                ffi::lua_pushfstring(l, c"\"%s\"".as_ptr(), ffi::lua_tostring(l, idx))
            }
            _ => ffi::luaL_tolstring(l, idx, ptr::null_mut()),
        }
    }
}

/// Argument `idx` as an integer in `min..=max`; raises an error naming `method` and `name` otherwise.
///
/// # Safety
/// A C function's state.
unsafe fn int_arg(
    l: *mut lua_State,
    idx: c_int,
    method: &CStr,
    name: &CStr,
    min: i64,
    max: i64,
) -> i64 {
    // SAFETY: raising with no Rust value needing a drop; `describe` pushes the value's text.
    unsafe {
        let mut isnum = 0;
        let value = if ffi::lua_type(l, idx) == ffi::LUA_TNUMBER {
            ffi::lua_tointegerx(l, idx, &mut isnum)
        } else {
            0
        };
        if isnum == 0 || value < min || value > max {
            ffi::luaL_error(
                l,
                c"ctx:%s: `%s` must be an integer from %I to %I, got %s".as_ptr(),
                method.as_ptr(),
                name.as_ptr(),
                min as ffi::lua_Integer,
                max as ffi::lua_Integer,
                describe(l, idx),
            );
        }
        value
    }
}

/// Argument `idx` as a boolean (strictly `true` or `false`); raises an error naming it otherwise.
///
/// # Safety
/// A C function's state.
unsafe fn bool_arg(l: *mut lua_State, idx: c_int, method: &CStr, name: &CStr) -> bool {
    // SAFETY: raising with no Rust value needing a drop.
    unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TBOOLEAN {
            ffi::luaL_error(
                l,
                c"ctx:%s: `%s` must be true or false, got %s".as_ptr(),
                method.as_ptr(),
                name.as_ptr(),
                describe(l, idx),
            );
        }
        ffi::lua_toboolean(l, idx) != 0
    }
}

/// Pushes `action` into the call's buffer, keeping the high-channel mask in step with what was accepted.
///
/// # Safety
/// A C function's state.
unsafe fn emit(l: *mut lua_State, method: &CStr, action: Action) {
    // SAFETY: the host's buffer pointer is set for the duration of a call and null otherwise.
    unsafe {
        let host = host(l);
        let buffer = (*host).actions;
        if buffer.is_null() {
            ffi::luaL_error(
                l,
                c"ctx:%s: outputs can only be driven from on_start, on_frame, on_event or on_stop"
                    .as_ptr(),
                method.as_ptr(),
            );
        }
        // A full buffer drops the action and counts it, as for the built-in triggers.
        if (*buffer).push(action)
            && let Action::SetLevel { channel, high } = action
        {
            let bit = 1u64 << channel;
            if high {
                (*host).channels_high |= bit;
            } else {
                (*host).channels_high &= !bit;
            }
        }
    }
}

const U32_MAX: i64 = u32::MAX as i64;

/// `ctx:pulse(channel, width_us)`.
unsafe extern "C-unwind" fn ctx_pulse(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua.
    unsafe {
        check_self(l, c"pulse", c"ctx:pulse(channel, width_us)");
        let channel = int_arg(l, 2, c"pulse", c"channel", 0, MAX_CHANNEL) as u8;
        let width_us = int_arg(l, 3, c"pulse", c"width_us", 1, U32_MAX) as u32;
        emit(l, c"pulse", Action::Pulse { channel, width_us });
    }
    0
}

/// `ctx:train(channel, period_us, width_us, count)`.
unsafe extern "C-unwind" fn ctx_train(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua.
    unsafe {
        check_self(
            l,
            c"train",
            c"ctx:train(channel, period_us, width_us, count)",
        );
        let channel = int_arg(l, 2, c"train", c"channel", 0, MAX_CHANNEL) as u8;
        let period_us = int_arg(l, 3, c"train", c"period_us", 1, U32_MAX) as u32;
        let width_us = int_arg(l, 4, c"train", c"width_us", 1, U32_MAX) as u32;
        let count = int_arg(l, 5, c"train", c"count", 1, U32_MAX) as u32;
        if count > 1 && period_us <= width_us {
            ffi::luaL_error(
                l,
                c"ctx:train: `period_us` must be greater than width_us (%I) when count > 1, got %I"
                    .as_ptr(),
                ffi::lua_Integer::from(width_us),
                ffi::lua_Integer::from(period_us),
            );
        }
        emit(
            l,
            c"train",
            Action::PulseTrain {
                channel,
                period_us,
                width_us,
                count,
            },
        );
    }
    0
}

/// `ctx:set(channel, high)`.
unsafe extern "C-unwind" fn ctx_set(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua.
    unsafe {
        check_self(l, c"set", c"ctx:set(channel, high)");
        let channel = int_arg(l, 2, c"set", c"channel", 0, MAX_CHANNEL) as u8;
        let high = bool_arg(l, 3, c"set", c"high");
        emit(l, c"set", Action::SetLevel { channel, high });
    }
    0
}

/// `ctx:mark(code)`.
unsafe extern "C-unwind" fn ctx_mark(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua.
    unsafe {
        check_self(l, c"mark", c"ctx:mark(code)");
        let code = int_arg(l, 2, c"mark", c"code", 0, i64::from(u16::MAX)) as u16;
        let trigger = (*host(l)).trigger_index;
        emit(l, c"mark", Action::Mark { code, trigger });
    }
    0
}

/// `ctx:record(start)`.
unsafe extern "C-unwind" fn ctx_record(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua.
    unsafe {
        check_self(l, c"record", c"ctx:record(start)");
        let start = bool_arg(l, 2, c"record", c"start");
        let trigger = (*host(l)).trigger_index;
        emit(l, c"record", Action::Recording { trigger, start });
    }
    0
}

/// `ctx:random()` → [0, 1); `ctx:random(n)` → 1..=n; `ctx:random(m, n)` → m..=n.
unsafe extern "C-unwind" fn ctx_random(l: *mut lua_State) -> c_int {
    // SAFETY: a C function called by Lua.
    unsafe {
        check_self(
            l,
            c"random",
            c"ctx:random(), ctx:random(n) or ctx:random(m, n)",
        );
        let (low, high) = match ffi::lua_gettop(l) - 1 {
            0 => {
                let u = (*host(l)).rng.unit();
                ffi::lua_pushnumber(l, u);
                return 1;
            }
            1 => (1, int_arg(l, 2, c"random", c"n", 1, i64::MAX)),
            2 => {
                let m = int_arg(l, 2, c"random", c"m", i64::MIN, i64::MAX);
                let n = int_arg(l, 3, c"random", c"n", m, i64::MAX);
                (m, n)
            }
            _ => {
                ffi::luaL_error(l, c"ctx:random: takes no argument, n, or m and n".as_ptr());
                return 0;
            }
        };
        let span = high.wrapping_sub(low) as u64;
        let r = (*host(l)).rng.up_to(span);
        ffi::lua_pushinteger(l, low.wrapping_add(r as i64));
    }
    1
}
