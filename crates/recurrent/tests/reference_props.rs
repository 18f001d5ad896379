//! Property tests: the fast f32 stack against the plain f64 reference on random
//! configurations (every mode and option, sizes down to 1), forward and backward.

mod common;

use common::reference::{self, RefInputs, RefParams};
use common::*;
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rand::{Rng, SeedableRng};
use recurrent::kernels::Precision;
use recurrent::{InitialState, Mode, OutputGrads, Parameters, Rnn, RnnConfig};

#[derive(Debug, Clone)]
struct Case {
    cfg: RnnConfig,
    steps: usize,
    batch: usize,
    batched: bool,
    with_state: bool,
    with_lengths: bool,
    seed: u64,
}

/// Random cases. `smooth` keeps ReLU stacks away from the kink at 0, where finite
/// differences are undefined: without biases, a zero state and zero ReLU outputs from the
/// layer below give a pre-activation of exactly 0, so such cases always get biases.
fn case_strategy(
    max_layers: usize,
    sizes: std::ops::RangeInclusive<usize>,
    smooth: bool,
) -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(Mode::RnnTanh),
            Just(Mode::RnnRelu),
            Just(Mode::Lstm),
            Just(Mode::Gru)
        ],
        sizes.clone(),
        sizes,
        1..=max_layers,
        any::<(bool, bool, bool, bool, bool, bool)>(),
        (
            1usize..=5,
            1usize..=4,
            any::<bool>(),
            0usize..3,
            any::<u64>(),
        ),
    )
        .prop_map(
            move |(
                mode,
                input_size,
                hidden_size,
                num_layers,
                (bias, batch_first, bidir, ln, with_state, batched),
                (steps, batch, lengths, proj_pick, seed),
            )| {
                let lstm = mode == Mode::Lstm;
                let proj_size = if lstm && hidden_size > 1 && proj_pick > 0 {
                    1 + (seed as usize % (hidden_size - 1))
                } else {
                    0
                };
                let bias = bias || (smooth && mode == Mode::RnnRelu);
                let cfg = RnnConfig::new(mode, input_size, hidden_size)
                    .with_num_layers(num_layers)
                    .with_bias(bias)
                    .with_batch_first(batch_first)
                    .with_bidirectional(bidir)
                    .with_proj_size(proj_size)
                    .with_layer_norm(lstm && ln)
                    .with_dropout(0.25);
                Case {
                    cfg,
                    steps,
                    batch: if batched { batch } else { 1 },
                    batched,
                    with_state,
                    with_lengths: lengths && batched,
                    seed,
                }
            },
        )
}

/// Everything one case needs: the model, its f64 parameters and canonical inputs.
struct Setup {
    rnn: Rnn,
    params: RefParams,
    inputs: RefInputs,
    /// Upstream gradients (canonical layout) for the backward checks.
    go: Vec<f32>,
    gh: Vec<f32>,
    gc: Vec<f32>,
}

fn randn(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn setup(case: &Case) -> Setup {
    let mut rng = rand::rngs::StdRng::seed_from_u64(case.seed);
    let mut rnn = Rnn::new(case.cfg.clone(), &mut rng).unwrap();
    rnn.eval();
    // Give layer-norm parameters non-trivial values.
    for (name, p) in rnn.named_parameters_mut() {
        if name.starts_with("ln_") {
            let base = if name.contains("weight") { 1.0 } else { 0.0 };
            p.value
                .iter_mut()
                .for_each(|v| *v = base + rng.gen_range(-0.3..0.3));
        }
    }
    let params = rnn
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, to_f64(&p.value)))
        .collect();
    let cfg = &case.cfg;
    let (t, b) = (case.steps, case.batch);
    let dl = cfg.num_directions() * cfg.num_layers;
    let input = randn(&mut rng, t * b * cfg.input_size);
    let h0 = case
        .with_state
        .then(|| to_f64(&randn(&mut rng, dl * b * cfg.output_size())));
    let c0 = (case.with_state && cfg.mode == Mode::Lstm)
        .then(|| to_f64(&randn(&mut rng, dl * b * cfg.hidden_size)));
    let lengths = case
        .with_lengths
        .then(|| (0..b).map(|_| rng.gen_range(1..=t)).collect());
    let go = randn(&mut rng, t * b * cfg.num_directions() * cfg.output_size());
    let gh = randn(&mut rng, dl * b * cfg.output_size());
    let gc = if cfg.mode == Mode::Lstm {
        randn(&mut rng, dl * b * cfg.hidden_size)
    } else {
        vec![]
    };
    Setup {
        rnn,
        params,
        inputs: RefInputs {
            steps: t,
            batch: b,
            input: to_f64(&input),
            h0,
            c0,
            lengths,
        },
        go,
        gh,
        gc,
    }
}

