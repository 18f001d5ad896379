//! Exponential smoothing with additive errors and additive seasonality: the seasonal
//! members of the ETS family (Hyndman, Koehler, Ord & Snyder 2008), ETS(A,N,A),
//! ETS(A,A,A) and ETS(A,Ad,A), that `augurs-ets` does not fit yet.
//!
//! With level `l`, slope `b`, damping `φ` (1 without damping, and `b = 0` without trend)
//! and seasonal states `s`, one step is
//!
//! ```text
//! ŷ_t = l_{t-1} + φ b_{t-1} + s_{t-m}        e_t = y_t − ŷ_t
//! l_t = l_{t-1} + φ b_{t-1} + α e_t          b_t = φ b_{t-1} + β e_t
//! s_t = s_{t-m} + γ e_t
//! ```
//!
//! and the forecast `h` steps after the last value `l + (φ + … + φ^h) b + s` of the same
//! position in the period. The smoothing parameters, the damping and the initial states
//! (the `m − 1` free seasonal ones summing with the last to zero) are fitted together by
//! least squares with Nelder-Mead (`argmin`), as statsmodels' `ETSModel` estimates them,
//! inside its usual bounds: `α` in `[1e-4, 0.9999]`, `β` in `[1e-4, α]`, `γ` in
//! `[1e-4, 1 − α]`, `φ` in `[0.8, 0.98]`. [`SeasonalEts::aicc`] is defined as `augurs-ets`
//! defines it (`n ln(SSE)` plus the usual penalty), so the seasonal and non-seasonal
//! models of one series can be compared.

use argmin::core::{CostFunction, Executor, State};
use argmin::solver::neldermead::NelderMead;

/// The trend component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    /// No slope.
    None,
    /// A slope carried on unchanged.
    Additive,
    /// A slope damped by `φ` per step.
    Damped,
}

impl Trend {
    /// Every trend, in the order they are tried.
    pub const ALL: [Trend; 3] = [Trend::None, Trend::Additive, Trend::Damped];

    fn has_slope(self) -> bool {
        self != Trend::None
    }
}

/// A fitted seasonal ETS model: its parameters and the states after the last value.
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonalEts {
    /// The trend component.
    pub trend: Trend,
    /// Smoothing of the level, slope and seasonal states.
    pub alpha: f64,
    /// See [`SeasonalEts::alpha`] (0 without trend).
    pub beta: f64,
    /// See [`SeasonalEts::alpha`].
    pub gamma: f64,
    /// Damping (1 unless [`Trend::Damped`]).
    pub phi: f64,
    level: f64,
    slope: f64,
    /// Seasonal states by position `t % m` of the next period's values.
    season: Vec<f64>,
    /// Values the model was fitted on.
    n: usize,
    sse: f64,
    /// Estimated parameters: smoothing, damping and free initial states.
    params: usize,
}

/// Parameters and initial states of one candidate, laid out as the optimiser sees them:
/// `[α, β?, γ, φ?, l_0, b_0?, s_0 … s_{m-2}]` (`?`: only with a trend / with damping).
#[derive(Clone, Copy)]
struct Layout {
    trend: Trend,
    m: usize,
}

/// Parameters and initial states read from an optimiser vector.
struct Unpacked {
    alpha: f64,
    beta: f64,
    gamma: f64,
    phi: f64,
    level: f64,
    slope: f64,
    season: Vec<f64>,
}

impl Layout {
    fn len(&self) -> usize {
        let slope = usize::from(self.trend.has_slope());
        let damped = usize::from(self.trend == Trend::Damped);
        2 + damped + 2 * slope + self.m
    }

    fn unpack(&self, p: &[f64]) -> Unpacked {
        let mut it = p.iter().copied();
        let mut next = || it.next().unwrap_or(0.0);
        let alpha = next();
        let beta = if self.trend.has_slope() { next() } else { 0.0 };
        let gamma = next();
        let phi = if self.trend == Trend::Damped {
            next()
        } else {
            1.0
        };
        let level = next();
        let slope = if self.trend.has_slope() { next() } else { 0.0 };
        let mut season: Vec<f64> = (0..self.m - 1).map(|_| next()).collect();
        season.push(-season.iter().sum::<f64>());
        Unpacked {
            alpha,
            beta,
            gamma,
            phi,
            level,
            slope,
            season,
        }
    }

