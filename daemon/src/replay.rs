//! `reflex replay`: a rig's predictor and triggers run on recorded poses, as fast as possible, with no camera
//! and no hardware, reporting when each trigger would have fired.
//!
//! Every frame goes through the live loop's own decision step ([`DecisionStep::step`]) and action routing
//! ([`crate::decision::route`]); only the time stamps and the command sink differ:
//!
//! - **Time** comes from the recording. From a session folder: the exposure stamp (`poses.csv` `t_ns`) is the
//!   triggers' time and the predictor's observation time, and `frames.csv` gives the moment the actuation
//!   thread took the pose up (`actuation_ns`: "now" of the latency-adaptive horizon, so the prediction target
//!   is the live one) and the prediction and decision stamps that events carry. From a pose CSV
//!   (`frame,track,node,x,y,score`): frame / fps, with the pose taken up at its exposure (no latency).
//! - **Commands** go to `events.jsonl` as `command` lines of the frame that caused them (no device, so no
//!   acks, no device errors, and `seq` is the replay's own count), then the outputs go to rest as at a live
//!   stop (`shutdown` commands, then `all_off`).
//!
//! Replaying a session with its own config reproduces its trigger changes, commands, marks and recording
//! markers on the same frames, with the same actions, and the trigger lines' `t_ns` (the recorded prediction
//! stamp); what differs is listed in the README ("Replay").

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Lines, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use reflex_firmware_bridge::OutputCommand;
use reflex_plugins::pose::{Keypoint, MAX_KEYPOINTS, Pose};
use serde::Serialize;

use crate::clock::{Clock, MonotonicClock};
use crate::config::Config;
use crate::decision::{DecisionStep, FrameInput, Moment, Routed, route};
use crate::eval::{PoseTable, sidecar_fps};
use crate::record::{EventRecord, Stamps};
use crate::session::{self, files};

/// `reflex replay`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// A session folder (poses.csv + frames.csv), or a pose CSV (`frame,track,node,x,y,score`, e.g. another
    /// tool's tracking output).
    pub input: PathBuf,
    /// The rig config whose predictor and triggers to replay. Default: the session's own `config.toml`
    /// (a pose CSV needs one).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where to write events.jsonl and summary.json. Default: SESSION/replays/<UTC time>/, or for a pose CSV
    /// <its folder>/<its name>-replays/<UTC time>/.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Frame rate of a pose CSV (default: `fps` or `video.fps` of its JSON sidecar).
    #[arg(long)]
    pub fps: Option<f64>,
    /// The animal of a pose CSV to replay: a track name, or its index in order of appearance (default: the
    /// first).
    #[arg(long)]
    pub track: Option<String>,
    /// Print the summary as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One recorded frame, as the live actuation thread had it.
#[derive(Debug, Clone, Copy)]
pub struct RecordedFrame {
    /// Frame id.
    pub frame: u64,
    /// Its host stamps (from `frames.csv`; for a pose CSV, all at the frame's time).
    pub stamps: Stamps,
    /// The measured pose.
    pub measured: Pose,
    /// The pose the live loop predicted (sessions only), to check the replay against.
    pub predicted: Option<Pose>,
}

/// What is replayed: recorded frames, one at a time, and their keypoint names.
pub struct Recording {
    /// What it was read from, for messages.
    pub source: String,
    /// `session` or `poses`.
    pub kind: &'static str,
    /// Keypoint names in pose order.
    pub keypoints: Vec<String>,
    frames: Frames,
}

enum Frames {
    Session(Box<SessionReader>),
    Table {
        table: PoseTable,
        track: usize,
        fps: f64,
        next: usize,
    },
}

impl Recording {
    /// Open a session folder for replay (streams `poses.csv` and `frames.csv`; a session recorded before
    /// `frames.csv` existed replays with the pose taken up at its exposure).
    pub fn session(dir: &Path) -> anyhow::Result<Self> {
        let reader = SessionReader::open(dir)?;
        Ok(Self {
            source: dir.display().to_string(),
            kind: "session",
            keypoints: reader.keypoints.clone(),
            frames: Frames::Session(Box::new(reader)),
        })
    }

