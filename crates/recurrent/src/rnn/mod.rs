//! [`Rnn`]: the multi-layer, optionally bidirectional recurrent stack (`torch.nn.RNNBase`),
//! for every mode: `nn.RNN`, `nn.LSTM`, `nn.GRU`, and the layer-norm LSTM.

mod packing;

use crate::config::{Mode, RnnConfig};
use crate::error::{check_finite, Error, Result};
use crate::kernels::dropout::{apply_mask, dropout_in_place};
use crate::kernels::Precision;
use crate::layer::direction::{self, DirScratch, DirTape, PackedDirection};
use crate::layer::params::DirectionGrads;
use crate::layer::team;
use crate::layer::{BatchOrder, DirectionParams, DirectionShape};
use crate::param::{accumulate_into_params, GradSlices, Param, Parameters, Visitor};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use packing::{
    deinterleave_into, interleave_into, pack_into, unpack, unpack_owned, unsort_state, Geometry,
};
use rand::Rng;

/// A recurrent stack with PyTorch's semantics, parameters and shapes.
///
/// Shapes (`T` steps, `B` batch, `I` input size, `D` directions, `L` layers,
/// `H_out` = `proj_size` or `hidden_size`):
/// - input `(T, B, I)`, `(B, T, I)` with `batch_first`, or unbatched `(T, I)`;
/// - output `(T, B, D*H_out)` (batch-first likewise), unbatched `(T, D*H_out)`;
/// - `h0` / `h_n` `(D*L, B, H_out)` (never batch-first), unbatched `(D*L, H_out)`;
/// - `c0` / `c_n` `(D*L, B, H)` (LSTM).
#[derive(Debug, Clone, PartialEq)]
pub struct Rnn {
    config: RnnConfig,
    /// Parameters of layer `l`, direction `d` at index `l * D + d`.
    params: Vec<DirectionParams>,
    training: bool,
    precision: Precision,
}

/// Backward work buffers, kept in the tape between calls (not part of its record).
#[derive(Debug, Default)]
struct Scratch {
    dirs: [DirScratch; 2],
    dx: [Vec<f32>; 2],
    d_dir: [Vec<f32>; 2],
    d_top: Vec<f32>,
    d_next: Vec<f32>,
}

/// Initial state for [`Rnn::forward`]: `h0` and, for LSTM, `c0`.
#[derive(Debug, Clone)]
pub struct InitialState<'a> {
    /// `(D*L, B, H_out)` or unbatched `(D*L, H_out)`.
    pub h0: ArrayViewD<'a, f32>,
    /// LSTM only: `(D*L, B, H)` or unbatched `(D*L, H)`.
    pub c0: Option<ArrayViewD<'a, f32>>,
}

/// Result of [`Rnn::forward`].
#[derive(Debug, Clone, PartialEq)]
pub struct RnnOutput {
    /// Last layer's hidden state at every step, both directions concatenated.
    pub output: ArrayD<f32>,
    /// Final hidden state of every layer and direction.
    pub h_n: ArrayD<f32>,
    /// LSTM only: final cell state of every layer and direction.
    pub c_n: Option<ArrayD<f32>>,
}

/// Gradients of a loss with respect to what [`Rnn::forward`] returned; `None` means zeros.
#[derive(Debug, Clone, Default)]
pub struct OutputGrads<'a> {
    /// Same shape as `output`.
    pub grad_output: Option<ArrayViewD<'a, f32>>,
    /// Same shape as `h_n`.
    pub grad_h_n: Option<ArrayViewD<'a, f32>>,
    /// Same shape as `c_n`.
    pub grad_c_n: Option<ArrayViewD<'a, f32>>,
    /// Do not compute the input gradient (as PyTorch does for an input that does not
    /// require grad, e.g. data fed to the first layer): [`InputGrads::grad_input`] is then
    /// an empty array, and the first layer's `(N, G*H) x (G*H, I)` product is skipped.
    pub skip_input_grad: bool,
}

