//! Classic forecasting baselines scored beside the network, refit at every forecast
//! origin on everything before it: exponential smoothing (ETS) and the Theta method.
//!
//! - ETS: additive errors, trend none, additive or damped additive, seasonality none or
//!   additive (with a period above 1 and two periods of history), the model with the least
//!   corrected information criterion: `augurs-ets`'s AutoETS (a Rust port of
//!   statsforecast's) for the models without seasonality, [`super::seasonal_ets`] for those
//!   with it, which AutoETS does not fit yet. Periods above [`ETS_MAX_SEASON`] are
//!   handled as Theta handles them: AutoETS on the deseasonalised series (classical
//!   decomposition, below), the seasonal indices put back on the forecast.
//! - Theta (Assimakopoulos & Nikolopoulos 2000, in Hyndman & Billah's form, as statsmodels'
//!   `ThetaModel`): simple exponential smoothing (its α fitted by least squares) plus half
//!   the slope of a linear trend, `ŷ(h) = ŝ + b/2 · (h − 1 + 1/α − (1 − α)^n / α)`, on the
//!   deseasonalised series.
//!
//! - MSTL ([`mstl_forecast`]): the seasonal-trend decomposition of `augurs-mstl` with an
//!   AutoETS trend, statsforecast's `MSTL` default, a candidate of the final forecast
//!   ([`super::selection`]) rather than a reported baseline.
//!
//! A series counts as seasonal with period `m > 1` when it has at least two full periods and
//! its autocorrelation at lag `m` passes the 90% test statsmodels' Theta uses
//! (`|r_m| > 1.645 √((1 + 2 Σ_{k<m} r_k²) / n)`); the decomposition is multiplicative when
//! every value is positive, else additive.

use super::seasonal_ets::{SeasonalEts, Trend};
use crate::error::{Error, Result};
use augurs_core::{Fit, Predict};

/// Seasonal indices of one period, and how they combine with the series.
struct Seasonality {
    /// Index of each position in the period (`t % m`), mean 1 (multiplicative) or 0.
    indices: Vec<f64>,
    multiplicative: bool,
}

impl Seasonality {
    /// Classical decomposition of `y` with period `m` when the series is seasonal (see the
    /// module documentation); `None` otherwise.
    fn detect(y: &[f64], m: usize) -> Option<Self> {
        Self::decompose(y, m, y.iter().all(|&v| v > 0.0))
    }

    /// [`Seasonality::detect`] with the kind of seasonality given.
    fn decompose(y: &[f64], m: usize, multiplicative: bool) -> Option<Self> {
        let n = y.len();
        if m < 2 || n < 2 * m || !acf_is_seasonal(y, m) {
            return None;
        }
        // Centred moving average of order m (2 x m for even m).
        let half = m / 2;
        let mut sums = vec![0.0; m];
        let mut counts = vec![0usize; m];
        for t in half..n - half {
            let trend = if m % 2 == 1 {
                y[t - half..=t + half].iter().sum::<f64>() / m as f64
            } else {
                let inner: f64 = y[t - half + 1..t + half].iter().sum();
                (inner + 0.5 * (y[t - half] + y[t + half])) / m as f64
            };
            let detrended = if multiplicative {
                y[t] / trend
            } else {
                y[t] - trend
            };
            sums[t % m] += detrended;
            counts[t % m] += 1;
        }
        let mut indices: Vec<f64> = sums
            .iter()
            .zip(&counts)
            .map(|(s, &c)| s / c.max(1) as f64)
            .collect();
        let mean = indices.iter().sum::<f64>() / m as f64;
        for v in &mut indices {
            if multiplicative {
                *v /= mean;
            } else {
                *v -= mean;
            }
        }
        Some(Seasonality {
            indices,
            multiplicative,
        })
    }

    fn remove(&self, t: usize, v: f64) -> f64 {
        let s = self.indices[t % self.indices.len()];
        if self.multiplicative {
            v / s
        } else {
            v - s
        }
    }

