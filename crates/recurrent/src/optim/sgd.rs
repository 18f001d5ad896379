//! `torch.optim.SGD`.

use super::{decayed_grad, Optimizer, OptimizerState};
use crate::error::Result;
use crate::param::Param;
use std::collections::BTreeMap;

/// `torch.optim.SGD(lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False)`.
#[derive(Debug, Clone)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    buffers: BTreeMap<String, Vec<f32>>,
}

impl Sgd {
    /// SGD with learning rate `lr` and PyTorch's other defaults.
    pub fn new(lr: f64) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            buffers: BTreeMap::new(),
        }
    }
    /// Sets `momentum`.
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
    /// Sets `dampening`.
    pub fn dampening(mut self, d: f64) -> Self {
        self.dampening = d;
        self
    }
    /// Sets `weight_decay`.
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }
    /// Sets `nesterov`.
    pub fn nesterov(mut self, on: bool) -> Self {
        self.nesterov = on;
        self
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut [(String, &mut Param)]) {
        let (lr, m, damp) = (self.lr as f32, self.momentum as f32, self.dampening as f32);
        for (name, p) in params.iter_mut() {
            let mut d = decayed_grad(p, self.weight_decay);
            if m != 0.0 {
                match self.buffers.get_mut(name.as_str()) {
                    None => {
                        self.buffers.insert(name.clone(), d.clone());
                    }
                    Some(buf) => buf
                        .iter_mut()
                        .zip(&d)
                        .for_each(|(b, g)| *b = *b * m + (1.0 - damp) * g),
                }
                let buf = &self.buffers[name.as_str()];
                if self.nesterov {
                    d.iter_mut().zip(buf).for_each(|(g, b)| *g += m * b);
                } else {
                    d.copy_from_slice(buf);
                }
            }
            p.value.iter_mut().zip(&d).for_each(|(v, g)| *v += -lr * g);
        }
    }

    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            kind: "SGD".into(),
            hyper: serde_json::json!({"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov}),
            buffers: self
                .buffers
                .iter()
                .map(|(k, v)| (format!("{k}.momentum_buffer"), v.clone()))
                .collect(),
            steps: BTreeMap::new(),
        }
    }

    fn load_state(&mut self, s: &OptimizerState) -> Result<()> {
        s.expect_kind("SGD")?;
        self.lr = s.hyper_f64("lr")?;
        self.momentum = s.hyper_f64("momentum")?;
        self.dampening = s.hyper_f64("dampening")?;
        self.weight_decay = s.hyper_f64("weight_decay")?;
        self.nesterov = s.hyper["nesterov"].as_bool().unwrap_or(false);
        self.buffers = s
            .buffers
            .iter()
            .filter_map(|(k, v)| {
                k.strip_suffix(".momentum_buffer")
                    .map(|n| (n.to_string(), v.clone()))
            })
            .collect();
        Ok(())
    }
}