    fn pack(&self, u: &Unpacked) -> Vec<f64> {
        let mut p = vec![u.alpha];
        if self.trend.has_slope() {
            p.push(u.beta);
        }
        p.push(u.gamma);
        if self.trend == Trend::Damped {
            p.push(u.phi);
        }
        p.push(u.level);
        if self.trend.has_slope() {
            p.push(u.slope);
        }
        p.extend_from_slice(&u.season[..self.m - 1]);
        p
    }

    /// Whether the smoothing parameters and damping lie in their bounds.
    fn admissible(&self, u: &Unpacked) -> bool {
        const LOW: f64 = 1e-4;
        let in_range = |v: f64, lo: f64, hi: f64| (lo..=hi).contains(&v);
        in_range(u.alpha, LOW, 0.9999)
            && (!self.trend.has_slope() || in_range(u.beta, LOW, u.alpha))
            && in_range(u.gamma, LOW, 1.0 - u.alpha)
            && (self.trend != Trend::Damped || in_range(u.phi, 0.8, 0.98))
    }
}

/// Runs the recursions over `y` from the initial states in `u`, leaving the final states
/// there; returns the sum of squared one-step errors.
fn filter(y: &[f64], u: &mut Unpacked) -> f64 {
    let m = u.season.len();
    let mut sse = 0.0;
    for (t, &v) in y.iter().enumerate() {
        let s = &mut u.season[t % m];
        let damped = u.phi * u.slope;
        let e = v - (u.level + damped + *s);
        sse += e * e;
        u.level += damped + u.alpha * e;
        u.slope = damped + u.beta * e;
        *s += u.gamma * e;
    }
    sse
}

/// The least-squares problem of one candidate.
#[derive(Clone, Copy)]
struct Problem<'a> {
    y: &'a [f64],
    layout: Layout,
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        let mut u = self.layout.unpack(p);
        if !self.layout.admissible(&u) {
            return Ok(f64::INFINITY);
        }
        let sse = filter(self.y, &mut u);
        Ok(if sse.is_finite() { sse } else { f64::INFINITY })
    }
}

/// Starting values: `α = 0.3` (`β`, `γ` 0.05, `φ` 0.9), the level and slope of the means
/// of the first two periods, and the mean deviation of each position from that line.
fn start(y: &[f64], layout: &Layout) -> Unpacked {
    let m = layout.m;
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    let (first, second) = (mean(&y[..m]), mean(&y[m..2 * m]));
    let slope = if layout.trend.has_slope() {
        (second - first) / m as f64
    } else {
        0.0
    };
    // The line passes through `first` in the middle of the first period; `level` is its
    // value one step before the first point.
    let level = first - slope * (m as f64 + 1.0) / 2.0;
    let line = |t: usize| level + slope * (t + 1) as f64;
    let mut season: Vec<f64> = (0..m)
        .map(|i| ((y[i] - line(i)) + (y[i + m] - line(i + m))) / 2.0)
        .collect();
    let centre = mean(&season);
    season.iter_mut().for_each(|s| *s -= centre);
    Unpacked {
        alpha: 0.3,
        beta: 0.05,
        gamma: 0.05,
        phi: 0.9,
        level,
        slope,
        season,
    }
}

