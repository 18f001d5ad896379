//! Global average pooling over the positions of `(B, C, L)`.

use super::{Module, Tape};
use crate::error::{Error, Result};
use crate::param::GradSlices;
use ndarray::{ArrayD, IxDyn};

/// Global average pooling (`x.mean(dim=-1)`, as `nn.AdaptiveAvgPool1d(1)` then squeezing):
/// `(B, C, L)` to `(B, C)`. [`GlobalAvgPool1d::forward_masked`] averages each sample over its
/// first `length` positions only.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalAvgPool1d;

crate::parameters!(GlobalAvgPool1d {});

/// What [`GlobalAvgPool1d`] keeps: the input shape and the lengths.
struct PoolRecord {
    shape: Vec<usize>,
    lengths: Option<Vec<usize>>,
}

impl GlobalAvgPool1d {
    fn geometry(shape: &[usize], lengths: Option<&[usize]>) -> Result<(usize, usize, usize)> {
        let [b, c, l] = *shape else {
            return Err(Error::shape("GlobalAvgPool1d input", "(B, C, L)", shape));
        };
        if l == 0 {
            return Err(Error::shape(
                "GlobalAvgPool1d input",
                "(B, C, L) with L >= 1",
                shape,
            ));
        }
        if let Some(ls) = lengths {
            if ls.len() != b || ls.iter().any(|&n| n == 0 || n > l) {
                return Err(Error::Lengths(format!(
                    "GlobalAvgPool1d: {b} lengths from 1 to {l} needed, found {ls:?}"
                )));
            }
        }
        Ok((b, c, l))
    }

    /// [`Module::forward`] averaging sample `s` over its first `lengths[s]` positions.
    pub fn forward_masked(
        &self,
        input: &ArrayD<f32>,
        lengths: Option<&[usize]>,
        tape: &mut Tape,
    ) -> Result<ArrayD<f32>> {
        let (b, c, l) = Self::geometry(input.shape(), lengths)?;
        let x = input.as_standard_layout();
        let x = x.as_slice().expect("standard layout");
        let mut out = vec![0.0; b * c];
        for s in 0..b {
            let n = lengths.map_or(l, |ls| ls[s]);
            for ch in 0..c {
                let row = &x[(s * c + ch) * l..][..n];
                out[s * c + ch] = row.iter().sum::<f32>() / n as f32;
            }
        }
        if tape.is_training() {
            tape.keep(PoolRecord {
                shape: input.shape().to_vec(),
                lengths: lengths.map(<[usize]>::to_vec),
            });
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&[b, c]), out).expect("shape"))
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
        let PoolRecord { shape, lengths } = tape.record("GlobalAvgPool1d")?;
        let (b, c, l) = Self::geometry(shape, lengths.as_deref())?;
        if grad_output.shape() != [b, c] {
            return Err(Error::shape(
                "GlobalAvgPool1d grad_output",
                format!("[{b}, {c}]"),
                grad_output.shape(),
            ));
        }
        let g = grad_output.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        let mut dx = vec![0.0; b * c * l];
        for s in 0..b {
            let n = lengths.as_ref().map_or(l, |ls| ls[s]);
            for ch in 0..c {
                let v = g[s * c + ch] / n as f32;
                dx[(s * c + ch) * l..][..n].fill(v);
            }
        }
        Ok(ArrayD::from_shape_vec(IxDyn(shape), dx).expect("shape"))
    }
}
