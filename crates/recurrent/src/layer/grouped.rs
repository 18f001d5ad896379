//! Time loops of the LSTM with layer norm and/or projection (`proj_size`), split by batch
//! rows across a [`team`](super::team) of threads.
//!
//! Sequences do not depend on each other, so a group of batch rows runs through every step
//! without waiting for the other groups: the whole loop is one team round. (The
//! [`fused`](super::fused) loop splits hidden units instead, which keeps a slice of the
//! weights in each thread's cache but needs all of a step's units before the next step:
//! here the layer norms need every unit of a row and the projection every unit of `r`, two
//! more synchronisations per step.)
//!
//! Groups start on multiples of the product's row tile ([`PackedMatrix::row_tile`]), so
//! every row meets the same tiles of the recurrent products as in one product over the whole
//! batch, and the layer norms' parameter gradients are summed per tile of rows in a fixed
//! order: results do not depend on the number of groups, hence not on the thread count.

use super::layout::SeqLayout;
use super::norm;
use super::params::{DirectionParams, LayerNormGrads, LayerNormParams};
use super::record::DirTape;
use super::team::{run_rounds, team_threads, Shared, PARALLEL_MIN_WORK};
use crate::kernels::activation::{sigmoid, tanh};
use crate::kernels::rows::{add_bias_rows, add_into};
use crate::kernels::Precision;
use crate::kernels::{cells, matmul_packed, matmul_packed_panels, Mat, MatMut, PackedMatrix};
use std::ops::Range;

/// The recurrent weights of one direction packed for [`forward`]: `W_hh^T` `(H_out, 4H)`,
/// with a projection `W_hr^T` `(H, H_out)`, and `b_ih + b_hh` (`4H`; zeros without biases).
#[derive(Debug, Clone)]
pub struct GroupedWeights {
    w_hh: PackedMatrix,
    w_hr: Option<PackedMatrix>,
    bias: Vec<f32>,
}

impl GroupedWeights {
    /// Packs `p`'s recurrent weights in `precision`.
    pub fn pack(p: &DirectionParams, precision: Precision) -> Self {
        let (hs, h_out, gh) = (
            p.hidden_size,
            p.output_size(),
            p.mode.gates() * p.hidden_size,
        );
        let w_hh = PackedMatrix::pack_in(precision, Mat::t(&p.weight_hh.value, h_out), h_out, gh);
        let w_hr = p
            .weight_hr
            .as_ref()
            .map(|w| PackedMatrix::pack_in(precision, Mat::t(&w.value, hs), hs, h_out));
        let bias = match (&p.bias_ih, &p.bias_hh) {
            (Some(a), Some(b)) => a.value.iter().zip(&b.value).map(|(a, b)| a + b).collect(),
            _ => vec![0.0; gh],
        };
        GroupedWeights { w_hh, w_hr, bias }
    }
}

/// Contiguous ranges of batch rows, each starting on a multiple of `tile`, with about
/// equal numbers of tokens (at most `parts` ranges; the rows of a packed batch are sorted
/// longest first, so equal row counts would not balance variable lengths).
fn row_groups(layout: &SeqLayout, tile: usize, parts: usize) -> Vec<Range<usize>> {
    let batch = layout.batch();
    let blocks = batch.div_ceil(tile);
    let mut tokens = vec![0usize; blocks];
    for &b in &layout.batch_sizes {
        for (k, t) in tokens.iter_mut().enumerate() {
            *t += b.saturating_sub(k * tile).min(tile);
        }
    }
    let total: usize = tokens.iter().sum();
    let parts = parts.clamp(1, blocks.max(1));
    let (mut groups, mut start, mut sum) = (Vec::with_capacity(parts), 0, 0);
    for (k, &t) in tokens.iter().enumerate() {
        sum += t;
        let full = groups.len() + 1 < parts && sum * parts >= total * (groups.len() + 1);
        if full || k + 1 == blocks {
            let end = ((k + 1) * tile).min(batch);
            groups.push(start..end);
            start = end;
        }
    }
    groups
}

