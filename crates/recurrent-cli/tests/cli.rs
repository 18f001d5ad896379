//! End-to-end tests of `recurrent forward` / `recurrent backward`: every PyTorch fixture
//! through the binary, and every documented kind of bad input.

use recurrent::io::{TensorFile, TensorWriter};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The acceptance tolerance against PyTorch's f32 numbers (see the library's golden tests).
const ATOL: f32 = 2e-5;
const RTOL: f32 = 2e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn recurrent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_recurrent"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Splits a fixture into the three files a user would have: model, input, grad.
fn split_fixture(fx: &TensorFile, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut model = TensorWriter::new();
    let mut input = TensorWriter::new();
    let mut grad = TensorWriter::new();
    for name in fx.names() {
        if name == "lengths" {
            let l = fx.lengths(name).unwrap().unwrap();
            let l: Vec<i64> = l.iter().map(|&v| v as i64).collect();
            input.add_i64("lengths", &[l.len()], &l);
            continue;
        }
        let a = fx.require_f32(name).unwrap();
        if let Some(p) = name.strip_prefix("param.") {
            model.add_array(p, &a);
        } else if ["input", "h0", "c0"].contains(&name) {
            input.add_array(name, &a);
        } else if ["grad_output", "grad_h_n", "grad_c_n"].contains(&name) {
            grad.add_array(name, &a);
        }
    }
    model.metadata("config", fx.metadata("config").unwrap());
    let paths = (
        dir.join("model.safetensors"),
        dir.join("in.safetensors"),
        dir.join("grad.safetensors"),
    );
    model.write(&paths.0).unwrap();
    input.write(&paths.1).unwrap();
    grad.write(&paths.2).unwrap();
    paths
}

fn compare(case: &str, got: &TensorFile, expected: &TensorFile, name: &str, scaled: bool) {
    let g = got
        .require_f32(name)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let e = expected.require_f32(name).unwrap();
    assert_eq!(g.shape(), e.shape(), "{case}: {name} shape");
    let max = e.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let atol = if scaled { ATOL + RTOL * max } else { ATOL };
    for (i, (a, b)) in g.iter().zip(e.iter()).enumerate() {
        assert!(
            (a - b).abs() <= atol + RTOL * b.abs(),
            "{case}: {name}[{i}] = {a}, PyTorch {b}"
        );
    }
}

