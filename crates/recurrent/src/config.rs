//! [`RnnConfig`]: the mode and `torch.nn.RNNBase`'s constructor arguments, with validation.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The recurrent cell type, spelled as PyTorch's `RNNBase.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Elman RNN with `tanh`: `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`.
    #[serde(rename = "RNN_TANH")]
    RnnTanh,
    /// Elman RNN with `relu`.
    #[serde(rename = "RNN_RELU")]
    RnnRelu,
    /// Long short-term memory, gates in the order i, f, g, o.
    #[serde(rename = "LSTM")]
    Lstm,
    /// Gated recurrent unit, gates in the order r, z, n.
    #[serde(rename = "GRU")]
    Gru,
}

impl Mode {
    /// Number of gate blocks stacked in `weight_ih` / `weight_hh` (4 LSTM, 3 GRU, 1 RNN).
    pub fn gates(self) -> usize {
        match self {
            Mode::Lstm => 4,
            Mode::Gru => 3,
            Mode::RnnTanh | Mode::RnnRelu => 1,
        }
    }

    /// PyTorch's mode string.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::RnnTanh => "RNN_TANH",
            Mode::RnnRelu => "RNN_RELU",
            Mode::Lstm => "LSTM",
            Mode::Gru => "GRU",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "RNN_TANH" => Ok(Mode::RnnTanh),
            "RNN_RELU" => Ok(Mode::RnnRelu),
            "LSTM" => Ok(Mode::Lstm),
            "GRU" => Ok(Mode::Gru),
            other => Err(Error::Config(format!(
                "unknown mode {other:?}; expected one of \"RNN_TANH\", \"RNN_RELU\", \"LSTM\", \"GRU\""
            ))),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_layers() -> usize {
    1
}
fn default_true() -> bool {
    true
}

/// Configuration of a recurrent stack: PyTorch's constructor arguments plus the mode.
///
/// Serialises to the JSON stored in a model file's `__metadata__["config"]`, e.g.
/// `{"mode":"LSTM","input_size":10,"hidden_size":20,"num_layers":2,"bias":true,
/// "batch_first":false,"dropout":0.0,"bidirectional":true,"proj_size":0}`.
/// Defaults are PyTorch's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RnnConfig {
    /// Cell type.
    pub mode: Mode,
    /// Features of each input step (`I`).
    pub input_size: usize,
    /// Features of the hidden state (`H`).
    pub hidden_size: usize,
    /// Number of stacked layers.
    #[serde(default = "default_layers")]
    pub num_layers: usize,
    /// Whether `bias_ih_l*` and `bias_hh_l*` exist.
    #[serde(default = "default_true")]
    pub bias: bool,
    /// Input and output are `(B, T, *)` instead of `(T, B, *)`. Never affects `h0`/`h_n`.
    #[serde(default)]
    pub batch_first: bool,
    /// Dropout probability on each layer's output except the last, in training mode only.
    #[serde(default)]
    pub dropout: f32,
    /// Run a second, time-reversed direction and concatenate.
    #[serde(default)]
    pub bidirectional: bool,
    /// LSTM only: size of the projected hidden state (`weight_hr_l*`), 0 for none.
    #[serde(default)]
    pub proj_size: usize,
    /// LSTM only: layer normalisation of each gate's pre-activation and of the cell state
    /// (not a PyTorch option; see the crate docs for the equations and parameter names).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub layer_norm: bool,
    /// Accepted for compatibility with `torch.nn.RNN`'s argument; must agree with `mode`.
    #[serde(default, skip_serializing)]
    pub nonlinearity: Option<String>,
}

impl RnnConfig {
    /// A configuration with PyTorch's defaults for everything but the three required values.
    pub fn new(mode: Mode, input_size: usize, hidden_size: usize) -> Self {
        RnnConfig {
            mode,
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
            proj_size: 0,
            layer_norm: false,
            nonlinearity: None,
        }
    }

