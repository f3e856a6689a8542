//! V4L2 cameras, the parts that need no device: which video nodes exist, which of a camera's formats, sizes
//! and rates to ask for, and how each pixel format becomes the loop's RGB8. Streaming (`VIDIOC_REQBUFS`,
//! mmap, `VIDIOC_DQBUF` with driver timestamps) builds on these in [`super::v4l2_stream`].
//!
//! Negotiation follows the kernel's enumeration ioctls (Documentation/userspace-api/media/v4l/):
//! `VIDIOC_ENUM_FMT` lists pixel formats (a fourcc each), `VIDIOC_ENUM_FRAMESIZES` a format's frame sizes
//! (discrete, or step-wise / continuous ranges), `VIDIOC_ENUM_FRAMEINTERVALS` the frame intervals of one
//! format and size (discrete, or a step-wise / continuous range of fractions of a second: 1/30 is 30 fps).
//! [`negotiate`] takes what they returned, as [`FormatOffer`]s, and picks the format, size and interval
//! for the rig's request; the driver may still adjust them in `VIDIOC_S_FMT` / `VIDIOC_S_PARM`, so what it
//! answers there is what the stream uses.

use std::path::{Path, PathBuf};

use super::convert::{self, BayerPattern, ConvertError, MjpegDecoder, Plane, YuvRange};

/// A V4L2 pixel format code: four ASCII characters, little-endian in a `u32` (`v4l2_fourcc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub u32);

impl FourCc {
    /// The code of four characters, e.g. `FourCc::new(*b"YUYV")`.
    pub const fn new(code: [u8; 4]) -> Self {
        Self(u32::from_le_bytes(code))
    }
}

impl std::fmt::Display for FourCc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.0.to_le_bytes();
        if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            f.write_str(&String::from_utf8_lossy(&bytes))
        } else {
            write!(f, "0x{:08x}", self.0)
        }
    }
}

/// The V4L2 codes of the formats reflex converts.
const FORMATS: [([u8; 4], PixelFormat); 11] = [
    (*b"RGB3", PixelFormat::Rgb24),
    (*b"BGR3", PixelFormat::Bgr24),
    (*b"GREY", PixelFormat::Grey),
    (*b"YUYV", PixelFormat::Yuyv),
    (*b"NV12", PixelFormat::Nv12),
    (*b"YU12", PixelFormat::Yu12),
    (*b"BA81", PixelFormat::Bayer(BayerPattern::Bggr)),
    (*b"GBRG", PixelFormat::Bayer(BayerPattern::Gbrg)),
    (*b"GRBG", PixelFormat::Bayer(BayerPattern::Grbg)),
    (*b"RGGB", PixelFormat::Bayer(BayerPattern::Rggb)),
    (*b"MJPG", PixelFormat::Mjpeg),
];

/// The pixel formats reflex converts to RGB8, with their V4L2 codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// `RGB3` (`V4L2_PIX_FMT_RGB24`): copied as is.
    Rgb24,
    /// `BGR3` (`V4L2_PIX_FMT_BGR24`).
    Bgr24,
    /// `GREY` (`V4L2_PIX_FMT_GREY`).
    Grey,
    /// `YUYV` (`V4L2_PIX_FMT_YUYV`): 4:2:2, the format every UVC webcam offers.
    Yuyv,
    /// `NV12` (`V4L2_PIX_FMT_NV12`).
    Nv12,
    /// `YU12` (`V4L2_PIX_FMT_YUV420`, I420).
    Yu12,
    /// `BA81`, `GBRG`, `GRBG`, `RGGB` (`V4L2_PIX_FMT_SBGGR8` …): raw 8-bit Bayer.
    Bayer(BayerPattern),
    /// `MJPG` (`V4L2_PIX_FMT_MJPEG`): compressed; what UVC cameras need for large sizes at high rates.
    Mjpeg,
}

impl PixelFormat {
    /// The format of a V4L2 code, if reflex converts it.
    pub fn from_fourcc(code: FourCc) -> Option<Self> {
        FORMATS
            .iter()
            .find(|(c, _)| FourCc::new(*c) == code)
            .map(|&(_, f)| f)
    }

