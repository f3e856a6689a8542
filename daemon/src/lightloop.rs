//! `reflex lightloop`: the classic LED-in-view test of a whole rig, camera included.
//!
//! An LED wired to an output channel sits in the camera's view. Each trial switches it on and waits for the
//! first frame in which the region of interest (ROI) around it is lit:
//!
//! ```text
//!  host: write "LED on" ──▶ device: pin high (acked with its own µs time) ──▶ light ──▶ camera exposure
//!        │                         │ write → LED on                                   │ LED on → exposure
//!        │                         │                                                  ▼
//!        └──────────── round trip ─┴──────────── LED on → frame on host ───────▶ frame on the host
//! ```
//!
//! - **write → LED on**: from the host's write of the command to the pin edge, as the device itself stamps
//!   it, mapped to host time by the same clock sync the loop uses ([`device_clock::sync_burst`], a fresh
//!   burst before every trial). Device-verified: no camera involved.
//! - **LED on → first lit exposure**: the camera's exposure latency, at most one frame period plus the
//!   exposure time (the LED comes on at a random phase of the frame clock).
//! - **LED on → lit frame on the host**: the camera's whole capture latency, transfer and driver included.
//! - **round trip**: write → lit frame on the host, what a closed loop pays before it can see its own output.
//!
//! Before the trials the ROI's mean brightness is calibrated with the LED held off, then on; a frame counts
//! as lit when its ROI mean crosses halfway between the two. Waits between trials are random (50–150 ms from
//! a seeded generator) so the LED comes on at every phase of the frame clock.
//!
//! Threads: the camera runs on its own capture thread (a loop thread: it fills one preallocated frame, reduces
//! the ROI to one number and pushes it into an SPSC ring, no allocation, no lock); the caller's thread runs
//! the procedure, owns the output device and keeps its watchdog fed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reflex_firmware_bridge::{DeviceEvent, Output, OutputCommand};
use serde::Serialize;

use crate::camera::synthetic::SplitMix64;
use crate::camera::{Frame, FrameSource, PixelFormat};
use crate::clock::{MonotonicClock, SharedClock};
use crate::config::Config;
use crate::device_clock::{self, DeviceClock};
use crate::{outputs, pipeline, realtime};

/// Shortest random wait with the LED off before a trial (ns).
const WAIT_MIN_NS: u64 = 50_000_000;
/// Longest random wait with the LED off before a trial (ns).
const WAIT_MAX_NS: u64 = 150_000_000;
/// Frames skipped after the LED changed before calibration frames are taken (exposures straddling the edge).
const SETTLE_FRAMES: usize = 2;
/// Frames averaged for each calibration level.
const CALIBRATION_FRAMES: usize = 10;
/// Least difference (ROI mean, 0–255) between the lit and dark levels for the LED to count as visible.
const MIN_CONTRAST: f64 = 10.0;
/// Longest wait for the device's acknowledgement of a command (ns).
const ACK_TIMEOUT_NS: u64 = 1_000_000_000;
/// Frames buffered between the capture thread and the procedure (seconds of frames at any usual rate).
const FRAME_RING: usize = 1024;
/// Longest the procedure parks between looks at the frame ring and the device (real time).
const PARK: Duration = Duration::from_millis(1);

/// `reflex lightloop` on the command line.
#[derive(Debug, clap::Args)]
pub struct LightloopArgs {
    /// Rig configuration (TOML): its `[source]` and `[output]`. Default: the embedded default.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Output channel the LED is wired to. Default: `[source.synthetic] led`'s channel.
    #[arg(long)]
    pub channel: Option<u8>,
    /// Where the LED appears in the image: `x,y,w,h` in px (top-left corner, width, height). Default:
    /// `[source.synthetic] led`'s square.
    #[arg(long, value_name = "X,Y,W,H")]
    pub roi: Option<Roi>,
    /// Trials (LED on → lit frame), after calibration.
    #[arg(long, default_value_t = 100)]
    pub trials: usize,
    /// Seed of the random waits between trials.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON (with every trial) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write one row per trial to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// A rectangle of the image in px: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Roi {
    /// Left edge (px).
    pub x: u32,
    /// Top edge (px).
    pub y: u32,
    /// Width (px).
    pub w: u32,
    /// Height (px).
    pub h: u32,
}

impl FromStr for Roi {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<Result<u32, _>> = s.split(',').map(|p| p.trim().parse::<u32>()).collect();
        match parts.as_slice() {
            [Ok(x), Ok(y), Ok(w), Ok(h)] if *w > 0 && *h > 0 => Ok(Self {
                x: *x,
                y: *y,
                w: *w,
                h: *h,
            }),
            _ => Err(format!(
                "`{s}` is not a region: give x,y,w,h in px (w, h > 0), e.g. 600,20,16,16"
            )),
        }
    }
}

impl std::fmt::Display for Roi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{},{}", self.x, self.y, self.w, self.h)
    }
}