/// Gradients [`Rnn::backward`] returns (parameter gradients accumulate in the model).
#[derive(Debug, Clone, PartialEq)]
pub struct InputGrads {
    /// Same shape as the input.
    pub grad_input: ArrayD<f32>,
    /// Same shape as `h0` (present even when `h0` defaulted to zeros).
    pub grad_h0: ArrayD<f32>,
    /// LSTM only: same shape as `c0`.
    pub grad_c0: Option<ArrayD<f32>>,
}

/// What a forward pass keeps for [`Rnn::backward`]. A tape can be passed again to
/// [`Rnn::forward_train_into`] so its buffers (and those of the backward pass) are reused
/// instead of reallocated.
#[derive(Debug, Default)]
pub struct Tape {
    geometry: Option<Geometry>,
    layers: Vec<LayerTape>,
    /// The backward pass's work buffers: a backward takes them for its run and puts them
    /// back, so it needs only a shared tape.
    scratch: std::sync::Mutex<Scratch>,
}

impl Clone for Tape {
    /// The record; the copy gets its own, empty work buffers.
    fn clone(&self) -> Self {
        Tape {
            geometry: self.geometry.clone(),
            layers: self.layers.clone(),
            scratch: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct LayerTape {
    /// `(N, I_layer)` packed input of the layer.
    input: Vec<f32>,
    dirs: Vec<DirTape>,
    /// `(N, D*H_out)` dropout mask applied to this layer's output, already scaled.
    dropout_mask: Option<Vec<f32>>,
}

impl Rnn {
    /// Builds a stack with PyTorch's default initialisation (uniform in `±1/sqrt(H)`),
    /// drawing from `rng`. The model starts in training mode, as `nn.Module`.
    pub fn new(config: RnnConfig, rng: &mut impl Rng) -> Result<Self> {
        config.validate()?;
        let mut params = Vec::new();
        for layer in 0..config.num_layers {
            for _ in 0..config.num_directions() {
                params.push(DirectionParams::init(
                    DirectionShape {
                        mode: config.mode,
                        input_size: config.layer_input_size(layer),
                        hidden_size: config.hidden_size,
                        proj_size: config.proj_size,
                        bias: config.bias,
                        layer_norm: config.layer_norm,
                    },
                    rng,
                ));
            }
        }
        Ok(Rnn {
            config,
            params,
            training: true,
            precision: Precision::F32,
        })
    }

    /// `nn.LSTM(input_size, hidden_size)` with every other argument at its default.
    pub fn lstm(input_size: usize, hidden_size: usize, rng: &mut impl Rng) -> Result<Self> {
        Self::new(RnnConfig::new(Mode::Lstm, input_size, hidden_size), rng)
    }

    /// `nn.GRU(input_size, hidden_size)` with every other argument at its default.
    pub fn gru(input_size: usize, hidden_size: usize, rng: &mut impl Rng) -> Result<Self> {
        Self::new(RnnConfig::new(Mode::Gru, input_size, hidden_size), rng)
    }

    /// `nn.RNN(input_size, hidden_size)` (tanh) with every other argument at its default.
    pub fn elman(input_size: usize, hidden_size: usize, rng: &mut impl Rng) -> Result<Self> {
        Self::new(RnnConfig::new(Mode::RnnTanh, input_size, hidden_size), rng)
    }

    /// The configuration.
    pub fn config(&self) -> &RnnConfig {
        &self.config
    }

    /// Parameters of layer `layer`, direction `direction` (0 forward, 1 reverse).
    pub fn direction_params(&self, layer: usize, direction: usize) -> &DirectionParams {
        &self.params[layer * self.config.num_directions() + direction]
    }

    /// Switches training mode on (dropout active in [`Rnn::forward_train`]) or off.
    pub fn train(&mut self, on: bool) {
        self.training = on;
    }

    /// Inference mode, as `module.eval()`.
    pub fn eval(&mut self) {
        self.training = false;
    }

    /// Sets the arithmetic of the matrix products in [`Rnn::forward_train`] and
    /// [`Rnn::backward`] (default [`Precision::F32`]). With [`Precision::Bf16`] training
    /// runs as under PyTorch's `torch.autocast("cpu", dtype=torch.bfloat16)`: operands
    /// rounded to bfloat16, sums, gates, states, gradients and weights in `f32`. Inference
    /// ([`Rnn::forward`], [`Rnn::prepare`]) computes in `f32`; [`Rnn::prepare_in`] chooses.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// The arithmetic of training products (see [`Rnn::set_precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether the model is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Replaces the parameters from a `state_dict`-like lookup (`name -> (shape, values)`).
    /// Every expected tensor must be present with its exact shape; unknown names are an error.
    pub fn load_tensors(
        &mut self,
        tensors: &[(String, Vec<usize>, Vec<f32>)],
        place: &str,
    ) -> Result<()> {
        let known: Vec<String> = self
            .named_parameters()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if let Some((name, _, _)) = tensors.iter().find(|(n, _, _)| !known.contains(n)) {
            return Err(Error::Config(format!(
                "{place}: unexpected tensor `{name}` for this configuration (expected: {})",
                known.join(", ")
            )));
        }
        for (name, param) in self.named_parameters_mut() {
            let (_, shape, data) =
                tensors
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .ok_or_else(|| Error::Missing {
                        name: name.clone(),
                        place: place.to_string(),
                    })?;
            param.assign(&name, shape, data)?;
            check_finite(&name, data)?;
        }
        Ok(())
    }

    /// Forward pass, as `module(input, h0 / (h0, c0))`. Dropout is never applied here
    /// (inference); use [`Rnn::forward_train`] for training.
    ///
    /// `lengths` (batched input only) gives each sequence's length, as PyTorch's
    /// `pack_padded_sequence(.., enforce_sorted=False)` → module → `pad_packed_sequence`:
    /// outputs past a sequence's end are zero and `h_n` holds its state at its own last step.
    pub fn forward(
        &self,
        input: ArrayViewD<f32>,
        state: Option<InitialState>,
        lengths: Option<&[usize]>,
    ) -> Result<RnnOutput> {
        self.infer(input, state, lengths, (None, Precision::F32))
    }

    /// Packs the weights once for repeated inference: see [`PreparedRnn`].
    pub fn prepare(&self) -> PreparedRnn<'_> {
        self.prepare_in(Precision::F32)
    }

    /// [`Rnn::prepare`] with the products in `precision`. [`Precision::Bf16`] evaluates
    /// as under `torch.autocast("cpu", dtype=torch.bfloat16)`, e.g. to validate a model
    /// during bf16 training at training speed; its outputs differ from `f32` inference in
    /// about the third significant digit.
    pub fn prepare_in(&self, precision: Precision) -> PreparedRnn<'_> {
        PreparedRnn::new(std::borrow::Cow::Borrowed(self), precision)
    }

    /// [`Rnn::prepare_in`] for a model the prepared one keeps, e.g. to hold it beside
    /// other owned state.
    pub fn into_prepared(self, precision: Precision) -> PreparedRnn<'static> {
        PreparedRnn::new(std::borrow::Cow::Owned(self), precision)
    }

