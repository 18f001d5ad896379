//! An N vs M encoder-decoder on top of `models::Seq2Seq`: a bidirectional GRU encoder
//! reads a digit string, an attention decoder writes it reversed. Trained with teacher
//! forcing by the shared training loop, decoded by beam search.
//!
//! `cargo run --release --example seq2seq_reverse`

use rand::{Rng, SeedableRng};
use recurrent::models::seq2seq::{encoder_config, score_sequences, Tokens, Vocab};
use recurrent::models::{fit, FitSettings, Seq2Seq, Seq2SeqTask, Silent};
use recurrent::Mode;

fn main() -> recurrent::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let digits = Vocab::build(Tokens::Chars, ["0123456789"]);
    let mut pairs = |n: usize| -> Vec<(Vec<usize>, Vec<usize>)> {
        (0..n)
            .map(|_| {
                let len = rng.gen_range(3..=8);
                let s: Vec<usize> = (0..len)
                    .map(|_| digits.encode(&rng.gen_range(0..10).to_string()).0[0])
                    .collect();
                let t = s.iter().rev().copied().collect();
                (s, t)
            })
            .collect()
    };
    let (train, val, test) = (pairs(8000), pairs(200), pairs(200));
    let cfg = encoder_config(Mode::Gru, 16, 64).with_bidirectional(true);
    let model = Seq2Seq::new(cfg, digits.clone(), digits.clone(), 16, &mut rng)?;
    let mut task = Seq2SeqTask { model, train, val };
    let settings = FitSettings {
        epochs: 10,
        time_budget: None,
        batch_size: 64,
        lr: 3e-3,
        seed: 0,
        patience: 3,
        clip_norm: 1.0,
        anneal: false,
        checkpoint: None,
        resume: false,
    };
    let report = fit(&mut task, &settings, &mut Silent)?;
    println!(
        "best validation loss {:.4} after epoch {}",
        report.best_val_loss, report.best_epoch
    );
    let model = task.model;
    let sources: Vec<Vec<usize>> = test.iter().map(|(s, _)| s.clone()).collect();
    let references: Vec<Vec<usize>> = test.iter().map(|(_, t)| t.clone()).collect();
    let predicted = model.decode(&sources, 4)?;
    for (s, p) in sources.iter().zip(&predicted).take(3) {
        println!("{} -> {}", digits.decode(s), digits.decode(p));
    }
    let scores = score_sequences(&predicted, &references);
    println!("exactly reversed: {:.1}%", 100.0 * scores.exact_match);
    Ok(())
}
