//! **Fused window attention** ([`WindowAttention`]): the exporter's blocked sliding-window
//! attention with global keys (`autoglm-export`'s `window.rs`) as one operator. The graph builds,
//! per layer, each query block's three neighbouring key blocks (copies of K and V with zero
//! blocks at the ends), a `[batch, heads, blocks, block, 3·block + G]` score tensor (a concat of
//! window and global scores), its softmax, four slices of it and four products summed: at 2,048
//! tokens that was ~45 % of a run in slices, concats, packing and small products. Here each
//! (batch item, head, query block) scores its keys with our f32 products ([`super::fgemm`]; each
//! key block and V packed once per head, no neighbour copies), adds the band and global biases,
//! applies softmax ([`super::softmax`]) and accumulates the four products into one block of
//! context rows: only one block's scores are ever held (per head), and the heads run in
//! parallel on the backend's threads.
//! The rows of a query block go in groups of a few tiles, each scoring only the key columns
//! that some row of the group can see: keys its band bias masks ([`MASKED_KEY`]) add exactly
//! 0 to the softmax and are skipped (a third of the window's columns with the exporter's band).
//!
//! What it computes is exactly the graph's definition, including its edge cases: a key block
//! outside the sequence scores 0 (before its bias, which masks it) and contributes nothing.
//!
//! `unsafe` as in `attention.rs`: only each head's writes into its own part of the shared
//! output, after the size checks they rely on.

use super::attention::{aligned, biased_scores, einsum, is_bin, run_tasks, single_use, OutPtr};
use super::fgemm;
use tract_hir::prelude::*;
use tract_hir::tract_core::internal::*;
use tract_hir::tract_core::ops::array::{Slice, TypedConcat};
use tract_hir::tract_core::ops::einsum::EinSum;
use tract_hir::tract_core::ops::math::Add;
use tract_hir::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// Scores of a query block against its key blocks (a: batch, b: head, c: block, m/n: query/key).
const WINDOW_SCORES: &str = "abcmk,abcnk->abcmn";
/// Scores of a query block against the global keys.
const GLOBAL_SCORES: &str = "abcmk,abnk->abcmn";
/// The global queries' scores against every key, and their context (a: batch, b: head, m:
/// query, n: key, k: the contracted axis).
const GLOBAL_QUERY_SCORES: &str = "abmk,abnk->abmn";
const GLOBAL_QUERY_CONTEXT: &str = "abmk,abkn->abmn";
/// A slice of the probabilities times one neighbouring block of values.
const WINDOW_CONTEXT: &str = "abcmk,abckn->abcmn";
/// The global slice of the probabilities times the global values.
const GLOBAL_CONTEXT: &str = "abcmk,abkn->abcmn";

/// Inputs Q, K, V `[batch, heads, seq, head_dim]` (`seq` whole blocks), the band bias
/// `[batch, 1, blocks, block, 3·block]` and the global-key bias `[batch, 1, 1, 1, global]`;
/// output the context `[batch, heads, blocks, block, head_dim]`. With `global_queries`, a
/// sixth input, the key bias `[batch, 1, 1, seq]`, and the first `global` queries attend to
/// every key with it (the graph's global queries, a dense attention of their own whose rows
/// replace theirs); the output is then `[batch, heads, seq, head_dim]`, the graph's layout there.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowAttention {
    pub scale: f32,
    pub block: usize,
    pub global: usize,
    pub global_queries: bool,
    /// Q, K, V `[batch, seq, heads, head_dim]` (the linear layers' layout, so the graph's
    /// transposes before the op go: [`fuse_token_major`]); only with `global_queries`.
    pub token_major: bool,
    /// The output in that layout too (where the graph transposed it back).
    pub token_major_out: bool,
}

impl Eq for WindowAttention {}

impl Op for WindowAttention {
    fn name(&self) -> StaticName {
        "AutoglmWindowAttention".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale: {}, block: {}, global: {}, global queries: {}, token major: {} (out: {})",
            self.scale,
            self.block,
            self.global,
            self.global_queries,
            self.token_major,
            self.token_major_out
        )])
    }
    op_as_typed_op!();
}

impl TypedOp for WindowAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(s.rank() == 4, "AutoglmWindowAttention: Q must be rank 4");
        ensure!(
            self.global_queries || !(self.token_major || self.token_major_out),
            "AutoglmWindowAttention: token-major only with global queries"
        );
        if self.global_queries {
            let mut shape: TVec<TDim> = s.iter().cloned().collect();
            if self.token_major != self.token_major_out {
                shape.swap(1, 2);
            }
            return Ok(tvec![f32::datum_type().fact(shape)]);
        }
        let blocks = s[2].clone() / self.block as u64;
        let shape: TVec<TDim> = tvec![
            s[0].clone(),
            s[1].clone(),
            blocks,
            self.block.into(),
            s[3].clone()
        ];
        Ok(tvec![f32::datum_type().fact(shape)])
    }
    as_op!();
}

/// The shape of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowDims {
    pub batch: usize,
    pub heads: usize,
    pub blocks: usize,
    pub block: usize,
    pub head_dim: usize,
    pub global: usize,
    /// Q, K, V are `[batch, seq, heads, head_dim]`, else `[batch, heads, seq, head_dim]`.
    pub token_major: bool,
    /// The same for the output.
    pub token_major_out: bool,
}

impl WindowDims {
    fn seq(&self) -> usize {
        self.blocks * self.block
    }
    /// Where token 0 of head `h` of item `b` starts in Q, K, V, and the distance between its
    /// tokens.
    fn head(&self, b: usize, h: usize) -> (usize, usize) {
        self.head_in(self.token_major, b, h)
    }

    /// [`WindowDims::head`] in the output.
    fn out_head(&self, b: usize, h: usize) -> (usize, usize) {
        self.head_in(self.token_major_out, b, h)
    }

    fn head_in(&self, token_major: bool, b: usize, h: usize) -> (usize, usize) {
        let (seq, dh) = (self.seq(), self.head_dim);
        let stride = self.token_stride_in(token_major);
        if token_major {
            (b * seq * stride + h * dh, stride)
        } else {
            ((b * self.heads + h) * seq * dh, stride)
        }
    }

    /// The distance between two tokens of a head in Q, K, V.
    fn token_stride(&self) -> usize {
        self.token_stride_in(self.token_major)
    }

    fn token_stride_in(&self, token_major: bool) -> usize {
        if token_major {
            self.heads * self.head_dim
        } else {
            self.head_dim
        }
    }
    /// Columns of one query row's scores: three key blocks, then the global keys.
    fn width(&self) -> usize {
        3 * self.block + self.global
    }
}

