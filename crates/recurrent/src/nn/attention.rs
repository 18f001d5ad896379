//! Luong attention ("general" score, Luong et al. 2015): a decoder's states attend over an
//! encoder's outputs.

use super::{check_lengths, Linear, Module, Tape};
use crate::error::{Error, Result};
use crate::kernels::activation::tanh_slice;
use crate::kernels::{gemm, Mat, MatMut};
use crate::param::GradSlices;
use ndarray::{ArrayD, IxDyn};
use rand::Rng;

/// Luong's global attention with the "general" score: for query `q_t` (a decoder state)
/// and memory `m_s` (encoder outputs), `score(t, s) = q_t W_a m_s^T`, `a_t = softmax_s`
/// over the valid memory positions of each sample, context `c_t = sum_s a_ts m_s`, and the
/// output `tanh(W_c [c_t; q_t])`.
///
/// Queries `(B, Tq, Hq)`, memory `(B, Tk, Hk)`, output `(B, Tq, out)`. The score depends on
/// the query only through its layer input, so a decoder without input feeding runs over a
/// whole teacher-forced target in one call and attention follows as batched products.
#[derive(Debug, Clone)]
pub struct Attention {
    /// `W_a`: `weight (Hk, Hq)`, no bias (`nn.Linear(Hq, Hk, bias=False)`).
    pub score: Linear,
    /// `W_c`: `weight (out, Hk + Hq)`, no bias; input `[context; query]`.
    pub combine: Linear,
}

crate::parameters!(Attention {
    part "score" => score;
    part "combine" => combine;
});

/// What [`Attention::forward`] returns.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// `(B, Tq, out)`: `tanh(W_c [c; q])`.
    pub output: ArrayD<f32>,
    /// `(B, Tq, Tk)`: the attention weights (0 past each sample's memory length).
    pub weights: ArrayD<f32>,
}

/// What [`Attention`] keeps for backward.
struct AttentionRecord {
    sizes: Sizes,
    memory: Vec<f32>,
    /// `(B, Tq, Hk)`: `q W_a^T`.
    projected: Vec<f32>,
    /// `(B, Tq, Tk)`.
    weights: Vec<f32>,
    /// `(B, Tq, out)`.
    output: Vec<f32>,
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    b: usize,
    tq: usize,
    tk: usize,
    hq: usize,
    hk: usize,
}

impl Attention {
    /// Query size `Hq`, memory size `Hk`, output size; weights initialised as `nn.Linear`.
    pub fn new(query_size: usize, memory_size: usize, out_size: usize, rng: &mut impl Rng) -> Self {
        Attention {
            score: Linear::new(query_size, memory_size, false, rng),
            combine: Linear::new(memory_size + query_size, out_size, false, rng),
        }
    }

    fn sizes(&self, query: &ArrayD<f32>, memory: &ArrayD<f32>) -> Result<Sizes> {
        let (hq, hk) = (self.score.weight.shape[1], self.score.weight.shape[0]);
        let &[b, tq, q] = query.shape() else {
            return Err(Error::shape(
                "Attention query",
                format!("(B, Tq, {hq})"),
                query.shape(),
            ));
        };
        let &[mb, tk, m] = memory.shape() else {
            return Err(Error::shape(
                "Attention memory",
                format!("(B, Tk, {hk})"),
                memory.shape(),
            ));
        };
        if q != hq {
            return Err(Error::shape(
                "Attention query",
                format!("(B, Tq, {hq})"),
                query.shape(),
            ));
        }
        if mb != b || m != hk || tk == 0 {
            let want = format!("({b}, Tk >= 1, {hk})");
            return Err(Error::shape("Attention memory", want, memory.shape()));
        }
        Ok(Sizes { b, tq, tk, hq, hk })
    }

