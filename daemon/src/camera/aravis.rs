//! GenICam cameras (GigE Vision, USB3 Vision) through Aravis, as a [`FrameSource`].
//!
//! Aravis 0.8 is loaded at run time (`camera/aravis_sys.rs`): building reflex needs nothing, and
//! `--source aravis:NAME` on a machine without it fails with the package to install.
//!
//! - **Open** (`AravisSource::open`, everything allocated here): the camera by Aravis's device id (or serial,
//!   user id, MAC or IP address; the first camera found when the name is empty), then the pixel format, the
//!   region of interest, the frame rate or a hardware trigger, exposure and gain, each read back; a pool of
//!   `buffers` frame buffers is queued on the camera's stream. Acquisition starts with the first frame asked.
//! - **Per frame** (no allocation): pop a filled buffer, waiting up to `timeout_ms`; **the latest frame wins**:
//!   older filled buffers still queued go back to the camera and count as skipped; the image is converted
//!   into the loop's preallocated [`Frame`] (Mono8 → gray, Bayer → RGB by [`convert::bayer_to_rgb`], RGB8 and
//!   BGR8 → RGB) and the buffer goes back to the stream. A buffer Aravis marks incomplete (missing packets,
//!   timeout) is a lost frame, seen as a gap in [`Frame::id`]; [`MAX_CONSECUTIVE_FAILURES`] in a row, or no
//!   frame for `timeout_ms`, is a [`CameraError::Stream`] naming the camera.
//! - **Time**: see [`CameraClock`]. Aravis stamps each frame twice: the camera's own timestamp (GigE Vision
//!   cameras commonly latch it at the start of exposure) and the host's arrival time of its first packet,
//!   taken with `g_get_real_time()`, the wall clock — converted here onto `CLOCK_MONOTONIC` with
//!   [`clock::realtime_minus_monotonic_ns`] read next to it. A frame cannot have started its exposure later
//!   than its arrival less the exposure time; the camera's clock is mapped onto the host's by the least
//!   offset between the two, so `t_exposure_ns` has the camera's own frame-to-frame precision and is late by
//!   a constant: the fastest frame's readout and first-packet flight, which the host cannot see (exact
//!   sync would latch the camera's clock over GVCP; not done).
//!
//! `Drop` stops acquisition and releases the stream (with its buffers) and the camera.

use serde::{Deserialize, Serialize};

use super::aravis_sys::{self, BUFFER_STATUS_SUCCESS, Buffer, Camera, Stream};
use super::convert::{self, BayerPattern, Plane};
use super::{CameraError, Frame, FrameSource, PixelFormat, SourceInfo};
use crate::clock::{self, SharedClock};

pub use super::aravis_sys::DeviceEntry;

/// Incomplete buffers in a row that end the stream: the link is broken, not having a bad moment.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 8;

/// Settings of a GenICam camera (`[source.aravis]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AravisConfig {
    /// Aravis's device id as `reflex devices` lists it (or serial number, user id, MAC or IP address);
    /// empty: the first camera found.
    pub camera: String,
    /// Region of interest width (px); 0 keeps the camera's.
    pub width: u32,
    /// Region of interest height (px); 0 keeps the camera's.
    pub height: u32,
    /// Region of interest left edge (px).
    pub offset_x: u32,
    /// Region of interest top edge (px).
    pub offset_y: u32,
    /// Frame rate (frames/s) when free-running; absent: the camera's. With a trigger, the trigger's rate
    /// (only sizes the session's buffers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Exposure time (µs); absent: the camera's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposure_us: Option<f64>,
    /// Gain (dB, the GenICam `Gain` feature; a camera with only a raw gain takes it in its own unit);
    /// absent: the camera's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gain_db: Option<f64>,
    /// GenICam pixel format: Mono8 (gray frames), RGB8, BGR8, BayerRG8, BayerGR8, BayerGB8, BayerBG8 (RGB
    /// frames).
    pub pixel_format: String,
    /// Hardware trigger source line (`Line1`, …); empty: free-running.
    pub trigger: String,
    /// The trigger's edge or level (`RisingEdge`, `FallingEdge`, …).
    pub trigger_activation: String,
    /// Frame buffers queued on the stream (2–64).
    pub buffers: u32,
    /// Longest wait for a frame (ms) before the stream counts as broken; with a trigger, above the longest
    /// pause between triggers.
    pub timeout_ms: u64,
}

impl Default for AravisConfig {
    fn default() -> Self {
        Self {
            camera: String::new(),
            width: 0,
            height: 0,
            offset_x: 0,
            offset_y: 0,
            fps: None,
            exposure_us: None,
            gain_db: None,
            pixel_format: "Mono8".into(),
            trigger: String::new(),
            trigger_activation: "RisingEdge".into(),
            buffers: 4,
            timeout_ms: 2000,
        }
    }
}

