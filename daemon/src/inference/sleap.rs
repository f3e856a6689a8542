//! SLEAP (sleap-nn): exported ONNX models and raw confidence-map heads, decoded as sleap-nn does.
//!
//! * **Exports** (`sleap-nn export`: `model.onnx` + `export_metadata.json`): uint8 NCHW input; the graph finds
//!   the peaks itself. Single instance: `peaks` `[1, nodes, 2]` (NaN below threshold) and `peak_vals`.
//!   Top-down: `centroids`, `centroid_vals`, `peaks` `[1, instances, nodes, 2]`, `peak_vals`,
//!   `instance_valid`. reflex reads them as they are (`sleap_nn/inference/layers/exported.py`).
//! * **Raw heads** (the trained network without peak finding; float `v/255` NCHW input, confidence maps
//!   out): reflex runs sleap-nn's own peak finding (`sleap_nn/inference/ops/peaks.py`): the global peak per
//!   channel (single instance, centered instance) or strict local maxima with flat tops resolved (centroids),
//!   a threshold, 5×5 integral sub-pixel refinement with zeros outside the map, then `× output_stride /
//!   input_scale`. Top-down: the `max_instances` best centroids, a `crop_size` window around each
//!   (`crop_bboxes`: top-left `trunc(c − size/2 + 0.5 + size/2) − size/2`, zeros outside the frame), the
//!   centered-instance network on each, peaks plus the box's top-left corner `c − size/2 + 0.5`.

use std::path::Path;

use reflex_plugins::pose::{Keypoint, Pose};
use serde_json::Value;

use super::onnx_info::{ElemType, OnnxInfo};
use super::preprocess::{InputSpec, InputType, Layout, Scaling};
use super::yaml::Doc;
use super::{Decoder, InferenceError, NetIo, NetPlan, OutTensor, Plan, Stage2};

/// sleap-nn's default peak threshold.
pub const DEFAULT_PEAK_THRESHOLD: f32 = 0.2;
/// sleap-nn's default integral refinement patch size.
pub const INTEGRAL_PATCH: usize = 5;

/// What sleap-nn's metadata says about a model (`export_metadata.json`, or the same JSON in the ONNX's
/// `sleap_nn_metadata`), with the training config's `max_stride`.
#[derive(Debug, Clone, PartialEq)]
pub struct SleapMeta {
    /// Where it was read from, for messages.
    pub source: String,
    /// `single_instance`, `topdown`, `centroid`, `centered_instance`, `bottomup`, …
    pub model_type: String,
    /// Node (keypoint) names.
    pub nodes: Vec<String>,
    /// Confidence-map stride (px per map cell), if given.
    pub output_stride: Option<f32>,
    /// Frame scaling before the network.
    pub input_scale: f32,
    /// Peak threshold.
    pub peak_threshold: f32,
    /// Most instances (top-down).
    pub max_instances: Option<usize>,
    /// Centered-instance crop `(height, width)`.
    pub crop_size: Option<(u32, u32)>,
    /// The backbone's `max_stride` (inputs are padded to a multiple of it).
    pub max_stride: Option<u32>,
}

fn meta_err(file: &str, message: String) -> InferenceError {
    InferenceError::Metadata {
        file: file.to_string(),
        message,
    }
}

impl SleapMeta {
    /// Parse sleap-nn's export metadata JSON (`source` names it in errors).
    pub fn from_json(text: &str, source: &str) -> Result<Self, InferenceError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| meta_err(source, format!("not valid JSON: {e}")))?;
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| meta_err(source, "missing `model_type`".into()))?
            .to_string();
        let nodes: Vec<String> = v
            .get("node_names")
            .and_then(Value::as_array)
            .ok_or_else(|| meta_err(source, "missing `node_names` (the keypoint names)".into()))?
            .iter()
            .map(|n| n.as_str().unwrap_or_default().to_string())
            .collect();
        if nodes.is_empty() || nodes.iter().any(String::is_empty) {
            return Err(meta_err(
                source,
                "`node_names` is empty or not a list of names".into(),
            ));
        }
        if nodes.len() > reflex_plugins::pose::MAX_KEYPOINTS {
            return Err(meta_err(
                source,
                format!(
                    "{} nodes; reflex handles at most {}",
                    nodes.len(),
                    reflex_plugins::pose::MAX_KEYPOINTS
                ),
            ));
        }
        let num = |k: &str| v.get(k).and_then(Value::as_f64);
        let crop_size = v
            .get("crop_size")
            .and_then(Value::as_array)
            .and_then(|a| Some((a.first()?.as_u64()? as u32, a.get(1)?.as_u64()? as u32)));
        let input_scale = num("input_scale").unwrap_or(1.0) as f32;
        if !(input_scale > 0.0 && input_scale.is_finite()) {
            return Err(meta_err(
                source,
                format!("`input_scale` must be > 0, got {input_scale}"),
            ));
        }
        Ok(Self {
            source: source.to_string(),
            model_type,
            nodes,
            output_stride: num("output_stride").map(|s| s as f32),
            input_scale,
            peak_threshold: num("peak_threshold").map_or(DEFAULT_PEAK_THRESHOLD, |t| t as f32),
            max_instances: num("max_instances").map(|m| m as usize),
            crop_size,
            max_stride: None,
        })
    }

    /// Take `max_stride` from a sleap-nn training config (YAML).
    pub fn read_max_stride(&mut self, training_config: &str) {
        let doc = Doc::parse(training_config);
        if let Some((_, (super::yaml::Value::Scalar(s), _))) = doc.find_suffix("max_stride") {
            self.max_stride = s.parse::<f64>().ok().map(|v| v as u32).filter(|&v| v > 0);
        }
    }
}

