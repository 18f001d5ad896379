//! Matrix products `C = beta * C + A * B` on row-major `f32` slices.
//!
//! A BLIS-style product: `B` is packed into column panels of `NR` columns (blocked by
//! `KC` rows), `A` into row panels of `MR` rows, and a register-blocked `MR x NR`
//! micro-kernel runs over them. The AVX-512 kernel reads `A` in place instead (its
//! 12-row blocks stay in cache across panels, and packing them cost more than it saved:
//! up to 2.4x on the narrow products of a training step). Recurrent weights are packed
//! once per sequence ([`PackedMatrix`]) and reused at every time step. The micro-kernels
//! have constant sizes, compiled per CPU level (AVX-512: 12x32 with intrinsics; AVX2: 6x16
//! and portable: 4x8 in plain Rust). Work is split across the rayon pool by rows of `C`
//! when there are many, otherwise by column panels.

use super::cpu::{level, Level};
use rayon::prelude::*;

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
/// Length of the on-stack buffer for a packed `MR x KC` block of `A` (largest packed `MR`: 6).
const A_PACK_LEN: usize = KC * 6;
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
        Level::Avx512 => (12, 32),
        Level::Avx2 => (6, 16),
        Level::Portable => (4, 8),
    }
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
    /// (high half) as bfloat16.
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
            return Self::pack_pairs(b, k, n, col, nr);
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
    fn pack_pairs(b: Mat, k: usize, n: usize, col: impl Fn(usize) -> usize, nr: usize) -> Self {
        let panels = n.div_ceil(nr);
        let pair = |lo: f32, hi: f32| to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16;
        let mut pairs = vec![0u32; panels * nr * k.div_ceil(2)];
        for (kb, k0) in (0..k).step_by(KC).enumerate() {
            let kc = KC.min(k - k0);
            let kc2 = kc.div_ceil(2);
            let block = &mut pairs[kb * KC / 2 * panels * nr..];
            for p in 0..panels {
                let panel = &mut block[p * kc2 * nr..(p + 1) * kc2 * nr];
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
            level: Level::Avx512,
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
        let kc2 = KC.min(self.k - k0).div_ceil(2);
        let start = (k0 / KC) * KC / 2 * self.panels() * self.nr + p * kc2 * self.nr;
        &self.pairs[start..start + kc2 * self.nr]
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
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(
            a: Mat,
            b: &PackedMatrix,
            out: Out,
            beta: f32,
            rows: (usize, usize),
            panels: (usize, usize),
        ) {
            run::<6, 16, true>(a, b, out, beta, rows, panels)
        }
        if b.is_bf16() {
            // SAFETY: bfloat16 panels are only packed where the CPU has AVX-512 BF16.
            return unsafe { avx512::run_bf16(a, b, out, beta, rows, panels) };
        }
        match level {
            // SAFETY: a packed matrix's level never exceeds what the running CPU supports.
            Level::Avx512 => return unsafe { avx512::run(a, b, out, beta, rows, panels) },
            Level::Avx2 => return unsafe { avx2(a, b, out, beta, rows, panels) },
            Level::Portable => {}
        }
    }
    run::<4, 8, false>(a, b, out, beta, rows, panels)
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
fn run<const MR: usize, const NR: usize, const FMA: bool>(
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
                let acc = micro::<MR, NR, FMA>(kc, &a_pack, b.panel(k0, p));
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
fn micro<const MR: usize, const NR: usize, const FMA: bool>(
    kc: usize,
    a: &[f32],
    b: &[f32],
) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    for kk in 0..kc {
        let bv: &[f32; NR] = b[kk * NR..(kk + 1) * NR].try_into().expect("panel row");
        let av: &[f32; MR] = a[kk * MR..(kk + 1) * MR].try_into().expect("panel column");
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] = if FMA {
                    av[r].mul_add(bv[j], acc[r][j])
                } else {
                    acc[r][j] + av[r] * bv[j]
                };
            }
        }
    }
    acc
}

