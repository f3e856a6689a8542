//! Pose inference: the `PoseModel` seam, the models reflex reads (DeepLabCut TensorFlow and PyTorch exports,
//! sleap-nn exports and raw confidence-map heads, and the bundled marker detector), and the two network
//! runners (ONNX Runtime, loaded at run time, and the pure-Rust tract fallback).
//!
//! A model is pre-processing ([`preprocess`]) + a [`Runner`] + a decoder ([`dlc`], [`sleap`]), with an optional
//! DeepLabCut-Live-style dynamic crop. What each needs is read from the model's own metadata (`pose_cfg.yaml`,
//! `pytorch_config.yaml`, `export_metadata.json`, the ONNX interface) by [`load`]. Everything a frame needs
//! is allocated when the model is prepared for a frame size ([`PoseModel::prepare`]); what the runtimes
//! themselves allocate per run is measured by the allocation test and reported.

pub mod cli;
pub mod dlc;
pub mod onnx_info;
mod ort_runner;
pub mod preprocess;
pub mod sleap;
#[cfg(feature = "tract")]
mod tract_runner;
pub mod yaml;

use std::path::{Path, PathBuf};

use reflex_plugins::pose::Pose;
use serde::{Deserialize, Serialize};

use crate::camera::{Frame, PixelFormat};
use onnx_info::{ElemType, OnnxInfo};
use preprocess::{Geometry, InputMut, InputSpec, InputType, Preprocessor, Window};

pub use ort_runner::{OrtRunner, available_providers, find_onnxruntime};
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
    /// A metadata file (`pose_cfg.yaml`, `export_metadata.json`, …) lacks a key or has a bad value.
    #[error("{file}: {message}")]
    Metadata {
        /// The file (or `builtin pose_cfg.yaml`).
        file: String,
        /// What is wrong, with the key and line where known.
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
    /// The model is of a kind reflex recognises but does not decode (e.g. multi-animal part-affinity heads).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The requested backend or execution provider is not available.
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

/// Which tool made the model (`[model] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// From the folder's metadata: `pose_cfg.yaml` → DeepLabCut; `export_metadata.json` or sleap-nn
    /// metadata inside the ONNX → SLEAP.
    #[default]
    Auto,
    /// A DeepLabCut export (TensorFlow layout or DeepLabCut 3 PyTorch).
    Dlc,
    /// A sleap-nn export or raw confidence-map heads.
    Sleap,
}

/// An ONNX Runtime execution provider (`[model] providers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// The CPU (always there).
    Cpu,
    /// NVIDIA CUDA (needs the onnxruntime-gpu build and CUDA/cuDNN libraries).
    Cuda,
    /// NVIDIA TensorRT (needs a TensorRT-enabled build and TensorRT libraries).
    Tensorrt,
}

impl Provider {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Tensorrt => "tensorrt",
        }
    }

    /// What to install to get it.
    fn install_hint(self) -> &'static str {
        match self {
            Self::Cpu => "this ONNX Runtime library is broken",
            Self::Cuda => {
                "install the GPU build (`pip install onnxruntime-gpu==1.31.1`, CUDA 12 and cuDNN 9) and point ORT_DYLIB_PATH at its libonnxruntime.so, or remove \"cuda\" from [model] providers"
            }
            Self::Tensorrt => {
                "use an ONNX Runtime build with TensorRT (onnxruntime-gpu plus the TensorRT libraries) and point ORT_DYLIB_PATH at it, or remove \"tensorrt\" from [model] providers"
            }
        }
    }
}

/// `[model.crop]`: DeepLabCut-Live-style dynamic cropping around the last pose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CropConfig {
    /// Crop around the last pose (DeepLabCut-Live's `dynamic = (True, min_score, margin_px)`).
    pub enabled: bool,
    /// Keypoints with at least this likelihood count as detected (DeepLabCut-Live's detection threshold).
    pub min_score: f32,
    /// Pixels kept around the detected keypoints' bounding box.
    pub margin_px: u32,
    /// Crop window `[width, height]` in px for networks with a dynamic input size; `[0, 0]` for a network
    /// with a fixed input, whose size is the window. Fixed so every buffer is made once.
    pub size: [u32; 2],
    /// Crop origins are multiples of this many px so the network's grid stays aligned with the frame's;
    /// 0 = the model's own (DeepLabCut: `stride`; SLEAP: `max_stride`).
    pub align_px: u32,
}

impl Default for CropConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_score: 0.5,
            margin_px: 10,
            size: [0, 0],
            align_px: 0,
        }
    }
}

