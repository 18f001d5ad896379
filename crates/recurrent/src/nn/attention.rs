//! Luong attention ("general" score, Luong et al. 2015): a decoder's states attend over an
//! encoder's outputs.

use super::{check_lengths, Linear, Module, Tape};
use crate::error::{Error, Result};
use crate::kernels::activation::tanh_slice;
use crate::kernels::cpu::multiversion;
use crate::kernels::rows::{axpy, dot};
use crate::param::GradSlices;
use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use rayon::prelude::*;

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
    /// Valid memory positions of each sample.
    valid: Vec<usize>,
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
        let query = query.as_standard_layout();
        let q = query.as_slice().expect("standard layout");
        let valid: Vec<usize> = (0..b)
            .map(|s| memory_lengths.map_or(tk, |l| l[s]))
            .collect();
        let mut weights = vec![0.0; b * tq * tk];
        let mut concat = vec![0.0; b * tq * (hk + hq)];
        weights
            .par_chunks_mut(tq * tk)
            .zip(concat.par_chunks_mut(tq * (hk + hq)))
            .enumerate()
            .with_min_len(samples_per_task(z))
            .for_each(|(s, (a, ctx))| {
                let dims = z.sample(valid[s]);
                let rows = s * tq..(s + 1) * tq;
                let (qw, q) = (
                    &qw[rows.start * hk..rows.end * hk],
                    &q[rows.start * hq..rows.end * hq],
                );
                attend_sample(dims, (qw, q, &m[s * tk * hk..(s + 1) * tk * hk]), a, ctx);
            });
        let concat = ArrayD::from_shape_vec(IxDyn(&[b, tq, hk + hq]), concat).expect("shape");
        let mut output = self.combine.forward_owned(concat, &mut combine_tape[0])?;
        tanh_slice(output.as_slice_mut().expect("standard layout"));
        if training {
            tape.keep(AttentionRecord {
                sizes: z,
                valid,
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
        d_memory
            .par_chunks_mut(tk * hk)
            .zip(d_projected.par_chunks_mut(tq * hk))
            .enumerate()
            .with_min_len(samples_per_task(r.sizes))
            .for_each(|(s, (dm, dq))| {
                let dims = r.sizes.sample(r.valid[s]);
                let (queries, memory) = (
                    s * tq * hk..(s + 1) * tq * hk,
                    s * tk * hk..(s + 1) * tk * hk,
                );
                let record = (
                    &r.memory[memory],
                    &r.weights[s * tq * tk..(s + 1) * tq * tk],
                    &r.projected[queries],
                );
                let d_concat = &d_concat[s * tq * (hk + hq)..(s + 1) * tq * (hk + hq)];
                attend_sample_backward(dims, record, d_concat, dm, dq);
            });
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

impl Sizes {
    /// The sizes of one sample's kernels when it has `valid` memory positions.
    fn sample(self, valid: usize) -> SampleDims {
        SampleDims {
            tq: self.tq,
            tk: self.tk,
            hq: self.hq,
            hk: self.hk,
            valid,
        }
    }
}

/// Samples per parallel task: enough that a task is worth handing to another thread
/// (about 2^16 multiply-adds, as for a matrix product).
fn samples_per_task(z: Sizes) -> usize {
    (65_536 / (4 * z.tq * z.tk * z.hk).max(1)).max(1)
}

/// One sample's sizes: `tq` queries, `tk` memory positions of which the first `valid`
/// count, memory width `hk`, query width `hq`.
#[derive(Debug, Clone, Copy)]
struct SampleDims {
    tq: usize,
    tk: usize,
    hq: usize,
    hk: usize,
    valid: usize,
}

/// Forward of one sample: from its projected queries `qw (tq, hk)`, queries `q (tq, hq)`
/// and memory `m (tk, hk)`, writes the attention weights `a (tq, tk)` and the rows
/// `[c_t; q_t]` of `concat (tq, hk + hq)`. Only valid memory positions are read.
#[inline(always)]
fn attend_sample_generic(
    d: SampleDims,
    (qw, q, m): (&[f32], &[f32], &[f32]),
    a: &mut [f32],
    concat: &mut [f32],
) {
    let ld = d.hk + d.hq;
    for t in 0..d.tq {
        let query = &qw[t * d.hk..(t + 1) * d.hk];
        let row = &mut a[t * d.tk..(t + 1) * d.tk];
        for (j, score) in row[..d.valid].iter_mut().enumerate() {
            *score = dot(query, &m[j * d.hk..(j + 1) * d.hk]);
        }
        masked_softmax(row, d.valid);
        let (context, q_part) = concat[t * ld..(t + 1) * ld].split_at_mut(d.hk);
        for (j, &weight) in row[..d.valid].iter().enumerate() {
            axpy(weight, &m[j * d.hk..(j + 1) * d.hk], context);
        }
        q_part.copy_from_slice(&q[t * d.hq..(t + 1) * d.hq]);
    }
}

/// Backward of one sample from the gradient of its `concat` rows `(tq, hk + hq)` (only the
/// context columns are read): adds the memory gradient to `dm (tk, hk)` and the gradient of
/// the projected queries to `dqw (tq, hk)`, both zero on entry. `(m, a, qw)` as recorded.
#[inline(always)]
fn attend_sample_backward_generic(
    d: SampleDims,
    (m, a, qw): (&[f32], &[f32], &[f32]),
    d_concat: &[f32],
    dm: &mut [f32],
    dqw: &mut [f32],
) {
    let ld = d.hk + d.hq;
    let mut d_score = vec![0.0; d.valid];
    for t in 0..d.tq {
        let dc = &d_concat[t * ld..t * ld + d.hk];
        let weights = &a[t * d.tk..t * d.tk + d.valid];
        // c = a m: d_a = d_c m^T, d_m += a^T d_c.
        for (j, (da, &weight)) in d_score.iter_mut().zip(weights).enumerate() {
            let mj = j * d.hk..(j + 1) * d.hk;
            *da = dot(dc, &m[mj.clone()]);
            axpy(weight, dc, &mut dm[mj]);
        }
        // Softmax: d_score = a (d_a - sum(a d_a)).
        let mean = dot(&d_score, weights);
        d_score
            .iter_mut()
            .zip(weights)
            .for_each(|(da, &weight)| *da = weight * (*da - mean));
        // score = qw m^T: d_qw = d_score m, d_m += d_score^T qw.
        let query = &qw[t * d.hk..(t + 1) * d.hk];
        let d_query = &mut dqw[t * d.hk..(t + 1) * d.hk];
        for (j, &ds) in d_score.iter().enumerate() {
            let mj = j * d.hk..(j + 1) * d.hk;
            axpy(ds, &m[mj.clone()], d_query);
            axpy(ds, query, &mut dm[mj]);
        }
    }
}

multiversion!(
    /// [`attend_sample_generic`] for the running CPU.
    fn attend_sample(
        d: SampleDims,
        inputs: (&[f32], &[f32], &[f32]),
        a: &mut [f32],
        concat: &mut [f32]
    ) => attend_sample_generic
);
multiversion!(
    /// [`attend_sample_backward_generic`] for the running CPU.
    fn attend_sample_backward(
        d: SampleDims,
        record: (&[f32], &[f32], &[f32]),
        d_concat: &[f32],
        dm: &mut [f32],
        dqw: &mut [f32]
    ) => attend_sample_backward_generic
);

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

    /// The forward against a plain f64 evaluation of the formulas, on widths that are not
    /// multiples of the vector width and a batch large enough to be split across threads.
    /// Tolerance: f32 sums of about 40 products of values of size ~1, 1e-5 relative.
    #[test]
    fn forward_matches_an_f64_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let (b, tq, tk, hq, hk, out) = (40, 5, 9, 21, 37, 11);
        let att = Attention::new(hq, hk, out, &mut rng);
        let q = random(&mut rng, &[b, tq, hq]);
        let m = random(&mut rng, &[b, tk, hk]);
        let lengths: Vec<usize> = (0..b).map(|s| 1 + s % tk).collect();
        let y = att
            .forward(&q, &m, Some(&lengths), &mut Tape::inference())
            .unwrap();
        let (wa, wc) = (&att.score.weight.value, &att.combine.weight.value);
        for s in 0..b {
            for t in 0..tq {
                let qw: Vec<f64> = (0..hk)
                    .map(|i| {
                        (0..hq)
                            .map(|j| wa[i * hq + j] as f64 * q[[s, t, j]] as f64)
                            .sum()
                    })
                    .collect();
                let scores: Vec<f64> = (0..lengths[s])
                    .map(|k| (0..hk).map(|i| qw[i] * m[[s, k, i]] as f64).sum())
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = scores.iter().map(|v| (v - max).exp()).sum();
                let a: Vec<f64> = scores.iter().map(|v| (v - max).exp() / total).collect();
                let mut concat: Vec<f64> = (0..hk)
                    .map(|i| (0..a.len()).map(|k| a[k] * m[[s, k, i]] as f64).sum())
                    .collect();
                concat.extend((0..hq).map(|j| q[[s, t, j]] as f64));
                for o in 0..out {
                    let pre: f64 = (0..hk + hq)
                        .map(|i| wc[o * (hk + hq) + i] as f64 * concat[i])
                        .sum();
                    let got = y.output[[s, t, o]] as f64;
                    assert!(
                        (got - pre.tanh()).abs() <= 1e-5 * (1.0 + pre.tanh().abs()),
                        "sample {s} step {t} output {o}: {got} vs {}",
                        pre.tanh()
                    );
                }
                for (k, want) in a.iter().enumerate() {
                    assert!((y.weights[[s, t, k]] as f64 - want).abs() <= 1e-5);
                }
            }
        }
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
