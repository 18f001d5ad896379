//! [`Param`]: a named-by-its-owner trainable tensor with its accumulated gradient.

use crate::error::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use rand::Rng;

/// A trainable tensor: row-major values, their shape, and the gradient accumulated by
/// backward passes (same shape; zeroed by [`Param::zero_grad`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Shape, as in PyTorch.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub value: Vec<f32>,
    /// Accumulated gradient, row-major, same length as `value`.
    pub grad: Vec<f32>,
}

impl Param {
    /// A zero tensor of the given shape.
    pub fn zeros(shape: &[usize]) -> Self {
        let n = shape.iter().product();
        Param {
            shape: shape.to_vec(),
            value: vec![0.0; n],
            grad: vec![0.0; n],
        }
    }

    /// A tensor filled with `v`.
    pub fn full(shape: &[usize], v: f32) -> Self {
        let mut p = Self::zeros(shape);
        p.value.fill(v);
        p
    }

    /// Uniform in `[-bound, bound)`, as `torch.nn.init.uniform_(-bound, bound)`.
    pub fn uniform(shape: &[usize], bound: f32, rng: &mut impl Rng) -> Self {
        let mut p = Self::zeros(shape);
        if bound > 0.0 {
            p.value
                .iter_mut()
                .for_each(|v| *v = rng.gen_range(-bound..bound));
        }
        p
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }

    /// Replaces the values, checking the shape; `name` is used in the error.
    pub fn assign(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        if shape != self.shape.as_slice() {
            return Err(Error::shape(name, format!("{:?}", self.shape), shape));
        }
        self.value.copy_from_slice(data);
        Ok(())
    }

    /// The values as an `ndarray` array.
    pub fn to_array(&self) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.value.clone()).expect("shape matches")
    }

    /// The gradient as an `ndarray` array.
    pub fn grad_array(&self) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.grad.clone()).expect("shape matches")
    }
}

/// Anything with named parameters, in PyTorch's `state_dict()` order.
pub trait Parameters {
    /// `(name, parameter)` pairs, names as in PyTorch's `named_parameters()`.
    fn named_parameters(&self) -> Vec<(String, &Param)>;
    /// Mutable `(name, parameter)` pairs, same order.
    fn named_parameters_mut(&mut self) -> Vec<(String, &mut Param)>;

    /// Zeroes every gradient (`optimizer.zero_grad()`).
    fn zero_grad(&mut self) {
        for (_, p) in self.named_parameters_mut() {
            p.zero_grad();
        }
    }

    /// Total number of scalar parameters.
    fn num_parameters(&self) -> usize {
        self.named_parameters().iter().map(|(_, p)| p.len()).sum()
    }
}