    /// Open a pose CSV for replay: the animal `track` (name or index; default the first), at `fps` (default:
    /// the JSON sidecar's).
    pub fn pose_csv(path: &Path, fps: Option<f64>, track: Option<&str>) -> anyhow::Result<Self> {
        let fps = match fps {
            Some(f) => f,
            None => sidecar_fps(path)?.ok_or_else(|| {
                anyhow!(
                    "{}: no frame rate: give --fps, or put `fps` in {}",
                    path.display(),
                    path.with_extension("json").display()
                )
            })?,
        };
        if !(fps.is_finite() && fps > 0.0) {
            bail!("fps must be a number > 0, got {fps}");
        }
        let table = PoseTable::read(path)?;
        let track = match track {
            None => 0,
            Some(t) => match table.tracks.iter().position(|n| n == t) {
                Some(k) => k,
                None => t
                    .parse::<usize>()
                    .ok()
                    .filter(|&k| k < table.tracks.len())
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: no track `{t}` (tracks: {})",
                            path.display(),
                            table.tracks.join(", ")
                        )
                    })?,
            },
        };
        if table.nodes.len() > MAX_KEYPOINTS {
            bail!(
                "{}: {} nodes; a pose holds at most {MAX_KEYPOINTS}",
                path.display(),
                table.nodes.len()
            );
        }
        Ok(Self {
            source: path.display().to_string(),
            kind: "poses",
            keypoints: table.nodes.clone(),
            frames: Frames::Table {
                table,
                track,
                fps,
                next: 0,
            },
        })
    }

    /// The next frame, or `None` at the end.
    pub fn next_frame(&mut self) -> anyhow::Result<Option<RecordedFrame>> {
        match &mut self.frames {
            Frames::Session(reader) => reader.next_frame(),
            Frames::Table {
                table,
                track,
                fps,
                next,
            } => {
                let Some(&frame) = table.frames.get(*next) else {
                    return Ok(None);
                };
                let mut measured = Pose::new(table.nodes.len());
                for (k, p) in measured.points_mut().iter_mut().enumerate() {
                    *p = table.at(*next, *track, k);
                }
                *next += 1;
                let t_ns = (frame as f64 * 1e9 / *fps).round() as u64;
                Ok(Some(RecordedFrame {
                    frame,
                    stamps: Stamps {
                        exposure_ns: t_ns,
                        capture_ns: t_ns,
                        infer_start_ns: t_ns,
                        infer_end_ns: t_ns,
                        actuation_ns: t_ns,
                        predicted_ns: t_ns,
                        decided_ns: t_ns,
                        written_ns: 0,
                    },
                    measured,
                    predicted: None,
                }))
            }
        }
    }
}

/// Column indices of a CSV header.
struct Columns(Vec<String>);

impl Columns {
    fn of(header: &str) -> Self {
        Self(header.split(',').map(|c| c.trim().to_string()).collect())
    }
    fn need(&self, name: &str, file: &Path) -> anyhow::Result<usize> {
        self.0.iter().position(|c| c == name).ok_or_else(|| {
            anyhow!(
                "{} line 1: no `{name}` column (header: {})",
                file.display(),
                self.0.join(",")
            )
        })
    }
}

/// A CSV read line by line, with its line numbers for messages.
struct CsvLines {
    path: PathBuf,
    lines: Lines<BufReader<File>>,
    line_no: usize,
    columns: Columns,
}

impl CsvLines {
    fn open(path: PathBuf) -> anyhow::Result<Self> {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut lines = BufReader::new(file).lines();
        let header = lines
            .next()
            .transpose()
            .with_context(|| format!("reading {}", path.display()))?
            .ok_or_else(|| anyhow!("{}: empty file", path.display()))?;
        Ok(Self {
            path,
            lines,
            line_no: 1,
            columns: Columns::of(&header),
        })
    }