/// The AVX-512 path: explicit 512-bit intrinsics, row blocks of 12, 8, 4, 2 or 1 read
/// from `A` in place (or, for bfloat16 products, converted block by block).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Mat, Out, PackedMatrix, KC};
    use std::arch::x86_64::*;

    const NR: usize = 32;

    /// Bytes of packed `B` one pass over the rows of `A` multiplies: panels are taken in
    /// groups this large, so that a group stays in the core's L2 cache while every row block
    /// of `A` meets it (instead of streaming all of `B` from memory once per row block).
    fn panel_group_bytes() -> usize {
        crate::kernels::CpuInfo::get().panel_group_bytes()
    }

    /// Rows of the next tile when `left` rows remain.
    fn tile_rows(left: usize) -> usize {
        match left {
            12.. => 12,
            8..=11 => 8,
            4..=7 => 4,
            2..=3 => 2,
            _ => 1,
        }
    }

    /// Calls `$tile::<R, U>($args)` for the tile height `$mr` (fewer rows get more
    /// accumulator sets `U`, see [`tile`]).
    macro_rules! by_rows {
        ($mr:expr, $tile:ident($($arg:expr),*)) => {
            match $mr {
                12 => $tile::<12, 1>($($arg),*),
                8 => $tile::<8, 1>($($arg),*),
                4 => $tile::<4, 1>($($arg),*),
                2 => $tile::<2, 2>($($arg),*),
                _ => $tile::<1, 4>($($arg),*),
            }
        };
    }

    /// See `run_level`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `out` must cover the product's rows and columns.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn run(
        a: Mat,
        b: &PackedMatrix,
        out: Out,
        beta: f32,
        rows: (usize, usize),
        panels: (usize, usize),
    ) {
        debug_assert_eq!(b.nr, NR);
        let tile = |t: TileAt, a_block: (*const f32, usize, usize)| {
            let bp = b.panel(t.k0, t.panel).as_ptr();
            let (c, ldc, nc, beta) = (t.c, out.ld, t.nc, t.beta);
            by_rows!(t.mr, tile_f32(t.kc, a_block, bp, c, ldc, nc, beta));
        };
        // Element (r, kk) of a block of A is at `ap + r * row_step + kk * k_step`: in
        // place, or for a transposed `A` in a copy (see [`copy_columns`]).
        if !a.transposed {
            let block_of_a = |k0: usize, _kc: usize, r0: usize, _mr: usize| {
                (a.data.as_ptr().add(r0 * a.ld + k0), a.ld, 1)
            };
            return for_each_tile(b, out, beta, rows, panels, block_of_a, tile);
        }
        let copy = |group, k0, kc, columns: &mut Vec<f32>| copy_columns(a, group, k0, kc, columns);
        for_each_tile_copied(&COLUMNS, b, out, beta, rows, panels, copy, tile);
    }

    thread_local! {
        /// A thread's copy of the block of a transposed `A` it multiplies (see
        /// [`copy_columns`]), kept for the next product.
        static COLUMNS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
        /// The same for bfloat16 products ([`convert_columns`]).
        static PAIRS: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
    }

    /// Rows of a transposed `A` copied at a time: as many of one depth block as fit in
    /// [`CpuInfo::column_block_bytes`](crate::kernels::CpuInfo::column_block_bytes), a
    /// multiple of 12 so that the tiles are those of the whole product.
    fn column_group_rows() -> usize {
        (crate::kernels::CpuInfo::get().column_block_bytes() / (KC * 4) / 12).max(1) * 12
    }

    /// [`for_each_tile`] over a transposed `A` copied a depth block of a group of rows at
    /// a time (groups of [`column_group_rows`], multiples of 12 rows, so the tiles are
    /// those of the whole product): `copy(group, k0, kc, buffer)` fills the thread's
    /// `buffer` before the block's first tile and returns the values it keeps per row; the
    /// tile starting at row `r0` is then `(r0 - group.0)` times that into the buffer, `mr`
    /// values per depth step.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn for_each_tile_copied<T: 'static>(
        buffer: &'static std::thread::LocalKey<std::cell::Cell<Vec<T>>>,
        b: &PackedMatrix,
        out: Out,
        beta: f32,
        rows: (usize, usize),
        panels: (usize, usize),
        mut copy: impl FnMut((usize, usize), usize, usize, &mut Vec<T>) -> usize,
        tile: impl Fn(TileAt, (*const T, usize, usize)),
    ) {
        // Taken out of the thread-local and put back, rather than borrowed in a closure:
        // the intrinsics are only inlined into code compiled with the kernel's features.
        let mut copies = buffer.take();
        let group_rows = column_group_rows();
        for g0 in (rows.0..rows.1).step_by(group_rows) {
            let group = (g0, (g0 + group_rows).min(rows.1));
            // The depth block in `copies` and its values per row.
            let mut copied: Option<(usize, usize)> = None;
            let block_of_a = |k0: usize, kc: usize, r0: usize, mr: usize| {
                let per_row = match copied {
                    Some((k, per_row)) if k == k0 => per_row,
                    _ => {
                        let per_row = copy(group, k0, kc, &mut copies);
                        copied = Some((k0, per_row));
                        per_row
                    }
                };
                (copies.as_ptr().add((r0 - group.0) * per_row), 1, mr)
            };
            for_each_tile(b, out, beta, group, panels, block_of_a, &tile);
        }
        buffer.set(copies);
    }

    /// Copies logical rows `rows`, columns `k0 .. k0 + kc` of a transposed `A` into
    /// `columns`, tile by tile as [`for_each_tile`] takes them: the tile of `mr` rows
    /// starting at row `r0` at `(r0 - rows.0) * kc`, `mr` values per column. Returns `kc`,
    /// the values per row.
    ///
    /// Read in place, every step of a tile would take a new cache line, `ld` floats
    /// from the last (with `ld` a multiple of 1024 all in one set of the L1 cache, and
    /// each on another page, out of the prefetchers' reach); the copy reads `A` along
    /// its stored rows instead.
    #[inline(always)]
    unsafe fn copy_columns(
        a: Mat,
        rows: (usize, usize),
        k0: usize,
        kc: usize,
        columns: &mut Vec<f32>,
    ) -> usize {
        debug_assert!(a.transposed);
        let m = rows.1 - rows.0;
        if columns.len() < m * kc {
            columns.resize(m * kc, 0.0);
        }
        let dst = columns.as_mut_ptr();
        for kk in 0..kc {
            let src = a.data.as_ptr().add((k0 + kk) * a.ld + rows.0);
            let mut r = 0;
            while r < m {
                let mr = tile_rows(m - r);
                let values: __mmask16 = ((1u32 << mr) - 1) as u16;
                let column = _mm512_maskz_loadu_ps(values, src.add(r));
                _mm512_mask_storeu_ps(dst.add(r * kc + kk * mr), values, column);
                r += mr;
            }
        }
        kc
    }

    /// Where one tile of the product goes: see [`for_each_tile`].
    #[derive(Clone, Copy)]
    struct TileAt {
        /// First row of `B`'s depth block and its depth.
        k0: usize,
        kc: usize,
        /// Rows of the tile and panel of `B`.
        mr: usize,
        panel: usize,
        /// The tile's first output element, its width and the `beta` it applies.
        c: *mut f32,
        nc: usize,
        beta: f32,
    }

    /// The blocked loops both kernels share: for each `KC`-deep block, each group of panels
    /// (see [`panel_group_bytes`]) and each block of up to 12 rows, `block_of_a(k0, kc, r0,
    /// mr)` readies that block of `A`, and `tile` multiplies it with every panel of the group.
    #[inline(always)]
    unsafe fn for_each_tile<A: Copy>(
        b: &PackedMatrix,
        out: Out,
        beta: f32,
        rows: (usize, usize),
        panels: (usize, usize),
        mut block_of_a: impl FnMut(usize, usize, usize, usize) -> A,
        tile: impl Fn(TileAt, A),
    ) {
        let element_bytes = if b.is_bf16() { 2 } else { 4 };
        for k0 in (0..b.k).step_by(KC) {
            let kc = KC.min(b.k - k0);
            let beta = if k0 == 0 { beta } else { 1.0 };
            let group = (panel_group_bytes() / (kc * NR * element_bytes)).max(1);
            for_each_group(panels, group, |group| {
                let mut r0 = rows.0;
                while r0 < rows.1 {
                    let mr = tile_rows(rows.1 - r0);
                    let a_block = block_of_a(k0, kc, r0, mr);
                    for panel in group.0..group.1 {
                        let col0 = panel * NR;
                        let c = out.ptr.add(r0 * out.ld + col0 - out.col0);
                        let nc = NR.min(b.n - col0);
                        let at = TileAt {
                            k0,
                            kc,
                            mr,
                            panel,
                            c,
                            nc,
                            beta,
                        };
                        tile(at, a_block);
                    }
                    r0 += mr;
                }
            });
        }
    }

    /// Calls `f` on consecutive ranges of at most `group` panels covering `panels`.
    #[inline(always)]
    fn for_each_group(panels: (usize, usize), group: usize, mut f: impl FnMut((usize, usize))) {
        let mut p0 = panels.0;
        while p0 < panels.1 {
            let p1 = (p0 + group).min(panels.1);
            f((p0, p1));
            p0 = p1;
        }
    }

    /// `C[R x nc] = beta * C + A[R x kc] * B_panel[kc x 32]`, where element `(r, kk)` of
    /// `A` is at `a.0 + r * a.1 + kk * a.2`.
    #[inline(always)]
    unsafe fn tile_f32<const R: usize, const U: usize>(
        kc: usize,
        a: (*const f32, usize, usize),
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        nc: usize,
        beta: f32,
    ) {
        tile::<R, U>(kc, &F32Step { a, b }, c, ldc, nc, beta);
    }

    /// One step of a tile's sum: `acc += A[.., kk] * B_panel[kk, ..]` for `R` rows of two
    /// 16-wide accumulators.
    ///
    /// A trait with `#[inline(always)]` methods rather than a closure: a closure inside
    /// the kernel's generic helpers is not compiled with the kernel's target features
    /// when the compiler declines to inline it, and its intrinsics then become calls.
    trait Step<const R: usize> {
        unsafe fn step(&self, kk: usize, acc0: &mut [__m512; R], acc1: &mut [__m512; R]);
    }

    /// `f32` steps: element `(r, kk)` of `A` at `a.0 + r * a.1 + kk * a.2`.
    struct F32Step {
        a: (*const f32, usize, usize),
        b: *const f32,
    }

    impl<const R: usize> Step<R> for F32Step {
        #[inline(always)]
        unsafe fn step(&self, kk: usize, acc0: &mut [__m512; R], acc1: &mut [__m512; R]) {
            let (a, row_step, k_step) = self.a;
            let b0 = _mm512_loadu_ps(self.b.add(kk * NR));
            let b1 = _mm512_loadu_ps(self.b.add(kk * NR + 16));
            let ak = a.add(kk * k_step);
            for r in 0..R {
                let av = _mm512_set1_ps(*ak.add(r * row_step));
                acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
                acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
            }
        }
    }

    /// bfloat16 steps over pairs of depth: pair `(r, q)` of `A` at `a.0 + r * a.1 + q * a.2`.
    struct Bf16Step {
        a: (*const u32, usize, usize),
        b: *const u32,
    }

    impl<const R: usize> Step<R> for Bf16Step {
        #[inline(always)]
        unsafe fn step(&self, q: usize, acc0: &mut [__m512; R], acc1: &mut [__m512; R]) {
            let (a, row_step, k_step) = self.a;
            let b = self.b;
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR) as *const _));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(q * NR + 16) as *const _));
            let aq = a.add(q * k_step);
            for r in 0..R {
                let av: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*aq.add(r * row_step) as i32));
                acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
                acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
            }
        }
    }

    /// Length of the buffer one converted block of `A` needs (see [`convert_block`]).
    const PAIRS_BLOCK: usize = KC / 2 * 16;

    /// See `run_level`: the product of `A` rounded to bfloat16 with bfloat16 panels.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, BW and BF16; `out` must cover the product's rows and
    /// columns.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
    pub unsafe fn run_bf16(
        a: Mat,
        b: &PackedMatrix,
        out: Out,
        beta: f32,
        rows: (usize, usize),
        panels: (usize, usize),
    ) {
        debug_assert_eq!(b.nr, NR);
        let tile = |t: TileAt, a_block: (*const u32, usize, usize)| {
            let bp = b.panel_pairs(t.k0, t.panel).as_ptr();
            let (kc2, c, ldc, nc, beta) = (t.kc.div_ceil(2), t.c, out.ld, t.nc, t.beta);
            by_rows!(t.mr, tile_bf16(kc2, a_block, bp, c, ldc, nc, beta));
        };
        if !a.transposed {
            let mut buf = [0u32; PAIRS_BLOCK];
            let block_of_a = |k0, kc, r0, mr| convert_block(a, r0, mr, k0, kc, &mut buf);
            return for_each_tile(b, out, beta, rows, panels, block_of_a, tile);
        }
        let convert =
            |group, k0, kc, pairs: &mut Vec<u32>| convert_columns(a, group, k0, kc, pairs);
        for_each_tile_copied(&PAIRS, b, out, beta, rows, panels, convert, tile);
    }

    /// [`copy_columns`] for bfloat16 products: logical rows `rows`, columns `k0 .. k0 +
    /// kc` of a transposed `A` rounded to pairs, the tile of `mr` rows starting at row `r0`
    /// at `(r0 - rows.0) * kc.div_ceil(2)`, `mr` pairs per pair of columns (an odd last
    /// column paired with zero). Returns `kc.div_ceil(2)`, the pairs per row.
    #[inline(always)]
    unsafe fn convert_columns(
        a: Mat,
        rows: (usize, usize),
        k0: usize,
        kc: usize,
        pairs: &mut Vec<u32>,
    ) -> usize {
        debug_assert!(a.transposed);
        let (m, kc2) = (rows.1 - rows.0, kc.div_ceil(2));
        if pairs.len() < m * kc2 {
            pairs.resize(m * kc2, 0);
        }
        let interleave = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        let dst = pairs.as_mut_ptr();
        for q in 0..kc2 {
            let k = k0 + 2 * q;
            let lo_row = a.data.as_ptr().add(k * a.ld + rows.0);
            let hi_row = (2 * q + 1 < kc).then(|| a.data.as_ptr().add((k + 1) * a.ld + rows.0));
            let mut r = 0;
            while r < m {
                let mr = tile_rows(m - r);
                let values: __mmask16 = ((1u32 << mr) - 1) as u16;
                let lo = _mm512_maskz_loadu_ps(values, lo_row.add(r));
                let hi = match hi_row {
                    Some(row) => _mm512_maskz_loadu_ps(values, row.add(r)),
                    None => _mm512_setzero_ps(),
                };
                let halves: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                let two = _mm512_permutexvar_epi16(interleave, halves);
                _mm512_mask_storeu_epi32(dst.add(r * kc2 + q * mr) as *mut _, values, two);
                r += mr;
            }
        }
        kc2
    }

    /// Rounds rows `r0 .. r0 + mr` (at most 16), columns `k0 .. k0 + kc` of a plain (not
    /// transposed) `A` to bfloat16 pairs in `buf` (an odd last column is paired with zero) and returns where pair
    /// `(r, q)` is, as `(start, row step, pair step)`.
    #[inline(always)]
    unsafe fn convert_block(
        a: Mat,
        r0: usize,
        mr: usize,
        k0: usize,
        kc: usize,
        buf: &mut [u32; PAIRS_BLOCK],
    ) -> (*const u32, usize, usize) {
        let kc2 = kc.div_ceil(2);
        let out = buf.as_mut_ptr();
        debug_assert!(!a.transposed, "a transposed A goes through convert_columns");
        // Rows are contiguous: 32 columns (16 pairs) per conversion, row-major.
        for r in 0..mr {
            let src = a.data.as_ptr().add((r0 + r) * a.ld + k0);
            for k in (0..kc).step_by(32) {
                let left = kc - k;
                let mask = |from: usize| -> __mmask16 {
                    match left.saturating_sub(from) {
                        16.. => 0xFFFF,
                        n => ((1u32 << n) - 1) as u16,
                    }
                };
                let lo = _mm512_maskz_loadu_ps(mask(0), src.add(k));
                let hi = _mm512_maskz_loadu_ps(mask(16), src.add(k + 16));
                let pairs: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                let n_pairs = (kc2 - k / 2).min(16);
                let store: __mmask16 = ((1u32 << n_pairs) - 1) as u16;
                _mm512_mask_storeu_epi32(out.add(r * KC / 2 + k / 2) as *mut _, store, pairs);
            }
        }
        (out, KC / 2, 1)
    }

    /// [`tile_f32`] on bfloat16 pairs: `kc2` pair steps of `A` and of the panel.
    #[inline(always)]
    unsafe fn tile_bf16<const R: usize, const U: usize>(
        kc2: usize,
        a: (*const u32, usize, usize),
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        nc: usize,
        beta: f32,
    ) {
        tile::<R, U>(kc2, &Bf16Step { a, b }, c, ldc, nc, beta);
    }

    /// Runs `steps` steps of `step` on `R` rows of two 16-wide accumulators, then stores
    /// `C[R x nc] = beta * C + acc`.
    ///
    /// Steps are dealt round-robin to `U` sets of accumulators, summed at the end, so that
    /// short tiles (one or two rows: batch-1 inference) still have eight independent
    /// chains of multiply-adds instead of waiting on each one's latency.
    #[inline(always)]
    unsafe fn tile<const R: usize, const U: usize>(
        steps: usize,
        step: &impl Step<R>,
        c: *mut f32,
        ldc: usize,
        nc: usize,
        beta: f32,
    ) {
        let mut acc0 = [[_mm512_setzero_ps(); R]; U];
        let mut acc1 = [[_mm512_setzero_ps(); R]; U];
        let unrolled = steps / U * U;
        for k0 in (0..unrolled).step_by(U) {
            for u in 0..U {
                step.step(k0 + u, &mut acc0[u], &mut acc1[u]);
            }
        }
        for kk in unrolled..steps {
            step.step(kk, &mut acc0[0], &mut acc1[0]);
        }
        let (mut sum0, mut sum1) = (acc0[0], acc1[0]);
        for u in 1..U {
            for r in 0..R {
                sum0[r] = _mm512_add_ps(sum0[r], acc0[u][r]);
                sum1[r] = _mm512_add_ps(sum1[r], acc1[u][r]);
            }
        }
        let m0: __mmask16 = if nc >= 16 {
            0xFFFF
        } else {
            ((1u32 << nc) - 1) as u16
        };
        let m1: __mmask16 = if nc >= 32 {
            0xFFFF
        } else if nc > 16 {
            ((1u32 << (nc - 16)) - 1) as u16
        } else {
            0
        };
        let vb = _mm512_set1_ps(beta);
        for r in 0..R {
            let row = c.add(r * ldc);
            let (mut v0, mut v1) = (sum0[r], sum1[r]);
            if beta != 0.0 {
                v0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, row), vb, v0);
                v1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, row.add(16)), vb, v1);
            }
            _mm512_mask_storeu_ps(row, m0, v0);
            _mm512_mask_storeu_ps(row.add(16), m1, v1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::with_level;
    use rand::{Rng, SeedableRng};

    fn naive(m: usize, n: usize, k: usize, a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| a.at(i, p) as f64 * b.at(p, j) as f64).sum();
                c[i * n + j] = if beta == 0.0 {
                    s as f32
                } else {
                    c[i * n + j] * beta + s as f32
                };
            }
        }
    }

    /// Rounding to bfloat16: to nearest, ties to even, NaN kept.
    #[test]
    fn bf16_rounding_is_nearest_even() {
        let half_ulp = 2f32.powi(-8);
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(to_bf16(-2.0), 0xc000);
        assert_eq!(to_bf16(1.0 + half_ulp), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 * half_ulp), 0x3f82);
        assert_eq!(to_bf16(1.0 + half_ulp + 2f32.powi(-20)), 0x3f81);
        assert!(f32::from_bits((to_bf16(f32::NAN) as u32) << 16).is_nan());
    }

    /// Awkward sizes `(m, k, n)`: row and panel tails, K = 1, odd K, K beyond one block,
    /// a transposed `A` copied in several groups of rows (see `column_block_bytes`: at
    /// most 1 MiB, 682 rows of one block), a `B` packed by several threads.
    const SHAPES: [(usize, usize, usize); 11] = [
        (1, 1, 1),
        (1, 7, 33),
        (3, 9, 64),
        (5, 70, 64),
        (13, 3, 100),
        (64, 20, 130),
        (25, 385, 40),
        (30, 800, 40),
        (200, 64, 70),
        (701, 390, 33),
        (14, 600, 450),
    ];

    /// Runs `product(m, n, k, a, b, beta, c)` on random operands of every shape in
    /// [`SHAPES`], both layouts of each operand, beta 0 and 1, against a naive f64 product.
    /// `product` returns whether it rounded its operands to bfloat16; the naive product
    /// then takes the rounded operands (their products are exact in f32, so either way only
    /// the f32 sums differ). Tolerance: f32 accumulation of up to 800 products of magnitude
    /// below 1.
    fn check_against_naive(
        what: &str,
        product: impl Fn(usize, usize, usize, Mat, Mat, f32, MatMut) -> bool,
    ) {
        fn mat(d: &[f32], rows: usize, cols: usize, transposed: bool) -> Mat<'_> {
            if transposed {
                Mat::t(d, rows)
            } else {
                Mat::new(d, cols)
            }
        }
        let round = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .map(|&x| f32::from_bits((to_bf16(x) as u32) << 16))
                .collect()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for &(m, k, n) in &SHAPES {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let ad: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let bd: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let c0: Vec<f32> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                for beta in [0.0, 1.0] {
                    let mut got = c0.clone();
                    let (a, b) = (mat(&ad, m, k, ta), mat(&bd, k, n, tb));
                    let rounded = product(m, n, k, a, b, beta, MatMut::new(&mut got, n));
                    let (ar, br) = if rounded {
                        (round(&ad), round(&bd))
                    } else {
                        (ad.clone(), bd.clone())
                    };
                    let mut want = c0.clone();
                    let (a, b) = (mat(&ar, m, k, ta), mat(&br, k, n, tb));
                    naive(m, n, k, a, b, beta, &mut want);
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() < 1e-4,
                            "{what} {m}x{k}x{n} ta={ta} tb={tb} beta={beta}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    /// bfloat16 products against the rounded operands' product. Without AVX-512 BF16 the
    /// matrix is packed for `f32` and must match the unrounded product.
    #[test]
    fn bf16_products_match_rounded_operands() {
        check_against_naive("bf16", |m, n, k, a, b, beta, c| {
            let packed = PackedMatrix::pack_in(Precision::Bf16, b, k, n);
            matmul_packed(m, a, &packed, beta, c);
            packed.is_bf16()
        });
    }

    /// Subnormal operands count as zero and subnormal results become zero inside the
    /// kernels ([`super::super::cpu::FlushDenormals`]); the caller's mode is left as it was.
    #[test]
    fn products_flush_subnormals() {
        let tiny = f32::MIN_POSITIVE / 4.0;
        for lvl in [Level::Portable, Level::Avx2, Level::Avx512] {
            with_level(lvl, || {
                let (a, b) = ([tiny, 1e-20, 1.0], [1.0, 1e-20, 2.0]);
                let mut c = [0.0f32; 3];
                // (tiny * 1: operand flushed), (1e-40: result flushed), 2.
                for (i, want) in [0.0, 0.0, 2.0].into_iter().enumerate() {
                    let (a, b) = (&a[i..i + 1], &b[i..i + 1]);
                    gemm(
                        1,
                        1,
                        1,
                        Mat::new(a, 1),
                        Mat::new(b, 1),
                        0.0,
                        MatMut::new(&mut c[i..], 1),
                    );
                    assert_eq!(c[i], want, "{lvl:?} element {i}");
                }
            });
        }
        assert!(
            std::hint::black_box(tiny) * 1.0 > 0.0,
            "the caller still keeps subnormals"
        );
    }

    /// Every kernel level against the naive product.
    #[test]
    fn all_levels_match_naive_product() {
        for lvl in [Level::Portable, Level::Avx2, Level::Avx512] {
            with_level(lvl, || {
                check_against_naive(&format!("{lvl:?}"), |m, n, k, a, b, beta, c| {
                    gemm(m, n, k, a, b, beta, c);
                    false
                })
            });
        }
    }
}
