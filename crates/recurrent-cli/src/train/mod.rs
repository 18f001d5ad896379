//! `recurrent train classify | forecast | lm`: options shared by every task, progress
//! output, reports and plots.

pub mod classify;
pub mod forecast;
pub mod lm;
pub mod plot;
mod progress;

use clap::{Args, Subcommand};
use recurrent::kernels::Precision;
use recurrent::models::{FitReport, FitSettings};
use recurrent::{Error, Mode, Result, RnnConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use progress::CliProgress;

/// The training tasks.
#[derive(Subcommand)]
pub enum TrainTask {
    /// Sequence classification (N vs 1) from long CSV or UEA/UCR `.ts` files.
    Classify(classify::ClassifyArgs),
    /// Forecasting from a CSV series, evaluated with a rolling origin on held-out points.
    Forecast(forecast::ForecastArgs),
    /// Character-level language model on a UTF-8 text; reports held-out bits per character.
    Lm(lm::LmArgs),
}

/// Runs a training task.
pub fn run(task: TrainTask) -> Result<()> {
    match task {
        TrainTask::Classify(a) => classify::run(a),
        TrainTask::Forecast(a) => forecast::run(a),
        TrainTask::Lm(a) => lm::run(a),
    }
}

/// Options common to all `train` tasks; unset values take the task's defaults.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Cell type: LSTM, GRU, RNN_TANH or RNN_RELU.
    #[arg(long, default_value = "LSTM")]
    pub mode: String,
    /// Hidden size.
    #[arg(long)]
    pub hidden_size: Option<usize>,
    /// Stacked layers.
    #[arg(long)]
    pub num_layers: Option<usize>,
    /// Bidirectional layers (`--bidirectional` or `--bidirectional false`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub bidirectional: Option<bool>,
    /// Dropout between recurrent layers (for `lm` also on the recurrent output, before the
    /// output layer). Defaults: 0 for classify and forecast, 0.1 for lm.
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Maximum epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop training after this long, e.g. `90s`, `15m`, `1h`.
    #[arg(long, value_parser = parse_duration)]
    pub time_budget: Option<Duration>,
    /// Examples per batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Adam learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of initialisation, splits, shuffling and dropout (same seed, same result).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Model file to write (safetensors with everything `predict`/`generate` need).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue a stopped run from `OUT.checkpoint` (optimizer state included).
    #[arg(long)]
    pub resume: bool,
    /// Write the final metrics, settings and timing as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write a PNG of the training and validation loss curves.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Arithmetic of the recurrent layers' matrix products in training: `f32`, or `bf16`
    /// (operands rounded to bfloat16, sums, states and weights in f32, as PyTorch's CPU
    /// autocast; about 1.5x faster training where the CPU has AVX-512 BF16, f32
    /// elsewhere). Evaluation and saved models are always f32. Defaults: f32 for classify
    /// and forecast, bf16 for lm.
    #[arg(long)]
    pub precision: Option<String>,
}

/// A task's default hyper-parameters.
pub struct Defaults {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub dropout: f32,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub patience: usize,
    pub out: &'static str,
    pub precision: Precision,
}

impl CommonArgs {
    /// The recurrent configuration for `input_size` inputs.
    pub fn rnn_config(&self, d: &Defaults, input_size: usize) -> Result<RnnConfig> {
        let mode: Mode = self.mode.parse()?;
        let cfg = RnnConfig::new(mode, input_size, self.hidden_size.unwrap_or(d.hidden_size))
            .with_num_layers(self.num_layers.unwrap_or(d.num_layers))
            .with_bidirectional(self.bidirectional.unwrap_or(d.bidirectional))
            .with_dropout(self.dropout.unwrap_or(d.dropout))
            .with_batch_first(true);
        cfg.validate()?;
        Ok(cfg)
    }

    /// The arithmetic of training products.
    pub fn precision(&self, d: &Defaults) -> Result<Precision> {
        self.precision
            .as_deref()
            .map_or(Ok(d.precision), str::parse)
    }

