use super::*;

const KEYPOINTS: [&str; 3] = ["nose", "paw", "tail"];
const TRIGGERS: [&str; 2] = ["zone_a", "rearing"];
/// The index of the script's marks: one past the built-in triggers.
const SCRIPT_INDEX: u16 = TRIGGERS.len() as u16;
const FILE: &str = "t.lua";

fn base_config() -> ScriptConfig {
    ScriptConfig {
        path: FILE.into(),
        ..ScriptConfig::default()
    }
}

fn load_with(source: &str, config: &ScriptConfig) -> Result<Script, ScriptError> {
    Script::load(source, FILE, config, &KEYPOINTS, &TRIGGERS)
}

fn load(source: &str) -> Result<Script, ScriptError> {
    load_with(source, &base_config())
}

/// Nose at (`x`, 2`x`), paw missing, tail fixed.
fn pose(x: f32) -> Pose {
    let mut pose = Pose::new(KEYPOINTS.len());
    pose.points_mut()[0] = Keypoint::new(x, 2.0 * x, 0.9);
    pose.points_mut()[2] = Keypoint::new(1.0, 2.0, 0.5);
    pose
}

/// Exposure of frame `frame`: 1 s + 10 ms per frame; prediction 20 ms later.
fn input<'a>(frame: u64, predicted: &'a Pose, measured: &'a Pose) -> TriggerInput<'a> {
    let t = 1_000_000_000 + frame * 10_000_000;
    TriggerInput {
        frame_id: frame,
        frame_time_ns: t,
        now_ns: t + 1_000_000,
        target_ns: t + 20_000_000,
        measured,
        predicted,
    }
}

/// The actions of `on_frame` on frame `frame` with the nose at `x` (predicted and measured alike).
fn frame(script: &mut Script, frame: u64, x: f32) -> Result<Vec<Action>, ScriptError> {
    let p = pose(x);
    let mut actions = ActionBuf::new();
    script.frame(&input(frame, &p, &p), &mut actions)?;
    Ok(actions.as_slice().to_vec())
}

fn start(script: &mut Script) -> Result<Vec<Action>, ScriptError> {
    let p = pose(0.0);
    let mut actions = ActionBuf::new();
    script.start(&input(0, &p, &p), &mut actions)?;
    Ok(actions.as_slice().to_vec())
}

/// `body` as the body of `on_frame` (its first line is line 2).
fn on_frame(body: &str) -> String {
    format!("function on_frame(ctx, pose)\n{body}\nend\n")
}

