//! The real-time loop, top to bottom: capture → infer → predict → trigger → output.
//!
//! ```text
//!  capture thread      inference thread         actuation thread                         writer thread
//!  FrameSource ─slot─▶ PoseModel ─rtrb(4)─▶ Predictor → Triggers → Output ─rtrb─▶ session files
//!   (exposure,          (infer start/end)       (predicted, decided, written,              latency.hlog
//!    capture)                                    device ack; histograms)                   summary.json
//! ```
//! - The capture → inference hand-off is a triple buffer (single slot, latest frame wins): a frame replaced
//!   before inference took it is counted as stale. Inference → actuation is a bounded SPSC ring; actuation
//!   takes microseconds, so it never fills, and a refused pose is counted.
//! - Loop threads never allocate, lock, log or do I/O after start: records go to the writer through SPSC
//!   rings; latency histograms are double-buffered through a pair of rings.
//! - Live numbers leave through the writer: it publishes a [`crate::metrics::Live`] snapshot that the
//!   caller's thread (status line) and, with `[metrics] listen`, the tokio `/metrics` thread read.
//! - Stopping: capture stops, inference finishes the last frame, actuation drains, returns every output to
//!   rest and turns the device off (also on error or panic), then the writer drains and closes the files.
//! - Several cameras (`[[camera]]`): one capture thread, slot, inference thread (own model) and ring to
//!   actuation each; camera 0's poses drive the loop, the others' are recorded (their stages into `cameraN.*`
//!   histograms, their rows into `cameraN/`). The capture threads stop together.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use anyhow::{Context, anyhow};
use reflex_firmware_bridge::{DeviceEvent, Output, OutputCommand};
use reflex_plugins::pose::Pose;
use reflex_plugins::trigger::Action;

use crate::camera::synthetic::SyntheticCamera;
use crate::camera::video::VideoSource;
use crate::camera::{Frame, FrameSource, Source};
use crate::clock::SharedClock;
use crate::config::{Config, line_of};
use crate::decision::{self, DecisionStep, FrameInput, Routed};
use crate::device_clock::{self, DeviceClock, SYNC_EVERY_NS, SYNC_POLL_NS};
use crate::inference::{self, PoseModel};
use crate::latency::{CameraStage, LatencySet, Stage};
use crate::metrics::{Live, LiveLatency, MetricsServer, SessionInfo};
use crate::realtime;
use crate::record::{
    EventRecord, PoseRecord, ScriptEvent, Stamps, TruthRecord, frame_tag, tag_frame,
};
use crate::session::{self, CameraSummary, FrameCounts, Summary, WriterInputs};
use reflex_plugins::script::OnScriptError;

/// Counters and flags shared by the loop threads, the writer and the caller. Atomics only on the loop's side.
pub struct Shared {
    /// Set to stop the session (Ctrl-C, end condition, or an error).
    pub stop: AtomicBool,
    /// The host clock of the session.
    pub clock: SharedClock,
    /// When the session started, on `clock` (ns); interval-log timestamps and the duration count from here.
    pub start_ns: u64,
    /// Frame counts of each camera, camera 0 (the loop's) first.
    pub cameras: Box<[CameraCounters]>,
    /// Capture threads still running; the last one to end sets `capture_done`.
    captures_running: AtomicUsize,
    /// Records lost to a full writer ring (reported loudly; should stay 0).
    pub records_lost: AtomicU64,
    /// Errors the output device reported (e.g. its watchdog expired because the host went silent).
    pub device_errors: AtomicU64,
    /// Trigger actions lost to a full per-frame action buffer or delay queue (should stay 0).
    pub actions_dropped: AtomicU64,
    /// The loop threads run with real-time (FIFO) priority.
    pub realtime: AtomicBool,
    /// Every capture thread has finished.
    pub capture_done: AtomicBool,
    /// Every inference thread has finished.
    pub inference_done: AtomicBool,
    /// Inference threads still running; the last one to end sets `inference_done`.
    inferences_running: AtomicUsize,
    /// Actuation thread has finished (outputs are off).
    pub actuation_done: AtomicBool,
    /// Counts and per-stage latency published by the writer for the status line and `/metrics`; loop
    /// threads never touch it.
    pub live: Arc<Live>,
    /// The first error, taken only on the way out (never on the per-frame path).
    error: Mutex<Option<String>>,
    /// One-line notices for the user from threads that must not print (the actuation thread on a script
    /// failure it survives, the script watcher); the caller's thread prints them.
    notices: Mutex<Vec<String>>,
}

/// Frame counters of one camera, written by its capture thread and the inference and actuation threads.
#[derive(Debug, Default)]
pub struct CameraCounters {
    /// Frames delivered by the source.
    pub captured: AtomicU64,
    /// Frames the source skipped.
    pub source_skipped: AtomicU64,
    /// Frames replaced in the capture → inference slot before inference took them.
    pub stale: AtomicU64,
    /// Poses refused by a full inference → actuation ring.
    pub actuation_full: AtomicU64,
    /// Frames through the whole loop (camera 0), or estimated and recorded (further cameras).
    pub processed: AtomicU64,
}

impl CameraCounters {
    /// The counts so far.
    pub fn counts(&self) -> FrameCounts {
        let source_skipped = self.source_skipped.load(Ordering::Relaxed);
        let stale = self.stale.load(Ordering::Relaxed);
        let actuation_full = self.actuation_full.load(Ordering::Relaxed);
        FrameCounts {
            captured: self.captured.load(Ordering::Relaxed),
            processed: self.processed.load(Ordering::Relaxed),
            dropped: source_skipped + stale + actuation_full,
            source_skipped,
            stale,
            actuation_full,
        }
    }
}

impl Shared {
    fn new(clock: SharedClock, live: Arc<Live>, cameras: usize) -> Self {
        Self {
            stop: AtomicBool::new(false),
            start_ns: clock.now_ns(),
            clock,
            cameras: (0..cameras.max(1))
                .map(|_| CameraCounters::default())
                .collect(),
            captures_running: AtomicUsize::new(cameras.max(1)),
            inferences_running: AtomicUsize::new(cameras.max(1)),
            records_lost: AtomicU64::new(0),
            device_errors: AtomicU64::new(0),
            actions_dropped: AtomicU64::new(0),
            realtime: AtomicBool::new(false),
            capture_done: AtomicBool::new(false),
            inference_done: AtomicBool::new(false),
            actuation_done: AtomicBool::new(false),
            live,
            error: Mutex::new(None),
            notices: Mutex::new(Vec::new()),
        }
    }

