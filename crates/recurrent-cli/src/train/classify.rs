//! `recurrent train classify`.

use super::{say, CliProgress, CommonArgs, Defaults};
use clap::Args;
use ndarray::Array2;
use rand::SeedableRng;
use recurrent::data::stratified_split;
use recurrent::data::{parse_ts, read_sequences, LabelledSequences, Standardizer};
use recurrent::kernels::Precision;
use recurrent::models::fcn::FcnBranch;
use recurrent::models::{fit_ensemble, merge_reports};
use recurrent::models::{Architecture, ClassificationTask, ClassifierMeta, SequenceClassifier};
use recurrent::{Error, Result};
use std::path::PathBuf;

const DEFAULTS: Defaults = Defaults {
    hidden_size: 128,
    num_layers: 1,
    bidirectional: true,
    dropout: 0.0,
    epochs: 300,
    batch_size: 16,
    lr: 3e-3,
    patience: 30,
    out: "classifier.safetensors",
    precision: Precision::F32,
};

/// Defaults of `--model lstm-fcn`: the convolutional branch carries the model, so the
/// recurrent one is small (8 units, one direction, as in LSTM-FCN), and a single model is
/// trained for a fixed number of epochs with Adam at 1e-3 annealed along a cosine, keeping
/// the weights of the best validation epoch. Batches of 8 (twice the updates of 16 in the
/// same time) on the Intel Xeon, seeds 0-2: GunPoint 1.000/0.993/1.000 (16: 1.000/0.987/
/// 1.000), JapaneseVowels 0.992/0.992/0.986 (0.989/0.995/0.992), OSULeaf 0.959/0.959/0.967
/// (0.959/0.967/0.967).
const FCN_DEFAULTS: Defaults = Defaults {
    hidden_size: 8,
    num_layers: 1,
    bidirectional: false,
    dropout: 0.0,
    epochs: 150,
    batch_size: 8,
    lr: 1e-3,
    patience: usize::MAX,
    out: "classifier.safetensors",
    precision: Precision::F32,
};

/// Ensemble members of `--model lstm` and of `--model lstm-fcn` unless `--ensemble` says.
const DEFAULT_MEMBERS: (usize, usize) = (5, 1);

