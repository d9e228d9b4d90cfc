//! Grouping texts into padded batches of similar length, and putting results back in order.

use crate::tokenize::Encoded;

/// A padded `[batch, sequence]` batch of int64 inputs, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Which input each row is.
    pub rows: Vec<usize>,
    pub sequence: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

/// Sorts inputs by length (longest first) and cuts them into batches of at most `max_batch`
/// rows, so that padding stays small; every input appears in exactly one batch. Each batch's
/// sequence length is rounded up to a multiple of `multiple` (window attention's block size).
pub fn plan(encoded: &[Encoded], max_batch: usize, pad_id: i64, multiple: usize) -> Vec<Batch> {
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    // Stable: equal lengths keep input order, so batching is deterministic.
    order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].len()));
    order
        .chunks(max_batch.max(1))
        .map(|rows| {
            let longest = rows.iter().map(|&i| encoded[i].len()).max().unwrap_or(0);
            let sequence = longest.div_ceil(multiple.max(1)) * multiple.max(1);
            let n = rows.len() * sequence;
            let mut b = Batch {
                rows: rows.to_vec(),
                sequence,
                input_ids: vec![pad_id; n],
                attention_mask: vec![0; n],
                token_type_ids: vec![0; n],
            };
            for (r, &i) in rows.iter().enumerate() {
                let e = &encoded[i];
                let at = r * sequence;
                b.input_ids[at..at + e.len()].copy_from_slice(&e.ids);
                b.token_type_ids[at..at + e.len()].copy_from_slice(&e.type_ids);
                b.attention_mask[at..at + e.len()].fill(1);
            }
            b
        })
        .collect()
}

/// Token ids of exactly `len` tokens for benchmarks: `[CLS]`, a fixed pseudo-random run of
/// BERT word pieces, `[SEP]`. `autoglm bench`, `examples/profile` and `tools/bench/peer_bench.py` (for
/// ONNX Runtime) feed the same ids.
pub fn bench_ids(len: usize) -> Vec<i64> {
    (0..len)
        .map(|i| match i {
            0 => 101,
            _ if i + 1 == len => 102,
            _ => 1000 + (i as i64 * 7919) % 20000,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(n: usize) -> Encoded {
        Encoded {
            ids: (1..=n as i64).collect(),
            type_ids: vec![0; n],
        }
    }

    #[test]
    fn batches_cover_every_input_once_and_pad_to_the_longest() {
        let inputs: Vec<Encoded> = [3, 7, 1, 7, 5].iter().map(|&n| enc(n)).collect();
        let batches = plan(&inputs, 2, 0, 1);
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.rows.clone()).collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(batches[0].rows, vec![1, 3]);
        assert_eq!(batches[0].sequence, 7);
        let last = batches.last().unwrap();
        assert_eq!(last.rows, vec![2]);
        assert_eq!(last.attention_mask, vec![1]);
        let mid = &batches[1];
        assert_eq!(mid.rows, vec![4, 0]);
        assert_eq!(mid.attention_mask, vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(mid.input_ids[5..], [1, 2, 3, 0, 0]);
    }

    #[test]
    fn sequences_are_padded_to_the_block_multiple() {
        let inputs: Vec<Encoded> = [5, 9].iter().map(|&n| enc(n)).collect();
        let batches = plan(&inputs, 1, 0, 4);
        assert_eq!(
            batches.iter().map(|b| b.sequence).collect::<Vec<_>>(),
            vec![12, 8]
        );
        assert_eq!(batches[1].attention_mask, vec![1, 1, 1, 1, 1, 0, 0, 0]);
    }

    #[test]
    fn no_inputs_no_batches() {
        assert!(plan(&[], 8, 0, 4).is_empty());
    }
}
