//! Conv1d and BatchNorm1d against PyTorch (`fixtures/conv`, from `fixtures/generate.py`):
//! outputs, input and parameter gradients, and BatchNorm's running statistics; then
//! masked BatchNorm and pooling against the same computations on the valid part alone.

mod common;

use common::*;
use ndarray::{ArrayD, IxDyn};
use recurrent::io::TensorFile;
use recurrent::nn::{BatchNorm1d, Conv1d, Conv1dConfig, GlobalAvgPool1d, Module, Padding, Tape};
use recurrent::param::Grads;
use recurrent::Parameters;

/// A metadata value: JSON, or a plain string (the generator stores strings as they are).
fn meta(f: &TensorFile, key: &str) -> serde_json::Value {
    let raw = f.metadata(key).unwrap_or_else(|| panic!("metadata {key}"));
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_string()))
}

/// Output and gradients of `m` for the fixture's input and output gradient, compared
/// with the fixture's tensors at PyTorch's tolerance.
fn check(name: &str, f: &TensorFile, m: &mut dyn Module) {
    let x = f.require_f32("input").unwrap();
    let mut tape = Tape::training(0);
    let y = m.forward(&x, &mut tape).unwrap();
    let expected = f.require_f32("output").unwrap();
    assert_eq!(y.shape(), expected.shape(), "{name}: output shape");
    assert_close(
        &format!("{name} output"),
        &flat(&y),
        &flat(&expected),
        TORCH_ATOL,
        TORCH_RTOL,
    );
    let mut grads = Grads::zeros_for(m);
    let g = f.require_f32("grad_output").unwrap();
    let dx = m.backward(&tape, &g, &mut grads.slices()).unwrap();
    let want = f.require_f32("grad_input").unwrap();
    assert_close(
        &format!("{name} grad_input"),
        &flat(&dx),
        &flat(&want),
        TORCH_ATOL,
        TORCH_RTOL,
    );
    for (k, (pname, _)) in m.named_parameters().iter().enumerate() {
        let want = f.require_f32(&format!("grad.{pname}")).unwrap();
        let what = format!("{name} grad.{pname}");
        assert_close(&what, grads.part(k), &flat(&want), TORCH_ATOL, TORCH_RTOL);
    }
    m.update_buffers(&tape);
}

fn load(m: &mut dyn Module, f: &TensorFile) {
    m.visit_state_mut(&mut |name, shape, value| {
        if let Ok(t) = f.require_f32(name) {
            assert_eq!(t.shape(), shape, "{name}");
            value.copy_from_slice(&flat(&t));
        }
    });
}

/// The `fixtures/conv` files whose names start with `prefix`.
fn fixtures_named(prefix: &str) -> Vec<std::path::PathBuf> {
    fixture_files("conv")
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect()
}

#[test]
fn conv1d_matches_pytorch() {
    let files = fixtures_named("conv1d");
    assert!(files.len() >= 8);
    for path in files {
        let f = TensorFile::read(&path).unwrap();
        let n = |k: &str| meta(&f, k).as_u64().unwrap() as usize;
        let padding = match meta(&f, "padding") {
            serde_json::Value::String(s) if s == "same" => Padding::Same,
            v => Padding::Zeros(v.as_u64().unwrap() as usize),
        };
        let cfg = Conv1dConfig::new(n("in_channels"), n("out_channels"), n("kernel_size"))
            .with_stride(n("stride"))
            .with_padding(padding)
            .with_dilation(n("dilation"))
            .with_bias(meta(&f, "bias").as_bool().unwrap());
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let mut conv = Conv1d::new(cfg, &mut rng).unwrap();
        load(&mut conv, &f);
        check(&path.display().to_string(), &f, &mut conv);
    }
}

#[test]
fn batch_norm_matches_pytorch_in_both_modes() {
    let files = fixtures_named("batchnorm1d");
    assert!(files.len() >= 4);
    for path in files {
        let f = TensorFile::read(&path).unwrap();
        let name = path.display().to_string();
        let mut bn = BatchNorm1d::new(meta(&f, "num_features").as_u64().unwrap() as usize);
        load(&mut bn, &f);
        if meta(&f, "training").as_bool().unwrap() {
            check(&name, &f, &mut bn);
        } else {
            // Inference: running statistics, nothing kept, buffers unchanged.
            let x = f.require_f32("input").unwrap();
            let y = bn.forward(&x, &mut Tape::inference()).unwrap();
            let want = f.require_f32("output").unwrap();
            assert_close(
                &format!("{name} output"),
                &flat(&y),
                &flat(&want),
                TORCH_ATOL,
                TORCH_RTOL,
            );
        }
        for buffer in ["running_mean", "running_var", "num_batches_tracked"] {
            let want = f.require_f32(&format!("after.{buffer}")).unwrap();
            let got: Vec<f32> = bn
                .named_buffers()
                .into_iter()
                .find(|(n, _)| n == buffer)
                .unwrap()
                .1
                .value
                .clone();
            assert_close(
                &format!("{name} {buffer}"),
                &got,
                &flat(&want),
                TORCH_ATOL,
                TORCH_RTOL,
            );
        }
    }
}

