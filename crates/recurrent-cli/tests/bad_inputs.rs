//! Hostile input, one test per class: every bad flag, path, model file, checkpoint and data
//! file gives exit code 1 or 2 with exactly one line on stderr, before any work where the
//! check can be made up front, and leaves every file it was given (and any previous
//! output) byte for byte as it was.

use rand::SeedableRng;
use recurrent::data::{Standardizer, Vocabulary};
use recurrent::io::{TensorFile, TensorWriter};
use recurrent::models::{
    CharLm, ClassifierEnsemble, ClassifierMeta, ForecastMeta, ForecastMethod, Forecaster,
    ForecasterEnsemble, SequenceClassifier, Transform,
};
use recurrent::{Mode, RnnConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Long enough for any up-front failure on a loaded CI machine; a hang is far longer.
const PATIENCE: Duration = Duration::from_secs(120);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_recurrent"))
}

/// Runs `recurrent args` in `dir`, killing it (and failing) after [`PATIENCE`].
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let child = bin()
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, args)
}

fn wait_bounded(mut child: Child, args: &[&str]) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > PATIENCE {
            child.kill().unwrap();
            panic!(
                "`recurrent {}` still running after {PATIENCE:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Asserts a failed run: exit code 1 or 2 (never a panic's 101 or an abort's 134), one
/// line on stderr that contains `needle`.
fn assert_one_line_error(out: &Output, needle: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        matches!(code, Some(1) | Some(2)),
        "{what}: exit {code:?}, stderr:\n{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{what}: stderr must be one line:\n{stderr}"
    );
    assert!(
        stderr.starts_with("error: ") && stderr.contains(needle),
        "{what}: expected an error about {needle:?}, found: {stderr}"
    );
}

/// The bytes of some files, to check that a failed run left them as they were.
struct Protected(BTreeMap<PathBuf, Option<Vec<u8>>>);

impl Protected {
    fn new(paths: &[&Path]) -> Self {
        Protected(
            paths
                .iter()
                .map(|p| (p.to_path_buf(), std::fs::read(p).ok()))
                .collect(),
        )
    }

    fn assert_unchanged(&self, what: &str) {
        for (p, before) in &self.0 {
            assert_eq!(
                &std::fs::read(p).ok(),
                before,
                "{what}: {} changed",
                p.display()
            );
        }
    }
}

/// A folder with a previous model file `m.st` that no failed run may replace, and no
/// file left behind by a failed run other than those the test made.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let s = Sandbox {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(s.path("m.st"), b"the previous model").unwrap();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Runs a command that must fail with one line containing `needle`, changing no file
    /// of the folder and leaving no new one.
    fn fails(&self, args: &[&str], needle: &str) {
        let names = self.files();
        let paths: Vec<PathBuf> = names.iter().map(|n| self.path(n)).collect();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let protected = Protected::new(&refs);
        let what = format!("`recurrent {}`", args.join(" "));
        assert_one_line_error(&run_in(self.dir.path(), args), needle, &what);
        protected.assert_unchanged(&what);
        assert_eq!(self.files(), names, "{what}: files left behind");
    }
}

