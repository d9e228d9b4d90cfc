//! Loss weights per class, for skewed label distributions.

use serde::{Deserialize, Serialize};

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
