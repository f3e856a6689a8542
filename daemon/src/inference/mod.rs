//! Pose inference: the `PoseModel` seam, DeepLabCut-layout decoding, and the two network runners
//! (ONNX Runtime, loaded at run time, and the pure-Rust tract fallback).
//!
//! A model is pre-processing + a [`Runner`] + decoding. Everything a frame needs is allocated when the model is
//! loaded; what the runtimes themselves allocate per run is measured by the allocation test and reported.

mod ort_runner;
#[cfg(feature = "tract")]
mod tract_runner;

use std::path::{Path, PathBuf};

use reflex_plugins::pose::{Keypoint, Pose};
use serde::{Deserialize, Serialize};

use crate::camera::{Frame, PixelFormat};

pub use ort_runner::{OrtRunner, find_onnxruntime};
#[cfg(feature = "tract")]
pub use tract_runner::TractRunner;

/// The bundled marker detector (made by `tools/model/make_default_model.py`), embedded in the binary.
pub const BUILTIN_MODEL_ONNX: &[u8] = include_bytes!("../../models/default/model.onnx");
/// The bundled model's DeepLabCut `pose_cfg.yaml`.
pub const BUILTIN_POSE_CFG: &str = include_str!("../../models/default/pose_cfg.yaml");

/// Errors loading or running a pose model.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// A model file could not be read.
    #[error("model file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `pose_cfg.yaml` lacks a key or has a bad value.
    #[error("{file}: {message}")]
    PoseCfg {
        /// The file (or `builtin`).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The runtime refused the model or failed to run it.
    #[error("{backend}: {message}")]
    Runtime {
        /// `onnxruntime` or `tract`.
        backend: &'static str,
        /// The runtime's message.
        message: String,
    },
    /// The network's inputs or outputs are not what the decoder expects.
    #[error("model does not fit: {0}")]
    Shape(String),
    /// The frame does not fit the network input.
    #[error(
        "frame is {got_w}x{got_h}, the model takes {want_w}x{want_h} (resizing comes with real-model support)"
    )]
    FrameSize {
        /// Frame width.
        got_w: u32,
        /// Frame height.
        got_h: u32,
        /// Network input width.
        want_w: u32,
        /// Network input height.
        want_h: u32,
    },
    /// The requested backend is not available.
    #[error("{0}")]
    Unavailable(String),
}

/// Which runtime runs the network (`[model] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// ONNX Runtime when its library is found, else tract with a one-line notice.
    #[default]
    Auto,
    /// ONNX Runtime only; an error when its library is missing.
    Onnxruntime,
    /// The pure-Rust tract runtime.
    Tract,
}

/// `[model]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `builtin` for the bundled marker detector, or a DeepLabCut-style export folder holding `pose_cfg.yaml`
    /// and `model.onnx` (TensorFlow-export layout: NHWC input, `Sigmoid` scoremap, locref outputs).
    pub path: String,
    /// Which runtime runs it.
    pub backend: BackendChoice,
    /// Intra-op threads of the runtime (1 keeps a 2-core rig's other threads free).
    pub threads: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: "builtin".into(),
            backend: BackendChoice::Auto,
            threads: 1,
        }
    }
}

/// What the decoder needs to know about a DeepLabCut-layout network.
#[derive(Debug, Clone, PartialEq)]
pub struct DlcSpec {
    /// Keypoint names, in output channel order.
    pub keypoints: Vec<String>,
    /// Output stride in px (8 for the bundled model).
    pub stride: f32,
    /// Scale of the location-refinement maps (DeepLabCut's `locref_stdev`, default 7.2801).
    pub locref_stdev: f32,
    /// Network input width in px.
    pub input_width: u32,
    /// Network input height in px.
    pub input_height: u32,
}

/// Raw network outputs in DeepLabCut's layout, NHWC without the batch axis.
#[derive(Debug, Clone, Copy)]
pub struct DlcOutputs<'a> {
    /// Score maps, `rows * cols * joints`.
    pub scoremap: &'a [f32],
    /// Location refinement, `rows * cols * joints * 2` (dx, dy per joint, in units of `locref_stdev`).
    pub locref: &'a [f32],
    /// Score-map rows.
    pub rows: usize,
    /// Score-map columns.
    pub cols: usize,
}