    /// Queue a notice for the caller's thread to print. Never blocks: when the lock is taken (the caller is
    /// printing), the notice is handed back to try again later.
    pub fn notify(&self, notice: String) -> Result<(), String> {
        match self.notices.try_lock() {
            Ok(mut n) => {
                n.push(notice);
                Ok(())
            }
            Err(_) => Err(notice),
        }
    }

    /// The notices queued so far.
    fn take_notices(&self) -> Vec<String> {
        self.notices
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    /// Record the first error and ask everything to stop.
    pub fn fail(&self, message: String) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert(message);
        }
        self.stop.store(true, Ordering::Release);
    }

    /// The error that stopped the session, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// Frame counts so far of camera 0, the one that drives the loop.
    pub fn counts(&self) -> FrameCounts {
        self.camera_counts(0)
    }

    /// Frame counts so far of `camera` (zeros for a camera the session does not have).
    pub fn camera_counts(&self, camera: usize) -> FrameCounts {
        self.cameras
            .get(camera)
            .map(CameraCounters::counts)
            .unwrap_or_default()
    }
}

/// Instrumentation for tests: functions called on the loop threads right before (`true`) and after
/// (`false`) each frame's work, e.g. to count allocations per frame. Unset in production (one atomic load).
#[derive(Debug, Clone, Copy)]
pub struct Probes {
    /// Around inference of one frame (pre-processing, network, decoding).
    pub inference: fn(bool),
    /// Around actuation of one frame (predict, trigger, output, records).
    pub actuation: fn(bool),
}

/// The installed [`Probes`]; set once per process.
pub static PROBES: std::sync::OnceLock<Probes> = std::sync::OnceLock::new();

/// How to run one session.
pub struct RunOptions {
    /// The rig.
    pub config: Config,
    /// The config's text and file name, for error lines (`embedded default` when none).
    pub config_text: String,
    /// The config's file name.
    pub config_file: String,
    /// Exact session folder (`--out`); else a timestamped folder under `config.session.dir`.
    pub out: Option<PathBuf>,
    /// Stop after this long on the session clock (ns).
    pub duration_ns: Option<u64>,
    /// Stop after the source (camera 0, with several) delivered this many frames.
    pub max_frames: Option<u64>,
    /// The session clock (real time, or accelerated in tests).
    pub clock: SharedClock,
    /// Set from outside (Ctrl-C) to stop.
    pub interrupt: Arc<AtomicBool>,
    /// Called with one-line notices (e.g. the inference fallback) before the loop starts.
    pub notice: Box<dyn FnMut(String) + Send>,
    /// Called every `session.status_interval_ms` with the live counts, when set.
    pub status: Option<StatusFn>,
}

/// Receives the live status every `session.status_interval_ms`.
pub type StatusFn = Box<dyn FnMut(&Status) + Send>;

/// A live snapshot for the status line.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    /// Session time (s).
    pub elapsed_s: f64,
    /// Frame counts.
    pub frames: FrameCounts,
    /// Processed frames per second since the last snapshot.
    pub fps: f64,
    /// Records lost to full writer rings so far.
    pub records_lost: u64,
    /// Errors the output device reported so far.
    pub device_errors: u64,
    /// Per-stage latency: quantiles of the last histogram interval (1 s), counts since the start.
    pub latency: LiveLatency,
    /// Where `/metrics` is served (the bound address, also when `[metrics] listen` asked for port 0).
    pub metrics_addr: Option<SocketAddr>,
}

/// What a finished session reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// The session folder.
    pub dir: PathBuf,
    /// The final summary (also in `summary.json`).
    pub summary: Summary,
}

/// A pose on its way from inference to actuation.
#[derive(Debug, Clone, Copy)]
struct PoseMsg {
    camera: u8,
    frame: u64,
    stamps: Stamps,
    pose: Pose,
}

