//! [`LmTask`]: training a [`CharLm`] on a text, as streams of windows with the state
//! carried between them, each batch split into shards that run at once.

use super::{CharLm, LmState, LmTape};
use crate::distributed::{Collective, Share};
use crate::error::Result;
use crate::layer::team;
use crate::loss::CrossEntropyLoss;
use crate::models::fit::Trainable;
use crate::param::{accumulate_into_params, GradSlices, Grads, Parameters};
use ndarray::{ArrayD, ArrayViewD, Axis};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// A language model with its training and validation text (as indices).
///
/// Training reads the text as `B` streams, one per row of a batch, each a contiguous run
/// of windows of `seq_len` characters with the recurrent state carried from one window to
/// the next (truncated backpropagation through time). Every epoch starts the streams at a
/// new random offset, evenly spaced through the text, from zero states; a stream that
/// reaches the end of the text starts again at its beginning from a zero state. With
/// `carry_state` off, every row is a window at a random place, from a zero state.
pub struct LmTask {
    /// The model.
    pub model: CharLm,
    /// Training text.
    pub train: Vec<usize>,
    /// Validation text.
    pub val: Vec<usize>,
    /// Characters per training sequence.
    pub seq_len: usize,
    /// Training sequences per epoch.
    pub sequences_per_epoch: usize,
    /// Carry the state between consecutive windows of a stream (see [`LmTask`]).
    pub carry_state: bool,
    streams: Streams,
    /// The tapes of the batch's shards (see [`SHARD_ROWS`]), kept for their buffers.
    tapes: Vec<LmTape>,
    /// The gradients of the shards after the first, which accumulates in the model.
    shard_grads: Vec<Grads>,
}

/// Rows of a training batch per shard. A batch of more rows is split into shards that run
/// forward and backward at the same time on the shared model, each with its own tape,
/// gradient buffer and share of the threads, and their gradients are summed (what data
/// parallelism across processes does too): the shards' time loops need no
/// synchronisation at each step, unlike one loop split by hidden units. The split depends
/// on the batch size only, so results do not depend on the thread count.
pub const SHARD_ROWS: usize = 16;

/// One shard's rows of a batch: `rows` sequences of indices and targets, their carried
/// state and the seed of their dropout masks.
struct Shard {
    rows: usize,
    input: Vec<usize>,
    target: Vec<i64>,
    state: Option<LmState>,
    seed: u64,
}

impl Shard {
    /// Forward and backward on `model` (gradients added to `grads`) with the gradient of
    /// the shard's mean loss scaled by `weight` (its share of the batch); returns the sum
    /// over its sequences of their mean bits per character, and the final state.
    fn run(
        self,
        model: &CharLm,
        tape: &mut LmTape,
        grads: &mut GradSlices<'_>,
        weight: f32,
    ) -> Result<(f64, LmState)> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let state = self.state.as_ref();
        let (logits, last) = model.forward_train(&self.input, self.rows, state, &mut rng, tape)?;
        let mut loss =
            CrossEntropyLoss::default().forward(&logits, &self.target, &[self.target.len()])?;
        loss.grad.mapv_inplace(|g| g * weight);
        model.backward(tape, &loss.grad, grads)?;
        let bits = loss.item() as f64 / std::f64::consts::LN_2 * self.rows as f64;
        Ok((bits, last))
    }
}

/// The shards' final states joined along the batch axis, in shard order.
fn join_states(ends: &[(f64, LmState)]) -> LmState {
    let join = |parts: Vec<ArrayViewD<f32>>| {
        ndarray::concatenate(Axis(1), &parts).expect("same layer and hidden sizes")
    };
    let h = join(ends.iter().map(|(_, (h, _))| h.view()).collect());
    let c = ends
        .iter()
        .map(|(_, (_, c))| c.as_ref().map(|c| c.view()))
        .collect::<Option<Vec<_>>>();
    (h, c.map(join))
}

/// Where each training stream is and the state it ends in.
#[derive(Debug, Default)]
struct Streams {
    /// Next window's first character, per stream; empty before an epoch's first batch.
    positions: Vec<usize>,
    /// Random offset of this epoch's streams.
    offset: usize,
    /// The streams' state after the last batch (`h` and `c` as `(layers, streams, H)`).
    state: Option<LmState>,
}

impl LmTask {
    /// A task with the state carried between windows.
    pub fn new(
        model: CharLm,
        train: Vec<usize>,
        val: Vec<usize>,
        seq_len: usize,
        sequences_per_epoch: usize,
    ) -> Self {
        let mut model = model;
        model.rnn.train(true);
        LmTask {
            model,
            train,
            val,
            seq_len,
            sequences_per_epoch,
            carry_state: true,
            streams: Streams::default(),
            tapes: Vec::new(),
            shard_grads: Vec::new(),
        }
    }

