//! Frame → network input, as the model's own tool prepares it: a window of the frame (all of it, or a
//! dynamic crop), resized to the network input when the sizes differ, padded to the network's size divisor,
//! colour order, channel count, layout (NHWC / NCHW), dtype and scaling from the model's metadata.
//!
//! Everything per slot is computed when the slot is made ([`Geometry::new`]); [`Preprocessor::fill`] only
//! reads the frame and writes the preallocated input. Without resizing, values go through a 256-entry table
//! per channel built with the tool's own float operations (`v * (1/255)` for torchvision's `ToDtype`,
//! `v / 255` for sleap-nn, then `(x - mean) / std`), so the input is bit-identical to the tool's.

use crate::camera::{Frame, PixelFormat};

/// Where the channel axis of a rank-4 image tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[batch, height, width, channels]` (TensorFlow exports).
    Nhwc,
    /// `[batch, channels, height, width]` (PyTorch exports).
    Nchw,
}

/// Element type of the network input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    /// 32-bit float.
    F32,
    /// Unsigned bytes 0–255 (the graph scales them itself, e.g. sleap-nn exports).
    U8,
}

/// How 0–255 pixel values become network input values (before mean/std).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scaling {
    /// Raw 0–255 as floats (DeepLabCut TensorFlow exports normalise inside the graph).
    Raw,
    /// `v * (1/255)`: torchvision's `ToDtype(float32, scale=True)` (DeepLabCut 3).
    MulReciprocal255,
    /// `v / 255`: sleap-nn's normalisation.
    Div255,
}

/// What the network input wants; read from the model's metadata and the ONNX input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// Input tensor name.
    pub name: String,
    /// Channel axis.
    pub layout: Layout,
    /// Element type.
    pub dtype: InputType,
    /// 1 (grey) or 3 (colour).
    pub channels: usize,
    /// The network wants BGR rather than RGB.
    pub bgr: bool,
    /// Value scaling.
    pub scaling: Scaling,
    /// Per-channel `(mean, std)` applied after scaling: `(x - mean) / std`.
    pub mean_std: Option<([f32; 3], [f32; 3])>,
    /// Fixed input `(width, height)` in px, when the network has one.
    pub fixed_size: Option<(u32, u32)>,
    /// Dynamic sizes are padded (bottom/right, zeros) up to a multiple of this (sleap-nn's `max_stride`).
    pub divisor: u32,
    /// Resize factor applied to the frame before the network when the size is dynamic (sleap-nn's
    /// `input_scale`); 1 for none.
    pub input_scale: f32,
}

impl InputSpec {
    /// One line for `reflex model inspect`.
    pub fn describe(&self) -> String {
        let layout = match self.layout {
            Layout::Nhwc => "NHWC",
            Layout::Nchw => "NCHW",
        };
        let dtype = match self.dtype {
            InputType::F32 => "float32",
            InputType::U8 => "uint8",
        };
        let colour = match (self.channels, self.bgr) {
            (1, _) => "grey",
            (_, true) => "BGR",
            _ => "RGB",
        };
        let scaling = match (self.dtype, self.scaling) {
            (InputType::U8, _) => "0-255 (scaled inside the graph)".to_string(),
            (_, Scaling::Raw) => "raw 0-255".to_string(),
            (_, Scaling::MulReciprocal255) => "v/255".to_string(),
            (_, Scaling::Div255) => "v/255".to_string(),
        };
        let norm = match self.mean_std {
            Some((m, s)) => format!(
                ", then (x - mean)/std with mean [{:.3}, {:.3}, {:.3}], std [{:.3}, {:.3}, {:.3}]",
                m[0], m[1], m[2], s[0], s[1], s[2]
            ),
            None => String::new(),
        };
        let size = match self.fixed_size {
            Some((w, h)) => format!("{w}x{h} (frames of another size are resized to it)"),
            None if self.divisor > 1 => format!(
                "any size (the frame{}, padded to a multiple of {})",
                if self.input_scale != 1.0 {
                    format!(" scaled by {}", self.input_scale)
                } else {
                    String::new()
                },
                self.divisor
            ),
            None => "any size (the frame's)".to_string(),
        };
        format!(
            "{layout} {dtype} {colour}, {scaling}{norm}; input size {size}",
            layout = layout
        )
    }

