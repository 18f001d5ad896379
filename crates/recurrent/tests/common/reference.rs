//! A slow, plain f64 implementation of the recurrent stack, written straight from PyTorch's
//! documented equations, one sequence and one step at a time. Tests compare the fast f32
//! implementation with it, and its finite differences with the fast backward pass.

#![allow(dead_code)]

use recurrent::{Mode, RnnConfig};
use std::collections::HashMap;

/// Parameters by PyTorch name, as f64.
pub type RefParams = HashMap<String, Vec<f64>>;

/// Time-major canonical tensors of one call (`(T, B, *)`, state `(D*L, B, *)`).
#[derive(Clone, Debug)]
pub struct RefInputs {
    pub steps: usize,
    pub batch: usize,
    pub input: Vec<f64>,
    pub h0: Option<Vec<f64>>,
    pub c0: Option<Vec<f64>>,
    pub lengths: Option<Vec<usize>>,
}

/// Outputs: `output (T, B, D*H_out)` with zeros past each length, `h_n`, `c_n`.
#[derive(Clone, Debug)]
pub struct RefOutputs {
    pub output: Vec<f64>,
    pub h_n: Vec<f64>,
    pub c_n: Vec<f64>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `W v` for a row-major `(rows, v.len())` matrix.
fn matvec(w: &[f64], v: &[f64]) -> Vec<f64> {
    w.chunks(v.len())
        .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

fn layer_norm(x: &[f64], weight: &[f64], bias: &[f64]) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let rstd = 1.0 / (var + 1e-5).sqrt();
    x.iter()
        .enumerate()
        .map(|(i, v)| (v - mean) * rstd * weight[i] + bias[i])
        .collect()
}

struct Step<'a> {
    cfg: &'a RnnConfig,
    p: &'a RefParams,
    sfx: String,
}

impl Step<'_> {
    fn get(&self, name: &str) -> Option<&Vec<f64>> {
        self.p.get(&format!("{name}{}", self.sfx))
    }

    /// `W_ih x + b_ih` and `W_hh h + b_hh` (biases zero when absent).
    fn affine(&self, x: &[f64], h: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut gx = matvec(self.get("weight_ih").unwrap(), x);
        let mut gh = matvec(self.get("weight_hh").unwrap(), h);
        if let (Some(bi), Some(bh)) = (self.get("bias_ih"), self.get("bias_hh")) {
            gx.iter_mut().zip(bi).for_each(|(a, b)| *a += b);
            gh.iter_mut().zip(bh).for_each(|(a, b)| *a += b);
        }
        (gx, gh)
    }

    /// One step: returns `(h', c')`.
    fn run(&self, x: &[f64], h: &[f64], c: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let hs = self.cfg.hidden_size;
        let (gx, gh) = self.affine(x, h);
        match self.cfg.mode {
            Mode::RnnTanh | Mode::RnnRelu => {
                let h2 = gx
                    .iter()
                    .zip(&gh)
                    .map(|(a, b)| {
                        let s = a + b;
                        if self.cfg.mode == Mode::RnnTanh {
                            s.tanh()
                        } else {
                            s.max(0.0)
                        }
                    })
                    .collect();
                (h2, vec![])
            }
            Mode::Gru => {
                let mut h2 = vec![0.0; hs];
                for k in 0..hs {
                    let r = sigmoid(gx[k] + gh[k]);
                    let z = sigmoid(gx[hs + k] + gh[hs + k]);
                    let n = (gx[2 * hs + k] + r * gh[2 * hs + k]).tanh();
                    h2[k] = (1.0 - z) * n + z * h[k];
                }
                (h2, vec![])
            }
            Mode::Lstm => {
                let mut s: Vec<f64> = gx.iter().zip(&gh).map(|(a, b)| a + b).collect();
                if self.cfg.layer_norm {
                    let w = self.get("ln_gates_weight").unwrap();
                    let b = self.get("ln_gates_bias").unwrap();
                    for q in 0..4 {
                        let r = q * hs..(q + 1) * hs;
                        let normed = layer_norm(&s[r.clone()], &w[r.clone()], &b[r.clone()]);
                        s[r].copy_from_slice(&normed);
                    }
                }
                let mut c2 = vec![0.0; hs];
                let mut o = vec![0.0; hs];
                for k in 0..hs {
                    let i = sigmoid(s[k]);
                    let f = sigmoid(s[hs + k]);
                    let g = s[2 * hs + k].tanh();
                    o[k] = sigmoid(s[3 * hs + k]);
                    c2[k] = f * c[k] + i * g;
                }
                let y = if self.cfg.layer_norm {
                    layer_norm(
                        &c2,
                        self.get("ln_cell_weight").unwrap(),
                        self.get("ln_cell_bias").unwrap(),
                    )
                } else {
                    c2.clone()
                };
                let r: Vec<f64> = (0..hs).map(|k| o[k] * y[k].tanh()).collect();
                let h2 = match self.get("weight_hr") {
                    Some(w) => matvec(w, &r),
                    None => r,
                };
                (h2, c2)
            }
        }
    }
}

