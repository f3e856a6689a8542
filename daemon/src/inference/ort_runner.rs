//! ONNX Runtime, loaded at run time (`ort` with `load-dynamic`): no build-time download, no system install
//! required. The library is looked for in `ORT_DYLIB_PATH`, the system library folders, and the
//! `onnxruntime` Python wheel (`pip install onnxruntime==1.31.1`).

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{IoBinding, Session};
use ort::value::{DynValue, Tensor};

use super::onnx_info::ElemType;
use super::preprocess::{InputMut, InputType};
use super::{InferenceError, NetIo, OutTensor, Provider, Runner};

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

/// The execution providers the loaded ONNX Runtime library offers, of those reflex knows.
pub fn available_providers() -> Vec<Provider> {
    if find_onnxruntime().is_err() {
        return Vec::new();
    }
    let mut out = vec![Provider::Cpu];
    if ep::CUDA::is_available().unwrap_or(false) {
        out.push(Provider::Cuda);
    }
    if ep::TensorRT::is_available().unwrap_or(false) {
        out.push(Provider::Tensorrt);
    }
    out
}

/// The input tensor of one slot.
enum Input {
    F32(Tensor<f32>),
    U8(Tensor<u8>),
}

/// One input shape: its tensor, its binding (outputs bound to preallocated tensors), and the outputs as f32.
struct Slot {
    input: Input,
    binding: IoBinding,
    outputs: Vec<OutTensor>,
}

/// A network on ONNX Runtime. Each slot (input shape) has its input and outputs bound once to preallocated
/// tensors (`IoBinding`), so a run copies nothing in and allocates as little as the runtime allows.
pub struct OrtRunner {
    session: Session,
    io: NetIo,
    slots: Vec<Slot>,
}

impl OrtRunner {
    /// Load `onnx` with `threads` intra-op threads on `providers` (in order; ONNX Runtime falls back to its
    /// CPU provider for what a GPU provider cannot run). `InferenceError::Unavailable` when no ONNX Runtime
    /// library can be loaded, or when a provider asked for is not in this library.
    pub fn new(
        onnx: &[u8],
        io: &NetIo,
        threads: usize,
        providers: &[Provider],
    ) -> Result<Self, InferenceError> {
        let path = find_onnxruntime().map_err(|why| {
            InferenceError::Unavailable(format!("ONNX Runtime not loaded: {why}"))
        })?;
        let env = ENV.get().ok_or_else(|| {
            InferenceError::Unavailable("ONNX Runtime environment missing".into())
        })?;
        let offered = available_providers();
        let mut eps = Vec::new();
        for &p in providers {
            if !offered.contains(&p) {
                let names: Vec<&str> = offered.iter().map(|p| p.name()).collect();
                return Err(InferenceError::Unavailable(format!(
                    "execution provider `{}` was asked for ([model] providers) but the ONNX Runtime library at {} does not offer it (it offers: {}); {}",
                    p.name(),
                    path.display(),
                    names.join(", "),
                    p.install_hint()
                )));
            }
            match p {
                Provider::Cpu => {}
                Provider::Cuda => eps.push(ep::CUDA::default().build().error_on_failure()),
                Provider::Tensorrt => eps.push(ep::TensorRT::default().build().error_on_failure()),
            }
        }
        let mut builder = Session::builder(env)
            .map_err(runtime_error)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(runtime_error)?
            .with_intra_threads(threads)
            .map_err(runtime_error)?
            .with_inter_threads(1)
            .map_err(runtime_error)?;
        if !eps.is_empty() {
            builder = builder
                .with_execution_providers(eps)
                .map_err(runtime_error)?;
        }
        let session = builder.commit_from_memory(onnx).map_err(runtime_error)?;
        Ok(Self {
            session,
            io: io.clone(),
            slots: Vec::new(),
        })
    }

    /// Copy output `index` of `value` into `dst` as f32 (shape included); checks the size when `dst` is sized.
    fn copy_out(
        value: &DynValue,
        elem: ElemType,
        dst: &mut OutTensor,
    ) -> Result<(), InferenceError> {
        let fit = |dst: &mut OutTensor, shape: &[i64], n: usize| -> Result<(), InferenceError> {
            if dst.data.is_empty() {
                dst.shape = shape.iter().map(|&d| d.max(0) as usize).collect();
                dst.data = vec![0.0; n];
            } else if dst.data.len() != n {
                return Err(InferenceError::Shape(format!(
                    "output `{}` changed size between runs ({} values, then {n})",
                    dst.name,
                    dst.data.len()
                )));
            }
            Ok(())
        };
        match elem {
            ElemType::Bool => {
                let (shape, data) = value.try_extract_tensor::<bool>().map_err(runtime_error)?;
                fit(dst, shape, data.len())?;
                for (d, &s) in dst.data.iter_mut().zip(data) {
                    *d = if s { 1.0 } else { 0.0 };
                }
            }
            ElemType::I64 => {
                let (shape, data) = value.try_extract_tensor::<i64>().map_err(runtime_error)?;
                fit(dst, shape, data.len())?;
                for (d, &s) in dst.data.iter_mut().zip(data) {
                    *d = s as f32;
                }
            }
            _ => {
                let (shape, data) = value.try_extract_tensor::<f32>().map_err(runtime_error)?;
                fit(dst, shape, data.len())?;
                dst.data.copy_from_slice(data);
            }
        }
        Ok(())
    }
}

