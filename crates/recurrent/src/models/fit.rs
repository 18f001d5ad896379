//! The training loop shared by the task models: shuffled mini-batches, Adam, gradient
//! clipping, validation after every epoch, early stopping with the best weights kept,
//! an epoch and/or time budget, progress reports, and checkpoints to resume from; on several
//! ranks of a [`Collective`], synchronous data parallelism (see [`fit_on`]).

use super::data_parallel;
use crate::distributed::{Collective, Share};
use crate::error::{Error, Result};
use crate::io::{TensorFile, TensorWriter};
use crate::optim::{clip_grad_norm, Adam, Optimizer, OptimizerState};
use crate::param::Parameters;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A model with its training and validation data.
pub trait Trainable: Parameters {
    /// Number of training examples.
    fn train_len(&self) -> usize;
    /// Forward and backward on the training examples `batch`; gradients are accumulated
    /// for the batch's mean loss. Returns `(sum of losses, number of loss terms)`.
    fn train_batch(
        &mut self,
        batch: &[usize],
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(f64, usize)>;
    /// Called at the start of every epoch, before its first batch, with the epoch's
    /// random stream (after it shuffled the examples).
    fn begin_epoch(&mut self, _rng: &mut rand::rngs::StdRng) {}
    /// Data parallelism: forward and backward on this rank's share of `batch` only (its
    /// [`Share::of`] `collective`, which the model may also use to exchange what its
    /// shares need from each other), accumulating `count` times the gradient of the mean
    /// of the share's loss terms (the gradient of their sum, in the units of the count),
    /// so that the ranks' gradients summed and divided by the summed counts are the whole
    /// batch's. Returns `(sum of losses, count)` of the share, `(0, 0)` for an empty one.
    /// Every rank draws the same numbers from `rng`.
    ///
    /// The default runs [`Trainable::train_batch`] on the share's contiguous part of
    /// `batch` with a random stream of its own (one seed per share drawn from `rng`):
    /// without random numbers in training (no dropout) the ranks compute exactly the
    /// whole batch's gradient; with dropout their masks differ from those of one process
    /// (same distribution). A model that splits its batches into fixed shards (the
    /// character LM) can give every rank its shards with their own streams instead.
    fn train_share(
        &mut self,
        batch: &[usize],
        collective: &dyn Collective,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(f64, usize)> {
        let (part, mut own) = Share::of(collective).part(batch, rng);
        if part.is_empty() {
            return Ok((0.0, 0));
        }
        let (loss, count) = self.train_batch(part, &mut own)?;
        data_parallel::scale_grads(self, count as f32);
        Ok((loss, count))
    }
    /// Mean loss on the validation data (inference mode).
    fn validation_loss(&mut self) -> Result<f64>;
    /// Data parallelism: this rank's part of the validation, `(sum, weight)` such that the
    /// ranks' sums over their weights summed is [`Trainable::validation_loss`]. The
    /// default has rank 0 compute it all: `(loss, 1)` there, `(0, 0)` elsewhere.
    fn validation_share(&mut self, collective: &dyn Collective) -> Result<(f64, f64)> {
        if collective.rank() == 0 {
            Ok((self.validation_loss()?, 1.0))
        } else {
            Ok((0.0, 0.0))
        }
    }
    /// Metadata describing the model (stored in checkpoints and model files).
    fn metadata(&self) -> Vec<(String, String)>;
}

/// Settings of [`fit`].
#[derive(Debug, Clone)]
pub struct FitSettings {
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Stop after this much training time (checked between batches).
    pub time_budget: Option<Duration>,
    /// Examples per batch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the shuffling and dropout streams.
    pub seed: u64,
    /// Epochs without validation improvement before stopping.
    pub patience: usize,
    /// Gradient-norm clipping threshold.
    pub clip_norm: f32,
    /// Anneal the learning rate to zero along a cosine over the run (measured by the time
    /// budget when there is one, else by epochs).
    pub anneal: bool,
    /// Where to write a checkpoint after every epoch (and read it with `resume`).
    pub checkpoint: Option<PathBuf>,
    /// Continue from `checkpoint`.
    pub resume: bool,
}

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Seconds since the start of training (across resumes).
    pub seconds: f64,
}

/// What [`fit`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Per-epoch history.
    pub history: Vec<EpochRecord>,
    /// Epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    /// Its validation loss.
    pub best_val_loss: f64,
    /// Why training stopped (`"epochs"`, `"early_stopping"` or `"time_budget"` in JSON).
    pub stopped_by: StoppedBy,
    /// Training seconds (across resumes).
    pub seconds: f64,
    /// Training examples processed per second.
    pub examples_per_second: f64,
    /// Seconds of the training spent summing the gradients over the ranks (waiting for
    /// the slowest rank included; 0 in one process).
    #[serde(default)]
    pub communication_seconds: f64,
}

