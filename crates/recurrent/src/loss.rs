//! Losses with PyTorch's definitions and reductions: [`MseLoss`], [`L1Loss`], [`HuberLoss`],
//! [`CrossEntropyLoss`], [`BceWithLogitsLoss`].
//!
//! Each `forward` returns the loss and its gradient with respect to the input (the gradient
//! of `loss.sum()` for `Reduction::None`), ready for a model's `backward`.

use crate::error::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// How element losses are combined, as PyTorch's `reduction` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Average (PyTorch's default).
    #[default]
    Mean,
    /// Sum.
    Sum,
    /// One loss per element.
    None,
}

/// A loss value and the gradient of (the sum of) it with respect to the input.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// 0-dimensional for `Mean`/`Sum`; the element losses for `None`.
    pub value: ArrayD<f32>,
    /// Same shape as the input.
    pub grad: ArrayD<f32>,
}

impl LossOutput {
    /// The loss as a number (the sum, for `Reduction::None`).
    pub fn item(&self) -> f32 {
        self.value.sum()
    }
}

fn same_shape(input: &ArrayD<f32>, target: &ArrayD<f32>) -> Result<()> {
    if input.shape() != target.shape() {
        return Err(Error::shape(
            "target",
            format!("{:?} (the input's shape)", input.shape()),
            target.shape(),
        ));
    }
    Ok(())
}

/// Applies `f(input, target) -> (loss, dloss/dinput)` element-wise and reduces.
fn elementwise(
    input: &ArrayD<f32>,
    target: &ArrayD<f32>,
    reduction: Reduction,
    f: impl Fn(f64, f64) -> (f64, f64),
) -> Result<LossOutput> {
    same_shape(input, target)?;
    let n = input.len().max(1) as f64;
    let scale = if reduction == Reduction::Mean {
        1.0 / n
    } else {
        1.0
    };
    let mut total = 0.0;
    let mut values = Vec::with_capacity(input.len());
    let mut grads = Vec::with_capacity(input.len());
    for (&x, &y) in input.iter().zip(target.iter()) {
        let (l, g) = f(x as f64, y as f64);
        total += l;
        values.push(l as f32);
        grads.push((g * scale) as f32);
    }
    let grad = ArrayD::from_shape_vec(IxDyn(input.shape()), grads).expect("shape");
    let value = match reduction {
        Reduction::None => ArrayD::from_shape_vec(IxDyn(input.shape()), values).expect("shape"),
        _ => ArrayD::from_elem(IxDyn(&[]), (total * scale) as f32),
    };
    Ok(LossOutput { value, grad })
}

/// `nn.MSELoss`: `(x - y)^2`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MseLoss {
    /// Reduction.
    pub reduction: Reduction,
}

impl MseLoss {
    /// Loss and gradient; `target` has the input's shape.
    pub fn forward(&self, input: &ArrayD<f32>, target: &ArrayD<f32>) -> Result<LossOutput> {
        elementwise(input, target, self.reduction, |x, y| {
            ((x - y).powi(2), 2.0 * (x - y))
        })
    }
}

/// `nn.L1Loss`: `|x - y|` (gradient 0 where `x == y`, as PyTorch).
#[derive(Debug, Clone, Copy, Default)]
pub struct L1Loss {
    /// Reduction.
    pub reduction: Reduction,
}

impl L1Loss {
    /// Loss and gradient; `target` has the input's shape.
    pub fn forward(&self, input: &ArrayD<f32>, target: &ArrayD<f32>) -> Result<LossOutput> {
        elementwise(input, target, self.reduction, |x, y| {
            let d = x - y;
            (
                d.abs(),
                if d > 0.0 {
                    1.0
                } else if d < 0.0 {
                    -1.0
                } else {
                    0.0
                },
            )
        })
    }
}

/// `nn.HuberLoss(delta)`: `0.5 d^2` if `|d| < delta`, else `delta (|d| - delta/2)`.
#[derive(Debug, Clone, Copy)]
pub struct HuberLoss {
    /// Reduction.
    pub reduction: Reduction,
    /// Threshold between the quadratic and linear parts (PyTorch default 1.0).
    pub delta: f32,
}

impl Default for HuberLoss {
    fn default() -> Self {
        HuberLoss {
            reduction: Reduction::Mean,
            delta: 1.0,
        }
    }
}

impl HuberLoss {
    /// Loss and gradient; `target` has the input's shape.
    pub fn forward(&self, input: &ArrayD<f32>, target: &ArrayD<f32>) -> Result<LossOutput> {
        let delta = self.delta as f64;
        elementwise(input, target, self.reduction, |x, y| {
            let d = x - y;
            if d.abs() < delta {
                (0.5 * d * d, d)
            } else {
                (delta * (d.abs() - 0.5 * delta), delta * d.signum())
            }
        })
    }
}

/// `nn.BCEWithLogitsLoss`: binary cross-entropy on logits, computed stably.
#[derive(Debug, Clone, Copy, Default)]
pub struct BceWithLogitsLoss {
    /// Reduction.
    pub reduction: Reduction,
}