    /// The codes of every format reflex converts, the cheapest to convert first.
    pub fn fourccs() -> impl Iterator<Item = FourCc> {
        FORMATS.iter().map(|(c, _)| FourCc::new(*c))
    }

    /// Preference when several formats meet the request: the cheapest hand-off first (a copy or a swap,
    /// then YUV arithmetic, then demosaicing, then JPEG decoding, which also allocates inside the decoder).
    fn cost(self) -> u8 {
        match self {
            PixelFormat::Rgb24 | PixelFormat::Bgr24 | PixelFormat::Grey => 0,
            PixelFormat::Yuyv | PixelFormat::Nv12 | PixelFormat::Yu12 => 1,
            PixelFormat::Bayer(_) => 2,
            PixelFormat::Mjpeg => 3,
        }
    }

    /// Converts one driver buffer of this format (`bytesperline` = `stride`, `bytesused` = `src.len()`) into
    /// `dst`, RGB8 of `width` × `height`. YUV from a V4L2 camera is limited range (the UVC default).
    pub fn to_rgb(
        self,
        src: &[u8],
        stride: usize,
        width: usize,
        height: usize,
        mjpeg: &mut MjpegDecoder,
        dst: &mut [u8],
    ) -> Result<(), ConvertError> {
        let plane = Plane::new(src, stride);
        match self {
            PixelFormat::Rgb24 => {
                plane_check_rgb(src, stride, width, height)?;
                if dst.len() != width * height * 3 {
                    return Err(ConvertError::Destination {
                        got: dst.len(),
                        need: width * height * 3,
                        width,
                        height,
                    });
                }
                for (y, out) in dst.chunks_exact_mut(width * 3).enumerate() {
                    out.copy_from_slice(&src[y * stride..][..width * 3]);
                }
                Ok(())
            }
            PixelFormat::Bgr24 => convert::swap_rb(plane, width, height, dst),
            PixelFormat::Grey => convert::gray_to_rgb(plane, width, height, dst),
            PixelFormat::Yuyv => convert::yuyv_to_rgb(plane, width, height, YuvRange::Limited, dst),
            PixelFormat::Nv12 => {
                let uv = src.get(stride * height..).unwrap_or(&[]);
                convert::nv12_to_rgb(
                    plane,
                    Plane::new(uv, stride),
                    width,
                    height,
                    YuvRange::Limited,
                    dst,
                )
            }
            PixelFormat::Yu12 => {
                // The chroma planes follow the luma, each at half the stride (V4L2's single-plane YUV420).
                let (c_stride, c_rows) = (stride / 2, height.div_ceil(2));
                let u = src.get(stride * height..).unwrap_or(&[]);
                let v = u.get(c_stride * c_rows..).unwrap_or(&[]);
                convert::i420_to_rgb(
                    plane,
                    Plane::new(u, c_stride),
                    Plane::new(v, c_stride),
                    width,
                    height,
                    YuvRange::Limited,
                    dst,
                )
            }
            PixelFormat::Bayer(pattern) => {
                convert::bayer_to_rgb(plane, width, height, pattern, dst)
            }
            PixelFormat::Mjpeg => mjpeg.decode(src, dst),
        }
    }
}

fn plane_check_rgb(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
) -> Result<(), ConvertError> {
    let need = if height == 0 {
        0
    } else {
        (height - 1) * stride + width * 3
    };
    if stride < width * 3 || src.len() < need {
        return Err(ConvertError::SourceTooSmall {
            what: "RGB",
            got: src.len(),
            stride,
            need,
            width,
            height,
        });
    }
    Ok(())
}

/// A frame interval: `num / den` seconds (`struct v4l2_fract`); 1/30 is 30 frames per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    /// Numerator.
    pub num: u32,
    /// Denominator.
    pub den: u32,
}

impl Fraction {
    /// Frames per second of this interval (0 for a zero denominator).
    pub fn fps(self) -> f64 {
        if self.num == 0 {
            0.0
        } else {
            f64::from(self.den) / f64::from(self.num)
        }
    }