    fn restore(&self, t: usize, v: f64) -> f64 {
        let s = self.indices[t % self.indices.len()];
        if self.multiplicative {
            v * s
        } else {
            v + s
        }
    }
}

/// The autocorrelation test for seasonality at lag `m`.
fn acf_is_seasonal(y: &[f64], m: usize) -> bool {
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n;
    let var: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    if var == 0.0 {
        return false;
    }
    let r = |k: usize| -> f64 {
        (k..y.len())
            .map(|t| (y[t] - mean) * (y[t - k] - mean))
            .sum::<f64>()
            / var
    };
    let spread: f64 = (1..m).map(|k| r(k).powi(2)).sum();
    r(m).abs() > 1.645 * ((1.0 + 2.0 * spread) / n).sqrt()
}

/// `f` on the deseasonalised history, its `horizon` forecasts reseasonalised.
fn through_seasonality(
    history: &[f64],
    season: usize,
    horizon: usize,
    f: impl FnOnce(&[f64]) -> Result<Vec<f64>>,
) -> Result<Vec<f64>> {
    if history.len() < 3 || history.iter().any(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "a classic forecast needs at least 3 finite values, found {} values",
            history.len()
        )));
    }
    match Seasonality::detect(history, season) {
        None => f(history),
        Some(s) => {
            let adjusted: Vec<f64> = history
                .iter()
                .enumerate()
                .map(|(t, &v)| s.remove(t, v))
                .collect();
            let n = history.len();
            Ok(f(&adjusted)?
                .into_iter()
                .enumerate()
                .take(horizon)
                .map(|(h, v)| s.restore(n + h, v))
                .collect())
        }
    }
}

/// Additive seasonal indices of `y` by position `t % season` (mean 0) from the classical
/// decomposition, when `y` is seasonal with that period (see the module documentation).
pub fn additive_seasonal_indices(y: &[f32], season: usize) -> Option<Vec<f32>> {
    let wide: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    Seasonality::decompose(&wide, season, false)
        .map(|s| s.indices.into_iter().map(|v| v as f32).collect())
}

/// Longest period whose seasonal states ETS estimates (R's `ets` refuses longer ones too):
/// beyond it the optimiser's dimension, and its time, grow with the period.
pub const ETS_MAX_SEASON: usize = 24;

/// ETS forecasts of the `horizon` values after `history` (see the module documentation).
pub fn ets_forecast(history: &[f64], season: usize, horizon: usize) -> Result<Vec<f64>> {
    if season > ETS_MAX_SEASON {
        return through_seasonality(history, season, horizon, |y| auto_ets(y, horizon));
    }
    if history.len() < 3 || history.iter().any(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "ETS needs at least 3 finite values, found {} values",
            history.len()
        )));
    }
    let seasonal = Trend::ALL
        .into_iter()
        .filter_map(|trend| SeasonalEts::fit(history, season, trend))
        .min_by(|a, b| a.aicc().total_cmp(&b.aicc()));
    let plain = fit_auto_ets(history);
    match (plain, seasonal) {
        (Ok(p), Some(s)) if s.aicc() < p.model().aicc() => Ok(s.forecast(horizon)),
        (Ok(p), _) => predict_auto_ets(&p, horizon),
        (Err(_), Some(s)) => Ok(s.forecast(horizon)),
        (Err(e), None) => Err(e),
    }
}

fn ets_error(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("ETS: {e}"))
}

/// AutoETS's non-seasonal models (trend none, additive or damped) fitted to `y`.
fn fit_auto_ets(y: &[f64]) -> Result<augurs_ets::FittedAutoETS> {
    augurs_ets::AutoETS::new(1, "AZN")
        .map_err(ets_error)?
        .fit(y)
        .map_err(ets_error)
}

fn predict_auto_ets(fitted: &augurs_ets::FittedAutoETS, horizon: usize) -> Result<Vec<f64>> {
    Ok(fitted.predict(horizon, None).map_err(ets_error)?.point)
}

/// [`fit_auto_ets`]'s forecasts.
fn auto_ets(y: &[f64], horizon: usize) -> Result<Vec<f64>> {
    predict_auto_ets(&fit_auto_ets(y)?, horizon)
}

