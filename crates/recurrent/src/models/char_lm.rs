//! [`CharLm`]: a character-level language model — embedding, recurrent stack, linear
//! layer over the vocabulary — with held-out bits per character and sampling.

use super::fit::Trainable;
use super::{Ensemble, TaskModel};
use crate::config::RnnConfig;
use crate::data::Vocabulary;
use crate::error::{Error, Result};
use crate::kernels::Precision;
use crate::layer::team;
use crate::loss::CrossEntropyLoss;
use crate::nn::dropout::{apply_mask, dropout_in_place};
use crate::nn::{Embedding, Linear, Module};
use crate::param::Parameters;
use crate::rnn::{InitialState, OutputGrads, PreparedRnn, Rnn, Tape};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};
use rand::Rng;
use rand::SeedableRng;
use rayon::prelude::*;
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

    /// Training logits `(B*T, V)` of `(B, T)` indices from `state` (zeros if `None`; no
    /// gradient flows into it), and the final state.
    fn forward_train(
        &mut self,
        ids: &[usize],
        batch: usize,
        state: Option<&LmState>,
        rng: &mut impl Rng,
    ) -> Result<(ArrayD<f32>, LmState)> {
        let steps = ids.len() / batch;
        self.rnn.train(true);
        self.head.set_training(true);
        let mut x = self.embedding.forward(ids, &[batch, steps])?;
        let x_values = x.as_slice_mut().expect("contiguous");
        self.input_mask.apply(x_values, self.embedding_dropout, rng);
        let init = state.map(initial_state);
        let out = self
            .rnn
            .forward_train_into(x.view(), init, None, rng, &mut self.tape)?;
        let w = out.output.shape()[2];
        self.shape = Some((batch, steps));
        let mut flat = out
            .output
            .into_shape_with_order(IxDyn(&[batch * steps, w]))
            .expect("contiguous");
        let flat_values = flat.as_slice_mut().expect("contiguous");
        self.output_mask
            .apply(flat_values, self.rnn.config().dropout, rng);
        Ok((self.head.forward_owned(flat)?, (out.h_n, out.c_n)))
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
        let mut out = String::new();
        self.generate_each(prompt, length, temperature, top_k, rng, |c| {
            out.push(c);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`CharLm::generate`], handing each character to `emit` as soon as it is sampled
    /// (to stream it), in constant memory whatever `length`; an error from `emit` stops
    /// the sampling and is returned.
    pub fn generate_each(
        &mut self,
        prompt: &str,
        length: usize,
        temperature: f32,
        top_k: usize,
        rng: &mut impl Rng,
        mut emit: impl FnMut(char) -> Result<()>,
    ) -> Result<()> {
        let ids = self.vocab.encode(prompt)?;
        if ids.is_empty() {
            return Err(Error::Invalid("the prompt must not be empty".into()));
        }
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "temperature must be positive and finite, found {temperature}"
            )));
        }
        let rnn = self.rnn.prepare();
        let (embedding, head) = (&mut self.embedding, &mut self.head);
        let (logits, mut state) = logits_through(embedding, &rnn, head, &ids, 1, None)?;
        let v = self.vocab.len();
        let mut last: Vec<f32> =
            logits.as_slice().expect("contiguous")[(ids.len() - 1) * v..].to_vec();
        for _ in 0..length {
            let next = sample(&last, temperature, top_k, rng);
            emit(self.vocab.chars()[next])?;
            let (l, s) = logits_through(embedding, &rnn, head, &[next], 1, Some(&state))?;
            last = l.as_slice().expect("contiguous").to_vec();
            state = s;
        }
        Ok(())
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
    let init = state.map(initial_state);
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

/// A language model with its training and validation text (as indices).
///
/// Training reads the text as `B` streams, one per row of a batch, each a contiguous run
/// of windows of `seq_len` characters with the recurrent state carried from one window to
/// the next (truncated backpropagation through time). Every epoch starts the streams at a
/// new random offset, evenly spaced through the text, from zero states; a stream that
/// reaches the end of the text starts again at its beginning from a zero state. With
/// `carry_state` off, every row is a window at a random place, from a zero state.
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
    /// Carry the state between consecutive windows of a stream (see [`LmTask`]).
    pub carry_state: bool,
    streams: Streams,
    /// Copies of the model for the batch's shards after the first (see [`SHARD_ROWS`]).
    replicas: Vec<CharLm>,
}

/// Rows of a training batch per shard. A batch of more rows is split into shards that run
/// forward and backward at the same time, each on its own copy of the model with its
/// share of the threads, and their gradients are summed: the shards' time loops need no
/// synchronisation at each step, unlike one loop split by hidden units. The split depends
/// on the batch size only, so results do not depend on the thread count.
pub const SHARD_ROWS: usize = 16;

