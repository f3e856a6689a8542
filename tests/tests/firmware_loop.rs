//! The whole loop driving reflex's own firmware: `reflex run`'s pipeline with `[output] kind = "serial"` on
//! the firmware running under simavr (firmware-bridge/firmware, through the harness's PTY), in real time.
//!
//! - Device-verified latency: every ack's device timestamp, mapped onto the host clock by clock sync, is
//!   compared with the simulated truth — the harness reports each pin edge with the host time of that
//!   simulated moment.
//! - The device vanishing mid-session (the cable pulled): a clear error naming the port, the loop stops, the
//!   session files stay valid.
#![allow(
    clippy::disallowed_methods,
    reason = "the simulation runs in real time: waits for it are bounded on the wall clock"
)]

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reflex_daemon::config::{Config, OutputKind};
use reflex_daemon::session::{Summary, files};
use reflex_tests::run_session;

#[path = "../../firmware-bridge/tests/firmware/rig.rs"]
#[allow(
    dead_code,
    reason = "the firmware tests' rig, shared: this file uses only its simulation"
)]
mod rig;

use rig::{Sim, SimEvent, built};

/// What the issue asks of device-verified latency on the simulated firmware.
const AGREEMENT_NS: i64 = 200_000;
/// After the harness skipped a hold-off, the simulated clock stepped; the mapping follows at the next
/// exchanges. Edges this soon after a step are not compared.
const AFTER_LAG_NS: u64 = 300_000_000;

/// One simulation at a time, so each keeps up with real time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The embedded default driving the firmware on `pty`.
fn serial_config(pty: &Path) -> Config {
    let mut config = Config::embedded();
    config.output.kind = OutputKind::Serial;
    config.output.serial.port = pty.display().to_string();
    // The harness is up before the port opens, and there is no bootloader to wait for; a starved CI machine
    // may still take a while to answer the first Hello.
    config.output.serial.handshake_timeout_ms = 10_000;
    config
}

/// `events.jsonl`, parsed.
fn events(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(files::EVENTS)).expect("events.jsonl");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad events line {l:?}: {e}")))
        .collect()
}

fn summary(dir: &Path) -> Summary {
    let text = std::fs::read_to_string(dir.join(files::SUMMARY)).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json parses")
}

/// Acks with a device time and its host mapping: (device µs, mapped host ns).
fn acks(events: &[serde_json::Value]) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter(|e| e["type"] == "ack")
        .filter_map(|e| Some((e["device_time_us"].as_u64()?, e["t_ns"].as_u64()?)))
        .collect()
}