/// Every flag whose value is out of range, and malformed command lines.
#[test]
fn flags_out_of_range_are_one_line_before_any_work() {
    let s = Sandbox::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["train", "classify", "--val-fraction", "2"],
            "--val-fraction",
        ),
        (
            &["train", "classify", "--val-fraction", "-0.5"],
            "--val-fraction",
        ),
        (
            &["train", "classify", "--val-fraction", "nan"],
            "--val-fraction",
        ),
        (
            &["train", "classify", "--val-fraction", "0"],
            "--val-fraction",
        ),
        (
            &[
                "train",
                "classify",
                "--ensemble",
                "4294967296",
                "--time-budget",
                "5s",
            ],
            "--ensemble",
        ),
        (&["train", "classify", "--ensemble", "0"], "--ensemble"),
        (&["train", "classify", "--patch", "0"], "--patch"),
        (
            &["train", "classify", "--time-budget", "1e24h"],
            "--time-budget",
        ),
        (
            &["train", "classify", "--time-budget", "1e-12s"],
            "--time-budget",
        ),
        (
            &["train", "classify", "--time-budget", "0s"],
            "--time-budget",
        ),
        (
            &["train", "classify", "--time-budget", "5 parsecs"],
            "--time-budget",
        ),
        (&["train", "classify", "--lr", "-1"], "--lr"),
        (&["train", "classify", "--lr", "nan"], "--lr"),
        (&["train", "classify", "--lr", "inf"], "--lr"),
        (&["train", "classify", "--batch-size", "0"], "--batch-size"),
        (&["train", "classify", "--epochs", "0"], "--epochs"),
        (&["train", "classify", "--dropout", "1.5"], "--dropout"),
        (
            &["train", "classify", "--hidden-size", "0"],
            "--hidden-size",
        ),
        (&["train", "classify", "--threads", "10000"], "--threads"),
        (&["train", "classify", "--threads", "0"], "--threads"),
        (&["train", "classify", "--mode", "TRANSFORMER"], "mode"),
        (&["train", "classify", "--precision", "fp8"], "precision"),
        (&["train", "lm", "--seq-len", "0"], "--seq-len"),
        (&["train", "lm", "--seq-len", "1"], "--seq-len"),
        (&["train", "lm", "--seq-len", "100000000"], "--seq-len"),
        (
            &["train", "lm", "--embedding-dropout", "1"],
            "--embedding-dropout",
        ),
        (&["train", "lm", "--bidirectional"], "bidirectional"),
        (&["train", "forecast", "--window", "0"], "--window"),
        (&["train", "forecast", "--window", "1000000000"], "--window"),
        (&["train", "forecast", "--horizon", "0"], "--horizon"),
        (
            &["train", "forecast", "--horizon", "18446744073709551615"],
            "too short",
        ),
        (&["train", "forecast", "--test-size", "0"], "--test-size"),
        (&["train", "forecast", "--season", "0"], "--season"),
        (
            &[
                "generate",
                "--model",
                "m.st",
                "--prompt",
                "a",
                "--temperature",
                "0",
            ],
            "--temperature",
        ),
        (
            &[
                "generate",
                "--model",
                "m.st",
                "--prompt",
                "a",
                "--temperature",
                "nan",
            ],
            "--temperature",
        ),
        (&["bench", "--iters", "0"], "--iters"),
        (&["bench", "--threads", "100000"], "--threads"),
        (&["bench", "--lengths", "random"], "--lengths"),
        (&["train", "classify", "--no-such-flag"], "--no-such-flag"),
        (&["train", "classify", "--hidden-size"], "--hidden-size"),
        (&["train"], "command"),
        (&[], "command"),
        (&["fly"], "fly"),
    ];
    for (args, needle) in cases {
        s.fails(args, needle);
    }
}

/// Sizes that would allocate more than the machine has are refused before allocating
/// (the machine's memory is read from /proc/meminfo; elsewhere the library's checked
/// arithmetic still refuses the overflowing ones).
#[cfg(target_os = "linux")]
#[test]
fn sizes_beyond_memory_are_refused_up_front() {
    let s = Sandbox::new();
    s.fails(
        &["train", "classify", "--hidden-size", "1000000000"],
        "memory",
    );
    s.fails(&["train", "classify", "--num-layers", "1000000"], "memory");
    s.fails(&["train", "classify", "--patch", "1000000000000"], "memory");
    s.fails(&["train", "lm", "--embedding-dim", "1000000000"], "memory");
    s.fails(&["train", "lm", "--batch-size", "1000000000000"], "memory");
    s.fails(&["bench", "--hidden-size", "1000000000"], "memory");
    s.fails(
        &["bench", "--batch", "1000000000", "--seq-len", "1000000000"],
        "memory",
    );
}

