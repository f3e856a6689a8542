//! Aravis's own fake GigE Vision camera, `arv-fake-gv-camera-0.8` (Debian package `aravis-tools`), run as a
//! child process on 127.0.0.1: it speaks the real GVCP (control) and GVSP (stream) protocols over the
//! loopback interface, so reflex talks to it exactly as to a camera on the network. Shared by
//! `tests/aravis.rs` and `benches/capture.rs` (included with `#[path]`).
//!
//! Only one can answer on 127.0.0.1 at a time (they share GVCP's port 3956): callers run them one after
//! another, and [`FakeCamera::start`] refuses to go on when another GigE Vision camera answers there.

use std::fs::File;
use std::process::{Child, Command, Stdio};

use reflex_daemon::camera::aravis;

/// The fake camera's program.
pub const PROGRAM: &str = "arv-fake-gv-camera-0.8";
/// Where it listens.
pub const ADDRESS: &str = "127.0.0.1";
/// Discoveries (about a second each) to wait for a started camera to answer.
const DISCOVERIES: usize = 15;

/// Why the fake camera cannot run here: libaravis missing, or the program not on the PATH.
pub fn unavailable() -> Option<String> {
    if let Err(e) = aravis::available() {
        return Some(e.to_string());
    }
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(PROGRAM).is_file()));
    (!found).then(|| format!("{PROGRAM} not found (Debian/Ubuntu: apt install aravis-tools)"))
}

/// A running fake camera; killed on drop.
pub struct FakeCamera {
    child: Child,
    /// Its device id as Aravis lists it: `Aravis-Fake-<serial>`.
    pub id: String,
    log: tempfile::NamedTempFile,
}

impl FakeCamera {
    /// Starts one with `serial` and waits until Aravis's discovery lists it (a bounded number of
    /// discoveries, each waiting for answers; no fixed sleep).
    pub fn start(serial: &str) -> Result<Self, String> {
        let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let stderr = File::create(log.path()).map_err(|e| e.to_string())?;
        let child = Command::new(PROGRAM)
            .args(["-i", ADDRESS, "-s", serial])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {PROGRAM}: {e}"))?;
        let mut camera = Self {
            child,
            id: format!("Aravis-Fake-{serial}"),
            log,
        };
        for _ in 0..DISCOVERIES {
            if let Ok(Some(status)) = camera.child.try_wait() {
                return Err(format!("{PROGRAM} exited ({status}): {}", camera.log()));
            }
            let devices = aravis::list_devices().map_err(|e| e.to_string())?;
            if devices.iter().any(|d| d.id == camera.id) {
                let others: Vec<&str> = devices
                    .iter()
                    .filter(|d| d.address == ADDRESS && d.id != camera.id)
                    .map(|d| d.id.as_str())
                    .collect();
                if !others.is_empty() {
                    return Err(format!(
                        "another camera answers on {ADDRESS} too ({}): stop it first",
                        others.join(", ")
                    ));
                }
                return Ok(camera);
            }
        }
        Err(format!(
            "{PROGRAM} did not answer {DISCOVERIES} discoveries: {}",
            camera.log()
        ))
    }

    /// What it wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Kills it now (as pulling the cable would) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FakeCamera {
    fn drop(&mut self) {
        self.kill();
    }
}
