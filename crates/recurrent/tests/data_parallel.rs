//! Synchronous data parallelism: `fit_on` with the ranks of a job (threads here, MPI in the
//! CLI's tests) trains the model one process trains with the same seed and global batch.

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use recurrent::data::{Standardizer, Vocabulary};
use recurrent::distributed::{Collective, ThreadRanks};
use recurrent::models::{
    fit, fit_on, Architecture, CharLm, ClassificationTask, ClassifierMeta, FitReport, FitSettings,
    LmTask, SequenceClassifier, Silent, Trainable,
};
use recurrent::{Mode, Parameters, RnnConfig};
use std::path::PathBuf;

fn settings(epochs: usize, batch_size: usize, checkpoint: Option<PathBuf>) -> FitSettings {
    FitSettings {
        epochs,
        time_budget: None,
        batch_size,
        lr: 1e-2,
        seed: 5,
        patience: 100,
        clip_norm: 1.0,
        anneal: true,
        checkpoint,
        resume: false,
    }
}

/// A classification task of noisy sine and square waves (LSTM or LSTM-FCN), drawn from
/// `seed`, the same for every rank.
fn classifier_task(architecture: Architecture, seed: u64) -> ClassificationTask {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut series = |n: usize| -> (Vec<Array2<f32>>, Vec<usize>) {
        (0..n)
            .map(|i| {
                let class = i % 2;
                let phase: f32 = rng.gen_range(0.0..6.0);
                let x = Array2::from_shape_fn((12, 1), |(t, _)| {
                    let s = (t as f32 * 0.7 + phase).sin();
                    let wave = if class == 0 { s } else { s.signum() };
                    wave + rng.gen_range(-0.3..0.3)
                });
                (x, class)
            })
            .unzip()
    };
    let (train, val) = (series(37), series(10));
    let meta = ClassifierMeta {
        classes: vec!["sine".into(), "square".into()],
        scaler: Standardizer {
            mean: vec![0.0],
            std: vec![1.0],
        },
        patch: 1,
        architecture,
    };
    let cfg = RnnConfig::new(Mode::Lstm, 1, 6);
    let model = SequenceClassifier::new(cfg, meta, &mut rng).unwrap();
    ClassificationTask::new(model, train, val, 0.0)
}