/// The row groups of a pass over `layout` with products of row tile `tile`, and whether
/// they run on a team (each product then on its thread alone).
fn split(p: &DirectionParams, layout: &SeqLayout, tile: usize) -> (Vec<Range<usize>>, bool) {
    let (hs, h_out) = (p.hidden_size, p.output_size());
    let proj = if p.weight_hr.is_some() { h_out } else { 0 };
    let work = layout.rows() * hs * (4 * h_out + proj);
    let groups = row_groups(layout, tile, team_threads());
    let alone = groups.len() > 1 && work >= PARALLEL_MIN_WORK;
    (groups, alone)
}

/// `C = beta * C + A B` on this thread only when `alone` (the team splits the work
/// already), else across the pool.
fn product(alone: bool, m: usize, a: Mat, b: &PackedMatrix, beta: f32, c: MatMut) {
    if alone {
        matmul_packed_panels(m, a, b, 0..usize::MAX, beta, c);
    } else {
        matmul_packed(m, a, b, beta, c);
    }
}

/// The tape's buffers, written by the groups through disjoint rows.
struct SharedTape<'a> {
    out: Shared<'a>,
    gates: Shared<'a>,
    h_prev: Shared<'a>,
    c: Shared<'a>,
    c_prev: Shared<'a>,
    r: Shared<'a>,
    ln_hat: Shared<'a>,
    ln_rstd: Shared<'a>,
    cell_hat: Shared<'a>,
    cell_rstd: Shared<'a>,
}

impl<'a> SharedTape<'a> {
    fn new(t: &'a mut DirTape) -> Self {
        SharedTape {
            out: Shared::new(&mut t.out),
            gates: Shared::new(&mut t.gates),
            h_prev: Shared::new(&mut t.h_prev),
            c: Shared::new(&mut t.c),
            c_prev: Shared::new(&mut t.c_prev),
            r: Shared::new(&mut t.r),
            ln_hat: Shared::new(&mut t.ln_hat),
            ln_rstd: Shared::new(&mut t.ln_rstd),
            cell_hat: Shared::new(&mut t.cell_hat),
            cell_rstd: Shared::new(&mut t.cell_rstd),
        }
    }
}

/// Work buffer of a group: one row's normalised cell state.
#[derive(Default)]
struct ForwardScratch(Vec<f32>);

/// The time loop of [`super::direction::forward`] for an LSTM with layer norm and/or
/// projection. `tape.gates` holds the input projection (`(N, 4H)`) and receives the gate
/// activations; `h`: `(B, H_out)` initial state in, `h_n` out; `c`: `(B, H)` likewise.
/// Without a recording tape (inference) the states before and after each step are not kept.
pub fn forward(
    p: &DirectionParams,
    layout: &SeqLayout,
    reverse: bool,
    h: &mut [f32],
    c: &mut [f32],
    tape: &mut DirTape,
    weights: &GroupedWeights,
) {
    let (groups, alone) = split(p, layout, weights.w_hh.row_tile());
    let order = layout.visit_order(reverse);
    let pass = ForwardPass {
        p,
        weights,
        record: !tape.h_prev.is_empty(),
        alone,
        h: Shared::new(h),
        c: Shared::new(c),
        t: SharedTape::new(tape),
    };
    run_rounds(
        1,
        groups.len(),
        alone,
        |_, group, s: &mut ForwardScratch| {
            let rows = &groups[group];
            for &(r0, b) in &order {
                let end = rows.end.min(b);
                if end > rows.start {
                    // SAFETY: groups have disjoint batch rows.
                    unsafe { pass.step(r0, rows.start..end, s) };
                }
            }
        },
    );
}

