//! An N vs M encoder-decoder: a GRU encoder reads a digit string, its final state starts a
//! GRU decoder that writes the string reversed. Trained with teacher forcing (the decoder
//! reads the true previous digit), evaluated with greedy decoding (it reads its own).
//! Gradients flow from the decoder into the encoder through the decoder's `grad_h0`.
//!
//! `cargo run --release --example seq2seq_reverse`

use ndarray::IxDyn;
use rand::{Rng, SeedableRng};
use recurrent::loss::CrossEntropyLoss;
use recurrent::nn::{Embedding, Linear, Module, Tape};
use recurrent::optim::{Adam, Optimizer};
use recurrent::param::accumulate_into_params;
use recurrent::{InitialState, Mode, OutputGrads, Parameters, Rnn, RnnConfig};

const DIGITS: usize = 10;
const BOS: usize = 10; // start-of-output symbol
const LEN: usize = 6;
const E: usize = 16;
const H: usize = 128;

struct Seq2Seq {
    src_embed: Embedding,
    tgt_embed: Embedding,
    encoder: Rnn,
    decoder: Rnn,
    head: Linear,
}

recurrent::parameters!(Seq2Seq {
    part "src_embed" => src_embed;
    part "tgt_embed" => tgt_embed;
    part "encoder" => encoder;
    part "decoder" => decoder;
    part "head" => head;
});

impl Seq2Seq {
    /// One teacher-forced training step on `src` (B x LEN); returns the loss.
    fn train_step(
        &mut self,
        src: &[usize],
        b: usize,
        opt: &mut Adam,
        rng: &mut impl Rng,
    ) -> recurrent::Result<f32> {
        let tgt: Vec<usize> = src
            .chunks(LEN)
            .flat_map(|s| s.iter().rev().copied())
            .collect();
        let dec_in: Vec<usize> = tgt
            .chunks(LEN)
            .flat_map(|t| std::iter::once(BOS).chain(t[..LEN - 1].iter().copied()))
            .collect();
        let (mut src_tape, mut tgt_tape, mut head_tape) =
            (Tape::training(0), Tape::training(0), Tape::training(0));
        let x = self.src_embed.forward(src, &[b, LEN], &mut src_tape)?;
        let (enc, enc_tape) = self.encoder.forward_train(x.view(), None, None, rng)?;
        let y_in = self.tgt_embed.forward(&dec_in, &[b, LEN], &mut tgt_tape)?;
        let state = InitialState {
            h0: enc.h_n.view(),
            c0: None,
        };
        let (dec, dec_tape) = self
            .decoder
            .forward_train(y_in.view(), Some(state), None, rng)?;
        let flat = dec
            .output
            .into_shape_with_order(IxDyn(&[b * LEN, H]))
            .expect("contiguous");
        let logits = self.head.forward(&flat, &mut head_tape)?;
        let target: Vec<i64> = tgt.iter().map(|&t| t as i64).collect();
        let loss = CrossEntropyLoss::default().forward(&logits, &target, &[target.len()])?;

        self.zero_grad();
        accumulate_into_params(self, |m, mut grads| {
            // One gradient slice per parameter, in the order of the parameters! list.
            let mut src_grads = grads.split(1);
            let mut tgt_grads = grads.split(1);
            let mut enc_grads = grads.split(m.encoder.param_lens().len());
            let mut dec_grads = grads.split(m.decoder.param_lens().len());
            let g = m
                .head
                .backward(&head_tape, &loss.grad, &mut grads)?
                .into_shape_with_order(IxDyn(&[b, LEN, H]))
                .expect("contiguous");
            let dg = m.decoder.backward_into(
                &dec_tape,
                OutputGrads {
                    grad_output: Some(g.view()),
                    ..Default::default()
                },
                &mut dec_grads,
            )?;
            m.tgt_embed
                .backward(&tgt_tape, &dg.grad_input, &mut tgt_grads)?;
            // The decoder's initial state is the encoder's final state.
            let eg = m.encoder.backward_into(
                &enc_tape,
                OutputGrads {
                    grad_h_n: Some(dg.grad_h0.view()),
                    ..Default::default()
                },
                &mut enc_grads,
            )?;
            m.src_embed
                .backward(&src_tape, &eg.grad_input, &mut src_grads)
        })?;
        opt.step(&mut self.named_parameters_mut());
        Ok(loss.item())
    }

    /// Greedy decoding of one digit string.
    fn reverse(&self, src: &[usize]) -> recurrent::Result<Vec<usize>> {
        let x = self
            .src_embed
            .forward(src, &[1, LEN], &mut Tape::inference())?;
        let mut h = self.encoder.forward(x.view(), None, None)?.h_n;
        let mut prev = BOS;
        let mut out = Vec::with_capacity(LEN);
        for _ in 0..LEN {
            let e = self
                .tgt_embed
                .forward(&[prev], &[1, 1], &mut Tape::inference())?;
            let step = self.decoder.forward(
                e.view(),
                Some(InitialState {
                    h0: h.view(),
                    c0: None,
                }),
                None,
            )?;
            let logits = self.head.forward(
                &step
                    .output
                    .into_shape_with_order(IxDyn(&[1, H]))
                    .expect("contiguous"),
                &mut Tape::inference(),
            )?;
            prev = (0..DIGITS)
                .max_by(|&a, &b| logits[[0, a]].total_cmp(&logits[[0, b]]))
                .expect("digits");
            out.push(prev);
            h = step.h_n;
        }
        Ok(out)
    }
}

fn main() -> recurrent::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let cfg = |i| RnnConfig::new(Mode::Gru, i, H).with_batch_first(true);
    let mut model = Seq2Seq {
        src_embed: Embedding::new(DIGITS, E, None, &mut rng)?,
        tgt_embed: Embedding::new(DIGITS + 1, E, None, &mut rng)?,
        encoder: Rnn::new(cfg(E), &mut rng)?,
        decoder: Rnn::new(cfg(E), &mut rng)?,
        head: Linear::new(H, DIGITS + 1, true, &mut rng),
    };
    let mut opt = Adam::new(3e-3);
    let b = 64;
    for step in 1..=1500 {
        let src: Vec<usize> = (0..b * LEN).map(|_| rng.gen_range(0..DIGITS)).collect();
        let loss = model.train_step(&src, b, &mut opt, &mut rng)?;
        if step % 250 == 0 {
            println!("step {step}: loss {loss:.4}");
        }
    }
    let mut correct = 0;
    for i in 0..200 {
        let src: Vec<usize> = (0..LEN).map(|_| rng.gen_range(0..DIGITS)).collect();
        let out = model.reverse(&src)?;
        let want: Vec<usize> = src.iter().rev().copied().collect();
        correct += usize::from(out == want);
        if i < 3 {
            println!("{src:?} -> {out:?}");
        }
    }
    println!("exactly reversed: {correct}/200");
    Ok(())
}
