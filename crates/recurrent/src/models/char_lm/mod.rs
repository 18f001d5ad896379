//! [`CharLm`]: a character-level language model — embedding, recurrent stack, linear
//! layer over the vocabulary — with held-out bits per character ([`CharLm`] itself),
//! sampling (`sampling.rs`) and its training task on a text ([`LmTask`], in `training.rs`).

mod sampling;
mod training;

pub use training::{LmTask, SHARD_ROWS};

use super::{Ensemble, TaskModel};
use crate::config::RnnConfig;
use crate::data::Vocabulary;
use crate::error::{Error, Result};
use crate::kernels::dropout::{apply_mask, dropout_in_place};
use crate::kernels::Precision;
use crate::loss::CrossEntropyLoss;
use crate::nn::{self, Embedding, Linear, Module};
use crate::param::GradSlices;
use crate::rnn::{self, InitialState, OutputGrads, PreparedRnn, Rnn};
use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a language-model file stores besides weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharLmMeta {
    /// The vocabulary, in index order.
    pub vocabulary: String,
    /// Embedding size.
    pub embedding_dim: usize,
}

/// Embedding `(V, E)` → recurrent stack (batch-first) → linear `(V, D*H_out)`.
///
/// In training, the stack's `dropout` applies between its layers (as in PyTorch) and also
/// to its output before the linear layer (as in Zaremba et al.'s regularised LSTM
/// language models), so it regularises one-layer models too; `embedding_dropout` applies
/// to the stack's input.
#[derive(Debug, Clone)]
pub struct CharLm {
    /// Character embeddings.
    pub embedding: Embedding,
    /// The recurrent stack.
    pub rnn: Rnn,
    /// Output layer.
    pub head: Linear,
    /// Vocabulary.
    pub vocab: Vocabulary,
    meta: CharLmMeta,
    /// Dropout probability of the embeddings fed to the recurrent stack in training
    /// (default 0).
    pub embedding_dropout: f32,
}

/// What a training forward pass of a [`CharLm`] keeps for its backward pass (its buffers
/// are reused when the tape is passed again).
#[derive(Debug)]
pub struct LmTape {
    embedding: nn::Tape,
    rnn: rnn::Tape,
    head: nn::Tape,
    /// The scaled keep-masks of the embedding and output dropouts (empty when off).
    input_mask: Vec<f32>,
    output_mask: Vec<f32>,
    /// `(B, T)` of the pass; `None` before the first.
    shape: Option<(usize, usize)>,
}

impl Default for LmTape {
    fn default() -> Self {
        LmTape {
            embedding: nn::Tape::training(0),
            rnn: rnn::Tape::default(),
            head: nn::Tape::training(0),
            input_mask: Vec::new(),
            output_mask: Vec::new(),
            shape: None,
        }
    }
}

/// Zeroes each of `values` with probability `p` and scales the rest by `1/(1-p)`, keeping
/// the mask in `mask` (emptied when `p` is 0).
fn drop_out(values: &mut [f32], mask: &mut Vec<f32>, p: f32, rng: &mut impl Rng) {
    if p > 0.0 {
        dropout_in_place(values, mask, p, rng);
    } else {
        mask.clear();
    }
}

/// Applies a mask [`drop_out`] kept to the gradient of its output.
fn drop_out_backward(grads: &mut [f32], mask: &[f32]) {
    if !mask.is_empty() {
        apply_mask(grads, mask);
    }
}

/// Recurrent state carried between calls: `(h, c)`.
pub type LmState = (ArrayD<f32>, Option<ArrayD<f32>>);

impl CharLm {
    /// A new model over `vocab`; `config.input_size` must equal `embedding_dim`.
    pub fn new(
        config: RnnConfig,
        vocab: Vocabulary,
        embedding_dim: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if config.input_size != embedding_dim {
            return Err(Error::Config(format!(
                "the recurrent input size ({}) must equal the embedding size ({embedding_dim})",
                config.input_size
            )));
        }
        let config = config.with_batch_first(true);
        let width = config.num_directions() * config.output_size();
        let v = vocab.len();
        Ok(CharLm {
            embedding: Embedding::new(v, embedding_dim, None, rng)?,
            rnn: Rnn::new(config, rng)?,
            head: Linear::new(width, v, true, rng),
            meta: CharLmMeta {
                vocabulary: vocab.chars().iter().collect(),
                embedding_dim,
            },
            vocab,
            embedding_dropout: 0.0,
        })
    }