/// What every group of [`forward`] reads and writes.
struct ForwardPass<'a> {
    p: &'a DirectionParams,
    weights: &'a GroupedWeights,
    /// Whether the tape keeps the states for backward.
    record: bool,
    /// Whether products run on the calling thread only (the team splits the batch).
    alone: bool,
    h: Shared<'a>,
    c: Shared<'a>,
    t: SharedTape<'a>,
}

impl ForwardPass<'_> {
    /// Batch rows `rows` of the step whose packed rows start at `r0`.
    ///
    /// # Safety
    /// No other thread may work on these batch rows at the same time.
    unsafe fn step(&self, r0: usize, rows: Range<usize>, s: &mut ForwardScratch) {
        let (p, t, alone) = (self.p, &self.t, self.alone);
        let GroupedWeights { w_hh, w_hr, bias } = self.weights;
        let (hs, h_out) = (p.hidden_size, p.output_size());
        let gh = 4 * hs;
        let (lo, nb, first) = (rows.start, rows.len(), r0 + rows.start);
        let hj = self.h.slice_mut(lo * h_out, nb * h_out);
        let cj = self.c.slice_mut(lo * hs, nb * hs);
        if self.record {
            let h_prev = t.h_prev.slice_mut(first * h_out, nb * h_out);
            h_prev.copy_from_slice(hj);
            t.c_prev.slice_mut(first * hs, nb * hs).copy_from_slice(cj);
        }
        let g = t.gates.slice_mut(first * gh, nb * gh);
        product(
            alone,
            nb,
            Mat::new(hj, h_out),
            w_hh,
            1.0,
            MatMut::new(g, gh),
        );
        // `o * tanh(...)`: the new state, or `r` before the projection.
        let target = if w_hr.is_some() {
            t.r.slice_mut(first * hs, nb * hs)
        } else {
            &mut hj[..]
        };
        match &p.layer_norm {
            None => {
                // The recurrent product is already in the gates; the cell adds the biases.
                let rows = g.chunks_exact_mut(gh).zip(cj.chunks_exact_mut(hs));
                for ((g, c), r) in rows.zip(target.chunks_exact_mut(hs)) {
                    cells::lstm_forward(cells::segments_mut(g), bias, c, r);
                }
            }
            Some(ln) => {
                // Layer norm takes the pre-activations with their biases.
                if p.bias_ih.is_some() {
                    add_bias_rows(g, bias);
                }
                s.0.resize(hs, 0.0);
                for j in 0..nb {
                    let (g, span) = (&mut g[j * gh..(j + 1) * gh], j * hs..(j + 1) * hs);
                    let (c, out) = (&mut cj[span.clone()], &mut target[span]);
                    layer_norm_cell_forward(ln, g, c, out, t, first + j, &mut s.0);
                }
            }
        }
        if self.record {
            t.c.slice_mut(first * hs, nb * hs).copy_from_slice(cj);
        }
        if let Some(w_hr) = w_hr {
            let r = Mat::new(t.r.slice(first * hs, nb * hs), hs);
            product(alone, nb, r, w_hr, 0.0, MatMut::new(hj, h_out));
        }
        t.out
            .slice_mut(first * h_out, nb * h_out)
            .copy_from_slice(hj);
    }
}

