//! `Cell`: one step of `torch.nn.RNNCell`, `LSTMCell` or `GRUCell` with NumPy arrays.

use crate::arrays::{to_numpy, view, view_opt, In, Out};
use crate::errors::IntoPy;
use crate::stack::{
    assign_all, backward_with_own_buffers, named_copies, named_shapes, param_grads_to_numpy,
};
use crate::threads::compute;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recurrent::cell::{CellOutput, CellTape};
use recurrent::{Cell, CellKind, Mode};

/// A recurrent cell with parameters `weight_ih (G*H, I)`, `weight_hh (G*H, H)`,
/// `bias_ih (G*H)`, `bias_hh (G*H)`. Input `(B, I)` or unbatched `(I)`; state `(B, H)`.
#[pyclass(name = "Cell", module = "recurrent._recurrent")]
pub struct NativeCell {
    cell: Cell,
}

/// What a cell's training step keeps for its backward pass.
#[pyclass(name = "CellTape", module = "recurrent._recurrent")]
pub struct NativeCellTape {
    tape: CellTape,
}

/// `(h', c')`; `c'` is `None` except for LSTM.
type State<'py> = (Out<'py>, Option<Out<'py>>);

#[pymethods]
impl NativeCell {
    /// `kind`: `LSTM`, `GRU`, `RNN_TANH` or `RNN_RELU`; initialisation as PyTorch's,
    /// drawn from `seed` (from the operating system when `None`).
    #[new]
    #[pyo3(signature = (kind, input_size, hidden_size, bias=true, seed=None))]
    fn new(
        kind: &str,
        input_size: usize,
        hidden_size: usize,
        bias: bool,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        let mode: Mode = kind
            .parse()
            .map_err(|e| PyValueError::new_err(format!("{e}")))?;
        let kind = CellKind::from(mode);
        let mut rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let cell = Cell::new(kind, input_size, hidden_size, bias, &mut rng).py()?;
        Ok(NativeCell { cell })
    }

    /// `(name, shape)` of every parameter, in `named_parameters()` order.
    fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        named_shapes(&self.cell)
    }

    /// Copies of the parameters, `(name, array)` in `named_parameters()` order.
    fn parameters<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, Out<'py>)>> {
        named_copies(py, &self.cell)
    }

    /// Replaces every parameter, in `named_parameters()` order (values are copied).
    fn set_parameters(&mut self, py: Python<'_>, values: Vec<In<'_>>) -> PyResult<()> {
        assign_all(py, &mut self.cell, &values).map(|_| ())
    }

    /// One step: `(h', c')` from the input and the state (zeros when `None`).
    #[pyo3(signature = (input, hx=None, cx=None))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        input: In<'_>,
        hx: Option<In<'_>>,
        cx: Option<In<'_>>,
    ) -> PyResult<State<'py>> {
        let (x, hx, cx) = (
            view("input", &input)?,
            view_opt("hx", &hx)?,
            view_opt("cx", &cx)?,
        );
        let out = compute(py, || self.cell.forward(x, hx, cx))?.py()?;
        state(py, out)
    }

    /// [`NativeCell::forward`] that also returns the tape `backward` needs.
    #[pyo3(signature = (input, hx=None, cx=None))]
    fn forward_train<'py>(
        &self,
        py: Python<'py>,
        input: In<'_>,
        hx: Option<In<'_>>,
        cx: Option<In<'_>>,
    ) -> PyResult<(Out<'py>, Option<Out<'py>>, NativeCellTape)> {
        let (x, hx, cx) = (
            view("input", &input)?,
            view_opt("hx", &hx)?,
            view_opt("cx", &cx)?,
        );
        let (out, tape) = compute(py, || self.cell.forward_train(x, hx, cx))?.py()?;
        let (h, c) = state(py, out)?;
        Ok((h, c, NativeCellTape { tape }))
    }

    /// Backward through one step: `(grad_input, grad_hx, grad_cx, grads)`, `grads` every
    /// parameter's gradient in `named_parameters()` order.
    #[pyo3(signature = (tape, grad_h=None, grad_c=None))]
    fn backward<'py>(
        &self,
        py: Python<'py>,
        tape: &NativeCellTape,
        grad_h: Option<In<'_>>,
        grad_c: Option<In<'_>>,
    ) -> PyResult<(Out<'py>, Out<'py>, Option<Out<'py>>, Vec<Out<'py>>)> {
        let (gh, gc) = (view_opt("grad_h", &grad_h)?, view_opt("grad_c", &grad_c)?);
        let cell = &self.cell;
        let (g, param_grads) = compute(py, || {
            backward_with_own_buffers(cell, |slices| {
                cell.backward_into(&tape.tape, gh, gc, slices)
            })
        })?
        .py()?;
        Ok((
            to_numpy(py, g.grad_input)?,
            to_numpy(py, g.grad_hx)?,
            g.grad_cx.map(|c| to_numpy(py, c)).transpose()?,
            param_grads_to_numpy(py, cell, param_grads)?,
        ))
    }
}

fn state(py: Python<'_>, out: CellOutput) -> PyResult<State<'_>> {
    Ok((
        to_numpy(py, out.h)?,
        out.c.map(|c| to_numpy(py, c)).transpose()?,
    ))
}
