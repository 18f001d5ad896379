//! The final forecast of `train forecast`: the network's, a classic method's, or a
//! combination, chosen by a rolling-origin backtest on the end of the training part.
//!
//! In the M4 competition combinations of forecasts beat most single methods, and the winner
//! (Smyl's ES-RNN) combined exponential smoothing with a recurrent network. Here the
//! network ([`super::Forecaster`], which already forecasts corrections to a seasonal or
//! last-value baseline on a log scale) is one candidate beside ETS and Theta
//! ([`super::baselines`]), their mean, the mean of all three, the naive and seasonal
//! naive forecasts, and MSTL (seasonal-trend decomposition with an ETS trend). The candidate
//! with the least squared error over the backtest's points is kept, so the forecast is never
//! worse than the best classic method on the data it was chosen on; a candidate that uses
//! the network must moreover beat the best classic one by more than chance (a one-sided
//! Diebold-Mariano test at 5%), since a few lucky origins of a short series are no evidence
//! that a high-variance model will do better on the next ones.

use super::baselines::{ets_forecast, mstl_forecast, theta_forecast};
use serde::{Deserialize, Serialize};

/// Where the final forecast comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastMethod {
    /// The recurrent network alone (what files written before selection existed hold).
    #[default]
    Network,
    /// ETS alone.
    Ets,
    /// The Theta method alone.
    Theta,
    /// The mean of ETS and Theta.
    EtsTheta,
    /// The mean of the network, ETS and Theta.
    Combination,
    /// The last value.
    Naive,
    /// The value one season earlier.
    SeasonalNaive,
    /// Seasonal-trend decomposition with an ETS trend ([`mstl_forecast`]).
    Mstl,
}

impl ForecastMethod {
    /// Every candidate, in the order reports list them.
    pub const ALL: [ForecastMethod; 8] = [
        ForecastMethod::Network,
        ForecastMethod::Ets,
        ForecastMethod::Theta,
        ForecastMethod::EtsTheta,
        ForecastMethod::Combination,
        ForecastMethod::Naive,
        ForecastMethod::SeasonalNaive,
        ForecastMethod::Mstl,
    ];

    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ForecastMethod::Network => "network",
            ForecastMethod::Ets => "ets",
            ForecastMethod::Theta => "theta",
            ForecastMethod::EtsTheta => "ets_theta",
            ForecastMethod::Combination => "combination",
            ForecastMethod::Naive => "naive",
            ForecastMethod::SeasonalNaive => "seasonal_naive",
            ForecastMethod::Mstl => "mstl",
        }
    }

    /// Whether the method needs the classic forecasts (of [`ClassicForecasts::fit`]).
    pub fn uses_classic(self) -> bool {
        self != ForecastMethod::Network
    }

    /// Whether the method needs the network's forecast.
    pub fn uses_network(self) -> bool {
        matches!(self, ForecastMethod::Network | ForecastMethod::Combination)
    }

    /// This method's forecast of one origin from the network's and the classic ones (of
    /// the same length); `None` when it needs a classic forecast that is missing.
    pub fn combine(self, network: &[f32], classic: &ClassicForecasts) -> Option<Vec<f32>> {
        let (ets, theta) = (classic.ets.as_deref(), classic.theta.as_deref());
        let mean = |parts: &[&[f32]]| -> Vec<f32> {
            (0..network.len())
                .map(|h| parts.iter().map(|p| p[h]).sum::<f32>() / parts.len() as f32)
                .collect()
        };
        Some(match self {
            ForecastMethod::Network => network.to_vec(),
            ForecastMethod::Ets => ets?.to_vec(),
            ForecastMethod::Theta => theta?.to_vec(),
            ForecastMethod::EtsTheta => mean(&[ets?, theta?]),
            ForecastMethod::Combination => mean(&[network, ets?, theta?]),
            ForecastMethod::Naive => classic.naive.clone(),
            ForecastMethod::SeasonalNaive => classic.seasonal_naive.clone()?,
            ForecastMethod::Mstl => classic.mstl.clone()?,
        })
    }
}

