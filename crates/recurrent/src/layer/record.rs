//! [`DirTape`]: what the forward pass of one direction keeps for its backward pass, shared
//! by the step-by-step loop ([`super::direction`]) and the threaded one ([`super::fused`]).

use super::params::DirectionParams;
use crate::config::Mode;

/// What the forward pass of one direction keeps for its backward pass (`N` = packed rows).
#[derive(Debug, Default, Clone)]
pub struct DirTape {
    /// `(N, H_out)`: the direction's output `h_t`.
    pub out: Vec<f32>,
    /// `(N, G*H)`: gate activations (LSTM i,f,g,o; GRU r,z,n; RNN the new state); empty
    /// after inference through the threaded time loop.
    pub gates: Vec<f32>,
    /// `(N, H_out)`: the state each row started from.
    pub h_prev: Vec<f32>,
    /// `(N, H)`: LSTM cell state after the step.
    pub c: Vec<f32>,
    /// `(N, H)`: LSTM cell state before the step.
    pub c_prev: Vec<f32>,
    /// `(N, H)`: LSTM with projection: the hidden state before `weight_hr`.
    pub r: Vec<f32>,
    /// `(N, H)`: GRU `W_hn h + b_hn`.
    pub gh_n: Vec<f32>,
    /// `(N, G*H)`: layer-norm LSTM: normalised gate pre-activations.
    pub ln_hat: Vec<f32>,
    /// `(N, G)`: layer-norm LSTM: reciprocal standard deviation of each gate's LayerNorm.
    pub ln_rstd: Vec<f32>,
    /// `(N, H)`: layer-norm LSTM: normalised cell state.
    pub cell_hat: Vec<f32>,
    /// `(N)`: layer-norm LSTM: reciprocal standard deviation of the cell LayerNorm.
    pub cell_rstd: Vec<f32>,
    /// `(B, H)`: work buffer for the state of every other step.
    pub(crate) state_spare: Vec<f32>,
}

/// Sets the length of a buffer that is about to be overwritten completely: keeps its
/// allocation and contents (no zero fill) when it is reused with the same or a larger size.
pub(crate) fn resized(v: &mut Vec<f32>, len: usize) {
    v.resize(len, 0.0);
}

impl DirTape {
    /// Sizes the buffers for `n` rows; without `record` (inference) the states before each
    /// step and the cell states are not kept.
    pub(crate) fn prepare(&mut self, p: &DirectionParams, n: usize, record: bool) {
        let h = p.hidden_size;
        let g = p.mode.gates();
        let h_out = p.output_size();
        let lstm = p.mode == Mode::Lstm;
        let ln = p.layer_norm.is_some();
        let kept = if record { n } else { 0 };
        resized(&mut self.out, n * h_out);
        resized(&mut self.gates, kept * g * h);
        resized(&mut self.h_prev, kept * h_out);
        resized(&mut self.c, if lstm { kept * h } else { 0 });
        resized(&mut self.c_prev, if lstm { kept * h } else { 0 });
        resized(&mut self.r, if p.weight_hr.is_some() { n * h } else { 0 });
        resized(&mut self.gh_n, if p.mode == Mode::Gru { n * h } else { 0 });
        resized(&mut self.ln_hat, if ln { n * g * h } else { 0 });
        resized(&mut self.ln_rstd, if ln { n * g } else { 0 });
        resized(&mut self.cell_hat, if ln { n * h } else { 0 });
        resized(&mut self.cell_rstd, if ln { n } else { 0 });
    }
}
