//! Training: losses, optimizers and schedules against PyTorch fixtures, the tutorials'
//! LSTMModel end to end, building blocks against finite differences, dropout, gradient
//! accumulation, truncated BPTT and optimizer checkpoints.

mod common;

use common::*;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use recurrent::io::TensorFile;
use recurrent::loss::*;
use recurrent::nn::{
    BatchNorm1d, Conv1d, Conv1dConfig, Dropout, Embedding, GlobalAvgPool1d, LayerNorm, Linear,
    Module, Padding, RecurrentBlock, Sequential, Tape, Taped,
};
use recurrent::optim::*;
use recurrent::param::Grads;
use recurrent::{InitialState, Mode, OutputGrads, Param, Parameters, Rnn, RnnConfig};
use serde_json::Value;

fn reduction(o: &Value) -> Reduction {
    match o["reduction"].as_str().unwrap_or("mean") {
        "sum" => Reduction::Sum,
        "none" => Reduction::None,
        _ => Reduction::Mean,
    }
}

#[test]
fn losses_match_pytorch() {
    for path in fixture_files("losses") {
        let case = path.file_name().unwrap().to_string_lossy().to_string();
        let f = TensorFile::read(&path).unwrap();
        let opts: Value = serde_json::from_str(f.metadata("options").unwrap()).unwrap();
        let input = f.require_f32("input").unwrap();
        let red = reduction(&opts);
        let out = match f.metadata("loss").unwrap() {
            "CrossEntropyLoss" => {
                let (shape, target) = read_i64_any(&f, "target");
                CrossEntropyLoss {
                    reduction: red,
                    ignore_index: opts["ignore_index"].as_i64().unwrap_or(-100),
                    label_smoothing: opts["label_smoothing"].as_f64().unwrap_or(0.0) as f32,
                }
                .forward(&input, &target, &shape)
                .unwrap()
            }
            other => {
                let target = f.require_f32("target").unwrap();
                match other {
                    "MSELoss" => MseLoss { reduction: red }.forward(&input, &target),
                    "L1Loss" => L1Loss { reduction: red }.forward(&input, &target),
                    "HuberLoss" => HuberLoss {
                        reduction: red,
                        delta: opts["delta"].as_f64().unwrap_or(1.0) as f32,
                    }
                    .forward(&input, &target),
                    "BCEWithLogitsLoss" => {
                        BceWithLogitsLoss { reduction: red }.forward(&input, &target)
                    }
                    _ => panic!("{case}: unknown loss {other}"),
                }
                .unwrap()
            }
        };
        let expected = f.require_f32("loss").unwrap();
        assert_eq!(out.value.shape(), expected.shape(), "{case}");
        assert_close(
            &format!("{case}: loss"),
            &flat(&out.value),
            &flat(&expected),
            TORCH_ATOL,
            TORCH_RTOL,
        );
        assert_close(
            &format!("{case}: grad"),
            &flat(&out.grad),
            &flat(&f.require_f32("grad_input").unwrap()),
            TORCH_ATOL,
            TORCH_RTOL,
        );
    }
}