/// Runs the stack, sequence by sequence, step by step.
pub fn forward(cfg: &RnnConfig, p: &RefParams, inp: &RefInputs) -> RefOutputs {
    let (t_max, b) = (inp.steps, inp.batch);
    let (d, l, h, h_out) = (
        cfg.num_directions(),
        cfg.num_layers,
        cfg.hidden_size,
        cfg.output_size(),
    );
    let width = d * h_out;
    let mut output = vec![0.0; t_max * b * width];
    let mut h_n = vec![0.0; d * l * b * h_out];
    let mut c_n = vec![
        0.0;
        if cfg.mode == Mode::Lstm {
            d * l * b * h
        } else {
            0
        }
    ];
    for s in 0..b {
        let len = inp.lengths.as_ref().map_or(t_max, |ls| ls[s]);
        // Layer input for this sequence: len vectors.
        let mut xs: Vec<Vec<f64>> = (0..len)
            .map(|t| {
                inp.input[(t * b + s) * cfg.input_size..(t * b + s + 1) * cfg.input_size].to_vec()
            })
            .collect();
        for layer in 0..l {
            let mut outs = vec![vec![0.0; width]; len];
            for dir in 0..d {
                let k = layer * d + dir;
                let sfx = if dir == 1 {
                    format!("_l{layer}_reverse")
                } else {
                    format!("_l{layer}")
                };
                let step = Step { cfg, p, sfx };
                let mut hv = match &inp.h0 {
                    Some(h0) => h0[(k * b + s) * h_out..(k * b + s + 1) * h_out].to_vec(),
                    None => vec![0.0; h_out],
                };
                let mut cv = match &inp.c0 {
                    Some(c0) => c0[(k * b + s) * h..(k * b + s + 1) * h].to_vec(),
                    None => vec![0.0; h],
                };
                let order: Vec<usize> = if dir == 0 {
                    (0..len).collect()
                } else {
                    (0..len).rev().collect()
                };
                for t in order {
                    let (h2, c2) = step.run(&xs[t], &hv, &cv);
                    hv = h2;
                    cv = c2;
                    outs[t][dir * h_out..(dir + 1) * h_out].copy_from_slice(&hv);
                }
                h_n[(k * b + s) * h_out..(k * b + s + 1) * h_out].copy_from_slice(&hv);
                if cfg.mode == Mode::Lstm {
                    c_n[(k * b + s) * h..(k * b + s + 1) * h].copy_from_slice(&cv);
                }
            }
            xs = outs;
        }
        for (t, o) in xs.iter().enumerate() {
            output[(t * b + s) * width..(t * b + s + 1) * width].copy_from_slice(o);
        }
    }
    RefOutputs { output, h_n, c_n }
}

/// `sum(output * go) + sum(h_n * gh) + sum(c_n * gc)`: the scalar whose gradient the
/// fast backward computes when given upstream gradients `go`, `gh`, `gc`.
pub fn weighted_sum(o: &RefOutputs, go: &[f64], gh: &[f64], gc: &[f64]) -> f64 {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    dot(&o.output, go) + dot(&o.h_n, gh) + dot(&o.c_n, gc)
}
