//! N vs M: an encoder-decoder with attention that maps a token sequence to another of a
//! different length (graphemes to phonemes, dates to their normal form, commands to
//! programs), trained with teacher forcing and decoded by beam search.
//!
//! The encoder is a (bidirectional) recurrent stack over the packed source; its final
//! states start a recurrent decoder of `D * H` units; Luong attention ([`Attention`]) over
//! the encoder's outputs combines each decoder state with its context before the output
//! layer. Without input feeding the decoder reads the whole teacher-forced target in one
//! call of the packed variable-length path.

use crate::config::{Mode, RnnConfig};
use crate::error::{Error, Result};
use crate::loss::CrossEntropyLoss;
use crate::models::{TaskModel, Trainable};
use crate::nn::{Attention, Dropout, Embedding, Linear, Module, Tape};
use crate::param::{accumulate_into_params, GradSlices};
use crate::rnn::{InitialState, OutputGrads, Rnn, RnnOutput, Tape as RnnTape};
use ndarray::{s, ArrayD, ArrayViewD, Axis, IxDyn};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Token id of "unknown" on both sides (a test token never seen in training).
pub const UNK: usize = 0;
/// Target token id that starts decoding.
pub const BOS: usize = 1;
/// Target token id that ends a sequence.
pub const EOS: usize = 2;
/// Ids below this are the special tokens above.
const SPECIALS: usize = 3;

/// How one side of the pairs is split into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokens {
    /// Every character is a token (joined without separator).
    Chars,
    /// Space-separated tokens (joined with one space).
    Words,
}

impl Tokens {
    /// Splits `text` into tokens.
    pub fn split(self, text: &str) -> Vec<String> {
        match self {
            Tokens::Chars => text.chars().map(String::from).collect(),
            Tokens::Words => text.split_whitespace().map(String::from).collect(),
        }
    }

    /// Joins tokens back into text.
    pub fn join(self, tokens: &[&str]) -> String {
        match self {
            Tokens::Chars => tokens.concat(),
            Tokens::Words => tokens.join(" "),
        }
    }

    /// `Words` when most texts contain a space, else `Chars`.
    pub fn detect<'a>(texts: impl IntoIterator<Item = &'a str>) -> Tokens {
        let (mut spaced, mut all) = (0usize, 0usize);
        for t in texts {
            all += 1;
            spaced += usize::from(t.trim().contains(' '));
        }
        if spaced * 2 > all {
            Tokens::Words
        } else {
            Tokens::Chars
        }
    }
}

/// The tokens of one side: ids `0..3` are `<unk>`, `<s>`, `</s>`, then the tokens seen in
/// training in order of first appearance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vocab {
    /// How texts are split.
    pub tokens: Tokens,
    /// Token of each id from 3 on.
    pub entries: Vec<String>,
}

impl Vocab {
    /// The vocabulary of `texts` split by `tokens`.
    pub fn build<'a>(tokens: Tokens, texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut seen = HashMap::new();
        let mut entries = Vec::new();
        for t in texts {
            for tok in tokens.split(t) {
                seen.entry(tok.clone()).or_insert_with(|| {
                    entries.push(tok);
                });
            }
        }
        Vocab { tokens, entries }
    }

    /// Number of ids, special ones included.
    pub fn len(&self) -> usize {
        self.entries.len() + SPECIALS
    }

    /// Whether only the special tokens exist.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Ids of `text`'s tokens ([`UNK`] for unknown ones) and how many were unknown.
    pub fn encode(&self, text: &str) -> (Vec<usize>, usize) {
        let (mut ids, unknown) = self.encode_all([text]);
        (ids.pop().expect("one text"), unknown)
    }

    /// Id of each token.
    fn index(&self) -> HashMap<&str, usize> {
        let ids = SPECIALS..;
        self.entries.iter().map(String::as_str).zip(ids).collect()
    }

    /// Ids of many texts, and the number of unknown tokens among them.
    pub fn encode_all<'a>(
        &self,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> (Vec<Vec<usize>>, usize) {
        let index = self.index();
        let mut unknown = 0;
        let ids = texts
            .into_iter()
            .map(|t| {
                let id = |tok: String| index.get(tok.as_str()).copied();
                let ids: Vec<Option<usize>> = self.tokens.split(t).into_iter().map(id).collect();
                unknown += ids.iter().filter(|i| i.is_none()).count();
                ids.into_iter().map(|i| i.unwrap_or(UNK)).collect()
            })
            .collect();
        (ids, unknown)
    }

    /// Text of `ids` (special tokens other than `<unk>` skipped).
    pub fn decode(&self, ids: &[usize]) -> String {
        let toks: Vec<&str> = ids
            .iter()
            .filter(|&&i| i == UNK || i >= SPECIALS)
            .map(|&i| {
                self.entries
                    .get(i.wrapping_sub(SPECIALS))
                    .map_or("<unk>", String::as_str)
            })
            .collect();
        self.tokens.join(&toks)
    }
}