impl AravisConfig {
    /// Checks the values that need no camera; errors name the key.
    pub fn validate(&self) -> Result<(), CameraError> {
        let bad = |key: &str, what: String| {
            Err(CameraError::Config(format!(
                "[source.aravis] {key}: {what}"
            )))
        };
        if !(2..=64).contains(&self.buffers) {
            return bad("buffers", format!("{} is not in 2…64", self.buffers));
        }
        if self.timeout_ms == 0 {
            return bad("timeout_ms", "must be at least 1".into());
        }
        if let Some(fps) = self.fps
            && !(fps.is_finite() && fps > 0.0)
        {
            return bad("fps", format!("{fps} is not a frame rate (> 0)"));
        }
        if let Some(us) = self.exposure_us
            && !(us.is_finite() && us > 0.0)
        {
            return bad(
                "exposure_us",
                format!("{us} is not an exposure time (> 0 µs)"),
            );
        }
        if let Some(db) = self.gain_db
            && !(db.is_finite() && db >= 0.0)
        {
            return bad("gain_db", format!("{db}: must be ≥ 0"));
        }
        if Format::by_name(&self.pixel_format).is_none() {
            return bad(
                "pixel_format",
                format!(
                    "`{}` is not one reflex takes ({})",
                    self.pixel_format,
                    Format::names()
                ),
            );
        }
        Ok(())
    }
}

/// A camera pixel format reflex converts, with its PFNC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Format {
    name: &'static str,
    pfnc: u32,
    kind: FormatKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormatKind {
    Mono8,
    Rgb8,
    Bgr8,
    Bayer(BayerPattern),
}

const FORMATS: [Format; 7] = [
    Format {
        name: "Mono8",
        pfnc: 0x0108_0001,
        kind: FormatKind::Mono8,
    },
    Format {
        name: "RGB8",
        pfnc: 0x0218_0014,
        kind: FormatKind::Rgb8,
    },
    Format {
        name: "BGR8",
        pfnc: 0x0218_0015,
        kind: FormatKind::Bgr8,
    },
    Format {
        name: "BayerRG8",
        pfnc: 0x0108_0009,
        kind: FormatKind::Bayer(BayerPattern::Rggb),
    },
    Format {
        name: "BayerGR8",
        pfnc: 0x0108_0008,
        kind: FormatKind::Bayer(BayerPattern::Grbg),
    },
    Format {
        name: "BayerGB8",
        pfnc: 0x0108_000a,
        kind: FormatKind::Bayer(BayerPattern::Gbrg),
    },
    Format {
        name: "BayerBG8",
        pfnc: 0x0108_000b,
        kind: FormatKind::Bayer(BayerPattern::Bggr),
    },
];

impl Format {
    /// By GenICam name; `RGB8Packed` and `BGR8Packed` are GigE Vision 1.x's names of RGB8 and BGR8.
    fn by_name(name: &str) -> Option<Self> {
        let name = match name {
            "RGB8Packed" => "RGB8",
            "BGR8Packed" => "BGR8",
            n => n,
        };
        FORMATS.iter().copied().find(|f| f.name == name)
    }

    fn names() -> String {
        FORMATS.map(|f| f.name).join(", ")
    }

    fn output(self) -> PixelFormat {
        match self.kind {
            FormatKind::Mono8 => PixelFormat::Gray8,
            _ => PixelFormat::Rgb8,
        }
    }

    fn bytes_per_pixel(self) -> usize {
        match self.kind {
            FormatKind::Rgb8 | FormatKind::Bgr8 => 3,
            FormatKind::Mono8 | FormatKind::Bayer(_) => 1,
        }
    }
}

/// Whether libaravis can be loaded; the error says which package to install.
pub fn available() -> Result<(), CameraError> {
    aravis_sys::load().map_err(CameraError::Open)
}

/// The GenICam cameras Aravis finds now (GigE Vision discovery waits about a second for answers).
pub fn list_devices() -> Result<Vec<DeviceEntry>, CameraError> {
    aravis_sys::devices().map_err(CameraError::Open)
}

/// `reflex devices`: one line per GenICam camera (its `--source aravis:ID`, vendor, model, serial, address),
/// or one line saying none was found or why none can be listed (libaravis not installed).
pub fn print_devices() {
    match list_devices() {
        Err(e) => println!("GenICam cameras: not listed: {e}"),
        Ok(list) if list.is_empty() => println!("no GenICam cameras found (aravis)"),
        Ok(list) => {
            for d in list {
                println!(
                    "aravis:{}  {} {}  serial {}  {} ({})",
                    d.id, d.vendor, d.model, d.serial, d.address, d.protocol
                );
            }
        }
    }
}

/// Where the last frame's time went (ns), for `benches/capture.rs` and tests; read after `next_frame`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AravisTiming {
    /// Waiting for a filled buffer (the camera's frame period, when the loop keeps up).
    pub wait_ns: u64,
    /// The hand-off: from the buffer popped to the frame ready for inference (newer buffers looked for, the
    /// image converted into the frame, the buffer queued back).
    pub handoff_ns: u64,
    /// The frame's own timestamp from the camera (camera ns), before mapping onto the host clock.
    pub camera_timestamp_ns: u64,
}

/// Counts since open, for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AravisStats {
    /// Frames handed to the loop.
    pub delivered: u64,
    /// Complete frames passed over because a newer one was already there (latest wins).
    pub skipped: u64,
    /// Buffers Aravis marked incomplete (missing packets, timeouts): lost frames.
    pub incomplete: u64,
    /// Steps of the camera clock against the host's (history dropped, mapping restarted).
    pub clock_steps: u64,
    /// Camera clock rate against the host's (ppm, +: the camera runs fast); 0 until measured.
    pub drift_ppm: f64,
    /// Frames Aravis received while no empty buffer was queued (lost: more `buffers` would have kept them).
    pub underruns: u64,
}