/// `[model]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `builtin` for the bundled marker detector, or an export folder: DeepLabCut (`pose_cfg.yaml` + an ONNX
    /// network) or sleap-nn (`export_metadata.json` + `model.onnx`), or one `.onnx` file inside such a folder.
    pub path: String,
    /// Which tool made it; `auto` decides from the folder's metadata.
    pub kind: ModelKind,
    /// ONNX files in the folder to run, in order (default `model.onnx`); two for sleap-nn's raw top-down heads
    /// (centroid, then centered-instance).
    pub networks: Vec<String>,
    /// Which runtime runs it.
    pub backend: BackendChoice,
    /// Intra-op threads of the runtime (1 keeps a 2-core rig's other threads free).
    pub threads: usize,
    /// ONNX Runtime execution providers, in order of preference: `cpu`, `cuda`, `tensorrt`. One that the
    /// loaded library does not offer is an error, not a silent fallback.
    pub providers: Vec<Provider>,
    /// Dynamic cropping.
    pub crop: CropConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: "builtin".into(),
            kind: ModelKind::Auto,
            networks: Vec::new(),
            backend: BackendChoice::Auto,
            threads: 1,
            providers: vec![Provider::Cpu],
            crop: CropConfig::default(),
        }
    }
}

impl ModelConfig {
    /// Check values serde cannot: the message names the key (without the `model.` prefix).
    pub fn validate(&self) -> Result<(), String> {
        if self.threads == 0 || self.threads > 256 {
            return Err(format!(
                "threads must be between 1 and 256, got {}",
                self.threads
            ));
        }
        if self.providers.is_empty() {
            return Err("providers is empty: list at least one of cpu, cuda, tensorrt".into());
        }
        for (i, p) in self.providers.iter().enumerate() {
            if self.providers[..i].contains(p) {
                return Err(format!("providers names `{}` twice", p.name()));
            }
        }
        if self.backend == BackendChoice::Tract
            && self.providers.iter().any(|&p| p != Provider::Cpu)
        {
            return Err(
                "providers: tract runs on the CPU only; use backend = \"onnxruntime\" for cuda or tensorrt"
                    .into(),
            );
        }
        let c = &self.crop;
        if !(c.min_score.is_finite()) {
            return Err(format!(
                "crop.min_score must be a number, got {}",
                c.min_score
            ));
        }
        if (c.size[0] == 0) != (c.size[1] == 0) {
            return Err(format!(
                "crop.size must be [width, height] with both > 0, or [0, 0] for the network's input size; got {:?}",
                c.size
            ));
        }
        if self.networks.iter().any(|n| n.is_empty()) {
            return Err("networks has an empty file name".into());
        }
        Ok(())
    }
}

/// One network output after a run, in f32 (bool and integer outputs converted), with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct OutTensor {
    /// The output's name in the graph.
    pub name: String,
    /// Its shape on this slot's input.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub data: Vec<f32>,
}

impl OutTensor {
    fn empty(name: &str) -> Self {
        Self {
            name: name.to_string(),
            shape: Vec::new(),
            data: Vec::new(),
        }
    }
}

/// What a runner binds: the input's name and type, and the outputs the decoder reads, in its order.
#[derive(Debug, Clone, PartialEq)]
pub struct NetIo {
    /// Input tensor name.
    pub input: String,
    /// Input element type.
    pub input_type: InputType,
    /// Outputs to read: name and element type, in the decoder's order.
    pub outputs: Vec<(String, ElemType)>,
    /// Their positions among the graph's outputs (what tract indexes by).
    pub output_index: Vec<usize>,
}

impl NetIo {
    /// Bind `outputs` (names) of the network described by `info`.
    pub fn new(info: &OnnxInfo, input_type: InputType, outputs: &[&str]) -> Self {
        let mut io = NetIo {
            input: info.inputs[0].name.clone(),
            input_type,
            outputs: Vec::new(),
            output_index: Vec::new(),
        };
        for name in outputs {
            if let Some(i) = info.outputs.iter().position(|o| o.name == *name) {
                io.outputs.push((name.to_string(), info.outputs[i].elem));
                io.output_index.push(i);
            }
        }
        io
    }
}

/// A network runtime. Each *slot* is one input shape with its own preallocated input and outputs, made
/// before the first frame ([`Runner::add_slot`]); running a slot allocates nothing of ours.
pub trait Runner: Send {
    /// `onnxruntime` or `tract`.
    fn name(&self) -> &'static str;
    /// Drop all slots (before preparing for another frame size).
    fn clear_slots(&mut self);
    /// Make a slot for an input of `shape`, run it once (warm-up; learns the output shapes) and return its
    /// index.
    fn add_slot(&mut self, shape: &[usize]) -> Result<usize, InferenceError>;
    /// The input tensor of `slot`, to fill before [`Runner::run`].
    fn input_mut(&mut self, slot: usize) -> InputMut<'_>;
    /// Run the network on `slot`'s input; its outputs, in the order of [`NetIo::outputs`].
    fn run(&mut self, slot: usize) -> Result<&[OutTensor], InferenceError>;
    /// The outputs of `slot`'s last run.
    fn outputs(&self, slot: usize) -> &[OutTensor];
}

