//! `reflex latency`: a recorded session's latency, read back from its files.
//!
//! Reads `latency.hlog` (per-stage interval histograms, with the `hdrhistogram` crate's interval-log reader),
//! `summary.json` (frame counts), `frames.csv` (every processed frame's host stamps) and `events.jsonl`
//! (device acks, joined to the frames that commanded them). Reports percentiles per stage, latency over time,
//! the worst frames with the stages that made them slow, and dropped frames: as text, or as one
//! self-contained HTML file with inline SVG plots ([`html`]). `--compare A B` puts two sessions side by side.

pub mod html;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry, LogIteratorError};

use crate::latency::{Quantiles, Stage, new_histogram};
use crate::record::Stamps;
use crate::session::{FRAMES_HEADER, Summary, files};

/// Number of stages (the length of every per-stage array here, indexed by `Stage as usize`).
pub const STAGES: usize = Stage::ALL.len();

/// The stages that add up to a frame's end-to-end latency, in order, then `device_ack` after it: the parts of
/// a per-frame breakdown and the candidates for "what was slow".
pub const PARTS: [Stage; 8] = [
    Stage::Capture,
    Stage::QueueInference,
    Stage::Inference,
    Stage::QueueActuation,
    Stage::Predict,
    Stage::Trigger,
    Stage::Output,
    Stage::DeviceAck,
];

/// Rows of the text "latency over time" table at most; longer sessions merge neighbouring intervals.
const TIME_ROWS: usize = 30;

/// `reflex latency`: one session's latency report, or two sessions side by side.
#[derive(clap::Args, Debug)]
pub struct LatencyArgs {
    /// Session folder (with latency.hlog, summary.json, frames.csv, events.jsonl).
    #[arg(required_unless_present = "compare", conflicts_with = "compare")]
    pub session: Option<PathBuf>,
    /// Two session folders side by side: `--compare A B`.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub compare: Option<Vec<PathBuf>>,
    /// Also write a self-contained HTML report with plots to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Frames listed in the worst-frames table and drawn in the breakdown plot.
    #[arg(long, default_value_t = 10)]
    pub worst: usize,
}

/// Run `reflex latency`: print the text report, and write the HTML report if asked.
pub fn run_cli(args: LatencyArgs) -> anyhow::Result<()> {
    let dirs = match (&args.session, &args.compare) {
        (_, Some(pair)) => pair.clone(),
        (Some(dir), None) => vec![dir.clone()],
        (None, None) => bail!("give a session folder, or --compare A B"),
    };
    let sessions = dirs
        .iter()
        .map(|d| SessionLatency::load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    match sessions.as_slice() {
        [a, b] => print!("{}", compare_text(a, b)),
        [s] => print!("{}", text(s, args.worst)),
        _ => unreachable!("one session or two"),
    }
    if let Some(path) = &args.html {
        let refs: Vec<&SessionLatency> = sessions.iter().collect();
        std::fs::write(path, html::report(&refs, args.worst))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("report: {}", path.display());
    }
    Ok(())
}

/// Percentiles of every stage over one stretch of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalStats {
    /// Start, in s since the session start.
    pub start_s: f64,
    /// Length (s).
    pub length_s: f64,
    /// Percentiles per stage (ns), indexed by `Stage as usize`; `count` 0 where a stage had no sample.
    pub stages: [Quantiles; STAGES],
}

/// What `latency.hlog` holds: the whole session and its intervals.
#[derive(Debug, Clone)]
pub struct Hlog {
    /// Every interval of each stage added up, indexed by `Stage as usize`.
    pub totals: [Histogram<u64>; STAGES],
    /// Each logged interval (one per second while recording), in order.
    pub intervals: Vec<IntervalStats>,
    /// Neighbouring intervals merged (exactly, by adding their histograms) into at most the requested rows.
    pub rows: Vec<IntervalStats>,
}

