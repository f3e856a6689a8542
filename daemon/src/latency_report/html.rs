//! The HTML report of `reflex latency --html`: one self-contained file (inline CSS and SVG drawn here; no
//! script, nothing fetched) with the stage table, three plots and the worst frames:
//! - percentile distribution per stage, on HdrHistogram's plotter's axis (x = 1/(1−q), log; labelled 90%,
//!   99%, …), latency on a log axis;
//! - latency over time: p99 of every stage per logged interval, and end-to-end p50 / p99 / max;
//! - a stacked per-stage breakdown of the worst frames (and the median frame for reference).
//!
//! With two sessions (`--compare A B`), A is drawn solid and B dashed in the same plots.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::{PARTS, STAGES, SessionLatency, worst_frames};
use crate::latency::{Quantiles, Stage};

/// One colour per stage, indexed by `Stage as usize`.
const COLOURS: [&str; STAGES] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#000000", "#bcbd22", "#17becf",
];

/// Width of every plot (px).
const W: f64 = 960.0;
/// Height of a line plot (px).
const H: f64 = 380.0;
/// Left edge of the plotting area (px), right of the y tick labels.
const LEFT: f64 = 70.0;
/// Top edge of the plotting area (px).
const TOP: f64 = 20.0;
/// Width of the plotting area (px); the legend is right of it.
const PW: f64 = 680.0;
/// Room under the plotting area for x ticks and the x title (px).
const BOTTOM: f64 = 60.0;
/// Height of a line plot's plotting area (px).
const PH: f64 = H - TOP - BOTTOM;

/// Escape text for HTML and SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// ns → ms.
fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scale {
    /// Linear from `lo` to `hi`.
    Linear,
    /// Log 10, whole decades.
    Log,
    /// Log 10 of 1/(1−q), ticks labelled as percentiles (HdrHistogram's percentile plot).
    Tail,
}

/// One plot axis.
#[derive(Debug, Clone)]
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
    title: String,
}

impl Axis {
    /// An axis covering `values` (non-positive ones are ignored on log scales).
    fn fit(scale: Scale, values: impl Iterator<Item = f64>, title: &str) -> Axis {
        let (mut min, mut max) = (f64::INFINITY, 0.0f64);
        for v in values.filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0)) {
            min = min.min(v);
            max = max.max(v);
        }
        let (lo, hi) = match scale {
            Scale::Linear => (0.0, if max > 0.0 { max * 1.05 } else { 1.0 }),
            Scale::Log | Scale::Tail if max > 0.0 => {
                let lo = if scale == Scale::Tail {
                    0.0
                } else {
                    min.log10().floor()
                };
                (10f64.powf(lo), 10f64.powf(max.log10().ceil().max(lo + 1.0)))
            }
            _ => (1.0, 10.0),
        };
        Axis {
            scale,
            lo,
            hi,
            title: title.to_string(),
        }
    }

    /// Where `v` lies, 0 at `lo` to 1 at `hi`.
    fn pos(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            _ => (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()),
        }
    }

    /// Tick values and their labels.
    fn ticks(&self) -> Vec<(f64, String)> {
        match self.scale {
            Scale::Linear => {
                // The finest 1, 2 or 5 × 10^k step that gives at most 8 ticks.
                let range = self.hi - self.lo;
                let mag = 10f64.powf((range / 8.0).log10().floor());
                let step = [1.0, 2.0, 5.0, 10.0]
                    .into_iter()
                    .map(|m| m * mag)
                    .find(|s| range / s <= 8.0)
                    .unwrap_or(10.0 * mag);
                let decimals = (-step.log10().floor()).max(0.0) as usize;
                (0..)
                    .map(|k| self.lo + f64::from(k) * step)
                    .take_while(|v| *v <= self.hi + 1e-9)
                    .map(|v| (v, format!("{v:.decimals$}")))
                    .collect()
            }
            Scale::Log | Scale::Tail => {
                let (a, b) = (
                    self.lo.log10().round() as i32,
                    self.hi.log10().round() as i32,
                );
                (a..=b)
                    .map(|k| {
                        let v = 10f64.powi(k);
                        let label = if self.scale == Scale::Tail {
                            let d = (k - 2).max(0) as usize;
                            format!("{:.d$}%", 100.0 * (1.0 - 1.0 / v))
                        } else {
                            format!("{:.*}", (-k).max(0) as usize, v)
                        };
                        (v, label)
                    })
                    .collect()
            }
        }
    }
}

/// One line of a plot.
struct Series {
    colour: &'static str,
    dashed: bool,
    width: f64,
    points: Vec<(f64, f64)>,
}

