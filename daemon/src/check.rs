//! `reflex check rig.toml`: everything about a rig config that can be known without a camera or hardware,
//! with `file line N:` errors, before a session is started with it.
//!
//! Checked: the TOML itself (syntax, unknown fields, values), every trigger's config, the triggers' keypoint
//! names against the pose model's (its metadata and network interfaces are read, without starting an inference
//! runtime, so a model folder is checked too), the predictor's
//! parameters, and the triggers' output channels against the configured output's channel count where it is
//! known without the device (simulated: configured; Pulse Pal: 4; Harp Behavior: its output lines; Bpod:
//! `soft_codes`; our firmware reports its channels in the handshake, so those are checked when it connects).
//! Scripts (the Lua protocol engine, to come) get their check in [`check_scripts`].

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use reflex_firmware_bridge::harp::HarpConfig;
use reflex_firmware_bridge::pulsepal;

use crate::config::{Config, HarpBoard, OutputConfig, OutputKind, line_of};
use crate::decision::DecisionStep;
use crate::inference;

/// `reflex check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// The rig config to check (TOML).
    pub config: PathBuf,
    /// Check the triggers against these keypoint names (comma-separated, pose order) instead of the
    /// model's: for a config meant for `reflex replay` on another tool's pose CSV.
    #[arg(long, value_delimiter = ',')]
    pub keypoints: Option<Vec<String>>,
}

/// What a config that passed holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Number of `[[trigger]]` tables.
    pub triggers: usize,
    /// `[model] path`, or `--keypoints` when the names were given.
    pub model: String,
    /// The model's keypoint names.
    pub keypoints: Vec<String>,
    /// The output, e.g. `simulated (4 channels)`.
    pub output: String,
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok: {} triggers, model {} ({} keypoints: {}), output {}",
            self.triggers,
            self.model,
            self.keypoints.len(),
            self.keypoints.join(", "),
            self.output
        )
    }
}

/// Check the config at `path`, its triggers against `keypoints` when given, else against the model's.
pub fn check(path: &Path, keypoints: Option<&[String]>) -> anyhow::Result<Checked> {
    let file = path.display().to_string();
    let config = Config::load(path)?;
    let text = std::fs::read_to_string(path).unwrap_or_default();

    config
        .model
        .validate()
        .map_err(|m| anyhow!("{file}: [model] {m}"))?;
    let (model, keypoints) = match keypoints {
        Some(names) => ("--keypoints".to_string(), names.to_vec()),
        None => {
            // The model's metadata and networks' interfaces, without starting an inference runtime.
            let model = inference::inspect(&config.model).with_context(|| {
                format!("{file}: reading the pose model `{}`", config.model.path)
            })?;
            (config.model.path.clone(), model.keypoints)
        }
    };
    let names: Vec<&str> = keypoints.iter().map(String::as_str).collect();
    // The same construction the live loop and `replay` use: keypoint names, trigger configs, predictor.
    DecisionStep::from_config(&config, &text, &file, &names)?;

    let (output, channels) = output_channels(&config.output);
    if let Some(channels) = channels {
        for t in &config.triggers {
            if let Some(channel) = t.get_ref().channels().find(|&c| c >= channels) {
                return Err(anyhow!(
                    "{file} line {}: trigger `{}`: channel {channel} does not exist ({output} has channels 0..{})",
                    line_of(&text, t.span().start),
                    t.get_ref().name,
                    channels.saturating_sub(1)
                ));
            }
        }
    }
    check_scripts(&config, &text, &file)?;
    Ok(Checked {
        triggers: config.triggers.len(),
        model,
        keypoints,
        output: match channels {
            Some(n) => format!("{output} ({n} channels)"),
            None => format!("{output} (its channels are checked when it connects)"),
        },
    })
}

/// The output's name and, where it is known without the device, its channel count.
pub fn output_channels(output: &OutputConfig) -> (String, Option<u8>) {
    match output.kind {
        OutputKind::Simulated => ("simulated".into(), Some(output.simulated.channels)),
        OutputKind::Serial => (format!("serial {}", output.serial.port), None),
        OutputKind::Pulsepal => (
            format!("pulsepal {}", output.pulsepal.port),
            Some(pulsepal::CHANNELS),
        ),
        OutputKind::Harp => {
            let channels = match output.harp.board {
                HarpBoard::Behavior => HarpConfig::behavior().channels,
            };
            (format!("harp {}", output.harp.port), Some(channels))
        }
        OutputKind::Bpod => (
            format!("bpod {}", output.bpod.port),
            Some(output.bpod.soft_codes),
        ),
    }
}

/// The protocol scripts' check. There are none yet: the Lua engine will load each script here (syntax,
/// the functions it must define, the keypoints and channels it names), with `file:line` errors, so `check`
/// covers them like the built-in triggers.
pub fn check_scripts(_config: &Config, _text: &str, _file: &str) -> anyhow::Result<()> {
    Ok(())
}

/// `reflex check`: print the one-line summary, or fail with the error.
pub fn run_cli(args: CheckArgs) -> anyhow::Result<()> {
    let checked = check(&args.config, args.keypoints.as_deref())?;
    println!("{checked}");
    Ok(())
}
