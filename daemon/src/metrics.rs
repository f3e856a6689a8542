//! Live metrics of a running session: the snapshot the writer thread publishes, its Prometheus text
//! rendering, and the `/metrics` HTTP endpoint.
//!
//! ```text
//!  actuation thread ──LatencySet every 1 s (rtrb)──▶ writer thread ──publish (Mutex)──▶ Live
//!                                                     (~every 10 ms)                    │ read by
//!                                          caller's thread (status line) ◀──────────────┤
//!                                          reflex-metrics thread (tokio, GET /metrics) ◀┘
//! ```
//! - Loop threads never touch [`Live`]: its lock is taken only by the writer, the caller's thread and the
//!   metrics thread, none of which is on a frame's way.
//! - Quantiles and maxima cover the last histogram interval (1 s); `_count` and `_sum` count from the start,
//!   as Prometheus summaries do.
//! - The endpoint runs a single-threaded tokio runtime on its own thread (`reflex-metrics`); tokio never runs
//!   on a loop thread.

use std::fmt::Write as _;
use std::future::poll_fn;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::latency::{LatencySet, Quantiles, Stage};
use crate::session::FrameCounts;

/// Quantiles of an empty histogram.
const NO_SAMPLES: Quantiles = Quantiles {
    count: 0,
    p50: 0,
    p90: 0,
    p99: 0,
    p999: 0,
    max: 0,
};

/// One stage's latency: the last interval's quantiles, and totals since the start of the session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageLatency {
    /// Quantiles (ns) and sample count of the last histogram interval; `count` 0 when the stage had no sample.
    pub window: Quantiles,
    /// Samples since the start.
    pub total_count: u64,
    /// Sum of all samples since the start (ns), from the histograms (3 significant digits).
    pub total_sum_ns: u64,
}

impl Default for StageLatency {
    fn default() -> Self {
        Self {
            window: NO_SAMPLES,
            total_count: 0,
            total_sum_ns: 0,
        }
    }
}

/// Per-stage latency of the last histogram interval and since the start, indexed like [`Stage::ALL`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveLatency {
    /// Length of the last interval (s): what the window quantiles cover; 0 before the first one.
    pub window_s: f64,
    /// One entry per stage, in [`Stage::ALL`] order.
    pub stages: [StageLatency; Stage::ALL.len()],
}

impl LiveLatency {
    /// The latency of `stage`.
    pub fn get(&self, stage: Stage) -> &StageLatency {
        &self.stages[stage as usize]
    }

    /// Take in one finished interval: its quantiles become the window, its samples are added to the totals.
    pub fn add_interval(&mut self, set: &LatencySet) {
        self.window_s = set.end_ns.saturating_sub(set.start_ns) as f64 / 1e9;
        for stage in Stage::ALL {
            let h = set.get(stage);
            let s = &mut self.stages[stage as usize];
            s.window = if h.is_empty() {
                NO_SAMPLES
            } else {
                Quantiles::of(h)
            };
            s.total_count += h.len();
            // Whole ns, so the rendered sum reads as a plain decimal.
            s.total_sum_ns += (h.mean() * h.len() as f64).round() as u64;
        }
    }
}

/// What the session looks like now: counts and latency, published by the writer thread.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveSnapshot {
    /// The loop is running (false before the writer's first publication and after the session ended).
    pub running: bool,
    /// Session time (s) at publication.
    pub elapsed_s: f64,
    /// Frame counts (camera 0's: the loop's).
    pub frames: FrameCounts,
    /// How many cameras the session has (the first `cameras` entries of `camera_frames` are theirs).
    pub cameras: usize,
    /// Frame counts of each camera, camera 0 first (fixed size, so a snapshot stays a plain copy).
    pub camera_frames: [FrameCounts; crate::config::MAX_CAMERAS],
    /// Records lost to full writer rings.
    pub records_lost: u64,
    /// Errors the output device reported.
    pub device_errors: u64,
    /// The loop threads run with real-time (FIFO) priority.
    pub realtime: bool,
    /// Per-stage latency.
    pub latency: LiveLatency,
}