    fn seconds(self) -> f64 {
        if self.den == 0 {
            f64::INFINITY
        } else {
            f64::from(self.num) / f64::from(self.den)
        }
    }
}

/// The frame sizes of one format (`VIDIOC_ENUM_FRAMESIZES`).
#[derive(Debug, Clone, PartialEq)]
pub enum FrameSizes {
    /// `V4L2_FRMSIZE_TYPE_DISCRETE`: these sizes (width, height) exactly.
    Discrete(Vec<(u32, u32)>),
    /// `V4L2_FRMSIZE_TYPE_STEPWISE` (or `CONTINUOUS`, steps of 1): any size in the ranges, on the steps.
    Stepwise {
        /// (min, max, step) of the width.
        width: (u32, u32, u32),
        /// (min, max, step) of the height.
        height: (u32, u32, u32),
    },
}

impl FrameSizes {
    /// Whether `w` × `h` is one of the sizes (on the grid of a stepwise range).
    pub(crate) fn contains(&self, w: u32, h: u32) -> bool {
        let on_grid = |v: u32, (min, max, step): (u32, u32, u32)| {
            v >= min && v <= max && (v - min).is_multiple_of(step.max(1))
        };
        match self {
            FrameSizes::Discrete(sizes) => sizes.contains(&(w, h)),
            FrameSizes::Stepwise { width, height } => on_grid(w, *width) && on_grid(h, *height),
        }
    }
}

/// The frame intervals of one format and size (`VIDIOC_ENUM_FRAMEINTERVALS`).
#[derive(Debug, Clone, PartialEq)]
pub enum FrameIntervals {
    /// `V4L2_FRMIVAL_TYPE_DISCRETE`: these intervals.
    Discrete(Vec<Fraction>),
    /// `V4L2_FRMIVAL_TYPE_STEPWISE` (or `CONTINUOUS`): any interval from `min` to `max` (seconds) on `step`.
    Stepwise {
        /// Shortest interval (fastest rate).
        min: Fraction,
        /// Longest interval.
        max: Fraction,
        /// Step between intervals.
        step: Fraction,
    },
}

/// What a camera offers in one pixel format: its sizes, and the intervals per size (a function of the size,
/// as the kernel enumerates them per format and size).
#[derive(Debug, Clone)]
pub struct FormatOffer {
    /// The format's code.
    pub fourcc: FourCc,
    /// Its frame sizes.
    pub sizes: FrameSizes,
    /// Frame intervals at each size: `(width, height, intervals)`; a size missing here offers none.
    pub intervals: Vec<(u32, u32, FrameIntervals)>,
}

/// What the rig asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Frame width (px).
    pub width: u32,
    /// Frame height (px).
    pub height: u32,
    /// Frame rate (frames/s).
    pub fps: f64,
    /// Only this format, when set (`format = "MJPG"`); otherwise the cheapest that meets the rate.
    pub format: Option<FourCc>,
}

/// The format, size and interval to set (`VIDIOC_S_FMT`, `VIDIOC_S_PARM`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// The format's code.
    pub fourcc: FourCc,
    /// How it converts to RGB8.
    pub format: PixelFormat,
    /// Frame width (px).
    pub width: u32,
    /// Frame height (px).
    pub height: u32,
    /// The frame interval to ask for.
    pub interval: Fraction,
}

impl Choice {
    /// Frames per second of the chosen interval.
    pub fn fps(&self) -> f64 {
        self.interval.fps()
    }
}

