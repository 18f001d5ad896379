//! Row-wise helpers of `(N, W)` row-major matrices: adding a bias to every row, and summing
//! the rows (a bias gradient).

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
        sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
}
