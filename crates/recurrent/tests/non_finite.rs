//! NaN propagates through every kernel level as in PyTorch: a NaN weight or bias (what a
//! diverged training leaves) reaches every output and gradient it feeds, instead of being
//! turned into finite values by the fast `exp`, sigmoid, tanh or ReLU. (Non-finite inputs
//! and initial states are rejected with an error before any kernel runs.)
//!
//! This binary holds one test, so forcing the kernel level cannot race with other tests.

use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use recurrent::kernels::cpu::{with_level, Level};
use recurrent::{Mode, Parameters, Rnn, RnnConfig};

/// `(T, B, I)` and hidden size: wide enough for the blocked and threaded loops.
const STEPS: usize = 6;
const BATCH: usize = 4;
const INPUT: usize = 40;
const HIDDEN: usize = 96;

fn configs() -> Vec<RnnConfig> {
    let base = |m| RnnConfig::new(m, INPUT, HIDDEN).with_num_layers(2);
    vec![
        base(Mode::Lstm),
        base(Mode::Gru),
        base(Mode::RnnTanh),
        base(Mode::RnnRelu),
        base(Mode::Lstm).with_proj_size(32).with_bidirectional(true),
        base(Mode::Lstm).with_layer_norm(true),
    ]
}

fn input(rng: &mut impl Rng) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[STEPS, BATCH, INPUT]), |_| rng.gen_range(-1.0..1.0))
}

fn check_config(cfg: &RnnConfig, level: Level) {
    let what = format!(
        "{} proj={} ln={} at {level:?}",
        cfg.mode, cfg.proj_size, cfg.layer_norm
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut rnn = Rnn::new(cfg.clone(), &mut rng).unwrap();
    rnn.eval();
    // A NaN in one unit's input bias (as training that diverged leaves) reaches every
    // output of the first step through that unit (ReLU and the gates included), and every
    // later output through the recurrent product.
    let x = input(&mut rng);
    let mut nan_bias = rnn.clone();
    for (name, p) in nan_bias.named_parameters_mut() {
        if name == "bias_ih_l0" {
            p.value[1] = f32::NAN;
        }
    }
    for (name, out) in [
        (
            "forward",
            nan_bias.forward(x.view(), None, None).unwrap().output,
        ),
        (
            "prepared",
            nan_bias
                .prepare()
                .forward(x.view(), None, None)
                .unwrap()
                .output,
        ),
    ] {
        assert!(
            out.slice(ndarray::s![1.., .., ..])
                .iter()
                .all(|v| v.is_nan()),
            "{what} {name}: a NaN bias must reach every output after the first step"
        );
    }
    // A NaN in a recurrent weight reaches every output from the second step on, in
    // inference and in training (forward and backward).
    let x = input(&mut rng);
    for (name, p) in rnn.named_parameters_mut() {
        if name == "weight_hh_l0" {
            p.value[5] = f32::NAN;
        }
    }
    let out = rnn.forward(x.view(), None, None).unwrap().output;
    assert!(
        out.slice(ndarray::s![1.., .., ..])
            .iter()
            .all(|v| v.is_nan()),
        "{what}: a NaN weight must reach every output"
    );
    rnn.train(true);
    let (train_out, tape) = rnn.forward_train(x.view(), None, None, &mut rng).unwrap();
    assert!(
        train_out
            .output
            .slice(ndarray::s![1.., .., ..])
            .iter()
            .all(|v| v.is_nan()),
        "{what}: training forward must carry the NaN"
    );
    let grads = rnn
        .backward(
            &tape,
            recurrent::OutputGrads {
                grad_output: Some(ArrayD::ones(train_out.output.raw_dim()).view()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        grads.grad_input.iter().any(|v| v.is_nan()),
        "{what}: the input gradient must carry the NaN"
    );
}

/// NaN where libm gives NaN, else within the fast functions' 5e-7 absolute error.
fn same(fast: f32, libm: f32) -> bool {
    (fast.is_nan() && libm.is_nan()) || (fast - libm).abs() <= 5e-7
}

/// The vectorised activations keep NaN and saturate at the infinities, as libm does.
fn check_activations(level: Level) {
    use recurrent::kernels::activation::{sigmoid_slice, tanh_slice};
    // 33 values: two full 16-lane blocks and a remainder.
    let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    let values: Vec<f32> = (0..33).map(|i| special[i % 3]).collect();
    let (mut s, mut t) = (values.clone(), values.clone());
    sigmoid_slice(&mut s);
    tanh_slice(&mut t);
    for (i, v) in values.iter().enumerate() {
        let (want_s, want_t) = (1.0 / (1.0 + (-v).exp()), v.tanh());
        assert!(
            same(s[i], want_s),
            "sigmoid({v}) at {level:?}: {} (libm {want_s})",
            s[i]
        );
        assert!(
            same(t[i], want_t),
            "tanh({v}) at {level:?}: {} (libm {want_t})",
            t[i]
        );
    }
}

#[test]
fn nan_propagates_at_every_kernel_level() {
    for level in Level::supported() {
        with_level(level, || {
            check_activations(level);
            for cfg in configs() {
                check_config(&cfg, level);
            }
        });
    }
}