    fn infer(
        &self,
        input: ArrayViewD<f32>,
        state: Option<InitialState>,
        lengths: Option<&[usize]>,
        weights: (Option<&[PackedDirection]>, Precision),
    ) -> Result<RnnOutput> {
        // One layer's work buffers, kept per thread so repeated inference does not
        // allocate (and fault in) fresh memory on every call.
        thread_local! {
            static INFERENCE_TAPE: std::cell::RefCell<Tape> = std::cell::RefCell::new(Tape::default());
        }
        INFERENCE_TAPE.with(|cell| {
            let mut tape = cell.take();
            let out = self.run(input, state, lengths, None, &mut tape, false, weights);
            cell.replace(tape);
            out
        })
    }

    /// Forward pass that keeps what [`Rnn::backward`] needs. In training mode, dropout
    /// (probability `config.dropout`) is applied to every layer's output but the last,
    /// with masks drawn from `rng`.
    pub fn forward_train(
        &self,
        input: ArrayViewD<f32>,
        state: Option<InitialState>,
        lengths: Option<&[usize]>,
        rng: &mut impl Rng,
    ) -> Result<(RnnOutput, Tape)> {
        let mut tape = Tape::default();
        let out = self.forward_train_into(input, state, lengths, rng, &mut tape)?;
        Ok((out, tape))
    }

