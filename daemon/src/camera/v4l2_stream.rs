//! V4L2 cameras as a [`FrameSource`]: open `/dev/videoN`, negotiate format, size and rate with
//! [`v4l2::negotiate`], stream with driver-allocated mmap buffers, and hand the newest frame to the loop.
//!
//! - **Open**: `VIDIOC_QUERYCAP` (the node must do single-planar video capture with streaming I/O), the
//!   camera's offers enumerated (`VIDIOC_ENUM_FMT`, `_FRAMESIZES`, `_FRAMEINTERVALS`), the request
//!   negotiated, then `VIDIOC_S_FMT` and `VIDIOC_S_PARM`: what the driver answers there is what the stream
//!   uses (its size, stride, buffer size and frame interval). `buffers` buffers (`VIDIOC_REQBUFS`; the
//!   driver may give more) are mapped, all queued, and streaming starts.
//! - **Per frame**: `poll` up to `timeout_ms`, then `VIDIOC_DQBUF` until the driver has no more done
//!   buffers (`EAGAIN`): **the newest frame wins**; each older one is queued back unread and counted as
//!   skipped. The newest is converted into the preallocated [`Frame`] (GREY stays 8-bit gray, every other
//!   format becomes RGB8 through [`v4l2::PixelFormat::to_rgb`], MJPEG through [`MjpegDecoder`]) and queued
//!   back. Nothing is allocated per frame (MJPEG aside: `zune-jpeg` keeps scratch buffers of its own).
//! - **Frame ids** follow the buffers' `sequence` numbers (from 0 at the first buffer, wrapping u32 counts
//!   continued), so frames the driver dropped (no buffer queued when a frame came) show as gaps in
//!   `Frame::id`, and are counted as skipped too. A buffer flagged `V4L2_BUF_FLAG_ERROR`, an empty one, or
//!   one that does not convert (a corrupt MJPEG frame) is queued back and counted; [`MAX_BAD_IN_A_ROW`] of
//!   them in a row end the stream with the last reason.
//!
//! **Timestamps.** `t_capture_ns` is the host clock after the conversion. `t_exposure_ns` comes from the
//! buffer's timestamp when its flags say it is on `CLOCK_MONOTONIC` (`V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC`,
//! what every vb2 driver sets): that is the host clock reflex stamps with ([`crate::clock`]), so no mapping
//! is needed. Its source (`V4L2_BUF_FLAG_TSTAMP_SRC_*`) says when it was taken:
//! - `SOE`, start of exposure (uvcvideo: from the camera's own clock when it sends one, else when the first
//!   packet of the frame arrived): used as is.
//! - `EOF`, end of frame (the value 0, so also what a driver that says nothing means): the last pixel was
//!   received. The start of exposure lies before it by the exposure time plus the sensor's readout and the
//!   transfer. reflex subtracts the exposure time when the driver reports `V4L2_CID_EXPOSURE_ABSOLUTE`
//!   (read once at open; 0 when it has no such control) plus **one frame interval** for readout and transfer:
//!   V4L2 reports neither, and a camera that keeps its rate reads out and sends one frame per interval, so
//!   one interval is their usual span (a USB 2 webcam sending raw YUYV uses nearly all of it; a rolling
//!   shutter at its top rate reads out for about that long). A camera that reads out or sends faster is
//!   stamped early, so the `capture` stage errs long rather than short.
//!
//! A driver timestamp later than the host time the buffer was dequeued at is clamped to it. Timestamps of
//! an `UNKNOWN` or `COPY` clock (or 0) cannot be placed on the host clock: those frames are stamped with the
//! host time `poll` returned at, and the source's name says `host timestamps`. Driver stamps are taken as
//! they are, so the session's clock must be the real-time [`crate::clock::MonotonicClock`] (as `reflex run`
//! and `reflex lightloop` use), not a sped-up or manual one.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::convert::{ConvertError, MjpegDecoder};
use super::v4l2::{
    self, FormatOffer, FourCc, Fraction, FrameIntervals, FrameSizes, Request, VideoNode,
};
use super::v4l2_sys as sys;
use super::{CameraError, Frame, FrameSource, PixelFormat, SourceInfo};
use crate::clock::SharedClock;

/// Unusable buffers in a row (flagged as errors, empty, or not convertible) that end the stream.
pub const MAX_BAD_IN_A_ROW: u32 = 10;

/// `V4L2_BUF_FLAG_ERROR`: the driver dequeued the buffer but its data may be corrupt.
pub const BUF_FLAG_ERROR: u32 = sys::V4L2_BUF_FLAG_ERROR;
/// `V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC`: the timestamp is on `CLOCK_MONOTONIC`, the host clock.
pub const BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = sys::V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC;
/// `V4L2_BUF_FLAG_TIMESTAMP_COPY`: the timestamp was copied from an output buffer (no host meaning).
pub const BUF_FLAG_TIMESTAMP_COPY: u32 = sys::V4L2_BUF_FLAG_TIMESTAMP_COPY;
/// `V4L2_BUF_FLAG_TSTAMP_SRC_SOE`: the timestamp is the start of exposure (without it: end of frame).
pub const BUF_FLAG_TSTAMP_SRC_SOE: u32 = sys::V4L2_BUF_FLAG_TSTAMP_SRC_SOE;

/// `[source.v4l2] format`: the pixel format to ask the camera for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatChoice {
    /// `"auto"`: of the formats that meet the size and rate, the cheapest to convert.
    #[default]
    Auto,
    /// Only this format (`"YUYV"`, `"MJPG"`, `"GREY"`, ...).
    Only(FourCc),
}

impl FormatChoice {
    /// Parses `auto` or the code of a format reflex converts (case-insensitive: `yuyv` is `YUYV`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(FormatChoice::Auto);
        }
        let known = || {
            v4l2::PixelFormat::fourccs()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let found = v4l2::PixelFormat::fourccs()
            .find(|c| c.to_string() == text)
            .or_else(|| {
                v4l2::PixelFormat::fourccs().find(|c| c.to_string().eq_ignore_ascii_case(text))
            });
        found.map(FormatChoice::Only).ok_or_else(|| {
            format!(
                "`{text}` is not a pixel format reflex converts: use \"auto\" or one of {}",
                known()
            )
        })
    }
}

impl std::fmt::Display for FormatChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatChoice::Auto => f.write_str("auto"),
            FormatChoice::Only(code) => write!(f, "{code}"),
        }
    }
}

impl Serialize for FormatChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FormatChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        FormatChoice::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Settings of a V4L2 camera (`[source.v4l2]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct V4l2Config {
    /// The device node, e.g. `/dev/video0` (`reflex devices` lists them).
    pub device: String,
    /// Frame width (px).
    pub width: u32,
    /// Frame height (px).
    pub height: u32,
    /// Frame rate (frames/s): the slowest rate the camera offers at or above it is set.
    pub fps: f64,
    /// `"auto"` or one pixel format (`"YUYV"`, `"MJPG"`, `"GREY"`, `"RGB3"`, ...).
    pub format: FormatChoice,
    /// Driver buffers to stream with (2..=32; the driver may give more). Few keep the newest frame close:
    /// a frame waits in at most `buffers - 1` others.
    pub buffers: u32,
    /// Longest wait for a frame (ms) before the stream counts as broken.
    pub timeout_ms: u32,
}

impl Default for V4l2Config {
    fn default() -> Self {
        Self {
            device: "/dev/video0".into(),
            width: 640,
            height: 480,
            fps: 30.0,
            format: FormatChoice::Auto,
            buffers: 4,
            timeout_ms: 2000,
        }
    }
}

impl V4l2Config {
    /// Checks the ranges; the error names the key (`fps must be ...`).
    pub fn validate(&self) -> Result<(), String> {
        if self.device.trim().is_empty() {
            return Err("device is empty: name the camera's node, e.g. \"/dev/video0\" (`reflex devices` lists them)".into());
        }
        for (key, value) in [("width", self.width), ("height", self.height)] {
            if !(1..=16_384).contains(&value) {
                return Err(format!("{key} must be between 1 and 16384 px, got {value}"));
            }
        }
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 10_000.0) {
            return Err(format!("fps must be in (0, 10000], got {}", self.fps));
        }
        if !(2..=32).contains(&self.buffers) {
            return Err(format!(
                "buffers must be between 2 and 32, got {}",
                self.buffers
            ));
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            return Err(format!(
                "timeout_ms must be between 1 and 600000, got {}",
                self.timeout_ms
            ));
        }
        Ok(())
    }
}

/// Applies `--source v4l:DEVICE` / `v4l2:DEVICE` (`arg`, with `device` after the prefix): `[source] kind =
/// "v4l2"` with this device node; a bare number `N` means `/dev/videoN`.
pub fn apply_device_arg(
    arg: &str,
    device: &str,
    source: &mut crate::config::SourceConfig,
) -> Result<(), CameraError> {
    let device = device.trim();
    if device.is_empty() {
        return Err(CameraError::Config(format!(
            "--source {arg}: no device; use v4l:/dev/videoN or v4l:N (`reflex devices` lists the cameras)"
        )));
    }
    source.kind = "v4l2".into();
    source.v4l2.device = if device.bytes().all(|b| b.is_ascii_digit()) {
        format!("/dev/video{device}")
    } else {
        device.to_string()
    };
    Ok(())
}

/// Prints the V4L2 cameras for `reflex devices` (see [`camera_lines`]).
pub fn print_devices() {
    match v4l2::list_nodes(std::path::Path::new("/sys"), std::path::Path::new("/dev")) {
        Ok(nodes) => {
            for line in camera_lines(&nodes, probe_node) {
                println!("{line}");
            }
        }
        Err(e) => println!("V4L2 cameras: not listed: reading /sys/class/video4linux: {e}"),
    }
}

/// A failed driver call: which one and the OS error.
#[derive(Debug)]
pub struct DriverError {
    /// The call, e.g. `VIDIOC_DQBUF`, `poll`, `open`.
    pub call: &'static str,
    /// What the OS said.
    pub error: io::Error,
}

impl DriverError {
    /// The error `errno` of `call`.
    pub fn errno(call: &'static str, errno: i32) -> Self {
        Self {
            call,
            error: io::Error::from_raw_os_error(errno),
        }
    }

    /// A hint for the errors a user can act on.
    fn hint(&self) -> &'static str {
        match self.error.raw_os_error() {
            Some(libc::ENODEV) | Some(libc::ENXIO) => {
                "; the camera was unplugged or its driver unbound"
            }
            Some(libc::EIO) => "; the driver reported an I/O error (USB bandwidth, cable, power?)",
            Some(libc::EBUSY) => "; another program is using the camera",
            Some(libc::EACCES) | Some(libc::EPERM) => {
                "; no permission: add yourself to the `video` group (then log in again)"
            }
            Some(libc::ENOENT) => "; `reflex devices` lists the cameras",
            Some(libc::ENOTTY) => "; not a V4L2 device",
            _ => "",
        }
    }
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.error.raw_os_error().and_then(errno_name) {
            Some(name) => write!(f, "{} failed: {name} ({})", self.call, self.error)?,
            None => write!(f, "{} failed: {}", self.call, self.error)?,
        }
        f.write_str(self.hint())
    }
}

