//! `recurrent bench`: times one configuration, inference or one training step.

use clap::Args;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use recurrent::loss::MseLoss;
use recurrent::nn::{Linear, RecurrentBlock, Sequential, Taped};
use recurrent::optim::{Optimizer, Sgd};
use recurrent::{Error, Mode, Parameters, Result, Rnn, RnnConfig};
use std::time::Instant;

/// Options of `recurrent bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Cell type: LSTM, GRU, RNN_TANH or RNN_RELU.
    #[arg(long, value_enum, default_value = "LSTM")]
    mode: crate::choices::ModeArg,
    /// Input features.
    #[arg(long, default_value_t = 256, value_parser = crate::check::positive, allow_negative_numbers = true)]
    input_size: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 256, value_parser = crate::check::positive, allow_negative_numbers = true)]
    hidden_size: usize,
    /// Stacked layers.
    #[arg(long, default_value_t = 1, value_parser = crate::check::positive, allow_negative_numbers = true)]
    num_layers: usize,
    /// Two directions.
    #[arg(long)]
    bidirectional: bool,
    /// LSTM projection size (0: none).
    #[arg(long, default_value_t = 0)]
    proj_size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1, value_parser = crate::check::positive, allow_negative_numbers = true)]
    batch: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 100, value_parser = crate::check::positive, allow_negative_numbers = true)]
    seq_len: usize,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = crate::check::threads, allow_negative_numbers = true)]
    threads: Option<usize>,
    /// `uniform`: lengths spread evenly over 1..=seq-len (sequence b gets
    /// 1 + b*(T-1)/(B-1)), run as a variable-length batch.
    #[arg(long)]
    lengths: Option<String>,
    /// Time one training step (forward, MSE of a Linear head on the last step, backward,
    /// SGD step) instead of inference.
    #[arg(long)]
    train: bool,
    /// Timed repetitions.
    #[arg(long, default_value_t = 20, value_parser = crate::check::positive, allow_negative_numbers = true)]
    iters: usize,
    /// Untimed warm-up repetitions.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Inference: pack the weights inside every call (`Rnn::forward`) instead of once
    /// before timing (`Rnn::prepare`, as a deployed model does).
    #[arg(long)]
    repack: bool,
    /// Time a plain `N x N` by `N x N` matrix product (`kernels::gemm`, packing included)
    /// instead of a recurrent model: the machine's roof for the other rows' GFLOP/s.
    #[arg(long, value_parser = crate::check::positive)]
    gemm: Option<usize>,
    /// Training: arithmetic of the recurrent layers' products, `f32` or `bf16` (operands
    /// rounded to bfloat16, sums in f32; needs AVX-512 BF16, else f32).
    #[arg(long, value_enum, ignore_case = true, default_value = "f32")]
    precision: crate::choices::PrecisionArg,
}

/// Evenly spread lengths over `1..=steps`.
pub fn uniform_lengths(batch: usize, steps: usize) -> Vec<usize> {
    if batch == 1 {
        return vec![steps];
    }
    (0..batch)
        .map(|b| 1 + b * (steps - 1) / (batch - 1))
        .collect()
}

/// Runs the benchmark and prints the result.
pub fn run(a: &BenchArgs) -> Result<()> {
    let threads = a.threads.unwrap_or_else(crate::check::cores);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Invalid(format!("thread pool: {e}")))?;
    pool.install(|| run_inner(a, threads))
}