    /// Logits `(B*T, V)` for index sequences `(B, T)` (row-major `ids`), starting from
    /// `state` (zeros if `None`); also returns the final state.
    pub fn logits(
        &self,
        ids: &[usize],
        batch: usize,
        state: Option<&LmState>,
    ) -> Result<(ArrayD<f32>, LmState)> {
        self.logits_through(&self.rnn.prepare(), ids, batch, state)
    }

    /// Mean cross-entropy in bits per character of `text` indices, read as `streams`
    /// contiguous parts processed in chunks of `chunk` characters with the state carried.
    pub fn bits_per_char(&self, ids: &[usize], streams: usize, chunk: usize) -> Result<f64> {
        self.bits_per_char_in(ids, streams, chunk, Precision::F32)
    }

    /// [`CharLm::bits_per_char`] with the recurrent products in `precision` (see
    /// [`Rnn::prepare_in`]).
    pub fn bits_per_char_in(
        &self,
        ids: &[usize],
        streams: usize,
        chunk: usize,
        precision: Precision,
    ) -> Result<f64> {
        let streams = Self::stream_count(ids, streams);
        let (nats, count) = self.nats_of_streams(ids, streams, 0..streams, chunk, precision)?;
        Ok(nats / count as f64 / std::f64::consts::LN_2)
    }

    /// `streams` (at least 1) limited to what `ids` can be cut into.
    pub(crate) fn stream_count(ids: &[usize], streams: usize) -> usize {
        streams.clamp(1, (ids.len().saturating_sub(1)).max(1))
    }

    /// Of `ids` read as `streams` contiguous parts (see [`CharLm::bits_per_char`]), the
    /// cross-entropy in nats summed over the parts `which`, and the number of characters
    /// predicted there.
    pub(crate) fn nats_of_streams(
        &self,
        ids: &[usize],
        streams: usize,
        which: std::ops::Range<usize>,
        chunk: usize,
        precision: Precision,
    ) -> Result<(f64, usize)> {
        let per = (ids.len() - 1) / streams;
        if per == 0 {
            return Err(Error::Invalid("text too short to evaluate".into()));
        }
        if which.is_empty() {
            return Ok((0.0, 0));
        }
        let rnn = self.rnn.prepare_in(precision);
        let mut state: Option<LmState> = None;
        let (mut total, mut count) = (0.0f64, 0usize);
        let mut pos = 0;
        while pos < per {
            let len = chunk.min(per - pos);
            let mut input = Vec::with_capacity(which.len() * len);
            let mut target = Vec::with_capacity(which.len() * len);
            for s in which.clone() {
                let start = s * per + pos;
                input.extend_from_slice(&ids[start..start + len]);
                target.extend(ids[start + 1..start + 1 + len].iter().map(|&t| t as i64));
            }
            let (logits, st) = self.logits_through(&rnn, &input, which.len(), state.as_ref())?;
            let loss = CrossEntropyLoss::default().forward(&logits, &target, &[target.len()])?;
            total += loss.item() as f64 * target.len() as f64;
            count += target.len();
            state = Some(st);
            pos += len;
        }
        Ok((total, count))
    }

    /// Training logits `(B*T, V)` of `(B, T)` indices from `state` (zeros if `None`; no
    /// gradient flows into it), and the final state; `tape` keeps what
    /// [`CharLm::backward`] needs.
    pub fn forward_train(
        &self,
        ids: &[usize],
        batch: usize,
        state: Option<&LmState>,
        rng: &mut impl Rng,
        tape: &mut LmTape,
    ) -> Result<(ArrayD<f32>, LmState)> {
        let steps = ids.len() / batch;
        let mut x = self
            .embedding
            .forward(ids, &[batch, steps], &mut tape.embedding)?;
        let x_values = x.as_slice_mut().expect("contiguous");
        drop_out(x_values, &mut tape.input_mask, self.embedding_dropout, rng);
        let init = state.map(initial_state);
        let out = self
            .rnn
            .forward_train_into(x.view(), init, None, rng, &mut tape.rnn)?;
        let w = out.output.shape()[2];
        tape.shape = Some((batch, steps));
        let mut flat = out
            .output
            .into_shape_with_order(IxDyn(&[batch * steps, w]))
            .expect("contiguous");
        let flat_values = flat.as_slice_mut().expect("contiguous");
        let p = self.rnn.config().dropout;
        drop_out(flat_values, &mut tape.output_mask, p, rng);
        let logits = self.head.forward_owned(flat, &mut tape.head)?;
        Ok((logits, (out.h_n, out.c_n)))
    }