    /// Per-channel lookup table of the scaled and normalised value of each byte, in network channel order.
    fn table(&self) -> Box<[[f32; 256]; 3]> {
        let mut t = Box::new([[0f32; 256]; 3]);
        for (c, row) in t.iter_mut().enumerate() {
            for (v, out) in row.iter_mut().enumerate() {
                *out = self.normalise(v as f32, c);
            }
        }
        t
    }

    /// The tool's float operations on one value `v` (0–255, possibly fractional after resizing) of channel `c`.
    fn normalise(&self, v: f32, c: usize) -> f32 {
        let x = match self.scaling {
            Scaling::Raw => v,
            Scaling::MulReciprocal255 => v * (1.0f32 / 255.0),
            Scaling::Div255 => v / 255.0,
        };
        match self.mean_std {
            Some((mean, std)) => (x - mean[c]) / std[c],
            None => x,
        }
    }
}

/// A rectangle of the frame, in px.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

/// How one window size maps onto the network input: sizes, padding, resize tables, and back to frame px.
#[derive(Debug, Clone)]
pub struct Geometry {
    /// Window size in frame px.
    pub win: (u32, u32),
    /// Size of the (resized) window inside the input tensor.
    pub content: (u32, u32),
    /// Input tensor width and height (content + padding).
    pub tensor: (u32, u32),
    /// Frame px per network-input px, x and y.
    pub scale: (f32, f32),
    /// Bilinear source taps per output column / row: (index, next index, weight of next); empty without resize.
    xs: Vec<(u32, u32, f32)>,
    ys: Vec<(u32, u32, f32)>,
}

/// Source taps of a half-pixel-centre bilinear resize (OpenCV's `INTER_LINEAR`, PyTorch's
/// `interpolate(bilinear, align_corners=False)`) from `src` to `dst` samples.
fn taps(src: u32, dst: u32) -> Vec<(u32, u32, f32)> {
    let ratio = src as f32 / dst as f32;
    (0..dst)
        .map(|d| {
            let s = ((d as f32 + 0.5) * ratio - 0.5).max(0.0);
            let i0 = (s.floor() as u32).min(src - 1);
            let i1 = (i0 + 1).min(src - 1);
            (i0, i1, s - i0 as f32)
        })
        .collect()
}

impl Geometry {
    /// The mapping for a `win_w` × `win_h` window of the frame.
    pub fn new(spec: &InputSpec, win_w: u32, win_h: u32) -> Self {
        let (content, scale) = match spec.fixed_size {
            Some((w, h)) => ((w, h), (win_w as f32 / w as f32, win_h as f32 / h as f32)),
            None if spec.input_scale != 1.0 => (
                (
                    ((win_w as f32 * spec.input_scale) as u32).max(1),
                    ((win_h as f32 * spec.input_scale) as u32).max(1),
                ),
                (1.0 / spec.input_scale, 1.0 / spec.input_scale),
            ),
            None => ((win_w, win_h), (1.0, 1.0)),
        };
        let d = spec.divisor.max(1);
        let tensor = match spec.fixed_size {
            Some(size) => size,
            None => (content.0.div_ceil(d) * d, content.1.div_ceil(d) * d),
        };
        let resize = content != (win_w, win_h);
        Self {
            win: (win_w, win_h),
            content,
            tensor,
            scale,
            xs: if resize {
                taps(win_w, content.0)
            } else {
                Vec::new()
            },
            ys: if resize {
                taps(win_h, content.1)
            } else {
                Vec::new()
            },
        }
    }