/// One legend entry.
struct Legend {
    label: String,
    colour: &'static str,
    dashed: bool,
}

/// The SVG frame of a plot `height` px high: background, grid, ticks and axis titles (`y`: `None` for a plot
/// whose rows are labelled in place).
fn frame(x: &Axis, y: Option<&Axis>, height: f64) -> String {
    let mut s = format!(
        r##"<svg width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12" role="img"><rect width="{W}" height="{height}" fill="white"/>"##
    );
    let ph = height - TOP - BOTTOM;
    for (v, label) in x.ticks() {
        let px = LEFT + x.pos(v) * PW;
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{:.1}" stroke="#e5e5e5"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            esc(&label)
        );
    }
    for (py, label) in y.map_or(Vec::new(), |y| {
        y.ticks().into_iter().map(|(v, l)| (y.pos(v), l)).collect()
    }) {
        let py = TOP + ph - py * ph;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{py:.1}" y2="{py:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + PW,
            LEFT - 6.0,
            py + 4.0,
            esc(&label)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{PW}" height="{ph:.1}" fill="none" stroke="#999"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"##,
        LEFT + PW / 2.0,
        TOP + ph + 36.0,
        esc(&x.title),
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y.map_or("", |y| y.title.as_str()))
    );
    s
}

/// The legend, right of the plotting area, closing the SVG.
fn legend(s: &mut String, entries: &[Legend]) {
    for (i, e) in entries.iter().enumerate() {
        let y = TOP + 10.0 + i as f64 * 18.0;
        let x = LEFT + PW + 16.0;
        let dash = if e.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r##"<line x1="{x}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"##,
            x + 26.0,
            e.colour,
            x + 32.0,
            y + 4.0,
            esc(&e.label)
        );
    }
    s.push_str("</svg>\n");
}

/// A line plot.
fn line_plot(x: &Axis, y: &Axis, series: &[Series], entries: &[Legend]) -> String {
    let mut s = frame(x, Some(y), H);
    for line in series {
        let pts: Vec<String> = line
            .points
            .iter()
            .filter(|(px, py)| {
                (x.scale == Scale::Linear || *px > 0.0) && (y.scale == Scale::Linear || *py > 0.0)
            })
            .map(|&(px, py)| {
                format!(
                    "{:.1},{:.1}",
                    LEFT + x.pos(px) * PW,
                    TOP + PH - y.pos(py) * PH
                )
            })
            .collect();
        let dash = if line.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}"{dash}/>"#,
            pts.join(" "),
            line.colour,
            line.width
        );
    }
    legend(&mut s, entries);
    s
}

/// One bar of a stacked breakdown: its label and (stage, ns) parts, left to right.
struct Bar {
    label: String,
    parts: Vec<(Stage, u64)>,
}

/// Horizontal stacked bars of per-stage latency (ms), each part with a tooltip.
fn stacked_bars(bars: &[Bar]) -> String {
    let row = 22.0;
    let height = TOP + BOTTOM + 4.0 + row * bars.len().max(1) as f64;
    let total = |b: &Bar| b.parts.iter().map(|p| ms(p.1)).sum::<f64>();
    // Room right of the longest bar for its label.
    let x = Axis::fit(
        Scale::Linear,
        bars.iter().map(|b| total(b) * 1.3),
        "latency (ms), from exposure: parts of end_to_end, then device_ack",
    );
    let mut s = frame(&x, None, height);
    for (i, bar) in bars.iter().enumerate() {
        let top = TOP + 4.0 + i as f64 * row;
        let mut at = 0.0;
        for &(stage, ns) in &bar.parts {
            let (x0, w) = (
                LEFT + x.pos(at) * PW,
                x.pos(at + ms(ns)) * PW - x.pos(at) * PW,
            );
            let _ = write!(
                s,
                r#"<rect x="{x0:.1}" y="{top:.1}" width="{:.2}" height="{:.1}" fill="{}"><title>{}: {} ms</title></rect>"#,
                w.max(0.0),
                row - 6.0,
                COLOURS[stage as usize],
                esc(&bar.label),
                format_args!("{} {:.3}", stage.name(), ms(ns))
            );
            at += ms(ns);
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{} ({at:.3} ms)</text>"#,
            LEFT + x.pos(at) * PW + 4.0,
            top + row - 10.0,
            esc(&bar.label)
        );
    }
    let entries: Vec<Legend> = PARTS
        .iter()
        .map(|&p| Legend {
            label: p.name().into(),
            colour: COLOURS[p as usize],
            dashed: false,
        })
        .collect();
    legend(&mut s, &entries);
    s
}

