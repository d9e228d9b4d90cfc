//! From logits to probabilities and labels: the one softmax and argmax of the workspace (the
//! runtime's predictions in f32, the adaptation's training in f64), and the JSON form of a
//! prediction that `autoglm classify --json` prints and `/v1/classify` answers.

use serde_json::{json, Map, Value};

/// The floating-point types scores come in (`f32`, `f64`).
pub trait Real:
    Copy + PartialOrd + std::ops::Sub<Output = Self> + std::ops::Div<Output = Self> + std::iter::Sum
{
    const NEG_INFINITY: Self;
    fn exp(self) -> Self;
    fn max(self, other: Self) -> Self;
}

macro_rules! real {
    ($($t:ident),*) => {$(
        impl Real for $t {
            const NEG_INFINITY: Self = $t::NEG_INFINITY;
            fn exp(self) -> Self {
                $t::exp(self)
            }
            fn max(self, other: Self) -> Self {
                $t::max(self, other)
            }
        }
    )*};
}

real!(f32, f64);

/// Numerically stable softmax.
pub fn softmax<T: Real>(logits: &[T]) -> Vec<T> {
    let max = logits.iter().copied().fold(T::NEG_INFINITY, T::max);
    let exp: Vec<T> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: T = exp.iter().copied().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The index of the largest value, the first one on ties (0 for an empty slice).
pub fn argmax<T: Real>(v: &[T]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

/// One classification: the most probable label and every label's probability (label order).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label: String,
    pub index: usize,
    pub scores: Vec<f32>,
}

impl Prediction {
    /// Softmax over one row of logits; `labels` names them (in logit order).
    pub fn from_logits(logits: &[f32], labels: &[impl AsRef<str>]) -> Self {
        let scores = softmax(logits);
        let index = argmax(&scores);
        Prediction {
            label: labels
                .get(index)
                .map(|l| l.as_ref().to_string())
                .unwrap_or_default(),
            index,
            scores,
        }
    }

    /// `{"label": …, "scores": {label: p, …}}`, `labels` in score order: one prediction as
    /// `/v1/classify` answers it and `autoglm classify --json` prints it.
    pub fn to_json(&self, labels: &[impl AsRef<str>]) -> Value {
        let scores: Map<String, Value> = labels
            .iter()
            .zip(&self.scores)
            .map(|(l, s)| (l.as_ref().to_string(), json!(s)))
            .collect();
        json!({"label": self.label, "scores": scores})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0f32, 1001.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[0]);
        let q = softmax(&[1000.0f64, 1001.0]);
        assert!((q[1] - f64::from(p[1])).abs() < 1e-6);
        assert_eq!(argmax(&[0.2f32, 0.5, 0.5]), 1);
        assert_eq!(argmax(&[0.2f64, 0.1, 0.7]), 2);
    }

    #[test]
    fn a_prediction_names_its_best_label_and_prints_every_score() {
        let p = Prediction::from_logits(&[0.0, 2.0], &["neg", "pos"]);
        assert_eq!((p.label.as_str(), p.index), ("pos", 1));
        let j = p.to_json(&["neg", "pos"]);
        assert_eq!(j["label"], "pos");
        let pos = j["scores"]["pos"].as_f64().unwrap();
        assert!((pos - f64::from(p.scores[1])).abs() < 1e-7 && pos > 0.88);
    }
}
