//! The rig configuration: one TOML file, every key optional, unknown keys refused with their line.
//!
//! `daemon/default.toml` is the embedded default (`reflex run --print-default-config`). A user's file is read
//! on its own: a section left out takes the embedded default's values.

use std::path::Path;

use reflex_plugins::predict::{KalmanConfig, RobustConfig};
use reflex_plugins::trigger::{TriggerConfig, TriggerSet};
use serde::{Deserialize, Serialize};

use crate::camera::aravis::AravisConfig;
use crate::camera::synthetic::SyntheticConfig;
use crate::camera::v4l2_stream::V4l2Config;
use crate::camera::video::VideoConfig;
use crate::inference::ModelConfig;
use crate::realtime::RealtimeConfig;

/// The embedded default configuration, as shipped (with comments).
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// A whole rig.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where frames come from.
    #[serde(default)]
    pub source: SourceConfig,
    /// The pose network.
    #[serde(default)]
    pub model: ModelConfig,
    /// Forward prediction.
    #[serde(default)]
    pub predictor: PredictorConfig,
    /// The built-in triggers, `[[trigger]]` tables (kind zone, speed, angle, distance, likelihood, all, any,
    /// not, sequence); spanned so errors name their line.
    #[serde(default, rename = "trigger")]
    pub triggers: Vec<toml::Spanned<TriggerConfig>>,
    /// The output device.
    #[serde(default)]
    pub output: OutputConfig,
    /// Real-time scheduling of the loop threads.
    #[serde(default)]
    pub realtime: RealtimeConfig,
    /// Session files.
    #[serde(default)]
    pub session: SessionConfig,
    /// The live Prometheus `/metrics` endpoint (off unless `listen` is set).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The protocol script (Lua), run after the built-in triggers on every frame; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<reflex_plugins::script::ScriptConfig>,
    /// Further cameras beside `[source]` (camera 0), `[[camera]]` tables: cameras 1, 2, … in file order. Each
    /// runs on its own capture thread; its poses are estimated and recorded, on the one host clock. Spanned so
    /// errors name their line.
    #[serde(default, rename = "camera", skip_serializing_if = "Vec::is_empty")]
    pub cameras: Vec<toml::Spanned<CameraConfig>>,
}

/// `[[camera]]`: one further camera. Shaped like `[source]` (`kind` and the source's own table), with a
/// label and, optionally, its own pose model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// A label for messages and `summary.json`, e.g. `side`; empty: `cameraN`.
    pub name: String,
    /// `synthetic`, `video`, `aravis` or `v4l2`, as `[source] kind`.
    pub kind: String,
    /// `[camera.synthetic]`.
    pub synthetic: SyntheticConfig,
    /// `[camera.video]`.
    pub video: VideoConfig,
    /// `[camera.aravis]`.
    pub aravis: AravisConfig,
    /// `[camera.v4l2]`.
    pub v4l2: V4l2Config,
    /// `[camera.model]`: this camera's own pose model (a whole `[model]` section); left out, it uses `[model]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelConfig>,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self::from_source(SourceConfig::default())
    }
}

impl CameraConfig {
    /// A camera with `source`'s kind and settings, no label and the rig's `[model]`.
    pub fn from_source(source: SourceConfig) -> Self {
        let SourceConfig {
            kind,
            synthetic,
            video,
            aravis,
            v4l2,
        } = source;
        Self {
            name: String::new(),
            kind,
            synthetic,
            video,
            aravis,
            v4l2,
            model: None,
        }
    }

    /// Its settings, checked as `[source]` and `[model]` are; messages name `[camera.…]` sections.
    fn validate(&self) -> Result<(), String> {
        if !["synthetic", "video", "aravis", "v4l2"].contains(&self.kind.as_str()) {
            return Err(format!(
                "kind `{}` is not a frame source (synthetic, video, aravis or v4l2)",
                self.kind
            ));
        }
        self.v4l2
            .validate()
            .map_err(|e| format!("[camera.v4l2] {e}"))?;
        self.aravis
            .validate()
            .map_err(|e| for_camera(&e.to_string()))?;
        if let Some(model) = &self.model {
            model
                .validate()
                .map_err(|e| format!("[camera.model] {e}"))?;
        }
        Ok(())
    }

    /// Its source settings, as a `[source]` section.
    pub fn source(&self) -> SourceConfig {
        SourceConfig {
            kind: self.kind.clone(),
            synthetic: self.synthetic.clone(),
            video: self.video.clone(),
            aravis: self.aravis.clone(),
            v4l2: self.v4l2.clone(),
        }
    }
}

