//! The session folder and the writer thread that fills it.
//!
//! The writer is the only thread that touches files. It drains the loop's SPSC rings every few ms, writes
//! whole lines and flushes after each batch, and rewrites `summary.json` (by atomic rename) every second, so
//! the folder is valid at any moment, even if the process is killed.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use reflex_firmware_bridge::OutputCommand;
use reflex_plugins::pose::Pose;
use serde::{Deserialize, Serialize};

use crate::latency::{LatencySet, Quantiles};
use crate::metrics::{LiveLatency, LiveSnapshot};
use crate::pipeline::Shared;
use crate::record::{EventRecord, PoseRecord, TruthRecord};

/// File names inside a session folder.
pub mod files {
    /// The effective configuration.
    pub const CONFIG: &str = "config.toml";
    /// Measured and predicted poses, one row per processed frame × keypoint.
    pub const POSES: &str = "poses.csv";
    /// Host timestamps of every processed frame's way through the loop, one row per frame.
    pub const FRAMES: &str = "frames.csv";
    /// Trigger changes, output commands, device acks (JSON lines).
    pub const EVENTS: &str = "events.jsonl";
    /// HdrHistogram interval log, one tag per stage.
    pub const LATENCY: &str = "latency.hlog";
    /// Counts and latency percentiles.
    pub const SUMMARY: &str = "summary.json";
    /// True keypoints of every captured frame (synthetic camera only).
    pub const GROUND_TRUTH: &str = "ground_truth.csv";
    /// The folder of further camera `n` (1, 2, …): its own `poses.csv` (measured only) and `frames.csv`
    /// (stamps up to the pose).
    pub fn camera_dir(n: usize) -> String {
        format!("camera{n}")
    }
}

/// One camera of the session, as `summary.json` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CameraSummary {
    /// 0 for `[source]` (drives the loop); 1, 2, … for `[[camera]]` tables.
    pub camera: u8,
    /// Its label (`[[camera]] name`), empty when none.
    pub name: String,
    /// The frame source.
    pub source: String,
    /// Frame width and height (px).
    pub size: [u32; 2],
    /// Nominal frame rate (frames/s).
    pub fps: f64,
    /// Where its files are in the session folder (`.` for camera 0).
    pub dir: String,
    /// Its frame counts (`dropped` and its parts as for the session's `frames`).
    pub frames: FrameCounts,
}

/// Frame counts of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameCounts {
    /// Frames the source delivered.
    pub captured: u64,
    /// Frames that went through the whole loop.
    pub processed: u64,
    /// Frames lost anywhere: skipped by the source, replaced by a newer frame before inference took them
    /// (latest frame wins), or refused by a full hand-off to actuation.
    pub dropped: u64,
    /// Of `dropped`: skipped by the source itself (it fell behind its own clock).
    pub source_skipped: u64,
    /// Of `dropped`: replaced in the capture → inference slot by a newer frame.
    pub stale: u64,
    /// Of `dropped`: refused by a full inference → actuation ring.
    pub actuation_full: u64,
}

impl FrameCounts {
    /// The parts of `dropped`, by reason (the names in `/metrics` and the reports).
    pub fn dropped_by_reason(&self) -> [(&'static str, u64); 3] {
        [
            ("source_skipped", self.source_skipped),
            ("stale", self.stale),
            ("actuation_full", self.actuation_full),
        ]
    }
}

/// `summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Frame counts.
    pub frames: FrameCounts,
    /// Percentiles per stage (ns), keyed by stage name; `end_to_end` included.
    pub latency_ns: std::collections::BTreeMap<String, Quantiles>,
    /// Lines in `events.jsonl`.
    pub events: u64,
    /// `onnxruntime` or `tract`.
    pub backend: String,
    /// Records the writer could not take because a ring was full (should be 0; anything else is reported loudly).
    pub records_lost: u64,
    /// Errors the output device reported (`device_error` lines in events.jsonl), e.g. watchdog expiries.
    pub device_errors: u64,
    /// Trigger actions lost because one frame produced more than the action buffer holds, or the delay queue
    /// was full (should be 0; anything else is reported loudly).
    #[serde(default)]
    pub actions_dropped: u64,
    /// Whether the loop threads ran with real-time (FIFO) priority.
    pub realtime: bool,
    /// Session length on the host clock (s).
    pub duration_s: f64,
    /// Host clock (ns) at the session start: `latency.hlog` interval timestamps count from here, and the
    /// times in `frames.csv` and `events.jsonl` are on this clock (0 in sessions recorded before it was kept).
    #[serde(default)]
    pub start_ns: u64,
    /// The frame source (camera 0's).
    pub source: String,
    /// Every camera, camera 0 first (its counts are `frames`); empty in sessions recorded before they were
    /// listed.
    #[serde(default)]
    pub cameras: Vec<CameraSummary>,
    /// Whether the session ended normally (`false` while running or after an error).
    pub complete: bool,
    /// The error that ended the session, if any.
    pub error: Option<String>,
}

