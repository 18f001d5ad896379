//! [`PackedSequence`] and PyTorch's `pack_padded_sequence` / `pad_packed_sequence`, for
//! code ported from PyTorch. Everything else can pass plain `lengths` to
//! [`Rnn::forward`](crate::Rnn::forward).

use crate::error::{Error, Result};
use crate::layer::BatchOrder;
use crate::rnn::{InitialState, Rnn};
use ndarray::{Array2, ArrayD, ArrayViewD, IxDyn};

/// Sequences of different lengths packed time step by time step, as
/// `torch.nn.utils.rnn.PackedSequence`.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedSequence {
    /// `(sum(lengths), F)`: the rows of step 0 for every sequence, then step 1, ...
    pub data: Array2<f32>,
    /// Number of sequences still running at each step (non-increasing).
    pub batch_sizes: Vec<usize>,
    /// `sorted_indices[j]`: the caller's index of the `j`-th longest sequence.
    pub sorted_indices: Vec<usize>,
    /// Inverse permutation of `sorted_indices`.
    pub unsorted_indices: Vec<usize>,
}

impl PackedSequence {
    /// Length of each sequence, in the caller's order.
    pub fn lengths(&self) -> Vec<usize> {
        let mut lengths = vec![0; self.sorted_indices.len()];
        for &b in &self.batch_sizes {
            for j in 0..b {
                lengths[self.sorted_indices[j]] += 1;
            }
        }
        lengths
    }
}

fn split_dims(shape: &[usize], batch_first: bool) -> Result<(usize, usize, usize)> {
    match *shape {
        [a, b, f] => Ok(if batch_first { (b, a, f) } else { (a, b, f) }),
        _ => Err(Error::shape(
            "input",
            "(T, B, F) or (B, T, F) with batch_first",
            shape,
        )),
    }
}

/// `pack_padded_sequence(input, lengths, batch_first, enforce_sorted)`.
///
/// `input` is `(T, B, F)` (or `(B, T, F)` with `batch_first`); with `enforce_sorted`
/// the lengths must already be in decreasing order.
pub fn pack_padded_sequence(
    input: ArrayViewD<f32>,
    lengths: &[usize],
    batch_first: bool,
    enforce_sorted: bool,
) -> Result<PackedSequence> {
    let (steps, batch, f) = split_dims(input.shape(), batch_first)?;
    if enforce_sorted && lengths.windows(2).any(|w| w[0] < w[1]) {
        return Err(Error::Lengths(format!(
            "`lengths` array must be sorted in decreasing order when `enforce_sorted` is true, found {lengths:?}"
        )));
    }
    let order = BatchOrder::from_lengths(lengths, steps, batch)?;
    let layout = &order.layout;
    let mut data = Array2::zeros((layout.rows(), f));
    for t in 0..steps {
        for j in 0..layout.batch_sizes[t] {
            let b = order.sorted[j];
            let src = if batch_first {
                input.slice(ndarray::s![b, t, ..])
            } else {
                input.slice(ndarray::s![t, b, ..])
            };
            data.row_mut(layout.offsets[t] + j).assign(&src);
        }
    }
    let mut unsorted = vec![0; batch];
    for (j, &b) in order.sorted.iter().enumerate() {
        unsorted[b] = j;
    }
    let batch_sizes = layout
        .batch_sizes
        .iter()
        .copied()
        .filter(|&b| b > 0)
        .collect();
    Ok(PackedSequence {
        data,
        batch_sizes,
        sorted_indices: order.sorted,
        unsorted_indices: unsorted,
    })
}

/// `pad_packed_sequence(sequence, batch_first, padding_value, total_length)`: returns the
/// padded `(T, B, F)` (or `(B, T, F)`) tensor and the lengths, in the caller's order.
pub fn pad_packed_sequence(
    sequence: &PackedSequence,
    batch_first: bool,
    padding_value: f32,
    total_length: Option<usize>,
) -> Result<(ArrayD<f32>, Vec<usize>)> {
    let max_len = sequence.batch_sizes.len();
    let steps = total_length.unwrap_or(max_len);
    if steps < max_len {
        return Err(Error::Invalid(format!(
            "total_length {steps} is smaller than the longest sequence ({max_len})"
        )));
    }
    let batch = sequence.sorted_indices.len();
    let f = sequence.data.ncols();
    let shape = if batch_first {
        [batch, steps, f]
    } else {
        [steps, batch, f]
    };
    let mut out = ArrayD::from_elem(IxDyn(&shape), padding_value);
    let mut row = 0;
    for (t, &b_t) in sequence.batch_sizes.iter().enumerate() {
        for j in 0..b_t {
            let b = sequence.sorted_indices[j];
            let mut dst = if batch_first {
                out.slice_mut(ndarray::s![b, t, ..])
            } else {
                out.slice_mut(ndarray::s![t, b, ..])
            };
            dst.assign(&sequence.data.row(row));
            row += 1;
        }
    }
    Ok((out, sequence.lengths()))
}

impl Rnn {
    /// Runs a packed batch, as `module(packed, hx)`: returns the packed output and
    /// `h_n` (and `c_n`) in the caller's batch order.
    pub fn forward_packed(
        &self,
        input: &PackedSequence,
        state: Option<InitialState>,
    ) -> Result<(PackedSequence, ArrayD<f32>, Option<ArrayD<f32>>)> {
        let batch_first = self.config().batch_first;
        let (padded, lengths) = pad_packed_sequence(input, batch_first, 0.0, None)?;
        let out = self.forward(padded.view(), state, Some(&lengths))?;
        let packed = pack_padded_sequence(out.output.view(), &lengths, batch_first, false)?;
        Ok((packed, out.h_n, out.c_n))
    }
}