/// `[source]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `synthetic`, `video`, `aravis` or `v4l2`; `--source` on the command line overrides it.
    pub kind: String,
    /// Settings of the synthetic camera.
    pub synthetic: SyntheticConfig,
    /// The video file replayed as a camera (`kind = "video"`).
    pub video: VideoConfig,
    /// A GenICam camera through Aravis (`kind = "aravis"`).
    pub aravis: AravisConfig,
    /// A V4L2 camera (`kind = "v4l2"`).
    pub v4l2: V4l2Config,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            kind: "synthetic".into(),
            synthetic: SyntheticConfig::default(),
            video: VideoConfig::default(),
            aravis: AravisConfig::default(),
            v4l2: V4l2Config::default(),
        }
    }
}

/// Which forward predictor runs on the actuation thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PredictorKind {
    /// DeepLabCut-Live's constant-acceleration Kalman filter.
    #[default]
    Kalman,
    /// reflex's robust predictor: constant velocity with likelihood weighting, jump and identity-swap
    /// rejection (see `reflex eval predict` for how it compares on real data).
    Robust,
    /// No prediction: triggers see the last measurement.
    None,
}

/// `[predictor]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PredictorConfig {
    /// Which predictor.
    pub kind: PredictorKind,
    /// Its parameters (DeepLabCut-Live's names and defaults); `forward` and `adapt` also set the horizon
    /// for every predictor.
    pub kalman: KalmanConfig,
    /// Parameters of the robust predictor.
    pub robust: RobustConfig,
}

/// Which output device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// The in-process simulated device.
    #[default]
    Simulated,
    /// reflex's own firmware (firmware-bridge/firmware/) on a serial port: `[output.serial]`.
    Serial,
    /// A Sanworks Pulse Pal 2 on a serial port: `[output.pulsepal]`.
    Pulsepal,
    /// A Harp device (the Harp Behavior board's digital outputs) on a serial port: `[output.harp]`.
    Harp,
    /// A Bpod state machine receiving soft codes on a serial port: `[output.bpod]`.
    Bpod,
}

/// `[output]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Which device.
    pub kind: OutputKind,
    /// Heartbeat period (ms) that keeps the device's watchdog fed; must be below its watchdog time.
    pub heartbeat_ms: u32,
    /// Settings of the simulated device.
    pub simulated: SimulatedOutputConfig,
    /// Settings of a serial device running reflex's firmware.
    pub serial: SerialOutputConfig,
    /// Settings of a Pulse Pal 2.
    pub pulsepal: PulsePalOutputConfig,
    /// Settings of a Harp device.
    pub harp: HarpOutputConfig,
    /// Settings of a Bpod state machine.
    pub bpod: BpodOutputConfig,
}

/// `[output.pulsepal]`: channels 0..3 are the Pulse Pal's output channels 1..4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PulsePalOutputConfig {
    /// The serial port, e.g. `/dev/ttyACM0`.
    pub port: String,
    /// Line speed (USB CDC: any).
    pub baud_rate: u32,
    /// Voltage of "high" (a pulse's phase 1, a level set high), mV, −10000…10000.
    pub high_level_mv: i16,
}

impl Default for PulsePalOutputConfig {
    fn default() -> Self {
        Self {
            port: String::new(),
            baud_rate: 115_200,
            high_level_mv: 5_000,
        }
    }
}

/// `[output.harp]`: channel n is bit n of the board's digital output register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HarpOutputConfig {
    /// The serial port, e.g. `/dev/ttyUSB0`.
    pub port: String,
    /// Line speed (Harp devices: 1000000).
    pub baud_rate: u32,
    /// Which board: `behavior` (the Harp Behavior board).
    pub board: HarpBoard,
}

/// A Harp board whose output registers reflex knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HarpBoard {
    /// The Harp Behavior board: 14 digital output lines, timed pulses.
    #[default]
    Behavior,
}

impl Default for HarpOutputConfig {
    fn default() -> Self {
        Self {
            port: String::new(),
            baud_rate: 1_000_000,
            board: HarpBoard::Behavior,
        }
    }
}