/// Converts a canonical `(T, B, F)` tensor to the layout the case's model expects.
fn user_layout(case: &Case, x: &[f32], f: usize) -> ArrayD<f32> {
    let (t, b) = (case.steps, case.batch);
    if !case.batched {
        ArrayD::from_shape_vec(IxDyn(&[t, f]), x.to_vec()).unwrap()
    } else if case.cfg.batch_first {
        ArrayD::from_shape_vec(IxDyn(&[b, t, f]), time_to_batch_major(x, t, b, f)).unwrap()
    } else {
        ArrayD::from_shape_vec(IxDyn(&[t, b, f]), x.to_vec()).unwrap()
    }
}

fn canonical(case: &Case, a: &ArrayD<f32>, f: usize) -> Vec<f32> {
    if case.batched && case.cfg.batch_first {
        batch_to_time_major(&flat(a), case.steps, case.batch, f)
    } else {
        flat(a)
    }
}

fn state_array(case: &Case, v: &[f32], f: usize) -> ArrayD<f32> {
    let dl = case.cfg.num_directions() * case.cfg.num_layers;
    let shape: Vec<usize> = if case.batched {
        vec![dl, case.batch, f]
    } else {
        vec![dl, f]
    };
    ArrayD::from_shape_vec(IxDyn(&shape), v.to_vec()).unwrap()
}

fn as_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The case's input and initial state in the layout the model takes: `(input, h0, c0)`.
fn model_inputs(
    case: &Case,
    inputs: &RefInputs,
) -> (ArrayD<f32>, Option<ArrayD<f32>>, Option<ArrayD<f32>>) {
    let cfg = &case.cfg;
    let input = user_layout(case, &as_f32(&inputs.input), cfg.input_size);
    let h0 = inputs
        .h0
        .as_ref()
        .map(|h| state_array(case, &as_f32(h), cfg.output_size()));
    let c0 = inputs
        .c0
        .as_ref()
        .map(|c| state_array(case, &as_f32(c), cfg.hidden_size));
    (input, h0, c0)
}

/// `(h0, c0)` as the model's initial state (`None`: zeros).
fn initial_state<'a>(
    h0: &'a Option<ArrayD<f32>>,
    c0: &'a Option<ArrayD<f32>>,
) -> Option<InitialState<'a>> {
    h0.as_ref().map(|h| InitialState {
        h0: h.view(),
        c0: c0.as_ref().map(|c| c.view()),
    })
}

/// Runs the case forward and compares output, `h_n` and `c_n` with the reference.
fn check_forward(case: &Case) {
    let s = setup(case);
    let cfg = &case.cfg;
    let (input, h0, c0) = model_inputs(case, &s.inputs);
    let state = initial_state(&h0, &c0);
    let lengths = s.inputs.lengths.as_deref();
    let out = s.rnn.forward(input.view(), state.clone(), lengths).unwrap();
    let prepared = s
        .rnn
        .prepare()
        .forward(input.view(), state, lengths)
        .unwrap();
    assert!(prepared == out, "prepared weights give different results");
    let r = reference::forward(cfg, &s.params, &s.inputs);
    let width = cfg.num_directions() * cfg.output_size();
    // LayerNorm over a few hidden units divides by a standard deviation that can be tiny,
    // which amplifies f32 rounding in single elements: for those stacks the relative
    // tolerance is taken against each tensor's largest magnitude (as in the golden tests).
    let check = if cfg.layer_norm {
        assert_close_scaled
    } else {
        assert_close
    };
    let output = canonical(case, &out.output, width);
    check("output", &output, &as_f32(&r.output), REF_ATOL, REF_RTOL);
    check("h_n", &flat(&out.h_n), &as_f32(&r.h_n), REF_ATOL, REF_RTOL);
    if let Some(c_n) = &out.c_n {
        check("c_n", &flat(c_n), &as_f32(&r.c_n), REF_ATOL, REF_RTOL);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, rng_seed: RngSeed::Fixed(160), ..ProptestConfig::default() })]

    #[test]
    fn forward_matches_reference(case in case_strategy(3, 1..=6, false)) {
        check_forward(&case);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, rng_seed: RngSeed::Fixed(24), ..ProptestConfig::default() })]

    /// Hidden sizes over several 32-unit chunks of the threaded time loop, the last one
    /// partial.
    #[test]
    fn wide_layers_match_reference(case in case_strategy(2, 30..=75, true)) {
        check_forward(&case);
        check_directional_gradients(&case);
    }
}