/// HdrHistogram's percentile curve of `h`: (1/(1−q), ms) at ten points per decade, ending at the maximum.
fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let n = h.len() as f64;
    let mut pts: Vec<(f64, f64)> = (0..)
        .map(|k| 10f64.powf(f64::from(k) / 10.0))
        .take_while(|x| *x < n)
        .map(|x| (x, ms(h.value_at_quantile(1.0 - 1.0 / x))))
        .collect();
    pts.push((n.max(1.0), ms(h.max())));
    pts
}

/// The stages with samples in any of `sessions`.
fn stages_with_samples(sessions: &[&SessionLatency]) -> Vec<Stage> {
    Stage::ALL
        .into_iter()
        .filter(|&st| {
            sessions
                .iter()
                .any(|s| !s.hlog.totals[st as usize].is_empty())
        })
        .collect()
}

/// Legend entries for the stages, then (comparing) which line style is which session.
fn stage_legend(stages: &[Stage], sessions: &[&SessionLatency]) -> Vec<Legend> {
    let mut entries: Vec<Legend> = stages
        .iter()
        .map(|&st| Legend {
            label: st.name().into(),
            colour: COLOURS[st as usize],
            dashed: false,
        })
        .collect();
    entries.extend(session_legend(sessions));
    entries
}

/// Comparing: "A: folder" solid and "B: folder" dashed; nothing for one session.
fn session_legend(sessions: &[&SessionLatency]) -> Vec<Legend> {
    if sessions.len() < 2 {
        return Vec::new();
    }
    sessions
        .iter()
        .enumerate()
        .map(|(i, s)| Legend {
            label: format!("{}: {}", ["A", "B"][i.min(1)], folder_name(s)),
            colour: "#333333",
            dashed: i > 0,
        })
        .collect()
}