/// Why [`fit`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoppedBy {
    /// The epoch limit was reached.
    Epochs,
    /// The validation loss stopped improving for `patience` epochs.
    EarlyStopping,
    /// The time budget ran out.
    TimeBudget,
}

/// Progress callbacks (a progress bar, log lines, or nothing).
pub trait Progress {
    /// Called after each batch with the epoch, batch index, batch count and running loss.
    fn batch(
        &mut self,
        _epoch: usize,
        _batch: usize,
        _batches: usize,
        _loss: f64,
        _examples_per_second: f64,
    ) {
    }
    /// Called after each epoch.
    fn epoch(&mut self, _record: &EpochRecord, _improved: bool) {}
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FitState {
    epoch: usize,
    best_epoch: usize,
    best_val_loss: f64,
    bad_epochs: usize,
    seconds: f64,
    examples: f64,
    history: Vec<EpochRecord>,
    finished: Option<StoppedBy>,
    #[serde(default)]
    communication_seconds: f64,
}

/// Trains `model` and leaves the best weights (lowest validation loss) in it, on the
/// process-wide collective ([`crate::distributed::current`]: one process unless a program
/// installed another).
pub fn fit(
    model: &mut dyn Trainable,
    settings: &FitSettings,
    progress: &mut dyn Progress,
) -> Result<FitReport> {
    fit_on(model, settings, progress, crate::distributed::current())
}

/// [`fit`] on the ranks of `collective`: every rank calls it with the same model, data and
/// settings. Rank 0's weights (or its checkpoint, with `resume`) start every rank; each
/// global batch of `batch_size` examples is split between the ranks
/// ([`Trainable::train_share`]), their gradients summed before clipping and the optimizer
/// step, so every rank takes the same step; buffers (batch-norm statistics) are averaged
/// after it. The ranks share the validation ([`Trainable::validation_share`]; by default
/// rank 0 does it all), whose summed loss and every rank's clock (the time budget ends the
/// run when it ends on any rank) decide for all; rank 0 alone reports progress and writes
/// checkpoints. With one rank this is [`fit`] as it always was.
///
/// An error on one rank leaves the others waiting in their next collective operation:
/// end the job with [`Collective::abort`] after reporting it.
pub fn fit_on(
    model: &mut dyn Trainable,
    settings: &FitSettings,
    progress: &mut dyn Progress,
    collective: &dyn Collective,
) -> Result<FitReport> {
    let parallel = collective.size() > 1;
    let root = collective.rank() == 0;
    let mut silent = Silent;
    let progress: &mut dyn Progress = if root { progress } else { &mut silent };
    let mut opt = Adam::new(settings.lr);
    let mut state = FitState {
        epoch: 0,
        best_epoch: 0,
        best_val_loss: f64::INFINITY,
        bad_epochs: 0,
        seconds: 0.0,
        examples: 0.0,
        history: Vec::new(),
        finished: None,
        communication_seconds: 0.0,
    };
    let checkpoint = match settings.resume.then_some(settings.checkpoint.as_ref()) {
        Some(None) => Err(Error::Invalid(
            "resuming needs the checkpoint path of the stopped run (FitSettings::checkpoint)"
                .into(),
        )),
        Some(Some(path)) if root => crate::io::read_bounded(path).map(Some),
        _ => Ok(None),
    };
    let bytes = if parallel {
        data_parallel::share_checkpoint(checkpoint, collective)?
    } else {
        checkpoint?
    };
    let shown = settings.checkpoint.as_deref().map(Path::display);
    let checkpoint = match (bytes, shown) {
        (Some(bytes), Some(path)) => Some(TensorFile::from_bytes(&bytes, &path.to_string())?),
        _ => None,
    };
    if parallel && checkpoint.is_none() {
        data_parallel::share_weights(model, collective)?;
    }
    let mut best: Vec<Vec<f32>> = values(model);
    if let Some(file) = checkpoint {
        let (s, b) = load_checkpoint(&file, model, &mut opt)?;
        state = s;
        // A run stopped by its time budget or epoch limit continues (up to this run's
        // limits); one that stopped early on its validation loss stays ended.
        let more_epochs = state.epoch < settings.epochs;
        match state.finished {
            Some(StoppedBy::TimeBudget) => state.finished = None,
            Some(StoppedBy::Epochs) if more_epochs => state.finished = None,
            _ => {}
        }
        best = b;
    }
    if state.finished.is_none() && model.train_len() == 0 {
        return Err(Error::Invalid("no training examples".into()));
    }
    let start = Instant::now();
    let seconds_before = state.seconds;
    let batch_size = settings.batch_size.max(1);
    while state.finished.is_none() {
        if state.epoch >= settings.epochs {
            state.finished = Some(StoppedBy::Epochs);
            break;
        }
        let epoch = state.epoch + 1;
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            settings
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(epoch as u64),
        );
        let mut order: Vec<usize> = (0..model.train_len()).collect();
        order.shuffle(&mut rng);
        model.begin_epoch(&mut rng);
        let batches: Vec<&[usize]> = order.chunks(batch_size).collect();
        let (mut loss_sum, mut loss_count) = (0.0, 0usize);
        let mut out_of_time = false;
        for (bi, batch) in batches.iter().enumerate() {
            if settings.anneal {
                let by_time = settings
                    .time_budget
                    .map_or(0.0, |b| start.elapsed().as_secs_f64() / b.as_secs_f64());
                let by_epoch = if settings.epochs == usize::MAX {
                    0.0
                } else {
                    (state.epoch as f64 + bi as f64 / batches.len() as f64) / settings.epochs as f64
                };
                let progress = by_time.max(by_epoch).min(1.0);
                opt.set_lr(settings.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            }
            model.zero_grad();
            let diverged = |cause: String| Error::Diverged {
                epoch,
                batch: bi + 1,
                cause,
            };
            let result = if parallel {
                model.train_share(batch, collective, &mut rng)
            } else {
                model.train_batch(batch, &mut rng)
            };
            let (mut l, mut c) = match result {
                Err(Error::NonFinite { name, value, .. }) => {
                    return Err(diverged(format!("`{name}` holds {value}")))
                }
                result => result?,
            };
            if parallel {
                let local_out_of_time = settings.time_budget.is_some_and(|b| start.elapsed() >= b);
                let begun = Instant::now();
                let sum = data_parallel::sum_gradients(model, collective, l, c, local_out_of_time)?;
                state.communication_seconds += begun.elapsed().as_secs_f64();
                (l, c, out_of_time) = (sum.loss, sum.count, sum.out_of_time);
            }
            if !l.is_finite() {
                return Err(diverged(format!("the loss is {l}")));
            }
            clip_grad_norm(&mut model.named_parameters_mut(), settings.clip_norm, 2.0);
            opt.step(&mut model.named_parameters_mut());
            if parallel {
                data_parallel::average_buffers(model, collective)?;
            }
            loss_sum += l;
            loss_count += c;
            state.examples += batch.len() as f64;
            let elapsed = seconds_before + start.elapsed().as_secs_f64();
            progress.batch(
                epoch,
                bi + 1,
                batches.len(),
                loss_sum / loss_count.max(1) as f64,
                state.examples / elapsed.max(1e-9),
            );
            if !parallel {
                out_of_time = settings.time_budget.is_some_and(|b| start.elapsed() >= b);
            }
            if out_of_time {
                break;
            }
        }
        let val = if parallel {
            let (sum, weight) = model.validation_share(collective)?;
            let mut totals = [sum, weight];
            collective.all_reduce_sum_f64(&mut totals)?;
            totals[0] / totals[1]
        } else {
            model.validation_loss()?
        };
        state.epoch = epoch;
        state.seconds = seconds_before + start.elapsed().as_secs_f64();
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / loss_count.max(1) as f64,
            val_loss: val,
            seconds: state.seconds,
        };
        let improved = val < state.best_val_loss;
        if improved {
            state.best_val_loss = val;
            state.best_epoch = epoch;
            state.bad_epochs = 0;
            best = values(model);
        } else {
            state.bad_epochs += 1;
        }
        progress.epoch(&record, improved);
        state.history.push(record);
        if out_of_time {
            state.finished = Some(StoppedBy::TimeBudget);
        } else if state.bad_epochs >= settings.patience {
            state.finished = Some(StoppedBy::EarlyStopping);
        } else if state.epoch >= settings.epochs {
            state.finished = Some(StoppedBy::Epochs);
        }
        if let Some(path) = settings.checkpoint.as_ref().filter(|_| root) {
            save_checkpoint(path, model, &opt, &state, &best)?;
        }
    }
    set_values(model, &best);
    Ok(FitReport {
        best_epoch: state.best_epoch,
        best_val_loss: state.best_val_loss,
        stopped_by: state.finished.unwrap_or(StoppedBy::Epochs),
        seconds: state.seconds,
        examples_per_second: state.examples / state.seconds.max(1e-9),
        communication_seconds: state.communication_seconds,
        history: state.history,
    })
}