/// LSTM stacks with layer norm and/or a projection on batches of several row tiles (4, 6
/// or 12 rows by CPU level), large enough for their time loop to split the batch rows
/// across a team of threads; variable lengths make the groups uneven.
fn grouped_strategy() -> impl Strategy<Value = Case> {
    (
        40usize..=90,
        13usize..=40,
        3usize..=6,
        0usize..3,
        any::<(bool, bool, bool, u64)>(),
    )
        .prop_map(
            |(hidden, batch, steps, kind, (bidir, with_state, with_lengths, seed))| {
                let (proj, ln) = [(true, false), (false, true), (true, true)][kind];
                let proj_size = if proj { 8 + seed as usize % 24 } else { 0 };
                let cfg = RnnConfig::new(Mode::Lstm, 24, hidden)
                    .with_num_layers(2)
                    .with_bidirectional(bidir)
                    .with_proj_size(proj_size)
                    .with_layer_norm(ln)
                    .with_dropout(0.25);
                Case {
                    cfg,
                    steps,
                    batch,
                    batched: true,
                    with_state,
                    with_lengths,
                    seed,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, rng_seed: RngSeed::Fixed(12), ..ProptestConfig::default() })]

    /// At every CPU level this machine supports, as their row tiles differ.
    #[test]
    fn batches_split_by_rows_match_reference(case in grouped_strategy()) {
        use recurrent::kernels::cpu::{with_level, Level};
        for level in Level::supported() {
            with_level(level, || {
                check_forward(&case);
                check_directional_gradients(&case);
            });
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, rng_seed: RngSeed::Fixed(64), ..ProptestConfig::default() })]

    #[test]
    fn backward_matches_finite_differences(case in case_strategy(2, 1..=4, true)) {
        let mut s = setup(&case);
        let cfg = case.cfg.clone();
        let (input, h0, c0) = model_inputs(&case, &s.inputs);
        let state = initial_state(&h0, &c0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let (_, tape) = s.rnn.forward_train(input.view(), state, s.inputs.lengths.as_deref(), &mut rng).unwrap();
        let width = cfg.num_directions() * cfg.output_size();
        let go = user_layout(&case, &s.go, width);
        let gh = state_array(&case, &s.gh, cfg.output_size());
        let gc = (cfg.mode == Mode::Lstm).then(|| state_array(&case, &s.gc, cfg.hidden_size));
        s.rnn.zero_grad();
        let grads = s.rnn.backward(&tape, OutputGrads {
            grad_output: Some(go.view()),
            grad_h_n: Some(gh.view()),
            grad_c_n: gc.as_ref().map(|g| g.view()),
            skip_input_grad: false,
        }).unwrap();

        let (go64, gh64, gc64) = (to_f64(&s.go), to_f64(&s.gh), to_f64(&s.gc));
        let loss = |params: &RefParams, inputs: &RefInputs| {
            reference::weighted_sum(&reference::forward(&cfg, params, inputs), &go64, &gh64, &gc64)
        };
        const EPS: f64 = 1e-6;
        let numeric = |perturb: &dyn Fn(f64) -> f64| ((perturb(EPS) - perturb(-EPS)) / (2.0 * EPS)) as f32;

        // Input.
        let mut fd = Vec::new();
        for i in 0..s.inputs.input.len() {
            fd.push(numeric(&|e| {
                let mut inp = s.inputs.clone();
                inp.input[i] += e;
                loss(&s.params, &inp)
            }));
        }
        assert_close("grad_input", &canonical(&case, &grads.grad_input, cfg.input_size), &fd, GRAD_ATOL, GRAD_RTOL);

        // Initial state (gradient exists even when h0 defaulted to zeros).
        let dl = cfg.num_directions() * cfg.num_layers;
        let zeros_h = vec![0.0; dl * case.batch * cfg.output_size()];
        let mut fd = Vec::new();
        for i in 0..zeros_h.len() {
            fd.push(numeric(&|e| {
                let mut inp = s.inputs.clone();
                let mut h = inp.h0.clone().unwrap_or_else(|| zeros_h.clone());
                h[i] += e;
                inp.h0 = Some(h);
                loss(&s.params, &inp)
            }));
        }
        assert_close("grad_h0", &flat(&grads.grad_h0), &fd, GRAD_ATOL, GRAD_RTOL);
        if let Some(gc0) = &grads.grad_c0 {
            let zeros_c = vec![0.0; dl * case.batch * cfg.hidden_size];
            let mut fd = Vec::new();
            for i in 0..zeros_c.len() {
                fd.push(numeric(&|e| {
                    let mut inp = s.inputs.clone();
                    let mut c = inp.c0.clone().unwrap_or_else(|| zeros_c.clone());
                    c[i] += e;
                    inp.c0 = Some(c);
                    loss(&s.params, &inp)
                }));
            }
            assert_close("grad_c0", &flat(gc0), &fd, GRAD_ATOL, GRAD_RTOL);
        }

        // Every parameter.
        for (name, p) in s.rnn.named_parameters() {
            let mut fd = Vec::new();
            for i in 0..p.len() {
                fd.push(numeric(&|e| {
                    let mut params = s.params.clone();
                    params.get_mut(&name).unwrap()[i] += e;
                    loss(&params, &s.inputs)
                }));
            }
            assert_close(&format!("grad.{name}"), &p.grad, &fd, GRAD_ATOL, GRAD_RTOL);
        }
    }
}