    /// Attends with `query` `(B, Tq, Hq)` over `memory` `(B, Tk, Hk)`, sample `s` over its
    /// first `memory_lengths[s]` positions (all without lengths).
    pub fn forward(
        &self,
        query: &ArrayD<f32>,
        memory: &ArrayD<f32>,
        memory_lengths: Option<&[usize]>,
        tape: &mut Tape,
    ) -> Result<AttentionOutput> {
        let z = self.sizes(query, memory)?;
        let Sizes { b, tq, tk, hq, hk } = z;
        check_lengths("Attention memory", memory_lengths, b, tk)?;
        let training = tape.is_training();
        let (score_tape, combine_tape) = tape.parts(2).split_at_mut(1);
        let projected = self.score.forward(query, &mut score_tape[0])?;
        let projected = projected.as_standard_layout();
        let qw = projected.as_slice().expect("standard layout");
        let memory = memory.as_standard_layout();
        let m = memory.as_slice().expect("standard layout");
        let mut weights = vec![0.0; b * tq * tk];
        let mut concat = vec![0.0; b * tq * (hk + hq)];
        let query = query.as_standard_layout();
        let q = query.as_slice().expect("standard layout");
        for s in 0..b {
            let ms = &m[s * tk * hk..(s + 1) * tk * hk];
            let a = &mut weights[s * tq * tk..(s + 1) * tq * tk];
            let qs = Mat::new(&qw[s * tq * hk..], hk);
            gemm(tq, tk, hk, qs, Mat::t(ms, hk), 0.0, MatMut::new(a, tk));
            let valid = memory_lengths.map_or(tk, |l| l[s]);
            for row in a.chunks_exact_mut(tk) {
                masked_softmax(row, valid);
            }
            // Context into the first `Hk` columns of `[c; q]`.
            let out = MatMut::new(&mut concat[s * tq * (hk + hq)..], hk + hq);
            gemm(tq, hk, tk, Mat::new(a, tk), Mat::new(ms, hk), 0.0, out);
        }
        for (row, qrow) in concat.chunks_exact_mut(hk + hq).zip(q.chunks_exact(hq)) {
            row[hk..].copy_from_slice(qrow);
        }
        let concat = ArrayD::from_shape_vec(IxDyn(&[b, tq, hk + hq]), concat).expect("shape");
        let mut output = self.combine.forward_owned(concat, &mut combine_tape[0])?;
        tanh_slice(output.as_slice_mut().expect("standard layout"));
        if training {
            tape.keep(AttentionRecord {
                sizes: z,
                memory: m.to_vec(),
                projected: qw.to_vec(),
                weights: weights.clone(),
                output: output.as_standard_layout().iter().copied().collect(),
            });
        }
        let weights = ArrayD::from_shape_vec(IxDyn(&[b, tq, tk]), weights).expect("shape");
        Ok(AttentionOutput { output, weights })
    }

    /// Given the gradient of the output `(B, Tq, out)` of the training-mode forward that
    /// filled `tape`, returns the gradients of the query `(B, Tq, Hq)` and of the memory
    /// `(B, Tk, Hk)`, and adds the parameter gradients to `grads`.
    pub fn backward(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
        let r: &AttentionRecord = tape.record("Attention")?;
        let Sizes { b, tq, tk, hq, hk } = r.sizes;
        let out = self.combine.weight.shape[0];
        if grad_output.shape() != [b, tq, out] {
            let want = format!("[{b}, {tq}, {out}]");
            return Err(Error::shape(
                "Attention grad_output",
                want,
                grad_output.shape(),
            ));
        }
        let mut score_grads = grads.split(1);
        let mut combine_grads = grads.split(1);
        let g = grad_output.as_standard_layout();
        let d_pre: Vec<f32> = g
            .iter()
            .zip(&r.output)
            .map(|(g, y)| g * (1.0 - y * y))
            .collect();
        let d_pre = ArrayD::from_shape_vec(IxDyn(&[b, tq, out]), d_pre).expect("shape");
        let d_concat = self
            .combine
            .backward(tape.part(1), &d_pre, &mut combine_grads)?;
        let d_concat = d_concat.as_slice().expect("standard layout");
        let mut d_memory = vec![0.0; b * tk * hk];
        let mut d_projected = vec![0.0; b * tq * hk];
        let mut d_a = vec![0.0; tq * tk];
        for s in 0..b {
            let ms = &r.memory[s * tk * hk..(s + 1) * tk * hk];
            let a = &r.weights[s * tq * tk..(s + 1) * tq * tk];
            let dm = &mut d_memory[s * tk * hk..(s + 1) * tk * hk];
            let d_ctx = Mat::new(&d_concat[s * tq * (hk + hq)..], hk + hq);
            // c = a m: d_a = d_c m^T, d_m += a^T d_c.
            gemm(
                tq,
                tk,
                hk,
                d_ctx,
                Mat::t(ms, hk),
                0.0,
                MatMut::new(&mut d_a, tk),
            );
            gemm(tk, hk, tq, Mat::t(a, tk), d_ctx, 0.0, MatMut::new(dm, hk));
            // Softmax: d_score = a (d_a - sum(a d_a)); masked positions have a = 0.
            for (da, a) in d_a.chunks_exact_mut(tk).zip(a.chunks_exact(tk)) {
                let dot: f32 = da.iter().zip(a).map(|(d, a)| d * a).sum();
                da.iter_mut().zip(a).for_each(|(d, a)| *d = a * (*d - dot));
            }
            // score = (q W_a^T) m^T: d_projected = d_score m, d_m += d_score^T (q W_a^T).
            let dq = MatMut::new(&mut d_projected[s * tq * hk..(s + 1) * tq * hk], hk);
            gemm(tq, hk, tk, Mat::new(&d_a, tk), Mat::new(ms, hk), 0.0, dq);
            let qw = Mat::new(&r.projected[s * tq * hk..], hk);
            gemm(tk, hk, tq, Mat::t(&d_a, tk), qw, 1.0, MatMut::new(dm, hk));
        }
        let d_projected = ArrayD::from_shape_vec(IxDyn(&[b, tq, hk]), d_projected).expect("shape");
        let mut d_query = self
            .score
            .backward(tape.part(0), &d_projected, &mut score_grads)?;
        for (dq, row) in d_query
            .as_slice_mut()
            .expect("standard layout")
            .chunks_exact_mut(hq)
            .zip(d_concat.chunks_exact(hk + hq))
        {
            dq.iter_mut().zip(&row[hk..]).for_each(|(d, v)| *d += v);
        }
        let d_memory = ArrayD::from_shape_vec(IxDyn(&[b, tk, hk]), d_memory).expect("shape");
        Ok((d_query, d_memory))
    }
}