    /// Sets `num_layers`.
    pub fn with_num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }
    /// Sets `bias`.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// Sets `batch_first`.
    pub fn with_batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }
    /// Sets `dropout`.
    pub fn with_dropout(mut self, p: f32) -> Self {
        self.dropout = p;
        self
    }
    /// Sets `bidirectional`.
    pub fn with_bidirectional(mut self, bidirectional: bool) -> Self {
        self.bidirectional = bidirectional;
        self
    }
    /// Sets `proj_size` (LSTM only).
    pub fn with_proj_size(mut self, proj_size: usize) -> Self {
        self.proj_size = proj_size;
        self
    }
    /// Enables the layer-norm LSTM variant.
    pub fn with_layer_norm(mut self, layer_norm: bool) -> Self {
        self.layer_norm = layer_norm;
        self
    }

    /// Parses and validates the JSON of a model file's `config` metadata.
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: RnnConfig =
            serde_json::from_str(json).map_err(|e| Error::Config(format!("config JSON: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The JSON stored in model files.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serialises")
    }

    /// Checks the same rules as PyTorch's `RNNBase.__init__`, with a clear message.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.input_size == 0 {
            return bad("input_size must be positive, found 0".into());
        }
        if self.hidden_size == 0 {
            return bad("hidden_size must be positive, found 0".into());
        }
        if self.num_layers == 0 {
            return bad("num_layers must be positive, found 0".into());
        }
        if !(0.0..=1.0).contains(&self.dropout) || self.dropout.is_nan() {
            return bad(format!(
                "dropout must be a probability in [0, 1], found {}",
                self.dropout
            ));
        }
        if self.proj_size > 0 && self.mode != Mode::Lstm {
            return bad(format!(
                "proj_size is only supported by LSTM, found proj_size={} with mode {}",
                self.proj_size, self.mode
            ));
        }
        if self.proj_size >= self.hidden_size && self.proj_size > 0 {
            return bad(format!(
                "proj_size has to be smaller than hidden_size, found proj_size={} and hidden_size={}",
                self.proj_size, self.hidden_size
            ));
        }
        if self.layer_norm && self.mode != Mode::Lstm {
            return bad(format!(
                "layer_norm is only supported by LSTM, found mode {}",
                self.mode
            ));
        }
        self.parameter_count()?;
        if let Some(nl) = &self.nonlinearity {
            let expected = match self.mode {
                Mode::RnnTanh => "tanh",
                Mode::RnnRelu => "relu",
                _ => {
                    return bad(format!(
                        "nonlinearity is only for RNN modes, found mode {}",
                        self.mode
                    ))
                }
            };
            if nl != expected {
                return bad(format!(
                    "nonlinearity {nl:?} contradicts mode {} (expected {expected:?})",
                    self.mode
                ));
            }
        }
        Ok(())
    }

    /// Number of parameter values of the stack (weights, biases, projections and
    /// layer-norm scales over all layers and directions), computed with checked arithmetic:
    /// sizes whose product does not fit in `usize` are a [`Error::Config`].
    pub fn parameter_count(&self) -> Result<usize> {
        let overflow = || {
            Error::Config(format!(
                "the sizes (input_size={}, hidden_size={}, num_layers={}, proj_size={}) give more parameters than can be counted",
                self.input_size, self.hidden_size, self.num_layers, self.proj_size
            ))
        };
        let h = self.hidden_size;
        let gh = self.mode.gates().checked_mul(h).ok_or_else(overflow)?;
        let h_out = self.output_size();
        let wide = self
            .num_directions()
            .checked_mul(h_out)
            .ok_or_else(overflow)?;
        // One direction of a layer with `inputs` input features.
        let direction = |inputs: usize| -> Option<usize> {
            let mut n = gh.checked_mul(inputs.checked_add(h_out)?)?;
            if self.bias {
                n = n.checked_add(gh.checked_mul(2)?)?;
            }
            if self.proj_size > 0 {
                n = n.checked_add(self.proj_size.checked_mul(h)?)?;
            }
            if self.layer_norm {
                n = n.checked_add(gh.checked_add(h)?.checked_mul(2)?)?;
            }
            n.checked_mul(self.num_directions())
        };
        let first = direction(self.input_size).ok_or_else(overflow)?;
        let rest = match self.num_layers.saturating_sub(1) {
            0 => 0,
            more => direction(wide)
                .and_then(|n| n.checked_mul(more))
                .ok_or_else(overflow)?,
        };
        first.checked_add(rest).ok_or_else(overflow)
    }

    /// Every parameter's name and shape, in `state_dict()` order, without allocating the
    /// values: per layer and direction `weight_ih (G*H, I_layer)`, `weight_hh (G*H, H_out)`,
    /// `bias_ih`, `bias_hh (G*H)`, `weight_hr (P, H)`, then the layer-norm ones. Call it on
    /// a validated configuration (see [`RnnConfig::parameter_count`]).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, gh, h_out) = (
            self.hidden_size,
            self.mode.gates() * self.hidden_size,
            self.output_size(),
        );
        let mut v = Vec::new();
        for layer in 0..self.num_layers {
            for direction in 0..self.num_directions() {
                let sfx = parameter_suffix(layer, direction);
                v.push((
                    format!("weight_ih{sfx}"),
                    vec![gh, self.layer_input_size(layer)],
                ));
                v.push((format!("weight_hh{sfx}"), vec![gh, h_out]));
                if self.bias {
                    v.push((format!("bias_ih{sfx}"), vec![gh]));
                    v.push((format!("bias_hh{sfx}"), vec![gh]));
                }
                if self.proj_size > 0 {
                    v.push((format!("weight_hr{sfx}"), vec![self.proj_size, h]));
                }
                if self.layer_norm {
                    v.push((format!("ln_gates_weight{sfx}"), vec![gh]));
                    v.push((format!("ln_gates_bias{sfx}"), vec![gh]));
                    v.push((format!("ln_cell_weight{sfx}"), vec![h]));
                    v.push((format!("ln_cell_bias{sfx}"), vec![h]));
                }
            }
        }
        v
    }

    /// 2 for bidirectional stacks, else 1 (`D` in PyTorch's docs).
    pub fn num_directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Size of the hidden state seen outside the cell: `proj_size` if set, else `hidden_size`.
    pub fn output_size(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// Input features of layer `layer`: `input_size` for layer 0, else `D * H_out`.
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.num_directions() * self.output_size()
        }
    }
}

