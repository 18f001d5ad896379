//! `mpirun -np 2 recurrent train ...` on this machine (feature `mpi`, Open MPI's `mpirun`
//! on the PATH): the ranks train the model one process trains, resume from rank 0's
//! checkpoint, and a rank killed mid-run ends the job without touching the previous model.

#![cfg(feature = "mpi")]

mod common;

use common::mpi::*;
use std::time::{Duration, Instant};

/// A small character LM (default dropout 0.1, f32) on the bundled text.
const LM: [&str; 11] = [
    "lm",
    "--hidden-size",
    "48",
    "--seq-len",
    "32",
    "--epoch-chars",
    "40000",
    "--precision",
    "f32",
    "--batch-size",
    "32",
];

fn args<'a>(task: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
    [task, rest].concat()
}

/// Two ranks train the classifier (recurrent only: the LSTM-FCN's batch-norm statistics
/// are per rank) that one process trains, and only rank 0 prints.
#[test]
fn two_ranks_train_the_single_process_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let task = [
        "classify",
        "--model",
        "lstm",
        "--ensemble",
        "1",
        "--epochs",
        "1",
    ];
    one_process(
        dir.path(),
        &args(&task, &["--out", "one.safetensors", "--report", "one.json"]),
    );
    let out = ranks(
        dir.path(),
        2,
        &args(&task, &["--out", "two.safetensors", "--report", "two.json"]),
    );
    assert_same_run(&dir.path().join("one"), &dir.path().join("two"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("test_accuracy").count(), 1, "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("two.json")).unwrap())
            .unwrap();
    assert_eq!(report["settings"]["ranks"], 2);
}

/// Two ranks train the language model (with dropout and carried state: each rank runs its
/// shards of every batch with the masks and states they have in one process).
#[test]
fn two_ranks_train_the_single_process_language_model() {
    let dir = tempfile::tempdir().unwrap();
    let lm = args(&LM, &["--epochs", "1"]);
    one_process(
        dir.path(),
        &args(&lm, &["--out", "one.safetensors", "--report", "one.json"]),
    );
    ranks(
        dir.path(),
        2,
        &args(&lm, &["--out", "two.safetensors", "--report", "two.json"]),
    );
    assert_same_run(&dir.path().join("one"), &dir.path().join("two"));
}

/// The pid of rank `rank` among the children of `mpirun` (from `/proc`).
fn rank_pid(mpirun: u32, rank: usize) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let parent: u32 = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let environ = std::fs::read(e.path().join("environ")).ok()?;
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        let is_rank = environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes());
        (parent == mpirun && is_rank).then_some(pid)
    })
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Killing rank 1 after the first checkpoint ends the job with mpirun's message naming the
/// rank and a failure status; the previous model file is untouched and the checkpoint
/// intact. `--resume` under mpirun then continues from rank 0's checkpoint as one process
/// continues from a copy of it.
#[test]
fn a_killed_rank_fails_cleanly_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("two.safetensors");
    std::fs::write(&model, b"the previous model").unwrap();
    let long = args(&LM, &["--epochs", "1000", "--out", "two.safetensors"]);
    let job = mpirun()
        .current_dir(dir.path())
        .args(["-np", "2", RECURRENT, "train"])
        .args(&long)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoint = dir.path().join("two.safetensors.checkpoint");
    wait_for("the first checkpoint", Duration::from_secs(120), || {
        checkpoint.exists()
    });
    let mut victim = None;
    wait_for("rank 1", Duration::from_secs(10), || {
        victim = rank_pid(job.id(), 1);
        victim.is_some()
    });
    let victim = victim.unwrap();
    // SAFETY: a signal to a child process of this test.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    let out = job.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 1") && stderr.contains("signal 9"),
        "mpirun's message: {stderr}"
    );
    assert_eq!(std::fs::read(&model).unwrap(), b"the previous model");
    let stopped = recurrent::io::TensorFile::read(&checkpoint).unwrap();
    let fit: serde_json::Value = serde_json::from_str(stopped.metadata("fit").unwrap()).unwrap();
    let epoch = fit["epoch"].as_u64().unwrap();
    assert!(epoch >= 1);

    // Two epochs more from the checkpoint on two ranks, and in one process from a copy.
    std::fs::copy(&checkpoint, dir.path().join("one.safetensors.checkpoint")).unwrap();
    let until = (epoch + 2).to_string();
    for (out, report) in [
        ("one.safetensors", "one.json"),
        ("two.safetensors", "two.json"),
    ] {
        let resumed = args(
            &LM,
            &[
                "--epochs", &until, "--out", out, "--report", report, "--resume",
            ],
        );
        if out.starts_with("one") {
            one_process(dir.path(), &resumed);
        } else {
            ranks(dir.path(), 2, &resumed);
        }
    }
    assert_same_run(&dir.path().join("one"), &dir.path().join("two"));
    assert!(
        !checkpoint.exists(),
        "a finished run removes its checkpoint"
    );
}

/// An error on one rank (rank 1 given a text file that does not exist; `mpirun`'s
/// `A : B` form runs different arguments per rank) ends the whole job at once: the error
/// line names the rank, the job fails, and no model is written.
#[test]
fn an_error_on_one_rank_ends_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let lm = args(&LM, &["--epochs", "1", "--out", "m.safetensors"]);
    let out = mpirun()
        .current_dir(dir.path())
        .args(["-np", "1", RECURRENT, "train"])
        .args(&lm)
        .args([":", "-np", "1", RECURRENT, "train"])
        .args(&lm)
        .args(["--text", "missing.txt"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("error: rank 1 of 2: ") && stderr.contains("missing.txt"),
        "{stderr}"
    );
    assert!(!dir.path().join("m.safetensors").exists());
}