impl EvalOp for WindowAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let key_bias = if self.global_queries {
            ensure!(inputs.len() == 6, "AutoglmWindowAttention: no key bias");
            inputs.pop()
        } else {
            None
        };
        let (q, k, v, band, global_bias) = args_5!(inputs);
        let shape = q.shape().to_vec();
        let (heads_axis, seq_axis) = if self.token_major { (2, 1) } else { (1, 2) };
        ensure!(
            shape.len() == 4
                && k.shape() == shape.as_slice()
                && v.shape() == shape.as_slice()
                && self.block > 0
                && shape[seq_axis] % self.block == 0
                && self.global <= shape[seq_axis],
            "AutoglmWindowAttention: Q {:?}, K {:?}, V {:?} must be one [batch, heads, seq, dim] \
             shape ([batch, seq, heads, dim] token-major), seq whole blocks of {} and at least {} \
             global tokens",
            q.shape(),
            k.shape(),
            v.shape(),
            self.block,
            self.global
        );
        let d = WindowDims {
            batch: shape[0],
            heads: shape[heads_axis],
            blocks: shape[seq_axis] / self.block,
            block: self.block,
            head_dim: shape[3],
            global: self.global,
            token_major: self.token_major,
            token_major_out: self.token_major_out,
        };
        ensure!(
            band.shape() == [d.batch, 1, d.blocks, d.block, 3 * d.block]
                && global_bias.shape() == [d.batch, 1, 1, 1, d.global],
            "AutoglmWindowAttention: biases {:?} and {:?} for {d:?}",
            band.shape(),
            global_bias.shape()
        );
        if let Some(key_bias) = &key_bias {
            ensure!(
                key_bias.shape() == [d.batch, 1, 1, d.seq()],
                "AutoglmWindowAttention: key bias {:?} for {d:?}",
                key_bias.shape()
            );
        }
        let out_shape: TVec<usize> = if self.global_queries {
            let mut shape: TVec<usize> = shape.iter().copied().collect();
            if self.token_major != self.token_major_out {
                shape.swap(1, 2);
            }
            shape
        } else {
            tvec![d.batch, d.heads, d.blocks, d.block, d.head_dim]
        };
        // SAFETY: no value is read before it is written: `window_attention` writes every one
        // (each block's rows of each head of each item, `window_attention_on`), or fails, and
        // then the tensor is dropped unread. (Zeroed first, the output was written twice.)
        let mut out = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        {
            let (q, k, v, band, global_bias) = (
                q.try_as_plain_ram()?,
                k.try_as_plain_ram()?,
                v.try_as_plain_ram()?,
                band.try_as_plain_ram()?,
                global_bias.try_as_plain_ram()?,
            );
            let key_bias = key_bias
                .as_ref()
                .map(|t| t.try_as_plain_ram())
                .transpose()?;
            let mut out_ram = out.try_as_plain_ram_mut()?;
            window_attention(
                d,
                self.scale,
                [
                    q.as_slice::<f32>()?,
                    k.as_slice::<f32>()?,
                    v.as_slice::<f32>()?,
                ],
                Biases {
                    band: band.as_slice::<f32>()?,
                    global: global_bias.as_slice::<f32>()?,
                    keys: key_bias.as_ref().map(|k| k.as_slice::<f32>()).transpose()?,
                },
                out_ram.as_slice_mut::<f32>()?,
                &tract_linalg::multithread::current_tract_executor(),
            )?;
        }
        Ok(tvec![out.into_tvalue()])
    }
}

/// The biases of one call.
#[derive(Debug, Clone, Copy)]
pub struct Biases<'a> {
    /// The band `[batch, blocks, block, 3·block]`.
    pub band: &'a [f32],
    /// The global keys' `[batch, global]`.
    pub global: &'a [f32],
    /// With it, the key bias `[batch, seq]`: the first `global` queries then attend to every
    /// key with this bias, and their rows of the output are that dense attention's.
    pub keys: Option<&'a [f32]>,
}

