//! Human-readable output: the live status line and the end-of-session latency table.

use std::fmt::Write as _;

use crate::latency::{Quantiles, Stage};
use crate::pipeline::Status;
use crate::session::Summary;

/// ns → ms with three decimals.
fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// One status line: time, frames, drops, rate and the current end-to-end latency.
pub fn status_line(s: &Status) -> String {
    format!(
        "{:6.1} s  captured {:>6}  processed {:>6}  dropped {:>4}  {:6.1} fps  end-to-end p50 {} ms  p99 {} ms",
        s.elapsed_s,
        s.frames.captured,
        s.frames.processed,
        s.frames.dropped,
        s.fps,
        ms(s.p50_ns),
        ms(s.p99_ns)
    )
}

/// The end-of-session table: p50 / p90 / p99 / p99.9 / max per stage and end to end, in ms.
pub fn latency_table(summary: &Summary) -> String {
    let mut out = String::new();
    let f = &summary.frames;
    let _ = writeln!(
        out,
        "frames: captured {}  processed {}  dropped {} (source skipped {}, stale {}, actuation full {})  backend: {}  scheduling: {}  events: {}",
        f.captured,
        f.processed,
        f.dropped,
        f.source_skipped,
        f.stale,
        f.actuation_full,
        summary.backend,
        if summary.realtime { "fifo" } else { "normal" },
        summary.events
    );
    let _ = writeln!(
        out,
        "{:<20} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "stage (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for stage in Stage::ALL {
        let Some(q): Option<&Quantiles> = summary.latency_ns.get(stage.name()) else {
            continue;
        };
        if q.count == 0 {
            let _ = writeln!(out, "{:<20} {:>8} {:>9}", stage.name(), 0, "-");
            continue;
        }
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            stage.name(),
            q.count,
            ms(q.p50),
            ms(q.p90),
            ms(q.p99),
            ms(q.p999),
            ms(q.max)
        );
    }
    if summary.device_errors > 0 {
        let _ = writeln!(
            out,
            "WARNING: the output device reported {} errors (see device_error lines in events.jsonl)",
            summary.device_errors
        );
    }
    if summary.records_lost > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} records were lost (the writer fell behind)",
            summary.records_lost
        );
    }
    out
}
