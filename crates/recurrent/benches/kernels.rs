//! Micro-benchmarks of the hot kernels: `cargo bench -p recurrent --bench kernels`.
//!
//! For comparisons with PyTorch use `bench/compare.py`; these track our own kernels
//! between changes (criterion keeps the previous run and reports the difference).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use recurrent::kernels::{gemm as product, matmul_packed, Mat, MatMut, PackedMatrix};
use recurrent::{Mode, Rnn, RnnConfig};

fn random(n: usize, rng: &mut impl Rng) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// The products of a time loop against packed weights: the recurrent product of one step
/// at 32 and 64 rows (512 -> 2048, and 2048 -> 512 as in backward) and an input projection
/// over all steps (6400 rows).
fn gemm(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut group = c.benchmark_group("gemm");
    for (m, k, n) in [
        (32, 512, 2048),
        (64, 512, 2048),
        (6400, 512, 2048),
        (32, 2048, 512),
    ] {
        let w = random(k * n, &mut rng);
        let packed = PackedMatrix::pack(Mat::new(&w, n), k, n);
        let a = random(m * k, &mut rng);
        let mut out = vec![0.0; m * n];
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(format!("{m}x{k}x{n}"), |b| {
            b.iter(|| matmul_packed(m, Mat::new(&a, k), &packed, 0.0, MatMut::new(&mut out, n)))
        });
    }
    group.finish();
}

/// Narrow products of a language model's training step (B*T = 8192 rows, embedding 64,
/// H = 512, 84 characters): the input gradient `dG W_ih` (2048 -> 64), the weight gradient
/// `dG^T X` (left operand transposed) and the output layer (512 -> 84).
fn narrow_gemm(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut group = c.benchmark_group("narrow_gemm");
    for (m, k, n, transposed) in [
        (8192, 2048, 64, false),
        (2048, 8192, 64, true),
        (8192, 512, 84, false),
    ] {
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let mut out = vec![0.0; m * n];
        let a_view = if transposed {
            Mat::t(&a, m)
        } else {
            Mat::new(&a, k)
        };
        let name = format!("{m}x{k}x{n}{}", if transposed { " A^T" } else { "" });
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(name, |bench| {
            bench.iter(|| {
                product(
                    m,
                    n,
                    k,
                    a_view,
                    Mat::new(&b, n),
                    0.0,
                    MatMut::new(&mut out, n),
                )
            })
        });
    }
    group.finish();
}

/// Whole layers: batch-1 streaming inference with prepared weights, and a training
/// forward and backward at batch 32.
fn layers(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut group = c.benchmark_group("lstm256");
    group.sample_size(20);
    let rnn = Rnn::new(RnnConfig::new(Mode::Lstm, 256, 256), &mut rng).unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&[100, 1, 256]), random(100 * 256, &mut rng)).unwrap();
    let prepared = rnn.prepare();
    group.bench_function("inference B=1 T=100", |b| {
        b.iter(|| prepared.forward(x.view(), None, None).unwrap())
    });
    let mut rnn = rnn;
    let x = ArrayD::from_shape_vec(IxDyn(&[50, 32, 256]), random(50 * 32 * 256, &mut rng)).unwrap();
    let g = ArrayD::from_shape_vec(IxDyn(&[50, 32, 256]), random(50 * 32 * 256, &mut rng)).unwrap();
    group.bench_function("train B=32 T=50", |b| {
        b.iter(|| {
            let (_, tape) = rnn.forward_train(x.view(), None, None, &mut rng).unwrap();
            let grads = recurrent::OutputGrads {
                grad_output: Some(g.view()),
                skip_input_grad: true,
                ..Default::default()
            };
            rnn.backward(&tape, grads).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, gemm, narrow_gemm, layers);
criterion_main!(benches);
