//! Runtime CPU-feature detection and kernel selection.
//!
//! Hot kernels are written once as plain, vectorisable Rust and compiled three times:
//! for AVX-512, for AVX2+FMA and for the baseline target (the portable fallback, always
//! compiled and tested). The best level the CPU supports is used, unless the environment
//! variable `RECURRENT_KERNEL` (`portable`, `avx2`, `avx512` or `amx`) forces a lower one,
//! which is how the tests cover every path. The AMX level is AVX-512 whose bfloat16
//! products run on the tile unit (Intel Sapphire Rapids and later), where the operating
//! system grants it.

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Baseline target features only.
    Portable = 1,
    /// x86-64 AVX2 and FMA.
    Avx2 = 2,
    /// x86-64 AVX-512F.
    Avx512 = 3,
    /// AVX-512 with BF16 and the AMX tile unit (AMX-TILE, AMX-BF16), enabled by the
    /// operating system: [`Level::Avx512`], except that bfloat16 products run on tiles.
    Amx = 4,
}

impl Level {
    /// The level's name, as `RECURRENT_KERNEL` takes it: `portable`, `avx2`, `avx512`,
    /// `amx`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Amx => "amx",
        }
    }

    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [Level::Portable, Level::Avx2, Level::Avx512, Level::Amx];

    /// The levels this process can run, lowest first: up to [`detected`] (the tests run
    /// their checks at each).
    pub fn supported() -> Vec<Level> {
        Level::ALL
            .into_iter()
            .filter(|&l| l <= detected())
            .collect()
    }
}

static DETECTED: AtomicU8 = AtomicU8::new(0);

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            return if super::amx::usable() {
                Level::Amx
            } else {
                Level::Avx512
            };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Portable
}

fn from_u8(v: u8) -> Level {
    match v {
        4 => Level::Amx,
        3 => Level::Avx512,
        2 => Level::Avx2,
        _ => Level::Portable,
    }
}

/// The level `RECURRENT_KERNEL` asks for: `None` when it is not set, an error naming the
/// accepted values when it is not one of them.
pub fn requested_level() -> Result<Option<Level>, String> {
    match std::env::var("RECURRENT_KERNEL") {
        Err(_) => Ok(None),
        Ok(s) => Level::ALL
            .into_iter()
            .find(|level| level.name() == s)
            .map(Some)
            .ok_or_else(|| {
                format!("RECURRENT_KERNEL must be portable, avx2, avx512 or amx, found {s:?}")
            }),
    }
}

/// The best level this CPU supports, capped by `RECURRENT_KERNEL` if set. An unknown
/// value is an error for [`requested_level`] (the command line refuses to start); here,
/// where no error can be returned, it means the portable level, never a faster one than
/// asked for.
pub fn detected() -> Level {
    let v = DETECTED.load(Ordering::Relaxed);
    if v != 0 {
        return from_u8(v);
    }
    let level = match requested_level() {
        Ok(None) => detect(),
        Ok(Some(wanted)) => detect().min(wanted),
        Err(_) => Level::Portable,
    };
    DETECTED.store(level as u8, Ordering::Relaxed);
    level
}

thread_local! {
    /// The level of this thread when it belongs to a pool made by [`with_level`] (0: none).
    static THREAD_LEVEL: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// The level kernels run at on this thread: [`detected`], or a lower one inside
/// [`with_level`].
#[inline]
pub fn level() -> Level {
    let f = THREAD_LEVEL.with(std::cell::Cell::get);
    if f != 0 {
        return from_u8(f).min(detected());
    }
    detected()
}

/// Runs `f` with the kernels at `level` (capped at what the CPU supports), on a thread
/// pool of as many threads as the current one whose every thread runs at that level; the
/// rest of the process keeps its level. Meant for tests and benchmarks comparing kernel
/// paths, side by side in one process.
pub fn with_level<R: Send>(level: Level, f: impl FnOnce() -> R + Send) -> R {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads())
        .start_handler(move |_| THREAD_LEVEL.with(|l| l.set(level as u8)))
        .build()
        .expect("a thread pool");
    pool.install(f)
}

/// Whether bfloat16 products ([`super::gemm::Precision::Bf16`]) run here: the current
/// level is AVX-512 (or AMX) and the CPU has its BF16 extension.
pub fn has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        level() >= Level::Avx512
            && is_x86_feature_detected!("avx512bf16")
            && is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// While alive, the current thread's floating-point unit flushes subnormal results to zero
