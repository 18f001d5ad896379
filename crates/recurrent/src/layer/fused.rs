//! Time loops of the plain cells (LSTM without layer norm or projection, GRU, Elman RNN),
//! split by hidden units across a [`team`](super::team) of threads.
//!
//! A chunk is a range of hidden units (a multiple of [`CHUNK_UNITS`], one chunk per
//! thread) together with all their gates. In the forward pass a chunk computes its
//! gates' input projection (a block of steps at a time) and recurrent product and applies
//! the cell to its units; in the backward pass it finishes its units' part of `dh` from
//! the previous step's gate gradients and then runs the cell backward for them. Either way a
//! step needs every unit of the step before and nothing else, so one synchronisation per
//! step suffices and each thread keeps its slice of the recurrent weights in its cache.

use super::layout::SeqLayout;
use super::params::DirectionParams;
use super::record::DirTape;
use super::team::{run_rounds, Shared, PARALLEL_MIN_WORK};
use crate::config::Mode;
use crate::kernels::rows::add_bias_rows;
use crate::kernels::{cells, matmul_packed_panels, Mat, MatMut, PackedMatrix, Precision};
use crate::param::Param;

/// Chunks are made of blocks of this many hidden units: a multiple of every CPU level's
/// GEMM panel width (8, 16, 32), so a chunk's gate columns are whole packed panels.
pub const CHUNK_UNITS: usize = 32;

/// Whether the recurrent products of `order`'s steps are worth a team of threads.
fn worth_a_team(order: &[(usize, usize)], p: &DirectionParams) -> bool {
    let rows: usize = order.iter().map(|&(_, b)| b).sum();
    rows * p.mode.gates() * p.hidden_size * p.hidden_size >= PARALLEL_MIN_WORK
}

/// Whether [`forward`] and [`backward`] handle these parameters.
pub fn supports(p: &DirectionParams) -> bool {
    p.layer_norm.is_none() && p.weight_hr.is_none()
}

/// The split of `H` hidden units into one chunk per thread. (Each chunk's product
/// repacks the step's left-hand matrix, so more chunks than threads would cost more than
/// the finer load balance gains.)
#[derive(Debug, Clone, Copy)]
struct Chunks {
    width: usize,
    hidden: usize,
    gates: usize,
}

impl Chunks {
    fn new(p: &DirectionParams) -> Self {
        Chunks {
            width: p
                .hidden_size
                .div_ceil(super::team::team_threads())
                .next_multiple_of(CHUNK_UNITS),
            hidden: p.hidden_size,
            gates: p.mode.gates(),
        }
    }

    fn count(&self) -> usize {
        self.hidden.div_ceil(self.width)
    }

    /// First unit and number of units of chunk `c`.
    fn units(&self, c: usize) -> (usize, usize) {
        let u0 = c * self.width;
        (u0, self.width.min(self.hidden - u0))
    }

    /// Gate columns in chunk order: chunk by chunk, each chunk's units gate by gate.
    fn gate_columns(&self) -> Vec<usize> {
        let mut cols = Vec::with_capacity(self.gates * self.hidden);
        for c in 0..self.count() {
            let (u0, w) = self.units(c);
            for q in 0..self.gates {
                cols.extend((u0..u0 + w).map(|u| q * self.hidden + u));
            }
        }
        cols
    }

    /// Panels of chunk `c` in `packed`, packed with [`Chunks::gate_columns`] (`G` gates)
    /// or with plain unit columns (`G` = 1).
    fn panels(&self, c: usize, gates: usize, packed: &PackedMatrix) -> std::ops::Range<usize> {
        let nr = packed.panel_width();
        let (u0, w) = self.units(c);
        let first = gates * u0 / nr;
        first..first + (gates * w).div_ceil(nr)
    }
}

/// Per-thread work buffer: `(b, G*w)`, the chunk's recurrent product. It is kept in a
/// thread-local between calls: a fresh buffer this large would be mapped (and
/// page-faulted) anew on every call.
struct Scratch(Vec<f32>);

thread_local! {
    static SPARE: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch(SPARE.take())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        SPARE.set(std::mem::take(&mut self.0));
    }
}

