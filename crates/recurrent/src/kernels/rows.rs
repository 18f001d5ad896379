//! Row-wise helpers of `(N, W)` row-major matrices: adding a bias to every row, summing
//! the rows (a bias gradient), and the dot products and scaled additions of single rows.

/// Adds `bias` to every `bias.len()`-wide row of `rows`.
pub(crate) fn add_bias_rows(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(r, b)| *r += b);
    }
}

/// `acc += add`, element by element.
#[inline(always)]
pub(crate) fn add_into(acc: &mut [f32], add: &[f32]) {
    acc.iter_mut().zip(add).for_each(|(a, v)| *a += v);
}

/// Adds every `sums.len()`-wide row of `rows` to `sums` (column sums, in row order).
pub(crate) fn add_row_sums(sums: &mut [f32], rows: &[f32]) {
    for row in rows.chunks_exact(sums.len()) {
        add_into(sums, row);
    }
}

/// `sum(a[i] * b[i])` over the shorter of the two, in 16 partial sums so that it
/// vectorises (the summation order differs from a plain loop by rounding only).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 16];
    for (x, y) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail = n / 16 * 16;
    let rest: f32 = a[tail..].iter().zip(&b[tail..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + rest
}

/// `y += alpha * x`, element by element.
#[inline(always)]
pub(crate) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}
