//! The live Prometheus endpoint of a real session: `/metrics` is fetched with a plain TCP client from inside
//! the status callback while the loop runs, and its body is parsed by Prometheus's own Python client
//! (`tools/peers/prom_parse.py`, which installs `prometheus-client` into tools/peers/.venv on first use).

#[path = "support/run.rs"]
mod run;
use run::reflex;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use reflex_daemon::clock::MonotonicClock;
use reflex_daemon::config::{Config, DEFAULT_TOML};
use reflex_daemon::latency::Stage;
use reflex_daemon::pipeline::{self, RunOptions, Status};

/// Frames of the session: 4 s at the default 120 fps, so several 1 s latency intervals reach the writer.
const FRAMES: u64 = 480;

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
struct Http {
    status_line: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// `GET path` on a fresh connection; the server closes it after the response.
fn get(addr: SocketAddr, path: &str) -> Http {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("header {l:?}"));
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    Http {
        status_line,
        headers,
        body: body.to_string(),
    }
}

/// The exposition parsed by `prometheus_client.parser.text_string_to_metric_families`.
fn parse_with_prometheus_client(text: &str) -> Vec<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/peers/prom_parse.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 {}: {e}", script.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A sample's name and its labels, sorted.
type SampleKey = (String, Vec<(String, String)>);

/// Samples by name and labels, with the type of the family each belongs to and the value (None: NaN).
struct Families {
    samples: BTreeMap<SampleKey, (String, Option<f64>)>,
}

impl Families {
    fn new(families: &[serde_json::Value], text: &str) -> Self {
        let mut samples = BTreeMap::new();
        for f in families {
            let kind = f["type"].as_str().unwrap().to_string();
            assert_ne!(
                kind, "unknown",
                "a sample outside its declared family: {f}\n{text}"
            );
            assert!(
                !f["documentation"].as_str().unwrap().is_empty(),
                "no HELP: {f}"
            );
            for s in f["samples"].as_array().unwrap() {
                let mut labels: Vec<(String, String)> = s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                labels.sort();
                let key = (s["name"].as_str().unwrap().to_string(), labels);
                let dup = samples.insert(key.clone(), (kind.clone(), s["value"].as_f64()));
                assert!(dup.is_none(), "sample {key:?} twice");
            }
        }
        Self { samples }
    }

    /// The value (None: NaN) and family type of one sample; panics when it is missing.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> (&str, Option<f64>) {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        let (kind, value) = self
            .samples
            .get(&(name.to_string(), labels.clone()))
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"));
        (kind, *value)
    }

    /// A finite value of a family of type `kind`.
    fn value(&self, name: &str, labels: &[(&str, &str)], kind: &str) -> f64 {
        let (k, v) = self.get(name, labels);
        assert_eq!(k, kind, "{name}{labels:?}");
        v.unwrap_or_else(|| panic!("{name}{labels:?} is NaN"))
    }
}

/// What the status callback saw and fetched, once the first latency interval was published.
struct Scrape {
    status: Status,
    metrics: Http,
    other: Http,
}