/// Softmax of `row[..valid]` in place; the rest becomes 0.
fn masked_softmax(row: &mut [f32], valid: usize) {
    let (live, masked) = row.split_at_mut(valid);
    let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in live.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    live.iter_mut().for_each(|v| *v /= sum);
    masked.iter_mut().for_each(|v| *v = 0.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::Grads;
    use rand::SeedableRng;

    fn random(rng: &mut impl Rng, shape: &[usize]) -> ArrayD<f32> {
        let n = shape.iter().product();
        let v = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    }

    /// `sum(output * w)` for a fixed `w`: a scalar whose gradients backward gives.
    fn loss(
        att: &Attention,
        q: &ArrayD<f32>,
        m: &ArrayD<f32>,
        lengths: &[usize],
        w: &ArrayD<f32>,
    ) -> f64 {
        let out = att
            .forward(q, m, Some(lengths), &mut Tape::inference())
            .unwrap();
        out.output
            .iter()
            .zip(w)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    }

    /// Gradients of query, memory and both weights against central finite differences
    /// along random directions. Tolerance: f32 forward passes with step 1e-2 on values of
    /// size ~1 leave about 1e-3 of relative error in a difference quotient.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (b, tq, tk, hq, hk, out) = (3, 4, 5, 6, 7, 5);
        let att = Attention::new(hq, hk, out, &mut rng);
        let q = random(&mut rng, &[b, tq, hq]);
        let m = random(&mut rng, &[b, tk, hk]);
        let w = random(&mut rng, &[b, tq, out]);
        let lengths = [5, 2, 4];
        let mut tape = Tape::training(0);
        let y = att.forward(&q, &m, Some(&lengths), &mut tape).unwrap();
        // Masked positions get no weight, and each row sums to 1.
        for s in 0..b {
            for t in 0..tq {
                let row: Vec<f32> = (0..tk).map(|k| y.weights[[s, t, k]]).collect();
                assert!(row[lengths[s]..].iter().all(|&v| v == 0.0));
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
        let mut grads = Grads::zeros_for(&att);
        let (dq, dm) = att.backward(&tape, &w, &mut grads.slices()).unwrap();
        let eps = 1e-2;
        let check = |name: &str, analytic: f64, plus: f64, minus: f64| {
            let numeric = (plus - minus) / (2.0 * eps as f64);
            let tol = 2e-3 * (1.0 + numeric.abs());
            assert!(
                (analytic - numeric).abs() <= tol,
                "{name}: {analytic} vs {numeric}"
            );
        };
        let dir_q = random(&mut rng, q.shape());
        let analytic: f64 = dq.iter().zip(&dir_q).map(|(a, d)| (a * d) as f64).sum();
        let (qp, qm) = (&q + &(&dir_q * eps), &q - &(&dir_q * eps));
        check(
            "query",
            analytic,
            loss(&att, &qp, &m, &lengths, &w),
            loss(&att, &qm, &m, &lengths, &w),
        );
        let dir_m = random(&mut rng, m.shape());
        let analytic: f64 = dm.iter().zip(&dir_m).map(|(a, d)| (a * d) as f64).sum();
        let (mp, mm) = (&m + &(&dir_m * eps), &m - &(&dir_m * eps));
        check(
            "memory",
            analytic,
            loss(&att, &q, &mp, &lengths, &w),
            loss(&att, &q, &mm, &lengths, &w),
        );
        // Memory past a sample's length gets no gradient.
        assert!((0..hk).all(|h| dm[[1, 3, h]] == 0.0));
        for (index, name) in ["score", "combine"].into_iter().enumerate() {
            let flat = grads.part(index);
            let len = flat.len();
            let dir: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let analytic: f64 = flat.iter().zip(&dir).map(|(a, d)| (a * d) as f64).sum();
            let shifted = |sign: f32| {
                let mut a = att.clone();
                let p = if index == 0 {
                    &mut a.score.weight
                } else {
                    &mut a.combine.weight
                };
                p.value
                    .iter_mut()
                    .zip(&dir)
                    .for_each(|(v, d)| *v += sign * eps * d);
                loss(&a, &q, &m, &lengths, &w)
            };
            check(name, analytic, shifted(1.0), shifted(-1.0));
        }
    }
}
