//! [`Forecaster`]: multi-step forecasting of one series from a window of its past (and of
//! optional input series). The network predicts corrections to a per-horizon baseline
//! (the last value, or the value one season earlier, whichever fits the training data
//! better; or, for a deseasonalised series, the last deseasonalised value with the
//! pattern put back), on a log scale for positive series, so a model that has learnt
//! nothing falls back to a sensible forecast and trends extrapolate. The final forecast
//! may instead be a classic one or a combination ([`ForecastMethod`]).

use super::fit::Trainable;
use super::selection::{ClassicForecasts, ForecastMethod};
use super::{Ensemble, TaskModel};
use crate::config::RnnConfig;
use crate::error::{Error, Result};
use crate::loss::MseLoss;
use crate::nn::{self, Linear, Module};
use crate::param::{accumulate_into_params, GradSlices};
use crate::rnn::{self, InitialState, OutputGrads, Rnn};
use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Transform applied to the target before scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// `ln(y)`: positive series (multiplicative seasonality and growth become additive).
    Log,
    /// `sqrt(y)`: non-negative series with zeros (counts).
    Sqrt,
    /// No transform.
    None,
}

impl Transform {
    /// The default for a series: log if all values are positive, square root if all are
    /// non-negative, else none.
    pub fn for_series(values: &[f32]) -> Self {
        if values.iter().all(|v| *v > 0.0) {
            Transform::Log
        } else if values.iter().all(|v| *v >= 0.0) {
            Transform::Sqrt
        } else {
            Transform::None
        }
    }

    /// Applies the transform.
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Transform::Log => v.ln(),
            Transform::Sqrt => v.sqrt(),
            Transform::None => v,
        }
    }

    /// Inverts the transform.
    pub fn invert(self, v: f32) -> f32 {
        match self {
            Transform::Log => v.exp(),
            Transform::Sqrt => v.max(0.0).powi(2),
            Transform::None => v,
        }
    }

    /// Whether `v` is in the transform's domain.
    pub fn accepts(self, v: f32) -> bool {
        match self {
            Transform::Log => v > 0.0,
            Transform::Sqrt => v >= 0.0,
            Transform::None => true,
        }
    }
}

/// Everything a forecaster file stores besides weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastMeta {
    /// Name of the forecast column.
    pub target: String,
    /// Names of additional input columns (their past values are model inputs).
    pub inputs: Vec<String>,
    /// Steps ahead predicted from each origin.
    pub horizon: usize,
    /// Past steps the model sees.
    pub window: usize,
    /// Seasonal period used by the seasonal baseline (1: none).
    pub season: usize,
    /// Variance-stabilising transform of the target.
    pub transform: Transform,
    /// For each horizon step, whether the baseline is seasonal (else the last value).
    pub seasonal_base: Vec<bool>,
    /// Additive seasonal indices of the transformed target by position `t % season`
    /// (positions count from the series' first row), or empty (older files). When present
    /// the window and the baseline are deseasonalised, as in ES-RNN: the network sees the
    /// window's changes less the seasonal pattern, and the baseline is the last
    /// deseasonalised value with the pattern of the forecast step put back
    /// (`seasonal_base` is then unused).
    #[serde(default)]
    pub seasonal_indices: Vec<f32>,
    /// Time label of the training series' first row, where seasonal positions start.
    #[serde(default)]
    pub first_row: String,
    /// Mean and standard deviation of each transformed column (target first).
    pub mean: Vec<f32>,
    /// See `mean`.
    pub std: Vec<f32>,
    /// Scale of the residual targets.
    pub residual_scale: f32,
    /// Where the final forecast comes from (the network alone in older files).
    #[serde(default)]
    pub method: ForecastMethod,
}

impl ForecastMeta {
    /// Transforms raw column `c` values (the target's transform, then standardise).
    pub fn transform(&self, c: usize, v: f32) -> f32 {
        let v = if c == 0 { self.transform.apply(v) } else { v };
        (v - self.mean[c]) / self.std[c]
    }