/// The classic forecasts of one origin: ETS and Theta (`None` where the method could not
/// be fitted to the history, for example fewer than 3 values), the last value, and the
/// value one season earlier (`None` without a season or a full one of history).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassicForecasts {
    /// See [`ets_forecast`].
    pub ets: Option<Vec<f32>>,
    /// See [`theta_forecast`].
    pub theta: Option<Vec<f32>>,
    /// The last value, at every step.
    pub naive: Vec<f32>,
    /// Step `h` repeats the value `season - (h - 1) % season` steps before the origin.
    pub seasonal_naive: Option<Vec<f32>>,
    /// See [`mstl_forecast`] (`None` without a season or two full ones of history).
    pub mstl: Option<Vec<f32>>,
}

impl ClassicForecasts {
    /// Every method refit on `history` (raw values, oldest first, at least one),
    /// `horizon` steps ahead, with seasonal period `season` (1: none).
    pub fn fit(history: &[f32], season: usize, horizon: usize) -> Self {
        let n = history.len();
        let wide: Vec<f64> = history.iter().map(|&v| v as f64).collect();
        let run = |f: fn(&[f64], usize, usize) -> crate::Result<Vec<f64>>| {
            f(&wide, season, horizon)
                .ok()
                .map(|v| v.into_iter().map(|x| x as f32).collect())
        };
        ClassicForecasts {
            ets: run(ets_forecast),
            theta: run(theta_forecast),
            mstl: run(mstl_forecast),
            naive: vec![history.last().copied().unwrap_or(f32::NAN); horizon],
            seasonal_naive: (season > 1 && n >= season).then(|| {
                (0..horizon)
                    .map(|h| history[n - season + h % season])
                    .collect()
            }),
        }
    }
}

/// What the backtest measured: the root mean squared error of each candidate that could be
/// scored on every point, and the one kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Backtest {
    /// `(candidate, RMSE)` in [`ForecastMethod::ALL`] order.
    pub errors: Vec<(ForecastMethod, f64)>,
    /// The candidate kept: the least error of all, unless that one uses the network and does
    /// not beat the best classic candidate significantly (see `network_statistic`); then the
    /// best classic one. The network when nothing else could be scored.
    pub selected: ForecastMethod,
    /// When the least error is a candidate using the network and a classic one was scored
    /// too: the Diebold-Mariano statistic of their per-origin squared errors (candidate
    /// minus best classic; negative where the candidate is better). The candidate is kept
    /// only below [`NETWORK_EVIDENCE`].
    pub network_statistic: Option<f64>,
}

/// The one-sided 5% point of the standard normal: a candidate using the network replaces
/// the best classic one only when its Diebold-Mariano statistic is below minus this.
pub const NETWORK_EVIDENCE: f64 = 1.645;

