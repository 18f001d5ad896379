//! General matrix product `C = beta * C + op(A) * op(B)` on row-major slices.
//!
//! Backed by `matrixmultiply`; large products are split by rows of `C` across the rayon pool.

use rayon::prelude::*;

/// A read-only row-major matrix view: `rows x cols`, element `(i, j)` at `data[i * ld + j]`,
/// or, when `transposed`, the transpose of the stored `cols x rows` matrix.
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
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.ld as isize)
        } else {
            (self.ld as isize, 1)
        }
    }
    /// Offset of logical row `i`.
    fn row_offset(&self, i: usize) -> usize {
        if self.transposed {
            i
        } else {
            i * self.ld
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

/// Work (multiply-adds) below which a product is not split across threads.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// `C[m x n] = beta * C + A[m x k] * B[k x n]`.
///
/// With `beta == 0` the previous content of `C` is ignored (NaN included).
pub fn gemm(m: usize, n: usize, k: usize, a: Mat, b: Mat, beta: f32, c: MatMut) {
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    if threads > 1 && m >= 2 * threads && m * n * k >= PARALLEL_MIN_WORK {
        let rows_per = m.div_ceil(threads);
        let ld = c.ld;
        c.data
            .par_chunks_mut(rows_per * ld)
            .enumerate()
            .for_each(|(chunk, c_rows)| {
                let row0 = chunk * rows_per;
                let rows = rows_per.min(m - row0);
                let a_part = Mat {
                    data: &a.data[a.row_offset(row0)..],
                    ..a
                };
                gemm_serial(rows, n, k, a_part, b, beta, MatMut { data: c_rows, ld });
            });
    } else {
        gemm_serial(m, n, k, a, b, beta, c);
    }
}

fn gemm_serial(m: usize, n: usize, k: usize, a: Mat, b: Mat, beta: f32, c: MatMut) {
    if m == 0 || n == 0 {
        return;
    }
    let (rsa, csa) = a.strides();
    let (rsb, csb) = b.strides();
    // Bounds: the last element touched must lie inside each slice.
    let last = |rows: usize, cols: usize, rs: isize, cs: isize| {
        (rows.saturating_sub(1)) * rs as usize + (cols.saturating_sub(1)) * cs as usize
    };
    assert!(
        k == 0 || last(m, k, rsa, csa) < a.data.len(),
        "gemm: A too small"
    );
    assert!(
        k == 0 || last(k, n, rsb, csb) < b.data.len(),
        "gemm: B too small"
    );
    assert!(
        last(m, n, c.ld as isize, 1) < c.data.len(),
        "gemm: C too small"
    );
    if k == 0 {
        for i in 0..m {
            let row = &mut c.data[i * c.ld..i * c.ld + n];
            if beta == 0.0 {
                row.fill(0.0);
            } else {
                row.iter_mut().for_each(|v| *v *= beta);
            }
        }
        return;
    }
    // SAFETY: the asserts above guarantee every index the product touches is in bounds,
    // and `c` is a unique borrow, so it does not alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            rsa,
            csa,
            b.data.as_ptr(),
            rsb,
            csb,
            beta,
            c.data.as_mut_ptr(),
            c.ld as isize,
            1,
        );
    }
}