    /// The seasonal index of position `t` (0 without indices).
    pub fn seasonal_index(&self, t: usize) -> f32 {
        match self.seasonal_indices.len() {
            0 => 0.0,
            m => self.seasonal_indices[t % m],
        }
    }

    /// Inverse of [`ForecastMeta::transform`] for the target.
    pub fn untransform(&self, z: f32) -> f32 {
        self.transform.invert(z * self.std[0] + self.mean[0])
    }

    /// Baseline of horizon step `h` (1-based) from the transformed target `z` observed up to
    /// and including index `t`.
    pub fn base(&self, z: &[f32], t: usize, h: usize) -> f32 {
        if !self.seasonal_indices.is_empty() {
            return z[t] - self.seasonal_index(t) + self.seasonal_index(t + h);
        }
        if self.seasonal_base[h - 1] && self.season > 1 && t + 1 >= self.season {
            z[t + 1 - self.season + (h - 1) % self.season]
        } else {
            z[t]
        }
    }
}

/// The forecasting network: recurrent stack over the window, linear head on the last step.
#[derive(Debug, Clone)]
pub struct Forecaster {
    /// Recurrent stack, batch-first, input `1 + inputs.len()` features.
    pub rnn: Rnn,
    /// `(horizon, D_out)` head.
    pub head: Linear,
    /// Transforms and settings.
    pub meta: ForecastMeta,
}

/// What a training forward pass of a [`Forecaster`] keeps for its backward pass.
#[derive(Debug)]
struct ForecastTape {
    rnn: rnn::Tape,
    head: nn::Tape,
    out_shape: Option<Vec<usize>>,
}

impl Default for ForecastTape {
    fn default() -> Self {
        ForecastTape {
            rnn: rnn::Tape::default(),
            head: nn::Tape::training(0),
            out_shape: None,
        }
    }
}

impl Forecaster {
    /// A new model.
    pub fn new(config: RnnConfig, meta: ForecastMeta, rng: &mut impl Rng) -> Result<Self> {
        let config = config.with_batch_first(true);
        let width = config.num_directions() * config.output_size();
        let head = Linear::new(width, meta.horizon, true, rng);
        Ok(Forecaster {
            rnn: Rnn::new(config, rng)?,
            head,
            meta,
        })
    }

    /// Model input for windows ending at each index of `ends`: `(B, window, features)`,
    /// values relative to the target's last value. `cols[c][t]` are transformed columns.
    pub fn windows(&self, cols: &[Vec<f32>], ends: &[usize]) -> ArrayD<f32> {
        let w = self.meta.window;
        let mut x = ArrayD::zeros(IxDyn(&[ends.len(), w, cols.len()]));
        let meta = &self.meta;
        for (b, &t) in ends.iter().enumerate() {
            let last = cols[0][t] - meta.seasonal_index(t);
            for i in 0..w {
                let s = t + 1 - w + i;
                for (c, col) in cols.iter().enumerate() {
                    x[[b, i, c]] = if c == 0 {
                        col[s] - meta.seasonal_index(s) - last
                    } else {
                        col[s]
                    };
                }
            }
        }
        x
    }

    fn take_last(&self, out: &ArrayD<f32>) -> ArrayD<f32> {
        let (b, t, f) = (out.shape()[0], out.shape()[1], out.shape()[2]);
        let mut last = ArrayD::zeros(IxDyn(&[b, f]));
        for i in 0..b {
            for k in 0..f {
                last[[i, k]] = out[[i, t - 1, k]];
            }
        }
        last
    }

    /// Scaled residual predictions `(B, horizon)` (inference).
    pub fn predict_residuals(&self, x: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let out = self.rnn.forward(x.view(), None::<InitialState>, None)?;
        let last = self.take_last(&out.output);
        self.head.forward(&last, &mut nn::Tape::inference())
    }

