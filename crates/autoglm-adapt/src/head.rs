//! The task head and its training: a linear layer or a one-hidden-layer MLP over frozen
//! embeddings, softmax cross-entropy, hand-written backward pass, AdamW. Training runs in f64
//! (the head is tiny; f64 keeps the optimum close to a reference solver's); the package stores f32.

use crate::rng::Rng;
use crate::{AdaptError, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Tanh,
    /// Exact (erf) GELU, as ONNX computes it with `Erf`.
    Gelu,
}

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
    fn zeros(inputs: usize, outputs: usize) -> Self {
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

fn erf(x: f64) -> f64 {
    // Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): far below what training or f32 export sees.
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

impl Activation {
    fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Tanh => x.tanh(),
            Activation::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        }
    }

    fn derivative(self, x: f64) -> f64 {
        match self {
            Activation::Tanh => 1.0 - x.tanh().powi(2),
            Activation::Gelu => {
                let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                cdf + x * pdf
            }
        }
    }
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
    fn backward(&self, x: &[f64], target: usize, weight: f64, grads: &mut [Dense]) -> f64 {
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

pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

pub fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

/// How examples of rare classes are weighted in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeight {
    None,
    /// `n / (classes · n_c)`: every class carries the same total weight.
    Inverse,
    /// `-ln(n_c / n)` (the information of the label), scaled to mean 1 over the examples: a
    /// milder correction than inverse frequency for very skewed sets.
    Entropy,
}

impl std::str::FromStr for ClassWeight {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(ClassWeight::None),
            "inverse" => Ok(ClassWeight::Inverse),
            "entropy" => Ok(ClassWeight::Entropy),
            _ => Err(format!("`{s}`: expected none, inverse or entropy")),
        }
    }
}

pub fn class_weights(kind: ClassWeight, y: &[usize], classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; classes];
    for &c in y {
        counts[c] += 1;
    }
    let n = y.len().max(1) as f64;
    let raw: Vec<f64> = counts
        .iter()
        .map(|&nc| match (kind, nc) {
            (_, 0) | (ClassWeight::None, _) => 1.0,
            (ClassWeight::Inverse, _) => n / (classes as f64 * nc as f64),
            // A class that is the whole set carries no information; keep it from weighing 0.
            (ClassWeight::Entropy, _) => (-(nc as f64 / n).ln()).max(1e-3),
        })
        .collect();
    if kind == ClassWeight::Entropy {
        let mean: f64 = y.iter().map(|&c| raw[c]).sum::<f64>() / n;
        raw.iter().map(|w| w / mean).collect()
    } else {
        raw
    }
}

/// Everything that decides a training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub head: HeadSpec,
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    /// Learning rate of the output layer.
    pub lr: f64,
    /// Learning rate of the hidden layer (MLP heads).
    pub hidden_lr: f64,
    /// Decoupled (AdamW) weight decay on the weights, not the biases.
    pub weight_decay: f64,
    /// Largest global gradient norm; 0 turns clipping off.
    pub clip: f64,
    /// Epochs without a better validation loss before training stops.
    pub patience: usize,
    pub class_weight: ClassWeight,
    /// SMOTE neighbours: synthesize minority-class examples until every class is as large as
    /// the largest one. `None` = off.
    pub smote: Option<usize>,
    /// L2-SP strength toward the reference head's weights (`init_from`); 0 = plain fine-tuning.
    pub l2sp: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            head: HeadSpec::Linear,
            seed: 0,
            epochs: 100,
            batch_size: 32,
            lr: 1e-2,
            hidden_lr: 3e-3,
            weight_decay: 1e-4,
            clip: 1.0,
            patience: 10,
            class_weight: ClassWeight::None,
            smote: None,
            l2sp: 0.0,
        }
    }
}

impl TrainOptions {
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(AdaptError::InvalidOption(m));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1".into());
        }
        for (name, v) in [
            ("--lr", self.lr),
            ("--hidden-lr", self.hidden_lr),
            ("--weight-decay", self.weight_decay),
            ("--clip", self.clip),
            ("--l2sp", self.l2sp),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{name} {v}: must be a finite number >= 0"));
            }
        }
        if self.lr == 0.0 {
            return bad("--lr must be > 0".into());
        }
        if self.smote == Some(0) {
            return bad("--smote needs at least 1 neighbour".into());
        }
        Ok(())
    }
}

