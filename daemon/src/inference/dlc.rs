//! DeepLabCut: reading an exported model's metadata and decoding its score maps exactly as DeepLabCut-Live
//! does.
//!
//! Two export layouts: the TensorFlow export (`pose_cfg.yaml` + NHWC float input of raw 0–255 RGB, outputs
//! `Sigmoid` score maps and `pose/locref_pred/block4/BiasAdd` location refinement) and DeepLabCut 3's PyTorch
//! network (NCHW input `v/255` then ImageNet mean/std, outputs heatmap logits and locref; settings also in
//! `pytorch_config.yaml`). Decoding, per keypoint k (`dlclive/pose_estimation_tensorflow/pose.py:
//! argmax_pose_predict`, `dlclive/pose_estimation_pytorch/models/predictors/single_predictor.py`): the first
//! maximum of its score map in row-major order, `x = col·stride + stride/2 + dx·locref_stdev`,
//! `y = row·stride + stride/2 + dy·locref_stdev`, likelihood = the score there. The grid size is read from
//! the output (DeepLabCut's deconvolution heads give 2n+1 cells, not input/stride).

use reflex_plugins::pose::{Keypoint, Pose};

use super::onnx_info::{Dim, ElemType, OnnxInfo, TensorInfo};
use super::preprocess::{InputSpec, InputType, Layout, Scaling};
use super::yaml::Doc;
use super::{Decoder, InferenceError, NetIo, NetPlan, OutTensor, Plan};

/// DeepLabCut's default `locref_stdev`.
pub const DEFAULT_LOCREF_STDEV: f32 = 7.2801;
/// ImageNet mean and std, DeepLabCut 3's `normalize_images`.
pub const IMAGENET: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

/// The settings DeepLabCut's metadata gives the decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct DlcSettings {
    /// Keypoint names, in output channel order (`all_joints_names`).
    pub keypoints: Vec<String>,
    /// Output stride in px (`stride`).
    pub stride: f32,
    /// Scale of the location-refinement maps (`locref_stdev`; DeepLabCut 3: the predictor's `locref_std`).
    pub locref_stdev: f32,
    /// Whether the network has locref outputs (`location_refinement`).
    pub location_refinement: bool,
    /// Predictions per keypoint (`num_outputs`; > 1 → DeepLabCut-Live's `multi_pose_predict`).
    pub num_outputs: usize,
    /// DeepLabCut 3 PyTorch conventions (NCHW, logits, ImageNet normalisation, float32 arithmetic).
    pub pytorch: bool,
    /// reflex applies the sigmoid to the score maps (PyTorch `apply_sigmoid`).
    pub apply_sigmoid: bool,
    /// Scores clipped to [0, 1] (PyTorch `clip_scores`).
    pub clip_scores: bool,
    /// `v/255` then ImageNet mean/std (PyTorch `normalize_images`).
    pub normalize_images: bool,
    /// The network wants BGR (`data.colormode: BGR`).
    pub bgr: bool,
    /// Layout named in the metadata (`input_layout: NCHW|NHWC`), when it says.
    pub layout_hint: Option<Layout>,
}

fn meta_err(file: &str, message: String) -> InferenceError {
    InferenceError::Metadata {
        file: file.to_string(),
        message,
    }
}

fn number(doc: &Doc, key: &str, file: &str) -> Result<Option<f32>, InferenceError> {
    match doc.scalar(key) {
        None => Ok(None),
        Some((v, line)) => v.parse::<f32>().map(Some).map_err(|_| {
            meta_err(
                file,
                format!("line {line}: `{key}` must be a number, got `{v}`"),
            )
        }),
    }
}

fn boolean(doc: &Doc, key: &str, file: &str) -> Result<Option<bool>, InferenceError> {
    match doc.scalar(key) {
        None => Ok(None),
        Some((v, line)) => match v.to_ascii_lowercase().as_str() {
            "true" | "yes" => Ok(Some(true)),
            "false" | "no" => Ok(Some(false)),
            _ => Err(meta_err(
                file,
                format!("line {line}: `{key}` must be true or false, got `{v}`"),
            )),
        },
    }
}

