//! Building blocks that compose with the recurrent layers: [`Linear`], [`Embedding`],
//! [`Dropout`], [`LayerNorm`], [`RecurrentBlock`], chained by [`Sequential`].
//!
//! Every block implements [`Module`]: `forward` keeps what `backward` needs (in training
//! mode), and `backward` takes the gradient of the block's output, accumulates parameter
//! gradients and returns the gradient of its input, so a model is trained without writing
//! any gradient by hand:
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use rand::SeedableRng;
//! use recurrent::nn::{Linear, Module, RecurrentBlock, Sequential};
//! use recurrent::loss::MseLoss;
//! use recurrent::optim::{Adam, Optimizer};
//! use recurrent::{Mode, Parameters, Rnn, RnnConfig};
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! // The tutorials' LSTMModel: nn.LSTM(10, 64, batch_first=True) + nn.Linear(64, 1) on the last step.
//! let lstm = Rnn::new(RnnConfig::new(Mode::Lstm, 10, 64).with_batch_first(true), &mut rng).unwrap();
//! let mut model = Sequential::new()
//!     .push("lstm", RecurrentBlock::last_step(lstm))
//!     .push("fc", Linear::new(64, 1, true, &mut rng));
//! let mut opt = Adam::new(1e-3);
//! let x = ArrayD::<f32>::ones(IxDyn(&[8, 12, 10]));
//! let y = ArrayD::<f32>::zeros(IxDyn(&[8, 1]));
//! for _ in 0..3 {
//!     let pred = model.forward(&x).unwrap();
//!     let loss = MseLoss::default().forward(&pred, &y).unwrap();
//!     model.zero_grad();
//!     model.backward(&loss.grad).unwrap();
//!     opt.step(&mut model.named_parameters_mut());
//! }
//! ```

pub(crate) mod dropout;
mod embedding;
mod layer_norm;
mod linear;
mod recurrent_block;
mod sequential;

pub use dropout::Dropout;
pub use embedding::Embedding;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use recurrent_block::{RecurrentBlock, RecurrentOutput};
pub use sequential::Sequential;

use crate::error::Result;
use crate::param::Parameters;
use ndarray::ArrayD;

/// A differentiable block with parameters.
pub trait Module: Parameters {
    /// Computes the output; in training mode also keeps what [`Module::backward`] needs.
    fn forward(&mut self, input: &ArrayD<f32>) -> Result<ArrayD<f32>>;
    /// Given the gradient of the last `forward`'s output, accumulates parameter gradients
    /// and returns the gradient of its input.
    fn backward(&mut self, grad_output: &ArrayD<f32>) -> Result<ArrayD<f32>>;
    /// Training mode on (dropout active, tapes kept) or off (`eval()`).
    fn set_training(&mut self, on: bool);
}

/// Error for a `backward` call that has no matching training-mode `forward`.
pub(crate) fn no_tape(block: &str) -> crate::error::Error {
    crate::error::Error::Invalid(format!(
        "{block}.backward called without a training-mode forward before it"
    ))
}
