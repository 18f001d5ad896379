//! Single-step cells: `nn.RNNCell`, `nn.LSTMCell`, `nn.GRUCell`.
//!
//! A cell is one direction of one layer run for one step, so it shares the layer kernels.

use crate::config::Mode;
use crate::error::{check_finite, Error, Result};
use crate::kernels::Precision;
use crate::layer::direction::{self, DirScratch, DirTape};
use crate::layer::params::DirectionGrads;
use crate::layer::{DirectionParams, DirectionShape, SeqLayout};
use crate::param::{accumulate_into_params, GradSlices};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rand::Rng;

/// Which cell, as PyTorch's class (and `nonlinearity` for `RNNCell`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    /// `nn.RNNCell(nonlinearity='tanh')`.
    RnnTanh,
    /// `nn.RNNCell(nonlinearity='relu')`.
    RnnRelu,
    /// `nn.LSTMCell`.
    Lstm,
    /// `nn.GRUCell`.
    Gru,
}

/// The cell of a stack's mode: `RNN_TANH` → `RNNCell(nonlinearity='tanh')`, and so on.
impl From<Mode> for CellKind {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::RnnTanh => CellKind::RnnTanh,
            Mode::RnnRelu => CellKind::RnnRelu,
            Mode::Lstm => CellKind::Lstm,
            Mode::Gru => CellKind::Gru,
        }
    }
}

impl CellKind {
    fn mode(self) -> Mode {
        match self {
            CellKind::RnnTanh => Mode::RnnTanh,
            CellKind::RnnRelu => Mode::RnnRelu,
            CellKind::Lstm => Mode::Lstm,
            CellKind::Gru => Mode::Gru,
        }
    }
}

/// A recurrent cell with parameters `weight_ih (G*H, I)`, `weight_hh (G*H, H)`,
/// `bias_ih (G*H)`, `bias_hh (G*H)`.
///
/// Input `(B, I)` or unbatched `(I)`; state `(B, H)` or `(H)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    kind: CellKind,
    params: DirectionParams,
}

/// New state from [`Cell::forward`].
#[derive(Debug, Clone, PartialEq)]
pub struct CellOutput {
    /// `h'`, same shape as `hx`.
    pub h: ArrayD<f32>,
    /// LSTM only: `c'`.
    pub c: Option<ArrayD<f32>>,
}

/// What [`Cell::forward_train`] keeps for [`Cell::backward`].
#[derive(Debug, Clone)]
pub struct CellTape {
    x: Vec<f32>,
    batch: usize,
    batched: bool,
    tape: DirTape,
}

/// Gradients returned by [`Cell::backward`].
#[derive(Debug, Clone, PartialEq)]
pub struct CellGrads {
    /// Same shape as the input.
    pub grad_input: ArrayD<f32>,
    /// Same shape as `hx`.
    pub grad_hx: ArrayD<f32>,
    /// LSTM only: same shape as `cx`.
    pub grad_cx: Option<ArrayD<f32>>,
}

impl Cell {
    /// A cell with PyTorch's default initialisation (uniform in `±1/sqrt(H)`).
    pub fn new(
        kind: CellKind,
        input_size: usize,
        hidden_size: usize,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if input_size == 0 || hidden_size == 0 {
            return Err(Error::Config(format!(
                "input_size and hidden_size must be positive, found {input_size} and {hidden_size}"
            )));
        }
        let params = DirectionParams::init(
            DirectionShape {
                mode: kind.mode(),
                input_size,
                hidden_size,
                proj_size: 0,
                bias,
                layer_norm: false,
            },
            rng,
        );
        Ok(Cell { kind, params })
    }

    /// The cell type.
    pub fn kind(&self) -> CellKind {
        self.kind
    }

    /// One step without keeping a tape.
    pub fn forward(
        &self,
        input: ArrayViewD<f32>,
        hx: Option<ArrayViewD<f32>>,
        cx: Option<ArrayViewD<f32>>,
    ) -> Result<CellOutput> {
        self.forward_train(input, hx, cx).map(|(o, _)| o)
    }