/// Run one session to its end. Errors before the loop starts (bad config, model, output folder) return `Err`
/// with context; an error during the loop stops it cleanly, and is returned after the files are closed.
pub fn run(mut opts: RunOptions) -> anyhow::Result<Report> {
    let config = opts.config.clone();
    let clock = Arc::clone(&opts.clock);

    let mut source = open_source(&config, &opts.config_file, &clock)?;

    let mut model = inference::load(&config.model, &mut *opts.notice)
        .with_context(|| format!("loading the pose model `{}`", config.model.path))?;
    // Every buffer for the camera's frame size is made now, not on the first frame.
    let (width, height, format) = (
        source.info().width,
        source.info().height,
        source.info().format,
    );
    model.prepare(width, height, format).with_context(|| {
        format!(
            "preparing the pose model `{}` for {width}x{height} frames",
            config.model.path
        )
    })?;
    let keypoints: Vec<String> = model.keypoints().to_vec();
    let names: Vec<&str> = keypoints.iter().map(String::as_str).collect();
    let mut extras = open_further_cameras(&mut opts, &clock)?;

    // Predict → trigger → actions: the step `reflex replay` runs on recorded poses too.
    let decide = DecisionStep::from_config(&config, &opts.config_text, &opts.config_file, &names)?;
    let trigger_names = decide.trigger_names();
    let (output, device_probe) = crate::outputs::open_with_probe(&config.output, &clock)?;
    // One LED, seen by every synthetic camera that has one configured.
    for extra in &mut extras {
        extra
            .source
            .attach_device(device_probe.clone(), output.info().channels)
            .map_err(|e| anyhow!("{}", crate::config::for_camera(&e.to_string())))
            .with_context(|| {
                format!("{}: {}: [camera.synthetic]", opts.config_file, extra.label)
            })?;
    }
    source
        .attach_device(device_probe, output.info().channels)
        .with_context(|| format!("{}: [source.synthetic]", opts.config_file))?;

    // A real device says how many channels it has only in its handshake.
    for t in &config.triggers {
        let channels = output.info().channels;
        if let Some(channel) = t.get_ref().channels().find(|&c| c >= channels) {
            return Err(anyhow!(
                "{} line {}: trigger `{}`: channel {channel} does not exist ({} has channels 0..{})",
                opts.config_file,
                line_of(&opts.config_text, t.span().start),
                t.get_ref().name,
                output.info().name,
                channels.saturating_sub(1)
            ));
        }
    }

    // The metrics endpoint binds before the session folder exists, so a taken port leaves nothing behind.
    let live = Arc::new(Live::default());
    let metrics = match &config.metrics.listen {
        None => None,
        Some(listen) => {
            let info = SessionInfo {
                backend: model.backend().to_string(),
                source: source.info().name.clone(),
            };
            let server =
                MetricsServer::start(listen, Arc::clone(&live), info).with_context(|| {
                    format!("cannot serve metrics on {listen} (metrics.listen / --metrics)")
                })?;
            (opts.notice)(format!(
                "metrics: http://{}/metrics (Prometheus)",
                server.addr()
            ));
            Some(server)
        }
    };
    let metrics_addr = metrics.as_ref().map(MetricsServer::addr);

    let dir = session::create_dir(opts.out.as_deref(), Path::new(&config.session.dir))
        .with_context(|| {
            format!(
                "cannot create the session folder {}",
                opts.out.as_deref().map_or_else(
                    || format!("under {}", config.session.dir),
                    |p| p.display().to_string()
                )
            )
        })?;
    // The session keeps the script it ran beside its config, which points at that copy, so
    // `reflex replay SESSION` runs exactly this protocol.
    let mut saved = config.clone();
    if let (Some(script), Some((path, text))) = (&mut saved.script, decide.script_source()) {
        let copy = crate::script::session_copy(&dir, path, 0);
        std::fs::create_dir_all(dir.join("script"))
            .and_then(|()| std::fs::write(&copy, text))
            .with_context(|| format!("writing {}", copy.display()))?;
        script.path = copy
            .strip_prefix(&dir)
            .unwrap_or(&copy)
            .display()
            .to_string();
    }
    std::fs::write(dir.join(session::files::CONFIG), saved.to_toml())
        .with_context(|| format!("writing {}", dir.join(session::files::CONFIG).display()))?;

    let shared = Arc::new(Shared::new(Arc::clone(&clock), live, 1 + extras.len()));
    let fps = source.info().fps + extras.iter().map(|e| e.source.info().fps).sum::<f64>();
    // Enough for 4 s of the configured rate: the writer drains every ~10 ms, so this never fills unless the
    // disk stalls for seconds, and then it is counted and reported.
    let ring = ((fps * 4.0) as usize).max(1024);
    let (poses_tx, poses_rx) = rtrb::RingBuffer::<PoseRecord>::new(ring);
    let (events_tx, events_rx) = rtrb::RingBuffer::<EventRecord>::new(ring);
    let (truth_tx, truth_rx) = rtrb::RingBuffer::<TruthRecord>::new(ring);
    let (lat_full_tx, lat_full_rx) = rtrb::RingBuffer::<Box<LatencySet>>::new(4);
    let (mut lat_empty_tx, lat_empty_rx) = rtrb::RingBuffer::<Box<LatencySet>>::new(4);
    for _ in 0..3 {
        let _ = lat_empty_tx.push(Box::new(LatencySet::with_cameras(extras.len())));
    }
    let (pose_tx, pose_rx) = rtrb::RingBuffer::<PoseMsg>::new(4);
    // Each further camera's inference thread has its own ring to actuation (SPSC: one producer each).
    let (further_tx, further_rx): (Vec<_>, Vec<_>) = extras
        .iter()
        .map(|_| rtrb::RingBuffer::<PoseMsg>::new(4))
        .unzip();
    let (slot_in, slot_out) = triple_buffer::triple_buffer(&Frame::for_source(source.info()));
    let mut cameras = vec![CameraSummary {
        camera: 0,
        name: String::new(),
        source: source.info().name.clone(),
        size: [source.info().width, source.info().height],
        fps: source.info().fps,
        dir: ".".into(),
        frames: FrameCounts::default(),
    }];
    cameras.extend(extras.iter().enumerate().map(|(i, e)| CameraSummary {
        camera: (i + 1) as u8,
        name: e.name.clone(),
        source: e.source.info().name.clone(),
        size: [e.source.info().width, e.source.info().height],
        fps: e.source.info().fps,
        dir: session::files::camera_dir(i + 1),
        frames: FrameCounts::default(),
    }));

    let writer = {
        let inputs = WriterInputs {
            dir: dir.clone(),
            keypoints: keypoints.clone(),
            cameras,
            camera_keypoints: extras
                .iter()
                .map(|e| e.model.keypoints().to_vec())
                .collect(),
            truth_keypoints: source
                .truth_keypoints()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            trigger_names,
            poses: poses_rx,
            events: events_rx,
            truth: truth_rx,
            latency_full: lat_full_rx,
            latency_empty: lat_empty_tx,
            shared: Arc::clone(&shared),
            backend: model.backend().to_string(),
            source: source.info().name.clone(),
        };
        let shared = Arc::clone(&shared);
        spawn("reflex-writer", move || {
            let r = session::run_writer(inputs);
            if let Err(e) = &r {
                shared.fail(format!("writing the session files: {e}"));
            }
            r
        })?
    };

    // Hot reload: the watcher checks new versions of the script off the loop; the actuation thread swaps
    // them in between frames and hands the old ones back to be freed.
    let (script_rx, retired_tx, watcher) = match (&config.script, decide.script_source()) {
        (Some(sc), Some((path, text))) if sc.reload => {
            let (updates_tx, updates_rx) = rtrb::RingBuffer::new(1);
            let (retired_tx, retired_rx) = rtrb::RingBuffer::new(2);
            let triggers: Vec<&str> = config
                .triggers
                .iter()
                .map(|t| t.get_ref().name.as_str())
                .collect();
            let watcher = crate::script::Watcher::new(sc, path, text, &names, &triggers);
            let handle = crate::script::spawn_watcher(
                watcher,
                updates_tx,
                retired_rx,
                Arc::clone(&shared),
                dir.clone(),
            )
            .context("starting the script watcher thread")?;
            (Some(updates_rx), Some(retired_tx), Some(handle))
        }
        _ => (None, None, None),
    };
    let on_script_error = config
        .script
        .as_ref()
        .map(|s| s.on_error)
        .unwrap_or_default();

    let actuation = {
        let stage = Actuation {
            decide,
            script_updates: script_rx,
            retired_scripts: retired_tx,
            on_script_error,
            last_frame: 0,
            unsent_notice: None,
            output,
            clock: Arc::clone(&clock),
            shared: Arc::clone(&shared),
            poses_in: pose_rx,
            further_in: further_rx,
            poses_out: poses_tx,
            events: events_tx,
            lat_full: lat_full_tx,
            lat_empty: lat_empty_rx,
            latency: Box::new(LatencySet::with_cameras(extras.len())),
            heartbeat_ns: u64::from(config.output.heartbeat_ms) * 1_000_000,
            in_flight: [InFlight::default(); IN_FLIGHT],
            device_clock: DeviceClock::default(),
            pending_sync: None,
            next_sync_ns: 0,
            writer: writer.thread().clone(),
        };
        spawn("reflex-actuation", move || stage.run())?
    };

    // One slot and one inference thread per camera; camera 0's slot is made above.
    let mut slots_in = vec![(slot_in, Some(truth_tx))];
    let mut stages = vec![Inference {
        camera: 0,
        slot: slot_out,
        pose: Pose::new(keypoints.len()),
        model: Box::new(model),
        poses: pose_tx,
        clock: Arc::clone(&clock),
        shared: Arc::clone(&shared),
        actuation: actuation.thread().clone(),
    }];
    let mut sources = vec![(source, String::new())];
    for (i, (extra, poses)) in extras.into_iter().zip(further_tx).enumerate() {
        let mut first = Frame::for_source(extra.source.info());
        first.camera = (i + 1) as u8;
        let (slot_in, slot_out) = triple_buffer::triple_buffer(&first);
        slots_in.push((slot_in, None));
        stages.push(Inference {
            camera: (i + 1) as u8,
            slot: slot_out,
            pose: Pose::new(extra.model.keypoints().len()),
            model: Box::new(extra.model),
            poses,
            clock: Arc::clone(&clock),
            shared: Arc::clone(&shared),
            actuation: actuation.thread().clone(),
        });
        sources.push((extra.source, extra.label));
    }
    let inferences = spawn_per_camera(
        "reflex-inference",
        stages,
        &shared,
        Inference::run,
        Inference::finished,
    );
    // A camera without an inference thread (it could not start) gets no capture thread either.
    let mut capture_stages = Vec::with_capacity(sources.len());
    for (i, ((source, label), (slot, truth))) in sources.into_iter().zip(slots_in).enumerate() {
        let Some(inference) = inferences.get(i) else {
            Capture::finished(&shared);
            continue;
        };
        capture_stages.push(Capture {
            camera: i as u8,
            label,
            source: Box::new(source),
            slot,
            truth,
            shared: Arc::clone(&shared),
            inference: inference.thread().clone(),
            max_frames: opts.max_frames.filter(|_| i == 0),
        });
    }
    let captures = spawn_per_camera(
        "reflex-capture",
        capture_stages,
        &shared,
        Capture::run,
        Capture::finished,
    );
    if captures.len() < inferences.len() {
        inferences.iter().for_each(|t| t.thread().unpark());
    }

    if config.realtime.enabled {
        use std::os::unix::thread::JoinHandleExt;
        let rt = &config.realtime;
        let mut threads = vec![(actuation.as_pthread_t(), rt.actuation_priority)];
        threads.extend(inferences.iter().enumerate().map(|(i, t)| {
            let priority = if i == 0 {
                rt.inference_priority
            } else {
                rt.camera_inference_priority
            };
            (t.as_pthread_t(), priority)
        }));
        threads.extend(
            captures
                .iter()
                .map(|c| (c.as_pthread_t(), rt.capture_priority)),
        );
        let refused = threads
            .iter()
            .find_map(|&(t, p)| realtime::promote(t, p).err());
        match refused {
            None => shared.realtime.store(true, Ordering::Relaxed),
            Some(e) => (opts.notice)(format!(
                "note: real-time scheduling refused ({e}); the loop runs at normal priority, so expect larger latency spikes (grant CAP_SYS_NICE or set [realtime] enabled = false)"
            )),
        }
    }

    // The caller's thread: end conditions and the status line.
    let start_ns = clock.now_ns();
    let status_every_ns = u64::from(config.session.status_interval_ms) * 1_000_000;
    let mut next_status_ns = start_ns + status_every_ns;
    let mut last = (start_ns, 0u64);
    while !shared.capture_done.load(Ordering::Acquire) {
        let now = clock.now_ns();
        if opts.interrupt.load(Ordering::Relaxed)
            || opts.duration_ns.is_some_and(|d| now - start_ns >= d)
        {
            shared.stop.store(true, Ordering::Release);
        }
        if let Some(status) = opts
            .status
            .as_mut()
            .filter(|_| status_every_ns > 0 && now >= next_status_ns)
        {
            next_status_ns = now + status_every_ns;
            let frames = shared.counts();
            let dt = (now - last.0) as f64 / 1e9;
            status(&Status {
                elapsed_s: (now - start_ns) as f64 / 1e9,
                frames,
                fps: if dt > 0.0 {
                    (frames.processed - last.1) as f64 / dt
                } else {
                    0.0
                },
                records_lost: shared.records_lost.load(Ordering::Relaxed),
                device_errors: shared.device_errors.load(Ordering::Relaxed),
                latency: shared.live.snapshot().latency,
                metrics_addr,
            });
            last = (now, frames.processed);
        }
        for notice in shared.take_notices() {
            (opts.notice)(notice);
        }
        // The caller's thread is not a loop thread; it polls the end conditions a few times per clock tick.
        clock.sleep_until(clock.now_ns() + 5_000_000);
    }

    let mut joined: Vec<Result<(), &str>> = captures
        .into_iter()
        .map(|c| c.join().map_err(|_| "capture thread panicked"))
        .collect();
    joined.extend(
        inferences
            .into_iter()
            .map(|t| t.join().map_err(|_| "inference thread panicked")),
    );
    joined.push(actuation.join().map_err(|_| "actuation thread panicked"));
    for r in joined {
        if let Err(e) = r {
            shared.fail(e.to_string());
        }
    }
    // The loop has ended (its threads are joined): the watcher stops too, whatever ended the session.
    shared.stop.store(true, Ordering::Release);
    if let Some(watcher) = watcher
        && watcher.join().is_err()
    {
        shared.fail("script watcher thread panicked".into());
    }
    for notice in shared.take_notices() {
        (opts.notice)(notice);
    }
    // If a stage died, the flags it would have set are set here, so the writer still drains and closes.
    shared.inference_done.store(true, Ordering::Release);
    shared.actuation_done.store(true, Ordering::Release);
    let summary = writer
        .join()
        .map_err(|_| anyhow!("writer thread panicked"))??;
    // The endpoint served until the files were closed (`reflex_up` 0 at the end); it stops with the session.
    drop(metrics);
    let records_lost = summary.records_lost;
    if records_lost > 0 {
        tracing::error!(
            records_lost,
            "the writer fell behind: {records_lost} records were lost (see summary.json)"
        );
    }
    if let Some(e) = shared.error() {
        return Err(anyhow!("{e}")).with_context(|| {
            format!(
                "session stopped; files are complete up to the error in {}",
                dir.display()
            )
        });
    }
    Ok(Report { dir, summary })
}

