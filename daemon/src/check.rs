//! `reflex check rig.toml`: everything about a rig config that can be known without a camera or hardware,
//! with `file line N:` errors, before a session is started with it.
//!
//! Checked: the TOML itself (syntax, unknown fields, values), every trigger's config, the triggers' keypoint
//! names against the pose model's (its metadata and network interfaces are read, without starting an inference
//! runtime, so a model folder is checked too), the predictor's
//! parameters, and the triggers' output channels against the configured output's channel count where it is
//! known without the device (simulated: configured; Pulse Pal: 4; Harp Behavior: its output lines; Bpod:
//! `soft_codes`; our firmware reports its channels in the handshake, so those are checked when it connects).
//! The protocol script (`[script]`, Lua) is loaded (syntax, the functions it must define, its top level run
//! under its budget) and each of its functions is called on made-up poses ([`check_scripts`]), with
//! `file:line` errors.

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
    /// The protocol script's dry run, one line per call, when there is a script.
    pub script: Option<String>,
    /// One line per further camera (`[[camera]]`): its source and model.
    pub cameras: Vec<String>,
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
        )?;
        for camera in &self.cameras {
            write!(f, "\n  {camera}")?;
        }
        if let Some(script) = &self.script {
            write!(f, "\nscript dry run (made-up poses):")?;
            for line in script.lines() {
                write!(f, "\n  {line}")?;
            }
        }
        Ok(())
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
    let script = check_scripts(&config, &file, &names)?;
    if let (Some(script), Some(channels)) = (&script, channels)
        && let Some(channel) = script
            .calls
            .iter()
            .flat_map(|c| &c.actions)
            .find_map(|a| a.channel().filter(|&c| c >= channels))
    {
        return Err(anyhow!(
            "{file}: [script] {}: the dry run commands channel {channel}, which does not exist ({output} has channels 0..{})",
            config.script.as_ref().map_or("", |s| s.path.as_str()),
            channels.saturating_sub(1)
        ));
    }
    let cameras = check_cameras(&config, &file, &text)?;
    Ok(Checked {
        cameras,
        triggers: config.triggers.len(),
        model,
        keypoints,
        output: match channels {
            Some(n) => format!("{output} ({n} channels)"),
            None => format!("{output} (its channels are checked when it connects)"),
        },
        script: script.map(|s| s.to_string()),
    })
}

/// Each further camera's own model, read as `[model]` is (its metadata and networks, no runtime started);
/// the cameras themselves are opened only by `reflex run`. One line per camera.
fn check_cameras(config: &Config, file: &str, text: &str) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::with_capacity(config.cameras.len());
    for (i, spanned) in config.cameras.iter().enumerate() {
        let camera = spanned.get_ref();
        let label = crate::config::camera_label(i + 1, &camera.name);
        let model = match &camera.model {
            None => format!("the rig's model {}", config.model.path),
            Some(model) => {
                let inspected = inference::inspect(model).with_context(|| {
                    format!(
                        "{file} line {}: {label}: reading its pose model `{}`",
                        line_of(text, spanned.span().start),
                        model.path
                    )
                })?;
                format!(
                    "model {} ({} keypoints)",
                    model.path,
                    inspected.keypoints.len()
                )
            }
        };
        lines.push(format!(
            "{label}: {} ({}), {model}; triggers and the script see camera 0",
            camera.kind,
            camera_what(camera)
        ));
    }
    Ok(lines)
}

/// What a camera's kind opens: its file, device or camera name.
fn camera_what(camera: &crate::config::CameraConfig) -> String {
    match camera.kind.as_str() {
        "video" => camera.video.path.clone(),
        "v4l2" => camera.v4l2.device.clone(),
        "aravis" if camera.aravis.camera.is_empty() => "the first camera found".into(),
        "aravis" => camera.aravis.camera.clone(),
        "synthetic" => format!("seed {}", camera.synthetic.seed),
        other => format!("unknown kind `{other}`"),
    }
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

/// The protocol script's check, when the config has one: loaded as the live loop loads it (syntax, the
/// functions it must define, its top level under its budget), then each function called on made-up poses
/// (every keypoint present and moving, then every keypoint missing; `on_event` once per trigger). Errors
/// name the script's file and line.
pub fn check_scripts(
    config: &Config,
    file: &str,
    keypoints: &[&str],
) -> anyhow::Result<Option<reflex_plugins::script::DryRun>> {
    let Some(sc) = &config.script else {
        return Ok(None);
    };
    let triggers: Vec<&str> = config
        .triggers
        .iter()
        .map(|t| t.get_ref().name.as_str())
        .collect();
    let loaded = crate::script::load(sc, file, keypoints, &triggers)?;
    let path = loaded.path.display().to_string();
    reflex_plugins::script::Script::dry_run(&loaded.text, &path, sc, keypoints, &triggers)
        .map(Some)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("{file}: [script] dry run of {path}"))
}

/// `reflex check`: print the one-line summary, or fail with the error.
pub fn run_cli(args: CheckArgs) -> anyhow::Result<()> {
    let checked = check(&args.config, args.keypoints.as_deref())?;
    println!("{checked}");
    Ok(())
}
