//! Shared test helpers: tolerances, comparisons, fixture paths, layout conversions.

#![allow(dead_code)]

pub mod reference;

use std::path::PathBuf;

/// Tolerance against PyTorch's own f32 numbers (the project's acceptance tolerance):
/// both sides round in f32 but sum in different orders, so errors grow with the
/// number of accumulated terms; 2e-5 absolute + 2e-4 relative covers the fixtures' sizes.
pub const TORCH_ATOL: f32 = 2e-5;
/// See [`TORCH_ATOL`].
pub const TORCH_RTOL: f32 = 2e-4;

/// Fast f32 forward vs the f64 reference: f32 rounding (2^-24 relative) accumulated
/// over at most a few hundred operations per output, through several layers.
pub const REF_ATOL: f32 = 2e-5;
/// See [`REF_ATOL`].
pub const REF_RTOL: f32 = 1e-4;

/// Fast f32 gradients vs central finite differences of the f64 reference (step 1e-6,
/// truncation error ~1e-12): dominated by f32 rounding in the backward pass, which sums
/// over every step, row and gate, so it is looser than the forward tolerance.
pub const GRAD_ATOL: f32 = 2e-4;
/// See [`GRAD_ATOL`].
pub const GRAD_RTOL: f32 = 2e-3;

/// The repository's `fixtures/` folder.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The `.safetensors` files of fixture group `group`, sorted (at least one).
pub fn fixture_files(group: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures_dir().join(group))
        .unwrap_or_else(|e| panic!("fixtures/{group}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {group}");
    files
}

/// Asserts `|a - e| <= atol + rtol * |e|` element-wise, naming the tensor and index.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: length {} != expected {}",
        actual.len(),
        expected.len()
    );
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let ok = (a - e).abs() <= atol + rtol * e.abs();
        assert!(
            ok,
            "{what}[{i}]: got {a}, expected {e} (atol {atol}, rtol {rtol})"
        );
    }
}

/// Asserts `|a - e| <= atol + rtol * max|e|`: the relative part measured against the
/// tensor's largest magnitude rather than each element's.
pub fn assert_close_scaled(what: &str, actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    let scale = expected.iter().fold(0.0f32, |m, e| m.max(e.abs()));
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= atol + rtol * scale,
            "{what}[{i}]: got {a}, expected {e} (atol {atol}, rtol {rtol} of max {scale})"
        );
    }
}

/// `(T, B, F)` time-major to `(B, T, F)`.
pub fn time_to_batch_major(x: &[f32], t: usize, b: usize, f: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for ti in 0..t {
        for bi in 0..b {
            out[(bi * t + ti) * f..(bi * t + ti + 1) * f]
                .copy_from_slice(&x[(ti * b + bi) * f..(ti * b + bi + 1) * f]);
        }
    }
    out
}

/// `(B, T, F)` to `(T, B, F)`.
pub fn batch_to_time_major(x: &[f32], t: usize, b: usize, f: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for ti in 0..t {
        for bi in 0..b {
            out[(ti * b + bi) * f..(ti * b + bi + 1) * f]
                .copy_from_slice(&x[(bi * t + ti) * f..(bi * t + ti + 1) * f]);
        }
    }
    out
}

/// Flattens an array in standard (row-major) order.
pub fn flat(a: &ndarray::ArrayD<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

/// f32 to f64.
pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
