//! Frame sources: the `FrameSource` seam and the frames that travel through the loop.
//!
//! A source fills a preallocated [`Frame`] in place (no allocation per frame) and stamps it on the host clock.
//! Only the synthetic camera exists today; V4L2, GenICam and video files plug in behind the same trait.

pub mod synthetic;

use reflex_plugins::pose::Pose;

/// How the pixels of a frame are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// 8-bit RGB, interleaved, row-major.
    Rgb8,
    /// 8-bit gray, row-major.
    Gray8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Gray8 => 1,
        }
    }
}

/// What a source produces, known before the first frame so every buffer can be allocated up front.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceInfo {
    /// Human-readable source name, e.g. `synthetic(seed=1)`.
    pub name: String,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Pixel layout.
    pub format: PixelFormat,
    /// Nominal frame rate (frames/s).
    pub fps: f64,
}

/// One camera frame with its host timestamps; allocated once and refilled by the source.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Frame number from the source, counting from 0; a gap means frames were lost before or at the source.
    pub id: u64,
    /// Which camera produced it (0 for a single-camera rig).
    pub camera: u8,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel layout of `data`.
    pub format: PixelFormat,
    /// Pixels, `width * height * format.channels()` bytes.
    pub data: Vec<u8>,
    /// Host time (ns) of the exposure: the driver's or camera's timestamp mapped onto the host clock.
    pub t_exposure_ns: u64,
    /// Host time (ns) at which the frame was complete and handed to the loop.
    pub t_capture_ns: u64,
    /// The true pose, when the source knows it (synthetic camera); empty otherwise.
    pub truth: Pose,
}

impl Frame {
    /// A zeroed frame sized for `info`.
    pub fn for_source(info: &SourceInfo) -> Self {
        let len = info.width as usize * info.height as usize * info.format.channels();
        Self {
            id: 0,
            camera: 0,
            width: info.width,
            height: info.height,
            format: info.format,
            data: vec![0; len],
            t_exposure_ns: 0,
            t_capture_ns: 0,
            truth: Pose::new(0),
        }
    }
}

/// Errors from a frame source.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    /// The frame buffer handed in does not match the source's format.
    #[error("frame buffer is {got_w}x{got_h}, the source produces {want_w}x{want_h}")]
    WrongFrameSize {
        /// Buffer width.
        got_w: u32,
        /// Buffer height.
        got_h: u32,
        /// Source width.
        want_w: u32,
        /// Source height.
        want_h: u32,
    },
    /// The source's settings are unusable.
    #[error("{0}")]
    Config(String),
}

/// A camera (or anything that behaves like one). Runs on the capture thread.
pub trait FrameSource: Send {
    /// Format, size and rate of the frames to come.
    fn info(&self) -> &SourceInfo;
    /// Block until the next frame is available and fill `frame` in place (no allocation). Returns `Ok(false)`
    /// at the end of the stream. `frame.id` may jump when the source itself lost frames.
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, CameraError>;
    /// Frames the source itself skipped (fell behind its own clock) so far.
    fn skipped(&self) -> u64 {
        0
    }
    /// Names of the keypoints in `Frame::truth`, when the source knows the truth.
    fn truth_keypoints(&self) -> &[&'static str] {
        &[]
    }
}