/// Parse an interval log written by the session writer; `name` is used in errors ("latency.hlog line 7: …").
/// Tags that are not a stage name are skipped (a later version may log more stages), and so is a last line
/// without its newline (a session killed while writing it).
pub fn parse_hlog(bytes: &[u8], name: &str, max_rows: usize) -> anyhow::Result<Hlog> {
    let bytes = &bytes[..bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)];
    let line_of = |offset: usize| {
        bytes[..offset.min(bytes.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    };
    // Pass 1 (no decoding): how many intervals, to merge them into at most `max_rows` rows.
    let mut n_intervals = 0usize;
    let mut last_start = None;
    for entry in IntervalLogIterator::new(bytes) {
        match entry {
            Ok(LogEntry::Interval(h)) if last_start != Some(h.start_timestamp()) => {
                last_start = Some(h.start_timestamp());
                n_intervals += 1;
            }
            Ok(_) => {}
            Err(LogIteratorError::ParseError { offset }) => {
                bail!("{name} line {}: not an interval-log line", line_of(offset))
            }
        }
    }
    let per_row = n_intervals.div_ceil(max_rows.max(1)).max(1);
    let mut totals: [Histogram<u64>; STAGES] = std::array::from_fn(|_| new_histogram());
    let mut row: [Histogram<u64>; STAGES] = std::array::from_fn(|_| new_histogram());
    let (mut intervals, mut rows) = (Vec::with_capacity(n_intervals), Vec::new());
    let empty = Quantiles::of(&row[0]);
    let mut deserializer = Deserializer::new();
    let (mut row_start_s, mut last_start) = (0.0, None);
    for entry in IntervalLogIterator::new(bytes) {
        let Ok(LogEntry::Interval(h)) = entry else {
            continue;
        };
        let tag = h.tag().map(|t| t.as_str());
        let Some(stage) = Stage::ALL.into_iter().find(|s| Some(s.name()) == tag) else {
            continue;
        };
        let line = line_of(h.encoded_histogram().as_ptr() as usize - bytes.as_ptr() as usize);
        let hist: Histogram<u64> = base64::engine::general_purpose::STANDARD
            .decode(h.encoded_histogram())
            .map_err(|e| anyhow!("{name} line {line}: bad base64 histogram: {e}"))
            .and_then(|raw| {
                deserializer
                    .deserialize(&mut raw.as_slice())
                    .map_err(|e| anyhow!("{name} line {line}: bad histogram: {e:?}"))
            })?;
        let start_s = h.start_timestamp().as_secs_f64();
        if last_start != Some(h.start_timestamp()) {
            last_start = Some(h.start_timestamp());
            if intervals.len() % per_row == 0 {
                if !intervals.is_empty() {
                    rows.push(row_stats(&mut row, row_start_s, &intervals));
                }
                row_start_s = start_s;
            }
            intervals.push(IntervalStats {
                start_s,
                length_s: h.duration().as_secs_f64(),
                stages: [empty; STAGES],
            });
        }
        let i = stage as usize;
        for into in [&mut totals[i], &mut row[i]] {
            into.add(&hist)
                .map_err(|e| anyhow!("{name} line {line}: histogram out of range: {e:?}"))?;
        }
        if let Some(last) = intervals.last_mut() {
            last.stages[i] = Quantiles::of(&hist);
        }
    }
    if !intervals.is_empty() {
        rows.push(row_stats(&mut row, row_start_s, &intervals));
    }
    Ok(Hlog {
        totals,
        intervals,
        rows,
    })
}

/// The stats of the merged histograms of one row (from `start_s` to the end of the last interval), emptying
/// them for the next row.
fn row_stats(
    row: &mut [Histogram<u64>; STAGES],
    start_s: f64,
    intervals: &[IntervalStats],
) -> IntervalStats {
    let end_s = intervals.last().map_or(start_s, |i| i.start_s + i.length_s);
    let stats = IntervalStats {
        start_s,
        length_s: end_s - start_s,
        stages: std::array::from_fn(|i| Quantiles::of(&row[i])),
    };
    row.iter_mut().for_each(Histogram::reset);
    stats
}

/// The device acknowledgement of a frame's last output change, joined from `events.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Host time (ns) the acknowledged command was written.
    pub command_ns: u64,
    /// Host time (ns) of the output change, from the device's clock through clock sync.
    pub ack_ns: u64,
}