    /// The next non-empty line, split.
    fn next_row(&mut self) -> anyhow::Result<Option<Vec<String>>> {
        for line in self.lines.by_ref() {
            self.line_no += 1;
            let line = line.with_context(|| format!("reading {}", self.path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let row: Vec<String> = line.split(',').map(|f| f.trim().to_string()).collect();
            if row.len() < self.columns.0.len() {
                bail!(
                    "{} line {}: {} columns, the header has {}",
                    self.path.display(),
                    self.line_no,
                    row.len(),
                    self.columns.0.len()
                );
            }
            return Ok(Some(row));
        }
        Ok(None)
    }

    fn at(&self) -> String {
        format!("{} line {}", self.path.display(), self.line_no)
    }
}

fn int(s: &str, what: &str, at: &str) -> anyhow::Result<u64> {
    s.parse()
        .map_err(|_| anyhow!("{at}: `{what}` is not a whole number: `{s}`"))
}

/// An `f32` column; empty (how the writer records NaN and infinities) is NaN.
fn num(s: &str, what: &str, at: &str) -> anyhow::Result<f32> {
    if s.is_empty() {
        return Ok(f32::NAN);
    }
    s.parse()
        .map_err(|_| anyhow!("{at}: `{what}` is not a number: `{s}`"))
}

/// One `poses.csv` row.
struct PoseRow {
    frame: u64,
    t_ns: u64,
    node: String,
    measured: Keypoint,
    predicted: Keypoint,
}

/// Streams a session's `poses.csv` (grouped into frames) and `frames.csv` in step.
struct SessionReader {
    poses: CsvLines,
    /// frame, t_ns, node, x, y, score, pred_x, pred_y
    pose_cols: [usize; 8],
    frames: Option<(CsvLines, [usize; 9])>,
    keypoints: Vec<String>,
    /// The first row of the next frame, already read.
    pending: Option<PoseRow>,
}

impl SessionReader {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("{}: not a session folder", dir.display());
        }
        let poses = CsvLines::open(dir.join(files::POSES))?;
        let p = &poses.path;
        let c = &poses.columns;
        let pose_cols = [
            c.need("frame", p)?,
            c.need("t_ns", p)?,
            c.need("node", p)?,
            c.need("x", p)?,
            c.need("y", p)?,
            c.need("score", p)?,
            c.need("pred_x", p)?,
            c.need("pred_y", p)?,
        ];
        let frames_path = dir.join(files::FRAMES);
        let frames = if frames_path.exists() {
            let f = CsvLines::open(frames_path)?;
            let names = [
                "frame",
                "exposure_ns",
                "capture_ns",
                "infer_start_ns",
                "infer_end_ns",
                "actuation_ns",
                "predicted_ns",
                "decided_ns",
                "written_ns",
            ];
            let mut cols = [0; 9];
            for (c, name) in cols.iter_mut().zip(names) {
                *c = f.columns.need(name, &f.path)?;
            }
            Some((f, cols))
        } else {
            None
        };
        let mut reader = Self {
            poses,
            pose_cols,
            frames,
            keypoints: Vec::new(),
            pending: None,
        };
        reader.pending = reader.next_row()?;
        // The first frame's nodes name the keypoints, in pose order.
        if let Some(first) = &reader.pending {
            let frame = first.frame;
            let mut names = Vec::new();
            let mut probe = Self {
                poses: CsvLines::open(reader.poses.path.clone())?,
                pose_cols,
                frames: None,
                keypoints: Vec::new(),
                pending: None,
            };
            while let Some(row) = probe.next_row()? {
                if row.frame != frame {
                    break;
                }
                names.push(row.node);
            }
            if names.len() > MAX_KEYPOINTS {
                bail!(
                    "{}: {} keypoints per frame; a pose holds at most {MAX_KEYPOINTS}",
                    reader.poses.path.display(),
                    names.len()
                );
            }
            reader.keypoints = names;
        } else {
            bail!("{}: no frames", reader.poses.path.display());
        }
        Ok(reader)
    }

    fn next_row(&mut self) -> anyhow::Result<Option<PoseRow>> {
        let Some(row) = self.poses.next_row()? else {
            return Ok(None);
        };
        let at = self.poses.at();
        let [c_frame, c_t, c_node, c_x, c_y, c_score, c_px, c_py] = self.pose_cols;
        Ok(Some(PoseRow {
            frame: int(&row[c_frame], "frame", &at)?,
            t_ns: int(&row[c_t], "t_ns", &at)?,
            node: row[c_node].clone(),
            measured: Keypoint::new(
                num(&row[c_x], "x", &at)?,
                num(&row[c_y], "y", &at)?,
                num(&row[c_score], "score", &at)?,
            ),
            predicted: Keypoint::new(
                num(&row[c_px], "pred_x", &at)?,
                num(&row[c_py], "pred_y", &at)?,
                f32::NAN,
            ),
        }))
    }

    fn next_frame(&mut self) -> anyhow::Result<Option<RecordedFrame>> {
        let Some(first) = self.pending.take() else {
            return Ok(None);
        };
        let (frame, t_ns) = (first.frame, first.t_ns);
        let n = self.keypoints.len();
        let mut measured = Pose::new(n);
        let mut predicted = Pose::new(n);
        let mut k = 0;
        let mut row = Some(first);
        while let Some(r) = row.take() {
            if r.frame != frame {
                self.pending = Some(r);
                break;
            }
            if k >= n || r.node != self.keypoints[k] {
                bail!(
                    "{}: frame {frame}: keypoint `{}` where `{}` was expected (every frame lists the keypoints of the first, in order)",
                    self.poses.at(),
                    r.node,
                    self.keypoints.get(k).map_or("nothing", String::as_str)
                );
            }
            measured.points_mut()[k] = r.measured;
            predicted.points_mut()[k] = r.predicted;
            k += 1;
            row = self.next_row()?;
        }
        if k != n {
            bail!(
                "{}: frame {frame} has {k} keypoints, the first frame {n}",
                self.poses.at()
            );
        }
        let stamps = match &mut self.frames {
            None => Stamps {
                exposure_ns: t_ns,
                actuation_ns: t_ns,
                predicted_ns: t_ns,
                decided_ns: t_ns,
                ..Stamps::default()
            },
            Some((csv, c)) => {
                let row = csv.next_row()?.ok_or_else(|| {
                    anyhow!(
                        "{}: ends before frame {frame} of {}",
                        csv.path.display(),
                        files::POSES
                    )
                })?;
                let at = csv.at();
                let get = |i: usize, what: &str| -> anyhow::Result<u64> {
                    let s = &row[c[i]];
                    if s.is_empty() {
                        Ok(0)
                    } else {
                        int(s, what, &at)
                    }
                };
                let f = get(0, "frame")?;
                if f != frame {
                    bail!(
                        "{at}: frame {f}, but {} has frame {frame} here (the files must come from one session)",
                        files::POSES
                    );
                }
                Stamps {
                    exposure_ns: get(1, "exposure_ns")?,
                    capture_ns: get(2, "capture_ns")?,
                    infer_start_ns: get(3, "infer_start_ns")?,
                    infer_end_ns: get(4, "infer_end_ns")?,
                    actuation_ns: get(5, "actuation_ns")?,
                    predicted_ns: get(6, "predicted_ns")?,
                    decided_ns: get(7, "decided_ns")?,
                    written_ns: get(8, "written_ns")?,
                }
            }
        };
        Ok(Some(RecordedFrame {
            frame,
            stamps,
            measured,
            predicted: Some(predicted),
        }))
    }
}