impl BceWithLogitsLoss {
    /// Loss and gradient; `target` (probabilities in `[0, 1]`) has the input's shape.
    pub fn forward(&self, input: &ArrayD<f32>, target: &ArrayD<f32>) -> Result<LossOutput> {
        elementwise(input, target, self.reduction, |x, y| {
            let loss = x.max(0.0) - x * y + (-x.abs()).exp().ln_1p();
            (loss, 1.0 / (1.0 + (-x).exp()) - y)
        })
    }
}

/// `nn.CrossEntropyLoss` with class-index targets, `ignore_index` and `label_smoothing`.
///
/// Input `(N, C)` or `(N, C, d1, ...)` logits; target `(N)` or `(N, d1, ...)` class indices.
#[derive(Debug, Clone, Copy)]
pub struct CrossEntropyLoss {
    /// Reduction (`Mean` divides by the number of targets that are not ignored).
    pub reduction: Reduction,
    /// Targets equal to this contribute nothing (PyTorch default -100).
    pub ignore_index: i64,
    /// Mixes the one-hot target with the uniform distribution (PyTorch default 0).
    pub label_smoothing: f32,
}

impl Default for CrossEntropyLoss {
    fn default() -> Self {
        CrossEntropyLoss {
            reduction: Reduction::Mean,
            ignore_index: -100,
            label_smoothing: 0.0,
        }
    }
}

impl CrossEntropyLoss {
    /// Loss and gradient with respect to the logits.
    pub fn forward(
        &self,
        input: &ArrayD<f32>,
        target: &[i64],
        target_shape: &[usize],
    ) -> Result<LossOutput> {
        let shape = input.shape();
        if shape.len() < 2 {
            return Err(Error::shape(
                "CrossEntropyLoss input",
                "(N, C) or (N, C, d1, ...)",
                shape,
            ));
        }
        let (n, c) = (shape[0], shape[1]);
        let inner: usize = shape[2..].iter().product();
        let mut expected_target = vec![n];
        expected_target.extend_from_slice(&shape[2..]);
        if target_shape != expected_target.as_slice() || target.len() != n * inner {
            return Err(Error::shape(
                "target",
                format!("{expected_target:?}"),
                target_shape,
            ));
        }
        let mut counted = 0usize;
        for (at, &t) in target.iter().enumerate() {
            if t == self.ignore_index {
                continue;
            }
            if t < 0 || t as usize >= c {
                return Err(Error::Invalid(format!(
                    "CrossEntropyLoss target {t} at position {at} is not a class index in 0..{c}"
                )));
            }
            counted += 1;
        }
        let scale = match self.reduction {
            Reduction::Mean => 1.0 / counted as f64,
            _ => 1.0,
        };
        let x = input.as_standard_layout();
        let x = x.as_slice().expect("standard");
        let mut grad = vec![0.0f32; x.len()];
        let mut values = vec![0.0f64; n * inner];
        // Samples are independent: each takes its logits, gradient and loss slots.
        let per_sample = (c * inner).max(1);
        grad.par_chunks_mut(per_sample)
            .zip(x.par_chunks(per_sample))
            .zip(values.par_chunks_mut(inner.max(1)))
            .zip(target.par_chunks(inner.max(1)))
            .for_each_init(
                || vec![0.0f64; c],
                |exps, (((grad, x), values), target)| {
                    for s in 0..inner {
                        if target[s] != self.ignore_index {
                            let at = |k: usize| k * inner + s;
                            let t = target[s] as usize;
                            values[s] = self.sample(|k| x[at(k)] as f64, t, exps, scale);
                            for (k, p) in exps.iter().enumerate() {
                                grad[at(k)] = *p as f32;
                            }
                        }
                    }
                },
            );
        let value = match self.reduction {
            Reduction::None => ArrayD::from_shape_vec(
                IxDyn(target_shape),
                values.iter().map(|&v| v as f32).collect(),
            )
            .expect("shape"),
            _ => ArrayD::from_elem(IxDyn(&[]), (values.iter().sum::<f64>() * scale) as f32),
        };
        let grad = ArrayD::from_shape_vec(IxDyn(shape), grad).expect("shape");
        Ok(LossOutput { value, grad })
    }

    /// The loss of one sample with logits `logit(0..C)` and class `t`; leaves the
    /// gradient of `scale * loss` with respect to each logit in `grads` (`C` entries).
    fn sample(&self, logit: impl Fn(usize) -> f64, t: usize, grads: &mut [f64], scale: f64) -> f64 {
        let c = grads.len();
        let eps = self.label_smoothing as f64;
        let max = (0..c).map(&logit).fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for (k, e) in grads.iter_mut().enumerate() {
            *e = (logit(k) - max).exp();
            sum += *e;
        }
        let lse = max + sum.ln();
        let nll = lse - logit(t);
        let smooth = if eps > 0.0 {
            (0..c).map(|k| lse - logit(k)).sum::<f64>() / c as f64
        } else {
            0.0
        };
        for (k, g) in grads.iter_mut().enumerate() {
            let onehot = if k == t { 1.0 } else { 0.0 };
            *g = (*g / sum - (1.0 - eps) * onehot - eps / c as f64) * scale;
        }
        (1.0 - eps) * nll + eps * smooth
    }
}