/// One processed frame (`frames.csv`), with the device ack of its last output change if it commanded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameTiming {
    /// Frame id from the source.
    pub frame: u64,
    /// Host stamps (ns).
    pub stamps: Stamps,
    /// The device's ack of the frame's last acknowledged command.
    pub ack: Option<Ack>,
}

impl FrameTiming {
    /// The frame's latency per stage (ns), indexed by `Stage as usize`; `None` where the stage did not happen
    /// (no command, no ack). Computed as the loop records its histograms (`pipeline`'s actuation `process`),
    /// except that `device_ack` and `exposure_to_output` here are of the frame's last acknowledged command.
    pub fn spans_ns(&self) -> [Option<u64>; STAGES] {
        let s = &self.stamps;
        let inference = s.infer_end_ns.saturating_sub(s.infer_start_ns);
        let end_to_end = s.written_ns.max(s.decided_ns).saturating_sub(s.exposure_ns);
        let mut out = [None; STAGES];
        for stage in Stage::ALL {
            out[stage as usize] = match stage {
                Stage::Capture => Some(s.capture_ns.saturating_sub(s.exposure_ns)),
                Stage::QueueInference => Some(s.infer_start_ns.saturating_sub(s.capture_ns)),
                Stage::Inference => Some(inference),
                Stage::QueueActuation => Some(s.actuation_ns.saturating_sub(s.infer_end_ns)),
                Stage::Predict => Some(s.predicted_ns.saturating_sub(s.actuation_ns)),
                Stage::Trigger => Some(s.decided_ns.saturating_sub(s.predicted_ns)),
                Stage::Output => {
                    (s.written_ns != 0).then(|| s.written_ns.saturating_sub(s.decided_ns))
                }
                Stage::DeviceAck => self.ack.map(|a| a.ack_ns.saturating_sub(a.command_ns)),
                Stage::EndToEnd => Some(end_to_end),
                Stage::OutsideInference => Some(end_to_end.saturating_sub(inference)),
                Stage::ExposureToOutput => self.ack.map(|a| a.ack_ns.saturating_sub(s.exposure_ns)),
            };
        }
        out
    }
}

/// Parse `frames.csv` (`name` is used in errors).
pub fn parse_frames(text: &str, name: &str) -> anyhow::Result<Vec<FrameTiming>> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == FRAMES_HEADER => {}
        _ => bail!("{name} line 1: expected the header `{FRAMES_HEADER}`"),
    }
    let mut frames = Vec::new();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let bad = || {
            anyhow!(
                "{name} line {}: expected 9 comma-separated integers (written_ns may be empty): `{line}`",
                i + 1
            )
        };
        let mut v = [0u64; 9];
        let mut fields = line.trim().split(',');
        for (k, slot) in v.iter_mut().enumerate() {
            let field = fields.next().ok_or_else(bad)?;
            *slot = match field {
                "" if k == 8 => 0,
                f => f.parse().map_err(|_| bad())?,
            };
        }
        if fields.next().is_some() {
            return Err(bad());
        }
        let [
            frame,
            exposure_ns,
            capture_ns,
            infer_start_ns,
            infer_end_ns,
            actuation_ns,
            predicted_ns,
            decided_ns,
            written_ns,
        ] = v;
        frames.push(FrameTiming {
            frame,
            stamps: Stamps {
                exposure_ns,
                capture_ns,
                infer_start_ns,
                infer_end_ns,
                actuation_ns,
                predicted_ns,
                decided_ns,
                written_ns,
            },
            ack: None,
        });
    }
    Ok(frames)
}

