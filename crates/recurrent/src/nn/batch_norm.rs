//! `nn.BatchNorm1d`: per-channel normalisation of `(B, C)` or `(B, C, L)` by the batch's
//! statistics in training and by running statistics in inference.

use super::{check_lengths, swap_last_two, Module, Tape};
use crate::distributed::Collective;
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
///
/// With a group of ranks ([`BatchNorm1d::forward_channels_last_in`], as PyTorch's
/// `SyncBatchNorm`) the statistics are those of the ranks' batches together, and the
/// backward pass sums its per-channel terms over them: each rank normalises its share as
/// one process normalises the whole batch. A rank with no rows takes part with an empty
/// `(0, L, C)` input.
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

/// What [`BatchNorm1d`] keeps: the normalised input (channels-last), the per-channel factor
/// `γ / σ`, which positions were valid, the caller's shape, and in training the batch
/// statistics.
struct NormRecord {
    /// `(B, L, C)` of the channels-last form.
    sizes: (usize, usize, usize),
    /// The caller's shape when it was PyTorch's `(B, C, L)` (transposed at the boundary).
    pytorch_shape: Option<Vec<usize>>,
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

    /// [`Module::forward`] with per-sample `lengths` of `(B, C, L)` input (`None`: all
    /// positions valid); `(B, C)` input takes no lengths.
    pub fn forward_masked(
        &self,
        input: &ArrayD<f32>,
        lengths: Option<&[usize]>,
        tape: &mut Tape,
    ) -> Result<ArrayD<f32>> {
        let c = self.weight.len();
        match *input.shape() {
            [b, ch] if ch == c && lengths.is_none() => {
                let rows = input
                    .clone()
                    .into_shape_with_order(IxDyn(&[b, 1, c]))
                    .expect("shape");
                let out = self.forward_cl(&rows, None, tape, Some(input.shape().to_vec()), None)?;
                Ok(out.into_shape_with_order(IxDyn(&[b, c])).expect("shape"))
            }
            [_, ch, _] if ch == c => {
                let out = self.forward_cl(
                    &swap_last_two(input),
                    lengths,
                    tape,
                    Some(input.shape().to_vec()),
                    None,
                )?;
                Ok(swap_last_two(&out))
            }
            _ => Err(Error::shape(
                "BatchNorm1d input",
                format!("(B, {c}) or (B, {c}, L) (lengths need the 3-dimensional form)"),
                input.shape(),
            )),
        }
    }

    /// Normalisation of channels-last input `(B, L, C)` whose sample `s` has
    /// `lengths[s]` valid positions (`None`: all); padded outputs are zero.
    pub fn forward_channels_last(
        &self,
        input: &ArrayD<f32>,
        lengths: Option<&[usize]>,
        tape: &mut Tape,
    ) -> Result<ArrayD<f32>> {
        self.forward_cl(input, lengths, tape, None, None)
    }

    /// [`BatchNorm1d::forward_channels_last`] with the statistics of `group`'s batches
    /// together (every rank of the group calls it; see [`BatchNorm1d`]).
    pub fn forward_channels_last_in(
        &self,
        input: &ArrayD<f32>,
        lengths: Option<&[usize]>,
        tape: &mut Tape,
        group: &dyn Collective,
    ) -> Result<ArrayD<f32>> {
        self.forward_cl(input, lengths, tape, None, Some(group))
    }

