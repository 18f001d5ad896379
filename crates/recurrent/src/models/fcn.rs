//! [`FcnBranch`]: the fully convolutional branch of LSTM-FCN (Karim et al. 2018, after Wang
//! et al.'s FCN): three `Conv1d` + `BatchNorm1d` + ReLU blocks (128, 256, 128 filters,
//! kernels 8, 5, 3, padding `"same"`) and global average pooling, over sequences of any
//! lengths (statistics, outputs and pooling cover each sequence's own steps only). The
//! branch runs channels-last, `(B, T, C)`, so no layer transposes its data.

use crate::distributed::Collective;
use crate::error::Result;
use crate::nn::{self, BatchNorm1d, Conv1d, Conv1dConfig, GlobalAvgPool1d, Module, Padding};
use crate::param::GradSlices;
use ndarray::ArrayD;
use rand::Rng;

/// Filters and kernel widths of the three blocks.
pub const BLOCKS: [(usize, usize); 3] = [(128, 8), (256, 5), (128, 3)];

/// One convolution block: convolution, masked batch normalisation, ReLU.
#[derive(Debug, Clone)]
pub struct ConvBlock {
    /// `(filters, C_in, K)` convolution, padding `"same"`.
    pub conv: Conv1d,
    /// Normalisation of its output.
    pub bn: BatchNorm1d,
}

crate::parameters!(ConvBlock { part "conv" => conv; part "bn" => bn; });

/// The convolutional branch: `(B, T, D)` to `(B, 128)` pooled features.
#[derive(Debug, Clone)]
pub struct FcnBranch {
    /// The three blocks, in order.
    pub block1: ConvBlock,
    /// Second block.
    pub block2: ConvBlock,
    /// Third block.
    pub block3: ConvBlock,
}

crate::parameters!(FcnBranch {
    part "block1" => block1;
    part "block2" => block2;
    part "block3" => block3;
});

/// What a training pass of [`FcnBranch`] keeps: each block's convolution and
/// normalisation tapes and its ReLU output, and the pooling tape.
#[derive(Debug)]
pub struct FcnTape {
    conv: [nn::Tape; 3],
    bn: [nn::Tape; 3],
    relu: [ArrayD<f32>; 3],
    pool: nn::Tape,
}

impl Default for FcnTape {
    fn default() -> Self {
        let t = || nn::Tape::training(0);
        FcnTape {
            conv: [t(), t(), t()],
            bn: [t(), t(), t()],
            relu: Default::default(),
            pool: t(),
        }
    }
}

impl FcnBranch {
    /// A branch over `channels` input features, with PyTorch's initialisation.
    pub fn new(channels: usize, rng: &mut impl Rng) -> Result<Self> {
        Self::with_blocks(channels, BLOCKS, rng)
    }

    /// A branch with other `(filters, kernel)` sizes than [`BLOCKS`].
    pub fn with_blocks(
        channels: usize,
        blocks: [(usize, usize); 3],
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let mut block = |c_in: usize, (filters, k): (usize, usize)| -> Result<ConvBlock> {
            let cfg = Conv1dConfig::new(c_in, filters, k).with_padding(Padding::Same);
            Ok(ConvBlock {
                conv: Conv1d::new(cfg, rng)?,
                bn: BatchNorm1d::new(filters),
            })
        };
        Ok(FcnBranch {
            block1: block(channels, blocks[0])?,
            block2: block(blocks[0].0, blocks[1])?,
            block3: block(blocks[1].0, blocks[2])?,
        })
    }