    /// The batch of windows starting at `starts` (`t` characters each, with `state`'s rows)
    /// in shards of at most [`SHARD_ROWS`] rows, each with a dropout seed drawn from `rng`.
    fn shards(
        &self,
        starts: &[usize],
        t: usize,
        state: Option<&LmState>,
        rng: &mut impl Rng,
    ) -> Vec<Shard> {
        let per_shard = starts.len().div_ceil(starts.len().div_ceil(SHARD_ROWS));
        let text = &self.train;
        starts
            .chunks(per_shard)
            .enumerate()
            .map(|(k, starts)| {
                let first = k * per_shard;
                let own_rows = |a: &ArrayD<f32>| {
                    a.slice_axis(Axis(1), (first..first + starts.len()).into())
                        .to_owned()
                };
                Shard {
                    rows: starts.len(),
                    input: starts
                        .iter()
                        .flat_map(|&p| &text[p..p + t])
                        .copied()
                        .collect(),
                    target: starts
                        .iter()
                        .flat_map(|&p| &text[p + 1..p + 1 + t])
                        .map(|&v| v as i64)
                        .collect(),
                    state: state.map(|(h, c)| (own_rows(h), c.as_ref().map(own_rows))),
                    seed: rng.gen(),
                }
            })
            .collect()
    }

    /// First characters of the batch's windows (`batch` of them), advancing the streams
    /// and zeroing the carried state of any that start again.
    fn window_starts(&mut self, batch: usize, t: usize, rng: &mut impl Rng) -> Vec<usize> {
        let len = self.train.len();
        if !self.carry_state {
            self.streams.state = None;
            return (0..batch).map(|_| rng.gen_range(0..len - t)).collect();
        }
        let s = &mut self.streams;
        if s.positions.is_empty() {
            s.positions = (0..batch)
                .map(|j| (s.offset + j * len / batch) % len)
                .collect();
            s.state = None;
        }
        let mut starts = Vec::with_capacity(batch);
        for j in 0..batch.min(s.positions.len()) {
            if s.positions[j] + t >= len {
                s.positions[j] = 0;
                if let Some((h, c)) = &mut s.state {
                    h.index_axis_mut(Axis(1), j).fill(0.0);
                    if let Some(c) = c {
                        c.index_axis_mut(Axis(1), j).fill(0.0);
                    }
                }
            }
            starts.push(s.positions[j]);
            s.positions[j] += t;
        }
        starts
    }
}

crate::parameters!(LmTask { inline model; });

impl LmTask {
    /// Nats summed over `share`'s validation streams (see [`Trainable::validation_loss`]),
    /// and the characters they predict.
    fn validation_streams(&self, share: Share) -> Result<(f64, usize)> {
        let val = &self.val;
        let streams = CharLm::stream_count(val, (val.len() / 8192).clamp(1, 32));
        let precision = self.model.rnn.precision();
        let own = share.range(streams);
        self.model
            .nats_of_streams(val, streams, own, 256, precision)
    }

    /// Zero states of `b` streams: `h` `(layers * directions, b, output size)`, and `c`
    /// `(layers * directions, b, hidden size)` for an LSTM.
    fn zero_state(&self, b: usize) -> LmState {
        let cfg = self.model.rnn.config();
        let layers = cfg.num_layers * cfg.num_directions();
        let h = ArrayD::zeros(vec![layers, b, cfg.output_size()]);
        let c = (cfg.mode == crate::Mode::Lstm)
            .then(|| ArrayD::zeros(vec![layers, b, cfg.hidden_size]));
        (h, c)
    }