/// A GenICam camera through Aravis. See the module documentation.
pub struct AravisSource {
    info: SourceInfo,
    clock: SharedClock,
    /// Declared before `camera`: the stream (with the buffers it holds) is released first.
    stream: Stream,
    camera: Camera,
    id: String,
    format: Format,
    timeout_us: u64,
    exposure_ns: u64,
    started: bool,
    camera_clock: CameraClock,
    frame_ids: FrameIds,
    consecutive_failures: u32,
    stats: AravisStats,
    timing: AravisTiming,
}

impl std::fmt::Debug for AravisSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AravisSource")
            .field("info", &self.info)
            .field("id", &self.id)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl AravisSource {
    /// Opens and sets up the camera of `config`; frames are stamped on `clock` (the host's monotonic clock:
    /// camera times are mapped onto `CLOCK_MONOTONIC`). Errors name the camera and the setting.
    pub fn open(config: &AravisConfig, clock: SharedClock) -> Result<Self, CameraError> {
        config.validate()?;
        aravis_sys::load().map_err(CameraError::Open)?;
        // The name the camera goes by in messages and the session: as the config gives it, or for "the first
        // camera" the id discovery lists it under (Aravis opens the first listed one too).
        let id = if config.camera.is_empty() {
            let devices = aravis_sys::devices().map_err(CameraError::Open)?;
            let first = devices.into_iter().next().ok_or_else(|| {
                CameraError::Open(
                    "aravis: no GenICam camera found (a GigE Vision camera must be on this host's subnet; \
                     `arv-tool-0.8` from aravis-tools lists what Aravis sees)"
                        .into(),
                )
            })?;
            first.id
        } else {
            config.camera.clone()
        };
        let camera = Camera::open(&id).map_err(|e| {
            CameraError::Open(format!(
                "aravis: cannot open camera `{id}`: {e} (`reflex devices` lists the cameras found)"
            ))
        })?;
        let fail = |key: &str, e: String| {
            CameraError::Open(format!("aravis camera `{id}`: [source.aravis] {key}: {e}"))
        };

        // Pixel format: one reflex converts and the camera offers.
        let offered = camera
            .pixel_formats()
            .map_err(|e| fail("pixel_format", e))?;
        let format = Format::by_name(&config.pixel_format).expect("validated");
        let offers = |name: &str| {
            offered
                .iter()
                .any(|o| Format::by_name(o).is_some_and(|f| f.name == name))
        };
        if !offers(format.name) {
            let usable: Vec<&str> = offered
                .iter()
                .map(String::as_str)
                .filter(|o| Format::by_name(o).is_some())
                .collect();
            return Err(fail(
                "pixel_format",
                format!(
                    "`{}` is not offered; the camera offers {} (reflex takes {})",
                    config.pixel_format,
                    offered.join(", "),
                    if usable.is_empty() {
                        "none of them".to_string()
                    } else {
                        usable.join(", ")
                    }
                ),
            ));
        }
        let set_name = offered
            .iter()
            .find(|o| Format::by_name(o).is_some_and(|f| f.name == format.name))
            .map_or(format.name, String::as_str);
        camera
            .set_pixel_format(set_name)
            .map_err(|e| fail("pixel_format", e))?;
        let got = camera.pixel_format().map_err(|e| fail("pixel_format", e))?;
        if got != format.pfnc {
            return Err(fail(
                "pixel_format",
                format!("set to {set_name}, the camera reads back {got:#010x}"),
            ));
        }

        // Region of interest (Aravis writes the offsets first at 0, so a smaller region always fits).
        let size = |v: u32| if v == 0 { -1 } else { v as i32 };
        camera
            .set_region(
                config.offset_x as i32,
                config.offset_y as i32,
                size(config.width),
                size(config.height),
            )
            .map_err(|e| {
                fail(
                    "width/height/offset_x/offset_y",
                    format!(
                        "{}x{} at ({}, {}): {e}",
                        config.width, config.height, config.offset_x, config.offset_y
                    ),
                )
            })?;
        let (_, _, width, height) = camera.region().map_err(|e| fail("width/height", e))?;
        if width <= 0 || height <= 0 {
            return Err(fail(
                "width/height",
                format!("the camera reads back {width}x{height}"),
            ));
        }
        let (width, height) = (width as u32, height as u32);
        for (key, want, got) in [
            ("width", config.width, width),
            ("height", config.height, height),
        ] {
            if want != 0 && want != got {
                return Err(fail(
                    key,
                    format!("{want} px asked, the camera set {got} (a multiple of its increment?)"),
                ));
            }
        }

        // Frame rate, then the trigger (Aravis's frame-rate setter turns triggers off).
        if let Some(fps) = config.fps
            && config.trigger.is_empty()
        {
            if !camera.has_frame_rate() {
                return Err(fail("fps", "the camera has no frame-rate control".into()));
            }
            camera.set_frame_rate(fps).map_err(|e| fail("fps", e))?;
        }
        if config.trigger.is_empty() {
            if camera.has_feature("TriggerMode") {
                camera.clear_triggers().map_err(|e| fail("trigger", e))?;
            }
        } else {
            let sources = camera.enumeration("TriggerSource").unwrap_or_default();
            if !sources.contains(&config.trigger) {
                return Err(fail(
                    "trigger",
                    format!(
                        "`{}` is not a trigger source of this camera (it has: {})",
                        config.trigger,
                        if sources.is_empty() {
                            "none".to_string()
                        } else {
                            sources.join(", ")
                        }
                    ),
                ));
            }
            camera
                .set_trigger(&config.trigger)
                .map_err(|e| fail("trigger", e))?;
            if !config.trigger_activation.is_empty() {
                let edges = camera.enumeration("TriggerActivation").unwrap_or_default();
                if !edges.contains(&config.trigger_activation) {
                    return Err(fail(
                        "trigger_activation",
                        format!(
                            "`{}` is not offered (the camera has: {})",
                            config.trigger_activation,
                            if edges.is_empty() {
                                "none".to_string()
                            } else {
                                edges.join(", ")
                            }
                        ),
                    ));
                }
                camera
                    .set_string("TriggerActivation", &config.trigger_activation)
                    .map_err(|e| fail("trigger_activation", e))?;
            }
        }

        if let Some(us) = config.exposure_us {
            if !camera.has_exposure_time() {
                return Err(fail(
                    "exposure_us",
                    "the camera has no exposure-time control".into(),
                ));
            }
            camera
                .set_exposure_time_us(us)
                .map_err(|e| fail("exposure_us", e))?;
        }
        let exposure_us = if camera.has_exposure_time() {
            camera
                .exposure_time_us()
                .map_err(|e| fail("exposure_us", e))?
        } else {
            0.0
        };
        if let Some(db) = config.gain_db {
            if !camera.has_gain() {
                return Err(fail("gain_db", "the camera has no gain control".into()));
            }
            camera.set_gain(db).map_err(|e| fail("gain_db", e))?;
        }

        let fps = match config.fps {
            Some(fps) if !config.trigger.is_empty() => fps,
            _ if camera.has_frame_rate() => camera.frame_rate().map_err(|e| fail("fps", e))?,
            Some(fps) => fps,
            None => {
                return Err(fail(
                    "fps",
                    "the camera does not say its frame rate: set it".into(),
                ));
            }
        };

        let payload = camera
            .payload_bytes()
            .map_err(|e| fail("buffers", format!("payload size: {e}")))?;
        let stream = camera
            .create_stream()
            .map_err(|e| fail("buffers", format!("cannot create the stream: {e}")))?;
        for _ in 0..config.buffers {
            let buffer = Buffer::new(payload).map_err(|e| fail("buffers", e))?;
            stream.push(buffer);
        }

        let info = SourceInfo {
            name: format!("aravis({id})"),
            width,
            height,
            format: format.output(),
            fps,
        };
        Ok(Self {
            info,
            clock,
            stream,
            camera,
            id,
            format,
            timeout_us: config.timeout_ms.saturating_mul(1000),
            exposure_ns: (exposure_us * 1000.0).round() as u64,
            started: false,
            camera_clock: CameraClock::default(),
            frame_ids: FrameIds::default(),
            consecutive_failures: 0,
            stats: AravisStats::default(),
            timing: AravisTiming::default(),
        })
    }

    /// Aravis's id of the camera.
    pub fn device_id(&self) -> &str {
        &self.id
    }

    /// Sets the exposure time (µs), also while streaming, and returns what the camera reads back (µs).
    pub fn set_exposure_us(&mut self, us: f64) -> Result<f64, CameraError> {
        let err =
            |e: String| CameraError::Config(format!("aravis camera `{}`: exposure: {e}", self.id));
        self.camera.set_exposure_time_us(us).map_err(err)?;
        let got = self.camera.exposure_time_us().map_err(err)?;
        self.exposure_ns = (got * 1000.0).round() as u64;
        Ok(got)
    }

    /// The exposure time the camera is set to (µs).
    pub fn exposure_us(&self) -> f64 {
        self.exposure_ns as f64 / 1000.0
    }

    /// The gain the camera reads back (dB, or its raw unit: see [`AravisConfig::gain_db`]).
    pub fn gain(&self) -> Result<f64, CameraError> {
        self.camera
            .gain()
            .map_err(|e| CameraError::Config(format!("aravis camera `{}`: gain: {e}", self.id)))
    }

    /// Counts since open (asks Aravis for its underruns: not for the loop thread).
    pub fn stats(&self) -> AravisStats {
        let clock = self.camera_clock.stats();
        let (_, _, underruns) = self.stream.statistics();
        AravisStats {
            clock_steps: clock.steps,
            drift_ppm: clock.drift_ppm,
            underruns,
            ..self.stats
        }
    }

    /// Where the last delivered frame's time went.
    pub fn timing(&self) -> AravisTiming {
        self.timing
    }

    fn stream_error(&self, what: impl std::fmt::Display) -> CameraError {
        CameraError::Stream(format!("aravis camera `{}`: {what}", self.id))
    }

    /// Converts the image of `buffer` into `frame` and stamps it; `t_popped` is when it was popped.
    fn deliver(
        &mut self,
        buffer: &Buffer,
        frame: &mut Frame,
        t_popped: u64,
    ) -> Result<(), CameraError> {
        let (w, h) = buffer.size();
        let pfnc = buffer.pixel_format();
        if (w, h, pfnc) != (self.info.width, self.info.height, self.format.pfnc) {
            return Err(self.stream_error(format_args!(
                "a frame came {w}x{h} in format {pfnc:#010x}, the camera was set to {}x{} {} (changed by another program?)",
                self.info.width, self.info.height, self.format.name
            )));
        }
        let (w, h) = (w as usize, h as usize);
        let row = w * self.format.bytes_per_pixel();
        let stride = row + buffer.row_padding();
        let data = buffer.image();
        if data.len() < (h - 1) * stride + row {
            return Err(self.stream_error(format_args!(
                "a {w}x{h} {} frame holds {} bytes, short of {}",
                self.format.name,
                data.len(),
                (h - 1) * stride + row
            )));
        }
        let plane = Plane::new(data, stride);
        let converted = match self.format.kind {
            FormatKind::Mono8 | FormatKind::Rgb8 => {
                for (y, out) in frame.data.chunks_exact_mut(row).enumerate() {
                    out.copy_from_slice(&data[y * stride..][..row]);
                }
                Ok(())
            }
            FormatKind::Bgr8 => convert::swap_rb(plane, w, h, &mut frame.data),
            FormatKind::Bayer(pattern) => {
                convert::bayer_to_rgb(plane, w, h, pattern, &mut frame.data)
            }
        };
        converted.map_err(|e| self.stream_error(e))?;

        // Arrival on the host clock: Aravis's wall-clock stamp, less wall − monotonic read now.
        let arrival_realtime = buffer.system_timestamp_realtime_ns();
        let arrival_ns = if arrival_realtime == 0 {
            t_popped
        } else {
            let offset = clock::realtime_minus_monotonic_ns();
            (arrival_realtime as i64 - offset).clamp(0, t_popped as i64) as u64
        };
        let exposure_start_ns = arrival_ns.saturating_sub(self.exposure_ns);
        let camera_ns = buffer.timestamp_ns();
        self.timing.camera_timestamp_ns = camera_ns;
        frame.t_exposure_ns = self
            .camera_clock
            .add(camera_ns, exposure_start_ns)
            .min(t_popped);
        frame.id = self.frame_ids.next(buffer.frame_id());
        frame.camera = 0;
        Ok(())
    }
}

