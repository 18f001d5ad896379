//! Activation functions: scalar versions and vectorised slice versions.
//!
//! The slice versions use a branch-free `exp` (range reduction to `[-ln2/2, ln2/2]` and a
//! degree-6 polynomial, relative error below 3e-7 over the clamped range) so the compiler
//! vectorises them; they are dispatched by CPU level (see [`super::cpu`]).

use super::cpu::multiversion;

/// Logistic sigmoid, `1 / (1 + e^-x)`, accurate for large `|x|`.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Hyperbolic tangent.
#[inline]
pub fn tanh(x: f32) -> f32 {
    x.tanh()
}

/// `relu(x) = max(x, 0)`; NaN stays NaN, as in PyTorch.
#[inline]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// Branch-free `e^x` for `x` clamped to `[-87, 88]` (NaN stays NaN: `f32::clamp` keeps it).
///
/// `x = n ln2 + r`: `n` is rounded to nearest by adding `1.5 * 2^23` (the integer then sits
/// in the low mantissa bits, read back with integer operations only, so the loop vectorises),
/// `r` is reduced in two steps (Cody-Waite) and `e^r` is a degree-7 polynomial.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + SHIFT;
    let n = t - SHIFT;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_45
                        + r * (0.008_333_45 + r * (0.001_390_6 + r * 0.000_198_4))))));
    // t's bit pattern is 0x4B40_0000 + n; 2^n has exponent bits n + 127.
    let pow2 = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    p * pow2
}

/// Vectorisable sigmoid.
#[inline(always)]
pub fn fast_sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

/// Vectorisable tanh: `1 - 2 / (1 + e^(2x))` (absolute error below 4e-7).
#[inline(always)]
pub fn fast_tanh(x: f32) -> f32 {
    1.0 - 2.0 / (1.0 + fast_exp(2.0 * x))
}

#[inline(always)]
fn sigmoid_slice_generic(xs: &mut [f32]) {
    for x in xs {
        *x = fast_sigmoid(*x);
    }
}

#[inline(always)]
fn tanh_slice_generic(xs: &mut [f32]) {
    for x in xs {
        *x = fast_tanh(*x);
    }
}

multiversion!(
    /// Sigmoid of every element, in place.
    pub fn sigmoid_slice(xs: &mut [f32]) => sigmoid_slice_generic
);
multiversion!(
    /// Tanh of every element, in place.
    pub fn tanh_slice(xs: &mut [f32]) => tanh_slice_generic
);

/// The same functions on 16 lanes with AVX-512 intrinsics: `2^n` by `vscalefps`, and the
/// reciprocals of sigmoid and tanh by `vrcp14ps` with one Newton step (relative error
/// about 2^-23) instead of a division, which costs several times more. Callers must run
/// on a CPU with AVX-512F.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::fast_exp`] of each lane.
    #[inline(always)]
    pub unsafe fn exp(x: __m512) -> __m512 {
        // `max`/`min` return their second operand when either is NaN: with the bound
        // first, a NaN lane stays NaN (as PyTorch's `exp`), it is not clamped to a bound.
        let x = _mm512_min_ps(
            _mm512_set1_ps(88.0),
            _mm512_max_ps(_mm512_set1_ps(-87.0), x),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(0.000_198_4);
        for c in [
            0.001_390_6,
            0.008_333_45,
            0.041_666_45,
            0.166_666_67,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// `1 / d` from the 14-bit estimate and one Newton step.
    #[inline(always)]
    unsafe fn recip(d: __m512) -> __m512 {
        let r = _mm512_rcp14_ps(d);
        _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0)))
    }

    /// [`super::fast_sigmoid`] of each lane.
    #[inline(always)]
    pub unsafe fn sigmoid(x: __m512) -> __m512 {
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
        recip(_mm512_add_ps(_mm512_set1_ps(1.0), e))
    }

    /// [`super::fast_tanh`] of each lane.
    #[inline(always)]
    pub unsafe fn tanh(x: __m512) -> __m512 {
        let e = exp(_mm512_add_ps(x, x));
        let r = recip(_mm512_add_ps(_mm512_set1_ps(1.0), e));
        _mm512_fnmadd_ps(_mm512_set1_ps(2.0), r, _mm512_set1_ps(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 versions stay as close to the libm functions as the portable ones.
    /// (A CPU without AVX-512 cannot run them, so there the test has nothing to check.)
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_activations_match_libm() {
        use std::arch::x86_64::*;
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn lanes(f: unsafe fn(__m512) -> __m512, x: f32) -> f32 {
            let mut out = [0.0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), f(_mm512_set1_ps(x)));
            out[0]
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn sig(x: __m512) -> __m512 {
            avx512::sigmoid(x)
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn tanh_(x: __m512) -> __m512 {
            avx512::tanh(x)
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn exp_(x: __m512) -> __m512 {
            avx512::exp(x)
        }
        let mut x = -30.0f32;
        while x <= 30.0 {
            // SAFETY: AVX-512F was detected above.
            let (s, t, e) = unsafe { (lanes(sig, x), lanes(tanh_, x), lanes(exp_, x)) };
            assert!((s - sigmoid(x)).abs() < 5e-7, "sigmoid({x}): {s}");
            assert!((t - x.tanh()).abs() < 5e-7, "tanh({x}): {t}");
            assert!((e - x.exp()).abs() / x.exp() < 5e-7, "exp({x}): {e}");
            x += 0.001;
        }
        // SAFETY: as above.
        unsafe {
            assert!(lanes(sig, -200.0) < 1e-30);
            assert_eq!(lanes(sig, 200.0), 1.0);
            assert_eq!(lanes(tanh_, 200.0), 1.0);
            assert_eq!(lanes(tanh_, -200.0), -1.0);
        }
    }

    /// The fast functions stay within 5e-7 absolute of the libm versions (1e-6 for tanh's
    /// derivative-sized values) over the whole useful range, including saturation.
    #[test]
    fn fast_activations_match_libm() {
        let mut x = -30.0f32;
        while x <= 30.0 {
            assert!((fast_sigmoid(x) - sigmoid(x)).abs() < 5e-7, "sigmoid({x})");
            assert!((fast_tanh(x) - x.tanh()).abs() < 5e-7, "tanh({x})");
            let rel = (fast_exp(x) - x.exp()).abs() / x.exp();
            assert!(rel < 5e-7, "exp({x}) rel err {rel}");
            x += 0.001;
        }
        assert!(fast_sigmoid(-200.0) < 1e-30);
        assert_eq!(fast_sigmoid(200.0), 1.0);
        assert_eq!(fast_tanh(200.0), 1.0);
        assert_eq!(fast_tanh(-200.0), -1.0);
    }
}
