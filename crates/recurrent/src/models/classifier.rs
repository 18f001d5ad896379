//! [`SequenceClassifier`]: N vs 1 models — a recurrent stack, mean and max pooling over each
//! sequence's valid steps, and a linear layer giving class logits.

use super::fit::Trainable;
use super::{Ensemble, TaskModel};
use crate::config::{Mode, RnnConfig};
use crate::data::Standardizer;
use crate::error::{Error, Result};
use crate::loss::CrossEntropyLoss;
use crate::nn::{self, Linear, Module};
use crate::param::{accumulate_into_params, GradSlices};
use crate::rnn::{self, OutputGrads, Rnn};
use ndarray::{Array2, ArrayD, IxDyn};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// What a classifier file stores besides its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierMeta {
    /// Class labels, by output index.
    pub classes: Vec<String>,
    /// Input scaling fitted on the training data.
    pub scaler: Standardizer,
    /// Consecutive steps grouped into one recurrent step (`(T, D)` is read as
    /// `(ceil(T / patch), patch * D)`, zero-padded): long univariate series become short
    /// multivariate ones, which recurrent layers learn far more easily.
    #[serde(default = "one")]
    pub patch: usize,
}

fn one() -> usize {
    1
}

impl ClassifierMeta {
    /// A patch length for sequences of up to `max_len` steps: about 32 recurrent steps.
    pub fn auto_patch(max_len: usize) -> usize {
        (max_len / 32).max(1)
    }
}

/// A sequence classifier. Input sequences `(T_i, D)` of any lengths; output `(B, C)` logits.
#[derive(Debug, Clone)]
pub struct SequenceClassifier {
    /// The recurrent stack (batch-first).
    pub rnn: Rnn,
    /// `(C, 2 * D_out)` head on `[mean, max]` pooled outputs.
    pub head: Linear,
    /// Labels and scaling.
    pub meta: ClassifierMeta,
}

/// What a training forward pass of a [`SequenceClassifier`] keeps for its backward pass.
#[derive(Debug)]
pub struct ClassifierTape {
    rnn: rnn::Tape,
    head: nn::Tape,
    pooled: Option<PoolRecord>,
}

impl Default for ClassifierTape {
    fn default() -> Self {
        ClassifierTape {
            rnn: rnn::Tape::default(),
            head: nn::Tape::training(0),
            pooled: None,
        }
    }
}

/// Each sequence's length, the step of every maximum, and the recurrent output's shape.
#[derive(Debug, Clone)]
struct PoolRecord {
    lengths: Vec<usize>,
    argmax: Vec<usize>,
    out_shape: Vec<usize>,
}

impl SequenceClassifier {
    /// A new model; `config.input_size` must equal the scaler's feature count.
    pub fn new(config: RnnConfig, meta: ClassifierMeta, rng: &mut impl Rng) -> Result<Self> {
        let config = config.with_batch_first(true);
        let width = config.num_directions() * config.output_size();
        let rnn = Rnn::new(config, rng)?;
        let head = Linear::new(2 * width, meta.classes.len(), true, rng);
        Ok(SequenceClassifier { rnn, head, meta })
    }

    /// Scales, patches and pads sequences into a `(B, T_max, patch * D)` batch plus the
    /// lengths in recurrent steps.
    pub fn batch(&self, seqs: &[&Array2<f32>]) -> Result<(ArrayD<f32>, Vec<usize>)> {
        let p = self.meta.patch.max(1);
        let d = self.meta.scaler.mean.len();
        let lengths: Vec<usize> = seqs.iter().map(|s| s.nrows().div_ceil(p)).collect();
        let t_max = lengths.iter().copied().max().unwrap_or(0);
        let mut x = ArrayD::zeros(IxDyn(&[seqs.len(), t_max, p * d]));
        for (b, s) in seqs.iter().enumerate() {
            if s.ncols() != d {
                return Err(Error::shape("sequence", format!("(T, {d})"), s.shape()));
            }
            if s.nrows() == 0 {
                return Err(Error::Invalid(format!("sequence {b} is empty")));
            }
            for (t, row) in s.rows().into_iter().enumerate() {
                let mut r: Vec<f32> = row.to_vec();
                self.meta.scaler.apply(&mut r);
                for (k, v) in r.into_iter().enumerate() {
                    x[[b, t / p, (t % p) * d + k]] = v;
                }
            }
        }
        Ok((x, lengths))
    }

    /// Mean and max over valid steps of `(B, T, W)` outputs: `(B, 2W)`, plus the argmax steps.
    fn pool(out: &ArrayD<f32>, lengths: &[usize]) -> (ArrayD<f32>, Vec<usize>) {
        let (b, w) = (out.shape()[0], out.shape()[2]);
        let mut pooled = ArrayD::zeros(IxDyn(&[b, 2 * w]));
        let mut argmax = vec![0; b * w];
        for (i, &len) in lengths.iter().enumerate() {
            for k in 0..w {
                let (mut sum, mut best, mut at) = (0.0, f32::NEG_INFINITY, 0);
                for t in 0..len {
                    let v = out[[i, t, k]];
                    sum += v;
                    if v > best {
                        best = v;
                        at = t;
                    }
                }
                pooled[[i, k]] = sum / len as f32;
                pooled[[i, w + k]] = best;
                argmax[i * w + k] = at;
            }
        }
        (pooled, argmax)
    }