    /// [`Rnn::forward_train`] writing into an existing tape, reusing its buffers.
    pub fn forward_train_into(
        &self,
        input: ArrayViewD<f32>,
        state: Option<InitialState>,
        lengths: Option<&[usize]>,
        rng: &mut impl Rng,
        tape: &mut Tape,
    ) -> Result<RnnOutput> {
        let rng: &mut dyn rand::RngCore = rng;
        self.run(
            input,
            state,
            lengths,
            Some(rng),
            tape,
            true,
            (None, self.precision),
        )
    }

    /// The forward pass. With `keep`, every layer's tape stays in `tape`; without it one
    /// slot is reused layer after layer. `weights`: every direction's weights already
    /// packed, in parameter order (or `None`: packed here), and the products' precision.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        input: ArrayViewD<f32>,
        state: Option<InitialState>,
        lengths: Option<&[usize]>,
        mut rng: Option<&mut dyn rand::RngCore>,
        tape: &mut Tape,
        keep: bool,
        (packed, precision): (Option<&[PackedDirection]>, Precision),
    ) -> Result<RnnOutput> {
        let cfg = &self.config;
        let geo = self.geometry(&input, lengths)?;
        let (d, l, h, h_out) = (
            cfg.num_directions(),
            cfg.num_layers,
            cfg.hidden_size,
            cfg.output_size(),
        );
        let b = geo.batch;
        let lstm = cfg.mode == Mode::Lstm;
        let (mut h_state, mut c_state) = self.initial_state(&geo, state)?;
        let input = input.as_standard_layout();
        let input = input.as_slice().expect("standard layout");
        check_finite("input", input)?;
        let layout = &geo.order.layout;
        let n = layout.rows();

        let slots = if keep { l } else { 1 };
        tape.layers.truncate(slots);
        tape.layers.resize_with(slots, LayerTape::default);
        pack_into(
            input,
            &geo,
            cfg.input_size,
            cfg.batch_first,
            &mut tape.layers[0].input,
        );
        let mut spare = Vec::new();
        let mut output_rows = Vec::new();
        for layer in 0..l {
            let slot = if keep { layer } else { 0 };
            let (done, rest) = tape.layers.split_at_mut(slot + 1);
            let lt = &mut done[slot];
            lt.dirs.resize_with(d, DirTape::default);
            let params = &self.params[layer * d..(layer + 1) * d];
            let hs = &mut h_state[layer * d * b * h_out..(layer + 1) * d * b * h_out];
            let cs = if lstm {
                &mut c_state[layer * d * b * h..(layer + 1) * d * b * h]
            } else {
                &mut c_state[..0]
            };
            let packed = packed.map(|pk| &pk[layer * d..(layer + 1) * d]);
            let weights = (packed, precision);
            run_directions(params, &lt.input, layout, hs, cs, &mut lt.dirs, weights);
            let last = layer + 1 == l;
            let next = if last {
                &mut output_rows
            } else if keep {
                &mut rest[0].input
            } else {
                &mut spare
            };
            interleave_into(&lt.dirs, n, h_out, next);
            lt.dropout_mask = match rng.as_deref_mut() {
                Some(rng) if self.training && cfg.dropout > 0.0 && !last => {
                    let mut mask = lt.dropout_mask.take().unwrap_or_default();
                    dropout_in_place(next, &mut mask, cfg.dropout, rng);
                    Some(mask)
                }
                _ => None,
            };
            if !keep && !last {
                std::mem::swap(&mut lt.input, &mut spare);
            }
        }
        let output = unpack_owned(output_rows, &geo, d * h_out, cfg.batch_first);
        let h_n = unsort_state(&h_state, &geo, d * l, h_out);
        let c_n = lstm.then(|| unsort_state(&c_state, &geo, d * l, h));
        tape.geometry = Some(geo);
        Ok(RnnOutput { output, h_n, c_n })
    }

    /// Backward through the whole stack for a tape from [`Rnn::forward_train`]. Parameter
    /// gradients are added to each parameter's `grad` (zero them with
    /// [`Parameters::zero_grad`]); input and initial-state gradients are returned.
    pub fn backward(&mut self, tape: &Tape, grads: OutputGrads) -> Result<InputGrads> {
        accumulate_into_params(self, |rnn, mut slices| {
            rnn.backward_into(tape, grads, &mut slices)
        })
    }

    /// [`Rnn::backward`] without touching the model: parameter gradients are added to
    /// `param_grads` (one slice per parameter in [`Parameters`] order, e.g. from
    /// [`crate::param::Grads::slices`]), so several backward passes (threads, replicas,
    /// shards of a batch) can run on one model at once.
    pub fn backward_into(
        &self,
        tape: &Tape,
        grads: OutputGrads,
        param_grads: &mut GradSlices<'_>,
    ) -> Result<InputGrads> {
        let cfg = &self.config;
        let geo = tape
            .geometry
            .as_ref()
            .filter(|_| tape.layers.len() == cfg.num_layers)
            .ok_or_else(|| {
                Error::Invalid("backward needs a tape from forward_train of this model".into())
            })?;
        let (d, l, h, h_out) = (
            cfg.num_directions(),
            cfg.num_layers,
            cfg.hidden_size,
            cfg.output_size(),
        );
        let b = geo.batch;
        let lstm = cfg.mode == Mode::Lstm;
        let layout = &geo.order.layout;
        let n = layout.rows();

        let mut dir_grads: Vec<DirectionGrads> = self
            .params
            .iter()
            .map(|p| DirectionGrads::take(p, param_grads))
            .collect();
        let mut scratch = tape
            .scratch
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let out_shape = self.output_shape(geo);
        match grads.grad_output {
            Some(g) => {
                expect_shape("grad_output", &g, &out_shape)?;
                let g = g.as_standard_layout();
                let g = g.as_slice().expect("standard layout");
                check_finite("grad_output", g)?;
                pack_into(g, geo, d * h_out, cfg.batch_first, &mut scratch.d_top);
            }
            None => {
                scratch.d_top.clear();
                scratch.d_top.resize(n * d * h_out, 0.0);
            }
        }
        let mut dh = self.sorted_state("grad_h_n", grads.grad_h_n, geo, h_out)?;
        let mut dc = if lstm {
            self.sorted_state("grad_c_n", grads.grad_c_n, geo, h)?
        } else {
            if grads.grad_c_n.is_some() {
                return Err(Error::Invalid(format!(
                    "grad_c_n given for mode {}",
                    cfg.mode
                )));
            }
            Vec::new()
        };

        for layer in (0..l).rev() {
            let lt = &tape.layers[layer];
            if let Some(mask) = &lt.dropout_mask {
                apply_mask(&mut scratch.d_top, mask);
            }
            let params = &self.params[layer * d..(layer + 1) * d];
            let layer_grads = dir_grads.split_off(layer * d);
            let dhs = &mut dh[layer * d * b * h_out..(layer + 1) * d * b * h_out];
            let dcs = if lstm {
                &mut dc[layer * d * b * h..(layer + 1) * d * b * h]
            } else {
                &mut dc[..0]
            };
            let want_dx = layer > 0 || !grads.skip_input_grad;
            backward_directions(
                params,
                layer_grads,
                lt,
                layout,
                dhs,
                dcs,
                cfg.layer_input_size(layer),
                want_dx,
                self.precision,
                &mut scratch,
            );
            std::mem::swap(&mut scratch.d_top, &mut scratch.d_next);
        }
        let grad_input = if grads.skip_input_grad {
            ArrayD::zeros(IxDyn(&[0]))
        } else {
            unpack(&scratch.d_top, geo, cfg.input_size, cfg.batch_first)
        };
        let grad_h0 = unsort_state(&dh, geo, d * l, h_out);
        let grad_c0 = lstm.then(|| unsort_state(&dc, geo, d * l, h));
        if let Ok(mut s) = tape.scratch.lock() {
            *s = scratch;
        }
        Ok(InputGrads {
            grad_input,
            grad_h0,
            grad_c0,
        })
    }

    fn geometry(&self, input: &ArrayViewD<f32>, lengths: Option<&[usize]>) -> Result<Geometry> {
        let cfg = &self.config;
        let shape = input.shape();
        let expected = if cfg.batch_first {
            format!(
                "(B, T, {}) or unbatched (T, {})",
                cfg.input_size, cfg.input_size
            )
        } else {
            format!(
                "(T, B, {}) or unbatched (T, {})",
                cfg.input_size, cfg.input_size
            )
        };
        let (batched, steps, batch) = match *shape {
            [t, b, i] if i == cfg.input_size => {
                if cfg.batch_first {
                    (true, b, t)
                } else {
                    (true, t, b)
                }
            }
            [t, i] if i == cfg.input_size => (false, t, 1),
            _ => return Err(Error::shape("input", expected, shape)),
        };
        if steps == 0 || batch == 0 {
            return Err(Error::shape(
                "input",
                format!("{expected} with T >= 1 and B >= 1"),
                shape,
            ));
        }
        let order = match lengths {
            None => BatchOrder::full(steps, batch),
            Some(_) if !batched => {
                return Err(Error::Lengths(
                    "lengths need a batched input (3 dimensions); found an unbatched one".into(),
                ))
            }
            Some(ls) => BatchOrder::from_lengths(ls, steps, batch)?,
        };
        Ok(Geometry {
            batched,
            steps,
            batch,
            order,
        })
    }

    fn output_shape(&self, geo: &Geometry) -> Vec<usize> {
        let width = self.config.num_directions() * self.config.output_size();
        match (geo.batched, self.config.batch_first) {
            (false, _) => vec![geo.steps, width],
            (true, false) => vec![geo.steps, geo.batch, width],
            (true, true) => vec![geo.batch, geo.steps, width],
        }
    }

    /// `(D*L, B, width)` state tensor (or zeros) in sorted batch order, flat.
    fn sorted_state(
        &self,
        name: &str,
        t: Option<ArrayViewD<f32>>,
        geo: &Geometry,
        width: usize,
    ) -> Result<Vec<f32>> {
        let dl = self.config.num_directions() * self.config.num_layers;
        let b = geo.batch;
        let Some(t) = t else {
            return Ok(vec![0.0; dl * b * width]);
        };
        let shape: Vec<usize> = if geo.batched {
            vec![dl, b, width]
        } else {
            vec![dl, width]
        };
        expect_shape(name, &t, &shape)?;
        let t = t.as_standard_layout();
        let src = t.as_slice().expect("standard layout");
        check_finite(name, src)?;
        let mut out = vec![0.0; dl * b * width];
        for k in 0..dl {
            for (j, &orig) in geo.order.sorted.iter().enumerate() {
                let from = (k * b + orig) * width;
                out[(k * b + j) * width..(k * b + j + 1) * width]
                    .copy_from_slice(&src[from..from + width]);
            }
        }
        Ok(out)
    }

    fn initial_state(
        &self,
        geo: &Geometry,
        state: Option<InitialState>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let cfg = &self.config;
        let lstm = cfg.mode == Mode::Lstm;
        let (h0, c0) = match state {
            None => (None, None),
            Some(s) => (Some(s.h0), s.c0),
        };
        match (lstm, h0.is_some(), c0.is_some()) {
            (true, true, false) => {
                return Err(Error::Missing {
                    name: "c0".into(),
                    place: "the initial state (LSTM needs both h0 and c0)".into(),
                })
            }
            (false, _, true) => {
                return Err(Error::Invalid(format!(
                    "c0 is only used by LSTM, found it with mode {}",
                    cfg.mode
                )))
            }
            _ => {}
        }
        let h = self.sorted_state("h0", h0, geo, cfg.output_size())?;
        let c = if lstm {
            self.sorted_state("c0", c0, geo, cfg.hidden_size)?
        } else {
            Vec::new()
        };
        Ok((h, c))
    }
}

