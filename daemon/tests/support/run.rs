//! Running the `reflex` binary and reading back the session folder it wrote, shared by the daemon's
//! command-line test binaries (each includes this file with `#[path]` and uses what it needs).

#![allow(dead_code)] // reason: each test binary that includes this file uses only some of it

use std::path::Path;
use std::process::{Command, Output};

/// Runs `reflex ARGS` in `cwd` (no backtraces, so a failure's stderr is only its message).
pub fn reflex(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run reflex")
}

/// A session folder's `summary.json`.
pub fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json is valid JSON")
}

/// `(frame, exposure_ns, capture_ns)` of every row of the `frames.csv` at `path` (the loop's or a further
/// camera's: both begin with these columns).
pub fn frame_stamps(path: &Path) -> Vec<(u64, u64, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<u64> = l.split(',').take(3).map(|v| v.parse().unwrap()).collect();
            (f[0], f[1], f[2])
        })
        .collect()
}