#[test]
fn device_verified_latency_agrees_with_the_simulated_truth() {
    let _one = one_at_a_time();
    let mut sim = Sim::start(&built().elf_slow_watchdog);
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("session");
    // 6 s: the nose crosses the default zone's edge several times, and the clock mapping has its rate.
    let report = run_session(Some(out.clone()), Some(720), serial_config(&sim.pty), 1.0)
        .expect("the session runs on the simulated firmware");
    let events = events(&report.dir);
    let acks = acks(&events);
    assert!(
        acks.len() >= 3,
        "too few acks to check ({}): {events:?}",
        acks.len()
    );
    // Every line the harness printed, edges included (it prints an edge before the ack leaves the device).
    sim.finish();
    let edges: Vec<(f64, u64)> = sim
        .events
        .iter()
        .filter_map(|e| match *e {
            SimEvent::Edge { t_us, host_ns, .. } => Some((t_us, host_ns)),
            _ => None,
        })
        .collect();
    let lags: Vec<(u64, u64)> = sim
        .events
        .iter()
        .filter_map(|e| match *e {
            SimEvent::Lag { ns, host_ns, .. } => Some((ns, host_ns)),
            _ => None,
        })
        .collect();
    let settled = |truth_ns: u64| {
        !lags
            .iter()
            .any(|&(_, at)| truth_ns >= at && truth_ns - at < AFTER_LAG_NS)
    };
    // Acks of commands that changed a pin (a level set to what it was, or all-off with everything off,
    // changes none) after the first clock sync. The device clock starts with the firmware's timer, a fixed
    // few hundred µs after simulated time 0, so acks and edges are paired by host time (edges are
    // milliseconds apart; a wrong pairing would show as a large difference).
    let mut diffs = Vec::new();
    let mut offsets_us = Vec::new();
    let mut skipped = 0;
    for &(device_us, mapped_ns) in acks.iter().filter(|a| a.1 != 0) {
        let Some((t_us, truth_ns)) = edges
            .iter()
            .copied()
            .min_by_key(|&(_, h)| h.abs_diff(mapped_ns))
            .filter(|&(_, h)| h.abs_diff(mapped_ns) < 5_000_000)
        else {
            continue;
        };
        offsets_us.push(t_us - device_us as f64);
        if settled(truth_ns) {
            diffs.push(mapped_ns as i64 - truth_ns as i64);
        } else {
            skipped += 1;
        }
    }
    // The pairing is right, and each ack carries its edge's time: simulated time − device time is the same
    // for every pair (to the device's 1 µs resolution).
    let spread = offsets_us.iter().copied().fold(f64::MIN, f64::max)
        - offsets_us.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        spread <= 1.5,
        "acks and edges do not pair up: simulated − device time {offsets_us:?}"
    );
    eprintln!(
        "device-verified latency on the simulated firmware: mapped − true host time of {} pin changes (µs): \
         {:?}; {skipped} skipped after the harness fell behind ({} times: {lags:?})",
        diffs.len(),
        diffs.iter().map(|d| d / 1000).collect::<Vec<_>>(),
        lags.len()
    );
    assert!(
        !diffs.is_empty(),
        "no acked pin change to compare: acks {acks:?}, edges {edges:?}, harness lags {lags:?}"
    );
    let worst = diffs.iter().map(|d| d.abs()).max().unwrap_or(0);
    assert!(
        worst <= AGREEMENT_NS,
        "device time mapped to the host disagrees with the simulated truth by {worst} ns (> {AGREEMENT_NS}): \
         {diffs:?}"
    );
    let s = summary(&report.dir);
    let device_ack = s
        .latency_ns
        .get("device_ack")
        .expect("device_ack in summary.json");
    assert!(
        device_ack.count > 0,
        "no device-verified latency recorded: {device_ack:?}"
    );
}

#[test]
fn a_device_that_vanishes_mid_session_stops_the_loop_with_a_clear_error() {
    let _one = one_at_a_time();
    let mut sim = Sim::start(&built().elf_slow_watchdog);
    let pty = sim.pty.clone();
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("session");
    let (done_tx, done_rx) = mpsc::channel();
    let session = {
        let out = out.clone();
        std::thread::spawn(move || {
            // Long enough never to end by itself before the device is gone.
            let result = run_session(Some(out), Some(120 * 60), serial_config(&pty), 1.0);
            let _ = done_tx.send(());
            result
        })
    };
    // Pull the cable once the loop has driven the device: after the first output change.
    let start = Instant::now();
    while !sim
        .events
        .iter()
        .any(|e| matches!(e, SimEvent::Edge { .. }))
    {
        assert!(
            start.elapsed() < rig::WAIT,
            "the loop never changed an output"
        );
        assert!(
            done_rx.try_recv().is_err(),
            "the session ended before the device vanished"
        );
        sim.collect(Duration::from_millis(10));
    }
    sim.kill();
    let err = session
        .join()
        .expect("the session thread does not panic")
        .expect_err("a vanished device is an error");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&sim.pty.display().to_string()) || msg.contains("output `"),
        "the error names the device: {msg}"
    );
    // Everything recorded up to the error is on disk and valid.
    let dir = out;
    let s = summary(&dir);
    assert!(!s.complete && s.error.is_some(), "{s:?}");
    assert!(s.frames.processed > 0, "{s:?}");
    let events = events(&dir);
    assert!(!events.is_empty());
    let poses = std::fs::read_to_string(dir.join(files::POSES)).expect("poses.csv");
    assert!(poses.ends_with('\n'), "poses.csv ends with a whole line");
    let columns = poses.lines().next().expect("header").split(',').count();
    assert!(
        poses.lines().all(|l| l.split(',').count() == columns),
        "every poses.csv row is whole"
    );
}
