//! One direction of one recurrent layer over a packed sequence: forward, and backward
//! through time.
//!
//! Rows are in the packed time-major order of [`SeqLayout`]: step `t` owns rows
//! `offsets[t] .. offsets[t] + batch_sizes[t]`, and the active sequences are a prefix of
//! the batch. Every weight gradient is a single large product over all rows. The threaded
//! time loop of [`fused`] projects the input in blocks of steps just before it reads them
//! (so they are still in cache); the other loop gets one projection of all rows.

use super::fused;
use super::layout::SeqLayout;
use super::norm;
use super::params::{DirectionGrads, DirectionParams, LayerNormGrads};
use super::record::resized;
pub(crate) use super::record::DirTape;
use crate::config::Mode;
use crate::kernels::activation::{sigmoid, tanh};
use crate::kernels::rows::add_bias_rows;
use crate::kernels::{cells, gemm_in, matmul_packed, Mat, MatMut, PackedMatrix, Precision};
use rayon::prelude::*;

/// Work buffers of [`backward`], kept between calls so training steps do not allocate.
#[derive(Debug, Default, Clone)]
pub struct DirScratch {
    dg: Vec<f32>,
    dg_hh: Vec<f32>,
    dh_rows: Vec<f32>,
    dr: Vec<f32>,
    dy: Vec<f32>,
}

/// Order in which steps are visited: forward, or reversed for the second direction.
fn step_index(step: usize, steps: usize, reverse: bool) -> usize {
    if reverse {
        steps - 1 - step
    } else {
        step
    }
}

/// Elements below which [`column_sums`] stays on one thread.
const PARALLEL_SUM_MIN: usize = 1 << 15;

/// Column sums of `rows` (`width` wide), split by columns across the pool (each column
/// is summed in row order whatever the split).
fn column_sums(rows: &[f32], width: usize) -> Vec<f32> {
    let threads = if rows.len() < PARALLEL_SUM_MIN {
        1
    } else {
        rayon::current_num_threads()
    };
    let block = width.div_ceil(threads).max(1);
    let mut sums = vec![0.0; width];
    sums.par_chunks_mut(block)
        .enumerate()
        .for_each(|(k, part)| {
            let c0 = k * block;
            for row in rows.chunks_exact(width) {
                add_into(part, &row[c0..c0 + part.len()]);
            }
        });
    sums
}

/// `acc += add`, element by element.
#[inline(always)]
fn add_into(acc: &mut [f32], add: &[f32]) {
    acc.iter_mut().zip(add).for_each(|(a, v)| *a += v);
}

/// The weights of one direction packed once, for repeated inference calls.
#[derive(Debug, Clone)]
pub enum PackedDirection {
    /// Parameters the threaded time loop handles: all its weights.
    Fused(fused::FusedWeights),
    /// Otherwise: `W_ih^T`, `(I, G*H)`.
    Input(PackedMatrix),
}

impl PackedDirection {
    /// Packs `p`'s weights in `precision` for the current CPU level and thread pool.
    pub fn new(p: &DirectionParams, precision: Precision) -> Self {
        if fused::supports(p) {
            PackedDirection::Fused(fused::FusedWeights::pack(p, precision))
        } else {
            PackedDirection::Input(pack_input_weights(p, precision))
        }
    }
}

fn pack_input_weights(p: &DirectionParams, precision: Precision) -> PackedMatrix {
    let (input_size, gh) = (p.input_size(), p.mode.gates() * p.hidden_size);
    let w = Mat::t(&p.weight_ih.value, input_size);
    PackedMatrix::pack_in(precision, w, input_size, gh)
}