/// Find the metadata of a SLEAP model: `export_metadata.json` in `dir`, else the ONNX's own
/// `sleap_nn_metadata`; `max_stride` from `training_config*.yaml` or the ONNX's `training_config`.
pub(crate) fn read_meta(
    dir: &Path,
    first: &OnnxInfo,
    first_file: &str,
) -> Result<SleapMeta, InferenceError> {
    let json_path = dir.join("export_metadata.json");
    let mut meta = if json_path.is_file() {
        let text = std::fs::read_to_string(&json_path).map_err(|source| InferenceError::Read {
            path: json_path.clone(),
            source,
        })?;
        SleapMeta::from_json(&text, &json_path.display().to_string())?
    } else if let Some(text) = first.metadata.get("sleap_nn_metadata") {
        SleapMeta::from_json(text, &format!("{first_file} (sleap_nn_metadata)"))?
    } else {
        return Err(InferenceError::Metadata {
            file: dir.display().to_string(),
            message: format!(
                "no export_metadata.json here and no sleap-nn metadata inside {first_file}: reflex needs the node names, output stride and peak threshold that `sleap-nn export` writes"
            ),
        });
    };
    let mut configs: Vec<String> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("training_config") && n.ends_with(".yaml"))
            })
            .collect();
        names.sort();
        configs.extend(names.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    if let Some(tc) = first.metadata.get("training_config") {
        match serde_json::from_str::<Value>(tc) {
            Ok(Value::Object(map)) => {
                configs.extend(map.values().filter_map(|v| v.as_str().map(String::from)))
            }
            _ => configs.push(tc.clone()),
        }
    }
    for c in &configs {
        meta.read_max_stride(c);
        if meta.max_stride.is_some() {
            break;
        }
    }
    Ok(meta)
}

/// Peak finding settings of one confidence-map head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakSettings {
    /// Peaks below this are missing.
    pub threshold: f32,
    /// Map cell → input px (`output_stride`); 0 until learnt from the shapes.
    pub stride: f32,
    /// The frame scaling before the network (`input_scale`).
    pub input_scale: f32,
    /// Integral refinement patch (0 = none).
    pub patch: usize,
}

/// One confidence map (a channel), row-major.
#[derive(Debug, Clone, Copy)]
pub struct Map<'a> {
    /// `h * w` values.
    pub data: &'a [f32],
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
}

impl Map<'_> {
    #[inline]
    fn at(&self, y: i64, x: i64) -> f32 {
        if y < 0 || x < 0 || y >= self.h as i64 || x >= self.w as i64 {
            f32::NEG_INFINITY
        } else {
            self.data[y as usize * self.w + x as usize]
        }
    }

    #[inline]
    fn at_or_zero(&self, y: i64, x: i64) -> f32 {
        if y < 0 || x < 0 || y >= self.h as i64 || x >= self.w as i64 {
            0.0
        } else {
            self.data[y as usize * self.w + x as usize]
        }
    }
}

/// `find_global_peaks_rough` for one channel: x = the first column holding the maximum, y = the first row
/// holding it (as `torch.max` over rows then columns picks them), and the maximum. None below `threshold`.
pub fn global_peak(map: Map<'_>, threshold: f32) -> Option<(usize, usize, f32)> {
    let (mut best, mut bx, mut by) = (f32::NEG_INFINITY, 0, 0);
    for y in 0..map.h {
        for (x, &v) in map.data[y * map.w..(y + 1) * map.w].iter().enumerate() {
            if v > best {
                (best, bx, by) = (v, x, y);
            } else if v == best && x < bx {
                bx = x;
            }
        }
    }
    if best < threshold || best.is_nan() {
        None
    } else {
        Some((bx, by, best))
    }
}

