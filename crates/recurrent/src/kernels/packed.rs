//! Matrix product with the right-hand matrix packed once and reused for many products:
//! the recurrent weights, multiplied at every time step by a small `(batch, K)` matrix.
//!
//! The packed matrix is stored in panels of [`NR`] columns, `K` rows each, contiguous, so
//! the micro-kernel streams one panel while keeping an `MR x NR` block of the result in
//! registers. Large products are split across threads by panels (column ranges).

use super::cpu::multiversion;
use super::Mat;
use rayon::prelude::*;

/// Columns per panel.
pub const NR: usize = 32;
/// Rows of the result computed together.
const MR: usize = 4;
/// Multiply-adds below which a product runs on one thread.
const PARALLEL_MIN_WORK: usize = 1 << 16;

/// A `K x N` matrix packed into column panels.
#[derive(Debug, Clone, Default)]
pub struct PackedMatrix {
    k: usize,
    n: usize,
    panels: Vec<f32>,
}

impl PackedMatrix {
    /// Packs the logical `k x n` matrix `b`.
    pub fn pack(b: Mat, k: usize, n: usize) -> Self {
        let n_panels = n.div_ceil(NR);
        let mut panels = vec![0.0; n_panels * k * NR];
        let at = |i: usize, j: usize| {
            if b.transposed {
                b.data[j * b.ld + i]
            } else {
                b.data[i * b.ld + j]
            }
        };
        for p in 0..n_panels {
            let panel = &mut panels[p * k * NR..(p + 1) * k * NR];
            for kk in 0..k {
                for j in 0..NR.min(n - p * NR) {
                    panel[kk * NR + j] = at(kk, p * NR + j);
                }
            }
        }
        PackedMatrix { k, n, panels }
    }

    /// `K`.
    pub fn rows(&self) -> usize {
        self.k
    }

    /// `N`.
    pub fn cols(&self) -> usize {
        self.n
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.panels[p * self.k * NR..(p + 1) * self.k * NR]
    }
}

/// Raw output pointer shared by the threads of one product; each writes its own columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: threads write disjoint column ranges of the output (see `matmul_packed`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `C[m x N] = beta * C + A[m x K] * B`, with `A` row-major (leading dimension `lda`),
/// `B` packed, `C` row-major (leading dimension `ldc`). `beta` is 0 or 1.
pub fn matmul_packed(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedMatrix,
    c: &mut [f32],
    ldc: usize,
    beta: f32,
) {
    let n_panels = b.n.div_ceil(NR);
    if m == 0 || n_panels == 0 {
        return;
    }
    assert!(
        b.k == 0 || (m - 1) * lda + b.k <= a.len(),
        "matmul_packed: A too small"
    );
    assert!((m - 1) * ldc + b.n <= c.len(), "matmul_packed: C too small");
    let out = OutPtr(c.as_mut_ptr());
    let threads = rayon::current_num_threads();
    if threads > 1 && n_panels > 1 && m * b.n * b.k >= PARALLEL_MIN_WORK {
        let per = n_panels.div_ceil(threads);
        (0..n_panels.div_ceil(per))
            .into_par_iter()
            .for_each(|chunk| {
                let range = (chunk * per, ((chunk + 1) * per).min(n_panels));
                // Bounds asserted above; chunks cover disjoint panel (column) ranges.
                panels_kernel(m, a, lda, b, out, ldc, beta, range);
            });
    } else {
        // Bounds asserted above; a single writer.
        panels_kernel(m, a, lda, b, out, ldc, beta, (0, n_panels));
    }
}

multiversion!(
    /// Computes panels `range` of the product into `out`. Callers guarantee that `out`
    /// covers the result and that no other thread writes these columns.
    #[allow(clippy::too_many_arguments)]
    fn panels_kernel(m: usize, a: &[f32], lda: usize, b: &PackedMatrix, out: OutPtr, ldc: usize, beta: f32, range: (usize, usize)) => panels_generic
);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn panels_generic(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedMatrix,
    out: OutPtr,
    ldc: usize,
    beta: f32,
    range: (usize, usize),
) {
    for p in range.0..range.1 {
        let panel = b.panel(p);
        let col0 = p * NR;
        let width = NR.min(b.n - col0);
        let mut r0 = 0;
        while r0 < m {
            let rows = MR.min(m - r0);
            let acc = match rows {
                4 => block::<4>(a, lda, r0, panel, b.k),
                3 => block::<3>(a, lda, r0, panel, b.k),
                2 => block::<2>(a, lda, r0, panel, b.k),
                _ => block::<1>(a, lda, r0, panel, b.k),
            };
            for (r, acc_row) in acc.iter().enumerate().take(rows) {
                // SAFETY: the caller guarantees `out` covers row `r0 + r`, columns
                // `col0 .. col0 + width`, and that only this call writes them.
                unsafe {
                    let dst = out.0.add((r0 + r) * ldc + col0);
                    for (j, &v) in acc_row.iter().enumerate().take(width) {
                        let d = dst.add(j);
                        *d = if beta == 0.0 { v } else { *d + v };
                    }
                }
            }
            r0 += rows;
        }
    }
}

/// `R x NR` block of `A[r0..r0+R, :] * panel`, accumulated in registers.
#[inline(always)]
fn block<const R: usize>(
    a: &[f32],
    lda: usize,
    r0: usize,
    panel: &[f32],
    k: usize,
) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    for kk in 0..k {
        let w: &[f32; NR] = panel[kk * NR..(kk + 1) * NR].try_into().expect("panel row");
        for (r, acc_row) in acc.iter_mut().enumerate().take(R) {
            let av = a[(r0 + r) * lda + kk];
            for j in 0..NR {
                acc_row[j] += av * w[j];
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::{force_level, Level};
    use crate::kernels::{gemm, MatMut};
    use rand::{Rng, SeedableRng};

    /// Packed products equal the reference product for every kernel level and awkward
    /// sizes (tails of rows and panels, K = 1). Tolerance: f32 sums of at most 70 terms of
    /// magnitude below 1, in a different order (FMA or not).
    #[test]
    fn packed_matches_gemm_on_all_levels() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for level in [Level::Portable, Level::Avx2, Level::Avx512] {
            force_level(Some(level));
            for &(m, k, n) in &[
                (1, 1, 1),
                (1, 7, 33),
                (5, 70, 64),
                (9, 3, 100),
                (4, 32, 32),
                (64, 20, 130),
            ] {
                for transposed in [false, true] {
                    let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    let bdata: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    let bm = if transposed {
                        Mat::t(&bdata, k)
                    } else {
                        Mat::new(&bdata, n)
                    };
                    let packed = PackedMatrix::pack(bm, k, n);
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    for beta in [0.0, 1.0] {
                        let mut want = c0.clone();
                        gemm(
                            m,
                            n,
                            k,
                            Mat::new(&a, k),
                            bm,
                            beta,
                            MatMut::new(&mut want, n),
                        );
                        let mut got = c0.clone();
                        matmul_packed(m, &a, k, &packed, &mut got, n, beta);
                        for (g, w) in got.iter().zip(&want) {
                            assert!(
                                (g - w).abs() < 1e-5,
                                "{level:?} {m}x{k}x{n} t={transposed} beta={beta}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
        force_level(None);
    }
}
