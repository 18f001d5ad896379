//! Checks made before any work: flag values in their ranges (as clap value parsers, so a
//! bad value is one line naming the flag), and model sizes against the machine's memory.

use recurrent::{Error, Result, RnnConfig};

/// Parses a count of at least 1.
pub fn positive(s: &str) -> std::result::Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number of at least 1, found {s:?}"))?;
    if v == 0 {
        return Err("must be at least 1, found 0".into());
    }
    Ok(v)
}

/// The most models an ensemble may have.
pub const MAX_ENSEMBLE: usize = 1000;

/// Parses an ensemble size, 1 to [`MAX_ENSEMBLE`].
pub fn ensemble_size(s: &str) -> std::result::Result<usize, String> {
    let v = positive(s)?;
    if v > MAX_ENSEMBLE {
        return Err(format!("at most {MAX_ENSEMBLE} models, found {v}"));
    }
    Ok(v)
}

fn number(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number, found {s:?}"))?;
    if !v.is_finite() {
        return Err(format!("expected a finite number, found {s:?}"));
    }
    Ok(v)
}

/// Parses a finite number above 0 (a learning rate, a temperature).
pub fn positive_number(s: &str) -> std::result::Result<f64, String> {
    let v = number(s)?;
    if v <= 0.0 {
        return Err(format!("must be above 0, found {v}"));
    }
    Ok(v)
}

/// [`positive_number`] as f32 (above 0 after rounding to f32).
pub fn positive_f32(s: &str) -> std::result::Result<f32, String> {
    let v = positive_number(s)? as f32;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("must be above 0 and finite in f32, found {s:?}"));
    }
    Ok(v)
}

/// Parses a probability of dropping a value: at least 0 and below 1.
pub fn dropout(s: &str) -> std::result::Result<f32, String> {
    let v = number(s)?;
    if !(0.0..1.0).contains(&v) {
        return Err(format!("must be at least 0 and below 1, found {v}"));
    }
    Ok(v as f32)
}

/// Parses a share strictly between 0 and 1.
pub fn open_fraction(s: &str) -> std::result::Result<f64, String> {
    let v = number(s)?;
    if !(v > 0.0 && v < 1.0) {
        return Err(format!("must be above 0 and below 1, found {v}"));
    }
    Ok(v)
}

/// Cores this process may run on.
pub fn cores() -> usize {
    recurrent::kernels::CpuInfo::get().cores
}

/// Threads per core allowed by [`threads`]: more only adds switching.
pub const THREADS_PER_CORE: usize = 4;

/// Parses a thread count, 1 to [`THREADS_PER_CORE`] times the cores.
pub fn threads(s: &str) -> std::result::Result<usize, String> {
    let v = positive(s)?;
    let max = THREADS_PER_CORE * cores();
    if v > max {
        return Err(format!(
            "at most {max} ({THREADS_PER_CORE} per core on {} cores), found {v}",
            cores()
        ));
    }
    Ok(v)
}

/// Total memory of this machine in bytes (`MemTotal` of `/proc/meminfo`), if known.
fn total_memory() -> Option<u128> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Fails when `bytes` (an estimate of what `what` needs) exceed this machine's memory.
pub fn fits_in_memory(what: &str, bytes: u128) -> Result<()> {
    match total_memory() {
        Some(total) if bytes > total => Err(Error::Invalid(format!(
            "{what} would need about {:.1} GiB, more than this machine's {:.1} GiB of memory",
            bytes as f64 / (1u64 << 30) as f64,
            total as f64 / (1u64 << 30) as f64
        ))),
        _ => Ok(()),
    }
}

/// Bytes to train a model of `cfg` plus `extra` other parameters: value, gradient, two
/// Adam moments and the best copy of each, in f32.
pub fn training_bytes(cfg: &RnnConfig, extra: usize) -> Result<u128> {
    Ok((cfg.parameter_count()? as u128 + extra as u128) * 5 * 4)
}

/// Bytes of the values a training step keeps for `rows x steps` positions: about
/// `G + 3` vectors of `H` per layer and direction, forward and backward, in f32.
pub fn tape_bytes(cfg: &RnnConfig, rows: usize, steps: usize) -> u128 {
    let per_position = cfg.num_layers as u128
        * cfg.num_directions() as u128
        * (cfg.mode.gates() as u128 + 3)
        * cfg.hidden_size as u128;
    2 * 4 * rows as u128 * steps as u128 * per_position
}