/// The pose-estimation seam: one frame in, one pose out. Runs on the inference thread.
pub trait PoseModel: Send {
    /// Keypoint names, in the order of the poses produced.
    fn keypoints(&self) -> &[String];
    /// Which runtime runs it (`onnxruntime` or `tract`), for the session summary.
    fn backend(&self) -> &'static str;
    /// Allocate everything for frames of this size and format (before the loop starts). `estimate` does it
    /// itself on the first frame of another size.
    fn prepare(
        &mut self,
        _width: u32,
        _height: u32,
        _format: PixelFormat,
    ) -> Result<(), InferenceError> {
        Ok(())
    }
    /// Estimate the pose in `frame` into `pose` (len = keypoint count): the first instance the model found,
    /// or all keypoints missing when it found none.
    fn estimate(&mut self, frame: &Frame, pose: &mut Pose) -> Result<(), InferenceError>;
    /// Every instance found in the last frame (multi-animal models; one for single-animal ones), in the
    /// model's order, in frame px.
    fn instances(&self) -> &[Pose] {
        &[]
    }
}

/// One network with its pre-processing.
pub(crate) struct Net {
    pub(crate) file: String,
    pub(crate) pre: Preprocessor,
    pub(crate) runner: Box<dyn Runner>,
}

/// What the decoders need to know, planned from the metadata before any runtime is loaded.
pub(crate) struct NetPlan {
    pub(crate) file: String,
    pub(crate) onnx: Vec<u8>,
    pub(crate) info: OnnxInfo,
    pub(crate) spec: InputSpec,
    pub(crate) io: NetIo,
    /// What the network is fed, when not the frame (SLEAP's centered-instance crops).
    pub(crate) role: Option<String>,
}

impl NetPlan {
    /// What reflex feeds the network, for `reflex model inspect`.
    fn feeds(&self) -> String {
        match &self.role {
            Some(role) => format!(
                "{}; {role}",
                self.spec
                    .describe()
                    .replace(" (frames of another size are resized to it)", "")
            ),
            None => self.spec.describe(),
        }
    }
}

/// How the network outputs become poses.
pub(crate) enum Decoder {
    Dlc(dlc::DlcDecoder),
    Sleap(sleap::SleapDecoder),
}

/// A model planned from its folder: networks, decoder and what `reflex model inspect` prints.
pub(crate) struct Plan {
    pub(crate) kind: String,
    pub(crate) decoder_name: String,
    pub(crate) keypoints: Vec<String>,
    pub(crate) nets: Vec<NetPlan>,
    pub(crate) decoder: Decoder,
    pub(crate) details: Vec<(String, String)>,
    /// Default crop alignment (px).
    pub(crate) align: u32,
    /// Most instances a frame can hold.
    pub(crate) max_instances: usize,
}

/// What a loaded model is, for `reflex model inspect` and the session summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    /// Which tool's format, e.g. `DeepLabCut 3 (PyTorch export)`.
    pub kind: String,
    /// How outputs become keypoints, e.g. `argmax + locref (DeepLabCut-Live argmax_pose_predict)`.
    pub decoder: String,
    /// Keypoint names in output order.
    pub keypoints: Vec<String>,
    /// Each network: file, interface and what reflex feeds it.
    pub networks: Vec<(String, OnnxInfo, String)>,
    /// Decoder parameters (stride, locref_stdev, thresholds…), as (name, value).
    pub details: Vec<(String, String)>,
    /// Most instances per frame.
    pub max_instances: usize,
}

/// A slot of the main network: its window geometry and runner slot.
#[derive(Debug, Clone)]
struct SlotGeom {
    slot: usize,
    geom: Geometry,
}

/// What [`Model::prepare`] made for one frame size.
struct Prepared {
    frame: (u32, u32, PixelFormat),
    full: SlotGeom,
    crop: Option<SlotGeom>,
    /// Slot of the second-stage network (SLEAP centered-instance).
    stage2: Option<SlotGeom>,
}

/// The dynamic crop's state between frames.
#[derive(Debug, Clone, Copy, Default)]
struct CropState {
    /// The window for the next frame (None: full frame).
    next: Option<Window>,
}

/// A loaded pose model: pre-processing, network(s), decoder, dynamic crop. Implements [`PoseModel`].
pub struct Model {
    desc: Description,
    keypoints: Vec<String>,
    nets: Vec<Net>,
    decoder: Decoder,
    crop_cfg: CropConfig,
    align: u32,
    prepared: Option<Prepared>,
    crop: CropState,
    /// The window the last frame was read through, and its slot.
    window: Window,
    use_crop: bool,
    instances: Vec<Pose>,
    count: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("kind", &self.desc.kind)
            .field("backend", &self.nets[0].runner.name())
            .field("keypoints", &self.keypoints)
            .finish_non_exhaustive()
    }
}

/// The model type the loop and the tests use (the name predates SLEAP support).
pub type DlcModel = Model;