fn expect_shape(name: &str, t: &ArrayViewD<f32>, shape: &[usize]) -> Result<()> {
    if t.shape() != shape {
        return Err(Error::shape(name, format!("{shape:?}"), t.shape()));
    }
    Ok(())
}

/// Runs the directions of one layer (in parallel when bidirectional).
/// Threads for each direction's time loop when `directions` run at once.
fn per_direction_threads(directions: usize) -> usize {
    (rayon::current_num_threads() / directions).max(1)
}

/// Runs the two directions of a layer at once, each with half the pool for its time loop.
fn join_directions<A: Send, B: Send>(
    forward: impl FnOnce() -> A + Send,
    backward: impl FnOnce() -> B + Send,
) -> (A, B) {
    let threads = per_direction_threads(2);
    rayon::join(
        || team::with_limit(threads, forward),
        || team::with_limit(threads, backward),
    )
}

fn run_directions(
    params: &[DirectionParams],
    x: &[f32],
    layout: &crate::layer::SeqLayout,
    h: &mut [f32],
    c: &mut [f32],
    tapes: &mut [DirTape],
    (packed, precision): (Option<&[PackedDirection]>, Precision),
) {
    let pk = |k: usize| (packed.map(|p| &p[k]), precision);
    if params.len() == 2 {
        let (hf, hb) = h.split_at_mut(h.len() / 2);
        let (cf, cb) = c.split_at_mut(c.len() / 2);
        let (tf, tb) = tapes.split_at_mut(1);
        join_directions(
            || direction::forward(&params[0], x, layout, false, hf, cf, &mut tf[0], pk(0)),
            || direction::forward(&params[1], x, layout, true, hb, cb, &mut tb[0], pk(1)),
        );
    } else {
        direction::forward(&params[0], x, layout, false, h, c, &mut tapes[0], pk(0));
    }
}