/// Per trigger: how often and when it activated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerStats {
    /// The trigger's name.
    pub name: String,
    /// Times it became active.
    pub activations: u64,
    /// Times it stopped being active.
    pub deactivations: u64,
    /// Frame of the first activation.
    pub first_frame: Option<u64>,
    /// Frame of the last activation.
    pub last_frame: Option<u64>,
}

/// Per output channel: the commands frames caused (not counting the rest commands at the end).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelStats {
    /// The channel.
    pub channel: u8,
    /// All commands.
    pub commands: u64,
    /// Set high.
    pub set_high: u64,
    /// Set low.
    pub set_low: u64,
    /// Single pulses.
    pub pulses: u64,
    /// Pulse trains.
    pub trains: u64,
    /// Frame of the first command.
    pub first_frame: Option<u64>,
    /// Frame of the last command.
    pub last_frame: Option<u64>,
}

/// The replayed predictions against the ones recorded live (sessions only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PredictionCheck {
    /// Frames compared.
    pub frames: u64,
    /// Frames where some predicted coordinate differs from the recorded one.
    pub frames_differing: u64,
    /// Largest difference of a predicted coordinate (px); 0 when identical.
    pub max_diff_px: f64,
}

/// The replay compared with the events the live session recorded (a session replayed with its own config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LiveComparison {
    /// Trigger changes, frame commands, marks and recording markers in the live `events.jsonl`.
    pub live_decisions: u64,
    /// The same in the replay.
    pub replay_decisions: u64,
    /// Whether the two lists are equal: same kinds, frames, triggers and actions, in order (host times,
    /// sequence numbers and acks aside).
    pub identical: bool,
    /// The first difference, when not identical.
    pub first_difference: Option<String>,
}

/// How fast the replay went (this machine, this build).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ReplaySpeed {
    /// Time in the decision steps (predict, triggers, routing) for all frames (s).
    pub decide_s: f64,
    /// Frames per second of decision steps alone.
    pub decide_frames_per_s: f64,
    /// One frame's decision step (predict, triggers, script, routing) in µs: median.
    pub step_p50_us: f64,
    /// One frame's decision step in µs: 99th percentile.
    pub step_p99_us: f64,
    /// One frame's decision step in µs: the slowest.
    pub step_max_us: f64,
    /// The whole replay: reading the recording, deciding, collecting events (s); writing the outputs aside.
    pub total_s: f64,
    /// Frames per second over the whole replay.
    pub total_frames_per_s: f64,
}

/// `summary.json` of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// The recording replayed.
    pub input: String,
    /// `session` or `poses`.
    pub input_kind: String,
    /// The config replayed.
    pub config: String,
    /// Keypoint names of the recording.
    pub keypoints: Vec<String>,
    /// Frames replayed.
    pub frames: u64,
    /// First to last exposure (s).
    pub recording_s: f64,
    /// Per trigger, in config order.
    pub triggers: Vec<TriggerStats>,
    /// Per output channel that was commanded.
    pub channels: Vec<ChannelStats>,
    /// Mark events.
    pub marks: u64,
    /// Recording start/stop markers.
    pub recording_markers: u64,
    /// Actions lost to a full action buffer or delay queue (should be 0).
    pub dropped_actions: u64,
    /// Replayed vs recorded predictions (sessions).
    pub predictions: Option<PredictionCheck>,
    /// Replayed vs live events (a session replayed with its own config).
    pub live: Option<LiveComparison>,
    /// The protocol script's failure, with its file and line, as the live loop would have met it (with
    /// `on_error = "stop"` the replay ends on that frame, as the session would have).
    pub script_error: Option<String>,
    /// Speed.
    pub speed: ReplaySpeed,
}

/// A finished replay: its events (the `events.jsonl` lines, in order) and summary.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// Trigger names by index.
    pub trigger_names: Vec<String>,
    /// Every event, in the order the live loop would have recorded them.
    pub events: Vec<EventRecord>,
    /// The summary.
    pub summary: ReplaySummary,
}

