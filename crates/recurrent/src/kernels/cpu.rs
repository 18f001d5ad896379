//! Runtime CPU-feature detection and kernel selection.
//!
//! Hot kernels are written once as plain, vectorisable Rust and compiled three times:
//! for AVX-512, for AVX2+FMA and for the baseline target (the portable fallback, always
//! compiled and tested). The best level the CPU supports is used, unless the environment
//! variable `RECURRENT_KERNEL` (`portable`, `avx2` or `avx512`) forces a lower one, which
//! is how the tests cover every path.

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
}

impl Level {
    /// The level's name, as `RECURRENT_KERNEL` takes it: `portable`, `avx2`, `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }
}

static DETECTED: AtomicU8 = AtomicU8::new(0);

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            return Level::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Portable
}

fn from_u8(v: u8) -> Level {
    match v {
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
        Ok(s) => [Level::Portable, Level::Avx2, Level::Avx512]
            .into_iter()
            .find(|level| level.name() == s)
            .map(Some)
            .ok_or_else(|| {
                format!("RECURRENT_KERNEL must be portable, avx2 or avx512, found {s:?}")
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
/// level is AVX-512 and the CPU has its BF16 extension.
pub fn has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        level() == Level::Avx512
            && is_x86_feature_detected!("avx512bf16")
            && is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
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
            #[cfg(target_arch = "x86_64")]
            {
                $($local)*
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { $generic($($arg),*) }
                match $crate::kernels::cpu::level() {
                    // SAFETY: `level()` never exceeds what the running CPU supports.
                    $crate::kernels::cpu::Level::Avx512 => return unsafe { $fast($($arg),*) },
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
