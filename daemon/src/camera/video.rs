//! Video files as a camera: replays an H.264 MP4/MOV recording at its own frame rate, at another rate, or as
//! fast as it decodes, with each frame's timestamp from the container, for dry runs and benchmarks.
//!
//! - Demuxing: `re_mp4` (pure Rust, Rerun's maintained MP4 reader) reads the sample table once at open;
//!   each frame's bytes are then read with one positioned read into a buffer sized for the largest sample.
//! - Decoding: Cisco's OpenH264 through the `openh264` crate, built from its bundled C++ source by `cc` (no
//!   system library, no FFmpeg, no libclang). It decodes Baseline, Main and High profile with B-frames,
//!   bit-exact with FFmpeg on `shared/data/clip.mp4`, allocates nothing per frame (its picture buffers are
//!   made with the first SPS), and hands out pictures in display order.
//! - Conversion: the decoder's I420 picture is converted in place into the frame's RGB8 buffer
//!   ([`convert::i420_to_rgb`], BT.601 limited range), at the file's own size; the model's pre-processing
//!   resizes to the network input.
//!
//! Time: the n-th picture in display order gets the n-th presentation timestamp of the track (`stts` +
//! `ctts`, with the edit list's shift). Paced replay maps them onto the host clock at the first frame:
//! exposure = start + pts / speed, and the frame is handed over at that time, after decoding ahead, so the
//! `capture` stage is the wake-up plus the hand-off (the conversion), as for a camera whose driver buffer is
//! ready at exposure. If the decoder ever hands a frame over late, the replay's clock slips by the lateness
//! (frames are never bunched up to catch up). With `fps = "max"` nothing waits: a frame's exposure stamp is
//! the moment its picture left the decoder. Looping (`loop = true`) continues the timeline, pass after pass.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use openh264::OpenH264API;
use openh264::decoder::{DecodeOptions, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource as _;
use serde::{Deserialize, Serialize};

use super::convert::{self, Plane, YuvRange};
use super::{CameraError, Frame, FrameSource, PixelFormat, SourceInfo};
use crate::clock::SharedClock;

/// Largest coded frame accepted (bytes): far above any real H.264 frame, small enough to allocate once.
const MAX_SAMPLE_BYTES: u64 = 64 << 20;

/// How fast a video is replayed (`[source.video] fps`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum VideoRate {
    /// At the file's own timestamps (`"file"`, the default).
    #[default]
    File,
    /// At this many frames per second: the file's timestamps scaled by `fps / file fps`.
    Fps(f64),
    /// As fast as frames decode, no pacing (`"max"`): for benchmarks.
    Max,
}

impl VideoRate {
    /// Parses `file`, `max` or a positive number of frames per second.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "file" => Ok(VideoRate::File),
            "max" => Ok(VideoRate::Max),
            t => match t.parse::<f64>() {
                Ok(fps) => VideoRate::from_fps(fps),
                Err(_) => Err(format!(
                    "`{t}` is not a frame rate: a number of frames per second, \"file\" or \"max\""
                )),
            },
        }
    }

    fn from_fps(fps: f64) -> Result<Self, String> {
        if fps.is_finite() && fps > 0.0 && fps <= 10_000.0 {
            Ok(VideoRate::Fps(fps))
        } else {
            Err(format!(
                "fps must be in (0, 10000], \"file\" or \"max\", got {fps}"
            ))
        }
    }
}

impl Serialize for VideoRate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            VideoRate::File => s.serialize_str("file"),
            VideoRate::Max => s.serialize_str("max"),
            VideoRate::Fps(fps) => s.serialize_f64(*fps),
        }
    }
}