    /// One step, keeping what [`Cell::backward`] needs. Missing `hx`/`cx` mean zeros
    /// (for LSTM both or neither must be given, as PyTorch's `(h, c)` tuple).
    pub fn forward_train(
        &self,
        input: ArrayViewD<f32>,
        hx: Option<ArrayViewD<f32>>,
        cx: Option<ArrayViewD<f32>>,
    ) -> Result<(CellOutput, CellTape)> {
        let i = self.params.input_size();
        let h = self.params.hidden_size;
        let (batched, batch) = match *input.shape() {
            [b, ii] if ii == i && b > 0 => (true, b),
            [ii] if ii == i => (false, 1),
            _ => {
                return Err(Error::shape(
                    "input",
                    format!("(B, {i}) or unbatched ({i})"),
                    input.shape(),
                ))
            }
        };
        let lstm = self.kind == CellKind::Lstm;
        if lstm && hx.is_some() != cx.is_some() {
            return Err(Error::Invalid(
                "LSTMCell needs both hx and cx, or neither".into(),
            ));
        }
        if !lstm && cx.is_some() {
            return Err(Error::Invalid(format!(
                "cx is only used by LSTMCell, found it for {:?}",
                self.kind
            )));
        }
        let state_shape: Vec<usize> = if batched { vec![batch, h] } else { vec![h] };
        let read_state = |name: &str, t: Option<ArrayViewD<f32>>| -> Result<Vec<f32>> {
            match t {
                None => Ok(vec![0.0; batch * h]),
                Some(t) if t.shape() == state_shape.as_slice() => {
                    let v: Vec<f32> = t.iter().copied().collect();
                    check_finite(name, &v)?;
                    Ok(v)
                }
                Some(t) => Err(Error::shape(name, format!("{state_shape:?}"), t.shape())),
            }
        };
        let mut hs = read_state("hx", hx)?;
        let mut cs = if lstm {
            read_state("cx", cx)?
        } else {
            Vec::new()
        };
        let x: Vec<f32> = input.iter().copied().collect();
        check_finite("input", &x)?;
        let mut tape = DirTape::default();
        direction::forward(
            &self.params,
            &x,
            &SeqLayout::full(1, batch),
            false,
            &mut hs,
            &mut cs,
            &mut tape,
            (None, Precision::F32),
        );
        let to_array =
            |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&state_shape), v).expect("shape matches");
        let out = CellOutput {
            h: to_array(hs),
            c: lstm.then(|| to_array(cs)),
        };
        Ok((
            out,
            CellTape {
                x,
                batch,
                batched,
                tape,
            },
        ))
    }

    /// Backward of one step; parameter gradients accumulate into the cell's parameters.
    pub fn backward(
        &mut self,
        tape: &CellTape,
        grad_h: Option<ArrayViewD<f32>>,
        grad_c: Option<ArrayViewD<f32>>,
    ) -> Result<CellGrads> {
        accumulate_into_params(self, |cell, mut slices| {
            cell.backward_into(tape, grad_h, grad_c, &mut slices)
        })
    }

    /// [`Cell::backward`] without touching the cell: parameter gradients are added to
    /// `param_grads` (one slice per parameter, in [`crate::Parameters`] order).
    pub fn backward_into(
        &self,
        tape: &CellTape,
        grad_h: Option<ArrayViewD<f32>>,
        grad_c: Option<ArrayViewD<f32>>,
        param_grads: &mut GradSlices<'_>,
    ) -> Result<CellGrads> {
        let h = self.params.hidden_size;
        let i = self.params.input_size();
        let b = tape.batch;
        let state_shape: Vec<usize> = if tape.batched { vec![b, h] } else { vec![h] };
        let read = |name: &str, t: Option<ArrayViewD<f32>>| -> Result<Vec<f32>> {
            match t {
                None => Ok(vec![0.0; b * h]),
                Some(t) if t.shape() == state_shape.as_slice() => Ok(t.iter().copied().collect()),
                Some(t) => Err(Error::shape(name, format!("{state_shape:?}"), t.shape())),
            }
        };
        let lstm = self.kind == CellKind::Lstm;
        let d_out = read("grad_h", grad_h)?;
        let mut dc = if lstm {
            read("grad_c", grad_c)?
        } else {
            Vec::new()
        };
        let mut dh = vec![0.0; b * h];
        let mut dx = vec![0.0; b * i];
        direction::backward(
            &self.params,
            DirectionGrads::take(&self.params, param_grads),
            &tape.x,
            &SeqLayout::full(1, b),
            false,
            &tape.tape,
            &d_out,
            &mut dh,
            &mut dc,
            Some(&mut dx),
            Precision::F32,
            &mut DirScratch::default(),
        );
        let arr = |shape: Vec<usize>, v: Vec<f32>| {
            ArrayD::from_shape_vec(IxDyn(&shape), v).expect("shape matches")
        };
        let in_shape = if tape.batched { vec![b, i] } else { vec![i] };
        Ok(CellGrads {
            grad_input: arr(in_shape, dx),
            grad_hx: arr(state_shape.clone(), dh),
            grad_cx: lstm.then(|| arr(state_shape.clone(), dc)),
        })
    }
}

crate::parameters!(Cell { inline params; });
