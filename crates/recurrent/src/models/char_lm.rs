//! [`CharLm`]: a character-level language model — embedding, recurrent stack, linear
//! layer over the vocabulary — with held-out bits per character and sampling.

use super::fit::Trainable;
use super::{prefixed, prefixed_mut, Ensemble, TaskModel};
use crate::config::RnnConfig;
use crate::data::Vocabulary;
use crate::error::{Error, Result};
use crate::kernels::Precision;
use crate::loss::CrossEntropyLoss;
use crate::nn::dropout::{apply_mask, dropout_in_place};
use crate::nn::{Embedding, Linear, Module};
use crate::param::{Param, Parameters};
use crate::rnn::{InitialState, OutputGrads, PreparedRnn, Rnn, Tape};
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
    tape: Tape,
    shape: Option<(usize, usize)>,
    /// Dropout probability of the embeddings fed to the recurrent stack in training
    /// (default 0).
    pub embedding_dropout: f32,
    input_mask: KeepMask,
    output_mask: KeepMask,
}

/// The scaled keep-mask of one dropout in the last training forward (its allocation kept
/// between batches), and whether backward still has to apply it.
#[derive(Debug, Clone, Default)]
struct KeepMask {
    mask: Vec<f32>,
    pending: bool,
}

impl KeepMask {
    /// Zeroes each of `values` with probability `p` and scales the rest by `1/(1-p)`.
    fn apply(&mut self, values: &mut [f32], p: f32, rng: &mut impl Rng) {
        self.pending = p > 0.0;
        if !self.pending {
            return;
        }
        dropout_in_place(values, &mut self.mask, p, rng);
    }

    /// Applies the mask of the last [`KeepMask::apply`] to `grads` (once).
    fn backward(&mut self, grads: &mut [f32]) {
        if std::mem::take(&mut self.pending) {
            apply_mask(grads, &self.mask);
        }
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
            tape: Tape::default(),
            shape: None,
            embedding_dropout: 0.0,
            input_mask: KeepMask::default(),
            output_mask: KeepMask::default(),
        })
    }

    /// Logits `(B*T, V)` for index sequences `(B, T)` (row-major `ids`), starting from
    /// `state` (zeros if `None`); also returns the final state.
    pub fn logits(
        &mut self,
        ids: &[usize],
        batch: usize,
        state: Option<&LmState>,
    ) -> Result<(ArrayD<f32>, LmState)> {
        let rnn = self.rnn.prepare();
        logits_through(&mut self.embedding, &rnn, &mut self.head, ids, batch, state)
    }

    /// Mean cross-entropy in bits per character of `text` indices, read as `streams`
    /// contiguous parts processed in chunks of `chunk` characters with the state carried.
    pub fn bits_per_char(&mut self, ids: &[usize], streams: usize, chunk: usize) -> Result<f64> {
        self.bits_per_char_in(ids, streams, chunk, Precision::F32)
    }

    /// [`CharLm::bits_per_char`] with the recurrent products in `precision` (see
    /// [`Rnn::prepare_in`]).
    pub fn bits_per_char_in(
        &mut self,
        ids: &[usize],
        streams: usize,
        chunk: usize,
        precision: Precision,
    ) -> Result<f64> {
        let streams = streams.clamp(1, (ids.len().saturating_sub(1)).max(1));
        let per = (ids.len() - 1) / streams;
        if per == 0 {
            return Err(Error::Invalid("text too short to evaluate".into()));
        }
        let rnn = self.rnn.prepare_in(precision);
        let mut state: Option<LmState> = None;
        let (mut total, mut count) = (0.0f64, 0usize);
        let mut pos = 0;
        while pos < per {
            let len = chunk.min(per - pos);
            let mut input = Vec::with_capacity(streams * len);
            let mut target = Vec::with_capacity(streams * len);
            for s in 0..streams {
                let start = s * per + pos;
                input.extend_from_slice(&ids[start..start + len]);
                target.extend(ids[start + 1..start + 1 + len].iter().map(|&t| t as i64));
            }
            let (logits, st) = logits_through(
                &mut self.embedding,
                &rnn,
                &mut self.head,
                &input,
                streams,
                state.as_ref(),
            )?;
            let loss = CrossEntropyLoss::default().forward(&logits, &target, &[target.len()])?;
            total += loss.item() as f64 * target.len() as f64;
            count += target.len();
            state = Some(st);
            pos += len;
        }
        Ok(total / count as f64 / std::f64::consts::LN_2)
    }

    fn forward_train(
        &mut self,
        ids: &[usize],
        batch: usize,
        rng: &mut impl Rng,
    ) -> Result<ArrayD<f32>> {
        let steps = ids.len() / batch;
        self.rnn.train(true);
        self.head.set_training(true);
        let mut x = self.embedding.forward(ids, &[batch, steps])?;
        let x_values = x.as_slice_mut().expect("contiguous");
        self.input_mask.apply(x_values, self.embedding_dropout, rng);
        let out = self
            .rnn
            .forward_train_into(x.view(), None, None, rng, &mut self.tape)?;
        let w = out.output.shape()[2];
        self.shape = Some((batch, steps));
        let mut flat = out
            .output
            .into_shape_with_order(IxDyn(&[batch * steps, w]))
            .expect("contiguous");
        let flat_values = flat.as_slice_mut().expect("contiguous");
        self.output_mask
            .apply(flat_values, self.rnn.config().dropout, rng);
        self.head.forward_owned(flat)
    }

    fn backward(&mut self, grad_logits: &ArrayD<f32>) -> Result<()> {
        let (batch, steps) = self
            .shape
            .take()
            .ok_or_else(|| Error::Invalid("backward without forward_train".into()))?;
        let mut g = self.head.backward(grad_logits)?;
        self.output_mask
            .backward(g.as_slice_mut().expect("contiguous"));
        let w = g.shape()[1];
        let g = g
            .into_shape_with_order(IxDyn(&[batch, steps, w]))
            .expect("contiguous");
        let mut gi = self.rnn.backward(
            &self.tape,
            OutputGrads {
                grad_output: Some(g.view()),
                ..Default::default()
            },
        )?;
        let grad_x = gi.grad_input.as_slice_mut().expect("contiguous");
        self.input_mask.backward(grad_x);
        self.embedding.backward(&gi.grad_input)
    }

    /// Samples `length` characters after `prompt` (which must be non-empty), with
    /// `temperature` and, when `top_k > 0`, only among the `top_k` most likely characters.
    pub fn generate(
        &mut self,
        prompt: &str,
        length: usize,
        temperature: f32,
        top_k: usize,
        rng: &mut impl Rng,
    ) -> Result<String> {
        let ids = self.vocab.encode(prompt)?;
        if ids.is_empty() {
            return Err(Error::Invalid("the prompt must not be empty".into()));
        }
        if temperature.is_nan() || temperature <= 0.0 {
            return Err(Error::Invalid(format!(
                "temperature must be positive, found {temperature}"
            )));
        }
        let rnn = self.rnn.prepare();
        let (embedding, head) = (&mut self.embedding, &mut self.head);
        let (logits, mut state) = logits_through(embedding, &rnn, head, &ids, 1, None)?;
        let v = self.vocab.len();
        let mut last: Vec<f32> =
            logits.as_slice().expect("contiguous")[(ids.len() - 1) * v..].to_vec();
        let mut out = String::new();
        for _ in 0..length {
            let next = sample(&last, temperature, top_k, rng);
            out.push(self.vocab.chars()[next]);
            let (l, s) = logits_through(embedding, &rnn, head, &[next], 1, Some(&state))?;
            last = l.as_slice().expect("contiguous").to_vec();
            state = s;
        }
        Ok(out)
    }

    /// Saves weights, configuration and vocabulary in one safetensors file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        Ensemble {
            members: vec![self.clone()],
        }
        .save(path)
    }

    /// Loads a file written by [`CharLm::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let mut e = Ensemble::<CharLm>::load(path)?;
        Ok(e.members.remove(0))
    }
}

