//! [`SequenceClassifier`]: N vs 1 models — a recurrent stack, mean and max pooling over each
//! sequence's valid steps, and a linear layer giving class logits.

use super::fcn::{self, FcnBranch, FcnTape};
use super::fit::Trainable;
use super::{Ensemble, TaskModel};
use crate::config::{Mode, RnnConfig};
use crate::data::Standardizer;
use crate::distributed::{Collective, Share};
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
    /// The network (files without this entry hold the recurrent-only model).
    #[serde(default)]
    pub architecture: Architecture,
}

/// The classifier's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// The recurrent stack, mean and max pooled, then the linear layer.
    #[default]
    Lstm,
    /// LSTM-FCN (Karim et al. 2018): the recurrent branch beside a fully convolutional one
    /// ([`FcnBranch`]) over the unpatched series, their features concatenated before the
    /// linear layer.
    LstmFcn,
}

impl std::str::FromStr for Architecture {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "lstm" => Ok(Architecture::Lstm),
            "lstm-fcn" => Ok(Architecture::LstmFcn),
            _ => Err(Error::Config(format!(
                "unknown architecture {s:?}; expected \"lstm\" or \"lstm-fcn\""
            ))),
        }
    }
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
    /// The convolutional branch of [`Architecture::LstmFcn`].
    pub fcn: Option<FcnBranch>,
    /// `(C, 2 * D_out [+ 128])` head on `[mean, max]` pooled outputs (and the convolutional
    /// features).
    pub head: Linear,
    /// Labels and scaling.
    pub meta: ClassifierMeta,
}

/// What a training forward pass of a [`SequenceClassifier`] keeps for its backward pass.
#[derive(Debug)]
pub struct ClassifierTape {
    rnn: rnn::Tape,
    fcn: FcnTape,
    head: nn::Tape,
    pooled: Option<PoolRecord>,
}