/// `[output.bpod]`: channel n sends soft code n to the state machine, whose protocol decides what it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BpodOutputConfig {
    /// The serial port, e.g. `/dev/ttyACM1`.
    pub port: String,
    /// Line speed (USB CDC: any).
    pub baud_rate: u32,
    /// `app`: the state machine's APP port (one byte per soft code, state machine 2+); `primary`: its main
    /// port (handshake, then `~` and the code), which no other program may hold.
    pub interface: BpodInterface,
    /// Soft codes the state-machine protocol handles: channels are 0..soft_codes.
    pub soft_codes: u8,
    /// Soft code sent to turn everything off (on stop and errors); absent: none (the protocol must stop
    /// its outputs itself).
    pub all_off_soft_code: Option<u8>,
}

/// Which of the Bpod state machine's serial ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BpodInterface {
    /// The APP port.
    #[default]
    App,
    /// The main port.
    Primary,
}

impl Default for BpodOutputConfig {
    fn default() -> Self {
        Self {
            port: String::new(),
            baud_rate: 115_200,
            interface: BpodInterface::App,
            soft_codes: 15,
            all_off_soft_code: None,
        }
    }
}

/// `[output.serial]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SerialOutputConfig {
    /// The serial port, e.g. `/dev/ttyACM0` (list them with `reflex devices`).
    pub port: String,
    /// Line speed (the firmware's default is 500000).
    pub baud_rate: u32,
    /// How long to wait for the device's handshake (ms); an Arduino resets when the port opens.
    pub handshake_timeout_ms: u64,
}

impl Default for SerialOutputConfig {
    fn default() -> Self {
        Self {
            port: String::new(),
            baud_rate: 500_000,
            handshake_timeout_ms: 3000,
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            kind: OutputKind::Simulated,
            heartbeat_ms: 10,
            simulated: SimulatedOutputConfig::default(),
            serial: SerialOutputConfig::default(),
            pulsepal: PulsePalOutputConfig::default(),
            harp: HarpOutputConfig::default(),
            bpod: BpodOutputConfig::default(),
        }
    }
}

/// `[output.simulated]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedOutputConfig {
    /// Output channels.
    pub channels: u8,
    /// Device time (µs) from receiving a command to the pin change.
    pub actuation_delay_us: u32,
    /// Outputs go off after this long (ms) without a valid frame; 0 disables the watchdog.
    pub watchdog_ms: u32,
}

impl Default for SimulatedOutputConfig {
    fn default() -> Self {
        Self {
            channels: 4,
            actuation_delay_us: 20,
            watchdog_ms: 50,
        }
    }
}