impl std::error::Error for DriverError {}

/// The symbolic name of the errnos a camera gives.
fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EPIPE => "EPIPE",
        libc::ENOTTY => "ENOTTY",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EPROTO => "EPROTO",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOLINK => "ENOLINK",
        libc::ESHUTDOWN => "ESHUTDOWN",
        _ => return None,
    })
}

/// What `VIDIOC_QUERYCAP` says about a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capability {
    /// The driver's name, e.g. `uvcvideo`.
    pub driver: String,
    /// The device's name, e.g. the webcam's model.
    pub card: String,
    /// Where it is attached, e.g. `usb-0000:00:14.0-1`.
    pub bus_info: String,
    /// The node's capability bits (`device_caps` when the driver gives them, else `capabilities`).
    pub caps: u32,
}

impl Capability {
    /// Whether the node streams single-planar video capture (what reflex needs).
    pub fn can_stream_video(&self) -> bool {
        self.caps & sys::V4L2_CAP_VIDEO_CAPTURE != 0 && self.caps & sys::V4L2_CAP_STREAMING != 0
    }

    /// What the node does, in words: `video capture, streaming`, `metadata capture`, ...
    pub fn describe(&self) -> String {
        let names = [
            (sys::V4L2_CAP_VIDEO_CAPTURE, "video capture"),
            (
                sys::V4L2_CAP_VIDEO_CAPTURE_MPLANE,
                "multi-planar video capture",
            ),
            (sys::V4L2_CAP_VIDEO_OUTPUT, "video output"),
            (sys::V4L2_CAP_VIDEO_M2M, "memory-to-memory"),
            (
                sys::V4L2_CAP_VIDEO_M2M_MPLANE,
                "multi-planar memory-to-memory",
            ),
            (sys::V4L2_CAP_META_CAPTURE, "metadata capture"),
            (sys::V4L2_CAP_READWRITE, "read()"),
            (sys::V4L2_CAP_STREAMING, "streaming"),
        ];
        let have: Vec<&str> = names
            .iter()
            .filter(|(bit, _)| self.caps & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        if have.is_empty() {
            format!("capabilities {:#010x}", self.caps)
        } else {
            have.join(", ")
        }
    }
}

/// The image format the driver set (its answer to `VIDIOC_S_FMT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverFormat {
    /// Pixel format.
    pub fourcc: FourCc,
    /// Width (px).
    pub width: u32,
    /// Height (px).
    pub height: u32,
    /// Bytes from one row to the next (0 for compressed formats).
    pub bytesperline: u32,
    /// Bytes of the largest frame (the buffer size).
    pub sizeimage: u32,
}

/// What starting the stream gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// Buffers mapped and queued.
    pub buffers: u32,
    /// The timestamp flags `VIDIOC_QUERYBUF` reported (`V4L2_BUF_FLAG_TIMESTAMP_*`, `TSTAMP_SRC_*`).
    pub timestamp_flags: u32,
}

/// A filled buffer, dequeued (`VIDIOC_DQBUF`'s answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dequeued {
    /// Which buffer.
    pub index: u32,
    /// Bytes of frame data in it.
    pub bytesused: u32,
    /// `V4L2_BUF_FLAG_*`.
    pub flags: u32,
    /// The driver's frame count.
    pub sequence: u32,
    /// The driver's timestamp (ns), on the clock the flags name.
    pub timestamp_ns: u64,
}

/// What waiting for a buffer saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A buffer is ready.
    Ready,
    /// None within the timeout.
    Timeout,
    /// The driver flagged an error (`POLLERR`/`POLLHUP`): dequeuing says which.
    Error,
}

/// The kernel side of a V4L2 capture node: the ioctls reflex makes, as calls a test can script
/// ([`FakeDriver`]). [`Device`] makes them on a real node.
pub trait Driver: Send {
    /// `VIDIOC_QUERYCAP`.
    fn capability(&mut self) -> Result<Capability, DriverError>;
    /// `VIDIOC_ENUM_FMT`: the capture formats, in the driver's order.
    fn formats(&mut self) -> Result<Vec<FourCc>, DriverError>;
    /// `VIDIOC_ENUM_FRAMESIZES` of a format; `None` when the driver does not enumerate sizes.
    fn frame_sizes(&mut self, fourcc: FourCc) -> Result<Option<FrameSizes>, DriverError>;
    /// `VIDIOC_ENUM_FRAMEINTERVALS` of a format and size; `None` when the driver does not enumerate them.
    fn frame_intervals(
        &mut self,
        fourcc: FourCc,
        width: u32,
        height: u32,
    ) -> Result<Option<FrameIntervals>, DriverError>;
    /// `VIDIOC_S_FMT` (progressive frames of this format and size); returns what the driver set.
    fn set_format(
        &mut self,
        fourcc: FourCc,
        width: u32,
        height: u32,
    ) -> Result<DriverFormat, DriverError>;
    /// `VIDIOC_S_PARM` with this frame interval; returns the interval the driver set, `None` when it
    /// cannot set one (no `V4L2_CAP_TIMEPERFRAME`).
    fn set_interval(&mut self, interval: Fraction) -> Result<Option<Fraction>, DriverError>;
    /// The exposure time (ns) from `V4L2_CID_EXPOSURE_ABSOLUTE`, when the driver has that control.
    fn exposure_ns(&mut self) -> Option<u64>;
    /// `VIDIOC_REQBUFS` for `buffers` mmap buffers, each mapped (`VIDIOC_QUERYBUF`, `mmap`) and queued
    /// (`VIDIOC_QBUF`), then `VIDIOC_STREAMON`.
    fn start(&mut self, buffers: u32) -> Result<Started, DriverError>;
    /// `poll` for a done buffer, up to `timeout_ms`.
    fn wait(&mut self, timeout_ms: u32) -> Result<Wait, DriverError>;
    /// `VIDIOC_DQBUF`, non-blocking: `None` when no buffer is done (`EAGAIN`).
    fn dequeue(&mut self) -> Result<Option<Dequeued>, DriverError>;
    /// The memory of buffer `index` (read it only while it is dequeued).
    fn buffer(&self, index: u32) -> &[u8];
    /// `VIDIOC_QBUF`: give buffer `index` back to the driver.
    fn queue(&mut self, index: u32) -> Result<(), DriverError>;
}

/// A real V4L2 node, opened read-write and non-blocking. Stops streaming and unmaps its buffers on drop.
#[derive(Debug)]
pub struct Device {
    file: File,
    maps: Vec<sys::Mapping>,
    streaming: bool,
}