/// Runs one direction over the packed input.
///
/// - `x`: `(N, I)` packed input rows.
/// - `h`: `(B, H_out)`, in: the initial state (sorted batch order), out: `h_n`.
/// - `c`: `(B, H)` for LSTM (empty otherwise), in: `c0`, out: `c_n`.
/// - `tape`: receives the output and what backward needs.
/// - `(packed, precision)`: `p`'s weights already packed, for inference (the tape then
///   only holds the output); else `None`, and they are packed here in `precision`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    p: &DirectionParams,
    x: &[f32],
    layout: &SeqLayout,
    reverse: bool,
    h: &mut [f32],
    c: &mut [f32],
    tape: &mut DirTape,
    (packed, precision): (Option<&PackedDirection>, Precision),
) {
    let n = layout.rows();
    let hs = p.hidden_size;
    let gh = p.mode.gates() * hs;
    let h_out = p.output_size();
    let input_size = p.input_size();
    // With packed weights the pass is inference: the threaded loop keeps no history.
    tape.prepare(p, n, packed.is_none() || !fused::supports(p));

    if fused::supports(p) {
        let here;
        let weights = match packed {
            Some(PackedDirection::Fused(w)) => w,
            _ => {
                here = fused::FusedWeights::pack(p, precision);
                &here
            }
        };
        fused::forward(p, x, layout, reverse, h, c, tape, weights);
        return;
    }
    // Input projection for all steps at once.
    let here;
    let w_ih = match packed {
        Some(PackedDirection::Input(w)) => w,
        _ => {
            here = pack_input_weights(p, precision);
            &here
        }
    };
    matmul_packed(
        n,
        Mat::new(x, input_size),
        w_ih,
        0.0,
        MatMut::new(&mut tape.gates, gh),
    );
    // LSTM with layer norm and/or projection: the time loop on this thread, with the
    // recurrent product and the plain cell split across the pool.
    for b in [&p.bias_ih, &p.bias_hh].into_iter().flatten() {
        add_bias_rows(&mut tape.gates, &b.value);
    }
    let w_hh = PackedMatrix::pack_in(precision, Mat::t(&p.weight_hh.value, h_out), h_out, gh);
    let w_hr = p
        .weight_hr
        .as_ref()
        .map(|w| PackedMatrix::pack_in(precision, Mat::t(&w.value, hs), hs, h_out));
    let mut cell_out = vec![0.0; hs];
    // The recurrent product is already in the gates.
    let no_recurrent = vec![0.0; gh];
    let steps = layout.steps();
    for step in 0..steps {
        let t = step_index(step, steps, reverse);
        let b = layout.batch_sizes[t];
        let r0 = layout.offsets[t];
        if b == 0 {
            continue;
        }
        tape.h_prev[r0 * h_out..(r0 + b) * h_out].copy_from_slice(&h[..b * h_out]);
        let g = &mut tape.gates[r0 * gh..(r0 + b) * gh];
        matmul_packed(
            b,
            Mat::new(&h[..b * h_out], h_out),
            &w_hh,
            1.0,
            MatMut::new(g, gh),
        );
        tape.c_prev[r0 * hs..(r0 + b) * hs].copy_from_slice(&c[..b * hs]);
        match &p.layer_norm {
            None => {
                let target = if w_hr.is_some() {
                    &mut tape.r[r0 * hs..(r0 + b) * hs]
                } else {
                    &mut h[..b * hs]
                };
                for ((g, c), r) in g
                    .chunks_exact_mut(gh)
                    .zip(c[..b * hs].chunks_exact_mut(hs))
                    .zip(target.chunks_exact_mut(hs))
                {
                    cells::lstm_forward(cells::segments_mut(g), &no_recurrent, c, r);
                }
                tape.c[r0 * hs..(r0 + b) * hs].copy_from_slice(&c[..b * hs]);
            }
            Some(ln) => {
                for j in 0..b {
                    let row = r0 + j;
                    let gj = &mut g[j * gh..(j + 1) * gh];
                    for q in 0..4 {
                        let span = q * hs..(q + 1) * hs;
                        tape.ln_rstd[row * 4 + q] = norm::forward(
                            &mut gj[span.clone()],
                            &ln.gates_weight.value[span.clone()],
                            &ln.gates_bias.value[span.clone()],
                            &mut tape.ln_hat[row * gh + q * hs..row * gh + (q + 1) * hs],
                        );
                    }
                    let cj = &mut c[j * hs..(j + 1) * hs];
                    for k in 0..hs {
                        let i = sigmoid(gj[k]);
                        let f = sigmoid(gj[hs + k]);
                        let gg = tanh(gj[2 * hs + k]);
                        let o = sigmoid(gj[3 * hs + k]);
                        gj[k] = i;
                        gj[hs + k] = f;
                        gj[2 * hs + k] = gg;
                        gj[3 * hs + k] = o;
                        cj[k] = f * cj[k] + i * gg;
                    }
                    tape.c[row * hs..(row + 1) * hs].copy_from_slice(cj);
                    cell_out.copy_from_slice(cj);
                    tape.cell_rstd[row] = norm::forward(
                        &mut cell_out,
                        &ln.cell_weight.value,
                        &ln.cell_bias.value,
                        &mut tape.cell_hat[row * hs..(row + 1) * hs],
                    );
                    let target = if w_hr.is_some() {
                        &mut tape.r[row * hs..(row + 1) * hs]
                    } else {
                        &mut h[j * hs..(j + 1) * hs]
                    };
                    for k in 0..hs {
                        target[k] = gj[3 * hs + k] * tanh(cell_out[k]);
                    }
                }
            }
        }
        if let Some(w_hr) = &w_hr {
            let r = Mat::new(&tape.r[r0 * hs..(r0 + b) * hs], hs);
            matmul_packed(b, r, w_hr, 0.0, MatMut::new(&mut h[..b * h_out], h_out));
        }
        tape.out[r0 * h_out..(r0 + b) * h_out].copy_from_slice(&h[..b * h_out]);
    }
}