impl Model {
    fn new(plan: Plan, runners: Vec<Box<dyn Runner>>, crop_cfg: CropConfig) -> Self {
        let desc = Description {
            kind: plan.kind.clone(),
            decoder: plan.decoder_name.clone(),
            keypoints: plan.keypoints.clone(),
            networks: plan
                .nets
                .iter()
                .map(|n| (n.file.clone(), n.info.clone(), n.feeds()))
                .collect(),
            details: plan.details.clone(),
            max_instances: plan.max_instances,
        };
        let n = plan.keypoints.len();
        let nets = plan
            .nets
            .into_iter()
            .zip(runners)
            .map(|(p, runner)| Net {
                file: p.file,
                pre: Preprocessor::new(p.spec),
                runner,
            })
            .collect();
        let align = if crop_cfg.align_px > 0 {
            crop_cfg.align_px
        } else {
            plan.align.max(1)
        };
        Self {
            desc,
            keypoints: plan.keypoints,
            nets,
            decoder: plan.decoder,
            crop_cfg,
            align,
            prepared: None,
            crop: CropState::default(),
            window: Window::default(),
            use_crop: false,
            instances: vec![Pose::new(n); plan.max_instances.max(1)],
            count: 0,
        }
    }

    /// What this model is.
    pub fn description(&self) -> &Description {
        &self.desc
    }

    /// The input the main network takes.
    pub fn input_spec(&self) -> &InputSpec {
        self.nets[0].pre.spec()
    }

    /// The frame window the last frame was read through (the whole frame, or the dynamic crop).
    pub fn last_window(&self) -> Window {
        self.window
    }

    /// Whether the last frame was read through the dynamic crop.
    pub fn last_was_cropped(&self) -> bool {
        self.use_crop
    }

    /// Forget the last pose: the next frame is read whole.
    pub fn reset_crop(&mut self) {
        self.crop.next = None;
    }

    /// Use `poses` (frame px) as the last pose for the dynamic crop, e.g. a pose from the previous session.
    pub fn crop_around(&mut self, poses: &[Pose]) {
        self.crop.next = self.crop_window(poses);
    }

    /// The crop window (frame px) around `poses`, or None when cropping is off, nothing is detected, or
    /// the detected keypoints plus margin do not fit in the window.
    fn crop_window(&self, poses: &[Pose]) -> Option<Window> {
        if !self.crop_cfg.enabled {
            return None;
        }
        let prepared = self.prepared.as_ref()?;
        let crop = prepared.crop.as_ref()?;
        let (fw, fh, _) = prepared.frame;
        let (ww, wh) = crop.geom.win;
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for p in poses {
            for k in p.points() {
                if !k.is_missing() && k.score >= self.crop_cfg.min_score {
                    x0 = x0.min(k.x);
                    y0 = y0.min(k.y);
                    x1 = x1.max(k.x);
                    y1 = y1.max(k.y);
                }
            }
        }
        if x0 > x1 {
            return None;
        }
        // DeepLabCut-Live's crop: int() of the extremes, ± margin, clipped to the frame.
        let m = self.crop_cfg.margin_px as f32;
        let (bx0, by0) = ((x0.trunc() - m).max(0.0), (y0.trunc() - m).max(0.0));
        let (bx1, by1) = (
            (x1.trunc() + m).min(fw as f32),
            (y1.trunc() + m).min(fh as f32),
        );
        if bx1 - bx0 > ww as f32 || by1 - by0 > wh as f32 {
            return None;
        }
        let place = |lo: f32, hi: f32, win: u32, frame: u32| -> u32 {
            let centred = ((lo + hi) / 2.0 - win as f32 / 2.0).round().max(0.0) as u32;
            let x = centred.min(frame - win);
            let aligned = x - x % self.align;
            // Alignment moves the window left/up; keep the box inside when that would push it out.
            if (aligned + win) as f32 >= hi {
                aligned
            } else {
                x
            }
        };
        Some(Window {
            x: place(bx0, bx1, ww, fw),
            y: place(by0, by1, wh, fh),
            w: ww,
            h: wh,
        })
    }

