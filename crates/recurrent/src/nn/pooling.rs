//! Global average pooling over the positions of `(B, C, L)` (or channels-last `(B, L, C)`).

use super::{check_lengths, swap_last_two, Module, Tape};
use crate::error::{Error, Result};
use crate::param::GradSlices;
use ndarray::{ArrayD, IxDyn};

/// Global average pooling (`x.mean(dim=-1)`, as `nn.AdaptiveAvgPool1d(1)` then squeezing):
/// `(B, C, L)` to `(B, C)`. [`GlobalAvgPool1d::forward_masked`] averages each sample over its
/// first `length` positions only; the `_channels_last` forms take `(B, L, C)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalAvgPool1d;

crate::parameters!(GlobalAvgPool1d {});

/// What [`GlobalAvgPool1d`] keeps: the channels-last sizes, the lengths, and whether the
/// caller's layout was PyTorch's.
struct PoolRecord {
    sizes: (usize, usize, usize),
    lengths: Option<Vec<usize>>,
    pytorch_layout: bool,
}

impl GlobalAvgPool1d {
    /// [`Module::forward`] averaging sample `s` over its first `lengths[s]` positions.
    pub fn forward_masked(
        &self,
        input: &ArrayD<f32>,
        lengths: Option<&[usize]>,
        tape: &mut Tape,
    ) -> Result<ArrayD<f32>> {
        if input.ndim() != 3 {
            return Err(Error::shape(
                "GlobalAvgPool1d input",
                "(B, C, L)",
                input.shape(),
            ));
        }
        self.forward_cl(&swap_last_two(input), lengths, tape, true)
    }

    /// The mean over the valid positions of channels-last `(B, L, C)`: `(B, C)`.
    pub fn forward_channels_last(
        &self,
        input: &ArrayD<f32>,
        lengths: Option<&[usize]>,
        tape: &mut Tape,
    ) -> Result<ArrayD<f32>> {
        self.forward_cl(input, lengths, tape, false)
    }

    fn forward_cl(
        &self,
        input: &ArrayD<f32>,
        lengths: Option<&[usize]>,
        tape: &mut Tape,
        pytorch_layout: bool,
    ) -> Result<ArrayD<f32>> {
        let [b, l, c] = *input.shape() else {
            return Err(Error::shape(
                "GlobalAvgPool1d input",
                "(B, L, C)",
                input.shape(),
            ));
        };
        if l == 0 {
            return Err(Error::shape(
                "GlobalAvgPool1d input",
                "L >= 1",
                input.shape(),
            ));
        }
        check_lengths("GlobalAvgPool1d", lengths, b, l)?;
        let x = input.as_standard_layout();
        let x = x.as_slice().expect("standard layout");
        let mut out = vec![0.0; b * c];
        for (s, mean) in out.chunks_exact_mut(c).enumerate() {
            let n = lengths.map_or(l, |ls| ls[s]);
            for row in x[s * l * c..(s * l + n) * c].chunks_exact(c) {
                mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
            }
            mean.iter_mut().for_each(|m| *m /= n as f32);
        }
        if tape.is_training() {
            tape.keep(PoolRecord {
                sizes: (b, l, c),
                lengths: lengths.map(<[usize]>::to_vec),
                pytorch_layout,
            });
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&[b, c]), out).expect("shape"))
    }

    /// The backward pass of [`GlobalAvgPool1d::forward_channels_last`]: `(B, L, C)`.
    pub fn backward_channels_last(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
    ) -> Result<ArrayD<f32>> {
        let PoolRecord {
            sizes: (b, l, c),
            lengths,
            ..
        } = tape.record("GlobalAvgPool1d")?;
        let (b, l, c) = (*b, *l, *c);
        if grad_output.shape() != [b, c] {
            return Err(Error::shape(
                "GlobalAvgPool1d grad_output",
                format!("[{b}, {c}]"),
                grad_output.shape(),
            ));
        }
        let g = grad_output.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        let mut dx = vec![0.0; b * l * c];
        for (s, gs) in g.chunks_exact(c).enumerate() {
            let n = lengths.as_ref().map_or(l, |ls| ls[s]);
            for row in dx[s * l * c..(s * l + n) * c].chunks_exact_mut(c) {
                row.iter_mut().zip(gs).for_each(|(d, v)| *d = v / n as f32);
            }
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&[b, l, c]), dx).expect("shape"))
    }
}

impl Module for GlobalAvgPool1d {
    fn forward(&self, input: &ArrayD<f32>, tape: &mut Tape) -> Result<ArrayD<f32>> {
        self.forward_masked(input, None, tape)
    }

    fn backward(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        _grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        let dx = self.backward_channels_last(tape, grad_output)?;
        let pytorch = tape.record::<PoolRecord>("GlobalAvgPool1d")?.pytorch_layout;
        Ok(if pytorch { swap_last_two(&dx) } else { dx })
    }
}