/// `--gemm N`: the median time of an `N^3` product and its GFLOP/s.
fn run_gemm(a: &BenchArgs, n: usize, threads: usize) -> Result<()> {
    use recurrent::kernels::{gemm, Mat, MatMut};
    let elements = n
        .checked_mul(n)
        .ok_or_else(|| Error::Invalid(format!("--gemm {n} is too large")))?;
    crate::check::fits_in_memory("this product", 4 * 4 * elements as u128)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x: Vec<f32> = (0..elements).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let y: Vec<f32> = (0..elements).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let mut z = vec![0.0f32; elements];
    let mut times = Vec::with_capacity(a.iters.min(1 << 16));
    for i in 0..a.warmup + a.iters {
        let start = Instant::now();
        gemm(
            n,
            n,
            n,
            Mat::new(&x, n),
            Mat::new(&y, n),
            0.0,
            MatMut::new(&mut z, n),
        );
        std::hint::black_box(&z);
        if i >= a.warmup {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|p, q| p.total_cmp(q));
    let median = times[times.len() / 2];
    let gflops = 2.0 * (n as f64).powi(3) / (median * 1e-3) / 1e9;
    if a.json {
        let j = serde_json::json!({
            "gemm": n, "threads": threads, "median_ms": median, "min_ms": times[0],
            "max_ms": times[times.len() - 1], "gflops": gflops, "iters": a.iters, "cpu": cpu_json(),
        });
        println!("{j}");
    } else {
        println!("GEMM {n}x{n}x{n} threads={threads}: median {median:.3} ms, {gflops:.1} GFLOP/s");
    }
    Ok(())
}

fn run_inner(a: &BenchArgs, threads: usize) -> Result<()> {
    if let Some(n) = a.gemm {
        return run_gemm(a, n, threads);
    }
    let mode: Mode = a.mode.into();
    let cfg = RnnConfig::new(mode, a.input_size, a.hidden_size)
        .with_num_layers(a.num_layers)
        .with_bidirectional(a.bidirectional)
        .with_proj_size(a.proj_size);
    cfg.validate()?;
    let data_bytes = 4 * (a.seq_len as u128) * (a.batch as u128) * (a.input_size as u128);
    crate::check::fits_in_memory(
        "this benchmark",
        crate::check::training_bytes(&cfg, 0)?
            + data_bytes
            + crate::check::tape_bytes(&cfg, a.batch, a.seq_len),
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let rnn = Rnn::new(cfg.clone(), &mut rng)?;
    let (t, b) = (a.seq_len, a.batch);
    let x = ArrayD::from_shape_fn(IxDyn(&[t, b, a.input_size]), |_| {
        rng.gen_range(-1.0f32..1.0)
    });
    let lengths = match a.lengths.as_deref() {
        None => None,
        Some("uniform") => Some(uniform_lengths(b, t)),
        Some(other) => {
            return Err(Error::Invalid(format!(
                "--lengths: expected `uniform`, found {other:?}"
            )))
        }
    };
    let tokens: usize = lengths.as_ref().map_or(t * b, |l| l.iter().sum());

    let width = cfg.num_directions() * cfg.output_size();
    let mut times = Vec::with_capacity(a.iters.min(1 << 16));
    crate::alloc::reset_peak();
    let base_mem = crate::alloc::current();
    if a.train {
        let mut rnn = rnn;
        rnn.set_precision(a.precision.into());
        let mut block = RecurrentBlock::last_step(rnn);
        block.set_lengths(lengths.clone());
        // The data needs no gradient (as a PyTorch input without `requires_grad`).
        block.set_input_grad(false);
        let mut model = Taped::new(
            Sequential::new()
                .push("rnn", block)
                .push("head", Linear::new(width, 1, true, &mut rng)),
            0,
        );
        let y = ArrayD::zeros(IxDyn(&[b, 1]));
        let mut opt = Sgd::new(1e-3);
        for i in 0..a.warmup + a.iters {
            let start = Instant::now();
            let pred = model.forward(&x)?;
            let loss = MseLoss::default().forward(&pred, &y)?;
            model.zero_grad();
            model.backward(&loss.grad)?;
            opt.step(&mut model.named_parameters_mut());
            if i >= a.warmup {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    } else {
        let mut rnn = rnn;
        rnn.eval();
        // A deployed model packs its weights once (`Rnn::prepare`); `--repack` times
        // `Rnn::forward`, which packs them in every call.
        let prepared = rnn.prepare();
        for i in 0..a.warmup + a.iters {
            let start = Instant::now();
            let out = if a.repack {
                rnn.forward(x.view(), None, lengths.as_deref())?
            } else {
                prepared.forward(x.view(), None, lengths.as_deref())?
            };
            std::hint::black_box(&out);
            if i >= a.warmup {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let peak_mib = (crate::alloc::peak().saturating_sub(base_mem)) as f64 / (1024.0 * 1024.0);
    times.sort_by(|p, q| p.total_cmp(q));
    let median = times[times.len() / 2];
    let flops = flop_count(&cfg, tokens) * if a.train { 3.0 } else { 1.0 };
    let gflops = flops / (median * 1e-3) / 1e9;
    if a.json {
        let j = serde_json::json!({
            "mode": mode.as_str(), "input_size": a.input_size, "hidden_size": a.hidden_size,
            "num_layers": a.num_layers, "bidirectional": a.bidirectional, "proj_size": a.proj_size,
            "batch": b, "seq_len": t, "threads": threads, "lengths": a.lengths, "train": a.train,
            "tokens": tokens, "median_ms": median, "min_ms": times[0], "max_ms": times[times.len() - 1],
            "gflops": gflops, "peak_mib": peak_mib, "iters": a.iters, "cpu": cpu_json(),
        });
        println!("{j}");
    } else {
        println!(
            "{} I={} H={} layers={} bidir={} proj={} B={} T={} threads={} {}{}: median {:.3} ms (min {:.3}, max {:.3}), {:.1} GFLOP/s, peak {:.1} MiB",
            mode, a.input_size, a.hidden_size, a.num_layers, a.bidirectional, a.proj_size, b, t, threads,
            if a.train { "train step" } else { "inference" },
            if lengths.is_some() { ", uniform lengths" } else { "" },
            median, times[0], times[times.len() - 1], gflops, peak_mib
        );
    }
    Ok(())
}

/// The detected CPU, the kernel level in use and the blocking sizes, for `--json`.
fn cpu_json() -> serde_json::Value {
    use recurrent::kernels::cpu;
    let c = recurrent::kernels::CpuInfo::get();
    serde_json::json!({
        "vendor": c.vendor, "model_name": c.model_name, "family": c.family, "model": c.model,
        "level": cpu::level().name(), "bf16": cpu::has_bf16(), "bf16_speedup": cpu::bf16_speedup(),
        "l1d_bytes": c.l1d_bytes, "l2_bytes": c.l2_bytes,
        "l3_bytes": c.l3_bytes, "cores": c.cores, "panel_group_bytes": c.panel_group_bytes(),
        "projection_block_bytes": c.projection_block_bytes(),
        "column_block_bytes": c.column_block_bytes(),
    })
}

/// `sum over layers and directions of 2 * tokens * (in + H_out) * G * H` (the recurrent
/// product uses `H_out` inputs; with projections add `2 * tokens * H * P`).
pub fn flop_count(cfg: &RnnConfig, tokens: usize) -> f64 {
    let g = cfg.mode.gates() as f64;
    let h = cfg.hidden_size as f64;
    let mut total = 0.0;
    for layer in 0..cfg.num_layers {
        let inp = cfg.layer_input_size(layer) as f64;
        let mut per = 2.0 * tokens as f64 * (inp + cfg.output_size() as f64) * g * h;
        if cfg.proj_size > 0 {
            per += 2.0 * tokens as f64 * h * cfg.proj_size as f64;
        }
        total += per * cfg.num_directions() as f64;
    }
    total
}
