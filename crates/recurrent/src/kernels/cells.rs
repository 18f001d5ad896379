//! Fused, vectorised gate epilogues of one time step, for one batch row (or the part of
//! it that one thread owns: a range of `w` hidden units).
//!
//! Gates come as segments, one `w`-long slice per gate (LSTM i, f, g, o; GRU r, z, n), so
//! a caller can pass the pieces of a wider `(G*H)` row without copying them together.
//! Forward functions turn pre-activations into activations and the new state; backward
//! functions turn the state gradient into pre-activation gradients. Each is compiled per
//! CPU level and dispatched at run time; the LSTM's, which dominate a step outside the
//! products, also have hand-written AVX-512 versions (reciprocals without division).

use super::activation::{fast_sigmoid, fast_tanh};
use super::cpu::multiversion;

/// Splits a row of `G*w` gate values into its `G` segments.
pub fn segments<const G: usize>(row: &[f32]) -> [&[f32]; G] {
    let mut parts = row.chunks_exact(row.len() / G);
    std::array::from_fn(|_| parts.next().expect("G segments"))
}

/// Splits a row of `G*w` gate values into its `G` mutable segments.
pub fn segments_mut<const G: usize>(row: &mut [f32]) -> [&mut [f32]; G] {
    let w = row.len() / G;
    let mut parts = row.chunks_exact_mut(w);
    std::array::from_fn(|_| parts.next().expect("G segments"))
}

#[inline(always)]
fn lstm_forward_generic(x: [&mut [f32]; 4], rec: &[f32], c: &mut [f32], h: &mut [f32]) {
    let w = c.len();
    let [xi, xf, xg, xo] = x;
    let (xi, xf, xg, xo, h) = (
        &mut xi[..w],
        &mut xf[..w],
        &mut xg[..w],
        &mut xo[..w],
        &mut h[..w],
    );
    let [ri, rf, rg, ro] = segments::<4>(&rec[..4 * w]);
    for k in 0..w {
        let i = fast_sigmoid(xi[k] + ri[k]);
        let f = fast_sigmoid(xf[k] + rf[k]);
        let g = fast_tanh(xg[k] + rg[k]);
        let o = fast_sigmoid(xo[k] + ro[k]);
        let cn = f * c[k] + i * g;
        (xi[k], xf[k], xg[k], xo[k]) = (i, f, g, o);
        c[k] = cn;
        h[k] = o * fast_tanh(cn);
    }
}

multiversion!(
    /// LSTM step: the gate segments `x` (i, f, g, o pre-activations, to which the
    /// recurrent parts `rec`, `4w` gate by gate, are added) become activations; `c`
    /// becomes `c' = f c + i g`; `h` receives `o tanh(c')`.
    pub fn lstm_forward(x: [&mut [f32]; 4], rec: &[f32], c: &mut [f32], h: &mut [f32]) => lstm_forward_generic, avx512: avx512::lstm_forward
);

#[inline(always)]
fn lstm_backward_generic(
    gates: [&[f32]; 4],
    c_new: &[f32],
    c_prev: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    dg: [&mut [f32]; 4],
) {
    let w = dc.len();
    let [i, f, g, o] = gates;
    let (i, f, g, o) = (&i[..w], &f[..w], &g[..w], &o[..w]);
    let (c_new, c_prev, dh) = (&c_new[..w], &c_prev[..w], &dh[..w]);
    let [dgi, dgf, dgg, dgo] = dg;
    let (dgi, dgf, dgg, dgo) = (&mut dgi[..w], &mut dgf[..w], &mut dgg[..w], &mut dgo[..w]);
    for k in 0..w {
        let tc = fast_tanh(c_new[k]);
        let d = dc[k] + dh[k] * o[k] * (1.0 - tc * tc);
        dgo[k] = dh[k] * tc * o[k] * (1.0 - o[k]);
        dgi[k] = d * g[k] * i[k] * (1.0 - i[k]);
        dgf[k] = d * c_prev[k] * f[k] * (1.0 - f[k]);
        dgg[k] = d * i[k] * (1.0 - g[k] * g[k]);
        dc[k] = d * f[k];
    }
}

