//! Protocol scripts (Lua) in the whole loop: the catch-trial example decides as its definition says, and a
//! live session with it replays exactly. (Failing and reloaded scripts: `tests/script_failures.rs`; no
//! allocation with a script running: `alloc.rs`.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reflex_daemon::config::Config;
use reflex_daemon::record::EventRecord;
use reflex_daemon::replay::{self, Recording, Replayed};
use reflex_daemon::session::files;
use reflex_firmware_bridge::OutputCommand;
use reflex_tests::run_live;

/// The example's config file (its script is found beside it).
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// The catch-trial example's config, its script path made absolute so a session run from anywhere finds it,
/// with `params` overridden.
fn catch_trials(params: &[(&str, i64)]) -> (Config, String, String) {
    let file = example("catch_trials.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut config = Config::parse(&text, &file.display().to_string()).unwrap();
    let script = config.script.as_mut().expect("the example has a [script]");
    script.path = example("catch_trials.lua").display().to_string();
    for &(k, v) in params {
        script
            .params
            .insert(k.into(), reflex_plugins::script::ParamValue::Int(v));
    }
    (config, text, file.display().to_string())
}

/// A hand-made track (100 frames/s, 40 s): the nose swings left and right through the example's zone, so
/// it enters it every 2 s from t = 1 s (20 trials), the other keypoints stay put.
fn swinging_track(dir: &Path) -> PathBuf {
    let path = dir.join("swing.csv");
    let mut csv = String::from("frame,track,node,x,y,score\n");
    for frame in 0..4000u32 {
        let t = f64::from(frame) / 100.0;
        let x = 250.0 + 150.0 * (2.0 * std::f64::consts::PI * 0.25 * t).cos();
        csv += &format!("{frame},0,nose,{x:.3},270.0,0.99\n");
        csv += &format!("{frame},0,tail_base,250.0,400.0,0.99\n");
    }
    std::fs::write(&path, csv).unwrap();
    path
}

/// Replay `config` on the swinging track.
fn replay_on_track(config: &Config, text: &str, file: &str) -> Replayed {
    let tmp = tempfile::tempdir().unwrap();
    let mut recording =
        Recording::pose_csv(&swinging_track(tmp.path()), Some(100.0), None).unwrap();
    replay::replay(&mut recording, config, text, file).unwrap()
}

/// Per trial (activation of `zone_entry`), in order: (frame, catch?, the commands of that frame).
fn trials(r: &Replayed) -> Vec<(u64, bool, Vec<OutputCommand>)> {
    let zone = r
        .trigger_names
        .iter()
        .position(|n| n == "zone_entry")
        .unwrap() as u16;
    let mut out: Vec<(u64, bool, Vec<OutputCommand>)> = Vec::new();
    for e in &r.events {
        match *e {
            EventRecord::Trigger {
                frame,
                trigger,
                active: true,
                ..
            } if trigger == zone => out.push((frame, false, Vec::new())),
            EventRecord::Mark { frame, code, .. } => {
                let t = out.last_mut().expect("a mark follows a trial");
                assert_eq!(t.0, frame, "the mark is on the trial's frame");
                assert!(code == 1 || code == 2, "code {code}");
                t.1 = code == 2;
            }
            EventRecord::Command {
                frame: Some(frame),
                command,
                ..
            } => {
                let t = out.last_mut().expect("a command follows a trial");
                assert_eq!(t.0, frame, "the command is on the trial's frame");
                t.2.push(command);
            }
            _ => {}
        }
    }
    out
}

#[test]
fn catch_trials_hold_exactly_their_share_of_every_block_and_follow_the_seed() {
    let (config, text, file) = catch_trials(&[]);
    let r = replay_on_track(&config, &text, &file);
    assert_eq!(r.summary.script_error, None);
    let t = trials(&r);
    assert_eq!(t.len(), 20, "one trial per zone entry, every 2 s");
    let train = OutputCommand::PulseTrain {
        channel: 1,
        period_us: 50_000,
        width_us: 10_000,
        count: 10,
    };
    for (frame, catch, commands) in &t {
        if *catch {
            assert!(
                commands.is_empty(),
                "catch trial on frame {frame} stimulated"
            );
        } else {
            assert_eq!(commands, &[train], "stimulated trial on frame {frame}");
        }
    }
    for block in t.chunks_exact(10) {
        assert_eq!(
            block.iter().filter(|x| x.1).count(),
            2,
            "two catch trials per block of 10: {block:?}"
        );
    }
    let pattern = |t: &[(u64, bool, Vec<OutputCommand>)]| t.iter().map(|x| x.1).collect::<Vec<_>>();
    let again = replay_on_track(&config, &text, &file);
    assert_eq!(
        pattern(&trials(&again)),
        pattern(&t),
        "same seed, same draw"
    );
    let mut reseeded = config.clone();
    reseeded.script.as_mut().unwrap().seed = 8;
    let other = pattern(&trials(&replay_on_track(&reseeded, &text, &file)));
    assert_ne!(other, pattern(&t), "another seed draws other positions");
    eprintln!(
        "catch_trials: {} trials, catch pattern {:?}; decision step p50 {:.2} µs p99 {:.2} µs",
        t.len(),
        pattern(&t),
        r.summary.speed.step_p50_us,
        r.summary.speed.step_p99_us
    );
}

#[test]
fn a_live_session_with_a_script_replays_exactly() {
    let (config, _, _) = catch_trials(&[("block_size", 4), ("catch_per_block", 1)]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let report = run_live(config, &dir, Some(600), Arc::default()).unwrap();
    assert_eq!(report.summary.records_lost, 0);
    assert_eq!(
        std::fs::read_to_string(dir.join("script/catch_trials.lua")).unwrap(),
        std::fs::read_to_string(example("catch_trials.lua")).unwrap(),
        "the session keeps the script it ran"
    );
    // The session's own config points at its copy of the script.
    let file = dir.join(files::CONFIG);
    let text = std::fs::read_to_string(&file).unwrap();
    let config = Config::parse(&text, &file.display().to_string()).unwrap();
    let mut recording = Recording::session(&dir).unwrap();
    let replayed =
        replay::replay(&mut recording, &config, &text, &file.display().to_string()).unwrap();
    let mut jsonl = Vec::new();
    let mut line = String::new();
    for e in &replayed.events {
        reflex_daemon::session::write_event(&mut jsonl, &mut line, e, &replayed.trigger_names)
            .unwrap();
    }
    let live = std::fs::read_to_string(dir.join(files::EVENTS)).unwrap();
    let cmp = replay::compare_with_live(&live, &String::from_utf8(jsonl).unwrap()).unwrap();
    assert!(cmp.identical, "{:?}", cmp.first_difference);
    assert!(
        live.contains(r#""type":"mark""#),
        "the script decided something in the live session"
    );
}
