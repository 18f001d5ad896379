//! `nn.Conv1d`: a 1-D convolution (cross-correlation, as PyTorch) over `(B, C_in, L)`,
//! computed as one matrix product over every output position of the batch.

use super::{Module, Tape};
use crate::error::{Error, Result};
use crate::kernels::{gemm, Mat, MatMut};
use crate::param::{GradSlices, Param};
use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use rayon::prelude::*;

/// `padding` of [`Conv1d`]: zeros added at both ends of the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// The same number of zeros at each end (PyTorch's integer `padding`; 0 is `"valid"`).
    Zeros(usize),
    /// PyTorch's `"same"`: the output has the input's length (stride 1 only); of an odd
    /// total the extra zero goes at the end, as PyTorch.
    Same,
}

/// The arguments of `nn.Conv1d` with PyTorch's defaults (`stride=1`, `padding=0`,
/// `dilation=1`, `bias=True`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv1dConfig {
    /// Input channels `C_in`.
    pub in_channels: usize,
    /// Output channels `C_out`.
    pub out_channels: usize,
    /// Kernel width `K`.
    pub kernel_size: usize,
    /// Step between output positions.
    pub stride: usize,
    /// Zeros added at the ends.
    pub padding: Padding,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Whether there is a bias.
    pub bias: bool,
}

impl Conv1dConfig {
    /// `nn.Conv1d(in_channels, out_channels, kernel_size)` with the other arguments at their
    /// defaults.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        Conv1dConfig {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            padding: Padding::Zeros(0),
            dilation: 1,
            bias: true,
        }
    }

    /// With `padding`.
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// With `stride`.
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// With `dilation`.
    pub fn with_dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }

    /// With or without bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Checks the sizes as PyTorch does.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("Conv1d: {m}")));
        if self.in_channels == 0 || self.out_channels == 0 || self.kernel_size == 0 {
            return bad(format!(
                "in_channels, out_channels and kernel_size must be positive, found {}, {}, {}",
                self.in_channels, self.out_channels, self.kernel_size
            ));
        }
        if self.stride == 0 || self.dilation == 0 {
            return bad(format!(
                "stride and dilation must be positive, found {} and {}",
                self.stride, self.dilation
            ));
        }
        if self.padding == Padding::Same && self.stride != 1 {
            return bad(format!(
                "padding \"same\" needs stride 1, found {}",
                self.stride
            ));
        }
        let taps = (self.kernel_size - 1).checked_mul(self.dilation);
        let weights = self
            .in_channels
            .checked_mul(self.kernel_size)
            .and_then(|n| n.checked_mul(self.out_channels));
        if taps.is_none() || weights.is_none() {
            return bad("sizes overflow".into());
        }
        Ok(())
    }

    /// Zeros before and after the sequence.
    pub fn pads(&self) -> (usize, usize) {
        match self.padding {
            Padding::Zeros(p) => (p, p),
            Padding::Same => {
                let total = self.dilation * (self.kernel_size - 1);
                (total / 2, total - total / 2)
            }
        }
    }

    /// Output length for an input of `length` positions (`None` when the padded input is
    /// shorter than the kernel's span).
    pub fn output_length(&self, length: usize) -> Option<usize> {
        let (l, r) = self.pads();
        let span = self.dilation * (self.kernel_size - 1) + 1;
        let padded = length + l + r;
        (padded >= span).then(|| (padded - span) / self.stride + 1)
    }
}

/// `nn.Conv1d`: input `(B, C_in, L)` (or unbatched `(C_in, L)`), output `(B, C_out, L_out)`;
/// `weight (C_out, C_in, K)` and `bias (C_out)`, both initialised uniform in
/// `±1/sqrt(C_in * K)` as PyTorch.
#[derive(Debug, Clone)]
pub struct Conv1d {
    /// `(C_out, C_in, K)`.
    pub weight: Param,
    /// `(C_out)`.
    pub bias: Option<Param>,
    config: Conv1dConfig,
}

