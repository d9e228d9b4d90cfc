//! Self-training on unlabelled examples: rounds of confident pseudo-labels, with every class
//! given the same number so that one class cannot take over (see [`SelfTraining`]).

use crate::head::Head;
use crate::options::{SelfTraining, TrainOptions};
use crate::set::Set;
use crate::train::{train, EpochReport, TrainOutcome};
use crate::Result;
use autoglm_runtime::{argmax, softmax};
use serde::{Deserialize, Serialize};

/// What one round did (the package's `training.json`, `outcome.self_training`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    pub round: usize,
    /// Unlabelled examples whose predicted class reached the threshold, per class (label order).
    pub confident: Vec<usize>,
    /// Pseudo-labelled examples taken for each class this round (the same for every class).
    pub per_class: usize,
    /// Mean probability of the taken examples' pseudo-labels.
    pub mean_confidence: Option<f64>,
    /// The weight of each pseudo-labelled example in the loss (a labelled one weighs 1).
    pub example_weight: f64,
    /// Of the head trained this round, when there is a validation set.
    pub valid_accuracy: Option<f64>,
}

/// The pseudo-labels `head` gives `unlabeled`: `(index, class)`, most confident first within
/// each class, the same number for every class (at most `per_class`, at most the number of
/// confident examples of the class that has the fewest), each at least `threshold` probable.
/// Also returns how many were confident per class, and their mean probability.
pub fn select(
    head: &Head,
    unlabeled: &[Vec<f64>],
    threshold: f64,
    per_class: usize,
) -> (Vec<(usize, usize)>, Vec<usize>, Option<f64>) {
    let classes = head.classes();
    let mut by_class: Vec<Vec<(f64, usize)>> = vec![Vec::new(); classes];
    for (i, x) in unlabeled.iter().enumerate() {
        let p = softmax(&head.logits(x));
        let c = argmax(&p);
        if p[c] >= threshold {
            by_class[c].push((p[c], i));
        }
    }
    let confident: Vec<usize> = by_class.iter().map(Vec::len).collect();
    let take = confident.iter().copied().min().unwrap_or(0).min(per_class);
    let mut picked = Vec::with_capacity(take * classes);
    let mut sum = 0.0;
    for (c, members) in by_class.iter_mut().enumerate() {
        // Most confident first; ties by index, so the choice does not depend on sort stability.
        members.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(p, i) in &members[..take] {
            picked.push((i, c));
            sum += p;
        }
    }
    let mean = (!picked.is_empty()).then(|| sum / picked.len() as f64);
    (picked, confident, mean)
}

/// Rounds of self-training after `first` (the head trained on `labeled` alone): each selects
/// pseudo-labels with the newest head and trains again on `labeled` + them, all of them
/// together weighing `weight ×` the labelled examples. Stops early when a round finds no
/// example confident enough in some class. `options.schedule` should already be resolved on
/// `labeled` (the pseudo-labels must not turn small data into large).
#[allow(clippy::too_many_arguments)]
pub fn self_train(
    labeled: &Set,
    valid: &Set,
    unlabeled: &[Vec<f64>],
    classes: usize,
    options: &TrainOptions,
    init: Option<&Head>,
    first: (Head, TrainOutcome),
    progress: &mut dyn FnMut(Step),
) -> Result<(Head, TrainOutcome)> {
    let SelfTraining {
        rounds,
        threshold,
        per_class,
        weight,
    } = options.self_training;
    let (mut head, mut outcome) = first;
    let labeled_weight: f64 = (0..labeled.y.len()).map(|i| labeled.weight(i)).sum();
    let mut reports = Vec::new();
    for round in 1..=rounds {
        let (picked, confident, mean_confidence) = select(&head, unlabeled, threshold, per_class);
        let take = picked.len() / classes.max(1);
        let example_weight = if picked.is_empty() {
            0.0
        } else {
            weight * labeled_weight / picked.len() as f64
        };
        let mut report = RoundReport {
            round,
            confident,
            per_class: take,
            mean_confidence,
            example_weight,
            valid_accuracy: None,
        };
        if picked.is_empty() {
            progress(Step::Round(report.clone()));
            reports.push(report);
            break;
        }
        let mut set = labeled.clone();
        set.w = (0..labeled.y.len()).map(|i| labeled.weight(i)).collect();
        for &(i, c) in &picked {
            set.x.push(unlabeled[i].clone());
            set.y.push(c);
            set.w.push(example_weight);
        }
        let (h, o) = train(&set, valid, classes, options, init, &mut |r| {
            progress(Step::Epoch(*r))
        })?;
        report.valid_accuracy = o.valid_accuracy;
        progress(Step::Round(report.clone()));
        reports.push(report);
        head = h;
        outcome = TrainOutcome {
            // The labelled examples, as without self-training; the rounds say the rest.
            train_examples: outcome.train_examples,
            ..o
        };
    }
    outcome.self_training = reports;
    Ok((head, outcome))
}

/// Progress of a self-training run.
#[derive(Debug, Clone)]
pub enum Step {
    Epoch(EpochReport),
    Round(RoundReport),
}