/// What a [`Seq2Seq`] model file stores besides the weights and the encoder's `config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seq2SeqMeta {
    /// Source tokens.
    pub source: Vocab,
    /// Target tokens.
    pub target: Vocab,
    /// Width of both embeddings (the encoder's and the decoder's input size).
    pub embedding_dim: usize,
    /// The decoder: same mode as the encoder, 1 to its layers, `D * H` units,
    /// unidirectional.
    pub decoder: RnnConfig,
    /// Longest output decoding produces (tokens, `</s>` excluded).
    pub max_target_len: usize,
}

/// The encoder-decoder model (see the module documentation). In training, the recurrent
/// stacks' `dropout` also applies to both embeddings and to the attention output.
#[derive(Debug, Clone)]
pub struct Seq2Seq {
    /// Vocabularies and sizes.
    pub meta: Seq2SeqMeta,
    /// `(source vocabulary, E)`.
    pub source_embedding: Embedding,
    /// `(target vocabulary, E)`.
    pub target_embedding: Embedding,
    /// Over the source: `E` inputs, `H` units per direction, batch first.
    pub encoder: Rnn,
    /// Over the target: `E` inputs, `D * H` units, batch first.
    pub decoder: Rnn,
    /// Decoder states over encoder outputs, `D * H` out.
    pub attention: Attention,
    /// `D * H` to the target vocabulary.
    pub head: Linear,
}

crate::parameters!(Seq2Seq {
    part "source_embedding" => source_embedding;
    part "target_embedding" => target_embedding;
    part "encoder" => encoder;
    part "decoder" => decoder;
    part "attention" => attention;
    part "head" => head;
});

/// The decoder of an encoder: same mode, `layers` layers, `D * H` units, one direction.
pub fn decoder_config(encoder: &RnnConfig, layers: usize) -> RnnConfig {
    RnnConfig::new(
        encoder.mode,
        encoder.input_size,
        encoder.num_directions() * encoder.hidden_size,
    )
    .with_num_layers(layers)
    .with_dropout(encoder.dropout)
    .with_batch_first(true)
}

impl Seq2Seq {
    /// A new model whose decoder has as many layers as `encoder`; `encoder` must be batch
    /// first, LSTM or GRU (or Elman), without projection or layer norm.
    pub fn new(
        encoder: RnnConfig,
        source: Vocab,
        target: Vocab,
        max_target_len: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let layers = encoder.num_layers;
        Self::with_decoder_layers(encoder, layers, source, target, max_target_len, rng)
    }

    /// [`Seq2Seq::new`] with a decoder of `decoder_layers` layers (1 to the encoder's
    /// layers), which start from the final states of the encoder's top `decoder_layers`.
    pub fn with_decoder_layers(
        encoder: RnnConfig,
        decoder_layers: usize,
        source: Vocab,
        target: Vocab,
        max_target_len: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let meta = Seq2SeqMeta {
            embedding_dim: encoder.input_size,
            decoder: decoder_config(&encoder, decoder_layers),
            source,
            target,
            max_target_len,
        };
        <Self as TaskModel>::check_meta(&encoder, &meta)?;
        let width = meta.decoder.hidden_size;
        Ok(Seq2Seq {
            source_embedding: Embedding::new(meta.source.len(), meta.embedding_dim, None, rng)?,
            target_embedding: Embedding::new(meta.target.len(), meta.embedding_dim, None, rng)?,
            encoder: Rnn::new(encoder, rng)?,
            decoder: Rnn::new(meta.decoder.clone(), rng)?,
            attention: Attention::new(width, width, width, rng),
            head: Linear::new(width, meta.target.len(), true, rng),
            meta,
        })
    }

    /// Sets training mode (dropout between layers) of both recurrent stacks.
    pub fn train(&mut self, on: bool) {
        self.encoder.train(on);
        self.decoder.train(on);
    }

    /// Layers and directions of the encoder, and the first of its layers that starts the
    /// decoder.
    fn stack(&self) -> (usize, usize, usize) {
        let c = self.encoder.config();
        let first = c.num_layers - self.meta.decoder.num_layers;
        (c.num_layers, c.num_directions(), first)
    }

    /// Decoder state from the encoder's final one: the top `L_dec` of its `L` layers,
    /// `(L*D, B, H)` to `(L_dec, B, D*H)`, the directions of a layer side by side.
    fn bridge(&self, h_n: &ArrayD<f32>) -> ArrayD<f32> {
        let (layers, dirs, first) = self.stack();
        let (b, h) = (h_n.shape()[1], h_n.shape()[2]);
        let mut out = ArrayD::zeros(IxDyn(&[layers - first, b, dirs * h]));
        for l in first..layers {
            for d in 0..dirs {
                out.slice_mut(s![l - first, .., d * h..(d + 1) * h])
                    .assign(&h_n.index_axis(Axis(0), l * dirs + d));
            }
        }
        out
    }