/// Replay `recording` through the decision step of `config` (`config_text` and `config_file` name it in
/// errors).
pub fn replay(
    recording: &mut Recording,
    config: &Config,
    config_text: &str,
    config_file: &str,
) -> anyhow::Result<Replayed> {
    let clock = MonotonicClock::new();
    let started_ns = clock.now_ns();
    let names: Vec<&str> = recording.keypoints.iter().map(String::as_str).collect();
    let mut decide = DecisionStep::from_config(config, config_text, config_file, &names)
        .with_context(|| {
            format!(
                "the keypoints of {}: {}",
                recording.source,
                names.join(", ")
            )
        })?;
    let trigger_names = decide.trigger_names();

    let mut events: Vec<EventRecord> = Vec::new();
    let mut seq: u16 = 0;
    let mut frames = 0u64;
    let (mut first_ns, mut last_ns) = (None, 0u64);
    let mut decide_ns = 0u64;
    let mut step_hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)
        .expect("valid histogram bounds");
    let mut script_error = None;
    let stop_on_script_error = config
        .script
        .as_ref()
        .is_none_or(|s| s.on_error == reflex_plugins::script::OnScriptError::Stop);
    let mut check = PredictionCheck::default();
    let mut last_decided_ns = 0;
    while let Some(rec) = recording.next_frame()? {
        let s = rec.stamps;
        let input = FrameInput {
            frame: rec.frame,
            exposure_ns: s.exposure_ns,
            actuation_ns: s.actuation_ns,
            measured: &rec.measured,
        };
        let t0 = clock.now_ns();
        let mut stamp = |m: Moment| match m {
            Moment::Predicted => s.predicted_ns,
            Moment::Decided => s.decided_ns,
        };
        decide.step(&input, &mut stamp, &mut |ev| events.push(ev));
        for &action in decide.actions() {
            match route(action, Some(rec.frame), || s.decided_ns) {
                Routed::Command(command) => {
                    seq = seq.wrapping_add(1);
                    events.push(EventRecord::Command {
                        frame: Some(rec.frame),
                        t_ns: s.decided_ns,
                        seq,
                        command,
                        shutdown: false,
                    });
                }
                Routed::Event(ev) => events.push(ev),
            }
        }
        let step_ns = clock.now_ns().saturating_sub(t0);
        decide_ns += step_ns;
        step_hist.saturating_record(step_ns.max(1));

        if let Some(recorded) = &rec.predicted {
            check.frames += 1;
            let mut differs = false;
            for (a, b) in decide.predicted().points().iter().zip(recorded.points()) {
                for (u, v) in [(a.x, b.x), (a.y, b.y)] {
                    let (u, v) = (finite_or_nan(u), finite_or_nan(v));
                    if u.is_nan() && v.is_nan() {
                        continue;
                    }
                    if u.to_bits() != v.to_bits() {
                        differs = true;
                        let d = f64::from((u - v).abs());
                        check.max_diff_px =
                            check
                                .max_diff_px
                                .max(if d.is_nan() { f64::INFINITY } else { d });
                    }
                }
            }
            check.frames_differing += u64::from(differs);
        }
        frames += 1;
        first_ns.get_or_insert(s.exposure_ns);
        last_ns = s.exposure_ns;
        last_decided_ns = s.decided_ns;
        if let Some(failure) = decide.take_script_failure() {
            script_error = Some(failure.to_string());
            if stop_on_script_error {
                break;
            }
        }
    }
    if frames == 0 {
        bail!("{}: no frames to replay", recording.source);
    }
    // Outputs to rest, as the live loop does when it stops.
    let rest = decide.rest();
    for &action in rest.as_slice() {
        match route(action, None, || last_decided_ns) {
            Routed::Command(command) => {
                seq = seq.wrapping_add(1);
                events.push(EventRecord::Command {
                    frame: None,
                    t_ns: last_decided_ns,
                    seq,
                    command,
                    shutdown: true,
                });
            }
            Routed::Event(ev) => events.push(ev),
        }
    }
    events.push(EventRecord::Command {
        frame: None,
        t_ns: last_decided_ns,
        seq: 0,
        command: OutputCommand::AllOff,
        shutdown: true,
    });
    let total_ns = clock.now_ns().saturating_sub(started_ns);

    let per_s = |ns: u64| {
        if ns == 0 {
            f64::INFINITY
        } else {
            frames as f64 / (ns as f64 * 1e-9)
        }
    };
    let summary = ReplaySummary {
        input: recording.source.clone(),
        input_kind: recording.kind.to_string(),
        config: config_file.to_string(),
        keypoints: recording.keypoints.clone(),
        frames,
        recording_s: last_ns.saturating_sub(first_ns.unwrap_or(0)) as f64 * 1e-9,
        triggers: trigger_stats(&trigger_names, &events),
        channels: channel_stats(&events),
        marks: events
            .iter()
            .filter(|e| matches!(e, EventRecord::Mark { .. }))
            .count() as u64,
        recording_markers: events
            .iter()
            .filter(|e| matches!(e, EventRecord::Recording { .. }))
            .count() as u64,
        dropped_actions: decide.dropped_actions(),
        predictions: (check.frames > 0).then_some(check),
        live: None,
        script_error: script_error.or_else(|| {
            decide
                .take_script_failure()
                .map(|f| format!("on_stop: {f}"))
        }),
        speed: ReplaySpeed {
            decide_s: decide_ns as f64 * 1e-9,
            decide_frames_per_s: per_s(decide_ns),
            step_p50_us: step_hist.value_at_quantile(0.5) as f64 * 1e-3,
            step_p99_us: step_hist.value_at_quantile(0.99) as f64 * 1e-3,
            step_max_us: step_hist.max() as f64 * 1e-3,
            total_s: total_ns as f64 * 1e-9,
            total_frames_per_s: per_s(total_ns),
        },
    };
    Ok(Replayed {
        trigger_names,
        events,
        summary,
    })
}

