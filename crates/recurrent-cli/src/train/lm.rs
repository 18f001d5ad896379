//! `recurrent train lm`.

use super::{say, CliProgress, CommonArgs, Defaults};
use clap::Args;
use rand::SeedableRng;
use recurrent::data::{read_text, split_validation, Vocabulary};
use recurrent::kernels::Precision;
use recurrent::models::{fit, CharLm, CharLmMeta, LmTask};
use recurrent::{Error, Result};
use std::path::PathBuf;

/// Tuned on Shakespeare in a 15-minute budget on a 2-core AMD EPYC (Zen 4), seed 0, with
/// the validation text taken from the end of the training part:
/// 512 hidden units train 1.3 times as many characters as 640 in the budget (2.024 against
/// 2.028 bits per character), and dropout 0.1 gave 2.011 against 0.2's 2.024 and no
/// dropout's 2.022 (`train lm` also applies it to the recurrent output; seed 1: 2.020
/// against 2.028 with 640 units and dropout 0.2). Learning rates 3.5e-3 and 7e-3 gave 2.013
/// and 2.040. On a machine with twice the bf16 rate 640 units had been 0.002–0.009 better
/// than 512 (dropout 0.2).
const DEFAULTS: Defaults = Defaults {
    hidden_size: 512,
    num_layers: 1,
    bidirectional: false,
    dropout: 0.1,
    epochs: 10,
    batch_size: 32,
    lr: 5e-3,
    patience: 3,
    out: "lm.safetensors",
    precision: Precision::Bf16,
};

/// The validation text is this many pieces spread over the training part, so that training
/// reads the text up to the held-out part, which usually continues it (Shakespeare,
/// 15 minutes: 1.983 bits per character with seeds 0 and 1, against 2.011 and 2.020 with
/// the validation text taken from the end of the training part, where the test part's
/// play begins).
const VALIDATION_PIECES: usize = 20;

