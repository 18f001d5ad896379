//! `recurrent forward` and `recurrent backward`: tensors in, tensors out.

use crate::paths::check_files;
use recurrent::io::{load_rnn, TensorFile, TensorWriter};
use recurrent::{Error, InitialState, OutputGrads, Parameters, Result};
use std::path::Path;

/// The tensors of a forward input file.
struct Inputs {
    file: TensorFile,
    input: ndarray::ArrayD<f32>,
    h0: Option<ndarray::ArrayD<f32>>,
    c0: Option<ndarray::ArrayD<f32>>,
    lengths: Option<Vec<usize>>,
}

impl Inputs {
    fn read(path: &Path) -> Result<Self> {
        let file = TensorFile::read(path)?;
        const KNOWN: [&str; 4] = ["input", "h0", "c0", "lengths"];
        if let Some(name) = file.names().into_iter().find(|n| !KNOWN.contains(n)) {
            return Err(Error::File {
                path: path.display().to_string(),
                message: format!("unexpected tensor `{name}` (expected input, h0, c0, lengths)"),
            });
        }
        Ok(Inputs {
            input: file.require_f32("input")?,
            h0: file.f32("h0")?,
            c0: file.f32("c0")?,
            lengths: file.lengths("lengths")?,
            file,
        })
    }

    fn state(&self) -> Result<Option<InitialState<'_>>> {
        match (&self.h0, &self.c0) {
            (None, None) => Ok(None),
            (Some(h0), c0) => Ok(Some(InitialState {
                h0: h0.view(),
                c0: c0.as_ref().map(|c| c.view()),
            })),
            (None, Some(_)) => Err(Error::Missing {
                name: "h0".into(),
                place: format!("{} (c0 is given, so h0 is needed too)", self.file.path()),
            }),
        }
    }
}

/// `recurrent forward --model M --input IN --output OUT`.
pub fn forward(model: &Path, input: &Path, output: &Path) -> Result<()> {
    check_files(
        &[("--model", model), ("--input", input)],
        &[("--output", output)],
    )?;
    let rnn = load_rnn(model)?;
    let inputs = Inputs::read(input)?;
    let out = rnn.forward(
        inputs.input.view(),
        inputs.state()?,
        inputs.lengths.as_deref(),
    )?;
    let mut w = TensorWriter::new();
    w.add_array("output", &out.output)
        .add_array("h_n", &out.h_n);
    if let Some(c_n) = &out.c_n {
        w.add_array("c_n", c_n);
    }
    w.write(output)
}

/// `recurrent backward --model M --input IN --grad G --output OUT`.
pub fn backward(model: &Path, input: &Path, grad: &Path, output: &Path) -> Result<()> {
    check_files(
        &[("--model", model), ("--input", input), ("--grad", grad)],
        &[("--output", output)],
    )?;
    let mut rnn = load_rnn(model)?;
    let inputs = Inputs::read(input)?;
    let grads = TensorFile::read(grad)?;
    const KNOWN: [&str; 3] = ["grad_output", "grad_h_n", "grad_c_n"];
    if let Some(name) = grads.names().into_iter().find(|n| !KNOWN.contains(n)) {
        return Err(Error::File {
            path: grad.display().to_string(),
            message: format!(
                "unexpected tensor `{name}` (expected grad_output, grad_h_n, grad_c_n)"
            ),
        });
    }
    let (g_out, g_h, g_c) = (
        grads.f32("grad_output")?,
        grads.f32("grad_h_n")?,
        grads.f32("grad_c_n")?,
    );
    let mut no_rng = rand::rngs::mock::StepRng::new(0, 0);
    let (_, tape) = rnn.forward_train(
        inputs.input.view(),
        inputs.state()?,
        inputs.lengths.as_deref(),
        &mut no_rng,
    )?;
    rnn.zero_grad();
    let g = rnn.backward(
        &tape,
        OutputGrads {
            grad_output: g_out.as_ref().map(|a| a.view()),
            grad_h_n: g_h.as_ref().map(|a| a.view()),
            grad_c_n: g_c.as_ref().map(|a| a.view()),
            skip_input_grad: false,
        },
    )?;
    let mut w = TensorWriter::new();
    w.add_array("grad_input", &g.grad_input);
    if inputs.h0.is_some() {
        w.add_array("grad_h0", &g.grad_h0);
        if let Some(gc) = &g.grad_c0 {
            w.add_array("grad_c0", gc);
        }
    }
    for (name, p) in rnn.named_parameters() {
        w.add(&format!("grad.{name}"), &p.shape, &p.grad);
    }
    w.write(output)
}