/// How to run one light-loop measurement.
pub struct LightloopOptions {
    /// The rig: its `[source]` and `[output]` are used.
    pub config: Config,
    /// The config's file name, for error messages (`embedded default` when none).
    pub config_file: String,
    /// Output channel the LED is wired to.
    pub channel: u8,
    /// Where the LED appears in the image.
    pub roi: Roi,
    /// Trials after calibration.
    pub trials: usize,
    /// Seed of the random waits.
    pub seed: u64,
    /// The host clock (real time, or accelerated in tests).
    pub clock: SharedClock,
    /// Set from outside (Ctrl-C) to stop after the current trial.
    pub interrupt: Arc<AtomicBool>,
    /// Called with one-line notices (e.g. real-time scheduling refused).
    pub notice: Box<dyn FnMut(String) + Send>,
}

/// The ROI's brightness with the LED off and on, and the threshold between them (mean luma, 0–255).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Calibration {
    /// Mean ROI brightness with the LED off.
    pub dark_level: f64,
    /// Mean ROI brightness with the LED on.
    pub lit_level: f64,
    /// A frame is lit when its ROI mean reaches this: halfway between the two.
    pub threshold: f64,
}

/// One trial: the LED switched on, and the first frame that showed it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trial {
    /// Trial number, from 0.
    pub trial: usize,
    /// Random wait with the LED off before it (ns).
    pub wait_ns: u64,
    /// Host time the "LED on" command was written (ns).
    pub written_ns: u64,
    /// Host time of the pin edge, from the device's acknowledgement and clock sync (ns); `None` when the
    /// device does not acknowledge or its clock is not mapped.
    pub led_on_ns: Option<u64>,
    /// The first lit frame's id.
    pub frame: u64,
    /// Its exposure time on the host clock (ns).
    pub exposure_ns: u64,
    /// When it was complete on the host (ns).
    pub capture_ns: u64,
    /// Its ROI mean brightness (0–255).
    pub level: f64,
    /// Worst-case error of this trial's device → host mapping (ns): half the round trip of the sync exchange
    /// it is anchored on, plus the device clock's 1 µs resolution.
    pub sync_uncertainty_ns: u64,
    /// Frames the camera lost between the last frame before the lit one and the lit one: when > 0, the
    /// camera spans of this trial include the lost frames.
    pub frames_skipped: u64,
    /// Write → LED on (ns), device-verified.
    pub write_to_led_ns: Option<i64>,
    /// LED on → first lit exposure (ns).
    pub led_to_exposure_ns: Option<i64>,
    /// LED on → lit frame complete on the host (ns).
    pub led_to_frame_ns: Option<i64>,
    /// Write → lit frame complete on the host (ns).
    pub round_trip_ns: i64,
}

/// Percentiles of one span over the trials that have it (ns).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanStats {
    /// Key: `write_to_led`, `led_to_exposure`, `led_to_frame`, `round_trip`.
    pub name: &'static str,
    /// What it measures, in words.
    pub what: &'static str,
    /// Trials with a value.
    pub count: usize,
    /// Smallest value.
    pub min_ns: i64,
    /// Median.
    pub p50_ns: i64,
    /// 90th percentile.
    pub p90_ns: i64,
    /// 99th percentile.
    pub p99_ns: i64,
    /// Largest value.
    pub max_ns: i64,
}

/// How well device times map to host times (the uncertainty of every span that starts or ends at "LED on").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClockSyncSummary {
    /// Sync exchanges used, all trials together.
    pub exchanges: u64,
    /// The largest worst-case mapping error of any trial (ns; see [`Trial::sync_uncertainty_ns`]).
    pub uncertainty_ns: u64,
}

/// What `reflex lightloop` measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LightloopReport {
    /// The frame source, e.g. `synthetic(seed=1)`.
    pub source: String,
    /// The output device, e.g. `simulated`.
    pub device: String,
    /// The LED's output channel.
    pub channel: u8,
    /// Where the LED was looked for.
    pub roi: Roi,
    /// Seed of the random waits.
    pub seed: u64,
    /// The source's nominal frame rate (frames/s).
    pub fps: f64,
    /// Median time between exposures of consecutive frames, as measured (ns).
    pub frame_period_ns: u64,
    /// Dark and lit levels and the threshold.
    pub calibration: Calibration,
    /// Clock sync, `None` when the device clock could not be mapped (no device-verified spans then).
    pub clock_sync: Option<ClockSyncSummary>,
    /// Whether the device acknowledged the LED commands with its own timestamps.
    pub acks: bool,
    /// Frames the source itself skipped (fell behind) during the run.
    pub source_skipped: u64,
    /// Frames lost because the procedure did not take them in time (should stay 0).
    pub frames_lost: u64,
    /// Percentiles per span, in the order of the light's path.
    pub spans: Vec<SpanStats>,
    /// Every trial.
    pub trials: Vec<Trial>,
}

