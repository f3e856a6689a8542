//! ONNX Runtime, loaded at run time (`ort` with `load-dynamic`): no build-time download, no system install
//! required. The library is looked for in `ORT_DYLIB_PATH`, the system library folders, and the
//! `onnxruntime` Python wheel (`pip install onnxruntime==1.31.1`).

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::memory::Allocator;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

use super::{DlcOutputs, DlcSpec, InferenceError, OutputBuffers, Runner};

const NAME: &str = "onnxruntime";

/// Places that may hold `libonnxruntime`, in the order they are tried.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    dirs.extend(
        [
            "/usr/local/lib",
            "/usr/lib",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
        ]
        .map(PathBuf::from),
    );
    dirs.extend(
        python_site_dirs()
            .into_iter()
            .map(|d| d.join("onnxruntime").join("capi")),
    );
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut libs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib"
                })
            })
            .collect();
        // The versioned name (libonnxruntime.so.1.31.1) before the bare link; newest first.
        libs.sort();
        libs.reverse();
        out.extend(libs);
    }
    out
}

/// The Python interpreter's package folders (site-packages), if a `python3` is on the PATH.
fn python_site_dirs() -> Vec<PathBuf> {
    let script = "import site,sys\nfor p in site.getsitepackages()+[site.getusersitepackages()]+sys.path: print(p)";
    let Ok(out) = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
    else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
    {
        let p = PathBuf::from(line);
        if !dirs.contains(&p) {
            dirs.push(p);
        }
    }
    dirs
}

/// Find and load an ONNX Runtime library this build can use (version ≥ 1.31); the path that loaded, or why
/// none did (every place tried, with its reason).
pub fn find_onnxruntime() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let mut why = Vec::new();
            for path in candidates() {
                match ort::init_from(&path) {
                    Ok(builder) => {
                        // The library is now loaded for the whole process; commit one environment for it.
                        return match builder.with_name("reflex").build() {
                            Ok(env) => {
                                let _ = ENV.set(env);
                                Ok(path)
                            }
                            Err(e) => Err(format!("{}: {e}", path.display())),
                        };
                    }
                    Err(e) => why.push(e.to_string()),
                }
            }
            if why.is_empty() {
                Err("no libonnxruntime found in ORT_DYLIB_PATH, the system library folders or a Python onnxruntime wheel".into())
            } else {
                Err(why.join("; "))
            }
        })
        .clone()
}

static ENV: OnceLock<Environment> = OnceLock::new();

fn runtime_error(e: impl std::fmt::Display) -> InferenceError {
    InferenceError::Runtime {
        backend: NAME,
        message: e.to_string(),
    }
}

/// A network on ONNX Runtime, with its input and outputs bound once to preallocated tensors (`IoBinding`), so
/// a run copies nothing in and allocates as little as the runtime allows.
pub struct OrtRunner {
    session: Session,
    binding: IoBinding,
    input: Tensor<f32>,
    outputs: [String; 2],
    buffers: OutputBuffers,
}

impl OrtRunner {
    /// Load `onnx` (a DeepLabCut TensorFlow-layout export: NHWC input, score map then locref outputs) with
    /// `threads` intra-op threads. `InferenceError::Unavailable` when no ONNX Runtime library can be loaded.
    pub fn new(onnx: &[u8], spec: &DlcSpec, threads: usize) -> Result<Self, InferenceError> {
        find_onnxruntime().map_err(|why| {
            InferenceError::Unavailable(format!("ONNX Runtime not loaded: {why}"))
        })?;
        let env = ENV.get().ok_or_else(|| {
            InferenceError::Unavailable("ONNX Runtime environment missing".into())
        })?;
        let session = Session::builder(env)
            .map_err(runtime_error)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(runtime_error)?
            .with_intra_threads(threads)
            .map_err(runtime_error)?
            .with_inter_threads(1)
            .map_err(runtime_error)?
            .commit_from_memory(onnx)
            .map_err(runtime_error)?;
        let buffers = OutputBuffers::new(spec);
        let (rows, cols) = (buffers.rows, buffers.cols);
        let joints = spec.keypoints.len();
        let input_name = session
            .inputs()
            .first()
            .ok_or_else(|| InferenceError::Shape("the network has no input".into()))?
            .name()
            .to_string();
        let output_names: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let pick = |hint: &str, idx: usize| {
            output_names
                .iter()
                .find(|n| n.contains(hint))
                .or_else(|| output_names.get(idx))
                .cloned()
                .ok_or_else(|| {
                    InferenceError::Shape(format!(
                        "the network has {} outputs, need a score map and locref",
                        output_names.len()
                    ))
                })
        };
        let outputs = [pick("Sigmoid", 0)?, pick("locref", 1)?];
        let alloc = Allocator::default();
        let (h, w) = (spec.input_height as usize, spec.input_width as usize);
        let input = Tensor::<f32>::new(&alloc, [1, h, w, 3]).map_err(runtime_error)?;
        let mut binding = session.create_binding().map_err(runtime_error)?;
        binding
            .bind_input(input_name.as_str(), &input)
            .map_err(runtime_error)?;
        binding
            .bind_output(
                outputs[0].as_str(),
                Tensor::<f32>::new(&alloc, [1, rows, cols, joints]).map_err(runtime_error)?,
            )
            .map_err(runtime_error)?;
        binding
            .bind_output(
                outputs[1].as_str(),
                Tensor::<f32>::new(&alloc, [1, rows, cols, 2 * joints]).map_err(runtime_error)?,
            )
            .map_err(runtime_error)?;
        let mut runner = Self {
            session,
            binding,
            input,
            outputs,
            buffers,
        };
        // One warm-up run: the runtime allocates its arenas and checks the bound shapes now, not on frame 1.
        runner.run()?;
        Ok(runner)
    }
}

impl Runner for OrtRunner {
    fn name(&self) -> &'static str {
        NAME
    }

    fn input_mut(&mut self) -> &mut [f32] {
        // The bound input shares this tensor's memory, so writing here is writing the network input.
        self.input
            .try_extract_tensor_mut::<f32>()
            .map(|(_, data)| data)
            .unwrap_or(&mut [])
    }

    fn run(&mut self) -> Result<DlcOutputs<'_>, InferenceError> {
        let outputs = self
            .session
            .run_binding(&self.binding)
            .map_err(runtime_error)?;
        for (index, name) in self.outputs.iter().enumerate() {
            let (_, data) = outputs[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(runtime_error)?;
            self.buffers.fill(index, name, data)?;
        }
        Ok(self.buffers.view())
    }
}