/// Every parameter and buffer value, in [`Parameters::visit_state`] order.
fn values(model: &dyn Trainable) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    model.visit_state(&mut |_, _, v| out.push(v.to_vec()));
    out
}

fn set_values(model: &mut dyn Trainable, values: &[Vec<f32>]) {
    let mut values = values.iter();
    model.visit_state_mut(&mut |_, _, v| v.copy_from_slice(values.next().expect("one per tensor")));
}

/// The checkpoint path used for a model path: `MODEL.checkpoint`.
pub fn checkpoint_path(model_path: &Path) -> PathBuf {
    let mut s = model_path.as_os_str().to_owned();
    s.push(".checkpoint");
    PathBuf::from(s)
}

fn save_checkpoint(
    path: &Path,
    model: &dyn Trainable,
    opt: &Adam,
    state: &FitState,
    best: &[Vec<f32>],
) -> Result<()> {
    let mut w = TensorWriter::new();
    let mut best = best.iter();
    model.visit_state(&mut |name, shape, value| {
        w.add(name, shape, value);
        w.add(
            &format!("best.{name}"),
            shape,
            best.next().expect("one per tensor"),
        );
    });
    opt.state().write_into(&mut w);
    for (k, v) in model.metadata() {
        w.metadata(&k, &v);
    }
    w.metadata("fit", &serde_json::to_string(state).expect("serialisable"));
    w.write(path)
}

