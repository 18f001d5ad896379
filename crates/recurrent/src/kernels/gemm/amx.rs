//! bfloat16 products on the AMX tile unit ([`crate::kernels::amx`]): the packed panels of
//! the AVX-512 bfloat16 kernel, `A` rounded to bfloat16 pairs row by row, and blocks of
//! 32 (or 16) rows by 32 columns multiplied 32 products deep per step.

use super::avx512::convert_block;
use super::blocked::{for_each_tile, for_each_tile_copied, Copied, TileAt, Tiles};
use super::{Mat, Out, PackedMatrix, KC};
use crate::kernels::amx;
use std::arch::x86_64::*;

/// The AMX tile geometry: 32 columns (the AVX-512 panels), up to 32 rows.
struct Amx;

impl Tiles for Amx {
    const NR: usize = 32;
    const GROUP_ROWS: usize = 32;

    fn tile_rows(left: usize) -> usize {
        left.min(32)
    }
}

thread_local! {
    /// A thread's bfloat16 copy of the block of a transposed `A` it multiplies.
    static ROWS_OF_PAIRS: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Pairs per row of a depth block of `kc`: whole tile steps of 16.
fn pairs_per_row(kc: usize) -> usize {
    kc.div_ceil(32) * 16
}

/// See `run_level`: the product of `A` rounded to bfloat16 with bfloat16 panels.
///
/// # Safety
/// The AMX tiles must be usable ([`amx::usable`]); `out` must cover the product's rows and
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
    debug_assert_eq!(b.nr, Amx::NR);
    amx::configure();
    let ldc = out.ld;
    let tile = |t: TileAt, a_rows: *const u32, lda: usize| {
        let bp = b.panel_pairs(t.k0, t.panel).as_ptr();
        tile(pairs_per_row(t.kc) / 16, a_rows, lda, bp, t, ldc);
    };
    if !a.transposed {
        let mut buf = [0u32; 32 * KC / 2];
        let block_of_a = |k0, kc, r0, mr| convert_block(a, r0, mr, k0, kc, &mut buf).0;
        let plain = |t: TileAt, a_rows: *const u32| tile(t, a_rows, KC / 2);
        for_each_tile::<Amx, _>(b, out, beta, rows, panels, block_of_a, plain);
    } else {
        let convert =
            |group, k0, kc, pairs: &mut Vec<u32>| convert_columns(a, group, k0, kc, pairs);
        let copied = |t: TileAt, (a_rows, _, _): (*const u32, usize, usize)| {
            tile(t, a_rows, pairs_per_row(t.kc))
        };
        for_each_tile_copied::<Amx, _>(&ROWS_OF_PAIRS, b, out, beta, rows, panels, convert, copied);
    }
    amx::release();
}

/// Logical rows `rows`, columns `k0 .. k0 + kc` of a transposed `A` rounded to bfloat16
/// pairs, row-major with [`pairs_per_row`] pairs a row (zero past the last pair), the rows
/// rounded up to a multiple of 32 (those past the last are never stored): [`Copied::Rows`],
/// [`pairs_per_row`] apart.
///
/// `A`'s stored rows are read along their length: 16 pairs of 16 logical rows at a time
/// are converted as for the AVX-512 kernel (one vector per pair of stored rows), then
/// transposed through a small buffer.
#[inline(always)]
unsafe fn convert_columns(
    a: Mat,
    rows: (usize, usize),
    k0: usize,
    kc: usize,
    pairs: &mut Vec<u32>,
) -> Copied {
    debug_assert!(a.transposed);
    let (m, kc2, per_row) = (rows.1 - rows.0, kc.div_ceil(2), pairs_per_row(kc));
    let len = m.div_ceil(32) * 32 * per_row;
    if pairs.len() < len {
        pairs.resize(len, 0);
    }
    let interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    // Lane j of a gather: pair j of a row in the buffer below.
    let down = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(16),
    );
    let dst = pairs.as_mut_ptr();
    // Row q - q0 holds pair q of 16 logical rows.
    let mut block = [0u32; 256];
    for q0 in (0..per_row).step_by(16) {
        for r in (0..m).step_by(16) {
            let n = (m - r).min(16);
            let values: __mmask16 = ((1u32 << n) - 1) as u16;
            for q in q0..q0 + 16 {
                let two = if q < kc2 {
                    let k = k0 + 2 * q;
                    let lo =
                        _mm512_maskz_loadu_ps(values, a.data.as_ptr().add(k * a.ld + rows.0 + r));
                    let hi = if 2 * q + 1 < kc {
                        _mm512_maskz_loadu_ps(
                            values,
                            a.data.as_ptr().add((k + 1) * a.ld + rows.0 + r),
                        )
                    } else {
                        _mm512_setzero_ps()
                    };
                    let halves: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                    _mm512_permutexvar_epi16(interleave, halves)
                } else {
                    _mm512_setzero_si512()
                };
                _mm512_storeu_si512(block.as_mut_ptr().add((q - q0) * 16) as *mut _, two);
            }
            for i in 0..n {
                let row = _mm512_i32gather_epi32::<4>(down, block.as_ptr().add(i) as *const _);
                _mm512_storeu_si512(dst.add((r + i) * per_row + q0) as *mut _, row);
            }
        }
    }
    Copied::Rows { stride: per_row }
}

/// `steps` tile steps of the block of `A` at `a` (`lda` pairs a row) with the panel at
/// `b`, then `C[t.mr x t.nc] = t.beta * C + the sums`.
#[inline(always)]
unsafe fn tile(steps: usize, a: *const u32, lda: usize, b: *const u32, t: TileAt, ldc: usize) {
    amx::zero_accumulators();
    let lda_bytes = lda * 4;
    if t.mr > 16 {
        for s in 0..steps {
            amx::step_32x32(a.add(16 * s), lda_bytes, b.add(16 * Amx::NR * s));
        }
    } else {
        for s in 0..steps {
            amx::step_16x32(a.add(16 * s), lda_bytes, b.add(16 * Amx::NR * s));
        }
    }
    #[repr(align(64))]
    struct Sums([f32; 4 * 256]);
    let mut sums = Sums([0.0; 4 * 256]);
    amx::store_accumulators(&mut sums.0);
    let mask = |from: usize| -> __mmask16 {
        match t.nc.saturating_sub(from) {
            16.. => 0xFFFF,
            n => ((1u32 << n) - 1) as u16,
        }
    };
    let (m0, m1) = (mask(0), mask(16));
    let vb = _mm512_set1_ps(t.beta);
    for r in 0..t.mr {
        // Rows 16-31 are in the third and fourth blocks.
        let s = sums.0.as_ptr().add((r / 16) * 512 + (r % 16) * 16);
        let (mut v0, mut v1) = (_mm512_loadu_ps(s), _mm512_loadu_ps(s.add(256)));
        let row = t.c.add(r * ldc);
        if t.beta != 0.0 {
            v0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, row), vb, v0);
            v1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, row.add(16)), vb, v1);
        }
        _mm512_mask_storeu_ps(row, m0, v0);
        _mm512_mask_storeu_ps(row.add(16), m1, v1);
    }
}
