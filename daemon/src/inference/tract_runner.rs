//! tract, the pure-Rust ONNX runtime: the fallback that needs nothing installed.

use tract_onnx::prelude::*;

use super::onnx_info::ElemType;
use super::preprocess::{InputMut, InputType};
use super::{InferenceError, NetIo, OutTensor, Runner};

const NAME: &str = "tract";

fn runtime_error(e: impl std::fmt::Display) -> InferenceError {
    InferenceError::Runtime {
        backend: NAME,
        message: format!("{e:#}"),
    }
}

/// One input shape: tract's plan optimised for it, its input tensor and its outputs as f32.
struct Slot {
    state: TypedSimpleState,
    input: Tensor,
    outputs: Vec<OutTensor>,
}

/// A network optimised by tract, once per input shape.
pub struct TractRunner {
    model: InferenceModel,
    io: NetIo,
    slots: Vec<Slot>,
}

impl TractRunner {
    /// Parse `onnx`; each input shape is optimised when its slot is made.
    pub fn new(onnx: &[u8], io: &NetIo) -> Result<Self, InferenceError> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .map_err(runtime_error)?;
        Ok(Self {
            model,
            io: io.clone(),
            slots: Vec::new(),
        })
    }

    fn copy_out(value: &TValue, elem: ElemType, dst: &mut OutTensor) -> Result<(), InferenceError> {
        let n = value.len();
        if dst.data.is_empty() {
            dst.shape = value.shape().to_vec();
            dst.data = vec![0.0; n];
        } else if dst.data.len() != n {
            return Err(InferenceError::Shape(format!(
                "output `{}` changed size between runs ({} values, then {n})",
                dst.name,
                dst.data.len()
            )));
        }
        let contiguous = || InferenceError::Shape("tract returned a non-contiguous output".into());
        match elem {
            ElemType::Bool => {
                let view = value.to_plain_array_view::<bool>().map_err(runtime_error)?;
                let src = view.to_slice().ok_or_else(contiguous)?;
                for (d, &s) in dst.data.iter_mut().zip(src) {
                    *d = if s { 1.0 } else { 0.0 };
                }
            }
            ElemType::I64 => {
                let view = value.to_plain_array_view::<i64>().map_err(runtime_error)?;
                let src = view.to_slice().ok_or_else(contiguous)?;
                for (d, &s) in dst.data.iter_mut().zip(src) {
                    *d = s as f32;
                }
            }
            _ => {
                let view = value.to_plain_array_view::<f32>().map_err(runtime_error)?;
                dst.data
                    .copy_from_slice(view.to_slice().ok_or_else(contiguous)?);
            }
        }
        Ok(())
    }
}

impl Runner for TractRunner {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clear_slots(&mut self) {
        self.slots.clear();
    }

    fn add_slot(&mut self, shape: &[usize]) -> Result<usize, InferenceError> {
        let (fact, input) = match self.io.input_type {
            InputType::F32 => (
                f32::fact(shape).into(),
                Tensor::zero::<f32>(shape).map_err(runtime_error)?,
            ),
            InputType::U8 => (
                u8::fact(shape).into(),
                Tensor::zero::<u8>(shape).map_err(runtime_error)?,
            ),
        };
        let plan = self
            .model
            .clone()
            .with_input_fact(0, fact)
            .map_err(runtime_error)?
            .into_optimized()
            .map_err(runtime_error)?
            .into_runnable()
            .map_err(runtime_error)?;
        self.slots.push(Slot {
            state: plan.spawn().map_err(runtime_error)?,
            input,
            outputs: self
                .io
                .outputs
                .iter()
                .map(|(name, _)| OutTensor::empty(name))
                .collect(),
        });
        let slot = self.slots.len() - 1;
        // One warm-up run: output sizes are learnt and shape problems surface at load time, not on frame 1.
        self.run(slot)?;
        Ok(slot)
    }

    fn outputs(&self, slot: usize) -> &[OutTensor] {
        &self.slots[slot].outputs
    }

    fn input_mut(&mut self, slot: usize) -> InputMut<'_> {
        let input = &mut self.slots[slot].input;
        match self.io.input_type {
            InputType::F32 => InputMut::F32(
                input
                    .to_plain_array_view_mut::<f32>()
                    .ok()
                    .and_then(|v| v.into_slice())
                    .unwrap_or(&mut []),
            ),
            InputType::U8 => InputMut::U8(
                input
                    .to_plain_array_view_mut::<u8>()
                    .ok()
                    .and_then(|v| v.into_slice())
                    .unwrap_or(&mut []),
            ),
        }
    }

    fn run(&mut self, slot: usize) -> Result<&[OutTensor], InferenceError> {
        let Slot {
            state,
            input,
            outputs,
        } = &mut self.slots[slot];
        // tract consumes its inputs, so the tensor is cloned (one allocation per frame; measured and reported).
        let values = state
            .run(tvec!(input.clone().into_tvalue()))
            .map_err(runtime_error)?;
        for ((&index, (_, elem)), dst) in self
            .io
            .output_index
            .iter()
            .zip(&self.io.outputs)
            .zip(outputs.iter_mut())
        {
            let value = values.get(index).ok_or_else(|| {
                InferenceError::Shape(format!(
                    "tract gave {} outputs, output `{}` is number {}",
                    values.len(),
                    dst.name,
                    index + 1
                ))
            })?;
            Self::copy_out(value, *elem, dst)?;
        }
        Ok(outputs)
    }
}