/// One row of a layer-norm LSTM step: normalises each gate's pre-activations in `g`
/// (`4H`, replaced by the activations), updates `c` (`H`) and writes `o * tanh(LN(c))` to
/// `target`, keeping what backward needs in the tape's row `row`. `cell_out`: `H` scratch.
///
/// # Safety
/// No other thread may touch row `row` of the tape.
unsafe fn layer_norm_cell_forward(
    ln: &LayerNormParams,
    g: &mut [f32],
    c: &mut [f32],
    target: &mut [f32],
    t: &SharedTape,
    row: usize,
    cell_out: &mut [f32],
) {
    let hs = c.len();
    let gh = 4 * hs;
    for q in 0..4 {
        let span = q * hs..(q + 1) * hs;
        t.ln_rstd.slice_mut(row * 4 + q, 1)[0] = norm::forward(
            &mut g[span.clone()],
            &ln.gates_weight.value[span.clone()],
            &ln.gates_bias.value[span],
            t.ln_hat.slice_mut(row * gh + q * hs, hs),
        );
    }
    for k in 0..hs {
        let i = sigmoid(g[k]);
        let f = sigmoid(g[hs + k]);
        let gg = tanh(g[2 * hs + k]);
        let o = sigmoid(g[3 * hs + k]);
        g[k] = i;
        g[hs + k] = f;
        g[2 * hs + k] = gg;
        g[3 * hs + k] = o;
        c[k] = f * c[k] + i * gg;
    }
    cell_out.copy_from_slice(c);
    t.cell_rstd.slice_mut(row, 1)[0] = norm::forward(
        cell_out,
        &ln.cell_weight.value,
        &ln.cell_bias.value,
        t.cell_hat.slice_mut(row * hs, hs),
    );
    for k in 0..hs {
        target[k] = g[3 * hs + k] * tanh(cell_out[k]);
    }
}

/// Work buffers of a group in [`backward`]: `dr` `(rows, H)` and one row's `dy` `(H)`.
#[derive(Default)]
struct BackwardScratch {
    dr: Vec<f32>,
    dy: Vec<f32>,
}

/// Layer-norm parameter gradients kept per tile of batch rows: the gates' weight and bias
/// (`4H` each), then the cell's (`H` each).
fn ln_acc_len(hs: usize) -> usize {
    10 * hs
}

/// The time loop of [`super::direction::backward`] for an LSTM with layer norm and/or
/// projection: fills `dg` (`(N, 4H)` pre-activation gradients) and, with a projection,
/// `dh_rows` (`(N, H_out)` gradients of the outputs `h_t`); turns `dh` (`(B, H_out)`) and
/// `dc` (`(B, H)`) from the gradients of `h_n` / `c_n` into those of `h0` / `c0`; adds the
/// layer norms' parameter gradients to `ln_grads`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    p: &DirectionParams,
    layout: &SeqLayout,
    reverse: bool,
    tape: &DirTape,
    d_out: &[f32],
    (dh, dc): (&mut [f32], &mut [f32]),
    (dg, dh_rows): (&mut [f32], &mut [f32]),
    ln_grads: Option<&mut LayerNormGrads<'_>>,
    precision: Precision,
) {
    let (hs, h_out) = (p.hidden_size, p.output_size());
    let gh = 4 * hs;
    // `(4H, H_out)` and `(H_out, H)`, as they multiply gradients.
    let w_hh = PackedMatrix::pack_in(precision, Mat::new(&p.weight_hh.value, h_out), gh, h_out);
    let w_hr = p
        .weight_hr
        .as_ref()
        .map(|w| PackedMatrix::pack_in(precision, Mat::new(&w.value, hs), h_out, hs));
    let tile = w_hh.row_tile();
    let (groups, alone) = split(p, layout, tile);
    let order = layout.visit_order(!reverse);
    let ln = p.layer_norm.as_ref().filter(|_| ln_grads.is_some());
    let tiles = if ln.is_some() {
        layout.batch().div_ceil(tile)
    } else {
        0
    };
    let mut acc = vec![0.0; tiles * ln_acc_len(hs)];
    {
        let pass = BackwardPass {
            p,
            ln,
            tape,
            d_out,
            w_hh: &w_hh,
            w_hr: w_hr.as_ref(),
            alone,
            dh: Shared::new(dh),
            dc: Shared::new(dc),
            dg: Shared::new(dg),
            dh_rows: Shared::new(dh_rows),
            acc: Shared::new(&mut acc),
        };
        run_rounds(
            1,
            groups.len(),
            alone,
            |_, group, s: &mut BackwardScratch| {
                let rows = &groups[group];
                for &(r0, b) in &order {
                    let end = rows.end.min(b);
                    if end > rows.start {
                        // SAFETY: groups have disjoint batch rows, and start on tiles.
                        unsafe { pass.step(r0, rows.start..end, s) };
                    }
                }
            },
        );
    }
    if let Some(grads) = ln_grads.filter(|_| tiles > 0) {
        for tile_acc in acc.chunks_exact(ln_acc_len(hs)) {
            let (gates, cell) = tile_acc.split_at(2 * gh);
            add_into(grads.gates_weight, &gates[..gh]);
            add_into(grads.gates_bias, &gates[gh..]);
            add_into(grads.cell_weight, &cell[..hs]);
            add_into(grads.cell_bias, &cell[hs..]);
        }
    }
}