    /// Forecasts in the original units for origins after each index of `ends` (each
    /// window ends at that index): `(B, horizon)` values.
    pub fn forecast(&self, cols: &[Vec<f32>], ends: &[usize]) -> Result<Vec<Vec<f32>>> {
        let x = self.windows(cols, ends);
        let r = self.predict_residuals(&x)?;
        Ok(ends
            .iter()
            .enumerate()
            .map(|(b, &t)| {
                (1..=self.meta.horizon)
                    .map(|h| {
                        let z = self.meta.base(&cols[0], t, h)
                            + r[[b, h - 1]] * self.meta.residual_scale;
                        self.meta.untransform(z)
                    })
                    .collect()
            })
            .collect())
    }

    fn forward_train(
        &self,
        x: &ArrayD<f32>,
        rng: &mut impl Rng,
        tape: &mut ForecastTape,
    ) -> Result<ArrayD<f32>> {
        let out = self
            .rnn
            .forward_train_into(x.view(), None, None, rng, &mut tape.rnn)?;
        tape.out_shape = Some(out.output.shape().to_vec());
        self.head
            .forward(&self.take_last(&out.output), &mut tape.head)
    }

    fn backward(
        &self,
        tape: &ForecastTape,
        grad: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<()> {
        let shape = tape.out_shape.as_ref().ok_or_else(|| {
            Error::Invalid("Forecaster.backward needs a forward_train tape".into())
        })?;
        let mut rnn_grads = grads.split(nn::param_count(&self.rnn));
        let g_last = self.head.backward(&tape.head, grad, grads)?;
        let mut g = ArrayD::zeros(IxDyn(shape));
        for i in 0..shape[0] {
            for k in 0..shape[2] {
                g[[i, shape[1] - 1, k]] = g_last[[i, k]];
            }
        }
        self.rnn.backward_into(
            &tape.rnn,
            OutputGrads {
                grad_output: Some(g.view()),
                skip_input_grad: true,
                ..Default::default()
            },
            &mut rnn_grads,
        )?;
        Ok(())
    }
}

crate::parameters!(Forecaster { part "rnn" => rnn; part "head" => head; });

impl TaskModel for Forecaster {
    const TASK: &'static str = "forecast";
    type Meta = ForecastMeta;
    fn check_meta(config: &RnnConfig, meta: &ForecastMeta) -> Result<()> {
        let columns = 1 + meta.inputs.len();
        let problem = if meta.horizon == 0 || meta.seasonal_base.len() != meta.horizon {
            Some(format!(
                "horizon {} with {} seasonal_base entries (one per step, at least one)",
                meta.horizon,
                meta.seasonal_base.len()
            ))
        } else if !(meta.seasonal_indices.is_empty()
            || meta.season > 1 && meta.seasonal_indices.len() == meta.season)
        {
            Some(format!(
                "{} seasonal_indices for season {} (none, or one per position)",
                meta.seasonal_indices.len(),
                meta.season
            ))
        } else if meta.mean.len() != columns || meta.std.len() != columns {
            Some(format!(
                "{columns} columns ({} and {} inputs) with {} means and {} standard deviations",
                meta.target,
                meta.inputs.len(),
                meta.mean.len(),
                meta.std.len()
            ))
        } else if config.input_size != columns {
            Some(format!(
                "{columns} columns, but the recurrent input size is {}",
                config.input_size
            ))
        } else if meta.window == 0 || meta.season == 0 {
            Some(format!(
                "window {} and season {} must be at least 1",
                meta.window, meta.season
            ))
        } else if let Some(v) = meta
            .mean
            .iter()
            .chain(&meta.std)
            .chain([&meta.residual_scale])
            .find(|v| !v.is_finite())
        {
            Some(format!("non-finite scaling value {v}"))
        } else if meta.std.contains(&0.0) {
            Some("a standard deviation is 0".into())
        } else {
            None
        };
        problem.map_or(Ok(()), |m| Err(Error::Config(m)))
    }
    fn other_parameters(config: &RnnConfig, meta: &ForecastMeta) -> Option<usize> {
        let width = config.num_directions().checked_mul(config.output_size())?;
        width.checked_add(1)?.checked_mul(meta.horizon)
    }
    fn build(config: RnnConfig, meta: ForecastMeta) -> Result<Self> {
        Forecaster::new(
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
    fn meta(&self) -> &ForecastMeta {
        &self.meta
    }
}

/// Forecasters trained from consecutive seeds; forecasts are averaged.
pub type ForecasterEnsemble = Ensemble<Forecaster>;

impl Ensemble<Forecaster> {
    /// Mean forecast of the members (see [`Forecaster::forecast`]).
    pub fn forecast(&self, cols: &[Vec<f32>], ends: &[usize]) -> Result<Vec<Vec<f32>>> {
        let k = self.members.len() as f32;
        let mut acc: Option<Vec<Vec<f32>>> = None;
        for m in &self.members {
            let f = m.forecast(cols, ends)?;
            match &mut acc {
                None => {
                    acc = Some(
                        f.iter()
                            .map(|r| r.iter().map(|v| v / k).collect())
                            .collect(),
                    )
                }
                Some(a) => a
                    .iter_mut()
                    .zip(&f)
                    .for_each(|(ra, rf)| ra.iter_mut().zip(rf).for_each(|(x, y)| *x += y / k)),
            }
        }
        Ok(acc.unwrap_or_default())
    }

    /// The final forecasts of the model's [`ForecastMethod`] from the origins after `ends`:
    /// the network's ([`Ensemble::forecast`] of the transformed `cols`) or the classic
    /// forecasts ([`ClassicForecasts::fit`] on the raw target `target[..=end]`), or their
    /// combination. An origin whose history the method's classic forecasts cannot be fitted
    /// to keeps the network's forecast.
    pub fn forecast_final(
        &self,
        cols: &[Vec<f32>],
        target: &[f32],
        ends: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        let network = self.forecast(cols, ends)?;
        let meta = self.meta();
        if !meta.method.uses_classic() {
            return Ok(network);
        }
        Ok(network
            .into_iter()
            .zip(ends)
            .map(|(n, &end)| {
                let classic = ClassicForecasts::fit(&target[..=end], meta.season, meta.horizon);
                meta.method.combine(&n, &classic).unwrap_or(n)
            })
            .collect())
    }

    /// Transformed columns for `raw[c][t]` (target first).
    pub fn transform_columns(&self, raw: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let meta = self.meta();
        if let Some(v) = raw[0].iter().find(|v| !meta.transform.accepts(**v)) {
            return Err(Error::Invalid(format!(
                "the model transforms {:?} with {:?}, which is undefined for the value {v} in the data",
                meta.target, meta.transform
            )));
        }
        Ok(raw
            .iter()
            .enumerate()
            .map(|(c, col)| col.iter().map(|&v| meta.transform(c, v)).collect())
            .collect())
    }
}

/// A forecaster with its training windows.
pub struct ForecastTask {
    /// The model.
    pub model: Forecaster,
    /// Transformed columns of the training part of the series.
    pub cols: Vec<Vec<f32>>,
    /// Window end indices used for training.
    pub train_ends: Vec<usize>,
    /// Window end indices used for validation.
    pub val_ends: Vec<usize>,
    tape: ForecastTape,
}

impl ForecastTask {
    /// A task training `model` on the windows ending at `train_ends` of `cols`,
    /// validated on those ending at `val_ends`.
    pub fn new(
        model: Forecaster,
        cols: Vec<Vec<f32>>,
        train_ends: Vec<usize>,
        val_ends: Vec<usize>,
    ) -> Self {
        let mut model = model;
        model.rnn.train(true);
        ForecastTask {
            model,
            cols,
            train_ends,
            val_ends,
            tape: ForecastTape::default(),
        }
    }

    fn targets(&self, ends: &[usize]) -> ArrayD<f32> {
        let m = &self.model.meta;
        let mut y = ArrayD::zeros(IxDyn(&[ends.len(), m.horizon]));
        for (b, &t) in ends.iter().enumerate() {
            for h in 1..=m.horizon {
                y[[b, h - 1]] =
                    (self.cols[0][t + h] - m.base(&self.cols[0], t, h)) / m.residual_scale;
            }
        }
        y
    }
}

crate::parameters!(ForecastTask { inline model; });

impl Trainable for ForecastTask {
    fn train_len(&self) -> usize {
        self.train_ends.len()
    }

    fn train_batch(
        &mut self,
        batch: &[usize],
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(f64, usize)> {
        let ends: Vec<usize> = batch.iter().map(|&i| self.train_ends[i]).collect();
        let x = self.model.windows(&self.cols, &ends);
        let y = self.targets(&ends);
        let pred = self.model.forward_train(&x, rng, &mut self.tape)?;
        let loss = MseLoss::default().forward(&pred, &y)?;
        let tape = &self.tape;
        accumulate_into_params(&mut self.model, |m, mut g| {
            m.backward(tape, &loss.grad, &mut g)
        })?;
        Ok((loss.item() as f64 * ends.len() as f64, ends.len()))
    }

    fn validation_loss(&mut self) -> Result<f64> {
        let ends = if self.val_ends.is_empty() {
            self.train_ends.clone()
        } else {
            self.val_ends.clone()
        };
        let x = self.model.windows(&self.cols, &ends);
        let y = self.targets(&ends);
        let pred = self.model.predict_residuals(&x)?;
        Ok(MseLoss::default().forward(&pred, &y)?.item() as f64)
    }

    fn metadata(&self) -> Vec<(String, String)> {
        super::metadata_entries(&self.model)
    }
}

/// The seasonal period of a series: the lag in `2..=max_lag` with the highest
/// autocorrelation of the first differences, if it is a clear peak (above 0.3), else 1.
pub fn detect_season(series: &[f32], max_lag: usize) -> usize {
    let d: Vec<f64> = series.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    let n = d.len();
    if n < 8 {
        return 1;
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let var: f64 = d.iter().map(|v| (v - mean).powi(2)).sum();
    if var <= 0.0 {
        return 1;
    }
    let acf = |lag: usize| {
        (0..n - lag)
            .map(|i| (d[i] - mean) * (d[i + lag] - mean))
            .sum::<f64>()
            / var
    };
    let (mut best, mut best_v) = (1, 0.3);
    for lag in 2..=max_lag.min(n / 2) {
        let v = acf(lag);
        if v > best_v {
            best = lag;
            best_v = v;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use rand::SeedableRng;

    /// On a level plus a fixed pattern, the deseasonalised window is all zeros and the
    /// baseline is the exact future; without indices the window keeps the pattern.
    #[test]
    fn deseasonalised_windows_and_baselines() {
        let pattern = [0.5f32, -0.25, -0.25];
        let z: Vec<f32> = (0..30).map(|t| 2.0 + pattern[t % 3]).collect();
        let cols = [z.clone()];
        let mut meta = ForecastMeta {
            target: "y".into(),
            inputs: vec![],
            horizon: 4,
            window: 6,
            season: 3,
            transform: Transform::None,
            seasonal_base: vec![false; 4],
            seasonal_indices: pattern.to_vec(),
            first_row: "0".into(),
            mean: vec![0.0],
            std: vec![1.0],
            residual_scale: 1.0,
            method: ForecastMethod::Network,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let config = RnnConfig::new(Mode::Lstm, 1, 4);
        let model = Forecaster::new(config.clone(), meta.clone(), &mut rng).unwrap();
        assert!(model.windows(&cols, &[10, 20]).iter().all(|v| *v == 0.0));
        for h in 1..=4 {
            assert_eq!(meta.base(&z, 20, h), z[20 + h]);
        }
        meta.seasonal_indices.clear();
        let plain = Forecaster::new(config.clone(), meta.clone(), &mut rng).unwrap();
        assert!(plain.windows(&cols, &[10]).iter().any(|v| *v != 0.0));
        assert_eq!(meta.base(&z, 20, 1), z[20]);
        meta.seasonal_indices = vec![0.0; 2];
        assert!(Forecaster::check_meta(&config.with_batch_first(true), &meta).is_err());
    }
}