impl FrameSource for AravisSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, CameraError> {
        self.info.check_frame(frame)?;
        if !self.started {
            self.camera
                .start_acquisition()
                .map_err(|e| self.stream_error(format_args!("cannot start acquisition: {e}")))?;
            self.started = true;
        }
        loop {
            let t_wait = self.clock.now_ns();
            let Some(mut buffer) = self.stream.timeout_pop(self.timeout_us) else {
                return Err(self.stream_error(format_args!(
                    "no frame for {} ms (camera unplugged or powered off, or a trigger that stopped: \
                     raise [source.aravis] timeout_ms above the longest pause between triggers)",
                    self.timeout_us / 1000
                )));
            };
            let t_popped = self.clock.now_ns();
            // Latest wins: a newer filled buffer replaces this one, which goes back to the camera.
            while let Some(newer) = self.stream.try_pop() {
                if buffer.status() == BUFFER_STATUS_SUCCESS {
                    self.stats.skipped += 1;
                } else {
                    self.stats.incomplete += 1;
                }
                self.stream.push(std::mem::replace(&mut buffer, newer));
            }
            let status = buffer.status();
            if status != BUFFER_STATUS_SUCCESS {
                self.stats.incomplete += 1;
                self.consecutive_failures += 1;
                self.stream.push(buffer);
                if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
                    return Err(self.stream_error(format_args!(
                        "{} frames in a row arrived incomplete (last: {}); check the cable, the link \
                         speed and the packet size",
                        self.consecutive_failures,
                        status_name(status)
                    )));
                }
                continue;
            }
            self.consecutive_failures = 0;
            let delivered = self.deliver(&buffer, frame, t_popped);
            self.stream.push(buffer);
            delivered?;
            let t_capture = self.clock.now_ns();
            frame.t_capture_ns = t_capture;
            self.stats.delivered += 1;
            self.timing.wait_ns = t_popped.saturating_sub(t_wait);
            self.timing.handoff_ns = t_capture.saturating_sub(t_popped);
            return Ok(true);
        }
    }

    fn skipped(&self) -> u64 {
        self.stats.skipped
    }
}

