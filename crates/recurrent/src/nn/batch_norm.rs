//! `nn.BatchNorm1d`: per-channel normalisation of `(B, C)` or `(B, C, L)` by the batch's
//! statistics in training and by running statistics in inference.

use super::{Module, Tape};
use crate::error::{Error, Result};
use crate::param::{Buffer, GradSlices, Param};
use ndarray::{ArrayD, IxDyn};

/// `nn.BatchNorm1d(num_features, eps=1e-5, momentum=0.1)` with `affine` and
/// `track_running_stats` on: `weight` (ones) and `bias` (zeros) `(C)` are trained;
/// `running_mean` (zeros), `running_var` (ones) `(C)` and `num_batches_tracked` `()` are
/// buffers, updated by [`Module::update_buffers`] after each training-mode forward pass
/// (running variance from the unbiased batch variance, as PyTorch; normalisation uses the
/// biased one).
///
/// [`BatchNorm1d::forward_masked`] takes per-sample lengths for `(B, C, L)` input: the
/// statistics then cover each sample's first `length` positions only (padding does not
/// bias them) and padded positions of the output are zero.
#[derive(Debug, Clone)]
pub struct BatchNorm1d {
    /// `(C)` scale.
    pub weight: Param,
    /// `(C)` shift.
    pub bias: Param,
    /// `(C)` running mean.
    pub running_mean: Buffer,
    /// `(C)` running variance.
    pub running_var: Buffer,
    /// `()` number of training batches seen (a count, stored as `f32`: exact to 2^24).
    pub num_batches_tracked: Buffer,
    /// Added to the variance.
    pub eps: f32,
    /// Weight of the newest batch in the running statistics.
    pub momentum: f32,
}

crate::parameters!(BatchNorm1d {
    param "weight" => weight;
    param "bias" => bias;
    buffer "running_mean" => running_mean;
    buffer "running_var" => running_var;
    buffer "num_batches_tracked" => num_batches_tracked;
});

/// What [`BatchNorm1d`] keeps: the normalised input, the per-channel factor from `x̂` to
/// the output's gradient side (`γ / σ`), the statistics, and which positions were valid.
struct NormRecord {
    shape: Vec<usize>,
    hat: Vec<f32>,
    scale: Vec<f32>,
    lengths: Option<Vec<usize>>,
    /// Training mode: the batch mean, unbiased variance and per-channel count.
    batch: Option<(Vec<f32>, Vec<f32>, usize)>,
}

