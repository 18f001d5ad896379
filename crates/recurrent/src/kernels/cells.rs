//! Fused, vectorised gate epilogues of one time step, for a block of batch rows.
//!
//! Each function takes row-major blocks (`rows x width`) and is dispatched by CPU level.
//! Forward functions turn gate pre-activations into activations and the new state;
//! backward functions turn the state gradient into pre-activation gradients.

use super::activation::{fast_sigmoid, fast_tanh};
use super::cpu::multiversion;

#[inline(always)]
fn lstm_forward_generic(g: &mut [f32], c: &mut [f32], r: &mut [f32], h: usize) {
    for ((gj, cj), rj) in g
        .chunks_exact_mut(4 * h)
        .zip(c.chunks_exact_mut(h))
        .zip(r.chunks_exact_mut(h))
    {
        let (ifg, o) = gj.split_at_mut(3 * h);
        let (i_f, gg) = ifg.split_at_mut(2 * h);
        let (i, f) = i_f.split_at_mut(h);
        for k in 0..h {
            i[k] = fast_sigmoid(i[k]);
            f[k] = fast_sigmoid(f[k]);
            gg[k] = fast_tanh(gg[k]);
            o[k] = fast_sigmoid(o[k]);
            cj[k] = f[k] * cj[k] + i[k] * gg[k];
            rj[k] = o[k] * fast_tanh(cj[k]);
        }
    }
}

multiversion!(
    /// LSTM step: `g (rows, 4H)` pre-activations (i, f, g, o) become activations;
    /// `c (rows, H)` becomes `c' = f c + i g`; `r (rows, H)` receives `o tanh(c')`.
    pub fn lstm_forward(g: &mut [f32], c: &mut [f32], r: &mut [f32], h: usize) => lstm_forward_generic
);

#[inline(always)]
fn lstm_backward_generic(
    gates: &[f32],
    c_new: &[f32],
    c_prev: &[f32],
    dr: &[f32],
    dc: &mut [f32],
    dg: &mut [f32],
    h: usize,
) {
    let rows = dc.len() / h;
    for j in 0..rows {
        let gj = &gates[j * 4 * h..(j + 1) * 4 * h];
        let dgj = &mut dg[j * 4 * h..(j + 1) * 4 * h];
        let (cn, cp) = (&c_new[j * h..(j + 1) * h], &c_prev[j * h..(j + 1) * h]);
        let (drj, dcj) = (&dr[j * h..(j + 1) * h], &mut dc[j * h..(j + 1) * h]);
        for k in 0..h {
            let (i, f, gg, o) = (gj[k], gj[h + k], gj[2 * h + k], gj[3 * h + k]);
            let tc = fast_tanh(cn[k]);
            dgj[3 * h + k] = drj[k] * tc * o * (1.0 - o);
            let d = dcj[k] + drj[k] * o * (1.0 - tc * tc);
            dgj[k] = d * gg * i * (1.0 - i);
            dgj[h + k] = d * cp[k] * f * (1.0 - f);
            dgj[2 * h + k] = d * i * (1.0 - gg * gg);
            dcj[k] = d * f;
        }
    }
}

multiversion!(
    /// LSTM step backward: from the gradient `dr` of `o tanh(c')` and `dc` of `c'`, writes
    /// the pre-activation gradients `dg (rows, 4H)` and replaces `dc` by the gradient of `c`.
    pub fn lstm_backward(gates: &[f32], c_new: &[f32], c_prev: &[f32], dr: &[f32], dc: &mut [f32], dg: &mut [f32], h: usize) => lstm_backward_generic
);

#[inline(always)]
fn gru_forward_generic(g: &mut [f32], hh: &[f32], state: &mut [f32], gh_n: &mut [f32], h: usize) {
    for (((gj, hj), sj), nj) in g
        .chunks_exact_mut(3 * h)
        .zip(hh.chunks_exact(3 * h))
        .zip(state.chunks_exact_mut(h))
        .zip(gh_n.chunks_exact_mut(h))
    {
        for k in 0..2 * h {
            gj[k] = fast_sigmoid(gj[k] + hj[k]);
        }
        for k in 0..h {
            let ghn = hj[2 * h + k];
            nj[k] = ghn;
            let n = fast_tanh(gj[2 * h + k] + gj[k] * ghn);
            gj[2 * h + k] = n;
            let z = gj[h + k];
            sj[k] = (1.0 - z) * n + z * sj[k];
        }
    }
}

multiversion!(
    /// GRU step: `g (rows, 3H)` input parts (with `b_ih`), `hh (rows, 3H)` recurrent parts
    /// (with `b_hh`); `g` becomes (r, z, n), `state (rows, H)` the new `h`, `gh_n` receives
    /// `W_hn h + b_hn`.
    pub fn gru_forward(g: &mut [f32], hh: &[f32], state: &mut [f32], gh_n: &mut [f32], h: usize) => gru_forward_generic
);

#[inline(always)]
fn gru_backward_generic(
    gates: &[f32],
    h_prev: &[f32],
    gh_n: &[f32],
    dh: &mut [f32],
    dg: &mut [f32],
    dg_hh: &mut [f32],
    h: usize,
) {
    let rows = dh.len() / h;
    for j in 0..rows {
        let gj = &gates[j * 3 * h..(j + 1) * 3 * h];
        let (dgj, dghj) = (
            &mut dg[j * 3 * h..(j + 1) * 3 * h],
            &mut dg_hh[j * 3 * h..(j + 1) * 3 * h],
        );
        let (hp, ghn) = (&h_prev[j * h..(j + 1) * h], &gh_n[j * h..(j + 1) * h]);
        let dhj = &mut dh[j * h..(j + 1) * h];
        for k in 0..h {
            let (r, z, n) = (gj[k], gj[h + k], gj[2 * h + k]);
            let d = dhj[k];
            let dn = d * (1.0 - z) * (1.0 - n * n);
            let dz = d * (hp[k] - n) * z * (1.0 - z);
            let dr = dn * ghn[k] * r * (1.0 - r);
            dgj[k] = dr;
            dgj[h + k] = dz;
            dgj[2 * h + k] = dn;
            dghj[k] = dr;
            dghj[h + k] = dz;
            dghj[2 * h + k] = dn * r;
            dhj[k] = d * z;
        }
    }
}

multiversion!(
    /// GRU step backward: from `dh (rows, H)` writes `dg` (input-side pre-activation
    /// gradients), `dg_hh` (recurrent side) and replaces `dh` by its direct part `dh * z`.
    pub fn gru_backward(gates: &[f32], h_prev: &[f32], gh_n: &[f32], dh: &mut [f32], dg: &mut [f32], dg_hh: &mut [f32], h: usize) => gru_backward_generic
);

#[inline(always)]
fn tanh_forward_generic(g: &mut [f32], state: &mut [f32]) {
    for (gv, s) in g.iter_mut().zip(state) {
        *gv = fast_tanh(*gv);
        *s = *gv;
    }
}

multiversion!(
    /// Elman tanh step: `g` becomes `tanh(g)`, copied to `state`.
    pub fn tanh_forward(g: &mut [f32], state: &mut [f32]) => tanh_forward_generic
);