/// and reads subnormal operands as zero (x86-64 MXCSR FTZ and DAZ); dropping it restores
/// the previous mode. The matrix products and the element-wise kernels (the cells,
/// activations, dropout) hold one while they run: on Intel cores an operation on a subnormal
/// costs a microcode assist, and the gradients of a long sequence decay into that range
/// (a training step of an LSTM over 256 steps with its loss on the last took 25 times as
/// long; PyTorch, which does not flush by default, as long). Values below `1.2e-38` become
/// 0, where PyTorch would keep them.
pub struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: Option<u32>,
}

/// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) bits.
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = 0x8040;

impl FlushDenormals {
    /// Sets flush-to-zero and denormals-are-zero on this thread (if not set already).
    #[inline]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let mut csr: u32 = 0;
            // SAFETY: reads and writes the SSE control register of this thread only; the
            // bits changed select how subnormals are treated, nothing else.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
                if csr & FTZ_DAZ == FTZ_DAZ {
                    return FlushDenormals { saved: None };
                }
                let flushing = csr | FTZ_DAZ;
                std::arch::asm!("ldmxcsr [{}]", in(reg) &flushing, options(nostack, preserves_flags));
            }
            FlushDenormals { saved: Some(csr) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Drop for FlushDenormals {
    #[inline]
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if let Some(csr) = self.saved {
            // SAFETY: restores the mode read in `new`.
            unsafe {
                std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
            }
        }
    }
}

/// How many times as many multiply-adds per second this core does with the bfloat16
/// products of the current level as with the f32 FMA, measured once per process and
/// level (a few ms: independent chains of each instruction, interleaved rounds, the best
/// of each); 0 where [`has_bf16`] is false. On Zen 4 the AVX-512 BF16 dot product doubles
/// the rate; on Intel Xeons it issues at a quarter of the FMA's rate, so that bfloat16
/// products are slower there, unless the AMX tile unit takes them (4x on a Xeon of
/// family 6 model 167).
pub fn bf16_speedup() -> f64 {
    if !has_bf16() {
        return 0.0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static DOT: OnceLock<f64> = OnceLock::new();
        static TILES: OnceLock<f64> = OnceLock::new();
        if level() == Level::Amx {
            // SAFETY: the AMX level is only detected where the tiles are usable.
            return *TILES.get_or_init(|| unsafe { throughput::tiles_over_fma() });
        }
        // SAFETY: `has_bf16` checked AVX-512F, BW and BF16.
        *DOT.get_or_init(|| unsafe { throughput::bf16_over_fma() })
    }
    #[cfg(not(target_arch = "x86_64"))]
    0.0
}

/// Whether bfloat16 products pay here: [`bf16_speedup`] at least 1.25 (below that the
/// conversions of the operands eat the gain, and the rounding is not worth a little speed).
pub fn bf16_pays() -> bool {
    bf16_speedup() >= 1.25
}

#[cfg(target_arch = "x86_64")]
mod throughput {
    use std::arch::x86_64::*;
    use std::time::Instant;

    /// Independent accumulator chains: more than the instructions' latency times their
    /// issue rate on any core, so that the loops measure the rate alone.
    const CHAINS: usize = 24;
    const STEPS: usize = 20_000;

    /// See [`super::bf16_speedup`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F, BW and BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,fma")]
    pub unsafe fn bf16_over_fma() -> f64 {
        let (mut fma, mut dot) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..5 {
            let start = Instant::now();
            std::hint::black_box(fma_chains());
            fma = fma.min(start.elapsed().as_secs_f64());
            let start = Instant::now();
            std::hint::black_box(dot_chains());
            dot = dot.min(start.elapsed().as_secs_f64());
        }
        // One FMA is 16 multiply-adds, one dot product 32.
        (32.0 / dot) / (16.0 / fma)
    }

    /// [`bf16_over_fma`] for the AMX tile product, as the kernel runs it: four 16x16
    /// accumulator tiles, operand tiles loaded from L1 at every step.
    ///
    /// # Safety
    /// The tiles must be usable ([`super::super::amx::usable`]).
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn tiles_over_fma() -> f64 {
        // bfloat16 1.0 and 2^-10: finite sums however long the loop.
        let a = [0x3f80_3f80u32; 32 * 16];
        let b = [0x3a80_3a80u32; 16 * 32];
        let (mut fma, mut tiles) = (f64::INFINITY, f64::INFINITY);
        let steps = STEPS / 8;
        for _ in 0..5 {
            let start = Instant::now();
            std::hint::black_box(fma_chains());
            fma = fma.min(start.elapsed().as_secs_f64());
            let start = Instant::now();
            super::super::amx::configure();
            for _ in 0..steps {
                super::super::amx::step_32x32(a.as_ptr(), 64, b.as_ptr());
            }
            super::super::amx::release();
            tiles = tiles.min(start.elapsed().as_secs_f64());
        }
        // A step is 32 x 32 outputs times 32 products; the FMA loop did CHAINS x STEPS
        // instructions of 16.
        (steps as f64 * 32.0 * 32.0 * 32.0 / tiles) / ((CHAINS * STEPS * 16) as f64 / fma)
    }