    /// Allocate everything for `width` × `height` frames of `format`: runner slots (full frame, crop window,
    /// second stage), resize tables. Runs each slot once.
    pub fn prepare_for(
        &mut self,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<(), InferenceError> {
        if self
            .prepared
            .as_ref()
            .is_some_and(|p| p.frame == (width, height, format))
        {
            return Ok(());
        }
        if width == 0 || height == 0 {
            return Err(InferenceError::Shape(format!(
                "frames are {width}x{height}"
            )));
        }
        self.prepared = None;
        self.crop = CropState::default();
        for net in &mut self.nets {
            net.runner.clear_slots();
        }
        let spec = self.nets[0].pre.spec().clone();
        let full = self.make_slot(0, Geometry::new(&spec, width, height))?;
        let crop = if self.crop_cfg.enabled {
            let (cw, ch) = match (spec.fixed_size, self.crop_cfg.size) {
                (_, [w, h]) if w > 0 => (w, h),
                (Some(size), _) => size,
                (None, _) => {
                    return Err(InferenceError::Shape(format!(
                        "{}: the network takes any input size, so [model.crop] needs `size = [width, height]` (the crop window in px)",
                        self.nets[0].file
                    )));
                }
            };
            if width >= cw && height >= ch && (width > cw || height > ch) {
                Some(self.make_slot(0, Geometry::new(&spec, cw, ch))?)
            } else {
                None // the frame is no larger than the window: nothing to gain
            }
        } else {
            None
        };
        let stage2 = match &self.decoder {
            Decoder::Sleap(sleap::SleapDecoder::Topdown(t)) => {
                let spec2 = self.nets[1].pre.spec().clone();
                let (cw, ch) = t.crop_size();
                Some(self.make_slot(1, Geometry::new(&spec2, cw, ch))?)
            }
            _ => None,
        };
        // The decoder checks the output shapes of every slot now, not on frame 1.
        for sg in [Some(&full), crop.as_ref()].into_iter().flatten() {
            let outputs = self.nets[0].runner.outputs(sg.slot);
            match &mut self.decoder {
                Decoder::Dlc(d) => d.check(outputs, &self.nets[0].file)?,
                Decoder::Sleap(d) => d.check(outputs, sg.geom.tensor, &self.nets[0].file)?,
            }
        }
        if let (Some(sg), Decoder::Sleap(sleap::SleapDecoder::Topdown(t))) =
            (&stage2, &mut self.decoder)
        {
            let outputs = self.nets[1].runner.outputs(sg.slot);
            t.check_instance(outputs, &self.nets[1].file)?;
        }
        self.prepared = Some(Prepared {
            frame: (width, height, format),
            full,
            crop,
            stage2,
        });
        Ok(())
    }

    fn make_slot(&mut self, net: usize, geom: Geometry) -> Result<SlotGeom, InferenceError> {
        let net = &mut self.nets[net];
        let shape = geom.shape(net.pre.spec());
        let slot = net.runner.add_slot(&shape).map_err(|e| match e {
            InferenceError::Runtime { backend, message } => InferenceError::Runtime {
                backend,
                message: format!("{} on input {:?}: {message}", net.file, shape),
            },
            e => e,
        })?;
        net.pre.clear(net.runner.input_mut(slot));
        Ok(SlotGeom { slot, geom })
    }

    /// Pre-process `frame` into the main network's input (the dynamic crop or the whole frame).
    pub fn stage_input(&mut self, frame: &Frame) -> Result<(), InferenceError> {
        self.prepare_for(frame.width, frame.height, frame.format)?;
        let prepared = self.prepared.as_ref().expect("prepared above");
        let (sg, window) = match (self.crop.next, &prepared.crop) {
            (Some(w), Some(sg)) => (sg, w),
            _ => (
                &prepared.full,
                Window {
                    x: 0,
                    y: 0,
                    w: frame.width,
                    h: frame.height,
                },
            ),
        };
        self.use_crop = !std::ptr::eq(sg, &prepared.full);
        self.window = window;
        let net = &mut self.nets[0];
        net.pre
            .fill(frame, window, &sg.geom, net.runner.input_mut(sg.slot));
        Ok(())
    }

    fn current(&self) -> &SlotGeom {
        let prepared = self.prepared.as_ref().expect("stage_input prepares");
        match (&prepared.crop, self.use_crop) {
            (Some(sg), true) => sg,
            _ => &prepared.full,
        }
    }

    /// Run the main network on the staged input.
    pub fn stage_run(&mut self) -> Result<&[OutTensor], InferenceError> {
        let slot = self.current().slot;
        self.nets[0].runner.run(slot)
    }

    /// Decode the main network's last outputs into instances (frame px), run the second stage where the model
    /// has one, and place the next dynamic crop. Returns the number of instances.
    pub fn stage_decode(&mut self, frame: &Frame) -> Result<usize, InferenceError> {
        let window = self.window;
        let Self {
            nets,
            decoder,
            instances,
            prepared,
            use_crop,
            ..
        } = self;
        let prepared = prepared
            .as_ref()
            .ok_or_else(|| InferenceError::Shape("stage_decode before stage_input".into()))?;
        let sg = match (&prepared.crop, *use_crop) {
            (Some(sg), true) => sg,
            _ => &prepared.full,
        };
        let (main, rest) = nets.split_first_mut().expect("a model has a network");
        let outputs = main.runner.outputs(sg.slot);
        let to_frame = |x: f32, y: f32| sg.geom.to_frame(window, x, y);
        let count = match decoder {
            Decoder::Dlc(d) => d.decode(outputs, instances, &to_frame)?,
            Decoder::Sleap(sleap::SleapDecoder::Topdown(t)) => {
                let stage2 = prepared
                    .stage2
                    .as_ref()
                    .ok_or_else(|| InferenceError::Shape("second stage not prepared".into()))?;
                let mut stage2 = Stage2 {
                    net: &mut rest[0],
                    sg: stage2,
                    frame,
                };
                t.decode(outputs, &to_frame, instances, &mut stage2)?
            }
            Decoder::Sleap(d) => d.decode(outputs, instances, &to_frame)?,
        };
        self.count = count;
        self.crop.next = self.crop_window(&self.instances[..count]);
        Ok(count)
    }

    /// Pre-process and run the main network on `frame`, returning its raw outputs (for comparing runtimes).
    pub fn run_raw(&mut self, frame: &Frame) -> Result<&[OutTensor], InferenceError> {
        self.stage_input(frame)?;
        self.stage_run()
    }

    /// Estimate every instance in `frame`; the number found (see [`PoseModel::instances`]).
    pub fn estimate_all(&mut self, frame: &Frame) -> Result<usize, InferenceError> {
        self.stage_input(frame)?;
        self.stage_run()?;
        self.stage_decode(frame)
    }
}

/// The second-stage network (SLEAP's centered-instance model) as the top-down decoder drives it: crop the
/// frame at an origin, run, read the outputs.
pub(crate) struct Stage2<'a> {
    net: &'a mut Net,
    sg: &'a SlotGeom,
    frame: &'a Frame,
}