/// An [`Rnn`] with its weights packed once, for repeated inference (streaming, serving,
/// sampling): [`PreparedRnn::forward`] gives exactly what [`Rnn::forward`] gives without
/// repacking the weights on every call, which dominates short calls (batch 1, a few
/// steps). It borrows the model ([`Rnn::prepare`]) or owns it ([`Rnn::into_prepared`]),
/// so the weights cannot change while it exists. The recurrent weights are split for the
/// thread pool current at [`Rnn::prepare`]; other pools give the same results.
#[derive(Debug, Clone)]
pub struct PreparedRnn<'a> {
    rnn: std::borrow::Cow<'a, Rnn>,
    packed: Vec<PackedDirection>,
    precision: Precision,
}

impl<'a> PreparedRnn<'a> {
    fn new(rnn: std::borrow::Cow<'a, Rnn>, precision: Precision) -> Self {
        let threads = per_direction_threads(rnn.config.num_directions());
        let packed = team::with_limit(threads, || {
            rnn.params
                .iter()
                .map(|p| PackedDirection::new(p, precision))
                .collect()
        });
        PreparedRnn {
            rnn,
            packed,
            precision,
        }
    }

    /// The model this one runs.
    pub fn model(&self) -> &Rnn {
        &self.rnn
    }

    /// Inference, as [`Rnn::forward`].
    pub fn forward(
        &self,
        input: ArrayViewD<f32>,
        state: Option<InitialState>,
        lengths: Option<&[usize]>,
    ) -> Result<RnnOutput> {
        self.rnn
            .infer(input, state, lengths, (Some(&self.packed), self.precision))
    }
}