/// Outputs that cannot be written, or that name an input or another output, are refused
/// before training, and the previous model survives.
#[test]
fn outputs_are_checked_before_training() {
    let s = Sandbox::new();
    std::fs::write(s.path("tr.csv"), b"case,label,t,x0\n0,a,0,1\n").unwrap();
    std::fs::write(s.path("series.csv"), b"y\n1\n2\n").unwrap();
    let long = format!("{}.st", "m".repeat(250));
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "train",
                "classify",
                "--out",
                "m.st",
                "--report",
                "no/such/folder/r.json",
            ],
            "does not exist",
        ),
        (
            &[
                "train",
                "classify",
                "--out",
                "m.st",
                "--plot",
                "no/such/folder/p.png",
            ],
            "does not exist",
        ),
        (
            &["train", "classify", "--report", "m.st", "--out", "m.st"],
            "same file",
        ),
        (
            &["train", "classify", "--plot", "m.st", "--out", "m.st"],
            "same file",
        ),
        (
            &["train", "classify", "--report", "./m.st", "--out", "m.st"],
            "same file",
        ),
        (&["train", "classify", "--out", "."], "folder"),
        (&["train", "classify", "--out", &long], "file name"),
        (
            &[
                "train", "classify", "--train", "tr.csv", "--test", "tr.csv", "--out", "tr.csv",
            ],
            "overwrite the input",
        ),
        (
            &[
                "train",
                "forecast",
                "--data",
                "series.csv",
                "--forecast-csv",
                "series.csv",
            ],
            "overwrite the input",
        ),
        (
            &[
                "train",
                "forecast",
                "--forecast-plot",
                "m.st",
                "--out",
                "m.st",
            ],
            "same file",
        ),
        (
            &[
                "train",
                "forecast",
                "--forecast-csv",
                "a.csv",
                "--forecast-plot",
                "a.csv",
            ],
            "same file",
        ),
        (
            &[
                "predict",
                "--model",
                "m.st",
                "--data",
                "series.csv",
                "--output",
                "series.csv",
            ],
            "overwrite the input",
        ),
        (
            &[
                "predict",
                "--model",
                "m.st",
                "--data",
                "series.csv",
                "--output",
                "m.st",
            ],
            "overwrite the input",
        ),
        (
            &[
                "forward", "--model", "m.st", "--input", "tr.csv", "--output", "m.st",
            ],
            "overwrite the input",
        ),
        (
            &[
                "forward", "--model", "m.st", "--input", "tr.csv", "--output", "tr.csv",
            ],
            "overwrite the input",
        ),
        (
            &[
                "backward",
                "--model",
                "m.st",
                "--input",
                "tr.csv",
                "--grad",
                "series.csv",
                "--output",
                "series.csv",
            ],
            "overwrite the input",
        ),
        (
            &[
                "train",
                "classify",
                "--train",
                "no-such.csv",
                "--test",
                "tr.csv",
            ],
            "no-such.csv",
        ),
        (
            &["train", "classify", "--train", ".", "--test", "tr.csv"],
            "folder",
        ),
        (
            &["train", "lm", "--resume", "--out", "m.st"],
            "no checkpoint",
        ),
    ];
    for (args, needle) in cases {
        s.fails(args, needle);
    }
    // A hard link to an input is the same file under another name.
    std::fs::hard_link(s.path("tr.csv"), s.path("link.csv")).unwrap();
    s.fails(
        &[
            "train", "classify", "--train", "tr.csv", "--test", "tr.csv", "--out", "link.csv",
        ],
        "overwrite the input",
    );
    s.fails(&["train", "classify", "--out", ""], "--out");
    // A read-only folder (skipped as root, who may write anywhere).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = s.path("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        if std::fs::write(ro.join("probe"), b"").is_err() {
            s.fails(&["train", "classify", "--out", "ro/m.st"], "cannot write");
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A one-layer model file (PyTorch names) whose config declares `config`.
fn rnn_file(path: &Path, config: &str) {
    let mut w = TensorWriter::new();
    w.add("weight_ih_l0", &[4, 1], &[0.1; 4]);
    w.add("weight_hh_l0", &[4, 1], &[0.1; 4]);
    w.metadata("config", config);
    w.write(path).unwrap();
}

fn cfg_json(input: u64, hidden: u64, layers: u64) -> String {
    format!(
        r#"{{"mode":"LSTM","input_size":{input},"hidden_size":{hidden},"num_layers":{layers},"bias":false}}"#
    )
}