/// The kernel: `qkv` and `out` are `[batch, heads, seq, head_dim]`; its products on the
/// process's f32 tier ([`fgemm::Tier::chosen`]).
pub fn window_attention(
    d: WindowDims,
    scale: f32,
    qkv: [&[f32]; 3],
    bias: Biases,
    out: &mut [f32],
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<()> {
    window_attention_on(fgemm::Tier::chosen(), d, scale, qkv, bias, out, executor)
}

/// [`window_attention`] on a given f32 tier.
pub fn window_attention_on(
    tier: fgemm::Tier,
    d: WindowDims,
    scale: f32,
    qkv: [&[f32]; 3],
    bias: Biases,
    out: &mut [f32],
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<()> {
    let total = d.batch * d.heads * d.seq() * d.head_dim;
    ensure!(
        qkv.iter().all(|t| t.len() == total)
            && out.len() == total
            && bias.band.len() == d.batch * d.blocks * d.block * 3 * d.block
            && bias.global.len() == d.batch * d.global
            && bias.keys.is_none_or(|k| k.len() == d.batch * d.seq())
            && d.global <= d.seq(),
        "AutoglmWindowAttention: buffer sizes do not match {d:?}"
    );
    if total == 0 {
        return Ok(());
    }
    // The window columns each group of a block's query rows needs ([`one_block`]), once for
    // all heads (they share the band).
    let group = GROUP_TILES * tier.mr();
    let groups = d.block.div_ceil(group);
    let global_live: Vec<bool> = (0..d.batch)
        .map(|b| {
            bias.global[b * d.global..(b + 1) * d.global]
                .iter()
                .any(|x| live(*x))
        })
        .collect();
    let columns: Vec<std::ops::Range<usize>> = (0..d.batch * d.blocks * groups)
        .map(|i| {
            let (item_block, g) = (i / groups, i % groups);
            let global_live = global_live[item_block / d.blocks];
            let (r0, width) = (g * group, 3 * d.block);
            let rows = group.min(d.block - r0);
            let band = &bias.band[(item_block * d.block + r0) * width..][..rows * width];
            whole_panels(live_columns(band, width, global_live), d.block, tier.nr())
        })
        .collect();
    let out = OutPtr(out.as_mut_ptr());
    // The global queries' context rows of head `h` of item `b` into its rows of `out`.
    let write = |(b, h): (usize, usize), first: usize, context: &[f32]| {
        let (out_head, out_row) = d.out_head(b, h);
        for (i, values) in context.chunks(d.head_dim).enumerate() {
            // SAFETY: the sizes were checked above, so these rows of this head are within
            // `out`; each task writes only its own head's rows (in token-major order its
            // columns of these rows), after the blocks' tasks are done, and `run_tasks` joins
            // every task before `out`'s borrow ends.
            unsafe { out.write(out_head + (first + i) * out_row, values) };
        }
    };
    let heads: Vec<usize> = (0..d.heads).collect();
    let biases = [bias.band, bias.global];
    // Tasks: a block's groups of rows, each through every head; all of a block's groups in
    // one task, or, with fewer than two blocks per thread, the groups split so that every
    // thread has work (at 128 tokens, one block: every head of it in one task was one thread).
    let threads = super::threads(executor);
    let parts = if d.blocks >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(d.blocks).min(groups)
    };
    let per_task = groups.div_ceil(parts);
    let tasks: Vec<(usize, usize, usize)> = (0..d.blocks)
        .flat_map(|c| {
            (0..groups)
                .step_by(per_task)
                .map(move |g| (c, g, groups.min(g + per_task)))
        })
        .collect();
    for b in 0..d.batch {
        // Every head's keys and values packed, then the blocks in order, each through every
        // head: a block's band (`block × 3·block` biases, 196 KB at 128) stays in the core's
        // cache for the twelve heads that add it. Head by head, each head read the whole band
        // again: at 4,096 tokens 6.3 MB, twelve times a layer.
        let slots: Vec<std::sync::Mutex<Option<Scratch>>> =
            heads.iter().map(|_| Default::default()).collect();
        run_tasks(&heads, executor, |h| {
            let (head, _) = d.head(b, h);
            let scratch = Scratch::new(tier, d, [&qkv[1][head..], &qkv[2][head..]])?;
            *slots[h].lock().unwrap_or_else(|e| e.into_inner()) = Some(scratch);
            Ok(())
        })?;
        let scratches = slots
            .into_iter()
            .map(|slot| slot.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect::<Option<Vec<Scratch>>>()
            .ok_or_else(|| format_err!("AutoglmWindowAttention: a head was not packed"))?;
        // Scores buffers, one per task running (taken and given back: made per block, they
        // were zeroed memory of 197 KB per block of 128).
        let buffers = std::sync::Mutex::new(Vec::<Vec<f32>>::new());
        run_tasks(&tasks, executor, |(c, g0, g1)| {
            let columns = &columns[(b * d.blocks + c) * groups..][..groups];
            let taken = buffers.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut scores = taken.unwrap_or_else(|| vec![0f32; d.block * d.width() + 16]);
            // The task's rows of the block.
            let (r0, r1) = (g0 * group, d.block.min(g1 * group));
            for (h, scratch) in scratches.iter().enumerate() {
                // These rows of this head in `out`, written in place.
                let (out_head, out_row) = d.out_head(b, h);
                let first = out_head + (c * d.block + r0) * out_row;
                let len = (r1 - r0 - 1) * out_row + d.head_dim;
                // SAFETY: the sizes were checked above, so these rows of this head are within
                // `out`; this task alone touches these rows (of every head: in token-major
                // order the slice also spans the other heads' columns of these rows, which
                // this task writes too, one head at a time, each head's slice dropped before
                // the next is made); `run_tasks` joins every task before `out`'s borrow ends.
                let context = unsafe { out.slice(first, len) };
                let at = (b, h, c, g0..g1);
                let (queries, context) = (qkv[0], (context, out_row));
                one_block(
                    tier,
                    d,
                    scale,
                    queries,
                    biases,
                    at,
                    columns,
                    scratch,
                    &mut scores,
                    context,
                )?;
            }
            buffers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(scores);
            Ok(())
        })?;
        if let Some(keys) = bias.keys {
            let keys = &keys[b * d.seq()..(b + 1) * d.seq()];
            run_tasks(&heads, executor, |h| {
                let (head, _) = d.head(b, h);
                let rows = global_rows(tier, d, scale, &qkv[0][head..], keys, &scratches[h])?;
                write((b, h), 0, &rows);
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// The global queries of one head (its first `global` rows, `queries` from the head's first
/// value on) attending to every key with the key bias `keys` (`[seq]`): their context rows.
fn global_rows(
    tier: fgemm::Tier,
    d: WindowDims,
    scale: f32,
    queries: &[f32],
    keys: &[f32],
    scratch: &Scratch,
) -> TractResult<Vec<f32>> {
    let (seq, dh, rows) = (d.seq(), d.head_dim, d.global);
    let mut buffer = vec![0f32; rows * seq + 16];
    let scores = aligned(&mut buffer, rows * seq);
    let q = fgemm::Strided {
        data: queries,
        row: d.token_stride(),
    };
    // scores = scale · Qg · Kᵀ + key bias, the key blocks packed for the window reused.
    for (n, packed) in scratch.key_blocks.iter().enumerate() {
        let cols = n * d.block..(n + 1) * d.block;
        let store = fgemm::Store::AddRow(&keys[cols.clone()]);
        let out = &mut scores[cols.start..];
        fgemm::gemm(tier, rows, scale, q, packed.rows(0..dh), store, out, seq)?;
    }
    for row in scores.chunks_mut(seq) {
        super::softmax::softmax_in_place(tier, row);
    }
    let mut context = vec![0f32; rows * dh];
    let p = fgemm::Strided {
        data: scores,
        row: seq,
    };
    let store = fgemm::Store::Overwrite;
    let values = scratch.values.rows(0..seq);
    fgemm::gemm(tier, rows, 1.0, p, values, store, &mut context, dh)?;
    Ok(context)
}

/// One head's keys and values, packed once for the products, read by every query block.
struct Scratch {
    /// Kᵀ of each key block (`[head_dim, block]`).
    key_blocks: Vec<fgemm::Packed>,
    /// The global keys as rows (`[global, head_dim]`), for [`few_key_scores`].
    global_keys: Vec<f32>,
    /// V of the whole head, `[seq, head_dim]`.
    values: fgemm::Packed,
}

impl Scratch {
    /// `kv`: the head's K and V, from its first token on.
    fn new(tier: fgemm::Tier, d: WindowDims, kv: [&[f32]; 2]) -> TractResult<Scratch> {
        let (dh, row) = (d.head_dim, d.token_stride());
        let key_blocks = (0..d.blocks)
            .map(|n| {
                let mut packed = fgemm::Packed::default();
                packed.pack(tier, &kv[0][n * d.block * row..], (dh, d.block), (1, row))?;
                Ok(packed)
            })
            .collect::<TractResult<Vec<_>>>()?;
        let global_keys = (0..d.global)
            .flat_map(|g| &kv[0][g * row..g * row + dh])
            .copied()
            .collect();
        let mut values = fgemm::Packed::default();
        values.pack(tier, kv[1], (d.seq(), dh), (row, 1))?;
        Ok(Scratch {
            key_blocks,
            global_keys,
            values,
        })
    }
}

/// A band or global bias at or below this masks its key for good. The exporter writes 0 or
/// −1e9 (−2e9 where two masks add); `exp(score + bias − max)` of such a key is exactly 0 in f32
/// whenever its row has a key with a bias above this (scores of real models are many orders of
/// magnitude smaller than 1e8), so such keys can be skipped without changing the result.
pub const MASKED_KEY: f32 = -1.0e8;

/// Whether a bias leaves its key in play (NaN does: the graph would propagate it).
fn live(bias: f32) -> bool {
    bias > MASKED_KEY || bias.is_nan()
}

/// The window columns (of `3·block`) a group of query rows needs: from the first key any of
/// them sees to past the last one (`band_rows` are the group's rows of the band bias). Every
/// column when one row sees no key at all, window or global (its softmax is then over masked
/// keys only, and all of them count); none when only global keys are seen.
fn live_columns(band_rows: &[f32], width: usize, global_live: bool) -> std::ops::Range<usize> {
    let mut range: Option<std::ops::Range<usize>> = None;
    // Sixteen biases at a time, whether any is live (a loop the compiler vectorizes), then the
    // one chunk found value by value.
    const CHUNK: usize = 16;
    let any_live = |c: &[f32]| c.iter().fold(false, |any, b| any | live(*b));
    for row in band_rows.chunks_exact(width) {
        let first = row.chunks(CHUNK).position(any_live).and_then(|c| {
            let start = c * CHUNK;
            row[start..]
                .iter()
                .position(|b| live(*b))
                .map(|i| start + i)
        });
        match first {
            None if !global_live => return 0..width,
            None => {}
            Some(first) => {
                // The last live bias: chunks from the row's end (the last one, from its
                // start, the shorter).
                let end = row
                    .rchunks(CHUNK)
                    .position(any_live)
                    .and_then(|c| {
                        let end = width - c * CHUNK;
                        row[..end].iter().rposition(|b| live(*b))
                    })
                    .unwrap_or(first)
                    + 1;
                range = Some(match range {
                    None => first..end,
                    Some(r) => r.start.min(first)..r.end.max(end),
                });
            }
        }
    }
    range.unwrap_or(0..0)
}

/// `cols` (of `3·block`, three key blocks each packed in panels of `nr`) widened to whole
/// panels of their key blocks.
fn whole_panels(cols: std::ops::Range<usize>, block: usize, nr: usize) -> std::ops::Range<usize> {
    if cols.is_empty() {
        return cols;
    }
    let j = cols.start / block;
    let start = j * block + (cols.start - j * block) / nr * nr;
    let j = (cols.end - 1) / block;
    let end = j * block + ((cols.end - j * block).div_ceil(nr) * nr).min(block);
    start..end
}

/// Query rows per group: this many tiles of the tier.
const GROUP_TILES: usize = 4;
/// The most rows of a group on any tier.
const MAX_GROUP: usize = GROUP_TILES * 8;

/// The groups `groups` of rows of query block `c` of head `h` of item `b`: their scores (in
/// `scores`, which holds `block · (3·block + global) + 16` values), softmax, and context rows
/// (`head_dim` values each, `ldc` apart in `context`, from the first group's first row on).
/// The block's rows go in groups of [`GROUP_TILES`] tiles,
/// and group `g` scores only the window columns `columns[g]` (some row of it sees them:
/// [`live_columns`]); with the exporter's band (radius `block`), a group of 32 rows needs 288
/// of the 384 window columns.
#[allow(clippy::too_many_arguments)]
fn one_block(
    tier: fgemm::Tier,
    d: WindowDims,
    scale: f32,
    queries: &[f32],
    bias: [&[f32]; 2],
    (b, h, c, groups): (usize, usize, usize, std::ops::Range<usize>),
    columns: &[std::ops::Range<usize>],
    scratch: &Scratch,
    scores: &mut [f32],
    (context, ldc): (&mut [f32], usize),
) -> TractResult<()> {
    let (block, dh, global) = (d.block, d.head_dim, d.global);
    let (head, row) = d.head(b, h);
    let band = &bias[0][(b * d.blocks + c) * block * 3 * block..][..block * 3 * block];
    let global_bias = &bias[1][b * global..(b + 1) * global];
    // Key blocks c-1, c, c+1 in window columns [0, block), [block, 2·block), [2·block,
    // 3·block); a block outside the sequence is the graph's zero block: scores 0, no values.
    let neighbours = |j: usize| (c + j).checked_sub(1).filter(|&n| n < d.blocks);
    let group = GROUP_TILES * tier.mr();
    let first = groups.start * group;
    for g in groups {
        let r0 = g * group;
        let rows = group.min(block - r0);
        let band = &band[r0 * 3 * block..(r0 + rows) * 3 * block];
        let cols = columns[g].clone();
        // This group's context rows (`rows` rows of `dh` at stride `ldc`).
        let context = &mut context[(r0 - first) * ldc..(r0 - first + rows - 1) * ldc + dh];
        // A row of scores: the window columns `cols`, then the global keys.
        let width = cols.len() + global;
        if width == 0 {
            // No key at all: no context.
            context.chunks_mut(ldc).for_each(|row| row[..dh].fill(0.0));
            continue;
        }
        let scores = aligned(scores, rows * width);
        // Key block j's columns within `cols` (as columns of that block), and where they
        // start in a row of `scores`.
        let parts: [Option<(usize, std::ops::Range<usize>, usize)>; 3] = std::array::from_fn(|j| {
            let (lo, hi) = (cols.start.max(j * block), cols.end.min((j + 1) * block));
            (lo < hi).then(|| (j, lo - j * block..hi - j * block, lo - cols.start))
        });
        let q = fgemm::Strided {
            data: &queries[head + (c * block + r0) * row..],
            row,
        };
        // scores = scale · Q(rows) · keys + bias (the band's, the global keys'), then softmax.
        for (j, keys, at) in parts.iter().flatten() {
            let bias = &band[j * block + keys.start..];
            match neighbours(*j) {
                Some(n) => {
                    let keys = scratch.key_blocks[n].rows(0..dh).columns(keys.clone())?;
                    let store = fgemm::Store::AddMatrix(bias, 3 * block);
                    fgemm::gemm(tier, rows, scale, q, keys, store, &mut scores[*at..], width)?
                }
                None => {
                    // Zero keys: their scores are their biases.
                    for (row, bias) in scores.chunks_mut(width).zip(bias.chunks(3 * block)) {
                        row[*at..*at + keys.len()].copy_from_slice(&bias[..keys.len()]);
                    }
                }
            }
        }
        if global > 0 {
            let out = &mut scores[cols.len()..];
            few_key_scores(
                q,
                rows,
                (&scratch.global_keys, dh),
                scale,
                global_bias,
                out,
                width,
            );
        }
        // e^(score − max) per row; the rows' sums divide the context's few columns at the end
        // instead of every score (as the dense attention does).
        let mut inverse = [0f32; MAX_GROUP];
        for (r, row) in scores.chunks_mut(width).enumerate() {
            inverse[r] = super::softmax::softmax_unnormalized(tier, row);
        }
        // context(rows) = Σ P[:, part] · V(part) over the parts in the sequence,
        // + P[:, global] · V[..global].
        let mut first = true;
        let mut accumulate = |col: usize, values: std::ops::Range<usize>| {
            let p = fgemm::Strided {
                data: &scores[col..],
                row: width,
            };
            let store = if first {
                fgemm::Store::Overwrite
            } else {
                fgemm::Store::Accumulate
            };
            first = false;
            let values = scratch.values.rows(values);
            fgemm::gemm(tier, rows, 1.0, p, values, store, context, ldc)
        };
        for (j, keys, at) in parts.iter().flatten() {
            if let Some(n) = neighbours(*j) {
                accumulate(*at, n * block + keys.start..n * block + keys.end)?;
            }
        }
        if global > 0 {
            accumulate(cols.len(), 0..global)?;
        }
        if first {
            // Only keys outside the sequence (zero values): no context.
            context.chunks_mut(ldc).for_each(|row| row[..dh].fill(0.0));
        }
        for (values, inverse) in context.chunks_mut(ldc).zip(inverse) {
            values[..dh].iter_mut().for_each(|v| *v *= inverse);
        }
    }
    Ok(())
}

/// `out[r·ld + g] = scale · q_r · key_g + bias[g]` for the `rows` query rows `q` and a few keys
/// (`keys`: rows of `dh`): the global keys' scores. As a product, one global key took a whole
/// tile of columns (32 on AVX-512) through the generic tile, a tenth of the scores' work for one
/// column of 289.
fn few_key_scores(
    q: fgemm::Strided,
    rows: usize,
    (keys, dh): (&[f32], usize),
    scale: f32,
    bias: &[f32],
    out: &mut [f32],
    ld: usize,
) {
    for r in 0..rows {
        let q = &q.data[r * q.row..][..dh];
        let out = &mut out[r * ld..];
        for ((key, bias), out) in keys.chunks_exact(dh).zip(bias).zip(out.iter_mut()) {
            *out = scale * dot(q, key) + bias;
        }
    }
}

/// `Σ a[i]·b[i]` in sixteen independent lanes (vectorized without the CPU's features: a short
/// product of the head's width, 32).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let (a, b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a
        .remainder()
        .iter()
        .zip(b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut lanes = [0f32; LANES];
    for (a, b) in a.zip(b) {
        for i in 0..LANES {
            lanes[i] += a[i] * b[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Replaces every window attention of the exporter's graph (the softmax over its concatenated
/// window and global scores, everything from Q, K and V to the summed context) by
/// [`WindowAttention`]; returns how many. Run before the key-bias adds are rewritten.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    super::fuse_matches(
        model,
        "autoglm fused window attention",
        "autoglm_window_attention",
        |model, id| Ok(matches(model, id)?.map(|f| (f.inputs, f.op, f.context))),
    )
}

struct Found {
    /// Q, K, V, band bias, global bias.
    inputs: [OutletId; 5],
    op: WindowAttention,
    /// The summed context the op replaces.
    context: OutletId,
}

fn op_at<O: Op>(model: &TypedModel, outlet: OutletId) -> Option<(&TypedNode, &O)> {
    let node = model.node(outlet.node);
    (outlet.slot == 0).then_some(())?;
    node.op_as::<O>().map(|op| (node, op))
}

/// `x` split into blocks: `[b, h, s, dh]` reshaped at axis 2 to `[b, h, blocks, block, dh]`;
/// then `x` and `block`.
fn unblocked(model: &TypedModel, outlet: OutletId) -> Option<(OutletId, usize)> {
    let (node, op) = op_at::<AxisOp>(model, outlet)?;
    let AxisOp::Reshape(2, from, to) = op else {
        return None;
    };
    let block = to.get(1)?.to_usize().ok()?;
    (from.len() == 1 && to.len() == 2 && block > 0).then_some((node.inputs[0], block))
}

/// `Slice(x, axis, start..end)` with concrete bounds: `x`, start, end.
fn sliced(model: &TypedModel, outlet: OutletId, axis: usize) -> Option<(OutletId, TDim, TDim)> {
    let (node, op) = op_at::<Slice>(model, outlet)?;
    (op.axis == axis).then(|| (node.inputs[0], op.start.clone(), op.end.clone()))
}

fn is_zeros(model: &TypedModel, outlet: OutletId) -> bool {
    let Ok(fact) = model.outlet_fact(outlet) else {
        return false;
    };
    let zero = |t: &Arc<Tensor>| {
        t.try_as_plain_ram()
            .ok()
            .and_then(|r| {
                r.as_slice::<f32>()
                    .ok()
                    .map(|v| v.iter().all(|x| *x == 0.0))
            })
            .unwrap_or(false)
    };
    fact.datum_type == f32::datum_type()
        && (fact.uniform.as_ref().is_some_and(zero) || fact.konst.as_ref().is_some_and(zero))
}

/// The three neighbour blocks of `x` along axis 2 as `neighbours` builds them: `[zeros,
/// x[..blocks-1]]`, `x`, `[x[1..], zeros]` (each `[b, h, blocks, block, dh]`). Returns the
/// unblocked tensor and the block size when `outlets` are exactly these.
fn neighbour_blocks(model: &TypedModel, outlets: [OutletId; 3]) -> Option<(OutletId, usize)> {
    let centre = outlets[1];
    let (x, block) = unblocked(model, centre)?;
    let blocks = model.outlet_fact(centre).ok()?.shape.get(2)?.clone();
    let shifted = |outlet: OutletId, zeros_first: bool| -> Option<()> {
        let (node, op) = op_at::<TypedConcat>(model, outlet)?;
        let [a, b] = node.inputs.as_slice() else {
            return None;
        };
        let (zeros, part) = if zeros_first { (*a, *b) } else { (*b, *a) };
        let (from, start, end) = sliced(model, part, 2)?;
        let (want_start, want_end) = if zeros_first {
            (TDim::Val(0), blocks.clone() - 1)
        } else {
            (TDim::Val(1), blocks.clone())
        };
        let same = |a: &TDim, b: &TDim| (a.clone() - b.clone()).simplify() == TDim::Val(0);
        let zeros_one_block = model
            .outlet_fact(zeros)
            .ok()
            .is_some_and(|f| f.rank() == 5 && f.shape[2] == TDim::Val(1));
        (op.axis == 2
            && is_zeros(model, zeros)
            && zeros_one_block
            && unblocked(model, from) == Some((x, block))
            && same(&start, &want_start)
            && same(&end, &want_end))
        .then_some(())
    };
    shifted(outlets[0], true)?;
    shifted(outlets[2], false)?;
    Some((x, block))
}

/// Whether `id` is the softmax of one of the exporter's window attentions (with global keys).
fn matches(model: &TypedModel, id: usize) -> TractResult<Option<Found>> {
    let softmax = model.node(id);
    let Some(op) = softmax.op_as::<Softmax>() else {
        return Ok(None);
    };
    let fact = &softmax.outputs[0].fact;
    if fact.rank() != 5
        || fact.datum_type != f32::datum_type()
        || op.axes.as_slice() != [4]
        || op.kind != SoftmaxKind::Softmax
        || op.quant_output_dt.is_some()
        || softmax.outputs.len() != 1
    {
        return Ok(None);
    }
    // Scores: concat(window scores, global scores) on the last axis.
    let Some((concat, cat)) = op_at::<TypedConcat>(model, softmax.inputs[0]) else {
        return Ok(None);
    };
    let [window_scores, global_scores] = concat.inputs.as_slice() else {
        return Ok(None);
    };
    if cat.axis != 4 || !single_use(model, softmax.inputs[0]) {
        return Ok(None);
    }
    let Some(([qb, kw], scale, band)) = biased_scores(model, *window_scores, WINDOW_SCORES)? else {
        return Ok(None);
    };
    let Some(([qb_g, kg], scale_g, global_bias)) =
        biased_scores(model, *global_scores, GLOBAL_SCORES)?
    else {
        return Ok(None);
    };
    if qb_g != qb || scale_g != scale {
        return Ok(None);
    }
    let Some((q, block)) = unblocked(model, qb) else {
        return Ok(None);
    };
    let Some((kw_node, kw_cat)) = op_at::<TypedConcat>(model, kw) else {
        return Ok(None);
    };
    let Ok(kw_parts) = <[OutletId; 3]>::try_from(kw_node.inputs.as_slice()) else {
        return Ok(None);
    };
    let k = match neighbour_blocks(model, kw_parts) {
        Some((k, b)) if kw_cat.axis == 3 && b == block => k,
        _ => return Ok(None),
    };
    let global = match sliced(model, kg, 2) {
        Some((from, TDim::Val(0), end)) if from == k => match end.to_usize() {
            Ok(g) if g > 0 => g,
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    // The context: four slices of the probabilities (three key blocks, the global keys), each
    // times its values, summed.
    let successors = model.outlet_successors(OutletId::new(id, 0));
    if successors.len() != 4 {
        return Ok(None);
    }
    let mut v = None;
    let mut window_values: [Option<OutletId>; 3] = [None; 3];
    let mut products = vec![];
    for inlet in successors {
        let slice_out = OutletId::new(inlet.node, 0);
        let Some((_, start, end)) = sliced(model, slice_out, 4) else {
            return Ok(None);
        };
        let (Ok(start), Ok(end)) = (start.to_usize(), end.to_usize()) else {
            return Ok(None);
        };
        if !single_use(model, slice_out) {
            return Ok(None);
        }
        let product = model.outlet_successors(slice_out)[0];
        if product.slot != 0 {
            return Ok(None);
        }
        let product = OutletId::new(product.node, 0);
        if start == 3 * block && end == 3 * block + global {
            let Some([_, vg]) = einsum(model, product, GLOBAL_CONTEXT) else {
                return Ok(None);
            };
            match sliced(model, vg, 2) {
                Some((from, TDim::Val(0), end)) if end == TDim::from(global) => v = Some(from),
                _ => return Ok(None),
            }
        } else if start % block == 0 && end == start + block && end <= 3 * block {
            let Some([_, values]) = einsum(model, product, WINDOW_CONTEXT) else {
                return Ok(None);
            };
            window_values[start / block] = Some(values);
        } else {
            return Ok(None);
        }
        products.push(product);
    }
    let (Some(v), [Some(v0), Some(v1), Some(v2)]) = (v, window_values) else {
        return Ok(None);
    };
    if neighbour_blocks(model, [v0, v1, v2]) != Some((v, block)) {
        return Ok(None);
    }
    // The products are summed by a tree of adds, each value used once: its root is the context.
    let mut terms = products;
    while terms.len() > 1 {
        let next = terms.iter().enumerate().find_map(|(i, &t)| {
            let succ = model.outlet_successors(t);
            let [inlet] = succ else {
                return None;
            };
            let add = model.node(inlet.node);
            let other = add.inputs[1 - inlet.slot.min(1)];
            let j = terms.iter().position(|&u| u == other && u != t)?;
            (is_bin::<Add>(add) && single_use(model, other)).then_some((i, j, add.id))
        });
        let Some((i, j, add)) = next else {
            return Ok(None);
        };
        let (a, b) = (terms[i], terms[j]);
        terms.retain(|&u| u != a && u != b);
        terms.push(OutletId::new(add, 0));
    }
    let context = terms[0];
    // Shapes: Q, K, V one [b, h, s, dh] f32 shape; the biases what the op reads.
    let qf = model.outlet_fact(q)?;
    if qf.rank() != 4 || qf.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let same = [k, v].iter().all(|o| {
        model
            .outlet_fact(*o)
            .is_ok_and(|f| f.shape == qf.shape && f.datum_type == qf.datum_type)
    });
    let bf = model.outlet_fact(band)?;
    let gf = model.outlet_fact(global_bias)?;
    let sf = model.outlet_fact(*window_scores)?;
    let one = TDim::Val(1);
    let band_ok = bf.rank() == 5
        && sf.rank() == 5
        && bf.shape[0] == qf.shape[0]
        && bf.shape[1] == one
        && (2..5).all(|i| bf.shape[i] == sf.shape[i])
        && sf.shape[4] == TDim::from(3 * block);
    let global_ok = gf.rank() == 5
        && gf.shape[0] == qf.shape[0]
        && (1..4).all(|i| gf.shape[i] == one)
        && gf.shape[4] == TDim::from(global);
    let context_ok = model.outlet_fact(context)?.rank() == 5;
    if !same || !band_ok || !global_ok || !context_ok {
        return Ok(None);
    }
    Ok(Some(Found {
        inputs: [q, k, v, band, global_bias],
        op: WindowAttention {
            scale,
            block,
            global,
            global_queries: false,
            token_major: false,
            token_major_out: false,
        },
        context,
    }))
}

/// Folds the graph's global queries into each [`WindowAttention`] ([`fuse`] first): the
/// exporter computes them apart, a dense attention of the first `global` queries over every
/// key (`softmax(scale · Qg·Kᵀ + key_bias) · V`), and puts their rows before the window's
/// others (`concat(global rows, window context[global..])` on the sequence axis). On tract's
/// plan that was two products of `global` rows per layer with K and V packed again for them
/// (7 % of a run at 4,096 tokens); the op has both packed already. Returns how many.
pub fn fuse_global_queries(model: &mut TypedModel) -> TractResult<usize> {
    super::fuse_matches(
        model,
        "autoglm window attention's global queries",
        "autoglm_global_queries",
        global_queries,
    )
}

/// Lets each [`WindowAttention`] with its global queries ([`fuse_global_queries`] first) read
/// Q, K, V (and write its output, where the graph moves it back) in the linear layers'
/// `[batch, seq, heads, head_dim]` layout instead of the graph's `[batch, heads, seq,
/// head_dim]`: up to four copies of the activations per layer gone (3 % of an int8 run at
/// 4,096 tokens). Returns how many.
pub fn fuse_token_major(model: &mut TypedModel) -> TractResult<usize> {
    super::fuse_matches(
        model,
        "autoglm window attention, token-major",
        "autoglm_token_major",
        token_major,
    )
}

/// Lets each token-major [`WindowAttention`] ([`fuse_token_major`] first) whose output is read
/// by one product (the fp32 graph's output projection: tract folds the graph's transpose of
/// the context into it, then copies the context back to token-major and packs it, per layer,
/// 2.5 % of a run at 4,096 tokens) write that layout itself, the product reading it with its
/// input's axes relabelled. The projection is then a plain linear layer, which
/// [`super::flinear`] fuses where it is chosen. Returns how many.
pub fn fuse_token_major_out(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(op) = node.op_as::<WindowAttention>() else {
            continue;
        };
        if !op.token_major || op.token_major_out || node.outputs.len() != 1 {
            continue;
        }
        let [succ] = model.outlet_successors(OutletId::new(id, 0)) else {
            continue;
        };
        let product = model.node(succ.node);
        let Some(einsum) = product.op_as::<EinSum>() else {
            continue;
        };
        // The same values read in the other layout: axes 1 and 2 of that input swap labels.
        let Some(axes) = einsum
            .axes
            .change_axis_sink(InOut::In(succ.slot), &AxisOp::Move(1, 2))?
        else {
            continue;
        };
        if product.outputs.len() != 1 {
            continue;
        }
        let mut patch = TypedModelPatch::new("autoglm window attention, token-major output");
        let taps = patch.taps(model, &node.inputs)?;
        let attention = WindowAttention {
            token_major_out: true,
            ..op.clone()
        };
        let name = format!("{}.autoglm_token_major_out", node.name);
        let context = patch.wire_node(name, attention, &taps)?[0];
        let mut inputs = patch.taps(model, &product.inputs)?;
        inputs[succ.slot] = context;
        let einsum = EinSum {
            axes,
            ..einsum.clone()
        };
        let name = format!("{}.autoglm_token_major_in", product.name);
        let out = patch.wire_node(name, einsum, &inputs)?[0];
        patch.shunt_outside(model, OutletId::new(product.id, 0), out)?;
        patch.apply(model)?;
        fused += 1;
    }
    if fused > 0 {
        model.compact()?;
    }
    Ok(fused)
}

/// `AxisOp::Move(1, 2)` (`[a, b, c, …]` to `[a, c, b, …]`) at `outlet`: its input.
fn moved_1_2(model: &TypedModel, outlet: OutletId) -> Option<OutletId> {
    let (node, op) = op_at::<AxisOp>(model, outlet)?;
    matches!(op, AxisOp::Move(1, 2)).then_some(node.inputs[0])
}

/// Whether `id` is a [`WindowAttention`] with global queries whose Q, K, V are each moved from
/// axis 1 to 2: then the unmoved inputs, the token-major op and the outlet it replaces (the
/// move back of its output, if that is all that follows it; else its own).
#[allow(clippy::type_complexity)]
fn token_major(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<([OutletId; 6], WindowAttention, OutletId)>> {
    let node = model.node(id);
    let Some(op) = node.op_as::<WindowAttention>() else {
        return Ok(None);
    };
    let Ok([q, k, v, band, global_bias, key_bias]) =
        <[OutletId; 6]>::try_from(node.inputs.as_slice())
    else {
        return Ok(None);
    };
    if !op.global_queries || op.token_major || node.outputs.len() != 1 {
        return Ok(None);
    }
    let (Some(q), Some(k), Some(v)) = (
        moved_1_2(model, q),
        moved_1_2(model, k),
        moved_1_2(model, v),
    ) else {
        return Ok(None);
    };
    // The output in the linear layers' layout where the graph moves it back (the int8 graph:
    // its dynamic quantization reads `[batch, seq, hidden]`); else as before (fp32: tract folds
    // that move into the output projection, which `fuse_token_major_out` then takes over).
    let output = OutletId::new(id, 0);
    let back = match model.outlet_successors(output) {
        [succ] => {
            Some(OutletId::new(succ.node, 0)).filter(|&o| moved_1_2(model, o) == Some(output))
        }
        _ => None,
    };
    let qf = model.outlet_fact(q)?;
    let same = [k, v].iter().all(|o| {
        model
            .outlet_fact(*o)
            .is_ok_and(|f| f.shape == qf.shape && f.datum_type == qf.datum_type)
    });
    if qf.rank() != 4 || !same {
        return Ok(None);
    }
    let op = WindowAttention {
        token_major: true,
        token_major_out: back.is_some(),
        ..op.clone()
    };
    let replaced = back.unwrap_or(output);
    Ok(Some(([q, k, v, band, global_bias, key_bias], op, replaced)))
}

/// Whether `id` is the concat of a window attention's global query rows and the rest of its
/// context: then the six inputs of the op that computes both, and the concat's outlet.
#[allow(clippy::type_complexity)]
fn global_queries(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<([OutletId; 6], WindowAttention, OutletId)>> {
    let concat = model.node(id);
    let Some(cat) = concat.op_as::<TypedConcat>() else {
        return Ok(None);
    };
    let [dense, rest] = concat.inputs.as_slice() else {
        return Ok(None);
    };
    if cat.axis != 2 || concat.outputs.len() != 1 {
        return Ok(None);
    }
    // rest = Slice(Reshape(window attention), axis 2, global..seq)
    let Some((unblocked, start, end)) = sliced(model, *rest, 2) else {
        return Ok(None);
    };
    let Some((reshape, AxisOp::Reshape(2, from, to))) = op_at::<AxisOp>(model, unblocked) else {
        return Ok(None);
    };
    let Some((window, op)) = op_at::<WindowAttention>(model, reshape.inputs[0]) else {
        return Ok(None);
    };
    let seq = model.outlet_fact(unblocked)?.shape[2].clone();
    let same = |a: &TDim, b: &TDim| (a.clone() - b.clone()).simplify() == TDim::Val(0);
    if op.global_queries
        || op.global == 0
        || from.len() != 2
        || to.len() != 1
        || !same(&start, &TDim::from(op.global))
        || !same(&end, &seq)
    {
        return Ok(None);
    }
    let Ok([q, k, v, band, global_bias]) = <[OutletId; 5]>::try_from(window.inputs.as_slice())
    else {
        return Ok(None);
    };
    // dense = softmax(scale · Slice(Q, 0..global)·Kᵀ + key_bias) · V
    let Some([probs, v_dense]) = einsum(model, *dense, GLOBAL_QUERY_CONTEXT) else {
        return Ok(None);
    };
    let softmax = model.node(probs.node);
    let softmax_ok = softmax.op_as::<Softmax>().is_some_and(|s| {
        s.axes.as_slice() == [3] && s.kind == SoftmaxKind::Softmax && s.quant_output_dt.is_none()
    });
    if !softmax_ok || probs.slot != 0 || !single_use(model, probs) || v_dense != v {
        return Ok(None);
    }
    let Some(([q_global, k_dense], scale, key_bias)) =
        biased_scores(model, softmax.inputs[0], GLOBAL_QUERY_SCORES)?
    else {
        return Ok(None);
    };
    let q_ok = matches!(
        sliced(model, q_global, 2),
        Some((from, TDim::Val(0), end)) if from == q && same(&end, &TDim::from(op.global))
    );
    let kf = model.outlet_fact(key_bias)?;
    let qf = model.outlet_fact(q)?;
    let key_bias_ok = kf.rank() == 4
        && kf.shape[0] == qf.shape[0]
        && kf.shape[1] == TDim::Val(1)
        && kf.shape[2] == TDim::Val(1)
        && same(&kf.shape[3], &seq);
    if !q_ok || k_dense != k || scale != op.scale || !key_bias_ok {
        return Ok(None);
    }
    let op = WindowAttention {
        global_queries: true,
        ..op.clone()
    };
    Ok(Some((
        [q, k, v, band, global_bias, key_bias],
        op,
        OutletId::new(id, 0),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::tests::values;

    /// The graph's definition in f64: each query block scores its three neighbouring key
    /// blocks (zero keys outside the sequence) and the global keys, plus the biases; with a
    /// key bias, the first `global` queries score every key with it instead.
    fn reference(d: WindowDims, scale: f32, qkv: [&[f32]; 3], bias: Biases) -> Vec<f32> {
        let at = |b: usize, h: usize, t: usize, i: usize| {
            ((b * d.heads + h) * d.seq() + t) * d.head_dim + i
        };
        let mut out = vec![0f32; qkv[0].len()];
        for b in 0..d.batch {
            for h in 0..d.heads {
                for c in 0..d.blocks {
                    for r in 0..d.block {
                        let m = c * d.block + r;
                        // (key token or None for a zero key, bias)
                        let mut keys: Vec<(Option<usize>, f64)> = vec![];
                        if let Some(key_bias) = bias.keys.filter(|_| m < d.global) {
                            for n in 0..d.seq() {
                                keys.push((Some(n), f64::from(key_bias[b * d.seq() + n])));
                            }
                        }
                        let dense = !keys.is_empty();
                        for j in (0..3).filter(|_| !dense) {
                            for x in 0..d.block {
                                let n = (c + j).checked_sub(1).filter(|&n| n < d.blocks);
                                let band =
                                    bias.band[((b * d.blocks + c) * d.block + r) * 3 * d.block
                                        + j * d.block
                                        + x];
                                keys.push((n.map(|n| n * d.block + x), f64::from(band)));
                            }
                        }
                        if !dense {
                            for g in 0..d.global {
                                keys.push((Some(g), f64::from(bias.global[b * d.global + g])));
                            }
                        }
                        let scores: Vec<f64> = keys
                            .iter()
                            .map(|(key, bias)| {
                                let dot: f64 = key.map_or(0.0, |n| {
                                    (0..d.head_dim)
                                        .map(|i| {
                                            f64::from(qkv[0][at(b, h, m, i)])
                                                * f64::from(qkv[1][at(b, h, n, i)])
                                        })
                                        .sum()
                                });
                                // Score plus bias in f32, as the graph adds them: a score
                                // is lost in a −1e9 bias's rounding, which is what decides
                                // a row that sees no key at all.
                                f64::from((dot * f64::from(scale)) as f32 + *bias as f32)
                            })
                            .collect();
                        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                        let sum: f64 = e.iter().sum();
                        for i in 0..d.head_dim {
                            out[at(b, h, m, i)] = keys
                                .iter()
                                .zip(&e)
                                .map(|((key, _), e)| {
                                    key.map_or(0.0, |n| e / sum * f64::from(qkv[2][at(b, h, n, i)]))
                                })
                                .sum::<f64>()
                                as f32;
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_kernel_equals_the_definition_on_shapes_and_padding() {
        let pool = tract_linalg::multithread::Executor::multithread(2);
        for (i, &(batch, heads, blocks, block, head_dim, global)) in [
            (1, 1, 1, 1, 1, 1),
            (1, 2, 1, 4, 3, 1),
            (2, 3, 3, 2, 5, 1),
            (1, 2, 5, 8, 32, 2),
            (2, 1, 4, 16, 7, 3),
            (1, 12, 3, 128, 32, 1),
            // Rows that see no key at all (no globals, two thirds of item 2 padding), and
            // groups of rows that skip masked columns, with a tail group.
            (3, 2, 4, 8, 5, 0),
            (2, 2, 4, 64, 32, 1),
            (2, 1, 3, 100, 16, 2),
            // One block of several groups: split between the pool's threads.
            (2, 3, 1, 96, 8, 1),
        ]
        .iter()
        .enumerate()
        {
            let d = WindowDims {
                batch,
                heads,
                blocks,
                block,
                head_dim,
                global,
                token_major: false,
                token_major_out: false,
            };
            let n = batch * heads * d.seq() * head_dim;
            let seed = 10 * i as u64;
            let (q, k, v) = (
                values(n, seed + 1),
                values(n, seed + 2),
                values(n, seed + 3),
            );
            // The band: |offset| within block (the exporter's radius), keys of padding (the
            // last b·seq/3 tokens of item b) and out-of-range blocks masked; the globals are
            // masked where they are padding.
            let seq = d.seq();
            let padded = |b: usize, t: usize| t >= 1 && t >= seq - b * seq / 3;
            let mut band = vec![0f32; batch * blocks * block * 3 * block];
            for b in 0..batch {
                for c in 0..blocks {
                    for r in 0..block {
                        for j in 0..3 * block {
                            let key = (c * block + j).checked_sub(block);
                            let near =
                                (j as isize - block as isize - r as isize).abs() <= block as isize;
                            let ok = key.is_some_and(|t| t < seq && t >= global && !padded(b, t))
                                && near;
                            band[((b * blocks + c) * block + r) * 3 * block + j] =
                                if ok { 0.0 } else { -1e9 };
                        }
                    }
                }
            }
            let global_bias: Vec<f32> = (0..batch)
                .flat_map(|b| (0..global).map(move |g| if padded(b, g) { -1e9 } else { 0.0 }))
                .collect();
            let key_bias: Vec<f32> = (0..batch)
                .flat_map(|b| (0..seq).map(move |t| if padded(b, t) { -1e9 } else { 0.0 }))
                .collect();
            // Without and (where there are global queries) with the global queries' rows.
            let keys = [None, Some(&key_bias[..]).filter(|_| global > 0)];
            for (biases, tier) in keys
                .into_iter()
                .enumerate()
                .filter(|(i, k)| *i == 0 || k.is_some())
                .map(|(_, keys)| Biases {
                    band: &band,
                    global: &global_bias,
                    keys,
                })
                .flat_map(|b| fgemm::Tier::available().into_iter().map(move |t| (b, t)))
            {
                let want = reference(d, 0.177, [&q, &k, &v], biases);
                let mut first: Option<Vec<f32>> = None;
                for executor in [
                    tract_linalg::multithread::Executor::SingleThread,
                    pool.clone(),
                ] {
                    let mut got = vec![f32::NAN; n];
                    window_attention_on(tier, d, 0.177, [&q, &k, &v], biases, &mut got, &executor)
                        .unwrap();
                    let worst = autoglm_testkit::max_abs_diff(&got, &want);
                    let global_rows = biases.keys.is_some();
                    assert!(
                        worst < 1e-5,
                        "{tier:?} {d:?} {global_rows}: max |Δ| {worst}"
                    );
                    match &first {
                        Some(f) => assert!(f == &got, "{tier:?} {d:?}: threads change the result"),
                        None => first = Some(got),
                    }
                }
                // Token-major: the same call on [batch, seq, heads, head_dim] tensors gives the
                // same values in that layout, bit for bit.
                let seq = d.seq();
                let swap = |x: &[f32], from_token_major: bool| {
                    let mut y = vec![0f32; x.len()];
                    for (b, t, h, i) in (0..batch).flat_map(|b| {
                        (0..seq).flat_map(move |t| {
                            (0..heads).flat_map(move |h| (0..head_dim).map(move |i| (b, t, h, i)))
                        })
                    }) {
                        let bshd = ((b * seq + t) * heads + h) * head_dim + i;
                        let bhsd = ((b * heads + h) * seq + t) * head_dim + i;
                        if from_token_major {
                            y[bhsd] = x[bshd];
                        } else {
                            y[bshd] = x[bhsd];
                        }
                    }
                    y
                };
                let (tq, tk, tv) = (swap(&q, false), swap(&k, false), swap(&v, false));
                for token_major_out in [false, true] {
                    let td = WindowDims {
                        token_major: true,
                        token_major_out,
                        ..d
                    };
                    let mut got = vec![f32::NAN; n];
                    let exec = tract_linalg::multithread::Executor::SingleThread;
                    window_attention_on(tier, td, 0.177, [&tq, &tk, &tv], biases, &mut got, &exec)
                        .unwrap();
                    let got = if token_major_out {
                        swap(&got, true)
                    } else {
                        got
                    };
                    assert!(
                        first.as_ref() == Some(&got),
                        "{tier:?} {td:?}: token-major differs"
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let d = WindowDims {
            batch: 1,
            heads: 1,
            blocks: 2,
            block: 2,
            head_dim: 2,
            global: 1,
            token_major: false,
            token_major_out: false,
        };
        let x = vec![0f32; 8];
        let band = vec![0f32; 2 * 2 * 6];
        let mut out = vec![0f32; 8];
        let exec = tract_linalg::multithread::Executor::SingleThread;
        let run = |qkv: [&[f32]; 3], bias: [&[f32]; 2], out: &mut [f32]| {
            let biases = Biases {
                band: bias[0],
                global: bias[1],
                keys: None,
            };
            window_attention(d, 1.0, qkv, biases, out, &exec)
        };
        assert!(run([&x, &x, &x], [&band, &[0.0]], &mut out).is_ok());
        assert!(run([&x, &x, &x[..7]], [&band, &[0.0]], &mut out).is_err());
        assert!(run([&x, &x, &x], [&band[1..], &[0.0]], &mut out).is_err());
        assert!(run([&x, &x, &x], [&band, &[0.0, 0.0]], &mut out).is_err());
        // A key bias of the wrong length.
        for keys in [vec![0f32; 3], vec![0f32; 5]] {
            let biases = Biases {
                band: &band,
                global: &[0.0],
                keys: Some(&keys),
            };
            assert!(window_attention(d, 1.0, [&x, &x, &x], biases, &mut out, &exec).is_err());
        }
    }
}