/// `[session]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Parent folder of the per-run session folders.
    pub dir: String,
    /// Terminal status line refresh (ms); 0 turns it off.
    pub status_interval_ms: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            dir: "sessions".into(),
            status_interval_ms: 500,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `HOST:PORT` to serve Prometheus metrics on (`http://HOST:PORT/metrics`) while a session runs; unset:
    /// no endpoint. `reflex run --metrics ADDR` overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// A config error that names the file, and the line when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The config file (or `embedded default`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl Config {
    /// The embedded default.
    pub fn embedded() -> Self {
        Self::parse(DEFAULT_TOML, "embedded default")
            .expect("the embedded default config is valid (tested)")
    }

    /// Parse a config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim().to_string(),
        })?;
        config.validate(text, file)?;
        Ok(config)
    }

    /// Read and parse a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    fn validate(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let err = |line: Option<usize>, message: String| ConfigError {
            file: file.to_string(),
            line,
            message,
        };
        if self.output.heartbeat_ms == 0 {
            return Err(err(None, "output.heartbeat_ms must be > 0".into()));
        }
        let wd = self.output.simulated.watchdog_ms;
        if wd != 0 && self.output.heartbeat_ms >= wd {
            return Err(err(
                None,
                format!(
                    "output.heartbeat_ms ({}) must be below output.simulated.watchdog_ms ({wd})",
                    self.output.heartbeat_ms
                ),
            ));
        }
        self.model
            .validate()
            .map_err(|e| err(None, format!("model.{e}")))?;
        self.realtime.validate().map_err(|e| err(None, e))?;
        self.source
            .v4l2
            .validate()
            .map_err(|e| err(None, format!("source.v4l2.{e}")))?;
        self.source
            .aravis
            .validate()
            .map_err(|e| err(None, e.to_string()))?;
        for (i, camera) in self.cameras.iter().enumerate() {
            let line = Some(line_of(text, camera.span().start));
            let label = camera_label(i + 1, &camera.get_ref().name);
            camera
                .get_ref()
                .validate()
                .map_err(|e| err(line, format!("{label}: {e}")))?;
        }
        if self.cameras.len() > MAX_CAMERAS - 1 {
            let line = self
                .cameras
                .get(MAX_CAMERAS - 1)
                .map(|c| line_of(text, c.span().start));
            return Err(err(
                line,
                format!(
                    "{} [[camera]] tables: a rig has at most {MAX_CAMERAS} cameras, [source] included",
                    self.cameras.len()
                ),
            ));
        }
        if let Some(script) = &self.script {
            let line = text.find("[script]").map(|at| line_of(text, at));
            script.validate().map_err(|e| err(line, e))?;
        }
        if let Some(listen) = &self.metrics.listen {
            crate::metrics::validate_listen(listen)
                .map_err(|e| err(None, format!("metrics.listen: {e}")))?;
        }
        let (section, port) = match self.output.kind {
            OutputKind::Simulated => ("", "-"),
            OutputKind::Serial => ("serial", self.output.serial.port.as_str()),
            OutputKind::Pulsepal => ("pulsepal", self.output.pulsepal.port.as_str()),
            OutputKind::Harp => ("harp", self.output.harp.port.as_str()),
            OutputKind::Bpod => ("bpod", self.output.bpod.port.as_str()),
        };
        if port.is_empty() {
            return Err(err(
                None,
                format!(
                    "output.{section}.port is empty: name the serial port of the device (`reflex devices` lists them)"
                ),
            ));
        }
        self.predictor
            .robust
            .validate()
            .map_err(|e| err(None, format!("predictor.robust: {e}")))?;
        self.predictor
            .kalman
            .validate()
            .map_err(|e| err(None, format!("predictor.kalman: {e}")))?;
        let mut names = std::collections::HashSet::new();
        for t in &self.triggers {
            let line = Some(line_of(text, t.span().start));
            let cfg = t.get_ref();
            if !names.insert(cfg.name.as_str()) {
                return Err(err(
                    line,
                    format!("trigger `{}` is defined twice", cfg.name),
                ));
            }
            if self.output.kind == OutputKind::Simulated
                && let Some(channel) = cfg
                    .channels()
                    .find(|&c| c >= self.output.simulated.channels)
            {
                return Err(err(
                    line,
                    format!(
                        "trigger `{}`: channel {channel} does not exist (the output has channels 0..{})",
                        cfg.name,
                        self.output.simulated.channels.saturating_sub(1)
                    ),
                ));
            }
        }
        // Everything about the triggers but their keypoint names (those need the model).
        let trigger_configs: Vec<TriggerConfig> =
            self.triggers.iter().map(|t| t.get_ref().clone()).collect();
        TriggerSet::validate(&trigger_configs).map_err(|e| {
            let line = self
                .triggers
                .get(e.index)
                .map(|t| line_of(text, t.span().start));
            err(line, e.to_string())
        })?;
        Ok(())
    }

    /// The effective config as TOML (what a session records in its `config.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# could not serialise the config: {e}\n"))
    }
}

/// Cameras one rig may have, `[source]` included (each has a capture and an inference thread of its own).
pub const MAX_CAMERAS: usize = 16;

/// How messages name camera `id`: `camera 1` or `camera 1 (side)`.
pub fn camera_label(id: usize, name: &str) -> String {
    if name.is_empty() {
        format!("camera {id}")
    } else {
        format!("camera {id} ({name})")
    }
}

/// A message about a `[source.…]` table or a `source.…` key, reworded for the same of a `[[camera]]`.
pub fn for_camera(message: &str) -> String {
    let message = message
        .replace("[source.", "[camera.")
        .replace(" source.", " camera.");
    match message.strip_prefix("source.") {
        Some(rest) => format!("camera.{rest}"),
        None => message,
    }
}