/// A labelled set of embeddings.
#[derive(Debug, Clone, Default)]
pub struct Set {
    pub x: Vec<Vec<f64>>,
    pub y: Vec<usize>,
}

/// After each epoch, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub epochs: usize,
    pub train_loss: f64,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
    pub best_epoch: usize,
}

/// What a run did, for the package's provenance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub train_examples: usize,
    pub synthetic_examples: usize,
    pub valid_examples: usize,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
}

/// Mean cross-entropy and accuracy of `head` on `set`.
pub fn evaluate(head: &Head, set: &Set) -> (f64, f64) {
    let mut loss = 0.0;
    let mut right = 0usize;
    for (x, &y) in set.x.iter().zip(&set.y) {
        let p = softmax(&head.logits(x));
        loss -= p[y].max(1e-300).ln();
        right += usize::from(argmax(&p) == y);
    }
    let n = set.x.len().max(1) as f64;
    (loss / n, right as f64 / n)
}

struct Adam {
    m: Vec<Dense>,
    v: Vec<Dense>,
    t: i32,
}

/// Trains a head on `train`, early-stopping on `valid` (when it is not empty), starting from
/// `init` (when given; `options.l2sp` then pulls toward it). Calls `progress` after each epoch.
pub fn train(
    train: &Set,
    valid: &Set,
    classes: usize,
    options: &TrainOptions,
    init: Option<&Head>,
    progress: &mut dyn FnMut(&EpochReport),
) -> Result<(Head, TrainOutcome)> {
    options.check()?;
    let dim = train
        .x
        .first()
        .map(Vec::len)
        .ok_or_else(|| AdaptError::InvalidOption("no training examples".into()))?;
    let mut rng = Rng::new(options.seed);
    let mut head = Head::new(options.head, dim, classes, &mut rng);
    if let Some(src) = init {
        if src.input_dim() != dim {
            return Err(AdaptError::DimensionMismatch {
                what: "--init-from head input".into(),
                expected: dim,
                found: src.input_dim(),
            });
        }
        // Take every source layer whose shape fits; an output layer over other labels does not.
        for (dst, s) in head.layers.iter_mut().zip(&src.layers) {
            if dst.inputs == s.inputs && dst.outputs == s.outputs && src.spec == options.head {
                *dst = s.clone();
            }
        }
    }
    let reference: Vec<Option<Dense>> = head
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            init.and_then(|s| s.layers.get(i))
                .filter(|s| s.inputs == l.inputs && s.outputs == l.outputs)
                .cloned()
        })
        .collect();

    let mut data = train.clone();
    let synthetic = match options.smote {
        Some(k) => crate::smote::oversample(&mut data, classes, k, &mut rng),
        None => 0,
    };
    let weights = class_weights(options.class_weight, &data.y, classes);
    let shapes: Vec<(usize, usize)> = head.layers.iter().map(|l| (l.inputs, l.outputs)).collect();
    let zeros = || -> Vec<Dense> { shapes.iter().map(|&(i, o)| Dense::zeros(i, o)).collect() };
    let mut adam = Adam {
        m: zeros(),
        v: zeros(),
        t: 0,
    };
    let last = head.layers.len() - 1;
    let lrs: Vec<f64> = (0..head.layers.len())
        .map(|i| {
            if i == last {
                options.lr
            } else {
                options.hidden_lr
            }
        })
        .collect();

    let mut best = (f64::INFINITY, head.clone(), 0usize, None);
    let mut order: Vec<usize> = (0..data.x.len()).collect();
    let mut epochs_run = 0;
    for epoch in 1..=options.epochs {
        epochs_run = epoch;
        rng.shuffle(&mut order);
        let mut epoch_loss = 0.0;
        for batch in order.chunks(options.batch_size) {
            let mut grads = zeros();
            for &i in batch {
                let w = weights[data.y[i]];
                epoch_loss += w * head.backward(&data.x[i], data.y[i], w, &mut grads);
            }
            let scale = 1.0 / batch.len() as f64;
            for g in &mut grads {
                g.weight
                    .iter_mut()
                    .chain(&mut g.bias)
                    .for_each(|v| *v *= scale);
            }
            for (g, (l, r)) in grads.iter_mut().zip(head.layers.iter().zip(&reference)) {
                if let (Some(r), true) = (r, options.l2sp > 0.0) {
                    for ((gw, w), rw) in g.weight.iter_mut().zip(&l.weight).zip(&r.weight) {
                        *gw += options.l2sp * (w - rw);
                    }
                }
            }
            if options.clip > 0.0 {
                let norm = grads
                    .iter()
                    .flat_map(|g| g.weight.iter().chain(&g.bias))
                    .map(|v| v * v)
                    .sum::<f64>()
                    .sqrt();
                if norm > options.clip {
                    let s = options.clip / norm;
                    for g in &mut grads {
                        g.weight.iter_mut().chain(&mut g.bias).for_each(|v| *v *= s);
                    }
                }
            }
            adam_step(&mut head, &grads, &mut adam, &lrs, options.weight_decay);
        }
        let train_loss = epoch_loss / data.x.len() as f64;
        if !train_loss.is_finite() {
            return Err(AdaptError::InvalidOption(format!(
                "training diverged at epoch {epoch} (loss {train_loss}); lower --lr"
            )));
        }
        let (valid_loss, valid_accuracy) = if valid.x.is_empty() {
            (None, None)
        } else {
            let (l, a) = evaluate(&head, valid);
            (Some(l), Some(a))
        };
        // Without a validation set the last epoch is the model.
        let score = valid_loss.unwrap_or(-(epoch as f64));
        if score < best.0 {
            best = (score, head.clone(), epoch, valid_accuracy);
        }
        progress(&EpochReport {
            epoch,
            epochs: options.epochs,
            train_loss,
            valid_loss,
            valid_accuracy,
            best_epoch: best.2,
        });
        if valid_loss.is_some() && epoch - best.2 >= options.patience.max(1) {
            break;
        }
    }
    let (score, head, best_epoch, valid_accuracy) = best;
    Ok((
        head,
        TrainOutcome {
            epochs_run,
            best_epoch,
            train_examples: train.x.len(),
            synthetic_examples: synthetic,
            valid_examples: valid.x.len(),
            valid_loss: valid_accuracy.map(|_| score),
            valid_accuracy,
        },
    ))
}