/// The `G` segments of units `u0 .. u0 + w` of row `row` of `gates` (`G*H` wide).
///
/// # Safety
/// No other thread may read or write those segments during the round.
#[allow(clippy::mut_from_ref)]
unsafe fn gate_segments<'a, const G: usize>(
    gates: &'a Shared,
    row: usize,
    hidden: usize,
    u0: usize,
    w: usize,
) -> [&'a mut [f32]; G] {
    std::array::from_fn(|q| gates.slice_mut((row * G + q) * hidden + u0, w))
}

/// [`gate_segments`] of a buffer that is only read.
fn tape_segments<const G: usize>(
    gates: &[f32],
    row: usize,
    hidden: usize,
    u0: usize,
    w: usize,
) -> [&[f32]; G] {
    std::array::from_fn(|q| &gates[(row * G + q) * hidden + u0..][..w])
}

/// The weights of one direction packed for [`forward`], their gate columns in chunk
/// order: `W_ih^T` `(I, G*H)`, `W_hh^T` `(H, G*H)`, and the biases in the same order.
#[derive(Debug, Clone)]
pub struct FusedWeights {
    ch: Chunks,
    w_ih: PackedMatrix,
    w_hh: PackedMatrix,
    /// Added to the input projection: GRU's `b_ih` (its `n` gate keeps the input and
    /// recurrent sides apart); empty for the other modes.
    bias_x: Vec<f32>,
    /// Added to each step's recurrent product: `b_hh`, and also `b_ih` except for GRU.
    bias_rec: Vec<f32>,
}

impl FusedWeights {
    /// Packs `p`'s weights, split into one chunk per thread of the current pool.
    pub fn pack(p: &DirectionParams, precision: Precision) -> Self {
        let ch = Chunks::new(p);
        let cols = ch.gate_columns();
        let pack =
            |w: &[f32], k: usize| PackedMatrix::pack_columns(precision, Mat::t(w, k), k, &cols);
        let w_ih = pack(&p.weight_ih.value, p.input_size());
        let w_hh = pack(&p.weight_hh.value, p.hidden_size);
        let bias = |b: &Option<Param>| -> Vec<f32> {
            cols.iter()
                .map(|&j| b.as_ref().map_or(0.0, |b| b.value[j]))
                .collect()
        };
        let (b_ih, b_hh) = (bias(&p.bias_ih), bias(&p.bias_hh));
        let (bias_x, bias_rec) = match p.mode {
            Mode::Gru => (b_ih, b_hh),
            _ => (
                Vec::new(),
                b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect(),
            ),
        };
        FusedWeights {
            ch,
            w_ih,
            w_hh,
            bias_x,
            bias_rec,
        }
    }
}

/// Consecutive steps (in visit order) whose input projections are computed together.
struct ProjectionBlocks {
    /// Steps per block.
    steps: usize,
    /// First packed row and number of rows of each block (a block's rows are contiguous,
    /// in either direction).
    rows: Vec<(usize, usize)>,
}

impl ProjectionBlocks {
    /// Blocks of at most `bytes` of projections (but at least one step) of `row_floats`
    /// values per row.
    fn new(order: &[(usize, usize)], row_floats: usize, bytes: usize) -> Self {
        let widest = order.iter().map(|&(_, b)| b).max().unwrap_or(1);
        let steps = (bytes / (4 * widest * row_floats)).max(1);
        let rows = order
            .chunks(steps)
            .map(|block| {
                let first = block.iter().map(|&(r, _)| r).min().expect("non-empty");
                let end = block.iter().map(|&(r, b)| r + b).max().expect("non-empty");
                (first, end - first)
            })
            .collect();
        ProjectionBlocks { steps, rows }
    }

    /// Rows of the largest block.
    fn most_rows(&self) -> usize {
        self.rows.iter().map(|&(_, n)| n).max().unwrap_or(0)
    }
}

thread_local! {
    static PROJECTIONS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The time loop of [`super::direction::forward`] for [`supports`]ed parameters,
/// including the input projection: each chunk projects the input rows of a block of
/// steps onto its own gate columns just before those steps.
///
/// `x`: `(N, I)` packed input rows; `h`: `(B, H)` initial state in, `h_n` out; `c`:
/// `(B, H)` likewise (LSTM); `weights`: `p`'s weights, packed. In training (a tape that
/// records) the gate activations go to `tape.gates`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    p: &DirectionParams,
    x: &[f32],
    layout: &SeqLayout,
    reverse: bool,
    h: &mut [f32],
    c: &mut [f32],
    tape: &mut DirTape,
    weights: &FusedWeights,
) {
    let state = (h, c);
    forward_in_blocks(
        p,
        x,
        layout,
        reverse,
        state,
        tape,
        weights,
        // Few enough bytes of one chunk's input projections to stay in the core's L2
        // cache until their steps read them, instead of a projection of every step
        // written to memory and read back (the epilogue's largest cost at batch 64).
        crate::kernels::CpuInfo::get().projection_block_bytes(),
    );
}

