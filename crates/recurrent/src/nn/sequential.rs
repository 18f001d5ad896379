//! [`Sequential`]: named blocks applied one after another.

use super::Module;
use crate::error::Result;
use crate::param::{Buffer, Param, Parameters, Visitor};
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

/// Each block's tensors under its name (`lstm.weight_ih_l0`, `fc.bias`).
impl Parameters for Sequential {
    fn visit_params<'a>(&'a self, v: &mut Visitor<'_, &'a Param>) {
        for (name, block) in &self.blocks {
            let mark = v.enter(name);
            block.visit_params(v);
            v.leave(mark);
        }
    }
    fn visit_params_mut<'a>(&'a mut self, v: &mut Visitor<'_, &'a mut Param>) {
        for (name, block) in &mut self.blocks {
            let mark = v.enter(name);
            block.visit_params_mut(v);
            v.leave(mark);
        }
    }
    fn visit_buffers<'a>(&'a self, v: &mut Visitor<'_, &'a Buffer>) {
        for (name, block) in &self.blocks {
            let mark = v.enter(name);
            block.visit_buffers(v);
            v.leave(mark);
        }
    }
    fn visit_buffers_mut<'a>(&'a mut self, v: &mut Visitor<'_, &'a mut Buffer>) {
        for (name, block) in &mut self.blocks {
            let mark = v.enter(name);
            block.visit_buffers_mut(v);
            v.leave(mark);
        }
    }
}