    /// The inverse of [`Seq2Seq::bridge`], for gradients (zero for the layers below).
    fn unbridge(&self, g: &ArrayD<f32>) -> ArrayD<f32> {
        let (layers, dirs, first) = self.stack();
        let (b, h) = (g.shape()[1], g.shape()[2] / dirs);
        let mut out = ArrayD::zeros(IxDyn(&[layers * dirs, b, h]));
        for l in first..layers {
            for d in 0..dirs {
                out.index_axis_mut(Axis(0), l * dirs + d)
                    .assign(&g.slice(s![l - first, .., d * h..(d + 1) * h]));
            }
        }
        out
    }

    /// The decoder's initial `h0` (and LSTM `c0`), `(L, B, D*H)`, from the encoder's final
    /// states.
    fn decoder_state(&self, enc: &RnnOutput) -> (ArrayD<f32>, Option<ArrayD<f32>>) {
        (
            self.bridge(&enc.h_n),
            enc.c_n.as_ref().map(|c| self.bridge(c)),
        )
    }

    /// Teacher-forced loss of `pairs` (source ids, target ids) and, with `train`, the
    /// gradients of its mean added to the parameters' own. Returns `(sum of token losses,
    /// tokens)`.
    pub fn loss(
        &mut self,
        pairs: &[(&[usize], &[usize])],
        train: Option<&mut rand::rngs::StdRng>,
    ) -> Result<(f64, usize)> {
        let batch = Batch::new(pairs)?;
        let b = pairs.len();
        let mut train = train;
        let training = train.is_some();
        let mut tapes = Seq2SeqTapes::new(train.as_mut().map(|r| r.gen()));
        let dropout = self.dropout()?;
        let x = self.source_embedding.forward(
            &batch.source,
            &[b, batch.source_steps],
            &mut tapes.source,
        )?;
        let x = dropout.forward(&x, &mut tapes.dropout[0])?;
        let y_in = self.target_embedding.forward(
            &batch.target_in,
            &[b, batch.target_steps],
            &mut tapes.target,
        )?;
        let y_in = dropout.forward(&y_in, &mut tapes.dropout[1])?;
        let enc = run_stack(
            &self.encoder,
            (x.view(), None, &batch.source_lengths),
            train.as_deref_mut(),
            &mut tapes.encoder,
        )?;
        let (h0, c0) = self.decoder_state(&enc);
        let state = InitialState {
            h0: h0.view(),
            c0: c0.as_ref().map(|c| c.view()),
        };
        let dec = run_stack(
            &self.decoder,
            (y_in.view(), Some(state), &batch.target_lengths),
            train,
            &mut tapes.decoder,
        )?;
        let att = self.attention.forward(
            &dec.output,
            &enc.output,
            Some(&batch.source_lengths),
            &mut tapes.attention,
        )?;
        let width = self.meta.decoder.hidden_size;
        let flat = dropout
            .forward(&att.output, &mut tapes.dropout[2])?
            .into_shape_with_order(IxDyn(&[b * batch.target_steps, width]))
            .expect("contiguous");
        let logits = self.head.forward_owned(flat, &mut tapes.head)?;
        let loss =
            CrossEntropyLoss::default().forward(&logits, &batch.targets, &[batch.targets.len()])?;
        let tokens = batch.target_lengths.iter().sum::<usize>();
        let total = loss.item() as f64 * tokens as f64;
        if !training {
            return Ok((total, tokens));
        }
        let (enc_tape, dec_tape) = (
            tapes.encoder.take().expect("training"),
            tapes.decoder.take().expect("training"),
        );
        let target_steps = batch.target_steps;
        accumulate_into_params(self, |m, mut grads| {
            m.backward(
                &tapes,
                (&enc_tape, &dec_tape),
                &loss.grad,
                (b, target_steps),
                &mut grads,
            )
        })?;
        Ok((total, tokens))
    }