/// PyTorch's parameter-name suffix: `_l{layer}` plus `_reverse` for direction 1.
pub fn parameter_suffix(layer: usize, direction: usize) -> String {
    if direction == 1 {
        format!("_l{layer}_reverse")
    } else {
        format!("_l{layer}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::Parameters;
    use rand::SeedableRng;

    /// The shapes and count computed from the configuration alone are those of the
    /// parameters a stack of that configuration allocates.
    #[test]
    fn parameter_shapes_and_count_match_a_built_stack() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let configs = [
            RnnConfig::new(Mode::Lstm, 3, 5)
                .with_num_layers(3)
                .with_bidirectional(true),
            RnnConfig::new(Mode::Lstm, 3, 5)
                .with_proj_size(2)
                .with_num_layers(2),
            RnnConfig::new(Mode::Lstm, 4, 6)
                .with_layer_norm(true)
                .with_bidirectional(true),
            RnnConfig::new(Mode::Gru, 2, 7)
                .with_bias(false)
                .with_num_layers(2),
            RnnConfig::new(Mode::RnnRelu, 1, 1),
        ];
        for cfg in configs {
            let rnn = crate::rnn::Rnn::new(cfg.clone(), &mut rng).unwrap();
            let built: Vec<(String, Vec<usize>)> = rnn
                .named_parameters()
                .into_iter()
                .map(|(n, p)| (n, p.shape.clone()))
                .collect();
            assert_eq!(cfg.parameter_shapes(), built, "{cfg:?}");
            let values: usize = built.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
            assert_eq!(cfg.parameter_count().unwrap(), values, "{cfg:?}");
        }
    }

    /// Sizes whose parameter count overflows are a configuration error, not a wrap.
    #[test]
    fn overflowing_sizes_are_refused() {
        let cfg = RnnConfig::new(Mode::Lstm, 1, 1 << 62);
        assert!(matches!(cfg.validate(), Err(Error::Config(_))));
        let cfg = RnnConfig::new(Mode::Gru, usize::MAX, 2).with_num_layers(2);
        assert!(matches!(cfg.validate(), Err(Error::Config(_))));
    }
}
