//! [`RecurrentBlock`]: an [`Rnn`] as a [`Module`], returning the whole output sequence or
//! each sequence's last step.

use super::{no_tape, Module};
use crate::error::{Error, Result};
use crate::param::Parameters;
use crate::rnn::{InitialState, OutputGrads, Rnn, Tape};
use ndarray::{ArrayD, Axis, IxDyn};
use rand::SeedableRng;

/// Which part of the recurrent output the block passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecurrentOutput {
    /// The whole `output` tensor, same shape as PyTorch's.
    Sequence,
    /// The output at each sequence's last step (`out[:, -1, :]` in batch-first code, or
    /// the step `length - 1` when lengths are set): `(B, D*H_out)`, unbatched `(D*H_out)`.
    LastStep,
}

/// A recurrent stack inside a model. Optional per-sequence `lengths` and initial state
/// apply to the next `forward` (the state is treated as a constant, i.e. detached, which
/// is what truncated backpropagation through time needs).
#[derive(Debug, Clone)]
pub struct RecurrentBlock {
    /// The recurrent stack.
    pub rnn: Rnn,
    output: RecurrentOutput,
    lengths: Option<Vec<usize>>,
    state: Option<(ArrayD<f32>, Option<ArrayD<f32>>)>,
    last_state: Option<(ArrayD<f32>, Option<ArrayD<f32>>)>,
    tape: Tape,
    /// Output shape of the last training-mode forward, `None` once consumed by backward.
    taped_shape: Option<Vec<usize>>,
    rng: rand::rngs::StdRng,
    input_grad: bool,
}

impl RecurrentBlock {
    /// Passes on the whole output sequence.
    pub fn sequence(rnn: Rnn) -> Self {
        Self::with_output(rnn, RecurrentOutput::Sequence)
    }

    /// Passes on the last step of each sequence.
    pub fn last_step(rnn: Rnn) -> Self {
        Self::with_output(rnn, RecurrentOutput::LastStep)
    }

    /// A block with the given output selection.
    pub fn with_output(rnn: Rnn, output: RecurrentOutput) -> Self {
        RecurrentBlock {
            rnn,
            output,
            lengths: None,
            state: None,
            last_state: None,
            tape: Tape::default(),
            taped_shape: None,
            rng: rand::rngs::StdRng::seed_from_u64(0),
            input_grad: true,
        }
    }

    /// Seeds the stream that draws the dropout masks between layers.
    pub fn seed_dropout(&mut self, seed: u64) {
        self.rng = rand::rngs::StdRng::seed_from_u64(seed);
    }

    /// Whether `backward` computes the gradient of the block's input (default: yes). Turn
    /// it off for a block fed directly with data, whose input gradient nobody uses:
    /// `backward` then returns an empty array and skips the first layer's input product.
    pub fn set_input_grad(&mut self, on: bool) {
        self.input_grad = on;
    }

    /// Sequence lengths for the following forward passes (`None`: all full length).
    pub fn set_lengths(&mut self, lengths: Option<Vec<usize>>) {
        self.lengths = lengths;
    }

    /// Initial state `(h0, c0)` for the following forward passes (`None`: zeros).
    pub fn set_state(&mut self, state: Option<(ArrayD<f32>, Option<ArrayD<f32>>)>) {
        self.state = state;
    }

    /// `(h_n, c_n)` of the last forward pass: pass it to [`RecurrentBlock::set_state`] to
    /// carry the state into the next batch of a long stream.
    pub fn last_state(&self) -> Option<&(ArrayD<f32>, Option<ArrayD<f32>>)> {
        self.last_state.as_ref()
    }

    /// Index of the last valid step of each sequence.
    fn last_steps(&self, steps: usize, batch: usize) -> Vec<usize> {
        match &self.lengths {
            Some(ls) => ls.iter().map(|&l| l.max(1) - 1).collect(),
            None => vec![steps - 1; batch],
        }
    }
}

impl Module for RecurrentBlock {
    fn forward(&mut self, input: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let state = self.state.as_ref().map(|(h, c)| InitialState {
            h0: h.view(),
            c0: c.as_ref().map(|c| c.view()),
        });
        let out = if self.rnn.is_training() {
            let out = self.rnn.forward_train_into(
                input.view(),
                state,
                self.lengths.as_deref(),
                &mut self.rng,
                &mut self.tape,
            )?;
            self.taped_shape = Some(out.output.shape().to_vec());
            out
        } else {
            self.rnn
                .forward(input.view(), state, self.lengths.as_deref())?
        };
        self.last_state = Some((out.h_n, out.c_n));
        match self.output {
            RecurrentOutput::Sequence => Ok(out.output),
            RecurrentOutput::LastStep => {
                let o = out.output;
                if o.ndim() == 2 {
                    return Ok(o.index_axis(Axis(0), o.shape()[0] - 1).to_owned());
                }
                let (time_axis, batch_axis) = if self.rnn.config().batch_first {
                    (1, 0)
                } else {
                    (0, 1)
                };
                let (steps, batch, width) =
                    (o.shape()[time_axis], o.shape()[batch_axis], o.shape()[2]);
                let last = self.last_steps(steps, batch);
                let mut sel = ArrayD::zeros(IxDyn(&[batch, width]));
                for (b, &t) in last.iter().enumerate() {
                    let src = if time_axis == 0 {
                        o.slice(ndarray::s![t, b, ..])
                    } else {
                        o.slice(ndarray::s![b, t, ..])
                    };
                    sel.index_axis_mut(Axis(0), b).assign(&src);
                }
                Ok(sel)
            }
        }
    }

    fn backward(&mut self, grad_output: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let out_shape = self
            .taped_shape
            .take()
            .ok_or_else(|| no_tape("RecurrentBlock"))?;
        let full = match self.output {
            RecurrentOutput::Sequence => grad_output.clone(),
            RecurrentOutput::LastStep => {
                let mut full = ArrayD::zeros(IxDyn(&out_shape));
                if out_shape.len() == 2 {
                    let t = out_shape[0] - 1;
                    full.index_axis_mut(Axis(0), t).assign(grad_output);
                } else {
                    let (time_axis, batch_axis) = if self.rnn.config().batch_first {
                        (1, 0)
                    } else {
                        (0, 1)
                    };
                    let (steps, batch) = (out_shape[time_axis], out_shape[batch_axis]);
                    if grad_output.shape() != [batch, out_shape[2]] {
                        return Err(Error::shape(
                            "RecurrentBlock grad_output",
                            format!("[{batch}, {}]", out_shape[2]),
                            grad_output.shape(),
                        ));
                    }
                    for (b, &t) in self.last_steps(steps, batch).iter().enumerate() {
                        let g = grad_output.index_axis(Axis(0), b);
                        if time_axis == 0 {
                            full.slice_mut(ndarray::s![t, b, ..]).assign(&g);
                        } else {
                            full.slice_mut(ndarray::s![b, t, ..]).assign(&g);
                        }
                    }
                }
                full
            }
        };
        let grads = self.rnn.backward(
            &self.tape,
            OutputGrads {
                grad_output: Some(full.view()),
                skip_input_grad: !self.input_grad,
                ..Default::default()
            },
        )?;
        Ok(grads.grad_input)
    }

    fn set_training(&mut self, on: bool) {
        self.rnn.train(on);
    }
}

crate::parameters!(RecurrentBlock { inline rnn; });