#[test]
fn metrics_endpoint_serves_prometheus_text_during_a_session() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::embedded();
    config.metrics.listen = Some("127.0.0.1:0".into());
    config.session.status_interval_ms = 50;

    let scrape: Arc<Mutex<Option<Scrape>>> = Arc::default();
    let notices: Arc<Mutex<Vec<String>>> = Arc::default();
    let status = {
        let scrape = Arc::clone(&scrape);
        Box::new(move |s: &Status| {
            let mut slot = scrape.lock().unwrap();
            // The caller's thread runs this while the loop runs; the endpoint answers from its own thread.
            if slot.is_none() && s.latency.get(Stage::EndToEnd).window.count > 0 {
                let addr = s
                    .metrics_addr
                    .expect("the status carries the metrics address");
                *slot = Some(Scrape {
                    status: *s,
                    metrics: get(addr, "/metrics"),
                    other: get(addr, "/"),
                });
            }
        })
    };
    let report = pipeline::run(RunOptions {
        config,
        config_text: DEFAULT_TOML.to_string(),
        config_file: "embedded default".into(),
        out: Some(tmp.path().join("session")),
        duration_ns: None,
        max_frames: Some(FRAMES),
        clock: Arc::new(MonotonicClock::with_speed(2.0)),
        interrupt: Arc::new(AtomicBool::new(false)),
        notice: {
            let notices = Arc::clone(&notices);
            Box::new(move |line| notices.lock().unwrap().push(line))
        },
        status: Some(status),
    })
    .expect("the session runs");
    let Scrape {
        status,
        metrics,
        other,
    } = scrape
        .lock()
        .unwrap()
        .take()
        .expect("a latency interval reached the status line before the session ended");
    let addr = status.metrics_addr.unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let url = format!("metrics: http://{addr}/metrics");
    assert!(
        notices.lock().unwrap().iter().any(|n| n.starts_with(&url)),
        "no `{url}` notice in {:?}",
        notices.lock().unwrap()
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "the endpoint stops with the session"
    );

    assert_eq!(other.status_line, "HTTP/1.1 404 Not Found");
    assert_eq!(metrics.status_line, "HTTP/1.1 200 OK");
    assert_eq!(
        metrics.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        metrics.headers["content-length"],
        metrics.body.len().to_string()
    );

    let text = &metrics.body;
    let m = Families::new(&parse_with_prometheus_client(text), text);
    let summary = &report.summary;
    assert_eq!(m.value("reflex_up", &[], "gauge"), 1.0);
    let (_, info) = m.get(
        "reflex_info",
        &[
            ("backend", &summary.backend),
            ("source", &summary.source),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
    );
    assert_eq!(info, Some(1.0));
    let captured = m.value("reflex_frames_captured_total", &[], "counter");
    let processed = m.value("reflex_frames_processed_total", &[], "counter");
    assert!(
        0.0 < processed && processed <= captured && captured <= summary.frames.captured as f64,
        "captured {captured} processed {processed}\n{text}"
    );
    let mut dropped = 0.0;
    for reason in ["source_skipped", "stale", "actuation_full"] {
        dropped += m.value(
            "reflex_frames_dropped_total",
            &[("reason", reason)],
            "counter",
        );
    }
    assert!(dropped <= captured);
    assert_eq!(m.value("reflex_records_lost_total", &[], "counter"), 0.0);
    m.value("reflex_device_errors_total", &[], "counter");
    m.value("reflex_realtime", &[], "gauge");
    assert!(m.value("reflex_session_elapsed_seconds", &[], "gauge") > 0.0);
    let window_s = m.value("reflex_latency_window_seconds", &[], "gauge");
    assert!(0.0 < window_s && window_s <= 2.0, "{window_s}");

    for stage in Stage::ALL {
        let l = [("stage", stage.name())];
        let count = m.value("reflex_stage_latency_seconds_count", &l, "summary");
        let sum = m.value("reflex_stage_latency_seconds_sum", &l, "summary");
        let total = summary.latency_ns[stage.name()].count as f64;
        assert!(count <= total, "{stage:?}: {count} > {total} at the end");
        assert!(sum >= 0.0 && (count > 0.0 || sum == 0.0), "{stage:?}");
        let quantiles: Vec<Option<f64>> = ["0.5", "0.9", "0.99", "0.999"]
            .iter()
            .map(|q| {
                let (kind, v) = m.get(
                    "reflex_stage_latency_seconds",
                    &[("stage", stage.name()), ("quantile", q)],
                );
                assert_eq!(kind, "summary");
                v
            })
            .collect();
        let (kind, max) = m.get("reflex_stage_latency_max_seconds", &l);
        assert_eq!(kind, "gauge");
        // Every frame measures these stages, so the interval has samples: finite, ordered, below 10 s.
        if matches!(
            stage,
            Stage::EndToEnd | Stage::Inference | Stage::OutsideInference | Stage::Capture
        ) {
            assert!(count > 0.0 && sum > 0.0, "{stage:?}");
            let mut values: Vec<f64> = quantiles.iter().map(|v| v.unwrap()).collect();
            values.push(max.unwrap());
            assert!(
                values.windows(2).all(|w| w[0] <= w[1]) && values[0] > 0.0 && values[4] < 10.0,
                "{stage:?}: {values:?}"
            );
        } else {
            // Output and device stages are measured only for frames that command: a value or NaN.
            assert!(quantiles.iter().flatten().all(|v| *v > 0.0 && *v < 10.0));
        }
    }
    let e2e = status.latency.get(Stage::EndToEnd);
    assert!(e2e.total_count > 0 && e2e.window.p99 >= e2e.window.p50);
}

#[test]
fn a_taken_metrics_port_is_named_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = reflex(
        &[
            "run",
            "--metrics",
            &addr,
            "--frames",
            "1",
            "--out",
            "s",
            "--backend",
            "tract",
        ],
        tmp.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error: cannot serve metrics on {addr}"))
            && stderr.contains("metrics.listen")
            && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(
        !PathBuf::from(tmp.path()).join("s").exists(),
        "no session folder"
    );
}

#[test]
fn a_malformed_metrics_address_is_refused_with_its_field() {
    let tmp = tempfile::tempdir().unwrap();
    let out = reflex(&["run", "--metrics", "9464"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("`9464` is not HOST:PORT"));
    std::fs::write(
        tmp.path().join("rig.toml"),
        "[metrics]\nlisten = \"localhost\"\n",
    )
    .unwrap();
    let out = reflex(&["run", "--config", "rig.toml"], tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rig.toml: metrics.listen: `localhost` is not HOST:PORT"),
        "{stderr}"
    );
}
