//! The protocol script (`[script]`, Lua 5.4) in the daemon: finding and loading its file, and hot reload.
//!
//! The engine itself (sandbox, instruction budget, memory arena, the Lua API) is `reflex_plugins::script`;
//! the decision step ([`crate::decision`]) calls it on every frame, live and in `reflex replay` alike.
//!
//! **Hot reload.** While a session runs, a watcher thread ([`spawn_watcher`]; not a loop thread) reads the
//! script file a few times per second. When its text changed, the new text is checked the way
//! `reflex check` checks it (loaded, and a dry call of every function on made-up poses) and, if it passes,
//! loaded again into a fresh Lua state, which goes to the actuation thread through a one-slot SPSC ring.
//! Between two frames the actuation thread swaps it in ([`crate::decision::DecisionStep::replace_script`]):
//! the old script's `on_stop` runs and its channels go low, the new one's `on_start` runs on the next frame,
//! and the old state comes back through a second ring so that freeing it happens here, off the loop. A file
//! that fails its check is refused with its error; the running script goes on. Every accepted version is
//! copied into the session folder (`script/<name>.lua`, then `script/<name>.v1.lua`, …) and every reload, accepted or not,
//! is an event in `events.jsonl`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use anyhow::{Context, anyhow};
use reflex_plugins::script::{Script, ScriptConfig};

use crate::pipeline::Shared;

/// How often the watcher reads the script file (ns).
pub const WATCH_EVERY_NS: u64 = 250_000_000;

/// A script loaded from its file.
pub struct Loaded {
    /// The engine, ready for its first frame.
    pub script: Script,
    /// Where its file is.
    pub path: PathBuf,
    /// The text it was loaded from.
    pub text: String,
}

/// The script file of `config`: its `path` as written when absolute, else relative to the folder of the
/// config file `config_file` (the current folder for the embedded default).
pub fn path(config: &ScriptConfig, config_file: &str) -> PathBuf {
    let path = Path::new(&config.path);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match Path::new(config_file).parent() {
        Some(dir) if !dir.as_os_str().is_empty() && Path::new(config_file).is_file() => {
            dir.join(path)
        }
        _ => path.to_path_buf(),
    }
}

/// Read and load the script of `config` for a model with `keypoints` and the built-in triggers
/// `trigger_names`. Errors name the config file's `[script] path` when the file cannot be read, and the
/// script's file and line when it does not load.
pub fn load(
    config: &ScriptConfig,
    config_file: &str,
    keypoints: &[&str],
    trigger_names: &[&str],
) -> anyhow::Result<Loaded> {
    let path = path(config, config_file);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow!(
            "{config_file}: [script] path `{}`: cannot read {}: {e}",
            config.path,
            path.display()
        )
    })?;
    let file = path.display().to_string();
    let script = Script::load(&text, &file, config, keypoints, trigger_names)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("loading the protocol script of {config_file}"))?;
    Ok(Loaded { script, path, text })
}

/// What the watcher hands to the actuation thread.
pub enum Update {
    /// A new version passed its check: swap it in between two frames.
    Accepted {
        /// The new script, loaded.
        script: Box<Script>,
        /// Its version (1 for the first reload).
        version: u32,
    },
    /// A changed file failed its check (the error is printed by the watcher); record the refusal.
    Rejected {
        /// The version the refused file would have been.
        version: u32,
    },
}

/// Reads the script file and decides whether a changed text may replace the running script.
pub struct Watcher {
    config: ScriptConfig,
    path: PathBuf,
    file: String,
    keypoints: Vec<String>,
    trigger_names: Vec<String>,
    /// The text last seen (accepted or not), so one change is checked once.
    last: String,
    /// Versions accepted so far.
    version: u32,
}

/// The outcome of one [`Watcher::poll`].
pub enum Polled {
    /// The file is unchanged (or unreadable for the moment, e.g. half-written by an editor).
    Unchanged,
    /// A new version, checked and loaded.
    Accepted {
        /// The script.
        script: Box<Script>,
        /// Its text.
        text: String,
        /// Its version.
        version: u32,
    },
    /// The changed text failed its check.
    Rejected {
        /// The version it would have been.
        version: u32,
        /// Why, with the script's file and line.
        error: String,
    },
}

impl Watcher {
    /// A watcher of the script file `path`, running as loaded from `text` with `config`, for these
    /// keypoints and built-in triggers.
    pub fn new(
        config: &ScriptConfig,
        path: &Path,
        text: &str,
        keypoints: &[&str],
        trigger_names: &[&str],
    ) -> Self {
        Self {
            config: config.clone(),
            path: path.to_path_buf(),
            file: path.display().to_string(),
            keypoints: keypoints.iter().map(|s| s.to_string()).collect(),
            trigger_names: trigger_names.iter().map(|s| s.to_string()).collect(),
            last: text.to_string(),
            version: 0,
        }
    }