/// `integral_regression` on the `patch` × `patch` window centred on cell (`x`, `y`) (zeros outside the map):
/// the (dx, dy) offset of the window's centre of mass from its centre.
pub fn integral_offset(map: Map<'_>, x: i64, y: i64, patch: usize) -> (f32, f32) {
    let half = (patch as i64 - 1) / 2;
    let centre = (patch as f32 - 1.0) / 2.0;
    let (mut z, mut sx, mut sy) = (0f32, 0f32, 0f32);
    for r in 0..patch as i64 {
        for c in 0..patch as i64 {
            let v = map.at_or_zero(y - half + r, x - half + c);
            z += v;
            sx += (c as f32 - centre) * v;
            sy += (r as f32 - centre) * v;
        }
    }
    (sx / z, sy / z)
}

/// A global peak refined and scaled to input px: sleap-nn's `find_global_peaks` then `× stride / input_scale`.
/// NaN position and score 0 below threshold.
pub fn refined_global_peak(map: Map<'_>, s: &PeakSettings) -> Keypoint {
    match global_peak(map, s.threshold) {
        None => Keypoint::new(f32::NAN, f32::NAN, 0.0),
        Some((x, y, v)) => {
            let (mut px, mut py) = (x as f32, y as f32);
            if s.patch > 0 {
                let (dx, dy) = integral_offset(map, x as i64, y as i64, s.patch);
                px += dx;
                py += dy;
            }
            let (mut px, mut py) = (px * s.stride, py * s.stride);
            if s.input_scale != 1.0 {
                px /= s.input_scale;
                py /= s.input_scale;
            }
            Keypoint::new(px, py, v)
        }
    }
}

/// A local peak: position in map cells (flat tops: the mean of their cells) and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalPeak {
    /// Column (may be fractional for a flat top).
    pub x: f32,
    /// Row.
    pub y: f32,
    /// Map value.
    pub value: f32,
}

/// The 8 neighbours in sleap-nn's order (row, col offsets).
const NEIGHBORS: [(i64, i64); 8] = [
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, -1),
    (0, 1),
    (1, -1),
    (1, 0),
    (1, 1),
];

/// `find_local_peaks_rough` for one channel, in raster order, into `out` (cleared first; its capacity is
/// `h * w`, so nothing is allocated): pixels above `threshold`, greater than the 4 neighbours before them and
/// not less than the 4 after; a flat top of equal pixels counts once if it fits in a 2×2 block and nothing
/// around it is as high, at the mean of its pixels.
pub fn local_peaks(map: Map<'_>, threshold: f32, out: &mut Vec<LocalPeak>) {
    out.clear();
    for y in 0..map.h as i64 {
        for x in 0..map.w as i64 {
            let v = map.at(y, x);
            let above = v > threshold; // false for NaN, as torch's comparison
            if !above {
                continue;
            }
            let before = NEIGHBORS[..4]
                .iter()
                .map(|&(dr, dc)| map.at(y + dr, x + dc))
                .fold(f32::NEG_INFINITY, f32::max);
            let after = NEIGHBORS[4..]
                .iter()
                .map(|&(dr, dc)| map.at(y + dr, x + dc))
                .fold(f32::NEG_INFINITY, f32::max);
            let peak = v > before && v >= after;
            if !peak {
                continue;
            }
            let (mut ox, mut oy) = (0f32, 0f32);
            if v == after {
                // `_flat_tops`: the candidate's equal neighbours (all after it) and itself form the top.
                let tied: [bool; 8] = std::array::from_fn(|k| {
                    let (dr, dc) = NEIGHBORS[k];
                    map.at(y + dr, x + dc) >= v
                });
                let in_top = |r: i64, c: i64| {
                    (r == 0 && c == 0)
                        || NEIGHBORS
                            .iter()
                            .zip(&tied)
                            .any(|(&(dr, dc), &t)| t && dr == r && dc == c)
                };
                let fits = [
                    [(0, 1), (1, 0), (1, 1)].as_slice(),
                    [(1, -1), (1, 0)].as_slice(),
                ]
                .iter()
                .any(|block| {
                    NEIGHBORS
                        .iter()
                        .zip(&tied)
                        .all(|(d, &t)| !t || block.contains(d))
                });
                let leaks = NEIGHBORS.iter().zip(&tied).any(|(&(kr, kc), &t)| {
                    t && NEIGHBORS.iter().any(|&(jr, jc)| {
                        !in_top(kr + jr, kc + jc) && map.at(y + kr + jr, x + kc + jc) >= v
                    })
                });
                if !fits || leaks {
                    continue;
                }
                let n = 1 + tied.iter().filter(|&&t| t).count();
                for (&(dr, dc), &t) in NEIGHBORS.iter().zip(&tied) {
                    if t {
                        ox += dc as f32;
                        oy += dr as f32;
                    }
                }
                ox /= n as f32;
                oy /= n as f32;
            }
            out.push(LocalPeak {
                x: x as f32 + ox,
                y: y as f32 + oy,
                value: v,
            });
        }
    }
}