/// Scores every candidate on backtest origins: for each origin, the truth of its points
/// `truth[i]`, the network's forecast `network[i]` and the classic forecasts `classic[i]`
/// (all of the same length per origin). Ties keep the earlier candidate of
/// [`ForecastMethod::ALL`].
pub fn backtest(
    truth: &[Vec<f32>],
    network: &[Vec<f32>],
    classic: &[ClassicForecasts],
) -> Backtest {
    // Per candidate: the mean squared error of each origin.
    let mut losses: Vec<(ForecastMethod, Vec<f64>)> = Vec::new();
    'methods: for method in ForecastMethod::ALL {
        let mut per_origin = Vec::with_capacity(truth.len());
        for ((t, n), c) in truth.iter().zip(network).zip(classic) {
            let Some(f) = method.combine(n, c) else {
                continue 'methods;
            };
            let sum: f64 = t
                .iter()
                .zip(&f)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            per_origin.push(sum / t.len().max(1) as f64);
        }
        let all: f64 = per_origin.iter().sum();
        if !per_origin.is_empty() && all.is_finite() {
            losses.push((method, per_origin));
        }
    }
    let rmse = |l: &[f64]| (l.iter().sum::<f64>() / l.len() as f64).sqrt();
    let errors: Vec<(ForecastMethod, f64)> = losses.iter().map(|(m, l)| (*m, rmse(l))).collect();
    // `min_by` keeps the first of equal minima.
    let best = |keep: &dyn Fn(ForecastMethod) -> bool| {
        losses
            .iter()
            .filter(|(m, _)| keep(*m))
            .min_by(|a, b| rmse(&a.1).total_cmp(&rmse(&b.1)))
    };
    let Some((first, first_losses)) = best(&|_| true) else {
        return Backtest {
            errors,
            selected: ForecastMethod::Network,
            network_statistic: None,
        };
    };
    let (mut selected, mut network_statistic) = (*first, None);
    if first.uses_network() {
        if let Some((classic_best, classic_losses)) = best(&|m| !m.uses_network()) {
            let differences: Vec<f64> = first_losses
                .iter()
                .zip(classic_losses)
                .map(|(a, b)| a - b)
                .collect();
            let lag = truth.first().map_or(1, Vec::len).saturating_sub(1);
            let statistic = diebold_mariano(&differences, lag);
            if !matches!(statistic, Some(s) if s < -NETWORK_EVIDENCE) {
                selected = *classic_best;
            }
            network_statistic = statistic;
        }
    }
    Backtest {
        errors,
        selected,
        network_statistic,
    }
}

