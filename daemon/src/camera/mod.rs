//! Frame sources: the `FrameSource` seam and the frames that travel through the loop.
//!
//! A source fills a preallocated [`Frame`] in place (no allocation per frame) and stamps it on the host clock.
//! Built in: the synthetic camera, video files (`video`), GenICam cameras through Aravis (`aravis`) and V4L2
//! cameras ([`v4l2_stream`], on the device listing and format negotiation of [`v4l2`]), their pixel formats
//! converted by [`convert`].

pub mod aravis;
mod aravis_sys;
pub mod convert;
pub mod mp4_write;
pub mod synthetic;
pub mod v4l2;
pub mod v4l2_stream;
mod v4l2_sys;
pub mod video;

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

impl SourceInfo {
    /// Checks that `frame` has this source's size and pixel format (its buffers are made for it at start).
    pub fn check_frame(&self, frame: &Frame) -> Result<(), CameraError> {
        if frame.width != self.width || frame.height != self.height || frame.format != self.format {
            return Err(CameraError::WrongFrameSize {
                got_w: frame.width,
                got_h: frame.height,
                want_w: self.width,
                want_h: self.height,
            });
        }
        Ok(())
    }
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
    /// The source could not be opened (file missing, unsupported format); the message names it.
    #[error("{0}")]
    Open(String),
    /// The stream broke mid-way (corrupt data, a read error); the session stops, its files complete up to it.
    #[error("{0}")]
    Stream(String),
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

/// The rig's camera, one of the built-in sources, chosen by `[source] kind`.
pub enum Source {
    /// `synthetic`: the rendered arena with its ground truth.
    Synthetic(synthetic::SyntheticCamera),
    /// `video`: a video file replayed as a camera.
    Video(video::VideoSource),
    /// `aravis`: a GenICam camera (GigE Vision, USB3 Vision) through Aravis.
    Aravis(aravis::AravisSource),
    /// `v4l2`: a V4L2 camera (`/dev/videoN`: UVC webcams, capture cards, CSI sensors).
    V4l2(v4l2_stream::V4l2Source),
}

impl Source {
    /// Wires the synthetic camera's LED to the simulated output device (see
    /// [`synthetic::SyntheticCamera::attach_device`]); other sources have no LED and ignore it.
    pub fn attach_device(
        &mut self,
        device: Option<reflex_firmware_bridge::SimProbe>,
        channels: u8,
    ) -> Result<(), CameraError> {
        match self {
            Source::Synthetic(camera) => camera.attach_device(device, channels),
            Source::Video(_) => Ok(()),
            Source::Aravis(_) => Ok(()),
            Source::V4l2(_) => Ok(()),
        }
    }
}

impl FrameSource for Source {
    fn info(&self) -> &SourceInfo {
        match self {
            Source::Synthetic(s) => s.info(),
            Source::Video(s) => s.info(),
            Source::Aravis(s) => s.info(),
            Source::V4l2(s) => s.info(),
        }
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, CameraError> {
        match self {
            Source::Synthetic(s) => s.next_frame(frame),
            Source::Video(s) => s.next_frame(frame),
            Source::Aravis(s) => s.next_frame(frame),
            Source::V4l2(s) => s.next_frame(frame),
        }
    }

    fn skipped(&self) -> u64 {
        match self {
            Source::Synthetic(s) => s.skipped(),
            Source::Video(s) => s.skipped(),
            Source::Aravis(s) => s.skipped(),
            Source::V4l2(s) => s.skipped(),
        }
    }

    fn truth_keypoints(&self) -> &[&'static str] {
        match self {
            Source::Synthetic(s) => s.truth_keypoints(),
            Source::Video(s) => s.truth_keypoints(),
            Source::Aravis(s) => s.truth_keypoints(),
            Source::V4l2(s) => s.truth_keypoints(),
        }
    }
}

/// Applies `--source TEXT` to `[source]`: `synthetic`, `video` (the config's file), `video:PATH`,
/// `video:PATH@FPS` or `video:PATH@max`, `aravis` (the config's camera), `aravis:NAME` (a GenICam camera by
/// Aravis's device id, serial or address; `aravis:` alone: the first camera found). Any other text becomes
/// the kind as it is, so opening it names it in the error. `v4l:DEVICE` or `v4l2:DEVICE`: a V4L2 camera,
/// `/dev/videoN` or just `N`; `v4l2` alone: the config's device. A suffix after the last `@` that is neither a
/// number nor `max`/`file` is part of the path.
pub fn apply_source_arg(
    arg: &str,
    source: &mut crate::config::SourceConfig,
) -> Result<(), CameraError> {
    if let Some(device) = arg
        .strip_prefix("v4l:")
        .or_else(|| arg.strip_prefix("v4l2:"))
    {
        return v4l2_stream::apply_device_arg(arg, device, source);
    }
    if let Some(name) = arg.strip_prefix("aravis:") {
        source.kind = "aravis".into();
        source.aravis.camera = name.to_string();
        return Ok(());
    }
    let Some(spec) = arg.strip_prefix("video:") else {
        source.kind = arg.to_string();
        return Ok(());
    };
    let (path, rate) = match spec.rsplit_once('@') {
        Some((path, rate)) if !path.is_empty() => match video::VideoRate::parse(rate) {
            Ok(rate) => (path, Some(rate)),
            Err(e) if rate.parse::<f64>().is_ok() => {
                return Err(CameraError::Config(format!("--source {arg}: {e}")));
            }
            Err(_) => (spec, None),
        },
        _ => (spec, None),
    };
    if path.is_empty() {
        return Err(CameraError::Config(format!(
            "--source {arg}: no file; use video:PATH, video:PATH@FPS or video:PATH@max"
        )));
    }
    source.kind = "video".into();
    source.video.path = path.to_string();
    if let Some(rate) = rate {
        source.video.fps = rate;
    }
    Ok(())
}

/// Applies every `--source` of the command line: the first to `[source]` (camera 0) as
/// [`apply_source_arg`] does; two or more also replace the `[[camera]]` tables with one camera per further
/// argument, in order, each taking the same defaults as a `[[camera]]` table of that kind.
pub fn apply_source_args(
    args: &[String],
    config: &mut crate::config::Config,
) -> Result<(), CameraError> {
    let Some((first, further)) = args.split_first() else {
        return Ok(());
    };
    apply_source_arg(first, &mut config.source)?;
    if further.is_empty() {
        return Ok(());
    }
    config.cameras.clear();
    for arg in further {
        let mut source = crate::config::SourceConfig::default();
        apply_source_arg(arg, &mut source)?;
        let camera = crate::config::CameraConfig::from_source(source);
        config.cameras.push(toml::Spanned::new(0..0, camera));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::video::VideoRate;
    use super::*;
    use crate::config::SourceConfig;

    fn applied(arg: &str) -> Result<SourceConfig, CameraError> {
        let mut source = SourceConfig::default();
        apply_source_arg(arg, &mut source).map(|()| source)
    }

    #[test]
    fn a_second_source_argument_replaces_the_configs_further_cameras() {
        let mut config = crate::config::Config::parse(
            "[[camera]]\nname = \"side\"\nkind = \"synthetic\"\n",
            "rig.toml",
        )
        .unwrap();
        apply_source_args(&["video:top.mp4".into()], &mut config).unwrap();
        assert_eq!(config.source.video.path, "top.mp4");
        assert_eq!(
            config.cameras[0].get_ref().name,
            "side",
            "one --source leaves the config's cameras"
        );
        let args = ["synthetic", "video:side.mp4@max", "v4l:2"].map(String::from);
        apply_source_args(&args, &mut config).unwrap();
        assert_eq!(config.source.kind, "synthetic");
        let kinds: Vec<(&str, &str)> = config
            .cameras
            .iter()
            .map(|c| (c.get_ref().kind.as_str(), c.get_ref().name.as_str()))
            .collect();
        assert_eq!(kinds, [("video", ""), ("v4l2", "")]);
        let side = config.cameras[0].get_ref();
        assert_eq!(
            (side.video.path.as_str(), side.video.fps),
            ("side.mp4", VideoRate::Max)
        );
        assert_eq!(config.cameras[1].get_ref().v4l2.device, "/dev/video2");
        assert!(apply_source_args(&["synthetic".into(), "video:".into()], &mut config).is_err());
    }

    #[test]
    fn source_argument_picks_the_video_file_and_its_rate() {
        let s = applied("video:clips/mouse.mp4").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.video.path.as_str()),
            ("video", "clips/mouse.mp4")
        );
        assert_eq!(s.video.fps, VideoRate::File);
        assert_eq!(
            applied("video:a.mp4@30").unwrap().video.fps,
            VideoRate::Fps(30.0)
        );
        assert_eq!(
            applied("video:a.mp4@max").unwrap().video.fps,
            VideoRate::Max
        );
        let s = applied("video:runs/day@home.mp4").unwrap();
        assert_eq!(
            s.video.path, "runs/day@home.mp4",
            "an @ that is not a rate is part of the path"
        );
        assert!(
            applied("video:a.mp4@0")
                .unwrap_err()
                .to_string()
                .contains("(0, 10000]")
        );
        assert!(
            applied("video:")
                .unwrap_err()
                .to_string()
                .contains("video:PATH")
        );
        assert_eq!(applied("synthetic").unwrap().kind, "synthetic");
        let s = applied("aravis:Basler-acA1300-22012345").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.aravis.camera.as_str()),
            ("aravis", "Basler-acA1300-22012345")
        );
        let s = applied("aravis:").unwrap();
        assert_eq!((s.kind.as_str(), s.aravis.camera.as_str()), ("aravis", ""));
        let s = applied("v4l:/dev/video2").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.v4l2.device.as_str()),
            ("v4l2", "/dev/video2")
        );
        assert_eq!(applied("v4l2:3").unwrap().v4l2.device, "/dev/video3");
        assert!(
            applied("v4l:")
                .unwrap_err()
                .to_string()
                .contains("v4l:/dev/videoN")
        );
    }
}