/// [`forward`] with projection blocks of at most `block_bytes` per chunk.
#[allow(clippy::too_many_arguments)]
fn forward_in_blocks(
    p: &DirectionParams,
    x: &[f32],
    layout: &SeqLayout,
    reverse: bool,
    (h, c): (&mut [f32], &mut [f32]),
    tape: &mut DirTape,
    weights: &FusedWeights,
    block_bytes: usize,
) {
    let (hs, input_size) = (p.hidden_size, p.input_size());
    let FusedWeights {
        ch,
        w_ih,
        w_hh,
        bias_x,
        bias_rec,
    } = weights;
    let (ch, g) = (*ch, ch.gates);
    let batch = h.len() / hs;
    let order = layout.visit_order(reverse);
    let blocks = ProjectionBlocks::new(&order, g * ch.width, block_bytes);
    let block_len = blocks.most_rows() * g * ch.width;
    // Inference tapes keep no history (see `DirTape::prepare`).
    let record = !tape.h_prev.is_empty();
    let mut other = std::mem::take(&mut tape.state_spare);
    other.resize(h.len(), 0.0);
    let mut projections = PROJECTIONS.take();
    projections.resize(ch.count() * block_len, 0.0);
    {
        let states = [Shared::new(h), Shared::new(&mut other)];
        let projections = Shared::new(&mut projections);
        let cell = Shared::new(c);
        let gates = Shared::new(&mut tape.gates);
        let out = Shared::new(&mut tape.out);
        let h_prev = Shared::new(&mut tape.h_prev);
        let c_new = Shared::new(&mut tape.c);
        let c_prev = Shared::new(&mut tape.c_prev);
        let gh_n = Shared::new(&mut tape.gh_n);
        let parallel = worth_a_team(&order, p);
        run_rounds(
            order.len(),
            ch.count(),
            parallel,
            |round, chunk, s: &mut Scratch| {
                let (r0, b) = order[round];
                let (cur, next) = (&states[round % 2], &states[(round + 1) % 2]);
                let (u0, w) = ch.units(chunk);
                let gw = g * w;
                let (block_row, block_rows) = blocks.rows[round / blocks.steps];
                // SAFETY: this round reads the whole current state and writes only units
                // `u0 .. u0 + w` of the next state, the cell state and this step's tape rows,
                // and its own chunk's projections; chunks have disjoint units.
                unsafe {
                    let proj = projections.slice_mut(chunk * block_len, block_rows * gw);
                    if round % blocks.steps == 0 {
                        matmul_packed_panels(
                            block_rows,
                            Mat::new(&x[block_row * input_size..], input_size),
                            w_ih,
                            ch.panels(chunk, g, w_ih),
                            0.0,
                            MatMut::new(proj, gw),
                        );
                        if !bias_x.is_empty() {
                            add_bias_rows(proj, &bias_x[u0 * g..(u0 + w) * g]);
                        }
                    }
                    let s = &mut s.0;
                    s.resize(b * gw, 0.0);
                    matmul_packed_panels(
                        b,
                        Mat::new(cur.slice(0, b * hs), hs),
                        w_hh,
                        ch.panels(chunk, g, w_hh),
                        0.0,
                        MatMut::new(s, gw),
                    );
                    add_bias_rows(s, &bias_rec[u0 * g..(u0 + w) * g]);
                    for j in 0..b {
                        let row = r0 + j;
                        let at = j * hs + u0;
                        let rec = &mut s[j * gw..(j + 1) * gw];
                        let xg = &mut proj[(row - block_row) * gw..][..gw];
                        let h_new = next.slice_mut(at, w);
                        if record {
                            h_prev
                                .slice_mut(row * hs + u0, w)
                                .copy_from_slice(cur.slice(at, w));
                        }
                        match p.mode {
                            Mode::Lstm => {
                                let cj = cell.slice_mut(at, w);
                                if record {
                                    c_prev.slice_mut(row * hs + u0, w).copy_from_slice(cj);
                                }
                                cells::lstm_forward(cells::segments_mut(xg), rec, cj, h_new);
                                if record {
                                    c_new.slice_mut(row * hs + u0, w).copy_from_slice(cj);
                                }
                            }
                            Mode::Gru => {
                                let n = gh_n.slice_mut(row * hs + u0, w);
                                let h_old = cur.slice(at, w);
                                cells::gru_forward(cells::segments_mut(xg), rec, h_old, h_new, n);
                            }
                            Mode::RnnTanh | Mode::RnnRelu => {
                                cells::elman_forward(xg, rec, h_new, p.mode == Mode::RnnRelu);
                            }
                        }
                        if record {
                            for (q, acts) in xg.chunks_exact(w).enumerate() {
                                gates
                                    .slice_mut((row * g + q) * hs + u0, w)
                                    .copy_from_slice(acts);
                            }
                        }
                        out.slice_mut(row * hs + u0, w).copy_from_slice(h_new);
                    }
                    // Finished sequences keep their state.
                    for j in b..batch {
                        next.slice_mut(j * hs + u0, w)
                            .copy_from_slice(cur.slice(j * hs + u0, w));
                    }
                }
            },
        );
    }
    PROJECTIONS.set(projections);
    if order.len() % 2 == 1 {
        h.copy_from_slice(&other);
    }
    tape.state_spare = other;
}