/// Model files whose metadata declares sizes the tensors do not hold, or that are not
/// model files at all, are refused before anything is allocated.
#[test]
fn model_files_are_validated_before_allocating() {
    let s = Sandbox::new();
    let mut input = TensorWriter::new();
    input.add("input", &[2, 1, 1], &[0.5, -0.5]);
    input.write(s.path("in.st")).unwrap();
    let bad_configs = [
        (
            "huge-hidden.st",
            cfg_json(1, 1_000_000_000, 1),
            "weight_ih_l0",
        ),
        (
            "huge-input.st",
            cfg_json(1_000_000_000_000, 1, 1),
            "weight_ih_l0",
        ),
        (
            "many-layers.st",
            cfg_json(1, 1, 1_000_000_000),
            "1000000000 layers",
        ),
        (
            "wrapping.st",
            cfg_json(1, 1 << 62, 1),
            "more parameters than can be counted",
        ),
        ("no-config.st", String::new(), "config"),
        ("bad-json.st", "{\"mode\":".into(), "config"),
    ];
    for (name, cfg, needle) in &bad_configs {
        if cfg.is_empty() {
            let mut w = TensorWriter::new();
            w.add("weight_ih_l0", &[1], &[0.0]);
            w.write(s.path(name)).unwrap();
        } else {
            rnn_file(&s.path(name), cfg);
        }
        s.fails(
            &[
                "forward", "--model", name, "--input", "in.st", "--output", "out.st",
            ],
            needle,
        );
    }
    // Not safetensors, empty, truncated, and a device that never ends.
    std::fs::write(
        s.path("garbage.st"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk",
    )
    .unwrap();
    std::fs::write(s.path("empty.st"), b"").unwrap();
    let good = std::fs::read(s.path("huge-hidden.st")).unwrap();
    std::fs::write(s.path("cut.st"), &good[..good.len() - 3]).unwrap();
    for name in ["garbage.st", "empty.st", "cut.st"] {
        s.fails(
            &[
                "forward", "--model", name, "--input", "in.st", "--output", "out.st",
            ],
            "safetensors",
        );
    }
    #[cfg(target_os = "linux")]
    s.fails(
        &[
            "forward",
            "--model",
            "/dev/zero",
            "--input",
            "in.st",
            "--output",
            "out.st",
        ],
        "not a regular file",
    );
}

/// A model file with its two weights and 200,000 other tensors is read in linear time
/// and refused for the unexpected ones (it once took minutes: each name was looked up
/// in a list).
#[test]
fn a_file_with_many_tensors_is_refused_quickly() {
    let s = Sandbox::new();
    let mut w = TensorWriter::new();
    w.add("weight_ih_l0", &[4, 1], &[0.1; 4]);
    w.add("weight_hh_l0", &[4, 1], &[0.1; 4]);
    for k in 0..200_000 {
        w.add(&format!("t{k}"), &[1], &[0.0]);
    }
    w.metadata("config", &cfg_json(1, 1, 1));
    w.write(s.path("many.st")).unwrap();
    let mut input = TensorWriter::new();
    input.add("input", &[1, 1, 1], &[0.5]);
    input.write(s.path("in.st")).unwrap();
    s.fails(
        &[
            "forward", "--model", "many.st", "--input", "in.st", "--output", "out.st",
        ],
        "unexpected tensor",
    );
}

fn small_config(mode: Mode, input: usize) -> RnnConfig {
    RnnConfig::new(mode, input, 4).with_batch_first(true)
}

fn forecast_meta() -> ForecastMeta {
    ForecastMeta {
        target: "y".into(),
        inputs: vec![],
        horizon: 3,
        window: 4,
        season: 1,
        transform: Transform::None,
        seasonal_base: vec![false; 3],
        seasonal_indices: vec![],
        first_row: String::new(),
        mean: vec![0.0],
        std: vec![1.0],
        residual_scale: 1.0,
        method: ForecastMethod::Network,
    }
}

fn save_forecaster(path: &Path, meta: ForecastMeta) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let f = Forecaster::new(small_config(Mode::Gru, 1), meta, &mut rng).unwrap();
    ForecasterEnsemble { members: vec![f] }.save(path).unwrap();
}

fn save_classifier(path: &Path, patch: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let meta = ClassifierMeta {
        classes: vec!["a".into(), "b".into()],
        scaler: Standardizer {
            mean: vec![0.0],
            std: vec![1.0],
        },
        patch,
        architecture: Default::default(),
    };
    let c = SequenceClassifier::new(small_config(Mode::Lstm, 1), meta, &mut rng).unwrap();
    ClassifierEnsemble { members: vec![c] }.save(path).unwrap();
}