/// Options of `train classify`.
#[derive(Args, Debug, Clone)]
pub struct ClassifyArgs {
    /// Training data: long CSV (`case,label,t,x0..`) or a UEA/UCR `.ts` file
    /// (default: the bundled JapaneseVowels).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Test data, same format (default: the bundled JapaneseVowels test set).
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Share of the training data held out for validation and early stopping (above 0
    /// and below 1).
    #[arg(long, default_value_t = 0.2, value_parser = crate::check::open_fraction, allow_negative_numbers = true)]
    pub val_fraction: f64,
    /// Models trained from consecutive seeds whose probabilities are averaged (1 to 1000;
    /// default 5 for `--model lstm`, 1 for `--model lstm-fcn`).
    #[arg(long, value_parser = crate::check::ensemble_size, allow_negative_numbers = true)]
    pub ensemble: Option<usize>,
    /// The network: `lstm-fcn` (the recurrent stack beside a fully convolutional branch,
    /// Karim et al. 2018) or `lstm` (the recurrent stack alone).
    #[arg(long, value_enum, default_value = "lstm-fcn")]
    pub model: crate::choices::ArchitectureArg,
    /// Steps grouped into one recurrent step (default: about 32 recurrent steps per sequence).
    #[arg(long, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub patch: Option<usize>,
    #[command(flatten)]
    pub common: CommonArgs,
}

fn load(path: &Option<PathBuf>, bundled: &str, name: &str) -> Result<LabelledSequences> {
    match path {
        Some(p) => read_sequences(p),
        None => parse_ts(bundled, name),
    }
}

/// Sorts labels numerically when they are all numbers, else as text.
fn sorted_classes(labels: &[String]) -> Vec<String> {
    let mut c: Vec<String> = labels.to_vec();
    c.sort();
    c.dedup();
    if c.iter().all(|l| l.parse::<f64>().is_ok()) {
        c.sort_by(|a, b| {
            a.parse::<f64>()
                .unwrap()
                .total_cmp(&b.parse::<f64>().unwrap())
        });
    }
    c
}

/// Runs `train classify`.
pub fn run(a: ClassifyArgs) -> Result<()> {
    let c = &a.common;
    let (defaults, members) = match a.model {
        crate::choices::ArchitectureArg::Lstm => (&DEFAULTS, DEFAULT_MEMBERS.0),
        crate::choices::ArchitectureArg::LstmFcn => (&FCN_DEFAULTS, DEFAULT_MEMBERS.1),
    };
    let members = a.ensemble.unwrap_or(members);
    let inputs = super::train_test_inputs(&a.train, &a.test)?;
    c.check_paths(defaults, &inputs, &[], Some(members))?;
    let train = load(
        &a.train,
        include_str!("../../../../data/JapaneseVowels/JapaneseVowels_TRAIN.ts"),
        "bundled JapaneseVowels_TRAIN.ts",
    )?;
    let test = load(
        &a.test,
        include_str!("../../../../data/JapaneseVowels/JapaneseVowels_TEST.ts"),
        "bundled JapaneseVowels_TEST.ts",
    )?;
    if train.dims() != test.dims() {
        return Err(Error::Invalid(format!(
            "training data has {} features per step, test data {}",
            train.dims(),
            test.dims()
        )));
    }
    let classes = sorted_classes(&train.labels);
    if classes.len() < 2 {
        return Err(Error::Invalid(format!(
            "training data has {} class; at least 2 are needed",
            classes.len()
        )));
    }
    let encode = |labels: &[String], what: &str| -> Result<Vec<usize>> {
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                classes.iter().position(|c| c == l).ok_or_else(|| {
                    Error::Invalid(format!("{what} sequence {i} has label {l:?}, which never occurs in the training data"))
                })
            })
            .collect()
    };
    let y_train = encode(&train.labels, "training")?;
    let y_test = encode(&test.labels, "test")?;
    let (tr, va) = stratified_split(&y_train, a.val_fraction, c.seed);
    if tr.is_empty() || va.is_empty() {
        return Err(Error::Invalid(format!(
            "--val-fraction {} leaves {} training and {} validation sequences; both need at least one",
            a.val_fraction,
            tr.len(),
            va.len()
        )));
    }
    let pick = |idx: &[usize]| -> (Vec<Array2<f32>>, Vec<usize>) {
        (
            idx.iter().map(|&i| train.sequences[i].clone()).collect(),
            idx.iter().map(|&i| y_train[i]).collect(),
        )
    };
    let (train_part, val_part) = (pick(&tr), pick(&va));
    let scaler = Standardizer::fit(
        train_part.0.iter().flat_map(|s| {
            s.rows()
                .into_iter()
                .map(|r| r.to_slice().expect("contiguous"))
        }),
        train.dims(),
    );
    let max_len = train.sequences.iter().map(|s| s.nrows()).max().unwrap_or(1);
    let patch = a
        .patch
        .unwrap_or_else(|| ClassifierMeta::auto_patch(max_len));
    let features = patch.checked_mul(train.dims()).ok_or_else(|| {
        Error::Invalid(format!(
            "--patch {patch} times {} features is too large",
            train.dims()
        ))
    })?;
    let cfg = c.rnn_config(defaults, features)?;
    let meta = ClassifierMeta {
        classes: classes.clone(),
        scaler,
        patch,
        architecture: a.model.into(),
    };
    let rows = c.batch_size.unwrap_or(defaults.batch_size);
    c.check_memory::<SequenceClassifier>(&cfg, &meta, rows, max_len.div_ceil(patch))?;
    if meta.architecture == Architecture::LstmFcn {
        let per_position = FcnBranch::tape_floats_per_position(train.dims()) as u128;
        let positions = rows as u128 * max_len as u128;
        crate::check::fits_in_memory(
            "the convolutional branch's training pass",
            positions.saturating_mul(per_position).saturating_mul(4),
        )?;
    }
    let precision = c.precision(defaults)?;
    let mut settings = c.fit_settings(defaults);
    settings.anneal = a.model == crate::choices::ArchitectureArg::LstmFcn;
    say(
        c.quiet,
        &format!(
            "classify: {} training sequences ({} for validation), {} test, {} features, {} classes; {} H={} layers={} bidirectional={}",
            train.len(),
            val_part.0.len(),
            test.len(),
            train.dims(),
            classes.len(),
            cfg.mode,
            cfg.hidden_size,
            cfg.num_layers,
            cfg.bidirectional
        ),
    );
    c.with_threads(|| {
        let quiet = c.quiet;
        let (ensemble, reports) = fit_ensemble(
            &settings,
            members,
            |k, seed| {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut model = SequenceClassifier::new(cfg.clone(), meta.clone(), &mut rng)?;
                model.rnn.set_precision(precision);
                if members > 1 {
                    say(quiet, &format!("model {}/{members} (seed {seed})", k + 1));
                }
                Ok(ClassificationTask::new(model, train_part.clone(), val_part.clone(), 0.0))
            },
            |_| Box::new(CliProgress::new(quiet, Some(settings.epochs), "seq")),
            |task| task.model,
        )?;
        let pred = ensemble.predict(&test.sequences, 64)?;
        let correct = pred.iter().zip(&y_test).filter(|(p, y)| p == y).count();
        let accuracy = correct as f64 / test.len() as f64;
        let mut confusion = vec![vec![0usize; classes.len()]; classes.len()];
        for (&p, &y) in pred.iter().zip(&y_test) {
            confusion[y][p] += 1;
        }
        let out = c.out_path(defaults);
        let model_bytes = ensemble.to_bytes()?;
        say(c.quiet, &format!("test_accuracy: {accuracy:.4} ({correct}/{})", test.len()));
        say(c.quiet, &confusion_table(&classes, &confusion));
        let metrics = serde_json::json!({
            "task": "classify", "test_accuracy": accuracy, "test_correct": correct, "test_size": test.len(),
            "classes": classes, "confusion_matrix": confusion,
            "train_size": tr.len(), "val_size": va.len(), "patch": patch, "ensemble": members,
            "member_best_epochs": reports.iter().map(|r| r.best_epoch).collect::<Vec<_>>(),
        });
        let mut settings_json = c.settings_json(defaults, &cfg);
        settings_json["ensemble"] = members.into();
        settings_json["model"] = serde_json::to_value(meta.architecture).expect("serialisable");
        let checkpoints = c.checkpoint_files(defaults, Some(members));
        c.finish(vec![(out.clone(), model_bytes)], metrics, &merge_reports(&reports), settings_json, &checkpoints)?;
        say(c.quiet, &format!("model written to {}", out.display()));
        Ok(())
    })
}

/// Rows: true class; columns: predicted class.
fn confusion_table(classes: &[String], m: &[Vec<usize>]) -> String {
    let w = classes.iter().map(|c| c.len()).max().unwrap_or(1).max(4);
    let mut s = format!(
        "confusion matrix (rows: true, columns: predicted)\n{:>w$}",
        ""
    );
    for c in classes {
        s += &format!(" {c:>w$}");
    }
    for (c, row) in classes.iter().zip(m) {
        s += &format!("\n{c:>w$}");
        for v in row {
            s += &format!(" {v:>w$}");
        }
    }
    s
}