/// Backward through time of one direction; adds parameter gradients to `grads`.
///
/// - `x`: `(N, I)` the input the forward pass saw; `tape`: what it kept.
/// - `d_out`: `(N, H_out)` gradient of the direction's output rows.
/// - `dh`: `(B, H_out)`, in: gradient of `h_n`, out: gradient of `h0`.
/// - `dc`: `(B, H)` (LSTM), in: gradient of `c_n`, out: gradient of `c0`.
/// - `dx`: `(N, I)`, receives the input gradient (overwritten); `None` skips it.
/// - `precision`: arithmetic of the products.
/// - `scratch`: work buffers, reused between calls.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    p: &DirectionParams,
    grads: DirectionGrads<'_>,
    x: &[f32],
    layout: &SeqLayout,
    reverse: bool,
    tape: &DirTape,
    d_out: &[f32],
    dh: &mut [f32],
    dc: &mut [f32],
    dx: Option<&mut [f32]>,
    precision: Precision,
    scratch: &mut DirScratch,
) {
    let n = layout.rows();
    let hs = p.hidden_size;
    let gh = p.mode.gates() * hs;
    let h_out = p.output_size();
    let input_size = p.input_size();
    let batch = layout.batch();
    let gru = p.mode == Mode::Gru;
    let proj = p.weight_hr.is_some();

    let DirectionGrads {
        weight_ih: weight_ih_grad,
        weight_hh: weight_hh_grad,
        bias_ih: bias_ih_grad,
        bias_hh: bias_hh_grad,
        weight_hr: weight_hr_grad,
        layer_norm: mut layer_norm_grads,
    } = grads;
    let DirScratch {
        dg,
        dg_hh,
        dh_rows,
        dr,
        dy,
    } = scratch;
    // Every row of `dg`, `dg_hh` and `dh_rows` is written before it is read.
    resized(dg, n * gh);
    resized(dg_hh, if gru { n * gh } else { 0 });
    if fused::supports(p) {
        let d_gates = (&mut dg[..], &mut dg_hh[..]);
        fused::backward(p, layout, reverse, tape, d_out, dh, dc, d_gates, precision);
    } else {
        // LSTM with layer norm and/or projection, step by step.
        resized(dh_rows, if proj { n * h_out } else { 0 });
        resized(dr, batch * hs);
        resized(dy, hs);
        let w_hh = PackedMatrix::pack_in(precision, Mat::new(&p.weight_hh.value, h_out), gh, h_out);
        let w_hr = p
            .weight_hr
            .as_ref()
            .map(|w| PackedMatrix::pack_in(precision, Mat::new(&w.value, hs), h_out, hs));
        let steps = layout.steps();
        for step in (0..steps).rev() {
            let t = step_index(step, steps, reverse);
            let b = layout.batch_sizes[t];
            let r0 = layout.offsets[t];
            if b == 0 {
                continue;
            }
            dh[..b * h_out]
                .iter_mut()
                .zip(&d_out[r0 * h_out..(r0 + b) * h_out])
                .for_each(|(a, d)| *a += d);
            let dgt = &mut dg[r0 * gh..(r0 + b) * gh];
            let drb = &mut dr[..b * hs];
            if let Some(w_hr) = &w_hr {
                dh_rows[r0 * h_out..(r0 + b) * h_out].copy_from_slice(&dh[..b * h_out]);
                matmul_packed(
                    b,
                    Mat::new(&dh[..b * h_out], h_out),
                    w_hr,
                    0.0,
                    MatMut::new(drb, hs),
                );
            } else {
                drb.copy_from_slice(&dh[..b * hs]);
            }
            if let (Some(ln), Some(lng)) = (&p.layer_norm, layer_norm_grads.as_mut()) {
                let dc = &mut dc[..b * hs];
                lstm_layer_norm_backward(ln, lng, tape, r0, b, hs, drb, dc, dgt, dy);
            } else {
                let rows = r0 * hs..(r0 + b) * hs;
                for ((((gates, cn), cp), dr), (dc, dg)) in tape.gates[r0 * gh..(r0 + b) * gh]
                    .chunks_exact(gh)
                    .zip(tape.c[rows.clone()].chunks_exact(hs))
                    .zip(tape.c_prev[rows].chunks_exact(hs))
                    .zip(drb.chunks_exact(hs))
                    .zip(
                        dc[..b * hs]
                            .chunks_exact_mut(hs)
                            .zip(dgt.chunks_exact_mut(gh)),
                    )
                {
                    let (gates, dg) = (cells::segments(gates), cells::segments_mut(dg));
                    cells::lstm_backward(gates, cn, cp, dr, dc, dg);
                }
            }
            matmul_packed(
                b,
                Mat::new(dgt, gh),
                &w_hh,
                0.0,
                MatMut::new(&mut dh[..b * h_out], h_out),
            );
        }
    }

    // Weight gradients and the input gradient: one product each over all rows.
    let w_ih = &p.weight_ih;
    gemm_in(
        precision,
        gh,
        input_size,
        n,
        Mat::t(dg, gh),
        Mat::new(x, input_size),
        1.0,
        MatMut::new(weight_ih_grad, input_size),
    );
    if let Some(dx) = dx {
        gemm_in(
            precision,
            n,
            input_size,
            gh,
            Mat::new(dg, gh),
            Mat::new(&w_ih.value, input_size),
            0.0,
            MatMut::new(dx, input_size),
        );
    }
    let dg_hh: &[f32] = if gru { dg_hh } else { dg };
    gemm_in(
        precision,
        gh,
        h_out,
        n,
        Mat::t(dg_hh, gh),
        Mat::new(&tape.h_prev, h_out),
        1.0,
        MatMut::new(weight_hh_grad, h_out),
    );
    if bias_ih_grad.is_some() || bias_hh_grad.is_some() {
        // LSTM and RNN: both biases get the pre-activation gradient; GRU's `b_hh` gets
        // that of the recurrent side (its `b_hn` part is scaled by `r`).
        let sums = column_sums(dg, gh);
        if let Some(b) = bias_ih_grad {
            add_into(b, &sums);
        }
        if let Some(b) = bias_hh_grad {
            add_into(b, &if gru { column_sums(dg_hh, gh) } else { sums });
        }
    }
    if let Some(w_hr_grad) = weight_hr_grad {
        gemm_in(
            precision,
            h_out,
            hs,
            n,
            Mat::t(dh_rows, h_out),
            Mat::new(&tape.r, hs),
            1.0,
            MatMut::new(w_hr_grad, hs),
        );
    }
}