/// Mixed-precision training against full `f32` on the same model and data. bfloat16
/// operands keep 8 significant bits (relative rounding up to 2^-9), and the differences
/// add up through steps, layers and the backward pass; layer norm amplifies them further
/// (it divides by the gates' standard deviation, which can be small). Over these cases
/// the largest difference measured 1.5% of its tensor's largest magnitude without layer
/// norm and 3.5% with it, and the mean difference at most 0.53%. The bounds below leave
/// room above that; a real mistake in the bfloat16 kernels (a wrong pairing of rows or
/// columns, a missed tail) gives differences of the order of the values themselves.
const BF16_RTOL: f32 = 6e-2;
/// See [`BF16_RTOL`]: bound on the mean difference, relative to the largest magnitude.
const BF16_MEAN_RTOL: f32 = 1e-2;

/// One training-mode forward of `case` (dropout masks drawn from `seed`) and the backward
/// pass of `s`'s upstream gradients, from zeroed parameter gradients.
fn forward_backward(
    case: &Case,
    s: &mut Setup,
    seed: u64,
) -> (recurrent::RnnOutput, recurrent::InputGrads) {
    let cfg = &case.cfg;
    let (input, h0, c0) = model_inputs(case, &s.inputs);
    let state = initial_state(&h0, &c0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let lengths = s.inputs.lengths.clone();
    let (out, tape) = s
        .rnn
        .forward_train(input.view(), state, lengths.as_deref(), &mut rng)
        .unwrap();
    let go = user_layout(case, &s.go, cfg.num_directions() * cfg.output_size());
    let gh = state_array(case, &s.gh, cfg.output_size());
    let gc = (cfg.mode == Mode::Lstm).then(|| state_array(case, &s.gc, cfg.hidden_size));
    s.rnn.zero_grad();
    let grads = s
        .rnn
        .backward(
            &tape,
            OutputGrads {
                grad_output: Some(go.view()),
                grad_h_n: Some(gh.view()),
                grad_c_n: gc.as_ref().map(|g| g.view()),
                skip_input_grad: false,
            },
        )
        .unwrap();
    (out, grads)
}

/// Output and every gradient of one training step of `case` in `precision`, by name.
fn training_step(case: &Case, precision: Precision) -> Vec<(String, Vec<f32>)> {
    let mut s = setup(case);
    s.rnn.set_precision(precision);
    let (out, grads) = forward_backward(case, &mut s, case.seed);
    let mut all = vec![
        ("output".to_string(), flat(&out.output)),
        ("h_n".to_string(), flat(&out.h_n)),
        ("grad_input".to_string(), flat(&grads.grad_input)),
        ("grad_h0".to_string(), flat(&grads.grad_h0)),
    ];
    for (name, p) in s.rnn.named_parameters() {
        all.push((format!("grad.{name}"), p.grad.clone()));
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, rng_seed: RngSeed::Fixed(16), ..ProptestConfig::default() })]

    /// Where the CPU has AVX-512 BF16 the mixed-precision step differs from the `f32` one
    /// (so the bfloat16 kernels ran) by at most `BF16_RTOL`; elsewhere it falls back to
    /// `f32` and must be identical.
    #[test]
    fn bf16_training_stays_close_to_f32(case in case_strategy(2, 1..=75, true)) {
        // ReLU's derivative jumps at 0: rounding can switch a unit near 0 on or off and move
        // gradients by whole terms. The kernels are the same for tanh.
        let mut case = case;
        if case.cfg.mode == Mode::RnnRelu {
            case.cfg.mode = Mode::RnnTanh;
        }
        let exact = training_step(&case, Precision::F32);
        let mixed = training_step(&case, Precision::Bf16);
        if Precision::Bf16.effective() == Precision::F32 {
            prop_assert_eq!(exact, mixed);
        } else {
            prop_assert_ne!(&exact, &mixed);
            for ((name, e), (_, m)) in exact.iter().zip(&mixed) {
                assert_close_scaled(name, m, e, 1e-6, BF16_RTOL);
                let scale = e.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
                let mean = e.iter().zip(m).map(|(x, y)| (x - y).abs()).sum::<f32>()
                    / e.len().max(1) as f32;
                prop_assert!(mean <= BF16_MEAN_RTOL * scale, "{}: mean difference {} of max {}", name, mean, scale);
            }
        }
    }
}

