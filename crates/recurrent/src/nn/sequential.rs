//! [`Sequential`]: named blocks applied one after another.

use super::{param_count, Module, Tape};
use crate::error::Result;
use crate::param::{Buffer, GradSlices, Param, Parameters, Visitor};
use ndarray::ArrayD;

/// Blocks applied in order; parameters are named `"{block}.{param}"` as in a PyTorch
/// module with those attribute names (e.g. `lstm.weight_ih_l0`, `fc.weight`).
#[derive(Default)]
pub struct Sequential {
    blocks: Vec<(String, Box<dyn Module>)>,
}

impl Sequential {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a block under `name`.
    pub fn push(mut self, name: &str, block: impl Module + 'static) -> Self {
        self.blocks.push((name.to_string(), Box::new(block)));
        self
    }

    /// The block named `name`.
    pub fn block_mut(&mut self, name: &str) -> Option<&mut dyn Module> {
        self.blocks
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_mut() as _)
    }
}

impl Module for Sequential {
    fn forward(&self, input: &ArrayD<f32>, tape: &mut Tape) -> Result<ArrayD<f32>> {
        let tapes = tape.parts(self.blocks.len());
        let mut x = input.clone();
        for ((_, b), t) in self.blocks.iter().zip(tapes) {
            x = b.forward(&x, t)?;
        }
        Ok(x)
    }

    fn backward(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        let mut per_block: Vec<GradSlices> = self
            .blocks
            .iter()
            .map(|(_, b)| grads.split(param_count(b.as_ref())))
            .collect();
        let mut g = grad_output.clone();
        for (k, (_, b)) in self.blocks.iter().enumerate().rev() {
            g = b.backward(tape.part(k), &g, &mut per_block[k])?;
        }
        Ok(g)
    }

    fn update_buffers(&mut self, tape: &Tape) {
        for (k, (_, b)) in self.blocks.iter_mut().enumerate() {
            b.update_buffers(tape.part(k));
        }
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