/// 1-based line number of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_messages_are_reworded_for_a_camera() {
        assert_eq!(
            for_camera("source.synthetic.led: channel 9 does not exist"),
            "camera.synthetic.led: channel 9 does not exist"
        );
        assert_eq!(
            for_camera(
                "aravis camera `x`: [source.aravis] pixel_format: raise source.aravis.buffers"
            ),
            "aravis camera `x`: [camera.aravis] pixel_format: raise camera.aravis.buffers"
        );
        assert_eq!(for_camera("video `source.mp4`"), "video `source.mp4`");
    }

    #[test]
    fn further_cameras_are_read_in_order_with_their_lines() {
        let text = "[source]\nkind = \"synthetic\"\n\n[[camera]]\nname = \"side\"\nkind = \"video\"\n[camera.video]\npath = \"side.mp4\"\nfps = \"max\"\n[camera.model]\npath = \"dlc_side\"\n\n[[camera]]\nkind = \"v4l2\"\n[camera.v4l2]\ndevice = \"/dev/video2\"\n";
        let c = Config::parse(text, "rig.toml").unwrap();
        assert_eq!(c.cameras.len(), 2);
        let side = c.cameras[0].get_ref();
        assert_eq!((side.name.as_str(), side.kind.as_str()), ("side", "video"));
        assert_eq!(side.video.path, "side.mp4");
        assert_eq!(side.video.fps, crate::camera::video::VideoRate::Max);
        assert_eq!(side.model.as_ref().unwrap().path, "dlc_side");
        let top = c.cameras[1].get_ref();
        assert_eq!(top.source().v4l2.device, "/dev/video2");
        assert!(top.model.is_none(), "no [camera.model]: the rig's [model]");
        assert_eq!(line_of(text, c.cameras[1].span().start), 13);
        // What a session records reads back the same.
        let again = Config::parse(&c.to_toml(), "config.toml").unwrap();
        assert_eq!(again.cameras.len(), 2);
        assert_eq!(again.cameras[0].get_ref(), side);
        assert_eq!(again.cameras[1].get_ref(), top);
        assert!(
            !Config::embedded().to_toml().contains("[[camera]]"),
            "a one-camera rig records no camera tables"
        );
    }

    #[test]
    fn a_further_cameras_mistake_names_its_line_and_table() {
        let e = Config::parse(
            "[[camera]]\nkind = \"synthetic\"\n\n[[camera]]\nkind = \"aravis\"\n[camera.aravis]\nbuffers = 1\n",
            "rig.toml",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rig.toml line 4: camera 2: [camera.aravis] buffers: 1 is not in 2…64"
        );
        let e = Config::parse("[[camera]]\nkind = \"usb\"\n", "rig.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "rig.toml line 1: camera 1: kind `usb` is not a frame source (synthetic, video, aravis or v4l2)"
        );
        let e = Config::parse("[[camera]]\nname = \"side\"\nfsp = 30\n", "rig.toml").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("unknown field `fsp`"), "{e}");
        let e = Config::parse(
            "[[camera]]\nname = \"side\"\n[camera.model]\nthreads = 0\n",
            "rig.toml",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rig.toml line 1: camera 1 (side): [camera.model] threads must be between 1 and 256, got 0"
        );
        let many = "[[camera]]\n".repeat(MAX_CAMERAS);
        let e = Config::parse(&many, "rig.toml").unwrap_err();
        assert_eq!(e.line, Some(MAX_CAMERAS), "{e}");
        assert!(e.message.contains("at most 16 cameras"), "{e}");
    }

    #[test]
    fn script_limits_are_checked_when_the_config_is_read() {
        let e = Config::parse(
            "[output]\nheartbeat_ms = 10\n\n[script]\npath = \"p.lua\"\nmemory_mb = 0\n",
            "rig.toml",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rig.toml line 4: [script] memory_mb must be from 1 to 1024, got 0"
        );
        let e = Config::parse("[script]\npath = \"p.lua\"\nbudget = 0\n", "rig.toml").unwrap_err();
        assert!(e.to_string().contains("budget must be at least 1"), "{e}");
        assert!(Config::parse("[script]\npath = \"p.lua\"\n", "rig.toml").is_ok());
    }

    #[test]
    fn embedded_default_parses_and_sections_match_rust_defaults() {
        let c = Config::embedded();
        assert_eq!(c.source, SourceConfig::default());
        assert_eq!(c.model, ModelConfig::default());
        assert_eq!(c.predictor, PredictorConfig::default());
        assert_eq!(c.output, OutputConfig::default());
        assert_eq!(c.session, SessionConfig::default());
        assert_eq!(c.realtime, RealtimeConfig::default());
        assert_eq!(c.metrics, MetricsConfig::default());
        assert_eq!(c.triggers.len(), 1);
        assert_eq!(c.triggers[0].get_ref().keypoint.as_deref(), Some("nose"));
    }

    #[test]
    fn aravis_settings_are_checked_when_the_config_is_read() {
        let e = Config::parse("[source.aravis]\nbuffers = 1\n", "rig.toml").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("[source.aravis] buffers: 1 is not in 2…64"),
            "{e}"
        );
        let e = Config::parse("[source.aravis]\nexposure = 5\n", "rig.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().contains("exposure"), "{e}");
        let text = "[source]\nkind = \"aravis\"\n[source.aravis]\ncamera = \"10.0.0.20\"\nexposure_us = 500\n";
        let aravis = Config::parse(text, "rig.toml").unwrap().source.aravis;
        assert_eq!(aravis.camera, "10.0.0.20");
        assert_eq!(aravis.exposure_us, Some(500.0));
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let text = "[source]\nkind = \"synthetic\"\n\n[source.synthetic]\nfsp = 30\n";
        let e = Config::parse(text, "rig.toml").unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("rig.toml line 5:") && msg.contains("fsp"),
            "{msg}"
        );
    }

    #[test]
    fn bad_value_names_the_line() {
        let e = Config::parse("[model]\nthreads = \"two\"\n", "rig.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = Config::parse("[model]\nbackend = \"cuda\"\n", "rig.toml").unwrap_err();
        assert!(e.to_string().contains("cuda"), "{e}");
    }

    #[test]
    fn semantic_errors_name_trigger_and_line() {
        let text = "[[trigger]]\nname = \"a\"\nkeypoint = \"nose\"\nzone = { shape = \"circle\", cx = 1.0, cy = 1.0, r = 2.0 }\nchannel = 9\n";
        let e = Config::parse(text, "rig.toml").unwrap_err();
        assert!(e.to_string().contains("trigger `a`: channel 9"), "{e}");
        assert_eq!(e.line, Some(1));
        let e = Config::parse("[output]\nheartbeat_ms = 80\n", "rig.toml").unwrap_err();
        assert!(e.to_string().contains("heartbeat_ms"), "{e}");
    }

    #[test]
    fn trigger_kinds_parse_and_their_errors_name_trigger_field_and_line() {
        let zone = "[[trigger]]\nname = \"a\"\nkeypoint = \"nose\"\nzone = { shape = \"circle\", cx = 1.0, cy = 1.0, r = 2.0 }\n";
        let text = format!(
            "{zone}\n[[trigger]]\nname = \"fast\"\nkind = \"speed\"\nkeypoint = \"nose\"\nabove = 30.0\npx_per_cm = 10.0\nactions = [{{ kind = \"train\", channel = 1, width_us = 1000, period_us = 5000, count = 4 }}, {{ kind = \"recording\", marker = \"start\" }}]\n\n[[trigger]]\nname = \"both\"\nkind = \"all\"\nof = [\"a\", \"fast\"]\n"
        );
        let c = Config::parse(&text, "rig.toml").unwrap();
        assert_eq!(c.triggers.len(), 3);
        let again = Config::parse(&c.to_toml(), "effective").unwrap();
        let configs = |c: &Config| {
            c.triggers
                .iter()
                .map(|t| t.get_ref().clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(configs(&again), configs(&c));

        let e = Config::parse(
            &text.replace("above = 30.0", "above = 30.0\nwindow_s = 1.0"),
            "rig.toml",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rig.toml line 6: trigger `fast`: `window_s` does not apply to kind = \"speed\""
        );
        let e = Config::parse(
            &text.replace("of = [\"a\", \"fast\"]", "of = [\"a\", \"slow\"]"),
            "rig.toml",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rig.toml line 14: trigger `both`: `of` names unknown trigger `slow` (known: a, fast, both)"
        );
        let e = Config::parse(&text.replace("channel = 1", "channel = 7"), "rig.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "rig.toml line 6: trigger `fast`: channel 7 does not exist (the output has channels 0..3)"
        );
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_checked() {
        assert_eq!(Config::embedded().metrics.listen, None);
        let c = Config::parse("[metrics]\nlisten = \"127.0.0.1:9464\"\n", "rig.toml").unwrap();
        assert_eq!(c.metrics.listen.as_deref(), Some("127.0.0.1:9464"));
        assert!(c.to_toml().contains("listen = \"127.0.0.1:9464\""));
        let e = Config::parse("[metrics]\nlisten = \"9464\"\n", "rig.toml").unwrap_err();
        assert!(e.to_string().contains("metrics.listen: `9464`"), "{e}");
        let e = Config::parse("[metrics]\nlisen = \"127.0.0.1:9464\"\n", "rig.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::embedded();
        let again = Config::parse(&c.to_toml(), "effective").unwrap();
        assert_eq!(again.source, c.source);
        assert_eq!(again.predictor, c.predictor);
        assert_eq!(again.triggers.len(), 1);
    }
}
