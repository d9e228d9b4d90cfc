//! The training loop: mini-batches of the weighted loss, L2-SP toward a reference head,
//! gradient clipping, AdamW, early stopping on the validation loss.

use crate::adam::{adam_step, Adam};
use crate::class_weight::class_weights;
use crate::head::{Dense, Head};
use crate::options::TrainOptions;
use crate::rng::Rng;
use crate::set::Set;
use crate::{AdaptError, Result};
use autoglm_runtime::{argmax, softmax};
use serde::{Deserialize, Serialize};

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
        .ok_or_else(|| AdaptError::Invalid("no training examples".into()))?;
    let mut rng = Rng::new(options.seed);
    let mut head = Head::new(options.head, dim, classes, &mut rng);
    if let Some(src) = init {
        if src.input_dim() != dim {
            return Err(AdaptError::DimensionMismatch {
                option: None,
                what: "initial head input".into(),
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
    let mut adam = Adam::new(&shapes);
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
            return Err(AdaptError::Diverged {
                epoch,
                loss: train_loss,
            });
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