    #[target_feature(enable = "avx512f,fma")]
    unsafe fn fma_chains() -> __m512 {
        let (a, b) = (_mm512_set1_ps(0.999), _mm512_set1_ps(1e-3));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..STEPS {
            for v in &mut acc {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        acc.iter()
            .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn dot_chains() -> __m512 {
        // bfloat16 pairs (1.0, 1.0) times (2^-10, 2^-10).
        let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3f80_3f80));
        let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3a80_3a80));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..STEPS {
            for v in &mut acc {
                *v = _mm512_dpbf16_ps(*v, a, b);
            }
        }
        acc.iter()
            .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v))
    }
}

/// Defines `$name` that dispatches to `$generic` compiled for the current [`level`].
/// `$generic` must be `#[inline(always)]` so it is compiled inside each variant. With
/// `avx512: $fast`, the AVX-512 level calls the hand-written `unsafe` function `$fast`
/// (same arguments, compiled with AVX-512F enabled) instead.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)? => $generic:path) => {
        $crate::kernels::cpu::multiversion!(
            $(#[$m])* $vis fn $name($($arg: $ty),*) $(-> $ret)? => $generic, avx512: avx512
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { $generic($($arg),*) }
            }
        );
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)? => $generic:path, avx512: $fast:path) => {
        $crate::kernels::cpu::multiversion!(
            $(#[$m])* $vis fn $name($($arg: $ty),*) $(-> $ret)? => $generic, avx512: $fast {}
        );
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)? => $generic:path, avx512: $fast:path { $($local:item)* }) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            let _flush = $crate::kernels::cpu::FlushDenormals::new();
            #[cfg(target_arch = "x86_64")]
            {
                $($local)*
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { $generic($($arg),*) }
                match $crate::kernels::cpu::level() {
                    // SAFETY: `level()` never exceeds what the running CPU supports.
                    $crate::kernels::cpu::Level::Avx512 | $crate::kernels::cpu::Level::Amx => return unsafe { $fast($($arg),*) },
                    $crate::kernels::cpu::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::kernels::cpu::Level::Portable => {}
                }
            }
            $generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside the guard subnormals are zero; after it, as before (nested guards too).
    #[test]
    fn flush_denormals_is_scoped() {
        let tiny = || std::hint::black_box(f32::MIN_POSITIVE / 8.0);
        assert!(tiny() * 1.0 > 0.0);
        {
            let _outer = FlushDenormals::new();
            #[cfg(target_arch = "x86_64")]
            assert_eq!(tiny() * 1.0, 0.0);
            {
                let _inner = FlushDenormals::new();
            }
            #[cfg(target_arch = "x86_64")]
            assert_eq!(tiny() * 1.0, 0.0, "an inner guard leaves the outer mode");
        }
        assert!(tiny() * 1.0 > 0.0);
    }

    /// The measured speed-up is 0 exactly where bfloat16 products cannot run, a positive
    /// finite ratio elsewhere, and decides [`Precision::where_faster`].
    #[test]
    fn bf16_speedup_decides_where_bf16_is_chosen() {
        use crate::kernels::Precision;
        let speedup = bf16_speedup();
        assert_eq!(speedup == 0.0, !has_bf16(), "{speedup}");
        assert!(speedup.is_finite() && speedup >= 0.0);
        assert_eq!(bf16_speedup(), speedup, "measured once");
        let chosen = Precision::Bf16.where_faster();
        assert_eq!(chosen == Precision::Bf16, speedup >= 1.25);
        assert_eq!(Precision::F32.where_faster(), Precision::F32);
    }

    /// A level chosen with `with_level` holds on every thread of its pool (the caller's
    /// closure and work it hands to the pool) and nowhere else.
    #[test]
    fn with_level_is_scoped_to_its_pool() {
        let outside = level();
        let (caller, (a, b)) = with_level(Level::Portable, || (level(), rayon::join(level, level)));
        assert_eq!(
            (caller, a, b),
            (Level::Portable, Level::Portable, Level::Portable)
        );
        assert_eq!(level(), outside);
        assert_eq!(rayon::join(level, level), (outside, outside));
    }
}
