//! AdamW: Adam with decoupled weight decay, a learning rate per layer.

use crate::head::{Dense, Head};

/// The optimizer's moment estimates (same layout as the head's layers) and step count.
pub struct Adam {
    m: Vec<Dense>,
    v: Vec<Dense>,
    t: i32,
}

impl Adam {
    /// Zero moments for layers of these `(inputs, outputs)` shapes.
    pub fn new(shapes: &[(usize, usize)]) -> Self {
        let zeros = || shapes.iter().map(|&(i, o)| Dense::zeros(i, o)).collect();
        Adam {
            m: zeros(),
            v: zeros(),
            t: 0,
        }
    }
}

/// One AdamW step on every layer of `head` (`lrs`: one learning rate per layer; `wd`: weight
/// decay on the weights, not the biases).
pub fn adam_step(head: &mut Head, grads: &[Dense], adam: &mut Adam, lrs: &[f64], wd: f64) {
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