impl Device {
    /// Opens `path` (`O_RDWR | O_NONBLOCK`).
    pub fn open(path: &str) -> Result<Self, DriverError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|error| DriverError {
                call: "open",
                error,
            })?;
        Ok(Self {
            file,
            maps: Vec::new(),
            streaming: false,
        })
    }

    fn ioctl<T>(&self, request: &sys::Ioctl<T>, arg: &mut T) -> Result<(), DriverError> {
        sys::ioctl(self.file.as_fd(), request, arg).map_err(|error| DriverError {
            call: request.name,
            error,
        })
    }

    /// Runs an enumeration ioctl at index 0, 1, ... until `EINVAL` (its end); `Ok(false)` from `each` stops
    /// early. Returns whether index 0 answered (a driver without the ioctl fails it with `EINVAL`/`ENOTTY`).
    fn enumerate<T>(
        &self,
        request: &sys::Ioctl<T>,
        mut make: impl FnMut(u32) -> T,
        mut each: impl FnMut(&T) -> bool,
    ) -> Result<bool, DriverError> {
        // Far beyond any real list: a driver that never says EINVAL cannot loop us forever.
        for index in 0..1024 {
            let mut arg = make(index);
            match self.ioctl(request, &mut arg) {
                Ok(()) => {
                    if !each(&arg) {
                        return Ok(true);
                    }
                }
                Err(e)
                    if matches!(
                        e.error.raw_os_error(),
                        Some(libc::EINVAL) | Some(libc::ENOTTY)
                    ) =>
                {
                    return Ok(index > 0);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.streaming {
            let mut kind = sys::V4L2_BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
            // Nothing to do about a failure here: the node goes away with the file anyway.
            let _ = self.ioctl(&sys::VIDIOC_STREAMOFF, &mut kind);
        }
        // Unmap before the file closes (declaration order would do the same; explicit for the reader).
        self.maps.clear();
    }
}

impl Driver for Device {
    fn capability(&mut self) -> Result<Capability, DriverError> {
        let mut cap = sys::v4l2_capability::default();
        self.ioctl(&sys::VIDIOC_QUERYCAP, &mut cap)?;
        Ok(Capability {
            driver: sys::c_str(&cap.driver),
            card: sys::c_str(&cap.card),
            bus_info: sys::c_str(&cap.bus_info),
            caps: if cap.capabilities & sys::V4L2_CAP_DEVICE_CAPS != 0 {
                cap.device_caps
            } else {
                cap.capabilities
            },
        })
    }

    fn formats(&mut self) -> Result<Vec<FourCc>, DriverError> {
        let mut codes = Vec::new();
        self.enumerate(
            &sys::VIDIOC_ENUM_FMT,
            |index| sys::v4l2_fmtdesc {
                index,
                type_: sys::V4L2_BUF_TYPE_VIDEO_CAPTURE,
                ..Default::default()
            },
            |d| {
                codes.push(FourCc(d.pixelformat));
                true
            },
        )?;
        Ok(codes)
    }

    fn frame_sizes(&mut self, fourcc: FourCc) -> Result<Option<FrameSizes>, DriverError> {
        let mut discrete = Vec::new();
        let mut stepwise = None;
        let answered = self.enumerate(
            &sys::VIDIOC_ENUM_FRAMESIZES,
            |index| sys::v4l2_frmsizeenum {
                index,
                pixel_format: fourcc.0,
                ..Default::default()
            },
            |s| match s.type_ {
                sys::V4L2_FRMSIZE_TYPE_DISCRETE => {
                    discrete.push((s.u[0], s.u[1]));
                    true
                }
                sys::V4L2_FRMSIZE_TYPE_CONTINUOUS | sys::V4L2_FRMSIZE_TYPE_STEPWISE => {
                    let step = |v: u32| {
                        if s.type_ == sys::V4L2_FRMSIZE_TYPE_CONTINUOUS {
                            1
                        } else {
                            v.max(1)
                        }
                    };
                    stepwise = Some(FrameSizes::Stepwise {
                        width: (s.u[0], s.u[1], step(s.u[2])),
                        height: (s.u[3], s.u[4], step(s.u[5])),
                    });
                    false
                }
                _ => true,
            },
        )?;
        Ok(match (answered, stepwise) {
            (_, Some(s)) => Some(s),
            (true, None) => Some(FrameSizes::Discrete(discrete)),
            (false, None) => None,
        })
    }

    fn frame_intervals(
        &mut self,
        fourcc: FourCc,
        width: u32,
        height: u32,
    ) -> Result<Option<FrameIntervals>, DriverError> {
        let fraction = |num: u32, den: u32| Fraction { num, den };
        let mut discrete = Vec::new();
        let mut stepwise = None;
        let answered = self.enumerate(
            &sys::VIDIOC_ENUM_FRAMEINTERVALS,
            |index| sys::v4l2_frmivalenum {
                index,
                pixel_format: fourcc.0,
                width,
                height,
                ..Default::default()
            },
            |i| match i.type_ {
                sys::V4L2_FRMIVAL_TYPE_DISCRETE => {
                    discrete.push(fraction(i.u[0], i.u[1]));
                    true
                }
                sys::V4L2_FRMIVAL_TYPE_CONTINUOUS | sys::V4L2_FRMIVAL_TYPE_STEPWISE => {
                    let step = if i.type_ == sys::V4L2_FRMIVAL_TYPE_CONTINUOUS {
                        fraction(1, 1_000_000)
                    } else {
                        fraction(i.u[4], i.u[5])
                    };
                    stepwise = Some(FrameIntervals::Stepwise {
                        min: fraction(i.u[0], i.u[1]),
                        max: fraction(i.u[2], i.u[3]),
                        step,
                    });
                    false
                }
                _ => true,
            },
        )?;
        Ok(match (answered, stepwise) {
            (_, Some(s)) => Some(s),
            (true, None) => Some(FrameIntervals::Discrete(discrete)),
            (false, None) => None,
        })
    }

    fn set_format(
        &mut self,
        fourcc: FourCc,
        width: u32,
        height: u32,
    ) -> Result<DriverFormat, DriverError> {
        let mut format = sys::v4l2_format::new(sys::V4L2_BUF_TYPE_VIDEO_CAPTURE);
        self.ioctl(&sys::VIDIOC_G_FMT, &mut format)?;
        format.pix.width = width;
        format.pix.height = height;
        format.pix.pixelformat = fourcc.0;
        format.pix.field = sys::V4L2_FIELD_NONE;
        format.pix.bytesperline = 0;
        format.pix.sizeimage = 0;
        self.ioctl(&sys::VIDIOC_S_FMT, &mut format)?;
        Ok(DriverFormat {
            fourcc: FourCc(format.pix.pixelformat),
            width: format.pix.width,
            height: format.pix.height,
            bytesperline: format.pix.bytesperline,
            sizeimage: format.pix.sizeimage,
        })
    }

    fn set_interval(&mut self, interval: Fraction) -> Result<Option<Fraction>, DriverError> {
        let mut parm = sys::v4l2_streamparm::new(sys::V4L2_BUF_TYPE_VIDEO_CAPTURE);
        match self.ioctl(&sys::VIDIOC_G_PARM, &mut parm) {
            Ok(()) => {}
            // No G_PARM at all: the rate is the camera's own.
            Err(e) if e.error.raw_os_error() == Some(libc::ENOTTY) => return Ok(None),
            Err(e) => return Err(e),
        }
        if parm.capture.capability & sys::V4L2_CAP_TIMEPERFRAME == 0 {
            return Ok(None);
        }
        parm.capture.timeperframe = sys::v4l2_fract {
            numerator: interval.num,
            denominator: interval.den,
        };
        self.ioctl(&sys::VIDIOC_S_PARM, &mut parm)?;
        let t = parm.capture.timeperframe;
        Ok(
            (t.numerator != 0 && t.denominator != 0).then_some(Fraction {
                num: t.numerator,
                den: t.denominator,
            }),
        )
    }

    fn exposure_ns(&mut self) -> Option<u64> {
        let mut control = sys::v4l2_control {
            id: sys::V4L2_CID_EXPOSURE_ABSOLUTE,
            value: 0,
        };
        self.ioctl(&sys::VIDIOC_G_CTRL, &mut control).ok()?;
        // Units of 100 µs.
        u64::try_from(control.value)
            .ok()
            .filter(|&v| v > 0)
            .map(|v| v * 100_000)
    }

    fn start(&mut self, buffers: u32) -> Result<Started, DriverError> {
        let mut request = sys::v4l2_requestbuffers {
            count: buffers,
            type_: sys::V4L2_BUF_TYPE_VIDEO_CAPTURE,
            memory: sys::V4L2_MEMORY_MMAP,
            ..Default::default()
        };
        self.ioctl(&sys::VIDIOC_REQBUFS, &mut request)?;
        if request.count == 0 {
            return Err(DriverError::errno("VIDIOC_REQBUFS", libc::ENOMEM));
        }
        let mut timestamp_flags = 0;
        for index in 0..request.count {
            let mut buf = sys::v4l2_buffer::new(index);
            self.ioctl(&sys::VIDIOC_QUERYBUF, &mut buf)?;
            timestamp_flags = buf.flags
                & (sys::V4L2_BUF_FLAG_TIMESTAMP_MASK | sys::V4L2_BUF_FLAG_TSTAMP_SRC_MASK);
            let map = sys::Mapping::new(self.file.as_fd(), buf.length as usize, buf.offset)
                .map_err(|error| DriverError {
                    call: "mmap",
                    error,
                })?;
            self.maps.push(map);
        }
        for index in 0..request.count {
            self.queue(index)?;
        }
        let mut kind = sys::V4L2_BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        self.ioctl(&sys::VIDIOC_STREAMON, &mut kind)?;
        self.streaming = true;
        Ok(Started {
            buffers: request.count,
            timestamp_flags,
        })
    }

    fn wait(&mut self, timeout_ms: u32) -> Result<Wait, DriverError> {
        let timeout = i32::try_from(timeout_ms).unwrap_or(i32::MAX);
        match sys::poll_in(self.file.as_fd(), timeout) {
            Ok(sys::PollResult::Ready) => Ok(Wait::Ready),
            Ok(sys::PollResult::Timeout) => Ok(Wait::Timeout),
            Ok(sys::PollResult::Error) => Ok(Wait::Error),
            Err(error) => Err(DriverError {
                call: "poll",
                error,
            }),
        }
    }

    fn dequeue(&mut self) -> Result<Option<Dequeued>, DriverError> {
        let mut buf = sys::v4l2_buffer::new(0);
        match self.ioctl(&sys::VIDIOC_DQBUF, &mut buf) {
            Ok(()) => {}
            Err(e) if e.error.raw_os_error() == Some(libc::EAGAIN) => return Ok(None),
            Err(e) => return Err(e),
        }
        if buf.index as usize >= self.maps.len() {
            return Err(DriverError::errno("VIDIOC_DQBUF", libc::EINVAL));
        }
        Ok(Some(Dequeued {
            index: buf.index,
            bytesused: buf.bytesused,
            flags: buf.flags,
            sequence: buf.sequence,
            timestamp_ns: buf.timestamp_ns(),
        }))
    }

    fn buffer(&self, index: u32) -> &[u8] {
        self.maps.get(index as usize).map_or(&[], |m| m.bytes())
    }

    fn queue(&mut self, index: u32) -> Result<(), DriverError> {
        let mut buf = sys::v4l2_buffer::new(index);
        self.ioctl(&sys::VIDIOC_QBUF, &mut buf)
    }
}

/// Everything a camera offers: for each format its sizes, and the intervals at each discrete size (at a
/// stepwise format's largest size, and at `size` when that is on its grid). A driver that does not
/// enumerate sizes or intervals is taken to offer any (1..16384 px, up to 1000 fps): the request is then
/// tried as is and the driver's answer to `VIDIOC_S_FMT` / `VIDIOC_S_PARM` decides.
pub fn enumerate_offers<D: Driver + ?Sized>(
    driver: &mut D,
    size: Option<(u32, u32)>,
) -> Result<Vec<FormatOffer>, DriverError> {
    let mut offers = Vec::new();
    for fourcc in driver.formats()? {
        let sizes = driver.frame_sizes(fourcc)?.unwrap_or(FrameSizes::Stepwise {
            width: (1, 16_384, 1),
            height: (1, 16_384, 1),
        });
        let at: Vec<(u32, u32)> = match &sizes {
            FrameSizes::Discrete(list) => list.clone(),
            FrameSizes::Stepwise { width, height } => {
                let mut at = vec![(width.1, height.1)];
                if let Some((w, h)) = size
                    && sizes.contains(w, h)
                    && (w, h) != at[0]
                {
                    at.insert(0, (w, h));
                }
                at
            }
        };
        let mut intervals = Vec::with_capacity(at.len());
        for (w, h) in at {
            let found = driver
                .frame_intervals(fourcc, w, h)?
                .unwrap_or(FrameIntervals::Stepwise {
                    min: Fraction { num: 1, den: 1000 },
                    max: Fraction { num: 1, den: 1 },
                    step: Fraction {
                        num: 1,
                        den: 1_000_000,
                    },
                });
            intervals.push((w, h, found));
        }
        offers.push(FormatOffer {
            fourcc,
            sizes,
            intervals,
        });
    }
    Ok(offers)
}

/// Frames the source did not deliver, by reason (their sum is [`FrameSource::skipped`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipCounts {
    /// Done buffers queued back unread because a newer one was done too (latest frame wins).
    pub superseded: u64,
    /// Frames the driver dropped (gaps in the buffers' sequence numbers: no buffer was queued in time).
    pub driver_dropped: u64,
    /// Buffers flagged as errors, empty, or not convertible (corrupt MJPEG).
    pub bad: u64,
}

/// Why a buffer was not delivered.
#[derive(Debug)]
enum Bad {
    Flagged,
    Empty,
    Convert(ConvertError),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Flagged => {
                f.write_str("the driver flagged the buffer as corrupt (V4L2_BUF_FLAG_ERROR)")
            }
            Bad::Empty => f.write_str("the driver returned an empty buffer"),
            Bad::Convert(e) => write!(f, "{e}"),
        }
    }
}