impl Runner for OrtRunner {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clear_slots(&mut self) {
        self.slots.clear();
    }

    fn add_slot(&mut self, shape: &[usize]) -> Result<usize, InferenceError> {
        let alloc = Allocator::default();
        let input = match self.io.input_type {
            InputType::F32 => {
                Input::F32(Tensor::<f32>::new(&alloc, shape.to_vec()).map_err(runtime_error)?)
            }
            InputType::U8 => {
                Input::U8(Tensor::<u8>::new(&alloc, shape.to_vec()).map_err(runtime_error)?)
            }
        };
        let bind_input = |binding: &mut IoBinding| match &input {
            Input::F32(t) => binding.bind_input(self.io.input.as_str(), t),
            Input::U8(t) => binding.bind_input(self.io.input.as_str(), t),
        };
        // A first run with the outputs left to the runtime tells their shapes (some are dynamic in the file).
        let mut probe = self.session.create_binding().map_err(runtime_error)?;
        bind_input(&mut probe).map_err(runtime_error)?;
        let mem = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(runtime_error)?;
        for (name, _) in &self.io.outputs {
            probe
                .bind_output_to_device(name.as_str(), &mem)
                .map_err(runtime_error)?;
        }
        let mut outputs: Vec<OutTensor> = self
            .io
            .outputs
            .iter()
            .map(|(name, _)| OutTensor::empty(name))
            .collect();
        {
            let values = self.session.run_binding(&probe).map_err(runtime_error)?;
            for ((name, elem), dst) in self.io.outputs.iter().zip(outputs.iter_mut()) {
                Self::copy_out(&values[name.as_str()], *elem, dst)?;
            }
        }
        let mut binding = self.session.create_binding().map_err(runtime_error)?;
        bind_input(&mut binding).map_err(runtime_error)?;
        for ((name, elem), out) in self.io.outputs.iter().zip(&outputs) {
            let shape = out.shape.clone();
            match elem {
                ElemType::Bool => binding.bind_output(
                    name.as_str(),
                    Tensor::<bool>::new(&alloc, shape).map_err(runtime_error)?,
                ),
                ElemType::I64 => binding.bind_output(
                    name.as_str(),
                    Tensor::<i64>::new(&alloc, shape).map_err(runtime_error)?,
                ),
                _ => binding.bind_output(
                    name.as_str(),
                    Tensor::<f32>::new(&alloc, shape).map_err(runtime_error)?,
                ),
            }
            .map_err(runtime_error)?;
        }
        self.slots.push(Slot {
            input,
            binding,
            outputs,
        });
        let slot = self.slots.len() - 1;
        // One warm-up run on the bound tensors: arenas are allocated and shapes checked now, not on frame 1.
        self.run(slot)?;
        Ok(slot)
    }

    fn outputs(&self, slot: usize) -> &[OutTensor] {
        &self.slots[slot].outputs
    }

    fn input_mut(&mut self, slot: usize) -> InputMut<'_> {
        // The bound input shares this tensor's memory, so writing here is writing the network input.
        match &mut self.slots[slot].input {
            Input::F32(t) => InputMut::F32(
                t.try_extract_tensor_mut::<f32>()
                    .map(|(_, d)| d)
                    .unwrap_or(&mut []),
            ),
            Input::U8(t) => InputMut::U8(
                t.try_extract_tensor_mut::<u8>()
                    .map(|(_, d)| d)
                    .unwrap_or(&mut []),
            ),
        }
    }

    fn run(&mut self, slot: usize) -> Result<&[OutTensor], InferenceError> {
        let Self { session, io, slots } = self;
        let Slot {
            binding, outputs, ..
        } = &mut slots[slot];
        let values = session.run_binding(binding).map_err(runtime_error)?;
        for ((name, elem), dst) in io.outputs.iter().zip(outputs.iter_mut()) {
            Self::copy_out(&values[name.as_str()], *elem, dst)?;
        }
        Ok(outputs)
    }
}
