//! `nn.Linear`: `y = x W^T + b` over the last dimension.

use super::{Module, Tape};
use crate::error::{Error, Result};
use crate::kernels::rows::{add_bias_rows, add_row_sums};
use crate::kernels::{gemm, Mat, MatMut};
use crate::param::{GradSlices, Param};
use ndarray::{ArrayD, IxDyn};
use rand::Rng;

/// `nn.Linear(in_features, out_features, bias)`: input `(*, in)`, output `(*, out)`;
/// `weight (out, in)`, `bias (out)`, both initialised uniform in `±1/sqrt(in)` as PyTorch.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `(out_features, in_features)`.
    pub weight: Param,
    /// `(out_features)`.
    pub bias: Option<Param>,
}

/// What [`Linear`] keeps: its input, `(*, in)`, in standard layout.
struct LinearRecord(ArrayD<f32>);

impl Linear {
    /// A new layer with PyTorch's default initialisation.
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut impl Rng) -> Self {
        let bound = 1.0 / (in_features as f32).sqrt();
        Linear {
            weight: Param::uniform(&[out_features, in_features], bound, rng),
            bias: bias.then(|| Param::uniform(&[out_features], bound, rng)),
        }
    }

    /// [`Module::forward`] taking the input by value: in training it is kept for backward
    /// without a copy. Input `(*, in)`, output `(*, out)`.
    pub fn forward_owned(&self, input: ArrayD<f32>, tape: &mut Tape) -> Result<ArrayD<f32>> {
        let out = self.compute(&input)?;
        if tape.is_training() {
            tape.keep(LinearRecord(if input.is_standard_layout() {
                input
            } else {
                input.as_standard_layout().into_owned()
            }));
        }
        Ok(out)
    }

    /// `x W^T + b` for input `(*, in)`: output `(*, out)`.
    fn compute(&self, input: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let (fin, fout) = self.sizes();
        if input.ndim() == 0 || input.shape()[input.ndim() - 1] != fin {
            return Err(Error::shape(
                "Linear input",
                format!("(*, {fin})"),
                input.shape(),
            ));
        }
        let x = input.as_standard_layout();
        let rows = x.len() / fin;
        let mut out = vec![0.0; rows * fout];
        gemm(
            rows,
            fout,
            fin,
            Mat::new(x.as_slice().expect("standard"), fin),
            Mat::t(&self.weight.value, fin),
            0.0,
            MatMut::new(&mut out, fout),
        );
        if let Some(b) = &self.bias {
            add_bias_rows(&mut out, &b.value);
        }
        let mut shape = input.shape().to_vec();
        *shape.last_mut().unwrap() = fout;
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("shape"))
    }

    fn sizes(&self) -> (usize, usize) {
        (self.weight.shape[1], self.weight.shape[0])
    }
}

impl Module for Linear {
    fn forward(&self, input: &ArrayD<f32>, tape: &mut Tape) -> Result<ArrayD<f32>> {
        let out = self.compute(input)?;
        if tape.is_training() {
            tape.keep(LinearRecord(input.as_standard_layout().into_owned()));
        }
        Ok(out)
    }

    fn backward(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        let (fin, fout) = self.sizes();
        let LinearRecord(x) = tape.record("Linear")?;
        let weight_grad = grads.next(self.weight.len());
        let bias_grad = self.bias.as_ref().map(|b| grads.next(b.len()));
        let mut expected = x.shape().to_vec();
        *expected.last_mut().unwrap() = fout;
        if grad_output.shape() != expected.as_slice() {
            return Err(Error::shape(
                "Linear grad_output",
                format!("{expected:?}"),
                grad_output.shape(),
            ));
        }
        let g = grad_output.as_standard_layout();
        let g = g.as_slice().expect("standard");
        let xs = x.as_slice().expect("standard");
        let rows = g.len() / fout;
        if fout < fin {
            // `dW^T = x^T g`: the product packs the narrow gradient instead of the input.
            let mut dw_t = vec![0.0; fin * fout];
            gemm(
                fin,
                fout,
                rows,
                Mat::t(xs, fin),
                Mat::new(g, fout),
                0.0,
                MatMut::new(&mut dw_t, fout),
            );
            for (o, row) in weight_grad.chunks_exact_mut(fin).enumerate() {
                row.iter_mut()
                    .zip(dw_t[o..].iter().step_by(fout))
                    .for_each(|(w, d)| *w += d);
            }
        } else {
            gemm(
                fout,
                fin,
                rows,
                Mat::t(g, fout),
                Mat::new(xs, fin),
                1.0,
                MatMut::new(weight_grad, fin),
            );
        }
        if let Some(b) = bias_grad {
            add_row_sums(b, g);
        }
        let mut dx = vec![0.0; rows * fin];
        gemm(
            rows,
            fin,
            fout,
            Mat::new(g, fout),
            Mat::new(&self.weight.value, fin),
            0.0,
            MatMut::new(&mut dx, fin),
        );
        Ok(ArrayD::from_shape_vec(IxDyn(x.shape()), dx).expect("shape"))
    }
}

crate::parameters!(Linear { param "weight" => weight; optional "bias" => bias; });
