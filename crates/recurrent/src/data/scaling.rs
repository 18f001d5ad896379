//! [`Standardizer`]: per-feature mean and standard deviation, fitted on training data.

use serde::{Deserialize, Serialize};

/// `x -> (x - mean) / std` per feature (std of a constant feature is taken as 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Per-feature mean.
    pub mean: Vec<f32>,
    /// Per-feature standard deviation.
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Fits on rows of `dims` features.
    pub fn fit<'a>(rows: impl Iterator<Item = &'a [f32]>, dims: usize) -> Self {
        let mut n = 0f64;
        let mut sum = vec![0f64; dims];
        let mut sq = vec![0f64; dims];
        for r in rows {
            n += 1.0;
            for (d, &v) in r.iter().enumerate() {
                sum[d] += v as f64;
                sq[d] += (v as f64) * (v as f64);
            }
        }
        let n = n.max(1.0);
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let var = (s / n - m * m).max(0.0);
                if var.sqrt() > 1e-8 {
                    var.sqrt() as f32
                } else {
                    1.0
                }
            })
            .collect();
        Standardizer {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        }
    }

    /// Scales one row in place.
    pub fn apply(&self, row: &mut [f32]) {
        for (d, v) in row.iter_mut().enumerate() {
            *v = (*v - self.mean[d]) / self.std[d];
        }
    }

    /// Undoes [`Standardizer::apply`] for feature `d`.
    pub fn invert(&self, d: usize, v: f32) -> f32 {
        v * self.std[d] + self.mean[d]
    }
}
