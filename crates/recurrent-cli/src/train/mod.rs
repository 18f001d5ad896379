//! `recurrent train classify | forecast | lm | seq2seq`: options shared by every task, progress
//! output, reports and plots.

pub mod classify;
pub mod forecast;
pub mod lm;
pub mod plot;
mod progress;
pub mod seq2seq;

use clap::{Args, Subcommand};
use recurrent::kernels::Precision;
use recurrent::models::{FitReport, FitSettings, TaskModel};
use recurrent::{Error, Mode, Result, RnnConfig};
use std::path::PathBuf;
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
    /// Encoder-decoder with attention (N vs M) on pairs from a TSV or CSV file; reports
    /// token and sequence error rates on the test pairs.
    Seq2seq(seq2seq::Seq2SeqArgs),
}

/// Runs a training task.
pub fn run(task: TrainTask) -> Result<()> {
    match task {
        TrainTask::Classify(a) => classify::run(a),
        TrainTask::Forecast(a) => forecast::run(a),
        TrainTask::Lm(a) => lm::run(a),
        TrainTask::Seq2seq(a) => seq2seq::run(a),
    }
}

/// The inputs of a task with `--train` and `--test` files and bundled default data: both
/// files or neither.
pub fn train_test_inputs<'a>(
    train: &'a Option<PathBuf>,
    test: &'a Option<PathBuf>,
) -> Result<Vec<crate::paths::Named<'a>>> {
    if train.is_some() != test.is_some() {
        return Err(Error::Invalid(
            "give both --train and --test, or neither for the bundled data".into(),
        ));
    }
    let mut inputs = Vec::new();
    inputs.extend(train.as_deref().map(|p| ("--train", p)));
    inputs.extend(test.as_deref().map(|p| ("--test", p)));
    Ok(inputs)
}