fn adam_step(head: &mut Head, grads: &[Dense], adam: &mut Adam, lrs: &[f64], wd: f64) {
    const B1: f64 = 0.9;
    const B2: f64 = 0.999;
    const EPS: f64 = 1e-8;
    adam.t += 1;
    let c1 = 1.0 - B1.powi(adam.t);
    let c2 = 1.0 - B2.powi(adam.t);
    for (li, layer) in head.layers.iter_mut().enumerate() {
        let lr = lrs[li];
        let g = &grads[li];
        let (m, v) = (&mut adam.m[li], &mut adam.v[li]);
        let step = |p: &mut f64, g: f64, m: &mut f64, v: &mut f64, decay: bool| {
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            if decay {
                *p -= lr * wd * *p;
            }
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + EPS);
        };
        for i in 0..layer.weight.len() {
            step(
                &mut layer.weight[i],
                g.weight[i],
                &mut m.weight[i],
                &mut v.weight[i],
                true,
            );
        }
        for i in 0..layer.bias.len() {
            step(
                &mut layer.bias[i],
                g.bias[i],
                &mut m.bias[i],
                &mut v.bias[i],
                false,
            );
        }
    }
}

/// A stratified, seeded split: about `fraction` of each class (at least one example of every
/// class that has two or more) goes to validation.
pub fn stratified_split(set: &Set, classes: usize, fraction: f64, seed: u64) -> (Set, Set) {
    // A stream of its own: the split does not change when training draws more numbers.
    let mut rng = Rng::new(seed ^ 0x5eed_0000_0511_u64);
    let mut train = Set::default();
    let mut valid = Set::default();
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..set.y.len()).filter(|&i| set.y[i] == c).collect();
        rng.shuffle(&mut idx);
        let n_valid = if idx.len() >= 2 {
            ((idx.len() as f64 * fraction).round() as usize).clamp(1, idx.len() - 1)
        } else {
            0
        };
        for (k, &i) in idx.iter().enumerate() {
            let dst = if k < n_valid { &mut valid } else { &mut train };
            dst.x.push(set.x[i].clone());
            dst.y.push(c);
        }
    }
    (train, valid)
}

pub fn params(head: &Head) -> usize {
    head.layers.iter().map(Dense::params).sum()
}
