//! Matrix products `C = beta * C + A * B` on row-major `f32` slices.
//!
//! A BLIS-style product: `B` is packed into column panels of `NR` columns (blocked by
//! `KC` rows), `A` into row panels of `MR` rows, and a register-blocked `MR x NR`
//! micro-kernel runs over them. The SIMD kernels read `A` in place instead (their row
//! blocks stay in cache across panels, and packing them cost more than it saved: up to
//! 2.4x on the narrow products of a training step) and share their blocked loops
//! (`gemm/blocked.rs`). Recurrent weights are packed once per sequence ([`PackedMatrix`]) and
//! reused at every time step. The micro-kernels have constant sizes, compiled per CPU
//! level (AVX-512: 12x32 and AVX2: 6x16 with intrinsics; portable: 4x8 in plain Rust).
//! Work is split across the rayon pool by rows of `C` when there are many, otherwise by
//! column panels.

use super::cpu::{level, Level};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod blocked;
#[cfg(test)]
mod tests;

/// A read-only matrix view: logical `rows x cols`; element `(i, j)` at `data[i * ld + j]`,
/// or, when `transposed`, at `data[j * ld + i]` (the transpose of a stored row-major matrix).
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Leading dimension (distance between stored rows).
    pub ld: usize,
    /// Whether the logical matrix is the transpose of the stored one.
    pub transposed: bool,
}

impl<'a> Mat<'a> {
    /// A plain row-major matrix with leading dimension `ld`.
    pub fn new(data: &'a [f32], ld: usize) -> Self {
        Mat {
            data,
            ld,
            transposed: false,
        }
    }
    /// The transpose of the stored row-major matrix with leading dimension `ld`.
    pub fn t(data: &'a [f32], ld: usize) -> Self {
        Mat {
            data,
            ld,
            transposed: true,
        }
    }
    #[cfg(test)]
    fn at(&self, i: usize, j: usize) -> f32 {
        if self.transposed {
            self.data[j * self.ld + i]
        } else {
            self.data[i * self.ld + j]
        }
    }
}

/// A mutable row-major matrix: element `(i, j)` at `data[i * ld + j]`.
pub struct MatMut<'a> {
    /// Backing storage.
    pub data: &'a mut [f32],
    /// Leading dimension.
    pub ld: usize,
}

impl<'a> MatMut<'a> {
    /// A row-major matrix with leading dimension `ld`.
    pub fn new(data: &'a mut [f32], ld: usize) -> Self {
        MatMut { data, ld }
    }
}

/// Depth of one packed block (rows of `B`, columns of `A`).
const KC: usize = 384;
/// Length of the on-stack buffer for a packed `MR x KC` block of `A` (the portable `MR`: 4).
const A_PACK_LEN: usize = KC * 4;
/// Elements of `B` below which it is packed on one thread.
const PARALLEL_MIN_PACK: usize = 1 << 18;
/// Multiply-adds below which a product runs on one thread.
const PARALLEL_MIN_WORK: usize = 1 << 16;

/// Arithmetic of a matrix product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// `f32` operands and sums: PyTorch's default arithmetic.
    #[default]
    F32,
    /// Mixed precision, as under PyTorch's CPU autocast to bfloat16: both operands are
    /// rounded to bfloat16 (8 significant bits) and the products summed in `f32`, at up to
    /// twice the multiply-add rate ([`super::cpu::bf16_speedup`]). Only on CPUs with
    /// AVX-512 BF16 ([`super::cpu::has_bf16`]); elsewhere products stay `f32`.
    Bf16,
}

impl Precision {
    /// The precision products actually run in on this CPU: [`Precision::Bf16`] falls back
    /// to [`Precision::F32`] without AVX-512 BF16.
    pub fn effective(self) -> Precision {
        match self {
            Precision::Bf16 if super::cpu::has_bf16() => Precision::Bf16,
            _ => Precision::F32,
        }
    }