/// Options common to all `train` tasks; unset values take the task's defaults.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Cell type: LSTM, GRU, RNN_TANH or RNN_RELU.
    #[arg(long, value_enum, default_value = "LSTM")]
    pub mode: crate::choices::ModeArg,
    /// Hidden size.
    #[arg(long, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub hidden_size: Option<usize>,
    /// Stacked layers.
    #[arg(long, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub num_layers: Option<usize>,
    /// Bidirectional layers (`--bidirectional` or `--bidirectional false`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub bidirectional: Option<bool>,
    /// Dropout between recurrent layers (for `lm` also on the recurrent output, before the
    /// output layer), at least 0 and below 1. Defaults: 0 for classify and forecast, 0.1
    /// for lm.
    #[arg(long, value_parser = crate::check::dropout, allow_negative_numbers = true)]
    pub dropout: Option<f32>,
    /// Maximum epochs.
    #[arg(long, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub epochs: Option<usize>,
    /// Stop training after this long, e.g. `90s`, `15m`, `1h` (at most a year).
    #[arg(long, value_parser = parse_duration)]
    pub time_budget: Option<Duration>,
    /// Examples per batch.
    #[arg(long, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub batch_size: Option<usize>,
    /// Adam learning rate (above 0).
    #[arg(long, value_parser = crate::check::positive_number, allow_negative_numbers = true)]
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
    /// Worker threads (default: all cores; at most 4 per core).
    #[arg(long, value_parser = crate::check::threads, allow_negative_numbers = true)]
    pub threads: Option<usize>,
    /// Arithmetic of the recurrent layers' matrix products in training: `f32`, or `bf16`
    /// (operands rounded to bfloat16, sums, states and weights in f32, as PyTorch's CPU
    /// autocast; needs AVX-512 BF16, else f32). About 1.5x faster training where the CPU's
    /// bfloat16 dot product does more multiply-adds per second than its f32 one (measured
    /// at start: twice as many on AMD Zen 4, half as many on some Intel Xeons). Evaluation
    /// and saved models are always f32. Defaults: f32 for classify, forecast and seq2seq;
    /// for lm bf16 where it is the faster, else f32.
    #[arg(long, value_enum, ignore_case = true)]
    pub precision: Option<crate::choices::PrecisionArg>,
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
        let mode: Mode = self.mode.into();
        let cfg = RnnConfig::new(mode, input_size, self.hidden_size.unwrap_or(d.hidden_size))
            .with_num_layers(self.num_layers.unwrap_or(d.num_layers))
            .with_bidirectional(self.bidirectional.unwrap_or(d.bidirectional))
            .with_dropout(self.dropout.unwrap_or(d.dropout))
            .with_batch_first(true);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Fails before training when a task model `M` of `cfg` and `meta`, trained on batches
    /// of `rows x steps` positions, would not fit in this machine's memory.
    pub fn check_memory<M: TaskModel>(
        &self,
        cfg: &RnnConfig,
        meta: &M::Meta,
        rows: usize,
        steps: usize,
    ) -> Result<()> {
        self.check_memory_of_stacks::<M>(cfg, meta, rows, &[(cfg, steps)])
    }

    /// [`CommonArgs::check_memory`] for a model of several recurrent stacks: `cfg` is the
    /// one its file stores (the others' parameters count among `M::other_parameters`), and
    /// each of `stacks` keeps a training tape of `rows x steps` positions.
    pub fn check_memory_of_stacks<M: TaskModel>(
        &self,
        cfg: &RnnConfig,
        meta: &M::Meta,
        rows: usize,
        stacks: &[(&RnnConfig, usize)],
    ) -> Result<()> {
        let outside_stack = M::other_parameters(cfg, meta).unwrap_or(usize::MAX);
        let tapes: u128 = stacks
            .iter()
            .map(|&(stack, steps)| crate::check::tape_bytes(stack, rows, steps))
            .sum();
        crate::check::fits_in_memory(
            "training this model",
            crate::check::training_bytes(cfg, outside_stack)? + tapes,
        )
    }

    /// The arithmetic of training products.
    pub fn precision(&self, d: &Defaults) -> Result<Precision> {
        Ok(self
            .precision
            .map_or(d.precision.where_faster(), Precision::from))
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

    /// Runs `f` on a thread pool of `--threads` threads (by default every core, shared
    /// between the ranks of an MPI job on this machine).
    pub fn with_threads<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(n) = self.threads.or_else(crate::ranks::default_threads) {
            b = b.num_threads(n);
        }
        let pool = b
            .build()
            .map_err(|e| Error::Invalid(format!("thread pool: {e}")))?;
        pool.install(f)
    }

    /// The checkpoint files a run writes beside the model: `OUT.checkpoint`, or with
    /// `Some(members)` an ensemble's `OUT.checkpoint.m{k}`.
    pub fn checkpoint_files(&self, d: &Defaults, members: Option<usize>) -> Vec<PathBuf> {
        let base = recurrent::models::fit::checkpoint_path(&self.out_path(d));
        match members {
            None => vec![base],
            Some(n) => (0..n)
                .map(|k| recurrent::models::member_checkpoint(&base, k))
                .collect(),
        }
    }

    /// Fails before any work unless every output (model, checkpoints, report, plot and
    /// `extra`) can be written, none is the same file as another or as one of `inputs`,
    /// and `--resume` has a checkpoint to resume from. Ranks of an MPI job other than 0
    /// check their inputs only: they write nothing (their machines may not even have the
    /// output folders).
    pub fn check_paths(
        &self,
        d: &Defaults,
        inputs: &[crate::paths::Named],
        extra: &[crate::paths::Named],
        members: Option<usize>,
    ) -> Result<()> {
        for &(flag, path) in inputs {
            crate::paths::check_input(flag, path)?;
        }
        if !crate::ranks::is_root() {
            return Ok(());
        }
        let out = self.out_path(d);
        let checkpoints = self.checkpoint_files(d, members);
        let mut outputs: Vec<crate::paths::Named> = vec![("--out", &out)];
        outputs.extend(
            checkpoints
                .iter()
                .map(|p| ("the checkpoint of --out", p.as_path())),
        );
        outputs.extend(self.report.as_deref().map(|p| ("--report", p)));
        outputs.extend(self.plot.as_deref().map(|p| ("--plot", p)));
        outputs.extend_from_slice(extra);
        crate::paths::check_files(inputs, &outputs)?;
        if self.resume && !checkpoints.iter().any(|p| p.exists()) {
            return Err(Error::File {
                path: checkpoints[0].display().to_string(),
                message: "no checkpoint to resume from".into(),
            });
        }
        Ok(())
    }

    /// Writes every output of a finished run together: `outputs` (the model first, then
    /// task files such as a forecast), the report (metrics, settings and timing) and the
    /// plot are staged as complete temporary files and renamed into place only when all
    /// of them are ready, so a failure replaces none of the previous files. The
    /// checkpoints are removed afterwards. Only rank 0 of an MPI job writes.
    pub fn finish(
        &self,
        outputs: Vec<(PathBuf, Vec<u8>)>,
        metrics: serde_json::Value,
        fit: &FitReport,
        settings: serde_json::Value,
        checkpoints: &[PathBuf],
    ) -> Result<()> {
        if !crate::ranks::is_root() {
            return Ok(());
        }
        let mut files = recurrent::io::StagedFiles::new();
        for (path, bytes) in &outputs {
            files.stage(path, bytes)?;
        }
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
                "communication_seconds": fit.communication_seconds,
                "history": fit.history,
            });
            let text = serde_json::to_string_pretty(&report).expect("serialisable");
            files.stage(path, text.as_bytes())?;
        }
        if let Some(path) = &self.plot {
            files.stage(path, &plot::loss_curves(path, &fit.history)?)?;
        }
        files.commit()?;
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
            "ranks": recurrent::distributed::current().size(),
            "precision": self.precision(d).unwrap_or(d.precision).effective().to_string(),
        })
    }
}

/// The longest `--time-budget`: a year.
const MAX_BUDGET: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses `90`, `90s`, `15m`, `1.5h`, `2e3s` (a number, then an optional unit `s`, `m`,
/// `min` or `h`): from a millisecond to a year.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let unit_len = s.len() - s.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len();
    let (num, unit) = s.split_at(s.len() - unit_len);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("expected a duration like 90s, 15m or 1h, found {s:?}"))?;
    let secs = match unit {
        "" | "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("unknown time unit {unit:?} (use s, m or h)")),
    };
    if !(secs >= 1e-3 && secs <= MAX_BUDGET.as_secs_f64()) {
        return Err(format!(
            "a duration from 1 ms to a year is needed, found {s:?}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Prints a line unless quiet.
pub fn say(quiet: bool, line: &str) {
    if !quiet {
        println!("{line}");
    }
}