/// A character LM with dropout on a short periodic text.
fn lm_task(seed: u64) -> LmTask {
    let text: Vec<usize> = (0..3000).map(|i| (i * i + 3 * i) % 11 % 7).collect();
    let vocab = Vocabulary::from_text("abcdefg");
    let cfg = RnnConfig::new(Mode::Lstm, 4, 8)
        .with_num_layers(2)
        .with_dropout(0.2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let model = CharLm::new(cfg, vocab, 4, &mut rng).unwrap();
    LmTask::new(model, text[..2500].to_vec(), text[2500..].to_vec(), 12, 90)
}

/// Runs `fit_on` on `ranks` threads, each with its own `task(rank)`, and returns every
/// rank's trained state (all tensors in order) and report.
fn on_ranks<T: Trainable + Send>(
    ranks: usize,
    task: impl Fn(usize) -> T + Sync,
    settings: impl Fn(usize) -> FitSettings + Sync,
) -> Vec<(Vec<f32>, FitReport)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ThreadRanks::group(ranks)
            .into_iter()
            .map(|c| {
                let (task, settings) = (&task, &settings);
                s.spawn(move || {
                    let mut t = task(c.rank());
                    let report = fit_on(&mut t, &settings(c.rank()), &mut Silent, &c).unwrap();
                    (state(&t), report)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn state(model: &dyn Trainable) -> Vec<f32> {
    let mut out = Vec::new();
    model.visit_state(&mut |_, _, v| out.extend_from_slice(v));
    out
}

/// Largest difference between two states, relative to the largest value.
fn relative_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Tolerance for a data-parallel run against one process: the same arithmetic but for the
/// order in which the shares' gradients are summed (and their scaling by counts), about
/// 1e-7 relative per step in f32, carried through 10-20 Adam steps (whose normalised
/// updates do not shrink such differences; 1.4e-6 is the largest seen): 2e-5 of the
/// largest weight.
const SAME_MODEL: f32 = 2e-5;

fn assert_same_run(one: &(Vec<f32>, FitReport), ranks: &[(Vec<f32>, FitReport)]) {
    for (k, (state, report)) in ranks.iter().enumerate() {
        let d = relative_difference(state, &one.0);
        assert!(
            d <= SAME_MODEL,
            "rank {k}: weights differ by {d} (relative)"
        );
        assert_eq!(report.history.len(), one.1.history.len());
        assert_eq!(report.best_epoch, one.1.best_epoch);
        for (a, b) in report.history.iter().zip(&one.1.history) {
            assert!((a.train_loss - b.train_loss).abs() <= 1e-3 * b.train_loss.abs());
            assert!((a.val_loss - b.val_loss).abs() <= 1e-3 * b.val_loss.abs());
        }
    }
    // Every rank keeps exactly the same model.
    for (state, _) in &ranks[1..] {
        assert_eq!(state, &ranks[0].0);
    }
}

/// The classifier (no dropout) on 2 and 3 ranks, with batches that do not divide evenly
/// between them (37 examples, batches of 8, the last of 5), trains the single process's
/// model.
#[test]
fn classifier_on_ranks_trains_the_single_process_model() {
    let mut one_task = classifier_task(Architecture::Lstm, 1);
    let report = fit(&mut one_task, &settings(3, 8, None), &mut Silent).unwrap();
    let one = (state(&one_task), report);
    for ranks in [2, 3] {
        let runs = on_ranks(
            ranks,
            |_| classifier_task(Architecture::Lstm, 1),
            |_| settings(3, 8, None),
        );
        assert_same_run(&one, &runs);
    }
}

/// The language model with dropout and carried state on 2 ranks (batches of 40 rows: 3
/// shards of 14, 13 and 13 rows, split 1 + 2) trains the single process's model: every
/// shard keeps its dropout stream and its streams' state wherever it runs.
#[test]
fn language_model_on_ranks_trains_the_single_process_model() {
    let mut one_task = lm_task(2);
    let report = fit(&mut one_task, &settings(2, 40, None), &mut Silent).unwrap();
    let one = (state(&one_task), report);
    for ranks in [2, 4] {
        let runs = on_ranks(ranks, |_| lm_task(2), |_| settings(2, 40, None));
        assert_same_run(&one, &runs);
    }
}

/// Ranks start from rank 0's weights whatever theirs were, and a model with batch-norm
/// buffers (LSTM-FCN, whose statistics each rank takes over its share) stays the same on
/// every rank.
#[test]
fn ranks_start_from_rank_zero_and_stay_equal() {
    let runs = on_ranks(
        2,
        |rank| classifier_task(Architecture::LstmFcn, 1 + rank as u64),
        |_| settings(2, 8, None),
    );
    assert_eq!(runs[0].0, runs[1].0);
    let mut one_task = classifier_task(Architecture::LstmFcn, 1);
    assert!(one_task
        .named_buffers()
        .iter()
        .any(|(_, b)| !b.value.is_empty()));
    fit(&mut one_task, &settings(2, 8, None), &mut Silent).unwrap();
    // Not the single process's model: batch statistics over shares differ from the
    // batch's (as with PyTorch's DistributedDataParallel without SyncBatchNorm).
    assert!(relative_difference(&runs[0].0, &state(&one_task)) > 0.0);
}

/// `resume` on ranks: rank 0 alone has the checkpoint (the others are given a path that
/// does not exist) and its bytes reach every rank; 1 epoch then 2 more on 2 ranks train
/// the model that one process trains in the same two runs.
#[test]
fn resume_on_ranks_reads_rank_zero_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let own = |rank: usize| {
        Some(if rank == 0 {
            dir.path().join("model.checkpoint")
        } else {
            dir.path().join(format!("missing-{rank}.checkpoint"))
        })
    };
    on_ranks(2, |_| lm_task(3), |rank| settings(1, 40, own(rank)));
    assert!(dir.path().join("model.checkpoint").exists());
    assert!(
        !dir.path().join("missing-1.checkpoint").exists(),
        "only rank 0 writes"
    );
    let resumed = on_ranks(
        2,
        |_| lm_task(3),
        |rank| FitSettings {
            resume: true,
            ..settings(3, 40, own(rank))
        },
    );
    let path = dir.path().join("one.checkpoint");
    fit(
        &mut lm_task(3),
        &settings(1, 40, Some(path.clone())),
        &mut Silent,
    )
    .unwrap();
    let mut one_task = lm_task(3);
    let again = FitSettings {
        resume: true,
        ..settings(3, 40, Some(path))
    };
    let report = fit(&mut one_task, &again, &mut Silent).unwrap();
    assert_same_run(&(state(&one_task), report), &resumed);
}

/// A group of one rank is the single process, bit for bit.
#[test]
fn one_rank_is_the_single_process() {
    let mut one_task = classifier_task(Architecture::Lstm, 4);
    fit(&mut one_task, &settings(2, 8, None), &mut Silent).unwrap();
    let runs = on_ranks(
        1,
        |_| classifier_task(Architecture::Lstm, 4),
        |_| settings(2, 8, None),
    );
    assert_eq!(runs[0].0, state(&one_task));
    let c = &ThreadRanks::group(1)[0];
    assert_eq!((c.rank(), c.size()), (0, 1));
}