/// Read the decoder's settings from `pose_cfg.yaml` (`cfg`, named `cfg_file` in errors) and, for DeepLabCut 3,
/// `pytorch_config.yaml`. Refuses multi-animal and top-down models with a message saying what they are.
pub fn parse_settings(
    cfg: &str,
    cfg_file: &str,
    pytorch: Option<(&str, &str)>,
) -> Result<DlcSettings, InferenceError> {
    let doc = Doc::parse(cfg);
    let err = |m: String| meta_err(cfg_file, m);
    let torch_doc = pytorch.map(|(text, file)| (Doc::parse(text), file));

    let mut keypoints: Option<Vec<String>> = doc.list("all_joints_names").map(|(l, _)| l.to_vec());
    if keypoints.is_none()
        && let Some((d, _)) = &torch_doc
    {
        keypoints = d.list("metadata.bodyparts").map(|(l, _)| l.to_vec());
    }
    let keypoints =
        keypoints.ok_or_else(|| err("missing `all_joints_names` (the keypoint names)".into()))?;
    if keypoints.is_empty() {
        return Err(err("`all_joints_names` is empty".into()));
    }
    if keypoints.len() > reflex_plugins::pose::MAX_KEYPOINTS {
        return Err(err(format!(
            "{} keypoints in `all_joints_names`; reflex handles at most {}",
            keypoints.len(),
            reflex_plugins::pose::MAX_KEYPOINTS
        )));
    }
    let stride = number(&doc, "stride", cfg_file)?
        .ok_or_else(|| err("missing `stride` (the network's output stride in px)".into()))?;
    if stride.is_nan() || stride <= 0.0 {
        return Err(err(format!("`stride` must be > 0, got {stride}")));
    }
    let mut locref_stdev = number(&doc, "locref_stdev", cfg_file)?.unwrap_or(DEFAULT_LOCREF_STDEV);
    let mut location_refinement = boolean(&doc, "location_refinement", cfg_file)?.unwrap_or(true);
    let num_outputs = match number(&doc, "num_outputs", cfg_file)? {
        None => 1,
        Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= 64.0 => n as usize,
        Some(n) => {
            return Err(err(format!(
                "`num_outputs` must be a whole number 1..=64, got {n}"
            )));
        }
    };
    for key in ["multi_stage", "partaffinityfield_predict"] {
        if boolean(&doc, key, cfg_file)? == Some(true) {
            return Err(InferenceError::Unsupported(format!(
                "{cfg_file}: `{key}: true` is a multi-animal DeepLabCut model (part-affinity fields and assembly); reflex decodes single-animal score maps + locref, and `num_outputs` > 1 (DeepLabCut-Live's multi_pose_predict)"
            )));
        }
    }
    if number(&doc, "num_idchannel", cfg_file)?.unwrap_or(0.0) > 0.0 {
        return Err(InferenceError::Unsupported(format!(
            "{cfg_file}: `num_idchannel` > 0 is a multi-animal identity head; reflex decodes single-animal score maps + locref"
        )));
    }
    let engine = doc.scalar("engine").map(|(v, _)| v.to_ascii_lowercase());
    let is_torch = engine.as_deref() == Some("pytorch") || torch_doc.is_some();
    let mut apply_sigmoid = is_torch;
    let mut clip_scores = false;
    let mut normalize_images = is_torch;
    let mut bgr = false;
    if let Some((d, file)) = &torch_doc {
        let terr = |m: String| meta_err(file, m);
        if let Some((method, line)) = d.scalar("method")
            && method.eq_ignore_ascii_case("td")
        {
            return Err(InferenceError::Unsupported(format!(
                "{file} line {line}: `method: td` is a top-down DeepLabCut 3 model (needs an animal detector first); reflex runs bottom-up single-animal heatmap models"
            )));
        }
        if let Some((ty, line)) = d.scalar("model.heads.bodypart.predictor.type")
            && ty != "HeatmapPredictor"
        {
            return Err(InferenceError::Unsupported(format!(
                "{file} line {line}: predictor `{ty}` (multi-animal heads: part-affinity fields, DEKR, identity); reflex decodes DeepLabCut 3's single-animal HeatmapPredictor"
            )));
        }
        let p = "model.heads.bodypart.predictor";
        if let Some(v) = boolean(d, &format!("{p}.apply_sigmoid"), file)? {
            apply_sigmoid = v;
        }
        if let Some(v) = boolean(d, &format!("{p}.clip_scores"), file)? {
            clip_scores = v;
        }
        if let Some(v) = boolean(d, &format!("{p}.location_refinement"), file)? {
            location_refinement = v;
        }
        if let Some(v) = number(d, &format!("{p}.locref_std"), file)? {
            locref_stdev = v;
        }
        if let Some(v) = boolean(d, "data.inference.normalize_images", file)? {
            normalize_images = v;
        }
        if let Some((mode, line)) = d.scalar("data.colormode") {
            bgr = match mode.to_ascii_uppercase().as_str() {
                "RGB" => false,
                "BGR" => true,
                _ => {
                    return Err(terr(format!(
                        "line {line}: `data.colormode` must be RGB or BGR, got `{mode}`"
                    )));
                }
            };
        }
    }
    // pose_cfg.yaml keys written for exported PyTorch models override the defaults.
    if let Some(v) = boolean(&doc, "apply_sigmoid", cfg_file)? {
        apply_sigmoid = v;
    }
    if let Some(v) = boolean(&doc, "clip_scores", cfg_file)? {
        clip_scores = v;
    }
    if let Some(v) = boolean(&doc, "normalize_images", cfg_file)? {
        normalize_images = v;
    }
    let layout_hint = match doc.scalar("input_layout") {
        None => None,
        Some((v, line)) => match v.to_ascii_uppercase().as_str() {
            "NCHW" => Some(Layout::Nchw),
            "NHWC" => Some(Layout::Nhwc),
            _ => {
                return Err(err(format!(
                    "line {line}: `input_layout` must be NCHW or NHWC, got `{v}`"
                )));
            }
        },
    };
    Ok(DlcSettings {
        keypoints,
        stride,
        locref_stdev,
        location_refinement,
        num_outputs,
        pytorch: is_torch,
        apply_sigmoid,
        clip_scores,
        normalize_images,
        bgr,
        layout_hint,
    })
}