impl BatchNorm1d {
    /// A layer over `num_features` channels with PyTorch's defaults.
    pub fn new(num_features: usize) -> Self {
        BatchNorm1d {
            weight: Param::full(&[num_features], 1.0),
            bias: Param::zeros(&[num_features]),
            running_mean: Buffer::full(&[num_features], 0.0),
            running_var: Buffer::full(&[num_features], 1.0),
            num_batches_tracked: Buffer::full(&[], 0.0),
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    /// `(B, C, L)` of the input (`L` = 1 for `(B, C)`).
    fn geometry(
        &self,
        shape: &[usize],
        lengths: Option<&[usize]>,
    ) -> Result<(usize, usize, usize)> {
        let c = self.weight.len();
        let (b, l) = match *shape {
            [b, ch] if ch == c && lengths.is_none() => (b, 1),
            [b, ch, l] if ch == c => (b, l),
            _ => {
                return Err(Error::shape(
                    "BatchNorm1d input",
                    format!("(B, {c}) or (B, {c}, L) (lengths need the 3-dimensional form)"),
                    shape,
                ))
            }
        };
        if let Some(ls) = lengths {
            if ls.len() != b || ls.iter().any(|&n| n == 0 || n > l) {
                return Err(Error::Lengths(format!(
                    "BatchNorm1d: {b} lengths from 1 to {l} needed, found {ls:?}"
                )));
            }
        }
        Ok((b, c, l))
    }

    /// [`Module::forward`] with per-sample `lengths` of `(B, C, L)` input (`None`: all
    /// positions valid).
    pub fn forward_masked(
        &self,
        input: &ArrayD<f32>,
        lengths: Option<&[usize]>,
        tape: &mut Tape,
    ) -> Result<ArrayD<f32>> {
        let (b, c, l) = self.geometry(input.shape(), lengths)?;
        let x = input.as_standard_layout();
        let x = x.as_slice().expect("standard layout");
        let valid = |s: usize| lengths.map_or(l, |ls| ls[s]);
        let count: usize = (0..b).map(valid).sum();
        let training = tape.is_training();
        if training && count < 2 {
            return Err(Error::Invalid(format!(
                "BatchNorm1d in training needs more than one value per channel, found {count}"
            )));
        }
        let (mut mean, mut inv_std) = (vec![0.0f32; c], vec![0.0f32; c]);
        let mut unbiased = vec![0.0f32; c];
        for ch in 0..c {
            let (m, var) = if training {
                let (mut sum, mut sq) = (0.0f64, 0.0f64);
                for s in 0..b {
                    let row = &x[(s * c + ch) * l..][..valid(s)];
                    sum += row.iter().map(|&v| v as f64).sum::<f64>();
                }
                let m = sum / count as f64;
                for s in 0..b {
                    let row = &x[(s * c + ch) * l..][..valid(s)];
                    sq += row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>();
                }
                unbiased[ch] = (sq / (count - 1) as f64) as f32;
                (m as f32, (sq / count as f64) as f32)
            } else {
                (self.running_mean.value[ch], self.running_var.value[ch])
            };
            mean[ch] = m;
            inv_std[ch] = 1.0 / (var + self.eps).sqrt();
        }
        let mut hat = vec![0.0; x.len()];
        let mut out = vec![0.0; x.len()];
        for s in 0..b {
            for ch in 0..c {
                let at = (s * c + ch) * l;
                let n = valid(s);
                let (w, bias) = (self.weight.value[ch], self.bias.value[ch]);
                for t in at..at + n {
                    hat[t] = (x[t] - mean[ch]) * inv_std[ch];
                    out[t] = w * hat[t] + bias;
                }
            }
        }
        if training {
            let scale = (0..c)
                .map(|ch| self.weight.value[ch] * inv_std[ch])
                .collect();
            tape.keep(NormRecord {
                shape: input.shape().to_vec(),
                hat,
                scale,
                lengths: lengths.map(<[usize]>::to_vec),
                batch: training.then_some((mean, unbiased, count)),
            });
        }
        Ok(ArrayD::from_shape_vec(IxDyn(input.shape()), out).expect("shape"))
    }

    /// [`Module::backward`] for a pass of [`BatchNorm1d::forward_masked`].
    fn backward_record(
        &self,
        record: &NormRecord,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        let (b, c, l) = self.geometry(&record.shape, record.lengths.as_deref())?;
        if grad_output.shape() != record.shape.as_slice() {
            return Err(Error::shape(
                "BatchNorm1d grad_output",
                format!("{:?}", record.shape),
                grad_output.shape(),
            ));
        }
        let (weight_grad, bias_grad) = (grads.next(c), grads.next(c));
        let g = grad_output.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        let valid = |s: usize| record.lengths.as_ref().map_or(l, |ls| ls[s]);
        let mut dx = vec![0.0; g.len()];
        for ch in 0..c {
            let (mut sdy, mut sdyx) = (0.0f64, 0.0f64);
            for s in 0..b {
                let at = (s * c + ch) * l;
                let span = at..at + valid(s);
                for (&dy, &hat) in g[span.clone()].iter().zip(&record.hat[span]) {
                    sdy += dy as f64;
                    sdyx += dy as f64 * hat as f64;
                }
            }
            weight_grad[ch] += sdyx as f32;
            bias_grad[ch] += sdy as f32;
            let scale = record.scale[ch];
            let (mean_dy, mean_dyx) = match &record.batch {
                Some((_, _, n)) => ((sdy / *n as f64) as f32, (sdyx / *n as f64) as f32),
                None => (0.0, 0.0),
            };
            for s in 0..b {
                let at = (s * c + ch) * l;
                for t in at..at + valid(s) {
                    dx[t] = scale * (g[t] - mean_dy - record.hat[t] * mean_dyx);
                }
            }
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&record.shape), dx).expect("shape"))
    }
}

impl Module for BatchNorm1d {
    fn forward(&self, input: &ArrayD<f32>, tape: &mut Tape) -> Result<ArrayD<f32>> {
        self.forward_masked(input, None, tape)
    }

    fn backward(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        self.backward_record(tape.record("BatchNorm1d")?, grad_output, grads)
    }

    fn update_buffers(&mut self, tape: &Tape) {
        let Ok(NormRecord {
            batch: Some((mean, unbiased, _)),
            ..
        }) = tape.record::<NormRecord>("BatchNorm1d")
        else {
            return;
        };
        let m = self.momentum;
        for (r, v) in self.running_mean.value.iter_mut().zip(mean) {
            *r = (1.0 - m) * *r + m * v;
        }
        for (r, v) in self.running_var.value.iter_mut().zip(unbiased) {
            *r = (1.0 - m) * *r + m * v;
        }
        self.num_batches_tracked.value[0] += 1.0;
    }
}