crate::parameters!(Conv1d { param "weight" => weight; optional "bias" => bias; });

/// What [`Conv1d`] keeps: the unfolded input `(B*L_out, C_in*K)` and the input shape.
struct ConvRecord {
    cols: Vec<f32>,
    shape: Vec<usize>,
}

impl Conv1d {
    /// A new layer with PyTorch's initialisation.
    pub fn new(config: Conv1dConfig, rng: &mut impl Rng) -> Result<Self> {
        config.validate()?;
        let fan_in = config.in_channels * config.kernel_size;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let shape = [config.out_channels, config.in_channels, config.kernel_size];
        Ok(Conv1d {
            weight: Param::uniform(&shape, bound, rng),
            bias: config
                .bias
                .then(|| Param::uniform(&[config.out_channels], bound, rng)),
            config,
        })
    }

    /// The arguments.
    pub fn config(&self) -> &Conv1dConfig {
        &self.config
    }

    /// `(B, C_in, L)` of a batched or unbatched input, and the output length.
    fn geometry(&self, shape: &[usize]) -> Result<(usize, usize, usize)> {
        let c = self.config.in_channels;
        let expected = || format!("(B, {c}, L) or unbatched ({c}, L)");
        let (b, l) = match *shape {
            [b, ch, l] if ch == c => (b, l),
            [ch, l] if ch == c => (1, l),
            _ => return Err(Error::shape("Conv1d input", expected(), shape)),
        };
        match self.config.output_length(l) {
            Some(out) if b > 0 => Ok((b, l, out)),
            _ => Err(Error::shape(
                "Conv1d input",
                format!(
                    "{} with L at least the kernel's span less the padding",
                    expected()
                ),
                shape,
            )),
        }
    }

    /// Unfolds `x` `(B, C, L)` into `(B*L_out, C*K)` rows: row `(b, t)` holds the taps of
    /// output position `t` (zeros where they fall in the padding).
    fn unfold(&self, x: &[f32], b: usize, l: usize, l_out: usize) -> Vec<f32> {
        let cfg = &self.config;
        let (c, k) = (cfg.in_channels, cfg.kernel_size);
        let (pad, _) = cfg.pads();
        let mut cols = vec![0.0; b * l_out * c * k];
        cols.par_chunks_mut(l_out * c * k)
            .zip(x.par_chunks(c * l))
            .for_each(|(cols, x)| {
                for (t, row) in cols.chunks_exact_mut(c * k).enumerate() {
                    let start = (t * cfg.stride) as isize - pad as isize;
                    for (ch, taps) in row.chunks_exact_mut(k).enumerate() {
                        let series = &x[ch * l..(ch + 1) * l];
                        for (j, v) in taps.iter_mut().enumerate() {
                            let at = start + (j * cfg.dilation) as isize;
                            if at >= 0 && (at as usize) < l {
                                *v = series[at as usize];
                            }
                        }
                    }
                }
            });
        cols
    }

    /// Adds unfolded gradient rows `(B*L_out, C*K)` back onto the input positions they
    /// came from: `(B, C, L)`.
    fn fold(&self, dcols: &[f32], b: usize, l: usize, l_out: usize) -> Vec<f32> {
        let cfg = &self.config;
        let (c, k) = (cfg.in_channels, cfg.kernel_size);
        let (pad, _) = cfg.pads();
        let mut dx = vec![0.0; b * c * l];
        dx.par_chunks_mut(c * l)
            .zip(dcols.par_chunks(l_out * c * k))
            .for_each(|(dx, dcols)| {
                for (t, row) in dcols.chunks_exact(c * k).enumerate() {
                    let start = (t * cfg.stride) as isize - pad as isize;
                    for (ch, taps) in row.chunks_exact(k).enumerate() {
                        let series = &mut dx[ch * l..(ch + 1) * l];
                        for (j, v) in taps.iter().enumerate() {
                            let at = start + (j * cfg.dilation) as isize;
                            if at >= 0 && (at as usize) < l {
                                series[at as usize] += v;
                            }
                        }
                    }
                }
            });
        dx
    }
}