    /// Backward of the [`CharLm::forward_train`] that filled `tape`, for the gradient
    /// `(B*T, V)` of its logits: parameter gradients are added to `grads` (one slice per
    /// parameter, in [`crate::Parameters`] order); the model is not changed.
    pub fn backward(
        &self,
        tape: &LmTape,
        grad_logits: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<()> {
        let (batch, steps) = tape
            .shape
            .ok_or_else(|| Error::Invalid("CharLm.backward needs a forward_train tape".into()))?;
        let mut embedding_grads = grads.split(1);
        let mut rnn_grads = grads.split(nn::param_count(&self.rnn));
        let mut g = self.head.backward(&tape.head, grad_logits, grads)?;
        drop_out_backward(g.as_slice_mut().expect("contiguous"), &tape.output_mask);
        let w = g.shape()[1];
        let g = g
            .into_shape_with_order(IxDyn(&[batch, steps, w]))
            .expect("contiguous");
        let mut gi = self.rnn.backward_into(
            &tape.rnn,
            OutputGrads {
                grad_output: Some(g.view()),
                ..Default::default()
            },
            &mut rnn_grads,
        )?;
        let grad_x = gi.grad_input.as_slice_mut().expect("contiguous");
        drop_out_backward(grad_x, &tape.input_mask);
        self.embedding
            .backward(&tape.embedding, &gi.grad_input, &mut embedding_grads)
    }

    /// Inference logits `(B*T, V)` of `(B, T)` indices, with the recurrent stack prepared
    /// once by the caller (see [`CharLm::logits`]), and the final state.
    fn logits_through(
        &self,
        rnn: &PreparedRnn,
        ids: &[usize],
        batch: usize,
        state: Option<&LmState>,
    ) -> Result<(ArrayD<f32>, LmState)> {
        let steps = ids.len() / batch;
        let x = self
            .embedding
            .forward(ids, &[batch, steps], &mut nn::Tape::inference())?;
        let init = state.map(initial_state);
        let out = rnn.forward(x.view(), init, None)?;
        let w = out.output.shape()[2];
        let flat = out
            .output
            .into_shape_with_order(IxDyn(&[batch * steps, w]))
            .expect("contiguous");
        let logits = self.head.forward(&flat, &mut nn::Tape::inference())?;
        Ok((logits, (out.h_n, out.c_n)))
    }

    /// Saves weights, configuration and vocabulary in one safetensors file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_atomic(path.as_ref(), &self.to_bytes()?)
    }

    /// The bytes [`CharLm::save`] writes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ensemble {
            members: vec![self.clone()],
        }
        .to_bytes()
    }

    /// Loads a file written by [`CharLm::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let mut e = Ensemble::<CharLm>::load(path)?;
        Ok(e.members.remove(0))
    }
}

/// `state` as the recurrent stack's initial state.
fn initial_state((h, c): &LmState) -> InitialState<'_> {
    InitialState {
        h0: h.view(),
        c0: c.as_ref().map(|c| c.view()),
    }
}

crate::parameters!(CharLm { part "embedding" => embedding; part "rnn" => rnn; part "head" => head; });

impl TaskModel for CharLm {
    const TASK: &'static str = "lm";
    type Meta = CharLmMeta;
    fn check_meta(config: &RnnConfig, meta: &CharLmMeta) -> Result<()> {
        Vocabulary::checked(meta.vocabulary.chars().collect())?;
        if meta.embedding_dim != config.input_size {
            return Err(Error::Config(format!(
                "embedding_dim is {}, the recurrent input size {}",
                meta.embedding_dim, config.input_size
            )));
        }
        if config.bidirectional {
            return Err(Error::Config(
                "a language model cannot be bidirectional".into(),
            ));
        }
        Ok(())
    }
    fn other_parameters(config: &RnnConfig, meta: &CharLmMeta) -> Option<usize> {
        // Embedding `(V, E)` and output layer `(V, D * H_out)` plus its bias.
        let width = config.num_directions().checked_mul(config.output_size())?;
        let per_char = meta.embedding_dim.checked_add(width)?.checked_add(1)?;
        meta.vocabulary.chars().count().checked_mul(per_char)
    }
    fn build(config: RnnConfig, meta: CharLmMeta) -> Result<Self> {
        let vocab = Vocabulary::checked(meta.vocabulary.chars().collect())?;
        CharLm::new(
            config,
            vocab,
            meta.embedding_dim,
            &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0),
        )
    }
    fn rnn(&self) -> &Rnn {
        &self.rnn
    }
    fn rnn_mut(&mut self) -> &mut Rnn {
        &mut self.rnn
    }
    fn meta(&self) -> &CharLmMeta {
        &self.meta
    }
}