/// The last component of a session's folder.
fn folder_name(s: &SessionLatency) -> String {
    s.dir.file_name().map_or_else(
        || s.dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The inline style sheet.
const CSS: &str = "body{font-family:sans-serif;max-width:1000px;margin:1em auto;color:#222}\
    table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}\
    td:first-child,th:first-child{text-align:left}td.slow{color:#c00;font-weight:bold}p.note{color:#555}\
    pre{background:#f6f6f6;padding:.5em;overflow-x:auto}";

/// Which end-to-end statistic a line of the over-time plot shows: label, colour, and how to read it.
type Stat = (&'static str, &'static str, fn(&Quantiles) -> u64);

/// The end-to-end statistics drawn over time.
const E2E_STATS: [Stat; 3] = [
    ("p50", "#1f77b4", |q| q.p50),
    ("p99", "#ff7f0e", |q| q.p99),
    ("max", "#d62728", |q| q.max),
];

/// `stat` of `stage` per logged interval of `s`, at the interval's middle (s, ms); intervals without samples
/// of the stage are left out.
fn over_time(s: &SessionLatency, stage: Stage, stat: fn(&Quantiles) -> u64) -> Vec<(f64, f64)> {
    s.hlog
        .intervals
        .iter()
        .filter(|iv| iv.stages[stage as usize].count > 0)
        .map(|iv| {
            let t = iv.start_s + iv.length_s / 2.0;
            (t, ms(stat(&iv.stages[stage as usize])))
        })
        .collect()
}

/// One line per session and stage, in the stage's colour, B dashed, end-to-end bold.
fn stage_series(
    sessions: &[&SessionLatency],
    stages: &[Stage],
    points: impl Fn(&SessionLatency, Stage) -> Vec<(f64, f64)>,
) -> Vec<Series> {
    let mut series = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        for &st in stages {
            series.push(Series {
                colour: COLOURS[st as usize],
                dashed: i > 0,
                width: if st == Stage::EndToEnd { 2.5 } else { 1.5 },
                points: points(s, st),
            });
        }
    }
    series
}

/// A line plot with both axes fitted to `series`.
fn fitted_plot(
    x: (Scale, &str),
    y: (Scale, &str),
    series: &[Series],
    entries: &[Legend],
) -> String {
    let xs = series.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    line_plot(
        &Axis::fit(x.0, xs, x.1),
        &Axis::fit(y.0, ys, y.1),
        series,
        entries,
    )
}

/// The whole HTML report of one session, or of two side by side.
pub fn report(sessions: &[&SessionLatency], worst: usize) -> String {
    let names: Vec<String> = sessions
        .iter()
        .map(|s| s.dir.display().to_string())
        .collect();
    let label = |i: usize| match sessions.len() {
        1 => "",
        _ => ["A", "B"][i.min(1)],
    };
    let mut h = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>reflex latency: {}</title>\n\
         <style>{CSS}</style></head><body>\n<h1>reflex latency</h1>\n",
        esc(&names.join(" vs "))
    );
    for (i, s) in sessions.iter().enumerate() {
        let f = &s.summary.frames;
        let _ = writeln!(
            h,
            "<p><b>{}{}</b> — {:.1} s, captured {}, processed {}, dropped {} (source skipped {}, stale {}, \
             actuation full {}); backend {}, scheduling {}, events {}</p>",
            if label(i).is_empty() {
                String::new()
            } else {
                format!("{}: ", label(i))
            },
            esc(&names[i]),
            s.summary.duration_s,
            f.captured,
            f.processed,
            f.dropped,
            f.source_skipped,
            f.stale,
            f.actuation_full,
            esc(&s.summary.backend),
            if s.summary.realtime { "fifo" } else { "normal" },
            s.summary.events
        );
    }
    for s in sessions {
        for camera in s.summary.cameras.iter().filter(|c| c.camera > 0) {
            let key = |stage: &str| format!("camera{}.{stage}", camera.camera);
            let pose = s.summary.latency_ns.get(&key("exposure_to_pose"));
            let _ = writeln!(
                h,
                "<p>{}{}</p>",
                esc(&crate::report::camera_line(camera)),
                pose.map(|q| format!(
                    "; exposure → pose p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                    q.p50 as f64 / 1e6,
                    q.p99 as f64 / 1e6,
                    q.max as f64 / 1e6
                ))
                .unwrap_or_default()
            );
        }
    }
    h += &stage_table(sessions);
    let stages = stages_with_samples(sessions);
    let time = (Scale::Linear, "time since the session start (s)");

    h += "<h2>Percentile distribution per stage</h2>\n";
    let series = stage_series(sessions, &stages, |s, st| {
        let hist = &s.hlog.totals[st as usize];
        if hist.is_empty() {
            Vec::new()
        } else {
            percentile_points(hist)
        }
    });
    let legend = stage_legend(&stages, sessions);
    h += &fitted_plot(
        (Scale::Tail, "percentile"),
        (Scale::Log, "latency (ms)"),
        &series,
        &legend,
    );

    h += "<h2>Latency over time: p99 per stage</h2>\n\
          <p class=\"note\">One point per logged interval (1 s while recording), at its middle.</p>\n";
    let series = stage_series(sessions, &stages, |s, st| over_time(s, st, |q| q.p99));
    h += &fitted_plot(time, (Scale::Log, "p99 latency (ms)"), &series, &legend);

    h += "<h2>Latency over time: end_to_end p50, p99, max</h2>\n";
    let mut series = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        for (_, colour, stat) in E2E_STATS {
            series.push(Series {
                colour,
                dashed: i > 0,
                width: 2.0,
                points: over_time(s, Stage::EndToEnd, stat),
            });
        }
    }
    let mut legend: Vec<Legend> = E2E_STATS
        .iter()
        .map(|&(label, colour, _)| Legend {
            label: label.into(),
            colour,
            dashed: false,
        })
        .collect();
    legend.extend(session_legend(sessions));
    h += &fitted_plot(
        time,
        (Scale::Linear, "end_to_end latency (ms)"),
        &series,
        &legend,
    );

    h += "<h2>Worst frames: per-stage breakdown</h2>\n";
    let mut bars = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let Some(frames) = &s.frames else {
            let _ = writeln!(
                h,
                "<p class=\"note\">{}: no frames.csv (recorded before per-frame stamps).</p>",
                esc(&names[i])
            );
            continue;
        };
        let prefix = if label(i).is_empty() {
            String::new()
        } else {
            format!("{} ", label(i))
        };
        let q = s.quantiles();
        let worst_list = worst_frames(frames, &q, worst);
        let parts = |spans: &[Option<u64>; STAGES]| -> Vec<(Stage, u64)> {
            PARTS
                .iter()
                .filter_map(|&p| spans[p as usize].map(|v| (p, v)))
                .collect()
        };
        for w in &worst_list {
            bars.push(Bar {
                label: format!("{prefix}frame {}", w.timing.frame),
                parts: parts(&w.spans),
            });
        }
        if let Some(median) = worst_frames(frames, &q, frames.len()).get(frames.len() / 2) {
            bars.push(Bar {
                label: format!("{prefix}median: frame {}", median.timing.frame),
                parts: parts(&median.spans),
            });
        }
        h += &worst_table(s, &worst_list, &prefix);
    }
    if !bars.is_empty() {
        h += &stacked_bars(&bars);
    }
    for (i, s) in sessions.iter().enumerate() {
        let _ = writeln!(
            h,
            "<details><summary>{} as text</summary><pre>{}</pre></details>",
            esc(&names[i]),
            esc(&super::text(s, worst))
        );
    }
    h += "</body></html>\n";
    h
}