    /// Class logits `(B, C)` in inference mode.
    pub fn logits(&self, seqs: &[&Array2<f32>]) -> Result<ArrayD<f32>> {
        let (x, lengths) = self.batch(seqs)?;
        let out = self.rnn.forward(x.view(), None, Some(&lengths))?;
        let (pooled, _) = Self::pool(&out.output, &lengths);
        self.head.forward(&pooled, &mut nn::Tape::inference())
    }

    /// Predicted class index of each sequence, evaluated in chunks of `batch` sequences.
    pub fn predict(&self, seqs: &[Array2<f32>], batch: usize) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(batch.max(1)) {
            let refs: Vec<&Array2<f32>> = chunk.iter().collect();
            let logits = self.logits(&refs)?;
            for row in logits.outer_iter() {
                let best = row
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |a, (i, &v)| if v > a.1 { (i, v) } else { a },
                    );
                out.push(best.0);
            }
        }
        Ok(out)
    }

    /// Training-mode logits `(B, C)`; `tape` keeps what [`SequenceClassifier::backward`]
    /// needs.
    pub fn forward_train(
        &self,
        seqs: &[&Array2<f32>],
        rng: &mut impl Rng,
        tape: &mut ClassifierTape,
    ) -> Result<ArrayD<f32>> {
        let (x, lengths) = self.batch(seqs)?;
        let out =
            self.rnn
                .forward_train_into(x.view(), None, Some(&lengths), rng, &mut tape.rnn)?;
        let (pooled, argmax) = Self::pool(&out.output, &lengths);
        tape.pooled = Some(PoolRecord {
            lengths,
            argmax,
            out_shape: out.output.shape().to_vec(),
        });
        self.head.forward(&pooled, &mut tape.head)
    }

    /// Backward of the [`SequenceClassifier::forward_train`] that filled `tape`, from the
    /// gradient of the logits: parameter gradients are added to `grads` (one slice per
    /// parameter, in [`crate::Parameters`] order).
    pub fn backward(
        &self,
        tape: &ClassifierTape,
        grad_logits: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<()> {
        let cache = tape.pooled.as_ref().ok_or_else(|| {
            Error::Invalid("SequenceClassifier.backward needs a forward_train tape".into())
        })?;
        let mut rnn_grads = grads.split(nn::param_count(&self.rnn));
        let g_pooled = self.head.backward(&tape.head, grad_logits, grads)?;
        let w = cache.out_shape[2];
        let mut g_out = ArrayD::zeros(IxDyn(&cache.out_shape));
        for (i, &len) in cache.lengths.iter().enumerate() {
            for k in 0..w {
                let gm = g_pooled[[i, k]] / len as f32;
                for t in 0..len {
                    g_out[[i, t, k]] += gm;
                }
                g_out[[i, cache.argmax[i * w + k], k]] += g_pooled[[i, w + k]];
            }
        }
        self.rnn.backward_into(
            &tape.rnn,
            OutputGrads {
                grad_output: Some(g_out.view()),
                skip_input_grad: true,
                ..Default::default()
            },
            &mut rnn_grads,
        )?;
        Ok(())
    }

    /// Class probabilities `(B, C)` in inference mode.
    pub fn probabilities(&self, seqs: &[&Array2<f32>]) -> Result<ArrayD<f32>> {
        let mut p = self.logits(seqs)?;
        for mut row in p.outer_iter_mut() {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            row.mapv_inplace(|v| (v - max).exp());
            let sum = row.sum();
            row.mapv_inplace(|v| v / sum);
        }
        Ok(p)
    }
}

/// Several classifiers trained from different seeds; predictions average their class
/// probabilities, which is steadier than any single small model on small data sets.
pub type ClassifierEnsemble = Ensemble<SequenceClassifier>;

