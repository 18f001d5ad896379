//! `nn.Dropout`: zeroes elements with probability `p` in training, scales the rest by `1/(1-p)`.

use super::{no_tape, Module};
use crate::error::{Error, Result};
use crate::kernels::cpu::multiversion;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;

/// `nn.Dropout(p)` with its own seedable random stream. Identity in inference mode.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    rng: rand::rngs::StdRng,
    mask: Option<ArrayD<f32>>,
    training: bool,
}

impl Dropout {
    /// Dropout with probability `p` (in `[0, 1]`), masks drawn from a stream seeded by `seed`.
    pub fn new(p: f32, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::Config(format!(
                "dropout probability has to be between 0 and 1, found {p}"
            )));
        }
        Ok(Dropout {
            p,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            mask: None,
            training: true,
        })
    }
}

impl Module for Dropout {
    fn forward(&mut self, input: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        if !self.training || self.p == 0.0 {
            self.mask = None;
            return Ok(input.clone());
        }
        let mut out = input.as_standard_layout().into_owned();
        let mut factors = Vec::new();
        let out_values = out.as_slice_mut().expect("standard layout");
        dropout_in_place(out_values, &mut factors, self.p, &mut self.rng);
        let mask = ArrayD::from_shape_vec(IxDyn(input.shape()), factors).expect("shape");
        self.mask = Some(mask);
        Ok(out)
    }

    fn backward(&mut self, grad_output: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        if !self.training || self.p == 0.0 {
            return Ok(grad_output.clone());
        }
        let mask = self.mask.take().ok_or_else(|| no_tape("Dropout"))?;
        if mask.shape() != grad_output.shape() {
            return Err(Error::shape(
                "Dropout grad_output",
                format!("{:?}", mask.shape()),
                grad_output.shape(),
            ));
        }
        Ok(grad_output * &mask)
    }

    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
}

crate::parameters!(Dropout {});

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