/// The interval that gives `fps` or faster, the slowest such (the least bandwidth): for a discrete list the
/// longest interval ≤ 1/fps; for a range, 1/fps itself rounded onto the step. `None` if the camera cannot
/// go that fast; then [`fastest`] says what it can do.
fn interval_for(intervals: &FrameIntervals, fps: f64) -> Option<Fraction> {
    let want_s = 1.0 / fps;
    // A rate within 0.2 % counts: NTSC's 30000/1001 = 29.97 for 30, and rounding of 1/fps.
    let ok = |f: Fraction| f.seconds() <= want_s * 1.002;
    match intervals {
        FrameIntervals::Discrete(list) => list
            .iter()
            .copied()
            .filter(|&f| ok(f))
            .max_by(|a, b| a.seconds().total_cmp(&b.seconds())),
        FrameIntervals::Stepwise { min, max, step } => {
            if !ok(*min) {
                return None;
            }
            // Express min, step and the target in microseconds to walk the grid.
            let us = |f: Fraction| (f.seconds() * 1e6).round() as u64;
            let (lo, hi, st) = (us(*min), us(*max), us(*step).max(1));
            let target = ((want_s * 1e6) as u64).clamp(lo, hi.max(lo));
            let n = (target - lo) / st;
            Some(Fraction {
                num: (lo + n * st) as u32,
                den: 1_000_000,
            })
        }
    }
}

/// The fastest interval on offer.
fn fastest(intervals: &FrameIntervals) -> Option<Fraction> {
    match intervals {
        FrameIntervals::Discrete(list) => list
            .iter()
            .copied()
            .min_by(|a, b| a.seconds().total_cmp(&b.seconds())),
        FrameIntervals::Stepwise { min, .. } => Some(*min),
    }
}