/// Reads an int64 tensor of any rank (class indices) from the raw file.
fn read_i64_any(f: &TensorFile, name: &str) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(f.path()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let v = t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

fn build_optimizer(kind: &str, o: &Value) -> Box<dyn Optimizer> {
    let f = |k: &str, d: f64| o[k].as_f64().unwrap_or(d);
    let b = |k: &str| o[k].as_bool().unwrap_or(false);
    match kind {
        "SGD" => Box::new(
            Sgd::new(f("lr", 1e-3))
                .momentum(f("momentum", 0.0))
                .dampening(f("dampening", 0.0))
                .weight_decay(f("weight_decay", 0.0))
                .nesterov(b("nesterov")),
        ),
        "Adam" | "AdamW" => {
            let betas = (
                o["betas"][0].as_f64().unwrap_or(0.9),
                o["betas"][1].as_f64().unwrap_or(0.999),
            );
            if kind == "Adam" {
                Box::new(
                    Adam::new(f("lr", 1e-3))
                        .betas(betas.0, betas.1)
                        .eps(f("eps", 1e-8))
                        .weight_decay(f("weight_decay", 0.0))
                        .amsgrad(b("amsgrad")),
                )
            } else {
                Box::new(
                    AdamW::new(f("lr", 1e-3))
                        .betas(betas.0, betas.1)
                        .eps(f("eps", 1e-8))
                        .weight_decay(f("weight_decay", 1e-2))
                        .amsgrad(b("amsgrad")),
                )
            }
        }
        "RMSprop" => {
            let mut r = RmsProp::new(f("lr", 1e-2));
            r.alpha = f("alpha", 0.99);
            r.momentum = f("momentum", 0.0);
            r.centered = b("centered");
            r.weight_decay = f("weight_decay", 0.0);
            Box::new(r)
        }
        "Adagrad" => {
            let mut a = Adagrad::new(f("lr", 1e-2));
            a.lr_decay = f("lr_decay", 0.0);
            a.weight_decay = f("weight_decay", 0.0);
            a.initial_accumulator_value = f("initial_accumulator_value", 0.0);
            Box::new(a)
        }
        "Adadelta" => {
            let mut a = Adadelta::new(f("lr", 1.0));
            a.rho = f("rho", 0.9);
            a.weight_decay = f("weight_decay", 0.0);
            Box::new(a)
        }
        other => panic!("unknown optimizer {other}"),
    }
}

/// `sum(w (p - t)^2) + 0.1 sum(p^4)` over both parameters, with its gradient.
fn objective(params: &mut [(String, &mut Param)], w: &[Vec<f32>], t: &[Vec<f32>]) -> f32 {
    let mut loss = 0.0;
    for (j, (_, p)) in params.iter_mut().enumerate() {
        for i in 0..p.len() {
            let v = p.value[i];
            let d = v - t[j][i];
            loss += w[j][i] * d * d + 0.1 * v.powi(4);
            p.grad[i] = 2.0 * w[j][i] * d + 0.4 * v.powi(3);
        }
    }
    loss
}

/// Optimizer trajectories over 25 steps. Both sides run the same f32 operations; the
/// tolerance allows the reordering differences to compound over the steps.
const TRAJ_ATOL: f32 = 1e-5;
const TRAJ_RTOL: f32 = 1e-4;

#[test]
fn optimizer_trajectories_match_pytorch() {
    for path in fixture_files("optim") {
        let case = path.file_name().unwrap().to_string_lossy().to_string();
        let f = TensorFile::read(&path).unwrap();
        let opts: Value = serde_json::from_str(f.metadata("options").unwrap()).unwrap();
        let mut opt = build_optimizer(f.metadata("optimizer").unwrap(), &opts);
        let arr = |n: &str| f.require_f32(n).unwrap();
        let mut p0 = Param::zeros(&[5, 3]);
        p0.value = flat(&arr("p0.0"));
        let mut p1 = Param::zeros(&[4]);
        p1.value = flat(&arr("p0.1"));
        let w = vec![flat(&arr("w.0")), flat(&arr("w.1"))];
        let t = vec![flat(&arr("t.0")), flat(&arr("t.1"))];
        let (traj0, traj1) = (flat(&arr("trajectory.0")), flat(&arr("trajectory.1")));
        let (losses, lrs) = (flat(&arr("loss")), flat(&arr("lr")));
        let metric = f.f32("metric").unwrap().map(|m| flat(&m));
        let clip: Option<Value> = f.metadata("clip").map(|s| serde_json::from_str(s).unwrap());
        let sched: Option<Value> = f
            .metadata("scheduler")
            .map(|s| serde_json::from_str(s).unwrap());
        let mut step_lr = None;
        let mut cosine = None;
        let mut plateau = None;
        if let Some(s) = &sched {
            match s["kind"].as_str().unwrap() {
                "StepLR" => {
                    step_lr = Some(StepLr::new(
                        s["step_size"].as_u64().unwrap(),
                        s["gamma"].as_f64().unwrap(),
                    ))
                }
                "CosineAnnealingLR" => {
                    cosine = Some(CosineAnnealingLr::new(
                        opt.as_ref(),
                        s["T_max"].as_u64().unwrap(),
                        s["eta_min"].as_f64().unwrap(),
                    ))
                }
                "ReduceLROnPlateau" => {
                    plateau = Some(
                        ReduceLrOnPlateau::new(PlateauMode::Min)
                            .factor(s["factor"].as_f64().unwrap())
                            .patience(s["patience"].as_u64().unwrap()),
                    )
                }
                k => panic!("{case}: unknown scheduler {k}"),
            }
        }
        for step in 0..25 {
            assert!(
                (opt.lr() as f32 - lrs[step]).abs() <= 1e-9 + 1e-6 * lrs[step],
                "{case}: lr at step {step}: {} vs {}",
                opt.lr(),
                lrs[step]
            );
            let mut params = vec![("p.0".to_string(), &mut p0), ("p.1".to_string(), &mut p1)];
            let loss = objective(&mut params, &w, &t);
            assert_close(
                &format!("{case}: loss at step {step}"),
                &[loss],
                &[losses[step]],
                TRAJ_ATOL,
                TRAJ_RTOL,
            );
            if let Some(c) = &clip {
                match c["kind"].as_str().unwrap() {
                    "norm" => {
                        clip_grad_norm(
                            &mut params,
                            c["max_norm"].as_f64().unwrap() as f32,
                            c["norm_type"].as_f64().unwrap() as f32,
                        );
                    }
                    _ => clip_grad_value(&mut params, c["clip_value"].as_f64().unwrap() as f32),
                }
            }
            opt.step(&mut params);
            if let Some(s) = &mut step_lr {
                s.step(opt.as_mut());
            }
            if let Some(s) = &mut cosine {
                s.step(opt.as_mut());
            }
            if let Some(s) = &mut plateau {
                s.step(metric.as_ref().unwrap()[step] as f64, opt.as_mut());
            }
            assert_close(
                &format!("{case}: p.0 after step {step}"),
                &p0.value,
                &traj0[step * 15..(step + 1) * 15],
                TRAJ_ATOL,
                TRAJ_RTOL,
            );
            assert_close(
                &format!("{case}: p.1 after step {step}"),
                &p1.value,
                &traj1[step * 4..(step + 1) * 4],
                TRAJ_ATOL,
                TRAJ_RTOL,
            );
        }
    }
}

/// The tutorials' LSTMModel (LSTM(10, 64) + Linear(64, 1), MSE, Adam 1e-3) from PyTorch's
/// initial weights on PyTorch's batches follows PyTorch's loss curve and ends at its weights.
/// Tolerance: 20 Adam steps amplify f32 differences in the gradients slightly; Adam's
/// normalised steps keep parameter differences around 1e-6.
#[test]
fn lstm_model_follows_pytorch_loss_curve() {
    let f = TensorFile::read(fixtures_dir().join("e2e/lstm_model_adam.safetensors")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let lstm = Rnn::new(
        RnnConfig::new(Mode::Lstm, 10, 64).with_batch_first(true),
        &mut rng,
    )
    .unwrap();
    let mut model = Taped::new(
        Sequential::new()
            .push("lstm", RecurrentBlock::last_step(lstm))
            .push("fc", Linear::new(64, 1, true, &mut rng)),
        0,
    );
    for (name, p) in model.named_parameters_mut() {
        let a = f.require_f32(&format!("param.{name}")).unwrap();
        p.assign(&name, a.shape(), &flat(&a)).unwrap();
    }
    let mut opt = Adam::new(1e-3);
    let expected = flat(&f.require_f32("loss").unwrap());
    for (k, &want) in expected.iter().enumerate() {
        let x = f.require_f32(&format!("x.{k}")).unwrap();
        let y = f.require_f32(&format!("y.{k}")).unwrap();
        let pred = model.forward(&x).unwrap();
        let loss = MseLoss::default().forward(&pred, &y).unwrap();
        assert_close(
            &format!("loss at step {k}"),
            &[loss.item()],
            &[want],
            1e-5,
            1e-4,
        );
        model.zero_grad();
        model.backward(&loss.grad).unwrap();
        opt.step(&mut model.named_parameters_mut());
    }
    for (name, p) in model.named_parameters() {
        let want = f.require_f32(&format!("final.{name}")).unwrap();
        assert_close(&format!("final {name}"), &p.value, &flat(&want), 1e-5, 1e-4);
    }
}

/// Central finite differences of `loss(module(x)) = sum(module(x) * g)` in f32 with a
/// step of 1e-2: the blocks here are smooth, so truncation error is ~1e-4 relative.
/// The gradients come as a value ([`Grads`]) from `backward(&self, ..)`.
fn check_module_gradients(name: &str, m: &mut dyn Module, x: &ArrayD<f32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut tape = Tape::training(0);
    let y = m.forward(x, &mut tape).unwrap();
    let g = y.mapv(|_| rng.gen_range(-1.0f32..1.0));
    let mut grads = Grads::zeros_for(m);
    let dx = m.backward(&tape, &g, &mut grads.slices()).unwrap();
    // A training tape (batch statistics for BatchNorm; none of these blocks drops out).
    let eval = |m: &dyn Module, x: &ArrayD<f32>| -> f64 {
        let y = m.forward(x, &mut Tape::training(0)).unwrap();
        y.iter()
            .zip(g.iter())
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    };
    const H: f32 = 1e-2;
    let mut fd = Vec::new();
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp.as_slice_mut().unwrap()[i] += H;
        let mut xm = x.clone();
        xm.as_slice_mut().unwrap()[i] -= H;
        fd.push(((eval(m, &xp) - eval(m, &xm)) / (2.0 * H as f64)) as f32);
    }
    assert_close(&format!("{name} grad_input"), &flat(&dx), &fd, 2e-3, 2e-3);
    let n_params = m.named_parameters().len();
    #[allow(clippy::needless_range_loop)]
    for k in 0..n_params {
        let len = m.named_parameters()[k].1.len();
        let mut fd = Vec::new();
        for i in 0..len {
            m.named_parameters_mut()[k].1.value[i] += H;
            let lp = eval(m, x);
            m.named_parameters_mut()[k].1.value[i] -= 2.0 * H;
            let lm = eval(m, x);
            m.named_parameters_mut()[k].1.value[i] += H;
            fd.push(((lp - lm) / (2.0 * H as f64)) as f32);
        }
        assert_close(
            &format!("{name} grad param {k}"),
            grads.part(k),
            &fd,
            2e-3,
            2e-3,
        );
    }
}

fn random_array(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.gen_range(-1.0f32..1.0))
}

