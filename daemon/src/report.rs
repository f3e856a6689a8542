//! Human-readable output: the live status line and the end-of-session latency table.

use std::fmt::Write as _;

use crate::latency::{CameraStage, Quantiles, Stage};
use crate::pipeline::Status;
use crate::session::Summary;

/// ns → ms with three decimals.
fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// ns → ms with three significant digits (`12.3`, `6.23`, `0.019`), for the status line.
fn ms_short(ns: u64) -> String {
    let v = ns as f64 / 1e6;
    match v {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v if v >= 1.0 => format!("{v:.2}"),
        v => format!("{v:.3}"),
    }
}

/// One status line of at most `max_width` characters: time, frames, drops and rate; then, while they fit and
/// in this order, the last interval's end-to-end p50/p99, lost records and device errors (when any), and the
/// p99 of inference, of the loop outside inference and of the device ack (stages the interval measured).
pub fn status_line(s: &Status, max_width: usize) -> String {
    let mut line = format!(
        "{:6.1} s  captured {}  processed {}  dropped {}  {:5.1} fps",
        s.elapsed_s, s.frames.captured, s.frames.processed, s.frames.dropped, s.fps
    );
    let window = |stage: Stage| Some(s.latency.get(stage).window).filter(|w| w.count > 0);
    let mut more = Vec::new();
    if let Some(w) = window(Stage::EndToEnd) {
        more.push(format!(
            "end-to-end p50 {} p99 {} ms",
            ms_short(w.p50),
            ms_short(w.p99)
        ));
    }
    if s.records_lost > 0 {
        more.push(format!("LOST {} records", s.records_lost));
    }
    if s.device_errors > 0 {
        more.push(format!("device errors {}", s.device_errors));
    }
    for (stage, label) in [
        (Stage::Inference, "inference"),
        (Stage::OutsideInference, "outside inference"),
        (Stage::DeviceAck, "device ack"),
    ] {
        if let Some(w) = window(stage) {
            more.push(format!("{label} p99 {} ms", ms_short(w.p99)));
        }
    }
    for part in more {
        if line.len() + 2 + part.len() > max_width {
            break;
        }
        line.push_str("  ");
        line.push_str(&part);
    }
    line.truncate(max_width);
    line
}

/// Columns of the terminal on stderr (where the status line goes), or 100 when that is not a terminal.
pub fn terminal_width() -> usize {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // reason for allowing unsafe: FFI to ioctl(TIOCGWINSZ), the one way to read a terminal's size.
    // SAFETY: TIOCGWINSZ writes one `winsize` into `size`, a valid and writable one; on error it writes nothing.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    if rc == 0 && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        100
    }
}

/// A further camera in one line: label, source, size, rate, folder and frame counts.
pub fn camera_line(camera: &crate::session::CameraSummary) -> String {
    let f = &camera.frames;
    format!(
        "{} `{}` {}x{} at {} frames/s, in {}/: captured {}  estimated {}  dropped {} (source skipped {}, stale {}, actuation full {})",
        crate::config::camera_label(usize::from(camera.camera), &camera.name),
        camera.source,
        camera.size[0],
        camera.size[1],
        camera.fps,
        camera.dir,
        f.captured,
        f.processed,
        f.dropped,
        f.source_skipped,
        f.stale,
        f.actuation_full
    )
}

/// One row of the latency table: `key`'s quantiles in `summary`, labelled `label`; nothing when it has none.
fn quantile_row(out: &mut String, summary: &Summary, key: &str, label: &str) {
    let Some(q): Option<&Quantiles> = summary.latency_ns.get(key) else {
        return;
    };
    if q.count == 0 {
        let _ = writeln!(out, "{label:<20} {:>8} {:>9}", 0, "-");
        return;
    }
    let _ = writeln!(
        out,
        "{label:<20} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        q.count,
        ms(q.p50),
        ms(q.p90),
        ms(q.p99),
        ms(q.p999),
        ms(q.max)
    );
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
        quantile_row(&mut out, summary, stage.name(), stage.name());
    }
    // Further cameras: their counts and their stages up to the pose.
    for camera in summary.cameras.iter().filter(|c| c.camera > 0) {
        let _ = writeln!(out, "{}", camera_line(camera));
        for stage in CameraStage::ALL {
            let key = format!("camera{}.{}", camera.camera, stage.name());
            quantile_row(&mut out, summary, &key, &format!("  {}", stage.name()));
        }
    }
    if summary.device_errors > 0 {
        let _ = writeln!(
            out,
            "WARNING: the output device reported {} errors (see device_error lines in events.jsonl)",
            summary.device_errors
        );
    }
    if summary.actions_dropped > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} trigger actions were dropped (more actions in one frame, or more delayed actions \
             waiting, than reflex holds: 64 each)",
            summary.actions_dropped
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencySet;
    use crate::metrics::LiveLatency;
    use crate::session::FrameCounts;

    #[test]
    fn the_table_warns_of_dropped_actions_lost_records_and_device_errors() {
        let clean = latency_table(&Summary::default());
        assert!(!clean.contains("WARNING"), "{clean}");
        let table = latency_table(&Summary {
            actions_dropped: 3,
            records_lost: 2,
            device_errors: 1,
            ..Summary::default()
        });
        assert!(
            table.contains("WARNING: 3 trigger actions were dropped"),
            "{table}"
        );
        assert!(table.contains("WARNING: 2 records were lost"), "{table}");
        assert!(table.contains("reported 1 errors"), "{table}");
    }

    fn status() -> Status {
        let mut set = LatencySet::new();
        for v in 1..=100u64 {
            set.record(Stage::EndToEnd, v * 100_000);
            set.record(Stage::Inference, v * 80_000);
            set.record(Stage::OutsideInference, v * 20_000);
        }
        let mut latency = LiveLatency::default();
        latency.add_interval(&set);
        Status {
            elapsed_s: 12.5,
            frames: FrameCounts {
                captured: 1502,
                processed: 1501,
                dropped: 1,
                stale: 1,
                ..FrameCounts::default()
            },
            fps: 120.04,
            records_lost: 0,
            device_errors: 0,
            latency,
            metrics_addr: None,
        }
    }

    #[test]
    fn status_line_shows_stage_p99s_while_they_fit() {
        let s = status();
        let wide = status_line(&s, 200);
        assert_eq!(
            wide,
            "  12.5 s  captured 1502  processed 1501  dropped 1  120.0 fps  end-to-end p50 5.00 p99 9.90 ms  inference p99 7.92 ms  outside inference p99 1.98 ms"
        );
        // No device ack in this interval: not shown. Narrower: the lowest-priority parts go first.
        let narrow = status_line(&s, 100);
        assert_eq!(
            narrow,
            "  12.5 s  captured 1502  processed 1501  dropped 1  120.0 fps  end-to-end p50 5.00 p99 9.90 ms"
        );
        assert!(status_line(&s, 40).len() <= 40);
        // Warnings come before the per-stage detail.
        let bad = Status {
            records_lost: 3,
            device_errors: 2,
            ..s
        };
        let line = status_line(&bad, 140);
        assert!(
            line.ends_with("9.90 ms  LOST 3 records  device errors 2"),
            "{line}"
        );
        // Before the first interval: counts only.
        let fresh = Status {
            latency: LiveLatency::default(),
            ..s
        };
        assert!(status_line(&fresh, 200).ends_with("120.0 fps"));
    }
}