impl Module for Conv1d {
    fn forward(&self, input: &ArrayD<f32>, tape: &mut Tape) -> Result<ArrayD<f32>> {
        let (b, l, l_out) = self.geometry(input.shape())?;
        let (o, ck) = (
            self.config.out_channels,
            self.weight.len() / self.config.out_channels,
        );
        let x = input.as_standard_layout();
        let cols = self.unfold(x.as_slice().expect("standard layout"), b, l, l_out);
        // `(B*L_out, C_out)` = cols x W^T, then each sample transposed to `(C_out, L_out)`.
        let mut rows = vec![0.0; b * l_out * o];
        gemm(
            b * l_out,
            o,
            ck,
            Mat::new(&cols, ck),
            Mat::t(&self.weight.value, ck),
            0.0,
            MatMut::new(&mut rows, o),
        );
        let mut out = vec![0.0; b * o * l_out];
        out.par_chunks_mut(o * l_out)
            .zip(rows.par_chunks(l_out * o))
            .for_each(|(out, rows)| {
                for (t, row) in rows.chunks_exact(o).enumerate() {
                    for (ch, v) in row.iter().enumerate() {
                        out[ch * l_out + t] = *v;
                    }
                }
                if let Some(bias) = &self.bias {
                    for (series, b) in out.chunks_exact_mut(l_out).zip(&bias.value) {
                        series.iter_mut().for_each(|v| *v += b);
                    }
                }
            });
        if tape.is_training() {
            let shape = input.shape().to_vec();
            tape.keep(ConvRecord { cols, shape });
        }
        let shape = if input.ndim() == 3 {
            vec![b, o, l_out]
        } else {
            vec![o, l_out]
        };
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("shape"))
    }

    fn backward(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        let ConvRecord { cols, shape } = tape.record("Conv1d")?;
        let (b, l, l_out) = self.geometry(shape)?;
        let (o, ck) = (
            self.config.out_channels,
            self.weight.len() / self.config.out_channels,
        );
        if grad_output.len() != b * o * l_out {
            return Err(Error::shape(
                "Conv1d grad_output",
                format!("[{b}, {o}, {l_out}]"),
                grad_output.shape(),
            ));
        }
        let weight_grad = grads.next(self.weight.len());
        let bias_grad = self.bias.as_ref().map(|p| grads.next(p.len()));
        let g = grad_output.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        // `(B*L_out, C_out)` rows of the output gradient.
        let mut rows = vec![0.0; b * l_out * o];
        rows.par_chunks_mut(l_out * o)
            .zip(g.par_chunks(o * l_out))
            .for_each(|(rows, g)| {
                for (ch, series) in g.chunks_exact(l_out).enumerate() {
                    for (t, v) in series.iter().enumerate() {
                        rows[t * o + ch] = *v;
                    }
                }
            });
        if let Some(bias_grad) = bias_grad {
            for series in g.chunks_exact(l_out).enumerate() {
                bias_grad[series.0 % o] += series.1.iter().sum::<f32>();
            }
        }
        gemm(
            o,
            ck,
            b * l_out,
            Mat::t(&rows, o),
            Mat::new(cols, ck),
            1.0,
            MatMut::new(weight_grad, ck),
        );
        let mut dcols = vec![0.0; b * l_out * ck];
        gemm(
            b * l_out,
            ck,
            o,
            Mat::new(&rows, o),
            Mat::new(&self.weight.value, ck),
            0.0,
            MatMut::new(&mut dcols, ck),
        );
        let dx = self.fold(&dcols, b, l, l_out);
        Ok(ArrayD::from_shape_vec(IxDyn(shape), dx).expect("shape"))
    }
}