/// The stage table: count and percentiles per stage, or A and B side by side with the ratios.
fn stage_table(sessions: &[&SessionLatency]) -> String {
    let q: Vec<_> = sessions.iter().map(|s| s.quantiles()).collect();
    let f = |ns: u64| format!("{:.3}", ms(ns));
    let mut t = String::from("<table>");
    if let [a, b] = q.as_slice() {
        t += "<tr><th>stage (ms)</th><th>A count</th><th>A p50</th><th>A p99</th><th>B count</th><th>B p50</th><th>B p99</th><th>p50 B/A</th><th>p99 B/A</th></tr>\n";
        for st in Stage::ALL {
            let (x, y) = (a[st as usize], b[st as usize]);
            if x.count + y.count > 0 {
                let _ = writeln!(
                    t,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    st.name(),
                    x.count,
                    f(x.p50),
                    f(x.p99),
                    y.count,
                    f(y.p50),
                    f(y.p99),
                    super::ratio(x.p50, y.p50),
                    super::ratio(x.p99, y.p99)
                );
            }
        }
    } else if let Some(a) = q.first() {
        t += "<tr><th>stage (ms)</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\n";
        for st in Stage::ALL {
            let x = a[st as usize];
            if x.count > 0 {
                let _ = writeln!(
                    t,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    st.name(),
                    x.count,
                    f(x.p50),
                    f(x.p90),
                    f(x.p99),
                    f(x.p999),
                    f(x.max)
                );
            }
        }
    }
    t + "</table>\n"
}

/// The worst frames as a table: every part and end-to-end (ms), the slow parts in red.
fn worst_table(s: &SessionLatency, worst: &[super::WorstFrame], prefix: &str) -> String {
    let mut t = format!(
        "<table><tr><th>{prefix}frame</th><th>t (s)</th>{}<th>end_to_end</th></tr>\n",
        PARTS
            .iter()
            .map(|p| format!("<th>{}</th>", p.name()))
            .collect::<String>()
    );
    for w in worst {
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{:.3}</td>",
            w.timing.frame,
            s.t_s(w.timing.stamps.exposure_ns)
        );
        for p in PARTS.into_iter().chain([Stage::EndToEnd]) {
            let slow = w.slow.iter().any(|sl| sl.stage == p);
            let _ = write!(
                t,
                "<td{}>{}</td>",
                if slow { " class=\"slow\"" } else { "" },
                w.spans[p as usize].map_or("-".into(), |v| format!("{:.3}", ms(v)))
            );
        }
        t += "</tr>\n";
    }
    t + "</table>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(a: &Axis) -> Vec<String> {
        a.ticks().into_iter().map(|t| t.1).collect()
    }

    #[test]
    fn axes_fit_the_data_and_label_ticks_for_people() {
        let tail = Axis::fit(Scale::Tail, [1.0, 250.0, 999.0].into_iter(), "percentile");
        assert_eq!(labels(&tail), ["0%", "90%", "99%", "99.9%"]);
        assert_eq!(tail.pos(1.0), 0.0);
        assert!((tail.pos(31.6) - 0.5).abs() < 1e-3);
        let log = Axis::fit(Scale::Log, [0.004, 0.0, 7.5].into_iter(), "ms");
        assert_eq!(labels(&log), ["0.001", "0.01", "0.1", "1", "10"]);
        let lin = Axis::fit(Scale::Linear, [0.0, 9.3].into_iter(), "s");
        assert_eq!(labels(&lin), ["0", "2", "4", "6", "8"]);
        let small = Axis::fit(Scale::Linear, [0.12].into_iter(), "ms");
        assert_eq!(labels(&small)[..3], ["0.00", "0.02", "0.04"]);
    }

    #[test]
    fn percentile_curve_ends_at_the_maximum() {
        let mut h = crate::latency::new_histogram();
        (1..=1000u64).for_each(|v| h.record(v * 1000).unwrap());
        let pts = percentile_points(&h);
        assert_eq!(pts.first().map(|p| p.0), Some(1.0));
        assert_eq!(pts.last(), Some(&(1000.0, ms(h.max()))));
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