/// MSTL forecasts of the `horizon` values after `history`: `augurs-mstl`'s seasonal-trend
/// decomposition by LOESS with period `season`, its trend forecast by AutoETS (additive
/// errors, trend none, additive or damped) and the seasonal component repeated, on the
/// logarithm of a positive series (multiplicative seasonality) and on the values otherwise.
/// Needs a season above 1 and two full periods of history.
pub fn mstl_forecast(history: &[f64], season: usize, horizon: usize) -> Result<Vec<f64>> {
    let fail = |e: String| Error::Invalid(format!("MSTL: {e}"));
    if season < 2 || history.len() < 2 * season || history.iter().any(|v| !v.is_finite()) {
        return Err(fail(format!(
            "needs two full periods of {season} finite values, found {} values",
            history.len()
        )));
    }
    let log = history.iter().all(|&v| v > 0.0);
    let y: Vec<f64> = if log {
        history.iter().map(|v| v.ln()).collect()
    } else {
        history.to_vec()
    };
    let trend = augurs_ets::AutoETS::non_seasonal().into_trend_model();
    let fitted = augurs_mstl::MSTLModel::new(vec![season], trend)
        .fit(&y)
        .map_err(|e| fail(e.to_string()))?;
    let forecast = fitted
        .predict(horizon, None)
        .map_err(|e| fail(e.to_string()))?;
    Ok(forecast
        .point
        .into_iter()
        .map(|v| if log { v.exp() } else { v })
        .collect())
}

/// Theta-method forecasts of the `horizon` values after `history` (see the module
/// documentation).
pub fn theta_forecast(history: &[f64], season: usize, horizon: usize) -> Result<Vec<f64>> {
    through_seasonality(history, season, horizon, |y| {
        let n = y.len();
        // Least-squares slope of y on t.
        let t_mean = (n as f64 - 1.0) / 2.0;
        let y_mean = y.iter().sum::<f64>() / n as f64;
        let (mut num, mut den) = (0.0, 0.0);
        for (t, &v) in y.iter().enumerate() {
            num += (t as f64 - t_mean) * (v - y_mean);
            den += (t as f64 - t_mean).powi(2);
        }
        let slope = num / den;
        let (alpha, level) = fit_ses(y);
        Ok((1..=horizon)
            .map(|h| {
                let drift = h as f64 - 1.0 + 1.0 / alpha - (1.0 - alpha).powi(n as i32) / alpha;
                level + 0.5 * slope * drift
            })
            .collect())
    })
}