multiversion!(
    /// LSTM step backward: from the gradient `dh` of `o tanh(c')` and `dc` of `c'`, writes
    /// the pre-activation gradients `dg` and replaces `dc` by the gradient of `c`.
    pub fn lstm_backward(gates: [&[f32]; 4], c_new: &[f32], c_prev: &[f32], dh: &[f32], dc: &mut [f32], dg: [&mut [f32]; 4]) => lstm_backward_generic, avx512: avx512::lstm_backward
);

#[inline(always)]
fn gru_forward_generic(
    x: [&mut [f32]; 3],
    rec: &[f32],
    h_prev: &[f32],
    h: &mut [f32],
    gh_n: &mut [f32],
) {
    let w = h.len();
    let [xr, xz, xn] = x;
    let (xr, xz, xn, h_prev, gh_n) = (
        &mut xr[..w],
        &mut xz[..w],
        &mut xn[..w],
        &h_prev[..w],
        &mut gh_n[..w],
    );
    let (rr, rz, rn) = (&rec[..w], &rec[w..2 * w], &rec[2 * w..3 * w]);
    for k in 0..w {
        let r = fast_sigmoid(xr[k] + rr[k]);
        let z = fast_sigmoid(xz[k] + rz[k]);
        let n = fast_tanh(xn[k] + r * rn[k]);
        (xr[k], xz[k], xn[k]) = (r, z, n);
        gh_n[k] = rn[k];
        h[k] = (1.0 - z) * n + z * h_prev[k];
    }
}

multiversion!(
    /// GRU step: the gate segments `x` (input parts with `b_ih`) and `rec` (`3w`, the
    /// recurrent parts with `b_hh`) give activations (r, z, n) in `x`, the new state in
    /// `h` and `W_hn h + b_hn` in `gh_n`.
    pub fn gru_forward(x: [&mut [f32]; 3], rec: &[f32], h_prev: &[f32], h: &mut [f32], gh_n: &mut [f32]) => gru_forward_generic
);

#[inline(always)]
fn gru_backward_generic(
    gates: [&[f32]; 3],
    h_prev: &[f32],
    gh_n: &[f32],
    dh: &mut [f32],
    dg: [&mut [f32]; 3],
    dg_hh: [&mut [f32]; 3],
) {
    let w = dh.len();
    let [r, z, n] = gates;
    let (r, z, n, h_prev, gh_n) = (&r[..w], &z[..w], &n[..w], &h_prev[..w], &gh_n[..w]);
    let [dgr, dgz, dgn] = dg;
    let (dgr, dgz, dgn) = (&mut dgr[..w], &mut dgz[..w], &mut dgn[..w]);
    let [dhr, dhz, dhn] = dg_hh;
    let (dhr, dhz, dhn) = (&mut dhr[..w], &mut dhz[..w], &mut dhn[..w]);
    for k in 0..w {
        let d = dh[k];
        let dn = d * (1.0 - z[k]) * (1.0 - n[k] * n[k]);
        let dz = d * (h_prev[k] - n[k]) * z[k] * (1.0 - z[k]);
        let dr = dn * gh_n[k] * r[k] * (1.0 - r[k]);
        (dgr[k], dgz[k], dgn[k]) = (dr, dz, dn);
        (dhr[k], dhz[k], dhn[k]) = (dr, dz, dn * r[k]);
        dh[k] = d * z[k];
    }
}

multiversion!(
    /// GRU step backward: from `dh` writes `dg` (input-side pre-activation gradients),
    /// `dg_hh` (recurrent side) and replaces `dh` by its direct part `dh * z`.
    pub fn gru_backward(gates: [&[f32]; 3], h_prev: &[f32], gh_n: &[f32], dh: &mut [f32], dg: [&mut [f32]; 3], dg_hh: [&mut [f32]; 3]) => gru_backward_generic
);

#[inline(always)]
fn elman_forward_generic(x: &mut [f32], rec: &[f32], h: &mut [f32], relu: bool) {
    let w = h.len();
    let (x, rec) = (&mut x[..w], &rec[..w]);
    for k in 0..w {
        let a = x[k] + rec[k];
        let a = if !relu {
            fast_tanh(a)
        } else {
            crate::kernels::activation::relu(a)
        };
        x[k] = a;
        h[k] = a;
    }
}

multiversion!(
    /// Elman step: `x + rec` goes through tanh (or ReLU) into both `x` and `h`.
    pub fn elman_forward(x: &mut [f32], rec: &[f32], h: &mut [f32], relu: bool) => elman_forward_generic
);