/// Join the device acks of `events.jsonl` to `frames`: each frame gets the latest ack (with a host time) of a
/// command it caused, with that command's write time.
pub fn join_acks(frames: &mut [FrameTiming], events: &str, name: &str) -> anyhow::Result<()> {
    let mut commands: HashMap<(u64, u64), u64> = HashMap::new();
    let mut acks: HashMap<u64, Ack> = HashMap::new();
    for (i, line) in events
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let e: serde_json::Value =
            serde_json::from_str(line).map_err(|err| anyhow!("{name} line {}: {err}", i + 1))?;
        let field = |k: &str| e[k].as_u64();
        let (Some(frame), Some(seq), Some(t_ns)) = (field("frame"), field("seq"), field("t_ns"))
        else {
            continue;
        };
        match e["type"].as_str() {
            Some("command") => {
                commands.insert((frame, seq), t_ns);
            }
            Some("ack") if t_ns != 0 => {
                if let Some(&command_ns) = commands.get(&(frame, seq)) {
                    let ack = Ack {
                        command_ns,
                        ack_ns: t_ns,
                    };
                    acks.entry(frame)
                        .and_modify(|a| {
                            if a.ack_ns < t_ns {
                                *a = ack;
                            }
                        })
                        .or_insert(ack);
                }
            }
            _ => {}
        }
    }
    for f in frames {
        f.ack = acks.get(&f.frame).copied();
    }
    Ok(())
}

/// One session's latency, read back from its folder.
#[derive(Debug, Clone)]
pub struct SessionLatency {
    /// The session folder.
    pub dir: PathBuf,
    /// `summary.json`.
    pub summary: Summary,
    /// `latency.hlog`.
    pub hlog: Hlog,
    /// `frames.csv` joined with the acks of `events.jsonl`; `None` for sessions recorded before `frames.csv`.
    pub frames: Option<Vec<FrameTiming>>,
}

impl SessionLatency {
    /// Read a session folder. Errors name the file (and line) that is missing or bad.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
        };
        let summary_path = dir.join(files::SUMMARY);
        let summary: Summary = serde_json::from_slice(&read(files::SUMMARY)?)
            .with_context(|| format!("{} is not a reflex summary", summary_path.display()))?;
        let hlog_path = dir.join(files::LATENCY);
        let hlog = parse_hlog(
            &read(files::LATENCY)?,
            &hlog_path.display().to_string(),
            TIME_ROWS,
        )?;
        let frames_path = dir.join(files::FRAMES);
        let frames = if frames_path.exists() {
            let text = String::from_utf8_lossy(&read(files::FRAMES)?).into_owned();
            let mut frames = parse_frames(&text, &frames_path.display().to_string())?;
            let events_path = dir.join(files::EVENTS);
            if events_path.exists() {
                let events = String::from_utf8_lossy(&read(files::EVENTS)?).into_owned();
                join_acks(&mut frames, &events, &events_path.display().to_string())?;
            }
            Some(frames)
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            summary,
            hlog,
            frames,
        })
    }

    /// Percentiles of every stage over the whole session, from `latency.hlog`.
    pub fn quantiles(&self) -> [Quantiles; STAGES] {
        std::array::from_fn(|i| Quantiles::of(&self.hlog.totals[i]))
    }

    /// A host time (ns) as s since the session start (or since the first frame's exposure in sessions
    /// recorded before the start was kept).
    pub fn t_s(&self, host_ns: u64) -> f64 {
        let origin = match self.summary.start_ns {
            0 => self
                .frames
                .as_ref()
                .and_then(|f| f.first())
                .map_or(0, |f| f.stamps.exposure_ns),
            start => start,
        };
        (host_ns as f64 - origin as f64) / 1e9
    }
}

/// A stage that made a frame slow: its latency and the session's p50 and p99 of that stage (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slow {
    /// The stage.
    pub stage: Stage,
    /// The frame's latency in it.
    pub ns: u64,
    /// The session's median of the stage.
    pub p50_ns: u64,
    /// The session's p99 of the stage.
    pub p99_ns: u64,
}

/// One of the slowest frames and what made it slow.
#[derive(Debug, Clone, PartialEq)]
pub struct WorstFrame {
    /// The frame.
    pub timing: FrameTiming,
    /// Its latency per stage (ns), as [`FrameTiming::spans_ns`].
    pub spans: [Option<u64>; STAGES],
    /// The [`PARTS`] above their session p99, furthest above their median first; when none is, the one part
    /// furthest above its median.
    pub slow: Vec<Slow>,
}