#[test]
fn building_blocks_match_finite_differences() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    check_module_gradients(
        "Linear",
        &mut Linear::new(4, 3, true, &mut rng),
        &random_array(&[2, 5, 4], 1),
    );
    let mut ln = LayerNorm::new(5);
    ln.weight.value = vec![1.2, 0.8, 1.0, 0.5, 1.5];
    ln.bias.value = vec![0.1, -0.2, 0.0, 0.3, 0.0];
    check_module_gradients("LayerNorm", &mut ln, &random_array(&[3, 5], 2));
    let rnn = Rnn::new(
        RnnConfig::new(Mode::Gru, 3, 4)
            .with_batch_first(true)
            .with_bidirectional(true),
        &mut rng,
    )
    .unwrap();
    let mut seq = Sequential::new()
        .push("rnn", RecurrentBlock::last_step(rnn))
        .push("norm", LayerNorm::new(8))
        .push("fc", Linear::new(8, 2, true, &mut rng));
    let conv = Conv1dConfig::new(2, 3, 3)
        .with_padding(Padding::Same)
        .with_dilation(2);
    let mut conv_net = Sequential::new()
        .push("conv", Conv1d::new(conv, &mut rng).unwrap())
        .push("bn", BatchNorm1d::new(3))
        .push("gap", GlobalAvgPool1d)
        .push("fc", Linear::new(3, 2, true, &mut rng));
    check_module_gradients(
        "Conv1d+BatchNorm1d+GAP+Linear",
        &mut conv_net,
        &random_array(&[3, 2, 7], 4),
    );
    let strided = Conv1dConfig::new(3, 2, 4)
        .with_stride(2)
        .with_padding(Padding::Zeros(1));
    check_module_gradients(
        "Conv1d strided",
        &mut Conv1d::new(strided, &mut rng).unwrap(),
        &random_array(&[2, 3, 9], 5),
    );
    check_module_gradients(
        "GRU+LayerNorm+Linear",
        &mut seq,
        &random_array(&[2, 3, 3], 3),
    );
}

