//! The AVX-512 kernel: explicit 512-bit intrinsics, tiles of 12, 8, 4, 2 or 1 rows by
//! 32 columns, `A` read in place (a transposed `A` copied, and for bfloat16 products
//! converted, block by block).

use super::blocked::{
    for_each_f32_tile, for_each_tile, for_each_tile_copied, Copied, TileAt, Tiles,
};
use super::{Mat, Out, PackedMatrix, KC};
use std::arch::x86_64::*;

const NR: usize = 32;

/// The AVX-512 tile geometry.
struct Avx512;

impl Tiles for Avx512 {
    const NR: usize = NR;
    const GROUP_ROWS: usize = 12;

    fn tile_rows(left: usize) -> usize {
        match left {
            12.. => 12,
            8..=11 => 8,
            4..=7 => 4,
            2..=3 => 2,
            _ => 1,
        }
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
    let copy = |group, k0, kc, columns: &mut Vec<f32>| copy_columns(a, group, k0, kc, columns);
    for_each_f32_tile::<Avx512>(a, b, out, beta, rows, panels, copy, tile);
}

thread_local! {
    /// The thread's copy of a transposed `A` for bfloat16 products ([`convert_columns`]),
    /// kept for the next product.
    static PAIRS: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Copies logical rows `rows`, columns `k0 .. k0 + kc` of a transposed `A` into
/// `columns`, tile by tile as [`for_each_tile`] takes them: the tile of `mr` rows
/// starting at row `r0` at `(r0 - rows.0) * kc`, `mr` values per column
/// ([`Copied::Tiles`], `kc` values per row).
#[inline(always)]
unsafe fn copy_columns(
    a: Mat,
    rows: (usize, usize),
    k0: usize,
    kc: usize,
    columns: &mut Vec<f32>,
) -> Copied {
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
            let mr = Avx512::tile_rows(m - r);
            let values: __mmask16 = ((1u32 << mr) - 1) as u16;
            let column = _mm512_maskz_loadu_ps(values, src.add(r));
            _mm512_mask_storeu_ps(dst.add(r * kc + kk * mr), values, column);
            r += mr;
        }
    }
    Copied::Tiles { per_row: kc }
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
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR + 16) as *const _));
        let aq = a.add(q * k_step);
        for r in 0..R {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*aq.add(r * row_step) as i32));
            acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
            acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
        }
    }
}

/// Length of the buffer one converted block of `A` (at most 12 rows) needs (see
/// [`convert_block`]).
const PAIRS_BLOCK: usize = KC / 2 * 12;

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
        return for_each_tile::<Avx512, _>(b, out, beta, rows, panels, block_of_a, tile);
    }
    let convert = |group, k0, kc, pairs: &mut Vec<u32>| convert_columns(a, group, k0, kc, pairs);
    for_each_tile_copied::<Avx512, _>(&PAIRS, b, out, beta, rows, panels, convert, tile);
}

/// [`copy_columns`] for bfloat16 products: logical rows `rows`, columns `k0 .. k0 +
/// kc` of a transposed `A` rounded to pairs, the tile of `mr` rows starting at row `r0`
/// at `(r0 - rows.0) * kc.div_ceil(2)`, `mr` pairs per pair of columns (an odd last
/// column paired with zero; [`Copied::Tiles`], `kc.div_ceil(2)` pairs per row).
#[inline(always)]
unsafe fn convert_columns(
    a: Mat,
    rows: (usize, usize),
    k0: usize,
    kc: usize,
    pairs: &mut Vec<u32>,
) -> Copied {
    debug_assert!(a.transposed);
    let (m, kc2) = (rows.1 - rows.0, kc.div_ceil(2));
    if pairs.len() < m * kc2 {
        pairs.resize(m * kc2, 0);
    }
    let interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    let dst = pairs.as_mut_ptr();
    for q in 0..kc2 {
        let k = k0 + 2 * q;
        let lo_row = a.data.as_ptr().add(k * a.ld + rows.0);
        let hi_row = (2 * q + 1 < kc).then(|| a.data.as_ptr().add((k + 1) * a.ld + rows.0));
        let mut r = 0;
        while r < m {
            let mr = Avx512::tile_rows(m - r);
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
    Copied::Tiles { per_row: kc2 }
}

/// Rounds rows `r0 .. r0 + mr`, columns `k0 .. k0 + kc` of a plain (not transposed) `A`
/// to bfloat16 pairs in `buf`, `KC / 2` pairs a row (an odd last column is paired with
/// zero, and the pairs after the last up to a multiple of 16 are zero), and returns where
/// pair `(r, q)` is, as `(start, row step, pair step)`. `buf` must hold `mr` rows.
#[inline(always)]
pub(super) unsafe fn convert_block(
    a: Mat,
    r0: usize,
    mr: usize,
    k0: usize,
    kc: usize,
    buf: &mut [u32],
) -> (*const u32, usize, usize) {
    debug_assert!(!a.transposed, "a transposed A goes through convert_columns");
    assert!(buf.len() >= mr * KC / 2);
    let out = buf.as_mut_ptr();
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
            _mm512_storeu_si512(out.add(r * KC / 2 + k / 2) as *mut _, pairs);
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