/// What every group of [`backward`] reads and writes.
struct BackwardPass<'a> {
    p: &'a DirectionParams,
    /// The layer norms, when their parameters get gradients.
    ln: Option<&'a LayerNormParams>,
    tape: &'a DirTape,
    d_out: &'a [f32],
    w_hh: &'a PackedMatrix,
    w_hr: Option<&'a PackedMatrix>,
    alone: bool,
    dh: Shared<'a>,
    dc: Shared<'a>,
    dg: Shared<'a>,
    dh_rows: Shared<'a>,
    /// `(tiles, ln_acc_len)`: the layer norms' parameter gradients per tile of rows.
    acc: Shared<'a>,
}

impl BackwardPass<'_> {
    /// Batch rows `rows` of the step whose packed rows start at `r0`.
    ///
    /// # Safety
    /// No other thread may work on these batch rows, or others of their row tiles, at the
    /// same time.
    unsafe fn step(&self, r0: usize, rows: Range<usize>, s: &mut BackwardScratch) {
        let (p, tape, alone) = (self.p, self.tape, self.alone);
        let (hs, h_out) = (p.hidden_size, p.output_size());
        let gh = 4 * hs;
        let (lo, nb, first) = (rows.start, rows.len(), r0 + rows.start);
        let dhj = self.dh.slice_mut(lo * h_out, nb * h_out);
        let d_out = &self.d_out[first * h_out..(first + nb) * h_out];
        add_into(dhj, d_out);
        s.dr.resize(nb * hs, 0.0);
        if let Some(w_hr) = self.w_hr {
            let dh_rows = self.dh_rows.slice_mut(first * h_out, nb * h_out);
            dh_rows.copy_from_slice(dhj);
            let dhj = Mat::new(dhj, h_out);
            product(alone, nb, dhj, w_hr, 0.0, MatMut::new(&mut s.dr, hs));
        } else {
            s.dr.copy_from_slice(dhj);
        }
        let dgj = self.dg.slice_mut(first * gh, nb * gh);
        let dcj = self.dc.slice_mut(lo * hs, nb * hs);
        let tile = self.w_hh.row_tile();
        for j in 0..nb {
            let row = first + j;
            let span = j * hs..(j + 1) * hs;
            let (dr, dc) = (&s.dr[span.clone()], &mut dcj[span]);
            let dg = &mut dgj[j * gh..(j + 1) * gh];
            match self.ln {
                Some(ln) => {
                    s.dy.resize(hs, 0.0);
                    let len = ln_acc_len(hs);
                    let acc = self.acc.slice_mut((lo + j) / tile * len, len);
                    layer_norm_cell_backward(ln, tape, row, (dr, dc, dg), &mut s.dy, acc);
                }
                None => {
                    let at = row * hs..(row + 1) * hs;
                    let gates = cells::segments(&tape.gates[row * gh..(row + 1) * gh]);
                    let (c_new, c_prev) = (&tape.c[at.clone()], &tape.c_prev[at]);
                    let dg = cells::segments_mut(dg);
                    cells::lstm_backward(gates, c_new, c_prev, dr, dc, dg);
                }
            }
        }
        product(
            alone,
            nb,
            Mat::new(dgj, gh),
            self.w_hh,
            0.0,
            MatMut::new(dhj, h_out),
        );
    }
}