    /// Backward of [`Seq2Seq::loss`] from the gradient of the logits.
    fn backward(
        &self,
        tapes: &Seq2SeqTapes,
        (enc_tape, dec_tape): (&RnnTape, &RnnTape),
        grad_logits: &ArrayD<f32>,
        (b, target_steps): (usize, usize),
        grads: &mut GradSlices<'_>,
    ) -> Result<()> {
        // One gradient slice per parameter, in the order of the parameters! list.
        let mut src_grads = grads.split(1);
        let mut tgt_grads = grads.split(1);
        let mut enc_grads = grads.split(crate::nn::param_count(&self.encoder));
        let mut dec_grads = grads.split(crate::nn::param_count(&self.decoder));
        let mut att_grads = grads.split(crate::nn::param_count(&self.attention));
        let width = self.meta.decoder.hidden_size;
        let dropout = self.dropout()?;
        let mut no_grads = grads.split(0);
        let g = self
            .head
            .backward(&tapes.head, grad_logits, grads)?
            .into_shape_with_order(IxDyn(&[b, target_steps, width]))
            .expect("contiguous");
        let g = dropout.backward(&tapes.dropout[2], &g, &mut no_grads)?;
        let (d_query, d_memory) = self
            .attention
            .backward(&tapes.attention, &g, &mut att_grads)?;
        let dg = self.decoder.backward_into(
            dec_tape,
            OutputGrads {
                grad_output: Some(d_query.view()),
                ..Default::default()
            },
            &mut dec_grads,
        )?;
        let d_target = dropout.backward(&tapes.dropout[1], &dg.grad_input, &mut no_grads)?;
        self.target_embedding
            .backward(&tapes.target, &d_target, &mut tgt_grads)?;
        let gh = self.unbridge(&dg.grad_h0);
        let gc = dg.grad_c0.as_ref().map(|g| self.unbridge(g));
        let eg = self.encoder.backward_into(
            enc_tape,
            OutputGrads {
                grad_output: Some(d_memory.view()),
                grad_h_n: Some(gh.view()),
                grad_c_n: gc.as_ref().map(|g| g.view()),
                skip_input_grad: false,
            },
            &mut enc_grads,
        )?;
        let d_source = dropout.backward(&tapes.dropout[0], &eg.grad_input, &mut no_grads)?;
        self.source_embedding
            .backward(&tapes.source, &d_source, &mut src_grads)
    }

    /// Dropout of the embeddings and of the attention output: the recurrent stacks'
    /// `dropout` (which they also apply between their layers).
    fn dropout(&self) -> Result<Dropout> {
        Dropout::new(self.encoder.config().dropout)
    }
}

/// Runs `rnn` over `(input, state, lengths)`: with `train`, in training mode, its tape kept
/// in `tape`.
fn run_stack(
    rnn: &Rnn,
    (input, state, lengths): (ArrayViewD<f32>, Option<InitialState>, &[usize]),
    train: Option<&mut rand::rngs::StdRng>,
    tape: &mut Option<RnnTape>,
) -> Result<RnnOutput> {
    match train {
        Some(rng) => {
            let (out, t) = rnn.forward_train(input, state, Some(lengths), rng)?;
            *tape = Some(t);
            Ok(out)
        }
        None => rnn.forward(input, state, Some(lengths)),
    }
}

/// The tapes of one teacher-forced pass.
struct Seq2SeqTapes {
    source: Tape,
    target: Tape,
    /// Dropout of the embedded source, the embedded target and the attention output.
    dropout: [Tape; 3],
    attention: Tape,
    head: Tape,
    encoder: Option<RnnTape>,
    decoder: Option<RnnTape>,
}

impl Seq2SeqTapes {
    /// Training tapes whose dropout masks come from `seed`, or inference tapes.
    fn new(seed: Option<u64>) -> Self {
        let tape =
            |k: u64| seed.map_or_else(Tape::inference, |s| Tape::training(s.wrapping_add(k)));
        Seq2SeqTapes {
            source: tape(0),
            target: tape(1),
            dropout: [tape(2), tape(3), tape(4)],
            attention: tape(5),
            head: tape(6),
            encoder: None,
            decoder: None,
        }
    }
}

/// A padded batch of pairs, batch first.
struct Batch {
    source: Vec<usize>,
    source_steps: usize,
    source_lengths: Vec<usize>,
    /// `<s> y_1 .. y_n`, padded.
    target_in: Vec<usize>,
    target_steps: usize,
    target_lengths: Vec<usize>,
    /// `y_1 .. y_n </s>`, padding ignored (-100).
    targets: Vec<i64>,
}

impl Batch {
    fn new(pairs: &[(&[usize], &[usize])]) -> Result<Self> {
        if pairs.is_empty() || pairs.iter().any(|(s, _)| s.is_empty()) {
            return Err(Error::Invalid(
                "seq2seq: a batch needs pairs with non-empty sources".into(),
            ));
        }
        let source_steps = pairs.iter().map(|(s, _)| s.len()).max().unwrap_or(1);
        let target_steps = pairs.iter().map(|(_, t)| t.len() + 1).max().unwrap_or(1);
        let b = pairs.len();
        let mut batch = Batch {
            source: vec![UNK; b * source_steps],
            source_steps,
            source_lengths: pairs.iter().map(|(s, _)| s.len()).collect(),
            target_in: vec![EOS; b * target_steps],
            target_steps,
            target_lengths: pairs.iter().map(|(_, t)| t.len() + 1).collect(),
            targets: vec![-100; b * target_steps],
        };
        for (i, (s, t)) in pairs.iter().enumerate() {
            batch.source[i * source_steps..i * source_steps + s.len()].copy_from_slice(s);
            let row = i * target_steps;
            batch.target_in[row] = BOS;
            batch.target_in[row + 1..row + 1 + t.len()].copy_from_slice(t);
            for (k, &y) in t.iter().chain(std::iter::once(&EOS)).enumerate() {
                batch.targets[row + k] = y as i64;
            }
        }
        Ok(batch)
    }
}