/// Read the keys the decoder needs from a DeepLabCut `pose_cfg.yaml`: `all_joints_names`, `stride`,
/// `locref_stdev` (default 7.2801 as in DeepLabCut).
pub fn parse_pose_cfg(text: &str, file: &str) -> Result<(Vec<String>, f32, f32), InferenceError> {
    let s = parse_settings(text, file, None)?;
    Ok((s.keypoints, s.stride, s.locref_stdev))
}

/// The channel count of a rank-4 output in `layout`, if fixed.
fn channels(t: &TensorInfo, layout: Layout) -> Option<usize> {
    match layout {
        Layout::Nhwc => t.dims.get(3)?.fixed(),
        Layout::Nchw => t.dims.get(1)?.fixed(),
    }
}

/// Plan a DeepLabCut network: check its interface against the settings, pick the outputs, describe the input.
pub(crate) fn plan(
    file: &str,
    onnx: Vec<u8>,
    info: OnnxInfo,
    s: DlcSettings,
    cfg_file: &str,
) -> Result<Plan, InferenceError> {
    let joints = s.keypoints.len();
    if info.inputs.len() != 1 {
        let names: Vec<String> = info.inputs.iter().map(|i| i.to_string()).collect();
        return Err(InferenceError::Shape(format!(
            "{file}: {} inputs ({}); a DeepLabCut network takes one image",
            info.inputs.len(),
            names.join(", ")
        )));
    }
    let input = &info.inputs[0];
    if input.dims.len() != 4 {
        return Err(InferenceError::Shape(format!(
            "{file}: input {input} has rank {}; a DeepLabCut network takes one image [batch, height, width, 3] (TensorFlow export) or [batch, 3, height, width] (PyTorch)",
            input.dims.len()
        )));
    }
    let dtype = match input.elem {
        ElemType::F32 => InputType::F32,
        ElemType::U8 => InputType::U8,
        other => {
            return Err(InferenceError::Shape(format!(
                "{file}: input {input} is {other}; reflex feeds float32 or uint8 images"
            )));
        }
    };
    let is_ch = |d: &Dim| matches!(d.fixed(), Some(1 | 3));
    let layout = match (is_ch(&input.dims[3]), is_ch(&input.dims[1])) {
        (true, false) => Layout::Nhwc,
        (false, true) => Layout::Nchw,
        (true, true) => s.layout_hint.unwrap_or(if s.pytorch {
            Layout::Nchw
        } else {
            Layout::Nhwc
        }),
        (false, false) => match s.layout_hint {
            Some(l) => l,
            None => {
                return Err(InferenceError::Shape(format!(
                    "{file}: input {input} has no channel axis of size 1 or 3 (expected [batch, height, width, 3] or [batch, 3, height, width]); set `input_layout: NHWC|NCHW` in {cfg_file} if the size is dynamic"
                )));
            }
        },
    };
    let (h, w, c) = match layout {
        Layout::Nhwc => (&input.dims[1], &input.dims[2], &input.dims[3]),
        Layout::Nchw => (&input.dims[2], &input.dims[3], &input.dims[1]),
    };
    let fixed_size = match (w.fixed(), h.fixed()) {
        (Some(w), Some(h)) if w > 0 && h > 0 => Some((w as u32, h as u32)),
        _ => None,
    };

    // Outputs: the score map has one channel per keypoint, locref two.
    let (mut scores, mut locrefs, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for (i, o) in info.outputs.iter().enumerate() {
        match if o.dims.len() == 4 {
            channels(o, layout)
        } else {
            None
        } {
            Some(c) if c == joints => scores.push(i),
            Some(c) if c == 2 * joints => locrefs.push(i),
            _ => unknown.push(i),
        }
    }
    let score_hint = |n: &str| {
        let n = n.to_ascii_lowercase();
        n.contains("sigmoid")
            || n.contains("heatmap")
            || n.contains("part_pred")
            || n.contains("scmap")
    };
    // Several candidates: the one whose name says what it is wins, the rest are unknown.
    let mut pick = |cands: Vec<usize>, hint: &dyn Fn(&str) -> bool| -> Option<usize> {
        let chosen = cands
            .iter()
            .copied()
            .find(|&i| hint(&info.outputs[i].name))
            .or(cands.first().copied());
        unknown.extend(cands.into_iter().filter(|&i| Some(i) != chosen));
        chosen
    };
    let score = pick(scores, &score_hint);
    let locref = pick(locrefs, &|n: &str| {
        n.to_ascii_lowercase().contains("locref")
    });
    unknown.sort_unstable();
    let describe = |idx: &[usize]| {
        idx.iter()
            .map(|&i| info.outputs[i].to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let layout_name = if layout == Layout::Nhwc {
        "NHWC"
    } else {
        "NCHW"
    };
    let Some(score) = score else {
        return Err(InferenceError::Shape(format!(
            "{file}: no score-map output with {joints} channels (one per keypoint in all_joints_names of {cfg_file}, {layout_name} like the input) among its outputs: {}",
            info.output_names()
        )));
    };
    if !unknown.is_empty() {
        return Err(InferenceError::Shape(format!(
            "{file}: unknown output(s) {}: neither a score map ({joints} channels, one per keypoint) nor locref ({} channels), {layout_name} like the input; multi-animal heads (part-affinity fields, identity) are not supported",
            describe(&unknown),
            2 * joints
        )));
    }
    if s.location_refinement && locref.is_none() {
        return Err(InferenceError::Shape(format!(
            "{file}: {cfg_file} sets location_refinement: true but the network has no locref output with {} channels (outputs: {})",
            2 * joints,
            info.output_names()
        )));
    }
    let locref = if s.location_refinement { locref } else { None };
    // A TensorFlow export's score map is the `Sigmoid` node; a raw part_pred needs the sigmoid applied.
    let sigmoid = s.apply_sigmoid
        || (!s.pytorch
            && info.outputs[score]
                .name
                .to_ascii_lowercase()
                .contains("part_pred"));
    let mut outputs = vec![info.outputs[score].name.as_str()];
    if let Some(l) = locref {
        outputs.push(info.outputs[l].name.as_str());
    }
    let io = NetIo::new(&info, dtype, &outputs);
    let spec = InputSpec {
        name: input.name.clone(),
        layout,
        dtype,
        channels: c.fixed().unwrap_or(3),
        bgr: s.bgr,
        scaling: if s.pytorch && s.normalize_images {
            Scaling::MulReciprocal255
        } else {
            Scaling::Raw
        },
        mean_std: if s.pytorch && s.normalize_images {
            Some(IMAGENET)
        } else {
            None
        },
        fixed_size,
        divisor: 1,
        input_scale: 1.0,
    };
    let kind = if s.pytorch {
        "DeepLabCut 3 (PyTorch network: heatmap logits + locref)"
    } else {
        "DeepLabCut (TensorFlow export layout: Sigmoid score map + locref)"
    };
    let decoder_name = if s.num_outputs > 1 {
        format!(
            "top {} cells per keypoint, as DeepLabCut-Live's multi_pose_predict (num_outputs = {}; instances are ranks, not animals)",
            s.num_outputs, s.num_outputs
        )
    } else if s.pytorch {
        "argmax + locref, as DeepLabCut-Live's PyTorch HeatmapPredictor".to_string()
    } else {
        "argmax + locref, as DeepLabCut-Live's argmax_pose_predict".to_string()
    };
    let details = vec![
        (
            "stride".to_string(),
            format!("{} px (grid size read from the output)", s.stride),
        ),
        (
            "locref_stdev".to_string(),
            if locref.is_some() {
                s.locref_stdev.to_string()
            } else {
                "(no location refinement)".into()
            },
        ),
        ("num_outputs".to_string(), s.num_outputs.to_string()),
        (
            "score map".to_string(),
            format!(
                "`{}`{}{}",
                info.outputs[score].name,
                if sigmoid {
                    ", sigmoid applied by reflex"
                } else {
                    ""
                },
                if s.clip_scores {
                    ", clipped to [0, 1]"
                } else {
                    ""
                }
            ),
        ),
    ];
    let decoder = DlcDecoder {
        joints,
        nchw: layout == Layout::Nchw,
        sigmoid,
        clip: s.clip_scores,
        stride: s.stride,
        locref_stdev: s.locref_stdev,
        num_outputs: s.num_outputs,
        pytorch: s.pytorch,
        locref: locref.is_some(),
        top: Vec::with_capacity(s.num_outputs + 1),
    };
    Ok(Plan {
        kind: kind.into(),
        decoder_name,
        keypoints: s.keypoints,
        nets: vec![NetPlan {
            file: file.to_string(),
            onnx,
            info,
            spec,
            io,
            role: None,
        }],
        decoder: Decoder::Dlc(decoder),
        details,
        align: (s.stride as u32).max(1),
        max_instances: s.num_outputs,
    })
}

/// DeepLabCut's decoder over the network's outputs.
#[derive(Debug, Clone)]
pub struct DlcDecoder {
    joints: usize,
    nchw: bool,
    sigmoid: bool,
    clip: bool,
    stride: f32,
    locref_stdev: f32,
    num_outputs: usize,
    pytorch: bool,
    locref: bool,
    /// The best cells of one joint: (score, flat index); capacity `num_outputs + 1`, made at load.
    top: Vec<(f32, usize)>,
}

/// A score-map-shaped output: grid rows, cols and channels in either layout.
struct Grid<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    channels: usize,
    nchw: bool,
}

impl Grid<'_> {
    fn of<'a>(t: &'a OutTensor, nchw: bool) -> Grid<'a> {
        let (rows, cols, channels) = if nchw {
            (t.shape[2], t.shape[3], t.shape[1])
        } else {
            (t.shape[1], t.shape[2], t.shape[3])
        };
        Grid {
            data: &t.data,
            rows,
            cols,
            channels,
            nchw,
        }
    }

    #[inline]
    fn at(&self, cell: usize, channel: usize) -> f32 {
        if self.nchw {
            self.data[channel * self.rows * self.cols + cell]
        } else {
            self.data[cell * self.channels + channel]
        }
    }
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl DlcDecoder {
    /// A decoder for `joints` keypoints with DeepLabCut's defaults (TensorFlow layout, locref).
    pub fn tensorflow(joints: usize, stride: f32, locref_stdev: f32) -> Self {
        Self {
            joints,
            nchw: false,
            sigmoid: false,
            clip: false,
            stride,
            locref_stdev,
            num_outputs: 1,
            pytorch: false,
            locref: true,
            top: Vec::with_capacity(2),
        }
    }

    /// Check the output shapes of one slot: rank 4, batch 1, the channel counts, the same grid for both.
    pub fn check(&mut self, outputs: &[OutTensor], file: &str) -> Result<(), InferenceError> {
        let want = if self.locref { 2 } else { 1 };
        if outputs.len() != want {
            return Err(InferenceError::Shape(format!(
                "{file}: {} outputs bound, the decoder needs {want}",
                outputs.len()
            )));
        }
        for (t, ch) in outputs.iter().zip([self.joints, 2 * self.joints]) {
            let ok = t.shape.len() == 4 && t.shape[0] == 1 && {
                let g = Grid::of(t, self.nchw);
                g.channels == ch && g.rows > 0 && g.cols > 0
            };
            if !ok {
                return Err(InferenceError::Shape(format!(
                    "{file}: output `{}` is {:?} after a run, expected [1, rows, cols, {ch}] ({})",
                    t.name,
                    t.shape,
                    if self.nchw {
                        "NCHW: [1, channels, rows, cols]"
                    } else {
                        "NHWC"
                    }
                )));
            }
        }
        if self.locref {
            let (a, b) = (
                Grid::of(&outputs[0], self.nchw),
                Grid::of(&outputs[1], self.nchw),
            );
            if (a.rows, a.cols) != (b.rows, b.cols) {
                return Err(InferenceError::Shape(format!(
                    "{file}: score map grid {}x{} differs from locref grid {}x{}",
                    a.rows, a.cols, b.rows, b.cols
                )));
            }
        }
        if self.num_outputs > a_cells(&outputs[0], self.nchw) {
            return Err(InferenceError::Shape(format!(
                "{file}: num_outputs {} exceeds the score map's cells",
                self.num_outputs
            )));
        }
        Ok(())
    }

    /// Decode into `instances` (rank `m` of every keypoint in instance `m`), coordinates mapped by `to_frame`
    /// from network-input px. Returns the number of instances (`num_outputs`).
    pub fn decode(
        &mut self,
        outputs: &[OutTensor],
        instances: &mut [Pose],
        to_frame: &dyn Fn(f32, f32) -> (f32, f32),
    ) -> Result<usize, InferenceError> {
        let score = Grid::of(&outputs[0], self.nchw);
        let locref = if self.locref {
            Some(Grid::of(&outputs[1], self.nchw))
        } else {
            None
        };
        let cells = score.rows * score.cols;
        let n = self.num_outputs.min(instances.len());
        for inst in instances[..n].iter_mut() {
            *inst = Pose::new(self.joints);
        }
        let value = |cell: usize, j: usize| {
            let v = score.at(cell, j);
            let v = if self.sigmoid { sigmoid(v) } else { v };
            if self.clip { v.clamp(0.0, 1.0) } else { v }
        };
        for j in 0..self.joints {
            self.top.clear();
            if n == 1 {
                // np.argmax / torch.argmax: the first maximum in row-major order.
                let (mut best, mut best_v) = (0, f32::NEG_INFINITY);
                for cell in 0..cells {
                    let v = value(cell, j);
                    if v > best_v {
                        best_v = v;
                        best = cell;
                    }
                }
                self.top.push((best_v, best));
            } else {
                // multi_pose_predict: the n best cells, by descending score.
                for cell in 0..cells {
                    let v = value(cell, j);
                    if self.top.len() < n || v > self.top[n - 1].0 {
                        let at = self.top.partition_point(|&(s, _)| s >= v);
                        if self.top.len() == n {
                            self.top.pop();
                        }
                        self.top.insert(at, (v, cell));
                    }
                }
            }
            for (m, &(v, cell)) in self.top.iter().enumerate().take(n) {
                let (row, col) = (cell / score.cols, cell % score.cols);
                let (dx, dy) = match &locref {
                    Some(l) => (
                        l.at(cell, 2 * j) * self.locref_stdev,
                        l.at(cell, 2 * j + 1) * self.locref_stdev,
                    ),
                    None => (0.0, 0.0),
                };
                let s = self.stride;
                let (x, y) = if self.pytorch {
                    // torch: int · stride + 0.5·stride + offset, in float32
                    (col as f32 * s + 0.5 * s + dx, row as f32 * s + 0.5 * s + dy)
                } else {
                    // numpy: float64 position + float32 offset
                    let (s, dx, dy) = (f64::from(s), f64::from(dx), f64::from(dy));
                    (
                        (col as f64 * s + 0.5 * s + dx) as f32,
                        (row as f64 * s + 0.5 * s + dy) as f32,
                    )
                };
                let (fx, fy) = to_frame(x, y);
                instances[m].points_mut()[j] = Keypoint::new(fx, fy, v);
            }
        }
        Ok(n)
    }
}