/// The time loop of [`super::direction::backward`] for [`supports`]ed parameters: fills
/// `dg` (`(N, G*H)` pre-activation gradients) and, for GRU, `dg_hh` (their recurrent
/// side), and turns `dh` / `dc` (`(B, H)`) from the gradients of `h_n` / `c_n` into those
/// of `h0` / `c0`. `precision`: arithmetic of the recurrent products.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    p: &DirectionParams,
    layout: &SeqLayout,
    reverse: bool,
    tape: &DirTape,
    d_out: &[f32],
    dh: &mut [f32],
    dc: &mut [f32],
    (dg, dg_hh): (&mut [f32], &mut [f32]),
    precision: Precision,
) {
    let hs = p.hidden_size;
    let ch = Chunks::new(p);
    let g = ch.gates;
    let gru = p.mode == Mode::Gru;
    // `(G*H, H)`: column panels are chunks of units.
    let w_hh = PackedMatrix::pack_in(precision, Mat::new(&p.weight_hh.value, hs), g * hs, hs);
    let mut order = layout.visit_order(reverse);
    order.reverse();
    let dh = Shared::new(dh);
    let dc = Shared::new(dc);
    let dg = Shared::new(dg);
    let dg_hh = Shared::new(dg_hh);
    // Round i finishes `dh` of the step handled in round i - 1, then runs step i backward.
    run_rounds(
        order.len() + 1,
        ch.count(),
        worth_a_team(&order, p),
        |round, chunk, s: &mut Scratch| {
            let (u0, w) = ch.units(chunk);
            // SAFETY: this round reads the previous step's gate-gradient rows (written last
            // round) and writes only units `u0 .. u0 + w` of `dh`, `dc` and this step's rows.
            unsafe {
                if round > 0 {
                    let (rp, bp) = order[round - 1];
                    let src = if gru { &dg_hh } else { &dg };
                    let s = &mut s.0;
                    s.resize(bp * w, 0.0);
                    matmul_packed_panels(
                        bp,
                        Mat::new(src.slice(rp * g * hs, bp * g * hs), g * hs),
                        &w_hh,
                        ch.panels(chunk, 1, &w_hh),
                        0.0,
                        MatMut::new(s, w),
                    );
                    for j in 0..bp {
                        let d = dh.slice_mut(j * hs + u0, w);
                        let prod = &s[j * w..(j + 1) * w];
                        if gru {
                            d.iter_mut().zip(prod).for_each(|(a, v)| *a += v);
                        } else {
                            d.copy_from_slice(prod);
                        }
                    }
                }
                let Some(&(r0, b)) = order.get(round) else {
                    return;
                };
                for j in 0..b {
                    let row = r0 + j;
                    let d = dh.slice_mut(j * hs + u0, w);
                    d.iter_mut()
                        .zip(&d_out[row * hs + u0..row * hs + u0 + w])
                        .for_each(|(a, v)| *a += v);
                    let at = row * hs + u0..row * hs + u0 + w;
                    match p.mode {
                        Mode::Lstm => {
                            let gates = tape_segments::<4>(&tape.gates, row, hs, u0, w);
                            let (c_new, c_prev) = (&tape.c[at.clone()], &tape.c_prev[at]);
                            let dcj = dc.slice_mut(j * hs + u0, w);
                            let dgj = gate_segments::<4>(&dg, row, hs, u0, w);
                            cells::lstm_backward(gates, c_new, c_prev, d, dcj, dgj);
                        }
                        Mode::Gru => {
                            let gates = tape_segments::<3>(&tape.gates, row, hs, u0, w);
                            let (hp, ghn) = (&tape.h_prev[at.clone()], &tape.gh_n[at]);
                            let dgj = gate_segments::<3>(&dg, row, hs, u0, w);
                            let dghj = gate_segments::<3>(&dg_hh, row, hs, u0, w);
                            cells::gru_backward(gates, hp, ghn, d, dgj, dghj);
                        }
                        Mode::RnnTanh | Mode::RnnRelu => {
                            let acts = &tape.gates[at];
                            let dgj = dg.slice_mut(row * hs + u0, w);
                            for ((dv, &a), &dd) in dgj.iter_mut().zip(acts).zip(d.iter()) {
                                *dv = match p.mode {
                                    Mode::RnnTanh => dd * (1.0 - a * a),
                                    _ if a > 0.0 => dd,
                                    _ => 0.0,
                                };
                            }
                        }
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::params::DirectionShape;
    use rand::{Rng, SeedableRng};

    /// Input projections computed a block of steps at a time give the same pass as one
    /// block of all steps: every mode, both directions, a variable-length batch, inference
    /// and training tapes, blocks of 1 and 2 steps. Tolerance: 1e-5 absolute on values of
    /// size ~1 (the product's row tiling, and with it the summation order of one- and
    /// two-row tiles, follows a block's row count).
    #[test]
    fn projection_blocks_do_not_change_the_pass() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let layout = SeqLayout::from_batch_sizes(vec![3, 3, 2, 2, 2, 1, 1]);
        let (input_size, hidden_size, batch) = (5, 40, 3);
        for mode in [Mode::Lstm, Mode::Gru, Mode::RnnTanh] {
            let shape = DirectionShape {
                mode,
                input_size,
                hidden_size,
                proj_size: 0,
                bias: true,
                layer_norm: false,
            };
            let p = DirectionParams::init(shape, &mut rng);
            let weights = FusedWeights::pack(&p, Precision::F32);
            let x: Vec<f32> = (0..layout.rows() * input_size)
                .map(|_| rng.gen_range(-1.0..1.0))
                .collect();
            let h0: Vec<f32> = (0..batch * hidden_size)
                .map(|_| rng.gen_range(-1.0..1.0))
                .collect();
            let c_len = if mode == Mode::Lstm { h0.len() } else { 0 };
            let c0: Vec<f32> = (0..c_len).map(|_| rng.gen_range(-1.0..1.0)).collect();
            for (reverse, record) in [(false, false), (true, false), (false, true), (true, true)] {
                let run = |block_bytes: usize| {
                    let (mut h, mut c) = (h0.clone(), c0.clone());
                    let mut tape = DirTape::default();
                    tape.prepare(&p, layout.rows(), record);
                    let state = (&mut h[..], &mut c[..]);
                    forward_in_blocks(
                        &p,
                        &x,
                        &layout,
                        reverse,
                        state,
                        &mut tape,
                        &weights,
                        block_bytes,
                    );
                    [h, c, tape.out, tape.gates]
                };
                let whole = run(usize::MAX / 2);
                let row_bytes = 4 * batch * mode.gates() * hidden_size;
                for steps in [1, 2] {
                    for (a, b) in whole.iter().zip(run(steps * row_bytes)) {
                        assert_eq!(a.len(), b.len());
                        for (u, v) in a.iter().zip(&b) {
                            assert!((u - v).abs() <= 1e-5, "{mode:?} reverse={reverse} record={record} blocks of {steps}: {u} vs {v}");
                        }
                    }
                }
            }
        }
    }
}
