//! The task head: a linear layer or a one-hidden-layer MLP over frozen embeddings, its forward
//! pass and the hand-written backward pass of softmax cross-entropy. It computes in f64 (the
//! head is tiny; f64 keeps the optimum close to a reference solver's); the package stores f32.
//! Training is in [`crate::train`].

use crate::activation::Activation;
use crate::rng::Rng;
use autoglm_runtime::{argmax, softmax};
use serde::{Deserialize, Serialize};

/// The head's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum HeadSpec {
    Linear,
    Mlp {
        hidden: usize,
        activation: Activation,
    },
}

impl std::str::FromStr for HeadSpec {
    type Err = String;
    /// `linear`, `mlp:H` (tanh) or `mlp:H:gelu`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "linear" {
            return Ok(HeadSpec::Linear);
        }
        let usage = || format!("`{s}`: expected linear, mlp:H or mlp:H:gelu (e.g. mlp:64)");
        let rest = s.strip_prefix("mlp:").ok_or_else(usage)?;
        let (h, act) = rest.split_once(':').unwrap_or((rest, "tanh"));
        let hidden: usize = h.parse().map_err(|_| usage())?;
        let activation = match act {
            "tanh" => Activation::Tanh,
            "gelu" => Activation::Gelu,
            _ => return Err(usage()),
        };
        if hidden == 0 {
            return Err(format!("`{s}`: the hidden layer needs at least 1 unit"));
        }
        Ok(HeadSpec::Mlp { hidden, activation })
    }
}

/// One dense layer: `y = x · weight + bias`, `weight` row-major `[inputs][outputs]` (the layout
/// of the ONNX `MatMul` initializer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
}

impl Dense {
    pub fn zeros(inputs: usize, outputs: usize) -> Self {
        Dense {
            inputs,
            outputs,
            weight: vec![0.0; inputs * outputs],
            bias: vec![0.0; outputs],
        }
    }

    /// Glorot-uniform weights: keeps tanh units out of saturation at the start.
    fn glorot(inputs: usize, outputs: usize, rng: &mut Rng) -> Self {
        let limit = (6.0 / (inputs + outputs) as f64).sqrt();
        let mut d = Self::zeros(inputs, outputs);
        for w in &mut d.weight {
            *w = (rng.next_f64() * 2.0 - 1.0) * limit;
        }
        d
    }

    fn forward(&self, x: &[f64], y: &mut [f64]) {
        y.copy_from_slice(&self.bias);
        for (i, &xi) in x.iter().enumerate() {
            if xi == 0.0 {
                continue;
            }
            let row = &self.weight[i * self.outputs..(i + 1) * self.outputs];
            for (yj, wj) in y.iter_mut().zip(row) {
                *yj += xi * wj;
            }
        }
    }

    fn params(&self) -> usize {
        self.weight.len() + self.bias.len()
    }
}

/// A trained (or training) head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub spec: HeadSpec,
    /// One layer (linear) or two (hidden, output).
    pub layers: Vec<Dense>,
}

/// Intermediate values of one forward pass, kept for the backward pass.
struct Trace {
    pre: Vec<f64>,
    act: Vec<f64>,
    logits: Vec<f64>,
}

impl Head {
    pub fn new(spec: HeadSpec, dim: usize, classes: usize, rng: &mut Rng) -> Self {
        let layers = match spec {
            // Zero start: the problem is convex, and zeros make the run independent of the seed
            // but for the batch order.
            HeadSpec::Linear => vec![Dense::zeros(dim, classes)],
            HeadSpec::Mlp { hidden, .. } => vec![
                Dense::glorot(dim, hidden, rng),
                Dense::glorot(hidden, classes, rng),
            ],
        };
        Head { spec, layers }
    }

    pub fn input_dim(&self) -> usize {
        self.layers[0].inputs
    }

    pub fn classes(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs
    }

    fn activation(&self) -> Option<Activation> {
        match self.spec {
            HeadSpec::Linear => None,
            HeadSpec::Mlp { activation, .. } => Some(activation),
        }
    }

    fn trace(&self, x: &[f64]) -> Trace {
        match self.activation() {
            None => {
                let mut logits = vec![0.0; self.classes()];
                self.layers[0].forward(x, &mut logits);
                Trace {
                    pre: Vec::new(),
                    act: Vec::new(),
                    logits,
                }
            }
            Some(f) => {
                let mut pre = vec![0.0; self.layers[0].outputs];
                self.layers[0].forward(x, &mut pre);
                let act: Vec<f64> = pre.iter().map(|&v| f.apply(v)).collect();
                let mut logits = vec![0.0; self.classes()];
                self.layers[1].forward(&act, &mut logits);
                Trace { pre, act, logits }
            }
        }
    }

    pub fn logits(&self, x: &[f64]) -> Vec<f64> {
        self.trace(x).logits
    }

    pub fn predict(&self, x: &[f64]) -> usize {
        argmax(&self.logits(x))
    }

    /// Adds the gradient of `weight · CE(softmax(logits), target)` to `grads` (same layout as
    /// the layers) and returns the unweighted loss.
    pub fn backward(&self, x: &[f64], target: usize, weight: f64, grads: &mut [Dense]) -> f64 {
        let t = self.trace(x);
        let p = softmax(&t.logits);
        let loss = -p[target].max(1e-300).ln();
        let dlogits: Vec<f64> = p
            .iter()
            .enumerate()
            .map(|(j, &pj)| weight * (pj - if j == target { 1.0 } else { 0.0 }))
            .collect();
        let last = self.layers.len() - 1;
        let input_of_last: &[f64] = if last == 0 { x } else { &t.act };
        accumulate(&mut grads[last], input_of_last, &dlogits);
        if let Some(f) = self.activation() {
            let out = &self.layers[1];
            let dpre: Vec<f64> = (0..out.inputs)
                .map(|i| {
                    let row = &out.weight[i * out.outputs..(i + 1) * out.outputs];
                    let dh: f64 = row.iter().zip(&dlogits).map(|(w, d)| w * d).sum();
                    dh * f.derivative(t.pre[i])
                })
                .collect();
            accumulate(&mut grads[0], x, &dpre);
        }
        loss
    }

    /// The head as f32 tensors for the graph: `(weight [in][out], bias [out])` per layer.
    pub fn f32_layers(&self) -> Vec<(Vec<f32>, Vec<f32>)> {
        self.layers
            .iter()
            .map(|l| {
                (
                    l.weight.iter().map(|&v| v as f32).collect(),
                    l.bias.iter().map(|&v| v as f32).collect(),
                )
            })
            .collect()
    }
}

fn accumulate(g: &mut Dense, input: &[f64], delta: &[f64]) {
    for (i, &xi) in input.iter().enumerate() {
        if xi == 0.0 {
            continue;
        }
        let row = &mut g.weight[i * g.outputs..(i + 1) * g.outputs];
        for (gw, d) in row.iter_mut().zip(delta) {
            *gw += xi * d;
        }
    }
    for (gb, d) in g.bias.iter_mut().zip(delta) {
        *gb += d;
    }
}

pub fn params(head: &Head) -> usize {
    head.layers.iter().map(Dense::params).sum()
}
