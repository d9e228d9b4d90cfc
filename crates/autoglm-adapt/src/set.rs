//! Labelled sets of embeddings and the seeded, stratified train/validation split.

use crate::rng::Rng;

/// A labelled set of embeddings.
#[derive(Debug, Clone, Default)]
pub struct Set {
    pub x: Vec<Vec<f64>>,
    pub y: Vec<usize>,
    /// Per-example loss weights; an example past its end (or every example, when it is empty)
    /// weighs 1. Pseudo-labelled examples of self-training weigh less than labelled ones.
    pub w: Vec<f64>,
}

impl Set {
    pub fn weight(&self, i: usize) -> f64 {
        self.w.get(i).copied().unwrap_or(1.0)
    }

    /// Examples per class.
    pub fn counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &y in &self.y {
            counts[y] += 1;
        }
        counts
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
