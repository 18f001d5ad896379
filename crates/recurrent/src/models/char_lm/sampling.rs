//! Sampling text from a [`CharLm`]: temperature and top-k.

use super::CharLm;
use crate::error::{Error, Result};
use rand::Rng;

impl CharLm {
    /// Samples `length` characters after `prompt` (which must be non-empty), with
    /// `temperature` and, when `top_k > 0`, only among the `top_k` most likely characters.
    pub fn generate(
        &self,
        prompt: &str,
        length: usize,
        temperature: f32,
        top_k: usize,
        rng: &mut impl Rng,
    ) -> Result<String> {
        let mut out = String::new();
        self.generate_each(prompt, length, temperature, top_k, rng, |c| {
            out.push(c);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`CharLm::generate`], handing each character to `emit` as soon as it is sampled
    /// (to stream it), in constant memory whatever `length`; an error from `emit` stops
    /// the sampling and is returned.
    pub fn generate_each(
        &self,
        prompt: &str,
        length: usize,
        temperature: f32,
        top_k: usize,
        rng: &mut impl Rng,
        mut emit: impl FnMut(char) -> Result<()>,
    ) -> Result<()> {
        let ids = self.vocab.encode(prompt)?;
        if ids.is_empty() {
            return Err(Error::Invalid("the prompt must not be empty".into()));
        }
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "temperature must be positive and finite, found {temperature}"
            )));
        }
        let rnn = self.rnn.prepare();
        let (logits, mut state) = self.logits_through(&rnn, &ids, 1, None)?;
        let v = self.vocab.len();
        let mut last: Vec<f32> =
            logits.as_slice().expect("contiguous")[(ids.len() - 1) * v..].to_vec();
        for _ in 0..length {
            let next = sample(&last, temperature, top_k, rng);
            emit(self.vocab.chars()[next])?;
            let (l, s) = self.logits_through(&rnn, &[next], 1, Some(&state))?;
            last = l.as_slice().expect("contiguous").to_vec();
            state = s;
        }
        Ok(())
    }
}

/// Draws an index from `softmax(logits / temperature)` restricted to the `top_k` largest.
fn sample(logits: &[f32], temperature: f32, top_k: usize, rng: &mut impl Rng) -> usize {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if top_k > 0 && top_k < logits.len() {
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        idx.truncate(top_k);
    }
    let max = idx
        .iter()
        .map(|&i| logits[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - max) / temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut r = rng.gen::<f64>() * total;
    for (k, w) in weights.iter().enumerate() {
        r -= w;
        if r <= 0.0 {
            return idx[k];
        }
    }
    idx[idx.len() - 1]
}
