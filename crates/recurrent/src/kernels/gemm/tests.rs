//! The products of every kernel level against a naive f64 product.

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
/// most 1 MiB, 682 rows of one block), a `B` packed by several threads, a plain `A`
/// whose rows 1024 floats apart are copied (`rows_collide_in_l1`).
const SHAPES: [(usize, usize, usize); 12] = [
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
    (21, 1024, 40),
];

/// Runs `product(m, n, k, a, b, beta, c)` on random operands of every shape in
/// [`SHAPES`], both layouts of each operand, beta 0 and 1, against a naive f64 product.
/// `product` returns whether it rounded its operands to bfloat16; the naive product
/// then takes the rounded operands (their products are exact in f32, so either way only
/// the f32 sums differ). Tolerance: f32 accumulation of up to 1024 products of magnitude
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

/// bfloat16 products against the rounded operands' product, at every level (the AVX-512
/// BF16 dot products and the AMX tiles where the CPU has them). Without AVX-512 BF16 the
/// matrix is packed for `f32` and must match the unrounded product.
#[test]
fn bf16_products_match_rounded_operands() {
    for lvl in Level::supported() {
        with_level(lvl, || {
            check_against_naive(&format!("bf16 {lvl:?}"), |m, n, k, a, b, beta, c| {
                let packed = PackedMatrix::pack_in(Precision::Bf16, b, k, n);
                matmul_packed(m, a, &packed, beta, c);
                packed.is_bf16()
            })
        });
    }
}

/// Subnormal operands count as zero and subnormal results become zero inside the
/// kernels ([`super::super::cpu::FlushDenormals`]); the caller's mode is left as it was.
#[test]
fn products_flush_subnormals() {
    let tiny = f32::MIN_POSITIVE / 4.0;
    for lvl in Level::supported() {
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
    for lvl in Level::supported() {
        with_level(lvl, || {
            check_against_naive(&format!("{lvl:?}"), |m, n, k, a, b, beta, c| {
                gemm(m, n, k, a, b, beta, c);
                false
            })
        });
    }
}
