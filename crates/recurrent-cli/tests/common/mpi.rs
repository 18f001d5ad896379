//! Running `recurrent train` under Open MPI's `mpirun`, and comparing what runs wrote.

#![allow(dead_code)]

use recurrent::io::TensorFile;
use std::path::Path;
use std::process::{Command, Output};

/// The `recurrent` binary under test.
pub const RECURRENT: &str = env!("CARGO_BIN_EXE_recurrent");

/// `mpirun` with what a root CI container needs: permission to run as root, more ranks
/// than cores allowed, and no single-copy shared memory (ptrace is often forbidden).
pub fn mpirun() -> Command {
    let mut c = Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args([
            "--oversubscribe",
            "--mca",
            "btl_vader_single_copy_mechanism",
            "none",
        ]);
    c
}

/// Runs `command` and fails the test with its output unless it succeeds.
pub fn succeed(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e} (is Open MPI installed?)"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `recurrent train ARGS` in one process, writing into `dir`.
pub fn one_process(dir: &Path, args: &[&str]) -> Output {
    succeed(
        Command::new(RECURRENT)
            .current_dir(dir)
            .arg("train")
            .args(args),
    )
}

/// `mpirun -np RANKS recurrent train ARGS`, writing into `dir`.
pub fn ranks(dir: &Path, ranks: usize, args: &[&str]) -> Output {
    succeed(
        mpirun()
            .current_dir(dir)
            .args(["-np", &ranks.to_string(), RECURRENT, "train"])
            .args(args),
    )
}

/// Every tensor of a model file, by name.
pub fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut all: Vec<(String, Vec<f32>)> = TensorFile::read(path)
        .unwrap()
        .all_f32()
        .unwrap()
        .into_iter()
        .map(|(name, _, values)| (name, values))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// `(train_loss, val_loss)` per epoch of a report.
pub fn history(path: &Path) -> Vec<(f64, f64)> {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    report["training"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["train_loss"].as_f64().unwrap(),
                e["val_loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Tolerance between a run on several ranks and one process after one epoch: the same
/// arithmetic but for the order in which the ranks' gradients are summed (about 1e-7
/// relative per step in f32), carried through some 70 Adam steps, whose normalised updates
/// do not shrink such differences (2.3e-5 is the largest seen, on the classifier): 2e-4 of
/// the largest weight.
pub const SAME_MODEL: f32 = 2e-4;

/// Tolerance of the epochs' mean losses: 1e-5 relative (1e-7 seen).
pub const SAME_LOSS: f64 = 1e-5;

/// The models and reports at `a` and `b` (paths without `.safetensors`/`.json`) are the
/// same training run up to [`SAME_MODEL`] and [`SAME_LOSS`].
pub fn assert_same_run(a: &Path, b: &Path) {
    let (wa, wb) = (
        weights(&a.with_extension("safetensors")),
        weights(&b.with_extension("safetensors")),
    );
    assert_eq!(wa.len(), wb.len());
    let scale = wa
        .iter()
        .flat_map(|(_, v)| v)
        .fold(0f32, |m, v| m.max(v.abs()));
    for ((name, x), (other, y)) in wa.iter().zip(&wb) {
        assert_eq!(name, other);
        let d = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            d <= SAME_MODEL * scale,
            "`{name}` differs by {d} (largest weight {scale})"
        );
    }
    let (ha, hb) = (
        history(&a.with_extension("json")),
        history(&b.with_extension("json")),
    );
    assert_eq!(ha.len(), hb.len());
    for ((ta, va), (tb, vb)) in ha.iter().zip(&hb) {
        assert!(
            (ta - tb).abs() <= SAME_LOSS * ta.abs(),
            "train loss {ta} vs {tb}"
        );
        assert!(
            (va - vb).abs() <= SAME_LOSS * va.abs(),
            "val loss {va} vs {vb}"
        );
    }
}