/// Copies a model file with one metadata entry replaced.
fn with_metadata(from: &Path, to: &Path, key: &str, value: &str) {
    let f = TensorFile::read(from).unwrap();
    let mut w = TensorWriter::new();
    for (name, shape, values) in f.all_f32().unwrap() {
        w.add(&name, &shape, &values);
    }
    for (k, v) in f.metadata_entries() {
        w.metadata(k, if k == key { value } else { v });
    }
    w.write(to).unwrap();
}

/// Task model files whose metadata disagrees with their configuration or tensors.
#[test]
fn task_model_metadata_is_validated() {
    let s = Sandbox::new();
    std::fs::write(s.path("series.csv"), "y\n1\n2\n3\n4\n5\n6\n7\n8\n").unwrap();
    std::fs::write(s.path("seqs.csv"), "case,label,t,x0\n0,a,0,1\n0,a,1,2\n").unwrap();
    std::fs::write(s.path("text.txt"), "abcabc").unwrap();
    let mut short_base = forecast_meta();
    short_base.seasonal_base.truncate(1);
    save_forecaster(&s.path("short-base.st"), short_base);
    let mut short_mean = forecast_meta();
    short_mean.mean.clear();
    save_forecaster(&s.path("short-mean.st"), short_mean);
    let mut zero_std = forecast_meta();
    zero_std.std = vec![0.0];
    save_forecaster(&s.path("zero-std.st"), zero_std);
    save_classifier(&s.path("patch.st"), 1);
    with_metadata(
        &s.path("patch.st"),
        &s.path("huge-patch.st"),
        "model",
        r#"{"classes":["a","b"],"scaler":{"mean":[0.0],"std":[1.0]},"patch":1000000000000}"#,
    );
    with_metadata(
        &s.path("patch.st"),
        &s.path("members.st"),
        "members",
        "1000000000",
    );
    // 100,000 class names in the metadata ask for an output layer the tensors do not hold.
    let classes: Vec<String> = (0..100_000).map(|k| format!("\"c{k}\"")).collect();
    with_metadata(
        &s.path("patch.st"),
        &s.path("many-classes.st"),
        "model",
        &format!(
            r#"{{"classes":[{}],"scaler":{{"mean":[0.0],"std":[1.0]}},"patch":1}}"#,
            classes.join(",")
        ),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let lm = CharLm::new(
        RnnConfig::new(Mode::Lstm, 3, 4),
        Vocabulary::from_text("abc"),
        3,
        &mut rng,
    )
    .unwrap();
    lm.save(s.path("lm.st")).unwrap();
    with_metadata(
        &s.path("lm.st"),
        &s.path("dup-vocab.st"),
        "model",
        r#"{"vocabulary":"abb","embedding_dim":3}"#,
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "predict",
                "--model",
                "short-base.st",
                "--data",
                "series.csv",
                "--output",
                "p.csv",
            ],
            "seasonal_base",
        ),
        (
            &[
                "predict",
                "--model",
                "short-mean.st",
                "--data",
                "series.csv",
                "--output",
                "p.csv",
            ],
            "means",
        ),
        (
            &[
                "predict",
                "--model",
                "zero-std.st",
                "--data",
                "series.csv",
                "--output",
                "p.csv",
            ],
            "standard deviation",
        ),
        (
            &[
                "predict",
                "--model",
                "huge-patch.st",
                "--data",
                "seqs.csv",
                "--output",
                "p.csv",
            ],
            "patch",
        ),
        (
            &[
                "predict",
                "--model",
                "members.st",
                "--data",
                "seqs.csv",
                "--output",
                "p.csv",
            ],
            "members",
        ),
        (
            &[
                "predict",
                "--model",
                "many-classes.st",
                "--data",
                "seqs.csv",
                "--output",
                "p.csv",
            ],
            "the file holds",
        ),
        (
            &[
                "predict",
                "--model",
                "dup-vocab.st",
                "--data",
                "text.txt",
                "--output",
                "p.csv",
            ],
            "vocabulary",
        ),
        (
            &["generate", "--model", "dup-vocab.st", "--prompt", "a"],
            "vocabulary",
        ),
        (
            &["generate", "--model", "lm.st", "--prompt", "xyz"],
            "vocabulary",
        ),
        (&["generate", "--model", "lm.st", "--prompt", ""], "empty"),
        (
            &["generate", "--model", "series.csv", "--prompt", "a"],
            "safetensors",
        ),
    ];
    for (args, needle) in cases {
        s.fails(args, needle);
    }
}

