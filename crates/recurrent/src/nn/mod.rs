//! Building blocks that compose with the recurrent layers: [`Linear`], [`Embedding`],
//! [`Dropout`], [`LayerNorm`], [`RecurrentBlock`], chained by [`Sequential`]; [`Attention`]
//! for encoder-decoder models.
//!
//! Every block implements [`Module`], the contract of every differentiable op of the
//! library: `forward(&self, input, &mut Tape)` computes the output and, on a training
//! [`Tape`], keeps what the backward pass needs (and draws dropout masks from the tape's
//! stream); `backward(&self, &Tape, grad_output, grads)` returns the gradient of the input
//! and adds the parameter gradients to `grads` (one slice per parameter, see
//! [`crate::param::Grads`]) without touching the module. Many forward passes (threads,
//! replicas, shards of a batch) can be in flight on one module, each with its own tape.
//!
//! [`Taped`] puts a module and its tape together for the usual loop, gradients accumulated
//! in the module's own parameters for an optimizer:
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use rand::SeedableRng;
//! use recurrent::nn::{Linear, RecurrentBlock, Sequential, Taped};
//! use recurrent::loss::MseLoss;
//! use recurrent::optim::{Adam, Optimizer};
//! use recurrent::{Mode, Parameters, Rnn, RnnConfig};
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! // The tutorials' LSTMModel: nn.LSTM(10, 64, batch_first=True) + nn.Linear(64, 1) on the last step.
//! let lstm = Rnn::new(RnnConfig::new(Mode::Lstm, 10, 64).with_batch_first(true), &mut rng).unwrap();
//! let mut model = Taped::new(
//!     Sequential::new()
//!         .push("lstm", RecurrentBlock::last_step(lstm))
//!         .push("fc", Linear::new(64, 1, true, &mut rng)),
//!     0,
//! );
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

mod attention;
mod batch_norm;
mod conv1d;
mod dropout;
mod embedding;
mod layer_norm;
mod linear;
mod pooling;
mod recurrent_block;
mod sequential;
mod tape;

pub use attention::{Attention, AttentionOutput};
pub use batch_norm::BatchNorm1d;
pub use conv1d::{Conv1d, Conv1dConfig, Padding};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use pooling::GlobalAvgPool1d;
pub use recurrent_block::{RecurrentBlock, RecurrentOutput};
pub use sequential::Sequential;
pub use tape::{Tape, Taped};

use crate::error::Result;
use crate::param::{GradSlices, Parameters};
use ndarray::ArrayD;

/// A differentiable block with parameters: the library's op contract.
pub trait Module: Parameters + Send + Sync {
    /// Computes the output. On a training tape ([`Tape::training`]) also keeps what
    /// [`Module::backward`] needs and applies dropout; on [`Tape::inference`] it keeps
    /// nothing.
    fn forward(&self, input: &ArrayD<f32>, tape: &mut Tape) -> Result<ArrayD<f32>>;
    /// Given the gradient of the output of the `forward` that filled `tape`, returns the
    /// gradient of its input and adds the parameter gradients to `grads` (the next
    /// [`Parameters::num_parameters`]-worth of slices, one per parameter in visit order).
    fn backward(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>>;
    /// Applies what the training-mode `forward` that filled `tape` has to change in the
    /// module's buffers (BatchNorm's running statistics); call it once per such pass (as
    /// [`Taped::forward`] does). Default: nothing.
    fn update_buffers(&mut self, _tape: &Tape) {}
}

/// Number of parameters (not values) of a module: how many gradient slices it takes.
pub(crate) fn param_count(m: &(impl Parameters + ?Sized)) -> usize {
    m.param_lens().len()
}

/// `(B, C, L)` and channels-last `(B, L, C)` into each other (a copy in standard layout).
pub(crate) fn swap_last_two(x: &ArrayD<f32>) -> ArrayD<f32> {
    x.view()
        .permuted_axes(vec![0, 2, 1])
        .as_standard_layout()
        .into_owned()
}

/// Checks per-sample `lengths` of a `(B, L, ..)` input for `block`: `B` of them, each
/// from 1 to `L`.
pub(crate) fn check_lengths(
    block: &str,
    lengths: Option<&[usize]>,
    b: usize,
    l: usize,
) -> Result<()> {
    match lengths {
        Some(ls) if ls.len() != b || ls.iter().any(|&n| n == 0 || n > l) => {
            Err(crate::error::Error::Lengths(format!(
                "{block}: {b} lengths from 1 to {l} needed, found {ls:?}"
            )))
        }
        _ => Ok(()),
    }
}