/// Create a fresh session folder: `out` exactly, or `<parent>/<UTC timestamp>`.
pub fn create_dir(out: Option<&Path>, parent: &Path) -> Result<PathBuf, std::io::Error> {
    let dir = match out {
        Some(d) => d.to_path_buf(),
        None => parent.join(utc_stamp()),
    };
    std::fs::create_dir_all(&dir)?;
    // Prove we can write here before anything starts.
    let probe = dir.join(".reflex-write-test");
    File::create(&probe)?;
    std::fs::remove_file(&probe)?;
    Ok(dir)
}

/// `YYYYMMDDTHHMMSS.mmmZ` for now, from the system clock (session names only; never a loop timestamp).
fn utc_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Everything the writer thread consumes.
pub struct WriterInputs {
    /// The session folder.
    pub dir: PathBuf,
    /// Keypoint names of the model (poses.csv `node`).
    pub keypoints: Vec<String>,
    /// Every camera (camera 0 first) with its frame counts zero; the writer fills them in.
    pub cameras: Vec<CameraSummary>,
    /// Keypoint names of each further camera's model (cameras 1, 2, …; `cameraN/poses.csv` `node`).
    pub camera_keypoints: Vec<Vec<String>>,
    /// Keypoint names of the ground truth (empty: no ground_truth.csv).
    pub truth_keypoints: Vec<String>,
    /// Trigger names by index (events.jsonl).
    pub trigger_names: Vec<String>,
    /// Processed frames.
    pub poses: rtrb::Consumer<PoseRecord>,
    /// Events.
    pub events: rtrb::Consumer<EventRecord>,
    /// Ground truth of captured frames.
    pub truth: rtrb::Consumer<TruthRecord>,
    /// Full latency sets from the actuation thread.
    pub latency_full: rtrb::Consumer<Box<LatencySet>>,
    /// Emptied latency sets going back.
    pub latency_empty: rtrb::Producer<Box<LatencySet>>,
    /// Counters and flags shared with the loop.
    pub shared: Arc<Shared>,
    /// Summary fields known at start.
    pub backend: String,
    /// Source name.
    pub source: String,
}

