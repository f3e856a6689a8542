//! `reflex`: the closed-loop experiment controller's command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use clap::{Parser, Subcommand};
use reflex_daemon::clock::MonotonicClock;
use reflex_daemon::config::{Config, DEFAULT_TOML};
use reflex_daemon::inference::BackendChoice;
use reflex_daemon::pipeline::{self, RunOptions};
use reflex_daemon::report;

/// reflex: camera → pose → forward prediction → trigger → stimulation, with every stage's latency recorded.
#[derive(Parser)]
#[command(name = "reflex", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the loop. With no config: the embedded default (synthetic camera, bundled model, simulated
    /// device) for 10 s.
    Run(RunArgs),
    /// Time each step of a frame (render, pre-process, network, decode) on each inference backend, as fast
    /// as possible, and print p50/p90/p99/max.
    Bench(BenchArgs),
    /// Offline evaluation: `reflex eval predict` scores forward predictors on recorded poses.
    #[command(subcommand)]
    Eval(reflex_daemon::eval::EvalCommand),
    /// List serial ports, with USB vendor/product ids and serial numbers, and GenICam cameras (through
    /// Aravis, when libaravis-0.8 is installed) with their `--source aravis:ID`, and V4L2 cameras with their
    /// formats, sizes and frame rates.
    Devices,
    /// Talk to the reflex firmware on a serial port: `reflex device ping PORT`, `reflex device pulse PORT`.
    #[command(subcommand)]
    Device(reflex_daemon::devices::DeviceCommand),
    /// A recorded session's latency: percentiles per stage, latency over time, the worst frames and what was
    /// slow in each, dropped frames. `--html FILE` adds a self-contained report with plots; `--compare A B`
    /// puts two sessions side by side.
    Latency(reflex_daemon::latency_report::LatencyArgs),
    /// Your own pose model (DeepLabCut, SLEAP exports): `reflex model inspect PATH`, `reflex model bench PATH
    /// [IMAGE...]`, `reflex model predict PATH IMAGE... --out poses.csv`.
    #[command(subcommand)]
    Model(reflex_daemon::inference::cli::ModelCommand),
    /// Light loop: the camera's own latency on a real rig. The device lights an LED in the camera's view
    /// (`--channel`), reflex finds it lit in the image (`--roi x,y,w,h`), and reports write → LED on (device
    /// timestamp), LED on → first lit exposure, LED on → frame on the host, and the round trip.
    Lightloop(reflex_daemon::lightloop::LightloopArgs),
    /// Replay a rig's predictor and triggers on recorded poses (a session folder, or a pose CSV
    /// `frame,track,node,x,y,score`) as fast as possible, without camera or hardware: writes the events.jsonl
    /// the live loop would have written (without device acks) and a summary.json, and prints when each trigger
    /// fired.
    Replay(reflex_daemon::replay::ReplayArgs),
    /// Check a rig config without running it: TOML, triggers, keypoint names against the model, channels
    /// against the output. Errors name the file and line; prints a one-line summary when it is fine.
    Check(reflex_daemon::check::CheckArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Frames measured per backend.
    #[arg(long, default_value_t = 500)]
    frames: usize,
    /// Backends to measure, comma-separated: onnxruntime, tract.
    #[arg(long, value_delimiter = ',', value_parser = parse_backend, default_value = "onnxruntime,tract")]
    backend: Vec<BackendChoice>,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Rig configuration (TOML). Default: the embedded default (see --print-default-config).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Frame source, overriding the config: `synthetic`, or a video file as a camera: `video:PATH` (at its
    /// own frame rate), `video:PATH@FPS` (another rate), `video:PATH@max` (as fast as it decodes), or a
    /// GenICam camera: `aravis:NAME` (Aravis's device id from `reflex devices`, a serial or IP address), or a
    /// V4L2 camera: `v4l:/dev/videoN` or `v4l:N` (size, rate and format from `[source.v4l2]`).
    /// Given again, it adds cameras 1, 2, … (replacing the config's `[[camera]]` tables): each has its own
    /// capture thread; triggers and the script see the first camera.
    #[arg(long, value_name = "SOURCE")]
    source: Vec<String>,
    /// Stop after this long: `10s`, `500ms`, `2m`, or seconds. Default 10s unless --frames is given.
    #[arg(long, value_parser = parse_duration_ns)]
    duration: Option<u64>,
    /// Stop after the camera (camera 0, with several) delivered this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Session folder (default: <session.dir>/<UTC timestamp>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Inference runtime, overriding the config: auto, onnxruntime or tract.
    #[arg(long, value_parser = parse_backend)]
    backend: Option<BackendChoice>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// No live status line.
    #[arg(long, short)]
    quiet: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics while the session runs, e.g. 127.0.0.1:9464 (port 0
    /// picks a free one); overrides `[metrics] listen`.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    metrics: Option<String>,
}

fn parse_duration_ns(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e9)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e9)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e9)
    } else {
        (s, 1e9)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok((v * scale) as u64),
        _ => Err(format!("`{s}` is not a duration (try 10s, 500ms, 2m)")),
    }
}