/// A network runtime: fills its own preallocated input tensor (NHWC f32 RGB 0–255) and runs the network.
pub trait Runner: Send {
    /// `onnxruntime` or `tract`.
    fn name(&self) -> &'static str;
    /// The input tensor to fill before [`Runner::run`], `height * width * 3` floats.
    fn input_mut(&mut self) -> &mut [f32];
    /// Run the network on the current input.
    fn run(&mut self) -> Result<DlcOutputs<'_>, InferenceError>;
}

/// The pose-estimation seam: one frame in, one pose out. Runs on the inference thread.
pub trait PoseModel: Send {
    /// Keypoint names, in the order of the poses produced.
    fn keypoints(&self) -> &[String];
    /// Which runtime runs it (`onnxruntime` or `tract`), for the session summary.
    fn backend(&self) -> &'static str;
    /// Estimate the pose in `frame` into `pose` (len = keypoint count).
    fn estimate(&mut self, frame: &Frame, pose: &mut Pose) -> Result<(), InferenceError>;
}

/// A single-animal DeepLabCut-layout model: pre-process, run, decode like DeepLabCut.
pub struct DlcModel {
    spec: DlcSpec,
    runner: Box<dyn Runner>,
}

impl DlcModel {
    /// Wrap a runner; checks nothing until the first frame.
    pub fn new(spec: DlcSpec, runner: Box<dyn Runner>) -> Self {
        Self { spec, runner }
    }

    /// The decoder's view of the model.
    pub fn spec(&self) -> &DlcSpec {
        &self.spec
    }

    /// Pre-process `frame` into the runner's input and run the network, returning its raw outputs.
    pub fn run_raw(&mut self, frame: &Frame) -> Result<DlcOutputs<'_>, InferenceError> {
        if frame.width != self.spec.input_width || frame.height != self.spec.input_height {
            return Err(InferenceError::FrameSize {
                got_w: frame.width,
                got_h: frame.height,
                want_w: self.spec.input_width,
                want_h: self.spec.input_height,
            });
        }
        preprocess_rgb(frame, self.runner.input_mut());
        self.runner.run()
    }
}

impl PoseModel for DlcModel {
    fn keypoints(&self) -> &[String] {
        &self.spec.keypoints
    }

    fn backend(&self) -> &'static str {
        self.runner.name()
    }

    fn estimate(&mut self, frame: &Frame, pose: &mut Pose) -> Result<(), InferenceError> {
        let (stride, locref_stdev, joints) = (
            self.spec.stride,
            self.spec.locref_stdev,
            self.spec.keypoints.len(),
        );
        let out = self.run_raw(frame)?;
        decode_dlc(&out, joints, stride, locref_stdev, pose)
    }
}

/// Frame pixels → the network input: NHWC float RGB in 0–255, as DeepLabCut-Live feeds a TensorFlow export.
/// Gray frames are replicated to three channels.
pub fn preprocess_rgb(frame: &Frame, input: &mut [f32]) {
    match frame.format {
        PixelFormat::Rgb8 => {
            for (dst, &src) in input.iter_mut().zip(&frame.data) {
                *dst = src as f32;
            }
        }
        PixelFormat::Gray8 => {
            for (dst, &src) in input.chunks_exact_mut(3).zip(&frame.data) {
                dst.fill(src as f32);
            }
        }
    }
}

