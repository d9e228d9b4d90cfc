//! The training loops: the weighted loss, L2-SP toward a reference head, gradient clipping and
//! AdamW, under one of two schedules (see [`Schedule`]): full-batch steps of an L2-regularised
//! objective for small data, mini-batches with early stopping on the validation loss otherwise.

use crate::adam::{adam_step, Adam};
use crate::class_weight::class_weights;
use crate::head::{Dense, Head};
use crate::options::{Schedule, TrainOptions};
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
    /// What `Auto` resolved to (absent in records older than the schedules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// The rounds of self-training, when there were unlabelled examples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub self_training: Vec<crate::self_train::RoundReport>,
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

/// Trains a head on `train` under `options.schedule` (`Auto` resolves on `train`'s smallest class
/// and on whether `valid` is empty), starting from `init` (when given; `options.l2sp` then pulls
/// toward it). Early stopping watches `valid` (when it is not empty); the fixed schedule only
/// reports on it at the end. Calls `progress` after each epoch (fixed schedule: each step).
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
    let smallest = train.counts(classes).into_iter().min().unwrap_or(0);
    let schedule = options.resolved_schedule(smallest, !valid.x.is_empty());
    let class_w = class_weights(options.class_weight, &data.y, classes);
    let weights: Vec<f64> = (0..data.y.len())
        .map(|i| class_w[data.y[i]] * data.weight(i))
        .collect();
    let shapes: Vec<(usize, usize)> = head.layers.iter().map(|l| (l.inputs, l.outputs)).collect();
    let last = head.layers.len() - 1;
    let mut step = Stepper {
        adam: Adam::new(&shapes),
        lrs: (0..head.layers.len())
            .map(|i| {
                if i == last {
                    options.lr
                } else {
                    options.hidden_lr
                }
            })
            .collect(),
        shapes,
        reference,
        options,
    };
    let mut order: Vec<usize> = (0..data.x.len()).collect();
    let mut epochs_run = 0;
    let best = match schedule {
        Schedule::Fixed | Schedule::Auto => {
            let total: f64 = weights.iter().sum();
            // Two classes: softmax's two weight columns settle at w₁ = −w₀, so twice the
            // penalty puts `l2 / n · ½‖w₁ − w₀‖²` on the logit difference, as logistic
            // regression's binary model does; `l2 = 1` is then `LogisticRegression()` exactly.
            let binary = if classes == 2 { 2.0 } else { 1.0 };
            let l2 = binary * options.l2 / total.max(f64::MIN_POSITIVE);
            for t in 1..=options.steps {
                epochs_run = t;
                // Cosine decay to 0: the last steps settle on the optimum instead of circling it.
                let decay = 0.5
                    * (1.0 + (std::f64::consts::PI * (t - 1) as f64 / options.steps as f64).cos());
                let loss = step.run(&mut head, &data, &order, &weights, total, Some(l2), decay);
                let train_loss = diverged(t, loss / total)?;
                progress(&EpochReport {
                    epoch: t,
                    epochs: options.steps,
                    train_loss,
                    valid_loss: None,
                    valid_accuracy: None,
                    best_epoch: t,
                });
            }
            let (valid_loss, valid_accuracy) = if valid.x.is_empty() {
                (None, None)
            } else {
                let (l, a) = evaluate(&head, valid);
                (Some(l), Some(a))
            };
            (
                valid_loss.unwrap_or(f64::NAN),
                head,
                epochs_run,
                valid_accuracy,
            )
        }
        Schedule::EarlyStopping => {
            let mut best = (f64::INFINITY, head.clone(), 0usize, None);
            for epoch in 1..=options.epochs {
                epochs_run = epoch;
                rng.shuffle(&mut order);
                let mut epoch_loss = 0.0;
                for batch in order.chunks(options.batch_size) {
                    epoch_loss += step.run(
                        &mut head,
                        &data,
                        batch,
                        &weights,
                        batch.len() as f64,
                        None,
                        1.0,
                    );
                }
                let train_loss = diverged(epoch, epoch_loss / data.x.len() as f64)?;
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
            best
        }
    };
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
            schedule: Some(schedule),
            self_training: Vec::new(),
        },
    ))
}

fn diverged(epoch: usize, loss: f64) -> Result<f64> {
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(AdaptError::Diverged { epoch, loss })
    }
}

/// One optimizer step, shared by both schedules.
struct Stepper<'a> {
    adam: Adam,
    lrs: Vec<f64>,
    shapes: Vec<(usize, usize)>,
    reference: Vec<Option<Dense>>,
    options: &'a TrainOptions,
}

impl Stepper<'_> {
    /// The gradient of the loss over `batch` (example `i` weighs `weights[i]`), divided by
    /// `norm`, plus `l2 · W` (the fixed schedule's penalty, which replaces AdamW's decoupled
    /// decay) and the L2-SP pull, clipped, then one AdamW step at `decay ×` the learning rates.
    /// Returns the batch's summed weighted loss.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        head: &mut Head,
        data: &Set,
        batch: &[usize],
        weights: &[f64],
        norm: f64,
        l2: Option<f64>,
        decay: f64,
    ) -> f64 {
        let options = self.options;
        let mut grads: Vec<Dense> = self
            .shapes
            .iter()
            .map(|&(i, o)| Dense::zeros(i, o))
            .collect();
        let mut loss = 0.0;
        for &i in batch {
            let w = weights[i];
            loss += w * head.backward(&data.x[i], data.y[i], w, &mut grads);
        }
        let scale = 1.0 / norm;
        for g in &mut grads {
            g.weight
                .iter_mut()
                .chain(&mut g.bias)
                .for_each(|v| *v *= scale);
        }
        for (g, (l, r)) in grads
            .iter_mut()
            .zip(head.layers.iter().zip(&self.reference))
        {
            if let Some(l2) = l2 {
                for (gw, w) in g.weight.iter_mut().zip(&l.weight) {
                    *gw += l2 * w;
                }
            }
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
        let lrs: Vec<f64> = self.lrs.iter().map(|lr| lr * decay).collect();
        let wd = if l2.is_some() {
            0.0
        } else {
            options.weight_decay
        };
        adam_step(head, &grads, &mut self.adam, &lrs, wd);
        loss
    }
}