/// One shard's rows of a batch: `rows` sequences of indices and targets, their carried
/// state and the seed of their dropout masks.
struct Shard {
    rows: usize,
    input: Vec<usize>,
    target: Vec<i64>,
    state: Option<LmState>,
    seed: u64,
}

impl Shard {
    /// Forward and backward on `model` (gradients accumulated) with the gradient of the
    /// shard's mean loss scaled by `weight` (its share of the batch); returns the sum over
    /// its sequences of their mean bits per character, and the final state.
    fn run(self, model: &mut CharLm, weight: f32) -> Result<(f64, LmState)> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let (logits, last) =
            model.forward_train(&self.input, self.rows, self.state.as_ref(), &mut rng)?;
        let mut loss =
            CrossEntropyLoss::default().forward(&logits, &self.target, &[self.target.len()])?;
        loss.grad.mapv_inplace(|g| g * weight);
        model.backward(&loss.grad)?;
        let bits = loss.item() as f64 / std::f64::consts::LN_2 * self.rows as f64;
        Ok((bits, last))
    }
}

/// The shards' final states joined along the batch axis, in shard order.
fn join_states(ends: &[(f64, LmState)]) -> LmState {
    let join = |parts: Vec<ArrayViewD<f32>>| {
        ndarray::concatenate(Axis(1), &parts).expect("same layer and hidden sizes")
    };
    let h = join(ends.iter().map(|(_, (h, _))| h.view()).collect());
    let c = ends
        .iter()
        .map(|(_, (_, c))| c.as_ref().map(|c| c.view()))
        .collect::<Option<Vec<_>>>();
    (h, c.map(join))
}

/// Where each training stream is and the state it ends in.
#[derive(Debug, Default)]
struct Streams {
    /// Next window's first character, per stream; empty before an epoch's first batch.
    positions: Vec<usize>,
    /// Random offset of this epoch's streams.
    offset: usize,
    /// The streams' state after the last batch (`h` and `c` as `(layers, streams, H)`).
    state: Option<LmState>,
}

impl LmTask {
    /// A task with the state carried between windows.
    pub fn new(
        model: CharLm,
        train: Vec<usize>,
        val: Vec<usize>,
        seq_len: usize,
        sequences_per_epoch: usize,
    ) -> Self {
        LmTask {
            model,
            train,
            val,
            seq_len,
            sequences_per_epoch,
            carry_state: true,
            streams: Streams::default(),
            replicas: Vec::new(),
        }
    }

    /// Makes `shards - 1` replicas with the model's values, settings and zero gradients.
    fn sync_replicas(&mut self, shards: usize) {
        self.replicas.truncate(shards - 1);
        while self.replicas.len() < shards - 1 {
            self.replicas.push(self.model.clone());
        }
        for r in &mut self.replicas {
            r.embedding_dropout = self.model.embedding_dropout;
            r.rnn.set_precision(self.model.rnn.precision());
            let source = self.model.named_parameters();
            for ((_, dst), (_, src)) in r.named_parameters_mut().into_iter().zip(source) {
                dst.value.copy_from_slice(&src.value);
                dst.zero_grad();
            }
        }
    }

    /// Adds the replicas' gradients to the model's.
    fn gather_gradients(&mut self) {
        let mut params = self.model.named_parameters_mut();
        for r in &self.replicas {
            for ((_, dst), (_, src)) in params.iter_mut().zip(r.named_parameters()) {
                dst.grad
                    .iter_mut()
                    .zip(&src.grad)
                    .for_each(|(a, g)| *a += g);
            }
        }
    }

    /// The batch of windows starting at `starts` (`t` characters each, with `state`'s rows)
    /// in shards of at most [`SHARD_ROWS`] rows, each with a dropout seed drawn from `rng`.
    fn shards(
        &self,
        starts: &[usize],
        t: usize,
        state: Option<&LmState>,
        rng: &mut impl Rng,
    ) -> Vec<Shard> {
        let per_shard = starts.len().div_ceil(starts.len().div_ceil(SHARD_ROWS));
        let text = &self.train;
        starts
            .chunks(per_shard)
            .enumerate()
            .map(|(k, starts)| {
                let first = k * per_shard;
                let own_rows = |a: &ArrayD<f32>| {
                    a.slice_axis(Axis(1), (first..first + starts.len()).into())
                        .to_owned()
                };
                Shard {
                    rows: starts.len(),
                    input: starts
                        .iter()
                        .flat_map(|&p| &text[p..p + t])
                        .copied()
                        .collect(),
                    target: starts
                        .iter()
                        .flat_map(|&p| &text[p + 1..p + 1 + t])
                        .map(|&v| v as i64)
                        .collect(),
                    state: state.map(|(h, c)| (own_rows(h), c.as_ref().map(own_rows))),
                    seed: rng.gen(),
                }
            })
            .collect()
    }

