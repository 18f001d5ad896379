//! One direction of one recurrent layer over a packed sequence: forward, and backward
//! through time.
//!
//! Rows are in the packed time-major order of [`SeqLayout`]: step `t` owns rows
//! `offsets[t] .. offsets[t] + batch_sizes[t]`, and the active sequences are a prefix of
//! the batch. Every weight gradient is a single large product over all rows. The threaded
//! time loop of [`fused`] projects the input in blocks of steps just before it reads them
//! (so they are still in cache); the other loop gets one projection of all rows.

use super::fused;
use super::grouped::{self, GroupedWeights};
use super::layout::SeqLayout;
use super::params::{DirectionGrads, DirectionParams};
use super::record::resized;
pub(crate) use super::record::DirTape;
use crate::config::Mode;
use crate::kernels::rows::add_into;
use crate::kernels::{gemm_in, matmul_packed, Mat, MatMut, PackedMatrix, Precision};
use rayon::prelude::*;

/// Work buffers of [`backward`], kept between calls so training steps do not allocate.
#[derive(Debug, Default, Clone)]
pub struct DirScratch {
    dg: Vec<f32>,
    dg_hh: Vec<f32>,
    dh_rows: Vec<f32>,
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

/// The weights of one direction packed once, for repeated inference calls.
#[derive(Debug, Clone)]
pub enum PackedDirection {
    /// Parameters the threaded time loop handles: all its weights.
    Fused(fused::FusedWeights),
    /// Otherwise (the LSTM with layer norm or projection): `W_ih^T`, `(I, G*H)`, for the
    /// projection of all steps at once, and the recurrent weights.
    Stepwise {
        /// `W_ih^T`.
        input: PackedMatrix,
        /// `W_hh^T` and `W_hr^T`.
        recurrent: GroupedWeights,
    },
}

impl PackedDirection {
    /// Packs `p`'s weights in `precision` for the current CPU level and thread pool.
    pub fn new(p: &DirectionParams, precision: Precision) -> Self {
        if fused::supports(p) {
            PackedDirection::Fused(fused::FusedWeights::pack(p, precision))
        } else {
            PackedDirection::Stepwise {
                input: pack_input_weights(p, precision),
                recurrent: GroupedWeights::pack(p, precision),
            }
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
    let input_size = p.input_size();
    // With packed weights the pass is inference: the time loops keep no history.
    tape.prepare(p, n, packed.is_none());

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
    // Input projection for all steps at once (the recurrent loop adds the biases).
    resized(&mut tape.gates, n * gh);
    let here;
    let w_ih = match packed {
        Some(PackedDirection::Stepwise { input, .. }) => input,
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
    let here;
    let recurrent = match packed {
        Some(PackedDirection::Stepwise { recurrent, .. }) => recurrent,
        _ => {
            here = GroupedWeights::pack(p, precision);
            &here
        }
    };
    grouped::forward(p, layout, reverse, h, c, tape, recurrent);
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
    let DirScratch { dg, dg_hh, dh_rows } = scratch;
    // Every row of `dg`, `dg_hh` and `dh_rows` is written before it is read.
    resized(dg, n * gh);
    resized(dg_hh, if gru { n * gh } else { 0 });
    if fused::supports(p) {
        let d_gates = (&mut dg[..], &mut dg_hh[..]);
        fused::backward(p, layout, reverse, tape, d_out, dh, dc, d_gates, precision);
    } else {
        resized(dh_rows, if proj { n * h_out } else { 0 });
        let state_grads = (&mut dh[..], &mut dc[..]);
        let d_gates = (&mut dg[..], &mut dh_rows[..]);
        let ln_grads = layer_norm_grads.as_mut();
        grouped::backward(
            p,
            layout,
            reverse,
            tape,
            d_out,
            state_grads,
            d_gates,
            ln_grads,
            precision,
        );
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