/// `generate` streams: the first characters of a practically endless text arrive while
/// it is still sampling.
#[test]
fn generate_streams_its_text() {
    use std::io::Read;
    let s = Sandbox::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let lm = CharLm::new(
        RnnConfig::new(Mode::Lstm, 3, 4),
        Vocabulary::from_text("ab\n"),
        3,
        &mut rng,
    )
    .unwrap();
    lm.save(s.path("lm.st")).unwrap();
    let mut child = bin()
        .args([
            "generate",
            "--model",
            "lm.st",
            "--prompt",
            "a",
            "--length",
            "1000000000000",
        ])
        .current_dir(s.dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 200];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.iter().all(|b| b"ab\n".contains(b)), "{first:?}");
}

/// Data files whose content contradicts their header, or that are not text.
#[test]
fn data_files_are_checked_against_their_headers() {
    let s = Sandbox::new();
    let ts = |header: &str, data: &str| format!("@problemName x\n{header}\n@data\n{data}\n");
    let cases = [
        (
            "dims.ts",
            ts("@dimensions 2\n@classLabel true a b", "1,2,3:a\n1,2,3:b"),
            "dimensions",
        ),
        (
            "uni.ts",
            ts("@univariate true\n@classLabel true a b", "1,2:3,4:a"),
            "dimensions",
        ),
        (
            "len.ts",
            ts(
                "@equalLength true\n@seriesLength 3\n@classLabel true a b",
                "1,2:a",
            ),
            "seriesLength",
        ),
        (
            "eq.ts",
            ts("@equalLength true\n@classLabel true a b", "1,2,3:a\n1,2:b"),
            "equalLength",
        ),
        (
            "label.ts",
            ts("@classLabel true a b", "1,2,3:a\n1,2,3:c"),
            "classLabel",
        ),
        (
            "nolabel.ts",
            ts("@classLabel false", "1,2,3"),
            "no class labels",
        ),
        (
            "nan.ts",
            ts("@classLabel true a b", "1,nan,3:a"),
            "non-finite",
        ),
        ("gap.ts", ts("@classLabel true a b", "1,?,3:a"), "missing"),
        ("binary.ts", "\u{0}\u{1}".to_string() + "\u{ff}", "no cases"),
    ];
    for (name, text, _) in &cases {
        std::fs::write(s.path(name), text).unwrap();
    }
    std::fs::write(s.path("latin1.ts"), b"@data\n1,2:\xe9\n").unwrap();
    let good = ts("@classLabel true a b", "1,2,3:a\n1,2,4:b\n3,2,1:a\n4,2,1:b");
    std::fs::write(s.path("good.ts"), good).unwrap();
    for (name, _, needle) in &cases {
        s.fails(
            &[
                "train", "classify", "--train", name, "--test", "good.ts", "--out", "m.st",
            ],
            needle,
        );
    }
    s.fails(
        &[
            "train",
            "classify",
            "--train",
            "latin1.ts",
            "--test",
            "good.ts",
        ],
        "UTF-8",
    );
    std::fs::write(s.path("short.txt"), "tiny").unwrap();
    s.fails(
        &["train", "lm", "--text", "short.txt", "--out", "m.st"],
        "at least 1000",
    );
    std::fs::write(s.path("series.csv"), "y\n1\nx\n3\n").unwrap();
    s.fails(
        &["train", "forecast", "--data", "series.csv", "--out", "m.st"],
        "series.csv:3",
    );
    #[cfg(target_os = "linux")]
    {
        s.fails(
            &["train", "lm", "--text", "/dev/zero", "--out", "m.st"],
            "not a regular file",
        );
        s.fails(
            &["train", "forecast", "--data", "/dev/zero", "--out", "m.st"],
            "not a regular file",
        );
    }
}

