//! `nn.Dropout`: zeroes elements with probability `p` in training, scales the rest by `1/(1-p)`.

use super::{Module, Tape};
use crate::error::{Error, Result};
use crate::kernels::dropout::{apply_mask, dropout_in_place};
use crate::param::GradSlices;
use ndarray::ArrayD;

/// `nn.Dropout(p)`: masks are drawn from the training tape's stream. Identity on an
/// inference tape.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
}

/// What [`Dropout`] keeps: the mask it multiplied the input by, already scaled.
struct DropoutRecord(Vec<f32>);

impl Dropout {
    /// Dropout with probability `p` (in `[0, 1]`).
    pub fn new(p: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::Config(format!(
                "dropout probability has to be between 0 and 1, found {p}"
            )));
        }
        Ok(Dropout { p })
    }
}

impl Module for Dropout {
    fn forward(&self, input: &ArrayD<f32>, tape: &mut Tape) -> Result<ArrayD<f32>> {
        let Some(rng) = tape.rng().filter(|_| self.p > 0.0) else {
            return Ok(input.clone());
        };
        let mut out = input.as_standard_layout().into_owned();
        let mut mask = Vec::new();
        dropout_in_place(
            out.as_slice_mut().expect("standard layout"),
            &mut mask,
            self.p,
            rng,
        );
        tape.keep(DropoutRecord(mask));
        Ok(out)
    }

    fn backward(
        &self,
        tape: &Tape,
        grad_output: &ArrayD<f32>,
        _grads: &mut GradSlices<'_>,
    ) -> Result<ArrayD<f32>> {
        if self.p == 0.0 {
            return Ok(grad_output.clone());
        }
        let DropoutRecord(mask) = tape.record("Dropout")?;
        if mask.len() != grad_output.len() {
            return Err(Error::shape(
                "Dropout grad_output",
                format!("{} elements", mask.len()),
                grad_output.shape(),
            ));
        }
        let mut g = grad_output.as_standard_layout().into_owned();
        apply_mask(g.as_slice_mut().expect("standard layout"), mask);
        Ok(g)
    }
}

crate::parameters!(Dropout {});
