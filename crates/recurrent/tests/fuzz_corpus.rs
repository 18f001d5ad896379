//! The fuzzers' corpora (`fuzz/corpus/`: seed files and the inputs the fuzz runs kept for
//! new coverage, minimised) through every loader: each must return, with a value or an
//! error, and never panic. This keeps what the fuzzers found covered by `cargo test`.

use recurrent::data::{parse_long_csv, parse_series_csv, parse_ts, MissingValues, Vocabulary};
use recurrent::io::{rnn_from_file, TensorFile};
use recurrent::models::{CharLm, ClassifierEnsemble, Ensemble, ForecasterEnsemble};
use recurrent::optim::OptimizerState;
use std::path::PathBuf;

/// Every file of `fuzz/corpus/<target>`, with its name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    assert!(files.len() >= 2, "{}: the corpus is missing", dir.display());
    files
}

#[test]
fn model_file_corpus() {
    let mut loaded = 0;
    for (name, bytes) in corpus("model_file") {
        let Ok(file) = TensorFile::from_bytes(&bytes, &name) else {
            continue;
        };
        let _ = file.all_f32();
        let _ = file.lengths("lengths");
        loaded += usize::from(rnn_from_file(&file).is_ok());
        loaded += usize::from(ClassifierEnsemble::from_file(&file).is_ok());
        loaded += usize::from(ForecasterEnsemble::from_file(&file).is_ok());
        loaded += usize::from(Ensemble::<CharLm>::from_file(&file).is_ok());
        let _ = OptimizerState::read_from(&file);
    }
    // The seed files (a plain LSTM and one model of each task) load.
    assert!(loaded >= 4, "only {loaded} model files loaded");
}

/// Runs `parse` on every UTF-8 file of a text corpus; returns how many parsed.
fn text_corpus(target: &str, parse: impl Fn(&str, &str) -> bool) -> usize {
    corpus(target)
        .iter()
        .filter_map(|(name, bytes)| Some((name, std::str::from_utf8(bytes).ok()?)))
        .filter(|(name, text)| parse(text, name))
        .count()
}

#[test]
fn data_file_corpora() {
    assert!(text_corpus("long_csv", |t, n| parse_long_csv(t, n).is_ok()) >= 1);
    assert!(text_corpus("ts_file", |t, n| parse_ts(t, n).is_ok()) >= 1);
    assert!(
        text_corpus("series_csv", |t, n| {
            let strict = parse_series_csv(t, n, MissingValues::Error).is_ok();
            parse_series_csv(t, n, MissingValues::Interpolate).is_ok() || strict
        }) >= 1
    );
    let texts = text_corpus("text_file", |t, _| {
        let vocab = Vocabulary::from_text(t);
        vocab.encode(t).is_ok()
            && (t.is_empty() || Vocabulary::checked(vocab.chars().to_vec()).is_ok())
    });
    assert!(texts >= 1);
}