/// Starts a forecast training on the bundled data that will run for a long time, waits
/// for its first checkpoint and kills it, leaving `m.st.checkpoint.m0`.
fn stopped_run(s: &Sandbox) -> PathBuf {
    let mut child = bin()
        .args([
            "train",
            "forecast",
            "--out",
            "m.st",
            "--ensemble",
            "1",
            "--hidden-size",
            "8",
            "--epochs",
            "100000",
            "--quiet",
        ])
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = s.path("m.st.checkpoint.m0");
    let start = Instant::now();
    while !ckpt.exists() {
        assert!(start.elapsed() < PATIENCE, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    ckpt
}

/// Rewrites a checkpoint with `change` applied to each tensor's values (a tensor is
/// dropped where it returns false; one whose length changed becomes one-dimensional).
fn edit_checkpoint(path: &Path, change: impl Fn(&str, &mut Vec<f32>) -> bool) {
    let f = TensorFile::read(path).unwrap();
    let mut w = TensorWriter::new();
    for (name, shape, mut values) in f.all_f32().unwrap() {
        let len = values.len();
        if change(&name, &mut values) {
            let shape = if values.len() == len {
                shape
            } else {
                vec![values.len()]
            };
            w.add(&name, &shape, &values);
        }
    }
    for (k, v) in f.metadata_entries() {
        w.metadata(k, v);
    }
    w.write(path).unwrap();
}

/// Damaged checkpoints are refused on `--resume` (or stop with a clear message once the
/// loss is not finite), and neither the previous model nor the checkpoint is replaced.
#[test]
fn damaged_checkpoints_are_refused() {
    let s = Sandbox::new();
    let original = std::fs::read(stopped_run(&s)).unwrap();
    let ckpt = s.path("m.st.checkpoint.m0");
    let resume = [
        "train",
        "forecast",
        "--out",
        "m.st",
        "--ensemble",
        "1",
        "--hidden-size",
        "8",
        "--resume",
        "--quiet",
    ];
    type Edit = fn(&str, &mut Vec<f32>) -> bool;
    let edits: [(&str, Edit, &str); 6] = [
        (
            "best tensor too short",
            |n, v| {
                if n == "best.rnn.weight_hh_l0" {
                    v.pop();
                }
                true
            },
            "best.rnn.weight_hh_l0",
        ),
        (
            "weight too short",
            |n, v| {
                if n == "rnn.weight_hh_l0" {
                    v.pop();
                }
                true
            },
            "rnn.weight_hh_l0",
        ),
        (
            "optimizer moment missing",
            |n, _| n != "optim.rnn.weight_hh_l0.exp_avg",
            "exp_avg",
        ),
        (
            "optimizer moment too short",
            |n, v| {
                if n == "optim.head.bias.exp_avg_sq" {
                    v.pop();
                }
                true
            },
            "exp_avg_sq",
        ),
        (
            "extra optimizer buffer",
            |n, v| {
                if n == "optim.head.bias.exp_avg_sq" {
                    v.push(0.0);
                }
                true
            },
            "exp_avg_sq",
        ),
        (
            "NaN weight",
            |n, v| {
                if n == "rnn.weight_hh_l0" {
                    v[0] = f32::NAN;
                }
                true
            },
            "diverged",
        ),
    ];
    for (what, edit, needle) in edits {
        std::fs::write(&ckpt, &original).unwrap();
        edit_checkpoint(&ckpt, edit);
        let edited = std::fs::read(&ckpt).unwrap();
        s.fails(&resume, needle);
        assert_eq!(
            std::fs::read(&ckpt).unwrap(),
            edited,
            "{what}: checkpoint changed"
        );
    }
}

/// An unknown kernel level in `RECURRENT_KERNEL` is an error, not silently the fastest.
#[test]
fn unknown_kernel_level_is_refused() {
    let out = bin()
        .args(["bench", "--iters", "1"])
        .env("RECURRENT_KERNEL", "avx9000")
        .output()
        .unwrap();
    assert_one_line_error(&out, "RECURRENT_KERNEL", "RECURRENT_KERNEL=avx9000");
}