fn a_cells(t: &OutTensor, nchw: bool) -> usize {
    let g = Grid::of(t, nchw);
    g.rows * g.cols
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(name: &str, shape: &[usize], data: Vec<f32>) -> OutTensor {
        OutTensor {
            name: name.into(),
            shape: shape.to_vec(),
            data,
        }
    }

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
        let outputs = [
            out("Sigmoid", &[1, 2, 3, 2], scoremap),
            out("locref", &[1, 2, 3, 4], locref),
        ];
        let mut d = DlcDecoder::tensorflow(2, 8.0, 7.2801);
        d.check(&outputs, "m").unwrap();
        let mut poses = [Pose::new(0)];
        assert_eq!(d.decode(&outputs, &mut poses, &|x, y| (x, y)).unwrap(), 1);
        let p = poses[0].points();
        let lr = 7.2801f32;
        assert_eq!(p[0].x, (2.0 * 8.0 + 4.0 + f64::from(0.5 * lr)) as f32);
        assert_eq!(p[0].y, (8.0 + 4.0 + f64::from(-0.25 * lr)) as f32);
        assert_eq!(p[0].score, 0.9);
        assert_eq!(p[1].x, (8.0 + 4.0 + f64::from(lr)) as f32);
        assert_eq!(p[1].y, 4.0);
    }

    #[test]
    fn check_refuses_wrong_channels() {
        let outputs = [
            out("Sigmoid", &[1, 2, 3, 3], vec![0.0; 18]),
            out("locref", &[1, 2, 3, 4], vec![0.0; 24]),
        ];
        let e = DlcDecoder::tensorflow(2, 8.0, 1.0)
            .check(&outputs, "m.onnx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`Sigmoid`") && e.contains("[1, 2, 3, 3]"), "{e}");
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
        let (names, stride, locref) =
            parse_pose_cfg(super::super::BUILTIN_POSE_CFG, "builtin").unwrap();
        assert_eq!(names, ["nose", "ear_left", "ear_right", "tail_base"]);
        assert_eq!((stride, locref), (8.0, 7.2801));
    }

    #[test]
    fn multi_animal_configs_are_refused_by_name() {
        let e = parse_settings(
            "all_joints_names: [a]\nstride: 8\nmulti_stage: true\n",
            "pose_cfg.yaml",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("multi_stage") && e.contains("multi-animal"),
            "{e}"
        );
        let e = parse_settings(
            "all_joints_names: [a]\nstride: 8\n",
            "pose_cfg.yaml",
            Some((
                "model:\n  heads:\n    bodypart:\n      predictor:\n        type: PartAffinityFieldPredictor\n",
                "pytorch_config.yaml",
            )),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("PartAffinityFieldPredictor") && e.contains("line 5"),
            "{e}"
        );
    }
}
