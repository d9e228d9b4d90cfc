//! Symmetric int8 weight quantization: per output channel for linear layers, per row for the
//! word-embedding table.

use crate::hf::Tensor;

/// Symmetric per-column quantization of `w` `[in, out]` to `[-limit, limit]`: one scale per
/// output channel. Linear weights use limit 63 (7 bits): x86 CPUs without VNNI multiply u8×s8
/// pairs into saturating i16 sums (`vpmaddubsw`), so 255·127·2 would overflow and ONNX Runtime
/// would compute something else than the graph says; 255·63·2 fits.
pub fn quantize_columns(w: &Tensor, limit: i32) -> (Vec<i8>, Vec<f32>) {
    let (rows, cols) = (w.shape[0], w.shape[1]);
    let scales: Vec<f32> = (0..cols)
        .map(|c| {
            let max = (0..rows)
                .map(|r| w.data[r * cols + c].abs())
                .fold(0.0f32, f32::max);
            if max > 0.0 {
                max / limit as f32
            } else {
                1.0
            }
        })
        .collect();
    let q = w
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            (v / scales[i % cols])
                .round()
                .clamp(-limit as f32, limit as f32) as i8
        })
        .collect();
    (q, scales)
}

/// Symmetric per-row quantization of `w` `[rows, cols]` (embedding tables: one scale per token).
pub fn quantize_rows(w: &Tensor, limit: i32) -> (Vec<i8>, Vec<f32>) {
    let (q, scales) = quantize_columns(&w.t(), limit);
    let qt = Tensor::new(
        vec![w.shape[1], w.shape[0]],
        q.iter().map(|&v| v as f32).collect(),
    )
    .t();
    (qt.data.iter().map(|&v| v as i8).collect(), scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_quantization_round_trips_within_half_a_step() {
        let w = Tensor::new(vec![3, 2], vec![0.5, -2.0, -1.0, 1.0, 0.25, 0.0]);
        let (q, s) = quantize_columns(&w, 63);
        assert_eq!(s, vec![1.0 / 63.0, 2.0 / 63.0]);
        for (i, &v) in w.data.iter().enumerate() {
            let back = q[i] as f32 * s[i % 2];
            assert!((back - v).abs() <= s[i % 2] / 2.0 + 1e-7);
        }
        assert_eq!(q[1], -63);
        let (qr, sr) = quantize_rows(&w, 127);
        assert_eq!(sr.len(), 3);
        assert_eq!(qr[1], -127);
        assert_eq!(
            quantize_columns(&Tensor::new(vec![1, 1], vec![0.0]), 63).1,
            vec![1.0]
        );
    }
}
