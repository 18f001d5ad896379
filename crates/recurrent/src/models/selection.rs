//! The final forecast of `train forecast`: the network's, a classic method's, or a
//! combination, chosen by a rolling-origin backtest on the end of the training part.
//!
//! In the M4 competition combinations of forecasts beat most single methods, and the winner
//! (Smyl's ES-RNN) combined exponential smoothing with a recurrent network. Here the
//! network ([`super::Forecaster`], which already forecasts corrections to a seasonal or
//! last-value baseline on a log scale) is one candidate beside ETS and Theta
//! ([`super::baselines`]), their mean, the mean of all three, the naive and seasonal
//! naive forecasts, and MSTL (seasonal-trend decomposition with an ETS trend). The candidate with the least squared error over the backtest's points
//! is kept, so the forecast is never worse than the best classic method on the data it was
//! chosen on.

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
    /// The candidate with the least error (the network when none could be scored).
    pub selected: ForecastMethod,
}

/// Scores every candidate on backtest origins: for each origin, the truth of its points
/// `truth[i]`, the network's forecast `network[i]` and the classic forecasts `classic[i]`
/// (all of the same length per origin). Ties keep the earlier candidate of
/// [`ForecastMethod::ALL`].
pub fn backtest(
    truth: &[Vec<f32>],
    network: &[Vec<f32>],
    classic: &[ClassicForecasts],
) -> Backtest {
    let mut errors = Vec::new();
    'methods: for method in ForecastMethod::ALL {
        let (mut sum, mut count) = (0.0f64, 0usize);
        for ((t, n), c) in truth.iter().zip(network).zip(classic) {
            let Some(f) = method.combine(n, c) else {
                continue 'methods;
            };
            for (a, b) in t.iter().zip(&f) {
                sum += ((a - b) as f64).powi(2);
                count += 1;
            }
        }
        if count > 0 && sum.is_finite() {
            errors.push((method, (sum / count as f64).sqrt()));
        }
    }
    // `min_by` keeps the first of equal minima.
    let selected = errors
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(ForecastMethod::Network, |&(m, _)| m);
    Backtest { errors, selected }
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

    /// A candidate without a classic forecast at some origin is not scored; of those left
    /// the least error wins.
    #[test]
    fn missing_classic_forecasts_leave_the_network() {
        let truth = vec![vec![1.0], vec![2.0]];
        let network = vec![vec![5.0], vec![5.0]];
        let none = ClassicForecasts {
            naive: vec![-10.0],
            ..ClassicForecasts::default()
        };
        let partial = vec![none, classic(&[2.0], &[2.0])];
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
