//! `recurrent train`, `predict` and `generate` end to end on small generated data: results,
//! reproducibility, resuming, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn recurrent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recurrent"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn fail(o: &Output, needle: &str) {
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

/// Every tensor of a safetensors file, by name (metadata order in the header may vary).
fn tensors(p: &Path) -> Vec<(String, Vec<f32>)> {
    let f = recurrent::io::TensorFile::read(p).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = f
        .names()
        .into_iter()
        .map(|n| {
            (
                n.to_string(),
                f.require_f32(n).unwrap().iter().copied().collect(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Two classes of noisy sine waves with different frequencies, long CSV format.
fn write_classification(dir: &Path, name: &str, cases: usize, seed: u64) -> PathBuf {
    let mut csv = String::from("case,label,t,x0\n");
    let mut state = seed;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.2
    };
    for c in 0..cases {
        let label = c % 2;
        let len = 12 + c % 5;
        for t in 0..len {
            let f = if label == 0 { 0.3 } else { 0.9 };
            csv += &format!(
                "{c},{},{t},{:.4}\n",
                ["slow", "fast"][label],
                (f * t as f64).sin() + noise()
            );
        }
    }
    let p = dir.join(name);
    std::fs::write(&p, csv).unwrap();
    p
}

/// `recurrent predict --model MODEL --data DATA --output OUTPUT`.
fn predict(model: &Path, data: &Path, output: &Path) -> Output {
    recurrent(&[
        "predict",
        "--model",
        s(model),
        "--data",
        s(data),
        "--output",
        s(output),
    ])
}

fn classify_args<'a>(
    train: &'a Path,
    test: &'a Path,
    out: &'a Path,
    report: &'a Path,
    epochs: &'a str,
) -> Vec<&'a str> {
    vec![
        "train",
        "classify",
        "--train",
        s(train),
        "--test",
        s(test),
        "--out",
        s(out),
        "--report",
        s(report),
        "--epochs",
        epochs,
        "--hidden-size",
        "8",
        "--quiet",
        "--threads",
        "1",
    ]
}

#[test]
fn classify_learns_reproducibly_resumes_and_predicts() {
    let d = tempfile::tempdir().unwrap();
    let train = write_classification(d.path(), "train.csv", 40, 1);
    let test = write_classification(d.path(), "test.csv", 20, 2);
    let (out, report) = (d.path().join("m.safetensors"), d.path().join("r.json"));
    let mut args = classify_args(&train, &test, &out, &report, "30");
    args.extend(["--ensemble", "2"]);
    ok(&recurrent(&args));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(r["test_accuracy"].as_f64().unwrap() >= 0.9, "{r}");
    assert_eq!(r["confusion_matrix"].as_array().unwrap().len(), 2);
    assert!(r["settings"]["seed"].is_u64() && r["training"]["train_seconds"].is_f64());
    let first = std::fs::read(&out).unwrap();

    // Same seed, same model.
    let out2 = d.path().join("m2.safetensors");
    let mut args = classify_args(&train, &test, &out2, &report, "30");
    args.extend(["--ensemble", "2"]);
    ok(&recurrent(&args));
    assert_eq!(
        tensors(&out),
        tensors(&out2),
        "same seed gives the same model"
    );

    // Predict on the test file.
    let pred = d.path().join("p.csv");
    ok(&predict(&out, &test, &pred));
    let csv = std::fs::read_to_string(&pred).unwrap();
    assert!(
        csv.starts_with("case,label,predicted,p_fast,p_slow\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 21);

    // A test label never seen in training: error, and the existing model is kept.
    let bad_test = d.path().join("bad.csv");
    std::fs::write(&bad_test, "case,label,t,x0\n0,medium,0,0.5\n").unwrap();
    fail(
        &recurrent(&classify_args(&train, &bad_test, &out, &report, "30")),
        "medium",
    );
    assert_eq!(first, std::fs::read(&out).unwrap(), "model file untouched");
}

/// LSTM-FCN on variable-length sequences: it learns, the same seed gives the same model
/// (BatchNorm's running statistics included), the report names the model, and `predict`
/// reads it back.
#[test]
fn classify_lstm_fcn_learns_and_predicts() {
    let d = tempfile::tempdir().unwrap();
    let train = write_classification(d.path(), "train.csv", 40, 1);
    let test = write_classification(d.path(), "test.csv", 20, 2);
    let (out, report) = (d.path().join("m.safetensors"), d.path().join("r.json"));
    let mut args = classify_args(&train, &test, &out, &report, "15");
    args.extend(["--ensemble", "1", "--model", "lstm-fcn"]);
    ok(&recurrent(&args));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(r["test_accuracy"].as_f64().unwrap() >= 0.9, "{r}");
    assert_eq!(r["settings"]["model"], "lstm-fcn");
    let stored = tensors(&out);
    assert!(stored.iter().any(|(n, _)| n == "fcn.block3.bn.running_var"));
    let out2 = d.path().join("m2.safetensors");
    let mut args = classify_args(&train, &test, &out2, &report, "15");
    args.extend(["--ensemble", "1", "--model", "lstm-fcn"]);
    ok(&recurrent(&args));
    assert_eq!(stored, tensors(&out2), "same seed gives the same model");
    let pred = d.path().join("p.csv");
    ok(&predict(&out, &test, &pred));
    assert_eq!(std::fs::read_to_string(&pred).unwrap().lines().count(), 21);
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let d = tempfile::tempdir().unwrap();
    // Enough data for an epoch to take a while, so the run below is stopped early.
    let train = write_classification(d.path(), "train.csv", 4000, 3);
    let test = write_classification(d.path(), "test.csv", 8, 4);
    let report = d.path().join("r.json");
    let straight = d.path().join("straight.safetensors");
    let mut args = classify_args(&train, &test, &straight, &report, "12");
    args.extend(["--ensemble", "1"]);
    ok(&recurrent(&args));

    // The same run killed (SIGKILL) as soon as its first checkpoint exists; resuming it
    // gives exactly the uninterrupted model.
    let resumed = d.path().join("resumed.safetensors");
    let checkpoint = d.path().join("resumed.safetensors.checkpoint.m0");
    let mut args = classify_args(&train, &test, &resumed, &report, "12");
    args.extend(["--ensemble", "1"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_recurrent"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !checkpoint.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint was seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!resumed.exists(), "a killed run writes no model");
    let mut args = classify_args(&train, &test, &resumed, &report, "12");
    args.extend(["--ensemble", "1", "--resume"]);
    ok(&recurrent(&args));
    assert_eq!(tensors(&straight), tensors(&resumed));
    assert!(
        !d.path().join("resumed.safetensors.checkpoint.m0").exists(),
        "removed when done"
    );

    let mut args = classify_args(&train, &test, &resumed, &report, "12");
    args.extend(["--ensemble", "1", "--resume"]);
    fail(&recurrent(&args), "no checkpoint");
}

#[test]
fn forecast_reports_metrics_and_rejects_bad_series() {
    let d = tempfile::tempdir().unwrap();
    let mut csv = String::from("month,sales,temp\n");
    for t in 0..96 {
        let v = 100.0 + t as f64 + 20.0 * (t as f64 * std::f64::consts::PI / 6.0).sin();
        csv += &format!("m{t},{v:.3},{}\n", t % 7);
    }
    let data = d.path().join("s.csv");
    std::fs::write(&data, &csv).unwrap();
    let (out, report, fc, plot) = (
        d.path().join("f.safetensors"),
        d.path().join("r.json"),
        d.path().join("f.csv"),
        d.path().join("f.png"),
    );
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "forecast",
            "--data",
            s(&data),
            "--horizon",
            "6",
            "--test-size",
            "12",
            "--out",
            s(&out),
            "--report",
            s(&report),
            "--forecast-csv",
            s(&fc),
            "--forecast-plot",
            s(&plot),
            "--epochs",
            "20",
            "--ensemble",
            "1",
            "--hidden-size",
            "8",
            "--quiet",
            "--threads",
            "1",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let run = |a: Vec<String>| recurrent(&a.iter().map(String::as_str).collect::<Vec<_>>());
    fail(&run(args(&[])), "--target");
    ok(&run(args(&["--target", "sales", "--inputs", "temp"])));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for k in [
        "test_rmse",
        "test_mae",
        "test_mape",
        "naive_rmse",
        "seasonal_naive_rmse",
        "ets_rmse",
        "ets_mae",
        "ets_mape",
        "theta_rmse",
        "theta_mae",
        "theta_mape",
        "network_rmse",
    ] {
        assert!(r[k].as_f64().unwrap().is_finite(), "{k} in {r}");
    }
    // The least backtest error is kept, unless it uses the network without beating the
    // best classic candidate significantly: then that one.
    let selected = r["selected"].as_str().unwrap().to_string();
    let backtest = r["backtest_rmse"].as_object().unwrap();
    let uses_network = |m: &str| m == "network" || m == "combination";
    let least = |keep: &dyn Fn(&str) -> bool| {
        backtest
            .iter()
            .filter(|(m, _)| keep(m))
            .map(|(_, v)| v.as_f64().unwrap())
            .fold(f64::INFINITY, f64::min)
    };
    let best = least(&|_| true);
    let statistic = r["backtest_network_statistic"].as_f64();
    let network_best = backtest
        .iter()
        .any(|(m, v)| uses_network(m) && v.as_f64() == Some(best));
    let want = if network_best && !matches!(statistic, Some(s) if s < -1.645) {
        least(&|m| !uses_network(m))
    } else {
        best
    };
    assert_eq!(backtest[&selected].as_f64(), Some(want), "{r}");
    // On a clean seasonal series with a trend, both classic baselines (refit at each origin
    // on the deseasonalised history) beat the naive forecast.
    for k in ["ets_rmse", "theta_rmse"] {
        assert!(r[k].as_f64() < r["naive_rmse"].as_f64(), "{k} in {r}");
    }
    let csv = std::fs::read_to_string(&fc).unwrap();
    assert!(
        csv.starts_with("time,truth,forecast,naive,seasonal_naive,origin,ets,theta,network\n"),
        "{csv}"
    );
    // The forecast column is the selected method's, from the columns beside it.
    for line in csv.lines().skip(1) {
        let v: Vec<f64> = line
            .split(',')
            .map(|x| x.parse().unwrap_or(f64::NAN))
            .collect();
        let (forecast, naive, seasonal, ets, theta, network) = (v[2], v[3], v[4], v[6], v[7], v[8]);
        let want = match selected.as_str() {
            "network" => network,
            "ets" => ets,
            "theta" => theta,
            "ets_theta" => (ets + theta) / 2.0,
            "combination" => (network + ets + theta) / 3.0,
            "naive" => naive,
            "seasonal_naive" => seasonal,
            _ => forecast,
        };
        assert!(
            (forecast - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "{selected}: {line}"
        );
    }
    assert_eq!(r["season"], 12);
    assert_eq!(r["points_forecast"], 12);
    assert_eq!(std::fs::read_to_string(&fc).unwrap().lines().count(), 13);
    assert!(std::fs::metadata(&plot).unwrap().len() > 1000);
    let pred = d.path().join("p.csv");
    ok(&predict(&out, &data, &pred));
    assert_eq!(std::fs::read_to_string(&pred).unwrap().lines().count(), 7);
    // The clean seasonal series is deseasonalised; its seasonal positions count from the
    // first row "m0": a file with rows before it gives the same forecast, one without it
    // is refused.
    assert_eq!(r["deseasonalised"], true, "{r}");
    let series = std::fs::read_to_string(&data).unwrap();
    let longer = d.path().join("longer.csv");
    std::fs::write(&longer, series.replacen("\n", "\nearly,90,1\n", 1)).unwrap();
    let pred_longer = d.path().join("p2.csv");
    ok(&predict(&out, &longer, &pred_longer));
    assert_eq!(
        std::fs::read_to_string(&pred).unwrap(),
        std::fs::read_to_string(&pred_longer).unwrap()
    );
    let later = d.path().join("later.csv");
    let without_first: Vec<&str> = series
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&later, without_first.join("\n") + "\n").unwrap();
    fail(&predict(&out, &later, &pred_longer), "\"m0\"");

    fail(&run(args(&["--target", "price"])), "price");
    let short = d.path().join("short.csv");
    std::fs::write(&short, "time,v\n1,1\n2,2\n3,3\n").unwrap();
    let o = recurrent(&[
        "train",
        "forecast",
        "--data",
        s(&short),
        "--horizon",
        "2",
        "--out",
        s(&out),
        "--quiet",
    ]);
    fail(&o, "too short");
    let gap = d.path().join("gap.csv");
    std::fs::write(&gap, "time,v\n1,1\n2,\n3,3\n").unwrap();
    let o = recurrent(&[
        "train",
        "forecast",
        "--data",
        s(&gap),
        "--out",
        s(&out),
        "--quiet",
    ]);
    fail(&o, "gap.csv:3");
}

#[test]
fn lm_trains_generates_and_rejects_non_utf8() {
    let d = tempfile::tempdir().unwrap();
    let text = "the cat sat on the mat. the dog sat on the log. ".repeat(60);
    let path = d.path().join("t.txt");
    std::fs::write(&path, &text).unwrap();
    // A small LM on `path` written to `out`, plus `extra` arguments; returns its report.
    let train_lm = |out: &std::path::Path, extra: &[&str]| -> serde_json::Value {
        let report = out.with_extension("json");
        let mut args = vec![
            "train",
            "lm",
            "--text",
            s(&path),
            "--out",
            s(out),
            "--report",
            s(&report),
            "--hidden-size",
            "32",
            "--embedding-dim",
            "8",
            "--seq-len",
            "32",
            "--epoch-chars",
            "20000",
            "--lr",
            "0.01",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        ok(&recurrent(&args));
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
    };
    let out = d.path().join("lm.safetensors");
    let r = train_lm(
        &out,
        &[
            "--batch-size",
            "8",
            "--epochs",
            "6",
            "--embedding-dropout",
            "0.1",
            "--threads",
            "1",
        ],
    );
    let bpc = r["test_bpc"].as_f64().unwrap();
    assert!(
        bpc < 1.5,
        "a repetitive text of 14 symbols is learnt far below log2(14) = 3.8 bits: {bpc}"
    );
    assert_eq!(r["carry_state"], true);

    // Independent windows, and batches of two shards (24 rows): the 2.6k training
    // characters make 3 batches per epoch, hence more epochs.
    let w = train_lm(
        &d.path().join("windows.safetensors"),
        &[
            "--batch-size",
            "24",
            "--epochs",
            "20",
            "--carry-state",
            "false",
        ],
    );
    let windows_bpc = w["test_bpc"].as_f64().unwrap();
    assert_eq!(w["carry_state"], false);
    assert!(
        windows_bpc < 1.5,
        "independent windows, two shards: {windows_bpc}"
    );
    let g = ok(&recurrent(&[
        "generate",
        "--model",
        s(&out),
        "--prompt",
        "the ",
        "--length",
        "30",
        "--temperature",
        "0.5",
        "--top-k",
        "3",
        "--seed",
        "7",
    ]));
    assert_eq!(g.trim_end_matches('\n').chars().count(), 34);
    let g2 = ok(&recurrent(&[
        "generate",
        "--model",
        s(&out),
        "--prompt",
        "the ",
        "--length",
        "30",
        "--temperature",
        "0.5",
        "--top-k",
        "3",
        "--seed",
        "7",
    ]));
    assert_eq!(g, g2, "same seed, same sample");
    fail(
        &recurrent(&["generate", "--model", s(&out), "--prompt", "XYZ"]),
        "vocabulary",
    );

    // `predict` scores the held-out tail as the report did: one stream.
    let n = text.chars().count();
    let tail: String = text.chars().skip(n - n / 10).collect();
    let (tail_path, scored) = (d.path().join("tail.txt"), d.path().join("bpc.csv"));
    std::fs::write(&tail_path, &tail).unwrap();
    ok(&predict(&out, &tail_path, &scored));
    let csv = std::fs::read_to_string(&scored).unwrap();
    let row = csv.strip_prefix("characters,bits_per_char\n").unwrap();
    let (count, value) = row.trim_end().split_once(',').unwrap();
    assert_eq!(count.parse::<usize>().unwrap(), n / 10);
    let scored_bpc: f64 = value.parse().unwrap();
    assert!(
        (scored_bpc - bpc).abs() < 1e-9,
        "predict {scored_bpc} vs report {bpc}"
    );
    std::fs::write(&tail_path, "the cat\nthe Zebra").unwrap();
    fail(
        &recurrent(&["predict", "--model", s(&out), "--data", s(&tail_path)]),
        "line 2: character 'Z' is not in the model's vocabulary",
    );

    let bad = d.path().join("bad.txt");
    std::fs::write(&bad, b"abc\xfe").unwrap();
    fail(
        &recurrent(&[
            "train",
            "lm",
            "--text",
            s(&bad),
            "--out",
            s(&out),
            "--quiet",
        ]),
        "not UTF-8",
    );
    fail(
        &recurrent(&[
            "train",
            "lm",
            "--text",
            s(&path),
            "--embedding-dropout",
            "1.5",
            "--out",
            s(&out),
            "--quiet",
        ]),
        "--embedding-dropout",
    );
}

/// Pairs `word<TAB>letters spelt out` (`cab` -> `C A B`): a rule the model can learn.
fn write_pairs(dir: &Path, name: &str, words: &[&str]) -> PathBuf {
    let mut tsv = String::from("word\tspelling\n");
    for w in words {
        let spelt: Vec<String> = w
            .chars()
            .map(|c| c.to_ascii_uppercase().to_string())
            .collect();
        tsv += &format!("{w}\t{}\n", spelt.join(" "));
    }
    let p = dir.join(name);
    std::fs::write(&p, tsv).unwrap();
    p
}

#[test]
fn seq2seq_learns_reports_and_predicts() {
    let d = tempfile::tempdir().unwrap();
    let letters = ['a', 'b', 'c', 'd', 'e', 'f'];
    let mut state = 11u64;
    let mut words = Vec::new();
    for _ in 0..700 {
        let mut w = String::new();
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        for k in 0..1 + (state >> 60) as usize % 4 {
            w.push(letters[(state >> (20 + 5 * k)) as usize % letters.len()]);
        }
        words.push(w);
    }
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let train = write_pairs(d.path(), "train.tsv", &refs[..600]);
    // One test word has a letter never seen in training (on both sides).
    let mut test_words = refs[600..].to_vec();
    test_words.push("gab");
    let test = write_pairs(d.path(), "test.tsv", &test_words);
    let (out, report) = (d.path().join("s2s.safetensors"), d.path().join("s2s.json"));
    let stdout = ok(&recurrent(&[
        "train",
        "seq2seq",
        "--train",
        s(&train),
        "--test",
        s(&test),
        "--out",
        s(&out),
        "--report",
        s(&report),
        "--hidden-size",
        "32",
        "--embedding-dim",
        "16",
        "--epochs",
        "12",
        "--lr",
        "0.01",
        "--beam",
        "2",
        "--threads",
        "2",
    ]));
    assert!(
        stdout.contains("characters") && stdout.contains("space-separated tokens"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 test tokens never occur in the training data"),
        "{stdout}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let ter = r["test_token_error_rate"].as_f64().unwrap();
    let ser = r["test_sequence_error_rate"].as_f64().unwrap();
    assert!(
        ter < 0.1 && ser < 0.3,
        "spelling words out is learnt: {ter} {ser}"
    );
    assert!((r["test_exact_match"].as_f64().unwrap() + ser - 1.0).abs() < 1e-9);
    assert_eq!(r["examples"].as_array().unwrap().len(), 8);

    // predict: the pairs file gives references, a one-column file only sources.
    let csv = d.path().join("pred.csv");
    ok(&predict(&out, &test, &csv));
    let written = std::fs::read_to_string(&csv).unwrap();
    assert!(
        written.starts_with("source,prediction,reference,edit_distance\n"),
        "{written}"
    );
    assert_eq!(written.lines().count(), test_words.len() + 1);
    let sources = d.path().join("sources.csv");
    std::fs::write(&sources, "word\ncab\nfade\n").unwrap();
    ok(&predict(&out, &sources, &csv));
    let written = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(written.lines().next(), Some("source,prediction"));
    assert_eq!(written.lines().count(), 3);

    // Bad pairs files name the line.
    let bad = d.path().join("bad.tsv");
    std::fs::write(&bad, "word\tspelling\nab\tA B\nlonely\n").unwrap();
    let args = |train: &Path, extra: &[&str]| {
        let mut v = vec!["train", "seq2seq", "--train", s(train), "--test", s(&test)];
        v.extend(["--out", s(&out)]);
        v.extend(extra);
        recurrent(&v)
    };
    fail(&args(&bad, &[]), "bad.tsv:3");
    std::fs::write(&bad, "word\tspelling\nab\t \n").unwrap();
    fail(&args(&bad, &[]), "empty target");
    // A model too large for the machine is refused before anything is allocated.
    fail(
        &args(&train, &["--hidden-size", "200000"]),
        "would need about",
    );
}

/// Without the `mpi` feature, a process that `mpirun` started as one of several ranks
/// refuses to train (it would train its own model into the same files as the others) and
/// says how to build with MPI; no file is written.
#[cfg(not(feature = "mpi"))]
#[test]
fn several_ranks_without_mpi_support_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_recurrent"))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .args(["train", "classify", "--epochs", "1", "--out", s(&out)])
        .output()
        .unwrap();
    fail(&o, "--features mpi");
    assert!(!out.exists());
}