/// Backward of a case against central differences of the f64 reference along one random
/// direction per tensor (input, `h0`, `c0`, each parameter): `sum(grad * v)` must match
/// `(L(x + eps v) - L(x - eps v)) / 2 eps`. Cheap enough for wide layers, and an error in
/// any element shows up. Tolerance: `GRAD_RTOL` of `sum |grad * v|`, the scale of the
/// f32 rounding in the analytic sum, plus `GRAD_ATOL`.
fn check_directional_gradients(case: &Case) {
    let mut s = setup(case);
    let cfg = case.cfg.clone();
    let (_, grads) = forward_backward(case, &mut s, case.seed ^ 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(case.seed ^ 1);
    let (go64, gh64, gc64) = (to_f64(&s.go), to_f64(&s.gh), to_f64(&s.gc));
    let loss = |params: &RefParams, inputs: &RefInputs| {
        reference::weighted_sum(
            &reference::forward(&cfg, params, inputs),
            &go64,
            &gh64,
            &gc64,
        )
    };
    const EPS: f64 = 1e-6;
    let check = |what: &str, grad: &[f32], v: &[f64], perturb: &dyn Fn(f64) -> f64| {
        let numeric = (perturb(EPS) - perturb(-EPS)) / (2.0 * EPS);
        let analytic: f64 = grad.iter().zip(v).map(|(&g, &d)| g as f64 * d).sum();
        let scale: f64 = grad
            .iter()
            .zip(v)
            .map(|(&g, &d)| (g as f64 * d).abs())
            .sum();
        let tol = GRAD_ATOL as f64 + GRAD_RTOL as f64 * scale;
        assert!(
            (analytic - numeric).abs() <= tol,
            "{what}: directional derivative {analytic} vs finite difference {numeric}"
        );
    };
    let mut dir = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect() };

    let v = dir(s.inputs.input.len());
    let grad_input = canonical(case, &grads.grad_input, cfg.input_size);
    check("grad_input", &grad_input, &v, &|e| {
        let mut inp = s.inputs.clone();
        inp.input.iter_mut().zip(&v).for_each(|(x, d)| *x += e * d);
        loss(&s.params, &inp)
    });
    let dl = cfg.num_directions() * cfg.num_layers;
    let v = dir(dl * case.batch * cfg.output_size());
    check("grad_h0", &flat(&grads.grad_h0), &v, &|e| {
        let mut inp = s.inputs.clone();
        let h = inp.h0.get_or_insert_with(|| vec![0.0; v.len()]);
        h.iter_mut().zip(&v).for_each(|(x, d)| *x += e * d);
        loss(&s.params, &inp)
    });
    if let Some(gc0) = &grads.grad_c0 {
        let v = dir(dl * case.batch * cfg.hidden_size);
        check("grad_c0", &flat(gc0), &v, &|e| {
            let mut inp = s.inputs.clone();
            let c = inp.c0.get_or_insert_with(|| vec![0.0; v.len()]);
            c.iter_mut().zip(&v).for_each(|(x, d)| *x += e * d);
            loss(&s.params, &inp)
        });
    }
    for (name, p) in s.rnn.named_parameters() {
        let v = dir(p.len());
        check(&format!("grad.{name}"), &p.grad, &v, &|e| {
            let mut params = s.params.clone();
            let w = params.get_mut(&name).unwrap();
            w.iter_mut().zip(&v).for_each(|(x, d)| *x += e * d);
            loss(&params, &s.inputs)
        });
    }
}