impl Drop for AravisSource {
    fn drop(&mut self) {
        if self.started {
            // A camera that is gone cannot be stopped; there is nothing more to do about it here.
            let _ = self.camera.stop_acquisition();
        }
    }
}

/// `ARV_BUFFER_STATUS_*` by name.
fn status_name(status: i32) -> &'static str {
    match status {
        0 => "success",
        1 => "cleared",
        2 => "timeout before all packets came",
        3 => "missing packets",
        4 => "wrong packet id",
        5 => "image larger than the buffer",
        6 => "still filling",
        7 => "aborted",
        _ => "unknown status",
    }
}

/// The camera's frame ids as a count from 0: GigE Vision 1.x ids are 16 bits (1…65535, 0 skipped) and wrap.
#[derive(Debug, Clone, Copy, Default)]
struct FrameIds {
    last_raw: Option<u64>,
    id: u64,
}

impl FrameIds {
    fn next(&mut self, raw: u64) -> u64 {
        if let Some(last) = self.last_raw {
            self.id += if raw > last {
                raw - last
            } else if last <= 0xFFFF && last - raw > 0x8000 {
                // Wrapped past 65535 to 1.
                raw + 0xFFFF - last
            } else {
                // Backwards: the camera restarted its count.
                1
            };
        }
        self.last_raw = Some(raw);
        self.id
    }
}