/// AVX-512 versions of the LSTM epilogues, 16 units at a time (the last block masked).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::kernels::activation::avx512::{sigmoid, tanh};
    use std::arch::x86_64::*;

    /// Lane mask for the block of units starting at `k` of `w`.
    #[inline(always)]
    fn mask(k: usize, w: usize) -> __mmask16 {
        if w - k >= 16 {
            0xFFFF
        } else {
            ((1u32 << (w - k)) - 1) as u16
        }
    }

    /// See [`super::lstm_forward`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn lstm_forward(x: [&mut [f32]; 4], rec: &[f32], c: &mut [f32], h: &mut [f32]) {
        let w = c.len();
        assert!(x.iter().all(|s| s.len() >= w) && rec.len() >= 4 * w && h.len() >= w);
        let [xi, xf, xg, xo] = x.map(|s| s.as_mut_ptr());
        let (r, c, h) = (rec.as_ptr(), c.as_mut_ptr(), h.as_mut_ptr());
        for k in (0..w).step_by(16) {
            let m = mask(k, w);
            let pre = |x: *mut f32, q: usize| {
                _mm512_add_ps(
                    _mm512_maskz_loadu_ps(m, x.add(k)),
                    _mm512_maskz_loadu_ps(m, r.add(q * w + k)),
                )
            };
            let i = sigmoid(pre(xi, 0));
            let f = sigmoid(pre(xf, 1));
            let g = tanh(pre(xg, 2));
            let o = sigmoid(pre(xo, 3));
            let cn = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, c.add(k)), _mm512_mul_ps(i, g));
            for (dst, v) in [(xi, i), (xf, f), (xg, g), (xo, o), (c, cn)] {
                _mm512_mask_storeu_ps(dst.add(k), m, v);
            }
            _mm512_mask_storeu_ps(h.add(k), m, _mm512_mul_ps(o, tanh(cn)));
        }
    }

    /// See [`super::lstm_backward`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn lstm_backward(
        gates: [&[f32]; 4],
        c_new: &[f32],
        c_prev: &[f32],
        dh: &[f32],
        dc: &mut [f32],
        dg: [&mut [f32]; 4],
    ) {
        let w = dc.len();
        assert!(gates.iter().all(|s| s.len() >= w) && dg.iter().all(|s| s.len() >= w));
        assert!(c_new.len() >= w && c_prev.len() >= w && dh.len() >= w);
        let [gi, gf, gg, go] = gates.map(|s| s.as_ptr());
        let [dgi, dgf, dgg, dgo] = dg.map(|s| s.as_mut_ptr());
        let one = _mm512_set1_ps(1.0);
        for k in (0..w).step_by(16) {
            let m = mask(k, w);
            let ld = |p: *const f32| _mm512_maskz_loadu_ps(m, p.add(k));
            let (i, f, g, o) = (ld(gi), ld(gf), ld(gg), ld(go));
            let (dhk, dck) = (ld(dh.as_ptr()), ld(dc.as_ptr()));
            let tc = tanh(ld(c_new.as_ptr()));
            // d = dc + dh o (1 - tc^2)
            let d = _mm512_fmadd_ps(_mm512_mul_ps(dhk, o), _mm512_fnmadd_ps(tc, tc, one), dck);
            let dsig = |a: __m512| _mm512_mul_ps(a, _mm512_sub_ps(one, a));
            let dgo_v = _mm512_mul_ps(_mm512_mul_ps(dhk, tc), dsig(o));
            let dgi_v = _mm512_mul_ps(_mm512_mul_ps(d, g), dsig(i));
            let dgf_v = _mm512_mul_ps(_mm512_mul_ps(d, ld(c_prev.as_ptr())), dsig(f));
            let dgg_v = _mm512_mul_ps(_mm512_mul_ps(d, i), _mm512_fnmadd_ps(g, g, one));
            for (dst, v) in [(dgi, dgi_v), (dgf, dgf_v), (dgg, dgg_v), (dgo, dgo_v)] {
                _mm512_mask_storeu_ps(dst.add(k), m, v);
            }
            _mm512_mask_storeu_ps(dc.as_mut_ptr().add(k), m, _mm512_mul_ps(d, f));
        }
    }
}