/// Picks the format, size and interval for `request` from what the camera offers: the exact size, the
/// rate met (the slowest interval at or above it), the cheapest format to convert; a camera that cannot
/// reach the rate at that size in any format is an error that lists what it can do, so the user can change
/// the request instead of getting a slower loop than they asked for.
pub fn negotiate(offers: &[FormatOffer], request: &Request) -> Result<Choice, String> {
    let (w, h) = (request.width, request.height);
    let mut best: Option<Choice> = None;
    let mut possible = Vec::new();
    for offer in offers {
        let Some(format) = PixelFormat::from_fourcc(offer.fourcc) else {
            continue;
        };
        if request.format.is_some_and(|f| f != offer.fourcc) || !offer.sizes.contains(w, h) {
            continue;
        }
        let Some((_, _, intervals)) = offer
            .intervals
            .iter()
            .find(|(iw, ih, _)| (*iw, *ih) == (w, h))
        else {
            continue;
        };
        if let Some(top) = fastest(intervals) {
            possible.push(format!("{} up to {:.1} fps", offer.fourcc, top.fps()));
        }
        let Some(interval) = interval_for(intervals, request.fps) else {
            continue;
        };
        let choice = Choice {
            fourcc: offer.fourcc,
            format,
            width: w,
            height: h,
            interval,
        };
        if best.is_none_or(|b| format.cost() < b.format.cost()) {
            best = Some(choice);
        }
    }
    best.ok_or_else(|| {
        let only = request
            .format
            .map_or_else(String::new, |f| format!(" in {f}"));
        if possible.is_empty() {
            let sizes: Vec<String> = offers
                .iter()
                .filter(|o| PixelFormat::from_fourcc(o.fourcc).is_some())
                .map(|o| match &o.sizes {
                    FrameSizes::Discrete(s) => format!(
                        "{}: {}",
                        o.fourcc,
                        s.iter()
                            .map(|(w, h)| format!("{w}x{h}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    FrameSizes::Stepwise { width, height } => format!(
                        "{}: {}..{} x {}..{}",
                        o.fourcc, width.0, width.1, height.0, height.1
                    ),
                })
                .collect();
            format!(
                "the camera has no {w}x{h} frames{only} (it offers {})",
                if sizes.is_empty() {
                    "no format reflex converts".to_string()
                } else {
                    sizes.join("; ")
                }
            )
        } else {
            format!(
                "the camera cannot deliver {w}x{h} at {} fps{only}: {}",
                request.fps,
                possible.join(", ")
            )
        }
    })
}

/// A frame rate for people: at most two decimals, no trailing zeros (`30`, `29.97`, `7.5`).
pub(crate) fn fps_text(fps: f64) -> String {
    let text = format!("{fps:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The rates of one size: `30, 15 fps` (discrete, in the driver's order) or `1-200 fps` (a range).
fn intervals_text(intervals: &FrameIntervals) -> String {
    match intervals {
        FrameIntervals::Discrete(list) => {
            let rates: Vec<String> = list.iter().map(|f| fps_text(f.fps())).collect();
            format!("{} fps", rates.join(", "))
        }
        FrameIntervals::Stepwise { min, max, .. } => {
            format!("{}-{} fps", fps_text(max.fps()), fps_text(min.fps()))
        }
    }
}

/// What a camera offers in one format, on one line, for error messages and `reflex devices`:
/// `YUYV 640x480 (30, 15 fps), 1280x720 (5 fps)`; a format reflex does not convert says so.
pub fn describe_offer(offer: &FormatOffer) -> String {
    let rates = |w: u32, h: u32| {
        offer
            .intervals
            .iter()
            .find(|(iw, ih, _)| (*iw, *ih) == (w, h))
            .map(|(_, _, i)| intervals_text(i))
    };
    let sizes = match &offer.sizes {
        FrameSizes::Discrete(sizes) => sizes
            .iter()
            .map(|&(w, h)| match rates(w, h) {
                Some(r) => format!("{w}x{h} ({r})"),
                None => format!("{w}x{h}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        FrameSizes::Stepwise { width, height } => {
            let mut text = format!(
                "{}x{} to {}x{} in steps of {}x{}",
                width.0, height.0, width.1, height.1, width.2, height.2
            );
            for (w, h, i) in &offer.intervals {
                text.push_str(&format!(", {w}x{h} ({})", intervals_text(i)));
            }
            text
        }
    };
    let unconverted = if PixelFormat::from_fourcc(offer.fourcc).is_none() {
        " (reflex does not convert it)"
    } else {
        ""
    };
    format!("{} {sizes}{unconverted}", offer.fourcc)
}

/// A video device node, as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoNode {
    /// The device file, e.g. `/dev/video0`.
    pub path: PathBuf,
    /// The driver's name for it (`/sys/class/video4linux/videoN/name`), e.g. the webcam's model.
    pub name: String,
    /// The node's index within its device (`index`): UVC cameras have two nodes, 0 for frames and 1 for
    /// metadata; only index 0 streams video.
    pub index: u32,
}

/// The video nodes under `sys_root` (normally `/sys`), device files under `dev_root` (normally `/dev`), in
/// number order. Reading sysfs needs no permission on the device; whether a node captures video is only
/// known once it is opened (`VIDIOC_QUERYCAP`), so metadata nodes are listed too, with their index.
pub fn list_nodes(sys_root: &Path, dev_root: &Path) -> std::io::Result<Vec<VideoNode>> {
    let class = sys_root.join("class/video4linux");
    let entries = match std::fs::read_dir(&class) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut nodes = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(number) = file
            .strip_prefix("video")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let read = |what: &str| {
            std::fs::read_to_string(entry.path().join(what))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        nodes.push((
            number,
            VideoNode {
                path: dev_root.join(&file),
                name: read("name"),
                index: read("index").parse().unwrap_or(0),
            },
        ));
    }
    nodes.sort_by_key(|(n, _)| *n);
    Ok(nodes.into_iter().map(|(_, n)| n).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sysfs `class/video4linux` folder at `class` with one node per (node, name, index), as the kernel
    /// lays them out (for the listing tests here and in `v4l2_stream`).
    pub(crate) fn fake_sysfs(class: &Path, nodes: &[(&str, &str, &str)]) {
        for (node, name, index) in nodes {
            std::fs::create_dir_all(class.join(node)).unwrap();
            std::fs::write(class.join(node).join("name"), format!("{name}\n")).unwrap();
            std::fs::write(class.join(node).join("index"), format!("{index}\n")).unwrap();
        }
    }

    fn fps(n: u32) -> Fraction {
        Fraction { num: 1, den: n }
    }

    /// A typical UVC webcam on USB 2: YUYV is bandwidth-bound (30 fps at 640x480, 5 fps at 1280x720), MJPEG
    /// gives 30 fps at both.
    fn webcam() -> Vec<FormatOffer> {
        vec![
            FormatOffer {
                fourcc: FourCc::new(*b"YUYV"),
                sizes: FrameSizes::Discrete(vec![(640, 480), (1280, 720)]),
                intervals: vec![
                    (640, 480, FrameIntervals::Discrete(vec![fps(30), fps(15)])),
                    (1280, 720, FrameIntervals::Discrete(vec![fps(5)])),
                ],
            },
            FormatOffer {
                fourcc: FourCc::new(*b"MJPG"),
                sizes: FrameSizes::Discrete(vec![(640, 480), (1280, 720)]),
                intervals: vec![
                    (640, 480, FrameIntervals::Discrete(vec![fps(30), fps(15)])),
                    (1280, 720, FrameIntervals::Discrete(vec![fps(30)])),
                ],
            },
            FormatOffer {
                fourcc: FourCc::new(*b"H264"),
                sizes: FrameSizes::Discrete(vec![(640, 480)]),
                intervals: vec![(640, 480, FrameIntervals::Discrete(vec![fps(60)]))],
            },
        ]
    }

    fn request(width: u32, height: u32, fps: f64) -> Request {
        Request {
            width,
            height,
            fps,
            format: None,
        }
    }

    #[test]
    fn picks_the_cheapest_format_that_meets_the_rate() {
        let c = negotiate(&webcam(), &request(640, 480, 30.0)).unwrap();
        assert_eq!((c.fourcc.to_string().as_str(), c.fps()), ("YUYV", 30.0));
        // At 720p only MJPEG reaches 30 fps.
        let c = negotiate(&webcam(), &request(1280, 720, 30.0)).unwrap();
        assert_eq!((c.format, c.interval), (PixelFormat::Mjpeg, fps(30)));
        // The slowest interval that meets the request: 15 fps asked, 15 given (not 30).
        let c = negotiate(&webcam(), &request(640, 480, 15.0)).unwrap();
        assert_eq!(c.interval, fps(15));
        // 29.97 counts as 30.
        let ntsc = Fraction {
            num: 1001,
            den: 30_000,
        };
        let offer = vec![FormatOffer {
            fourcc: FourCc::new(*b"GREY"),
            sizes: FrameSizes::Discrete(vec![(640, 480)]),
            intervals: vec![(640, 480, FrameIntervals::Discrete(vec![ntsc]))],
        }];
        assert_eq!(
            negotiate(&offer, &request(640, 480, 30.0))
                .unwrap()
                .interval,
            ntsc
        );
    }

    #[test]
    fn a_forced_format_and_unreachable_requests_explain_themselves() {
        let mut r = request(640, 480, 30.0);
        r.format = Some(FourCc::new(*b"MJPG"));
        assert_eq!(negotiate(&webcam(), &r).unwrap().format, PixelFormat::Mjpeg);
        let e = negotiate(&webcam(), &request(1280, 720, 60.0)).unwrap_err();
        assert!(
            e.contains("1280x720 at 60 fps")
                && e.contains("YUYV up to 5.0 fps")
                && e.contains("MJPG up to 30.0 fps"),
            "{e}"
        );
        let e = negotiate(&webcam(), &request(800, 600, 30.0)).unwrap_err();
        assert!(
            e.contains("no 800x600") && e.contains("YUYV: 640x480, 1280x720"),
            "{e}"
        );
        // H.264 is offered but not converted: never chosen, even at 60 fps.
        let e = negotiate(&webcam(), &request(640, 480, 60.0)).unwrap_err();
        assert!(!e.contains("H264"), "{e}");
    }

    #[test]
    fn stepwise_sizes_and_intervals_snap_to_their_grid() {
        // A machine-vision camera: any size on an 8-px grid, intervals from 1/200 s to 1 s in 10 µs steps.
        let offer = vec![FormatOffer {
            fourcc: FourCc::new(*b"RGGB"),
            sizes: FrameSizes::Stepwise {
                width: (64, 2048, 8),
                height: (64, 1536, 8),
            },
            intervals: vec![(
                1000,
                800,
                FrameIntervals::Stepwise {
                    min: fps(200),
                    max: Fraction { num: 1, den: 1 },
                    step: Fraction {
                        num: 1,
                        den: 100_000,
                    },
                },
            )],
        }];
        let c = negotiate(&offer, &request(1000, 800, 120.0)).unwrap();
        assert_eq!(c.format, PixelFormat::Bayer(BayerPattern::Rggb));
        // 1/120 s = 8333.3 µs → 8330 µs on the 10-µs grid (a hair faster than asked, never slower).
        assert_eq!(
            c.interval,
            Fraction {
                num: 8330,
                den: 1_000_000
            }
        );
        assert!(c.fps() >= 120.0);
        assert!(
            negotiate(&offer, &request(1001, 800, 120.0)).is_err(),
            "off the 8-px grid"
        );
        assert!(
            negotiate(&offer, &request(1000, 800, 500.0)).is_err(),
            "faster than 1/200 s"
        );
    }

    #[test]
    fn each_format_converts_a_driver_buffer_with_its_stride() {
        let (w, h) = (4usize, 2usize);
        let mut mjpeg = MjpegDecoder::new(w, h, 1024);
        let mut rgb = vec![0u8; w * h * 3];
        // (format, driver buffer, bytesperline, the RGB every pixel must get)
        type Case = (&'static [u8; 4], Vec<u8>, usize, [u8; 3]);
        let cases: Vec<Case> = vec![
            (
                b"RGB3",
                [[10u8, 20, 30].repeat(4), vec![0; 4]].concat().repeat(2),
                16,
                [10, 20, 30],
            ),
            (
                b"BGR3",
                [30u8, 20, 10, 30, 20, 10, 30, 20, 10, 30, 20, 10, 9, 9, 9, 9].repeat(2),
                16,
                [10, 20, 30],
            ),
            (b"GREY", vec![77u8; 6 * 2], 6, [77, 77, 77]),
            (b"YUYV", [235u8, 128].repeat(8), 8, [255, 255, 255]),
            (
                b"NV12",
                [16u8; 4 * 2].into_iter().chain([128u8; 4]).collect(),
                4,
                [0, 0, 0],
            ),
            (
                b"YU12",
                [235u8; 4 * 2].into_iter().chain([128u8; 4]).collect(),
                4,
                [255, 255, 255],
            ),
            (b"RGGB", vec![50u8; 4 * 2], 4, [50, 50, 50]),
        ];
        for (code, src, stride, want) in cases {
            let format = PixelFormat::from_fourcc(FourCc::new(*code)).unwrap();
            format
                .to_rgb(&src, stride, w, h, &mut mjpeg, &mut rgb)
                .unwrap();
            assert!(
                rgb.chunks_exact(3).all(|p| p == want),
                "{}: {rgb:?}",
                FourCc::new(*code)
            );
        }
        assert_eq!(PixelFormat::from_fourcc(FourCc::new(*b"H264")), None);
        assert_eq!(FourCc::new(*b"MJPG").to_string(), "MJPG");
        assert!(matches!(
            PixelFormat::Yuyv.to_rgb(&[0; 8], 8, w, h, &mut mjpeg, &mut rgb),
            Err(ConvertError::SourceTooSmall { .. })
        ));
    }

    #[test]
    fn nodes_are_listed_from_sysfs_in_number_order() {
        let tmp = tempfile::tempdir().unwrap();
        let class = tmp.path().join("sys/class/video4linux");
        fake_sysfs(
            &class,
            &[
                ("video10", "Cam B", "0"),
                ("video2", "HD Webcam", "0"),
                ("video3", "HD Webcam", "1"),
            ],
        );
        std::fs::create_dir_all(class.join("v4l-subdev0")).unwrap();
        let nodes = list_nodes(&tmp.path().join("sys"), Path::new("/dev")).unwrap();
        let got: Vec<(String, &str, u32)> = nodes
            .iter()
            .map(|n| (n.path.display().to_string(), n.name.as_str(), n.index))
            .collect();
        assert_eq!(
            got,
            [
                ("/dev/video2".to_string(), "HD Webcam", 0),
                ("/dev/video3".to_string(), "HD Webcam", 1),
                ("/dev/video10".to_string(), "Cam B", 0)
            ]
        );
        assert!(
            list_nodes(&tmp.path().join("nowhere"), Path::new("/dev"))
                .unwrap()
                .is_empty()
        );
    }
}
