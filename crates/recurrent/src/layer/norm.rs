//! Row-wise layer normalisation used by the layer-norm LSTM (no allocation).

/// `nn.LayerNorm`'s default epsilon.
pub const LN_EPS: f32 = 1e-5;

/// Normalises `x` in place to `(x - mean) * rstd * weight + bias`; writes `(x - mean) * rstd`
/// to `hat` and returns `rstd = 1 / sqrt(var + eps)` (biased variance, as PyTorch).
pub fn forward(x: &mut [f32], weight: &[f32], bias: &[f32], hat: &mut [f32]) -> f32 {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let rstd = 1.0 / (var + LN_EPS).sqrt();
    for i in 0..x.len() {
        hat[i] = (x[i] - mean) * rstd;
        x[i] = hat[i] * weight[i] + bias[i];
    }
    rstd
}

/// Given `dy` (gradient of the normalised, scaled output), accumulates the gradients of
/// `weight` and `bias` and overwrites `dy` with the gradient of the input `x`.
pub fn backward(
    dy: &mut [f32],
    hat: &[f32],
    rstd: f32,
    weight: &[f32],
    grad_weight: &mut [f32],
    grad_bias: &mut [f32],
) {
    let n = dy.len() as f32;
    let mut mean_dhat = 0.0;
    let mut mean_dhat_hat = 0.0;
    for i in 0..dy.len() {
        grad_weight[i] += dy[i] * hat[i];
        grad_bias[i] += dy[i];
        let dhat = dy[i] * weight[i];
        mean_dhat += dhat;
        mean_dhat_hat += dhat * hat[i];
    }
    mean_dhat /= n;
    mean_dhat_hat /= n;
    for i in 0..dy.len() {
        let dhat = dy[i] * weight[i];
        dy[i] = rstd * (dhat - mean_dhat - hat[i] * mean_dhat_hat);
    }
}
