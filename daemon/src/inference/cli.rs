//! `reflex model inspect | bench | predict`: look at an exported pose model, time it, and run it on images.
//!
//! Images are PNG (8 or 16 bit, grey, RGB, with or without alpha; alpha is dropped) or raw RGB8 (`.rgb`, HWC,
//! row-major, no header: the size comes from a `frames.json` beside it with `width` and `height`, else the
//! image is taken to be square).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use reflex_plugins::pose::Pose;

use super::{BackendChoice, CropConfig, ModelConfig, ModelKind, PoseModel, Provider};
use crate::camera::{Frame, PixelFormat};

/// `reflex model …`.
#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Print a model's inputs, outputs, keypoints, stride, expected input size, pre-processing and decoder
    /// (no runtime needed).
    Inspect(ModelArgs),
    /// Time pre-processing, the network and decoding (p50/p90/p99/max) on each backend.
    Bench(BenchArgs),
    /// Run a model on images, one frame per image in order, and write `frame,track,node,x,y,score`.
    Predict(PredictArgs),
}

/// Which model, and how to run it.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// An export folder (DeepLabCut: pose_cfg.yaml + ONNX; SLEAP: export_metadata.json + model.onnx), an .onnx
    /// file inside one, or `builtin`.
    pub path: String,
    /// Which tool made it: auto, dlc, sleap.
    #[arg(long, default_value = "auto", value_parser = parse_kind)]
    pub kind: ModelKind,
    /// ONNX files in the folder to run, comma-separated (default model.onnx); SLEAP raw top-down heads:
    /// centroid first, then centered instance.
    #[arg(long, value_delimiter = ',')]
    pub networks: Vec<String>,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// ONNX Runtime execution providers, comma-separated: cpu, cuda, tensorrt.
    #[arg(long, value_delimiter = ',', default_value = "cpu", value_parser = parse_provider)]
    pub providers: Vec<Provider>,
}

impl ModelArgs {
    fn config(&self, backend: BackendChoice, crop: CropConfig) -> ModelConfig {
        ModelConfig {
            path: self.path.clone(),
            kind: self.kind,
            networks: self.networks.clone(),
            backend,
            threads: self.threads.max(1),
            providers: self.providers.clone(),
            crop,
        }
    }
}

/// `reflex model bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Frames to run (PNG or raw .rgb), cycled; default: deterministic noise at the network's input size.
    images: Vec<PathBuf>,
    /// Frames measured per backend.
    #[arg(long, default_value_t = 300)]
    frames: usize,
    /// Backends to measure, comma-separated: onnxruntime, tract.
    #[arg(long, value_delimiter = ',', value_parser = parse_backend, default_value = "onnxruntime,tract")]
    backend: Vec<BackendChoice>,
}

/// `reflex model predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Images, one frame each, in order (PNG or raw .rgb).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Output CSV (`frame,track,node,x,y,score`; frame = the image's index from 0); `-` for stdout.
    #[arg(long, short, default_value = "-")]
    out: PathBuf,
    /// Inference runtime: auto, onnxruntime, tract.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: BackendChoice,
    /// Crop each frame around the previous frame's pose (DeepLabCut-Live's dynamic cropping).
    #[arg(long)]
    crop: bool,
    /// Crop window WIDTHxHEIGHT for networks with a dynamic input size.
    #[arg(long, value_parser = parse_size)]
    crop_size: Option<[u32; 2]>,
    /// Crop margin in px around the detected keypoints.
    #[arg(long, default_value_t = 10)]
    crop_margin: u32,
}

fn parse_kind(s: &str) -> Result<ModelKind, String> {
    match s {
        "auto" => Ok(ModelKind::Auto),
        "dlc" | "deeplabcut" => Ok(ModelKind::Dlc),
        "sleap" => Ok(ModelKind::Sleap),
        _ => Err(format!("unknown model kind `{s}` (auto, dlc, sleap)")),
    }
}

fn parse_provider(s: &str) -> Result<Provider, String> {
    match s {
        "cpu" => Ok(Provider::Cpu),
        "cuda" => Ok(Provider::Cuda),
        "tensorrt" | "trt" => Ok(Provider::Tensorrt),
        _ => Err(format!(
            "unknown execution provider `{s}` (cpu, cuda, tensorrt)"
        )),
    }
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    match s {
        "auto" => Ok(BackendChoice::Auto),
        "onnxruntime" | "ort" => Ok(BackendChoice::Onnxruntime),
        "tract" => Ok(BackendChoice::Tract),
        _ => Err(format!("unknown backend `{s}` (auto, onnxruntime, tract)")),
    }
}