    /// Pooled features `(B, 128)` of `x` `(B, T, D)` whose sample `s` has `lengths[s]`
    /// valid steps (zeros after). With `tape` (training) every block keeps what
    /// [`FcnBranch::backward`] needs and normalises by batch statistics; without, the
    /// running statistics are used. With a `group` of ranks the batch statistics are
    /// those of the group's batches together (synchronised batch norm; every rank of the
    /// group calls this, a rank without rows [`FcnBranch::take_part`]).
    pub fn forward(
        &self,
        x: &ArrayD<f32>,
        lengths: &[usize],
        mut tape: Option<&mut FcnTape>,
        group: Option<&dyn Collective>,
    ) -> Result<ArrayD<f32>> {
        let mut h: Option<ArrayD<f32>> = None;
        for (k, block) in self.blocks().into_iter().enumerate() {
            let mut inference = nn::Tape::inference();
            let (conv_tape, bn_tape) = match tape.as_deref_mut() {
                Some(t) => (&mut t.conv[k], &mut t.bn[k]),
                None => (&mut inference, &mut nn::Tape::inference()),
            };
            let c = block
                .conv
                .forward_channels_last(h.as_ref().unwrap_or(x), conv_tape)?;
            let mut a = match group {
                Some(g) => block
                    .bn
                    .forward_channels_last_in(&c, Some(lengths), bn_tape, g)?,
                None => block.bn.forward_channels_last(&c, Some(lengths), bn_tape)?,
            };
            a.mapv_inplace(|v| v.max(0.0));
            if let Some(t) = tape.as_deref_mut() {
                t.relu[k] = a.clone();
            }
            h = Some(a);
        }
        let h = h.expect("three blocks");
        let mut inference = nn::Tape::inference();
        let pool_tape = match tape {
            Some(t) => &mut t.pool,
            None => &mut inference,
        };
        GlobalAvgPool1d.forward_channels_last(&h, Some(lengths), pool_tape)
    }

    /// For the gradient `(B, 128)` of the pooled features of the pass that filled `tape`,
    /// adds the parameter gradients to `grads` (this branch's slices, in parameter order).
    /// The input gradient is not needed (the branch reads the data) and not returned.
    /// `group` as in the [`FcnBranch::forward`] that filled `tape`.
    pub fn backward(
        &self,
        tape: &FcnTape,
        grad_pooled: &ArrayD<f32>,
        grads: &mut GradSlices<'_>,
        group: Option<&dyn Collective>,
    ) -> Result<()> {
        let blocks = self.blocks();
        let mut per_block: Vec<(GradSlices, GradSlices)> = blocks
            .iter()
            .map(|b| {
                let conv = grads.split(nn::param_count(&b.conv));
                (conv, grads.split(nn::param_count(&b.bn)))
            })
            .collect();
        let mut g = GlobalAvgPool1d.backward_channels_last(&tape.pool, grad_pooled)?;
        for k in (0..3).rev() {
            // Through the ReLU: gradient only where its output is positive.
            g.zip_mut_with(&tape.relu[k], |d, &a| {
                if a <= 0.0 {
                    *d = 0.0
                }
            });
            let (conv_grads, bn_grads) = &mut per_block[k];
            let bn = &blocks[k].bn;
            g = match group {
                Some(group) => bn.backward_channels_last_in(&tape.bn[k], &g, bn_grads, group)?,
                None => bn.backward_channels_last(&tape.bn[k], &g, bn_grads)?,
            };
            g = blocks[k]
                .conv
                .backward_channels_last(&tape.conv[k], &g, conv_grads)?;
        }
        Ok(())
    }

    /// For a rank of `group` with no rows of the batch: takes part in the forward and
    /// backward passes' sums over the group (contributing nothing), and keeps the group's
    /// batch statistics in `tape` for [`FcnBranch::update_buffers`].
    pub fn take_part(&self, group: &dyn Collective, tape: &mut FcnTape) -> Result<()> {
        let none = |c: usize| ArrayD::zeros(vec![0, 1, c]);
        let blocks = self.blocks();
        for (k, block) in blocks.iter().enumerate() {
            let c = block.bn.weight.len();
            block
                .bn
                .forward_channels_last_in(&none(c), Some(&[]), &mut tape.bn[k], group)?;
        }
        for (k, block) in blocks.iter().enumerate().rev() {
            let c = block.bn.weight.len();
            let (mut weight, mut bias) = (vec![0.0; c], vec![0.0; c]);
            let mut grads = GradSlices::from_parts([&mut weight[..], &mut bias[..]]);
            block
                .bn
                .backward_channels_last_in(&tape.bn[k], &none(c), &mut grads, group)?;
        }
        Ok(())
    }

