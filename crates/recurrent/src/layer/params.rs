//! [`DirectionParams`]: the weights of one direction of one layer, under PyTorch's names.

use crate::config::Mode;
use crate::param::{GradSlices, Param};
use rand::Rng;

/// Layer-norm parameters of the layer-norm LSTM variant (one direction of one layer).
///
/// Names (with the layer suffix `_l{k}` and `_reverse` as for the other weights):
/// `ln_gates_weight` / `ln_gates_bias` `(4*H)`: the four gate LayerNorms (i, f, g, o)
/// concatenated; `ln_cell_weight` / `ln_cell_bias` `(H)`: the LayerNorm of the cell state.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormParams {
    /// `(G*H)`: scale of each gate's LayerNorm, concatenated in gate order.
    pub gates_weight: Param,
    /// `(G*H)`: shift of each gate's LayerNorm.
    pub gates_bias: Param,
    /// `(H)`: scale of the cell-state LayerNorm.
    pub cell_weight: Param,
    /// `(H)`: shift of the cell-state LayerNorm.
    pub cell_bias: Param,
}

/// Weights of one direction of one recurrent layer (or of a cell).
#[derive(Debug, Clone, PartialEq)]
pub struct DirectionParams {
    /// Cell type.
    pub mode: Mode,
    /// Hidden size `H`.
    pub hidden_size: usize,
    /// `(G*H, I_layer)`.
    pub weight_ih: Param,
    /// `(G*H, H_out)`.
    pub weight_hh: Param,
    /// `(G*H)`, when `bias`.
    pub bias_ih: Option<Param>,
    /// `(G*H)`, when `bias`.
    pub bias_hh: Option<Param>,
    /// `(proj_size, H)`, LSTM with projections only.
    pub weight_hr: Option<Param>,
    /// Layer-norm LSTM only.
    pub layer_norm: Option<LayerNormParams>,
}

/// Shape description used to build a [`DirectionParams`].
#[derive(Debug, Clone, Copy)]
pub struct DirectionShape {
    /// Cell type.
    pub mode: Mode,
    /// Input features of this layer.
    pub input_size: usize,
    /// Hidden size `H`.
    pub hidden_size: usize,
    /// Projection size, 0 for none.
    pub proj_size: usize,
    /// Whether biases exist.
    pub bias: bool,
    /// Whether the layer-norm variant is used.
    pub layer_norm: bool,
}

impl DirectionParams {
    /// PyTorch's default initialisation: every weight and bias uniform in `±1/sqrt(H)`;
    /// LayerNorm scales 1 and shifts 0 (as `nn.LayerNorm`).
    pub fn init(s: DirectionShape, rng: &mut impl Rng) -> Self {
        let h = s.hidden_size;
        let gh = s.mode.gates() * h;
        let h_out = if s.proj_size > 0 { s.proj_size } else { h };
        let bound = 1.0 / (h as f32).sqrt();
        let weight_ih = Param::uniform(&[gh, s.input_size], bound, rng);
        let weight_hh = Param::uniform(&[gh, h_out], bound, rng);
        let (bias_ih, bias_hh) = if s.bias {
            (
                Some(Param::uniform(&[gh], bound, rng)),
                Some(Param::uniform(&[gh], bound, rng)),
            )
        } else {
            (None, None)
        };
        let weight_hr = (s.proj_size > 0).then(|| Param::uniform(&[s.proj_size, h], bound, rng));
        let layer_norm = s.layer_norm.then(|| LayerNormParams {
            gates_weight: Param::full(&[gh], 1.0),
            gates_bias: Param::zeros(&[gh]),
            cell_weight: Param::full(&[h], 1.0),
            cell_bias: Param::zeros(&[h]),
        });
        DirectionParams {
            mode: s.mode,
            hidden_size: h,
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            weight_hr,
            layer_norm,
        }
    }

    /// Input features.
    pub fn input_size(&self) -> usize {
        self.weight_ih.shape[1]
    }

    /// Size of `h`: the projection size, or `H`.
    pub fn output_size(&self) -> usize {
        self.weight_hh.shape[1]
    }
}

crate::parameters!(LayerNormParams {
    param "ln_gates_weight" => gates_weight;
    param "ln_gates_bias" => gates_bias;
    param "ln_cell_weight" => cell_weight;
    param "ln_cell_bias" => cell_bias;
});

// PyTorch's names without the layer suffix, which the stack sets with
// [`crate::param::Visitor::set_suffix`]: `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`,
// `weight_hr`, then the layer-norm ones.
crate::parameters!(DirectionParams {
    param "weight_ih" => weight_ih;
    param "weight_hh" => weight_hh;
    optional "bias_ih" => bias_ih;
    optional "bias_hh" => bias_hh;
    optional "weight_hr" => weight_hr;
    inline layer_norm;
});

/// Where the backward pass of one direction adds its parameter gradients: one slice per
/// parameter of a [`DirectionParams`], same shapes, in its visit order.
pub(crate) struct DirectionGrads<'a> {
    pub weight_ih: &'a mut [f32],
    pub weight_hh: &'a mut [f32],
    pub bias_ih: Option<&'a mut [f32]>,
    pub bias_hh: Option<&'a mut [f32]>,
    pub weight_hr: Option<&'a mut [f32]>,
    pub layer_norm: Option<LayerNormGrads<'a>>,
}

/// The layer-norm part of [`DirectionGrads`].
pub(crate) struct LayerNormGrads<'a> {
    pub gates_weight: &'a mut [f32],
    pub gates_bias: &'a mut [f32],
    pub cell_weight: &'a mut [f32],
    pub cell_bias: &'a mut [f32],
}

impl<'a> DirectionGrads<'a> {
    /// The next slices of `grads`, for `p`.
    pub fn take(p: &DirectionParams, grads: &mut GradSlices<'a>) -> Self {
        let mut next = |q: &Param| grads.next(q.len());
        DirectionGrads {
            weight_ih: next(&p.weight_ih),
            weight_hh: next(&p.weight_hh),
            bias_ih: p.bias_ih.as_ref().map(&mut next),
            bias_hh: p.bias_hh.as_ref().map(&mut next),
            weight_hr: p.weight_hr.as_ref().map(&mut next),
            layer_norm: p.layer_norm.as_ref().map(|ln| LayerNormGrads {
                gates_weight: next(&ln.gates_weight),
                gates_bias: next(&ln.gates_bias),
                cell_weight: next(&ln.cell_weight),
                cell_bias: next(&ln.cell_bias),
            }),
        }
    }
}