/// sleap-nn's decoders.
pub enum SleapDecoder {
    /// `sleap-nn export` single instance: outputs `peaks`, `peak_vals`.
    ExportSingle {
        /// Nodes.
        nodes: usize,
    },
    /// `sleap-nn export` top-down: outputs `peaks`, `peak_vals`, `instance_valid`.
    ExportTopdown {
        /// Nodes.
        nodes: usize,
    },
    /// Raw single-instance confidence maps.
    Single {
        /// Nodes.
        nodes: usize,
        /// Peak finding.
        peaks: PeakSettings,
    },
    /// Raw centroid + centered-instance heads.
    Topdown(Topdown),
}

/// Raw top-down heads: centroid map → crops → centered-instance maps.
pub struct Topdown {
    nodes: usize,
    centroid: PeakSettings,
    instance: PeakSettings,
    max_instances: usize,
    /// Crop (height, width) in px.
    crop: (u32, u32),
    /// Local peaks of the centroid map; capacity made at check.
    found: Vec<LocalPeak>,
}

impl Topdown {
    /// The crop window (width, height) in px.
    pub(crate) fn crop_size(&self) -> (u32, u32) {
        (self.crop.1, self.crop.0)
    }

    /// Check the centered-instance network's output (and learn its stride).
    pub(crate) fn check_instance(
        &mut self,
        outputs: &[OutTensor],
        file: &str,
    ) -> Result<(), InferenceError> {
        let t = confmap(outputs, self.nodes, file)?;
        learn_stride(&mut self.instance, t, self.crop.1, file)
    }

    /// Decode: centroids from `outputs` (input px → frame px by `to_frame`), then the centered-instance network
    /// on a crop around each, run by `stage2`.
    pub(crate) fn decode(
        &mut self,
        outputs: &[OutTensor],
        to_frame: &dyn Fn(f32, f32) -> (f32, f32),
        instances: &mut [Pose],
        stage2: &mut Stage2<'_>,
    ) -> Result<usize, InferenceError> {
        let t = &outputs[0];
        let map = Map {
            data: &t.data[..t.shape[2] * t.shape[3]],
            h: t.shape[2],
            w: t.shape[3],
        };
        local_peaks(map, self.centroid.threshold, &mut self.found);
        // Refine around the floored peak, as find_local_peaks does, before choosing the best.
        for p in self.found.iter_mut() {
            let (ax, ay) = (p.x.floor(), p.y.floor());
            let (mut x, mut y) = (ax, ay);
            if self.centroid.patch > 0 {
                let (dx, dy) = integral_offset(map, ax as i64, ay as i64, self.centroid.patch);
                x += dx;
                y += dy;
            }
            p.x = x * self.centroid.stride / self.centroid.input_scale;
            p.y = y * self.centroid.stride / self.centroid.input_scale;
        }
        if self.found.len() > self.max_instances {
            // torch.topk: the highest values, highest first.
            self.found
                .sort_unstable_by(|a, b| b.value.total_cmp(&a.value));
            self.found.truncate(self.max_instances);
        }
        let (ch, cw) = self.crop;
        let mut count = 0;
        for i in 0..self.found.len().min(instances.len()) {
            let (cx, cy) = to_frame(self.found[i].x, self.found[i].y);
            // make_centered_bboxes: top-left corner = c − size/2 + 0.5 (float32)
            let (tlx, tly) = ((cx - cw as f32 / 2.0) + 0.5, (cy - ch as f32 / 2.0) + 0.5);
            // crop_bboxes: trunc(top-left + size//2) − size//2
            let (hx, hy) = ((cw / 2) as f32, (ch / 2) as f32);
            let origin = (
                (tlx + hx).trunc() as i64 - i64::from(cw / 2),
                (tly + hy).trunc() as i64 - i64::from(ch / 2),
            );
            let out = stage2.run_at(origin)?;
            let t = &out[0];
            let (h, w) = (t.shape[2], t.shape[3]);
            let pose = &mut instances[count];
            *pose = Pose::new(self.nodes);
            let mut any = false;
            for (n, k) in pose.points_mut().iter_mut().enumerate() {
                let m = Map {
                    data: &t.data[n * h * w..(n + 1) * h * w],
                    h,
                    w,
                };
                let p = refined_global_peak(m, &self.instance);
                any |= !p.is_missing();
                *k = Keypoint::new(p.x + tlx, p.y + tly, p.score);
            }
            // sleap-nn drops an instance none of whose nodes was found.
            if any {
                count += 1;
            }
        }
        Ok(count)
    }
}

