//! `Rnn`: the recurrent stack ([`recurrent::Rnn`]) with NumPy arrays.

use crate::arrays::{flat_to_numpy, to_numpy, view, view_opt, In, Out};
use crate::errors::IntoPy;
use crate::threads::compute;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recurrent::kernels::Precision;
use recurrent::param::GradSlices;
use recurrent::{
    InitialState, Mode, OutputGrads, Parameters, PreparedRnn, Rnn, RnnConfig, RnnOutput, Tape,
};
use std::sync::{Arc, Mutex};

/// `(output, h_n, c_n)` as NumPy arrays; `c_n` is `None` except for LSTM.
type Outputs<'py> = (Out<'py>, Out<'py>, Option<Out<'py>>);

/// `(grad_input, grad_h0, grad_c0, parameter gradients)`.
type Gradients<'py> = (Option<Out<'py>>, Out<'py>, Option<Out<'py>>, Vec<Out<'py>>);

/// A recurrent stack: `torch.nn.RNN`, `LSTM` or `GRU` (and the layer-norm LSTM), with
/// PyTorch's parameter names, shapes and numbers.
///
/// Shapes: input `(T, B, I)` (`(B, T, I)` with `batch_first`) or unbatched `(T, I)`;
/// `h0` `(D*L, B, H_out)`, `c0` `(D*L, B, H)`; output `(T, B, D*H_out)`.
#[pyclass(name = "Rnn", module = "recurrent._recurrent")]
pub struct NativeRnn {
    model: Rnn,
    /// The weights packed for inference, built on the first inference call after a change
    /// of the parameters.
    prepared: Option<PreparedRnn<'static>>,
    /// Tapes of finished graphs, whose buffers the next training passes reuse.
    spare_tapes: TapePool,
}

/// Tapes are large (every gate of every step); allocating one per call costs more than
/// a third of a training step in page faults, so released tapes are kept for reuse, up
/// to this many per model (a training loop alternates between two).
const MAX_SPARE_TAPES: usize = 4;

type TapePool = Arc<Mutex<Vec<Tape>>>;

/// What a training forward pass keeps for the backward pass. It can serve several
/// backward passes (as with `retain_graph=True`); when it is released its buffers go
/// back to the model for the next training pass.
#[pyclass(name = "Tape", module = "recurrent._recurrent")]
pub struct NativeTape {
    tape: Tape,
    pool: TapePool,
}

impl Drop for NativeTape {
    fn drop(&mut self) {
        let mut spare = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < MAX_SPARE_TAPES {
            spare.push(std::mem::take(&mut self.tape));
        }
    }
}

impl NativeRnn {
    fn from_model(model: Rnn) -> Self {
        NativeRnn {
            model,
            prepared: None,
            spare_tapes: TapePool::default(),
        }
    }
}