/// The published [`LiveSnapshot`]: written by the writer thread, read by the caller's thread and the metrics
/// endpoint. Never touched by a loop thread, so its lock is never on a frame's way.
#[derive(Debug, Default)]
pub struct Live(Mutex<LiveSnapshot>);

impl Live {
    /// Replace the snapshot.
    pub fn publish(&self, snapshot: LiveSnapshot) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }

    /// A copy of the latest snapshot.
    pub fn snapshot(&self) -> LiveSnapshot {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fixed facts about the session, shown as labels of `reflex_info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// Inference backend (`onnxruntime` or `tract`).
    pub backend: String,
    /// The frame source's name.
    pub source: String,
}

/// Per-camera frame counts, labelled `camera="N"` (0 is the loop's camera, 1, 2, … the `[[camera]]` tables).
fn camera_families(s: &LiveSnapshot, out: &mut String) {
    let cameras = &s.camera_frames[..s.cameras.min(s.camera_frames.len())];
    let ids: Vec<String> = (0..cameras.len()).map(|i| i.to_string()).collect();
    let captured: Vec<u64> = cameras.iter().map(|f| f.captured).collect();
    let estimated: Vec<u64> = cameras.iter().map(|f| f.processed).collect();
    let counters = [
        (
            "reflex_camera_frames_captured_total",
            "Frames each camera delivered.",
            captured,
        ),
        (
            "reflex_camera_frames_estimated_total",
            "Frames of each camera whose pose was estimated (camera 0: through the whole loop).",
            estimated,
        ),
    ];
    for (name, help, values) in counters {
        family(out, name, "counter", help);
        for (id, value) in ids.iter().zip(values) {
            sample(out, name, &[("camera", id)], value as f64);
        }
    }
    let name = "reflex_camera_frames_dropped_total";
    family(
        out,
        name,
        "counter",
        "Frames of each camera dropped, by reason (as reflex_frames_dropped_total).",
    );
    for (id, f) in ids.iter().zip(cameras) {
        for (reason, value) in f.dropped_by_reason() {
            sample(
                out,
                name,
                &[("camera", id), ("reason", reason)],
                value as f64,
            );
        }
    }
}

/// The Prometheus text exposition format's content type (version 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Render `s` in the Prometheus text exposition format (0.0.4): HELP and TYPE lines, then the samples of
/// each family; latencies in seconds.
pub fn render(s: &LiveSnapshot, info: &SessionInfo, out: &mut String) {
    let f = &s.frames;
    family(
        out,
        "reflex_up",
        "gauge",
        "1 while the loop runs, 0 before it starts and once it has stopped.",
    );
    sample(out, "reflex_up", &[], f64::from(u8::from(s.running)));
    family(
        out,
        "reflex_info",
        "gauge",
        "The session's inference backend, frame source and reflex version (value always 1).",
    );
    sample(
        out,
        "reflex_info",
        &[
            ("backend", &info.backend),
            ("source", &info.source),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    );
    family(
        out,
        "reflex_realtime",
        "gauge",
        "1 when the loop threads run with real-time (SCHED_FIFO) priority.",
    );
    sample(out, "reflex_realtime", &[], f64::from(u8::from(s.realtime)));
    family(
        out,
        "reflex_session_elapsed_seconds",
        "gauge",
        "Session time on the host clock.",
    );
    sample(out, "reflex_session_elapsed_seconds", &[], s.elapsed_s);

    let counters = [
        (
            "reflex_frames_captured_total",
            "Frames the source delivered.",
            f.captured,
        ),
        (
            "reflex_frames_processed_total",
            "Frames that went through the whole loop.",
            f.processed,
        ),
    ];
    for (name, help, value) in counters {
        family(out, name, "counter", help);
        sample(out, name, &[], value as f64);
    }
    family(
        out,
        "reflex_frames_dropped_total",
        "counter",
        "Frames dropped, by reason: skipped by the source, replaced by a newer frame before inference took them (stale), refused by a full hand-off to actuation.",
    );
    for (reason, value) in f.dropped_by_reason() {
        sample(
            out,
            "reflex_frames_dropped_total",
            &[("reason", reason)],
            value as f64,
        );
    }
    camera_families(s, out);
    let counters = [
        (
            "reflex_device_errors_total",
            "Errors the output device reported (e.g. its watchdog expired).",
            s.device_errors,
        ),
        (
            "reflex_records_lost_total",
            "Records lost to a full writer ring (should stay 0).",
            s.records_lost,
        ),
    ];
    for (name, help, value) in counters {
        family(out, name, "counter", help);
        sample(out, name, &[], value as f64);
    }

    let lat = &s.latency;
    family(
        out,
        "reflex_stage_latency_seconds",
        "summary",
        "Latency per stage (see ARCHITECTURE.md): quantiles over the last interval (reflex_latency_window_seconds, NaN when the stage had no sample), count and sum since the start.",
    );
    for stage in Stage::ALL {
        let l = lat.get(stage);
        let w = &l.window;
        for (quantile, ns) in [
            ("0.5", w.p50),
            ("0.9", w.p90),
            ("0.99", w.p99),
            ("0.999", w.p999),
        ] {
            let value = if w.count == 0 {
                f64::NAN
            } else {
                ns as f64 / 1e9
            };
            sample(
                out,
                "reflex_stage_latency_seconds",
                &[("stage", stage.name()), ("quantile", quantile)],
                value,
            );
        }
        sample(
            out,
            "reflex_stage_latency_seconds_sum",
            &[("stage", stage.name())],
            l.total_sum_ns as f64 / 1e9,
        );
        sample(
            out,
            "reflex_stage_latency_seconds_count",
            &[("stage", stage.name())],
            l.total_count as f64,
        );
    }
    family(
        out,
        "reflex_stage_latency_max_seconds",
        "gauge",
        "Largest latency per stage in the last interval (NaN when the stage had no sample).",
    );
    for stage in Stage::ALL {
        let w = &lat.get(stage).window;
        let value = if w.count == 0 {
            f64::NAN
        } else {
            w.max as f64 / 1e9
        };
        sample(
            out,
            "reflex_stage_latency_max_seconds",
            &[("stage", stage.name())],
            value,
        );
    }
    family(
        out,
        "reflex_latency_window_seconds",
        "gauge",
        "Length of the interval the latency quantiles and maxima cover.",
    );
    sample(out, "reflex_latency_window_seconds", &[], lat.window_s);
}

/// `# HELP` and `# TYPE` lines of one metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', r"\\").replace('\n', r"\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample line; label values are escaped, floats written so Prometheus reads them back exactly.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"");
            for c in v.chars() {
                match c {
                    '\\' => out.push_str(r"\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str(r"\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
    out.push('\n');
}

/// An HTTP response to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code and reason, e.g. `200 OK`.
    pub status: &'static str,
    /// `Content-Type` header.
    pub content_type: &'static str,
    /// The body (sent only for GET; a HEAD gets the headers of the same response).
    pub body: String,
    /// Whether to send the body (false for HEAD).
    pub send_body: bool,
    /// Extra header lines, each ending in CRLF (e.g. `Allow` for 405).
    pub extra_headers: &'static str,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
            send_body: true,
            extra_headers: "",
        }
    }

    /// The whole response: status line, headers (the connection closes after it), body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len(),
            self.extra_headers
        )
        .into_bytes();
        if self.send_body {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Answer one request line (`GET /metrics HTTP/1.1`): the metrics for GET or HEAD of `/metrics` (any query
/// string), 404 for other paths, 405 for other methods, 400 for anything that is not HTTP/1.x.
pub fn respond(request_line: &str, live: &Live, info: &SessionInfo) -> Response {
    let mut parts = request_line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text("400 Bad Request", "bad request");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text("400 Bad Request", "bad request: HTTP/1.x only");
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != "/metrics" {
        return Response::text("404 Not Found", "not found; metrics are at /metrics");
    }
    if method != "GET" && method != "HEAD" {
        return Response {
            extra_headers: "Allow: GET, HEAD\r\n",
            ..Response::text("405 Method Not Allowed", "method not allowed")
        };
    }
    let mut body = String::with_capacity(8192);
    render(&live.snapshot(), info, &mut body);
    Response {
        status: "200 OK",
        content_type: CONTENT_TYPE,
        body,
        send_body: method == "GET",
        extra_headers: "",
    }
}

/// Longest request head read (request line and headers); a longer one is answered 431 and closed.
const MAX_REQUEST_BYTES: usize = 8192;

/// The `/metrics` endpoint: a listening socket served by a single-threaded tokio runtime on its own thread
/// (`reflex-metrics`). Dropping it stops the server and joins the thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Bind `listen` (`HOST:PORT`; port 0 picks a free one) and start serving `live`. Binding happens here, so
    /// a taken port or a bad address is an error before anything else starts.
    pub fn start(listen: &str, live: Arc<Live>, info: SessionInfo) -> Result<Self, std::io::Error> {
        validate_listen(listen)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let addrs = listen.to_socket_addrs()?;
        let mut last_err = None;
        let mut bound = None;
        for addr in addrs {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let listener = match bound {
            Some(l) => l,
            None => {
                return Err(last_err.unwrap_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::AddrNotAvailable,
                        "the name resolves to no address",
                    )
                }));
            }
        };
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let info = Arc::new(info);
        let thread = std::thread::Builder::new()
            .name("reflex-metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, live, info, stop_rx).await,
                        Err(e) => tracing::error!("metrics endpoint on {addr}: {e}"),
                    }
                });
            })?;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Check that `listen` looks like `HOST:PORT` (an IPv6 host in brackets), without resolving it.
