//! Optimizers with per-element adaptive steps: `Adam`, `AdamW`, `RMSprop`, `Adagrad`,
//! `Adadelta`, each following PyTorch's single-tensor implementation operation by operation.

use super::{decayed_grad, lerp, Optimizer, OptimizerState};
use crate::error::Result;
use crate::param::Param;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Per-parameter buffers (`"{param}.{buffer}"`) and step counts.
#[derive(Debug, Clone, Default)]
struct Slots {
    buffers: BTreeMap<String, Vec<f32>>,
    steps: BTreeMap<String, u64>,
}

impl Slots {
    /// Takes buffer `slot` of `param` out (initialised to `init`), to be put back with `put`.
    fn take(&mut self, param: &str, slot: &str, len: usize, init: f32) -> Vec<f32> {
        self.buffers
            .remove(&format!("{param}.{slot}"))
            .unwrap_or_else(|| vec![init; len])
    }
    fn put(&mut self, param: &str, slot: &str, v: Vec<f32>) {
        self.buffers.insert(format!("{param}.{slot}"), v);
    }
    /// Increments and returns the step count of `param`.
    fn tick(&mut self, param: &str) -> u64 {
        let s = self.steps.entry(param.to_string()).or_insert(0);
        *s += 1;
        *s
    }
    fn state(&self, kind: &str, hyper: serde_json::Value) -> OptimizerState {
        OptimizerState {
            kind: kind.into(),
            hyper,
            buffers: self.buffers.clone(),
            steps: self.steps.clone(),
        }
    }
    fn load(s: &OptimizerState) -> Self {
        Slots {
            buffers: s.buffers.clone(),
            steps: s.steps.clone(),
        }
    }
}

/// Shared body of Adam and AdamW.
#[derive(Debug, Clone)]
struct AdamCore {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    amsgrad: bool,
    decoupled: bool,
    slots: Slots,
}

/// Elements per parallel piece of an element-wise optimizer update.
const UPDATE_CHUNK: usize = 1 << 15;

/// The per-step constants of one Adam update of one tensor.
#[derive(Clone, Copy)]
struct AdamStep {
    /// `1 - beta1`, `beta2` and `1 - beta2`, each rounded from f64 as PyTorch's scalars.
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    /// L2 penalty added to the gradient (0 for decoupled decay, applied beforehand).
    weight_decay: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
}

impl AdamStep {
    /// Updates one piece of a tensor: `m`, `v` (and `vmax` under AMSGrad), then the values.
    fn apply(
        &self,
        value: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        mut vmax: Option<&mut [f32]>,
    ) {
        for i in 0..value.len() {
            let g = if self.weight_decay == 0.0 {
                grad[i]
            } else {
                grad[i] + self.weight_decay * value[i]
            };
            m[i] = lerp(m[i], g, self.one_minus_b1);
            v[i] = v[i] * self.b2 + self.one_minus_b2 * g * g;
            let second = match vmax.as_deref_mut() {
                Some(vmax) => {
                    vmax[i] = vmax[i].max(v[i]);
                    vmax[i]
                }
                None => v[i],
            };
            let denom = second.sqrt() / self.bc2_sqrt + self.eps;
            value[i] += -self.step_size * (m[i] / denom);
        }
    }
}