/// Sources decoded together (times the beam width: rows of one decoder step).
const DECODE_BATCH: usize = 128;

/// A hypothesis of beam search: its tokens and summed log-probability.
#[derive(Debug, Clone)]
struct Hypothesis {
    tokens: Vec<usize>,
    score: f64,
}

impl Hypothesis {
    /// Log-probability per token (`</s>` included): hypotheses of different lengths
    /// compare by it, so the search does not favour short outputs.
    fn normalised(&self) -> f64 {
        self.score / (self.tokens.len() + 1) as f64
    }
}

impl Seq2Seq {
    /// Decodes every source (ids) by beam search of width `beam` (1: greedy); returns
    /// the target ids without `</s>`, at most `max_target_len` of them.
    pub fn decode(&self, sources: &[Vec<usize>], beam: usize) -> Result<Vec<Vec<usize>>> {
        if beam == 0 {
            return Err(Error::Config("beam width must be at least 1".into()));
        }
        let mut out = Vec::with_capacity(sources.len());
        let (encoder, decoder) = (self.encoder.prepare(), self.decoder.prepare());
        for chunk in sources.chunks(DECODE_BATCH) {
            out.extend(self.decode_batch(chunk, beam, (&encoder, &decoder))?);
        }
        Ok(out)
    }

    fn decode_batch(
        &self,
        sources: &[Vec<usize>],
        k: usize,
        (encoder, decoder): (&crate::rnn::PreparedRnn, &crate::rnn::PreparedRnn),
    ) -> Result<Vec<Vec<usize>>> {
        let b = sources.len();
        let pairs: Vec<(&[usize], &[usize])> = sources.iter().map(|s| (&s[..], &[][..])).collect();
        let batch = Batch::new(&pairs)?;
        let x = self.source_embedding.forward(
            &batch.source,
            &[b, batch.source_steps],
            &mut Tape::inference(),
        )?;
        let enc = encoder.forward(x.view(), None, Some(&batch.source_lengths))?;
        // Row `i * k + j` is beam `j` of source `i`.
        let rows: Vec<usize> = (0..b * k).map(|r| r / k).collect();
        let memory = enc.output.select(Axis(0), &rows);
        let memory_lengths: Vec<usize> = rows.iter().map(|&i| batch.source_lengths[i]).collect();
        let (h0, c0) = self.decoder_state(&enc);
        let mut h = h0.select(Axis(1), &rows);
        let mut c = c0.map(|c| c.select(Axis(1), &rows));
        let mut live: Vec<Option<Hypothesis>> = (0..b * k)
            .map(|r| {
                (r % k == 0).then(|| Hypothesis {
                    tokens: Vec::new(),
                    score: 0.0,
                })
            })
            .collect();
        let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); b];
        let width = self.meta.decoder.hidden_size;
        let vocab = self.meta.target.len();
        for step in 0..=self.meta.max_target_len {
            if live.iter().all(Option::is_none) {
                break;
            }
            let prev: Vec<usize> = live
                .iter()
                .map(|hyp| {
                    hyp.as_ref()
                        .and_then(|h| h.tokens.last().copied())
                        .unwrap_or(BOS)
                })
                .collect();
            let e = self
                .target_embedding
                .forward(&prev, &[b * k, 1], &mut Tape::inference())?;
            let state = InitialState {
                h0: h.view(),
                c0: c.as_ref().map(|c| c.view()),
            };
            let out = decoder.forward(e.view(), Some(state), None)?;
            let att = self.attention.forward(
                &out.output,
                &memory,
                Some(&memory_lengths),
                &mut Tape::inference(),
            )?;
            let flat = att
                .output
                .into_shape_with_order(IxDyn(&[b * k, width]))
                .expect("contiguous");
            let logits = self.head.forward_owned(flat, &mut Tape::inference())?;
            let logits = logits.as_slice().expect("standard layout");
            let last = step == self.meta.max_target_len;
            let mut parents = Vec::with_capacity(b * k);
            let mut next: Vec<Option<Hypothesis>> = Vec::with_capacity(b * k);
            for i in 0..b {
                let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
                for j in 0..k {
                    let r = i * k + j;
                    let Some(hyp) = &live[r] else { continue };
                    let row = &logits[r * vocab..(r + 1) * vocab];
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let log_sum = max as f64
                        + row
                            .iter()
                            .map(|&v| ((v - max) as f64).exp())
                            .sum::<f64>()
                            .ln();
                    for (v, &l) in row.iter().enumerate() {
                        candidates.push((hyp.score + l as f64 - log_sum, j, v));
                    }
                }
                candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
                let mut kept = 0;
                for (score, j, v) in candidates {
                    if kept == k || finished[i].len() >= k {
                        break;
                    }
                    let parent = live[i * k + j].as_ref().expect("live");
                    if v == EOS || last {
                        let mut tokens = parent.tokens.clone();
                        if v != EOS {
                            tokens.push(v);
                        }
                        finished[i].push(Hypothesis { tokens, score });
                    } else if v >= SPECIALS || v == UNK {
                        let mut tokens = parent.tokens.clone();
                        tokens.push(v);
                        next.push(Some(Hypothesis { tokens, score }));
                        parents.push(i * k + j);
                        kept += 1;
                    }
                }
                for _ in kept..k {
                    next.push(None);
                    parents.push(i * k);
                }
            }
            live = next;
            h = out.h_n.select(Axis(1), &parents);
            c = out.c_n.as_ref().map(|c| c.select(Axis(1), &parents));
        }
        Ok(finished
            .into_iter()
            .map(|f| {
                f.into_iter()
                    .max_by(|a, b| a.normalised().total_cmp(&b.normalised()))
                    .map(|h| h.tokens)
                    .unwrap_or_default()
            })
            .collect())
    }
}

