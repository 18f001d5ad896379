//! `nn.LayerNorm` over the last dimension.

use super::{no_tape, Module};
use crate::error::{Error, Result};
use crate::layer::norm;
use crate::param::Param;
use ndarray::{ArrayD, IxDyn};

/// `nn.LayerNorm(normalized_shape)` over the last dimension, `eps = 1e-5`, with
/// `weight` (ones) and `bias` (zeros).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// `(features)` scale.
    pub weight: Param,
    /// `(features)` shift.
    pub bias: Param,
    /// Normalised input and reciprocal standard deviation per row, kept for backward.
    cache: Option<(Vec<usize>, Vec<f32>, Vec<f32>)>,
    training: bool,
}

impl LayerNorm {
    /// A LayerNorm over `features` values.
    pub fn new(features: usize) -> Self {
        LayerNorm {
            weight: Param::full(&[features], 1.0),
            bias: Param::zeros(&[features]),
            cache: None,
            training: true,
        }
    }
}

impl Module for LayerNorm {
    fn forward(&mut self, input: &ArrayD<f32>) -> Result<ArrayD<f32>> {
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
        if self.training {
            self.cache = Some((input.shape().to_vec(), hat, rstd));
        }
        Ok(ArrayD::from_shape_vec(IxDyn(input.shape()), out).expect("shape"))
    }

    fn backward(&mut self, grad_output: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let f = self.weight.len();
        let (shape, hat, rstd) = self.cache.take().ok_or_else(|| no_tape("LayerNorm"))?;
        if grad_output.shape() != shape.as_slice() {
            return Err(Error::shape(
                "LayerNorm grad_output",
                format!("{shape:?}"),
                grad_output.shape(),
            ));
        }
        let mut g: Vec<f32> = grad_output.iter().copied().collect();
        for ((row, hrow), r) in g.chunks_exact_mut(f).zip(hat.chunks_exact(f)).zip(&rstd) {
            norm::backward(
                row,
                hrow,
                *r,
                &self.weight.value,
                &mut self.weight.grad,
                &mut self.bias.grad,
            );
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), g).expect("shape"))
    }

    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
}

crate::parameters!(LayerNorm { param "weight" => weight; param "bias" => bias; });
