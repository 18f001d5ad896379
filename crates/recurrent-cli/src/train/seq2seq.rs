//! `recurrent train seq2seq`.

use super::{say, CliProgress, CommonArgs, Defaults};
use clap::{Args, ValueEnum};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use recurrent::data::{parse_pairs, read_pairs, PairColumns, TextPairs};
use recurrent::kernels::Precision;
use recurrent::models::seq2seq::{decoder_config, score_sequences, Seq2SeqMeta, Tokens, Vocab};
use recurrent::models::{fit, Ensemble, Seq2Seq, Seq2SeqTask};
use recurrent::{Error, Result};
use std::path::PathBuf;

/// Defaults of `train seq2seq`, chosen on CMUdict's validation pairs in a 30-minute budget on
/// the Intel Xeon (`docs/experiments.md`): dropout 0.3 took the validation loss from 0.239
/// (early stopped, overfitting) to 0.215; 192 units instead of 128 reached 0.212 in half
/// the epochs but worse validation error rates; a second encoder layer (the decoder keeping
/// one, see `--decoder-layers`) reached 0.212 and a validation word error rate of 35.0%
/// against 35.5%. Products run in bfloat16 where that is faster
/// ([`Precision::where_faster`]): on the Xeon with AMX an epoch of 19,000 pairs took 17.2 s
/// against 21.1 s in f32, and after a one-minute budget the test phoneme error rate was
/// 15.8% against 18.3%.
const DEFAULTS: Defaults = Defaults {
    hidden_size: 128,
    num_layers: 2,
    bidirectional: true,
    dropout: 0.3,
    epochs: 30,
    batch_size: 64,
    lr: 2e-3,
    patience: 4,
    out: "seq2seq.safetensors",
    precision: Precision::Bf16,
};

/// `--tokens`: how each side is split.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokensArg {
    /// Per side: space-separated tokens when most entries contain a space, else characters.
    Auto,
    /// Every character is a token.
    Chars,
    /// Space-separated tokens.
    Words,
}

/// Options of `train seq2seq`.
#[derive(Args, Debug, Clone)]
pub struct Seq2SeqArgs {
    /// Training pairs: TSV or CSV with a header (default: the bundled CMUdict sample).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Test pairs, same format.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Source column (default: the first).
    #[arg(long)]
    pub source: Option<String>,
    /// Target column (default: the second).
    #[arg(long)]
    pub target: Option<String>,
    /// How both sides are split into tokens.
    #[arg(long, value_enum, default_value = "auto")]
    pub tokens: TokensArg,
    /// Beam width of decoding (1: greedy). On CMUdict's test words beams of 1, 4 and 8 gave
    /// word error rates of 34.3%, 34.0% and 34.0%.
    #[arg(long, default_value_t = 4, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub beam: usize,
    /// Layers of the decoder, from 1 to the encoder's `--num-layers`; they start from the
    /// final states of the encoder's top layers.
    #[arg(long, default_value_t = 1, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub decoder_layers: usize,
    /// Token embedding size of both sides.
    #[arg(long, default_value_t = 64, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub embedding_dim: usize,
    /// Share of the training pairs held out for validation and early stopping (above 0
    /// and below 1).
    #[arg(long, default_value_t = 0.05, value_parser = crate::check::open_fraction, allow_negative_numbers = true)]
    pub val_fraction: f64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Pairs as token ids, with how many tokens were unknown.
struct Encoded {
    pairs: Vec<(Vec<usize>, Vec<usize>)>,
    unknown: usize,
}

fn encode(source: &Vocab, target: &Vocab, data: &TextPairs) -> Encoded {
    let (src, u1) = source.encode_all(data.pairs.iter().map(|(s, _)| s.as_str()));
    let (tgt, u2) = target.encode_all(data.pairs.iter().map(|(_, t)| t.as_str()));
    Encoded {
        pairs: src.into_iter().zip(tgt).collect(),
        unknown: u1 + u2,
    }
}

fn tokens_of(arg: TokensArg, texts: &[&str]) -> Tokens {
    match arg {
        TokensArg::Auto => Tokens::detect(texts.iter().copied()),
        TokensArg::Chars => Tokens::Chars,
        TokensArg::Words => Tokens::Words,
    }
}

fn token_name(t: Tokens) -> &'static str {
    match t {
        Tokens::Chars => "characters",
        Tokens::Words => "space-separated tokens",
    }
}

