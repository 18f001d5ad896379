//! `nn.Embedding`: a lookup table of vectors, with an optional `padding_idx`.

use super::Tape;
use crate::error::{Error, Result};
use crate::param::{GradSlices, Param};
use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// `nn.Embedding(num_embeddings, embedding_dim, padding_idx)`: indices of any shape `S`
/// give vectors of shape `(*S, embedding_dim)`. Weights `N(0, 1)` as PyTorch, the
/// `padding_idx` row zero and never updated by gradients.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// `(num_embeddings, embedding_dim)`.
    pub weight: Param,
    padding_idx: Option<usize>,
}

/// What [`Embedding`] keeps: the indices it looked up.
struct EmbeddingRecord(Vec<usize>);

impl Embedding {
    /// A new table with PyTorch's initialisation.
    pub fn new(
        num_embeddings: usize,
        embedding_dim: usize,
        padding_idx: Option<usize>,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if let Some(p) = padding_idx {
            if p >= num_embeddings {
                return Err(Error::Config(format!(
                    "padding_idx must be within num_embeddings ({num_embeddings}), found {p}"
                )));
            }
        }
        let mut weight = Param::zeros(&[num_embeddings, embedding_dim]);
        weight
            .value
            .iter_mut()
            .for_each(|v| *v = StandardNormal.sample(rng));
        if let Some(p) = padding_idx {
            weight.value[p * embedding_dim..(p + 1) * embedding_dim].fill(0.0);
        }
        Ok(Embedding {
            weight,
            padding_idx,
        })
    }

    fn dim(&self) -> usize {
        self.weight.shape[1]
    }

    /// Looks up `indices` (flat, row-major, of shape `shape`): `(*shape, embedding_dim)`.
    /// A training tape keeps them for backward.
    pub fn forward(
        &self,
        indices: &[usize],
        shape: &[usize],
        tape: &mut Tape,
    ) -> Result<ArrayD<f32>> {
        let n = self.weight.shape[0];
        let d = self.dim();
        if shape.iter().product::<usize>() != indices.len() {
            return Err(Error::shape(
                "Embedding indices",
                format!("{} elements", indices.len()),
                shape,
            ));
        }
        let mut out = Vec::with_capacity(indices.len() * d);
        for (pos, &i) in indices.iter().enumerate() {
            if i >= n {
                return Err(Error::Invalid(format!(
                    "Embedding index {i} at position {pos} is out of range (num_embeddings = {n})"
                )));
            }
            out.extend_from_slice(&self.weight.value[i * d..(i + 1) * d]);
        }
        if tape.is_training() {
            tape.keep(EmbeddingRecord(indices.to_vec()));
        }
        let mut out_shape = shape.to_vec();
        out_shape.push(d);
        Ok(ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("shape"))
    }

    /// Adds the gradient of the looked-up rows (none for `padding_idx`) to the weight's
    /// slice of `grads`, for the gradient `(*shape, embedding_dim)` of the output.
    pub fn backward(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<()> {
        let d = self.dim();
        let EmbeddingRecord(indices) = tape.record("Embedding")?;
        let weight_grad = grads.next(self.weight.len());
        if grad_output.len() != indices.len() * d {
            return Err(Error::shape(
                "Embedding grad_output",
                format!("{} rows of {d}", indices.len()),
                grad_output.shape(),
            ));
        }
        let g = grad_output.as_standard_layout();
        for (row, &i) in g.as_slice().expect("standard").chunks_exact(d).zip(indices) {
            if Some(i) == self.padding_idx {
                continue;
            }
            weight_grad[i * d..(i + 1) * d]
                .iter_mut()
                .zip(row)
                .for_each(|(a, b)| *a += b);
        }
        Ok(())
    }
}

crate::parameters!(Embedding { param "weight" => weight; });