/// The Diebold-Mariano statistic of loss differences `d` (one per origin, oldest first):
/// their mean over its standard error, the variance estimated with Bartlett weights up to
/// `lag` (forecasts `h` steps ahead from consecutive origins share `h - 1` points, so their
/// errors are correlated up to that lag). `None` with fewer than two differences, or none
/// that differ.
fn diebold_mariano(d: &[f64], lag: usize) -> Option<f64> {
    let n = d.len();
    if n < 2 {
        return None;
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let autocovariance = |k: usize| -> f64 {
        (k..n)
            .map(|i| (d[i] - mean) * (d[i - k] - mean))
            .sum::<f64>()
            / n as f64
    };
    let lag = lag.min(n - 1);
    let variance = autocovariance(0)
        + 2.0
            * (1..=lag)
                .map(|k| (1.0 - k as f64 / (lag + 1) as f64) * autocovariance(k))
                .sum::<f64>();
    if variance > 0.0 {
        Some(mean / (variance / n as f64).sqrt())
    } else {
        // Every difference the same: certain, unless there is none.
        (mean != 0.0).then(|| mean.signum() * f64::INFINITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classic(ets: &[f32], theta: &[f32]) -> ClassicForecasts {
        ClassicForecasts {
            ets: Some(ets.to_vec()),
            theta: Some(theta.to_vec()),
            naive: vec![0.0; ets.len()],
            seasonal_naive: None,
            mstl: None,
        }
    }

    /// Each candidate's error is its own RMSE; the least wins, the combination included
    /// when errors of opposite sign cancel.
    #[test]
    fn the_least_error_is_selected() {
        let truth = vec![vec![10.0, 20.0], vec![30.0, 40.0]];
        let network = vec![vec![12.0, 22.0], vec![32.0, 42.0]];
        let c = vec![
            classic(&[8.0, 18.0], &[9.0, 19.0]),
            classic(&[28.0, 38.0], &[29.0, 39.0]),
        ];
        let b = backtest(&truth, &network, &c);
        let error = |m| b.errors.iter().find(|(x, _)| *x == m).unwrap().1;
        assert!((error(ForecastMethod::Network) - 2.0).abs() < 1e-9);
        assert!((error(ForecastMethod::Theta) - 1.0).abs() < 1e-9);
        // (12 + 8 + 9) / 3 = 9.67 against 10: an error of 1/3 at every point.
        assert!((error(ForecastMethod::Combination) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(b.selected, ForecastMethod::Combination);
    }

    /// The network's lower backtest error counts only when it is more than chance: better
    /// on average over a few origins but worse on one of them, the best classic candidate is
    /// kept; better at every one of many origins, the network.
    #[test]
    fn the_network_must_beat_the_classics_significantly() {
        // The naive forecast (0 in `classic`) is far off everywhere.
        let truth: Vec<Vec<f32>> = (0..3).map(|_| vec![10.0]).collect();
        let c: Vec<ClassicForecasts> = (0..3).map(|_| classic(&[13.0], &[13.0])).collect();
        // Squared errors 0, 0, 16 against ETS's 9, 9, 9: a mean of 5.3 against 9.
        let lucky = vec![vec![10.0], vec![10.0], vec![14.0]];
        let b = backtest(&truth, &lucky, &c);
        let least = b.errors.iter().min_by(|x, y| x.1.total_cmp(&y.1)).unwrap();
        assert_eq!(least.0, ForecastMethod::Network, "{:?}", b.errors);
        assert!(
            b.network_statistic.is_some_and(|s| s > -NETWORK_EVIDENCE),
            "{b:?}"
        );
        assert_eq!(b.selected, ForecastMethod::Ets);

        let truth: Vec<Vec<f32>> = (1..13).map(|i| vec![10.0 * i as f32]).collect();
        let c: Vec<ClassicForecasts> = truth
            .iter()
            .map(|t| classic(&[t[0] + 3.0], &[t[0] + 4.0]))
            .collect();
        let steady: Vec<Vec<f32>> = truth
            .iter()
            .enumerate()
            .map(|(i, t)| vec![t[0] + 0.5 * (i % 3) as f32])
            .collect();
        let b = backtest(&truth, &steady, &c);
        assert!(
            b.network_statistic.is_some_and(|s| s < -NETWORK_EVIDENCE),
            "{b:?}"
        );
        assert_eq!(b.selected, ForecastMethod::Network);
    }

    /// The statistic: mean over standard error; correlated neighbours (a longer lag) widen
    /// the error, and too few differences give none.
    #[test]
    fn diebold_mariano_statistic() {
        let d = [-1.0, -3.0, -1.0, -3.0];
        // Mean -2, variance 1 (divided by n), standard error 1/2.
        assert!((diebold_mariano(&d, 0).unwrap() + 4.0).abs() < 1e-12);
        let smooth = [-1.0, -1.0, -3.0, -3.0];
        assert!(diebold_mariano(&smooth, 1).unwrap() > diebold_mariano(&smooth, 0).unwrap());
        assert_eq!(diebold_mariano(&[-1.0], 0), None);
        assert_eq!(diebold_mariano(&[0.0, 0.0], 0), None);
    }

    /// A candidate without a classic forecast at some origin is not scored; of those left
    /// the least error wins.
    #[test]
    fn missing_classic_forecasts_leave_the_network() {
        let truth = vec![vec![1.0], vec![2.0]];
        let network = vec![vec![1.5], vec![2.5]];
        let none = ClassicForecasts {
            naive: vec![-10.0],
            ..ClassicForecasts::default()
        };
        let far_naive = ClassicForecasts {
            naive: vec![-10.0],
            ..classic(&[2.0], &[2.0])
        };
        let partial = vec![none, far_naive];
        let b = backtest(&truth, &network, &partial);
        let scored: Vec<ForecastMethod> = b.errors.iter().map(|(m, _)| *m).collect();
        assert_eq!(scored, [ForecastMethod::Network, ForecastMethod::Naive]);
        assert_eq!(b.selected, ForecastMethod::Network);
        assert_eq!(
            ForecastMethod::EtsTheta.combine(&[0.0, 0.0], &classic(&[1.0, 2.0], &[3.0, 6.0])),
            Some(vec![2.0, 4.0])
        );
    }
}
