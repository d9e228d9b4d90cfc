//! SMOTE-style oversampling in embedding space: a synthetic example lies on the segment between
//! a minority example and one of its `k` nearest neighbours of the same class.

use crate::rng::Rng;
use crate::set::Set;

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Grows every class to the size of the largest; returns how many examples were added.
pub fn oversample(set: &mut Set, classes: usize, k: usize, rng: &mut Rng) -> usize {
    let members: Vec<Vec<usize>> = (0..classes)
        .map(|c| (0..set.y.len()).filter(|&i| set.y[i] == c).collect())
        .collect();
    let largest = members.iter().map(Vec::len).max().unwrap_or(0);
    let mut added = 0;
    for (c, idx) in members.iter().enumerate() {
        // One example has no neighbour to interpolate toward.
        if idx.len() < 2 || idx.len() >= largest {
            continue;
        }
        let neighbours: Vec<Vec<usize>> = idx
            .iter()
            .map(|&i| {
                let mut d: Vec<(f64, usize)> = idx
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| (sq_dist(&set.x[i], &set.x[j]), j))
                    .collect();
                d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                d.into_iter().take(k).map(|(_, j)| j).collect()
            })
            .collect();
        for _ in idx.len()..largest {
            let a = rng.below(idx.len());
            let nb = &neighbours[a];
            let b = nb[rng.below(nb.len())];
            let u = rng.next_f64();
            let x: Vec<f64> = set.x[idx[a]]
                .iter()
                .zip(&set.x[b])
                .map(|(p, q)| p + u * (q - p))
                .collect();
            set.x.push(x);
            set.y.push(c);
            added += 1;
        }
    }
    added
}
