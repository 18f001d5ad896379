//! What the running CPU is: vendor, model, cache sizes and cores, read once at run time
//! (CPUID and Linux sysfs), and the blocking sizes derived from it. (The instruction-set
//! level kernels run at is [`super::cpu::level`], which tests and benchmarks may lower.)

use std::sync::OnceLock;

/// L2 size assumed when the machine does not say (and the size the blocking fractions
/// were first tuned with: 1 MiB per core, AMD Zen 4).
const DEFAULT_L2_BYTES: usize = 1 << 20;

/// The running CPU as far as the kernels care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// CPUID vendor string (`GenuineIntel`, `AuthenticAMD`, ...) or `unknown`.
    pub vendor: String,
    /// Brand string, e.g. `Intel(R) Xeon(R) Processor`.
    pub model_name: String,
    /// CPUID display family and model (0 where unknown).
    pub family: u32,
    /// See `family`.
    pub model: u32,
    /// Per-core L1 data, L2 and shared L3 sizes in bytes (`None` where unknown).
    pub l1d_bytes: Option<usize>,
    /// See `l1d_bytes`.
    pub l2_bytes: Option<usize>,
    /// See `l1d_bytes`.
    pub l3_bytes: Option<usize>,
    /// Cores this process may use.
    pub cores: usize,
}

impl CpuInfo {
    /// The running CPU, detected once.
    pub fn get() -> &'static CpuInfo {
        static INFO: OnceLock<CpuInfo> = OnceLock::new();
        INFO.get_or_init(CpuInfo::detect)
    }

    fn detect() -> CpuInfo {
        let (vendor, model_name, family, model) = cpuid();
        let cache = |level: u32, kind: &str| cache_size(level, kind);
        CpuInfo {
            vendor,
            model_name,
            family,
            model,
            l1d_bytes: cache(1, "Data"),
            l2_bytes: cache(2, "Unified"),
            l3_bytes: cache(3, "Unified"),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Per-core L2 bytes, or a default of 1 MiB when unknown.
    pub fn l2(&self) -> usize {
        self.l2_bytes.unwrap_or(DEFAULT_L2_BYTES)
    }

    /// Bytes of packed weights one pass of a matrix product multiplies (panels taken in
    /// groups that stay in L2 while every row block meets them): 3/8 of L2, within
    /// 256 KiB..1.5 MiB (384 KiB on a 1 MiB L2).
    pub fn panel_group_bytes(&self) -> usize {
        (self.l2() / 8 * 3).clamp(256 << 10, 3 << 19)
    }

    /// Bytes of a transposed left-hand matrix a product copies at a time (rows of one
    /// depth block, read back from L2 by every group of panels): 1/4 of L2, within
    /// 128 KiB..1 MiB.
    pub fn column_block_bytes(&self) -> usize {
        (self.l2() / 4).clamp(128 << 10, 1 << 20)
    }

    /// Bytes of input projections a time loop computes ahead (read back from L2 by the
    /// next steps): 3/16 of L2, within 128 KiB..768 KiB (192 KiB on a 1 MiB L2).
    pub fn projection_block_bytes(&self) -> usize {
        (self.l2() / 16 * 3).clamp(128 << 10, 3 << 18)
    }
}

/// A cache's size from `/sys/devices/system/cpu/cpu0/cache/index*/` (Linux).
fn cache_size(level: u32, kind: &str) -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    for entry in dir.flatten() {
        let path = entry.path();
        let read = |name: &str| std::fs::read_to_string(path.join(name)).ok();
        let same_level = read("level").is_some_and(|l| l.trim() == level.to_string());
        if same_level && read("type").is_some_and(|t| t.trim() == kind) {
            let size = read("size")?;
            let size = size.trim();
            let (digits, unit) = size.split_at(size.trim_end_matches(char::is_alphabetic).len());
            let n: usize = digits.parse().ok()?;
            return Some(match unit {
                "K" => n << 10,
                "M" => n << 20,
                "G" => n << 30,
                _ => n,
            });
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
fn cpuid() -> (String, String, u32, u32) {
    use std::arch::x86_64::__cpuid;
    // SAFETY: CPUID exists on every x86-64 CPU; leaves above the reported maximum are not
    // queried. (`__cpuid` is a safe function in newer compilers, `unsafe` in older ones.)
    #[allow(unused_unsafe)]
    unsafe {
        let leaf0 = __cpuid(0);
        let mut vendor = Vec::with_capacity(12);
        for r in [leaf0.ebx, leaf0.edx, leaf0.ecx] {
            vendor.extend_from_slice(&r.to_le_bytes());
        }
        let (mut family, mut model) = (0, 0);
        if leaf0.eax >= 1 {
            let eax = __cpuid(1).eax;
            let base_family = (eax >> 8) & 0xF;
            let base_model = (eax >> 4) & 0xF;
            family = base_family
                + if base_family == 0xF {
                    (eax >> 20) & 0xFF
                } else {
                    0
                };
            model = base_model
                + if base_family == 0x6 || base_family == 0xF {
                    ((eax >> 16) & 0xF) << 4
                } else {
                    0
                };
        }
        let mut brand = Vec::with_capacity(48);
        if __cpuid(0x8000_0000).eax >= 0x8000_0004 {
            for leaf in 0x8000_0002..=0x8000_0004u32 {
                let r = __cpuid(leaf);
                for v in [r.eax, r.ebx, r.ecx, r.edx] {
                    brand.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        let text = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .trim_matches(char::from(0))
                .trim()
                .to_string()
        };
        (text(&vendor), text(&brand), family, model)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid() -> (String, String, u32, u32) {
    ("unknown".into(), "unknown".into(), 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived sizes are those the kernels were tuned with on a 1 MiB L2, and grow
    /// with L2 within their bounds.
    #[test]
    fn blocking_follows_l2() {
        let mut info = CpuInfo::get().clone();
        info.l2_bytes = Some(1 << 20);
        assert_eq!(
            (info.panel_group_bytes(), info.projection_block_bytes()),
            (384 << 10, 192 << 10)
        );
        info.l2_bytes = Some(2 << 20);
        assert_eq!(
            (info.panel_group_bytes(), info.projection_block_bytes()),
            (768 << 10, 384 << 10)
        );
        assert_eq!(info.column_block_bytes(), 512 << 10);
        info.l2_bytes = Some(256 << 10);
        assert_eq!(
            (info.panel_group_bytes(), info.projection_block_bytes()),
            (256 << 10, 128 << 10)
        );
        info.l2_bytes = None;
        assert_eq!(info.panel_group_bytes(), 384 << 10);
    }

    /// Where Linux describes the caches, the L2 size is read from there; CPUID names an
    /// x86-64 vendor.
    #[test]
    fn detection_reads_the_machine() {
        let info = CpuInfo::get();
        if std::path::Path::new("/sys/devices/system/cpu/cpu0/cache/index2").exists() {
            assert!(info.l2_bytes.is_some_and(|b| b >= 64 << 10), "{info:?}");
        }
        #[cfg(target_arch = "x86_64")]
        assert!(!info.vendor.is_empty() && info.family > 0, "{info:?}");
        assert!(info.cores >= 1);
    }
}