/// Run `reflex lightloop`: measure, print the table (or JSON), write the CSV if asked.
pub fn run_cli(args: LightloopArgs) -> anyhow::Result<()> {
    let (config, config_file) = match &args.config {
        Some(path) => (Config::load(path)?, path.display().to_string()),
        None => (Config::embedded(), "embedded default".to_string()),
    };
    let led = config.source.synthetic.led;
    let channel = args.channel.or(led.map(|l| l.channel));
    let roi = args.roi.or(led.map(|l| Roi {
        x: l.x,
        y: l.y,
        w: l.size,
        h: l.size,
    }));
    let (Some(channel), Some(roi)) = (channel, roi) else {
        bail!(
            "give --channel N (the output the LED is wired to) and --roi x,y,w,h (where the LED appears in the image, px)"
        );
    };
    let interrupt = crate::interrupt::on_ctrl_c("stopping after this trial")?;
    let report = run(LightloopOptions {
        config,
        config_file,
        channel,
        roi,
        trials: args.trials,
        seed: args.seed,
        clock: Arc::new(MonotonicClock::new()),
        interrupt,
        notice: Box::new(|line| eprintln!("{line}")),
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.out {
        report.write_csv(path)?;
        if !args.json {
            println!("trials: {}", path.display());
        }
    }
    Ok(())
}

/// Calibrate, run the trials, and turn the LED off again (also after an error). Runs the procedure on its
/// own thread (`reflex-lightloop`) and the camera on another (`reflex-capture`), and waits for both.
pub fn run(mut opts: LightloopOptions) -> anyhow::Result<LightloopReport> {
    if opts.trials == 0 {
        bail!("--trials must be at least 1");
    }
    let clock = Arc::clone(&opts.clock);
    let config = &opts.config;
    let mut source = pipeline::open_source(config, &opts.config_file, &clock)?;
    let (output, device_probe) = outputs::open_with_probe(&config.output, &clock)?;
    source
        .attach_device(device_probe, output.info().channels)
        .with_context(|| format!("{}: [source.synthetic]", opts.config_file))?;
    let channels = output.info().channels;
    if opts.channel >= channels {
        bail!(
            "--channel {}: the output device `{}` has channels 0..{}",
            opts.channel,
            output.info().name,
            channels.saturating_sub(1)
        );
    }
    let info = source.info().clone();
    let roi = opts.roi;
    if u64::from(roi.x) + u64::from(roi.w) > u64::from(info.width)
        || u64::from(roi.y) + u64::from(roi.h) > u64::from(info.height)
    {
        bail!(
            "--roi {roi}: the region must lie inside the {}x{} px image of `{}`",
            info.width,
            info.height,
            info.name
        );
    }

    // The procedure gets its own thread, with the actuation thread's priority where the OS allows: it keeps
    // the device's watchdog fed and stamps the writes, as the loop's actuation thread does.
    let procedure = thread::Builder::new()
        .name("reflex-lightloop".into())
        .spawn(move || {
            let realtime = opts.config.realtime.enabled;
            if realtime
                && let Err(e) =
                    realtime::promote_current_thread(opts.config.realtime.actuation_priority)
            {
                (opts.notice)(format!(
                    "note: real-time scheduling refused ({e}); the light loop runs at normal priority, so expect larger spikes (and the device's watchdog may fire on a busy machine)"
                ));
            }
            let mut rig = Rig::start(Box::new(source), output, roi, &clock, &opts.config)?;
            let measured = rig.measure(&opts);
            let finished = rig.finish();
            let mut report = measured?;
            finished?;
            // What the capture thread counted is known once it stopped.
            (report.frames_lost, report.source_skipped) = rig.capture_counts;
            Ok::<_, anyhow::Error>(report)
        })
        .context("starting the light-loop thread")?;
    let mut report = procedure
        .join()
        .map_err(|_| anyhow!("the light-loop thread panicked"))??;
    report.source = info.name;
    report.fps = info.fps;
    Ok(report)
}

/// What the capture thread reports of one frame: its stamps and the ROI's mean brightness.
#[derive(Debug, Clone, Copy)]
struct FrameStat {
    id: u64,
    exposure_ns: u64,
    capture_ns: u64,
    level: f64,
}

/// What the capture thread leaves when it ends: frames the ring refused, frames the source skipped.
type CaptureResult = Result<(u64, u64), String>;

/// The capture thread: frames in, one [`FrameStat`] per frame out. No allocation, no lock per frame.
fn capture(
    mut source: Box<dyn FrameSource>,
    roi: Roi,
    mut ring: rtrb::Producer<FrameStat>,
    stop: Arc<AtomicBool>,
    procedure: thread::Thread,
) -> CaptureResult {
    let mut frame = Frame::for_source(source.info());
    let mut lost = 0;
    let mut result = Ok(());
    while !stop.load(Ordering::Acquire) {
        match source.next_frame(&mut frame) {
            Ok(true) => {}
            Ok(false) => {
                result = Err(format!("camera `{}`: the stream ended", source.info().name));
                break;
            }
            Err(e) => {
                result = Err(format!("camera `{}`: {e}", source.info().name));
                break;
            }
        }
        let stat = FrameStat {
            id: frame.id,
            exposure_ns: frame.t_exposure_ns,
            capture_ns: frame.t_capture_ns,
            level: roi_level(&frame, roi),
        };
        if ring.push(stat).is_err() {
            lost += 1;
        }
        procedure.unpark();
    }
    procedure.unpark();
    result.map(|()| (lost, source.skipped()))
}

/// Mean brightness of `roi` in `frame`, 0–255 (Rec. 601 luma for RGB). The ROI lies inside the frame.
fn roi_level(frame: &Frame, roi: Roi) -> f64 {
    let channels = frame.format.channels();
    let width = frame.width as usize;
    let mut sum = 0u64;
    for y in roi.y as usize..(roi.y + roi.h) as usize {
        let start = (y * width + roi.x as usize) * channels;
        let row = frame
            .data
            .get(start..start + roi.w as usize * channels)
            .unwrap_or_default();
        sum += match frame.format {
            // 77 + 150 + 29 = 256: luma × 256.
            PixelFormat::Rgb8 => row
                .chunks_exact(3)
                .map(|p| 77 * u64::from(p[0]) + 150 * u64::from(p[1]) + 29 * u64::from(p[2]))
                .sum::<u64>(),
            PixelFormat::Gray8 => row.iter().map(|&v| 256 * u64::from(v)).sum::<u64>(),
        };
    }
    sum as f64 / 256.0 / (u64::from(roi.w) * u64::from(roi.h)) as f64
}

/// The procedure's side: the output device, the clock mapping, and the frames coming from the camera.
struct Rig {
    output: Box<dyn Output>,
    clock: SharedClock,
    device_clock: DeviceClock,
    frames: rtrb::Consumer<FrameStat>,
    stop: Arc<AtomicBool>,
    capture: Option<JoinHandle<CaptureResult>>,
    heartbeat_ns: u64,
    next_heartbeat_ns: u64,
    /// Acknowledgements received and not yet claimed: (seq, device µs, host ns when read).
    acks: Vec<(u16, u64, u64)>,
    /// The newest frame taken from the ring.
    last_frame: Option<FrameStat>,
    /// Exposure intervals between consecutive frames (ns), for the frame period.
    intervals_ns: Vec<u64>,
    /// Whether the device acknowledges commands (learnt from the first one).
    acks_seen: Option<bool>,
    frame_period_hint_ns: u64,
    sync_exchanges: u64,
    capture_counts: (u64, u64),
}

impl Rig {
    fn start(
        source: Box<dyn FrameSource>,
        output: Box<dyn Output>,
        roi: Roi,
        clock: &SharedClock,
        config: &Config,
    ) -> anyhow::Result<Self> {
        let frame_period_hint_ns = (1e9 / source.info().fps).round() as u64;
        let (tx, rx) = rtrb::RingBuffer::new(FRAME_RING);
        let stop = Arc::new(AtomicBool::new(false));
        let capture = {
            let stop = Arc::clone(&stop);
            let procedure = thread::current();
            thread::Builder::new()
                .name("reflex-capture".into())
                .spawn(move || capture(source, roi, tx, stop, procedure))
                .context("starting the capture thread")?
        };
        if config.realtime.enabled {
            use std::os::unix::thread::JoinHandleExt;
            // The loop's capture priority, so the capture latency measured is the loop's. A refusal was already
            // noted for the procedure's thread.
            let _ = realtime::promote(capture.as_pthread_t(), config.realtime.capture_priority);
        }
        Ok(Self {
            output,
            clock: Arc::clone(clock),
            device_clock: DeviceClock::default(),
            frames: rx,
            stop,
            capture: Some(capture),
            heartbeat_ns: u64::from(config.output.heartbeat_ms) * 1_000_000,
            next_heartbeat_ns: 0,
            acks: Vec::new(),
            last_frame: None,
            intervals_ns: Vec::new(),
            acks_seen: None,
            frame_period_hint_ns,
            sync_exchanges: 0,
            capture_counts: (0, 0),
        })
    }

    fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Feeds the watchdog when due and takes every device event: acks are kept, errors stop the run.
    fn service(&mut self) -> anyhow::Result<()> {
        let now = self.now();
        if now >= self.next_heartbeat_ns {
            self.output
                .heartbeat()
                .with_context(|| format!("output `{}`", self.output.info().name))?;
            self.next_heartbeat_ns = now + self.heartbeat_ns;
        }
        let mut events = Vec::new();
        self.output
            .poll(&mut |ev| events.push(ev))
            .with_context(|| format!("output `{}`", self.output.info().name))?;
        self.take_events(events)
    }

    fn take_events(&mut self, events: Vec<DeviceEvent>) -> anyhow::Result<()> {
        let now = self.now();
        for ev in events {
            match ev {
                DeviceEvent::Ack {
                    seq,
                    device_time_us,
                    ..
                } => self.acks.push((seq, device_time_us, now)),
                DeviceEvent::Error { error, .. } => {
                    bail!(
                        "the output device `{}` reported: {error}",
                        self.output.info().name
                    )
                }
                DeviceEvent::SyncReply { .. } | DeviceEvent::InputEdge { .. } => {}
            }
        }
        Ok(())
    }

    /// Parks until a frame arrives, the heartbeat is due, or `until_ns`, whichever is first (at most [`PARK`]).
    fn park(&self, until_ns: u64) {
        let now = self.now();
        let left = until_ns.min(self.next_heartbeat_ns).saturating_sub(now);
        thread::park_timeout(PARK.min(Duration::from_nanos(left.max(1))));
    }

    fn take_frame(&mut self, f: FrameStat) {
        if let Some(prev) = self.last_frame
            && f.id > prev.id
        {
            self.intervals_ns
                .push(f.exposure_ns.saturating_sub(prev.exposure_ns) / (f.id - prev.id));
        }
        self.last_frame = Some(f);
    }

    /// The next frame from the camera, or `None` once the clock passed `deadline_ns` without one.
    fn next_frame(&mut self, deadline_ns: u64) -> anyhow::Result<Option<FrameStat>> {
        loop {
            self.service()?;
            if let Ok(f) = self.frames.pop() {
                self.take_frame(f);
                return Ok(Some(f));
            }
            if self.capture.as_ref().is_some_and(JoinHandle::is_finished) {
                self.join_capture()?;
                bail!("the camera stopped delivering frames");
            }
            if self.now() >= deadline_ns {
                return Ok(None);
            }
            self.park(deadline_ns);
        }
    }

    /// Keeps the device fed and takes frames until the clock reaches `t_ns`.
    fn wait_until(&mut self, t_ns: u64) -> anyhow::Result<()> {
        while self.now() < t_ns {
            if self.next_frame(t_ns)?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Sets the LED; returns the command's sequence number and the host times just before and after the write.
    fn set_led(&mut self, channel: u8, high: bool) -> anyhow::Result<(u16, u64, u64)> {
        let issued_ns = self.now();
        let seq = self
            .output
            .send(OutputCommand::SetLevel { channel, high }, 0)
            .with_context(|| format!("output `{}`", self.output.info().name))?;
        let written_ns = self.now();
        Ok((seq, issued_ns, written_ns))
    }

    /// The acknowledgement of command `seq`: (device µs of the pin change, host ns when it was read). `None`
    /// when the device does not acknowledge commands (learnt from the first command, which waits up to
    /// [`ACK_TIMEOUT_NS`]).
    fn ack(&mut self, seq: u16) -> anyhow::Result<Option<(u64, u64)>> {
        if self.acks_seen == Some(false) {
            return Ok(None);
        }
        let deadline = self.now() + ACK_TIMEOUT_NS;
        loop {
            self.service()?;
            if let Some(i) = self.acks.iter().position(|a| a.0 == seq) {
                let (_, device_us, read_ns) = self.acks.swap_remove(i);
                self.acks_seen = Some(true);
                return Ok(Some((device_us, read_ns)));
            }
            if self.now() >= deadline {
                if self.acks_seen == Some(true) {
                    bail!(
                        "the output device `{}` stopped acknowledging commands (none for {} ms)",
                        self.output.info().name,
                        ACK_TIMEOUT_NS / 1_000_000
                    );
                }
                self.acks_seen = Some(false);
                return Ok(None);
            }
            while let Ok(f) = self.frames.pop() {
                self.take_frame(f);
            }
            self.park(deadline);
        }
    }

    /// Sets the LED and waits for the device to confirm it; returns the host time from which frames may show
    /// the new state (the ack's arrival, or the write when the device sends no acks).
    fn set_led_confirmed(&mut self, channel: u8, high: bool) -> anyhow::Result<u64> {
        let (seq, _, written_ns) = self.set_led(channel, high)?;
        Ok(self.ack(seq)?.map_or(written_ns, |(_, read_ns)| read_ns))
    }

    /// A fresh clock mapping: a burst of sync exchanges, as the loop makes before its first frame.
    fn sync(&mut self) -> anyhow::Result<()> {
        let mut events = Vec::new();
        let used = device_clock::sync_burst(
            &mut *self.output,
            &*self.clock,
            &mut self.device_clock,
            &mut |ev| events.push(ev),
        );
        self.sync_exchanges += used as u64;
        self.take_events(events)
    }

    /// Mean ROI levels of [`CALIBRATION_FRAMES`] frames delivered after `after_ns`, skipping the first
    /// [`SETTLE_FRAMES`].
    fn levels_after(&mut self, after_ns: u64, what: &str) -> anyhow::Result<Vec<f64>> {
        let frames = SETTLE_FRAMES + CALIBRATION_FRAMES;
        let deadline = after_ns + 1_000_000_000 + 2 * frames as u64 * self.frame_period_hint_ns;
        let mut seen = 0;
        let mut levels = Vec::with_capacity(CALIBRATION_FRAMES);
        while levels.len() < CALIBRATION_FRAMES {
            let Some(f) = self.next_frame(deadline)? else {
                bail!(
                    "calibration ({what}): the camera delivered {seen} of {frames} frames in time"
                );
            };
            if f.capture_ns <= after_ns {
                continue;
            }
            seen += 1;
            if seen > SETTLE_FRAMES {
                levels.push(f.level);
            }
        }
        Ok(levels)
    }

    fn calibrate(&mut self, channel: u8, roi: Roi) -> anyhow::Result<Calibration> {
        let off_ns = self.set_led_confirmed(channel, false)?;
        let dark = self.levels_after(off_ns, "LED off")?;
        let on_ns = self.set_led_confirmed(channel, true)?;
        let lit = self.levels_after(on_ns, "LED on")?;
        self.set_led_confirmed(channel, false)?;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (dark_level, lit_level) = (mean(&dark), mean(&lit));
        let darkest_lit = lit.iter().copied().fold(f64::INFINITY, f64::min);
        let brightest_dark = dark.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if lit_level - dark_level < MIN_CONTRAST || darkest_lit <= brightest_dark {
            bail!(
                "the LED is not visible in the ROI: its mean brightness is {dark_level:.1} with the LED off and {lit_level:.1} with it on (0-255; at least {MIN_CONTRAST} apart needed). Check --roi {roi} (x,y,w,h in px), --channel {channel}, the wiring, and that the exposure does not saturate the ROI"
            );
        }
        Ok(Calibration {
            dark_level,
            lit_level,
            threshold: (dark_level + lit_level) / 2.0,
        })
    }

    fn measure(&mut self, opts: &LightloopOptions) -> anyhow::Result<LightloopReport> {
        let channel = opts.channel;
        self.sync()?;
        let calibration = self.calibrate(channel, opts.roi)?;
        let frame_period_ns = self.frame_period_ns();
        // A lit frame must come within this of the command, or the LED is not seen.
        let lit_timeout_ns = (30 * frame_period_ns).max(1_000_000_000);
        let mut off_ns = self.now();
        let mut rng = SplitMix64(opts.seed);
        let mut trials = Vec::with_capacity(opts.trials);
        for trial in 0..opts.trials {
            if opts.interrupt.load(Ordering::Relaxed) {
                break;
            }
            let wait_ns = WAIT_MIN_NS + rng.next() % (WAIT_MAX_NS - WAIT_MIN_NS + 1);
            let wait_from = self.now();
            self.sync()?;
            self.wait_until(wait_from + wait_ns)?;
            // The LED must be seen off before it goes on: the newest frame, delivered after the off command
            // took effect, is dark.
            let dark_deadline = self.now() + lit_timeout_ns;
            while !self
                .last_frame
                .is_some_and(|f| f.capture_ns > off_ns && f.level < calibration.threshold)
            {
                if self.next_frame(dark_deadline)?.is_none() {
                    bail!(
                        "trial {trial}: the ROI still looks lit {} ms after the LED was switched off (level {:.1}, threshold {:.1})",
                        (self.now() - off_ns) / 1_000_000,
                        self.last_frame.map_or(f64::NAN, |f| f.level),
                        calibration.threshold
                    );
                }
            }
            let mut before = self.last_frame;
            let (seq, issued_ns, written_ns) = self.set_led(channel, true)?;
            let lit = loop {
                let Some(f) = self.next_frame(issued_ns + lit_timeout_ns)? else {
                    bail!(
                        "trial {trial}: no frame showed the LED lit within {} ms of switching it on (threshold {:.1})",
                        lit_timeout_ns / 1_000_000,
                        calibration.threshold
                    );
                };
                if f.capture_ns > issued_ns && f.level >= calibration.threshold {
                    break f;
                }
                before = Some(f);
            };
            let led_on_ns = self
                .ack(seq)?
                .and_then(|(device_us, _)| self.device_clock.host_ns(device_us));
            let sync_uncertainty_ns = self.device_clock.stats().anchor_delay_ns / 2 + 1_000;
            off_ns = self.set_led_confirmed(channel, false)?;
            let signed = |a: u64, b: u64| a as i64 - b as i64;
            trials.push(Trial {
                trial,
                wait_ns,
                written_ns,
                led_on_ns,
                frame: lit.id,
                exposure_ns: lit.exposure_ns,
                capture_ns: lit.capture_ns,
                level: lit.level,
                sync_uncertainty_ns,
                frames_skipped: before.map_or(0, |b| lit.id.saturating_sub(b.id + 1)),
                write_to_led_ns: led_on_ns.map(|on| signed(on, written_ns)),
                led_to_exposure_ns: led_on_ns.map(|on| signed(lit.exposure_ns, on)),
                led_to_frame_ns: led_on_ns.map(|on| signed(lit.capture_ns, on)),
                round_trip_ns: signed(lit.capture_ns, written_ns),
            });
        }
        if trials.is_empty() {
            bail!("interrupted before the first trial");
        }
        let stats = self.device_clock.stats();
        Ok(LightloopReport {
            source: String::new(), // filled in by `run`, with the counts known once the camera stopped
            device: self.output.info().name.clone(),
            channel,
            roi: opts.roi,
            seed: opts.seed,
            fps: 0.0,
            frame_period_ns: self.frame_period_ns(),
            calibration,
            clock_sync: (stats.exchanges > 0).then(|| ClockSyncSummary {
                exchanges: self.sync_exchanges,
                uncertainty_ns: trials
                    .iter()
                    .map(|t| t.sync_uncertainty_ns)
                    .max()
                    .unwrap_or(0),
            }),
            acks: self.acks_seen == Some(true),
            source_skipped: 0,
            frames_lost: 0,
            spans: span_stats(&trials),
            trials,
        })
    }

    /// Median exposure interval of consecutive frames so far, or the nominal period before two frames.
    fn frame_period_ns(&self) -> u64 {
        let mut v = self.intervals_ns.clone();
        v.sort_unstable();
        v.get(v.len() / 2)
            .copied()
            .unwrap_or(self.frame_period_hint_ns)
    }

    fn join_capture(&mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.capture.take() {
            let counts = handle
                .join()
                .map_err(|_| anyhow!("the capture thread panicked"))?
                .map_err(|e| anyhow!(e))?;
            self.capture_counts = counts;
        }
        Ok(())
    }

    /// Every output off, the camera stopped.
    fn finish(&mut self) -> anyhow::Result<()> {
        let off = self.output.all_off().with_context(|| {
            format!(
                "output `{}`: turning all outputs off",
                self.output.info().name
            )
        });
        let joined = self.join_capture();
        off.and(joined)
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], q: f64) -> i64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(0)
}

/// The spans, in the order of the light's path.
const SPANS: [(&str, &str); 4] = [
    ("write_to_led", "write → LED on (device ack)"),
    ("led_to_exposure", "LED on → first lit exposure"),
    ("led_to_frame", "LED on → lit frame on host"),
    ("round_trip", "write → lit frame on host"),
];

fn span_value(t: &Trial, name: &str) -> Option<i64> {
    match name {
        "write_to_led" => t.write_to_led_ns,
        "led_to_exposure" => t.led_to_exposure_ns,
        "led_to_frame" => t.led_to_frame_ns,
        _ => Some(t.round_trip_ns),
    }
}

fn span_stats(trials: &[Trial]) -> Vec<SpanStats> {
    SPANS
        .iter()
        .map(|&(name, what)| {
            let mut v: Vec<i64> = trials.iter().filter_map(|t| span_value(t, name)).collect();
            v.sort_unstable();
            SpanStats {
                name,
                what,
                count: v.len(),
                min_ns: v.first().copied().unwrap_or(0),
                p50_ns: percentile(&v, 0.5),
                p90_ns: percentile(&v, 0.9),
                p99_ns: percentile(&v, 0.99),
                max_ns: v.last().copied().unwrap_or(0),
            }
        })
        .collect()
}

impl LightloopReport {
    /// The report as a text table, times in ms.
    pub fn table(&self) -> String {
        let ms = |ns: i64| ns as f64 / 1e6;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "light loop: {} trials, LED on channel {}, ROI {},{} {}x{} px; {} → {}",
            self.trials.len(),
            self.channel,
            self.roi.x,
            self.roi.y,
            self.roi.w,
            self.roi.h,
            self.source,
            self.device
        );
        let c = &self.calibration;
        let _ = writeln!(
            s,
            "calibration (ROI mean, 0-255): dark {:.1}  lit {:.1}  threshold {:.1}",
            c.dark_level, c.lit_level, c.threshold
        );
        let sync = match &self.clock_sync {
            Some(sync) => format!(
                "device clock mapped within ±{:.1} µs",
                sync.uncertainty_ns as f64 / 1e3
            ),
            None => "device clock not mapped".to_string(),
        };
        let _ = writeln!(
            s,
            "frame period {:.3} ms ({:.1} fps nominal); {sync}",
            self.frame_period_ns as f64 / 1e6,
            self.fps
        );
        let _ = writeln!(
            s,
            "{:<32}{:>7}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "span (ms)", "count", "min", "p50", "p90", "p99", "max"
        );
        for span in &self.spans {
            if span.count == 0 {
                let _ = writeln!(s, "{:<32}{:>7}  (no device timestamps)", span.what, 0);
                continue;
            }
            let _ = writeln!(
                s,
                "{:<32}{:>7}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
                span.what,
                span.count,
                ms(span.min_ns),
                ms(span.p50_ns),
                ms(span.p90_ns),
                ms(span.p99_ns),
                ms(span.max_ns)
            );
        }
        let gaps = self.trials.iter().filter(|t| t.frames_skipped > 0).count();
        if gaps > 0 {
            let _ = writeln!(
                s,
                "note: in {gaps} trials the camera lost frames just before the lit one; their camera spans include them"
            );
        }
        if !self.acks {
            let _ = writeln!(
                s,
                "note: the device sends no timestamps of its output changes: only the round trip is measured"
            );
        }
        if self.frames_lost > 0 {
            let _ = writeln!(
                s,
                "note: {} frames were lost between the camera thread and the procedure",
                self.frames_lost
            );
        }
        s
    }

    /// Writes one row per trial (times in ns on the host clock, spans in ns; empty where unknown).
    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        let mut s = String::from(
            "trial,wait_ns,written_ns,led_on_ns,frame,exposure_ns,capture_ns,level,sync_uncertainty_ns,frames_skipped,write_to_led_ns,led_to_exposure_ns,led_to_frame_ns,round_trip_ns\n",
        );
        for t in &self.trials {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{:.2},{},{},{},{},{},{}",
                t.trial,
                t.wait_ns,
                t.written_ns,
                t.led_on_ns.map(|v| v.to_string()).unwrap_or_default(),
                t.frame,
                t.exposure_ns,
                t.capture_ns,
                t.level,
                t.sync_uncertainty_ns,
                t.frames_skipped,
                opt(t.write_to_led_ns),
                opt(t.led_to_exposure_ns),
                opt(t.led_to_frame_ns),
                t.round_trip_ns
            );
        }
        std::fs::write(path, s).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::synthetic::LedConfig;

    const LED: LedConfig = LedConfig {
        channel: 3,
        x: 600,
        y: 20,
        size: 16,
    };

    fn measure(mut config: Config, roi: Roi, trials: usize) -> anyhow::Result<LightloopReport> {
        // What is tested is the measurement: a test machine starved by other jobs must not trip the device's
        // safety watchdog mid-trial (it would, at normal priority, under heavy load).
        config.output.simulated.watchdog_ms = 0;
        config.realtime.enabled = false;
        run(LightloopOptions {
            config,
            config_file: "embedded default".into(),
            channel: LED.channel,
            roi,
            trials,
            seed: 7,
            clock: Arc::new(MonotonicClock::with_speed(2.0)),
            interrupt: Arc::new(AtomicBool::new(false)),
            notice: Box::new(|_| {}),
        })
    }

    fn led_roi() -> Roi {
        Roi {
            x: LED.x,
            y: LED.y,
            w: LED.size,
            h: LED.size,
        }
    }

    /// The measured spans against what the simulation makes true: the pin goes high `actuation_delay_us`
    /// after the device received the command, and the synthetic camera shows it from the first exposure at or
    /// after that edge.
    fn check_against_truth(report: &LightloopReport, delay_ns: i64) {
        let period = report.frame_period_ns as i64;
        assert!(
            (period - 8_333_333).abs() <= 1,
            "120 fps: {}",
            report.frame_period_ns
        );
        assert!(
            report.clock_sync.is_some(),
            "the simulated device's clock is mapped"
        );
        assert!(report.acks);
        let mut clean = 0;
        for t in &report.trials {
            // This trial's worst-case mapping error, and the µs the device stamps in.
            let tol = t.sync_uncertainty_ns as i64 + 1_000;
            let write_to_led = t.write_to_led_ns.expect("acked and mapped");
            // The write stamp is taken just after the device received the command, so never more than the
            // delay (scheduling can only shorten what is left of it).
            assert!(write_to_led <= delay_ns + tol, "{t:?}");
            let to_exposure = t.led_to_exposure_ns.unwrap();
            assert!(
                t.led_to_frame_ns.unwrap() >= to_exposure,
                "the frame is complete after its exposure: {t:?}"
            );
            assert_eq!(t.round_trip_ns, write_to_led + t.led_to_frame_ns.unwrap());
            if t.frames_skipped == 0 {
                clean += 1;
                assert!(
                    (-tol..=period + tol).contains(&to_exposure),
                    "LED on → first lit exposure must lie within one frame period: {t:?} (tolerance {tol} ns)"
                );
            }
        }
        assert!(
            clean * 10 >= report.trials.len() * 9,
            "the camera lost frames in too many trials: {clean} of {} clean",
            report.trials.len()
        );
        let write_to_led = &report.spans[0];
        assert_eq!(write_to_led.name, "write_to_led");
        assert!(
            (write_to_led.p50_ns - delay_ns).abs() <= 200_000,
            "write → LED on p50 {} ns, actuation delay {delay_ns} ns",
            write_to_led.p50_ns
        );
        // Random phases: the exposure latency spreads over the frame period.
        let to_exposure = &report.spans[1];
        assert!(
            to_exposure.max_ns - to_exposure.min_ns > period / 4,
            "{to_exposure:?}"
        );
    }

    #[test]
    fn lightloop_on_the_synthetic_led_measures_the_simulated_truth() {
        let mut config = Config::embedded();
        config.source.synthetic.led = Some(LED);
        let delay_ns = i64::from(config.output.simulated.actuation_delay_us) * 1000;
        let report = measure(config.clone(), led_roi(), 20).unwrap();
        assert_eq!(report.trials.len(), 20);
        assert_eq!(
            (report.source.as_str(), report.device.as_str()),
            ("synthetic(seed=1)", "simulated")
        );
        // The LED's own pixels: (40,40,40) off, (255,255,240) lit.
        let c = report.calibration;
        assert!((c.dark_level - 40.0).abs() < 0.01, "{c:?}");
        assert!((c.lit_level - 253.3).abs() < 0.1, "{c:?}");
        check_against_truth(&report, delay_ns);

        // A slow device: 3 ms from command to pin.
        config.output.simulated.actuation_delay_us = 3_000;
        let report = measure(config, led_roi(), 10).unwrap();
        check_against_truth(&report, 3_000_000);
    }

    #[test]
    fn an_roi_without_the_led_is_refused_with_its_levels() {
        let mut config = Config::embedded();
        config.source.synthetic.led = Some(LED);
        // The arena's wall: the same grey whatever the LED does.
        let wall = Roi {
            x: 0,
            y: 0,
            w: 10,
            h: 10,
        };
        let err = format!("{:#}", measure(config.clone(), wall, 1).unwrap_err());
        assert!(
            err.contains("the LED is not visible in the ROI") && err.contains("70.0"),
            "{err}"
        );
        let outside = Roi {
            x: 630,
            y: 0,
            w: 16,
            h: 16,
        };
        let err = format!("{:#}", measure(config, outside, 1).unwrap_err());
        assert!(err.contains("inside the 640x480 px image"), "{err}");
    }

    #[test]
    fn roi_parses_from_the_command_line() {
        assert_eq!(
            "600,20,16,16".parse::<Roi>(),
            Ok(Roi {
                x: 600,
                y: 20,
                w: 16,
                h: 16
            })
        );
        assert!("600,20,0,16".parse::<Roi>().is_err());
        assert!("600,20,16".parse::<Roi>().is_err());
        assert!("a,b,c,d".parse::<Roi>().is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[5], 0.9), 5);
    }
}