/// Backward through the directions of one layer: reads `s.d_top` (gradient of the layer
/// output) and, with `want_dx`, writes the gradient of the layer input to `s.d_next`.
#[allow(clippy::too_many_arguments)]
fn backward_directions(
    params: &[DirectionParams],
    grads: Vec<DirectionGrads>,
    lt: &LayerTape,
    layout: &crate::layer::SeqLayout,
    dh: &mut [f32],
    dc: &mut [f32],
    in_size: usize,
    want_dx: bool,
    precision: Precision,
    s: &mut Scratch,
) {
    let n = layout.rows();
    let h_out = params[0].output_size();
    for dx in &mut s.dx[..params.len()] {
        dx.resize(if want_dx { n * in_size } else { 0 }, 0.0);
    }
    if params.len() == 2 {
        for k in 0..2 {
            deinterleave_into(&s.d_top, 2, h_out, k, &mut s.d_dir[k]);
        }
        let [gradf, gradb]: [DirectionGrads; 2] = grads.try_into().ok().expect("two directions");
        let (dhf, dhb) = dh.split_at_mut(dh.len() / 2);
        let (dcf, dcb) = dc.split_at_mut(dc.len() / 2);
        let [sf, sb] = &mut s.dirs;
        let [xf, xb] = &mut s.dx;
        let (gf, gb) = (&s.d_dir[0], &s.d_dir[1]);
        join_directions(
            || {
                let dx = want_dx.then_some(&mut xf[..]);
                let (p, x) = (&params[0], &lt.input);
                direction::backward(
                    p,
                    gradf,
                    x,
                    layout,
                    false,
                    &lt.dirs[0],
                    gf,
                    dhf,
                    dcf,
                    dx,
                    precision,
                    sf,
                )
            },
            || {
                let dx = want_dx.then_some(&mut xb[..]);
                let (p, x) = (&params[1], &lt.input);
                direction::backward(
                    p,
                    gradb,
                    x,
                    layout,
                    true,
                    &lt.dirs[1],
                    gb,
                    dhb,
                    dcb,
                    dx,
                    precision,
                    sb,
                )
            },
        );
        s.d_next.clear();
        s.d_next
            .extend(xf.iter().zip(xb.iter()).map(|(a, b)| a + b));
    } else {
        let dx = &mut s.dx[0];
        let grad = grads.into_iter().next().expect("one direction");
        direction::backward(
            &params[0],
            grad,
            &lt.input,
            layout,
            false,
            &lt.dirs[0],
            &s.d_top,
            dh,
            dc,
            want_dx.then_some(&mut dx[..]),
            precision,
            &mut s.dirs[0],
        );
        std::mem::swap(&mut s.d_next, dx);
    }
}

