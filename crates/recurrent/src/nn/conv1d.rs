//! `nn.Conv1d`: a 1-D convolution (cross-correlation, as PyTorch) over `(B, C_in, L)`,
//! computed as one matrix product over every output position of the batch.

use super::{swap_last_two, Module, Tape};
use crate::error::{Error, Result};
use crate::kernels::rows::{add_bias_rows, add_row_sums};
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

/// What [`Conv1d`] keeps: the unfolded input `(B*L_out, K*C_in)`, the weight in tap order
/// `(C_out, K*C_in)` it was multiplied by, the input's channels-last sizes `(B, L, C_in)`,
/// and the caller's shape when it was PyTorch's layout.
#[derive(Default)]
struct ConvRecord {
    cols: Vec<f32>,
    by_tap: Vec<f32>,
    sizes: (usize, usize, usize),
    pytorch_layout: Option<Vec<usize>>,
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

    /// `(B, L)` of a channels-last `(B, L, C_in)` input, and the output length.
    fn geometry(&self, shape: &[usize], what: &str) -> Result<(usize, usize, usize)> {
        let c = self.config.in_channels;
        let expected = || format!("(B, L, {c})");
        let [b, l, ch] = *shape else {
            return Err(Error::shape(what, expected(), shape));
        };
        if ch != c {
            return Err(Error::shape(what, expected(), shape));
        }
        match self.config.output_length(l) {
            Some(out) if b > 0 => Ok((b, l, out)),
            _ => Err(Error::shape(
                what,
                format!(
                    "{} with L at least the kernel's span less the padding",
                    expected()
                ),
                shape,
            )),
        }
    }

    /// The weight as `(C_out, K, C_in)`, the order of an unfolded channels-last row.
    fn weight_by_tap(&self) -> Vec<f32> {
        let (o, c, k) = (
            self.config.out_channels,
            self.config.in_channels,
            self.config.kernel_size,
        );
        let mut w = vec![0.0; o * k * c];
        for oo in 0..o {
            for cc in 0..c {
                for j in 0..k {
                    w[(oo * k + j) * c + cc] = self.weight.value[(oo * c + cc) * k + j];
                }
            }
        }
        w
    }

    /// The input position under tap `j` of output position `t`, `None` in the padding
    /// (`pad` zeros before an input of `l` positions).
    fn tap_position(&self, pad: usize, t: usize, j: usize, l: usize) -> Option<usize> {
        let at = (t * self.config.stride + j * self.config.dilation).checked_sub(pad)?;
        (at < l).then_some(at)
    }

    /// Unfolds channels-last `x` `(B, L, C)` into `cols` `(B*L_out, K*C)`: row `(b, t)` holds
    /// the input rows under the kernel's taps at output position `t` (zeros in the
    /// padding), each `C` wide.
    fn unfold(&self, x: &[f32], (b, l, l_out): (usize, usize, usize), cols: &mut Vec<f32>) {
        let (c, k) = (self.config.in_channels, self.config.kernel_size);
        let (pad, _) = self.config.pads();
        cols.resize(b * l_out * k * c, 0.0);
        cols.par_chunks_mut(l_out * k * c)
            .zip(x.par_chunks(l * c))
            .for_each(|(cols, x)| {
                for (t, row) in cols.chunks_exact_mut(k * c).enumerate() {
                    for (j, tap) in row.chunks_exact_mut(c).enumerate() {
                        match self.tap_position(pad, t, j, l) {
                            Some(at) => tap.copy_from_slice(&x[at * c..(at + 1) * c]),
                            None => tap.fill(0.0),
                        }
                    }
                }
            });
    }

    /// Adds unfolded gradient rows `(B*L_out, K*C)` back onto the input rows they came
    /// from: channels-last `(B, L, C)`.
    fn fold(&self, dcols: &[f32], (b, l, l_out): (usize, usize, usize)) -> Vec<f32> {
        let (c, k) = (self.config.in_channels, self.config.kernel_size);
        let (pad, _) = self.config.pads();
        let mut dx = vec![0.0; b * l * c];
        dx.par_chunks_mut(l * c)
            .zip(dcols.par_chunks(l_out * k * c))
            .for_each(|(dx, dcols)| {
                for (t, row) in dcols.chunks_exact(k * c).enumerate() {
                    for (j, tap) in row.chunks_exact(c).enumerate() {
                        if let Some(at) = self.tap_position(pad, t, j, l) {
                            add_row_sums(&mut dx[at * c..(at + 1) * c], tap);
                        }
                    }
                }
            });
        dx
    }

    /// The convolution on channels-last input `(B, L, C_in)`, giving `(B, L_out, C_out)`:
    /// one matrix product over every output position of the batch, no transposes. A
    /// training tape keeps what [`Conv1d::backward_channels_last`] needs.
    pub fn forward_channels_last(
        &self,
        input: &ArrayD<f32>,
        tape: &mut Tape,
    ) -> Result<ArrayD<f32>> {
        self.forward_cl(input, tape, None)
    }

