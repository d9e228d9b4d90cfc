//! What a package remembers of its training set for ranking (`summary.json`), and the
//! transferability measures: unbiased MMD² with an RBF kernel (median-heuristic bandwidth) and
//! a label-distribution distance.

use crate::rng::Rng;
use crate::{AdaptError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const SUMMARY_FILE: &str = "summary.json";
/// Embeddings kept in a summary: MMD on 256 points separates data sets that differ in domain
/// while the file stays well under a megabyte for 384-dim vectors.
pub const SUMMARY_SAMPLE: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// sha256 of the backbone graph whose embeddings these are.
    pub backbone_sha256: String,
    pub dim: usize,
    pub examples: usize,
    pub label_counts: BTreeMap<String, usize>,
    /// A seeded random subsample of the training embeddings.
    pub sample: Vec<Vec<f32>>,
}

impl Summary {
    pub fn new(
        backbone_sha256: String,
        embeddings: &[Vec<f32>],
        label_counts: BTreeMap<String, usize>,
        seed: u64,
    ) -> Self {
        let mut rng = Rng::new(seed ^ 0x5a3f_1e00);
        let sample = rng
            .sample(embeddings.len(), SUMMARY_SAMPLE)
            .into_iter()
            .map(|i| embeddings[i].clone())
            .collect();
        Summary {
            backbone_sha256,
            dim: embeddings.first().map_or(0, Vec::len),
            examples: embeddings.len(),
            label_counts,
            sample,
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let s: Summary = serde_json::from_slice(bytes)
            .map_err(|e| AdaptError::Package(format!("{SUMMARY_FILE} is not valid: {e}")))?;
        if s.sample.len() < 2 || s.sample.iter().any(|v| v.len() != s.dim) {
            return Err(AdaptError::Package(format!(
                "{SUMMARY_FILE} needs at least 2 embeddings of {} values",
                s.dim
            )));
        }
        Ok(s)
    }
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum()
}

/// Median of the pairwise squared distances of the pooled sample (the bandwidth heuristic).
pub fn median_sq_distance(x: &[Vec<f32>], y: &[Vec<f32>]) -> f64 {
    let pooled: Vec<&Vec<f32>> = x.iter().chain(y).collect();
    let mut d = Vec::with_capacity(pooled.len() * pooled.len() / 2);
    for i in 0..pooled.len() {
        for j in i + 1..pooled.len() {
            d.push(sq_dist(pooled[i], pooled[j]));
        }
    }
    if d.is_empty() {
        return 1.0;
    }
    let mid = d.len() / 2;
    let (_, m, _) = d.select_nth_unstable_by(mid, f64::total_cmp);
    // Identical points would make the kernel a delta; fall back to unit width.
    if *m > 0.0 {
        *m
    } else {
        1.0
    }
}

/// Unbiased MMD² between samples `x` and `y` (each at least 2 points) under
/// `k(a, b) = exp(-|a-b|² / (2σ²))` with `2σ²` = the median pairwise squared distance.
pub fn mmd2_unbiased(x: &[Vec<f32>], y: &[Vec<f32>]) -> f64 {
    let two_sigma2 = median_sq_distance(x, y);
    let k = |a: &[f32], b: &[f32]| (-sq_dist(a, b) / two_sigma2).exp();
    let within = |s: &[Vec<f32>]| {
        let mut t = 0.0;
        for i in 0..s.len() {
            for j in 0..s.len() {
                if i != j {
                    t += k(&s[i], &s[j]);
                }
            }
        }
        t / (s.len() * (s.len() - 1)) as f64
    };
    let mut cross = 0.0;
    for a in x {
        for b in y {
            cross += k(a, b);
        }
    }
    within(x) + within(y) - 2.0 * cross / (x.len() * y.len()) as f64
}

/// Total-variation distance between two label distributions, compared by shape (proportions
/// sorted, largest first) because a source's label names need not be the target's.
pub fn label_distance(a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>) -> f64 {
    let props = |m: &BTreeMap<String, usize>| {
        let n: usize = m.values().sum();
        let mut p: Vec<f64> = m.values().map(|&c| c as f64 / n.max(1) as f64).collect();
        p.sort_by(|x, y| y.total_cmp(x));
        p
    };
    let (pa, pb) = (props(a), props(b));
    let len = pa.len().max(pb.len());
    let at = |p: &[f64], i: usize| p.get(i).copied().unwrap_or(0.0);
    0.5 * (0..len)
        .map(|i| (at(&pa, i) - at(&pb, i)).abs())
        .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(rng: &mut Rng, n: usize, shift: f32) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| (0..4).map(|_| rng.next_f64() as f32 + shift).collect())
            .collect()
    }

    #[test]
    fn mmd_separates_shifted_samples() {
        let mut rng = Rng::new(3);
        let a = cloud(&mut rng, 60, 0.0);
        let b = cloud(&mut rng, 60, 0.0);
        let c = cloud(&mut rng, 60, 0.7);
        let same = mmd2_unbiased(&a, &b);
        let shifted = mmd2_unbiased(&a, &c);
        assert!(same.abs() < 0.05, "{same}");
        assert!(shifted > same + 0.1, "{shifted} vs {same}");
    }

    #[test]
    fn label_distance_ignores_names() {
        let m = |v: &[(&str, usize)]| v.iter().map(|(k, c)| (k.to_string(), *c)).collect();
        assert_eq!(
            label_distance(&m(&[("a", 5), ("b", 5)]), &m(&[("x", 1), ("y", 1)])),
            0.0
        );
        let d = label_distance(&m(&[("a", 9), ("b", 1)]), &m(&[("x", 5), ("y", 5)]));
        assert!((d - 0.4).abs() < 1e-12);
    }
}