    /// One batch of `batch` windows, of which this process runs its share of the shards
    /// (all of them without `ranks`) forward and backward at once; each shard's gradient is
    /// weighted by its rows over the batch's for the whole batch (its mean), by its rows
    /// for a share (see [`Trainable::train_share`]). The streams' final states are summed
    /// over the ranks (each holds its own rows, zeros elsewhere), so that every rank has
    /// them all whichever rank runs a stream next. Returns the bits per character summed
    /// over the rows run, and their number.
    fn train_shards(
        &mut self,
        batch: usize,
        ranks: Option<&dyn Collective>,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(f64, usize)> {
        let share = ranks.map_or(Share::whole(), Share::of);
        let t = self.seq_len.min(self.train.len() - 1);
        let starts = self.window_starts(batch, t, rng);
        let b = starts.len();
        let state = self.streams.state.take();
        let mut parts = self.shards(&starts, t, state.as_ref(), rng);
        let own = share.range(parts.len());
        let first_row: usize = parts[..own.start].iter().map(|s| s.rows).sum();
        parts.truncate(own.end);
        parts.drain(..own.start);
        let denominator = if ranks.is_none() { b as f32 } else { 1.0 };
        let shards = parts.len();
        if shards == 0 {
            // No rows here: zeros for the ranks' sum of the states.
            if let Some(ranks) = ranks.filter(|_| self.carry_state) {
                self.streams.state = Some(sum_states(ranks, self.zero_state(b))?);
            }
            return Ok((0.0, 0));
        }
        self.tapes.resize_with(shards, LmTape::default);
        self.shard_grads.truncate(shards - 1);
        while self.shard_grads.len() < shards - 1 {
            self.shard_grads.push(Grads::zeros_for(&self.model));
        }
        self.shard_grads.iter_mut().for_each(Grads::fill_zero);
        let threads = (rayon::current_num_threads() / shards).max(1);
        let (tapes, shard_grads) = (&mut self.tapes, &mut self.shard_grads);
        // The first shard adds to the model's own gradients, the others to their buffers.
        let results = accumulate_into_params(&mut self.model, |model, own| {
            let mut grads: Vec<GradSlices> = std::iter::once(own)
                .chain(shard_grads.iter_mut().map(Grads::slices))
                .collect();
            parts
                .into_par_iter()
                .zip(tapes.par_iter_mut())
                .zip(grads.par_iter_mut())
                .map(|((shard, tape), grads)| {
                    let weight = shard.rows as f32 / denominator;
                    team::with_limit(threads, || shard.run(model, tape, grads, weight))
                })
                .collect::<Result<Vec<(f64, LmState)>>>()
        })?;
        for g in &self.shard_grads {
            self.model.add_grads(g)?;
        }
        let ran = join_states(&results);
        let rows = ran.0.shape()[1];
        if self.carry_state {
            self.streams.state = Some(match ranks {
                None => ran,
                Some(ranks) => sum_states(ranks, with_rows(self.zero_state(b), first_row, ran))?,
            });
        }
        let bits: f64 = results.iter().map(|(bits, _)| bits).sum();
        Ok((bits, rows))
    }
}

/// `part`, the state of the streams from `first`, placed in `all` (the state of every
/// stream).
fn with_rows(mut all: LmState, first: usize, part: LmState) -> LmState {
    let place = |all: &mut ArrayD<f32>, part: &ArrayD<f32>| {
        let rows = part.shape()[1];
        all.slice_axis_mut(Axis(1), (first..first + rows).into())
            .assign(part);
    };
    place(&mut all.0, &part.0);
    if let (Some(all), Some(part)) = (&mut all.1, &part.1) {
        place(all, part);
    }
    all
}

/// `state` summed element-wise over the ranks of `collective`.
fn sum_states(collective: &dyn Collective, state: LmState) -> Result<LmState> {
    let (mut h, mut c) = state;
    let mut flat: Vec<f32> = h.iter().chain(c.iter().flatten()).copied().collect();
    collective.all_reduce_sum(&mut flat)?;
    let mut sums = flat.into_iter();
    h.iter_mut()
        .for_each(|v| *v = sums.next().expect("as long"));
    c.iter_mut()
        .flatten()
        .for_each(|v| *v = sums.next().expect("as long"));
    Ok((h, c))
}

impl Trainable for LmTask {
    fn train_len(&self) -> usize {
        self.sequences_per_epoch
    }

    fn begin_epoch(&mut self, rng: &mut rand::rngs::StdRng) {
        self.streams = Streams {
            offset: rng.gen_range(0..self.train.len()),
            ..Streams::default()
        };
    }