/// A V4L2 camera as a [`FrameSource`] (see the module documentation for timestamps, ids and skipping).
/// Generic over the [`Driver`] so tests and benchmarks can run it on a [`FakeDriver`].
pub struct V4l2Source<D: Driver = Device> {
    info: SourceInfo,
    device: String,
    clock: SharedClock,
    driver: D,
    format: v4l2::PixelFormat,
    /// Bytes per row of the driver's buffers.
    stride: usize,
    mjpeg: MjpegDecoder,
    timeout_ms: u32,
    /// Subtracted from end-of-frame timestamps: exposure + one frame interval (ns).
    eof_correction_ns: u64,
    last_sequence: Option<u32>,
    /// Sequence numbers advanced since the first buffer: the next frame's id.
    sequence_count: u64,
    skips: SkipCounts,
    bad_in_a_row: u32,
    handoff_ns: u64,
}

impl<D: Driver> std::fmt::Debug for V4l2Source<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Source")
            .field("info", &self.info)
            .field("format", &self.format)
            .field("stride", &self.stride)
            .field("eof_correction_ns", &self.eof_correction_ns)
            .field("skips", &self.skips)
            .finish_non_exhaustive()
    }
}

impl V4l2Source<Device> {
    /// Opens the camera of `config` (its node, format, size, rate and buffers) and starts streaming.
    /// Errors name the device and say what it offers when the request cannot be met.
    pub fn open(config: &V4l2Config, clock: SharedClock) -> Result<Self, CameraError> {
        config
            .validate()
            .map_err(|e| CameraError::Config(format!("[source.v4l2] {e}")))?;
        let driver = Device::open(&config.device)
            .map_err(|e| CameraError::Open(format!("camera {}: {e}", config.device)))?;
        Self::with_driver(driver, config, clock)
    }
}

impl<D: Driver> V4l2Source<D> {
    /// Negotiates and starts streaming on `driver`, which stands for the node `config.device`.
    pub fn with_driver(
        mut driver: D,
        config: &V4l2Config,
        clock: SharedClock,
    ) -> Result<Self, CameraError> {
        config
            .validate()
            .map_err(|e| CameraError::Config(format!("[source.v4l2] {e}")))?;
        let dev = config.device.as_str();
        let fail = |e: DriverError| CameraError::Open(format!("camera {dev}: {e}"));
        let cap = driver.capability().map_err(fail)?;
        let label = if cap.card.is_empty() {
            dev.to_string()
        } else {
            format!("{dev} ({})", cap.card)
        };
        if !cap.can_stream_video() {
            return Err(CameraError::Open(format!(
                "camera {label}: not a video capture node with streaming I/O (driver {}: {}){}",
                cap.driver,
                cap.describe(),
                if cap.caps & sys::V4L2_CAP_META_CAPTURE != 0 {
                    "; UVC cameras have a second, metadata node: use the one `reflex devices` lists with formats"
                } else {
                    ""
                }
            )));
        }
        let offers =
            enumerate_offers(&mut driver, Some((config.width, config.height))).map_err(fail)?;
        let offered = || {
            offers
                .iter()
                .map(v4l2::describe_offer)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let only = match config.format {
            FormatChoice::Auto => None,
            FormatChoice::Only(code) => Some(code),
        };
        if let Some(code) = only
            && !offers.iter().any(|o| o.fourcc == code)
        {
            return Err(CameraError::Open(format!(
                "camera {label} offers {}; asked for {code}",
                offered()
            )));
        }
        let request = Request {
            width: config.width,
            height: config.height,
            fps: config.fps,
            format: only,
        };
        let choice = v4l2::negotiate(&offers, &request).map_err(|e| {
            CameraError::Open(format!(
                "camera {label}: {e}; it offers {}; change [source.v4l2] width, height, fps or format",
                offered()
            ))
        })?;
        let set = driver
            .set_format(choice.fourcc, choice.width, choice.height)
            .map_err(fail)?;
        let Some(format) = v4l2::PixelFormat::from_fourcc(set.fourcc) else {
            return Err(CameraError::Open(format!(
                "camera {label}: asked for {} {}x{}, the driver set {} {}x{}, a format reflex does not convert",
                choice.fourcc, choice.width, choice.height, set.fourcc, set.width, set.height
            )));
        };
        if set.width == 0 || set.height == 0 {
            return Err(CameraError::Open(format!(
                "camera {label}: the driver set a {}x{} image",
                set.width, set.height
            )));
        }
        let interval = driver
            .set_interval(choice.interval)
            .map_err(fail)?
            .unwrap_or(choice.interval);
        let exposure_ns = driver.exposure_ns();
        let started = driver.start(config.buffers).map_err(fail)?;

        let (width, height) = (set.width as usize, set.height as usize);
        let stride = if set.bytesperline > 0 {
            set.bytesperline as usize
        } else {
            width * bytes_per_pixel(format)
        };
        let interval_ns = u64::from(interval.num) * 1_000_000_000 / u64::from(interval.den.max(1));
        let stamps = match started.timestamp_flags & sys::V4L2_BUF_FLAG_TIMESTAMP_MASK {
            sys::V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC => {
                if started.timestamp_flags & sys::V4L2_BUF_FLAG_TSTAMP_SRC_MASK
                    == sys::V4L2_BUF_FLAG_TSTAMP_SRC_SOE
                {
                    String::new()
                } else {
                    format!(
                        ", end-of-frame timestamps - {:.1} ms",
                        (interval_ns + exposure_ns.unwrap_or(0)) as f64 / 1e6
                    )
                }
            }
            _ => ", host timestamps".into(),
        };
        let info = SourceInfo {
            name: format!(
                "v4l2({label}: {} {}x{} @ {} fps{stamps})",
                set.fourcc,
                set.width,
                set.height,
                v4l2::fps_text(interval.fps())
            ),
            width: set.width,
            height: set.height,
            format: if format == v4l2::PixelFormat::Grey {
                PixelFormat::Gray8
            } else {
                PixelFormat::Rgb8
            },
            fps: interval.fps(),
        };
        Ok(Self {
            info,
            device: dev.to_string(),
            clock,
            driver,
            format,
            stride,
            mjpeg: MjpegDecoder::new(width, height, set.sizeimage as usize),
            timeout_ms: config.timeout_ms,
            eof_correction_ns: interval_ns + exposure_ns.unwrap_or(0),
            last_sequence: None,
            sequence_count: 0,
            skips: SkipCounts::default(),
            bad_in_a_row: 0,
            handoff_ns: 0,
        })
    }

    /// Frames not delivered so far, by reason.
    pub fn skips(&self) -> SkipCounts {
        self.skips
    }

    /// What end-of-frame timestamps are moved back by (ns): the exposure time the driver reported plus one
    /// frame interval.
    pub fn eof_correction_ns(&self) -> u64 {
        self.eof_correction_ns
    }

    /// The last delivered frame's hand-off (ns): from `poll` returning to the frame converted, ready for
    /// inference (dequeuing, draining older buffers, the conversion).
    pub fn handoff_ns(&self) -> u64 {
        self.handoff_ns
    }

    fn stream_error(&self, e: &DriverError) -> CameraError {
        CameraError::Stream(format!("camera {}: {e}", self.device))
    }

    fn queue(&mut self, index: u32) -> Result<(), CameraError> {
        self.driver
            .queue(index)
            .map_err(|e| CameraError::Stream(format!("camera {}: {e}", self.device)))
    }

    /// Frame id of a buffer with `sequence`; counts the frames the driver dropped before it. A sequence
    /// that repeats or jumps back by more than 2³¹ (a driver that does not count) advances by one.
    fn track_sequence(&mut self, sequence: u32) -> u64 {
        if let Some(last) = self.last_sequence {
            let step = match sequence.wrapping_sub(last) {
                0 => 1,
                d if d > 1 << 31 => 1,
                d => d,
            };
            self.skips.driver_dropped += u64::from(step - 1);
            self.sequence_count += u64::from(step);
        }
        self.last_sequence = Some(sequence);
        self.sequence_count
    }

    /// Counts an unusable buffer; too many in a row end the stream.
    fn note_bad(&mut self, bad: Bad) -> Result<(), CameraError> {
        self.skips.bad += 1;
        self.bad_in_a_row += 1;
        if self.bad_in_a_row >= MAX_BAD_IN_A_ROW {
            return Err(CameraError::Stream(format!(
                "camera {}: {} frames in a row were unusable; the last: {bad}",
                self.device, self.bad_in_a_row
            )));
        }
        Ok(())
    }

    /// Dequeues every done buffer; returns the newest usable one with its frame id, every older one
    /// queued back.
    fn drain(&mut self, waited: Wait) -> Result<Option<(Dequeued, u64)>, CameraError> {
        let mut newest: Option<(Dequeued, u64)> = None;
        loop {
            let buf = match self.driver.dequeue() {
                Ok(Some(buf)) => buf,
                Ok(None) => break,
                Err(e) => return Err(self.stream_error(&e)),
            };
            let id = self.track_sequence(buf.sequence);
            let bad = if buf.flags & sys::V4L2_BUF_FLAG_ERROR != 0 {
                Some(Bad::Flagged)
            } else if buf.bytesused == 0 {
                Some(Bad::Empty)
            } else {
                None
            };
            if let Some(bad) = bad {
                self.queue(buf.index)?;
                self.note_bad(bad)?;
                continue;
            }
            if let Some((older, _)) = newest.replace((buf, id)) {
                self.queue(older.index)?;
                self.skips.superseded += 1;
            }
        }
        if newest.is_none() && waited == Wait::Error {
            return Err(CameraError::Stream(format!(
                "camera {}: the driver reported an error (poll: POLLERR) and has no buffer to dequeue; streaming stopped",
                self.device
            )));
        }
        Ok(newest)
    }

    /// The exposure time of `buf` on the host clock (see the module documentation).
    fn exposure_ns(&self, buf: &Dequeued, t_host_ns: u64) -> u64 {
        let monotonic =
            buf.flags & sys::V4L2_BUF_FLAG_TIMESTAMP_MASK == sys::V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC;
        if !monotonic || buf.timestamp_ns == 0 {
            return t_host_ns;
        }
        let start = if buf.flags & sys::V4L2_BUF_FLAG_TSTAMP_SRC_MASK
            == sys::V4L2_BUF_FLAG_TSTAMP_SRC_SOE
        {
            buf.timestamp_ns
        } else {
            buf.timestamp_ns.saturating_sub(self.eof_correction_ns)
        };
        start.min(t_host_ns)
    }

    /// Converts buffer `buf` into `frame`.
    fn convert(&mut self, buf: &Dequeued, frame: &mut Frame) -> Result<(), ConvertError> {
        let (w, h) = (self.info.width as usize, self.info.height as usize);
        let memory = self.driver.buffer(buf.index);
        let src = &memory[..(buf.bytesused as usize).min(memory.len())];
        if self.info.format == PixelFormat::Gray8 {
            copy_gray(src, self.stride, w, h, &mut frame.data)
        } else {
            self.format
                .to_rgb(src, self.stride, w, h, &mut self.mjpeg, &mut frame.data)
        }
    }
}

impl<D: Driver> FrameSource for V4l2Source<D> {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, CameraError> {
        self.info.check_frame(frame)?;
        loop {
            let waited = self
                .driver
                .wait(self.timeout_ms)
                .map_err(|e| self.stream_error(&e))?;
            if waited == Wait::Timeout {
                return Err(CameraError::Stream(format!(
                    "camera {}: no frame for {} ms ([source.v4l2] timeout_ms); is it still connected and powered?",
                    self.device, self.timeout_ms
                )));
            }
            let t_wake = self.clock.now_ns();
            let Some((buf, id)) = self.drain(waited)? else {
                continue;
            };
            match self.convert(&buf, frame) {
                Ok(()) => {
                    let t_capture = self.clock.now_ns();
                    frame.id = id;
                    frame.camera = 0;
                    frame.t_exposure_ns = self.exposure_ns(&buf, t_wake);
                    frame.t_capture_ns = t_capture;
                    self.handoff_ns = t_capture.saturating_sub(t_wake);
                    self.bad_in_a_row = 0;
                    self.queue(buf.index)?;
                    return Ok(true);
                }
                Err(e) => {
                    self.queue(buf.index)?;
                    self.note_bad(Bad::Convert(e))?;
                }
            }
        }
    }