impl Ensemble<SequenceClassifier> {
    /// Mean class probabilities `(N, C)`, evaluated in chunks of `batch` sequences.
    pub fn probabilities(&self, seqs: &[Array2<f32>], batch: usize) -> Result<Vec<Vec<f32>>> {
        let c = self.meta().classes.len();
        let mut out = vec![vec![0.0f32; c]; seqs.len()];
        let k = self.members.len() as f32;
        for m in &self.members {
            for (start, chunk) in (0..seqs.len())
                .step_by(batch.max(1))
                .zip(seqs.chunks(batch.max(1)))
            {
                let refs: Vec<&Array2<f32>> = chunk.iter().collect();
                let p = m.probabilities(&refs)?;
                for (i, row) in p.outer_iter().enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        out[start + i][j] += v / k;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Predicted class index of each sequence.
    pub fn predict(&self, seqs: &[Array2<f32>], batch: usize) -> Result<Vec<usize>> {
        Ok(self
            .probabilities(seqs, batch)?
            .iter()
            .map(|p| {
                p.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |a, (i, &v)| if v > a.1 { (i, v) } else { a },
                    )
                    .0
            })
            .collect())
    }
}

crate::parameters!(SequenceClassifier { part "rnn" => rnn; part "head" => head; });

impl TaskModel for SequenceClassifier {
    const TASK: &'static str = "classify";
    type Meta = ClassifierMeta;
    fn check_meta(config: &RnnConfig, meta: &ClassifierMeta) -> Result<()> {
        let dims = meta.scaler.mean.len();
        if meta.scaler.std.len() != dims {
            return Err(Error::Config(format!(
                "the scaler has {dims} means and {} standard deviations",
                meta.scaler.std.len()
            )));
        }
        if meta.patch.checked_mul(dims) != Some(config.input_size) {
            return Err(Error::Config(format!(
                "patch {} times {dims} features must equal the recurrent input size {}",
                meta.patch, config.input_size
            )));
        }
        if meta.classes.len() < 2 {
            return Err(Error::Config(format!(
                "{} classes; at least 2 are needed",
                meta.classes.len()
            )));
        }
        Ok(())
    }
    fn other_parameters(config: &RnnConfig, meta: &ClassifierMeta) -> Option<usize> {
        // The output layer reads the pooled `2 * D * H_out` features.
        let width = config
            .num_directions()
            .checked_mul(config.output_size())?
            .checked_mul(2)?;
        width.checked_add(1)?.checked_mul(meta.classes.len())
    }
    fn build(config: RnnConfig, meta: ClassifierMeta) -> Result<Self> {
        SequenceClassifier::new(
            config,
            meta,
            &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0),
        )
    }
    fn rnn(&self) -> &Rnn {
        &self.rnn
    }
    fn rnn_mut(&mut self) -> &mut Rnn {
        &mut self.rnn
    }
    fn meta(&self) -> &ClassifierMeta {
        &self.meta
    }
}

/// A classifier with its training and validation sets (already label-encoded).
pub struct ClassificationTask {
    /// The model.
    pub model: SequenceClassifier,
    /// Training sequences and class indices.
    pub train: (Vec<Array2<f32>>, Vec<usize>),
    /// Validation sequences and class indices.
    pub val: (Vec<Array2<f32>>, Vec<usize>),
    /// Label smoothing of the training loss.
    pub label_smoothing: f32,
    tape: ClassifierTape,
}

impl ClassificationTask {
    /// A task training `model` on `train`, validated on `val`.
    pub fn new(
        model: SequenceClassifier,
        train: (Vec<Array2<f32>>, Vec<usize>),
        val: (Vec<Array2<f32>>, Vec<usize>),
        label_smoothing: f32,
    ) -> Self {
        let mut model = model;
        model.rnn.train(true);
        ClassificationTask {
            model,
            train,
            val,
            label_smoothing,
            tape: ClassifierTape::default(),
        }
    }

    fn loss(&self) -> CrossEntropyLoss {
        CrossEntropyLoss {
            label_smoothing: self.label_smoothing,
            ..Default::default()
        }
    }
}

crate::parameters!(ClassificationTask { inline model; });

impl Trainable for ClassificationTask {
    fn train_len(&self) -> usize {
        self.train.0.len()
    }

    fn train_batch(
        &mut self,
        batch: &[usize],
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(f64, usize)> {
        let seqs: Vec<&Array2<f32>> = batch.iter().map(|&i| &self.train.0[i]).collect();
        let targets: Vec<i64> = batch.iter().map(|&i| self.train.1[i] as i64).collect();
        let logits = self.model.forward_train(&seqs, rng, &mut self.tape)?;
        let loss = self.loss().forward(&logits, &targets, &[targets.len()])?;
        let tape = &self.tape;
        accumulate_into_params(&mut self.model, |m, mut g| {
            m.backward(tape, &loss.grad, &mut g)
        })?;
        Ok((loss.item() as f64 * batch.len() as f64, batch.len()))
    }

    fn validation_loss(&mut self) -> Result<f64> {
        if self.val.0.is_empty() {
            return Ok(0.0);
        }
        let mut total = 0.0;
        for (chunk, labels) in self.val.0.chunks(64).zip(self.val.1.chunks(64)) {
            let refs: Vec<&Array2<f32>> = chunk.iter().collect();
            let logits = self.model.logits(&refs)?;
            let targets: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
            let loss = CrossEntropyLoss::default().forward(&logits, &targets, &[targets.len()])?;
            total += loss.item() as f64 * labels.len() as f64;
        }
        Ok(total / self.val.0.len() as f64)
    }

    fn metadata(&self) -> Vec<(String, String)> {
        super::metadata_entries(&self.model)
    }
}

/// `Mode` and sizes for a default classifier (used by the CLI and examples).
pub fn default_classifier_config(mode: Mode, input_size: usize, hidden_size: usize) -> RnnConfig {
    RnnConfig::new(mode, input_size, hidden_size).with_batch_first(true)
}