#[test]
fn embedding_padding_row_gets_no_gradient() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut e = Embedding::new(5, 3, Some(0), &mut rng).unwrap();
    assert!(e.weight.value[..3].iter().all(|&v| v == 0.0));
    let mut tape = Tape::training(0);
    let y = e.forward(&[0, 2, 2, 4], &[2, 2], &mut tape).unwrap();
    assert_eq!(y.shape(), &[2, 2, 3]);
    assert_eq!(y.as_slice().unwrap()[3..6], e.weight.value[6..9]);
    let mut grads = Grads::zeros_for(&e);
    let ones = ArrayD::ones(IxDyn(&[2, 2, 3]));
    e.backward(&tape, &ones, &mut grads.slices()).unwrap();
    e.set_grads(&grads).unwrap();
    assert!(e.weight.grad[..3].iter().all(|&v| v == 0.0), "padding row");
    assert!(
        e.weight.grad[6..9].iter().all(|&v| v == 2.0),
        "index 2 used twice"
    );
    assert!(
        e.weight.grad[3..6].iter().all(|&v| v == 0.0),
        "index 1 unused"
    );
    let mut tape = Tape::inference();
    assert!(
        e.forward(&[5], &[1], &mut tape).is_err(),
        "out of range index"
    );
}

#[test]
fn dropout_scales_and_is_identity_in_eval() {
    let d = Dropout::new(0.25).unwrap();
    let x = ArrayD::<f32>::ones(IxDyn(&[4000]));
    let mut tape = Tape::training(3);
    let y = d.forward(&x, &mut tape).unwrap();
    let zeros = y.iter().filter(|&&v| v == 0.0).count();
    assert!(
        (800..1200).contains(&zeros),
        "about a quarter dropped, got {zeros}"
    );
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    let g = d
        .backward(&tape, &x, &mut Grads::default().slices())
        .unwrap();
    assert_eq!(g, y, "backward applies the same mask");
    assert_eq!(d.forward(&x, &mut Tape::inference()).unwrap(), x);
}