/// One row of a layer-norm LSTM step backward: from `dr` (`H`, gradient of
/// `o tanh(LN(c'))`) and `dc` (`H`, in: gradient of `c'`, out: of `c`), writes `dg` (`4H`)
/// and adds the layer norms' parameter gradients to `acc` (see [`backward`]). `dy`: `H`
/// scratch.
fn layer_norm_cell_backward(
    ln: &LayerNormParams,
    tape: &DirTape,
    row: usize,
    (dr, dc, dg): (&[f32], &mut [f32], &mut [f32]),
    dy: &mut [f32],
    acc: &mut [f32],
) {
    let hs = dc.len();
    let gh = 4 * hs;
    let (gates_acc, cell_acc) = acc.split_at_mut(2 * gh);
    let (gates_weight, gates_bias) = gates_acc.split_at_mut(gh);
    let (cell_weight, cell_bias) = cell_acc.split_at_mut(hs);
    let gates = &tape.gates[row * gh..(row + 1) * gh];
    let c_prev = &tape.c_prev[row * hs..(row + 1) * hs];
    // Through h = o * tanh(y), y = LayerNorm(c).
    let hat = &tape.cell_hat[row * hs..(row + 1) * hs];
    for k in 0..hs {
        let y = hat[k] * ln.cell_weight.value[k] + ln.cell_bias.value[k];
        let ty = tanh(y);
        let o = gates[3 * hs + k];
        dg[3 * hs + k] = dr[k] * ty * o * (1.0 - o);
        dy[k] = dr[k] * o * (1.0 - ty * ty);
    }
    let rstd = tape.cell_rstd[row];
    norm::backward(dy, hat, rstd, &ln.cell_weight.value, cell_weight, cell_bias);
    dc.iter_mut().zip(dy.iter()).for_each(|(a, d)| *a += d);
    for k in 0..hs {
        let (i, f, gg) = (gates[k], gates[hs + k], gates[2 * hs + k]);
        let d = dc[k];
        dg[k] = d * gg * i * (1.0 - i);
        dg[hs + k] = d * c_prev[k] * f * (1.0 - f);
        dg[2 * hs + k] = d * i * (1.0 - gg * gg);
        dc[k] = d * f;
    }
    for q in 0..4 {
        let span = q * hs..(q + 1) * hs;
        norm::backward(
            &mut dg[span.clone()],
            &tape.ln_hat[row * gh + q * hs..row * gh + (q + 1) * hs],
            tape.ln_rstd[row * 4 + q],
            &ln.gates_weight.value[span.clone()],
            &mut gates_weight[span.clone()],
            &mut gates_bias[span],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups start on tile multiples, cover the batch in order, and balance tokens:
    /// sorted variable lengths put fewer rows in the first group.
    #[test]
    fn row_groups_cover_the_batch_on_tile_boundaries() {
        // 48 rows: the first 12 run 10 steps, the others 1.
        let mut sizes = vec![48];
        sizes.extend(std::iter::repeat_n(12, 9));
        let layout = SeqLayout::from_batch_sizes(sizes);
        let groups = row_groups(&layout, 12, 2);
        assert_eq!(groups, vec![0..12, 12..48]);
        let full = SeqLayout::full(5, 50);
        for parts in 1..6 {
            let groups = row_groups(&full, 12, parts);
            assert_eq!(groups.len(), parts.min(5));
            assert_eq!(groups[0].start, 0);
            assert_eq!(groups.last().unwrap().end, 50);
            for pair in groups.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
                assert_eq!(pair[1].start % 12, 0);
            }
        }
        assert_eq!(row_groups(&SeqLayout::full(3, 5), 12, 4), vec![0..5]);
    }
}