    /// `self`, except that [`Precision::Bf16`] becomes [`Precision::F32`] where bfloat16
    /// products are not faster ([`super::cpu::bf16_pays`]): for defaults that choose
    /// bfloat16 for its speed.
    pub fn where_faster(self) -> Precision {
        match self {
            Precision::Bf16 if super::cpu::bf16_pays() => Precision::Bf16,
            _ => Precision::F32,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = crate::Error;
    /// `f32` or `bf16`.
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(crate::Error::Invalid(format!(
                "precision: expected f32 or bf16, found {s:?}"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// Rounds `x` to the nearest bfloat16 (ties to even), as the AVX-512 BF16 conversions do.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// Register-block shape of a CPU level: `(MR, NR)`.
fn block_shape(level: Level) -> (usize, usize) {
    match level {
        Level::Avx512 | Level::Amx => (12, 32),
        Level::Avx2 => (6, 16),
        Level::Portable => (4, 8),
    }
}

/// Pair rows a bfloat16 panel of a `kc`-deep block has: `kc / 2` rounded up to a multiple
/// of 16, the depth of one AMX tile step (the rows past the last pair are zero).
fn padded_pair_rows(kc: usize) -> usize {
    kc.div_ceil(32) * 16
}

/// A `K x N` right-hand matrix packed for the micro-kernel: for each `KC`-deep block,
/// panels of `NR` columns, row by row, zero-padded.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    k: usize,
    n: usize,
    level: Level,
    nr: usize,
    data: Vec<f32>,
    /// For [`Precision::Bf16`] (then `data` is empty): the same blocks and panels with rows
    /// taken in pairs, each `u32` holding column `j` of rows `2q` (low half) and `2q + 1`
    /// (high half) as bfloat16, each panel padded with zero pairs to
    /// [`padded_pair_rows`].
    pairs: Vec<u32>,
}

impl PackedMatrix {
    /// Packs the logical `k x n` matrix `b` for the current CPU level.
    pub fn pack(b: Mat, k: usize, n: usize) -> Self {
        Self::pack_in(Precision::F32, b, k, n)
    }

    /// [`PackedMatrix::pack`] for products of the given precision.
    pub fn pack_in(precision: Precision, b: Mat, k: usize, n: usize) -> Self {
        if b.transposed || (precision == Precision::Bf16 && super::cpu::has_bf16()) {
            return Self::pack_with(b, k, n, |j| j, precision);
        }
        // Every panel row is a contiguous piece of a stored row: copy it whole, panels
        // shared between the threads when the matrix is large.
        let level = level();
        let (_, nr) = block_shape(level);
        let panels = n.div_ceil(nr);
        let mut data = vec![0.0; panels * nr * k];
        for (kb, k0) in (0..k).step_by(KC).enumerate() {
            let kc = KC.min(k - k0);
            let block = &mut data[kb * KC * panels * nr..][..kc * panels * nr];
            let fill = |(p, panel): (usize, &mut [f32])| {
                let cols = nr.min(n - p * nr);
                for kk in 0..kc {
                    let row = &b.data[(k0 + kk) * b.ld + p * nr..][..cols];
                    panel[kk * nr..kk * nr + cols].copy_from_slice(row);
                }
            };
            if k * n >= PARALLEL_MIN_PACK && rayon::current_num_threads() > 1 {
                block.par_chunks_mut(kc * nr).enumerate().for_each(fill);
            } else {
                block.chunks_mut(kc * nr).enumerate().for_each(fill);
            }
        }
        PackedMatrix {
            k,
            n,
            level,
            nr,
            data,
            pairs: Vec::new(),
        }
    }

    /// Packs the `k x cols.len()` matrix whose column `j` is column `cols[j]` of `b`.
    pub fn pack_columns(precision: Precision, b: Mat, k: usize, cols: &[usize]) -> Self {
        Self::pack_with(b, k, cols.len(), |j| cols[j], precision)
    }

    fn pack_with(
        b: Mat,
        k: usize,
        n: usize,
        col: impl Fn(usize) -> usize,
        precision: Precision,
    ) -> Self {
        let level = level();
        let (_, nr) = block_shape(level);
        if precision == Precision::Bf16 && super::cpu::has_bf16() {
            return Self::pack_pairs(b, k, n, col, level, nr);
        }
        let panels = n.div_ceil(nr);
        let mut data = vec![0.0; panels * nr * k];
        for (kb, k0) in (0..k).step_by(KC).enumerate() {
            let kc = KC.min(k - k0);
            let block = &mut data[kb * KC * panels * nr..];
            for p in 0..panels {
                let panel = &mut block[p * kc * nr..(p + 1) * kc * nr];
                let cols = nr.min(n - p * nr);
                if b.transposed {
                    // Logical column j is stored row j: read it contiguously.
                    for j in 0..cols {
                        let src = &b.data[col(p * nr + j) * b.ld + k0..][..kc];
                        for (kk, &v) in src.iter().enumerate() {
                            panel[kk * nr + j] = v;
                        }
                    }
                } else {
                    for kk in 0..kc {
                        let row = &b.data[(k0 + kk) * b.ld..];
                        for (j, v) in panel[kk * nr..kk * nr + cols].iter_mut().enumerate() {
                            *v = row[col(p * nr + j)];
                        }
                    }
                }
            }
        }
        PackedMatrix {
            k,
            n,
            level,
            nr,
            data,
            pairs: Vec::new(),
        }
    }

    /// The bfloat16 layout of [`PackedMatrix::pairs`].
    fn pack_pairs(
        b: Mat,
        k: usize,
        n: usize,
        col: impl Fn(usize) -> usize,
        level: Level,
        nr: usize,
    ) -> Self {
        let panels = n.div_ceil(nr);
        let pair = |lo: f32, hi: f32| to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16;
        let mut pairs = vec![0u32; panels * nr * padded_pair_rows(k)];
        for (kb, k0) in (0..k).step_by(KC).enumerate() {
            let kc = KC.min(k - k0);
            let kc2 = kc.div_ceil(2);
            let rows = padded_pair_rows(kc);
            let block = &mut pairs[kb * KC / 2 * panels * nr..];
            for p in 0..panels {
                let panel = &mut block[p * rows * nr..(p + 1) * rows * nr];
                let cols = nr.min(n - p * nr);
                if b.transposed {
                    // Logical column j is stored row j: read it contiguously.
                    for j in 0..cols {
                        let src = &b.data[col(p * nr + j) * b.ld + k0..][..kc];
                        for (q, two) in src.chunks(2).enumerate() {
                            panel[q * nr + j] = pair(two[0], two.get(1).copied().unwrap_or(0.0));
                        }
                    }
                } else {
                    for q in 0..kc2 {
                        let lo = &b.data[(k0 + 2 * q) * b.ld..];
                        let hi = (2 * q + 1 < kc).then(|| &b.data[(k0 + 2 * q + 1) * b.ld..]);
                        for j in 0..cols {
                            let c = col(p * nr + j);
                            panel[q * nr + j] = pair(lo[c], hi.map_or(0.0, |h| h[c]));
                        }
                    }
                }
            }
        }
        PackedMatrix {
            k,
            n,
            level,
            nr,
            data: Vec::new(),
            pairs,
        }
    }

    /// Whether the products with this matrix round their operands to bfloat16.
    pub fn is_bf16(&self) -> bool {
        !self.pairs.is_empty()
    }

    /// `K`.
    pub fn rows(&self) -> usize {
        self.k
    }

    /// `N`.
    pub fn cols(&self) -> usize {
        self.n
    }

    /// Columns per packed panel (8, 16 or 32, by CPU level): products restricted to a
    /// range of panels ([`matmul_packed_panels`]) start and end on multiples of it.
    pub fn panel_width(&self) -> usize {
        self.nr
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(self.nr)
    }

    /// Rows of the product's full register tile (12, 6 or 4, by CPU level): a product
    /// over rows `r0 ..` with `r0` a multiple of it computes each row exactly as the
    /// product over all rows does.
    pub fn row_tile(&self) -> usize {
        block_shape(self.level).0
    }

    /// Panel `p` of the block starting at row `k0`.
    fn panel(&self, k0: usize, p: usize) -> &[f32] {
        let kc = KC.min(self.k - k0);
        let start = (k0 / KC) * KC * self.panels() * self.nr + p * kc * self.nr;
        &self.data[start..start + kc * self.nr]
    }

    /// Panel `p` of the block starting at row `k0`, in the bfloat16 pair layout.
    #[cfg(target_arch = "x86_64")]
    fn panel_pairs(&self, k0: usize, p: usize) -> &[u32] {
        let rows = padded_pair_rows(KC.min(self.k - k0));
        let start = (k0 / KC) * KC / 2 * self.panels() * self.nr + p * rows * self.nr;
        &self.pairs[start..start + rows * self.nr]
    }
}

/// `C[m x n] = beta * C + A[m x k] * B[k x n]`.
///
/// With `beta == 0` the previous content of `C` is ignored (NaN included).
pub fn gemm(m: usize, n: usize, k: usize, a: Mat, b: Mat, beta: f32, c: MatMut) {
    gemm_in(Precision::F32, m, n, k, a, b, beta, c)
}

/// [`gemm`] in the given precision.
#[allow(clippy::too_many_arguments)]
pub fn gemm_in(
    precision: Precision,
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    beta: f32,
    c: MatMut,
) {
    if m == 0 || n == 0 {
        return;
    }
    let packed = PackedMatrix::pack_in(precision, b, k, n);
    matmul_packed(m, a, &packed, beta, c);
}

/// Output pointer shared by the threads of one product; each writes its own tiles.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    ld: usize,
    /// Column of the product stored at column 0 of `ptr`'s rows.
    col0: usize,
}
// SAFETY: threads of one product write disjoint tiles (see `matmul_packed`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// `C[m x N] = beta * C + A[m x K] * B` with `B` packed.
pub fn matmul_packed(m: usize, a: Mat, b: &PackedMatrix, beta: f32, c: MatMut) {
    let (k, n) = (b.k, b.n);
    let Some(out) = output(m, a, b, (0, b.panels()), beta, c) else {
        return;
    };
    let (mr, _) = block_shape(b.level);
    let threads = rayon::current_num_threads();
    let panels = b.panels();
    if threads == 1 || m * n * k < PARALLEL_MIN_WORK {
        run_level(b.level, a, b, out, beta, (0, m), (0, panels));
    } else if m >= 2 * mr * threads {
        let rows_per = m.div_ceil(threads).div_ceil(mr) * mr;
        (0..m.div_ceil(rows_per)).into_par_iter().for_each(|t| {
            let rows = (t * rows_per, ((t + 1) * rows_per).min(m));
            run_level(b.level, a, b, out, beta, rows, (0, panels));
        });
    } else {
        let per = panels.div_ceil(threads);
        (0..panels.div_ceil(per)).into_par_iter().for_each(|t| {
            let cols = (t * per, ((t + 1) * per).min(panels));
            run_level(b.level, a, b, out, beta, (0, m), cols);
        });
    }
}

/// `C = beta * C + A[m x K] * B[:, cols]` on the calling thread only, where `cols` are the
/// columns of panels `panels` ([`PackedMatrix::panel_width`] columns each, the last panel
/// possibly narrower) and column 0 of `C` is the first of them. For work that is already
/// split across threads.
pub fn matmul_packed_panels(
    m: usize,
    a: Mat,
    b: &PackedMatrix,
    panels: std::ops::Range<usize>,
    beta: f32,
    c: MatMut,
) {
    let panels = (panels.start, panels.end.min(b.panels()));
    if let Some(out) = output(m, a, b, panels, beta, c) {
        run_level(b.level, a, b, out, beta, (0, m), panels);
    }
}

/// Checks that `A` and `C` are large enough for the product's `m` rows and the columns of
/// `panels` (which `C` stores from its column 0), and returns where to write them; `None`
/// when nothing is left to compute (no rows or columns, or `K = 0`: `C = beta * C`).
fn output(
    m: usize,
    a: Mat,
    b: &PackedMatrix,
    panels: (usize, usize),
    beta: f32,
    c: MatMut,
) -> Option<Out> {
    if m == 0 || panels.0 >= panels.1 {
        return None;
    }
    let col0 = panels.0 * b.nr;
    let width = (panels.1 * b.nr).min(b.n) - col0;
    assert!(
        (m - 1) * c.ld + width <= c.data.len(),
        "matmul: C too small"
    );
    if b.k == 0 {
        for i in 0..m {
            for v in &mut c.data[i * c.ld..i * c.ld + width] {
                *v = if beta == 0.0 { 0.0 } else { *v * beta };
            }
        }
        return None;
    }
    let last = if a.transposed {
        (b.k - 1) * a.ld + m - 1
    } else {
        (m - 1) * a.ld + b.k - 1
    };
    assert!(last < a.data.len(), "matmul: A too small");
    Some(Out {
        ptr: c.data.as_mut_ptr(),
        ld: c.ld,
        col0,
    })
}

/// Runs rows `rows` x panels `panels` of the product with the kernel of `level`.
fn run_level(
    level: Level,
    a: Mat,
    b: &PackedMatrix,
    out: Out,
    beta: f32,
    rows: (usize, usize),
    panels: (usize, usize),
) {
    let _flush = super::cpu::FlushDenormals::new();
    #[cfg(target_arch = "x86_64")]
    {
        if b.is_bf16() {
            // SAFETY: bfloat16 panels are only packed where the CPU has AVX-512 BF16, and
            // at the AMX level only where the tiles are usable.
            if level == Level::Amx {
                return unsafe { amx::run_bf16(a, b, out, beta, rows, panels) };
            }
            return unsafe { avx512::run_bf16(a, b, out, beta, rows, panels) };
        }
        match level {
            // SAFETY: a packed matrix's level never exceeds what the running CPU supports.
            Level::Avx512 | Level::Amx => {
                return unsafe { avx512::run(a, b, out, beta, rows, panels) }
            }
            Level::Avx2 => return unsafe { avx2::run(a, b, out, beta, rows, panels) },
            Level::Portable => {}
        }
    }
    run::<4, 8>(a, b, out, beta, rows, panels)
}

/// Packs rows `r0 .. r0 + mr` and columns `k0 .. k0 + kc` of `A` column by column with
/// stride `stride` (rows past `mr` are zero), reading `A` along its stored rows.
#[inline(always)]
fn pack_a(a: Mat, r0: usize, mr: usize, k0: usize, kc: usize, stride: usize, dst: &mut [f32]) {
    let dst = &mut dst[..kc * stride];
    if mr < stride {
        dst.fill(0.0);
    }
    if a.transposed {
        // Stored row `k` holds logical column `k`: contiguous runs of `mr` values.
        for kk in 0..kc {
            let src = &a.data[(k0 + kk) * a.ld + r0..][..mr];
            dst[kk * stride..kk * stride + mr].copy_from_slice(src);
        }
    } else {
        for r in 0..mr {
            let src = &a.data[(r0 + r) * a.ld + k0..][..kc];
            for (kk, &v) in src.iter().enumerate() {
                dst[kk * stride + r] = v;
            }
        }
    }
}

/// The blocked loops: for each `KC` block, pack `MR`-row panels of `A` and multiply them
/// with every packed panel of `B` in `panels`, accumulating into `C`.
#[inline(always)]
fn run<const MR: usize, const NR: usize>(
    a: Mat,
    b: &PackedMatrix,
    out: Out,
    beta: f32,
    rows: (usize, usize),
    panels: (usize, usize),
) {
    debug_assert_eq!(b.nr, NR);
    let mut a_pack = [0.0f32; A_PACK_LEN];
    for k0 in (0..b.k).step_by(KC) {
        let kc = KC.min(b.k - k0);
        let beta_block = if k0 == 0 { beta } else { 1.0 };
        let mut r0 = rows.0;
        while r0 < rows.1 {
            let mr = MR.min(rows.1 - r0);
            pack_a(a, r0, mr, k0, kc, MR, &mut a_pack);
            for p in panels.0..panels.1 {
                let acc = micro::<MR, NR>(kc, &a_pack, b.panel(k0, p));
                let col0 = p * NR;
                let nc = NR.min(b.n - col0);
                for (r, acc_row) in acc.iter().enumerate().take(mr) {
                    // SAFETY: `matmul_packed` checked that C holds `m` rows of `n` columns;
                    // this tile (rows r0.., columns col0..col0+nc) is written by this call only.
                    unsafe {
                        let dst = out.ptr.add((r0 + r) * out.ld + col0 - out.col0);
                        for (j, &v) in acc_row.iter().enumerate().take(nc) {
                            let d = dst.add(j);
                            *d = if beta_block == 0.0 {
                                v
                            } else {
                                *d * beta_block + v
                            };
                        }
                    }
                }
            }
            r0 += mr;
        }
    }
}

/// `MR x NR` block of `A_panel * B_panel` over `kc` steps, in registers.
#[inline(always)]
fn micro<const MR: usize, const NR: usize>(kc: usize, a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    for kk in 0..kc {
        let bv: &[f32; NR] = b[kk * NR..(kk + 1) * NR].try_into().expect("panel row");
        let av: &[f32; MR] = a[kk * MR..(kk + 1) * MR].try_into().expect("panel column");
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] += av[r] * bv[j];
            }
        }
    }
    acc
}