pub fn validate_listen(listen: &str) -> Result<(), String> {
    let bad = || format!("`{listen}` is not HOST:PORT (e.g. 127.0.0.1:9464)");
    let (host, port) = listen.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// Accept connections until `stop` fires (or its sender is dropped); each connection is its own task.
async fn serve(
    listener: tokio::net::TcpListener,
    live: Arc<Live>,
    info: Arc<SessionInfo>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let accepted = poll_fn(|cx| {
            if Pin::new(&mut stop).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            listener.poll_accept(cx).map(Some)
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, _peer))) => {
                tokio::spawn(handle(stream, Arc::clone(&live), Arc::clone(&info)));
            }
            // A connection that failed while being accepted (reset, or out of descriptors): the next one may work.
            Some(Err(e)) => tracing::warn!("metrics endpoint: accept failed: {e}"),
        }
    }
}

/// One connection: read the request head, answer, close.
async fn handle(mut stream: tokio::net::TcpStream, live: Arc<Live>, info: Arc<SessionInfo>) {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut n = 0;
    let response = loop {
        if n == buf.len() {
            break Response::text(
                "431 Request Header Fields Too Large",
                "request head too large",
            );
        }
        match stream.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
        let head = &buf[..n];
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            let text = String::from_utf8_lossy(head);
            let line = text.lines().next().unwrap_or_default();
            break respond(line, &live, &info);
        }
    };
    if stream.write_all(&response.to_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> LiveSnapshot {
        let mut set = LatencySet::new();
        set.reset(1_000_000_000);
        for v in 1..=100u64 {
            set.record(Stage::EndToEnd, v * 100_000); // 0.1 ms .. 10 ms
            set.record(Stage::Inference, v * 50_000);
        }
        set.end_ns = 2_000_000_000;
        let mut latency = LiveLatency::default();
        latency.add_interval(&set);
        latency.add_interval(&set);
        let frames = FrameCounts {
            captured: 300,
            processed: 290,
            dropped: 10,
            source_skipped: 1,
            stale: 9,
            actuation_full: 0,
        };
        LiveSnapshot {
            running: true,
            elapsed_s: 2.5,
            frames,
            cameras: 2,
            camera_frames: {
                let mut c = [FrameCounts::default(); crate::config::MAX_CAMERAS];
                c[0] = frames;
                c[1].captured = 150;
                c[1].processed = 149;
                c[1].stale = 1;
                c
            },
            records_lost: 0,
            device_errors: 2,
            realtime: false,
            latency,
        }
    }

    fn info() -> SessionInfo {
        SessionInfo {
            backend: "tract".into(),
            source: "synthetic \"640x480\"\\1".into(),
        }
    }

    #[test]
    fn add_interval_keeps_the_last_window_and_sums_the_totals() {
        let l = snapshot().latency;
        let e2e = l.get(Stage::EndToEnd);
        assert_eq!(e2e.window.count, 100);
        assert_eq!(e2e.total_count, 200);
        // 2 × (0.1 + … + 10 ms) = 2 × 505 ms, to the histogram's 3 significant digits.
        assert!(
            (e2e.total_sum_ns as f64 / 1e9 - 1.010).abs() < 0.002,
            "{}",
            e2e.total_sum_ns
        );
        assert_eq!(l.get(Stage::Output).window.count, 0);
        assert_eq!(l.window_s, 1.0);
    }

    #[test]
    fn render_writes_every_family_with_help_type_and_samples() {
        let mut out = String::new();
        render(&snapshot(), &info(), &mut out);
        for line in [
            "# HELP reflex_up 1 while the loop runs, 0 before it starts and once it has stopped.",
            "# TYPE reflex_up gauge",
            "reflex_up 1",
            "# TYPE reflex_frames_captured_total counter",
            "reflex_frames_captured_total 300",
            "reflex_frames_processed_total 290",
            "reflex_frames_dropped_total{reason=\"stale\"} 9",
            "reflex_frames_dropped_total{reason=\"source_skipped\"} 1",
            "reflex_frames_dropped_total{reason=\"actuation_full\"} 0",
            "reflex_device_errors_total 2",
            "reflex_records_lost_total 0",
            "# TYPE reflex_camera_frames_captured_total counter",
            "reflex_camera_frames_captured_total{camera=\"0\"} 300",
            "reflex_camera_frames_captured_total{camera=\"1\"} 150",
            "reflex_camera_frames_estimated_total{camera=\"1\"} 149",
            "reflex_camera_frames_dropped_total{camera=\"1\",reason=\"stale\"} 1",
            "reflex_realtime 0",
            "reflex_session_elapsed_seconds 2.5",
            "# TYPE reflex_stage_latency_seconds summary",
            "reflex_stage_latency_seconds_count{stage=\"end_to_end\"} 200",
            "reflex_stage_latency_seconds{stage=\"output\",quantile=\"0.99\"} NaN",
            "reflex_stage_latency_seconds_count{stage=\"output\"} 0",
            "reflex_stage_latency_seconds_sum{stage=\"output\"} 0",
            "reflex_stage_latency_max_seconds{stage=\"output\"} NaN",
            "reflex_latency_window_seconds 1",
            // Label values are escaped.
            r#"reflex_info{backend="tract",source="synthetic \"640x480\"\\1",version="0.1.0"} 1"#,
        ] {
            assert!(out.lines().any(|l| l == line), "no line `{line}` in\n{out}");
        }
        // Quantiles in seconds, within the histogram's precision.
        let value = |prefix: &str| -> f64 {
            let line = out.lines().find(|l| l.starts_with(prefix)).unwrap();
            line.rsplit_once(' ').unwrap().1.parse().unwrap()
        };
        let p99 = value("reflex_stage_latency_seconds{stage=\"end_to_end\",quantile=\"0.99\"}");
        assert!((p99 - 0.0099).abs() < 0.00002, "{p99}");
        let max = value("reflex_stage_latency_max_seconds{stage=\"end_to_end\"}");
        assert!((max - 0.010).abs() < 0.00002, "{max}");
        // Every family once, its samples right after its TYPE line, every stage in the summary.
        let types: Vec<&str> = out.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), types.len(), "a family declared twice");
        for stage in Stage::ALL {
            for q in ["0.5", "0.9", "0.99", "0.999"] {
                let line = format!(
                    "reflex_stage_latency_seconds{{stage=\"{}\",quantile=\"{q}\"}} ",
                    stage.name()
                );
                assert!(out.contains(&line), "{line}");
            }
        }
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn requests_get_metrics_404_405_or_400() {
        let live = Live::default();
        live.publish(snapshot());
        let info = info();
        let ok = respond("GET /metrics HTTP/1.1", &live, &info);
        assert_eq!(ok.status, "200 OK");
        assert_eq!(ok.content_type, CONTENT_TYPE);
        assert!(ok.body.contains("reflex_frames_captured_total 300"));
        let bytes = String::from_utf8(ok.to_bytes()).unwrap();
        assert!(
            bytes.starts_with("HTTP/1.1 200 OK\r\n")
                && bytes.contains(&format!("Content-Length: {}\r\n", ok.body.len()))
                && bytes.ends_with(&ok.body),
            "{bytes}"
        );
        assert_eq!(
            respond("GET /metrics?name[]=x HTTP/1.0", &live, &info).status,
            "200 OK"
        );
        let head = respond("HEAD /metrics HTTP/1.1", &live, &info);
        assert_eq!(head.status, "200 OK");
        assert!(
            String::from_utf8(head.to_bytes())
                .unwrap()
                .ends_with("\r\n\r\n")
        );
        assert_eq!(
            respond("GET / HTTP/1.1", &live, &info).status,
            "404 Not Found"
        );
        assert_eq!(
            respond("GET /metricsx HTTP/1.1", &live, &info).status,
            "404 Not Found"
        );
        let post = respond("POST /metrics HTTP/1.1", &live, &info);
        assert_eq!(post.status, "405 Method Not Allowed");
        assert!(
            String::from_utf8(post.to_bytes())
                .unwrap()
                .contains("Allow: GET, HEAD\r\n")
        );
        for bad in ["", "GET", "GET /metrics", "GET /metrics SPDY/3", "a b c d"] {
            assert_eq!(
                respond(bad, &live, &info).status,
                "400 Bad Request",
                "{bad}"
            );
        }
    }

    #[test]
    fn listen_addresses_need_host_and_port() {
        for ok in [
            "127.0.0.1:9464",
            "0.0.0.0:0",
            "localhost:9464",
            "[::1]:9464",
        ] {
            assert_eq!(validate_listen(ok), Ok(()), "{ok}");
        }
        for bad in [
            "9464",
            ":9464",
            "127.0.0.1",
            "127.0.0.1:http",
            "127.0.0.1:70000",
        ] {
            assert!(validate_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_server_answers_on_its_bound_port_and_stops_when_dropped() {
        use std::io::{Read, Write};
        let live = Arc::new(Live::default());
        live.publish(snapshot());
        let server = MetricsServer::start("127.0.0.1:0", live, info()).unwrap();
        let addr = server.addr();
        assert_ne!(addr.port(), 0);
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        };
        let ok = get("/metrics");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("reflex_up 1\n"), "{ok}");
        assert!(get("/nope").starts_with("HTTP/1.1 404 Not Found\r\n"));
        // A second server on the same port is refused.
        let taken = MetricsServer::start(&addr.to_string(), Arc::default(), info()).unwrap_err();
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
        drop(server);
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "still listening"
        );
    }
}