fn finite_or_nan(v: f32) -> f32 {
    if v.is_finite() { v } else { f32::NAN }
}

fn trigger_stats(names: &[String], events: &[EventRecord]) -> Vec<TriggerStats> {
    let mut stats: Vec<TriggerStats> = names
        .iter()
        .map(|name| TriggerStats {
            name: name.clone(),
            activations: 0,
            deactivations: 0,
            first_frame: None,
            last_frame: None,
        })
        .collect();
    for e in events {
        if let EventRecord::Trigger {
            frame,
            trigger,
            active,
            ..
        } = *e
            && let Some(s) = stats.get_mut(usize::from(trigger))
        {
            if active {
                s.activations += 1;
                s.first_frame.get_or_insert(frame);
                s.last_frame = Some(frame);
            } else {
                s.deactivations += 1;
            }
        }
    }
    stats
}

fn channel_stats(events: &[EventRecord]) -> Vec<ChannelStats> {
    let mut by_channel = std::collections::BTreeMap::<u8, ChannelStats>::new();
    for e in events {
        let EventRecord::Command {
            frame: Some(frame),
            command,
            shutdown: false,
            ..
        } = *e
        else {
            continue;
        };
        let channel = match command {
            OutputCommand::SetLevel { channel, .. }
            | OutputCommand::Pulse { channel, .. }
            | OutputCommand::PulseTrain { channel, .. } => channel,
            OutputCommand::AllOff => continue,
        };
        let s = by_channel.entry(channel).or_insert_with(|| ChannelStats {
            channel,
            ..ChannelStats::default()
        });
        s.commands += 1;
        match command {
            OutputCommand::SetLevel { high: true, .. } => s.set_high += 1,
            OutputCommand::SetLevel { high: false, .. } => s.set_low += 1,
            OutputCommand::Pulse { .. } => s.pulses += 1,
            OutputCommand::PulseTrain { .. } => s.trains += 1,
            OutputCommand::AllOff => {}
        }
        s.first_frame.get_or_insert(frame);
        s.last_frame = Some(frame);
    }
    by_channel.into_values().collect()
}

/// The `events.jsonl` text of `events`.
pub fn events_jsonl(events: &[EventRecord], trigger_names: &[String]) -> String {
    let mut out = Vec::new();
    let mut line = String::new();
    for e in events {
        // Writing into a Vec cannot fail.
        let _ = session::write_event(&mut out, &mut line, e, trigger_names);
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The decisions of an `events.jsonl` text, one comparable string each: trigger changes, commands caused by a
/// frame, marks and recording markers, with their frame and what they did; host times, sequence numbers,
/// acks, device errors and the commands sent while stopping left out.
pub fn decisions(events_jsonl: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, line) in events_jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("events line {}: not JSON", i + 1))?;
        let get = |k: &str| v.get(k).map(|x| x.to_string()).unwrap_or_default();
        let d = match v["type"].as_str().unwrap_or("") {
            "trigger" => format!(
                "frame {} trigger {} active {}",
                get("frame"),
                get("trigger"),
                get("active")
            ),
            "command" if v["frame"].is_u64() && v["shutdown"] != true => {
                let mut d = format!("frame {} command {}", get("frame"), get("command"));
                for k in ["channel", "high", "width_us", "period_us", "count"] {
                    if v.get(k).is_some() {
                        let _ = write!(d, " {k} {}", get(k));
                    }
                }
                d
            }
            "mark" => format!(
                "frame {} mark {} trigger {}",
                get("frame"),
                get("code"),
                get("trigger")
            ),
            "recording" => format!(
                "frame {} recording {} trigger {}",
                get("frame"),
                get("marker"),
                get("trigger")
            ),
            _ => continue,
        };
        out.push(d);
    }
    Ok(out)
}