/// The rig's frame source from `[source]`, paced by `clock` (shared by `reflex run` and `reflex lightloop`).
/// A synthetic LED lights up once [`Source::attach_device`] wires it to the output device.
pub fn open_source(
    config: &Config,
    config_file: &str,
    clock: &SharedClock,
) -> anyhow::Result<Source> {
    open_kind(&config.source, clock)
        .map_err(|(table, e)| anyhow!("{e}").context(format!("{config_file}: [source{table}]")))
}

/// Opens `source`'s kind; an error comes with the table it concerns (`.video`, or empty for `kind`).
fn open_kind(
    source: &crate::config::SourceConfig,
    clock: &SharedClock,
) -> Result<Source, (&'static str, String)> {
    let clock = Arc::clone(clock);
    let opened = match source.kind.as_str() {
        "synthetic" => SyntheticCamera::new(&source.synthetic, clock)
            .map(Source::Synthetic)
            .map_err(|e| (".synthetic", e)),
        "video" => VideoSource::open(&source.video, clock)
            .map(Source::Video)
            .map_err(|e| (".video", e)),
        "aravis" => crate::camera::aravis::AravisSource::open(&source.aravis, clock)
            .map(Source::Aravis)
            .map_err(|e| (".aravis", e)),
        "v4l2" => crate::camera::v4l2_stream::V4l2Source::open(&source.v4l2, clock)
            .map(Source::V4l2)
            .map_err(|e| (".v4l2", e)),
        other => {
            return Err((
                "",
                format!(
                    "unknown frame source `{other}` (this build has: synthetic, video:PATH[@FPS|@max], aravis:NAME, v4l:/dev/videoN)"
                ),
            ));
        }
    };
    opened.map_err(|(table, e)| (table, e.to_string()))
}