/// Decode single-animal DeepLabCut outputs exactly as DeepLabCut(-Live) does (`argmax_pose_predict`): per joint,
/// the first maximum of its score map (row-major, like `np.argmax`), then
/// `x = col·stride + stride/2 + dx·locref_stdev`, `y = row·stride + stride/2 + dy·locref_stdev`, and the
/// likelihood is the score at the maximum.
pub fn decode_dlc(
    out: &DlcOutputs<'_>,
    joints: usize,
    stride: f32,
    locref_stdev: f32,
    pose: &mut Pose,
) -> Result<(), InferenceError> {
    let cells = out.rows * out.cols;
    if out.scoremap.len() != cells * joints || out.locref.len() != cells * joints * 2 {
        return Err(InferenceError::Shape(format!(
            "expected scoremap {}x{}x{joints} and locref {}x{}x{}, got {} and {} values",
            out.rows,
            out.cols,
            out.rows,
            out.cols,
            2 * joints,
            out.scoremap.len(),
            out.locref.len()
        )));
    }
    *pose = Pose::new(joints);
    for (joint, kp) in pose.points_mut().iter_mut().enumerate() {
        let mut best = 0;
        let mut best_score = f32::NEG_INFINITY;
        for cell in 0..cells {
            let s = out.scoremap[cell * joints + joint];
            if s > best_score {
                best_score = s;
                best = cell;
            }
        }
        let (row, col) = (best / out.cols, best % out.cols);
        let dx = out.locref[(best * joints + joint) * 2];
        let dy = out.locref[(best * joints + joint) * 2 + 1];
        *kp = Keypoint {
            x: col as f32 * stride + 0.5 * stride + dx * locref_stdev,
            y: row as f32 * stride + 0.5 * stride + dy * locref_stdev,
            score: best_score,
        };
    }
    Ok(())
}