/// Adam's state after at least one step: a step count and the `exp_avg` and
/// `exp_avg_sq` buffers, each as long as its parameter, for every parameter and nothing else.
fn check_adam_state(
    state: &OptimizerState,
    model: &dyn Trainable,
) -> std::result::Result<(), String> {
    const SLOTS: [&str; 2] = ["exp_avg", "exp_avg_sq"];
    let params = model.named_parameters();
    for (name, p) in &params {
        if state.steps.get(name).copied().unwrap_or(0) == 0 {
            return Err(format!("no step count for `{name}`"));
        }
        for slot in SLOTS {
            let key = format!("{name}.{slot}");
            match state.buffers.get(&key) {
                None => return Err(format!("`{key}` is missing")),
                Some(b) if b.len() != p.value.len() => {
                    return Err(format!(
                        "`{key}` has {} values, the parameter {}",
                        b.len(),
                        p.value.len()
                    ))
                }
                Some(_) => {}
            }
        }
    }
    if state.buffers.len() != SLOTS.len() * params.len() || state.steps.len() != params.len() {
        return Err(format!(
            "{} buffers and {} step counts for {} parameters",
            state.buffers.len(),
            state.steps.len(),
            params.len()
        ));
    }
    Ok(())
}

fn load_checkpoint(
    file: &TensorFile,
    model: &mut dyn Trainable,
    opt: &mut Adam,
) -> Result<(FitState, Vec<Vec<f32>>)> {
    let shown = file.path().to_string();
    let state: FitState =
        serde_json::from_str(file.metadata("fit").ok_or_else(|| Error::Missing {
            name: "fit state".into(),
            place: shown.clone(),
        })?)
        .map_err(|e| Error::File {
            path: shown.clone(),
            message: format!("fit state: {e}"),
        })?;
    if let Some((k, _)) = model
        .metadata()
        .into_iter()
        .find(|(k, v)| k != "fit" && file.metadata(k) != Some(v.as_str()))
    {
        return Err(Error::File {
            path: shown,
            message: format!(
                "checkpoint does not match this run's data or settings (metadata `{k}` differs)"
            ),
        });
    }
    let bad = |message: String| Error::File {
        path: shown.clone(),
        message,
    };
    let mut best = Vec::new();
    let mut result = Ok(());
    model.visit_state_mut(&mut |name, shape, value| {
        let mut read = || -> Result<Vec<f32>> {
            let v = file.require_f32(name)?;
            if v.shape() != shape {
                return Err(Error::shape(name, format!("{shape:?}"), v.shape()));
            }
            value.copy_from_slice(v.as_slice().expect("standard"));
            let b = file.require_f32(&format!("best.{name}"))?;
            if b.shape() != shape {
                return Err(Error::shape(
                    format!("best.{name}"),
                    format!("{shape:?}"),
                    b.shape(),
                ));
            }
            Ok(b.iter().copied().collect())
        };
        if result.is_ok() {
            match read() {
                Ok(b) => best.push(b),
                Err(e) => result = Err(e),
            }
        }
    });
    result?;
    let optimizer = OptimizerState::read_from(file)?;
    check_adam_state(&optimizer, &*model).map_err(|m| bad(format!("optimizer state: {m}")))?;
    opt.load_state(&optimizer)?;
    Ok((state, best))
}
