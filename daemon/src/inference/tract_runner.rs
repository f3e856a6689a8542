//! tract, the pure-Rust ONNX runtime: the fallback that needs nothing installed.

use tract_onnx::prelude::*;

use super::{DlcOutputs, DlcSpec, InferenceError, OutputBuffers, Runner};

const NAME: &str = "tract";

fn runtime_error(e: impl std::fmt::Display) -> InferenceError {
    InferenceError::Runtime {
        backend: NAME,
        message: format!("{e:#}"),
    }
}

/// A network optimised by tract for a fixed input shape.
pub struct TractRunner {
    state: TypedSimpleState,
    input: Tensor,
    buffers: OutputBuffers,
}

impl TractRunner {
    /// Load and optimise `onnx` for a `[1, height, width, 3]` f32 input.
    pub fn new(onnx: &[u8], spec: &DlcSpec) -> Result<Self, InferenceError> {
        let (h, w) = (spec.input_height as usize, spec.input_width as usize);
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .map_err(runtime_error)?
            .with_input_fact(0, f32::fact([1, h, w, 3]).into())
            .map_err(runtime_error)?
            .into_optimized()
            .map_err(runtime_error)?
            .into_runnable()
            .map_err(runtime_error)?;
        let mut runner = Self {
            state: plan.spawn().map_err(runtime_error)?,
            input: Tensor::zero::<f32>(&[1, h, w, 3]).map_err(runtime_error)?,
            buffers: OutputBuffers::new(spec),
        };
        // One warm-up run, so shape problems surface at load time and not on frame 1.
        runner.run()?;
        Ok(runner)
    }
}

impl Runner for TractRunner {
    fn name(&self) -> &'static str {
        NAME
    }

    fn input_mut(&mut self) -> &mut [f32] {
        self.input
            .to_plain_array_view_mut::<f32>()
            .ok()
            .and_then(|v| v.into_slice())
            .unwrap_or(&mut [])
    }

    fn run(&mut self) -> Result<DlcOutputs<'_>, InferenceError> {
        // tract consumes its inputs, so the tensor is cloned (one allocation per frame; measured and reported).
        let outputs = self
            .state
            .run(tvec!(self.input.clone().into_tvalue()))
            .map_err(runtime_error)?;
        if outputs.len() < 2 {
            return Err(InferenceError::Shape(format!(
                "the network has {} outputs, need a score map and locref",
                outputs.len()
            )));
        }
        for (index, value) in outputs.iter().take(2).enumerate() {
            let view = value.to_plain_array_view::<f32>().map_err(runtime_error)?;
            let data = view.to_slice().ok_or_else(|| {
                InferenceError::Shape("tract returned a non-contiguous output".into())
            })?;
            self.buffers
                .fill(index, if index == 0 { "score map" } else { "locref" }, data)?;
        }
        Ok(self.buffers.view())
    }
}