    /// The input tensor shape for this window, batch 1.
    pub fn shape(&self, spec: &InputSpec) -> [usize; 4] {
        let (w, h) = (self.tensor.0 as usize, self.tensor.1 as usize);
        match spec.layout {
            Layout::Nhwc => [1, h, w, spec.channels],
            Layout::Nchw => [1, spec.channels, h, w],
        }
    }

    /// Network-input px → frame px, for a window at `win`.
    pub fn to_frame(&self, win: Window, x: f32, y: f32) -> (f32, f32) {
        (
            x * self.scale.0 + win.x as f32,
            y * self.scale.1 + win.y as f32,
        )
    }

    /// Whether the window is resized on its way in.
    pub fn resizes(&self) -> bool {
        !self.xs.is_empty()
    }
}

/// The network input being written: floats or bytes.
pub enum InputMut<'a> {
    /// A float32 input.
    F32(&'a mut [f32]),
    /// A uint8 input.
    U8(&'a mut [u8]),
}

impl InputMut<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::U8(v) => v.len(),
        }
    }

    /// Whether the input has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A window of a frame copied row by row into a tensor without resizing (3 network channels, or a grey
/// frame).
struct RowCopy<'a> {
    frame: &'a Frame,
    win: Window,
    content: (usize, usize),
    tensor: (usize, usize),
    channels: usize,
    nchw: bool,
    /// Source channel of each network channel (RGB or BGR).
    order: [usize; 3],
}

impl RowCopy<'_> {
    fn fill<T: Copy>(&self, dst: &mut [T], conv: impl Fn(usize, u8) -> T) {
        let (cw, ch) = self.content;
        let (tw, th) = self.tensor;
        let fw = self.frame.width as usize;
        let fc = self.frame.format.channels();
        let plane = tw * th;
        let c_n = self.channels;
        for y in 0..ch {
            let start = ((self.win.y as usize + y) * fw + self.win.x as usize) * fc;
            let src = &self.frame.data[start..start + cw * fc];
            if self.nchw {
                for c in 0..c_n {
                    let row = &mut dst[c * plane + y * tw..c * plane + y * tw + cw];
                    if fc == 3 {
                        let o = self.order[c];
                        for (d, s) in row.iter_mut().zip(src.chunks_exact(3)) {
                            *d = conv(c, s[o]);
                        }
                    } else {
                        for (d, &s) in row.iter_mut().zip(src) {
                            *d = conv(c, s);
                        }
                    }
                }
            } else {
                let row = &mut dst[y * tw * c_n..(y * tw + cw) * c_n];
                if fc == 3 {
                    let [o0, o1, o2] = self.order;
                    for (d, s) in row.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
                        d[0] = conv(0, s[o0]);
                        d[1] = conv(1, s[o1]);
                        d[2] = conv(2, s[o2]);
                    }
                } else {
                    for (d, &s) in row.chunks_exact_mut(c_n).zip(src) {
                        for (c, v) in d.iter_mut().enumerate() {
                            *v = conv(c, s);
                        }
                    }
                }
            }
        }
    }
}

/// Writes frames into a network input; holds the lookup table built at load.
pub struct Preprocessor {
    spec: InputSpec,
    table: Box<[[f32; 256]; 3]>,
}

/// The channel values of pixel (`x`, `y`) of `frame` in the network's channel order (and count).
#[inline]
fn pixel(frame: &Frame, x: u32, y: u32, channels: usize, bgr: bool) -> [u8; 3] {
    let w = frame.width as usize;
    match frame.format {
        PixelFormat::Rgb8 => {
            let i = (y as usize * w + x as usize) * 3;
            let (r, g, b) = (frame.data[i], frame.data[i + 1], frame.data[i + 2]);
            if channels == 1 {
                // torchvision's rgb_to_grayscale, back to uint8 (sleap-nn's convert_to_grayscale).
                let l = (r as f32 * 0.2989 + g as f32 * 0.587 + b as f32 * 0.114) as u8;
                [l, l, l]
            } else if bgr {
                [b, g, r]
            } else {
                [r, g, b]
            }
        }
        PixelFormat::Gray8 => {
            let v = frame.data[y as usize * w + x as usize];
            [v, v, v]
        }
    }
}

