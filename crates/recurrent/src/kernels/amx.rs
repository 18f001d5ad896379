//! The AMX tile unit (x86-64 AMX-TILE and AMX-BF16): whether this process may use it, its
//! configuration, and the tile operations of the bfloat16 product, in inline assembly
//! (Rust's AMX intrinsics are not stable).
//!
//! The product's tiles: `tmm0 .. tmm3` accumulate a 32 x 32 block of `C` (2 x 2 tiles of
//! 16 x 16 `f32`: rows 0-15 columns 0-15, rows 0-15 columns 16-31, rows 16-31 columns 0-15,
//! rows 16-31 columns 16-31), `tmm4`/`tmm5` hold rows 0-15 and 16-31 of a block of `A` (16
//! bfloat16 pairs per row), `tmm6`/`tmm7` the two 16-column halves of 16 pair rows of a
//! packed panel of `B` (32 pairs a row). No compiler-generated code touches tile
//! registers, so they keep their values from one `asm!` block to the next.

use std::arch::asm;
use std::sync::OnceLock;

/// Whether the CPU has AMX-TILE, AMX-BF16 and AVX-512 BF16, and the operating system
/// lets this process use the tile data (Linux grants it on request, once per process).
pub fn usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| cpu_has_tiles() && os_grants_tiles())
}

fn cpu_has_tiles() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    /// CPUID leaf 7, sub-leaf 0, EDX: AMX-BF16 (bit 22) and AMX-TILE (bit 24).
    const AMX_BF16_AND_TILE: u32 = (1 << 22) | (1 << 24);
    // SAFETY: CPUID is always available on x86-64; leaf 7 is read only if it exists.
    #[allow(unused_unsafe)]
    let tiles = unsafe {
        __cpuid(0).eax >= 7 && __cpuid_count(7, 0).edx & AMX_BF16_AND_TILE == AMX_BF16_AND_TILE
    };
    tiles && is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512bw")
}

#[cfg(target_os = "linux")]
fn os_grants_tiles() -> bool {
    /// `arch_prctl` requests: permission for an extended state component.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    /// The state component of the tile data.
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: asks the kernel for a permission of this process; no memory is passed.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn os_grants_tiles() -> bool {
    false
}

/// The tile configuration (`ldtilecfg`'s 64 bytes): palette 1, all eight tiles 16 rows
/// of 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

const CONFIG: Config = {
    let mut bytes = [0u8; 64];
    bytes[0] = 1;
    let mut tile = 0;
    while tile < 8 {
        bytes[16 + 2 * tile] = 64; // bytes per row (u16, little-endian)
        bytes[48 + tile] = 16; // rows
        tile += 1;
    }
    Config(bytes)
};

/// Loads the tile configuration on this thread (and zeroes every tile).
///
/// # Safety
/// [`usable`] must be true.
#[inline(always)]
pub unsafe fn configure() {
    asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly, preserves_flags));
}

/// Releases the tiles of this thread, so that the operating system need not save them.
///
/// # Safety
/// [`usable`] must be true.
#[inline(always)]
pub unsafe fn release() {
    asm!("tilerelease", options(nostack, nomem, preserves_flags));
}

/// Zeroes the four accumulator tiles.
///
/// # Safety
/// The tiles must be configured ([`configure`]).
#[inline(always)]
pub unsafe fn zero_accumulators() {
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem, preserves_flags)
    );
}

/// One depth step of 16 pairs (32 products) of the 32 x 32 block: `A` rows from `a`,
/// `lda` bytes apart (16 pairs read from each of 32 rows); `B` from `b`, 16 pair rows of a
/// 32-column panel (128 bytes apart).
///
/// # Safety
/// The tiles must be configured; `a` must be readable for 32 rows of 64 bytes at stride
/// `lda` and `b` for 16 rows of 128 bytes.
#[inline(always)]
pub unsafe fn step_32x32(a: *const u32, lda: usize, b: *const u32) {
    asm!(
        "tileloadd tmm6, [{b} + {ldb}]",
        "tileloadd tmm7, [{b_right} + {ldb}]",
        "tileloadd tmm4, [{a} + {lda}]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tileloadd tmm5, [{a_low} + {lda}]",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        b = in(reg) b,
        b_right = in(reg) b.add(16),
        ldb = in(reg) 128usize,
        a = in(reg) a,
        a_low = in(reg) (a as *const u8).add(16 * lda),
        lda = in(reg) lda,
        options(nostack, readonly, preserves_flags)
    );
}

/// [`step_32x32`] for 16 rows of `A` (the accumulators `tmm0` and `tmm1` only).
///
/// # Safety
/// As [`step_32x32`], for 16 rows of `A`.
#[inline(always)]
pub unsafe fn step_16x32(a: *const u32, lda: usize, b: *const u32) {
    asm!(
        "tileloadd tmm6, [{b} + {ldb}]",
        "tileloadd tmm7, [{b_right} + {ldb}]",
        "tileloadd tmm4, [{a} + {lda}]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        b = in(reg) b,
        b_right = in(reg) b.add(16),
        ldb = in(reg) 128usize,
        a = in(reg) a,
        lda = in(reg) lda,
        options(nostack, readonly, preserves_flags)
    );
}

/// Stores the accumulators as four row-major 16 x 16 `f32` blocks, `tmm0` first.
///
/// # Safety
/// The tiles must be configured.
#[inline(always)]
pub unsafe fn store_accumulators(out: &mut [f32; 4 * 256]) {
    let c = out.as_mut_ptr();
    asm!(
        "tilestored [{c0} + {ld}], tmm0",
        "tilestored [{c1} + {ld}], tmm1",
        "tilestored [{c2} + {ld}], tmm2",
        "tilestored [{c3} + {ld}], tmm3",
        c0 = in(reg) c,
        c1 = in(reg) c.add(256),
        c2 = in(reg) c.add(512),
        c3 = in(reg) c.add(768),
        ld = in(reg) 64usize,
        options(nostack, preserves_flags)
    );
}
