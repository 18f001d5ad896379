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
/// rank's trained task and report.
fn trained_on_ranks<T: Trainable + Send>(
    ranks: usize,
    task: impl Fn(usize) -> T + Sync,
    settings: impl Fn(usize) -> FitSettings + Sync,
) -> Vec<(T, FitReport)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ThreadRanks::group(ranks)
            .into_iter()
            .map(|c| {
                let (task, settings) = (&task, &settings);
                s.spawn(move || {
                    let mut t = task(c.rank());
                    let report = fit_on(&mut t, &settings(c.rank()), &mut Silent, &c).unwrap();
                    (t, report)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// [`trained_on_ranks`], every rank's trained state (all tensors in order) and report.
fn on_ranks<T: Trainable + Send>(
    ranks: usize,
    task: impl Fn(usize) -> T + Sync,
    settings: impl Fn(usize) -> FitSettings + Sync,
) -> Vec<(Vec<f32>, FitReport)> {
    trained_on_ranks(ranks, task, settings)
        .into_iter()
        .map(|(t, report)| (state(&t), report))
        .collect()
}

/// The classifier's trained state but for the convolution biases that batch norm follows
/// and the running means that absorb them: their gradient is zero up to rounding (the
/// normalisation subtracts them), which Adam's first steps turn into moves of about the
/// learning rate whatever the rounding, so they differ between any two summation orders;
/// the network's function does not ([`validation_logits`] checks it).
fn state_that_matters(task: &ClassificationTask) -> Vec<f32> {
    let mut out = Vec::new();
    task.visit_state(&mut |name, _, v| {
        if !name.ends_with("conv.bias") && !name.ends_with("running_mean") {
            out.extend_from_slice(v)
        }
    });
    out
}

/// Logits of the classifier on its validation sequences, normalised by their own batch
/// statistics (training mode without dropout: the convolution biases cancel exactly).
fn validation_logits(task: &ClassificationTask) -> Vec<f32> {
    let seqs: Vec<&Array2<f32>> = task.val.0.iter().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut tape = recurrent::models::classifier::ClassifierTape::default();
    let train = task
        .model
        .forward_train(&seqs, &mut rng, &mut tape)
        .unwrap();
    train.iter().copied().collect()
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
    assert_same_run_within(one, ranks, 1e-3)
}

/// [`assert_same_run`] with the epochs' validation losses within `val_tolerance`
/// (relative).
fn assert_same_run_within(
    one: &(Vec<f32>, FitReport),
    ranks: &[(Vec<f32>, FitReport)],
    val_tolerance: f64,
) {
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
            let (va, vb) = (a.val_loss, b.val_loss);
            assert!(
                (va - vb).abs() <= val_tolerance * vb.abs(),
                "val loss {va} vs {vb}"
            );
        }
    }
    // Every rank keeps exactly the same model.
    for (state, _) in &ranks[1..] {
        assert_eq!(state, &ranks[0].0);
    }
}

/// The classifier (no dropout) on 2 and 3 ranks, with batches that do not divide evenly
/// between them (37 examples, batches of 8, the last of 5), trains the single process's
/// model; so does the LSTM-FCN, whose batch norm takes its statistics over the ranks'
/// shares together, on 3 ranks and on 6 (a rank without examples in the last batch takes
/// part in the statistics).
#[test]
fn classifier_on_ranks_trains_the_single_process_model() {
    for (architecture, rank_counts) in [
        (Architecture::Lstm, &[2, 3][..]),
        (Architecture::LstmFcn, &[3, 6][..]),
    ] {
        let mut one_task = classifier_task(architecture, 1);
        let report = fit(&mut one_task, &settings(3, 8, None), &mut Silent).unwrap();
        let one = (state_that_matters(&one_task), report);
        let logits = validation_logits(&one_task);
        for &ranks in rank_counts {
            let runs = trained_on_ranks(
                ranks,
                |_| classifier_task(architecture, 1),
                |_| settings(3, 8, None),
            );
            for (task, _) in &runs {
                let d = relative_difference(&validation_logits(task), &logits);
                assert!(
                    d <= SAME_MODEL,
                    "{architecture:?} on {ranks} ranks: logits differ by {d}"
                );
            }
            let runs: Vec<_> = runs
                .into_iter()
                .map(|(t, r)| (state_that_matters(&t), r))
                .collect();
            // The validation loss is computed with the running means, which follow the
            // convolution biases (see `state_that_matters`): 3e-2 for the LSTM-FCN
            // (1.2e-2 seen).
            let val_tolerance = match architecture {
                Architecture::Lstm => 1e-3,
                _ => 3e-2,
            };
            assert_same_run_within(&one, &runs, val_tolerance);
        }
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

/// Ranks start from rank 0's weights whatever theirs were: ranks whose models were drawn
/// from other seeds train rank 0's model.
#[test]
fn ranks_start_from_rank_zero() {
    let runs = on_ranks(
        2,
        |rank| {
            let mut task = classifier_task(Architecture::Lstm, 1);
            if rank != 0 {
                task.visit_state_mut(&mut |_, _, v| v.iter_mut().for_each(|x| *x = 2.0 * *x + 0.1));
            }
            task
        },
        |_| settings(2, 8, None),
    );
    let mut one_task = classifier_task(Architecture::Lstm, 1);
    let report = fit(&mut one_task, &settings(2, 8, None), &mut Silent).unwrap();
    assert_same_run(&(state(&one_task), report), &runs);
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

/// Batch norm over a group of ranks (as `SyncBatchNorm`): ranks holding rows 0..2 and
/// 2..5 of a batch, and one holding none, give the outputs and input gradients of one
/// process on the whole batch, and their parameter gradients sum to its. Tolerance 1e-5
/// (f32 results of f64 sums in another order).
#[test]
fn batch_norm_over_ranks_is_the_whole_batch() {
    use ndarray::{ArrayD, Axis, IxDyn};
    use recurrent::nn::{BatchNorm1d, Tape};
    use recurrent::param::GradSlices;
    let random = |shape: &[usize], seed: u64| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        ArrayD::from_shape_fn(IxDyn(shape), |_| rng.gen_range(-2.0f32..2.0))
    };
    let (x, g) = (random(&[5, 3, 4], 1), random(&[5, 3, 4], 2));
    let lengths = [3, 2, 3, 1, 3];
    let mut bn = BatchNorm1d::new(4);
    bn.weight.value = vec![0.5, 1.0, 1.5, 2.0];
    let backward = |bn: &BatchNorm1d, tape: &Tape, g: &ArrayD<f32>, group: Option<&ThreadRanks>| {
        let (mut w, mut b) = (vec![0.0; 4], vec![0.0; 4]);
        let mut grads = GradSlices::from_parts([&mut w[..], &mut b[..]]);
        let dx = match group {
            Some(c) => bn.backward_channels_last_in(tape, g, &mut grads, c),
            None => bn.backward_channels_last(tape, g, &mut grads),
        };
        (dx.unwrap(), [w, b].concat())
    };
    let mut tape = Tape::training(0);
    let y = bn
        .forward_channels_last(&x, Some(&lengths), &mut tape)
        .unwrap();
    let (dx, grads) = backward(&bn, &tape, &g, None);

    let parts = [0..2, 2..5, 5..5];
    let results: Vec<_> = std::thread::scope(|s| {
        ThreadRanks::group(3)
            .into_iter()
            .zip(parts.clone())
            .map(|(c, rows)| {
                let (bn, x, g) = (&bn, &x, &g);
                s.spawn(move || {
                    let take =
                        |a: &ArrayD<f32>| a.slice_axis(Axis(0), rows.clone().into()).to_owned();
                    let mut tape = Tape::training(0);
                    let y = bn
                        .forward_channels_last_in(
                            &take(x),
                            Some(&lengths[rows.clone()]),
                            &mut tape,
                            &c,
                        )
                        .unwrap();
                    let (dx, grads) = backward(bn, &tape, &take(g), Some(&c));
                    (y, dx, grads)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(b) {
            assert!(
                (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
                "{what}: {p} vs {q}"
            );
        }
    };
    let joined = |k: usize| -> Vec<f32> {
        results
            .iter()
            .flat_map(|r| if k == 0 { r.0.iter() } else { r.1.iter() })
            .copied()
            .collect()
    };
    close(&joined(0), y.as_slice().unwrap(), "output");
    close(&joined(1), dx.as_slice().unwrap(), "input gradient");
    let summed: Vec<f32> = (0..8)
        .map(|i| results.iter().map(|r| r.2[i]).sum())
        .collect();
    close(&summed, &grads, "parameter gradients");
}