impl Default for ClassifierTape {
    fn default() -> Self {
        ClassifierTape {
            rnn: rnn::Tape::default(),
            fcn: FcnTape::default(),
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
        let fcn = match meta.architecture {
            Architecture::Lstm => None,
            Architecture::LstmFcn => Some(FcnBranch::new(meta.scaler.mean.len(), rng)?),
        };
        let fcn_width = if fcn.is_some() { fcn::BLOCKS[2].0 } else { 0 };
        let head = Linear::new(2 * width + fcn_width, meta.classes.len(), true, rng);
        Ok(SequenceClassifier {
            rnn,
            fcn,
            head,
            meta,
        })
    }

    /// Scales and pads sequences into the convolutional branch's channels-last
    /// `(B, T_max, D)` input (no patching) plus their lengths.
    pub fn conv_batch(&self, seqs: &[&Array2<f32>]) -> Result<(ArrayD<f32>, Vec<usize>)> {
        self.scaled_batch(seqs, 1)
    }

    /// The head's input: the pooled recurrent features, then the convolutional ones.
    fn features(&self, pooled: ArrayD<f32>, conv: Option<ArrayD<f32>>) -> ArrayD<f32> {
        match conv {
            None => pooled,
            Some(conv) => ndarray::concatenate(ndarray::Axis(1), &[pooled.view(), conv.view()])
                .expect("same batch"),
        }
    }

    /// Applies BatchNorm's running-statistics updates of the training pass that filled
    /// `tape` (once per pass).
    pub fn update_buffers(&mut self, tape: &ClassifierTape) {
        if let Some(fcn) = &mut self.fcn {
            fcn.update_buffers(&tape.fcn);
        }
    }

    /// Scales, patches and pads sequences into a `(B, T_max, patch * D)` batch plus the
    /// lengths in recurrent steps.
    pub fn batch(&self, seqs: &[&Array2<f32>]) -> Result<(ArrayD<f32>, Vec<usize>)> {
        self.scaled_batch(seqs, self.meta.patch.max(1))
    }

    /// Scales sequences and groups every `p` consecutive steps into one:
    /// `(B, ceil(T_max / p), p * D)`, zero-padded, plus the lengths in grouped steps.
    fn scaled_batch(&self, seqs: &[&Array2<f32>], p: usize) -> Result<(ArrayD<f32>, Vec<usize>)> {
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
        let conv = match &self.fcn {
            None => None,
            Some(fcn) => {
                let (xc, lc) = self.conv_batch(seqs)?;
                Some(fcn.forward(&xc, &lc, None, None)?)
            }
        };
        let features = self.features(pooled, conv);
        self.head.forward(&features, &mut nn::Tape::inference())
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
        self.forward_train_in(seqs, rng, tape, None)
    }

    /// [`SequenceClassifier::forward_train`] on a rank of `group`, whose batches the
    /// convolutional branch normalises together (see [`FcnBranch::forward`]).
    pub fn forward_train_in(
        &self,
        seqs: &[&Array2<f32>],
        rng: &mut impl Rng,
        tape: &mut ClassifierTape,
        group: Option<&dyn Collective>,
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
        let conv = match &self.fcn {
            None => None,
            Some(fcn) => {
                let (xc, lc) = self.conv_batch(seqs)?;
                Some(fcn.forward(&xc, &lc, Some(&mut tape.fcn), group)?)
            }
        };
        let features = self.features(pooled, conv);
        self.head.forward(&features, &mut tape.head)
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
        self.backward_in(tape, grad_logits, grads, None)
    }

    /// [`SequenceClassifier::backward`] of a [`SequenceClassifier::forward_train_in`] on a
    /// rank of `group`.
    pub fn backward_in(
        &self,
        tape: &ClassifierTape,
        grad_logits: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
        group: Option<&dyn Collective>,
    ) -> Result<()> {
        let cache = tape.pooled.as_ref().ok_or_else(|| {
            Error::Invalid("SequenceClassifier.backward needs a forward_train tape".into())
        })?;
        let mut rnn_grads = grads.split(nn::param_count(&self.rnn));
        let mut fcn_grads = grads.split(nn::param_count(&self.fcn));
        let g_features = self.head.backward(&tape.head, grad_logits, grads)?;
        let w2 = 2 * cache.out_shape[2];
        let g_pooled = g_features.slice_axis(ndarray::Axis(1), (0..w2).into());
        if let Some(fcn) = &self.fcn {
            let g_conv = g_features
                .slice_axis(ndarray::Axis(1), (w2..g_features.shape()[1]).into())
                .to_owned();
            fcn.backward(&tape.fcn, &g_conv, &mut fcn_grads, group)?;
        }
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

crate::parameters!(SequenceClassifier {
    part "rnn" => rnn;
    part "fcn" => fcn;
    part "head" => head;
});

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
        // The output layer reads the pooled `2 * D * H_out` features (and the
        // convolutional branch's).
        let mut width = config
            .num_directions()
            .checked_mul(config.output_size())?
            .checked_mul(2)?;
        let mut branch = 0;
        if meta.architecture == Architecture::LstmFcn {
            width = width.checked_add(fcn::BLOCKS[2].0)?;
            branch = FcnBranch::parameter_count(meta.scaler.mean.len())?;
        }
        width
            .checked_add(1)?
            .checked_mul(meta.classes.len())?
            .checked_add(branch)
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

    /// Forward and backward on the examples `batch`, accumulating the gradient of their
    /// mean loss, or as one of `ranks` that of their summed loss (the units of
    /// [`Trainable::train_share`]; the convolutional branch normalises with the ranks'
    /// statistics). Returns the summed loss and the number of examples.
    fn run_batch(
        &mut self,
        batch: &[usize],
        rng: &mut rand::rngs::StdRng,
        ranks: Option<&dyn Collective>,
    ) -> Result<(f64, usize)> {
        let seqs: Vec<&Array2<f32>> = batch.iter().map(|&i| &self.train.0[i]).collect();
        let targets: Vec<i64> = batch.iter().map(|&i| self.train.1[i] as i64).collect();
        let logits = self
            .model
            .forward_train_in(&seqs, rng, &mut self.tape, ranks)?;
        self.model.update_buffers(&self.tape);
        let mut loss = self.loss().forward(&logits, &targets, &[targets.len()])?;
        if ranks.is_some() {
            loss.grad.mapv_inplace(|g| g * batch.len() as f32);
        }
        let tape = &self.tape;
        accumulate_into_params(&mut self.model, |m, mut g| {
            m.backward_in(tape, &loss.grad, &mut g, ranks)
        })?;
        Ok((loss.item() as f64 * batch.len() as f64, batch.len()))
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
        self.run_batch(batch, rng, None)
    }

    /// The default share ([`Trainable::train_share`]); with the convolutional branch, its
    /// batch norm takes the statistics of all the ranks' shares (synchronised, so the
    /// ranks compute the whole batch's gradient), a rank without examples taking part.
    fn train_share(
        &mut self,
        batch: &[usize],
        collective: &dyn Collective,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(f64, usize)> {
        let (part, mut own) = Share::of(collective).part(batch, rng);
        if part.is_empty() {
            if let Some(fcn) = &self.model.fcn {
                fcn.take_part(collective, &mut self.tape.fcn)?;
                self.model.update_buffers(&self.tape);
            }
            return Ok((0.0, 0));
        }
        self.run_batch(part, &mut own, Some(collective))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::{Grads, Parameters};
    use rand::SeedableRng;

    fn lstm_fcn() -> (SequenceClassifier, Vec<Array2<f32>>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let meta = ClassifierMeta {
            classes: vec!["a".into(), "b".into(), "c".into()],
            scaler: Standardizer {
                mean: vec![0.0, 0.0],
                std: vec![1.0, 1.0],
            },
            patch: 2,
            architecture: Architecture::LstmFcn,
        };
        let cfg = RnnConfig::new(Mode::Gru, 4, 3);
        let model = SequenceClassifier::new(cfg, meta, &mut rng).unwrap();
        let seqs = [9, 6, 11]
            .iter()
            .map(|&len| Array2::from_shape_fn((len, 2), |_| rng.gen_range(-1.0f32..1.0)))
            .collect();
        (model, seqs)
    }

    /// `sum(logits * r)` of a training pass over sequences of different lengths.
    fn loss(m: &SequenceClassifier, seqs: &[Array2<f32>], r: &ArrayD<f32>) -> f64 {
        let refs: Vec<&Array2<f32>> = seqs.iter().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let logits = m
            .forward_train(&refs, &mut rng, &mut ClassifierTape::default())
            .unwrap();
        logits
            .iter()
            .zip(r)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
    }

    /// Gradients of LSTM-FCN (recurrent branch, each convolution block with its masked
    /// BatchNorm and ReLU, pooling, head) match central differences. The loss is only
    /// piecewise smooth (ReLU), and one probed weight lies within 2e-3 of a kink, so the
    /// step is 1e-4; the f32 loss (about 1, rounded to ~1e-7) then differences to ~1e-3,
    /// hence 2e-3 absolute + 2e-2 relative.
    #[test]
    fn lstm_fcn_gradients_match_finite_differences() {
        let (mut m, seqs) = lstm_fcn();
        let refs: Vec<&Array2<f32>> = seqs.iter().collect();
        let mut tape = ClassifierTape::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let logits = m.forward_train(&refs, &mut rng, &mut tape).unwrap();
        let r = logits.mapv(|v| (v * 7.0).sin());
        let mut grads = Grads::zeros_for(&m);
        m.backward(&tape, &r, &mut grads.slices()).unwrap();
        let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        for (k, name) in names.iter().enumerate() {
            let wanted = [
                "rnn.weight_hh_l0",
                "fcn.block1.conv.weight",
                "fcn.block2.bn.weight",
            ];
            if !(wanted.contains(&name.as_str())
                || name.starts_with("head")
                || name.ends_with("conv.bias"))
            {
                continue;
            }
            for i in (0..grads.part(k).len()).step_by(97).take(4) {
                const H: f32 = 1e-4;
                let at = |m: &mut SequenceClassifier, d: f32| {
                    m.visit_params_mut(&mut crate::param::Visitor::new(&mut |n, p| {
                        if n == name {
                            p.value[i] += d;
                        }
                    }));
                };
                at(&mut m, H);
                let up = loss(&m, &seqs, &r);
                at(&mut m, -2.0 * H);
                let down = loss(&m, &seqs, &r);
                at(&mut m, H);
                let numeric = ((up - down) / (2.0 * H as f64)) as f32;
                let g = grads.part(k)[i];
                assert!(
                    (numeric - g).abs() <= 2e-3 + 2e-2 * numeric.abs().max(g.abs()),
                    "{name}[{i}]: gradient {g} vs finite difference {numeric}"
                );
            }
        }
    }

    /// A saved LSTM-FCN (running statistics included) predicts exactly as before saving.
    #[test]
    fn lstm_fcn_round_trips_through_a_file() {
        let (mut m, seqs) = lstm_fcn();
        let refs: Vec<&Array2<f32>> = seqs.iter().collect();
        let mut tape = ClassifierTape::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        m.forward_train(&refs, &mut rng, &mut tape).unwrap();
        m.update_buffers(&tape);
        let before = m.logits(&refs).unwrap();
        let bytes = Ensemble { members: vec![m] }.to_bytes().unwrap();
        let file = crate::io::TensorFile::from_bytes(&bytes, "mem").unwrap();
        let loaded = Ensemble::<SequenceClassifier>::from_file(&file).unwrap();
        assert_eq!(loaded.members[0].logits(&refs).unwrap(), before);
    }
}