#[pymethods]
impl NativeRnn {
    /// A new stack with PyTorch's initialisation (uniform in `±1/sqrt(hidden_size)`)
    /// drawn from `seed` (from the operating system when `None`).
    #[new]
    #[pyo3(signature = (mode, input_size, hidden_size, num_layers=1, bias=true, batch_first=false, dropout=0.0, bidirectional=false, proj_size=0, layer_norm=false, seed=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        mode: &str,
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        bias: bool,
        batch_first: bool,
        dropout: f32,
        bidirectional: bool,
        proj_size: usize,
        layer_norm: bool,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        let mode: Mode = mode
            .parse()
            .map_err(|e| PyValueError::new_err(format!("{e}")))?;
        let config = RnnConfig::new(mode, input_size, hidden_size)
            .with_num_layers(num_layers)
            .with_bias(bias)
            .with_batch_first(batch_first)
            .with_dropout(dropout)
            .with_bidirectional(bidirectional)
            .with_proj_size(proj_size)
            .with_layer_norm(layer_norm);
        let mut rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Ok(Self::from_model(Rnn::new(config, &mut rng).py()?))
    }

    /// Reads a model file (safetensors with the configuration in its metadata), as
    /// written by `save` or the command-line tool.
    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let model = py.detach(|| recurrent::io::load_rnn(&path)).py()?;
        Ok(Self::from_model(model))
    }

    /// Writes the model file atomically: a failed write leaves a previous file intact.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        py.detach(|| recurrent::io::save_rnn(&self.model, &path))
            .py()
    }

    /// The configuration as JSON (the model file's `config` entry).
    #[getter]
    fn config_json(&self) -> String {
        self.model.config().to_json()
    }

    /// `(name, shape)` of every parameter, in `named_parameters()` order.
    fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        named_shapes(&self.model)
    }

    /// Copies of the parameters, `(name, array)` in `named_parameters()` order.
    fn parameters<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, Out<'py>)>> {
        named_copies(py, &self.model)
    }

    /// Replaces every parameter, in `named_parameters()` order. Values are copied, and
    /// only when they differ from the current ones (so the weights packed for inference
    /// are kept while they stay the same).
    fn set_parameters(&mut self, py: Python<'_>, values: Vec<In<'_>>) -> PyResult<()> {
        let assigned = assign_all(py, &mut self.model, &values);
        if !matches!(assigned, Ok(false)) {
            // Changed, or failed part-way.
            self.prepared = None;
        }
        assigned.map(|_| ())
    }

    /// Inference (no dropout, nothing kept for backward) on weights packed once.
    #[pyo3(signature = (input, h0=None, c0=None, lengths=None))]
    fn forward<'py>(
        &mut self,
        py: Python<'py>,
        input: In<'_>,
        h0: Option<In<'_>>,
        c0: Option<In<'_>>,
        lengths: Option<Vec<usize>>,
    ) -> PyResult<Outputs<'py>> {
        let (x, state) = (view("input", &input)?, initial_state(&h0, &c0)?);
        let (model, prepared) = (&self.model, &mut self.prepared);
        let out = compute(py, || {
            let prepared =
                prepared.get_or_insert_with(|| model.clone().into_prepared(Precision::F32));
            prepared.forward(x, state, lengths.as_deref())
        })?
        .py()?;
        outputs(py, out)
    }

    /// Training forward pass: also returns the tape `backward` needs. With `dropout`,
    /// the dropout between layers is applied with masks drawn from `seed`.
    #[pyo3(signature = (input, h0=None, c0=None, lengths=None, dropout=false, seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn forward_train<'py>(
        &mut self,
        py: Python<'py>,
        input: In<'_>,
        h0: Option<In<'_>>,
        c0: Option<In<'_>>,
        lengths: Option<Vec<usize>>,
        dropout: bool,
        seed: u64,
    ) -> PyResult<(Out<'py>, Out<'py>, Option<Out<'py>>, NativeTape)> {
        let (x, state) = (view("input", &input)?, initial_state(&h0, &c0)?);
        self.model.train(dropout);
        let model = &self.model;
        let pool = self.spare_tapes.clone();
        let mut tape = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let tape = tape.get_or_insert_with(Tape::default);
        let out = compute(py, || {
            let mut rng = StdRng::seed_from_u64(seed);
            model.forward_train_into(x, state, lengths.as_deref(), &mut rng, tape)
        })?
        .py()?;
        let tape = std::mem::take(tape);
        let (output, h_n, c_n) = outputs(py, out)?;
        Ok((output, h_n, c_n, NativeTape { tape, pool }))
    }

    /// Backward through a tape of `forward_train` (on the same weights). Missing output
    /// gradients are zeros. Returns `(grad_input, grad_h0, grad_c0, grads)`: `grad_input`
    /// is `None` unless `input_grad`, `grad_c0` is `None` except for LSTM, and `grads` has
    /// every parameter's gradient (its own array) in `named_parameters()` order.
    #[pyo3(signature = (tape, grad_output=None, grad_h_n=None, grad_c_n=None, input_grad=true))]
    fn backward<'py>(
        &self,
        py: Python<'py>,
        tape: &NativeTape,
        grad_output: Option<In<'_>>,
        grad_h_n: Option<In<'_>>,
        grad_c_n: Option<In<'_>>,
        input_grad: bool,
    ) -> PyResult<Gradients<'py>> {
        let grads = OutputGrads {
            grad_output: view_opt("grad_output", &grad_output)?,
            grad_h_n: view_opt("grad_h_n", &grad_h_n)?,
            grad_c_n: view_opt("grad_c_n", &grad_c_n)?,
            skip_input_grad: !input_grad,
        };
        let model = &self.model;
        let (inputs, param_grads) = compute(py, || {
            backward_with_own_buffers(model, |slices| {
                model.backward_into(&tape.tape, grads, slices)
            })
        })?
        .py()?;
        let grad_input = input_grad
            .then(|| to_numpy(py, inputs.grad_input))
            .transpose()?;
        let grad_c0 = inputs.grad_c0.map(|g| to_numpy(py, g)).transpose()?;
        Ok((
            grad_input,
            to_numpy(py, inputs.grad_h0)?,
            grad_c0,
            param_grads_to_numpy(py, model, param_grads)?,
        ))
    }
}

