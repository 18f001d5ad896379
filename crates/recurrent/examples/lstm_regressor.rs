//! The tutorials' `LSTMModel`: `nn.LSTM(10, 64, batch_first=True)` + `nn.Linear(64, 1)` on
//! the last step, trained with `MSELoss` and `Adam(lr=1e-3)` in the usual loop
//! (`zero_grad`, `backward`, `step`), on a synthetic regression target.
//!
//! `cargo run --release --example lstm_regressor`

use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use recurrent::loss::MseLoss;
use recurrent::nn::{Linear, RecurrentBlock, Sequential, Taped};
use recurrent::optim::{Adam, Optimizer};
use recurrent::{Mode, Parameters, Rnn, RnnConfig};

fn main() -> recurrent::Result<()> {
    let (input_size, hidden_size, num_layers, output_size) = (10, 64, 1, 1);
    let (learning_rate, epochs) = (1e-3, 100);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let lstm = Rnn::new(
        RnnConfig::new(Mode::Lstm, input_size, hidden_size)
            .with_num_layers(num_layers)
            .with_batch_first(true),
        &mut rng,
    )?;
    let mut model = Taped::new(
        Sequential::new()
            .push("lstm", RecurrentBlock::last_step(lstm))
            .push("fc", Linear::new(hidden_size, output_size, true, &mut rng)),
        0,
    );
    let loss_function = MseLoss::default();
    let mut optimizer = Adam::new(learning_rate);

    // inputs (32, 15, 10); target: the mean of feature 0 over the last five steps.
    let inputs = ArrayD::from_shape_fn(IxDyn(&[32, 15, input_size]), |_| {
        rng.gen_range(-1.0f32..1.0)
    });
    let targets = ArrayD::from_shape_fn(IxDyn(&[32, 1]), |ix| {
        (10..15).map(|t| inputs[[ix[0], t, 0]]).sum::<f32>() / 5.0
    });

    for epoch in 0..epochs {
        let outputs = model.forward(&inputs)?;
        model.zero_grad();
        let loss = loss_function.forward(&outputs, &targets)?;
        model.backward(&loss.grad)?;
        optimizer.step(&mut model.named_parameters_mut());
        if (epoch + 1) % 10 == 0 {
            println!("Epoch [{}/{epochs}], Loss: {}", epoch + 1, loss.item());
        }
    }
    Ok(())
}