impl Stage2<'_> {
    /// Fill the network input with the frame window whose top-left is `origin` (frame px; outside the frame
    /// is zero) and run it.
    pub(crate) fn run_at(&mut self, origin: (i64, i64)) -> Result<&[OutTensor], InferenceError> {
        let net = &mut *self.net;
        net.pre.fill_clipped(
            self.frame,
            origin,
            &self.sg.geom,
            net.runner.input_mut(self.sg.slot),
        );
        net.runner.run(self.sg.slot)
    }
}

impl PoseModel for Model {
    fn keypoints(&self) -> &[String] {
        &self.keypoints
    }

    fn backend(&self) -> &'static str {
        self.nets[0].runner.name()
    }

    fn prepare(
        &mut self,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<(), InferenceError> {
        self.prepare_for(width, height, format)
    }

    fn estimate(&mut self, frame: &Frame, pose: &mut Pose) -> Result<(), InferenceError> {
        let n = self.estimate_all(frame)?;
        *pose = if n > 0 {
            self.instances[0]
        } else {
            Pose::new(self.keypoints.len()) // every keypoint missing
        };
        Ok(())
    }

    fn instances(&self) -> &[Pose] {
        &self.instances[..self.count]
    }
}

/// Where a configured model's files are.
enum Source {
    Builtin,
    Folder { dir: PathBuf, files: Vec<String> },
}

fn read(path: &Path) -> Result<Vec<u8>, InferenceError> {
    std::fs::read(path).map_err(|source| InferenceError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, InferenceError> {
    String::from_utf8(read(path)?).map_err(|_| InferenceError::Metadata {
        file: path.display().to_string(),
        message: "not UTF-8 text".into(),
    })
}

fn resolve(config: &ModelConfig) -> Result<Source, InferenceError> {
    if config.path == "builtin" {
        return Ok(Source::Builtin);
    }
    let path = Path::new(&config.path);
    let meta = std::fs::metadata(path).map_err(|e| InferenceError::Metadata {
        file: path.display().to_string(),
        message: format!(
            "{e}; expected an export folder (model.onnx with pose_cfg.yaml or export_metadata.json), an .onnx file in one, or `builtin`"
        ),
    })?;
    if meta.is_file() {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files = vec![name.clone()];
        files.extend(config.networks.iter().filter(|n| **n != name).cloned());
        return Ok(Source::Folder { dir, files });
    }
    let dir = path.to_path_buf();
    if !config.networks.is_empty() {
        return Ok(Source::Folder {
            dir,
            files: config.networks.clone(),
        });
    }
    if dir.join("model.onnx").is_file() {
        return Ok(Source::Folder {
            dir,
            files: vec!["model.onnx".into()],
        });
    }
    let mut onnx: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|source| InferenceError::Read {
            path: dir.clone(),
            source,
        })?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".onnx"))
        .collect();
    onnx.sort();
    match onnx.len() {
        1 => Ok(Source::Folder { dir, files: onnx }),
        0 => Err(InferenceError::Metadata {
            file: dir.display().to_string(),
            message: "no ONNX network here (model.onnx or another .onnx file)".into(),
        }),
        _ => Err(InferenceError::Metadata {
            file: dir.display().to_string(),
            message: format!(
                "several ONNX networks and no model.onnx ({}): name the one(s) to run in [model] networks",
                onnx.join(", ")
            ),
        }),
    }
}

fn onnx_info(bytes: &[u8], file: &str) -> Result<OnnxInfo, InferenceError> {
    OnnxInfo::parse(bytes).map_err(|e| InferenceError::Metadata {
        file: file.to_string(),
        message: e.to_string(),
    })
}

