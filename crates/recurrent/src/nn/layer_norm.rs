//! `nn.LayerNorm` over the last dimension.

use super::{Module, Tape};
use crate::error::{Error, Result};
use crate::layer::norm;
use crate::param::{GradSlices, Param};
use ndarray::{ArrayD, IxDyn};

/// `nn.LayerNorm(normalized_shape)` over the last dimension, `eps = 1e-5`, with
/// `weight` (ones) and `bias` (zeros).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// `(features)` scale.
    pub weight: Param,
    /// `(features)` shift.
    pub bias: Param,
}

/// What [`LayerNorm`] keeps: the input shape, the normalised input and each row's
/// reciprocal standard deviation.
struct LayerNormRecord {
    shape: Vec<usize>,
    hat: Vec<f32>,
    rstd: Vec<f32>,
}

impl LayerNorm {
    /// A LayerNorm over `features` values.
    pub fn new(features: usize) -> Self {
        LayerNorm {
            weight: Param::full(&[features], 1.0),
            bias: Param::zeros(&[features]),
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, input: &ArrayD<f32>, tape: &mut Tape) -> Result<ArrayD<f32>> {
        let f = self.weight.len();
        if input.ndim() == 0 || input.shape()[input.ndim() - 1] != f {
            return Err(Error::shape(
                "LayerNorm input",
                format!("(*, {f})"),
                input.shape(),
            ));
        }
        let mut out: Vec<f32> = input.iter().copied().collect();
        let mut hat = vec![0.0; out.len()];
        let mut rstd = Vec::with_capacity(out.len() / f);
        for (row, hrow) in out.chunks_exact_mut(f).zip(hat.chunks_exact_mut(f)) {
            rstd.push(norm::forward(
                row,
                &self.weight.value,
                &self.bias.value,
                hrow,
            ));
        }
        if tape.is_training() {
            let shape = input.shape().to_vec();
            tape.keep(LayerNormRecord { shape, hat, rstd });
        }
        Ok(ArrayD::from_shape_vec(IxDyn(input.shape()), out).expect("shape"))
    }

    fn backward(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        let f = self.weight.len();
        let LayerNormRecord { shape, hat, rstd } = tape.record("LayerNorm")?;
        let (weight_grad, bias_grad) = (grads.next(f), grads.next(f));
        if grad_output.shape() != shape.as_slice() {
            return Err(Error::shape(
                "LayerNorm grad_output",
                format!("{shape:?}"),
                grad_output.shape(),
            ));
        }
        let mut g: Vec<f32> = grad_output.iter().copied().collect();
        for ((row, hrow), r) in g.chunks_exact_mut(f).zip(hat.chunks_exact(f)).zip(rstd) {
            norm::backward(row, hrow, *r, &self.weight.value, weight_grad, bias_grad);
        }
        Ok(ArrayD::from_shape_vec(IxDyn(shape), g).expect("shape"))
    }
}

crate::parameters!(LayerNorm { param "weight" => weight; param "bias" => bias; });