impl Preprocessor {
    /// A pre-processor for `spec`.
    pub fn new(spec: InputSpec) -> Self {
        let table = spec.table();
        Self { spec, table }
    }

    /// The input it writes.
    pub fn spec(&self) -> &InputSpec {
        &self.spec
    }

    /// Zero a fresh input (the padding is never written again).
    pub fn clear(&self, input: InputMut<'_>) {
        match input {
            InputMut::F32(v) => v.fill(0.0),
            InputMut::U8(v) => v.fill(0),
        }
    }

    /// Write window `win` of `frame` (its size must be `geom.win`) into `input` (shaped by `geom.shape`).
    pub fn fill(&self, frame: &Frame, win: Window, geom: &Geometry, input: InputMut<'_>) {
        let (cw, ch) = (geom.content.0 as usize, geom.content.1 as usize);
        let (tw, th) = (geom.tensor.0 as usize, geom.tensor.1 as usize);
        let channels = self.spec.channels;
        let bgr = self.spec.bgr;
        let nchw = self.spec.layout == Layout::Nchw;
        let plane = tw * th;
        let index = |x: usize, y: usize, c: usize| {
            if nchw {
                c * plane + y * tw + x
            } else {
                (y * tw + x) * channels + c
            }
        };
        let fc = frame.format.channels();
        if !geom.resizes() && (channels == 3 || fc == 1) {
            // Row by row over slices: the hot path (no per-pixel format dispatch or bounds checks).
            let order = if bgr { [2, 1, 0] } else { [0, 1, 2] };
            let rows = RowCopy {
                frame,
                win,
                content: (cw, ch),
                tensor: (tw, th),
                channels,
                nchw,
                order,
            };
            let raw = self.spec.scaling == Scaling::Raw && self.spec.mean_std.is_none();
            match input {
                // Raw values: a plain conversion the compiler vectorises (DeepLabCut TensorFlow exports).
                InputMut::F32(dst) if raw => rows.fill(dst, |_, v| f32::from(v)),
                InputMut::F32(dst) => rows.fill(dst, |c, v| self.table[c][v as usize]),
                InputMut::U8(dst) => rows.fill(dst, |_, v| v),
            }
            return;
        }
        if !geom.resizes() {
            match input {
                InputMut::F32(dst) => {
                    for y in 0..ch {
                        for x in 0..cw {
                            let p = pixel(frame, win.x + x as u32, win.y + y as u32, channels, bgr);
                            for c in 0..channels {
                                dst[index(x, y, c)] = self.table[c][p[c] as usize];
                            }
                        }
                    }
                }
                InputMut::U8(dst) => {
                    for y in 0..ch {
                        for x in 0..cw {
                            let p = pixel(frame, win.x + x as u32, win.y + y as u32, channels, bgr);
                            for c in 0..channels {
                                dst[index(x, y, c)] = p[c];
                            }
                        }
                    }
                }
            }
            return;
        }
        let mut input = input;
        for (y, &(y0, y1, wy)) in geom.ys.iter().enumerate() {
            for (x, &(x0, x1, wx)) in geom.xs.iter().enumerate() {
                let p00 = pixel(frame, win.x + x0, win.y + y0, channels, bgr);
                let p01 = pixel(frame, win.x + x1, win.y + y0, channels, bgr);
                let p10 = pixel(frame, win.x + x0, win.y + y1, channels, bgr);
                let p11 = pixel(frame, win.x + x1, win.y + y1, channels, bgr);
                for c in 0..channels {
                    let top = p00[c] as f32 + (p01[c] as f32 - p00[c] as f32) * wx;
                    let bottom = p10[c] as f32 + (p11[c] as f32 - p10[c] as f32) * wx;
                    let v = top + (bottom - top) * wy;
                    match &mut input {
                        InputMut::F32(dst) => dst[index(x, y, c)] = self.spec.normalise(v, c),
                        InputMut::U8(dst) => {
                            dst[index(x, y, c)] = v.round().clamp(0.0, 255.0) as u8
                        }
                    }
                }
            }
        }
    }
}