/// Read the configured model's files and metadata and plan its networks and decoder (no runtime needed).
fn plan_model(config: &ModelConfig) -> Result<Plan, InferenceError> {
    let (dir, files) = match resolve(config)? {
        Source::Builtin => {
            let file = "builtin model.onnx";
            let info = onnx_info(BUILTIN_MODEL_ONNX, file)?;
            let s = dlc::parse_settings(BUILTIN_POSE_CFG, "builtin pose_cfg.yaml", None)?;
            let mut plan = dlc::plan(
                file,
                BUILTIN_MODEL_ONNX.to_vec(),
                info,
                s,
                "builtin pose_cfg.yaml",
            )?;
            plan.kind = format!("reflex's bundled marker detector; {}", plan.kind);
            return Ok(plan);
        }
        Source::Folder { dir, files } => (dir, files),
    };
    let mut nets = Vec::new();
    for f in &files {
        let path = dir.join(f);
        let bytes = read(&path)?;
        let name = path.display().to_string();
        let info = onnx_info(&bytes, &name)?;
        nets.push((name, bytes, info));
    }
    let pose_cfg = dir.join("pose_cfg.yaml");
    let kind = match config.kind {
        ModelKind::Auto if pose_cfg.is_file() => ModelKind::Dlc,
        ModelKind::Auto
            if dir.join("export_metadata.json").is_file()
                || nets[0].2.metadata.contains_key("sleap_nn_metadata") =>
        {
            ModelKind::Sleap
        }
        ModelKind::Auto => {
            return Err(InferenceError::Metadata {
                file: dir.display().to_string(),
                message: "neither a DeepLabCut export (pose_cfg.yaml) nor a SLEAP export (export_metadata.json, or sleap-nn metadata inside the ONNX); add the metadata file, or set [model] kind".into(),
            });
        }
        k => k,
    };
    match kind {
        ModelKind::Dlc => {
            if nets.len() != 1 {
                return Err(InferenceError::Shape(format!(
                    "{} networks named; a DeepLabCut export has one",
                    nets.len()
                )));
            }
            let cfg = read_text(&pose_cfg)?;
            let cfg_file = pose_cfg.display().to_string();
            let torch_path = dir.join("pytorch_config.yaml");
            let torch = if torch_path.is_file() {
                Some((read_text(&torch_path)?, torch_path.display().to_string()))
            } else {
                None
            };
            let s = dlc::parse_settings(
                &cfg,
                &cfg_file,
                torch.as_ref().map(|(t, f)| (t.as_str(), f.as_str())),
            )?;
            let (file, bytes, info) = nets.remove(0);
            dlc::plan(&file, bytes, info, s, &cfg_file)
        }
        ModelKind::Sleap => {
            let meta = sleap::read_meta(&dir, &nets[0].2, &nets[0].0)?;
            sleap::plan(nets, meta)
        }
        ModelKind::Auto => unreachable!("resolved above"),
    }
}

/// Describe the configured model without loading a runtime (`reflex model inspect`).
pub fn inspect(config: &ModelConfig) -> Result<Description, InferenceError> {
    let plan = plan_model(config)?;
    Ok(Description {
        kind: plan.kind,
        decoder: plan.decoder_name,
        keypoints: plan.keypoints,
        networks: plan
            .nets
            .iter()
            .map(|n| (n.file.clone(), n.info.clone(), n.feeds()))
            .collect(),
        details: plan.details,
        max_instances: plan.max_instances,
    })
}

/// Load the configured model on the configured runtime. `notice` receives one line when `auto` falls back
/// to tract, saying how to get the faster runtime. A network with a fixed input size is prepared for it
/// (and run once) here; others are prepared for the camera's frame size by [`PoseModel::prepare`].
pub fn load(config: &ModelConfig, notice: &mut dyn FnMut(String)) -> Result<Model, InferenceError> {
    config
        .validate()
        .map_err(|m| InferenceError::Unavailable(format!("[model] {m}")))?;
    let plan = plan_model(config)?;
    let backend = match config.backend {
        BackendChoice::Auto => match find_onnxruntime() {
            Ok(_) => BackendChoice::Onnxruntime,
            Err(why) => {
                if config.providers.iter().any(|&p| p != Provider::Cpu) {
                    return Err(InferenceError::Unavailable(format!(
                        "[model] providers asks for a GPU provider but ONNX Runtime is not loaded: {why}"
                    )));
                }
                notice(format!(
                    "note: using the pure-Rust tract backend (ONNX Runtime not loaded: {why}); for faster inference `pip install onnxruntime==1.31.1` or set ORT_DYLIB_PATH"
                ));
                BackendChoice::Tract
            }
        },
        b => b,
    };
    let mut runners = Vec::new();
    for net in &plan.nets {
        runners.push(make_runner(
            backend,
            &net.onnx,
            &net.io,
            config.threads.max(1),
            &config.providers,
            notice,
        )?);
    }
    let mut model = Model::new(plan, runners, config.crop.clone());
    if let Some((w, h)) = model.input_spec().fixed_size {
        model.prepare_for(w, h, PixelFormat::Rgb8)?;
    }
    Ok(model)
}