/// Compare the replay's decisions with the live session's `events.jsonl`.
pub fn compare_with_live(live_jsonl: &str, replay_jsonl: &str) -> anyhow::Result<LiveComparison> {
    let live = decisions(live_jsonl)?;
    let replay = decisions(replay_jsonl)?;
    let first_difference = live
        .iter()
        .zip(&replay)
        .position(|(a, b)| a != b)
        .map(|k| format!("decision {k}: live `{}`, replay `{}`", live[k], replay[k]))
        .or_else(|| {
            (live.len() != replay.len()).then(|| {
                let k = live.len().min(replay.len());
                format!(
                    "live has {} decisions, replay {}; the first unmatched: {}",
                    live.len(),
                    replay.len(),
                    live.get(k).or(replay.get(k)).map_or("", String::as_str)
                )
            })
        });
    Ok(LiveComparison {
        live_decisions: live.len() as u64,
        replay_decisions: replay.len() as u64,
        identical: first_difference.is_none(),
        first_difference,
    })
}

/// Write `events.jsonl` and `summary.json` of a replay into `dir` (created if needed).
pub fn write_outputs(dir: &Path, replayed: &Replayed) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(files::EVENTS);
    let mut out = BufWriter::new(
        File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    out.write_all(events_jsonl(&replayed.events, &replayed.trigger_names).as_bytes())
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    let path = dir.join(files::SUMMARY);
    let text = serde_json::to_string_pretty(&replayed.summary)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The printed report of a replay.
pub fn report(s: &ReplaySummary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "replay: {} frames ({:.1} s recorded) of {} with {}",
        s.frames, s.recording_s, s.input, s.config
    );
    let width = s
        .triggers
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let _ = writeln!(
        o,
        "{:width$}  {:>11}  {:>11}  {:>10}",
        "trigger", "activations", "first frame", "last frame"
    );
    let frame = |f: Option<u64>| f.map_or("-".to_string(), |f| f.to_string());
    for t in &s.triggers {
        let _ = writeln!(
            o,
            "{:width$}  {:>11}  {:>11}  {:>10}",
            t.name,
            t.activations,
            frame(t.first_frame),
            frame(t.last_frame)
        );
    }
    if s.channels.is_empty() {
        let _ = writeln!(o, "commands: none");
    }
    for c in &s.channels {
        let _ = writeln!(
            o,
            "channel {}: {} commands (high {}, low {}, pulses {}, trains {}), frames {}..{}",
            c.channel,
            c.commands,
            c.set_high,
            c.set_low,
            c.pulses,
            c.trains,
            frame(c.first_frame),
            frame(c.last_frame)
        );
    }
    if s.marks + s.recording_markers > 0 {
        let _ = writeln!(
            o,
            "marks: {}  recording markers: {}",
            s.marks, s.recording_markers
        );
    }
    if s.dropped_actions > 0 {
        let _ = writeln!(
            o,
            "WARNING: {} actions were dropped (more than 64 in one frame, or the delay queue full)",
            s.dropped_actions
        );
    }
    if let Some(p) = &s.predictions {
        if p.frames_differing == 0 {
            let _ = writeln!(
                o,
                "predictions: identical to the recorded ones on all {} frames",
                p.frames
            );
        } else {
            let _ = writeln!(
                o,
                "predictions: differ from the recorded ones on {} of {} frames (at most {:.3} px)",
                p.frames_differing, p.frames, p.max_diff_px
            );
        }
    }
    if let Some(l) = &s.live {
        match &l.first_difference {
            None => {
                let _ = writeln!(
                    o,
                    "live events: reproduced exactly ({} decisions: trigger changes, commands, marks, recording markers)",
                    l.live_decisions
                );
            }
            Some(d) => {
                let _ = writeln!(o, "live events: NOT reproduced: {d}");
            }
        }
    }
    if let Some(e) = &s.script_error {
        let _ = writeln!(o, "SCRIPT ERROR: {e}");
    }
    let sp = &s.speed;
    let _ = writeln!(
        o,
        "speed: {:.0} frames/s in the decision step ({:.2} µs/frame), {:.0} frames/s with reading the recording",
        sp.decide_frames_per_s,
        sp.decide_s * 1e6 / s.frames.max(1) as f64,
        sp.total_frames_per_s
    );
    let _ = writeln!(
        o,
        "decision step per frame (predict, triggers, script): p50 {:.2} µs  p99 {:.2} µs  max {:.2} µs",
        sp.step_p50_us, sp.step_p99_us, sp.step_max_us
    );
    o
}