/// Masks are drawn in pieces by per-piece generators: the same seed gives the same mask
/// whatever the number of threads, and the dropped fraction is `p` (for 100 000 draws at
/// `p = 0.25` the standard deviation is 137, so 5 of them allow 685).
#[test]
fn dropout_masks_do_not_depend_on_threads() {
    let x = ArrayD::<f32>::ones(IxDyn(&[100_000]));
    let in_pool = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let d = Dropout::new(0.25).unwrap();
            d.forward(&x, &mut Tape::training(7)).unwrap()
        })
    };
    let one = in_pool(1);
    assert_eq!(one, in_pool(2), "same mask with 1 and 2 threads");
    let zeros = one.iter().filter(|&&v| v == 0.0).count();
    assert!(
        (25_000usize.abs_diff(zeros)) < 685,
        "{zeros} of 100000 dropped"
    );
    let mask = one.as_slice().unwrap();
    assert_ne!(
        mask[..1 << 14],
        mask[1 << 14..2 << 14],
        "the first two pieces of 2^14 draw different masks"
    );
}

/// `Linear::forward_owned` is exactly `forward`, and both gradients match sums computed
/// here in f64, for a narrow layer (out < in: the `dW^T = x^T g` path) and a wide one.
/// Tolerance 1e-4: sums of at most 33 f32 products of size <= 1 err by under 1e-5.
#[test]
fn linear_owned_input_and_both_weight_gradient_paths() {
    for (fin, fout) in [(40, 7), (3, 9)] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut layer = Linear::new(fin, fout, true, &mut rng);
        let x = random_array(&[33, fin], 5);
        let g = random_array(&[33, fout], 6);
        let (mut tape, mut owned_tape) = (Tape::training(0), Tape::training(0));
        let y = layer.forward(&x, &mut tape).unwrap();
        assert_eq!(layer.forward_owned(x.clone(), &mut owned_tape).unwrap(), y);
        let (mut grads, mut owned_grads) = (Grads::zeros_for(&layer), Grads::zeros_for(&layer));
        let dx = layer.backward(&tape, &g, &mut grads.slices()).unwrap();
        let owned_dx = layer.backward(&owned_tape, &g, &mut owned_grads.slices());
        assert_eq!(owned_dx.unwrap(), dx);
        assert_eq!(owned_grads, grads);
        layer.set_grads(&grads).unwrap();
        let w = &layer.weight.value;
        for o in 0..fout {
            for i in 0..fin {
                let expected: f64 = (0..33).map(|r| g[[r, o]] as f64 * x[[r, i]] as f64).sum();
                let got = layer.weight.grad[o * fin + i] as f64;
                assert!(
                    (got - expected).abs() < 1e-4,
                    "dW[{o},{i}] {got} vs {expected}"
                );
            }
        }
        for r in 0..33 {
            for i in 0..fin {
                let expected: f64 = (0..fout)
                    .map(|o| g[[r, o]] as f64 * w[o * fin + i] as f64)
                    .sum();
                assert!((dx[[r, i]] as f64 - expected).abs() < 1e-4, "dx[{r},{i}]");
            }
        }
    }
}

