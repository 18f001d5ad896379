//! Learning-rate schedules: `StepLR`, `CosineAnnealingLR`, `ReduceLROnPlateau`.
//!
//! As in PyTorch, call the schedule's `step` after `optimizer.step()`; it sets the
//! learning rate used by the next optimizer step.

use super::Optimizer;

/// `StepLR(step_size, gamma=0.1)`: multiplies the lr by `gamma` every `step_size` steps.
#[derive(Debug, Clone)]
pub struct StepLr {
    /// Period of the decay.
    pub step_size: u64,
    /// Multiplicative factor.
    pub gamma: f64,
    last_epoch: u64,
}

impl StepLr {
    /// A new schedule.
    pub fn new(step_size: u64, gamma: f64) -> Self {
        StepLr {
            step_size,
            gamma,
            last_epoch: 0,
        }
    }

    /// Advances one epoch.
    pub fn step(&mut self, opt: &mut dyn Optimizer) {
        self.last_epoch += 1;
        if self.step_size > 0 && self.last_epoch.is_multiple_of(self.step_size) {
            opt.set_lr(opt.lr() * self.gamma);
        }
    }
}

/// `CosineAnnealingLR(T_max, eta_min=0)`, PyTorch's recursive form (keeps following the
/// cosine past `T_max`).
#[derive(Debug, Clone)]
pub struct CosineAnnealingLr {
    /// Half period.
    pub t_max: u64,
    /// Minimum learning rate.
    pub eta_min: f64,
    base_lr: f64,
    last_epoch: u64,
}

impl CosineAnnealingLr {
    /// A new schedule starting from the optimizer's current lr.
    pub fn new(opt: &dyn Optimizer, t_max: u64, eta_min: f64) -> Self {
        CosineAnnealingLr {
            t_max,
            eta_min,
            base_lr: opt.lr(),
            last_epoch: 0,
        }
    }

    /// Advances one epoch.
    pub fn step(&mut self, opt: &mut dyn Optimizer) {
        use std::f64::consts::PI;
        self.last_epoch += 1;
        let (e, t) = (self.last_epoch as f64, self.t_max as f64);
        let lr = opt.lr();
        let new = if (self.last_epoch as i64 - 1 - self.t_max as i64)
            .rem_euclid(2 * self.t_max as i64)
            == 0
        {
            lr + (self.base_lr - self.eta_min) * (1.0 - (PI / t).cos()) / 2.0
        } else {
            (1.0 + (PI * e / t).cos()) / (1.0 + (PI * (e - 1.0) / t).cos()) * (lr - self.eta_min)
                + self.eta_min
        };
        opt.set_lr(new);
    }
}

/// Whether a lower or a higher metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlateauMode {
    /// Lower is better (loss).
    Min,
    /// Higher is better (accuracy).
    Max,
}

/// `ReduceLROnPlateau(mode='min', factor=0.1, patience=10, threshold=1e-4,
/// threshold_mode='rel', cooldown=0, min_lr=0, eps=1e-8)`.
#[derive(Debug, Clone)]
pub struct ReduceLrOnPlateau {
    /// Min or max.
    pub mode: PlateauMode,
    /// Factor applied to the lr on a plateau.
    pub factor: f64,
    /// Bad epochs tolerated before reducing.
    pub patience: u64,
    /// Relative improvement needed to count as better.
    pub threshold: f64,
    /// Epochs to wait after a reduction.
    pub cooldown: u64,
    /// Lower bound of the lr.
    pub min_lr: f64,
    /// Reductions smaller than this are ignored.
    pub eps: f64,
    best: f64,
    num_bad: u64,
    cooldown_counter: u64,
}

impl ReduceLrOnPlateau {
    /// With PyTorch's defaults for `mode`.
    pub fn new(mode: PlateauMode) -> Self {
        ReduceLrOnPlateau {
            mode,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
            best: match mode {
                PlateauMode::Min => f64::INFINITY,
                PlateauMode::Max => f64::NEG_INFINITY,
            },
            num_bad: 0,
            cooldown_counter: 0,
        }
    }

    /// Sets `factor`.
    pub fn factor(mut self, f: f64) -> Self {
        self.factor = f;
        self
    }
    /// Sets `patience`.
    pub fn patience(mut self, p: u64) -> Self {
        self.patience = p;
        self
    }

    fn is_better(&self, a: f64) -> bool {
        match self.mode {
            PlateauMode::Min => a < self.best * (1.0 - self.threshold),
            PlateauMode::Max => a > self.best * (1.0 + self.threshold),
        }
    }

    /// Records an epoch's metric and reduces the lr after `patience` bad epochs.
    pub fn step(&mut self, metric: f64, opt: &mut dyn Optimizer) {
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad = 0;
        } else {
            self.num_bad += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad = 0;
        }
        if self.num_bad > self.patience {
            let old = opt.lr();
            let new = (old * self.factor).max(self.min_lr);
            if old - new > self.eps {
                opt.set_lr(new);
            }
            self.cooldown_counter = self.cooldown;
            self.num_bad = 0;
        }
    }
}