/// `reflex replay`: replay, write `events.jsonl` + `summary.json`, print the report.
pub fn run_cli(args: ReplayArgs) -> anyhow::Result<()> {
    let is_session = args.input.is_dir();
    let mut recording = if is_session {
        if args.fps.is_some() || args.track.is_some() {
            bail!("--fps and --track are for pose CSVs; a session has its own stamps");
        }
        Recording::session(&args.input)?
    } else {
        Recording::pose_csv(&args.input, args.fps, args.track.as_deref())?
    };
    let config_path = match (&args.config, is_session) {
        (Some(c), _) => c.clone(),
        (None, true) => args.input.join(files::CONFIG),
        (None, false) => bail!(
            "replaying a pose CSV needs --config RIG.toml (triggers on its keypoints: {})",
            recording.keypoints.join(", ")
        ),
    };
    let (config, text) = load_config(&config_path)?;
    let config_file = config_path.display().to_string();
    let mut replayed = replay(&mut recording, &config, &text, &config_file)?;
    if is_session && args.config.is_none() {
        let live = args.input.join(files::EVENTS);
        if let Ok(live) = std::fs::read_to_string(&live) {
            let mine = events_jsonl(&replayed.events, &replayed.trigger_names);
            replayed.summary.live = Some(compare_with_live(&live, &mine)?);
        }
    }
    let out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let parent = if is_session {
                args.input.join("replays")
            } else {
                let stem = args
                    .input
                    .file_stem()
                    .map_or("poses".into(), |s| s.to_string_lossy().to_string());
                args.input
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(format!("{stem}-replays"))
            };
            session::create_dir(None, &parent)
                .with_context(|| format!("creating a replay folder under {}", parent.display()))?
        }
    };
    write_outputs(&out, &replayed)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&replayed.summary)?);
    } else {
        print!("{}", report(&replayed.summary));
        println!("out: {}", out.display());
    }
    Ok(())
}

/// A config file and its text (for error lines).
pub fn load_config(path: &Path) -> anyhow::Result<(Config, String)> {
    let config = Config::load(path)?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Ok((config, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = r#"{"type":"trigger","frame":76,"t_ns":100,"trigger":"z","active":true}
{"type":"command","frame":76,"t_ns":105,"seq":95,"command":"set_level","channel":0,"high":true,"shutdown":false}
{"type":"ack","frame":76,"seq":95,"device_time_us":12754291025,"t_ns":120}
{"type":"mark","frame":80,"t_ns":130,"code":7,"trigger":"z"}
{"type":"command","frame":null,"t_ns":200,"seq":96,"command":"set_level","channel":0,"high":false,"shutdown":true}
{"type":"command","frame":null,"t_ns":201,"seq":0,"command":"all_off","shutdown":true}
"#;

    #[test]
    fn decisions_keep_what_was_decided_and_drop_device_times() {
        assert_eq!(
            decisions(LIVE).unwrap(),
            [
                "frame 76 trigger \"z\" active true",
                "frame 76 command \"set_level\" channel 0 high true",
                "frame 80 mark 7 trigger \"z\"",
            ]
        );
        // Another write time and sequence number, no ack, no stop commands: the same decisions.
        let replay = r#"{"type":"trigger","frame":76,"t_ns":100,"trigger":"z","active":true}
{"type":"command","frame":76,"t_ns":101,"seq":1,"command":"set_level","channel":0,"high":true,"shutdown":false}
{"type":"mark","frame":80,"t_ns":101,"code":7,"trigger":"z"}
"#;
        let same = compare_with_live(LIVE, replay).unwrap();
        assert!(same.identical && same.live_decisions == 3, "{same:?}");
    }

    #[test]
    fn the_first_difference_is_named() {
        let other = LIVE.replace("\"high\":true", "\"high\":false");
        let c = compare_with_live(LIVE, &other).unwrap();
        assert!(!c.identical);
        let d = c.first_difference.unwrap();
        assert!(
            d.starts_with("decision 1: live") && d.contains("high false"),
            "{d}"
        );
        let fewer: String = LIVE.lines().take(1).map(|l| format!("{l}\n")).collect();
        let c = compare_with_live(LIVE, &fewer).unwrap();
        assert_eq!((c.live_decisions, c.replay_decisions), (3, 1));
        assert!(c.first_difference.unwrap().contains("command"));
    }

    #[test]
    fn a_session_that_is_not_one_is_refused_with_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let e = Recording::session(&tmp.path().join("nothing"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a session folder"), "{e}");
        std::fs::write(
            tmp.path().join(files::POSES),
            "frame,t_ns,track,node,x,y,score,pred_x,pred_y\n0,5,0,nose,1,2,0.9,1,2\n1,6,0,ear,1,2,0.9,1,2\n",
        )
        .unwrap();
        let mut r = Recording::session(tmp.path()).unwrap();
        assert_eq!(r.keypoints, ["nose"]);
        let first = r.next_frame().unwrap().unwrap();
        assert_eq!((first.frame, first.stamps.exposure_ns), (0, 5));
        let e = r.next_frame().unwrap_err().to_string();
        assert!(
            e.contains("keypoint `ear` where `nose` was expected"),
            "{e}"
        );
    }
}
