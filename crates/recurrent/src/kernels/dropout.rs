//! Inverted dropout masks, drawn in parallel pieces from one seed, and their application.

use crate::kernels::cpu::multiversion;
use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;

/// Elements per parallel piece of a dropout mask, each drawn by its own generator.
const MASK_PIECE: usize = 1 << 14;

/// Inverted dropout in place: draws `mask` (resized to `values.len()`) with 0 at
/// probability `p` and `1 / (1 - p)` elsewhere, and multiplies `values` by it.
///
/// One draw of `rng` seeds a fast generator for each piece of [`MASK_PIECE`] elements, and
/// the pieces are drawn in parallel, so the mask depends on `rng` alone, not on the number
/// of threads. Each element compares 16 random bits with `p * 2^16`, so `p` acts rounded
/// to a multiple of 2^-16.
pub(crate) fn dropout_in_place(
    values: &mut [f32],
    mask: &mut Vec<f32>,
    p: f32,
    rng: &mut (impl Rng + ?Sized),
) {
    let keep = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    let threshold = (p as f64 * 65_536.0).round() as u32;
    let seed: u64 = rng.gen();
    mask.resize(values.len(), 0.0);
    mask.par_chunks_mut(MASK_PIECE)
        .zip(values.par_chunks_mut(MASK_PIECE))
        .enumerate()
        .for_each(|(i, (mask, values))| {
            let piece_seed = seed.wrapping_add(i as u64);
            drop_piece(mask, values, piece_seed, threshold, keep);
        });
}

/// Elements drawn at once: 16 draws of 64 random bits.
const DRAWS: usize = 64;

#[inline(always)]
fn drop_piece_generic(mask: &mut [f32], values: &mut [f32], seed: u64, threshold: u32, keep: f32) {
    let mut bits = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut draws = [0u16; DRAWS];
    for (mask, values) in mask.chunks_mut(DRAWS).zip(values.chunks_mut(DRAWS)) {
        for four in draws.chunks_exact_mut(4) {
            let r = bits.next_u64();
            for (j, d) in four.iter_mut().enumerate() {
                *d = (r >> (16 * j)) as u16;
            }
        }
        for ((m, v), d) in mask.iter_mut().zip(values.iter_mut()).zip(&draws) {
            *m = if u32::from(*d) < threshold { 0.0 } else { keep };
            *v *= *m;
        }
    }
}

multiversion!(
    /// One piece of [`dropout_in_place`], its generator seeded by `seed`.
    fn drop_piece(mask: &mut [f32], values: &mut [f32], seed: u64, threshold: u32, keep: f32) => drop_piece_generic
);

/// Multiplies `values` element-wise by `mask` (same length), in parallel pieces.
pub(crate) fn apply_mask(values: &mut [f32], mask: &[f32]) {
    values
        .par_chunks_mut(MASK_PIECE)
        .zip(mask.par_chunks(MASK_PIECE))
        .for_each(|(v, m)| v.iter_mut().zip(m).for_each(|(v, m)| *v *= m));
}