/// A further camera (`[[camera]]`), opened and its model ready for its frames, before the loop starts.
struct FurtherCamera {
    /// `[[camera]] name`.
    name: String,
    /// How errors name it: `camera 1 (side)`.
    label: String,
    source: Source,
    model: inference::Model,
}

/// Opens every `[[camera]]` with its model (its own `[camera.model]`, else `[model]`) prepared for its frames;
/// errors name the file, the camera's line and the table.
fn open_further_cameras(
    opts: &mut RunOptions,
    clock: &SharedClock,
) -> anyhow::Result<Vec<FurtherCamera>> {
    let (config, text, config_file) = (&opts.config, &opts.config_text, &opts.config_file);
    let notice = &mut *opts.notice;
    let mut opened = Vec::with_capacity(config.cameras.len());
    for (i, spanned) in config.cameras.iter().enumerate() {
        let camera = spanned.get_ref();
        let label = crate::config::camera_label(i + 1, &camera.name);
        // A camera given with --source has no line in the file.
        let at = if spanned.span().is_empty() {
            label.clone()
        } else {
            format!(
                "{config_file} line {}: {label}",
                line_of(text, spanned.span().start)
            )
        };
        let source = open_kind(&camera.source(), clock).map_err(|(table, e)| {
            anyhow!("{}", crate::config::for_camera(&e)).context(format!("{at}: [camera{table}]"))
        })?;
        let model_config = camera.model.as_ref().unwrap_or(&config.model);
        let mut model = inference::load(model_config, notice)
            .with_context(|| format!("{at}: loading the pose model `{}`", model_config.path))?;
        let info = source.info();
        model
            .prepare(info.width, info.height, info.format)
            .with_context(|| {
                format!(
                    "{at}: preparing the pose model `{}` for {}x{} frames",
                    model_config.path, info.width, info.height
                )
            })?;
        notice(format!(
            "{label}: {} {}x{} at {} frames/s, model `{}`",
            info.name, info.width, info.height, info.fps, model_config.path
        ));
        opened.push(FurtherCamera {
            name: camera.name.clone(),
            label,
            source,
            model,
        });
    }
    Ok(opened)
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<JoinHandle<T>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("starting thread {name}"))
}

/// Starts one thread per camera's stage (`name` for camera 0, `name-N` for camera N), each running `run`.
/// When one cannot start, the session fails and `finished` counts it and every stage after it as ended, so
/// the threads waiting for all of them still end.
fn spawn_per_camera<S: Send + 'static>(
    name: &str,
    stages: Vec<S>,
    shared: &Shared,
    run: fn(S),
    finished: fn(&Shared),
) -> Vec<JoinHandle<()>> {
    let n = stages.len();
    let mut handles = Vec::with_capacity(n);
    for (i, stage) in stages.into_iter().enumerate() {
        let name = match i {
            0 => name.to_string(),
            i => format!("{name}-{i}"),
        };
        match spawn(&name, move || run(stage)) {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                shared.fail(format!("{e:#}"));
                (i..n).for_each(|_| finished(shared));
                break;
            }
        }
    }
    handles
}

/// Wait for work on a loop thread: parked, woken by the producer's `unpark`, or after `timeout`.
fn wait(timeout: Duration) {
    thread::park_timeout(timeout);
}

struct Capture {
    /// 0 for `[source]`, 1, 2, … for `[[camera]]` tables.
    camera: u8,
    /// How errors name a further camera (`camera 1 (side)`); empty for camera 0.
    label: String,
    source: Box<dyn FrameSource>,
    slot: triple_buffer::Input<Frame>,
    /// Ground truth goes to the writer for camera 0 only.
    truth: Option<rtrb::Producer<TruthRecord>>,
    shared: Arc<Shared>,
    inference: Thread,
    max_frames: Option<u64>,
}

impl Capture {
    fn run(mut self) {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.run_loop()));
        if result.is_err() {
            self.shared.fail(format!(
                "capture thread of {} panicked",
                self.name_for_errors()
            ));
        }
        // Every camera ends the session together: one that stops (end of file, an error) stops the others.
        self.shared.stop.store(true, Ordering::Release);
        Self::finished(&self.shared);
        self.inference.unpark();
    }

    /// Counts one capture thread as ended; the last one marks capture done.
    fn finished(shared: &Shared) {
        if shared.captures_running.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.capture_done.store(true, Ordering::Release);
        }
    }

    /// `camera `NAME`` for camera 0 (as a one-camera rig always said), `camera 1 (side) `NAME`` otherwise.
    fn name_for_errors(&self) -> String {
        if self.camera == 0 {
            format!("camera `{}`", self.source.info().name)
        } else {
            format!("{} `{}`", self.label, self.source.info().name)
        }
    }

    fn run_loop(&mut self) {
        let counters = &self.shared.cameras[usize::from(self.camera)];
        while !self.shared.stop.load(Ordering::Acquire) {
            if self
                .max_frames
                .is_some_and(|n| counters.captured.load(Ordering::Relaxed) >= n)
            {
                break;
            }
            let frame = self.slot.input_buffer_mut();
            match self.source.next_frame(frame) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let mut message = format!("{}: {e}", self.name_for_errors());
                    if self.camera != 0 {
                        message = crate::config::for_camera(&message);
                    }
                    self.shared.fail(message);
                    break;
                }
            }
            frame.camera = self.camera;
            if let Some(truth) = self.truth.as_mut()
                && !frame.truth.is_empty()
            {
                let rec = TruthRecord {
                    frame: frame.id,
                    exposure_ns: frame.t_exposure_ns,
                    truth: frame.truth,
                };
                if truth.push(rec).is_err() {
                    self.shared.records_lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            // `publish` tells, atomically, whether it replaced a frame inference never took: that one is stale.
            if self.slot.publish() {
                counters.stale.fetch_add(1, Ordering::Relaxed);
            }
            counters.captured.fetch_add(1, Ordering::Relaxed);
            counters
                .source_skipped
                .store(self.source.skipped(), Ordering::Relaxed);
            self.inference.unpark();
        }
    }
}