    fn forward_cl(
        &self,
        input: &ArrayD<f32>,
        tape: &mut Tape,
        pytorch_layout: Option<Vec<usize>>,
    ) -> Result<ArrayD<f32>> {
        let what = "Conv1d input";
        let (b, l, l_out) = self.geometry(input.shape(), what)?;
        let o = self.config.out_channels;
        let kc = self.weight.len() / o;
        let x = input.as_standard_layout();
        let mut record = if tape.is_training() {
            tape.take_previous::<ConvRecord>()
        } else {
            ConvRecord::default()
        };
        let mut cols = std::mem::take(&mut record.cols);
        self.unfold(
            x.as_slice().expect("standard layout"),
            (b, l, l_out),
            &mut cols,
        );
        let by_tap = self.weight_by_tap();
        let mut out = vec![0.0; b * l_out * o];
        gemm(
            b * l_out,
            o,
            kc,
            Mat::new(&cols, kc),
            Mat::t(&by_tap, kc),
            0.0,
            MatMut::new(&mut out, o),
        );
        if let Some(bias) = &self.bias {
            add_bias_rows(&mut out, &bias.value);
        }
        if tape.is_training() {
            tape.keep(ConvRecord {
                cols,
                by_tap,
                sizes: (b, l, self.config.in_channels),
                pytorch_layout,
            });
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&[b, l_out, o]), out).expect("shape"))
    }

    /// The backward pass of [`Conv1d::forward_channels_last`]: the gradient `(B, L_out,
    /// C_out)` of its output gives that of its input `(B, L, C_in)`; parameter gradients are
    /// added to `grads`.
    pub fn backward_channels_last(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        let record: &ConvRecord = tape.record("Conv1d")?;
        let (b, l, c) = record.sizes;
        let (_, _, l_out) = self.geometry(&[b, l, c], "Conv1d input")?;
        let o = self.config.out_channels;
        let (k, kc) = (self.config.kernel_size, self.weight.len() / o);
        if grad_output.shape() != [b, l_out, o] {
            return Err(Error::shape(
                "Conv1d grad_output",
                format!("[{b}, {l_out}, {o}]"),
                grad_output.shape(),
            ));
        }
        let weight_grad = grads.next(self.weight.len());
        let bias_grad = self.bias.as_ref().map(|p| grads.next(p.len()));
        let g = grad_output.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        if let Some(bias_grad) = bias_grad {
            add_row_sums(bias_grad, g);
        }
        // The weight gradient in tap order, then added in PyTorch's `(C_out, C_in, K)`.
        let mut grad_by_tap = vec![0.0; o * kc];
        gemm(
            o,
            kc,
            b * l_out,
            Mat::t(g, o),
            Mat::new(&record.cols, kc),
            0.0,
            MatMut::new(&mut grad_by_tap, kc),
        );
        for oo in 0..o {
            for cc in 0..c {
                for j in 0..k {
                    weight_grad[(oo * c + cc) * k + j] += grad_by_tap[(oo * k + j) * c + cc];
                }
            }
        }
        let mut dcols = vec![0.0; b * l_out * kc];
        gemm(
            b * l_out,
            kc,
            o,
            Mat::new(g, o),
            Mat::new(&record.by_tap, kc),
            0.0,
            MatMut::new(&mut dcols, kc),
        );
        let dx = self.fold(&dcols, (b, l, l_out));
        Ok(ArrayD::from_shape_vec(IxDyn(&[b, l, c]), dx).expect("shape"))
    }
}

impl Module for Conv1d {
    /// `(B, C_in, L)` (or `(C_in, L)`) to `(B, C_out, L_out)` (or `(C_out, L_out)`), through
    /// [`Conv1d::forward_channels_last`].
    fn forward(&self, input: &ArrayD<f32>, tape: &mut Tape) -> Result<ArrayD<f32>> {
        let c = self.config.in_channels;
        let batched = match input.shape() {
            [_, ch, _] if *ch == c => input.clone(),
            [ch, l] if *ch == c => input
                .clone()
                .into_shape_with_order(IxDyn(&[1, *ch, *l]))
                .expect("shape"),
            shape => {
                return Err(Error::shape(
                    "Conv1d input",
                    format!("(B, {c}, L) or unbatched ({c}, L)"),
                    shape,
                ))
            }
        };
        let out = self.forward_cl(&swap_last_two(&batched), tape, Some(input.shape().to_vec()))?;
        let out = swap_last_two(&out);
        Ok(if input.ndim() == 2 {
            out.index_axis_move(ndarray::Axis(0), 0)
        } else {
            out
        })
    }

    fn backward(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        let record: &ConvRecord = tape.record("Conv1d")?;
        let shape = record.pytorch_layout.clone().ok_or_else(|| {
            Error::Invalid(
                "Conv1d.backward: this pass was channels-last (use backward_channels_last)".into(),
            )
        })?;
        let g = if grad_output.ndim() == 2 {
            grad_output.clone().insert_axis(ndarray::Axis(0))
        } else {
            grad_output.clone()
        };
        let dx = self.backward_channels_last(tape, &swap_last_two(&g), grads)?;
        let dx = swap_last_two(&dx);
        Ok(dx.into_shape_with_order(IxDyn(&shape)).expect("shape"))
    }
}