    /// First characters of the batch's windows (`batch` of them), advancing the streams
    /// and zeroing the carried state of any that start again.
    fn window_starts(&mut self, batch: usize, t: usize, rng: &mut impl Rng) -> Vec<usize> {
        let len = self.train.len();
        if !self.carry_state {
            self.streams.state = None;
            return (0..batch).map(|_| rng.gen_range(0..len - t)).collect();
        }
        let s = &mut self.streams;
        if s.positions.is_empty() {
            s.positions = (0..batch)
                .map(|j| (s.offset + j * len / batch) % len)
                .collect();
            s.state = None;
        }
        let mut starts = Vec::with_capacity(batch);
        for j in 0..batch.min(s.positions.len()) {
            if s.positions[j] + t >= len {
                s.positions[j] = 0;
                if let Some((h, c)) = &mut s.state {
                    h.index_axis_mut(Axis(1), j).fill(0.0);
                    if let Some(c) = c {
                        c.index_axis_mut(Axis(1), j).fill(0.0);
                    }
                }
            }
            starts.push(s.positions[j]);
            s.positions[j] += t;
        }
        starts
    }
}

crate::parameters!(LmTask { inline model; });

impl Trainable for LmTask {
    fn train_len(&self) -> usize {
        self.sequences_per_epoch
    }

    fn begin_epoch(&mut self, rng: &mut rand::rngs::StdRng) {
        self.streams = Streams {
            offset: rng.gen_range(0..self.train.len()),
            ..Streams::default()
        };
    }