/// Layer-norm LSTM step backward for rows `r0 .. r0 + b` (see [`backward`]): from `dr`
/// (gradient of `o tanh(LN(c'))`) and `dc`, writes `dg` and accumulates the LayerNorm
/// parameter gradients.
#[allow(clippy::too_many_arguments)]
fn lstm_layer_norm_backward(
    ln: &super::LayerNormParams,
    grads: &mut LayerNormGrads<'_>,
    tape: &DirTape,
    r0: usize,
    b: usize,
    hs: usize,
    drb: &[f32],
    dc: &mut [f32],
    dgt: &mut [f32],
    dy: &mut [f32],
) {
    let gh = 4 * hs;
    for j in 0..b {
        let row = r0 + j;
        let gates = &tape.gates[row * gh..(row + 1) * gh];
        let c_prev = &tape.c_prev[row * hs..(row + 1) * hs];
        let dcj = &mut dc[j * hs..(j + 1) * hs];
        let drj = &drb[j * hs..(j + 1) * hs];
        let dgj = &mut dgt[j * gh..(j + 1) * gh];
        // Through h = o * tanh(y), y = LayerNorm(c).
        let hat = &tape.cell_hat[row * hs..(row + 1) * hs];
        for k in 0..hs {
            let y = hat[k] * ln.cell_weight.value[k] + ln.cell_bias.value[k];
            let ty = tanh(y);
            let o = gates[3 * hs + k];
            dgj[3 * hs + k] = drj[k] * ty * o * (1.0 - o);
            dy[k] = drj[k] * o * (1.0 - ty * ty);
        }
        norm::backward(
            dy,
            hat,
            tape.cell_rstd[row],
            &ln.cell_weight.value,
            grads.cell_weight,
            grads.cell_bias,
        );
        dcj.iter_mut().zip(dy.iter()).for_each(|(a, d)| *a += d);
        for k in 0..hs {
            let (i, f, gg) = (gates[k], gates[hs + k], gates[2 * hs + k]);
            let d = dcj[k];
            dgj[k] = d * gg * i * (1.0 - i);
            dgj[hs + k] = d * c_prev[k] * f * (1.0 - f);
            dgj[2 * hs + k] = d * i * (1.0 - gg * gg);
            dcj[k] = d * f;
        }
        for q in 0..4 {
            let span = q * hs..(q + 1) * hs;
            norm::backward(
                &mut dgj[span.clone()],
                &tape.ln_hat[row * gh + q * hs..row * gh + (q + 1) * hs],
                tape.ln_rstd[row * 4 + q],
                &ln.gates_weight.value[span.clone()],
                &mut grads.gates_weight[span.clone()],
                &mut grads.gates_bias[span],
            );
        }
    }
}