fn confmap<'a>(
    outputs: &'a [OutTensor],
    channels: usize,
    file: &str,
) -> Result<&'a OutTensor, InferenceError> {
    let t = outputs
        .first()
        .ok_or_else(|| InferenceError::Shape(format!("{file}: no output bound")))?;
    if t.shape.len() != 4
        || t.shape[0] != 1
        || t.shape[1] != channels
        || t.shape[2] == 0
        || t.shape[3] == 0
    {
        return Err(InferenceError::Shape(format!(
            "{file}: output `{}` is {:?} after a run; expected confidence maps [1, {channels}, height, width]",
            t.name, t.shape
        )));
    }
    Ok(t)
}

/// Take the stride from the metadata, or from input width / map width when it has none; check they agree.
fn learn_stride(
    s: &mut PeakSettings,
    t: &OutTensor,
    input_w: u32,
    file: &str,
) -> Result<(), InferenceError> {
    let from_shape = input_w as f32 / t.shape[3] as f32;
    if s.stride == 0.0 {
        s.stride = from_shape;
    } else if (s.stride - from_shape).abs() > 1e-3 {
        return Err(InferenceError::Shape(format!(
            "{file}: maps of width {} on an input {input_w} wide mean stride {from_shape}, but the metadata says output_stride {}",
            t.shape[3], s.stride
        )));
    }
    Ok(())
}

impl SleapDecoder {
    /// Check one slot's output shapes; learn strides from them. `input` = the input tensor (width, height).
    pub(crate) fn check(
        &mut self,
        outputs: &[OutTensor],
        input: (u32, u32),
        file: &str,
    ) -> Result<(), InferenceError> {
        match self {
            Self::ExportSingle { nodes } => {
                let ok = outputs.len() == 2
                    && outputs[0].shape == [1, *nodes, 2]
                    && outputs[1].shape == [1, *nodes];
                if !ok {
                    return Err(InferenceError::Shape(format!(
                        "{file}: outputs {} after a run; a sleap-nn single-instance export gives peaks [1, {nodes}, 2] and peak_vals [1, {nodes}]",
                        shapes(outputs)
                    )));
                }
            }
            Self::ExportTopdown { nodes } => {
                let m = outputs
                    .first()
                    .and_then(|t| t.shape.get(1))
                    .copied()
                    .unwrap_or(0);
                let ok = outputs.len() == 3
                    && outputs[0].shape == [1, m, *nodes, 2]
                    && outputs[1].shape == [1, m, *nodes]
                    && outputs[2].shape == [1, m];
                if !ok {
                    return Err(InferenceError::Shape(format!(
                        "{file}: outputs {} after a run; a sleap-nn top-down export gives peaks [1, instances, {nodes}, 2], peak_vals [1, instances, {nodes}] and instance_valid [1, instances]",
                        shapes(outputs)
                    )));
                }
            }
            Self::Single { nodes, peaks } => {
                let t = confmap(outputs, *nodes, file)?;
                learn_stride(peaks, t, input.0, file)?;
            }
            Self::Topdown(td) => {
                let t = confmap(outputs, 1, file)?;
                learn_stride(&mut td.centroid, t, input.0, file)?;
                let cells = t.shape[2] * t.shape[3];
                if td.found.capacity() < cells {
                    td.found = Vec::with_capacity(cells);
                }
            }
        }
        Ok(())
    }

    /// Decode the main network's outputs into instances (frame px by `to_frame`); the number found.
    pub(crate) fn decode(
        &mut self,
        outputs: &[OutTensor],
        instances: &mut [Pose],
        to_frame: &dyn Fn(f32, f32) -> (f32, f32),
    ) -> Result<usize, InferenceError> {
        let point = |x: f32, y: f32, score: f32| {
            if x.is_finite() && y.is_finite() {
                let (fx, fy) = to_frame(x, y);
                Keypoint::new(fx, fy, score)
            } else {
                Keypoint::new(f32::NAN, f32::NAN, if score.is_nan() { 0.0 } else { score })
            }
        };
        match self {
            Self::ExportSingle { nodes } => {
                let (peaks, vals) = (&outputs[0].data, &outputs[1].data);
                instances[0] = Pose::new(*nodes);
                for (n, k) in instances[0].points_mut().iter_mut().enumerate() {
                    *k = point(peaks[2 * n], peaks[2 * n + 1], vals[n]);
                }
                Ok(1)
            }
            Self::ExportTopdown { nodes } => {
                let (peaks, vals, valid) = (&outputs[0].data, &outputs[1].data, &outputs[2].data);
                let mut count = 0;
                for (i, &v) in valid.iter().enumerate() {
                    if v == 0.0 || count == instances.len() {
                        continue;
                    }
                    let pose = &mut instances[count];
                    *pose = Pose::new(*nodes);
                    let mut any = false;
                    for (n, k) in pose.points_mut().iter_mut().enumerate() {
                        let at = i * *nodes + n;
                        *k = point(peaks[2 * at], peaks[2 * at + 1], vals[at]);
                        any |= !k.is_missing();
                    }
                    if any {
                        count += 1;
                    }
                }
                Ok(count)
            }
            Self::Single { nodes, peaks } => {
                let t = &outputs[0];
                let (h, w) = (t.shape[2], t.shape[3]);
                instances[0] = Pose::new(*nodes);
                for (n, k) in instances[0].points_mut().iter_mut().enumerate() {
                    let m = Map {
                        data: &t.data[n * h * w..(n + 1) * h * w],
                        h,
                        w,
                    };
                    let p = refined_global_peak(m, peaks);
                    *k = point(p.x, p.y, p.score);
                }
                Ok(1)
            }
            Self::Topdown(_) => {
                unreachable!("the model drives the top-down decoder with its second stage")
            }
        }
    }
}