    /// Applies the running-statistics updates of the training pass that filled `tape`.
    pub fn update_buffers(&mut self, tape: &FcnTape) {
        for (k, block) in [&mut self.block1, &mut self.block2, &mut self.block3]
            .into_iter()
            .enumerate()
        {
            block.bn.update_buffers(&tape.bn[k]);
        }
    }

    fn blocks(&self) -> [&ConvBlock; 3] {
        [&self.block1, &self.block2, &self.block3]
    }

    /// Values a training pass keeps per sequence position of a branch over `channels`
    /// inputs: each block's unfolded input (`K * C_in`), normalised output and ReLU output.
    pub fn tape_floats_per_position(channels: usize) -> usize {
        let mut c_in = channels;
        let mut total = 0;
        for (filters, k) in BLOCKS {
            total += k * c_in + 2 * filters;
            c_in = filters;
        }
        total
    }

    /// Parameter values of a branch over `channels` inputs (`None` on overflow).
    pub fn parameter_count(channels: usize) -> Option<usize> {
        let mut c_in = channels;
        let mut total = 0usize;
        for (filters, k) in BLOCKS {
            let conv = filters
                .checked_mul(c_in)?
                .checked_mul(k)?
                .checked_add(filters)?;
            total = total.checked_add(conv)?.checked_add(2 * filters)?;
            c_in = filters;
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::{Grads, Parameters, Visitor};
    use ndarray::IxDyn;
    use rand::SeedableRng;

    fn loss(f: &FcnBranch, x: &ArrayD<f32>, lengths: &[usize], r: &ArrayD<f32>) -> f64 {
        let y = f
            .forward(x, lengths, Some(&mut FcnTape::default()), None)
            .unwrap();
        y.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    /// The branch's parameter gradients match central differences, with every sequence
    /// full length and with padded ones, on a narrow branch (5, 6, 4 filters; kernels 4, 3,
    /// 2, so padding "same" is uneven in two blocks). The loss is piecewise smooth (ReLU):
    /// differences over steps of 1e-2 to 1e-3 cross kinks and miss by up to 10%, while from
    /// 3e-4 down they agree with the gradient to 0.2%, so the step is 3e-4. Tolerance:
    /// 1e-3 absolute + 2e-2 relative.
    #[test]
    fn branch_gradients_match_finite_differences() {
        for lengths in [[11usize, 11, 11], [9, 6, 11]] {
            let mut rng = rand::rngs::StdRng::seed_from_u64(2);
            let mut f = FcnBranch::with_blocks(2, [(5, 4), (6, 3), (4, 2)], &mut rng).unwrap();
            let x = ArrayD::from_shape_fn(IxDyn(&[3, 11, 2]), |i| {
                if i[1] < lengths[i[0]] {
                    rng.gen_range(-1.0f32..1.0)
                } else {
                    0.0
                }
            });
            let mut tape = FcnTape::default();
            let y = f.forward(&x, &lengths, Some(&mut tape), None).unwrap();
            let r = y.mapv(|v| (v * 7.0).sin());
            let mut grads = Grads::zeros_for(&f);
            f.backward(&tape, &r, &mut grads.slices(), None).unwrap();
            let names: Vec<String> = f.named_parameters().into_iter().map(|(n, _)| n).collect();
            for (k, name) in names.iter().enumerate() {
                for i in [0usize, 7, 31]
                    .into_iter()
                    .filter(|&i| i < grads.part(k).len())
                {
                    const H: f32 = 3e-4;
                    let at = |f: &mut FcnBranch, d: f32| {
                        f.visit_params_mut(&mut Visitor::new(&mut |n, p| {
                            if n == name {
                                p.value[i] += d
                            }
                        }))
                    };
                    at(&mut f, H);
                    let up = loss(&f, &x, &lengths, &r);
                    at(&mut f, -2.0 * H);
                    let down = loss(&f, &x, &lengths, &r);
                    at(&mut f, H);
                    let numeric = ((up - down) / (2.0 * H as f64)) as f32;
                    let g = grads.part(k)[i];
                    assert!(
                        (numeric - g).abs() <= 1e-3 + 2e-2 * numeric.abs().max(g.abs()),
                        "{lengths:?} {name}[{i}]: gradient {g} vs finite difference {numeric}"
                    );
                }
            }
        }
    }
}