/// A model set to train in bf16 still infers in f32 through `forward` and `prepare`
/// (exactly the f32 model's outputs), with and without the layer-norm/projection loop;
/// `prepare_in(Bf16)` evaluates in bf16 (within bfloat16 rounding: 0.05 absolute on
/// outputs of size < 1 after 6 steps).
#[test]
fn bf16_training_precision_leaves_inference_f32() {
    use recurrent::kernels::Precision;
    for proj_size in [0, 3] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let cfg = RnnConfig::new(Mode::Lstm, 5, 6)
            .with_num_layers(2)
            .with_proj_size(proj_size);
        let f32_model = Rnn::new(cfg, &mut rng).unwrap();
        let mut bf16_model = f32_model.clone();
        bf16_model.set_precision(Precision::Bf16);
        let x = random_array(&[6, 2, 5], 2);
        let exact = f32_model.forward(x.view(), None, None).unwrap().output;
        let plain = bf16_model.forward(x.view(), None, None).unwrap().output;
        assert_eq!(plain, exact, "forward, proj_size {proj_size}");
        let prepared = bf16_model.prepare().forward(x.view(), None, None).unwrap();
        assert_eq!(prepared.output, exact, "prepare, proj_size {proj_size}");
        let rounded = bf16_model.prepare_in(Precision::Bf16);
        let rounded = rounded.forward(x.view(), None, None).unwrap().output;
        assert_close(
            "prepare_in(Bf16)",
            &flat(&rounded),
            &flat(&exact),
            0.05,
            0.0,
        );
    }
}

/// Dropout between layers of a 3-layer stack: active only in training mode, never on the
/// last layer's output, and its backward uses the same masks (checked against finite
/// differences of a forward with the same seed).
#[test]
fn rnn_dropout_between_layers() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let cfg = RnnConfig::new(Mode::Lstm, 3, 4)
        .with_num_layers(3)
        .with_dropout(0.5);
    let mut rnn = Rnn::new(cfg, &mut rng).unwrap();
    let x = random_array(&[5, 2, 3], 9);
    let eval_out = rnn.forward(x.view(), None, None).unwrap();
    let run = |rnn: &Rnn, x: &ArrayD<f32>| {
        rnn.forward_train(
            x.view(),
            None,
            None,
            &mut rand::rngs::StdRng::seed_from_u64(11),
        )
        .unwrap()
    };
    let (train_out, tape) = run(&rnn, &x);
    assert_ne!(
        eval_out.output, train_out.output,
        "dropout changes the training output"
    );
    rnn.eval();
    let (no_drop, _) = rnn
        .forward_train(
            x.view(),
            None,
            None,
            &mut rand::rngs::StdRng::seed_from_u64(11),
        )
        .unwrap();
    assert_eq!(no_drop.output, eval_out.output, "eval mode: no dropout");
    rnn.train(true);

    let g = random_array(train_out.output.shape(), 4);
    rnn.zero_grad();
    let grads = rnn
        .backward(
            &tape,
            OutputGrads {
                grad_output: Some(g.view()),
                ..Default::default()
            },
        )
        .unwrap();
    let loss = |x: &ArrayD<f32>| -> f64 {
        run(&rnn, x)
            .0
            .output
            .iter()
            .zip(g.iter())
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    };
    const H: f32 = 1e-2;
    let fd: Vec<f32> = (0..x.len())
        .map(|i| {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp.as_slice_mut().unwrap()[i] += H;
            xm.as_slice_mut().unwrap()[i] -= H;
            ((loss(&xp) - loss(&xm)) / (2.0 * H as f64)) as f32
        })
        .collect();
    assert_close(
        "grad_input with dropout",
        &flat(&grads.grad_input),
        &fd,
        2e-3,
        2e-3,
    );
}

#[test]
fn gradients_accumulate_until_zeroed() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut rnn = Rnn::new(RnnConfig::new(Mode::Gru, 2, 3), &mut rng).unwrap();
    let x = random_array(&[4, 2, 2], 1);
    let g = random_array(&[4, 2, 3], 2);
    let (_, tape) = rnn.forward_train(x.view(), None, None, &mut rng).unwrap();
    let grads = OutputGrads {
        grad_output: Some(g.view()),
        ..Default::default()
    };
    rnn.backward(&tape, grads.clone()).unwrap();
    let once: Vec<Vec<f32>> = rnn
        .named_parameters()
        .iter()
        .map(|(_, p)| p.grad.clone())
        .collect();
    rnn.backward(&tape, grads.clone()).unwrap();
    for ((_, p), o) in rnn.named_parameters().iter().zip(&once) {
        let doubled: Vec<f32> = o.iter().map(|v| 2.0 * v).collect();
        assert_close("accumulated", &p.grad, &doubled, 1e-6, 1e-6);
    }
    rnn.zero_grad();
    assert!(rnn
        .named_parameters()
        .iter()
        .all(|(_, p)| p.grad.iter().all(|&v| v == 0.0)));
}