impl TaskModel for Seq2Seq {
    const TASK: &'static str = "seq2seq";
    type Meta = Seq2SeqMeta;

    fn check_meta(config: &RnnConfig, meta: &Seq2SeqMeta) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("seq2seq: {m}")));
        if meta.embedding_dim != config.input_size {
            return bad(format!(
                "embedding_dim is {}, the encoder's input size {}",
                meta.embedding_dim, config.input_size
            ));
        }
        if !config.batch_first || config.proj_size != 0 {
            return bad("the encoder must be batch first, without projection".into());
        }
        let layers = meta.decoder.num_layers;
        if layers == 0 || layers > config.num_layers {
            return bad(format!(
                "the decoder has {layers} layers, the encoder {}: 1 to the encoder's are allowed",
                config.num_layers
            ));
        }
        if meta.decoder != decoder_config(config, layers) {
            return bad("the decoder does not match the encoder (mode, D * H units)".into());
        }
        for (side, v) in [("source", &meta.source), ("target", &meta.target)] {
            let mut seen = std::collections::HashSet::new();
            if let Some(t) = v
                .entries
                .iter()
                .find(|t| t.is_empty() || !seen.insert(t.as_str()))
            {
                return bad(format!(
                    "the {side} vocabulary has an empty or repeated token {t:?}"
                ));
            }
        }
        if meta.max_target_len == 0 || meta.max_target_len > MAX_TARGET_LEN {
            return bad(format!(
                "max_target_len must be from 1 to {MAX_TARGET_LEN}, found {}",
                meta.max_target_len
            ));
        }
        Ok(())
    }

    fn other_parameters(config: &RnnConfig, meta: &Seq2SeqMeta) -> Option<usize> {
        let (vs, vt, e) = (meta.source.len(), meta.target.len(), meta.embedding_dim);
        let w = meta.decoder.hidden_size;
        let embeddings = vs.checked_add(vt)?.checked_mul(e)?;
        let attention = w.checked_mul(w)?.checked_mul(3)?;
        let head = w.checked_add(1)?.checked_mul(vt)?;
        let _ = config;
        embeddings
            .checked_add(meta.decoder.parameter_count().ok()?)?
            .checked_add(attention)?
            .checked_add(head)
    }

    fn build(config: RnnConfig, meta: Seq2SeqMeta) -> Result<Self> {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let mut m = Seq2Seq::with_decoder_layers(
            config,
            meta.decoder.num_layers,
            meta.source,
            meta.target,
            meta.max_target_len,
            &mut rng,
        )?;
        m.decoder.eval();
        Ok(m)
    }

    fn rnn(&self) -> &Rnn {
        &self.encoder
    }

    fn rnn_mut(&mut self) -> &mut Rnn {
        &mut self.encoder
    }

    fn meta(&self) -> &Seq2SeqMeta {
        &self.meta
    }
}

/// The longest output a model file may ask decoding for.
pub const MAX_TARGET_LEN: usize = 4096;

/// A [`Seq2Seq`] model with its training and validation pairs (ids), for [`fit()`](crate::models::fit()).
pub struct Seq2SeqTask {
    /// The model.
    pub model: Seq2Seq,
    /// Training pairs.
    pub train: Vec<(Vec<usize>, Vec<usize>)>,
    /// Validation pairs.
    pub val: Vec<(Vec<usize>, Vec<usize>)>,
}

crate::parameters!(Seq2SeqTask { inline model; });

