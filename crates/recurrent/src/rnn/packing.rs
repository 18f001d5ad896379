//! Moving tensors between the caller's padded layout (`(T, B, F)`, `(B, T, F)` or
//! unbatched `(T, F)`, batch in caller order) and the packed rows of
//! [`crate::layer::SeqLayout`] (time-major, sequences sorted by length), and between the
//! directions' outputs and the layer's `(N, D*H_out)` rows.

use crate::layer::direction::DirTape;
use crate::layer::BatchOrder;
use ndarray::{ArrayD, IxDyn};

/// Shapes and batch order of one call.
#[derive(Debug, Clone)]
pub(super) struct Geometry {
    pub batched: bool,
    pub steps: usize,
    pub batch: usize,
    pub order: BatchOrder,
}

/// Concatenates the directions' outputs row by row into `out`: `(N, D*H_out)`.
pub(super) fn interleave_into(dirs: &[DirTape], n: usize, h_out: usize, out: &mut Vec<f32>) {
    out.clear();
    if dirs.len() == 1 {
        out.extend_from_slice(&dirs[0].out);
        return;
    }
    out.reserve(n * dirs.len() * h_out);
    for row in 0..n {
        for dt in dirs {
            out.extend_from_slice(&dt.out[row * h_out..(row + 1) * h_out]);
        }
    }
}

/// Column block `k` (of `d` blocks of `h_out`) of an `(N, d*h_out)` matrix, into `out`.
pub(super) fn deinterleave_into(m: &[f32], d: usize, h_out: usize, k: usize, out: &mut Vec<f32>) {
    out.clear();
    for row in m.chunks_exact(d * h_out) {
        out.extend_from_slice(&row[k * h_out..(k + 1) * h_out]);
    }
}

/// Gathers a padded `(T, B, F)` (or `(B, T, F)`) tensor into packed rows in `out`.
pub(super) fn pack_into(
    src: &[f32],
    geo: &Geometry,
    width: usize,
    batch_first: bool,
    out: &mut Vec<f32>,
) {
    let layout = &geo.order.layout;
    out.resize(layout.rows() * width, 0.0);
    for t in 0..geo.steps {
        for j in 0..layout.batch_sizes[t] {
            let orig = geo.order.sorted[j];
            let from = padded_index(t, orig, geo, batch_first) * width;
            let to = (layout.offsets[t] + j) * width;
            out[to..to + width].copy_from_slice(&src[from..from + width]);
        }
    }
}

/// Scatters packed rows back to the caller's padded layout, zeros past each length.
pub(super) fn unpack(rows: &[f32], geo: &Geometry, width: usize, batch_first: bool) -> ArrayD<f32> {
    let layout = &geo.order.layout;
    let mut out = vec![0.0; geo.steps * geo.batch * width];
    for t in 0..geo.steps {
        for j in 0..layout.batch_sizes[t] {
            let orig = geo.order.sorted[j];
            let to = padded_index(t, orig, geo, batch_first) * width;
            let from = (layout.offsets[t] + j) * width;
            out[to..to + width].copy_from_slice(&rows[from..from + width]);
        }
    }
    ArrayD::from_shape_vec(padded_shape(geo, width, batch_first), out).expect("shape matches")
}

/// [`unpack`] of rows given by value: when the packed rows already are the padded layout
/// (every sequence full length, in caller order, time-major or a single sequence), they
/// become the array without a copy.
pub(super) fn unpack_owned(
    rows: Vec<f32>,
    geo: &Geometry,
    width: usize,
    batch_first: bool,
) -> ArrayD<f32> {
    let full = geo.order.layout.rows() == geo.steps * geo.batch;
    let in_order = geo.order.sorted.iter().enumerate().all(|(j, &o)| j == o);
    if full && in_order && (!batch_first || !geo.batched || geo.batch == 1) {
        ArrayD::from_shape_vec(padded_shape(geo, width, batch_first), rows).expect("shape matches")
    } else {
        unpack(&rows, geo, width, batch_first)
    }
}

pub(super) fn padded_shape(geo: &Geometry, width: usize, batch_first: bool) -> IxDyn {
    match (geo.batched, batch_first) {
        (false, _) => IxDyn(&[geo.steps, width]),
        (true, false) => IxDyn(&[geo.steps, geo.batch, width]),
        (true, true) => IxDyn(&[geo.batch, geo.steps, width]),
    }
}

pub(super) fn padded_index(t: usize, b: usize, geo: &Geometry, batch_first: bool) -> usize {
    if batch_first && geo.batched {
        b * geo.steps + t
    } else {
        t * geo.batch + b
    }
}

/// `(K, B, width)` sorted-order state back to caller order (`(K, width)` when unbatched).
pub(super) fn unsort_state(state: &[f32], geo: &Geometry, k: usize, width: usize) -> ArrayD<f32> {
    let b = geo.batch;
    let mut out = vec![0.0; k * b * width];
    for kk in 0..k {
        for (j, &orig) in geo.order.sorted.iter().enumerate() {
            let from = (kk * b + j) * width;
            out[(kk * b + orig) * width..(kk * b + orig + 1) * width]
                .copy_from_slice(&state[from..from + width]);
        }
    }
    let shape: Vec<usize> = if geo.batched {
        vec![k, b, width]
    } else {
        vec![k, width]
    };
    ArrayD::from_shape_vec(IxDyn(&shape), out).expect("shape matches")
}
