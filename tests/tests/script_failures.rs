//! Protocol scripts that fail or change while a session runs: a runaway script is stopped, its outputs go
//! off and the session ends naming the script's line; a changed script is reloaded between frames, a broken
//! one refused while the old one goes on.
//!
//! Its own test binary: a failing script's error path allocates (the message) on the actuation thread, which
//! must not be counted by the no-allocation test of the `e2e` binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reflex_daemon::clock::{Clock, MonotonicClock};
use reflex_daemon::config::Config;
use reflex_daemon::pipeline::Report;
use reflex_daemon::session::files;
use reflex_tests::run_live;

/// Write `text` as the script `name` in `dir`; returns its path.
fn script_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The embedded default rig with the script at `path`.
fn with_script(path: &Path, budget: u64) -> Config {
    let mut config = Config::embedded();
    config.script = Some(reflex_plugins::script::ScriptConfig {
        path: path.display().to_string(),
        budget,
        ..Default::default()
    });
    config
}

#[test]
fn a_runaway_script_is_stopped_its_outputs_go_off_and_the_session_ends_naming_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = script_file(
        tmp.path(),
        "runaway.lua",
        "function on_frame(ctx, pose)\n\
         \x20 if ctx.frame >= 20 and not ctx.state.on then ctx:set(2, true); ctx.state.on = true end\n\
         \x20 if ctx.frame >= 60 then\n\
         \x20   while true do end\n\
         \x20 end\n\
         end\n",
    );
    let dir = tmp.path().join("s");
    let err = run_live(with_script(&path, 100_000), &dir, Some(600), Arc::default())
        .expect_err("the session stops on the script's failure");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("runaway.lua:4") && msg.contains("instruction budget"),
        "{msg}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(files::SUMMARY)).unwrap()).unwrap();
    assert_eq!(summary["complete"], false);
    assert!(
        summary["error"].as_str().unwrap().contains("runaway.lua:4"),
        "{summary}"
    );
    let events: Vec<serde_json::Value> = std::fs::read_to_string(dir.join(files::EVENTS))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |pred: &dyn Fn(&serde_json::Value) -> bool| events.iter().position(pred);
    let high = at(&|e| e["command"] == "set_level" && e["channel"] == 2 && e["high"] == true)
        .expect("the script set channel 2 high");
    let failed = at(&|e| e["type"] == "script" && e["what"] == "failed").expect("a failure event");
    let low = at(&|e| e["command"] == "set_level" && e["channel"] == 2 && e["high"] == false)
        .expect("channel 2 set low");
    let all_off = at(&|e| e["command"] == "all_off").expect("all outputs off at the end");
    assert!(high < failed && failed < low && low < all_off, "{events:?}");
    assert!(
        events[failed]["frame"].as_u64().unwrap() >= 60,
        "the failure is on the frame whose call ran away"
    );
    assert_eq!(
        (&events[low]["frame"], &events[low]["shutdown"]),
        (&events[failed]["frame"], &serde_json::Value::Bool(false)),
        "channel 2 goes low at once, on the failing frame, not only at shutdown"
    );
}

/// Waits until `events.jsonl` in `dir` has a line containing `needle` (the writer flushes it every ~10 ms);
/// fails if the session ends first.
fn wait_for_event(
    dir: &Path,
    needle: &str,
    session: &std::thread::JoinHandle<anyhow::Result<Report>>,
) {
    let clock = MonotonicClock::new();
    loop {
        let text = std::fs::read_to_string(dir.join(files::EVENTS)).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            !session.is_finished(),
            "the session ended before `{needle}` was recorded"
        );
        // A poll interval while the condition is re-read, not a guess at how long anything takes.
        clock.sleep_until(clock.now_ns() + 10_000_000);
    }
}

#[test]
fn a_changed_script_is_reloaded_between_frames_and_a_broken_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let v0 = "function on_frame(ctx, pose) if ctx.frame % 10 == 0 then ctx:mark(1) end end\n";
    let broken = "function on_frame(ctx, pose)\n  ctx:mark(\nend\n";
    let v1 = "function on_frame(ctx, pose) if ctx.frame % 10 == 0 then ctx:mark(2) end end\n";
    let path = script_file(tmp.path(), "live.lua", v0);
    let dir = tmp.path().join("s");
    let interrupt = Arc::new(AtomicBool::new(false));
    let session = {
        let (config, dir, interrupt) = (
            with_script(&path, 100_000),
            dir.clone(),
            Arc::clone(&interrupt),
        );
        std::thread::spawn(move || run_live(config, &dir, None, interrupt))
    };
    wait_for_event(&dir, r#""code":1"#, &session);
    std::fs::write(&path, broken).unwrap();
    wait_for_event(&dir, r#""what":"reload_rejected""#, &session);
    std::fs::write(&path, v1).unwrap();
    wait_for_event(&dir, r#""what":"reloaded""#, &session);
    wait_for_event(&dir, r#""code":2"#, &session);
    interrupt.store(true, Ordering::Relaxed);
    let report = session.join().unwrap().expect("the session ends normally");
    assert!(report.summary.complete);

    let events: Vec<serde_json::Value> = std::fs::read_to_string(dir.join(files::EVENTS))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let marks: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["type"] == "mark")
        .map(|e| (e["frame"].as_u64().unwrap(), e["code"].as_u64().unwrap()))
        .collect();
    let rejected = events
        .iter()
        .find(|e| e["what"] == "reload_rejected")
        .unwrap();
    let reloaded = events.iter().find(|e| e["what"] == "reloaded").unwrap();
    assert_eq!(reloaded["version"], 1);
    let swap = reloaded["frame"].as_u64().unwrap();
    // The old script ran on after the refused version (marks 1 past the refusal, up to the swap), the new one
    // from the frame after the swap, and no frame ran both or neither.
    assert!(
        marks
            .iter()
            .any(|&(f, c)| c == 1 && f > rejected["frame"].as_u64().unwrap()),
        "{marks:?}"
    );
    for &(f, c) in &marks {
        assert_eq!(c, if f <= swap { 1 } else { 2 }, "frame {f}: {marks:?}");
        assert_eq!(f % 10, 0);
    }
    assert!(events.iter().all(|e| e["what"] != "failed"));
    assert_eq!(
        std::fs::read_to_string(dir.join("script/live.v1.lua")).unwrap(),
        v1,
        "the session keeps every version it ran"
    );
}
