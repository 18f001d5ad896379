//! The `recurrent` command-line tool: a thin layer over the `recurrent` library.

mod alloc;
mod apply;
mod bench;
mod check;
mod choices;
mod paths;
mod ranks;
mod tensor_commands;
mod train;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// PyTorch-compatible recurrent networks (RNN, LSTM, GRU) on the CPU.
#[derive(Parser)]
#[command(name = "recurrent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Runs a model file on the tensors of an input file (inference mode).
    Forward {
        /// Model: safetensors with `state_dict()` names and the `config` metadata.
        #[arg(long)]
        model: PathBuf,
        /// Input: `input`, optional `h0`, `c0` (LSTM), `lengths` (int64/int32, shape (B,)).
        #[arg(long)]
        input: PathBuf,
        /// Output file: receives `output`, `h_n` and, for LSTM, `c_n`.
        #[arg(long)]
        output: PathBuf,
    },
    /// Gradients of a model (inference mode, no dropout) for given output gradients.
    Backward {
        /// Model file, as for `forward`.
        #[arg(long)]
        model: PathBuf,
        /// Input file, as for `forward`.
        #[arg(long)]
        input: PathBuf,
        /// Upstream gradients: `grad_output`, `grad_h_n`, `grad_c_n` (each optional, zeros when absent).
        #[arg(long)]
        grad: PathBuf,
        /// Output file: `grad_input`, `grad_h0` / `grad_c0` (when the input had them), `grad.<name>`.
        #[arg(long)]
        output: PathBuf,
    },
    /// Times one configuration (inference or a training step) and reports ms and GFLOP/s.
    Bench(bench::BenchArgs),
    /// Trains a model for a task on a data file (or the bundled data).
    #[command(subcommand)]
    Train(train::TrainTask),
    /// Runs a trained classifier or forecaster on new data, or gives a language model's bits
    /// per character on a text, and writes CSV.
    Predict {
        /// Model written by `recurrent train classify`, `train forecast`, `train lm` or
        /// `train seq2seq`.
        #[arg(long)]
        model: PathBuf,
        /// Sequences (long CSV or `.ts`) to classify, a series CSV to forecast from, a
        /// UTF-8 text to score, or sources to decode (a TSV or CSV with a header: one
        /// column, or pairs whose second column is the reference).
        #[arg(long)]
        data: PathBuf,
        /// CSV to write.
        #[arg(long, default_value = "predictions.csv")]
        output: PathBuf,
        /// Fill missing values of a series by linear interpolation.
        #[arg(long)]
        interpolate: bool,
        /// Beam width of a seq2seq model's decoding (1: greedy).
        #[arg(long, default_value_t = 4, value_parser = check::positive, allow_negative_numbers = true)]
        beam: usize,
    },
    /// Samples text from a language model written by `recurrent train lm`.
    Generate {
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        /// Text to start from.
        #[arg(long)]
        prompt: String,
        /// Characters to generate (printed as they are sampled).
        #[arg(long, default_value_t = 500)]
        length: usize,
        /// Sampling temperature, above 0 (lower is more conservative).
        #[arg(long, default_value_t = 0.8, value_parser = check::positive_f32, allow_negative_numbers = true)]
        temperature: f32,
        /// Sample only among the K most likely characters (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Parses the command line; a parse error is one line on stderr (clap's first line,
/// without the usage and tips), `--help` and `--version` print as usual.
fn parse() -> std::result::Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    Cli::try_parse().map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            eprintln!("error: a command is needed; `recurrent --help` lists them");
            ExitCode::from(2)
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            let line = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {line} (see `--help`)");
            ExitCode::from(2)
        }
    })
}

fn main() -> ExitCode {
    alloc::keep_freed_memory();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Err(e) = recurrent::kernels::cpu::requested_level() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // MPI, when `mpirun` started a training run, lives until the end of `main` (after an
    // error is reported and the job aborted).
    let mut _job = None;
    let result = match cli.command {
        Command::Forward {
            model,
            input,
            output,
        } => tensor_commands::forward(&model, &input, &output),
        Command::Backward {
            model,
            input,
            grad,
            output,
        } => tensor_commands::backward(&model, &input, &grad, &output),
        Command::Bench(args) => bench::run(&args),
        Command::Train(task) => ranks::join().and_then(|j| {
            _job = Some(j);
            train::run(task)
        }),
        Command::Predict {
            model,
            data,
            output,
            interpolate,
            beam,
        } => apply::predict(&model, &data, &output, interpolate, beam),
        Command::Generate {
            model,
            prompt,
            length,
            temperature,
            top_k,
            seed,
        } => apply::generate(&model, &prompt, length, temperature, top_k, seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ranks::fail(&e),
    }
}