/// Skipping the input gradient leaves every other gradient bit for bit the same, for
/// one and two directions, and returns an empty `grad_input`.
#[test]
fn skipping_the_input_gradient_changes_nothing_else() {
    for bidirectional in [false, true] {
        let cfg = RnnConfig::new(Mode::Lstm, 3, 40)
            .with_num_layers(2)
            .with_bidirectional(bidirectional);
        let x = random_array(&[5, 2, 3], 1);
        let g = random_array(&[5, 2, cfg.num_directions() * 40], 2);
        let mut runs = Vec::new();
        for skip in [false, true] {
            let mut rnn = Rnn::new(cfg.clone(), &mut rand::rngs::StdRng::seed_from_u64(0)).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            let (_, tape) = rnn.forward_train(x.view(), None, None, &mut rng).unwrap();
            let grads = OutputGrads {
                grad_output: Some(g.view()),
                skip_input_grad: skip,
                ..Default::default()
            };
            let out = rnn.backward(&tape, grads).unwrap();
            assert_eq!(out.grad_input.len(), if skip { 0 } else { x.len() });
            let mut all: Vec<Vec<f32>> = rnn
                .named_parameters()
                .iter()
                .map(|(_, p)| p.grad.clone())
                .collect();
            all.push(out.grad_h0.iter().copied().collect());
            runs.push(all);
        }
        assert!(runs[0] == runs[1], "bidirectional={bidirectional}");
    }
}

/// Truncated BPTT: running a long stream in chunks while carrying the (detached) state
/// gives the same outputs as one pass over the whole stream.
#[test]
fn truncated_bptt_carries_state() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let rnn = Rnn::new(
        RnnConfig::new(Mode::Lstm, 2, 3).with_num_layers(2),
        &mut rng,
    )
    .unwrap();
    let x = random_array(&[12, 2, 2], 5);
    let whole = rnn.forward(x.view(), None, None).unwrap();
    let mut block = Taped::new(RecurrentBlock::sequence(rnn), 0);
    let mut outs = Vec::new();
    for chunk in 0..3 {
        let xc = x
            .slice(ndarray::s![chunk * 4..(chunk + 1) * 4, .., ..])
            .to_owned()
            .into_dyn();
        let y = block.forward(&xc).unwrap();
        block.backward(&y.mapv(|_| 1.0)).unwrap();
        outs.extend(flat(&y));
        let state = RecurrentBlock::final_state(block.tape()).cloned();
        block.module.set_state(state);
    }
    assert_close("chunked output", &outs, &flat(&whole.output), 1e-6, 1e-6);
}

/// Saving and restoring optimizer state mid-run continues exactly.
#[test]
fn optimizer_state_round_trips_through_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let make = || {
        let mut p = Param::zeros(&[3]);
        p.value = vec![1.0, -2.0, 0.5];
        p
    };
    let run = |opt: &mut dyn Optimizer, p: &mut Param, steps: usize| {
        for _ in 0..steps {
            p.grad = p.value.iter().map(|v| 2.0 * v - 0.3).collect();
            opt.step(&mut [("w".to_string(), p)]);
        }
    };
    let opts: Vec<Box<dyn Fn() -> Box<dyn Optimizer>>> = vec![
        Box::new(|| Box::new(Adam::new(0.1).amsgrad(true))),
        Box::new(|| Box::new(Sgd::new(0.1).momentum(0.9))),
        Box::new(|| {
            let mut r = RmsProp::new(0.01);
            r.centered = true;
            r.momentum = 0.5;
            Box::new(r)
        }),
        Box::new(|| Box::new(Adagrad::new(0.1))),
        Box::new(|| Box::new(Adadelta::new(1.0))),
        Box::new(|| Box::new(AdamW::new(0.1))),
    ];
    for make_opt in opts {
        let (mut straight, mut p1) = (make_opt(), make());
        run(straight.as_mut(), &mut p1, 20);
        let (mut first, mut p2) = (make_opt(), make());
        run(first.as_mut(), &mut p2, 10);
        let mut w = recurrent::io::TensorWriter::new();
        first.state().write_into(&mut w);
        let path = dir.path().join("opt.safetensors");
        w.write(&path).unwrap();
        let state = OptimizerState::read_from(&TensorFile::read(&path).unwrap()).unwrap();
        let mut resumed = make_opt();
        resumed.set_lr(123.0);
        resumed.load_state(&state).unwrap();
        run(resumed.as_mut(), &mut p2, 10);
        assert_eq!(p1.value, p2.value, "{}", state.kind);
    }
    let s = Sgd::new(0.1).state();
    assert!(
        Adam::new(0.1).load_state(&s).is_err(),
        "kind mismatch is an error"
    );
}