/// Simple exponential smoothing: the α in `[0.01, 0.99]` with the least one-step squared
/// error (initial level the first value; a grid of 0.01 refined to 0.0001), and the final
/// level.
fn fit_ses(y: &[f64]) -> (f64, f64) {
    let run = |alpha: f64| -> (f64, f64) {
        let (mut level, mut sse) = (y[0], 0.0);
        for &v in &y[1..] {
            sse += (v - level).powi(2);
            level += alpha * (v - level);
        }
        (sse, level)
    };
    let best = |lo: f64, hi: f64, step: f64| -> f64 {
        let mut a = lo;
        let (mut best_a, mut best_sse) = (lo, f64::INFINITY);
        while a <= hi + 1e-12 {
            let (sse, _) = run(a);
            if sse < best_sse {
                (best_a, best_sse) = (a, sse);
            }
            a += step;
        }
        best_a
    };
    let coarse = best(0.01, 0.99, 0.01);
    let alpha = best((coarse - 0.01).max(0.01), (coarse + 0.01).min(0.99), 0.0001);
    (alpha, run(alpha).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a straight line ETS continues the line (an additive trend), and Theta gives its
    /// formula: SES's level (α near 1, so the last value) plus half the slope per step.
    #[test]
    fn lines_follow_each_method() {
        let y: Vec<f64> = (0..40).map(|t| 3.0 + 0.5 * t as f64).collect();
        let ets = ets_forecast(&y, 1, 4).unwrap();
        let theta = theta_forecast(&y, 1, 4).unwrap();
        for h in 1..=4 {
            let line = 3.0 + 0.5 * (39 + h) as f64;
            assert!(
                (ets[h - 1] - line).abs() < 0.05,
                "ETS h={h}: {} vs {line}",
                ets[h - 1]
            );
            let half = y[39] + 0.25 * h as f64;
            assert!(
                (theta[h - 1] - half).abs() < 0.05,
                "Theta h={h}: {} vs {half}",
                theta[h - 1]
            );
        }
    }

    /// A seasonal series without noise: the decomposition recovers the pattern, and the
    /// forecasts follow it (ETS within 3% of the values; Theta, which projects half the
    /// trend, and MSTL within 5%).
    #[test]
    fn seasonal_patterns_are_restored() {
        let pattern = [1.0, 1.3, 0.8, 0.9];
        let y: Vec<f64> = (0..48)
            .map(|t| (100.0 + t as f64) * pattern[t % 4])
            .collect();
        let s = Seasonality::detect(&y, 4).expect("seasonal");
        assert!(s.multiplicative);
        for (k, p) in pattern.iter().enumerate() {
            let mean = pattern.iter().sum::<f64>() / 4.0;
            assert!((s.indices[k] - p / mean).abs() < 0.02, "{:?}", s.indices);
        }
        let forecasts = [
            ("ETS", ets_forecast(&y, 4, 8).unwrap(), 0.03),
            ("Theta", theta_forecast(&y, 4, 8).unwrap(), 0.05),
            ("MSTL", mstl_forecast(&y, 4, 8).unwrap(), 0.05),
        ];
        for (name, f, tol) in forecasts {
            for (h, v) in f.iter().enumerate() {
                let t = 48 + h;
                let want = (100.0 + t as f64) * pattern[t % 4];
                assert!(
                    (v - want).abs() < tol * want,
                    "{name} h={}: {v} vs {want}",
                    h + 1
                );
            }
        }
        // White noise is not seasonal.
        let noise: Vec<f64> = (0..60).map(|t| ((t * 7919) % 13) as f64).collect();
        assert!(Seasonality::detect(&noise, 12).is_none());
    }

    /// A period above [`ETS_MAX_SEASON`] goes through the decomposition; the pattern still
    /// comes back (within 2% of the values).
    #[test]
    fn long_periods_are_deseasonalised() {
        let m = ETS_MAX_SEASON + 6;
        let value =
            |t: usize| 100.0 + 10.0 * (std::f64::consts::TAU * (t % m) as f64 / m as f64).sin();
        let y: Vec<f64> = (0..5 * m).map(value).collect();
        for (h, v) in ets_forecast(&y, m, 10).unwrap().iter().enumerate() {
            let want = value(5 * m + h);
            assert!((v - want).abs() < 0.02 * want, "h={}: {v} vs {want}", h + 1);
        }
    }

    /// MSTL on edge cases (exactly two periods, constant or signed values, too short)
    /// gives forecasts or errors, never a panic or a non-finite value.
    #[test]
    fn mstl_survives_edge_cases() {
        let cases: [Vec<f64>; 4] = [
            vec![5.0; 8],
            (0..8).map(|t| t as f64 - 4.0).collect(),
            (0..24).map(|t| ((t % 3) as f64) - 1.0).collect(),
            vec![1.0, 2.0, 3.0],
        ];
        for y in cases {
            if let Ok(f) = mstl_forecast(&y, 4, 3) {
                assert!(
                    f.len() == 3 && f.iter().all(|v| v.is_finite()),
                    "{y:?}: {f:?}"
                );
            }
        }
        assert!(mstl_forecast(&[1.0, 2.0, 3.0], 4, 3).is_err());
        assert!(mstl_forecast(&[1.0; 48], 1, 3).is_err());
    }

    #[test]
    fn short_or_broken_histories_are_errors() {
        assert!(ets_forecast(&[1.0, 2.0], 1, 3).is_err());
        assert!(theta_forecast(&[1.0, f64::NAN, 3.0, 4.0], 1, 3).is_err());
    }
}
