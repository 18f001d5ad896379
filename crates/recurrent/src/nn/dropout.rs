//! `nn.Dropout`: zeroes elements with probability `p` in training, scales the rest by `1/(1-p)`.

use super::{no_tape, Module};
use crate::error::{Error, Result};
use crate::param::{Param, Parameters};
use ndarray::ArrayD;
use rand::{Rng, SeedableRng};

/// `nn.Dropout(p)` with its own seedable random stream. Identity in inference mode.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    rng: rand::rngs::StdRng,
    mask: Option<ArrayD<f32>>,
    training: bool,
}

impl Dropout {
    /// Dropout with probability `p` (in `[0, 1]`), masks drawn from a stream seeded by `seed`.
    pub fn new(p: f32, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::Config(format!(
                "dropout probability has to be between 0 and 1, found {p}"
            )));
        }
        Ok(Dropout {
            p,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            mask: None,
            training: true,
        })
    }
}

impl Module for Dropout {
    fn forward(&mut self, input: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        if !self.training || self.p == 0.0 {
            self.mask = None;
            return Ok(input.clone());
        }
        let scale = if self.p < 1.0 {
            1.0 / (1.0 - self.p)
        } else {
            0.0
        };
        let p = self.p;
        let mask = input.mapv(|_| {
            if self.rng.gen::<f32>() < p {
                0.0
            } else {
                scale
            }
        });
        let out = input * &mask;
        self.mask = Some(mask);
        Ok(out)
    }

    fn backward(&mut self, grad_output: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        if !self.training || self.p == 0.0 {
            return Ok(grad_output.clone());
        }
        let mask = self.mask.take().ok_or_else(|| no_tape("Dropout"))?;
        if mask.shape() != grad_output.shape() {
            return Err(Error::shape(
                "Dropout grad_output",
                format!("{:?}", mask.shape()),
                grad_output.shape(),
            ));
        }
        Ok(grad_output * &mask)
    }

    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
}

impl Parameters for Dropout {
    fn named_parameters(&self) -> Vec<(String, &Param)> {
        Vec::new()
    }
    fn named_parameters_mut(&mut self) -> Vec<(String, &mut Param)> {
        Vec::new()
    }
}