/// Every layer and direction under PyTorch's names (`weight_ih_l0`, `bias_hh_l1_reverse`).
impl Parameters for Rnn {
    fn visit_params<'a>(&'a self, v: &mut Visitor<'_, &'a Param>) {
        let d = self.config.num_directions();
        for (i, p) in self.params.iter().enumerate() {
            set_layer_suffix(v, i / d, i % d);
            p.visit_params(v);
        }
        v.set_suffix(format_args!(""));
    }

    fn visit_params_mut<'a>(&'a mut self, v: &mut Visitor<'_, &'a mut Param>) {
        let d = self.config.num_directions();
        for (i, p) in self.params.iter_mut().enumerate() {
            set_layer_suffix(v, i / d, i % d);
            p.visit_params_mut(v);
        }
        v.set_suffix(format_args!(""));
    }
}

/// PyTorch's suffix of layer `layer`, direction `direction`: `_l0`, `_l0_reverse`.
fn set_layer_suffix<T>(v: &mut Visitor<'_, T>, layer: usize, direction: usize) {
    let reverse = if direction == 1 { "_reverse" } else { "" };
    v.set_suffix(format_args!("_l{layer}{reverse}"));
}

/// PyTorch's parameter-name suffix (kept under this name for existing callers).
pub use crate::config::parameter_suffix as suffix;