/// Build the runner for `choice` (`auto`: ONNX Runtime when its library loads, else tract with a notice).
pub fn make_runner(
    choice: BackendChoice,
    onnx: &[u8],
    io: &NetIo,
    threads: usize,
    providers: &[Provider],
    notice: &mut dyn FnMut(String),
) -> Result<Box<dyn Runner>, InferenceError> {
    match choice {
        BackendChoice::Onnxruntime => Ok(Box::new(OrtRunner::new(onnx, io, threads, providers)?)),
        BackendChoice::Tract => tract_runner(onnx, io, providers),
        BackendChoice::Auto => match OrtRunner::new(onnx, io, threads, providers) {
            Ok(r) => Ok(Box::new(r)),
            Err(InferenceError::Unavailable(why)) if find_onnxruntime().is_err() => {
                notice(format!(
                    "note: using the pure-Rust tract backend ({why}); for faster inference `pip install onnxruntime==1.31.1` or set ORT_DYLIB_PATH"
                ));
                tract_runner(onnx, io, providers)
            }
            Err(e) => Err(e),
        },
    }
}

#[cfg(feature = "tract")]
fn tract_runner(
    onnx: &[u8],
    io: &NetIo,
    providers: &[Provider],
) -> Result<Box<dyn Runner>, InferenceError> {
    if let Some(p) = providers.iter().find(|&&p| p != Provider::Cpu) {
        return Err(InferenceError::Unavailable(format!(
            "execution provider `{}` was asked for ([model] providers) but tract runs on the CPU only; use backend = \"onnxruntime\" with a GPU build",
            p.name()
        )));
    }
    Ok(Box::new(TractRunner::new(onnx, io)?))
}

#[cfg(not(feature = "tract"))]
fn tract_runner(
    _onnx: &[u8],
    _io: &NetIo,
    _providers: &[Provider],
) -> Result<Box<dyn Runner>, InferenceError> {
    Err(InferenceError::Unavailable(
        "this reflex was built without the `tract` feature; install ONNX Runtime (`pip install onnxruntime==1.31.1`) or rebuild with default features".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn model_keys_parse_and_their_errors_name_key_and_line() {
        let text = "[model]\npath = \"models/fly\"\nkind = \"sleap\"\nnetworks = [\"centroid.onnx\", \"instance.onnx\"]\nproviders = [\"cuda\", \"cpu\"]\n\n[model.crop]\nenabled = true\nmargin_px = 20\nsize = [256, 192]\n";
        let c = Config::parse(text, "rig.toml").unwrap();
        assert_eq!(c.model.kind, ModelKind::Sleap);
        assert_eq!(c.model.networks.len(), 2);
        assert_eq!(c.model.providers, [Provider::Cuda, Provider::Cpu]);
        assert_eq!(
            (
                c.model.crop.enabled,
                c.model.crop.margin_px,
                c.model.crop.size
            ),
            (true, 20, [256, 192])
        );
        assert_eq!(
            Config::parse(&c.to_toml(), "effective").unwrap().model,
            c.model
        );

        let e =
            Config::parse("[model.crop]\nenabled = true\nmargn_px = 3\n", "rig.toml").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("margn_px"), "{e}");
        let e = Config::parse("[model]\nproviders = [\"rocm\"]\n", "rig.toml").unwrap_err();
        assert!(e.line == Some(2) && e.to_string().contains("rocm"), "{e}");
        let e = Config::parse("[model]\nkind = \"openpose\"\n", "rig.toml").unwrap_err();
        assert!(
            e.line == Some(2) && e.to_string().contains("openpose"),
            "{e}"
        );
        let e = Config::parse("[model.crop]\nsize = [256, 0]\n", "rig.toml").unwrap_err();
        assert!(e.to_string().contains("model.crop.size"), "{e}");
        let e = Config::parse("[model]\nproviders = []\n", "rig.toml").unwrap_err();
        assert!(e.to_string().contains("model.providers is empty"), "{e}");
    }

    #[test]
    fn the_bundled_model_is_described_without_a_runtime() {
        let d = inspect(&ModelConfig::default()).unwrap();
        assert!(d.kind.contains("bundled marker detector"), "{}", d.kind);
        assert_eq!(d.keypoints, ["nose", "ear_left", "ear_right", "tail_base"]);
        assert!(d.decoder.contains("argmax_pose_predict"));
        assert!(
            d.networks[0]
                .2
                .contains("NHWC float32 RGB, raw 0-255; input size 640x480"),
            "{}",
            d.networks[0].2
        );
    }
}