/// Options of `train lm`.
#[derive(Args, Debug, Clone)]
pub struct LmArgs {
    /// UTF-8 text file; the last 10% is held out for testing, and 5% of the rest (at most
    /// 200,000 characters), in 20 pieces spread over it, for validation (default: the
    /// bundled Shakespeare excerpt).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Characters per training sequence (longer sequences teach the model to use more
    /// context: 256 gave 0.008 bits per character less than 128 on Shakespeare).
    #[arg(long, default_value_t = 256, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub seq_len: usize,
    /// Character embedding size.
    #[arg(long, default_value_t = 64, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub embedding_dim: usize,
    /// Dropout probability of the character embeddings in training (0.1 gave 1.998
    /// against 2.003 bits per character without it on Shakespeare).
    #[arg(long, default_value_t = 0.1, value_parser = crate::check::dropout, allow_negative_numbers = true)]
    pub embedding_dropout: f32,
    /// Carry the recurrent state from each training window to the next window of the same
    /// stream (truncated backpropagation through time, as the test text is read), or with
    /// `false` train on independent windows at random places, each from a zero state
    /// (Shakespeare, 15 minutes, seed 0: 2.039 against 2.043 bits per character, less than
    /// the spread between seeds).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub carry_state: bool,
    /// Characters of training text per epoch (validation runs after each).
    #[arg(long, default_value_t = 2_000_000, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub epoch_chars: usize,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Runs `train lm`.
pub fn run(a: LmArgs) -> Result<()> {
    let c = &a.common;
    let inputs: Vec<crate::paths::Named> = a.text.iter().map(|p| ("--text", p.as_path())).collect();
    c.check_paths(&DEFAULTS, &inputs, &[], None)?;
    if c.bidirectional == Some(true) {
        return Err(Error::Invalid(
            "a language model predicts the next character, so it cannot be bidirectional".into(),
        ));
    }
    let text = match &a.text {
        Some(p) => read_text(p)?,
        None => include_str!("../../../../data/shakespeare/shakespeare_excerpt.txt").to_string(),
    };
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < 1000 {
        return Err(Error::Invalid(format!(
            "the text has {} characters; at least 1000 are needed",
            chars.len()
        )));
    }
    let vocab = Vocabulary::from_text(&text);
    let ids: Vec<usize> = chars
        .iter()
        .map(|&ch| vocab.index(ch).expect("in vocabulary"))
        .collect();
    let test_start = ids.len() - ids.len() / 10;
    let val_len = (test_start / 20).clamp(2, 200_000);
    let (train, val) = split_validation(&ids[..test_start], val_len, VALIDATION_PIECES);
    let test = &ids[test_start..];
    let (train_chars, val_chars) = (train.len(), val.len());
    if a.seq_len < 2 || a.seq_len >= train_chars {
        return Err(Error::Invalid(format!(
            "--seq-len must be from 2 to {} (the training text has {train_chars} characters), found {}",
            train_chars - 1,
            a.seq_len
        )));
    }
    let seq_len = a.seq_len;
    let cfg = c
        .rnn_config(&DEFAULTS, a.embedding_dim)?
        .with_bidirectional(false);
    let meta = CharLmMeta {
        vocabulary: vocab.chars().iter().collect(),
        embedding_dim: a.embedding_dim,
    };
    c.check_memory::<CharLm>(
        &cfg,
        &meta,
        c.batch_size.unwrap_or(DEFAULTS.batch_size),
        seq_len,
    )?;
    let precision = c.precision(&DEFAULTS)?;
    let mut settings = c.fit_settings(&DEFAULTS);
    settings.anneal = true;
    say(
        c.quiet,
        &format!(
            "lm: {} characters ({} distinct): {} train, {} validation, {} test; {} H={} layers={}",
            ids.len(),
            vocab.len(),
            train_chars,
            val_chars,
            test.len(),
            cfg.mode,
            cfg.hidden_size,
            cfg.num_layers
        ),
    );
    c.with_threads(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(c.seed);
        let mut model = CharLm::new(cfg.clone(), vocab.clone(), a.embedding_dim, &mut rng)?;
        model.embedding_dropout = a.embedding_dropout;
        model.rnn.set_precision(precision);
        let sequences_per_epoch = (a.epoch_chars.min(train_chars) / seq_len).max(1);
        let mut task = LmTask::new(model, train, val, seq_len, sequences_per_epoch);
        task.carry_state = a.carry_state;
        let mut progress = CliProgress::new(c.quiet, (settings.epochs != usize::MAX).then_some(settings.epochs), "seq");
        let report = fit(&mut task, &settings, &mut progress)?;
        drop(progress);
        let mut model = task.model;
        model.rnn.eval();
        // One stream: every held-out character is predicted from all the text before it.
        let bpc = model.bits_per_char(test, 1, 256)?;
        let out = c.out_path(&DEFAULTS);
        let model_bytes = model.to_bytes()?;
        say(c.quiet, &format!("test_bpc: {bpc:.4} (held-out last 10%, {} characters)", test.len()));
        let prompt: String = chars[test_start..test_start + 40.min(test.len())].iter().collect();
        let sample = model.generate(&prompt, 200, 0.8, 0, &mut rand::rngs::StdRng::seed_from_u64(c.seed))?;
        say(c.quiet, &format!("sample (temperature 0.8):\n{prompt}{sample}"));
        let metrics = serde_json::json!({
            "task": "lm", "test_bpc": bpc, "val_bpc": report.best_val_loss, "characters": ids.len(),
            "vocabulary_size": vocab.len(), "train_chars": train_chars, "val_chars": val_chars, "test_chars": test.len(),
            "seq_len": seq_len, "embedding_dim": a.embedding_dim, "embedding_dropout": a.embedding_dropout,
            "carry_state": a.carry_state,
        });
        let checkpoints = c.checkpoint_files(&DEFAULTS, None);
        c.finish(vec![(out.clone(), model_bytes)], metrics, &report, c.settings_json(&DEFAULTS, &cfg), &checkpoints)?;
        say(c.quiet, &format!("model written to {}", out.display()));
        Ok(())
    })
}
