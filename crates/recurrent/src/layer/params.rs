//! [`DirectionParams`]: the weights of one direction of one layer, under PyTorch's names.

use crate::config::Mode;
use crate::param::Param;
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

    /// Parameters with their PyTorch names: `weight_ih{suffix}`, `weight_hh{suffix}`,
    /// `bias_ih{suffix}`, `bias_hh{suffix}`, `weight_hr{suffix}`, then the layer-norm ones.
    pub fn named(&self, suffix: &str) -> Vec<(String, &Param)> {
        let mut v = vec![
            (format!("weight_ih{suffix}"), &self.weight_ih),
            (format!("weight_hh{suffix}"), &self.weight_hh),
        ];
        if let (Some(bi), Some(bh)) = (&self.bias_ih, &self.bias_hh) {
            v.push((format!("bias_ih{suffix}"), bi));
            v.push((format!("bias_hh{suffix}"), bh));
        }
        if let Some(w) = &self.weight_hr {
            v.push((format!("weight_hr{suffix}"), w));
        }
        if let Some(ln) = &self.layer_norm {
            v.push((format!("ln_gates_weight{suffix}"), &ln.gates_weight));
            v.push((format!("ln_gates_bias{suffix}"), &ln.gates_bias));
            v.push((format!("ln_cell_weight{suffix}"), &ln.cell_weight));
            v.push((format!("ln_cell_bias{suffix}"), &ln.cell_bias));
        }
        v
    }

    /// Mutable version of [`DirectionParams::named`], same order.
    pub fn named_mut(&mut self, suffix: &str) -> Vec<(String, &mut Param)> {
        let mut v = vec![
            (format!("weight_ih{suffix}"), &mut self.weight_ih),
            (format!("weight_hh{suffix}"), &mut self.weight_hh),
        ];
        if let (Some(bi), Some(bh)) = (&mut self.bias_ih, &mut self.bias_hh) {
            v.push((format!("bias_ih{suffix}"), bi));
            v.push((format!("bias_hh{suffix}"), bh));
        }
        if let Some(w) = &mut self.weight_hr {
            v.push((format!("weight_hr{suffix}"), w));
        }
        if let Some(ln) = &mut self.layer_norm {
            v.push((format!("ln_gates_weight{suffix}"), &mut ln.gates_weight));
            v.push((format!("ln_gates_bias{suffix}"), &mut ln.gates_bias));
            v.push((format!("ln_cell_weight{suffix}"), &mut ln.cell_weight));
            v.push((format!("ln_cell_bias{suffix}"), &mut ln.cell_bias));
        }
        v
    }
}
