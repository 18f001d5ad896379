//! A character-level language model on the bundled Shakespeare excerpt, trained briefly,
//! then used to generate text.
//!
//! `cargo run --release --example char_lm`

use rand::SeedableRng;
use recurrent::data::Vocabulary;
use recurrent::models::{fit, CharLm, FitSettings, LmTask, Silent};
use recurrent::{Mode, RnnConfig};

fn main() -> recurrent::Result<()> {
    let text = include_str!("../../../data/shakespeare/shakespeare_excerpt.txt");
    let vocab = Vocabulary::from_text(text);
    let ids = vocab.encode(text)?;
    let split = ids.len() * 9 / 10;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let model = CharLm::new(RnnConfig::new(Mode::Lstm, 32, 256), vocab, 32, &mut rng)?;
    let mut task = LmTask::new(
        model,
        ids[..split].to_vec(),
        ids[split..].to_vec(),
        100,
        2000,
    );
    let settings = FitSettings {
        epochs: 4,
        time_budget: None,
        batch_size: 32,
        lr: 3e-3,
        seed: 0,
        patience: 3,
        clip_norm: 1.0,
        anneal: true,
        checkpoint: None,
        resume: false,
    };
    let report = fit(&mut task, &settings, &mut Silent)?;
    for r in &report.history {
        println!(
            "epoch {}: train {:.3} bits/char, validation {:.3}",
            r.epoch, r.train_loss, r.val_loss
        );
    }
    let sample = task.model.generate("KING:", 300, 0.8, 0, &mut rng)?;
    println!("KING:{sample}");
    Ok(())
}
