//! # recurrent
//!
//! PyTorch's recurrent layers (`nn.RNN`, `nn.LSTM`, `nn.GRU` and their cells) in Rust, with
//! the same arguments, defaults, shapes, parameter names and numbers, forward and backward.
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use rand::SeedableRng;
//! use recurrent::{Mode, Rnn, RnnConfig, InitialState};
//!
//! // nn.LSTM(10, 20, 2)(x, (h0, c0))
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let lstm = Rnn::new(RnnConfig::new(Mode::Lstm, 10, 20).with_num_layers(2), &mut rng).unwrap();
//! let x = ArrayD::<f32>::zeros(IxDyn(&[5, 3, 10]));
//! let h0 = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 20]));
//! let c0 = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 20]));
//! let out = lstm
//!     .forward(x.view(), Some(InitialState { h0: h0.view(), c0: Some(c0.view()) }), None)
//!     .unwrap();
//! assert_eq!(out.output.shape(), &[5, 3, 20]);
//! assert_eq!(out.h_n.shape(), &[2, 3, 20]);
//! assert_eq!(out.c_n.unwrap().shape(), &[2, 3, 20]);
//! ```
//!
//! ## Layer-norm LSTM
//! With `layer_norm: true` (LSTM only) each layer computes, per direction,
//! `s = W_ih x + b_ih + W_hh h + b_hh`, splits `s` into the four gate blocks (i, f, g, o) and
//! normalises each with its own LayerNorm (`ln_gates_weight`, `ln_gates_bias`, `(4H)`),
//! then `c' = σ(f) c + σ(i) tanh(g)` and `h' = σ(o) tanh(LayerNorm(c'))` with
//! `ln_cell_weight`, `ln_cell_bias` `(H)`; with `proj_size`, `h' = W_hr h'`. LayerNorm uses
//! PyTorch's `eps = 1e-5` and biased variance.

#![warn(missing_docs)]

pub mod cell;
pub mod config;
pub mod data;
pub mod distributed;
pub mod error;
pub mod io;
pub mod kernels;
pub(crate) mod layer;
pub mod loss;
pub mod models;
pub mod nn;
pub mod optim;
pub mod packed;
pub mod param;
pub mod rnn;

pub use cell::{Cell, CellKind};
pub use config::{Mode, RnnConfig};
pub use error::{Error, Result};
pub use layer::{DirectionParams, LayerNormParams};
pub use packed::{pack_padded_sequence, pad_packed_sequence, PackedSequence};
pub use param::{Param, Parameters};
pub use rnn::{InitialState, InputGrads, OutputGrads, PreparedRnn, Rnn, RnnOutput, Tape};