fn shapes(outputs: &[OutTensor]) -> String {
    outputs
        .iter()
        .map(|t| format!("`{}` {:?}", t.name, t.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

fn raw_input_spec(
    file: &str,
    info: &OnnxInfo,
    meta: &SleapMeta,
) -> Result<InputSpec, InferenceError> {
    let input = &info.inputs[0];
    if input.dims.len() != 4 {
        return Err(InferenceError::Shape(format!(
            "{file}: input {input} has rank {}; a SLEAP network takes one image [batch, channels, height, width]",
            input.dims.len()
        )));
    }
    let channels = input.dims[1].fixed().unwrap_or(3);
    if channels != 1 && channels != 3 {
        return Err(InferenceError::Shape(format!(
            "{file}: input {input} has {channels} channels; SLEAP networks take NCHW images with 1 or 3 channels"
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
    let fixed_size = match (input.dims[3].fixed(), input.dims[2].fixed()) {
        (Some(w), Some(h)) if w > 0 && h > 0 => Some((w as u32, h as u32)),
        _ => None,
    };
    let export = dtype == InputType::U8;
    Ok(InputSpec {
        name: input.name.clone(),
        layout: Layout::Nchw,
        dtype,
        channels,
        bgr: false,
        scaling: Scaling::Div255,
        mean_std: None,
        fixed_size,
        // The export scales inside the graph, so the frame is padded to max_stride / input_scale.
        divisor: {
            let ms = meta.max_stride.unwrap_or(16) as f32;
            if export && meta.input_scale != 1.0 {
                (ms / meta.input_scale).ceil() as u32
            } else {
                ms as u32
            }
        },
        input_scale: if export { 1.0 } else { meta.input_scale },
    })
}

/// Plan a SLEAP model from its networks (file, bytes, interface) and metadata.
pub(crate) fn plan(
    nets: Vec<(String, Vec<u8>, OnnxInfo)>,
    meta: SleapMeta,
) -> Result<Plan, InferenceError> {
    let nodes = meta.nodes.len();
    let has = |info: &OnnxInfo, n: &str| info.output(n).is_some();
    let first = &nets[0].2;
    let file0 = nets[0].0.clone();
    if first.inputs.len() != 1 {
        return Err(InferenceError::Shape(format!(
            "{file0}: {} inputs; a SLEAP network takes one image",
            first.inputs.len()
        )));
    }
    let threshold = meta.peak_threshold;
    let mut details = vec![
        ("model_type".to_string(), meta.model_type.clone()),
        ("metadata".to_string(), meta.source.clone()),
        ("peak_threshold".to_string(), threshold.to_string()),
        ("input_scale".to_string(), meta.input_scale.to_string()),
        (
            "output_stride".to_string(),
            meta.output_stride
                .map_or("from the map size (not in the metadata)".into(), |s| {
                    format!("{s} px per confidence-map cell")
                }),
        ),
        (
            "max_stride".to_string(),
            meta.max_stride
                .map_or("16 (sleap-nn's default; not in the metadata)".into(), |s| {
                    s.to_string()
                }),
        ),
    ];
    let peaks = |stride: Option<f32>, input_scale: f32| PeakSettings {
        threshold,
        stride: stride.unwrap_or(0.0),
        input_scale,
        patch: INTEGRAL_PATCH,
    };
    let is_export = has(first, "peaks") && has(first, "peak_vals");
    let (kind, decoder_name, decoder, outputs, max_instances): (
        &str,
        String,
        SleapDecoder,
        Vec<Vec<&str>>,
        usize,
    ) = if is_export {
        if nets.len() != 1 {
            return Err(InferenceError::Shape(format!(
                "{file0} is a complete sleap-nn export (peaks, peak_vals); name only it in [model] networks"
            )));
        }
        if has(first, "instance_valid") {
            let m = meta.max_instances.unwrap_or(1).max(1);
            (
                    "SLEAP export (sleap-nn top-down: centroid + centered instance)",
                    "peaks found inside the graph (no sub-pixel refinement), valid instances as sleap-nn's ExportedTopDownLayer".into(),
                    SleapDecoder::ExportTopdown { nodes },
                    vec![vec!["peaks", "peak_vals", "instance_valid"]],
                    m,
                )
        } else if meta.model_type == "single_instance" {
            (
                    "SLEAP export (sleap-nn single instance)",
                    "peaks found inside the graph (global maximum, no sub-pixel refinement), as sleap-nn's ExportedSingleInstanceLayer".into(),
                    SleapDecoder::ExportSingle { nodes },
                    vec![vec!["peaks", "peak_vals"]],
                    1,
                )
        } else {
            return Err(InferenceError::Unsupported(format!(
                "{file0}: a sleap-nn `{}` export; reflex reads single_instance and topdown exports (bottom-up part-affinity grouping and identity models are not supported)",
                meta.model_type
            )));
        }
    } else {
        for (file, _, info) in &nets {
            let confmaps: Vec<_> = info.outputs.iter().filter(|o| o.dims.len() == 4).collect();
            if confmaps.len() != 1 || info.outputs.len() != 1 {
                return Err(InferenceError::Shape(format!(
                    "{file}: outputs {}; expected either a sleap-nn export (peaks, peak_vals[, instance_valid]) or one confidence-map output [1, channels, height, width]",
                    info.output_names()
                )));
            }
        }
        match (meta.model_type.as_str(), nets.len()) {
                ("single_instance", 1) => (
                    "SLEAP raw single-instance confidence maps",
                    "sleap-nn find_global_peaks: global maximum per node, threshold, 5x5 integral refinement, × output_stride / input_scale".into(),
                    SleapDecoder::Single {
                        nodes,
                        peaks: peaks(meta.output_stride, meta.input_scale),
                    },
                    vec![vec![first.outputs[0].name.as_str()]],
                    1,
                ),
                ("topdown", 2) => {
                    let (crop_h, crop_w) = match (meta.crop_size, nets[1].2.inputs[0].dims.as_slice()) {
                        (Some(c), _) => c,
                        (None, [_, _, h, w]) if h.fixed().is_some() && w.fixed().is_some() => {
                            (h.fixed().unwrap_or(0) as u32, w.fixed().unwrap_or(0) as u32)
                        }
                        _ => {
                            return Err(InferenceError::Metadata {
                                file: meta.source.clone(),
                                message: "missing `crop_size` (the centered-instance crop)".into(),
                            });
                        }
                    };
                    if meta.input_scale != 1.0 {
                        return Err(InferenceError::Unsupported(format!(
                            "{}: input_scale {} with raw top-down heads; reflex crops at frame resolution (use the sleap-nn export, which scales inside the graph)",
                            meta.source, meta.input_scale
                        )));
                    }
                    let m = meta.max_instances.unwrap_or(1).max(1);
                    details.push(("crop_size".into(), format!("{crop_w}x{crop_h}")));
                    details.push(("max_instances".into(), m.to_string()));
                    (
                        "SLEAP raw top-down heads (centroid + centered instance)",
                        "sleap-nn find_local_peaks on the centroid map (threshold, strict local maxima, 5x5 integral refinement), best max_instances, crop_bboxes around each, find_global_peaks on each crop".into(),
                        SleapDecoder::Topdown(Topdown {
                            nodes,
                            centroid: peaks(meta.output_stride, 1.0),
                            instance: peaks(meta.output_stride, 1.0),
                            max_instances: m,
                            crop: (crop_h, crop_w),
                            found: Vec::new(),
                        }),
                        vec![
                            vec![first.outputs[0].name.as_str()],
                            vec![nets[1].2.outputs[0].name.as_str()],
                        ],
                        m,
                    )
                }
                ("topdown", 1) => {
                    return Err(InferenceError::Shape(format!(
                        "{file0}: one raw confidence-map network for a top-down model; name both heads, centroid first: [model] networks = [\"centroid.onnx\", \"centered_instance.onnx\"]"
                    )));
                }
                (t, n) => {
                    return Err(InferenceError::Unsupported(format!(
                        "{}: raw `{t}` heads ({n} network(s)); reflex decodes raw single_instance maps and topdown (centroid + centered-instance) pairs, and single_instance/topdown exports",
                        meta.source
                    )));
                }
            }
    };
    details.push((
        "outputs".into(),
        outputs
            .iter()
            .map(|o| o.join(", "))
            .collect::<Vec<_>>()
            .join(" | "),
    ));
    let outputs: Vec<Vec<String>> = outputs
        .iter()
        .map(|o| o.iter().map(|s| s.to_string()).collect())
        .collect();
    let mut plans = Vec::new();
    for ((file, onnx, info), outs) in nets.into_iter().zip(outputs.iter()) {
        let mut spec = raw_input_spec(&file, &info, &meta)?;
        if is_export {
            // The export takes 0–255 (uint8, or float in some exports) and scales inside the graph.
            spec.scaling = Scaling::Raw;
        }
        let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
        let io = NetIo::new(&info, spec.dtype, &outs);
        if io.outputs.len() != outs.len() {
            return Err(InferenceError::Shape(format!(
                "{file}: missing output(s) among {}",
                info.output_names()
            )));
        }
        let role = (!plans.is_empty()).then(|| {
            "fed a crop around each centroid, at frame resolution (zeros outside the frame), not the frame"
                .to_string()
        });
        plans.push(NetPlan {
            file,
            onnx,
            info,
            spec,
            io,
            role,
        });
    }
    let align = meta.max_stride.unwrap_or(16);
    Ok(Plan {
        kind: kind.into(),
        decoder_name,
        keypoints: meta.nodes,
        nets: plans,
        decoder: Decoder::Sleap(decoder),
        details,
        align,
        max_instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(h: usize, w: usize, f: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        (0..h * w).map(|i| f(i / w, i % w)).collect()
    }

    #[test]
    fn global_peak_picks_first_column_and_first_row_of_the_maximum() {
        // Two cells share the maximum: (row 1, col 3) and (row 2, col 1) → x = 1, y = 1 (as sleap-nn).
        let d = map(4, 5, |r, c| {
            if (r, c) == (1, 3) || (r, c) == (2, 1) {
                1.0
            } else {
                0.1
            }
        });
        let m = Map {
            data: &d,
            h: 4,
            w: 5,
        };
        assert_eq!(global_peak(m, 0.2), Some((1, 1, 1.0)));
        assert_eq!(global_peak(m, 1.5), None);
    }

    #[test]
    fn integral_refinement_is_the_patch_centre_of_mass_with_zeros_outside() {
        let d = map(6, 6, |r, c| match (r, c) {
            (0, 0) => 1.0,
            (0, 1) => 1.0,
            (1, 0) => 2.0,
            _ => 0.0,
        });
        let m = Map {
            data: &d,
            h: 6,
            w: 6,
        };
        // Patch centred on (0, 0): cells (0,0)=1 (0,1)=1 (1,0)=2 → dx = 1/4, dy = 2/4.
        assert_eq!(integral_offset(m, 0, 0, 5), (0.25, 0.5));
        let s = PeakSettings {
            threshold: 0.2,
            stride: 2.0,
            input_scale: 1.0,
            patch: 5,
        };
        // The global peak is (x 0, y 1) = 2.0; its patch: dx = (1·1)/4, dy = (−1·1 − 1·1)/4.
        let k = refined_global_peak(m, &s);
        assert_eq!((k.x, k.y, k.score), (0.25 * 2.0, 0.5 * 2.0, 2.0));
    }

    #[test]
    fn local_peaks_strict_maxima_and_flat_tops() {
        let mut d = map(6, 7, |_, _| 0.0);
        d[7 + 1] = 0.9; // isolated peak at (1, 1)
        d[3 * 7 + 4] = 0.5; // flat top of 2: (3, 4) and (3, 5) → x 4.5
        d[3 * 7 + 5] = 0.5;
        d[5 * 7 + 1] = 0.1; // below threshold
        let m = Map {
            data: &d,
            h: 6,
            w: 7,
        };
        let mut out = Vec::with_capacity(42);
        local_peaks(m, 0.2, &mut out);
        assert_eq!(
            out,
            [
                LocalPeak {
                    x: 1.0,
                    y: 1.0,
                    value: 0.9
                },
                LocalPeak {
                    x: 4.5,
                    y: 3.0,
                    value: 0.5
                }
            ]
        );
        // A 3-wide flat top is no peak.
        d[3 * 7 + 6] = 0.5;
        local_peaks(
            Map {
                data: &d,
                h: 6,
                w: 7,
            },
            0.2,
            &mut out,
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn metadata_errors_name_the_key() {
        let e = SleapMeta::from_json(
            "{\"model_type\": \"single_instance\"}",
            "export_metadata.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("export_metadata.json") && e.contains("node_names"),
            "{e}"
        );
        let mut m = SleapMeta::from_json(
            "{\"model_type\": \"topdown\", \"node_names\": [\"a\"], \"crop_size\": [64, 48], \"output_stride\": 2}",
            "x",
        )
        .unwrap();
        assert_eq!(
            (m.crop_size, m.output_stride, m.peak_threshold),
            (Some((64, 48)), Some(2.0), 0.2)
        );
        m.read_max_stride("model_config:\n  backbone_config:\n    unet:\n      max_stride: 16\n");
        assert_eq!(m.max_stride, Some(16));
    }
}