/// Read the keys the decoder needs from a DeepLabCut `pose_cfg.yaml`: `all_joints_names`, `stride`,
/// `locref_stdev` (default 7.2801 as in DeepLabCut). Only this flat subset of YAML is understood.
pub fn parse_pose_cfg(text: &str, file: &str) -> Result<(Vec<String>, f32, f32), InferenceError> {
    let err = |message: String| InferenceError::PoseCfg {
        file: file.to_string(),
        message,
    };
    let mut names: Option<Vec<String>> = None;
    let mut stride = None;
    let mut locref_stdev = 7.2801f32;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, raw)) = lines.next() {
        let line = raw.split(" #").next().unwrap_or("").trim_end();
        if line.starts_with(' ') || line.starts_with('#') || !line.contains(':') {
            continue;
        }
        let (key, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.trim();
        let number = |v: &str| {
            v.parse::<f32>().map_err(|_| {
                err(format!(
                    "line {}: `{key}` must be a number, got `{v}`",
                    n + 1
                ))
            })
        };
        match key.trim() {
            "stride" => stride = Some(number(value)?),
            "locref_stdev" => locref_stdev = number(value)?,
            "all_joints_names" => {
                let list = if let Some(inner) = value.strip_prefix('[') {
                    inner
                        .trim_end_matches(']')
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .collect()
                } else {
                    let mut v = Vec::new();
                    while let Some((_, next)) = lines.peek() {
                        match next.trim_start().strip_prefix("- ") {
                            Some(item) => v.push(item.trim().to_string()),
                            None => break,
                        }
                        lines.next();
                    }
                    v
                };
                names = Some(
                    list.into_iter()
                        .map(|s: String| s.trim_matches(|c| c == '\'' || c == '"').to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                );
            }
            _ => {}
        }
    }
    let names = names.ok_or_else(|| err("missing `all_joints_names`".into()))?;
    if names.is_empty() {
        return Err(err("`all_joints_names` is empty".into()));
    }
    let stride = stride.ok_or_else(|| err("missing `stride`".into()))?;
    if stride.is_nan() || stride <= 0.0 {
        return Err(err(format!("`stride` must be > 0, got {stride}")));
    }
    Ok((names, stride, locref_stdev))
}

/// Where the model's bytes and metadata come from.
fn load_model_files(config: &ModelConfig) -> Result<(Vec<u8>, String, String), InferenceError> {
    if config.path == "builtin" {
        return Ok((
            BUILTIN_MODEL_ONNX.to_vec(),
            BUILTIN_POSE_CFG.to_string(),
            "builtin pose_cfg.yaml".into(),
        ));
    }
    let dir = Path::new(&config.path);
    let read =
        |p: PathBuf| std::fs::read(&p).map_err(|source| InferenceError::Read { path: p, source });
    let onnx = read(dir.join("model.onnx"))?;
    let cfg_path = dir.join("pose_cfg.yaml");
    let cfg = String::from_utf8(read(cfg_path.clone())?).map_err(|_| InferenceError::PoseCfg {
        file: cfg_path.display().to_string(),
        message: "not UTF-8 text".into(),
    })?;
    Ok((onnx, cfg, cfg_path.display().to_string()))
}

/// Network input size of the bundled model (and, for now, of any model: resizing comes with real models).
const INPUT_SIZE: (u32, u32) = (640, 480);

/// Load the configured model on the configured runtime. `notice` receives one line when `auto` falls back
/// to tract, saying how to get the faster runtime.
pub fn load(
    config: &ModelConfig,
    notice: &mut dyn FnMut(String),
) -> Result<DlcModel, InferenceError> {
    let (onnx, cfg_text, cfg_file) = load_model_files(config)?;
    let (keypoints, stride, locref_stdev) = parse_pose_cfg(&cfg_text, &cfg_file)?;
    let spec = DlcSpec {
        keypoints,
        stride,
        locref_stdev,
        input_width: INPUT_SIZE.0,
        input_height: INPUT_SIZE.1,
    };
    let runner = make_runner(config.backend, &onnx, &spec, config.threads.max(1), notice)?;
    Ok(DlcModel::new(spec, runner))
}

/// Build the runner for `choice`.
pub fn make_runner(
    choice: BackendChoice,
    onnx: &[u8],
    spec: &DlcSpec,
    threads: usize,
    notice: &mut dyn FnMut(String),
) -> Result<Box<dyn Runner>, InferenceError> {
    match choice {
        BackendChoice::Onnxruntime => Ok(Box::new(OrtRunner::new(onnx, spec, threads)?)),
        BackendChoice::Tract => tract_runner(onnx, spec, threads),
        BackendChoice::Auto => match OrtRunner::new(onnx, spec, threads) {
            Ok(r) => Ok(Box::new(r)),
            Err(InferenceError::Unavailable(why)) => {
                notice(format!(
                    "note: using the pure-Rust tract backend ({why}); for faster inference `pip install onnxruntime==1.31.1` or set ORT_DYLIB_PATH"
                ));
                tract_runner(onnx, spec, threads)
            }
            Err(e) => Err(e),
        },
    }
}

#[cfg(feature = "tract")]
fn tract_runner(
    onnx: &[u8],
    spec: &DlcSpec,
    _threads: usize,
) -> Result<Box<dyn Runner>, InferenceError> {
    Ok(Box::new(TractRunner::new(onnx, spec)?))
}

#[cfg(not(feature = "tract"))]
fn tract_runner(
    _onnx: &[u8],
    _spec: &DlcSpec,
    _threads: usize,
) -> Result<Box<dyn Runner>, InferenceError> {
    Err(InferenceError::Unavailable(
        "this reflex was built without the `tract` feature; install ONNX Runtime (`pip install onnxruntime==1.31.1`) or rebuild with default features".into(),
    ))
}

/// A runner's preallocated copy of the network's two outputs, in the decoder's layout.
struct OutputBuffers {
    scoremap: Vec<f32>,
    locref: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl OutputBuffers {
    /// Buffers for `spec`'s score-map grid (input size / stride, rounded up).
    fn new(spec: &DlcSpec) -> Self {
        let s = spec.stride as u32;
        let rows = spec.input_height.div_ceil(s) as usize;
        let cols = spec.input_width.div_ceil(s) as usize;
        let joints = spec.keypoints.len();
        Self {
            scoremap: vec![0.0; rows * cols * joints],
            locref: vec![0.0; rows * cols * 2 * joints],
            rows,
            cols,
        }
    }

    /// Copy output `index` (0 = score map, 1 = locref) from the runtime, checking its size.
    fn fill(&mut self, index: usize, name: &str, data: &[f32]) -> Result<(), InferenceError> {
        let dst = if index == 0 {
            &mut self.scoremap
        } else {
            &mut self.locref
        };
        if data.len() != dst.len() {
            return Err(InferenceError::Shape(format!(
                "output `{name}` has {} values, expected {}",
                data.len(),
                dst.len()
            )));
        }
        dst.copy_from_slice(data);
        Ok(())
    }

    /// The outputs as the decoder reads them.
    fn view(&self) -> DlcOutputs<'_> {
        DlcOutputs {
            scoremap: &self.scoremap,
            locref: &self.locref,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_matches_deeplabcut_formula_and_first_max() {
        // 2x3 grid, 2 joints. Joint 0 peaks at (1, 2); joint 1 has a tie at (0,1) and (1,0): the first wins.
        let (cols, joints) = (3, 2);
        let cell = |row: usize, col: usize| row * cols + col;
        let mut scoremap = vec![0.1f32; 2 * cols * joints];
        scoremap[cell(1, 2) * joints] = 0.9;
        scoremap[cell(0, 1) * joints + 1] = 0.7;
        scoremap[cell(1, 0) * joints + 1] = 0.7;
        let mut locref = vec![0f32; 2 * cols * joints * 2];
        locref[cell(1, 2) * joints * 2] = 0.5; // dx of joint 0
        locref[cell(1, 2) * joints * 2 + 1] = -0.25; // dy of joint 0
        locref[(cell(0, 1) * joints + 1) * 2] = 1.0; // dx of joint 1
        let out = DlcOutputs {
            scoremap: &scoremap,
            locref: &locref,
            rows: 2,
            cols: 3,
        };
        let mut pose = Pose::new(0);
        decode_dlc(&out, 2, 8.0, 7.2801, &mut pose).unwrap();
        let p = pose.points();
        assert_eq!(p[0].x, 2.0 * 8.0 + 4.0 + 0.5 * 7.2801);
        assert_eq!(p[0].y, 1.0 * 8.0 + 4.0 - 0.25 * 7.2801);
        assert_eq!(p[0].score, 0.9);
        assert_eq!(p[1].x, 1.0 * 8.0 + 4.0 + 7.2801);
        assert_eq!(p[1].y, 4.0);
    }

    #[test]
    fn decode_refuses_wrong_sizes() {
        let out = DlcOutputs {
            scoremap: &[0.0; 5],
            locref: &[0.0; 12],
            rows: 2,
            cols: 3,
        };
        let mut pose = Pose::new(0);
        assert!(matches!(
            decode_dlc(&out, 1, 8.0, 1.0, &mut pose),
            Err(InferenceError::Shape(_))
        ));
    }

    #[test]
    fn pose_cfg_subset_parses_both_list_styles() {
        let flow = "all_joints_names: [nose, 'ear_left']\nstride: 8.0\nlocref_stdev: 7.2801\n";
        assert_eq!(
            parse_pose_cfg(flow, "x").unwrap(),
            (vec!["nose".into(), "ear_left".into()], 8.0, 7.2801)
        );
        let block = "all_joints_names:\n- a\n- b\nstride: 4 # comment\n";
        assert_eq!(
            parse_pose_cfg(block, "x").unwrap(),
            (vec!["a".into(), "b".into()], 4.0, 7.2801)
        );
        let err = parse_pose_cfg("stride: x\nall_joints_names: [a]", "cfg.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cfg.yaml") && err.contains("line 1") && err.contains("stride"),
            "{err}"
        );
        assert!(
            parse_pose_cfg("stride: 8", "c")
                .unwrap_err()
                .to_string()
                .contains("all_joints_names")
        );
    }

    #[test]
    fn builtin_pose_cfg_names_four_keypoints() {
        let (names, stride, locref) = parse_pose_cfg(BUILTIN_POSE_CFG, "builtin").unwrap();
        assert_eq!(names, ["nose", "ear_left", "ear_right", "tail_base"]);
        assert_eq!((stride, locref), (8.0, 7.2801));
    }
}