impl Preprocessor {
    /// Write the `geom.win`-sized window of `frame` whose top-left is `origin` (frame px, may be outside the
    /// frame) into `input`, zeros where the window leaves the frame: sleap-nn's `crop_bboxes` on the
    /// normalised image. The geometry must not resize (top-down crops are taken at frame resolution).
    pub fn fill_clipped(
        &self,
        frame: &Frame,
        origin: (i64, i64),
        geom: &Geometry,
        input: InputMut<'_>,
    ) {
        debug_assert!(!geom.resizes(), "clipped windows are not resized");
        let (cw, ch) = (geom.content.0 as usize, geom.content.1 as usize);
        let (tw, th) = (geom.tensor.0 as usize, geom.tensor.1 as usize);
        let channels = self.spec.channels;
        let nchw = self.spec.layout == Layout::Nchw;
        let plane = tw * th;
        let index = |x: usize, y: usize, c: usize| {
            if nchw {
                c * plane + y * tw + x
            } else {
                (y * tw + x) * channels + c
            }
        };
        let (fw, fh) = (i64::from(frame.width), i64::from(frame.height));
        let mut input = input;
        for y in 0..ch {
            let sy = origin.1 + y as i64;
            for x in 0..cw {
                let sx = origin.0 + x as i64;
                let inside = (0..fw).contains(&sx) && (0..fh).contains(&sy);
                let p = if inside {
                    pixel(frame, sx as u32, sy as u32, channels, self.spec.bgr)
                } else {
                    [0; 3]
                };
                for c in 0..channels {
                    match &mut input {
                        InputMut::F32(dst) => {
                            dst[index(x, y, c)] = if inside {
                                self.table[c][p[c] as usize]
                            } else {
                                0.0
                            }
                        }
                        InputMut::U8(dst) => dst[index(x, y, c)] = p[c],
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reflex_plugins::pose::Pose;

    fn frame(w: u32, h: u32, f: impl Fn(u32, u32, usize) -> u8) -> Frame {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    data.push(f(x, y, c));
                }
            }
        }
        Frame {
            id: 0,
            camera: 0,
            width: w,
            height: h,
            format: PixelFormat::Rgb8,
            data,
            t_exposure_ns: 0,
            t_capture_ns: 0,
            truth: Pose::new(0),
        }
    }

    fn spec(layout: Layout, fixed: Option<(u32, u32)>) -> InputSpec {
        InputSpec {
            name: "x".into(),
            layout,
            dtype: InputType::F32,
            channels: 3,
            bgr: false,
            scaling: Scaling::MulReciprocal255,
            mean_std: Some(([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])),
            fixed_size: fixed,
            divisor: 1,
            input_scale: 1.0,
        }
    }

    #[test]
    fn nchw_window_with_torchvision_normalisation() {
        let f = frame(6, 5, |x, y, c| (x * 40 + y * 7 + c as u32 * 3) as u8);
        let s = spec(Layout::Nchw, None);
        let p = Preprocessor::new(s.clone());
        let g = Geometry::new(&s, 4, 3);
        assert_eq!(g.shape(&s), [1, 3, 3, 4]);
        let mut buf = vec![0f32; 36];
        let win = Window {
            x: 2,
            y: 1,
            w: 4,
            h: 3,
        };
        p.fill(&f, win, &g, InputMut::F32(&mut buf));
        // channel 1 (G), row 2, col 3 → frame pixel (5, 3)
        let v = (5 * 40 + 3 * 7 + 3) as f32;
        assert_eq!(buf[12 + 2 * 4 + 3], (v * (1.0f32 / 255.0) - 0.456) / 0.224);
        assert_eq!(g.to_frame(win, 1.5, 2.0), (3.5, 3.0));
    }

    #[test]
    fn bgr_grey_u8_and_padding() {
        let f = frame(5, 3, |x, _, c| (x * 10 + c as u32) as u8);
        let mut s = spec(Layout::Nhwc, None);
        s.bgr = true;
        s.dtype = InputType::U8;
        s.divisor = 4;
        let g = Geometry::new(&s, 5, 3);
        assert_eq!((g.content, g.tensor), ((5, 3), (8, 4)));
        let mut buf = vec![7u8; 8 * 4 * 3];
        let p = Preprocessor::new(s);
        p.clear(InputMut::U8(&mut buf));
        p.fill(
            &f,
            Window {
                x: 0,
                y: 0,
                w: 5,
                h: 3,
            },
            &g,
            InputMut::U8(&mut buf),
        );
        assert_eq!(&buf[..3], &[2, 1, 0]);
        assert_eq!(&buf[(2 * 8 + 4) * 3..(2 * 8 + 4) * 3 + 3], &[42, 41, 40]);
        assert!(buf[(3 * 8) * 3..].iter().all(|&v| v == 0), "bottom padding");
        assert!(buf[5 * 3..8 * 3].iter().all(|&v| v == 0), "right padding");
    }

    #[test]
    fn grey_frames_are_replicated_and_both_paths_agree() {
        let colour = frame(7, 4, |x, y, c| (x * 30 + y * 5 + c as u32 * 2) as u8);
        let grey = Frame {
            format: PixelFormat::Gray8,
            data: colour.data.chunks(3).map(|p| p[1]).collect(),
            ..colour.clone()
        };
        for layout in [Layout::Nhwc, Layout::Nchw] {
            let s = spec(layout, None);
            let g = Geometry::new(&s, 5, 3);
            let win = Window {
                x: 1,
                y: 1,
                w: 5,
                h: 3,
            };
            let p = Preprocessor::new(s.clone());
            let mut fast = vec![0f32; 45];
            p.fill(&grey, win, &g, InputMut::F32(&mut fast));
            // The per-pixel path (what clipped windows use) gives the same values.
            let mut slow = vec![0f32; 45];
            p.fill_clipped(&grey, (1, 1), &g, InputMut::F32(&mut slow));
            assert_eq!(fast, slow, "{layout:?}");
            let v = grey.data[2 * 7 + 3] as f32; // frame (3, 2) = window (2, 1)
            let at = |c: usize| match layout {
                Layout::Nhwc => (5 + 2) * 3 + c,
                Layout::Nchw => c * 15 + 5 + 2,
            };
            for c in 0..3 {
                assert_eq!(fast[at(c)], s.normalise(v, c));
            }
            let mut colour_fast = vec![0f32; 45];
            p.fill(&colour, win, &g, InputMut::F32(&mut colour_fast));
            let mut colour_slow = vec![0f32; 45];
            p.fill_clipped(&colour, (1, 1), &g, InputMut::F32(&mut colour_slow));
            assert_eq!(colour_fast, colour_slow, "{layout:?}");
        }
    }

    #[test]
    fn resize_halves_with_half_pixel_centres() {
        // A horizontal ramp 0, 10, 20, ... resized 8 → 4 wide samples at 0.5, 2.5, ... → 5, 25, 45, 65.
        let f = frame(8, 2, |x, _, _| (x * 10) as u8);
        let mut s = spec(Layout::Nhwc, Some((4, 1)));
        s.scaling = Scaling::Raw;
        s.mean_std = None;
        let g = Geometry::new(&s, 8, 2);
        assert!(g.resizes());
        assert_eq!(g.scale, (2.0, 2.0));
        let mut buf = vec![0f32; 4 * 3];
        Preprocessor::new(s).fill(
            &f,
            Window {
                x: 0,
                y: 0,
                w: 8,
                h: 2,
            },
            &g,
            InputMut::F32(&mut buf),
        );
        let r: Vec<f32> = buf.chunks(3).map(|p| p[0]).collect();
        assert_eq!(r, [5.0, 25.0, 45.0, 65.0]);
    }
}
