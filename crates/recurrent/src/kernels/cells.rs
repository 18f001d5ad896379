//! Fused, vectorised gate epilogues of one time step, for a block of batch rows.
//!
//! Each function takes row-major blocks (`rows x width`) and is dispatched by CPU level.
//! Forward functions turn gate pre-activations into activations and the new state;
//! backward functions turn the state gradient into pre-activation gradients.

use super::activation::{fast_sigmoid, fast_tanh};
use super::cpu::multiversion;

#[inline(always)]
fn sigmoid_in_place(xs: &mut [f32]) {
    for x in xs {
        *x = fast_sigmoid(*x);
    }
}

#[inline(always)]
fn tanh_in_place(xs: &mut [f32]) {
    for x in xs {
        *x = fast_tanh(*x);
    }
}

#[inline(always)]
fn lstm_forward_generic(g: &mut [f32], c: &mut [f32], r: &mut [f32], h: usize) {
    for ((gj, cj), rj) in g
        .chunks_exact_mut(4 * h)
        .zip(c.chunks_exact_mut(h))
        .zip(r.chunks_exact_mut(h))
    {
        sigmoid_in_place(&mut gj[..2 * h]);
        tanh_in_place(&mut gj[2 * h..3 * h]);
        sigmoid_in_place(&mut gj[3 * h..]);
        let (i, rest) = gj.split_at(h);
        let (f, rest) = rest.split_at(h);
        let (gg, o) = rest.split_at(h);
        for ((((cv, &iv), &fv), &gv), rv) in cj.iter_mut().zip(i).zip(f).zip(gg).zip(rj.iter_mut())
        {
            *cv = fv * *cv + iv * gv;
            *rv = *cv;
        }
        tanh_in_place(rj);
        for (rv, &ov) in rj.iter_mut().zip(o) {
            *rv *= ov;
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
        let (i, rest) = gj.split_at(h);
        let (f, rest) = rest.split_at(h);
        let (gg, o) = rest.split_at(h);
        let (dgi, rest) = dg[j * 4 * h..(j + 1) * 4 * h].split_at_mut(h);
        let (dgf, rest) = rest.split_at_mut(h);
        let (dgg, dgo) = rest.split_at_mut(h);
        let (cn, cp) = (&c_new[j * h..(j + 1) * h], &c_prev[j * h..(j + 1) * h]);
        let (drj, dcj) = (&dr[j * h..(j + 1) * h], &mut dc[j * h..(j + 1) * h]);
        // tanh(c') recomputed into the output-gate slot, then overwritten below.
        dgo.copy_from_slice(cn);
        tanh_in_place(dgo);
        let (i, f, gg, o, cp, drj) = (&i[..h], &f[..h], &gg[..h], &o[..h], &cp[..h], &drj[..h]);
        let (dgi, dgf, dgg, dgo, dcj) = (
            &mut dgi[..h],
            &mut dgf[..h],
            &mut dgg[..h],
            &mut dgo[..h],
            &mut dcj[..h],
        );
        for k in 0..h {
            let tc = dgo[k];
            let d = dcj[k] + drj[k] * o[k] * (1.0 - tc * tc);
            dgo[k] = drj[k] * tc * o[k] * (1.0 - o[k]);
            dgi[k] = d * gg[k] * i[k] * (1.0 - i[k]);
            dgf[k] = d * cp[k] * f[k] * (1.0 - f[k]);
            dgg[k] = d * i[k] * (1.0 - gg[k] * gg[k]);
            dcj[k] = d * f[k];
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
        let (rz, n) = gj.split_at_mut(2 * h);
        for (x, &y) in rz.iter_mut().zip(&hj[..2 * h]) {
            *x += y;
        }
        sigmoid_in_place(rz);
        nj.copy_from_slice(&hj[2 * h..]);
        for ((nv, &rv), &hn) in n.iter_mut().zip(&rz[..h]).zip(nj.iter()) {
            *nv += rv * hn;
        }
        tanh_in_place(n);
        for ((sv, &zv), &nv) in sj.iter_mut().zip(&rz[h..]).zip(n.iter()) {
            *sv = (1.0 - zv) * nv + zv * *sv;
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
        let (r, z, n) = (&gj[..h], &gj[h..2 * h], &gj[2 * h..3 * h]);
        let (dgr, rest) = dg[j * 3 * h..(j + 1) * 3 * h].split_at_mut(h);
        let (dgz, dgn) = rest.split_at_mut(h);
        let (dhr, rest) = dg_hh[j * 3 * h..(j + 1) * 3 * h].split_at_mut(h);
        let (dhz, dhn) = rest.split_at_mut(h);
        let (hp, ghn) = (&h_prev[j * h..(j + 1) * h], &gh_n[j * h..(j + 1) * h]);
        let dhj = &mut dh[j * h..(j + 1) * h];
        let (dgz, dgn, dhz, dhn) = (&mut dgz[..h], &mut dgn[..h], &mut dhz[..h], &mut dhn[..h]);
        for k in 0..h {
            let d = dhj[k];
            let dn = d * (1.0 - z[k]) * (1.0 - n[k] * n[k]);
            let dz = d * (hp[k] - n[k]) * z[k] * (1.0 - z[k]);
            let dr = dn * ghn[k] * r[k] * (1.0 - r[k]);
            dgr[k] = dr;
            dgz[k] = dz;
            dgn[k] = dn;
            dhr[k] = dr;
            dhz[k] = dz;
            dhn[k] = dn * r[k];
            dhj[k] = d * z[k];
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