/// Masked BatchNorm and pooling give, on each sample's valid positions, what the
/// unmasked ops give on the batch of those positions alone (concatenated along L for
/// BatchNorm, sample by sample for pooling); padded outputs and gradients are zero.
/// Tolerance: f32 sums of at most 40 terms in a different order, 1e-5.
#[test]
fn masks_leave_padding_out_of_statistics_and_gradients() {
    let (b, c, l) = (3, 2, 6);
    let lengths = [6, 2, 4];
    let x = ArrayD::from_shape_fn(IxDyn(&[b, c, l]), |i| {
        ((i[0] * 7 + i[1] * 3 + i[2] * 5) % 11) as f32 * 0.3 - 1.0
    });
    let g = ArrayD::from_shape_fn(IxDyn(&[b, c, l]), |i| {
        ((i[0] + i[1] * 2 + i[2]) % 5) as f32 - 2.0
    });
    // The valid positions of every sample side by side as one sample: (1, C, sum of lengths).
    let total: usize = lengths.iter().sum();
    let gather = |a: &ArrayD<f32>| {
        ArrayD::from_shape_fn(IxDyn(&[1, c, total]), |i| {
            let (mut s, mut t) = (0, i[2]);
            while t >= lengths[s] {
                t -= lengths[s];
                s += 1;
            }
            a[[s, i[1], t]]
        })
    };
    let mut bn = BatchNorm1d::new(c);
    bn.weight.value = vec![1.5, 0.7];
    bn.bias.value = vec![0.2, -0.1];
    let mut tape = Tape::training(0);
    let y = bn.forward_masked(&x, Some(&lengths), &mut tape).unwrap();
    let mut grads = Grads::zeros_for(&bn);
    let dx = bn.backward(&tape, &g, &mut grads.slices()).unwrap();
    let mut whole_tape = Tape::training(0);
    let y_whole = bn.forward(&gather(&x), &mut whole_tape).unwrap();
    let mut whole_grads = Grads::zeros_for(&bn);
    let dx_whole = bn
        .backward(&whole_tape, &gather(&g), &mut whole_grads.slices())
        .unwrap();
    assert_close(
        "masked output",
        &flat(&gather(&y)),
        &flat(&y_whole),
        1e-5,
        1e-5,
    );
    assert_close(
        "masked grad_input",
        &flat(&gather(&dx)),
        &flat(&dx_whole),
        1e-5,
        1e-5,
    );
    assert_close(
        "masked grads",
        grads.as_slice(),
        whole_grads.as_slice(),
        1e-5,
        1e-5,
    );
    for s in 0..b {
        for ch in 0..c {
            for t in lengths[s]..l {
                assert_eq!(
                    (y[[s, ch, t]], dx[[s, ch, t]]),
                    (0.0, 0.0),
                    "padding at {s},{ch},{t}"
                );
            }
        }
    }
    let pool = GlobalAvgPool1d;
    let mut tape = Tape::training(0);
    let p = pool.forward_masked(&x, Some(&lengths), &mut tape).unwrap();
    for s in 0..b {
        for ch in 0..c {
            let mean = (0..lengths[s]).map(|t| x[[s, ch, t]]).sum::<f32>() / lengths[s] as f32;
            assert!((p[[s, ch]] - mean).abs() < 1e-6);
        }
    }
    let gp = ArrayD::from_shape_fn(IxDyn(&[b, c]), |i| (i[0] * 2 + i[1]) as f32);
    let dp = pool
        .backward(&tape, &gp, &mut Grads::default().slices())
        .unwrap();
    for s in 0..b {
        for ch in 0..c {
            for t in 0..l {
                let want = if t < lengths[s] {
                    gp[[s, ch]] / lengths[s] as f32
                } else {
                    0.0
                };
                assert_eq!(dp[[s, ch, t]], want);
            }
        }
    }
}

/// Bad shapes and sizes are errors naming the layer, not panics.
#[test]
fn bad_conv_and_norm_inputs_are_errors() {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    assert!(Conv1d::new(Conv1dConfig::new(2, 3, 0), &mut rng).is_err());
    let same_strided = Conv1dConfig::new(2, 3, 3)
        .with_padding(Padding::Same)
        .with_stride(2);
    assert!(Conv1d::new(same_strided, &mut rng).is_err());
    let conv = Conv1d::new(Conv1dConfig::new(2, 3, 5), &mut rng).unwrap();
    let short = ArrayD::zeros(IxDyn(&[1, 2, 4]));
    let err = conv
        .forward(&short, &mut Tape::inference())
        .unwrap_err()
        .to_string();
    assert!(err.contains("Conv1d input"), "{err}");
    let wrong = ArrayD::zeros(IxDyn(&[1, 3, 9]));
    assert!(conv.forward(&wrong, &mut Tape::inference()).is_err());
    let bn = BatchNorm1d::new(2);
    let one = ArrayD::zeros(IxDyn(&[1, 2]));
    assert!(
        bn.forward(&one, &mut Tape::training(0)).is_err(),
        "one value per channel"
    );
    let x = ArrayD::zeros(IxDyn(&[2, 2, 3]));
    assert!(bn
        .forward_masked(&x, Some(&[3, 4]), &mut Tape::training(0))
        .is_err());
}