#[test]
fn a_syntax_error_names_file_line_and_load() {
    let err = load("function on_frame(ctx, pose)\n  local x = = 1\nend\n").unwrap_err();
    assert_eq!(
        (err.file.as_str(), err.line, err.call),
        (FILE, Some(2), "load")
    );
    assert!(
        err.message.starts_with("unexpected symbol near '='"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("t.lua:2: {} (in load)", err.message)
    );

    let err = load("function on_frame(ctx, pose)\n  if true then\nend\n").unwrap_err();
    assert_eq!(err.line, Some(4), "{err}");
    assert!(err.message.contains("'end' expected"), "{err}");
}

#[test]
fn a_script_must_define_on_frame_or_on_event_as_functions() {
    let err = load("function on_start(ctx) end\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.lua: defines neither on_frame nor on_event: a protocol script needs at least one (in load)"
    );
    let err = load("on_frame = 5\n").unwrap_err();
    assert_eq!(err.message, "`on_frame` must be a function, got a number");
    let err = load("on_start = {}\nfunction on_event(ctx, ev) end\n").unwrap_err();
    assert_eq!(err.message, "`on_start` must be a function, got a table");
    assert!(load("function on_event(ctx, ev) end\n").is_ok());
    assert!(load(&on_frame("")).is_ok());
}

#[test]
fn an_error_in_the_top_level_chunk_is_a_load_error_with_its_line() {
    let err = load("local a = 1\nerror('no rig here')\n").unwrap_err();
    assert_eq!(err.to_string(), "t.lua:2: no rig here (in load)");
}

#[test]
fn bytecode_is_refused() {
    let err = load("\x1bLua\x54\x00 whatever").unwrap_err();
    assert_eq!(err.call, "load");
    assert!(err.message.contains("binary chunk"), "{err}");
}

#[test]
fn config_limits_are_checked_and_name_the_field() {
    for memory_mb in [0, MAX_MEMORY_MB + 1] {
        let config = ScriptConfig {
            memory_mb,
            ..base_config()
        };
        let err = load_with(&on_frame(""), &config).unwrap_err();
        assert_eq!(
            err.message,
            format!("[script] memory_mb must be from 1 to 1024, got {memory_mb}")
        );
    }
    let config = ScriptConfig {
        budget: 0,
        ..base_config()
    };
    let err = load_with(&on_frame(""), &config).unwrap_err();
    assert!(err.message.contains("[script] budget"), "{err}");
    let config = ScriptConfig {
        memory_mb: 1,
        ..base_config()
    };
    let script = load_with(&on_frame(""), &config).unwrap();
    assert_eq!(script.memory_limit(), 1 << 20);
    assert!(script.memory_used() > 0 && script.memory_used() < 1 << 20);
}

#[test]
fn each_ctx_method_pushes_its_exact_action() {
    let mut script = load(&on_frame(
        "  ctx:pulse(3, 5000)\n  ctx:train(4, 50000, 10000, 5)\n  ctx:train(6, 1, 7, 1)\n  ctx:set(5, true)\n  ctx:set(5, false)\n  ctx:mark(7)\n  ctx:mark(65535)\n  ctx:record(true)\n  ctx:record(false)\n  ctx:pulse(63, 4294967295)",
    ))
    .unwrap();
    assert_eq!(
        frame(&mut script, 0, 10.0).unwrap(),
        [
            Action::Pulse {
                channel: 3,
                width_us: 5000
            },
            Action::PulseTrain {
                channel: 4,
                period_us: 50000,
                width_us: 10000,
                count: 5
            },
            Action::PulseTrain {
                channel: 6,
                period_us: 1,
                width_us: 7,
                count: 1
            },
            Action::SetLevel {
                channel: 5,
                high: true
            },
            Action::SetLevel {
                channel: 5,
                high: false
            },
            Action::Mark {
                code: 7,
                trigger: SCRIPT_INDEX
            },
            Action::Mark {
                code: 65535,
                trigger: SCRIPT_INDEX
            },
            Action::Recording {
                trigger: SCRIPT_INDEX,
                start: true
            },
            Action::Recording {
                trigger: SCRIPT_INDEX,
                start: false
            },
            Action::Pulse {
                channel: 63,
                width_us: u32::MAX
            },
        ]
    );
}

#[test]
fn a_bad_argument_is_an_error_naming_it_at_the_scripts_line() {
    let cases = [
        (
            "ctx:pulse(64, 10)",
            "ctx:pulse: `channel` must be an integer from 0 to 63, got 64",
        ),
        (
            "ctx:pulse(-1, 10)",
            "ctx:pulse: `channel` must be an integer from 0 to 63, got -1",
        ),
        (
            "ctx:pulse(1, 0)",
            "ctx:pulse: `width_us` must be an integer from 1 to 4294967295, got 0",
        ),
        (
            "ctx:pulse(1, 2.5)",
            "ctx:pulse: `width_us` must be an integer from 1 to 4294967295, got 2.5",
        ),
        (
            "ctx:pulse(1, '10')",
            "ctx:pulse: `width_us` must be an integer from 1 to 4294967295, got \"10\"",
        ),
        (
            "ctx:pulse(1)",
            "ctx:pulse: `width_us` must be an integer from 1 to 4294967295, got no value",
        ),
        (
            "ctx:train(1, 100, 100, 2)",
            "ctx:train: `period_us` must be greater than width_us (100) when count > 1, got 100",
        ),
        (
            "ctx:train(1, 100, 10, 0)",
            "ctx:train: `count` must be an integer from 1 to 4294967295, got 0",
        ),
        (
            "ctx:set(1, 1)",
            "ctx:set: `high` must be true or false, got 1",
        ),
        (
            "ctx:mark(65536)",
            "ctx:mark: `code` must be an integer from 0 to 65535, got 65536",
        ),
        (
            "ctx:record(nil)",
            "ctx:record: `start` must be true or false, got nil",
        ),
        (
            "ctx.pulse(1, 10)",
            "ctx:pulse: call it with a colon: ctx:pulse(channel, width_us)",
        ),
        (
            "ctx:random(0)",
            "ctx:random: `n` must be an integer from 1 to 9223372036854775807, got 0",
        ),
        (
            "ctx:random(5, 4)",
            "ctx:random: `n` must be an integer from 5 to 9223372036854775807, got 4",
        ),
    ];
    for (call, message) in cases {
        let mut script = load(&on_frame(&format!("  local ok = true\n  {call}"))).unwrap();
        let err = frame(&mut script, 0, 10.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("t.lua:3: {message} (in on_frame)"),
            "{call}"
        );
    }
}

#[test]
fn a_runtime_error_reads_like_a_compiler_message() {
    let mut script = load(&on_frame("  local a = 1\n  return pose.nose.x.y")).unwrap();
    let err = frame(&mut script, 0, 10.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.lua:3: attempt to index a number value (field 'x') (in on_frame)"
    );
    let mut script = load(&on_frame("  error({})")).unwrap();
    let err = frame(&mut script, 0, 10.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.lua: (error object is a table value) (in on_frame)"
    );
}

#[test]
fn a_long_file_name_still_gives_the_line() {
    let file = format!("/srv/rigs/{}/protocols/catch.lua", "x".repeat(80));
    let err = Script::load(
        "\n\nlocal = 1\n",
        &file,
        &base_config(),
        &KEYPOINTS,
        &TRIGGERS,
    )
    .unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert_eq!(err.file, file);
    assert!(err.message.starts_with("<name> expected"), "{err}");
}

#[test]
fn a_runaway_loop_stops_at_the_budget_with_its_line_and_the_script_stays_failed() {
    let mut script = load(&on_frame(
        "  ctx:pulse(0, 10)\n  if ctx.frame == 2 then\n    while true do end\n  end",
    ))
    .unwrap();
    for k in 0..2 {
        assert_eq!(frame(&mut script, k, 1.0).unwrap().len(), 1);
    }
    let err = frame(&mut script, 2, 1.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.lua:4: instruction budget of 100000 exceeded (in on_frame)"
    );
    assert_eq!(script.failure(), Some(&err));
    // Later calls are refused with the same error, without running Lua (no pulse).
    assert_eq!(frame(&mut script, 3, 1.0).unwrap_err(), err);
    let mut actions = ActionBuf::new();
    assert_eq!(script.stop(&mut actions).unwrap_err(), err);
    assert!(actions.is_empty());
}

#[test]
fn a_script_cannot_swallow_the_budget_error_with_pcall() {
    let mut script = load(&on_frame(
        "  for i = 1, 10 do pcall(function() while true do end end) end\n  ctx:pulse(0, 10)",
    ))
    .unwrap();
    let mut actions = ActionBuf::new();
    let p = pose(1.0);
    let err = script.frame(&input(0, &p, &p), &mut actions).unwrap_err();
    assert!(err.message.starts_with("instruction budget"), "{err}");
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn the_chunk_and_on_start_get_ten_times_the_budget() {
    let spin = "for i = 1, 30000 do end"; // ~60 000 VM instructions
    let config = ScriptConfig {
        budget: 10_000,
        ..base_config()
    };
    let source = format!(
        "{spin}\nfunction on_start(ctx)\n  {spin}\nend\nfunction on_frame(ctx, pose)\n  {spin}\nend\n"
    );
    let mut script = load_with(&source, &config).unwrap();
    start(&mut script).unwrap();
    let err = frame(&mut script, 1, 1.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.lua:6: instruction budget of 10000 exceeded (in on_frame)"
    );
    let err = load_with("while true do end\n", &config).unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.lua:1: instruction budget of 100000 exceeded (in load)"
    );
}

#[test]
fn a_memory_bomb_hits_the_arena_limit_and_the_process_goes_on() {
    let config = ScriptConfig {
        budget: 100_000_000,
        memory_mb: 2,
        ..base_config()
    };
    let mut script = load_with(
        &on_frame("  local t = {}\n  for i = 1, 1e9 do t[i] = i end"),
        &config,
    )
    .unwrap();
    let err = frame(&mut script, 0, 1.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.lua: not enough memory: the script's arena of 2 MiB is used up ([script] memory_mb) (in on_frame)"
    );
    assert!(script.memory_used() <= script.memory_limit());
    assert_eq!(frame(&mut script, 1, 1.0).unwrap_err(), err);
    drop(script);

    // One big string is refused at once, by the same limit.
    let mut script = load_with(&on_frame("  local s = string.rep('x', 1e9)"), &config).unwrap();
    let err = frame(&mut script, 0, 1.0).unwrap_err();
    assert!(err.message.starts_with("not enough memory"), "{err}");

    // A fresh script runs as usual afterwards.
    let mut script = load(&on_frame("  ctx:pulse(0, 10)")).unwrap();
    assert_eq!(frame(&mut script, 0, 1.0).unwrap().len(), 1);
}

#[test]
fn the_sandbox_has_no_way_out() {
    let dir = std::env::temp_dir().join(format!("reflex-script-sandbox-{}", std::process::id()));
    let target = dir.join("escaped");
    std::fs::create_dir_all(&dir).unwrap();
    let path = target.display().to_string();
    let cases = [
        (
            format!("io.open('{path}', 'w')"),
            "attempt to index a nil value (global 'io')",
        ),
        (
            format!("os.execute('touch {path}')"),
            "attempt to index a nil value (global 'os')",
        ),
        (
            "require('os')".to_string(),
            "attempt to call a nil value (global 'require')",
        ),
        (
            "load(string.dump(function() end))".to_string(),
            "attempt to call a nil value (field 'dump')",
        ),
        (
            "load('return 1')".to_string(),
            "attempt to call a nil value (global 'load')",
        ),
        (
            "local f = string.dump; f(on_frame)".to_string(),
            "attempt to call a nil value (local 'f')",
        ),
        (
            "debug.sethook()".to_string(),
            "attempt to index a nil value (global 'debug')",
        ),
        (
            "coroutine.create(print)".to_string(),
            "attempt to index a nil value (global 'coroutine')",
        ),
        (
            format!("dofile('{path}')"),
            "attempt to call a nil value (global 'dofile')",
        ),
        (
            format!("loadfile('{path}')"),
            "attempt to call a nil value (global 'loadfile')",
        ),
        (
            "package.loadlib('x', 'y')".to_string(),
            "attempt to index a nil value (global 'package')",
        ),
        (
            "print('hello')".to_string(),
            "attempt to call a nil value (global 'print')",
        ),
        (
            "math.randomseed(os)".to_string(),
            "attempt to call a nil value (field 'randomseed')",
        ),
        (
            "collectgarbage()".to_string(),
            "collectgarbage: only collectgarbage(\"count\") is available to protocol scripts, not \"collect\"",
        ),
        (
            "collectgarbage('stop')".to_string(),
            "collectgarbage: only collectgarbage(\"count\") is available to protocol scripts, not \"stop\"",
        ),
        (
            "setmetatable({}, { __gc = function() while true do end end })".to_string(),
            "setmetatable: __gc metamethods are not allowed in protocol scripts (they would run outside the instruction budget)",
        ),
    ];
    for (code, message) in cases {
        let mut script = load(&on_frame(&format!("  local _ = 1\n  {code}"))).unwrap();
        let err = frame(&mut script, 0, 1.0).unwrap_err();
        assert_eq!(err.message, message, "{code}");
        assert_eq!(err.line, Some(3), "{code}");
    }
    assert!(!target.exists(), "a script wrote {path}");
    std::fs::remove_dir_all(&dir).unwrap();

    // What is left works: memory counting, metatables without __gc, the libraries kept.
    let mut script = load(&on_frame(
        "  assert(collectgarbage('count') > 0)\n  assert(getmetatable(setmetatable({}, { __index = {} })))\n  assert(rawget(_G, 'load') == nil and string.dump == nil)\n  assert(utf8.len('é') == 1 and table.concat({'a', 'b'}) == 'ab' and math.floor(2.5) == 2)\n  assert(select('#', pcall(error)) == 2)",
    ))
    .unwrap();
    frame(&mut script, 0, 1.0).unwrap();
}

/// The marks of `frames` frames of a script marking `expr` each frame, with `seed`.
fn marks(expr: &str, seed: u64, frames: u64) -> Vec<u16> {
    let config = ScriptConfig {
        seed,
        ..base_config()
    };
    let mut script = load_with(&on_frame(&format!("  ctx:mark({expr})")), &config).unwrap();
    (0..frames)
        .flat_map(|k| frame(&mut script, k, 1.0).unwrap())
        .map(|a| match a {
            Action::Mark { code, .. } => code,
            other => panic!("not a mark: {other:?}"),
        })
        .collect()
}

#[test]
fn random_choices_follow_the_seed() {
    for expr in ["ctx:random(1000)", "math.random(1000)"] {
        let a = marks(expr, 7, 50);
        assert_eq!(a, marks(expr, 7, 50), "{expr}: same seed, same sequence");
        assert_ne!(
            a,
            marks(expr, 8, 50),
            "{expr}: another seed, another sequence"
        );
        assert!(a.iter().all(|&c| (1..=1000).contains(&c)), "{expr}: {a:?}");
    }
    let ranged = marks("ctx:random(3, 5)", 1, 200);
    assert!(ranged.iter().all(|&c| (3..=5).contains(&c)));
    assert!((3..=5).all(|v| ranged.contains(&v)), "every value comes up");
    let floats = marks("math.floor(ctx:random() * 100)", 1, 200);
    assert!(floats.iter().all(|&c| c < 100));
    assert!(floats.iter().any(|&c| c >= 50) && floats.iter().any(|&c| c < 50));
}

#[test]
fn the_pose_and_ctx_carry_the_frame() {
    let source = format!(
        "function on_start(ctx) ctx.state.x = 10; ctx.state.frame = 0 end\n{}",
        on_frame(
            r#"  local n, m = pose.nose, ctx.measured.nose
  assert(ctx.predicted == pose, "predicted is pose")
  assert(n.x == ctx.state.x and n.y == 2 * ctx.state.x and n.ok, "nose " .. n.x)
  assert(math.abs(n.p - 0.9) < 1e-6, "score")
  assert(m.x == 100 and m.ok, "measured " .. m.x)
  local paw = pose.paw
  assert(not paw.ok and paw.x ~= paw.x and paw.y ~= paw.y, "missing paw is NaN")
  assert(math.type(ctx.frame) == "integer" and ctx.frame == ctx.state.frame, "frame")
  assert(math.abs(ctx.t - 0.01 * ctx.frame) < 1e-9, "t " .. ctx.t)
  assert(ctx.t_ns == 1000000000 + 10000000 * ctx.frame, "t_ns")
  assert(math.abs(ctx.target_t - ctx.t - 0.02) < 1e-9, "target_t")
  assert(ctx.keypoints[1] == "nose" and ctx.keypoints[3] == "tail" and #ctx.keypoints == 3, "names")
  ctx.state.x = ctx.state.x + 1
  ctx.state.frame = ctx.state.frame + 1"#
        )
    );
    let mut script = load(&source).unwrap();
    let mut measured = Pose::new(KEYPOINTS.len());
    measured.points_mut()[0] = Keypoint::new(100.0, 100.0, 0.8);
    let first = pose(10.0);
    let mut actions = ActionBuf::new();
    script
        .start(&input(0, &first, &measured), &mut actions)
        .unwrap();
    for k in 0..5u64 {
        let predicted = pose(10.0 + k as f32);
        script
            .frame(&input(k, &predicted, &measured), &mut actions)
            .unwrap_or_else(|e| panic!("frame {k}: {e}"));
    }
    assert!(actions.is_empty());
}

#[test]
fn a_keypoint_that_goes_missing_and_comes_back_is_updated() {
    let mut script = load(&on_frame(
        "  ctx:mark(pose.nose.ok and math.floor(pose.nose.x) or 9999)",
    ))
    .unwrap();
    let missing = Pose::new(KEYPOINTS.len());
    let mut codes = Vec::new();
    for (k, p) in [pose(5.0), missing, missing, pose(6.0), pose(6.0)]
        .iter()
        .enumerate()
    {
        let mut actions = ActionBuf::new();
        script.frame(&input(k as u64, p, p), &mut actions).unwrap();
        codes.extend(actions.iter().map(|a| match a {
            Action::Mark { code, .. } => *code,
            _ => unreachable!(),
        }));
    }
    assert_eq!(codes, [5, 9999, 9999, 6, 6]);
}

#[test]
fn params_reach_the_script_with_their_types() {
    let text = r#"
path = "p.lua"
[params]
n = 3
f = 2.5
b = true
s = "left"
"#;
    let config: ScriptConfig = toml::from_str(text).unwrap();
    let mut script = load_with(
        &on_frame(
            r#"  local p = ctx.params
  assert(math.type(p.n) == "integer" and p.n == 3)
  assert(math.type(p.f) == "float" and p.f == 2.5)
  assert(p.b == true and p.s == "left")
  ctx:mark(1)"#,
        ),
        &config,
    )
    .unwrap();
    assert_eq!(frame(&mut script, 0, 1.0).unwrap().len(), 1);
}

#[test]
fn the_config_has_defaults_and_refuses_unknown_fields() {
    let config: ScriptConfig = toml::from_str("path = \"catch.lua\"").unwrap();
    assert_eq!(
        config,
        ScriptConfig {
            path: "catch.lua".into(),
            ..ScriptConfig::default()
        }
    );
    assert_eq!(
        (
            config.budget,
            config.memory_mb,
            config.seed,
            config.reload,
            config.on_error
        ),
        (100_000, 8, 1, true, OnScriptError::Stop)
    );
    let config: ScriptConfig =
        toml::from_str("path = \"c.lua\"\non_error = \"disable\"\nreload = false\nseed = 9")
            .unwrap();
    assert_eq!(
        (config.on_error, config.reload, config.seed),
        (OnScriptError::Disable, false, 9)
    );
    let err = toml::from_str::<ScriptConfig>("path = \"c.lua\"\nbudgett = 5").unwrap_err();
    assert!(err.to_string().contains("unknown field `budgett`"), "{err}");
    let err =
        toml::from_str::<ScriptConfig>("path = \"c.lua\"\n[params]\nzone = [1, 2]").unwrap_err();
    assert!(
        err.to_string().contains("a number, a boolean or a string"),
        "{err}"
    );
    assert!(
        toml::from_str::<ScriptConfig>("budget = 5").is_err(),
        "path is required"
    );
    // Serialising gives the same config back.
    let mut full = ScriptConfig {
        path: "x.lua".into(),
        on_error: OnScriptError::Disable,
        ..ScriptConfig::default()
    };
    full.params.insert("k".into(), ParamValue::Float(1.5));
    let text = toml::to_string(&full).unwrap();
    assert_eq!(toml::from_str::<ScriptConfig>(&text).unwrap(), full);
}

#[test]
fn stop_runs_on_stop_then_turns_off_what_the_script_left_on() {
    let mut script = load(
        "function on_frame(ctx, pose)\n  ctx:set(1, true)\n  ctx:set(2, true)\n  ctx:set(2, false)\n  ctx:set(5, true)\nend\nfunction on_stop(ctx) ctx:mark(9) end\n",
    )
    .unwrap();
    frame(&mut script, 0, 1.0).unwrap();
    assert_eq!(script.channels_high(), 1 << 1 | 1 << 5);
    let mut actions = ActionBuf::new();
    script.stop(&mut actions).unwrap();
    assert_eq!(
        actions.as_slice(),
        [
            Action::Mark {
                code: 9,
                trigger: SCRIPT_INDEX
            },
            Action::SetLevel {
                channel: 1,
                high: false
            },
            Action::SetLevel {
                channel: 5,
                high: false
            },
        ]
    );
    assert_eq!(script.channels_high(), 0);
}

#[test]
fn a_failed_call_keeps_every_channel_it_may_have_left_on() {
    let mut script = load(&on_frame(
        "  if ctx.frame == 0 then ctx:set(3, true) else\n    ctx:set(3, false); ctx:set(4, true); error('late') end",
    ))
    .unwrap();
    frame(&mut script, 0, 1.0).unwrap();
    assert_eq!(script.channels_high(), 1 << 3);
    frame(&mut script, 1, 1.0).unwrap_err();
    // The caller takes the failed call's actions back: 3 may still be on, and 4 went on.
    assert_eq!(script.channels_high(), 1 << 3 | 1 << 4);
}

#[test]
fn events_carry_the_trigger_and_its_state() {
    let mut script = load(
        r#"function on_event(ctx, ev)
  assert(ev.trigger == ({ "zone_a", "rearing" })[ev.index + 1], ev.trigger)
  assert(ev.frame == ctx.frame and ev.t == ctx.t)
  ctx.state.n = (ctx.state.n or 0) + 1
  ctx:mark(ev.index * 10 + (ev.active and 1 or 0) + 100 * ctx.state.n)
end
"#,
    )
    .unwrap();
    let p = pose(1.0);
    let mut actions = ActionBuf::new();
    script
        .event(&input(4, &p, &p), 1, true, &mut actions)
        .unwrap();
    script
        .event(&input(4, &p, &p), 0, false, &mut actions)
        .unwrap();
    script.frame(&input(4, &p, &p), &mut actions).unwrap();
    let codes: Vec<u16> = actions
        .iter()
        .map(|a| match a {
            Action::Mark { code, .. } => *code,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(codes, [111, 200]);
}

#[test]
fn a_full_buffer_drops_and_counts() {
    let mut script = load(&on_frame("  for i = 1, 70 do ctx:pulse(0, 10) end")).unwrap();
    let p = pose(1.0);
    let mut actions = ActionBuf::new();
    script.frame(&input(0, &p, &p), &mut actions).unwrap();
    assert_eq!((actions.len(), actions.dropped()), (ActionBuf::CAPACITY, 6));
}

#[test]
fn a_dry_run_lists_each_calls_actions() {
    let source = r#"
function on_start(ctx) ctx:record(true) end
function on_frame(ctx, pose)
  if pose.nose.ok then ctx:pulse(0, 1000); ctx:set(2, true) end
end
function on_event(ctx, ev) ctx:mark(ev.index) end
function on_stop(ctx) ctx:record(false) end
"#;
    let dry = Script::dry_run(source, FILE, &base_config(), &KEYPOINTS, &TRIGGERS).unwrap();
    let summary: Vec<(&str, usize)> = dry
        .calls
        .iter()
        .map(|c| (c.call, c.actions.len()))
        .collect();
    assert_eq!(
        summary,
        [
            ("on_start", 1),
            ("on_frame", 2),
            ("on_frame", 2),
            ("on_frame", 2),
            ("on_frame", 0),
            ("on_frame", 0),
            ("on_event", 1),
            ("on_event", 1),
            ("on_stop", 2),
        ]
    );
    assert_eq!(
        dry.calls.last().unwrap().actions,
        [
            Action::Recording {
                trigger: SCRIPT_INDEX,
                start: false
            },
            Action::SetLevel {
                channel: 2,
                high: false
            }
        ]
    );
    assert_eq!(dry.calls_of("on_event").count(), TRIGGERS.len());
    let text = dry.to_string();
    assert!(
        text.contains("on_frame (frame 3, every keypoint missing): 0 actions"),
        "{text}"
    );
    assert!(
        text.contains(
            "on_event (frame 5, trigger `rearing` active): 1 action: Mark { code: 1, trigger: 2 }"
        ),
        "{text}"
    );

    // A script that breaks once a keypoint is lost fails its dry run on that frame.
    let fragile = on_frame("  if not pose.nose.ok then\n    return ctx.state.last.x\n  end");
    let err = Script::dry_run(&fragile, FILE, &base_config(), &KEYPOINTS, &TRIGGERS).unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.lua:3: attempt to index a nil value (field 'last') (in on_frame)"
    );
}

#[test]
fn the_collector_mode_can_be_switched_and_garbage_stays_bounded() {
    for mode in [GcMode::Incremental, GcMode::Generational] {
        let config = ScriptConfig {
            memory_mb: 1,
            ..base_config()
        };
        let mut script = load_with(
            &on_frame("  local t = { pose.nose.x, pose.nose.y, label = 'f' .. ctx.frame }\n  ctx.state.last = t"),
            &config,
        )
        .unwrap();
        script.set_gc_mode(mode).unwrap();
        assert_eq!(script.gc_mode(), mode);
        // Far more garbage than the 1 MiB arena holds: the collector must keep up.
        for k in 0..20_000 {
            frame(&mut script, k, k as f32).unwrap_or_else(|e| panic!("{mode:?} frame {k}: {e}"));
        }
        assert!(script.memory_used() < 1 << 20);
    }
}

#[test]
fn a_script_moves_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Script>();
    let mut script = load(&on_frame("  ctx:pulse(1, 10)")).unwrap();
    let mut script = std::thread::spawn(move || {
        frame(&mut script, 0, 1.0).unwrap();
        script
    })
    .join()
    .unwrap();
    assert_eq!(frame(&mut script, 1, 1.0).unwrap().len(), 1);
}

#[test]
fn positions_are_split_from_lua_messages() {
    assert_eq!(split_position("t.lua:12: boom", "t.lua"), (Some(12), 10));
    assert_eq!(
        split_position("...ls/catch.lua:3: x", "/a/tools/catch.lua"),
        (Some(3), 19)
    );
    assert_eq!(split_position("other.lua:3: x", "t.lua"), (None, 0));
    assert_eq!(split_position("boom", "t.lua"), (None, 0));
    assert_eq!(
        split_position("C:/r/t.lua:7: x", "C:/r/t.lua"),
        (Some(7), 14)
    );
}

#[test]
fn deep_recursion_is_an_error_not_a_crash_on_a_small_stack() {
    // Lua caps C-level nesting (pcall, metamethods, callbacks from C) at 200 and the Lua stack at a
    // million slots (or the arena, whichever is first); a quarter of the default thread stack is enough.
    let cases = [
        (
            "local function f(n) local ok, e = pcall(f, n + 1); if not ok then error(e, 0) end end\n  f(0)",
            "stack overflow",
        ),
        (
            "local t = setmetatable({}, {})\n  getmetatable(t).__index = function(s, k) return s[k .. 'x'] end\n  local _ = t.a",
            "stack overflow",
        ),
        (
            "local function f(s) return (s:gsub('.', f)) end\n  f('ab')",
            "stack overflow",
        ),
        (
            "local function f(n) return 1 + f(n + 1) end\n  f(0)",
            "not enough memory",
        ),
    ];
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let config = ScriptConfig {
                budget: 50_000_000,
                ..base_config()
            };
            for (code, fragment) in cases {
                let mut script =
                    load_with(&on_frame(&format!("  local _ = 1\n  {code}")), &config).unwrap();
                let err = frame(&mut script, 0, 1.0).unwrap_err();
                assert!(err.message.contains(fragment), "{code}: {err}");
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

/// The fenced block of `lang` in the module documentation, without the `//! ` prefixes.
fn doc_block(lang: &str) -> String {
    let source = include_str!("mod.rs");
    let open = format!("//! ```{lang}\n");
    let start = source.find(&open).expect("the block exists") + open.len();
    let end = start + source[start..].find("//! ```\n").expect("the block ends");
    source[start..end]
        .lines()
        .map(|l| {
            l.strip_prefix("//!")
                .unwrap_or(l)
                .strip_prefix(' ')
                .unwrap_or("")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_documented_example_runs() {
    #[derive(serde::Deserialize)]
    struct Rig {
        script: ScriptConfig,
    }
    let config = toml::from_str::<Rig>(&doc_block("toml")).unwrap().script;
    assert_eq!(
        (config.path.as_str(), config.seed),
        ("catch_trials.lua", 42)
    );
    let source = doc_block("lua");
    let names = ["nose", "tail"];
    let triggers = ["rearing"];
    Script::dry_run(&source, "catch_trials.lua", &config, &names, &triggers).unwrap();

    let mut script = Script::load(&source, "catch_trials.lua", &config, &names, &triggers).unwrap();
    let mut all = Vec::new();
    let mut actions = ActionBuf::new();
    // The nose goes in and out of the port (400, 300) once a second, for 100 s at 100 fps.
    for k in 0..10_000u64 {
        let inside = k % 100 < 30;
        let mut p = Pose::new(2);
        p.points_mut()[0] = if inside {
            Keypoint::new(405.0, 298.0, 0.95)
        } else {
            Keypoint::new(100.0, 100.0, 0.95)
        };
        let t = k * 10_000_000;
        let input = TriggerInput {
            frame_id: k,
            frame_time_ns: t,
            now_ns: t,
            target_ns: t,
            measured: &p,
            predicted: &p,
        };
        actions.clear();
        if k == 0 {
            script.start(&input, &mut actions).unwrap();
        }
        if k % 1000 == 500 {
            script.event(&input, 0, true, &mut actions).unwrap();
        }
        script.frame(&input, &mut actions).unwrap();
        all.extend_from_slice(actions.as_slice());
    }
    actions.clear();
    script.stop(&mut actions).unwrap();
    all.extend_from_slice(actions.as_slice());
    let count = |f: &dyn Fn(&Action) -> bool| all.iter().filter(|a| f(a)).count();
    let lit = count(&|a| matches!(a, Action::Mark { code: 1, .. }));
    let catch = count(&|a| matches!(a, Action::Mark { code: 2, .. }));
    let trains = count(&|a| {
        matches!(
            a,
            Action::PulseTrain {
                channel: 0,
                period_us: 50000,
                width_us: 10000,
                count: 5
            }
        )
    });
    // One trial per entry once the 5 s interval is over: at 0 s, 5 s, … 95 s.
    assert_eq!(lit + catch, 20, "trials");
    assert_eq!(trains, lit);
    assert!(
        catch >= 1 && catch < lit,
        "about 20 % catch trials: {catch} of {}",
        lit + catch
    );
    assert_eq!(
        count(&|a| matches!(a, Action::Mark { code: 3, .. })),
        10,
        "rearing marks"
    );
    assert_eq!(
        all.first(),
        Some(&Action::Recording {
            trigger: 1,
            start: true
        })
    );
    assert_eq!(
        all.last(),
        Some(&Action::Recording {
            trigger: 1,
            start: false
        })
    );
}