/// Runs a backward pass that writes every parameter's gradient into a zeroed buffer of
/// its own; returns its result and the buffers (in parameter order).
pub fn backward_with_own_buffers<R>(
    model: &impl Parameters,
    backward: impl FnOnce(&mut GradSlices<'_>) -> recurrent::Result<R>,
) -> recurrent::Result<(R, Vec<Vec<f32>>)> {
    let mut buffers: Vec<Vec<f32>> = model.param_lens().iter().map(|&n| vec![0.0; n]).collect();
    let out = backward(&mut GradSlices::from_parts(
        buffers.iter_mut().map(|b| &mut b[..]),
    ))?;
    Ok((out, buffers))
}

/// Gradient buffers as NumPy arrays of their parameters' shapes (no copy).
pub fn param_grads_to_numpy<'py>(
    py: Python<'py>,
    model: &impl Parameters,
    buffers: Vec<Vec<f32>>,
) -> PyResult<Vec<Out<'py>>> {
    model
        .named_parameters()
        .into_iter()
        .zip(buffers)
        .map(|((_, p), g)| flat_to_numpy(py, g, &p.shape))
        .collect()
}

/// `h0` and `c0` as the library's initial state (`None`: zeros).
fn initial_state<'a>(
    h0: &'a Option<In<'_>>,
    c0: &'a Option<In<'_>>,
) -> PyResult<Option<InitialState<'a>>> {
    match (view_opt("h0", h0)?, view_opt("c0", c0)?) {
        (Some(h0), c0) => Ok(Some(InitialState { h0, c0 })),
        (None, None) => Ok(None),
        (None, Some(_)) => Err(PyValueError::new_err(
            "c0 given without h0: pass both (LSTM) or neither",
        )),
    }
}

fn outputs(py: Python<'_>, out: RnnOutput) -> PyResult<Outputs<'_>> {
    Ok((
        to_numpy(py, out.output)?,
        to_numpy(py, out.h_n)?,
        out.c_n.map(|c| to_numpy(py, c)).transpose()?,
    ))
}

/// `(name, shape)` of `model`'s parameters.
pub fn named_shapes(model: &impl Parameters) -> Vec<(String, Vec<usize>)> {
    model
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.shape.clone()))
        .collect()
}

/// Copies of `model`'s parameters, `(name, array)`.
pub fn named_copies<'py>(
    py: Python<'py>,
    model: &impl Parameters,
) -> PyResult<Vec<(String, Out<'py>)>> {
    model
        .named_parameters()
        .into_iter()
        .map(|(n, p)| Ok((n, flat_to_numpy(py, p.value.clone(), &p.shape)?)))
        .collect()
}

/// Assigns `values` to `model`'s parameters in order, checking count, shapes and values;
/// returns whether any value changed.
pub fn assign_all(
    py: Python<'_>,
    model: &mut impl Parameters,
    values: &[In<'_>],
) -> PyResult<bool> {
    let mut params = model.named_parameters_mut();
    if values.len() != params.len() {
        return Err(PyValueError::new_err(format!(
            "set_parameters: expected {} arrays ({}), found {}",
            params.len(),
            params
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            values.len()
        )));
    }
    let views: Vec<_> = params
        .iter()
        .zip(values)
        .map(|((name, _), v)| view(name, v))
        .collect::<PyResult<_>>()?;
    compute(py, || {
        let mut changed = false;
        for ((name, p), v) in params.iter_mut().zip(&views) {
            let data = v.as_slice().expect("views of C-contiguous arrays");
            if p.shape == v.shape() && same_bits(&p.value, data) {
                continue;
            }
            recurrent::error::check_finite(name, data)?;
            p.assign(name, v.shape(), data)?;
            changed = true;
        }
        Ok(changed)
    })?
    .py()
}

/// Whether `a` and `b` hold the same bits: branch-free over blocks, so it runs at memory
/// speed (it is done on every call from torch, for every weight).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    const BLOCK: usize = 256;
    a.len() == b.len()
        && a.chunks(BLOCK).zip(b.chunks(BLOCK)).all(|(x, y)| {
            x.iter()
                .zip(y)
                .fold(0u32, |diff, (p, q)| diff | (p.to_bits() ^ q.to_bits()))
                == 0
        })
}
