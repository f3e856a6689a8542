//! Helpers shared by the end-to-end test binaries in `tests/` (`e2e`, `firmware_loop`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use reflex_daemon::clock::MonotonicClock;
use reflex_daemon::config::{Config, DEFAULT_TOML};
use reflex_daemon::pipeline::{self, Report, RunOptions};

/// Runs `config` (given as the embedded default's text in the session's `config.toml`) for `frames` frames
/// into `out`, on a clock running `speed` times real time, with notices on stderr and no status line.
pub fn run_session(
    out: Option<PathBuf>,
    frames: Option<u64>,
    config: Config,
    speed: f64,
) -> anyhow::Result<Report> {
    run_session_until(out, frames, config, speed, Arc::new(AtomicBool::new(false)))
}

/// As [`run_session`], and it also ends when `interrupt` is set (as Ctrl-C ends `reflex run`).
pub fn run_session_until(
    out: Option<PathBuf>,
    frames: Option<u64>,
    config: Config,
    speed: f64,
    interrupt: Arc<AtomicBool>,
) -> anyhow::Result<Report> {
    pipeline::run(RunOptions {
        config,
        config_text: DEFAULT_TOML.to_string(),
        config_file: "embedded default".into(),
        out,
        duration_ns: None,
        max_frames: frames,
        clock: Arc::new(MonotonicClock::with_speed(speed)),
        interrupt,
        notice: Box::new(|line| eprintln!("{line}")),
        status: None,
    })
}

/// Runs `config` live into `out` at twice real time until `frames` frames, or until `interrupt` is set.
pub fn run_live(
    config: Config,
    out: &Path,
    frames: Option<u64>,
    interrupt: Arc<AtomicBool>,
) -> anyhow::Result<Report> {
    run_session_until(Some(out.to_path_buf()), frames, config, 2.0, interrupt)
}