fn parse_size(s: &str) -> Result<[u32; 2], String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}` is not WIDTHxHEIGHT"))?;
    match (w.trim().parse::<u32>(), h.trim().parse::<u32>()) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok([w, h]),
        _ => Err(format!("`{s}` is not WIDTHxHEIGHT")),
    }
}

/// Run a `reflex model` command.
pub fn run_cli(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Inspect(args) => {
            let config = args.config(BackendChoice::Auto, CropConfig::default());
            let desc = super::inspect(&config)
                .with_context(|| format!("reading the model `{}`", args.path))?;
            print!("{}", describe(&desc));
            Ok(())
        }
        ModelCommand::Bench(args) => {
            let config = args
                .model
                .config(BackendChoice::Auto, CropConfig::default());
            let (images, label) = if args.images.is_empty() {
                let desc = super::inspect(&config)
                    .with_context(|| format!("reading the model `{}`", args.model.path))?;
                let _ = desc;
                let (w, h) = fixed_input(&config)?.unwrap_or((640, 480));
                (
                    vec![noise_frame(w, h)],
                    "deterministic noise (pass images for realistic decode times)".to_string(),
                )
            } else {
                let images = args
                    .images
                    .iter()
                    .map(|p| load_image(p))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let label = format!("{} image(s)", images.len());
                (images, label)
            };
            let opts = crate::bench::ModelBenchOptions {
                frames: args.frames.max(1),
                warmup: 20,
                backends: args.backend,
                model: config,
                images,
                images_label: label,
            };
            print!("{}", crate::bench::run_model(&opts)?);
            Ok(())
        }
        ModelCommand::Predict(args) => {
            let crop = CropConfig {
                enabled: args.crop,
                margin_px: args.crop_margin,
                size: args.crop_size.unwrap_or([0, 0]),
                ..CropConfig::default()
            };
            let config = args.model.config(args.backend, crop);
            let mut model = super::load(&config, &mut |line| eprintln!("{line}"))
                .with_context(|| format!("loading the model `{}`", args.model.path))?;
            let mut csv = String::from("frame,track,node,x,y,score\n");
            let names = model.keypoints().to_vec();
            for (i, path) in args.images.iter().enumerate() {
                let frame = load_image(path)?;
                model
                    .estimate_all(&frame)
                    .with_context(|| format!("image {}: {}", i, path.display()))?;
                write_poses(&mut csv, &i.to_string(), model.instances(), &names);
            }
            if args.out.as_os_str() == "-" {
                std::io::stdout().write_all(csv.as_bytes())?;
            } else {
                std::fs::write(&args.out, csv)
                    .with_context(|| format!("writing {}", args.out.display()))?;
                eprintln!(
                    "{} frame(s) → {} ({} backend)",
                    args.images.len(),
                    args.out.display(),
                    model.backend()
                );
            }
            Ok(())
        }
    }
}

fn fixed_input(config: &ModelConfig) -> anyhow::Result<Option<(u32, u32)>> {
    let desc = super::inspect(config)?;
    let info = &desc.networks[0].1;
    let dims = &info.inputs[0].dims;
    if dims.len() != 4 {
        return Ok(None);
    }
    let nchw = matches!(dims[1].fixed(), Some(1 | 3));
    let (h, w) = if nchw {
        (&dims[2], &dims[3])
    } else {
        (&dims[1], &dims[2])
    };
    Ok(match (w.fixed(), h.fixed()) {
        (Some(w), Some(h)) => Some((w as u32, h as u32)),
        _ => None,
    })
}

/// A grey-ish RGB frame of deterministic noise (SplitMix64).
fn noise_frame(width: u32, height: u32) -> Frame {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data = (0..width as usize * height as usize * 3)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z >> 56) as u8
        })
        .collect();
    frame(width, height, PixelFormat::Rgb8, data)
}

fn frame(width: u32, height: u32, format: PixelFormat, data: Vec<u8>) -> Frame {
    Frame {
        id: 0,
        camera: 0,
        width,
        height,
        format,
        data,
        t_exposure_ns: 0,
        t_capture_ns: 0,
        truth: Pose::new(0),
    }
}

/// Read an image as a frame: PNG, or raw RGB8 (`.rgb`; size from `frames.json` beside it, else square).
pub fn load_image(path: &Path) -> anyhow::Result<Frame> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "png" => {
            decode_png(&bytes).with_context(|| format!("{}: not a readable PNG", path.display()))
        }
        "rgb" => {
            let n = bytes.len() / 3;
            let from_json = path
                .parent()
                .map(|d| d.join("frames.json"))
                .and_then(|j| std::fs::read_to_string(j).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| {
                    Some((
                        v.get("width")?.as_u64()? as u32,
                        v.get("height")?.as_u64()? as u32,
                    ))
                });
            let (w, h) = match from_json {
                Some(size) => size,
                None => {
                    let side = (n as f64).sqrt().round() as u32;
                    (side, side)
                }
            };
            if bytes.len() != w as usize * h as usize * 3 || w == 0 {
                bail!(
                    "{}: {} bytes is not a {w}x{h} RGB8 frame (raw .rgb frames take their size from a frames.json beside them, or are square)",
                    path.display(),
                    bytes.len()
                );
            }
            Ok(frame(w, h, PixelFormat::Rgb8, bytes))
        }
        _ => bail!(
            "{}: unknown image type (reflex reads .png and raw RGB8 .rgb)",
            path.display()
        ),
    }
}

fn decode_png(bytes: &[u8]) -> anyhow::Result<Frame> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().context("image too large")?];
    let info = reader.next_frame(&mut buf)?;
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width, info.height);
    let px = w as usize * h as usize;
    let (format, data) = match info.color_type {
        png::ColorType::Rgb => (PixelFormat::Rgb8, buf),
        png::ColorType::Rgba => (
            PixelFormat::Rgb8,
            buf.chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect(),
        ),
        png::ColorType::Grayscale => (PixelFormat::Gray8, buf),
        png::ColorType::GrayscaleAlpha => (
            PixelFormat::Gray8,
            buf.chunks_exact(2).map(|p| p[0]).collect(),
        ),
        other => bail!("colour type {other:?} after expansion"),
    };
    anyhow::ensure!(
        data.len() == px * format.channels(),
        "decoded {} bytes for {w}x{h}",
        data.len()
    );
    Ok(frame(w, h, format, data))
}

/// Append `instances` as `frame,track,node,x,y,score` rows (empty x, y for a missing keypoint).
pub fn write_poses(csv: &mut String, frame: &str, instances: &[Pose], names: &[String]) {
    for (track, pose) in instances.iter().enumerate() {
        for (k, name) in pose.points().iter().zip(names) {
            let _ = write!(csv, "{frame},{track},{name},");
            if k.is_missing() {
                csv.push(',');
            } else {
                let _ = write!(csv, "{:.6},{:.6}", k.x, k.y);
            }
            if k.score.is_finite() {
                let _ = writeln!(csv, ",{:.6}", k.score);
            } else {
                csv.push_str(",\n");
            }
        }
    }
}

/// `reflex model inspect`'s text.
pub fn describe(d: &super::Description) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kind:        {}", d.kind);
    let _ = writeln!(out, "decoder:     {}", d.decoder);
    let _ = writeln!(
        out,
        "keypoints:   {} ({})",
        d.keypoints.len(),
        d.keypoints.join(", ")
    );
    let _ = writeln!(out, "instances:   up to {} per frame", d.max_instances);
    for (name, value) in &d.details {
        let _ = writeln!(out, "{:<12} {value}", format!("{name}:"));
    }
    for (file, info, input) in &d.networks {
        let _ = writeln!(out, "network:     {file}");
        if let Some(op) = info.opset {
            let ops: usize = info.ops.values().sum();
            let _ = writeln!(
                out,
                "  opset {op}, {ops} nodes ({} operator types)",
                info.ops.len()
            );
        }
        for i in &info.inputs {
            let _ = writeln!(out, "  input  {i}");
        }
        for o in &info.outputs {
            let _ = writeln!(out, "  output {o}");
        }
        let _ = writeln!(out, "  feeds:  {input}");
    }
    out
}