fn parse_listen(s: &str) -> Result<String, String> {
    reflex_daemon::metrics::validate_listen(s).map(|()| s.to_string())
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    match s {
        "auto" => Ok(BackendChoice::Auto),
        "onnxruntime" | "ort" => Ok(BackendChoice::Onnxruntime),
        "tract" => Ok(BackendChoice::Tract),
        _ => Err(format!("unknown backend `{s}` (auto, onnxruntime, tract)")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,ort=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Bench(args) => bench(args),
        Command::Eval(cmd) => reflex_daemon::eval::run_cli(cmd),
        Command::Devices => reflex_daemon::devices::list_ports(),
        Command::Device(cmd) => reflex_daemon::devices::run_cli(cmd),
        Command::Latency(args) => reflex_daemon::latency_report::run_cli(args),
        Command::Model(cmd) => reflex_daemon::inference::cli::run_cli(cmd),
        Command::Lightloop(args) => reflex_daemon::lightloop::run_cli(args),
        Command::Replay(args) => reflex_daemon::replay::run_cli(args),
        Command::Check(args) => reflex_daemon::check::run_cli(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let opts = reflex_daemon::bench::BenchOptions {
        frames: args.frames.max(1),
        warmup: 20,
        backends: args.backend,
        model: reflex_daemon::inference::ModelConfig {
            threads: args.threads.max(1),
            ..Default::default()
        },
    };
    print!("{}", reflex_daemon::bench::run(&opts)?);
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.print_default_config {
        print!("{DEFAULT_TOML}");
        return Ok(());
    }
    let (mut config, config_text, config_file) = match &args.config {
        Some(path) => {
            let config = Config::load(path)?;
            let text = std::fs::read_to_string(path).unwrap_or_default();
            (config, text, path.display().to_string())
        }
        None => (
            Config::embedded(),
            DEFAULT_TOML.to_string(),
            "embedded default".to_string(),
        ),
    };
    reflex_daemon::camera::apply_source_args(&args.source, &mut config)?;
    if let Some(backend) = args.backend {
        config.model.backend = backend;
        for camera in &mut config.cameras {
            if let Some(model) = &mut camera.get_mut().model {
                model.backend = backend;
            }
        }
    }
    if let Some(listen) = args.metrics {
        config.metrics.listen = Some(listen);
    }
    let duration_ns = args.duration.or(if args.frames.is_none() {
        Some(10_000_000_000)
    } else {
        None
    });

    let interrupt = reflex_daemon::interrupt::on_ctrl_c(
        "stopping: draining the loop, outputs off, closing files",
    )?;

    let live = !args.quiet && std::io::stderr().is_terminal();
    let status: Option<pipeline::StatusFn> = if live {
        Some(Box::new(|s: &pipeline::Status| {
            // One column less than the terminal is wide, so it never wraps and `\r` redraws it in place.
            let width = report::terminal_width().saturating_sub(1);
            eprint!("\r\x1b[2K{}", report::status_line(s, width))
        }))
    } else {
        None
    };
    let report = pipeline::run(RunOptions {
        config,
        config_text,
        config_file,
        out: args.out,
        duration_ns,
        max_frames: args.frames,
        clock: Arc::new(MonotonicClock::new()),
        interrupt,
        notice: Box::new(|line| eprintln!("{line}")),
        status,
    });
    if live {
        eprintln!();
    }
    let report = report?;
    print!("{}", report::latency_table(&report.summary));
    println!("session: {}", report.dir.display());
    if report.summary.records_lost > 0 {
        return Err(anyhow!(
            "{} records were lost; the session files are incomplete",
            report.summary.records_lost
        ));
    }
    Ok(())
}