/// One camera's inference thread: its newest frame → its model → a pose for the actuation thread.
struct Inference {
    /// 0 for the loop's camera, 1, 2, … for `[[camera]]` tables.
    camera: u8,
    slot: triple_buffer::Output<Frame>,
    model: Box<dyn PoseModel>,
    pose: Pose,
    poses: rtrb::Producer<PoseMsg>,
    clock: SharedClock,
    shared: Arc<Shared>,
    actuation: Thread,
}

impl Inference {
    /// Counts one inference thread as ended; the last one marks inference done.
    fn finished(shared: &Shared) {
        if shared.inferences_running.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.inference_done.store(true, Ordering::Release);
        }
    }

    fn run(mut self) {
        loop {
            if !self.slot.update() {
                // Check "capture done" before looking again, so a frame published just before it is not lost.
                if self.shared.capture_done.load(Ordering::Acquire) {
                    if !self.slot.update() {
                        break;
                    }
                } else {
                    wait(Duration::from_millis(5));
                    continue;
                }
            }
            let frame = self.slot.output_buffer();
            let infer_start_ns = self.clock.now_ns();
            let probe = PROBES.get();
            probe.inspect(|p| (p.inference)(true));
            let estimated = self.model.estimate(frame, &mut self.pose);
            probe.inspect(|p| (p.inference)(false));
            if let Err(e) = estimated {
                let at = match frame.camera {
                    0 => String::new(),
                    n => format!("camera {n} "),
                };
                self.shared
                    .fail(format!("inference on {at}frame {}: {e}", frame.id));
                break;
            }
            let msg = PoseMsg {
                camera: self.camera,
                frame: frame.id,
                stamps: Stamps {
                    exposure_ns: frame.t_exposure_ns,
                    capture_ns: frame.t_capture_ns,
                    infer_start_ns,
                    infer_end_ns: self.clock.now_ns(),
                    ..Stamps::default()
                },
                pose: self.pose,
            };
            if self.poses.push(msg).is_err() {
                self.shared.cameras[usize::from(self.camera)]
                    .actuation_full
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.actuation.unpark();
        }
        Self::finished(&self.shared);
        self.actuation.unpark();
    }
}

/// Commands awaiting their device acknowledgement, indexed by `seq % IN_FLIGHT`.
const IN_FLIGHT: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
struct InFlight {
    seq: u16,
    written_ns: u64,
    exposure_ns: u64,
    live: bool,
}

/// Predict → trigger → output, on its own thread; owns the output device.
pub(crate) struct Actuation {
    /// Predictor, triggers and script: the per-frame decision, shared with `reflex replay`.
    decide: DecisionStep,
    /// New versions of the script from the watcher (hot reload), when it is on.
    script_updates: Option<rtrb::Consumer<crate::script::Update>>,
    /// Scripts swapped out, back to the watcher to be freed off this thread.
    retired_scripts: Option<rtrb::Producer<Box<reflex_plugins::script::Script>>>,
    /// What a failed script call does to the session.
    on_script_error: OnScriptError,
    /// The last frame processed (events between frames carry it).
    last_frame: u64,
    /// A notice the caller's thread has not taken yet (its lock was busy).
    unsent_notice: Option<String>,
    output: Box<dyn Output>,
    clock: SharedClock,
    shared: Arc<Shared>,
    poses_in: rtrb::Consumer<PoseMsg>,
    /// Poses of the further cameras, one ring per camera's inference thread.
    further_in: Vec<rtrb::Consumer<PoseMsg>>,
    poses_out: rtrb::Producer<PoseRecord>,
    events: rtrb::Producer<EventRecord>,
    lat_full: rtrb::Producer<Box<LatencySet>>,
    lat_empty: rtrb::Consumer<Box<LatencySet>>,
    latency: Box<LatencySet>,
    heartbeat_ns: u64,
    in_flight: [InFlight; IN_FLIGHT],
    /// Device time → host time, from clock sync.
    device_clock: DeviceClock,
    /// The clock-sync request in flight: (seq, host ns when sent).
    pending_sync: Option<(u16, u64)>,
    /// When to send the next clock-sync request (host ns): one every [`SYNC_EVERY_NS`], so the least-delay
    /// mapping always has recent exchanges to choose from and follows the device clock's drift.
    next_sync_ns: u64,
    writer: Thread,
}