/// Frames per least-offset window: the window's lowest point becomes an anchor.
const WINDOW: usize = 16;
/// Anchors kept for the drift fit (× [`WINDOW`] frames: ~5 s at 100 frames/s).
const ANCHORS: usize = 32;
/// The drift is fitted over anchors at least this far apart (camera ns); below, the rates are taken equal.
const MIN_RATE_SPAN_NS: f64 = 2e9;
/// A fitted drift beyond this (ppm) is not a crystal's: the rates are taken equal.
const MAX_DRIFT_PPM: f64 = 1000.0;
/// A frame below the settled line, or a whole window's lowest frame above it, by more than this (ns) means
/// a clock stepped. Well above what a busy host adds to the first frames; smaller steps heal by themselves
/// (a lower point lowers the line at once; a higher level lifts it once the old anchors have left).
pub const STEP_NS: i64 = 10_000_000;
/// A frame off the line by more than this (ns) either way means the camera's clock jumped.
pub const MAX_DELAY_NS: i64 = 1_000_000_000;

/// What the camera-clock mapping knows now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CameraClockStats {
    /// Frames fed.
    pub frames: u64,
    /// Clock steps detected (history dropped).
    pub steps: u64,
    /// Camera clock rate against the host's (ppm, +: the camera runs fast).
    pub drift_ppm: f64,
}

/// Maps a camera's timestamps onto the host clock from the frames themselves, one way: each frame gives its
/// camera timestamp `c` and a host time `h` that cannot be earlier than the same moment (its arrival, less the
/// exposure time when `c` is the start of exposure). So `h = offset + c × rate + delay`, with `delay ≥ 0`
/// (readout, transmission, the host's scheduling) and a long tail (packet resends, a busy host).
///
/// **Least offset**, not least squares: a least-squares line through the `(c, h)` points would sit at the
/// *mean* delay and be pulled by the tail; the lowest points are the frames that came fastest, whose delay is
/// the constant part, so the line is put under all points, touching the lowest. Per window of 16 frames
/// the lowest point becomes an anchor; the **drift** (a camera crystal is off by tens of ppm) is the
/// least-squares slope through the anchors once they span 2 s, all of them lying at the minimum delay, so
/// the tail does not bias it; the line is then lowered under every anchor and the current window.
///
/// **Steps**: a frame [`MAX_DELAY_NS`] off the line either way (the camera restarted or reset its clock), a
/// frame more than [`STEP_NS`] below the line once a window has settled it, or a whole window's fastest frame
/// more than [`STEP_NS`] above it (the lowest delay cannot rise otherwise; one slow frame is just the tail)
/// mean a clock stepped: history is dropped and the mapping restarts at that frame. The first window may
/// still move down freely: the first frames after the start are often slow.
///
/// What remains unknown is the delay of the fastest frame (for GigE Vision: readout and the first packet's
/// flight, when the camera stamps the start of exposure); mapped times are late by it, a constant, and
/// exact to the camera's own clock from frame to frame. Fixed-size state, no allocation.
#[derive(Debug, Clone, Copy)]
pub struct CameraClock {
    /// First sample since the last reset: `(camera ns, host ns)`, the origin of `x` and `y` below.
    origin: Option<(u64, u64)>,
    /// The current window's lowest point `(x, y)` under the current rate, and frames in it.
    window_low: Option<(f64, f64)>,
    window_len: usize,
    anchors: [(f64, f64); ANCHORS],
    anchors_len: usize,
    anchors_next: usize,
    /// Host ns per camera ns.
    rate: f64,
    /// `y − rate·x` of the line under every point.
    intercept: f64,
    stats: CameraClockStats,
}

impl Default for CameraClock {
    fn default() -> Self {
        Self {
            origin: None,
            window_low: None,
            window_len: 0,
            anchors: [(0.0, 0.0); ANCHORS],
            anchors_len: 0,
            anchors_next: 0,
            rate: 1.0,
            intercept: 0.0,
            stats: CameraClockStats::default(),
        }
    }
}