/// The threaded time loops give the same bits on 1, 2 and 3 threads: every chunk is
/// computed by the same kernel whichever thread claims it, and a split of batch rows keeps
/// every row's product tiles.
#[test]
fn results_do_not_depend_on_thread_count() {
    let mut results = Vec::new();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        results.push(pool.install(|| {
            let mut out = Vec::new();
            // The LSTM with a projection and with layer norm splits the batch rows (40:
            // several row tiles) instead of the hidden units; one direction, so that its
            // time loop gets every thread.
            let configs = [
                RnnConfig::new(Mode::Lstm, 20, 160).with_bidirectional(true),
                RnnConfig::new(Mode::Gru, 20, 160).with_bidirectional(true),
                RnnConfig::new(Mode::RnnTanh, 20, 160).with_bidirectional(true),
                RnnConfig::new(Mode::Lstm, 20, 160).with_proj_size(48),
                RnnConfig::new(Mode::Lstm, 20, 160).with_layer_norm(true),
            ];
            for cfg in configs {
                // Large enough for the time loop to use a team of threads.
                let cfg = cfg.with_num_layers(2);
                let mut rnn = Rnn::new(cfg, &mut rand::rngs::StdRng::seed_from_u64(3)).unwrap();
                let mut rng = rand::rngs::StdRng::seed_from_u64(4);
                let batch = 40;
                let x = ArrayD::from_shape_vec(
                    IxDyn(&[20, batch, 20]),
                    randn(&mut rng, 20 * batch * 20),
                )
                .unwrap();
                let lengths: Vec<usize> = (0..batch).map(|i| 1 + (i * 7) % 20).collect();
                let (y, tape) = rnn
                    .forward_train(x.view(), None, Some(&lengths), &mut rng)
                    .unwrap();
                let go =
                    ArrayD::from_shape_vec(y.output.raw_dim(), randn(&mut rng, y.output.len()))
                        .unwrap();
                let g = rnn
                    .backward(
                        &tape,
                        OutputGrads {
                            grad_output: Some(go.view()),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                out.push(flat(&y.output));
                out.push(flat(&g.grad_input));
                out.extend(rnn.named_parameters().iter().map(|(_, p)| p.grad.clone()));
            }
            out
        }));
    }
    assert!(results[0] == results[1] && results[1] == results[2]);
}