    fn skipped(&self) -> u64 {
        self.skips.superseded + self.skips.driver_dropped + self.skips.bad
    }
}

/// Bytes per pixel of a packed format's rows (1 for the luma plane of planar YUV; 0 for MJPEG).
fn bytes_per_pixel(format: v4l2::PixelFormat) -> usize {
    match format {
        v4l2::PixelFormat::Rgb24 | v4l2::PixelFormat::Bgr24 => 3,
        v4l2::PixelFormat::Yuyv => 2,
        v4l2::PixelFormat::Mjpeg => 0,
        _ => 1,
    }
}

/// 8-bit gray rows `stride` apart → packed gray.
fn copy_gray(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    let need = if height == 0 {
        0
    } else {
        (height - 1) * stride + width
    };
    if stride < width || src.len() < need {
        return Err(ConvertError::SourceTooSmall {
            what: "GREY",
            got: src.len(),
            stride,
            need,
            width,
            height,
        });
    }
    if dst.len() != width * height {
        return Err(ConvertError::Destination {
            got: dst.len(),
            need: width * height,
            width,
            height,
        });
    }
    if width == 0 {
        return Ok(());
    }
    for (y, out) in dst.chunks_exact_mut(width).enumerate() {
        out.copy_from_slice(&src[y * stride..][..width]);
    }
    Ok(())
}

/// What `reflex devices` shows of one video node.
#[derive(Debug, Clone)]
pub struct CameraProbe {
    /// `VIDIOC_QUERYCAP`'s answer.
    pub capability: Capability,
    /// The formats, sizes and rates, when the node captures video (empty otherwise).
    pub offers: Vec<FormatOffer>,
}

/// Asks `driver` what it is and, when it streams video, what it offers.
pub fn probe<D: Driver + ?Sized>(driver: &mut D) -> Result<CameraProbe, DriverError> {
    let capability = driver.capability()?;
    let offers = if capability.can_stream_video() {
        enumerate_offers(driver, None)?
    } else {
        Vec::new()
    };
    Ok(CameraProbe { capability, offers })
}

/// Opens `node` and probes it (`reflex devices`); opening does not disturb another program streaming.
pub fn probe_node(node: &VideoNode) -> Result<CameraProbe, DriverError> {
    let path = node.path.display().to_string();
    let mut device = Device::open(&path)?;
    probe(&mut device)
}

/// The lines `reflex devices` prints for the V4L2 nodes: each capture node with its driver and bus, then a
/// line per format (`YUYV 640x480 (30, 15 fps), ...`); a node that does not capture video says what it
/// is; one line when there are none.
pub fn camera_lines(
    nodes: &[VideoNode],
    mut probe: impl FnMut(&VideoNode) -> Result<CameraProbe, DriverError>,
) -> Vec<String> {
    if nodes.is_empty() {
        return vec!["no V4L2 cameras found (no /sys/class/video4linux/video* nodes)".into()];
    }
    let mut lines = Vec::new();
    for node in nodes {
        let path = node.path.display();
        match probe(node) {
            Err(e) => lines.push(format!("{path}  {}: {e}", node.name)),
            Ok(p) if !p.capability.can_stream_video() => lines.push(format!(
                "{path}  {}: not a video capture node ({})",
                node.name,
                p.capability.describe()
            )),
            Ok(p) => {
                let c = &p.capability;
                let card = if c.card.is_empty() {
                    &node.name
                } else {
                    &c.card
                };
                lines.push(format!(
                    "{path}  {card}  ({}, {})  --source v4l:{path}",
                    c.driver, c.bus_info
                ));
                if p.offers.is_empty() {
                    lines.push("    no capture formats".into());
                }
                for offer in &p.offers {
                    lines.push(format!("    {}", v4l2::describe_offer(offer)));
                }
            }
        }
    }
    lines
}

/// One frame for a [`FakeDriver`] to fill a buffer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeFrame {
    /// Which of the fake's payloads fills the buffer.
    pub payload: usize,
    /// The buffer's `sequence`.
    pub sequence: u32,
    /// The buffer's timestamp (ns).
    pub timestamp_ns: u64,
    /// The buffer's `V4L2_BUF_FLAG_*` (timestamp clock and source, error).
    pub flags: u32,
}

#[derive(Debug)]
struct FakeState {
    /// Frames pushed, not yet in a buffer.
    pending: VecDeque<FakeFrame>,
    /// Buffers queued by the application, free for the driver to fill.
    free: VecDeque<u32>,
    /// Filled buffers, ready to dequeue.
    done: VecDeque<(u32, FakeFrame)>,
    /// An errno that every wait and dequeue now fails with.
    fail: Option<i32>,
    dropped: u64,
    queued_back: u64,
    streaming: bool,
    stopped: bool,
}

/// The test's end of a [`FakeDriver`]: pushes frames in, breaks the device, reads what the source did.
#[derive(Debug, Clone)]
pub struct FakeCamera {
    state: Arc<Mutex<FakeState>>,
}

impl FakeCamera {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A frame arrives from the sensor: it fills the next free buffer at the source's next wait, or is
    /// dropped (as a driver drops it) when no buffer is free then.
    pub fn push(&self, frame: FakeFrame) {
        self.lock().pending.push_back(frame);
    }

    /// From now on every wait and dequeue fails with `errno` (`libc::ENODEV`: unplugged).
    pub fn fail(&self, errno: i32) {
        self.lock().fail = Some(errno);
    }

    /// Buffers queued to the driver, free to fill.
    pub fn free_buffers(&self) -> usize {
        self.lock().free.len()
    }

    /// Buffers given back by the application (`VIDIOC_QBUF`) since streaming started.
    pub fn queued_back(&self) -> u64 {
        self.lock().queued_back
    }

    /// Frames dropped for want of a free buffer.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Whether streaming is on (started and not yet stopped by dropping the driver).
    pub fn streaming(&self) -> bool {
        let s = self.lock();
        s.streaming && !s.stopped
    }
}

/// What a [`FakeDriver`] is and offers.
#[derive(Debug, Clone)]
pub struct FakeSpec {
    /// `VIDIOC_QUERYCAP`'s answer.
    pub capability: Capability,
    /// Formats, sizes and intervals it enumerates.
    pub offers: Vec<FormatOffer>,
    /// `V4L2_CID_EXPOSURE_ABSOLUTE` in ns, if it has the control.
    pub exposure_ns: Option<u64>,
    /// The timestamp flags `VIDIOC_QUERYBUF` reports.
    pub timestamp_flags: u32,
    /// Padding after each row of raw formats (bytes), to exercise strides.
    pub row_padding: u32,
    /// Frame payloads [`FakeFrame::payload`] picks from, copied into a buffer when it is filled.
    pub payloads: Vec<Vec<u8>>,
}

