//! [`Tape`]: what one forward pass keeps for its backward pass, and [`Taped`], a module
//! with its tape for the usual training loop.

use super::Module;
use crate::error::{Error, Result};
use crate::param::{accumulate_into_params, Buffer, Param, Parameters, Visitor};
use ndarray::ArrayD;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::any::Any;

/// The record of one forward pass through a module (and its parts).
///
/// A training tape carries the random stream dropout draws its masks from; an inference
/// tape records nothing. A tape passed to the next forward pass of the same module keeps
/// its buffers, so training steps do not allocate them again.
#[derive(Debug, Default)]
pub struct Tape {
    rng: Option<StdRng>,
    record: Option<Box<dyn Any + Send + Sync>>,
    parts: Vec<Tape>,
}

impl Tape {
    /// A tape for inference (`module.eval()` under `torch.no_grad()`): nothing is kept and
    /// dropout is off.
    pub fn inference() -> Self {
        Self::default()
    }

    /// A tape for training: what backward needs is kept, and dropout masks are drawn from
    /// a stream seeded by `seed`.
    pub fn training(seed: u64) -> Self {
        Tape {
            rng: Some(StdRng::seed_from_u64(seed)),
            ..Self::default()
        }
    }

    /// Whether this tape records (training mode).
    pub fn is_training(&self) -> bool {
        self.rng.is_some()
    }

    /// The random stream of a training tape.
    pub fn rng(&mut self) -> Option<&mut StdRng> {
        self.rng.as_mut()
    }

    /// The tapes of a module's `count` parts for this forward pass; on a training tape each
    /// gets its own stream, drawn from this one.
    pub fn parts(&mut self, count: usize) -> &mut [Tape] {
        self.parts.resize_with(count, Tape::default);
        for part in &mut self.parts {
            part.rng = self.rng.as_mut().map(|r| StdRng::seed_from_u64(r.gen()));
        }
        &mut self.parts
    }

    /// The tape of part `index` (empty if the forward pass made none).
    pub fn part(&self, index: usize) -> &Tape {
        static EMPTY: Tape = Tape {
            rng: None,
            record: None,
            parts: Vec::new(),
        };
        self.parts.get(index).unwrap_or(&EMPTY)
    }

    /// Keeps `record` for the backward pass (replacing the previous one).
    pub fn keep<T: Any + Send + Sync>(&mut self, record: T) {
        self.record = Some(Box::new(record));
    }

    /// Takes the previous record if it has type `T`, to reuse its buffers; else a default.
    pub fn take_previous<T: Any + Default>(&mut self) -> T {
        match self.record.take().map(|r| r.downcast::<T>()) {
            Some(Ok(r)) => *r,
            _ => T::default(),
        }
    }

    /// The record `block`'s forward pass kept, or an error naming `block` when there is
    /// none (no training-mode forward before this backward).
    pub fn record<T: Any>(&self, block: &str) -> Result<&T> {
        self.record
            .as_ref()
            .and_then(|r| r.downcast_ref::<T>())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{block}.backward needs the tape of a training-mode forward of the same block"
                ))
            })
    }
}

/// A module with the tape of its last forward pass, for the loop PyTorch users write:
/// `forward`, `zero_grad`, `backward` (parameter gradients accumulate in the module's own
/// parameters), optimizer step.
pub struct Taped<M> {
    /// The module.
    pub module: M,
    tape: Tape,
    training: bool,
    seed: u64,
    calls: u64,
}

impl<M: Module> Taped<M> {
    /// `module` in training mode; dropout masks of forward pass `k` are drawn from a
    /// stream seeded by `seed` and `k`.
    pub fn new(module: M, seed: u64) -> Self {
        Taped {
            module,
            tape: Tape::default(),
            training: true,
            seed,
            calls: 0,
        }
    }

    /// Training mode on (`module.train()`: tapes kept, dropout active) or off (`eval()`).
    pub fn set_training(&mut self, on: bool) {
        self.training = on;
    }

    /// The output of `input`; in training mode the tape is kept for [`Taped::backward`].
    pub fn forward(&mut self, input: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let mut tape = std::mem::take(&mut self.tape);
        if self.training {
            tape.rng = Some(StdRng::seed_from_u64(
                self.seed.wrapping_mul(0x9E37_79B9).wrapping_add(self.calls),
            ));
            self.calls += 1;
        } else {
            tape.rng = None;
        }
        let out = self.module.forward(input, &mut tape);
        if out.is_ok() && self.training {
            self.module.update_buffers(&tape);
        }
        self.tape = tape;
        out
    }

    /// Gradient of the input for the gradient of the last output; parameter gradients
    /// are added to the module's parameters.
    pub fn backward(&mut self, grad_output: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let tape = &self.tape;
        accumulate_into_params(&mut self.module, |m, mut grads| {
            m.backward(tape, grad_output, &mut grads)
        })
    }

    /// The tape of the last forward pass.
    pub fn tape(&self) -> &Tape {
        &self.tape
    }
}

impl<M: Parameters> Parameters for Taped<M> {
    fn visit_params<'a>(&'a self, v: &mut Visitor<'_, &'a Param>) {
        self.module.visit_params(v)
    }
    fn visit_params_mut<'a>(&'a mut self, v: &mut Visitor<'_, &'a mut Param>) {
        self.module.visit_params_mut(v)
    }
    fn visit_buffers<'a>(&'a self, v: &mut Visitor<'_, &'a Buffer>) {
        self.module.visit_buffers(v)
    }
    fn visit_buffers_mut<'a>(&'a mut self, v: &mut Visitor<'_, &'a mut Buffer>) {
        self.module.visit_buffers_mut(v)
    }
}