impl Actuation {
    fn run(mut self) {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.run_loop()));
        if let Err(panic) = &result {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            self.shared
                .fail(format!("actuation thread panicked: {what}"));
        }
        // Whatever happened: outputs to rest, then the device off.
        self.shutdown();
        self.shared.actuation_done.store(true, Ordering::Release);
        self.writer.unpark();
    }

    fn run_loop(&mut self) {
        self.sync_clock();
        let mut next_heartbeat_ns = 0;
        self.latency.reset(self.clock.now_ns());
        let interval_ns = 1_000_000_000;
        loop {
            let now = self.clock.now_ns();
            if now >= next_heartbeat_ns {
                if let Err(e) = self.output.heartbeat() {
                    self.shared
                        .fail(format!("output `{}`: {e}", self.output.info().name));
                    return;
                }
                next_heartbeat_ns = now + self.heartbeat_ns;
            }
            if now >= self.next_sync_ns {
                // A request that never got its reply is replaced.
                if let Ok(seq) = self.output.request_sync() {
                    self.pending_sync = Some((seq, now));
                }
                self.next_sync_ns = now + SYNC_EVERY_NS;
            }
            self.poll_device();
            if now >= self.latency.start_ns + interval_ns {
                self.swap_latency(now);
            }
            if let Err(e) = self.take_script_update() {
                self.shared.fail(e);
                return;
            }
            if let Some(notice) = self.unsent_notice.take() {
                self.unsent_notice = self.shared.notify(notice).err();
            }
            match self.next_pose() {
                Some(msg) => {
                    let probe = PROBES.get();
                    probe.inspect(|p| (p.actuation)(true));
                    let processed = self.process(msg);
                    probe.inspect(|p| (p.actuation)(false));
                    if let Err(e) = processed {
                        self.shared.fail(e);
                        return;
                    }
                }
                None if self.shared.inference_done.load(Ordering::Acquire)
                    && self.poses_in.is_empty()
                    && self.further_in.iter().all(rtrb::Consumer::is_empty) =>
                {
                    return;
                }
                None => {
                    let until_heartbeat = next_heartbeat_ns.saturating_sub(self.clock.now_ns());
                    // While a clock-sync reply is due, look often: the time it waits unread counts as
                    // round trip and loosens the mapping.
                    let longest = if self.pending_sync.is_some() {
                        SYNC_POLL_NS
                    } else {
                        5_000_000
                    };
                    wait(Duration::from_nanos(
                        until_heartbeat.clamp(SYNC_POLL_NS, longest),
                    ));
                }
            }
        }
    }

    /// The next pose to handle: camera 0's first (the loop), else a further camera's.
    fn next_pose(&mut self) -> Option<PoseMsg> {
        self.poses_in
            .pop()
            .ok()
            .or_else(|| self.further_in.iter_mut().find_map(|r| r.pop().ok()))
    }

    /// One frame: predict, decide, command. No allocation, no blocking. A further camera's pose is recorded
    /// with its latency and goes no further.
    fn process(&mut self, msg: PoseMsg) -> Result<(), String> {
        if msg.camera != 0 {
            self.record_further_camera(msg);
            return Ok(());
        }
        let mut stamps = msg.stamps;
        stamps.actuation_ns = self.clock.now_ns();
        let input = FrameInput {
            frame: msg.frame,
            exposure_ns: stamps.exposure_ns,
            actuation_ns: stamps.actuation_ns,
            measured: &msg.pose,
        };
        let (clock, events, shared) = (&self.clock, &mut self.events, &*self.shared);
        let decided = self
            .decide
            .step(&input, &mut |_| clock.now_ns(), &mut |ev| {
                push_or_count(events, ev, shared)
            });
        let target_ns = decided.target_ns;
        stamps.predicted_ns = decided.predicted_ns;
        stamps.decided_ns = decided.decided_ns;

        self.shared
            .actions_dropped
            .store(self.decide.dropped_actions(), Ordering::Relaxed);
        self.last_frame = msg.frame;
        for i in 0..self.decide.actions().len() {
            let action = self.decide.actions()[i];
            stamps.written_ns = self
                .execute(action, Some(msg.frame), stamps.exposure_ns)?
                .unwrap_or(stamps.written_ns);
        }
        // A failed script call: its outputs are already off (the step's last actions, just sent).
        if let Some(failure) = self.decide.take_script_failure() {
            match self.on_script_error {
                OnScriptError::Stop => return Err(failure.to_string()),
                OnScriptError::Disable => {
                    let notice = format!(
                        "{failure}; the session goes on without it ([script] on_error = \"disable\"; a fixed file is reloaded)"
                    );
                    self.unsent_notice = self.shared.notify(notice).err();
                }
            }
        }
        self.poll_device();

        let lat = &mut self.latency;
        lat.record(
            Stage::Capture,
            stamps.capture_ns.saturating_sub(stamps.exposure_ns),
        );
        lat.record(
            Stage::QueueInference,
            stamps.infer_start_ns.saturating_sub(stamps.capture_ns),
        );
        let inference_ns = stamps.infer_end_ns.saturating_sub(stamps.infer_start_ns);
        lat.record(Stage::Inference, inference_ns);
        lat.record(
            Stage::QueueActuation,
            stamps.actuation_ns.saturating_sub(stamps.infer_end_ns),
        );
        lat.record(
            Stage::Predict,
            stamps.predicted_ns.saturating_sub(stamps.actuation_ns),
        );
        lat.record(
            Stage::Trigger,
            stamps.decided_ns.saturating_sub(stamps.predicted_ns),
        );
        if stamps.written_ns != 0 {
            lat.record(
                Stage::Output,
                stamps.written_ns.saturating_sub(stamps.decided_ns),
            );
        }
        let end_ns = stamps.written_ns.max(stamps.decided_ns);
        let e2e = end_ns.saturating_sub(stamps.exposure_ns);
        lat.record(Stage::EndToEnd, e2e);
        lat.record(Stage::OutsideInference, e2e.saturating_sub(inference_ns));

        let rec = PoseRecord {
            camera: 0,
            frame: msg.frame,
            stamps,
            target_ns,
            measured: msg.pose,
            predicted: *self.decide.predicted(),
        };
        push_or_count(&mut self.poses_out, rec, &self.shared);
        self.shared.cameras[0]
            .processed
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A further camera's pose: its stages into its own histograms, its record to the writer.
    fn record_further_camera(&mut self, msg: PoseMsg) {
        let s = msg.stamps;
        let camera = usize::from(msg.camera);
        for (stage, from, to) in [
            (CameraStage::Capture, s.exposure_ns, s.capture_ns),
            (CameraStage::QueueInference, s.capture_ns, s.infer_start_ns),
            (CameraStage::Inference, s.infer_start_ns, s.infer_end_ns),
            (CameraStage::ExposureToPose, s.exposure_ns, s.infer_end_ns),
        ] {
            self.latency
                .record_camera(camera, stage, to.saturating_sub(from));
        }
        let rec = PoseRecord {
            camera: msg.camera,
            frame: msg.frame,
            stamps: s,
            target_ns: 0,
            measured: msg.pose,
            predicted: msg.pose,
        };
        push_or_count(&mut self.poses_out, rec, &self.shared);
        if let Some(counters) = self.shared.cameras.get(camera) {
            counters.processed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hot reload, between two frames: swap in a new script version from the watcher (the old one's rest
    /// actions are sent now, and the old one goes back to be freed off this thread), or record a refused one.
    fn take_script_update(&mut self) -> Result<(), String> {
        let (Some(updates), Some(retired)) = (&mut self.script_updates, &mut self.retired_scripts)
        else {
            return Ok(());
        };
        // Take an update only when the old script has a way back: it is never freed here.
        if retired.slots() == 0 {
            return Ok(());
        }
        let Ok(update) = updates.pop() else {
            return Ok(());
        };
        let t_ns = self.clock.now_ns();
        let (what, version, rest) = match update {
            crate::script::Update::Accepted { script, version } => {
                let (rest, old) = self.decide.replace_script(script);
                if let Some(old) = old
                    && retired.push(old).is_err()
                {
                    unreachable!("a slot was free before the swap");
                }
                (ScriptEvent::Reloaded, version, Some(rest))
            }
            crate::script::Update::Rejected { version } => {
                (ScriptEvent::ReloadRejected, version, None)
            }
        };
        let ev = EventRecord::Script {
            frame: self.last_frame,
            t_ns,
            what,
            version,
        };
        push_or_count(&mut self.events, ev, &self.shared);
        for &action in rest.iter().flat_map(|r| r.as_slice()) {
            self.execute(action, Some(self.last_frame), 0)?;
        }
        Ok(())
    }

    /// Carry out one action; returns the write time when a command went to the device.
    /// `frame` is `None` for actions sent while stopping.
    fn execute(
        &mut self,
        action: Action,
        frame: Option<u64>,
        exposure_ns: u64,
    ) -> Result<Option<u64>, String> {
        match decision::route(action, frame, || self.clock.now_ns()) {
            Routed::Command(command) => self.send(command, frame, exposure_ns).map(Some),
            Routed::Event(ev) => {
                push_or_count(&mut self.events, ev, &self.shared);
                Ok(None)
            }
        }
    }

    fn send(
        &mut self,
        command: OutputCommand,
        frame: Option<u64>,
        exposure_ns: u64,
    ) -> Result<u64, String> {
        let seq = self
            .output
            .send(command, frame_tag(frame))
            .map_err(|e| format!("output `{}`: {e}", self.output.info().name))?;
        let written_ns = self.clock.now_ns();
        self.in_flight[seq as usize % IN_FLIGHT] = InFlight {
            seq,
            written_ns,
            exposure_ns,
            live: true,
        };
        let ev = EventRecord::Command {
            frame,
            t_ns: written_ns,
            seq,
            command,
            shutdown: frame.is_none(),
        };
        push_or_count(&mut self.events, ev, &self.shared);
        Ok(written_ns)
    }

    /// Handle every device reply received so far: acks become latency samples and events.
    fn poll_device(&mut self) {
        let wire = self.output.sync_timing();
        let Self {
            output,
            in_flight,
            latency,
            events,
            shared,
            device_clock,
            pending_sync,
            clock,
            ..
        } = self;
        let res = output.poll(&mut |ev| match ev {
            DeviceEvent::SyncReply {
                seq,
                device_time_us,
            } => {
                if let Some((want, sent_ns)) = *pending_sync
                    && want == seq
                {
                    device_clock.add(device_time_us, sent_ns, clock.now_ns(), wire);
                    *pending_sync = None;
                }
            }
            DeviceEvent::Ack {
                seq,
                tag,
                device_time_us,
            } => {
                let t_ns = device_clock.host_ns(device_time_us).unwrap_or(0);
                let slot = &mut in_flight[seq as usize % IN_FLIGHT];
                if slot.live && slot.seq == seq && t_ns != 0 {
                    latency.record(Stage::DeviceAck, t_ns.saturating_sub(slot.written_ns));
                    if slot.exposure_ns != 0 {
                        latency.record(
                            Stage::ExposureToOutput,
                            t_ns.saturating_sub(slot.exposure_ns),
                        );
                    }
                    slot.live = false;
                }
                push_or_count(
                    events,
                    EventRecord::Ack {
                        frame: tag_frame(tag),
                        seq,
                        device_time_us,
                        t_ns,
                    },
                    shared,
                );
            }
            DeviceEvent::Error { seq, error } => {
                shared.device_errors.fetch_add(1, Ordering::Relaxed);
                push_or_count(
                    events,
                    EventRecord::DeviceError {
                        t_ns: clock.now_ns(),
                        seq,
                        error,
                    },
                    shared,
                );
            }
            _ => {}
        });
        if let Err(e) = res {
            self.shared
                .fail(format!("output `{}`: {e}", self.output.info().name));
        }
    }

    /// The first clock-sync points, before any frame: [`device_clock::WINDOW`] exchanges one after the other,
    /// so the least-delay mapping starts from the best of them (later ones come every [`SYNC_EVERY_NS`] from
    /// the loop).
    fn sync_clock(&mut self) {
        device_clock::sync_burst(
            &mut *self.output,
            &*self.clock,
            &mut self.device_clock,
            &mut |_| {},
        );
    }

    fn swap_latency(&mut self, now: u64) {
        if let Ok(mut fresh) = self.lat_empty.pop() {
            fresh.reset(now);
            let mut full = std::mem::replace(&mut self.latency, fresh);
            full.end_ns = now;
            if let Err(rtrb::PushError::Full(_)) = self.lat_full.push(full) {
                self.shared.records_lost.fetch_add(1, Ordering::Relaxed);
            }
            self.writer.unpark();
        }
    }

    /// Outputs to rest: every trigger's resting actions, then all off; the last histograms to the writer.
    fn shutdown(&mut self) {
        let rest = self.decide.rest();
        for &action in rest.as_slice() {
            if let Err(e) = self.execute(action, None, 0) {
                self.shared.fail(e);
            }
        }
        if let Some(failure) = self.decide.take_script_failure() {
            match self.on_script_error {
                OnScriptError::Stop => self.shared.fail(failure.to_string()),
                OnScriptError::Disable => {
                    let _ = self.shared.notify(failure.to_string());
                }
            }
        }
        if let Err(e) = self.output.all_off() {
            self.shared.fail(format!(
                "output `{}`: turning all outputs off failed: {e}",
                self.output.info().name
            ));
        } else {
            let ev = EventRecord::Command {
                frame: None,
                t_ns: self.clock.now_ns(),
                seq: 0,
                command: OutputCommand::AllOff,
                shutdown: true,
            };
            push_or_count(&mut self.events, ev, &self.shared);
        }
        // Collect the last acks (the device stamps the pin change a little after the write), bounded in time.
        let give_up_ns = self.clock.now_ns() + 100_000_000;
        loop {
            self.poll_device();
            if self.in_flight.iter().all(|f| !f.live) || self.clock.now_ns() >= give_up_ns {
                break;
            }
            wait(Duration::from_micros(200));
        }
        let now = self.clock.now_ns();
        self.swap_latency(now);
    }
}

fn push_or_count<T>(ring: &mut rtrb::Producer<T>, value: T, shared: &Shared) {
    if ring.push(value).is_err() {
        shared.records_lost.fetch_add(1, Ordering::Relaxed);
    }
}
