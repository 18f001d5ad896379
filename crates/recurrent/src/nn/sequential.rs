//! [`Sequential`]: named blocks applied one after another.

use super::Module;
use crate::error::Result;
use crate::param::{Param, Parameters};
use ndarray::ArrayD;

/// Blocks applied in order; parameters are named `"{block}.{param}"` as in a PyTorch
/// module with those attribute names (e.g. `lstm.weight_ih_l0`, `fc.weight`).
#[derive(Default)]
pub struct Sequential {
    blocks: Vec<(String, Box<dyn Module + Send>)>,
}

impl Sequential {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a block under `name`.
    pub fn push(mut self, name: &str, block: impl Module + Send + 'static) -> Self {
        self.blocks.push((name.to_string(), Box::new(block)));
        self
    }

    /// The block named `name`.
    pub fn block_mut(&mut self, name: &str) -> Option<&mut (dyn Module + Send)> {
        self.blocks
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_mut() as _)
    }
}

impl Module for Sequential {
    fn forward(&mut self, input: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let mut x = input.clone();
        for (_, b) in &mut self.blocks {
            x = b.forward(&x)?;
        }
        Ok(x)
    }

    fn backward(&mut self, grad_output: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let mut g = grad_output.clone();
        for (_, b) in self.blocks.iter_mut().rev() {
            g = b.backward(&g)?;
        }
        Ok(g)
    }

    fn set_training(&mut self, on: bool) {
        self.blocks.iter_mut().for_each(|(_, b)| b.set_training(on));
    }
}

impl Parameters for Sequential {
    fn named_parameters(&self) -> Vec<(String, &Param)> {
        self.blocks
            .iter()
            .flat_map(|(n, b)| {
                b.named_parameters()
                    .into_iter()
                    .map(move |(p, v)| (format!("{n}.{p}"), v))
            })
            .collect()
    }
    fn named_parameters_mut(&mut self) -> Vec<(String, &mut Param)> {
        self.blocks
            .iter_mut()
            .flat_map(|(n, b)| {
                let n = n.clone();
                b.named_parameters_mut()
                    .into_iter()
                    .map(move |(p, v)| (format!("{n}.{p}"), v))
            })
            .collect()
    }
}