    fn train_batch(
        &mut self,
        batch: &[usize],
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(f64, usize)> {
        self.train_shards(batch.len(), None, rng)
    }

    /// The share's shards of the batch, each with the dropout stream it has in one
    /// process: the ranks together compute the batch exactly as one process does.
    fn train_share(
        &mut self,
        batch: &[usize],
        collective: &dyn Collective,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(f64, usize)> {
        self.train_shards(batch.len(), Some(collective), rng)
    }

    /// Validation bits per character, read as up to 32 streams of at least 8192
    /// characters (so that streams starting from zeros barely raise it), with the
    /// recurrent products in the training precision.
    fn validation_loss(&mut self) -> Result<f64> {
        let (nats, count) = self.validation_streams(Share::whole())?;
        Ok(nats / count as f64 / std::f64::consts::LN_2)
    }

    /// The rank's share of the validation streams.
    fn validation_share(&mut self, collective: &dyn Collective) -> Result<(f64, f64)> {
        let (nats, count) = self.validation_streams(Share::of(collective))?;
        Ok((nats / std::f64::consts::LN_2, count as f64))
    }

    fn metadata(&self) -> Vec<(String, String)> {
        crate::models::metadata_entries(&self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RnnConfig;
    use crate::data::Vocabulary;

    /// The loss of a training pass (masks from a stream seeded 7), its gradients added
    /// to the model's.
    fn loss_and_model(model: &mut CharLm, ids: &[usize], targets: &[i64]) -> f64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut tape = LmTape::default();
        let (logits, _) = model
            .forward_train(ids, 2, None, &mut rng, &mut tape)
            .unwrap();
        let loss = CrossEntropyLoss::default()
            .forward(&logits, targets, &[targets.len()])
            .unwrap();
        accumulate_into_params(model, |m, mut g| m.backward(&tape, &loss.grad, &mut g)).unwrap();
        loss.item() as f64
    }

    /// Consecutive training batches continue each stream where the last one stopped, with
    /// its state: the second batch's loss equals that of the windows' second halves when
    /// both windows run as one sequence from zeros (no dropout, f32). Streams are evenly
    /// spaced from the epoch's offset, and one that reaches the end of the text starts
    /// again from a zero state. Tolerance: 1e-5 relative (the training and inference passes
    /// sum in different orders).
    #[test]
    fn carried_state_continues_each_stream() {
        let text: Vec<usize> = (0..400).map(|i| (i * i + 3 * i) % 7).collect();
        let vocab = Vocabulary::from_text("abcdefg");
        let cfg = RnnConfig::new(crate::Mode::Lstm, 4, 6);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let model = CharLm::new(cfg, vocab, 4, &mut rng).unwrap();
        let (t, b) = (10, 3);
        let mut task = LmTask::new(model, text.clone(), vec![0, 1, 2], t, 100);
        task.begin_epoch(&mut rng);
        task.streams.offset = 5;
        let first = [5, 5 + 400 / 3, 5 + 2 * 400 / 3];
        task.train_batch(&[0; 3], &mut rng).unwrap();
        assert_eq!(task.streams.positions, first.map(|p| p + t));
        let (second, _) = task.train_batch(&[0; 3], &mut rng).unwrap();

        // Reference: each stream's two windows as one sequence from zeros.
        let ids: Vec<usize> = first
            .iter()
            .flat_map(|&p| text[p..p + 2 * t].to_vec())
            .collect();
        let (logits, _) = task.model.logits(&ids, b, None).unwrap();
        let v = logits.shape()[1];
        let mut reference = 0.0;
        for (j, &p) in first.iter().enumerate() {
            for k in t..2 * t {
                let z = &logits.as_slice().unwrap()[(j * 2 * t + k) * v..][..v];
                let max = z.iter().cloned().fold(f32::MIN, f32::max);
                let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
                reference += ((lse - z[text[p + k + 1]]) / std::f32::consts::LN_2) as f64;
            }
        }
        reference /= t as f64;
        assert!(
            (second - reference).abs() <= 1e-5 * reference,
            "second batch {second} bits vs one pass {reference}"
        );

        // A stream at the end of the text starts again at 0 from zeros; the others go on.
        task.streams.positions[0] = 400 - t;
        let carried = task.streams.state.clone().unwrap();
        let starts = task.window_starts(b, t, &mut rng);
        assert_eq!(starts, vec![0, first[1] + 2 * t, first[2] + 2 * t]);
        let (h, c) = task.streams.state.as_ref().unwrap();
        for (now, before) in [
            (h, &carried.0),
            (c.as_ref().unwrap(), carried.1.as_ref().unwrap()),
        ] {
            assert!(now.index_axis(Axis(1), 0).iter().all(|&x| x == 0.0));
            assert_eq!(now.index_axis(Axis(1), 1), before.index_axis(Axis(1), 1));
            assert!(before.index_axis(Axis(1), 0).iter().any(|&x| x != 0.0));
        }
    }

    /// A batch of several shards gives the gradients, loss and final state of the whole
    /// batch in one pass (no dropout, so the passes differ only in summation order): 35
    /// rows make shards of 12, 12 and 11. Tolerance: 1e-5 of the largest gradient of each
    /// parameter, 1e-5 relative for the loss, 1e-6 for the state (f32 sums of a few hundred
    /// terms).
    #[test]
    fn shards_give_the_whole_batch_gradient() {
        let text: Vec<usize> = (0..2000).map(|i| (i * i + 5 * i) % 9).collect();
        let vocab = Vocabulary::from_text("abcdefghi");
        let cfg = RnnConfig::new(crate::Mode::Lstm, 5, 7).with_num_layers(2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let model = CharLm::new(cfg, vocab, 5, &mut rng).unwrap();
        let (t, b) = (6, 2 * SHARD_ROWS + 3);
        let mut task = LmTask::new(model, text.clone(), vec![0, 1, 2], t, 100);
        task.begin_epoch(&mut rng);
        task.streams.offset = 11;
        task.model.zero_grad();
        let (bits, rows) = task
            .train_batch(&[0; 2 * SHARD_ROWS + 3], &mut rng)
            .unwrap();
        assert_eq!((rows, task.tapes.len()), (b, 3));

        let mut whole = task.model.clone();
        whole.zero_grad();
        let starts: Vec<usize> = (0..b).map(|j| 11 + j * 2000 / b).collect();
        let input: Vec<usize> = starts
            .iter()
            .flat_map(|&p| text[p..p + t].to_vec())
            .collect();
        let target: Vec<i64> = starts
            .iter()
            .flat_map(|&p| text[p + 1..p + 1 + t].iter().map(|&v| v as i64))
            .collect();
        let mut tape = LmTape::default();
        let (logits, (h_n, _)) = whole
            .forward_train(&input, b, None, &mut rng, &mut tape)
            .unwrap();
        let loss = CrossEntropyLoss::default()
            .forward(&logits, &target, &[target.len()])
            .unwrap();
        accumulate_into_params(&mut whole, |m, mut g| m.backward(&tape, &loss.grad, &mut g))
            .unwrap();
        let reference = loss.item() as f64 / std::f64::consts::LN_2 * b as f64;
        assert!(
            (bits - reference).abs() <= 1e-5 * reference,
            "{bits} vs {reference}"
        );
        for ((name, sharded), (_, one)) in task
            .model
            .named_parameters()
            .into_iter()
            .zip(whole.named_parameters())
        {
            let scale = one.grad.iter().fold(0f32, |m, g| m.max(g.abs()));
            for (a, e) in sharded.grad.iter().zip(&one.grad) {
                assert!((a - e).abs() <= 1e-5 * scale, "{name}: {a} vs {e}");
            }
        }
        let (h, _) = task.streams.state.as_ref().unwrap();
        assert_eq!(h.shape(), h_n.shape());
        for (a, e) in h.iter().zip(&h_n) {
            assert!((a - e).abs() <= 1e-6, "state {a} vs {e}");
        }
    }

    /// The embedding and output dropouts' masks reach the gradient: parameter gradients
    /// match central differences of the loss under the same masks (same random stream). Tolerance: f32
    /// losses differenced over eps = 1e-2, relative 3e-2 of the larger side plus 1e-4.
    #[test]
    fn dropout_gradients_match_finite_differences() {
        let vocab = Vocabulary::from_text("abcde");
        let cfg = RnnConfig::new(crate::Mode::Lstm, 3, 4).with_dropout(0.5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut model = CharLm::new(cfg, vocab, 3, &mut rng).unwrap();
        model.embedding_dropout = 0.3;
        let ids = [0, 1, 2, 3, 4, 0, 2, 1];
        let targets: Vec<i64> = vec![1, 2, 3, 4, 0, 2, 1, 3];
        model.zero_grad();
        loss_and_model(&mut model, &ids, &targets);
        let grads: Vec<(String, Vec<f32>)> = model
            .named_parameters()
            .into_iter()
            .map(|(n, p)| (n, p.grad.clone()))
            .collect();
        const EPS: f32 = 1e-2;
        for (name, grad) in &grads {
            for (i, &g) in grad.iter().enumerate().take(6) {
                let at = |delta: f32| {
                    let mut m = model.clone();
                    let mut params = m.named_parameters_mut();
                    let (_, p) = params.iter_mut().find(|(n, _)| n == name).unwrap();
                    p.value[i] += delta;
                    loss_and_model(&mut m, &ids, &targets)
                };
                let numeric = ((at(EPS) - at(-EPS)) / (2.0 * EPS as f64)) as f32;
                let tol = 1e-4 + 3e-2 * numeric.abs().max(g.abs());
                assert!(
                    (numeric - g).abs() <= tol,
                    "{name}[{i}]: gradient {g} vs finite difference {numeric}"
                );
            }
        }
    }
}
