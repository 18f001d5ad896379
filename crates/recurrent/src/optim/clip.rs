//! `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.

use crate::param::Param;
use rayon::prelude::*;

/// Elements per parallel piece of a gradient reduction or scaling.
const PIECE: usize = 1 << 15;

/// Scales all gradients together so their total `norm_type`-norm is at most `max_norm`
/// (`f32::INFINITY` for the max norm); returns the total norm before clipping.
pub fn clip_grad_norm(params: &mut [(String, &mut Param)], max_norm: f32, norm_type: f32) -> f32 {
    let per_tensor: Vec<f32> = params
        .iter()
        .map(|(_, p)| {
            let pieces: Vec<f32> = p
                .grad
                .par_chunks(PIECE)
                .map(|piece| norm(piece.iter().copied(), norm_type))
                .collect();
            norm(pieces.into_iter(), norm_type)
        })
        .collect();
    let total = norm(per_tensor.into_iter(), norm_type);
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    if coef < 1.0 {
        for (_, p) in params.iter_mut() {
            p.grad
                .par_chunks_mut(PIECE)
                .for_each(|piece| piece.iter_mut().for_each(|g| *g *= coef));
        }
    }
    total
}

/// The `norm_type`-norm of `values` (the max norm for infinity; the common 2-norm
/// without a power function per element).
fn norm(values: impl Iterator<Item = f32>, norm_type: f32) -> f32 {
    if norm_type.is_infinite() {
        values.fold(0.0f32, |m, g| m.max(g.abs()))
    } else if norm_type == 2.0 {
        values.map(|g| g * g).sum::<f32>().sqrt()
    } else {
        values
            .map(|g| g.abs().powf(norm_type))
            .sum::<f32>()
            .powf(1.0 / norm_type)
    }
}

/// Clamps every gradient element to `[-clip_value, clip_value]`.
pub fn clip_grad_value(params: &mut [(String, &mut Param)], clip_value: f32) {
    for (_, p) in params.iter_mut() {
        p.grad
            .iter_mut()
            .for_each(|g| *g = g.clamp(-clip_value, clip_value));
    }
}