impl FakeSpec {
    /// A UVC-like camera (`uvcvideo`, video capture + streaming, monotonic start-of-exposure stamps)
    /// offering `offers`, with these payloads.
    pub fn camera(offers: Vec<FormatOffer>, payloads: Vec<Vec<u8>>) -> Self {
        Self {
            capability: Capability {
                driver: "uvcvideo".into(),
                card: "Fake Camera".into(),
                bus_info: "usb-fake-1".into(),
                caps: sys::V4L2_CAP_VIDEO_CAPTURE | sys::V4L2_CAP_STREAMING,
            },
            offers,
            exposure_ns: None,
            timestamp_flags: sys::V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC
                | sys::V4L2_BUF_FLAG_TSTAMP_SRC_SOE,
            row_padding: 0,
            payloads,
        }
    }
}

/// A scripted V4L2 driver for tests and benchmarks: it enumerates the offers of its [`FakeSpec`], sets
/// whatever is asked, and hands out the frames pushed through its [`FakeCamera`] in buffers of its own,
/// with the sequence numbers, timestamps and flags chosen; or fails with an errno. Nothing allocates after
/// `start` (frames beyond 64 pending at once aside).
#[derive(Debug)]
pub struct FakeDriver {
    spec: FakeSpec,
    state: Arc<Mutex<FakeState>>,
    buffers: Vec<Vec<u8>>,
    set: Option<DriverFormat>,
}

impl FakeDriver {
    /// A fake driver and its test handle.
    pub fn new(spec: FakeSpec) -> (Self, FakeCamera) {
        let state = Arc::new(Mutex::new(FakeState {
            pending: VecDeque::with_capacity(64),
            free: VecDeque::with_capacity(64),
            done: VecDeque::with_capacity(64),
            fail: None,
            dropped: 0,
            queued_back: 0,
            streaming: false,
            stopped: false,
        }));
        let camera = FakeCamera {
            state: Arc::clone(&state),
        };
        (
            Self {
                spec,
                state,
                buffers: Vec::new(),
                set: None,
            },
            camera,
        )
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn offer(&self, fourcc: FourCc) -> Result<&FormatOffer, DriverError> {
        self.spec
            .offers
            .iter()
            .find(|o| o.fourcc == fourcc)
            .ok_or_else(|| DriverError::errno("VIDIOC_ENUM_FRAMESIZES", libc::EINVAL))
    }
}

impl Drop for FakeDriver {
    fn drop(&mut self) {
        self.lock().stopped = true;
    }
}

impl Driver for FakeDriver {
    fn capability(&mut self) -> Result<Capability, DriverError> {
        Ok(self.spec.capability.clone())
    }

    fn formats(&mut self) -> Result<Vec<FourCc>, DriverError> {
        Ok(self.spec.offers.iter().map(|o| o.fourcc).collect())
    }

    fn frame_sizes(&mut self, fourcc: FourCc) -> Result<Option<FrameSizes>, DriverError> {
        Ok(Some(self.offer(fourcc)?.sizes.clone()))
    }

    fn frame_intervals(
        &mut self,
        fourcc: FourCc,
        width: u32,
        height: u32,
    ) -> Result<Option<FrameIntervals>, DriverError> {
        let offer = self.offer(fourcc)?;
        Ok(offer
            .intervals
            .iter()
            .find(|(w, h, _)| (*w, *h) == (width, height))
            .map(|(_, _, i)| i.clone()))
    }

    fn set_format(
        &mut self,
        fourcc: FourCc,
        width: u32,
        height: u32,
    ) -> Result<DriverFormat, DriverError> {
        let format = v4l2::PixelFormat::from_fourcc(fourcc)
            .ok_or_else(|| DriverError::errno("VIDIOC_S_FMT", libc::EINVAL))?;
        let bpp = bytes_per_pixel(format) as u32;
        let bytesperline = if bpp == 0 {
            0
        } else {
            width * bpp + self.spec.row_padding
        };
        let planes = match format {
            v4l2::PixelFormat::Nv12 | v4l2::PixelFormat::Yu12 => 3,
            _ => 2,
        };
        let raw = bytesperline * height * planes / 2;
        let largest = self.spec.payloads.iter().map(Vec::len).max().unwrap_or(0) as u32;
        let set = DriverFormat {
            fourcc,
            width,
            height,
            bytesperline,
            sizeimage: raw.max(largest).max(1),
        };
        self.set = Some(set);
        Ok(set)
    }

    fn set_interval(&mut self, interval: Fraction) -> Result<Option<Fraction>, DriverError> {
        Ok(Some(interval))
    }

    fn exposure_ns(&mut self) -> Option<u64> {
        self.spec.exposure_ns
    }

    fn start(&mut self, buffers: u32) -> Result<Started, DriverError> {
        let size = self.set.map_or(1, |s| s.sizeimage as usize);
        self.buffers = (0..buffers).map(|_| vec![0; size]).collect();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.free.extend(0..buffers);
        state.streaming = true;
        Ok(Started {
            buffers,
            timestamp_flags: self.spec.timestamp_flags,
        })
    }

    fn wait(&mut self, _timeout_ms: u32) -> Result<Wait, DriverError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.fail.is_some() {
            return Ok(Wait::Error);
        }
        // The "sensor" fills free buffers with the pending frames, in order; no free buffer: dropped.
        while let Some(frame) = state.pending.pop_front() {
            match state.free.pop_front() {
                Some(index) => {
                    let payload = &self.spec.payloads[frame.payload];
                    let buffer = &mut self.buffers[index as usize];
                    let n = payload.len().min(buffer.len());
                    buffer[..n].copy_from_slice(&payload[..n]);
                    state.done.push_back((index, frame));
                }
                None => state.dropped += 1,
            }
        }
        Ok(if state.done.is_empty() {
            Wait::Timeout
        } else {
            Wait::Ready
        })
    }

    fn dequeue(&mut self) -> Result<Option<Dequeued>, DriverError> {
        let mut state = self.lock();
        if let Some(errno) = state.fail {
            return Err(DriverError::errno("VIDIOC_DQBUF", errno));
        }
        Ok(state.done.pop_front().map(|(index, frame)| Dequeued {
            index,
            bytesused: self.spec.payloads[frame.payload]
                .len()
                .min(self.buffers[index as usize].len()) as u32,
            flags: frame.flags,
            sequence: frame.sequence,
            timestamp_ns: frame.timestamp_ns,
        }))
    }

    fn buffer(&self, index: u32) -> &[u8] {
        self.buffers.get(index as usize).map_or(&[], Vec::as_slice)
    }

