//! The AVX2 kernel: explicit 256-bit FMA intrinsics, tiles of 6, 4, 2 or 1 rows by 16
//! columns (twelve accumulators, two panel vectors and one broadcast fill the sixteen
//! registers), with the blocked loops and the copied transposed `A` of the AVX-512 kernel.

use super::blocked::{for_each_f32_tile, Copied, TileAt, Tiles};
use super::{Mat, Out, PackedMatrix};
use std::arch::x86_64::*;

const NR: usize = 16;

/// The AVX2 tile geometry.
struct Avx2;

impl Tiles for Avx2 {
    const NR: usize = NR;
    const GROUP_ROWS: usize = 12;

    fn tile_rows(left: usize) -> usize {
        match left {
            6.. => 6,
            4..=5 => 4,
            2..=3 => 2,
            _ => 1,
        }
    }
}

/// See `run_level`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `out` must cover the product's rows and columns.
#[target_feature(enable = "avx2,fma")]
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
        let (kc, c, ldc, nc, beta) = (t.kc, t.c, out.ld, t.nc, t.beta);
        // Fewer rows get more accumulator sets: eight chains of multiply-adds at least.
        match t.mr {
            6 => tile::<6, 1>(kc, a_block, bp, c, ldc, nc, beta),
            4 => tile::<4, 1>(kc, a_block, bp, c, ldc, nc, beta),
            2 => tile::<2, 2>(kc, a_block, bp, c, ldc, nc, beta),
            _ => tile::<1, 4>(kc, a_block, bp, c, ldc, nc, beta),
        }
    };
    let copy = |group, k0, kc, columns: &mut Vec<f32>| copy_columns(a, group, k0, kc, columns);
    for_each_f32_tile::<Avx2>(a, b, out, beta, rows, panels, copy, tile);
}

/// Copies logical rows `rows`, columns `k0 .. k0 + kc` of a transposed `A` into
/// `columns`, tile by tile as the blocked loops take them: the tile of `mr` rows starting
/// at row `r0` at `(r0 - rows.0) * kc`, `mr` values per column
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
            let mr = Avx2::tile_rows(m - r);
            let to = dst.add(r * kc + kk * mr);
            for i in 0..mr {
                *to.add(i) = *src.add(r + i);
            }
            r += mr;
        }
    }
    Copied::Tiles { per_row: kc }
}

/// Lane mask of the first `n` (at most 8) lanes of a 256-bit vector.
#[inline(always)]
unsafe fn first_lanes(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// `C[R x nc] = beta * C + A[R x kc] * B_panel[kc x 16]`, where element `(r, kk)` of `A`
/// is at `a.0 + r * a.1 + kk * a.2`.
///
/// Steps are dealt round-robin to `U` sets of accumulators, summed at the end, so that
/// short tiles (one or two rows: batch-1 inference) still have eight independent chains
/// of multiply-adds instead of waiting on each one's latency.
#[inline(always)]
unsafe fn tile<const R: usize, const U: usize>(
    kc: usize,
    a: (*const f32, usize, usize),
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    beta: f32,
) {
    let mut acc0 = [[_mm256_setzero_ps(); R]; U];
    let mut acc1 = [[_mm256_setzero_ps(); R]; U];
    // A function rather than a closure: a closure is not compiled with the kernel's
    // target features when the compiler declines to inline it.
    #[inline(always)]
    unsafe fn step<const R: usize>(
        (a, row_step, k_step): (*const f32, usize, usize),
        b: *const f32,
        kk: usize,
        acc0: &mut [__m256; R],
        acc1: &mut [__m256; R],
    ) {
        let b0 = _mm256_loadu_ps(b.add(kk * NR));
        let b1 = _mm256_loadu_ps(b.add(kk * NR + 8));
        let ak = a.add(kk * k_step);
        for r in 0..R {
            let av = _mm256_broadcast_ss(&*ak.add(r * row_step));
            acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
        }
    }
    let unrolled = kc / U * U;
    for k0 in (0..unrolled).step_by(U) {
        for u in 0..U {
            step(a, b, k0 + u, &mut acc0[u], &mut acc1[u]);
        }
    }
    for kk in unrolled..kc {
        step(a, b, kk, &mut acc0[0], &mut acc1[0]);
    }
    let (mut sum0, mut sum1) = (acc0[0], acc1[0]);
    for u in 1..U {
        for r in 0..R {
            sum0[r] = _mm256_add_ps(sum0[r], acc0[u][r]);
            sum1[r] = _mm256_add_ps(sum1[r], acc1[u][r]);
        }
    }
    let vb = _mm256_set1_ps(beta);
    if nc == NR {
        for r in 0..R {
            let row = c.add(r * ldc);
            let (mut v0, mut v1) = (sum0[r], sum1[r]);
            if beta != 0.0 {
                v0 = _mm256_fmadd_ps(_mm256_loadu_ps(row), vb, v0);
                v1 = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8)), vb, v1);
            }
            _mm256_storeu_ps(row, v0);
            _mm256_storeu_ps(row.add(8), v1);
        }
        return;
    }
    let (m0, m1) = (first_lanes(nc.min(8)), first_lanes(nc.saturating_sub(8)));
    for r in 0..R {
        let row = c.add(r * ldc);
        // Masked-off lanes are never touched: the second half may lie past the row's end.
        let second = row.wrapping_add(8);
        let (mut v0, mut v1) = (sum0[r], sum1[r]);
        if beta != 0.0 {
            v0 = _mm256_fmadd_ps(_mm256_maskload_ps(row, m0), vb, v0);
            v1 = _mm256_fmadd_ps(_mm256_maskload_ps(second, m1), vb, v1);
        }
        _mm256_maskstore_ps(row, m0, v0);
        _mm256_maskstore_ps(second, m1, v1);
    }
}
