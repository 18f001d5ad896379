//! [`SeqLayout`]: where each time step's rows live in a packed, time-major buffer.

use crate::error::{Error, Result};

/// Row layout of a packed batch, as PyTorch's `PackedSequence`: the rows of time step `t`
/// are `offsets[t] .. offsets[t] + batch_sizes[t]`, and the sequences are sorted by
/// decreasing length so the active sequences of a step are always a prefix of the batch.
///
/// A batch without lengths is the special case `batch_sizes = [B; T]`, i.e. plain `(T, B, *)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqLayout {
    /// Number of active sequences at each step, non-increasing.
    pub batch_sizes: Vec<usize>,
    /// Start row of each step; `offsets[T]` is the total row count.
    pub offsets: Vec<usize>,
}

impl SeqLayout {
    /// All `batch` sequences run for all `steps` steps.
    pub fn full(steps: usize, batch: usize) -> Self {
        Self::from_batch_sizes(vec![batch; steps])
    }

    /// From per-step active counts (must be non-increasing).
    pub fn from_batch_sizes(batch_sizes: Vec<usize>) -> Self {
        debug_assert!(batch_sizes.windows(2).all(|w| w[0] >= w[1]));
        let mut offsets = Vec::with_capacity(batch_sizes.len() + 1);
        let mut acc = 0;
        offsets.push(0);
        for &b in &batch_sizes {
            acc += b;
            offsets.push(acc);
        }
        SeqLayout {
            batch_sizes,
            offsets,
        }
    }

    /// Number of time steps `T`.
    pub fn steps(&self) -> usize {
        self.batch_sizes.len()
    }

    /// Total number of rows (real tokens).
    pub fn rows(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }

    /// The batch size `B` (active count at the first step).
    pub fn batch(&self) -> usize {
        self.batch_sizes.first().copied().unwrap_or(0)
    }

    /// Steps in processing order, last step first with `reverse`, skipping empty ones:
    /// `(first row, active rows)`.
    pub fn visit_order(&self, reverse: bool) -> Vec<(usize, usize)> {
        let steps = self.steps();
        (0..steps)
            .map(|s| if reverse { steps - 1 - s } else { s })
            .map(|t| (self.offsets[t], self.batch_sizes[t]))
            .filter(|&(_, b)| b > 0)
            .collect()
    }
}

/// Order of sequences inside a packed batch plus its layout.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOrder {
    /// `sorted[j]` is the caller's index of the sequence stored at packed position `j`.
    pub sorted: Vec<usize>,
    /// The packed layout.
    pub layout: SeqLayout,
}

impl BatchOrder {
    /// Identity order, every sequence `steps` long.
    pub fn full(steps: usize, batch: usize) -> Self {
        BatchOrder {
            sorted: (0..batch).collect(),
            layout: SeqLayout::full(steps, batch),
        }
    }

    /// Sorts sequences by decreasing length (stable) and builds the layout.
    ///
    /// Fails when `lengths.len() != batch`, a length is 0, or a length exceeds `steps`.
    pub fn from_lengths(lengths: &[usize], steps: usize, batch: usize) -> Result<Self> {
        if lengths.len() != batch {
            return Err(Error::Lengths(format!(
                "expected {batch} lengths (one per sequence in the batch), found {}",
                lengths.len()
            )));
        }
        if let Some((i, &l)) = lengths
            .iter()
            .enumerate()
            .find(|(_, &l)| l == 0 || l > steps)
        {
            return Err(Error::Lengths(format!(
                "lengths[{i}] = {l} must be between 1 and the sequence length {steps}"
            )));
        }
        let mut sorted: Vec<usize> = (0..batch).collect();
        sorted.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
        let batch_sizes = (0..steps)
            .map(|t| lengths.iter().filter(|&&l| l > t).count())
            .collect();
        Ok(BatchOrder {
            sorted,
            layout: SeqLayout::from_batch_sizes(batch_sizes),
        })
    }
}
