//! tract, the pure-Rust ONNX runtime: the fallback that needs nothing installed.

use tract_onnx::prelude::*;

use super::{DlcOutputs, DlcSpec, InferenceError, Runner, output_grid};

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
    scoremap: Vec<f32>,
    locref: Vec<f32>,
    rows: usize,
    cols: usize,
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
        let (rows, cols) = output_grid(spec);
        let joints = spec.keypoints.len();
        let mut runner = Self {
            state: plan.spawn().map_err(runtime_error)?,
            input: Tensor::zero::<f32>(&[1, h, w, 3]).map_err(runtime_error)?,
            scoremap: vec![0.0; rows * cols * joints],
            locref: vec![0.0; rows * cols * 2 * joints],
            rows,
            cols,
        };
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
        for (value, dst) in outputs.iter().zip([&mut self.scoremap, &mut self.locref]) {
            let view = value.to_plain_array_view::<f32>().map_err(runtime_error)?;
            let data = view.to_slice().ok_or_else(|| {
                InferenceError::Shape("tract returned a non-contiguous output".into())
            })?;
            if data.len() != dst.len() {
                return Err(InferenceError::Shape(format!(
                    "output has {} values, expected {}",
                    data.len(),
                    dst.len()
                )));
            }
            dst.copy_from_slice(data);
        }
        Ok(DlcOutputs {
            scoremap: &self.scoremap,
            locref: &self.locref,
            rows: self.rows,
            cols: self.cols,
        })
    }
}