impl CameraClock {
    /// Adds a frame: its camera timestamp and the earliest host time it can have (ns); returns the camera
    /// timestamp on the host clock (never later than `host_ns`).
    pub fn add(&mut self, camera_ns: u64, host_ns: u64) -> u64 {
        self.stats.frames += 1;
        let Some((c0, h0)) = self.origin else {
            self.restart(camera_ns, host_ns);
            return host_ns;
        };
        let x = (i128::from(camera_ns) - i128::from(c0)) as f64;
        let y = (i128::from(host_ns) - i128::from(h0)) as f64;
        let residual = y - (self.intercept + self.rate * x);
        // Far off either way: the camera's clock jumped (restarted, reset). Below the line by more than a step
        // once a window has settled it: the host's side stepped (the first window's points may still be slow).
        let jumped = residual.abs() > MAX_DELAY_NS as f64;
        let stepped_down = residual < -(STEP_NS as f64) && self.anchors_len > 0;
        if jumped || stepped_down {
            return self.step(camera_ns, host_ns);
        }
        let low = |p: (f64, f64), rate: f64| p.1 - rate * p.0;
        if self
            .window_low
            .is_none_or(|w| low((x, y), self.rate) < low(w, self.rate))
        {
            self.window_low = Some((x, y));
        }
        self.window_len += 1;
        if self.window_len == WINDOW {
            let anchor = self.window_low.take().expect("set above");
            // A whole window above the settled line by more than a step: the lowest delay went up, which no
            // frame can show by itself; the clocks stepped.
            let settled = self.anchors[..self.anchors_len]
                .iter()
                .map(|&p| low(p, self.rate))
                .fold(f64::INFINITY, f64::min);
            if self.anchors_len > 0 && low(anchor, self.rate) - settled > STEP_NS as f64 {
                return self.step(camera_ns, host_ns);
            }
            self.anchors[self.anchors_next] = anchor;
            self.anchors_next = (self.anchors_next + 1) % ANCHORS;
            self.anchors_len = (self.anchors_len + 1).min(ANCHORS);
            self.window_len = 0;
            self.rate = self.fit_rate();
            self.stats.drift_ppm = (self.rate - 1.0) * -1e6 / self.rate;
        }
        let rate = self.rate;
        self.intercept = self.anchors[..self.anchors_len]
            .iter()
            .chain(self.window_low.iter())
            .map(|&p| low(p, rate))
            .fold(f64::INFINITY, f64::min);
        let mapped = h0 as f64 + self.intercept + rate * x;
        (mapped.round().max(0.0) as u64).min(host_ns)
    }

    /// What the mapping knows now.
    pub fn stats(&self) -> CameraClockStats {
        self.stats
    }

    /// A clock step: counted, history dropped, the mapping restarted at this frame.
    fn step(&mut self, camera_ns: u64, host_ns: u64) -> u64 {
        self.stats.steps += 1;
        self.restart(camera_ns, host_ns);
        host_ns
    }

    fn restart(&mut self, camera_ns: u64, host_ns: u64) {
        let stats = self.stats;
        *self = Self {
            origin: Some((camera_ns, host_ns)),
            window_low: Some((0.0, 0.0)),
            window_len: 1,
            stats,
            ..Self::default()
        };
        self.stats.drift_ppm = 0.0;
    }