    fn train_batch(
        &mut self,
        batch: &[usize],
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(f64, usize)> {
        let t = self.seq_len.min(self.train.len() - 1);
        let starts = self.window_starts(batch.len(), t, rng);
        let b = starts.len();
        let state = self.streams.state.take();
        let parts = self.shards(&starts, t, state.as_ref(), rng);
        self.sync_replicas(parts.len());
        let threads = (rayon::current_num_threads() / parts.len()).max(1);
        let models: Vec<&mut CharLm> = std::iter::once(&mut self.model)
            .chain(self.replicas.iter_mut())
            .collect();
        let results = models
            .into_par_iter()
            .zip(parts)
            .map(|(model, shard)| {
                let weight = shard.rows as f32 / b as f32;
                team::with_limit(threads, || shard.run(model, weight))
            })
            .collect::<Result<Vec<(f64, LmState)>>>()?;
        self.gather_gradients();
        if self.carry_state {
            self.streams.state = Some(join_states(&results));
        }
        let bits: f64 = results.iter().map(|(bits, _)| bits).sum();
        Ok((bits, b))
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
        let (logits, _) = model.forward_train(ids, 2, None, &mut rng).unwrap();
        let loss = CrossEntropyLoss::default()
            .forward(&logits, targets, &[targets.len()])
            .unwrap();
        model.backward(&loss.grad).unwrap();
        loss.item() as f64
    }

    /// Consecutive training batches continue each stream where the last one stopped, with
    /// its state: the second batch's loss equals that of the windows' second halves when
    /// both windows run as one sequence from zeros (no dropout, f32). Streams are evenly
    /// spaced from the epoch's offset, and one that reaches the end of the text starts
    /// again from a zero state. Tolerance: 1e-5 relative (the training and inference passes
    /// sum in different orders).
    #[test]
    fn carried_state_continues_each_stream() {
        let text: Vec<usize> = (0..400).map(|i| (i * i + 3 * i) % 7).collect();
        let vocab = Vocabulary::from_text("abcdefg");
        let cfg = RnnConfig::new(crate::Mode::Lstm, 4, 6);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let model = CharLm::new(cfg, vocab, 4, &mut rng).unwrap();
        let (t, b) = (10, 3);
        let mut task = LmTask::new(model, text.clone(), vec![0, 1, 2], t, 100);
        task.begin_epoch(&mut rng);
        task.streams.offset = 5;
        let first = [5, 5 + 400 / 3, 5 + 2 * 400 / 3];
        task.train_batch(&[0; 3], &mut rng).unwrap();
        assert_eq!(task.streams.positions, first.map(|p| p + t));
        let (second, _) = task.train_batch(&[0; 3], &mut rng).unwrap();

        // Reference: each stream's two windows as one sequence from zeros.
        let ids: Vec<usize> = first
            .iter()
            .flat_map(|&p| text[p..p + 2 * t].to_vec())
            .collect();
        let (logits, _) = task.model.logits(&ids, b, None).unwrap();
        let v = logits.shape()[1];
        let mut reference = 0.0;
        for (j, &p) in first.iter().enumerate() {
            for k in t..2 * t {
                let z = &logits.as_slice().unwrap()[(j * 2 * t + k) * v..][..v];
                let max = z.iter().cloned().fold(f32::MIN, f32::max);
                let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
                reference += ((lse - z[text[p + k + 1]]) / std::f32::consts::LN_2) as f64;
            }
        }
        reference /= t as f64;
        assert!(
            (second - reference).abs() <= 1e-5 * reference,
            "second batch {second} bits vs one pass {reference}"
        );

        // A stream at the end of the text starts again at 0 from zeros; the others go on.
        task.streams.positions[0] = 400 - t;
        let carried = task.streams.state.clone().unwrap();
        let starts = task.window_starts(b, t, &mut rng);
        assert_eq!(starts, vec![0, first[1] + 2 * t, first[2] + 2 * t]);
        let (h, c) = task.streams.state.as_ref().unwrap();
        for (now, before) in [
            (h, &carried.0),
            (c.as_ref().unwrap(), carried.1.as_ref().unwrap()),
        ] {
            assert!(now.index_axis(Axis(1), 0).iter().all(|&x| x == 0.0));
            assert_eq!(now.index_axis(Axis(1), 1), before.index_axis(Axis(1), 1));
            assert!(before.index_axis(Axis(1), 0).iter().any(|&x| x != 0.0));
        }
    }

    /// A batch of several shards gives the gradients, loss and final state of the whole
    /// batch in one pass (no dropout, so the passes differ only in summation order): 35
    /// rows make shards of 12, 12 and 11. Tolerance: 1e-5 of the largest gradient of each
    /// parameter, 1e-5 relative for the loss, 1e-6 for the state (f32 sums of a few hundred
    /// terms).
    #[test]
    fn shards_give_the_whole_batch_gradient() {
        let text: Vec<usize> = (0..2000).map(|i| (i * i + 5 * i) % 9).collect();
        let vocab = Vocabulary::from_text("abcdefghi");
        let cfg = RnnConfig::new(crate::Mode::Lstm, 5, 7).with_num_layers(2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let model = CharLm::new(cfg, vocab, 5, &mut rng).unwrap();
        let (t, b) = (6, 2 * SHARD_ROWS + 3);
        let mut task = LmTask::new(model, text.clone(), vec![0, 1, 2], t, 100);
        task.begin_epoch(&mut rng);
        task.streams.offset = 11;
        task.model.zero_grad();
        let (bits, rows) = task
            .train_batch(&[0; 2 * SHARD_ROWS + 3], &mut rng)
            .unwrap();
        assert_eq!((rows, task.replicas.len()), (b, 2));

        let mut whole = task.model.clone();
        whole.zero_grad();
        let starts: Vec<usize> = (0..b).map(|j| 11 + j * 2000 / b).collect();
        let input: Vec<usize> = starts
            .iter()
            .flat_map(|&p| text[p..p + t].to_vec())
            .collect();
        let target: Vec<i64> = starts
            .iter()
            .flat_map(|&p| text[p + 1..p + 1 + t].iter().map(|&v| v as i64))
            .collect();
        let (logits, (h_n, _)) = whole.forward_train(&input, b, None, &mut rng).unwrap();
        let loss = CrossEntropyLoss::default()
            .forward(&logits, &target, &[target.len()])
            .unwrap();
        whole.backward(&loss.grad).unwrap();
        let reference = loss.item() as f64 / std::f64::consts::LN_2 * b as f64;
        assert!(
            (bits - reference).abs() <= 1e-5 * reference,
            "{bits} vs {reference}"
        );
        for ((name, sharded), (_, one)) in task
            .model
            .named_parameters()
            .into_iter()
            .zip(whole.named_parameters())
        {
            let scale = one.grad.iter().fold(0f32, |m, g| m.max(g.abs()));
            for (a, e) in sharded.grad.iter().zip(&one.grad) {
                assert!((a - e).abs() <= 1e-5 * scale, "{name}: {a} vs {e}");
            }
        }
        let (h, _) = task.streams.state.as_ref().unwrap();
        assert_eq!(h.shape(), h_n.shape());
        for (a, e) in h.iter().zip(&h_n) {
            assert!((a - e).abs() <= 1e-6, "state {a} vs {e}");
        }
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