impl<'de> Deserialize<'de> for VideoRate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = VideoRate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("frames per second (a number), \"file\" or \"max\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<VideoRate, E> {
                VideoRate::from_fps(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<VideoRate, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<VideoRate, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<VideoRate, E> {
                match v {
                    "file" => Ok(VideoRate::File),
                    "max" => Ok(VideoRate::Max),
                    _ => Err(E::custom(format!(
                        "`{v}`: expected frames per second (a number), \"file\" or \"max\""
                    ))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Settings of the video-file camera (`[source.video]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// The video file (H.264 in MP4 or MOV), relative to the working directory.
    pub path: String,
    /// Replay rate: `"file"` (its own timestamps), a number of frames per second, or `"max"`.
    pub fps: VideoRate,
    /// Start again from the first frame at the end, the timeline continuing (`loop` in the file).
    #[serde(rename = "loop")]
    pub repeat: bool,
}

/// Where one coded frame lies in the file.
#[derive(Debug, Clone, Copy)]
struct SampleRef {
    offset: u64,
    size: u32,
}

/// One decoded picture, lent by [`H264File::next_picture`]: planes of the decoder's I420 buffer.
#[derive(Debug, Clone, Copy)]
pub struct Picture<'a> {
    /// Position in display order within the pass, from 0.
    pub index: usize,
    /// Presentation time from the container (ns), from 0 at the first frame.
    pub pts_ns: u64,
    /// Width (px).
    pub width: usize,
    /// Height (px).
    pub height: usize,
    /// Luma plane.
    pub y: Plane<'a>,
    /// Blue-difference chroma plane (half width and height).
    pub u: Plane<'a>,
    /// Red-difference chroma plane (half width and height).
    pub v: Plane<'a>,
}

/// An H.264 MP4/MOV file opened for decoding, frame after frame, into buffers made at open.
pub struct H264File {
    path: PathBuf,
    file: File,
    width: usize,
    height: usize,
    /// Coded frames in decode order.
    samples: Vec<SampleRef>,
    /// Presentation times (ns) in display order, from 0.
    pts_ns: Vec<u64>,
    /// One pass, first frame to the end of the last (ns).
    pass_ns: u64,
    /// SPS and PPS as Annex-B, fed at the start of each pass.
    params: Vec<u8>,
    /// Bytes of each NAL unit's length prefix (1, 2 or 4).
    nal_len: usize,
    read_buf: Vec<u8>,
    annex_b: Vec<u8>,
    decoder: Decoder,
    next_sample: usize,
    next_display: usize,
}

impl std::fmt::Debug for H264File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264File")
            .field("path", &self.path)
            .field("size", &(self.width, self.height))
            .field("frames", &self.samples.len())
            .finish_non_exhaustive()
    }
}

fn open_error(path: &Path, what: impl std::fmt::Display) -> CameraError {
    CameraError::Open(format!("video `{}`: {what}", path.display()))
}

impl H264File {
    /// Opens `path`: reads the sample table and the parameter sets, and makes the decoder and every buffer.
    /// Errors name the file: missing, not MP4/MOV, no video track, a codec other than H.264, truncated.
    pub fn open(path: &Path) -> Result<Self, CameraError> {
        let file = File::open(path).map_err(|e| open_error(path, e))?;
        let file_len = file.metadata().map_err(|e| open_error(path, e))?.len();
        let mp4 = re_mp4::Mp4::read(std::io::BufReader::new(&file), file_len).map_err(|e| {
            open_error(
                path,
                format!(
                    "not a readable MP4/MOV file ({e}); a recording cut off before it was closed has no index"
                ),
            )
        })?;
        let track = mp4
            .tracks()
            .values()
            .find(|t| t.kind == Some(re_mp4::TrackKind::Video))
            .ok_or_else(|| open_error(path, "no video track"))?;
        let re_mp4::StsdBoxContent::Avc1(avc1) = &track.trak(&mp4).mdia.minf.stbl.stsd.contents
        else {
            let codec = track.codec_string(&mp4).unwrap_or_else(|| "unknown".into());
            return Err(open_error(
                path,
                format!(
                    "codec `{codec}` is not supported: reflex replays H.264 (avc1) video in MP4/MOV; convert with `ffmpeg -i {} -c:v libx264 -pix_fmt yuv420p out.mp4`",
                    path.display()
                ),
            ));
        };
        let avcc = &avc1.avcc.contents;
        let nal_len = usize::from(avcc.length_size_minus_one & 3) + 1;
        if nal_len == 3 {
            return Err(open_error(path, "invalid avcC: 3-byte NAL lengths"));
        }
        let mut params = Vec::new();
        for nal in avcc
            .sequence_parameter_sets
            .iter()
            .chain(&avcc.picture_parameter_sets)
        {
            params.extend_from_slice(&[0, 0, 0, 1]);
            params.extend_from_slice(&nal.bytes);
        }
        if track.samples.is_empty() {
            return Err(open_error(path, "the video track has no frames"));
        }
        let mut samples = Vec::with_capacity(track.samples.len());
        let mut max_size = 0u64;
        for (i, s) in track.samples.iter().enumerate() {
            if s.size > MAX_SAMPLE_BYTES {
                return Err(open_error(
                    path,
                    format!("frame {i} claims {} bytes: corrupt index", s.size),
                ));
            }
            if s.offset.saturating_add(s.size) > file_len {
                return Err(open_error(
                    path,
                    format!(
                        "truncated: frame {i} of {} lies at bytes {}..{}, the file has {file_len}",
                        track.samples.len(),
                        s.offset,
                        s.offset + s.size
                    ),
                ));
            }
            max_size = max_size.max(s.size);
            samples.push(SampleRef {
                offset: s.offset,
                size: s.size as u32,
            });
        }
        let timescale = track.timescale.max(1) as f64;
        let to_ns = |t: i64| (t as f64 * 1e9 / timescale).round().max(0.0) as u64;
        let mut pts: Vec<i64> = track
            .samples
            .iter()
            .map(|s| s.composition_timestamp)
            .collect();
        pts.sort_unstable();
        let first = pts[0];
        let last = track
            .samples
            .iter()
            .max_by_key(|s| s.composition_timestamp)
            .map_or(0, |s| s.composition_timestamp + s.duration as i64);
        let pts_ns: Vec<u64> = pts.iter().map(|&t| to_ns(t - first)).collect();
        let pass_ns = to_ns(last - first).max(pts_ns[pts_ns.len() - 1] + 1);
        let max_size = max_size as usize;
        let mut this = Self {
            path: path.to_path_buf(),
            file,
            width: usize::from(avc1.width),
            height: usize::from(avc1.height),
            samples,
            pts_ns,
            pass_ns,
            params,
            nal_len,
            read_buf: vec![0; max_size],
            // Each NAL unit takes ≥ nal_len + 1 bytes and grows by 4 − nal_len: at most 2.5× for 1-byte lengths.
            annex_b: Vec::with_capacity(max_size * 5 / 2 + 8),
            decoder: new_decoder().map_err(|e| open_error(path, e))?,
            next_sample: 0,
            next_display: 0,
        };
        if this.width == 0 || this.height == 0 {
            return Err(open_error(path, "the video track has no size"));
        }
        this.feed_params().map_err(|e| open_error(path, e))?;
        Ok(this)
    }

    /// Frame width (px).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Frame height (px).
    pub fn height(&self) -> usize {
        self.height
    }

    /// Frames in the file.
    pub fn frames(&self) -> usize {
        self.samples.len()
    }

    /// One pass through the file (ns): the last frame's timestamp plus its duration.
    pub fn pass_ns(&self) -> u64 {
        self.pass_ns
    }

    /// The file's mean frame rate (frames/s).
    pub fn fps(&self) -> f64 {
        self.samples.len() as f64 * 1e9 / self.pass_ns as f64
    }

    /// The file, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn feed_params(&mut self) -> Result<(), String> {
        match self.decoder.decode(&self.params) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("bad H.264 parameter sets (SPS/PPS): {e}")),
        }
    }

    /// Starts over at the first frame with a fresh decoder (OpenH264 does not restart after its end of
    /// stream); allocates the decoder's buffers again, once per pass.
    pub fn rewind(&mut self) -> Result<(), CameraError> {
        self.decoder = new_decoder().map_err(|e| self.stream_error(e))?;
        self.next_sample = 0;
        self.next_display = 0;
        self.feed_params().map_err(|e| self.stream_error(e))
    }

    fn stream_error(&self, what: impl std::fmt::Display) -> CameraError {
        CameraError::Stream(format!("video `{}`: {what}", self.path.display()))
    }

    /// Decodes up to the next picture in display order and passes it to `use_picture`; `Ok(None)` at the end
    /// of the file. No allocation: the coded frame is read into the buffer made at open, and the picture is
    /// the decoder's own buffer, lent for the call.
    pub fn next_picture<R>(
        &mut self,
        use_picture: impl FnOnce(Picture<'_>) -> R,
    ) -> Result<Option<R>, CameraError> {
        loop {
            let feeding = self.next_sample < self.samples.len();
            let decoded = if feeding {
                let i = self.next_sample;
                self.next_sample += 1;
                self.load_sample(i)?;
                self.decoder.decode_with_options(
                    &self.annex_b,
                    DecodeOptions::new().flush_after_decode(Flush::NoFlush),
                )
            } else {
                // Every frame fed: drain the pictures the decoder holds back for reordering, one per call.
                self.decoder
                    .decode_with_options(&[], DecodeOptions::new().flush_after_decode(Flush::Flush))
            };
            match decoded {
                Ok(Some(yuv)) => {
                    let index = self.next_display;
                    let Some(&pts_ns) = self.pts_ns.get(index) else {
                        return Err(CameraError::Stream(format!(
                            "video `{}`: the decoder produced more pictures than the file's {} frames",
                            self.path.display(),
                            self.samples.len()
                        )));
                    };
                    let (width, height) = yuv.dimensions();
                    if (width, height) != (self.width, self.height) {
                        return Err(CameraError::Stream(format!(
                            "video `{}`: frame {index} decoded at {width}x{height}, the track says {}x{}",
                            self.path.display(),
                            self.width,
                            self.height
                        )));
                    }
                    let (ys, us, vs) = yuv.strides();
                    self.next_display += 1;
                    return Ok(Some(use_picture(Picture {
                        index,
                        pts_ns,
                        width,
                        height,
                        y: Plane::new(yuv.y(), ys),
                        u: Plane::new(yuv.u(), us),
                        v: Plane::new(yuv.v(), vs),
                    })));
                }
                Ok(None) if feeding => {}
                Ok(None) => return Ok(None),
                Err(e) => {
                    let at = if feeding {
                        let i = self.next_sample - 1;
                        format!(
                            "frame {i} of {} (decode order, at byte {})",
                            self.samples.len(),
                            self.samples[i].offset
                        )
                    } else {
                        "the end of the file".to_string()
                    };
                    return Err(CameraError::Stream(format!(
                        "video `{}`: corrupt H.264 data at {at}: {e}",
                        self.path.display()
                    )));
                }
            }
        }
    }

    /// Reads coded frame `i` and rewrites it from length-prefixed NAL units (MP4) to start codes (Annex B).
    fn load_sample(&mut self, i: usize) -> Result<(), CameraError> {
        let s = self.samples[i];
        let buf = &mut self.read_buf[..s.size as usize];
        if let Err(e) = self.file.read_exact_at(buf, s.offset) {
            return Err(CameraError::Stream(format!(
                "video `{}`: reading frame {i} at byte {}: {e}",
                self.path.display(),
                s.offset
            )));
        }
        self.annex_b.clear();
        let mut at = 0;
        while at < buf.len() {
            let len = buf
                .get(at..at + self.nal_len)
                .map(|b| b.iter().fold(0usize, |n, &x| n << 8 | usize::from(x)));
            match len {
                Some(len) if len > 0 && at + self.nal_len + len <= buf.len() => {
                    let nal = &buf[at + self.nal_len..at + self.nal_len + len];
                    self.annex_b.extend_from_slice(&[0, 0, 0, 1]);
                    self.annex_b.extend_from_slice(nal);
                    at += self.nal_len + len;
                }
                _ => {
                    return Err(CameraError::Stream(format!(
                        "video `{}`: corrupt H.264 data in frame {i} of {} (decode order, at byte {}): a NAL unit's length runs past the frame's {} bytes",
                        self.path.display(),
                        self.samples.len(),
                        s.offset,
                        s.size
                    )));
                }
            }
        }
        Ok(())
    }
}

fn new_decoder() -> Result<Decoder, String> {
    let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    Decoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| format!("cannot start the H.264 decoder: {e}"))
}

/// Where the last frame's time went (ns), for `benches/capture.rs` and tests; read after `next_frame`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffTiming {
    /// Reading and decoding until the picture came out of the decoder.
    pub decode_ns: u64,
    /// The hand-off: from the decoder's picture (at its exposure time, when paced) to the frame's RGB buffer
    /// filled, ready for inference.
    pub handoff_ns: u64,
}

/// A video file as a [`FrameSource`]: RGB8 frames at the file's size, stamped from the container's
/// timestamps. Allocates only in `open` (and once per pass when looping, for the decoder).
pub struct VideoSource {
    info: SourceInfo,
    clock: SharedClock,
    video: H264File,
    /// Replay speed relative to the file (1.0 at its own rate); `None` for as fast as possible.
    speed: Option<f64>,
    repeat: bool,
    /// Host time of the first frame's exposure (paced), moved later when a frame was late.
    start_ns: Option<u64>,
    pass: u64,
    next_id: u64,
    timing: HandoffTiming,
}

impl std::fmt::Debug for VideoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoSource")
            .field("info", &self.info)
            .field("video", &self.video)
            .field("speed", &self.speed)
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl VideoSource {
    /// Opens the video of `config`, paced by `clock`.
    pub fn open(config: &VideoConfig, clock: SharedClock) -> Result<Self, CameraError> {
        if config.path.is_empty() {
            return Err(CameraError::Config(
                "no video file: set [source.video] path, or --source video:PATH".into(),
            ));
        }
        let video = H264File::open(Path::new(&config.path))?;
        let file_fps = video.fps();
        let (speed, fps) = match config.fps {
            VideoRate::File => (Some(1.0), file_fps),
            VideoRate::Fps(fps) => (Some(fps / file_fps), fps),
            VideoRate::Max => (None, file_fps),
        };
        let name = Path::new(&config.path)
            .file_name()
            .map_or_else(|| config.path.clone(), |n| n.to_string_lossy().into_owned());
        let info = SourceInfo {
            name: format!("video({name})"),
            width: video.width() as u32,
            height: video.height() as u32,
            format: PixelFormat::Rgb8,
            fps,
        };
        Ok(Self {
            info,
            clock,
            video,
            speed,
            repeat: config.repeat,
            start_ns: None,
            pass: 0,
            next_id: 0,
            timing: HandoffTiming::default(),
        })
    }

    /// The decoding layer (size, frame count, timestamps).
    pub fn video(&self) -> &H264File {
        &self.video
    }

    /// Where the last delivered frame's time went.
    pub fn timing(&self) -> HandoffTiming {
        self.timing
    }
}

impl FrameSource for VideoSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, CameraError> {
        self.info.check_frame(frame)?;
        loop {
            let t_read = self.clock.now_ns();
            let clock = &self.clock;
            let (speed, pass, pass_ns) = (self.speed, self.pass, self.video.pass_ns());
            let start_ns = &mut self.start_ns;
            let data = &mut frame.data;
            let delivered = self.video.next_picture(|pic| {
                let t_decoded = clock.now_ns();
                let exposure_ns = match speed {
                    None => t_decoded,
                    Some(speed) => {
                        let start = *start_ns.get_or_insert(t_decoded);
                        let file_ns = pass * pass_ns + pic.pts_ns;
                        let mut due = start + (file_ns as f64 / speed).round() as u64;
                        if t_decoded > due {
                            // Late: slip the replay clock rather than stamp a time that has passed.
                            *start_ns = Some(start + (t_decoded - due));
                            due = t_decoded;
                        }
                        clock.sleep_until(due);
                        due
                    }
                };
                let t_handoff = clock.now_ns();
                let converted = convert::i420_to_rgb(
                    pic.y,
                    pic.u,
                    pic.v,
                    pic.width,
                    pic.height,
                    YuvRange::Limited,
                    data,
                );
                let t_capture = clock.now_ns();
                (
                    converted,
                    exposure_ns,
                    t_capture,
                    HandoffTiming {
                        decode_ns: t_decoded.saturating_sub(t_read),
                        handoff_ns: t_capture.saturating_sub(t_handoff),
                    },
                )
            })?;
            match delivered {
                Some((converted, exposure_ns, capture_ns, timing)) => {
                    converted.map_err(|e| self.video.stream_error(e))?;
                    frame.id = self.next_id;
                    frame.camera = 0;
                    frame.t_exposure_ns = exposure_ns;
                    frame.t_capture_ns = capture_ns;
                    self.next_id += 1;
                    self.timing = timing;
                    return Ok(true);
                }
                None if self.repeat && self.video.next_display > 0 => {
                    self.video.rewind()?;
                    self.pass += 1;
                }
                None => return Ok(false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::mp4_write::{CodedFrame, write_h264_mp4};
    use crate::clock::{Clock, ManualClock};
    use std::sync::Arc;

    /// The real recorded video in the shared data folder (never copied into the repository).
    pub(crate) fn clip() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/clip.mp4")
    }

    /// FNV-1a 64 of a picture's luma, row by row without padding.
    fn luma_hash(pic: &Picture<'_>) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for r in 0..pic.height {
            for &b in &pic.y.data[r * pic.y.stride..][..pic.width] {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }

    /// FNV-1a 64 of each frame's Y plane as FFmpeg 5.1 decodes `clip.mp4` (`ffmpeg -i clip.mp4 -f rawvideo
    /// -pix_fmt yuv420p`): frames 0–3 cover the first I/P/B group's reordering.
    const FFMPEG_LUMA_FNV: [(usize, u64); 6] = [
        (0, 0x29ba_454e_253a_5d2f),
        (1, 0xbc34_fa62_7e27_20b4),
        (2, 0x6b14_a83c_7f20_3afa),
        (3, 0xbc34_fa62_7e27_20b4),
        (750, 0xa878_bef7_3401_32ec),
        (1499, 0x822f_7140_15fb_a65e),
    ];

    #[test]
    fn clip_decodes_all_1500_frames_in_display_order_bit_exact_with_ffmpeg() {
        let mut video = H264File::open(&clip()).unwrap();
        assert_eq!(
            (video.width(), video.height(), video.frames()),
            (1024, 1024, 1500)
        );
        assert_eq!(video.pass_ns(), 60_000_000_000);
        assert!((video.fps() - 25.0).abs() < 1e-9);
        let mut count = 0;
        let mut checked = 0;
        let want = |index: usize| {
            FFMPEG_LUMA_FNV
                .iter()
                .find(|(i, _)| *i == index)
                .map(|f| f.1)
        };
        while let Some((index, pts_ns, hash)) = video
            .next_picture(|p| (p.index, p.pts_ns, want(p.index).map(|_| luma_hash(&p))))
            .unwrap()
        {
            assert_eq!(index, count);
            assert_eq!(
                pts_ns,
                index as u64 * 40_000_000,
                "frame {index}: 40 ms apart"
            );
            if let Some(hash) = hash {
                assert_eq!(
                    Some(hash),
                    want(index),
                    "frame {index} differs from FFmpeg's"
                );
                checked += 1;
            }
            count += 1;
        }
        assert_eq!((count, checked), (1500, FFMPEG_LUMA_FNV.len()));
    }

    #[test]
    fn paced_replay_stamps_frames_from_the_container_on_the_host_clock() {
        let clock = Arc::new(ManualClock::new());
        clock.set_ns(5_000_000_000);
        let config = VideoConfig {
            path: clip().display().to_string(),
            ..VideoConfig::default()
        };
        let mut source = VideoSource::open(&config, clock.clone()).unwrap();
        assert_eq!(source.info().name, "video(clip.mp4)");
        assert_eq!((source.info().width, source.info().height), (1024, 1024));
        assert!((source.info().fps - 25.0).abs() < 1e-9);
        let mut frame = Frame::for_source(source.info());
        for i in 0..50u64 {
            assert!(source.next_frame(&mut frame).unwrap());
            assert_eq!(frame.id, i);
            assert_eq!(frame.t_exposure_ns, 5_000_000_000 + i * 40_000_000);
            assert_eq!(frame.t_capture_ns, clock.now_ns());
            assert!(frame.t_capture_ns >= frame.t_exposure_ns);
        }
        // A gray video: U = V = 128, so R = G = B = the limited-range luma stretched to 0–255.
        assert!(
            frame
                .data
                .chunks_exact(3)
                .all(|p| p[0] == p[1] && p[1] == p[2])
        );
        assert!(frame.data.iter().any(|&v| v > 200) && frame.data.iter().any(|&v| v < 40));
    }

    #[test]
    fn fps_override_scales_the_timestamps_and_max_does_not_wait() {
        let clock = Arc::new(ManualClock::new());
        let config = VideoConfig {
            path: clip().display().to_string(),
            fps: VideoRate::Fps(100.0),
            repeat: false,
        };
        let mut source = VideoSource::open(&config, clock.clone()).unwrap();
        let mut frame = Frame::for_source(source.info());
        let mut stamps = Vec::new();
        for _ in 0..5 {
            source.next_frame(&mut frame).unwrap();
            stamps.push(frame.t_exposure_ns);
        }
        assert_eq!(stamps, [0, 10_000_000, 20_000_000, 30_000_000, 40_000_000]);

        let clock = Arc::new(ManualClock::new());
        let config = VideoConfig {
            fps: VideoRate::Max,
            ..config
        };
        let mut source = VideoSource::open(&config, clock.clone()).unwrap();
        for id in 0..5 {
            source.next_frame(&mut frame).unwrap();
            // The manual clock stands still: nothing slept.
            assert_eq!(
                (frame.id, frame.t_exposure_ns, frame.t_capture_ns),
                (id, 0, 0)
            );
        }
    }

    /// A small H.264 MP4 of `frames` gray frames (`w`×`h`, luma 40 + 10·i), one per `duration` ticks of a
    /// 1 kHz timescale (or `durations[i]`), made with OpenH264's encoder.
    pub(crate) fn make_video(path: &Path, w: usize, h: usize, durations: &[u32]) {
        use openh264::encoder::{Encoder, EncoderConfig, RateControlMode};
        use openh264::formats::YUVBuffer;
        // Never skip a frame: every entry of `durations` must become a sample.
        let config = EncoderConfig::new()
            .skip_frames(false)
            .rate_control_mode(RateControlMode::Off);
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
        let frames: Vec<CodedFrame> = durations
            .iter()
            .enumerate()
            .map(|(i, &duration)| {
                let mut yuv = vec![128u8; w * h * 3 / 2];
                yuv[..w * h].fill(40 + 10 * (i % 16) as u8);
                let buffer = YUVBuffer::from_vec(yuv, w, h);
                CodedFrame {
                    annex_b: encoder.encode(&buffer).unwrap().to_vec(),
                    duration,
                }
            })
            .collect();
        write_h264_mp4(path, w as u16, h as u16, 1000, &frames).unwrap();
    }

    #[test]
    fn uneven_container_timestamps_are_kept_and_loop_continues_the_timeline() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("uneven.mp4");
        // 4 frames shown 10, 30, 20 and 40 ms: timestamps 0, 10, 40, 60; a pass is 100 ms.
        make_video(&path, 64, 48, &[10, 30, 20, 40]);
        let clock = Arc::new(ManualClock::new());
        let config = VideoConfig {
            path: path.display().to_string(),
            fps: VideoRate::File,
            repeat: true,
        };
        let mut source = VideoSource::open(&config, clock.clone()).unwrap();
        assert_eq!(source.video().pass_ns(), 100_000_000);
        let mut frame = Frame::for_source(source.info());
        let mut got = Vec::new();
        for _ in 0..9 {
            assert!(source.next_frame(&mut frame).unwrap());
            got.push((frame.id, frame.t_exposure_ns / 1_000_000, frame.data[0]));
        }
        let ms: Vec<u64> = got.iter().map(|g| g.1).collect();
        assert_eq!(ms, [0, 10, 40, 60, 100, 110, 140, 160, 200]);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            (0..9).collect::<Vec<_>>()
        );
        // Luma 40, 50, 60, 70 (limited range) come back stretched: (Y − 16) × 255/219, give or take the codec.
        let want = [28u8, 40, 51, 63];
        for (i, g) in got.iter().enumerate() {
            assert!(
                g.2.abs_diff(want[i % 4]) <= 3,
                "frame {i}: {} vs {}",
                g.2,
                want[i % 4]
            );
        }

        let once = VideoConfig {
            repeat: false,
            ..config
        };
        let mut source = VideoSource::open(&once, clock).unwrap();
        for _ in 0..4 {
            assert!(source.next_frame(&mut frame).unwrap());
        }
        assert!(
            !source.next_frame(&mut frame).unwrap(),
            "the end of the file ends the stream"
        );
    }

    #[test]
    fn a_late_frame_slips_the_replay_clock_instead_of_bunching_up() {
        let clock = Arc::new(ManualClock::new());
        let config = VideoConfig {
            path: clip().display().to_string(),
            ..VideoConfig::default()
        };
        let mut source = VideoSource::open(&config, clock.clone()).unwrap();
        let mut frame = Frame::for_source(source.info());
        source.next_frame(&mut frame).unwrap();
        assert_eq!(frame.t_exposure_ns, 0);
        // The loop stalls 100 ms after frame 0: frame 1 (due at 40 ms) goes out at once, and frame 2 follows
        // 40 ms after it, not immediately.
        clock.set_ns(100_000_000);
        source.next_frame(&mut frame).unwrap();
        assert_eq!(frame.t_exposure_ns, 100_000_000);
        source.next_frame(&mut frame).unwrap();
        assert_eq!(frame.t_exposure_ns, 140_000_000);
    }

    #[test]
    fn open_errors_name_the_file_and_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let err = |path: &Path| H264File::open(path).unwrap_err().to_string();

        let missing = tmp.path().join("missing.mp4");
        let e = err(&missing);
        assert!(
            e.contains("missing.mp4") && e.contains("No such file"),
            "{e}"
        );

        let text = tmp.path().join("notes.mp4");
        std::fs::write(&text, "not a video").unwrap();
        let e = err(&text);
        assert!(
            e.contains("notes.mp4") && e.contains("not a readable MP4"),
            "{e}"
        );

        // clip.mp4 keeps its index (moov) at the end: a copy cut short has none.
        let bytes = std::fs::read(clip()).unwrap();
        let cut = tmp.path().join("cut.mp4");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = err(&cut);
        assert!(
            e.contains("cut.mp4") && e.contains("not a readable MP4"),
            "{e}"
        );

        // The index kept but the frames' bytes cut: refused at open, naming the first missing frame.
        let moov = bytes.windows(4).position(|w| w == b"moov").unwrap() - 4;
        let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap() - 4;
        let keep = mdat + 100_000;
        let mut short = bytes[..keep].to_vec();
        short[mdat..mdat + 4].copy_from_slice(&((keep - mdat) as u32).to_be_bytes());
        short.extend_from_slice(&bytes[moov..]);
        let short_path = tmp.path().join("short.mp4");
        std::fs::write(&short_path, &short).unwrap();
        let e = err(&short_path);
        assert!(
            e.contains("short.mp4") && e.contains("truncated: frame"),
            "{e}"
        );

        let config = VideoConfig::default();
        let e = VideoSource::open(&config, Arc::new(ManualClock::new())).unwrap_err();
        assert!(e.to_string().contains("--source video:PATH"), "{e}");
    }

    /// clip.mp4 with frame `frame`'s first NAL length (decode order) overwritten with `0xFFFFFFFF`.
    pub(crate) fn corrupt_copy(dir: &Path, frame: usize) -> PathBuf {
        let video = H264File::open(&clip()).unwrap();
        let mut bytes = std::fs::read(clip()).unwrap();
        let at = video.samples[frame].offset as usize;
        bytes[at..at + 4].copy_from_slice(&[0xFF; 4]);
        let path = dir.join("corrupt.mp4");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn corrupt_data_mid_file_is_an_error_naming_file_and_frame() {
        let tmp = tempfile::tempdir().unwrap();
        let path = corrupt_copy(tmp.path(), 20);
        let config = VideoConfig {
            path: path.display().to_string(),
            fps: VideoRate::Max,
            repeat: false,
        };
        let mut source = VideoSource::open(&config, Arc::new(ManualClock::new())).unwrap();
        let mut frame = Frame::for_source(source.info());
        let mut delivered = 0;
        let err = loop {
            match source.next_frame(&mut frame) {
                Ok(true) => delivered += 1,
                Ok(false) => panic!("the corrupt frame went unnoticed"),
                Err(e) => break e.to_string(),
            }
        };
        // Frames before it in display order come out; B-frame reordering holds back at most 2.
        assert!(
            (17..=20).contains(&delivered),
            "{delivered} frames before the error"
        );
        assert!(
            err.contains("corrupt.mp4")
                && err.contains("frame 20 of 1500")
                && err.contains("corrupt H.264"),
            "{err}"
        );
    }

    #[test]
    fn garbage_in_a_frame_is_a_decoder_error() {
        let tmp = tempfile::tempdir().unwrap();
        let video = H264File::open(&clip()).unwrap();
        let mut bytes = std::fs::read(clip()).unwrap();
        // Frame 0 is the IDR picture: keep its length prefix, scramble its slice data.
        let s = video.samples[0];
        for (i, b) in bytes[s.offset as usize..][..s.size as usize]
            .iter_mut()
            .enumerate()
            .skip(4)
        {
            *b = (i as u8).wrapping_mul(151) ^ 0x5A;
        }
        let path = tmp.path().join("garbage.mp4");
        std::fs::write(&path, bytes).unwrap();
        let mut video = H264File::open(&path).unwrap();
        let mut result = Ok(None);
        for _ in 0..5 {
            result = video.next_picture(|_| ());
            if result.is_err() {
                break;
            }
        }
        let e = result.unwrap_err().to_string();
        assert!(
            e.contains("garbage.mp4") && e.contains("corrupt H.264 data"),
            "{e}"
        );
    }

    #[test]
    fn rate_parses_from_text_and_toml() {
        assert_eq!(VideoRate::parse("max"), Ok(VideoRate::Max));
        assert_eq!(VideoRate::parse("file"), Ok(VideoRate::File));
        assert_eq!(VideoRate::parse("12.5"), Ok(VideoRate::Fps(12.5)));
        assert!(VideoRate::parse("-3").is_err());
        assert!(VideoRate::parse("fast").unwrap_err().contains("`fast`"));
        for (text, want) in [
            ("fps = 30", VideoRate::Fps(30.0)),
            ("fps = 29.97", VideoRate::Fps(29.97)),
            ("fps = \"max\"", VideoRate::Max),
            ("", VideoRate::File),
        ] {
            let c: VideoConfig = toml::from_str(&format!("path = \"a.mp4\"\n{text}")).unwrap();
            assert_eq!(c.fps, want, "{text}");
            let again: VideoConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
            assert_eq!(again, c);
        }
        let e = toml::from_str::<VideoConfig>("fps = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fast") && e.contains("max"), "{e}");
        let c: VideoConfig = toml::from_str("path = \"a.mp4\"\nloop = true").unwrap();
        assert!(c.repeat);
    }
}