/// Inference logits `(B*T, V)` of `(B, T)` indices through the model's parts, with its
/// recurrent stack prepared once by the caller (see [`CharLm::logits`]).
fn logits_through(
    embedding: &mut Embedding,
    rnn: &PreparedRnn,
    head: &mut Linear,
    ids: &[usize],
    batch: usize,
    state: Option<&LmState>,
) -> Result<(ArrayD<f32>, LmState)> {
    let steps = ids.len() / batch;
    let x = embedding.forward(ids, &[batch, steps])?;
    let init = state.map(|(h, c)| InitialState {
        h0: h.view(),
        c0: c.as_ref().map(|c| c.view()),
    });
    let out = rnn.forward(x.view(), init, None)?;
    let w = out.output.shape()[2];
    let flat = out
        .output
        .into_shape_with_order(IxDyn(&[batch * steps, w]))
        .expect("contiguous");
    head.set_training(false);
    Ok((head.forward(&flat)?, (out.h_n, out.c_n)))
}

/// Draws an index from `softmax(logits / temperature)` restricted to the `top_k` largest.
fn sample(logits: &[f32], temperature: f32, top_k: usize, rng: &mut impl Rng) -> usize {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if top_k > 0 && top_k < logits.len() {
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        idx.truncate(top_k);
    }
    let max = idx
        .iter()
        .map(|&i| logits[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - max) / temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut r = rng.gen::<f64>() * total;
    for (k, w) in weights.iter().enumerate() {
        r -= w;
        if r <= 0.0 {
            return idx[k];
        }
    }
    idx[idx.len() - 1]
}

impl Parameters for CharLm {
    fn named_parameters(&self) -> Vec<(String, &Param)> {
        prefixed(vec![
            ("embedding", self.embedding.named_parameters()),
            ("rnn", self.rnn.named_parameters()),
            ("head", self.head.named_parameters()),
        ])
    }
    fn named_parameters_mut(&mut self) -> Vec<(String, &mut Param)> {
        prefixed_mut(vec![
            ("embedding", self.embedding.named_parameters_mut()),
            ("rnn", self.rnn.named_parameters_mut()),
            ("head", self.head.named_parameters_mut()),
        ])
    }
}

impl TaskModel for CharLm {
    const TASK: &'static str = "lm";
    type Meta = CharLmMeta;
    fn build(config: RnnConfig, meta: CharLmMeta) -> Result<Self> {
        let vocab = Vocabulary::from_chars(meta.vocabulary.chars().collect());
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

/// A language model with its training and validation text (as indices).
pub struct LmTask {
    /// The model.
    pub model: CharLm,
    /// Training text.
    pub train: Vec<usize>,
    /// Validation text.
    pub val: Vec<usize>,
    /// Characters per training sequence.
    pub seq_len: usize,
    /// Training sequences per epoch.
    pub sequences_per_epoch: usize,
}

impl Parameters for LmTask {
    fn named_parameters(&self) -> Vec<(String, &Param)> {
        self.model.named_parameters()
    }
    fn named_parameters_mut(&mut self) -> Vec<(String, &mut Param)> {
        self.model.named_parameters_mut()
    }
}

impl Trainable for LmTask {
    fn train_len(&self) -> usize {
        self.sequences_per_epoch
    }

    fn train_batch(
        &mut self,
        batch: &[usize],
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(f64, usize)> {
        let t = self.seq_len.min(self.train.len() - 1);
        let mut input = Vec::with_capacity(batch.len() * t);
        let mut target = Vec::with_capacity(batch.len() * t);
        for _ in batch {
            let start = rng.gen_range(0..self.train.len() - t);
            input.extend_from_slice(&self.train[start..start + t]);
            target.extend(
                self.train[start + 1..start + 1 + t]
                    .iter()
                    .map(|&v| v as i64),
            );
        }
        let logits = self.model.forward_train(&input, batch.len(), rng)?;
        let loss = CrossEntropyLoss::default().forward(&logits, &target, &[target.len()])?;
        self.model.backward(&loss.grad)?;
        Ok((
            loss.item() as f64 / std::f64::consts::LN_2 * batch.len() as f64,
            batch.len(),
        ))
    }

    /// Validation bits per character, read as up to 32 streams of at least 8192
    /// characters (so that streams starting from zeros barely raise it), with the
    /// recurrent products in the training precision.
    fn validation_loss(&mut self) -> Result<f64> {
        let val = std::mem::take(&mut self.val);
        let streams = (val.len() / 8192).clamp(1, 32);
        let precision = self.model.rnn.precision();
        let r = self.model.bits_per_char_in(&val, streams, 256, precision);
        self.val = val;
        r
    }

    fn metadata(&self) -> Vec<(String, String)> {
        super::metadata_entries(&self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn loss_and_model(model: &mut CharLm, ids: &[usize], targets: &[i64]) -> f64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let logits = model.forward_train(ids, 2, &mut rng).unwrap();
        let loss = CrossEntropyLoss::default()
            .forward(&logits, targets, &[targets.len()])
            .unwrap();
        model.backward(&loss.grad).unwrap();
        loss.item() as f64
    }

    /// The embedding and output dropouts' masks reach the gradient: parameter gradients
    /// match central differences of the loss under the same masks (same random stream). Tolerance: f32
    /// losses differenced over eps = 1e-2, relative 3e-2 of the larger side plus 1e-4.
    #[test]
    fn dropout_gradients_match_finite_differences() {
        let vocab = Vocabulary::from_text("abcde");
        let cfg = RnnConfig::new(crate::Mode::Lstm, 3, 4).with_dropout(0.5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut model = CharLm::new(cfg, vocab, 3, &mut rng).unwrap();
        model.embedding_dropout = 0.3;
        let ids = [0, 1, 2, 3, 4, 0, 2, 1];
        let targets: Vec<i64> = vec![1, 2, 3, 4, 0, 2, 1, 3];
        model.zero_grad();
        loss_and_model(&mut model, &ids, &targets);
        let grads: Vec<(String, Vec<f32>)> = model
            .named_parameters()
            .into_iter()
            .map(|(n, p)| (n, p.grad.clone()))
            .collect();
        const EPS: f32 = 1e-2;
        for (name, grad) in &grads {
            for (i, &g) in grad.iter().enumerate().take(6) {
                let at = |delta: f32| {
                    let mut m = model.clone();
                    let mut params = m.named_parameters_mut();
                    let (_, p) = params.iter_mut().find(|(n, _)| n == name).unwrap();
                    p.value[i] += delta;
                    loss_and_model(&mut m, &ids, &targets)
                };
                let numeric = ((at(EPS) - at(-EPS)) / (2.0 * EPS as f64)) as f32;
                let tol = 1e-4 + 3e-2 * numeric.abs().max(g.abs());
                assert!(
                    (numeric - g).abs() <= tol,
                    "{name}[{i}]: gradient {g} vs finite difference {numeric}"
                );
            }
        }
    }
}
