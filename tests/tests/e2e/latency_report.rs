//! `reflex latency` on the shared default session: the report reads back exactly what the writer logged, the
//! per-frame stamps reproduce the loop's histograms, HdrHistogram's own Python reader agrees with ours on
//! `latency.hlog`, and the HTML report holds every stage and fetches nothing.

use std::path::Path;
use std::process::Command;

use reflex_daemon::latency::{Quantiles, Stage, new_histogram};
use reflex_daemon::latency_report::{self, SessionLatency, gaps};
use reflex_daemon::session::files;

use crate::default_session::default_session;

fn load() -> SessionLatency {
    let (_, report) = default_session();
    SessionLatency::load(&report.dir).expect("the default session reads back")
}

#[test]
fn hlog_reads_back_what_the_summary_says() {
    let s = load();
    let q = s.quantiles();
    for stage in Stage::ALL {
        assert_eq!(
            Some(&q[stage as usize]),
            s.summary.latency_ns.get(stage.name()),
            "{}: latency.hlog totals vs summary.json",
            stage.name()
        );
    }
    let n = s.hlog.intervals.len();
    assert!(n >= 2, "{n} intervals");
    let e2e = Stage::EndToEnd as usize;
    let per_interval: u64 = s.hlog.intervals.iter().map(|i| i.stages[e2e].count).sum();
    let per_row: u64 = s.hlog.rows.iter().map(|i| i.stages[e2e].count).sum();
    assert_eq!(per_interval, s.summary.frames.processed);
    assert_eq!(per_row, s.summary.frames.processed);
    assert!(
        s.hlog
            .intervals
            .windows(2)
            .all(|w| w[0].start_s < w[1].start_s)
    );
}

#[test]
fn frames_csv_reproduces_the_loop_histograms() {
    let s = load();
    let frames = s.frames.as_ref().expect("frames.csv");
    assert_eq!(frames.len() as u64, s.summary.frames.processed);
    // Every stage the loop computes from a frame's own stamps, exactly as recorded.
    for stage in [
        Stage::Capture,
        Stage::QueueInference,
        Stage::Inference,
        Stage::QueueActuation,
        Stage::Predict,
        Stage::Trigger,
        Stage::Output,
        Stage::EndToEnd,
        Stage::OutsideInference,
    ] {
        let mut h = new_histogram();
        for f in frames {
            if let Some(v) = f.spans_ns()[stage as usize] {
                h.saturating_record(v.max(1));
            }
        }
        assert!(
            h == s.hlog.totals[stage as usize],
            "{}: frames.csv gives {:?}, latency.hlog {:?}",
            stage.name(),
            Quantiles::of(&h),
            Quantiles::of(&s.hlog.totals[stage as usize])
        );
    }
    let acked = frames.iter().filter(|f| f.ack.is_some()).count() as u64;
    assert!(
        acked > 0 && acked <= s.summary.latency_ns["device_ack"].count,
        "{acked} frames with a device ack"
    );
    let missing: u64 = gaps(frames).iter().map(|g| g.missing).sum();
    assert!(missing <= s.summary.frames.dropped);
}

#[test]
fn text_and_html_reports_cover_every_stage() {
    let s = load();
    let text = latency_report::text(&s, 5);
    for stage in Stage::ALL {
        let count = s.summary.latency_ns[stage.name()].count;
        if count > 0 {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{} ", stage.name()))
                        && l.contains(&format!(" {count} "))),
                "no table row for {}:\n{text}",
                stage.name()
            );
        }
    }
    for section in ["latency over time", "worst 5 frames", "dropped frames:"] {
        assert!(text.contains(section), "{section}:\n{text}");
    }
    let html = latency_report::html::report(&[&s], 5);
    for stage in Stage::ALL {
        assert!(
            html.contains(&format!("<td>{}</td>", stage.name())),
            "the HTML stage table lacks {}",
            stage.name()
        );
    }
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg ").count(), 4, "four plots");
    for outside in ["http:", "https:", "src=", "<script", "<link", "url("] {
        assert!(
            !html.contains(outside),
            "the report must be self-contained: {outside}"
        );
    }
    let compare = latency_report::compare_text(&s, &s);
    assert!(
        compare.contains("end_to_end") && compare.contains("1.00"),
        "{compare}"
    );
}

/// The repository root (this crate is `tests/`).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

#[test]
fn hdrhistogram_python_reader_agrees_on_the_interval_log() {
    let s = load();
    let hlog = s.dir.join(files::LATENCY);
    let script = root().join("tools/peers/read_hlog.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&hlog)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 {}: {e}; run `bash tools/test.sh`, which sets up Python and tools/peers/.venv", script.display())
        });
    assert!(
        out.status.success(),
        "{} failed (it installs hdrhistogram into tools/peers/.venv on first use; `bash tools/test.sh` does that up front):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let peer: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the peer prints JSON");
    let intervals = s.hlog.intervals.len() as u64;
    assert_eq!(
        peer["_lines"].as_u64(),
        Some(intervals * Stage::ALL.len() as u64),
        "interval lines in the file"
    );
    for stage in Stage::ALL {
        let name = stage.name();
        let p = &peer[name];
        let h = &s.hlog.totals[stage as usize];
        let q = Quantiles::of(h);
        let get = |k: &str| {
            p[k].as_u64()
                .unwrap_or_else(|| panic!("{name}: no {k} in {p}"))
        };
        assert_eq!(get("intervals"), intervals, "{name}: intervals");
        assert_eq!(get("count"), q.count, "{name}: count");
        if q.count == 0 {
            continue;
        }
        assert_eq!(get("max"), q.max, "{name}: max");
        let recorded: Vec<(u64, u64)> = h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let peer_recorded: Vec<(u64, u64)> = p["recorded"]
            .as_array()
            .expect("recorded")
            .iter()
            .map(|v| (v[0].as_u64().unwrap(), v[1].as_u64().unwrap()))
            .collect();
        // The Python package rounds q·n to the nearest rank, the Rust crate rounds up; at p50 they agree, and
        // at any rank both name the same value when they read the same histogram.
        assert_eq!(get("p50"), q.p50, "{name}: p50");
        assert_eq!(
            get("p99"),
            value_at_rank(&recorded, get("rank_p99")),
            "{name}: p99"
        );
        if get("rank_p99") == (0.99 * q.count as f64).ceil() as u64 {
            assert_eq!(get("p99"), q.p99, "{name}: p99 (same rank)");
        }
        assert_eq!(peer_recorded, recorded, "{name}: every recorded bucket");
    }
}

/// The value of the `rank`-th smallest sample (1-based) among recorded (value, count) buckets.
fn value_at_rank(recorded: &[(u64, u64)], rank: u64) -> u64 {
    let mut seen = 0;
    for &(value, count) in recorded {
        seen += count;
        if seen >= rank {
            return value;
        }
    }
    recorded.last().map_or(0, |v| v.0)
}