/// The `n` frames with the largest end-to-end latency, slowest first, each with what was slow in it against
/// the session percentiles `q`.
pub fn worst_frames(frames: &[FrameTiming], q: &[Quantiles; STAGES], n: usize) -> Vec<WorstFrame> {
    let mut by_e2e: Vec<(u64, &FrameTiming)> = frames
        .iter()
        .map(|f| (f.spans_ns()[Stage::EndToEnd as usize].unwrap_or(0), f))
        .collect();
    by_e2e.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.frame.cmp(&b.1.frame)));
    by_e2e
        .into_iter()
        .take(n)
        .map(|(_, f)| {
            let spans = f.spans_ns();
            let mut parts: Vec<Slow> = PARTS
                .iter()
                .filter_map(|&stage| {
                    let qs = &q[stage as usize];
                    spans[stage as usize].map(|ns| Slow {
                        stage,
                        ns,
                        p50_ns: qs.p50,
                        p99_ns: qs.p99,
                    })
                })
                .collect();
            parts.sort_by_key(|s| std::cmp::Reverse(s.ns.saturating_sub(s.p50_ns)));
            if parts.iter().any(|s| s.ns > s.p99_ns) {
                parts.retain(|s| s.ns > s.p99_ns);
            } else {
                parts.truncate(1);
            }
            WorstFrame {
                timing: *f,
                spans,
                slow: parts,
            }
        })
        .collect()
}

/// A run of frame ids missing between two processed frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The processed frame before the gap.
    pub after_frame: u64,
    /// Frame ids missing.
    pub missing: u64,
    /// Exposure (host ns) of the processed frame after the gap.
    pub next_exposure_ns: u64,
}

/// The gaps in the frame ids of `frames` (in the order processed): dropped frames between processed ones.
pub fn gaps(frames: &[FrameTiming]) -> Vec<Gap> {
    frames
        .windows(2)
        .filter(|w| w[1].frame > w[0].frame + 1)
        .map(|w| Gap {
            after_frame: w[0].frame,
            missing: w[1].frame - w[0].frame - 1,
            next_exposure_ns: w[1].stamps.exposure_ns,
        })
        .collect()
}

/// ns → ms with three decimals.
fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// The text report of one session: stage table, latency over time, worst frames, dropped frames.
pub fn text(s: &SessionLatency, worst: usize) -> String {
    let q = s.quantiles();
    // The loop's stages from the log; a further camera's (`cameraN.…`) as summary.json totals them.
    let mut summary = s.summary.clone();
    for st in Stage::ALL {
        summary
            .latency_ns
            .insert(st.name().to_string(), q[st as usize]);
    }
    let mut out = format!("session: {}\n", s.dir.display());
    out += &crate::report::latency_table(&summary);

    let e2e = Stage::EndToEnd as usize;
    let per = s.hlog.rows.first().map_or(0.0, |r| r.length_s);
    let _ = writeln!(
        out,
        "\nlatency over time (end_to_end, ms; {} rows of ~{per:.1} s; slowest part by p99)",
        s.hlog.rows.len()
    );
    let _ = writeln!(
        out,
        "{:>8} {:>8} {:>9} {:>9} {:>9} {:>8}  slowest part (p99)",
        "t (s)", "frames", "p50", "p99", "max", "dropped"
    );
    let gaps = s.frames.as_deref().map(gaps).unwrap_or_default();
    for row in &s.hlog.rows {
        let r = &row.stages[e2e];
        let dropped: u64 = gaps
            .iter()
            .filter(|g| {
                (row.start_s..row.start_s + row.length_s).contains(&s.t_s(g.next_exposure_ns))
            })
            .map(|g| g.missing)
            .sum();
        let slowest = PARTS
            .iter()
            .filter(|&&p| row.stages[p as usize].count > 0)
            .max_by_key(|&&p| row.stages[p as usize].p99)
            .map_or(String::new(), |&p| {
                format!("{} {}", p.name(), ms(row.stages[p as usize].p99))
            });
        let _ = writeln!(
            out,
            "{:>8.1} {:>8} {:>9} {:>9} {:>9} {:>8}  {slowest}",
            row.start_s,
            r.count,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            if s.frames.is_some() {
                dropped.to_string()
            } else {
                "-".into()
            }
        );
    }

    let Some(frames) = &s.frames else {
        out += "\nno frames.csv in this session (recorded before per-frame stamps): no worst frames, no frame-id gaps\n";
        return out;
    };
    let _ = writeln!(
        out,
        "\nworst {} frames by end_to_end (ms); slow: the parts above their session p99 (else the one furthest above its p50)",
        worst.min(frames.len())
    );
    let _ = writeln!(
        out,
        "{:>8} {:>8} {:>10} {:>9} {:>10}  slow",
        "frame", "t (s)", "end_to_end", "inference", "device_ack"
    );
    let opt_ms = |v: Option<u64>| v.map_or("-".to_string(), ms);
    for w in worst_frames(frames, &q, worst) {
        let slow: Vec<String> = w
            .slow
            .iter()
            .map(|sl| format!("{} {} (p99 {})", sl.stage.name(), ms(sl.ns), ms(sl.p99_ns)))
            .collect();
        let _ = writeln!(
            out,
            "{:>8} {:>8.3} {:>10} {:>9} {:>10}  {}",
            w.timing.frame,
            s.t_s(w.timing.stamps.exposure_ns),
            opt_ms(w.spans[e2e]),
            opt_ms(w.spans[Stage::Inference as usize]),
            opt_ms(w.spans[Stage::DeviceAck as usize]),
            slow.join(", ")
        );
    }
    out += &dropped_text(s, &gaps);
    out
}

