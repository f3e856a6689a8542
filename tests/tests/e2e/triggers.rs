//! The built-in triggers in a real session: a zone-entry trigger with several actions and a combinator
//! beside the embedded default's zone trigger; their commands, marks and recording markers must reach
//! `events.jsonl` on exactly the frames the default trigger changes state.

use std::collections::BTreeSet;

use reflex_daemon::config::{Config, DEFAULT_TOML};
use reflex_daemon::session::files;

use crate::default_session::run_default;

/// Appended to the embedded default: fires with `nose_in_zone`'s entries, and on its exits.
const EXTRA: &str = r#"
[[trigger]]
name = "entry_train"
keypoint = "nose"
when = "enter"
zone = { shape = "circle", cx = 250.0, cy = 270.0, r = 45.0 }
unknown = "false"
actions = [
    { kind = "train", channel = 1, width_us = 1000, period_us = 4000, count = 3 },
    { kind = "mark", code = 5 },
    { kind = "recording", marker = "start" },
]

[[trigger]]
name = "outside"
kind = "not"
of = ["nose_in_zone"]
actions = [{ kind = "recording", marker = "stop" }]
"#;

#[test]
fn trigger_actions_become_commands_and_events_on_the_right_frames() {
    let text = format!("{DEFAULT_TOML}\n{EXTRA}");
    let config = Config::parse(&text, "rig.toml").expect("the extended default parses");
    let tmp = tempfile::tempdir().expect("temp dir");
    let report =
        run_default(Some(tmp.path().join("session")), Some(240), config).expect("the session runs");
    let events: Vec<serde_json::Value> = std::fs::read_to_string(report.dir.join(files::EVENTS))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let frames = |pred: &dyn Fn(&serde_json::Value) -> bool| -> BTreeSet<u64> {
        events
            .iter()
            .filter(|e| pred(e))
            .map(|e| e["frame"].as_u64().unwrap())
            .collect()
    };
    let entries = frames(&|e| {
        e["type"] == "trigger" && e["trigger"] == "nose_in_zone" && e["active"] == true
    });
    let exits = frames(&|e| {
        e["type"] == "trigger" && e["trigger"] == "nose_in_zone" && e["active"] == false
    });
    assert!(
        !entries.is_empty() && !exits.is_empty(),
        "the default path enters and leaves the zone"
    );
    let trains = frames(&|e| {
        e["type"] == "command"
            && e["command"] == "pulse_train"
            && e["channel"] == 1
            && e["count"] == 3
            && e["period_us"] == 4000
    });
    let marks = frames(&|e| e["type"] == "mark" && e["code"] == 5 && e["trigger"] == "entry_train");
    let starts = frames(&|e| {
        e["type"] == "recording" && e["marker"] == "start" && e["trigger"] == "entry_train"
    });
    let stops =
        frames(&|e| e["type"] == "recording" && e["marker"] == "stop" && e["trigger"] == "outside");
    assert_eq!(trains, entries, "one train per entry");
    assert_eq!(marks, entries, "one mark per entry");
    assert_eq!(starts, entries, "a recording start per entry");
    // `outside` activates on every exit, and on the first frame when the nose starts outside.
    let mut want_stops = exits.clone();
    if let Some(first) = events
        .iter()
        .filter(|e| e["type"] == "trigger")
        .map(|e| e["frame"].as_u64().unwrap())
        .min()
        && !entries.contains(&first)
    {
        want_stops.insert(first);
    }
    assert_eq!(stops, want_stops, "a recording stop per exit");
    eprintln!(
        "triggers: {} entries with train + mark + recording start, {} recording stops",
        entries.len(),
        stops.len()
    );
}