    /// The model path.
    pub fn out_path(&self, d: &Defaults) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from(d.out))
    }

    /// Fit settings; the checkpoint lives beside the model file.
    pub fn fit_settings(&self, d: &Defaults) -> FitSettings {
        FitSettings {
            epochs: self.epochs.unwrap_or(if self.time_budget.is_some() {
                usize::MAX
            } else {
                d.epochs
            }),
            time_budget: self.time_budget,
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            lr: self.lr.unwrap_or(d.lr),
            seed: self.seed,
            patience: d.patience,
            clip_norm: 1.0,
            anneal: false,
            checkpoint: Some(recurrent::models::fit::checkpoint_path(&self.out_path(d))),
            resume: self.resume,
        }
    }

    /// Runs `f` on a thread pool of `--threads` threads.
    pub fn with_threads<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(n) = self.threads {
            b = b.num_threads(n);
        }
        let pool = b
            .build()
            .map_err(|e| Error::Invalid(format!("thread pool: {e}")))?;
        pool.install(f)
    }

    /// Fails before training if the output folder does not exist (so a long run does not
    /// end in an error), and refuses `--resume` without a checkpoint.
    pub fn check_paths(&self, d: &Defaults) -> Result<()> {
        for p in [
            Some(self.out_path(d)),
            self.report.clone(),
            self.plot.clone(),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(Error::File {
                        path: p.display().to_string(),
                        message: format!("folder {} does not exist", dir.display()),
                    });
                }
            }
        }
        let ckpt = recurrent::models::fit::checkpoint_path(&self.out_path(d));
        let any_checkpoint = ckpt.exists() || ckpt.with_extension("checkpoint.m0").exists();
        if self.resume && !any_checkpoint {
            return Err(Error::File {
                path: ckpt.display().to_string(),
                message: "no checkpoint to resume from".into(),
            });
        }
        Ok(())
    }

    /// Writes the report (metrics + settings + timing) and plot, and removes the
    /// checkpoints once the model file is written.
    pub fn finish(
        &self,
        metrics: serde_json::Value,
        fit: &FitReport,
        settings: serde_json::Value,
        checkpoints: &[PathBuf],
    ) -> Result<()> {
        if let Some(path) = &self.report {
            let mut report = metrics;
            report["settings"] = settings;
            report["training"] = serde_json::json!({
                "epochs_run": fit.history.len(),
                "best_epoch": fit.best_epoch,
                "best_val_loss": fit.best_val_loss,
                "stopped_by": fit.stopped_by,
                "train_seconds": fit.seconds,
                "examples_per_second": fit.examples_per_second,
                "history": fit.history,
            });
            let text = serde_json::to_string_pretty(&report).expect("serialisable");
            recurrent::io::write_atomic(path, text.as_bytes())?;
        }
        if let Some(path) = &self.plot {
            plot::loss_curves(path, &fit.history)?;
        }
        for p in checkpoints {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    /// The settings as JSON, for reports.
    pub fn settings_json(&self, d: &Defaults, cfg: &RnnConfig) -> serde_json::Value {
        let s = self.fit_settings(d);
        serde_json::json!({
            "mode": cfg.mode.as_str(), "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
            "bidirectional": cfg.bidirectional, "dropout": cfg.dropout, "epochs": if s.epochs == usize::MAX { None } else { Some(s.epochs) },
            "time_budget_seconds": s.time_budget.map(|t| t.as_secs_f64()), "batch_size": s.batch_size,
            "lr": s.lr, "seed": s.seed, "patience": s.patience, "threads": rayon::current_num_threads(),
            "precision": self.precision(d).unwrap_or(d.precision).effective().to_string(),
        })
    }
}

/// Parses `90`, `90s`, `15m`, `1.5h`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("expected a duration like 90s, 15m or 1h, found {s:?}"))?;
    let secs = match unit {
        "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("unknown time unit {unit:?} (use s, m or h)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration must be positive, found {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Splits indices `0..labels.len()` into (train, validation), stratified by label, with
/// about `fraction` of each class (at least one when the class has two or more examples).
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        idx.shuffle(&mut rng);
        let n_val = if idx.len() >= 2 {
            ((idx.len() as f64 * fraction).round() as usize).max(1)
        } else {
            0
        };
        val.extend_from_slice(&idx[..n_val]);
        train.extend_from_slice(&idx[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Checkpoint of ensemble member `k`: `BASE.m{k}`.
pub fn member_checkpoint(base: &Path, k: usize) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(format!(".m{k}"));
    PathBuf::from(s)
}

/// Settings of ensemble member `k` of `members`: seed `seed + k`, its own checkpoint
/// (resumed only if the stopped run reached it), an equal share of the time budget.
pub fn member_settings(settings: &FitSettings, k: usize, members: usize) -> FitSettings {
    let mut s = settings.clone();
    s.seed = settings.seed.wrapping_add(k as u64);
    s.checkpoint = settings
        .checkpoint
        .as_ref()
        .map(|p| member_checkpoint(p, k));
    s.resume = settings.resume && s.checkpoint.as_ref().is_some_and(|p| p.exists());
    s.time_budget = settings.time_budget.map(|t| t / members as u32);
    s
}

/// The checkpoints of all `members` ensemble members.
pub fn member_checkpoints(settings: &FitSettings, members: usize) -> Vec<PathBuf> {
    (0..members)
        .filter_map(|k| {
            settings
                .checkpoint
                .as_ref()
                .map(|p| member_checkpoint(p, k))
        })
        .collect()
}

/// One report for an ensemble: the first member's curves, summed time.
pub fn merge_reports(reports: &[FitReport]) -> FitReport {
    let mut r = reports[0].clone();
    r.seconds = reports.iter().map(|x| x.seconds).sum();
    let examples: f64 = reports
        .iter()
        .map(|x| x.examples_per_second * x.seconds)
        .sum();
    r.examples_per_second = examples / r.seconds.max(1e-9);
    r
}

/// Prints a line unless quiet.
pub fn say(quiet: bool, line: &str) {
    if !quiet {
        println!("{line}");
    }
}

/// Existence check for an input path given by the user.
pub fn input_exists(p: &Path) -> Result<()> {
    if !p.exists() {
        return Err(Error::File {
            path: p.display().to_string(),
            message: "no such file".into(),
        });
    }
    Ok(())
}