    /// Least-squares slope through the anchors, when they span [`MIN_RATE_SPAN_NS`] and it is a plausible
    /// crystal's; 1 otherwise.
    fn fit_rate(&self) -> f64 {
        let points = &self.anchors[..self.anchors_len];
        let (lo, hi) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.0), hi.max(p.0))
            });
        if points.len() < 2 || hi - lo < MIN_RATE_SPAN_NS {
            return 1.0;
        }
        let n = points.len() as f64;
        let (mx, my) = points
            .iter()
            .fold((0.0, 0.0), |(sx, sy), p| (sx + p.0 / n, sy + p.1 / n));
        let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(sxy, sxx), p| {
            (sxy + (p.0 - mx) * (p.1 - my), sxx + (p.0 - mx) * (p.0 - mx))
        });
        let rate = sxy / sxx;
        if rate.is_finite() && ((rate - 1.0) * 1e6).abs() <= MAX_DRIFT_PPM {
            rate
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic delay: 300 µs plus a tail; every 7th frame comes at the minimum.
    fn delay_ns(i: u64) -> u64 {
        let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z ^= z >> 29;
        let tail = if i.is_multiple_of(7) {
            0
        } else {
            z % 2_000_000
        };
        300_000 + tail
    }

    #[test]
    fn least_offset_follows_a_drifting_camera_clock_to_the_fastest_frames_delay() {
        // Camera clock: starts at 5e12 ns, runs 40 ppm fast; frames every 10 ms of host time for 20 s.
        let mut clock = CameraClock::default();
        let (host0, cam0, ppm) = (1_000_000_000u64, 5_000_000_000_000u64, 40.0);
        let mut worst_late_ns = 0i64;
        for i in 0..2000u64 {
            let event = host0 + i * 10_000_000;
            let camera = cam0 + ((event - host0) as f64 * (1.0 + ppm * 1e-6)).round() as u64;
            let arrival = event + delay_ns(i);
            let mapped = clock.add(camera, arrival);
            assert!(mapped <= arrival, "frame {i}: mapped after its arrival");
            if i >= 400 {
                // The mapping is the event plus the fastest frames' delay (300 µs), within a few µs.
                let late = mapped as i64 - (event + 300_000) as i64;
                worst_late_ns = worst_late_ns.max(late.abs());
            }
        }
        assert!(worst_late_ns < 5_000, "off by {worst_late_ns} ns");
        let stats = clock.stats();
        assert!((stats.drift_ppm - ppm).abs() < 1.0, "{stats:?}");
        assert_eq!(stats.steps, 0);
    }

    /// Frame `i` of a camera whose clock is `cam0 + (host − host0)`, arriving `delay` after its event:
    /// `(camera ns, arrival host ns, event host ns)`.
    fn frame(i: u64, cam0: u64, host0: u64, delay: u64) -> (u64, u64, u64) {
        let event = host0 + i * 10_000_000;
        (cam0 + i * 10_000_000, event + delay, event)
    }

    #[test]
    fn clock_steps_either_way_restart_the_mapping_but_a_slow_start_does_not() {
        let mut clock = CameraClock::default();
        // The first frames after the start come 4 ms late: the first window settles on the faster ones.
        for i in 0..100u64 {
            let extra = if i < 5 { 4_000_000 } else { 0 };
            let (c, h, _) = frame(i, 7_000_000_000, 1_000_000_000, delay_ns(i) + extra);
            clock.add(c, h);
        }
        assert_eq!(clock.stats().steps, 0, "a slow start is not a step");
        let (c, h, event) = frame(100, 7_000_000_000, 1_000_000_000, 1_000_000);
        assert_eq!(clock.add(c, h), event + 300_000);

        // The camera restarts: its clock is back near 0, the host's goes on.
        let host0 = 1_000_000_000 + 101 * 10_000_000;
        let (c, h, _) = frame(0, 1_000, host0, 300_000);
        assert_eq!(clock.add(c, h), h, "restarted at the frame");
        assert_eq!(clock.stats().steps, 1);
        for i in 1..40 {
            let (c, h, _) = frame(i, 1_000, host0, delay_ns(i));
            clock.add(c, h);
        }
        assert_eq!(clock.stats().steps, 1);

        // 5 ms faster than all before: no step, the line comes down at once.
        let (c, h, _) = frame(40, 1_000, host0, 300_000);
        assert_eq!(clock.add(c, h - 5_000_000), h - 5_000_000);
        let host0 = host0 - 5_000_000;
        for i in 41..80 {
            let (c, h, event) = frame(i, 1_000, host0, delay_ns(i));
            assert_eq!(clock.add(c, h), event + 300_000, "frame {i}");
        }
        assert_eq!(clock.stats().steps, 1);

        // The wall clock stepped back 50 ms under Aravis's stamp: a frame that seems to arrive early.
        let (c, h, _) = frame(80, 1_000, host0, 300_000);
        assert_eq!(clock.add(c, h - 50_000_000), h - 50_000_000);
        assert_eq!(clock.stats().steps, 2);
        let host0 = host0 - 50_000_000;
        for i in 81..120 {
            let (c, h, _) = frame(i, 1_000, host0, delay_ns(i));
            clock.add(c, h);
        }
        assert_eq!(clock.stats().steps, 2);

        // Forward by 30 ms: no one frame shows it (it could be the tail), a whole window does.
        let host0 = host0 + 30_000_000;
        let mut steps_at = None;
        for i in 120..160 {
            let (c, h, _) = frame(i, 1_000, host0, delay_ns(i));
            let mapped = clock.add(c, h);
            assert!(mapped <= h, "frame {i}: mapped after its arrival");
            if steps_at.is_none() && clock.stats().steps == 3 {
                steps_at = Some(i);
            }
        }
        let at = steps_at.expect("the forward step was found");
        assert!(at < 120 + 2 * WINDOW as u64, "found at frame {at}");
        let (c, h, event) = frame(160, 1_000, host0, 900_000);
        assert_eq!(
            clock.add(c, h),
            event + 300_000,
            "mapped again from the new fastest frames"
        );
    }

    #[test]
    fn frame_ids_count_from_zero_across_the_16_bit_wrap() {
        let mut ids = FrameIds::default();
        let got: Vec<u64> = [65_530u64, 65_531, 65_533, 65_535, 1, 2, 5]
            .iter()
            .map(|&raw| ids.next(raw))
            .collect();
        assert_eq!(got, [0, 1, 3, 5, 6, 7, 10]);
        // 64-bit ids (GigE Vision 2 extended ids, USB3 Vision) just count.
        let mut ids = FrameIds::default();
        assert_eq!(
            [100_000u64, 100_001, 100_004].map(|r| ids.next(r)),
            [0, 1, 4]
        );
    }

    #[test]
    fn config_parses_with_defaults_and_names_bad_keys() {
        let c: AravisConfig =
            toml::from_str("camera = \"Basler-123\"\nexposure_us = 2000\n").unwrap();
        assert_eq!(c.camera, "Basler-123");
        assert_eq!(c.exposure_us, Some(2000.0));
        assert_eq!(
            (c.pixel_format.as_str(), c.buffers, c.timeout_ms),
            ("Mono8", 4, 2000)
        );
        let again: AravisConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let e = toml::from_str::<AravisConfig>("exposure = 5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exposure"), "{e}");
        let bad = |text: &str| {
            toml::from_str::<AravisConfig>(text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert!(bad("buffers = 1").contains("[source.aravis] buffers"));
        assert!(bad("timeout_ms = 0").contains("timeout_ms"));
        assert!(bad("fps = -3").contains("fps"));
        let e = bad("pixel_format = \"Mono12\"");
        assert!(e.contains("Mono12") && e.contains("BayerRG8"), "{e}");
        assert!(AravisConfig::default().validate().is_ok());
        let c: AravisConfig = toml::from_str("pixel_format = \"RGB8Packed\"").unwrap();
        assert!(c.validate().is_ok());
    }
}