impl AdamCore {
    fn step(&mut self, params: &mut [(String, &mut Param)]) {
        let (b1, b2) = self.betas;
        for (name, p) in params.iter_mut() {
            let step = self.slots.tick(name);
            if self.decoupled {
                let keep = (1.0 - self.lr * self.weight_decay) as f32;
                p.value.iter_mut().for_each(|v| *v *= keep);
            }
            let n = p.len();
            let mut m = self.slots.take(name, "exp_avg", n, 0.0);
            let mut v = self.slots.take(name, "exp_avg_sq", n, 0.0);
            let mut vmax = self
                .amsgrad
                .then(|| self.slots.take(name, "max_exp_avg_sq", n, 0.0));
            let update = AdamStep {
                one_minus_b1: (1.0 - b1) as f32,
                b2: b2 as f32,
                one_minus_b2: (1.0 - b2) as f32,
                weight_decay: if self.decoupled {
                    0.0
                } else {
                    self.weight_decay as f32
                },
                step_size: (self.lr / (1.0 - b1.powi(step as i32))) as f32,
                bc2_sqrt: (1.0 - b2.powi(step as i32)).sqrt() as f32,
                eps: self.eps as f32,
            };
            let vmax_pieces: Vec<Option<&mut [f32]>> = match vmax.as_mut() {
                Some(x) => x.chunks_mut(UPDATE_CHUNK).map(Some).collect(),
                None => (0..n.div_ceil(UPDATE_CHUNK)).map(|_| None).collect(),
            };
            p.value
                .par_chunks_mut(UPDATE_CHUNK)
                .zip(p.grad.par_chunks(UPDATE_CHUNK))
                .zip(m.par_chunks_mut(UPDATE_CHUNK))
                .zip(v.par_chunks_mut(UPDATE_CHUNK))
                .zip(vmax_pieces)
                .for_each(|((((value, grad), m), v), vmax)| update.apply(value, grad, m, v, vmax));
            if let Some(vmax) = vmax {
                self.slots.put(name, "max_exp_avg_sq", vmax);
            }
            self.slots.put(name, "exp_avg", m);
            self.slots.put(name, "exp_avg_sq", v);
        }
    }

    fn hyper(&self) -> serde_json::Value {
        serde_json::json!({"lr": self.lr, "betas": [self.betas.0, self.betas.1], "eps": self.eps,
            "weight_decay": self.weight_decay, "amsgrad": self.amsgrad})
    }

    fn load(&mut self, s: &OptimizerState, kind: &str) -> Result<()> {
        s.expect_kind(kind)?;
        self.lr = s.hyper_f64("lr")?;
        self.eps = s.hyper_f64("eps")?;
        self.weight_decay = s.hyper_f64("weight_decay")?;
        self.betas = (
            s.hyper["betas"][0].as_f64().unwrap_or(self.betas.0),
            s.hyper["betas"][1].as_f64().unwrap_or(self.betas.1),
        );
        self.amsgrad = s.hyper["amsgrad"].as_bool().unwrap_or(false);
        self.slots = Slots::load(s);
        Ok(())
    }
}

macro_rules! adam_like {
    ($name:ident, $kind:literal, $decoupled:expr, $wd:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name(AdamCore);

        impl $name {
            /// With learning rate `lr` and PyTorch's other defaults.
            pub fn new(lr: f64) -> Self {
                $name(AdamCore {
                    lr,
                    betas: (0.9, 0.999),
                    eps: 1e-8,
                    weight_decay: $wd,
                    amsgrad: false,
                    decoupled: $decoupled,
                    slots: Slots::default(),
                })
            }
            /// Sets `betas`.
            pub fn betas(mut self, b1: f64, b2: f64) -> Self {
                self.0.betas = (b1, b2);
                self
            }
            /// Sets `eps`.
            pub fn eps(mut self, eps: f64) -> Self {
                self.0.eps = eps;
                self
            }
            /// Sets `weight_decay`.
            pub fn weight_decay(mut self, wd: f64) -> Self {
                self.0.weight_decay = wd;
                self
            }
            /// Sets `amsgrad`.
            pub fn amsgrad(mut self, on: bool) -> Self {
                self.0.amsgrad = on;
                self
            }
        }

        impl Optimizer for $name {
            fn step(&mut self, params: &mut [(String, &mut Param)]) {
                self.0.step(params)
            }
            fn lr(&self) -> f64 {
                self.0.lr
            }
            fn set_lr(&mut self, lr: f64) {
                self.0.lr = lr;
            }
            fn state(&self) -> OptimizerState {
                self.0.slots.state($kind, self.0.hyper())
            }
            fn load_state(&mut self, s: &OptimizerState) -> Result<()> {
                self.0.load(s, $kind)
            }
        }
    };
}