#[test]
fn initial_state_gradient_flows_in_recurrent_block_state() {
    // h0 given through InitialState is a constant for the block (detached), but Rnn::backward
    // still reports its gradient: check it against a finite difference.
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut rnn = Rnn::new(RnnConfig::new(Mode::RnnTanh, 2, 2), &mut rng).unwrap();
    let x = random_array(&[3, 1, 2], 1);
    let h0 = random_array(&[1, 1, 2], 2);
    let (_, tape) = rnn
        .forward_train(
            x.view(),
            Some(InitialState {
                h0: h0.view(),
                c0: None,
            }),
            None,
            &mut rng,
        )
        .unwrap();
    let g = rnn
        .backward(
            &tape,
            OutputGrads {
                grad_h_n: Some(ArrayD::ones(IxDyn(&[1, 1, 2])).view()),
                ..Default::default()
            },
        )
        .unwrap();
    let f = |h: &ArrayD<f32>| -> f64 {
        rnn.forward(
            x.view(),
            Some(InitialState {
                h0: h.view(),
                c0: None,
            }),
            None,
        )
        .unwrap()
        .h_n
        .iter()
        .map(|&v| v as f64)
        .sum()
    };
    let mut hp = h0.clone();
    hp.as_slice_mut().unwrap()[0] += 1e-2;
    let mut hm = h0.clone();
    hm.as_slice_mut().unwrap()[0] -= 1e-2;
    let fd = ((f(&hp) - f(&hm)) / 2e-2) as f32;
    assert_close("grad_h0[0]", &flat(&g.grad_h0)[..1], &[fd], 1e-3, 1e-3);
}

/// The packed-sequence helpers round-trip and the packed forward equals the lengths path.
#[test]
fn packed_sequences_round_trip_and_match_lengths() {
    use recurrent::{pack_padded_sequence, pad_packed_sequence};
    let x = random_array(&[3, 5, 2], 8); // batch-first (B=3, T=5, F=2)
    let lengths = [2usize, 5, 3];
    let p = pack_padded_sequence(x.view(), &lengths, true, false).unwrap();
    assert_eq!(p.batch_sizes, vec![3, 3, 2, 1, 1]);
    assert_eq!(p.sorted_indices, vec![1, 2, 0]);
    assert_eq!(p.unsorted_indices, vec![2, 0, 1]);
    assert_eq!(p.data.nrows(), 10);
    let (back, ls) = pad_packed_sequence(&p, true, 0.0, Some(5)).unwrap();
    assert_eq!(ls, lengths);
    for b in 0..3 {
        for t in 0..5 {
            for f in 0..2 {
                let want = if t < lengths[b] { x[[b, t, f]] } else { 0.0 };
                assert_eq!(back[[b, t, f]], want);
            }
        }
    }
    assert!(
        pack_padded_sequence(x.view(), &lengths, true, true).is_err(),
        "enforce_sorted"
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let rnn = Rnn::new(
        RnnConfig::new(Mode::Gru, 2, 3)
            .with_batch_first(true)
            .with_bidirectional(true),
        &mut rng,
    )
    .unwrap();
    let (packed_out, h_n, _) = rnn.forward_packed(&p, None).unwrap();
    let direct = rnn.forward(x.view(), None, Some(&lengths)).unwrap();
    let (padded_out, _) = pad_packed_sequence(&packed_out, true, 0.0, Some(5)).unwrap();
    assert_eq!(padded_out, direct.output);
    assert_eq!(h_n, direct.h_n);
}
