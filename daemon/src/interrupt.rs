//! Ctrl-C for the long-running commands (`run`, `lightloop`): the first press asks the work to stop cleanly,
//! the second exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Context;

/// Installs the process's Ctrl-C handler and returns the flag the first press sets. `stopping` is printed on
/// the first press (what the command does now); the second press exits with status 130. What a session has
/// written is valid at any moment (whole lines, `summary.json` replaced atomically), and a device running our
/// firmware turns its outputs off by itself within its watchdog time.
pub fn on_ctrl_c(stopping: &'static str) -> anyhow::Result<Arc<AtomicBool>> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupt);
    let presses = AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            flag.store(true, Ordering::SeqCst);
            eprintln!("\n{stopping} (Ctrl-C again to exit at once)");
        } else {
            eprintln!("\nexiting now");
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;
    Ok(interrupt)
}