adam_like!(
    Adam,
    "Adam",
    false,
    0.0,
    "`torch.optim.Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False)`."
);
adam_like!(
    AdamW,
    "AdamW",
    true,
    1e-2,
    "`torch.optim.AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False)`: decoupled weight decay."
);

/// `torch.optim.RMSprop(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False)`.
#[derive(Debug, Clone)]
pub struct RmsProp {
    /// Learning rate.
    pub lr: f64,
    /// Smoothing constant.
    pub alpha: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// Normalise by the estimated variance instead of the second moment.
    pub centered: bool,
    slots: Slots,
}

impl RmsProp {
    /// With learning rate `lr` and PyTorch's other defaults.
    pub fn new(lr: f64) -> Self {
        RmsProp {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            slots: Slots::default(),
        }
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self, params: &mut [(String, &mut Param)]) {
        let (alpha, eps, lr, mom) = (
            self.alpha as f32,
            self.eps as f32,
            self.lr as f32,
            self.momentum as f32,
        );
        for (name, p) in params.iter_mut() {
            self.slots.tick(name);
            let grad = decayed_grad(p, self.weight_decay);
            let n = grad.len();
            let mut sq = self.slots.take(name, "square_avg", n, 0.0);
            sq.iter_mut()
                .zip(&grad)
                .for_each(|(s, g)| *s = *s * alpha + (1.0 - alpha) * g * g);
            let avg: Vec<f32> = if self.centered {
                let mut ga = self.slots.take(name, "grad_avg", n, 0.0);
                ga.iter_mut()
                    .zip(&grad)
                    .for_each(|(a, g)| *a = lerp(*a, *g, 1.0 - alpha));
                let avg = sq
                    .iter()
                    .zip(&ga)
                    .map(|(s, a)| (s - a * a).sqrt() + eps)
                    .collect();
                self.slots.put(name, "grad_avg", ga);
                avg
            } else {
                sq.iter().map(|s| s.sqrt() + eps).collect()
            };
            if mom > 0.0 {
                let mut buf = self.slots.take(name, "momentum_buffer", n, 0.0);
                for i in 0..n {
                    buf[i] = buf[i] * mom + grad[i] / avg[i];
                    p.value[i] += -lr * buf[i];
                }
                self.slots.put(name, "momentum_buffer", buf);
            } else {
                for i in 0..n {
                    p.value[i] += -lr * (grad[i] / avg[i]);
                }
            }
            self.slots.put(name, "square_avg", sq);
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn state(&self) -> OptimizerState {
        self.slots.state(
            "RMSprop",
            serde_json::json!({"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay,
                "momentum": self.momentum, "centered": self.centered}),
        )
    }
    fn load_state(&mut self, s: &OptimizerState) -> Result<()> {
        s.expect_kind("RMSprop")?;
        self.lr = s.hyper_f64("lr")?;
        self.alpha = s.hyper_f64("alpha")?;
        self.eps = s.hyper_f64("eps")?;
        self.weight_decay = s.hyper_f64("weight_decay")?;
        self.momentum = s.hyper_f64("momentum")?;
        self.centered = s.hyper["centered"].as_bool().unwrap_or(false);
        self.slots = Slots::load(s);
        Ok(())
    }
}

/// `torch.optim.Adagrad(lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10)`.
#[derive(Debug, Clone)]
pub struct Adagrad {
    /// Learning rate.
    pub lr: f64,
    /// Learning-rate decay per step.
    pub lr_decay: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    /// Initial value of the squared-gradient sum.
    pub initial_accumulator_value: f64,
    /// Added to the denominator.
    pub eps: f64,
    slots: Slots,
}

impl Adagrad {
    /// With learning rate `lr` and PyTorch's other defaults.
    pub fn new(lr: f64) -> Self {
        Adagrad {
            lr,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            slots: Slots::default(),
        }
    }
}

impl Optimizer for Adagrad {
    fn step(&mut self, params: &mut [(String, &mut Param)]) {
        for (name, p) in params.iter_mut() {
            let step = self.slots.tick(name);
            let grad = decayed_grad(p, self.weight_decay);
            let clr = (self.lr / (1.0 + (step - 1) as f64 * self.lr_decay)) as f32;
            let mut sum = self.slots.take(
                name,
                "sum",
                grad.len(),
                self.initial_accumulator_value as f32,
            );
            for i in 0..grad.len() {
                sum[i] += grad[i] * grad[i];
                let std = sum[i].sqrt() + self.eps as f32;
                p.value[i] += -clr * (grad[i] / std);
            }
            self.slots.put(name, "sum", sum);
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn state(&self) -> OptimizerState {
        self.slots.state(
            "Adagrad",
            serde_json::json!({"lr": self.lr, "lr_decay": self.lr_decay, "weight_decay": self.weight_decay,
                "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps}),
        )
    }
    fn load_state(&mut self, s: &OptimizerState) -> Result<()> {
        s.expect_kind("Adagrad")?;
        self.lr = s.hyper_f64("lr")?;
        self.lr_decay = s.hyper_f64("lr_decay")?;
        self.weight_decay = s.hyper_f64("weight_decay")?;
        self.initial_accumulator_value = s.hyper_f64("initial_accumulator_value")?;
        self.eps = s.hyper_f64("eps")?;
        self.slots = Slots::load(s);
        Ok(())
    }
}

/// `torch.optim.Adadelta(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0)`.
#[derive(Debug, Clone)]
pub struct Adadelta {
    /// Scale of the update.
    pub lr: f64,
    /// Smoothing constant.
    pub rho: f64,
    /// Added inside the square roots.
    pub eps: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    slots: Slots,
}

impl Adadelta {
    /// With learning rate `lr` and PyTorch's other defaults (PyTorch's default `lr` is 1.0).
    pub fn new(lr: f64) -> Self {
        Adadelta {
            lr,
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
            slots: Slots::default(),
        }
    }
}

impl Optimizer for Adadelta {
    fn step(&mut self, params: &mut [(String, &mut Param)]) {
        let (rho, eps, lr) = (self.rho as f32, self.eps as f32, self.lr as f32);
        for (name, p) in params.iter_mut() {
            self.slots.tick(name);
            let grad = decayed_grad(p, self.weight_decay);
            let n = grad.len();
            let mut sq = self.slots.take(name, "square_avg", n, 0.0);
            let mut acc = self.slots.take(name, "acc_delta", n, 0.0);
            for i in 0..n {
                sq[i] = sq[i] * rho + (1.0 - rho) * grad[i] * grad[i];
                let std = (sq[i] + eps).sqrt();
                let delta = (acc[i] + eps).sqrt() / std * grad[i];
                acc[i] = acc[i] * rho + (1.0 - rho) * delta * delta;
                p.value[i] += -lr * delta;
            }
            self.slots.put(name, "square_avg", sq);
            self.slots.put(name, "acc_delta", acc);
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn state(&self) -> OptimizerState {
        self.slots.state(
            "Adadelta",
            serde_json::json!({"lr": self.lr, "rho": self.rho, "eps": self.eps, "weight_decay": self.weight_decay}),
        )
    }
    fn load_state(&mut self, s: &OptimizerState) -> Result<()> {
        s.expect_kind("Adadelta")?;
        self.lr = s.hyper_f64("lr")?;
        self.rho = s.hyper_f64("rho")?;
        self.eps = s.hyper_f64("eps")?;
        self.weight_decay = s.hyper_f64("weight_decay")?;
        self.slots = Slots::load(s);
        Ok(())
    }
}
