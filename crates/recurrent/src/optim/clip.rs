//! `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.

use crate::param::Param;

/// Scales all gradients together so their total `norm_type`-norm is at most `max_norm`
/// (`f32::INFINITY` for the max norm); returns the total norm before clipping.
pub fn clip_grad_norm(params: &mut [(String, &mut Param)], max_norm: f32, norm_type: f32) -> f32 {
    let per_tensor: Vec<f32> = params
        .iter()
        .map(|(_, p)| {
            if norm_type.is_infinite() {
                p.grad.iter().fold(0.0f32, |m, g| m.max(g.abs()))
            } else {
                p.grad
                    .iter()
                    .map(|g| g.abs().powf(norm_type))
                    .sum::<f32>()
                    .powf(1.0 / norm_type)
            }
        })
        .collect();
    let total = if norm_type.is_infinite() {
        per_tensor.iter().fold(0.0f32, |m, v| m.max(*v))
    } else {
        per_tensor
            .iter()
            .map(|v| v.powf(norm_type))
            .sum::<f32>()
            .powf(1.0 / norm_type)
    };
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    for (_, p) in params.iter_mut() {
        p.grad.iter_mut().for_each(|g| *g *= coef);
    }
    total
}

/// Clamps every gradient element to `[-clip_value, clip_value]`.
pub fn clip_grad_value(params: &mut [(String, &mut Param)], clip_value: f32) {
    for (_, p) in params.iter_mut() {
        p.grad
            .iter_mut()
            .for_each(|g| *g = g.clamp(-clip_value, clip_value));
    }
}