#[test]
fn every_layer_fixture_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut count = 0;
    for entry in std::fs::read_dir(fixtures().join("layers")).unwrap() {
        let path = entry.unwrap().path();
        let case = path.file_name().unwrap().to_string_lossy().to_string();
        let fx = TensorFile::read(&path).unwrap();
        let (model, input, grad) = split_fixture(&fx, dir.path());
        let out = dir.path().join("out.safetensors");
        let o = recurrent(&[
            "forward",
            "--model",
            s(&model),
            "--input",
            s(&input),
            "--output",
            s(&out),
        ]);
        assert!(
            o.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = TensorFile::read(&out).unwrap();
        for name in ["output", "h_n", "c_n"] {
            if fx.contains(name) {
                compare(&case, &got, &fx, name, false);
            } else {
                assert!(!got.contains(name), "{case}: unexpected {name}");
            }
        }
        let o = recurrent(&[
            "backward",
            "--model",
            s(&model),
            "--input",
            s(&input),
            "--grad",
            s(&grad),
            "--output",
            s(&out),
        ]);
        assert!(
            o.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = TensorFile::read(&out).unwrap();
        let scaled = fx
            .metadata("config")
            .unwrap()
            .contains("\"layer_norm\": true");
        for name in fx.names() {
            if name.starts_with("grad.") || ["grad_input", "grad_h0", "grad_c0"].contains(&name) {
                compare(&case, &got, &fx, name, scaled);
            }
        }
        let expected_count = fx
            .names()
            .iter()
            .filter(|n| n.starts_with("grad.") || ["grad_input", "grad_h0", "grad_c0"].contains(n))
            .count();
        assert_eq!(
            got.names().len(),
            expected_count,
            "{case}: backward output tensors {:?}",
            got.names()
        );
        count += 1;
    }
    assert!(count > 100, "only {count} fixtures");
}

/// A small valid LSTM model and input to corrupt in the error tests.
struct Valid {
    dir: tempfile::TempDir,
}

impl Valid {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut m = TensorWriter::new();
        m.add("weight_ih_l0", &[8, 3], &[0.1; 24])
            .add("weight_hh_l0", &[8, 2], &[0.1; 16])
            .add("bias_ih_l0", &[8], &[0.0; 8])
            .add("bias_hh_l0", &[8], &[0.0; 8])
            .metadata(
                "config",
                r#"{"mode":"LSTM","input_size":3,"hidden_size":2}"#,
            );
        m.write(dir.path().join("model.safetensors")).unwrap();
        let mut i = TensorWriter::new();
        i.add("input", &[4, 2, 3], &[0.5; 24]);
        i.write(dir.path().join("in.safetensors")).unwrap();
        Valid { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Runs `forward` and returns (success, stderr).
    fn forward(&self, model: &Path, input: &Path) -> (bool, String) {
        let out = self.path("out.safetensors");
        let o = recurrent(&[
            "forward",
            "--model",
            s(model),
            "--input",
            s(input),
            "--output",
            s(&out),
        ]);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    }
    fn write_model(&self, config: &str, tensors: &[(&str, Vec<usize>)]) -> PathBuf {
        let mut m = TensorWriter::new();
        for (n, shape) in tensors {
            let len = shape.iter().product();
            m.add(n, shape, &vec![0.1; len]);
        }
        m.metadata("config", config);
        let p = self.path("bad_model.safetensors");
        m.write(&p).unwrap();
        p
    }
    fn write_input(&self, tensors: &[(&str, Vec<usize>, f32)]) -> PathBuf {
        let mut w = TensorWriter::new();
        for (n, shape, v) in tensors {
            let len = shape.iter().product();
            w.add(n, shape, &vec![*v; len]);
        }
        let p = self.path("bad_in.safetensors");
        w.write(&p).unwrap();
        p
    }
}

/// Asserts a failure with exactly one stderr line containing every `needle`, and that no
/// output file was written.
fn assert_fails(v: &Valid, (ok, err): (bool, String), needles: &[&str]) {
    assert!(!ok, "expected failure, stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr {err:?} should mention {n:?}");
    }
    assert!(
        !v.path("out.safetensors").exists(),
        "no output file on failure"
    );
}

#[test]
fn valid_model_runs() {
    let v = Valid::new();
    let (ok, err) = v.forward(&v.path("model.safetensors"), &v.path("in.safetensors"));
    assert!(ok, "{err}");
    let out = TensorFile::read(v.path("out.safetensors")).unwrap();
    assert_eq!(out.require_f32("output").unwrap().shape(), &[4, 2, 2]);
    assert_eq!(out.require_f32("c_n").unwrap().shape(), &[1, 2, 2]);
}

#[test]
fn input_shape_errors_name_the_tensor() {
    let v = Valid::new();
    let m = v.path("model.safetensors");
    let i = v.write_input(&[("input", vec![4, 2, 5], 0.0)]);
    assert_fails(&v, v.forward(&m, &i), &["input", "[4, 2, 5]", "3)"]);
    let i = v.write_input(&[("input", vec![4, 2, 3, 1], 0.0)]);
    assert_fails(&v, v.forward(&m, &i), &["input"]);
    let i = v.write_input(&[
        ("input", vec![4, 2, 3], 0.0),
        ("h0", vec![1, 3, 2], 0.0),
        ("c0", vec![1, 2, 2], 0.0),
    ]);
    assert_fails(&v, v.forward(&m, &i), &["h0", "[1, 2, 2]", "[1, 3, 2]"]);
    let i = v.write_input(&[("input", vec![4, 2, 3], 0.0), ("h0", vec![1, 2, 2], 0.0)]);
    assert_fails(&v, v.forward(&m, &i), &["c0"]);
    let i = v.write_input(&[("h0", vec![1, 2, 2], 0.0)]);
    assert_fails(&v, v.forward(&m, &i), &["missing", "input"]);
    let i = v.write_input(&[("input", vec![4, 2, 3], f32::NAN)]);
    assert_fails(&v, v.forward(&m, &i), &["input", "NaN"]);
}

#[test]
fn bad_lengths_are_clear_errors() {
    let v = Valid::new();
    let m = v.path("model.safetensors");
    for (lengths, needle) in [
        (vec![0i64, 4], "lengths[0] = 0"),
        (vec![5, 4], "lengths[0] = 5"),
        (vec![4], "expected 2 lengths"),
    ] {
        let mut w = TensorWriter::new();
        w.add("input", &[4, 2, 3], &[0.5; 24])
            .add_i64("lengths", &[lengths.len()], &lengths);
        let p = v.path("len_in.safetensors");
        w.write(&p).unwrap();
        assert_fails(&v, v.forward(&m, &p), &[needle]);
    }
}

#[test]
fn model_errors_are_clear() {
    let v = Valid::new();
    let i = v.path("in.safetensors");
    let lstm = |h: usize| -> Vec<(&'static str, Vec<usize>)> {
        vec![
            ("weight_ih_l0", vec![4 * h, 3]),
            ("weight_hh_l0", vec![4 * h, h]),
            ("bias_ih_l0", vec![4 * h]),
            ("bias_hh_l0", vec![4 * h]),
        ]
    };
    let m = v.write_model(
        r#"{"mode":"LSTM","input_size":3,"hidden_size":3}"#,
        &lstm(2),
    );
    assert_fails(
        &v,
        v.forward(&m, &i),
        &["weight_ih_l0", "[12, 3]", "[8, 3]"],
    );
    let m = v.write_model(
        r#"{"mode":"LSTM","input_size":3,"hidden_size":2}"#,
        &lstm(2)[..3],
    );
    assert_fails(&v, v.forward(&m, &i), &["missing", "bias_hh_l0"]);
    let m = v.write_model(
        r#"{"mode":"LSTMX","input_size":3,"hidden_size":2}"#,
        &lstm(2),
    );
    assert_fails(&v, v.forward(&m, &i), &["mode", "LSTMX"]);
    let m = v.write_model(
        r#"{"mode":"LSTM","input_size":3,"hidden_size":2,"proj_size":2}"#,
        &lstm(2),
    );
    assert_fails(&v, v.forward(&m, &i), &["proj_size", "hidden_size"]);
    let m = v.write_model(
        r#"{"mode":"GRU","input_size":3,"hidden_size":2,"proj_size":1}"#,
        &lstm(2),
    );
    assert_fails(&v, v.forward(&m, &i), &["proj_size", "GRU"]);
    let mut tensors = lstm(2);
    tensors.push(("weight_ih_l1", vec![8, 2]));
    let m = v.write_model(
        r#"{"mode":"LSTM","input_size":3,"hidden_size":2}"#,
        &tensors,
    );
    assert_fails(&v, v.forward(&m, &i), &["unexpected", "weight_ih_l1"]);
}

#[test]
fn nan_weights_and_broken_files_are_clear_errors() {
    let v = Valid::new();
    let i = v.path("in.safetensors");
    let mut m = TensorWriter::new();
    m.add(
        "weight_ih_l0",
        &[2, 3],
        &[0.1, f32::NAN, 0.0, 0.0, 0.0, 0.0],
    )
    .add("weight_hh_l0", &[2, 2], &[0.0; 4])
    .metadata(
        "config",
        r#"{"mode":"RNN_TANH","input_size":3,"hidden_size":2,"bias":false}"#,
    );
    let p = v.path("nan.safetensors");
    m.write(&p).unwrap();
    assert_fails(&v, v.forward(&p, &i), &["weight_ih_l0", "NaN"]);

    let good = std::fs::read(v.path("model.safetensors")).unwrap();
    let p = v.path("trunc.safetensors");
    std::fs::write(&p, &good[..good.len() - 10]).unwrap();
    assert_fails(&v, v.forward(&p, &i), &["trunc.safetensors"]);
    std::fs::write(&p, b"hello, not a tensor file").unwrap();
    assert_fails(&v, v.forward(&p, &i), &["safetensors"]);
    assert_fails(
        &v,
        v.forward(&v.path("nope.safetensors"), &i),
        &["nope.safetensors"],
    );
}

#[test]
fn failed_run_keeps_previous_output() {
    let v = Valid::new();
    let out = v.path("out.safetensors");
    std::fs::write(&out, b"previous").unwrap();
    let bad = v.write_input(&[("input", vec![4, 2, 7], 0.0)]);
    let o = recurrent(&[
        "forward",
        "--model",
        s(&v.path("model.safetensors")),
        "--input",
        s(&bad),
        "--output",
        s(&out),
    ]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
}

/// `bench --json` describes the detected CPU and the blocking derived from it, for a
/// model and for the plain product (`--gemm`) that serves as the machine's roof.
#[test]
fn bench_json_reports_the_cpu() {
    for args in [
        &[
            "bench",
            "--json",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--hidden-size",
            "8",
            "--input-size",
            "4",
            "--seq-len",
            "3",
        ][..],
        &[
            "bench", "--json", "--iters", "2", "--warmup", "0", "--gemm", "64",
        ][..],
    ] {
        let out = recurrent(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(j["median_ms"].as_f64().unwrap() > 0.0, "{j}");
        assert!(j["gflops"].as_f64().unwrap() > 0.0, "{j}");
        let cpu = &j["cpu"];
        assert!(cpu["cores"].as_u64().unwrap() >= 1, "{cpu}");
        assert!(
            ["portable", "avx2", "avx512", "amx"].contains(&cpu["level"].as_str().unwrap()),
            "{cpu}"
        );
        let group = cpu["panel_group_bytes"].as_u64().unwrap();
        assert!((256 << 10..=3 << 19).contains(&group), "{cpu}");
        let columns = cpu["column_block_bytes"].as_u64().unwrap();
        assert!((128 << 10..=1 << 20).contains(&columns), "{cpu}");
        // 0 exactly where the CPU cannot run bfloat16 products.
        let speedup = cpu["bf16_speedup"].as_f64().unwrap();
        assert_eq!(speedup == 0.0, !cpu["bf16"].as_bool().unwrap(), "{cpu}");
    }
}