impl Trainable for Seq2SeqTask {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_batch(
        &mut self,
        batch: &[usize],
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(f64, usize)> {
        let pairs: Vec<(&[usize], &[usize])> = batch
            .iter()
            .map(|&i| (&self.train[i].0[..], &self.train[i].1[..]))
            .collect();
        self.model.train(true);
        self.model.loss(&pairs, Some(rng))
    }

    fn validation_loss(&mut self) -> Result<f64> {
        self.model.train(false);
        let (mut total, mut tokens) = (0.0, 0);
        for chunk in self.val.chunks(256) {
            let pairs: Vec<(&[usize], &[usize])> =
                chunk.iter().map(|(s, t)| (&s[..], &t[..])).collect();
            let (l, n) = self.model.loss(&pairs, None)?;
            total += l;
            tokens += n;
        }
        Ok(if tokens == 0 {
            0.0
        } else {
            total / tokens as f64
        })
    }

    fn metadata(&self) -> Vec<(String, String)> {
        super::metadata_entries(&self.model)
    }
}

/// Levenshtein distance between two token sequences.
pub fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(x != y);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Scores of predicted sequences against references.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequenceScores {
    /// Summed edit distances over summed reference lengths (phoneme error rate for G2P).
    pub token_error_rate: f64,
    /// Share of predictions not exactly right (word error rate for G2P).
    pub sequence_error_rate: f64,
    /// Share exactly right.
    pub exact_match: f64,
}

impl SequenceScores {
    /// The scores of pairs given as `(edit distance, reference length)` each.
    pub fn from_edits(pairs: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let (mut n, mut edits, mut length, mut exact) = (0usize, 0usize, 0usize, 0usize);
        for (d, len) in pairs {
            n += 1;
            edits += d;
            length += len;
            exact += usize::from(d == 0);
        }
        let n = n.max(1) as f64;
        SequenceScores {
            token_error_rate: edits as f64 / length.max(1) as f64,
            sequence_error_rate: 1.0 - exact as f64 / n,
            exact_match: exact as f64 / n,
        }
    }
}

/// [`SequenceScores`] of `predictions` against `references` (same count, at least one).
pub fn score_sequences(predictions: &[Vec<usize>], references: &[Vec<usize>]) -> SequenceScores {
    let pairs = predictions.iter().zip(references);
    SequenceScores::from_edits(pairs.map(|(p, r)| (edit_distance(p, r), r.len())))
}

/// Default encoder of the `train seq2seq` task: `mode`, embeddings of `embedding_dim`,
/// `hidden_size` units per direction.
pub fn encoder_config(mode: Mode, embedding_dim: usize, hidden_size: usize) -> RnnConfig {
    RnnConfig::new(mode, embedding_dim, hidden_size).with_batch_first(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Ensemble;
    use crate::param::Parameters;
    use rand::SeedableRng;

    fn vocab(tokens: Tokens, texts: &[&str]) -> Vocab {
        Vocab::build(tokens, texts.iter().copied())
    }

    /// A small model: an encoder of `layers.0` layers, a decoder of `layers.1`.
    fn tiny(mode: Mode, bidirectional: bool, layers: (usize, usize), dropout: f32) -> Seq2Seq {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cfg = encoder_config(mode, 5, 4)
            .with_bidirectional(bidirectional)
            .with_num_layers(layers.0)
            .with_dropout(dropout);
        let (s, t) = (
            vocab(Tokens::Chars, &["abc"]),
            vocab(Tokens::Words, &["X Y Z W"]),
        );
        Seq2Seq::with_decoder_layers(cfg, layers.1, s, t, 6, &mut rng).unwrap()
    }

    #[test]
    fn edit_distance_and_scores() {
        assert_eq!(edit_distance(&[1, 2, 3], &[1, 3]), 1);
        assert_eq!(edit_distance::<u8>(&[], &[1, 2]), 2);
        assert_eq!(edit_distance(&[1, 2, 3], &[3, 2, 1]), 2);
        let s = score_sequences(&[vec![3, 4], vec![5]], &[vec![3, 4], vec![6, 5]]);
        assert!((s.token_error_rate - 0.25).abs() < 1e-12);
        assert!((s.sequence_error_rate - 0.5).abs() < 1e-12 && (s.exact_match - 0.5).abs() < 1e-12);
    }

    #[test]
    fn vocabularies_split_join_and_mark_unknown_tokens() {
        assert_eq!(Tokens::detect(["a b", "c d", "e"]), Tokens::Words);
        assert_eq!(Tokens::detect(["ab", "cd", "e f"]), Tokens::Chars);
        let v = vocab(Tokens::Words, &["K AE1 T", "AE1 T"]);
        assert_eq!(v.len(), 6);
        let (ids, unknown) = v.encode("K IH1 T");
        assert_eq!((ids, unknown), (vec![3, UNK, 5], 1));
        assert_eq!(v.decode(&[3, 4, EOS]), "K AE1");
    }

    /// The loss's gradient along random directions of every parameter tensor against
    /// central finite differences, for LSTM and GRU, one or two layers (and a one-layer
    /// decoder on a two-layer encoder), uni- and bidirectional encoders, variable lengths, with and without dropout (the same seed
    /// draws the same masks in every evaluation). Tolerance: f32 losses of size ~1 with
    /// step 1e-2 leave about 1e-3 of error in a difference quotient.
    #[test]
    fn gradients_match_finite_differences() {
        let pairs: Vec<(Vec<usize>, Vec<usize>)> = vec![
            (vec![3, 4, 5], vec![3, 4]),
            (vec![5], vec![6, 5, 4]),
            (vec![4, 3], vec![]),
        ];
        let refs: Vec<(&[usize], &[usize])> = pairs.iter().map(|(s, t)| (&s[..], &t[..])).collect();
        let cases = [
            (Mode::Lstm, true, (2, 2), 0.0),
            (Mode::Gru, false, (1, 1), 0.0),
            (Mode::Lstm, true, (2, 1), 0.3),
            (Mode::Gru, true, (2, 1), 0.0),
        ];
        for (mode, bidirectional, layers, dropout) in cases {
            let mut m = tiny(mode, bidirectional, layers, dropout);
            m.zero_grad();
            let seeded = || rand::rngs::StdRng::seed_from_u64(0);
            let (total, tokens) = m.loss(&refs, Some(&mut seeded())).unwrap();
            assert_eq!(tokens, 3 + 4 + 1);
            let mean = |m: &mut Seq2Seq| {
                let (t, n) = m.loss(&refs, Some(&mut seeded())).unwrap();
                t / n as f64
            };
            if dropout == 0.0 {
                let (t, n) = m.clone().loss(&refs, None).unwrap();
                assert!((t / n as f64 - total / tokens as f64).abs() < 1e-5);
            }
            assert!((mean(&mut m.clone()) - total / tokens as f64).abs() < 1e-5);
            let grads: Vec<(String, Vec<f32>)> = m
                .named_parameters()
                .into_iter()
                .map(|(n, p)| (n, p.grad.clone()))
                .collect();
            let mut dir_rng = rand::rngs::StdRng::seed_from_u64(3);
            for (name, grad) in grads {
                let dir: Vec<f32> = (0..grad.len())
                    .map(|_| dir_rng.gen_range(-1.0..1.0))
                    .collect();
                let analytic: f64 = grad.iter().zip(&dir).map(|(g, d)| (g * d) as f64).sum();
                let eps = 1e-2f32;
                let shifted = |sign: f32| {
                    let mut c = m.clone();
                    let mut params = c.named_parameters_mut();
                    let p = params.iter_mut().find(|(n, _)| *n == name).unwrap();
                    p.1.value
                        .iter_mut()
                        .zip(&dir)
                        .for_each(|(v, d)| *v += sign * eps * d);
                    mean(&mut c)
                };
                let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps as f64);
                let tol = 2e-3 * (1.0 + numeric.abs());
                assert!(
                    (analytic - numeric).abs() <= tol,
                    "{mode:?} {name}: {analytic} vs {numeric}"
                );
            }
        }
    }

    /// Learns to reverse short strings; greedy and beam decoding find them, and a saved
    /// and reloaded model decodes the same.
    #[test]
    fn learns_to_reverse_and_survives_a_round_trip() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let letters = ["a", "b", "c", "d", "e"];
        let v = vocab(Tokens::Chars, &["abcde"]);
        let cfg = encoder_config(Mode::Gru, 16, 32).with_bidirectional(true);
        let model = Seq2Seq::new(cfg, v.clone(), v, 8, &mut rng).unwrap();
        let mut sample = |n: usize| -> Vec<(Vec<usize>, Vec<usize>)> {
            (0..n)
                .map(|_| {
                    let len = rng.gen_range(1..=4);
                    let s: Vec<usize> = (0..len)
                        .map(|_| 3 + rng.gen_range(0..letters.len()))
                        .collect();
                    let t = s.iter().rev().copied().collect();
                    (s, t)
                })
                .collect()
        };
        let (train, val, test) = (sample(1024), sample(64), sample(100));
        let mut task = Seq2SeqTask { model, train, val };
        let settings = crate::models::FitSettings {
            epochs: 25,
            time_budget: None,
            batch_size: 32,
            lr: 5e-3,
            seed: 0,
            patience: usize::MAX,
            clip_norm: 1.0,
            anneal: false,
            checkpoint: None,
            resume: false,
        };
        crate::models::fit(&mut task, &settings, &mut crate::models::Silent).unwrap();
        let mut model = task.model;
        model.train(false);
        let sources: Vec<Vec<usize>> = test.iter().map(|(s, _)| s.clone()).collect();
        let references: Vec<Vec<usize>> = test.iter().map(|(_, t)| t.clone()).collect();
        for beam in [1, 3] {
            let predicted = model.decode(&sources, beam).unwrap();
            let scores = score_sequences(&predicted, &references);
            assert!(scores.exact_match >= 0.9, "beam {beam}: {scores:?}");
        }
        let bytes = Ensemble {
            members: vec![model.clone()],
        }
        .to_bytes()
        .unwrap();
        let file = crate::io::TensorFile::from_bytes(&bytes, "model").unwrap();
        let loaded = Ensemble::<Seq2Seq>::from_file(&file).unwrap();
        assert_eq!(
            loaded.members[0].decode(&sources, 3).unwrap(),
            model.decode(&sources, 3).unwrap()
        );
    }
}