impl SeasonalEts {
    /// Fits the model with `trend` and period `m` to `y`; `None` when `m < 2`, `y` holds
    /// fewer than two periods or too few values for the parameters, or is not finite.
    pub fn fit(y: &[f64], m: usize, trend: Trend) -> Option<Self> {
        let layout = Layout { trend, m };
        let k = layout.len();
        if m < 2 || y.len() < 2 * m || y.len() <= k + 4 || y.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let spread = {
            let mean = y.iter().sum::<f64>() / y.len() as f64;
            (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / y.len() as f64).sqrt()
        };
        let problem = Problem { y, layout };
        let mut best = problem.layout.pack(&start(y, &problem.layout));
        // Nelder-Mead from a simplex around the start, then once more around its result
        // (a restart escapes the collapsed simplices a first run often ends in).
        for _ in 0..2 {
            let steps: Vec<f64> = (0..k)
                .map(|i| match i {
                    i if i < k - m - usize::from(trend.has_slope()) => 0.02,
                    _ => 0.1 * spread.max(f64::MIN_POSITIVE),
                })
                .collect();
            let mut simplex = vec![best.clone()];
            for (i, step) in steps.iter().enumerate() {
                let mut vertex = best.clone();
                vertex[i] += step;
                simplex.push(vertex);
            }
            let solver = NelderMead::new(simplex).with_sd_tolerance(1e-10).ok()?;
            let result = Executor::new(problem, solver)
                .configure(|s| s.max_iters(400 * k as u64))
                .run()
                .ok()?;
            best = result.state().get_best_param()?.clone();
        }
        let mut u = problem.layout.unpack(&best);
        if !problem.layout.admissible(&u) {
            return None;
        }
        let sse = filter(y, &mut u);
        sse.is_finite().then_some(SeasonalEts {
            trend,
            alpha: u.alpha,
            beta: u.beta,
            gamma: u.gamma,
            phi: u.phi,
            level: u.level,
            slope: u.slope,
            season: u.season,
            n: y.len(),
            sse,
            params: k,
        })
    }

    /// The corrected Akaike information criterion, as `augurs-ets` computes it: `n
    /// ln(SSE) + 2k` plus `2(k + 1)(k + 2) / (n − k − 2)`, `k` the estimated parameters.
    pub fn aicc(&self) -> f64 {
        let n = self.n as f64;
        let k = self.params as f64;
        let aic = n * (self.sse + 1e-8).ln() + 2.0 * k;
        aic + 2.0 * (k + 1.0) * (k + 2.0) / (n - k - 2.0)
    }

    /// The `horizon` values after the fitted ones.
    pub fn forecast(&self, horizon: usize) -> Vec<f64> {
        let m = self.season.len();
        let mut damping = 0.0;
        let mut power = 1.0;
        (0..horizon)
            .map(|h| {
                power *= self.phi;
                damping += power;
                self.level + damping * self.slope + self.season[(self.n + h) % m]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seasonal pattern on a line, with a little deterministic noise: the trended model
    /// forecasts the continuation within 2% of its range, and it beats the model without
    /// trend by the information criterion.
    #[test]
    fn trended_seasonal_series_is_continued() {
        let pattern = [5.0, -3.0, 8.0, -6.0, 1.0, -5.0];
        let noise = |t: usize| ((t * 7919) % 11) as f64 / 10.0 - 0.5;
        let value = |t: usize| 50.0 + 0.8 * t as f64 + pattern[t % 6];
        let y: Vec<f64> = (0..60).map(|t| value(t) + noise(t)).collect();
        let trended = SeasonalEts::fit(&y, 6, Trend::Additive).expect("fits");
        let flat = SeasonalEts::fit(&y, 6, Trend::None).expect("fits");
        assert!(
            trended.aicc() < flat.aicc(),
            "{} vs {}",
            trended.aicc(),
            flat.aicc()
        );
        for (h, f) in trended.forecast(12).iter().enumerate() {
            let want = value(60 + h);
            assert!((f - want).abs() < 0.02 * 60.0, "h={}: {f} vs {want}", h + 1);
        }
        let damped = SeasonalEts::fit(&y, 6, Trend::Damped).expect("fits");
        assert!((0.8..=0.98).contains(&damped.phi), "phi {}", damped.phi);
    }

    /// Parameters stay in their bounds, and short, unseasonal-period or broken series are
    /// refused rather than fitted.
    #[test]
    fn bounds_and_refusals() {
        let y: Vec<f64> = (0..40).map(|t| ((t * 31) % 17) as f64).collect();
        for trend in Trend::ALL {
            let fit = SeasonalEts::fit(&y, 4, trend).expect("fits");
            assert!((1e-4..=0.9999).contains(&fit.alpha));
            assert!(fit.gamma >= 1e-4 && fit.gamma <= 1.0 - fit.alpha + 1e-12);
            assert!(fit.forecast(5).iter().all(|v| v.is_finite()));
        }
        assert!(SeasonalEts::fit(&y[..7], 4, Trend::None).is_none());
        assert!(SeasonalEts::fit(&y, 1, Trend::None).is_none());
        let mut broken = y.clone();
        broken[3] = f64::NAN;
        assert!(SeasonalEts::fit(&broken, 4, Trend::None).is_none());
    }
}
