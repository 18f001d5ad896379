//! [`RecurrentBlock`]: an [`Rnn`] as a [`Module`], returning the whole output sequence or
//! each sequence's last step.

use super::{Module, Tape as NnTape};
use crate::error::{Error, Result};
use crate::param::GradSlices;
use crate::rnn::{InitialState, OutputGrads, Rnn, Tape};
use ndarray::{ArrayD, Axis, IxDyn};

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
/// apply to the following forward passes (the state is treated as a constant, i.e.
/// detached, which is what truncated backpropagation through time needs).
#[derive(Debug, Clone)]
pub struct RecurrentBlock {
    /// The recurrent stack.
    pub rnn: Rnn,
    output: RecurrentOutput,
    lengths: Option<Vec<usize>>,
    state: Option<(ArrayD<f32>, Option<ArrayD<f32>>)>,
    input_grad: bool,
}

/// A recurrent state `(h, c)`: `c` for LSTM only.
pub type RecurrentState = (ArrayD<f32>, Option<ArrayD<f32>>);

/// What [`RecurrentBlock`] keeps: the stack's tape, the output shape of a training-mode
/// pass (`None` in inference), and the final state.
#[derive(Default)]
struct RecurrentRecord {
    rnn: Tape,
    out_shape: Option<Vec<usize>>,
    final_state: Option<RecurrentState>,
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
            input_grad: true,
        }
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

    /// `(h_n, c_n)` of the forward pass that filled `tape`: pass it to
    /// [`RecurrentBlock::set_state`] to carry the state into the next batch of a long
    /// stream.
    pub fn final_state(tape: &NnTape) -> Option<&RecurrentState> {
        tape.record::<RecurrentRecord>("RecurrentBlock")
            .ok()?
            .final_state
            .as_ref()
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
    fn forward(&self, input: &ArrayD<f32>, tape: &mut NnTape) -> Result<ArrayD<f32>> {
        let state = self.state.as_ref().map(|(h, c)| InitialState {
            h0: h.view(),
            c0: c.as_ref().map(|c| c.view()),
        });
        let mut record: RecurrentRecord = tape.take_previous();
        let lengths = self.lengths.as_deref();
        let out = match tape.rng() {
            Some(rng) => {
                let out = self.rnn.forward_train_into(
                    input.view(),
                    state,
                    lengths,
                    rng,
                    &mut record.rnn,
                )?;
                record.out_shape = Some(out.output.shape().to_vec());
                out
            }
            None => {
                record.out_shape = None;
                self.rnn.forward(input.view(), state, lengths)?
            }
        };
        record.final_state = Some((out.h_n, out.c_n));
        tape.keep(record);
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

    fn backward(
        &self,
        tape: &NnTape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        let record: &RecurrentRecord = tape.record("RecurrentBlock")?;
        let out_shape = record.out_shape.clone().ok_or_else(|| {
            Error::Invalid(
                "RecurrentBlock.backward needs the tape of a training-mode forward".into(),
            )
        })?;
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
        let input_grads = self.rnn.backward_into(
            &record.rnn,
            OutputGrads {
                grad_output: Some(full.view()),
                skip_input_grad: !self.input_grad,
                ..Default::default()
            },
            grads,
        )?;
        Ok(input_grads.grad_input)
    }
}

crate::parameters!(RecurrentBlock { inline rnn; });
