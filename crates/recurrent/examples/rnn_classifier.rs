//! The tutorials' `RNNModel` (N vs 1): `nn.RNN` + `nn.Linear` on the last step, trained
//! with cross-entropy and Adam to tell rising from falling noisy sequences.
//!
//! `cargo run --release --example rnn_classifier`

use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use recurrent::loss::CrossEntropyLoss;
use recurrent::nn::{Linear, RecurrentBlock, Sequential, Taped};
use recurrent::optim::{Adam, Optimizer};
use recurrent::{Mode, Parameters, Rnn, RnnConfig};

/// A batch of `(B, T, 1)` sequences and their labels (1 = rising).
fn batch(rng: &mut impl Rng, b: usize, t: usize) -> (ArrayD<f32>, Vec<i64>) {
    let mut x = ArrayD::zeros(IxDyn(&[b, t, 1]));
    let mut y = Vec::with_capacity(b);
    for i in 0..b {
        let rising = rng.gen_bool(0.5);
        let slope = if rising { 0.1 } else { -0.1 };
        for s in 0..t {
            x[[i, s, 0]] = slope * s as f32 + rng.gen_range(-0.3..0.3);
        }
        y.push(rising as i64);
    }
    (x, y)
}

fn main() -> recurrent::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    // RNNModel(input_size=1, hidden_size=32, num_layers=2, num_classes=2), batch_first=True.
    let rnn = Rnn::new(
        RnnConfig::new(Mode::RnnTanh, 1, 32)
            .with_num_layers(2)
            .with_batch_first(true),
        &mut rng,
    )?;
    let mut model = Taped::new(
        Sequential::new()
            .push("rnn", RecurrentBlock::last_step(rnn))
            .push("fc", Linear::new(32, 2, true, &mut rng)),
        0,
    );
    let mut optimizer = Adam::new(1e-2);
    let criterion = CrossEntropyLoss::default();
    for epoch in 1..=60 {
        let (x, y) = batch(&mut rng, 64, 20);
        let logits = model.forward(&x)?;
        let loss = criterion.forward(&logits, &y, &[y.len()])?;
        model.zero_grad();
        model.backward(&loss.grad)?;
        optimizer.step(&mut model.named_parameters_mut());
        if epoch % 10 == 0 {
            println!("Epoch [{epoch}/60], Loss: {:.4}", loss.item());
        }
    }
    model.set_training(false);
    let (x, y) = batch(&mut rng, 500, 20);
    let logits = model.forward(&x)?;
    let correct = logits
        .outer_iter()
        .zip(&y)
        .filter(|(row, &label)| (row[1] > row[0]) as i64 == label)
        .count();
    println!("test accuracy: {:.3}", correct as f64 / y.len() as f64);
    Ok(())
}