    fn forward_cl(
        &self,
        input: &ArrayD<f32>,
        lengths: Option<&[usize]>,
        tape: &mut Tape,
        pytorch_shape: Option<Vec<usize>>,
        group: Option<&dyn Collective>,
    ) -> Result<ArrayD<f32>> {
        let c = self.weight.len();
        let [b, l, ch] = *input.shape() else {
            return Err(Error::shape(
                "BatchNorm1d input",
                format!("(B, L, {c})"),
                input.shape(),
            ));
        };
        if ch != c {
            return Err(Error::shape(
                "BatchNorm1d input",
                format!("(B, L, {c})"),
                input.shape(),
            ));
        }
        check_lengths("BatchNorm1d", lengths, b, l)?;
        let x = input.as_standard_layout();
        let x = x.as_slice().expect("standard layout");
        let valid = |s: usize| lengths.map_or(l, |ls| ls[s]);
        let rows = |s: usize| x[s * l * c..(s * l + valid(s)) * c].chunks_exact(c);
        let training = tape.is_training();
        let sum_over_group = |buf: &mut [f64]| group.map_or(Ok(()), |g| g.all_reduce_sum_f64(buf));
        let mut count: usize = (0..b).map(valid).sum();
        let (mean, var, unbiased) = if training {
            // The channel sums, then the count.
            let mut sum = vec![0.0f64; c + 1];
            for s in 0..b {
                for row in rows(s) {
                    sum.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
                }
            }
            sum[c] = count as f64;
            sum_over_group(&mut sum)?;
            count = sum[c] as usize;
            if count < 2 {
                return Err(Error::Invalid(format!(
                    "BatchNorm1d in training needs more than one value per channel, found {count}"
                )));
            }
            let mean: Vec<f64> = sum[..c].iter().map(|v| v / count as f64).collect();
            let mut sq = vec![0.0f64; c];
            for s in 0..b {
                for row in rows(s) {
                    for ((a, &v), m) in sq.iter_mut().zip(row).zip(&mean) {
                        *a += (v as f64 - m).powi(2);
                    }
                }
            }
            sum_over_group(&mut sq)?;
            (
                mean.iter().map(|&m| m as f32).collect::<Vec<f32>>(),
                sq.iter()
                    .map(|v| (v / count as f64) as f32)
                    .collect::<Vec<f32>>(),
                sq.iter()
                    .map(|v| (v / (count - 1) as f64) as f32)
                    .collect::<Vec<f32>>(),
            )
        } else {
            let (m, v) = (&self.running_mean.value, &self.running_var.value);
            (m.clone(), v.clone(), Vec::new())
        };
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let mut hat = vec![0.0; x.len()];
        let mut out = vec![0.0; x.len()];
        for s in 0..b {
            let span = s * l * c..(s * l + valid(s)) * c;
            let (hat, out) = (&mut hat[span.clone()], &mut out[span.clone()]);
            for ((row, h), o) in x[span]
                .chunks_exact(c)
                .zip(hat.chunks_exact_mut(c))
                .zip(out.chunks_exact_mut(c))
            {
                for k in 0..c {
                    h[k] = (row[k] - mean[k]) * inv_std[k];
                    o[k] = self.weight.value[k] * h[k] + self.bias.value[k];
                }
            }
        }
        if training {
            let scale = (0..c).map(|k| self.weight.value[k] * inv_std[k]).collect();
            tape.keep(NormRecord {
                sizes: (b, l, c),
                pytorch_shape,
                hat,
                scale,
                lengths: lengths.map(<[usize]>::to_vec),
                batch: Some((mean, unbiased, count)),
            });
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&[b, l, c]), out).expect("shape"))
    }

    /// The backward pass of [`BatchNorm1d::forward_channels_last`]: `(B, L, C)` gradients.
    pub fn backward_channels_last(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        self.backward_cl(tape.record("BatchNorm1d")?, grad_output, grads, None)
    }

    /// The backward pass of [`BatchNorm1d::forward_channels_last_in`] (every rank of
    /// `group` calls it): the parameter gradients of this rank's rows are added to
    /// `grads`, the input gradient takes the whole group's batch into account.
    pub fn backward_channels_last_in(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
        group: &dyn Collective,
    ) -> Result<ArrayD<f32>> {
        self.backward_cl(tape.record("BatchNorm1d")?, grad_output, grads, Some(group))
    }

    fn backward_cl(
        &self,
        record: &NormRecord,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
        group: Option<&dyn Collective>,
    ) -> Result<ArrayD<f32>> {
        let (b, l, c) = record.sizes;
        if grad_output.shape() != [b, l, c] {
            return Err(Error::shape(
                "BatchNorm1d grad_output",
                format!("[{b}, {l}, {c}]"),
                grad_output.shape(),
            ));
        }
        let (weight_grad, bias_grad) = (grads.next(c), grads.next(c));
        let g = grad_output.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        let valid = |s: usize| record.lengths.as_ref().map_or(l, |ls| ls[s]);
        let (mut sdy, mut sdyx) = (vec![0.0f64; c], vec![0.0f64; c]);
        for s in 0..b {
            let span = s * l * c..(s * l + valid(s)) * c;
            for (gr, hr) in g[span.clone()]
                .chunks_exact(c)
                .zip(record.hat[span].chunks_exact(c))
            {
                for k in 0..c {
                    sdy[k] += gr[k] as f64;
                    sdyx[k] += gr[k] as f64 * hr[k] as f64;
                }
            }
        }
        for k in 0..c {
            weight_grad[k] += sdyx[k] as f32;
            bias_grad[k] += sdy[k] as f32;
        }
        if let Some(group) = group {
            let mut both = [sdy, sdyx].concat();
            group.all_reduce_sum_f64(&mut both)?;
            sdyx = both.split_off(c);
            sdy = both;
        }
        let n = record.batch.as_ref().map_or(0, |(_, _, n)| *n).max(1) as f64;
        let mean_dy: Vec<f32> = sdy.iter().map(|v| (v / n) as f32).collect();
        let mean_dyx: Vec<f32> = sdyx.iter().map(|v| (v / n) as f32).collect();
        let mut dx = vec![0.0; g.len()];
        for s in 0..b {
            let span = s * l * c..(s * l + valid(s)) * c;
            for ((d, gr), hr) in dx[span.clone()]
                .chunks_exact_mut(c)
                .zip(g[span.clone()].chunks_exact(c))
                .zip(record.hat[span].chunks_exact(c))
            {
                for k in 0..c {
                    d[k] = record.scale[k] * (gr[k] - mean_dy[k] - hr[k] * mean_dyx[k]);
                }
            }
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&[b, l, c]), dx).expect("shape"))
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
        let record: &NormRecord = tape.record("BatchNorm1d")?;
        let shape = record.pytorch_shape.as_deref().unwrap_or(&[]);
        if grad_output.shape() != shape {
            return Err(Error::shape(
                "BatchNorm1d grad_output",
                format!("{shape:?}"),
                grad_output.shape(),
            ));
        }
        let (b, l, c) = record.sizes;
        let g = if shape.len() == 2 {
            grad_output
                .clone()
                .into_shape_with_order(IxDyn(&[b, l, c]))
                .expect("shape")
        } else {
            swap_last_two(grad_output)
        };
        let dx = self.backward_cl(record, &g, grads, None)?;
        Ok(if shape.len() == 2 {
            dx.into_shape_with_order(IxDyn(shape)).expect("shape")
        } else {
            swap_last_two(&dx)
        })
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