    fn queue(&mut self, index: u32) -> Result<(), DriverError> {
        let mut state = self.lock();
        if state.free.contains(&index) || state.done.iter().any(|(i, _)| *i == index) {
            return Err(DriverError::errno("VIDIOC_QBUF", libc::EINVAL));
        }
        state.free.push_back(index);
        state.queued_back += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn fps(n: u32) -> Fraction {
        Fraction { num: 1, den: n }
    }

    fn offer(code: &[u8; 4], sizes: &[(u32, u32)], rates: &[u32]) -> FormatOffer {
        FormatOffer {
            fourcc: FourCc::new(*code),
            sizes: FrameSizes::Discrete(sizes.to_vec()),
            intervals: sizes
                .iter()
                .map(|&(w, h)| {
                    (
                        w,
                        h,
                        FrameIntervals::Discrete(rates.iter().map(|&r| fps(r)).collect()),
                    )
                })
                .collect(),
        }
    }

    /// A 4x2 image as YUYV (luma 16·(1+x) limited range, neutral chroma) and as GREY.
    fn yuyv_4x2() -> Vec<u8> {
        (0..2)
            .flat_map(|_| (0..4u8).flat_map(|x| [16 + 40 * x, 128]))
            .collect()
    }

    fn config(width: u32, height: u32, rate: f64, format: FormatChoice) -> V4l2Config {
        V4l2Config {
            device: "/dev/video7".into(),
            width,
            height,
            fps: rate,
            format,
            ..V4l2Config::default()
        }
    }

    fn monotonic_soe() -> u32 {
        BUF_FLAG_TIMESTAMP_MONOTONIC | BUF_FLAG_TSTAMP_SRC_SOE
    }

    fn frame(payload: usize, sequence: u32, timestamp_ns: u64, flags: u32) -> FakeFrame {
        FakeFrame {
            payload,
            sequence,
            timestamp_ns,
            flags,
        }
    }

    /// A YUYV 4x2 camera at 30 fps with 4 buffers and payloads 0..3 (luma raised by 5·i) on a manual clock
    /// at 1 s.
    fn yuyv_source(
        spec: impl FnOnce(&mut FakeSpec),
    ) -> (V4l2Source<FakeDriver>, FakeCamera, Arc<ManualClock>) {
        yuyv_source_buffers(4, spec)
    }

    fn yuyv_source_buffers(
        buffers: u32,
        spec: impl FnOnce(&mut FakeSpec),
    ) -> (V4l2Source<FakeDriver>, FakeCamera, Arc<ManualClock>) {
        let payloads: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                yuyv_4x2()
                    .iter()
                    .enumerate()
                    .map(|(k, &b)| {
                        if k % 2 == 0 {
                            b.saturating_add(i * 5)
                        } else {
                            b
                        }
                    })
                    .collect()
            })
            .collect();
        let mut s = FakeSpec::camera(vec![offer(b"YUYV", &[(4, 2)], &[30])], payloads);
        spec(&mut s);
        let (driver, camera) = FakeDriver::new(s);
        let clock = Arc::new(ManualClock::new());
        clock.set_ns(1_000_000_000);
        let source = V4l2Source::with_driver(
            driver,
            &V4l2Config {
                buffers,
                ..config(4, 2, 30.0, FormatChoice::Auto)
            },
            clock.clone(),
        )
        .unwrap();
        (source, camera, clock)
    }

    #[test]
    fn the_newest_done_buffer_wins_and_the_older_ones_are_queued_back() {
        let (mut source, camera, _clock) = yuyv_source(|_| {});
        assert_eq!(camera.free_buffers(), 4, "all buffers queued at start");
        assert!(camera.streaming());
        let mut f = Frame::for_source(source.info());
        for (payload, seq) in [(0, 0), (1, 1), (2, 2)] {
            camera.push(frame(
                payload,
                seq,
                900_000_000 + u64::from(seq),
                monotonic_soe(),
            ));
        }
        assert!(source.next_frame(&mut f).unwrap());
        assert_eq!(f.id, 2, "the newest of the three");
        assert_eq!(f.t_exposure_ns, 900_000_002);
        // Payload 2: luma 16 + 10 → (26 - 16) · 255/219 = 11.6 → 12.
        assert_eq!(&f.data[..3], &[12, 12, 12]);
        assert_eq!(source.skipped(), 2);
        assert_eq!(
            source.skips(),
            SkipCounts {
                superseded: 2,
                driver_dropped: 0,
                bad: 0
            }
        );
        assert_eq!(camera.queued_back(), 3, "the two older and the used one");
        assert_eq!(camera.free_buffers(), 4);
        // One at a time: nothing skipped.
        camera.push(frame(0, 3, 900_000_100, monotonic_soe()));
        assert!(source.next_frame(&mut f).unwrap());
        assert_eq!((f.id, source.skipped()), (3, 2));
        assert_eq!(&f.data[..3], &[0, 0, 0]);
        drop(source);
        assert!(!camera.streaming(), "streaming stops when the source goes");
    }

    #[test]
    fn sequence_gaps_become_id_gaps_and_count_as_skipped() {
        let (mut source, camera, _clock) = yuyv_source(|_| {});
        let mut f = Frame::for_source(source.info());
        let mut ids = Vec::new();
        // The driver starts at 100 and loses 103, 104 and 106..=109.
        for seq in [100u32, 101, 102, 105, 110] {
            camera.push(frame(0, seq, 1, monotonic_soe()));
            source.next_frame(&mut f).unwrap();
            ids.push(f.id);
        }
        assert_eq!(ids, [0, 1, 2, 5, 10]);
        assert_eq!(source.skips().driver_dropped, 6);
        assert_eq!(source.skipped(), 6);
        // u32 wrap-around continues the count.
        let (mut source, camera, _clock) = yuyv_source(|_| {});
        for seq in [u32::MAX - 1, u32::MAX, 0, 2] {
            camera.push(frame(0, seq, 1, monotonic_soe()));
            source.next_frame(&mut f).unwrap();
        }
        assert_eq!((f.id, source.skips().driver_dropped), (4, 1));
        // Frames beyond the free buffers are dropped by the driver: a gap in the ids.
        let (mut source, camera, _clock) = yuyv_source(|_| {});
        for seq in 0..6 {
            camera.push(frame(0, seq, 1, monotonic_soe()));
        }
        source.next_frame(&mut f).unwrap();
        assert_eq!(camera.dropped(), 2);
        assert_eq!(f.id, 3, "frames 0..=3 filled the four buffers");
        camera.push(frame(0, 6, 1, monotonic_soe()));
        source.next_frame(&mut f).unwrap();
        assert_eq!(f.id, 6);
        assert_eq!(
            source.skips(),
            SkipCounts {
                superseded: 3,
                driver_dropped: 2,
                bad: 0
            }
        );
    }

    #[test]
    fn monotonic_start_of_exposure_stamps_pass_through() {
        let (mut source, camera, clock) = yuyv_source(|_| {});
        assert!(
            !source.info().name.contains("timestamps"),
            "{}",
            source.info().name
        );
        let mut f = Frame::for_source(source.info());
        camera.push(frame(0, 0, 987_654_321, monotonic_soe()));
        clock.set_ns(1_000_000_000);
        source.next_frame(&mut f).unwrap();
        assert_eq!(f.t_exposure_ns, 987_654_321);
        assert_eq!(f.t_capture_ns, clock.now_ns());
        // A driver stamp after the host had the buffer is clamped to the host time.
        camera.push(frame(0, 1, 5_000_000_000, monotonic_soe()));
        source.next_frame(&mut f).unwrap();
        assert_eq!(f.t_exposure_ns, 1_000_000_000);
    }

    #[test]
    fn end_of_frame_stamps_move_back_by_exposure_and_one_interval() {
        let (mut source, camera, _clock) = yuyv_source(|s| {
            s.exposure_ns = Some(10_000_000);
            s.timestamp_flags = BUF_FLAG_TIMESTAMP_MONOTONIC;
        });
        // 1/30 s = 33 333 333 ns, plus the 10 ms exposure.
        assert_eq!(source.eof_correction_ns(), 43_333_333);
        assert!(
            source
                .info()
                .name
                .contains("end-of-frame timestamps - 43.3 ms"),
            "{}",
            source.info().name
        );
        let mut f = Frame::for_source(source.info());
        camera.push(frame(0, 0, 900_000_000, BUF_FLAG_TIMESTAMP_MONOTONIC));
        source.next_frame(&mut f).unwrap();
        assert_eq!(f.t_exposure_ns, 900_000_000 - 43_333_333);
        // Without an exposure control: the interval alone.
        let (source, _camera, _clock) = yuyv_source(|s| {
            s.timestamp_flags = BUF_FLAG_TIMESTAMP_MONOTONIC;
        });
        assert_eq!(source.eof_correction_ns(), 33_333_333);
    }

    #[test]
    fn unknown_and_copied_clocks_use_the_host_time_of_the_wake_up() {
        let (mut source, camera, clock) = yuyv_source(|s| s.timestamp_flags = 0);
        assert!(
            source.info().name.ends_with(", host timestamps)"),
            "{}",
            source.info().name
        );
        let mut f = Frame::for_source(source.info());
        for (seq, flags) in [(0, 0), (1, BUF_FLAG_TIMESTAMP_COPY)] {
            clock.set_ns(2_000_000_000 + u64::from(seq) * 1_000);
            camera.push(frame(0, seq, 123, flags));
            source.next_frame(&mut f).unwrap();
            assert_eq!(f.t_exposure_ns, clock.now_ns(), "flags {flags:#x}");
        }
        // Monotonic but never stamped (0): host time too.
        camera.push(frame(0, 2, 0, monotonic_soe()));
        source.next_frame(&mut f).unwrap();
        assert_eq!(f.t_exposure_ns, clock.now_ns());
    }

    #[test]
    fn an_unplugged_camera_ends_the_stream_naming_the_device_and_errno() {
        let (mut source, camera, _clock) = yuyv_source(|_| {});
        let mut f = Frame::for_source(source.info());
        camera.push(frame(0, 0, 1, monotonic_soe()));
        assert!(source.next_frame(&mut f).unwrap());
        camera.fail(libc::ENODEV);
        let e = source.next_frame(&mut f).unwrap_err();
        assert!(matches!(e, CameraError::Stream(_)), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("/dev/video7")
                && e.contains("VIDIOC_DQBUF")
                && e.contains("ENODEV")
                && e.contains("unplugged"),
            "{e}"
        );
        let (mut source, camera, _clock) = yuyv_source(|_| {});
        camera.fail(libc::EIO);
        let e = source.next_frame(&mut f).unwrap_err().to_string();
        assert!(e.contains("/dev/video7") && e.contains("EIO"), "{e}");
        // Nothing comes: the timeout, named.
        let (mut source, _camera, _clock) = yuyv_source(|_| {});
        let e = source.next_frame(&mut f).unwrap_err().to_string();
        assert!(
            e.contains("/dev/video7") && e.contains("no frame for 2000 ms"),
            "{e}"
        );
    }

    #[test]
    fn bad_buffers_are_skipped_until_too_many_in_a_row() {
        let (mut source, camera, _clock) = yuyv_source_buffers(16, |_| {});
        let mut f = Frame::for_source(source.info());
        camera.push(frame(0, 0, 1, monotonic_soe() | BUF_FLAG_ERROR));
        camera.push(frame(1, 1, 2, monotonic_soe()));
        source.next_frame(&mut f).unwrap();
        assert_eq!(
            (f.id, source.skips().bad, source.skips().superseded),
            (1, 1, 0)
        );
        // The newest is corrupt: the older good one is used, not lost.
        camera.push(frame(1, 2, 3, monotonic_soe()));
        camera.push(frame(2, 3, 4, monotonic_soe() | BUF_FLAG_ERROR));
        source.next_frame(&mut f).unwrap();
        assert_eq!(f.id, 2);
        for seq in 4..4 + MAX_BAD_IN_A_ROW {
            camera.push(frame(0, seq, 1, monotonic_soe() | BUF_FLAG_ERROR));
        }
        let e = source.next_frame(&mut f).unwrap_err().to_string();
        assert!(
            e.contains("10 frames in a row") && e.contains("V4L2_BUF_FLAG_ERROR"),
            "{e}"
        );
        assert_eq!(source.skips().bad, 2 + u64::from(MAX_BAD_IN_A_ROW));
        assert_eq!(camera.dropped(), 0);
    }

    #[test]
    fn grey_stays_gray_and_strides_are_honoured() {
        let gray: Vec<u8> = [10u8, 20, 30, 40, 0, 0, 50, 60, 70, 80, 0, 0].to_vec();
        let mut spec = FakeSpec::camera(vec![offer(b"GREY", &[(4, 2)], &[60])], vec![gray]);
        spec.row_padding = 2;
        let (driver, camera) = FakeDriver::new(spec);
        let clock = Arc::new(ManualClock::new());
        let mut source =
            V4l2Source::with_driver(driver, &config(4, 2, 60.0, FormatChoice::Auto), clock)
                .unwrap();
        assert_eq!(source.info().format, PixelFormat::Gray8);
        assert_eq!(source.info().fps, 60.0);
        let mut f = Frame::for_source(source.info());
        camera.push(frame(0, 0, 0, monotonic_soe()));
        source.next_frame(&mut f).unwrap();
        assert_eq!(f.data, [10, 20, 30, 40, 50, 60, 70, 80]);
    }

    /// A JPEG of a flat colour, `w`×`h`.
    fn jpeg(w: u16, h: u16, rgb: [u8; 3]) -> Vec<u8> {
        let image: Vec<u8> = (0..usize::from(w) * usize::from(h))
            .flat_map(|_| rgb)
            .collect();
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 95)
            .encode(&image, w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    #[test]
    fn mjpeg_frames_decode_and_a_corrupt_one_is_skipped() {
        let good = jpeg(16, 8, [200, 40, 40]);
        let mut corrupt = good.clone();
        corrupt.truncate(20);
        let spec = FakeSpec::camera(vec![offer(b"MJPG", &[(16, 8)], &[30])], vec![good, corrupt]);
        let (driver, camera) = FakeDriver::new(spec);
        let clock = Arc::new(ManualClock::new());
        let mut source = V4l2Source::with_driver(
            driver,
            &config(16, 8, 30.0, FormatChoice::Only(FourCc::new(*b"MJPG"))),
            clock,
        )
        .unwrap();
        assert_eq!(source.info().format, PixelFormat::Rgb8);
        let mut f = Frame::for_source(source.info());
        camera.push(frame(1, 0, 0, monotonic_soe()));
        camera.push(frame(0, 1, 0, monotonic_soe()));
        source.next_frame(&mut f).unwrap();
        assert_eq!(f.id, 1);
        let p = &f.data[..3];
        assert!(p[0].abs_diff(200) <= 3 && p[1].abs_diff(40) <= 3, "{p:?}");
        // A corrupt newest frame alone: skipped, and the next good one comes.
        camera.push(frame(1, 2, 0, monotonic_soe()));
        camera.push(frame(0, 3, 0, monotonic_soe()));
        // Both done at once: the good newest wins, the corrupt older one is superseded unread.
        source.next_frame(&mut f).unwrap();
        assert_eq!(f.id, 3);
        let before = source.skips().bad;
        camera.push(frame(1, 4, 0, monotonic_soe()));
        // The corrupt one alone is dequeued, fails to decode, and the source waits on: the fake then
        // has nothing and reports the timeout.
        let e = source.next_frame(&mut f).unwrap_err().to_string();
        assert!(e.contains("no frame"), "{e}");
        assert_eq!(source.skips().bad, before + 1);
    }

    #[test]
    fn open_refuses_a_missing_format_listing_what_the_camera_offers() {
        let offers = vec![
            offer(b"YUYV", &[(640, 480)], &[30]),
            offer(b"MJPG", &[(1280, 720)], &[60]),
        ];
        let open = |format: FormatChoice, w: u32, h: u32, rate: f64| {
            let (driver, _camera) = FakeDriver::new(FakeSpec::camera(offers.clone(), vec![]));
            V4l2Source::with_driver(
                driver,
                &config(w, h, rate, format),
                Arc::new(ManualClock::new()),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        let e = open(FormatChoice::Only(FourCc::new(*b"GREY")), 640, 480, 30.0);
        assert_eq!(
            e,
            "camera /dev/video7 (Fake Camera) offers YUYV 640x480 (30 fps); MJPG 1280x720 (60 fps); asked for GREY"
        );
        let e = open(FormatChoice::Auto, 640, 480, 60.0);
        assert!(
            e.starts_with(
                "camera /dev/video7 (Fake Camera): the camera cannot deliver 640x480 at 60 fps"
            ) && e.contains("it offers YUYV 640x480 (30 fps); MJPG 1280x720 (60 fps)"),
            "{e}"
        );
        // A metadata node.
        let mut spec = FakeSpec::camera(offers.clone(), vec![]);
        spec.capability.caps = sys::V4L2_CAP_META_CAPTURE | sys::V4L2_CAP_STREAMING;
        let (driver, _camera) = FakeDriver::new(spec);
        let e = V4l2Source::with_driver(
            driver,
            &config(640, 480, 30.0, FormatChoice::Auto),
            Arc::new(ManualClock::new()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/dev/video7")
                && e.contains("not a video capture node")
                && e.contains("metadata capture, streaming"),
            "{e}"
        );
    }

    #[test]
    fn config_parses_checks_ranges_and_round_trips() {
        let c: V4l2Config = toml::from_str(
            "device = \"/dev/video2\"\nwidth = 1280\nheight = 720\nfps = 60\nformat = \"mjpg\"\nbuffers = 3\n",
        )
        .unwrap();
        assert_eq!(c.format, FormatChoice::Only(FourCc::new(*b"MJPG")));
        assert_eq!(
            (c.width, c.height, c.fps, c.buffers, c.timeout_ms),
            (1280, 720, 60.0, 3, 2000)
        );
        let again: V4l2Config = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        assert_eq!(V4l2Config::default().format, FormatChoice::Auto);
        let e = toml::from_str::<V4l2Config>("format = \"H264\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`H264` is not a pixel format reflex converts") && e.contains("YUYV"),
            "{e}"
        );
        assert!(toml::from_str::<V4l2Config>("fsp = 3").is_err());
        for (bad, key) in [
            (
                V4l2Config {
                    buffers: 1,
                    ..V4l2Config::default()
                },
                "buffers",
            ),
            (
                V4l2Config {
                    fps: 0.0,
                    ..V4l2Config::default()
                },
                "fps",
            ),
            (
                V4l2Config {
                    width: 0,
                    ..V4l2Config::default()
                },
                "width",
            ),
            (
                V4l2Config {
                    timeout_ms: 0,
                    ..V4l2Config::default()
                },
                "timeout_ms",
            ),
            (
                V4l2Config {
                    device: String::new(),
                    ..V4l2Config::default()
                },
                "device",
            ),
        ] {
            assert!(bad.validate().unwrap_err().starts_with(key), "{key}");
        }
    }

    #[test]
    fn rig_config_errors_name_the_key_and_line() {
        use crate::config::Config;
        let c = Config::parse(
            "[source]\nkind = \"v4l2\"\n[source.v4l2]\ndevice = \"/dev/video2\"\nformat = \"GREY\"\n",
            "rig.toml",
        )
        .unwrap();
        assert_eq!(c.source.v4l2.device, "/dev/video2");
        assert_eq!(
            c.source.v4l2.format,
            FormatChoice::Only(FourCc::new(*b"GREY"))
        );
        let e = Config::parse("[source.v4l2]\nbuffers = 1\n", "rig.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "rig.toml: source.v4l2.buffers must be between 2 and 32, got 1"
        );
        let e = Config::parse(
            "[source.v4l2]\nwidth = 640\nformat = \"H264\"\n",
            "rig.toml",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(
            e.to_string().contains("`H264` is not a pixel format"),
            "{e}"
        );
        let e = Config::parse("[source.v4l2]\ntimeout = 5\n", "rig.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().contains("timeout"), "{e}");
    }

    #[test]
    fn enumeration_asks_stepwise_formats_at_the_requested_and_largest_size() {
        let spec = FakeSpec::camera(
            vec![FormatOffer {
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
                        max: fps(1),
                        step: Fraction {
                            num: 1,
                            den: 100_000,
                        },
                    },
                )],
            }],
            vec![],
        );
        let (mut driver, _camera) = FakeDriver::new(spec);
        let offers = enumerate_offers(&mut driver, Some((1000, 800))).unwrap();
        let sizes: Vec<(u32, u32)> = offers[0].intervals.iter().map(|i| (i.0, i.1)).collect();
        assert_eq!(sizes, [(1000, 800), (2048, 1536)]);
        // The largest size had no intervals to enumerate: any rate, the driver's answer decides.
        assert!(matches!(
            offers[0].intervals[1].2,
            FrameIntervals::Stepwise { min, .. } if min == Fraction { num: 1, den: 1000 }
        ));
    }

    #[test]
    fn camera_lines_describe_each_node_from_the_sysfs_listing() {
        let tmp = tempfile::tempdir().unwrap();
        v4l2::tests::fake_sysfs(
            &tmp.path().join("class/video4linux"),
            &[
                ("video0", "HD Webcam", "0"),
                ("video1", "HD Webcam", "1"),
                ("video4", "Locked Cam", "0"),
            ],
        );
        let nodes = v4l2::list_nodes(tmp.path(), std::path::Path::new("/dev")).unwrap();
        let webcam = vec![
            offer(b"YUYV", &[(640, 480), (1280, 720)], &[30, 15]),
            FormatOffer {
                fourcc: FourCc::new(*b"H264"),
                sizes: FrameSizes::Discrete(vec![(1920, 1080)]),
                intervals: vec![(1920, 1080, FrameIntervals::Discrete(vec![fps(30)]))],
            },
        ];
        let lines = camera_lines(&nodes, |node| {
            let (mut driver, _camera) = match node.path.to_str().unwrap() {
                "/dev/video0" => FakeDriver::new(FakeSpec::camera(webcam.clone(), vec![])),
                "/dev/video1" => {
                    let mut s = FakeSpec::camera(vec![], vec![]);
                    s.capability.caps = sys::V4L2_CAP_META_CAPTURE | sys::V4L2_CAP_STREAMING;
                    FakeDriver::new(s)
                }
                _ => return Err(DriverError::errno("open", libc::EACCES)),
            };
            probe(&mut driver)
        });
        assert_eq!(
            lines,
            [
                "/dev/video0  Fake Camera  (uvcvideo, usb-fake-1)  --source v4l:/dev/video0",
                "    YUYV 640x480 (30, 15 fps), 1280x720 (30, 15 fps)",
                "    H264 1920x1080 (30 fps) (reflex does not convert it)",
                "/dev/video1  HD Webcam: not a video capture node (metadata capture, streaming)",
                "/dev/video4  Locked Cam: open failed: EACCES (Permission denied (os error 13)); no permission: add yourself to the `video` group (then log in again)",
            ]
        );
        assert_eq!(
            camera_lines(&[], |_| unreachable!()),
            ["no V4L2 cameras found (no /sys/class/video4linux/video* nodes)"]
        );
    }

    #[test]
    fn opening_a_missing_node_names_it() {
        let e = V4l2Source::open(
            &V4l2Config {
                device: "/dev/video99".into(),
                ..V4l2Config::default()
            },
            Arc::new(ManualClock::new()),
        )
        .unwrap_err();
        assert!(matches!(e, CameraError::Open(_)));
        let e = e.to_string();
        assert!(
            e.contains("/dev/video99") && e.contains("ENOENT") && e.contains("reflex devices"),
            "{e}"
        );
    }
}