    /// Read the file once: a changed text is checked (load and a dry call of every function, as
    /// `reflex check` does) and, when it passes, loaded fresh for the loop.
    pub fn poll(&mut self) -> Polled {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Polled::Unchanged;
        };
        if text == self.last {
            return Polled::Unchanged;
        }
        self.last.clone_from(&text);
        let keypoints: Vec<&str> = self.keypoints.iter().map(String::as_str).collect();
        let triggers: Vec<&str> = self.trigger_names.iter().map(String::as_str).collect();
        let checked = Script::dry_run(&text, &self.file, &self.config, &keypoints, &triggers)
            .and_then(|_| Script::load(&text, &self.file, &self.config, &keypoints, &triggers));
        match checked {
            Ok(script) => {
                self.version += 1;
                Polled::Accepted {
                    script: Box::new(script),
                    text,
                    version: self.version,
                }
            }
            Err(e) => Polled::Rejected {
                version: self.version + 1,
                error: e.to_string(),
            },
        }
    }
}

/// The session's copy of version `version` of the script file `original`, in the session folder `dir`:
/// `script/<name>.lua` for the one the session started with, then `script/<name>.v1.lua`, …; the name stays
/// the original's, so events name the script the same live and in a replay of the session.
pub fn session_copy(dir: &Path, original: &Path, version: u32) -> PathBuf {
    let name = original
        .file_name()
        .map_or_else(|| "script.lua".into(), |n| n.to_string_lossy().into_owned());
    let name = if version == 0 {
        name
    } else {
        let stem = Path::new(&name)
            .file_stem()
            .map_or_else(|| name.clone(), |s| s.to_string_lossy().into_owned());
        format!("{stem}.v{version}.lua")
    };
    dir.join("script").join(name)
}

/// Run `watcher` on its own thread until the session stops: new versions go to the actuation thread through
/// `updates`; the scripts it retires come back through `retired` and are freed here. What it accepts and
/// refuses is told to the user through [`Shared::notify`].
pub fn spawn_watcher(
    mut watcher: Watcher,
    mut updates: rtrb::Producer<Update>,
    mut retired: rtrb::Consumer<Box<Script>>,
    shared: Arc<Shared>,
    session_dir: PathBuf,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("reflex-script-watch".into())
        .spawn(move || {
            let clock = Arc::clone(&shared.clock);
            let mut pending: Option<Update> = None;
            let mut unsent: Vec<String> = Vec::new();
            while !shared.stop.load(Ordering::Acquire) {
                while let Ok(old) = retired.pop() {
                    drop(old);
                }
                if pending.is_none() {
                    pending = match watcher.poll() {
                        Polled::Unchanged => None,
                        Polled::Accepted {
                            script,
                            text,
                            version,
                        } => {
                            let copy = session_copy(&session_dir, &watcher.path, version);
                            if let Err(e) = std::fs::write(&copy, text) {
                                unsent.push(format!("script reload: writing {}: {e}", copy.display()));
                            }
                            unsent.push(format!(
                                "script reload: {} version {version} accepted; it replaces the running one between two frames",
                                watcher.file
                            ));
                            Some(Update::Accepted { script, version })
                        }
                        Polled::Rejected { version, error } => {
                            unsent.push(format!(
                                "script reload refused, the running script goes on: {error}"
                            ));
                            Some(Update::Rejected { version })
                        }
                    };
                }
                if let Some(update) = pending.take()
                    && let Err(rtrb::PushError::Full(update)) = updates.push(update)
                {
                    pending = Some(update);
                }
                flush_notices(&shared, &mut unsent);
                clock.sleep_until(clock.now_ns() + WATCH_EVERY_NS);
            }
            while let Ok(old) = retired.pop() {
                drop(old);
            }
            flush_notices(&shared, &mut unsent);
        })
}

/// Hand the watcher's notices to the caller's thread (those it could not take yet stay for next time).
fn flush_notices(shared: &Shared, unsent: &mut Vec<String>) {
    let lines = std::mem::take(unsent);
    for line in lines {
        if let Err(line) = shared.notify(line) {
            unsent.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_path_is_relative_to_the_config_file() {
        let tmp = tempfile::tempdir().unwrap();
        let rig = tmp.path().join("rig.toml");
        std::fs::write(&rig, "").unwrap();
        let config = ScriptConfig {
            path: "protocols/catch.lua".into(),
            ..ScriptConfig::default()
        };
        assert_eq!(
            path(&config, &rig.display().to_string()),
            tmp.path().join("protocols/catch.lua")
        );
        assert_eq!(
            path(&config, "embedded default"),
            PathBuf::from("protocols/catch.lua")
        );
        let abs = ScriptConfig {
            path: "/srv/p.lua".into(),
            ..ScriptConfig::default()
        };
        assert_eq!(
            path(&abs, &rig.display().to_string()),
            PathBuf::from("/srv/p.lua")
        );
    }
}