/// Refuses a model whose parameters, optimizer state and the two stacks' training tapes
/// (`steps`: the longest source and target) would not fit in memory, before anything is
/// allocated.
fn check_memory(
    c: &CommonArgs,
    encoder: &recurrent::RnnConfig,
    decoder_layers: usize,
    (source, target): (&Vocab, &Vocab),
    (source_steps, target_steps): (usize, usize),
    max_target_len: usize,
) -> Result<()> {
    let meta = Seq2SeqMeta {
        source: source.clone(),
        target: target.clone(),
        embedding_dim: encoder.input_size,
        decoder: decoder_config(encoder, decoder_layers),
        max_target_len,
    };
    let rows = c.batch_size.unwrap_or(DEFAULTS.batch_size);
    let stacks = [(encoder, source_steps), (&meta.decoder, target_steps)];
    c.check_memory_of_stacks::<Seq2Seq>(encoder, &meta, rows, &stacks)
}

/// Runs `train seq2seq`.
pub fn run(a: Seq2SeqArgs) -> Result<()> {
    let c = &a.common;
    let inputs = super::train_test_inputs(&a.train, &a.test)?;
    c.check_paths(&DEFAULTS, &inputs, &[], None)?;
    let columns = PairColumns {
        source: a.source.as_deref(),
        target: a.target.as_deref(),
        sources_only: false,
    };
    let (train, test) = match (&a.train, &a.test) {
        (Some(tr), Some(te)) => (read_pairs(tr, &columns)?, read_pairs(te, &columns)?),
        _ => (
            parse_pairs(
                include_str!("../../../../data/cmudict/train.tsv"),
                "bundled cmudict train.tsv",
                &columns,
            )?,
            parse_pairs(
                include_str!("../../../../data/cmudict/test.tsv"),
                "bundled cmudict test.tsv",
                &columns,
            )?,
        ),
    };
    let sources: Vec<&str> = train.pairs.iter().map(|(s, _)| s.as_str()).collect();
    let targets: Vec<&str> = train.pairs.iter().map(|(_, t)| t.as_str()).collect();
    let (source_tokens, target_tokens) =
        (tokens_of(a.tokens, &sources), tokens_of(a.tokens, &targets));
    let source_vocab = Vocab::build(source_tokens, sources.iter().copied());
    let target_vocab = Vocab::build(target_tokens, targets.iter().copied());
    let mut order: Vec<usize> = (0..train.pairs.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(c.seed));
    let val_len = ((train.pairs.len() as f64 * a.val_fraction).round() as usize).max(1);
    if val_len >= train.pairs.len() {
        return Err(Error::Invalid(format!(
            "--val-fraction {} leaves no training pairs out of {}",
            a.val_fraction,
            train.pairs.len()
        )));
    }
    let mut all = encode(&source_vocab, &target_vocab, &train).pairs;
    // The pairs in shuffled order: the first `val_len` validate.
    let mut val_part: Vec<_> = order.iter().map(|&i| std::mem::take(&mut all[i])).collect();
    let train_part = val_part.split_off(val_len);
    let test_ids = encode(&source_vocab, &target_vocab, &test);
    let longest = train_part.iter().map(|(_, t)| t.len()).max().unwrap_or(1);
    let max_target_len = (2 * longest + 10).min(recurrent::models::seq2seq::MAX_TARGET_LEN);
    let cfg = c.rnn_config(&DEFAULTS, a.embedding_dim)?;
    let decoder_layers = a.decoder_layers;
    let longest_source = train_part.iter().map(|(s, _)| s.len()).max().unwrap_or(1);
    check_memory(
        c,
        &cfg,
        decoder_layers,
        (&source_vocab, &target_vocab),
        (longest_source, longest + 1),
        max_target_len,
    )?;
    let precision = c.precision(&DEFAULTS)?;
    let mut settings = c.fit_settings(&DEFAULTS);
    settings.anneal = true;
    say(
        c.quiet,
        &format!(
            "seq2seq: {} training pairs ({val_len} for validation), {} test; source {:?}: {} ({} kinds), target {:?}: {} ({} kinds); {} encoder H={} layers={} bidirectional={}, attention decoder H={} layers={decoder_layers}",
            train.pairs.len(),
            test.pairs.len(),
            train.columns.0,
            token_name(source_tokens),
            source_vocab.entries.len(),
            train.columns.1,
            token_name(target_tokens),
            target_vocab.entries.len(),
            cfg.mode,
            cfg.hidden_size,
            cfg.num_layers,
            cfg.bidirectional,
            cfg.num_directions() * cfg.hidden_size,
        ),
    );
    if test_ids.unknown > 0 {
        say(
            c.quiet,
            &format!(
                "{} test tokens never occur in the training data; they are read as <unk>",
                test_ids.unknown
            ),
        );
    }
    c.with_threads(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(c.seed);
        let mut model = Seq2Seq::with_decoder_layers(
            cfg.clone(),
            decoder_layers,
            source_vocab.clone(),
            target_vocab.clone(),
            max_target_len,
            &mut rng,
        )?;
        model.encoder.set_precision(precision);
        model.decoder.set_precision(precision);
        let mut task = Seq2SeqTask { model, train: train_part, val: val_part };
        let epochs = (settings.epochs != usize::MAX).then_some(settings.epochs);
        let mut progress = CliProgress::new(c.quiet, epochs, "pair");
        let report = fit(&mut task, &settings, &mut progress)?;
        drop(progress);
        let mut model = task.model;
        model.train(false);
        let (val_sources, val_references): (Vec<_>, Vec<_>) = task.val.into_iter().unzip();
        let val_scores = score_sequences(&model.decode(&val_sources, a.beam)?, &val_references);
        let started = std::time::Instant::now();
        let (sources, references): (Vec<_>, Vec<_>) = test_ids.pairs.into_iter().unzip();
        let predictions = model.decode(&sources, a.beam)?;
        let decode_seconds = started.elapsed().as_secs_f64();
        let scores = score_sequences(&predictions, &references);
        say(
            c.quiet,
            &format!(
                "validation: token error rate {:.4}, sequence error rate {:.4} (beam {})",
                val_scores.token_error_rate, val_scores.sequence_error_rate, a.beam
            ),
        );
        say(
            c.quiet,
            &format!(
                "test_token_error_rate: {:.4}  test_sequence_error_rate: {:.4}  test_exact_match: {:.4} ({} pairs, beam {}, {decode_seconds:.1} s)",
                scores.token_error_rate, scores.sequence_error_rate, scores.exact_match, test.pairs.len(), a.beam
            ),
        );
        let examples: Vec<serde_json::Value> = test
            .pairs
            .iter()
            .zip(&predictions)
            .take(8)
            .map(|((s, t), p)| {
                let p = target_vocab.decode(p);
                say(c.quiet, &format!("  {s} -> {p}   (reference: {t})"));
                serde_json::json!({"source": s, "prediction": p, "reference": t})
            })
            .collect();
        let out = c.out_path(&DEFAULTS);
        let model_bytes = Ensemble { members: vec![model] }.to_bytes()?;
        let metrics = serde_json::json!({
            "task": "seq2seq",
            "test_token_error_rate": scores.token_error_rate,
            "test_sequence_error_rate": scores.sequence_error_rate,
            "test_exact_match": scores.exact_match,
            "val_token_error_rate": val_scores.token_error_rate,
            "val_sequence_error_rate": val_scores.sequence_error_rate,
            "test_size": test.pairs.len(), "train_size": train.pairs.len() - val_len, "val_size": val_len,
            "test_unknown_tokens": test_ids.unknown, "beam": a.beam, "decode_seconds": decode_seconds,
            "source_tokens": source_tokens, "target_tokens": target_tokens,
            "source_vocabulary": source_vocab.entries.len(), "target_vocabulary": target_vocab.entries.len(),
            "embedding_dim": a.embedding_dim, "decoder_layers": decoder_layers, "attention": "luong_general", "examples": examples,
        });
        let checkpoints = c.checkpoint_files(&DEFAULTS, None);
        c.finish(vec![(out.clone(), model_bytes)], metrics, &report, c.settings_json(&DEFAULTS, &cfg), &checkpoints)?;
        say(c.quiet, &format!("model written to {}", out.display()));
        Ok(())
    })
}