/// The dropped-frames paragraph: counts from `summary.json` and the gaps in `frames.csv`'s frame ids.
fn dropped_text(s: &SessionLatency, gaps: &[Gap]) -> String {
    let f = &s.summary.frames;
    let missing: u64 = gaps.iter().map(|g| g.missing).sum();
    let mut out = format!(
        "\ndropped frames: {} of {} captured (source skipped {}, stale {}, actuation full {}); gaps in frames.csv ids: {missing} frames in {} gaps\n",
        f.dropped,
        f.captured,
        f.source_skipped,
        f.stale,
        f.actuation_full,
        gaps.len()
    );
    for g in gaps.iter().take(10) {
        let _ = writeln!(
            out,
            "  after frame {} (t {:.3} s): {} missing",
            g.after_frame,
            s.t_s(g.next_exposure_ns),
            g.missing
        );
    }
    if gaps.len() > 10 {
        let _ = writeln!(out, "  … and {} more gaps", gaps.len() - 10);
    }
    out
}

/// `B / A` of two latencies, or `-` when A is 0.
fn ratio(a: u64, b: u64) -> String {
    if a == 0 {
        "-".into()
    } else {
        format!("{:.2}", b as f64 / a as f64)
    }
}

/// Two sessions side by side: their frame counts, then count, p50 and p99 per stage with the ratios B/A.
pub fn compare_text(a: &SessionLatency, b: &SessionLatency) -> String {
    let mut out = String::new();
    for (label, s) in [("A", a), ("B", b)] {
        let f = &s.summary.frames;
        let _ = writeln!(
            out,
            "{label}: {}  captured {}  processed {}  dropped {}  backend: {}",
            s.dir.display(),
            f.captured,
            f.processed,
            f.dropped,
            s.summary.backend
        );
    }
    let _ = writeln!(
        out,
        "{:<20} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8} {:>8}",
        "stage (ms)",
        "A count",
        "A p50",
        "A p99",
        "B count",
        "B p50",
        "B p99",
        "p50 B/A",
        "p99 B/A"
    );
    let (qa, qb) = (a.quantiles(), b.quantiles());
    for stage in Stage::ALL {
        let (x, y) = (qa[stage as usize], qb[stage as usize]);
        if x.count == 0 && y.count == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8} {:>8}",
            stage.name(),
            x.count,
            ms(x.p50),
            ms(x.p99),
            y.count,
            ms(y.p50),
            ms(y.p99),
            ratio(x.p50, y.p50),
            ratio(x.p99, y.p99)
        );
    }
    out
}

#[cfg(test)]
mod tests;