/// Run the writer until the loop is done and everything is drained. Returns the final summary.
pub fn run_writer(mut w: WriterInputs) -> Result<Summary, std::io::Error> {
    let open = |name: &str| -> Result<BufWriter<File>, std::io::Error> {
        let path = w.dir.join(name);
        File::create(&path)
            .map(|f| BufWriter::with_capacity(1 << 16, f))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    let mut poses = open(files::POSES)?;
    writeln!(poses, "frame,t_ns,track,node,x,y,score,pred_x,pred_y")?;
    let mut frames = open(files::FRAMES)?;
    writeln!(frames, "{FRAMES_HEADER}")?;
    // Further cameras: (poses.csv, frames.csv) in their own folders.
    let mut camera_files = Vec::with_capacity(w.camera_keypoints.len());
    for n in 1..=w.camera_keypoints.len() {
        let dir = files::camera_dir(n);
        std::fs::create_dir_all(w.dir.join(&dir))?;
        let mut poses = open(&format!("{dir}/{}", files::POSES))?;
        writeln!(poses, "frame,t_ns,track,node,x,y,score")?;
        let mut frames = open(&format!("{dir}/{}", files::FRAMES))?;
        writeln!(frames, "{CAMERA_FRAMES_HEADER}")?;
        camera_files.push((poses, frames));
    }
    let mut events = open(files::EVENTS)?;
    let mut truth = if w.truth_keypoints.is_empty() {
        None
    } else {
        Some(open(files::GROUND_TRUTH)?)
    };
    if let Some(t) = truth.as_mut() {
        writeln!(t, "frame,track,node,x,y")?;
    }
    let mut hlog_file = LineFlush(open(files::LATENCY)?);
    let mut serializer = V2DeflateSerializer::new();
    let mut hlog = IntervalLogWriterBuilder::new()
        .add_comment("reflex per-stage latency, ns; one tag per stage (see ARCHITECTURE.md)")
        .with_start_time(std::time::SystemTime::now())
        .begin_log_with(&mut hlog_file, &mut serializer)?;

    let mut totals = LatencySet::with_cameras(w.camera_keypoints.len());
    let tags = totals.tags();
    // The last interval's quantiles and the totals, for the status line and `/metrics`.
    let mut live_latency = LiveLatency::default();
    let mut summary = Summary {
        frames: FrameCounts::default(),
        latency_ns: Default::default(),
        events: 0,
        backend: w.backend.clone(),
        records_lost: 0,
        device_errors: 0,
        actions_dropped: 0,
        realtime: false,
        duration_s: 0.0,
        start_ns: w.shared.start_ns,
        source: w.source.clone(),
        cameras: w.cameras.clone(),
        complete: false,
        error: None,
    };
    let mut line = String::with_capacity(256);
    // A summary exists from the start (`complete: false`), so even a session killed in its first second
    // leaves a valid folder.
    write_summary(&w.dir, &summary)?;
    let mut last_summary_ns = 0u64;
    let shared = Arc::clone(&w.shared);
    loop {
        // Read "done" before draining, so the final drain sees everything the loop produced.
        let done = shared.actuation_done.load(Ordering::Acquire)
            && shared.capture_done.load(Ordering::Acquire);
        while let Ok(r) = w.poses.pop() {
            let camera = usize::from(r.camera);
            match camera
                .checked_sub(1)
                .and_then(|i| Some((camera_files.get_mut(i)?, &w.camera_keypoints[i])))
            {
                None => {
                    write_pose(&mut poses, &mut line, &r, &w.keypoints, true)?;
                    write_frame(&mut frames, &mut line, &r)?;
                }
                Some(((poses, frames), keypoints)) => {
                    write_pose(poses, &mut line, &r, keypoints, false)?;
                    write_camera_frame(frames, &mut line, &r)?;
                }
            }
        }
        while let Ok(e) = w.events.pop() {
            write_event(&mut events, &mut line, &e, &w.trigger_names)?;
            summary.events += 1;
        }
        while let Ok(t) = w.truth.pop() {
            if let Some(out) = truth.as_mut() {
                write_truth(out, &mut line, &t, &w.truth_keypoints)?;
            }
        }
        while let Ok(mut set) = w.latency_full.pop() {
            totals.add(&set);
            live_latency.add_interval(&set);
            let start = Duration::from_nanos(set.start_ns.saturating_sub(shared.start_ns));
            let length = Duration::from_nanos(set.end_ns.saturating_sub(set.start_ns));
            for (tag, h) in tags.iter().zip(set.histograms()) {
                hlog.write_histogram(h, start, length, Tag::new(tag))
                    .map_err(|e| std::io::Error::other(format!("latency.hlog: {e:?}")))?;
            }
            set.reset(0);
            // The actuation thread keeps two spares; a full return ring would only mean it has enough.
            let _ = w.latency_empty.push(set);
        }
        poses.flush()?;
        frames.flush()?;
        for (p, f) in &mut camera_files {
            p.flush()?;
            f.flush()?;
        }
        events.flush()?;
        if let Some(t) = truth.as_mut() {
            t.flush()?;
        }
        let now = shared.clock.now_ns();
        shared.live.publish(LiveSnapshot {
            running: !done,
            elapsed_s: now.saturating_sub(shared.start_ns) as f64 / 1e9,
            frames: shared.counts(),
            cameras: shared.cameras.len(),
            camera_frames: std::array::from_fn(|i| shared.camera_counts(i)),
            records_lost: shared.records_lost.load(Ordering::Relaxed),
            device_errors: shared.device_errors.load(Ordering::Relaxed),
            realtime: shared.realtime.load(Ordering::Relaxed),
            latency: live_latency,
        });
        if done || now.saturating_sub(last_summary_ns) >= 1_000_000_000 {
            last_summary_ns = now;
            fill_summary(&mut summary, &shared, &totals, &tags, now, done);
            write_summary(&w.dir, &summary)?;
        }
        if done {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
    drop(hlog);
    hlog_file.flush()?;
    Ok(summary)
}

fn fill_summary(
    summary: &mut Summary,
    shared: &Shared,
    totals: &LatencySet,
    tags: &[String],
    now_ns: u64,
    done: bool,
) {
    let c = shared.counts();
    summary.frames = c;
    for camera in &mut summary.cameras {
        camera.frames = shared.camera_counts(usize::from(camera.camera));
    }
    summary.records_lost = shared.records_lost.load(Ordering::Relaxed);
    summary.device_errors = shared.device_errors.load(Ordering::Relaxed);
    summary.actions_dropped = shared.actions_dropped.load(Ordering::Relaxed);
    summary.realtime = shared.realtime.load(Ordering::Relaxed);
    summary.duration_s = now_ns.saturating_sub(shared.start_ns) as f64 / 1e9;
    summary.latency_ns = tags
        .iter()
        .zip(totals.histograms())
        .map(|(tag, h)| (tag.clone(), Quantiles::of(h)))
        .collect();
    summary.error = shared.error();
    summary.complete = done && summary.error.is_none();
}

/// Write `summary.json` atomically (temp file + rename), so a reader never sees half of it.
pub fn write_summary(dir: &Path, summary: &Summary) -> Result<(), std::io::Error> {
    let tmp = dir.join(".summary.json.tmp");
    let text = serde_json::to_string_pretty(summary).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, dir.join(files::SUMMARY))
}

/// Append `v` to `line`, or nothing for NaN (a missing point). The shortest decimal that reads back as the
/// same `f32`, so `reflex replay` feeds the predictor and the triggers exactly what the live loop had.
fn push_num(line: &mut String, v: f32) {
    if v.is_finite() {
        let _ = write!(line, "{v}");
    }
}

/// The rows of one frame's pose: with the predicted point (`pred_x,pred_y`) for camera 0, without for a
/// further camera (measured only).
fn write_pose(
    out: &mut impl Write,
    line: &mut String,
    r: &PoseRecord,
    names: &[String],
    predicted: bool,
) -> std::io::Result<()> {
    for (i, (m, name)) in r.measured.points().iter().zip(names).enumerate() {
        line.clear();
        let p = r
            .predicted
            .points()
            .get(i)
            .copied()
            .unwrap_or(reflex_plugins::pose::Keypoint::MISSING);
        let _ = write!(line, "{},{},0,{name},", r.frame, r.stamps.exposure_ns);
        push_num(line, m.x);
        line.push(',');
        push_num(line, m.y);
        line.push(',');
        push_num(line, m.score);
        if predicted {
            line.push(',');
            push_num(line, p.x);
            line.push(',');
            push_num(line, p.y);
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// Flushes at the end of every line, so `latency.hlog` holds whole lines at any moment, like the other files
/// (the interval-log writer borrows its output for the whole session, so it cannot be flushed from outside).
struct LineFlush<W: Write>(W);

impl<W: Write> Write for LineFlush<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        if buf[..n].ends_with(b"\n") {
            self.0.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The header of `frames.csv`: one column per [`crate::record::Stamps`] field, in the order of a frame's way.
pub const FRAMES_HEADER: &str = "frame,exposure_ns,capture_ns,infer_start_ns,infer_end_ns,actuation_ns,predicted_ns,decided_ns,written_ns";

/// One `frames.csv` row: the frame's host stamps (ns); `written_ns` is empty when the frame commanded nothing.
fn write_frame(out: &mut impl Write, line: &mut String, r: &PoseRecord) -> std::io::Result<()> {
    let s = &r.stamps;
    line.clear();
    let _ = write!(
        line,
        "{},{},{},{},{},{},{},{},",
        r.frame,
        s.exposure_ns,
        s.capture_ns,
        s.infer_start_ns,
        s.infer_end_ns,
        s.actuation_ns,
        s.predicted_ns,
        s.decided_ns
    );
    if s.written_ns != 0 {
        let _ = write!(line, "{}", s.written_ns);
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// The header of a further camera's `frames.csv`: its frames' stamps up to the pose.
pub const CAMERA_FRAMES_HEADER: &str = "frame,exposure_ns,capture_ns,infer_start_ns,infer_end_ns";

/// One row of a further camera's `frames.csv`.
fn write_camera_frame(
    out: &mut impl Write,
    line: &mut String,
    r: &PoseRecord,
) -> std::io::Result<()> {
    let s = &r.stamps;
    line.clear();
    let _ = writeln!(
        line,
        "{},{},{},{},{}",
        r.frame, s.exposure_ns, s.capture_ns, s.infer_start_ns, s.infer_end_ns
    );
    out.write_all(line.as_bytes())
}

fn write_truth(
    out: &mut impl Write,
    line: &mut String,
    t: &TruthRecord,
    names: &[String],
) -> std::io::Result<()> {
    write_points(out, line, t.frame, &t.truth, names)
}

fn write_points(
    out: &mut impl Write,
    line: &mut String,
    frame: u64,
    pose: &Pose,
    names: &[String],
) -> std::io::Result<()> {
    for (kp, name) in pose.points().iter().zip(names) {
        line.clear();
        let _ = write!(line, "{frame},0,{name},");
        push_num(line, kp.x);
        line.push(',');
        push_num(line, kp.y);
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// Write one `events.jsonl` line for `e`; `triggers` names the triggers by index (shared with `reflex replay`,
/// so its events have the live format).
pub fn write_event(
    out: &mut impl Write,
    line: &mut String,
    e: &EventRecord,
    triggers: &[String],
) -> std::io::Result<()> {
    line.clear();
    match *e {
        EventRecord::Trigger {
            frame,
            t_ns,
            trigger,
            active,
        } => {
            let name = triggers
                .get(trigger as usize)
                .map(String::as_str)
                .unwrap_or("?");
            let _ = write!(
                line,
                r#"{{"type":"trigger","frame":{frame},"t_ns":{t_ns},"trigger":{},"active":{active}}}"#,
                json_str(name)
            );
        }
        EventRecord::Command {
            frame,
            t_ns,
            seq,
            command,
            shutdown,
        } => {
            let _ = write!(
                line,
                r#"{{"type":"command","frame":{},"t_ns":{t_ns},"seq":{seq},"#,
                JsonOpt(frame)
            );
            match command {
                OutputCommand::SetLevel { channel, high } => {
                    let _ = write!(
                        line,
                        r#""command":"set_level","channel":{channel},"high":{high}"#
                    );
                }
                OutputCommand::Pulse { channel, width_us } => {
                    let _ = write!(
                        line,
                        r#""command":"pulse","channel":{channel},"width_us":{width_us}"#
                    );
                }
                OutputCommand::PulseTrain {
                    channel,
                    period_us,
                    width_us,
                    count,
                } => {
                    let _ = write!(
                        line,
                        r#""command":"pulse_train","channel":{channel},"period_us":{period_us},"width_us":{width_us},"count":{count}"#
                    );
                }
                OutputCommand::AllOff => line.push_str(r#""command":"all_off""#),
            }
            let _ = write!(line, r#","shutdown":{shutdown}}}"#);
        }
        EventRecord::Ack {
            frame,
            seq,
            device_time_us,
            t_ns,
        } => {
            let _ = write!(
                line,
                r#"{{"type":"ack","frame":{},"seq":{seq},"device_time_us":{device_time_us},"t_ns":{t_ns}}}"#,
                JsonOpt(frame)
            );
        }
        EventRecord::Mark {
            frame,
            t_ns,
            code,
            trigger,
        } => {
            let _ = write!(
                line,
                r#"{{"type":"mark","frame":{frame},"t_ns":{t_ns},"code":{code},"trigger":{}}}"#,
                json_str(trigger_name(triggers, trigger))
            );
        }
        EventRecord::Recording {
            frame,
            t_ns,
            trigger,
            start,
        } => {
            let _ = write!(
                line,
                r#"{{"type":"recording","frame":{frame},"t_ns":{t_ns},"trigger":{},"marker":"{}"}}"#,
                json_str(trigger_name(triggers, trigger)),
                if start { "start" } else { "stop" }
            );
        }
        EventRecord::DeviceError { t_ns, seq, error } => {
            let _ = write!(
                line,
                r#"{{"type":"device_error","t_ns":{t_ns},"seq":{seq},"error":"{error:?}","message":{}}}"#,
                json_str(&error.to_string())
            );
        }
        EventRecord::Script {
            frame,
            t_ns,
            what,
            version,
        } => {
            let _ = write!(
                line,
                r#"{{"type":"script","frame":{frame},"t_ns":{t_ns},"what":"{}","version":{version}}}"#,
                what.as_str()
            );
        }
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// The name of trigger `index`, `?` when out of range.
fn trigger_name(triggers: &[String], index: u16) -> &str {
    triggers.get(usize::from(index)).map_or("?", String::as_str)
}

/// A JSON number or `null`.
struct JsonOpt(Option<u64>);

impl std::fmt::Display for JsonOpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("null"),
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"?\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_is_sortable_and_well_formed() {
        let s = utc_stamp();
        assert_eq!(s.len(), "20261123T153612.123Z".len(), "{s}");
        assert!(
            s.starts_with("20") && s.ends_with('Z') && s.as_bytes()[8] == b'T',
            "{s}"
        );
    }

    #[test]
    fn latency_log_lines_reach_the_file_whole() {
        let mut w = LineFlush(BufWriter::new(Vec::new()));
        w.write_all(b"Tag=end_to_end,0.000,1.000,").unwrap();
        assert!(w.0.get_ref().is_empty(), "half a line stays buffered");
        w.write_all(b"HISTF\n").unwrap();
        assert_eq!(
            w.0.get_ref().as_slice(),
            b"Tag=end_to_end,0.000,1.000,HISTF\n"
        );
    }

    #[test]
    fn create_dir_refuses_an_unwritable_place() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a_file");
        std::fs::write(&file, b"x").unwrap();
        assert!(create_dir(Some(&file.join("sub")), tmp.path()).is_err());
        let ok = create_dir(None, tmp.path()).unwrap();
        assert!(ok.is_dir());
    }

    #[test]
    fn events_are_json_lines() {
        let mut out = Vec::new();
        let mut line = String::new();
        let names = vec!["z\"1".to_string()];
        let evs = [
            EventRecord::Trigger {
                frame: 3,
                t_ns: 9,
                trigger: 0,
                active: true,
            },
            EventRecord::Command {
                frame: Some(3),
                t_ns: 10,
                seq: 1,
                command: OutputCommand::Pulse {
                    channel: 2,
                    width_us: 500,
                },
                shutdown: false,
            },
            EventRecord::Ack {
                frame: Some(3),
                seq: 1,
                device_time_us: 77,
                t_ns: 11,
            },
            EventRecord::Ack {
                frame: None,
                seq: 2,
                device_time_us: 78,
                t_ns: 12,
            },
            EventRecord::DeviceError {
                t_ns: 1,
                seq: 2,
                error: reflex_firmware_bridge::DeviceError::BadArgument,
            },
            EventRecord::Mark {
                frame: 4,
                t_ns: 13,
                code: 7,
                trigger: 0,
            },
            EventRecord::Recording {
                frame: 5,
                t_ns: 14,
                trigger: 0,
                start: false,
            },
            EventRecord::Script {
                frame: 6,
                t_ns: 15,
                what: crate::record::ScriptEvent::ReloadRejected,
                version: 2,
            },
        ];
        for e in &evs {
            write_event(&mut out, &mut line, e, &names).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["type"].is_string());
        }
        assert!(text.contains(r#""trigger":"z\"1""#));
        assert!(text.contains(r#"{"type":"mark","frame":4,"t_ns":13,"code":7,"trigger":"z\"1"}"#));
        assert!(text.contains(
            r#"{"type":"recording","frame":5,"t_ns":14,"trigger":"z\"1","marker":"stop"}"#
        ));
        assert!(text.contains(
            r#"{"type":"script","frame":6,"t_ns":15,"what":"reload_rejected","version":2}"#
        ));
    }
}
