//! Optimizers with PyTorch's defaults and update rules ([`Sgd`], [`Adam`], [`AdamW`],
//! [`RmsProp`], [`Adagrad`], [`Adadelta`]), gradient clipping, learning-rate schedules, and
//! optimizer state that is saved and restored with the model.
//!
//! Parameters are passed to [`Optimizer::step`] as the `(name, &mut Param)` list of
//! [`crate::Parameters::named_parameters_mut`]; per-parameter state is keyed by name.

mod adaptive;
mod clip;
mod schedule;
mod sgd;
mod state;

pub use adaptive::{Adadelta, Adagrad, Adam, AdamW, RmsProp};
pub use clip::{clip_grad_norm, clip_grad_value};
pub use schedule::{CosineAnnealingLr, PlateauMode, ReduceLrOnPlateau, StepLr};
pub use sgd::Sgd;
pub use state::OptimizerState;

use crate::error::Result;
use crate::param::Param;

/// One optimisation algorithm.
pub trait Optimizer {
    /// Updates every parameter from its accumulated gradient (`optimizer.step()`).
    fn step(&mut self, params: &mut [(String, &mut Param)]);
    /// Current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (used by schedules).
    fn set_lr(&mut self, lr: f64);
    /// Hyper-parameters and per-parameter buffers, for checkpoints.
    fn state(&self) -> OptimizerState;
    /// Restores what [`Optimizer::state`] returned.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// `g + weight_decay * p` (PyTorch's coupled weight decay), in f32 as PyTorch.
pub(crate) fn decayed_grad(p: &Param, weight_decay: f64) -> Vec<f32> {
    let wd = weight_decay as f32;
    if wd == 0.0 {
        return p.grad.clone();
    }
    p.grad
        .iter()
        .zip(&p.value)
        .map(|(g, v)| g + wd * v)
        .collect()
}

/// PyTorch's `lerp_(end, weight)` for `weight < 0.5`: `a + weight * (end - a)`.
#[inline]
pub(crate) fn lerp(a: f32, end: f32, weight: f32) -> f32 {
    if weight < 0.5 {
        a + weight * (end - a)
    } else {
        end - (end - a) * (1.0 - weight)
    }
}
