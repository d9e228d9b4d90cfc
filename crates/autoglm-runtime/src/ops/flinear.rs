//! **f32 linear layers on our own kernel** ([`LinearF32`], native builds): `x·W (+ bias)` with
//! a constant `W [k, n]`, the product of every dense layer of an fp32 graph (the attention's
//! projections, its output, both feed-forward products), packed once at load for the CPU's f32
//! tier ([`super::fgemm`]) with the bias added as each tile is stored, and the exact GELU that
//! follows the feed-forward's first product applied to each thread's columns while they are in
//! its cache (tract's own `GeluExact` formula and erf kernel, so the same values).
//!
//! Why not tract's own product, which runs as fast on one thread: its threads. With a thread
//! pool tract splits a product only above its size thresholds, so one short text on two
//! threads ran most of its products on one (BENCHMARKS.md, waves 11 and 12: two threads were
//! 1.19x one at 32 tokens, where ONNX Runtime gets 1.64x). Here every product of more than
//! [`SPLIT_MACS`] multiply-adds is split into [`GROUPS_PER_THREAD`] groups of whole column
//! panels per thread of the executor in scope (the backend's pool for a single text; none in
//! the workers of a batch, which run single-threaded states side by side), which the threads
//! take as they become free. Each output is the same sum in the same order whatever the split,
//! so results never depend on the threads.
//!
//! Fused where the plan is built for the machine (after the plan cache; its plans keep tract's
//! products, so that no serializer is needed), and in native builds only: the component has no
//! f32 tier here (see `fgemm.rs`).

use super::attention::{einsum_axes, is_bin, run_tasks, single_use, OutPtr};
use super::const_f32;
use super::fgemm::{gemm, gemm_rows, Packed, Store, Strided, Tier};
use tract_hir::prelude::*;
use tract_hir::tract_core::internal::*;
use tract_hir::tract_core::ops::element_wise::ElementWiseOp;
use tract_hir::tract_core::ops::math::Add;
use tract_hir::tract_core::ops::nn::GeluExact;

/// Products smaller than this many multiply-adds run on one thread (a split costs a few
/// microseconds of scheduling; this is ~20 µs of work on one core). Measured at 32 tokens on
/// two threads (BENCHMARKS.md, wave 13): 8 M (splitting only the feed-forward's products) was
/// 12 % slower, 200 k (the task head's too) 4 % slower.
pub const SPLIT_MACS: usize = 1 << 20;

/// Column groups per thread of a split product (the threads take them as they become free).
/// One: each thread's columns in one contiguous run of panels. Four (wave 14, when a thread
/// slowed by its core waited for the other in `split_probe`'s call-by-call measurements, with
/// the kernel of then) measured slower in the whole model since: 3–4 % at 128 tokens on two
/// threads in waves 25 and 27, 4.3–4.4 % at 32, 128 and 512 tokens in wave 27's whole-process
/// peer runs (BENCHMARKS.md, wave 27); long documents no slower.
pub const GROUPS_PER_THREAD: usize = 1;

/// `x·W + bias`: input `[.., k]` f32, output `[.., n]` f32; or, with `axes` > 1, input
/// `[.., k₁, .., k_axes]` (`k` their product: the attention's output projection reads
/// `[.., heads, head_dim]`) with `W` `[k₁, .., k_axes, n]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearF32 {
    pub weights: Arc<Packed>,
    pub tier: Tier,
    pub k: usize,
    pub n: usize,
    /// How many trailing input axes the product sums over.
    pub axes: usize,
    pub bias: Option<Arc<Vec<f32>>>,
    /// tract's exact GELU on the result.
    pub gelu: bool,
}

impl Eq for LinearF32 {}

impl Op for LinearF32 {
    fn name(&self) -> StaticName {
        "AutoglmLinearF32".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "[{}, {}] on the {} kernel, bias: {}, gelu: {}",
            self.k,
            self.n,
            self.tier.name(),
            self.bias.is_some(),
            self.gelu
        )])
    }
    op_as_typed_op!();
}

impl TypedOp for LinearF32 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dims = inputs[0].shape.dims();
        let outer = dims.len().checked_sub(self.axes.max(1));
        let k = outer.map(|o| dims[o..].iter().product::<TDim>());
        ensure!(
            inputs[0].datum_type == f32::datum_type() && k == Some(TDim::Val(self.k as i64)),
            "AutoglmLinearF32: input {:?} does not end with k = {} in {} axes",
            inputs[0].shape,
            self.k,
            self.axes
        );
        let mut shape: TVec<TDim> = dims[..outer.unwrap_or(0)].iter().cloned().collect();
        shape.push(TDim::Val(self.n as i64));
        Ok(tvec![f32::fact(shape)])
    }
    as_op!();
}

impl EvalOp for LinearF32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let outer = x.rank().checked_sub(self.axes.max(1));
        ensure!(
            outer.is_some_and(|o| x.shape()[o..].iter().product::<usize>() == self.k),
            "AutoglmLinearF32: input {:?} for [{}, {}] in {} axes",
            x.shape(),
            self.k,
            self.n,
            self.axes
        );
        let mut shape: TVec<usize> = x.shape()[..outer.unwrap_or(0)].into();
        shape.push(self.n);
        // SAFETY: no value is read before it is written: `linear` writes every one (each row's
        // columns, all of them, whether on one thread or in column groups), and the tensor is
        // returned only after it succeeded (on an error it is dropped unread).
        let mut out = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        {
            let x = x.try_as_plain_ram()?;
            let mut out_ram = out.try_as_plain_ram_mut()?;
            linear(
                self,
                x.as_slice::<f32>()?,
                out_ram.as_slice_mut::<f32>()?,
                &tract_linalg::multithread::current_tract_executor(),
            )?;
        }
        Ok(tvec![out.into_tvalue()])
    }
}

/// Whether `node` is tract's exact GELU (element-wise, same type in and out).
pub(crate) fn is_gelu(node: &TypedNode) -> bool {
    node.op_as::<ElementWiseOp>()
        .is_some_and(|ew| ew.0.is::<GeluExact>() && ew.1.is_none())
}

/// `gelu(x) = x/2 · (1 + erf(x/√2))` in place, as tract's `GeluExact` computes it (its constant,
/// its order of operations, tract-linalg's erf kernel, in chunks of its size). On AVX-512 the
/// passes around the erf kernel are compiled for it (sixteen lanes instead of the baseline's
/// four; the same multiplications and additions, so the same bits): they were a third of the
/// GELU's time at 4,096 tokens.
pub(crate) fn gelu_in_place(xs: &mut [f32]) -> TractResult<()> {
    gelu_rows(std::iter::once(xs))
}

/// [`gelu_in_place`] on each of `rows` (one erf kernel looked up for all of them).
pub(crate) fn gelu_rows<'a>(rows: impl Iterator<Item = &'a mut [f32]>) -> TractResult<()> {
    let erf = tract_linalg::Func::Erf.ew_f32()?;
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        for xs in rows {
            // SAFETY: the CPU has AVX-512F (checked just above).
            unsafe { gelu_avx512(xs, erf.as_ref())? };
        }
        return Ok(());
    }
    for xs in rows {
        gelu_body(xs, erf.as_ref())?;
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_avx512(
    xs: &mut [f32],
    erf: &dyn tract_linalg::element_wise::ElementWise<f32>,
) -> TractResult<()> {
    gelu_body(xs, erf)
}

#[inline(always)]
fn gelu_body(
    xs: &mut [f32],
    erf: &dyn tract_linalg::element_wise::ElementWise<f32>,
) -> TractResult<()> {
    const CHUNK: usize = 1024;
    let c = 2f32.sqrt().recip();
    let mut scaled = [0f32; CHUNK];
    for chunk in xs.chunks_mut(CHUNK) {
        let scaled = &mut scaled[..chunk.len()];
        for (s, x) in scaled.iter_mut().zip(chunk.iter()) {
            *s = *x * c;
        }
        erf.run(scaled)?;
        for (x, e) in chunk.iter_mut().zip(scaled.iter()) {
            *x = (*x * 0.5) * (*e + 1.0);
        }
    }
    Ok(())
}

/// `out = x·W + bias` (then GELU, if the op says so) for `x` `[rows, k]` and `out` `[rows, n]`
/// (row-major): column groups in parallel on `executor` when it has threads and the product
/// is large enough.
pub fn linear(
    op: &LinearF32,
    x: &[f32],
    out: &mut [f32],
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<()> {
    let (k, n) = (op.k, op.n);
    ensure!(
        k > 0
            && x.len().is_multiple_of(k)
            && (x.len() / k).checked_mul(n) == Some(out.len())
            && op.bias.as_ref().is_none_or(|b| b.len() == n),
        "AutoglmLinearF32: {} input values, {} outputs and {:?} bias values for [{k}, {n}]",
        x.len(),
        out.len(),
        op.bias.as_ref().map(|b| b.len())
    );
    let rows = x.len() / k;
    let a = Strided { data: x, row: k };
    let store = |cols: std::ops::Range<usize>| match &op.bias {
        Some(bias) => Store::AddRow(&bias[cols]),
        None => Store::Overwrite,
    };
    let threads = match executor {
        #[cfg(not(target_family = "wasm"))]
        tract_linalg::multithread::Executor::MultiThread(pool) => pool.current_num_threads(),
        _ => 1,
    };
    let nr = op.tier.nr();
    let panels = n.div_ceil(nr);
    let groups = if threads > 1 && rows.saturating_mul(k).saturating_mul(n) >= SPLIT_MACS {
        (threads * GROUPS_PER_THREAD).min(panels)
    } else {
        1
    };
    if groups <= 1 {
        gemm(
            op.tier,
            rows,
            1.0,
            a,
            op.weights.rows(0..k),
            store(0..n),
            out,
            n,
        )?;
        return if op.gelu { gelu_in_place(out) } else { Ok(()) };
    }
    let per_group = panels.div_ceil(groups) * nr;
    let ranges: Vec<(usize, usize)> = (0..n)
        .step_by(per_group)
        .map(|start| (start, n.min(start + per_group)))
        .collect();
    // Each task writes its columns of every row straight into `out` (through slices of one
    // row's columns at a time: a copy from a buffer of its own was 4 % of a run at 128 tokens on
    // two threads).
    let dst = OutPtr(out.as_mut_ptr());
    run_tasks(&ranges, executor, |(start, end)| {
        let cols = end - start;
        let b = op.weights.rows(0..k).columns(start..end)?;
        // SAFETY (both): `out` holds `rows · n` values (checked above) and `start + cols ≤ n`, so
        // columns `start..end` of each row are within it; each task reads and writes its own
        // columns only, and `run_tasks` joins every task before `out`'s borrow ends.
        unsafe {
            gemm_rows(
                op.tier,
                rows,
                1.0,
                a,
                b,
                store(start..end),
                (dst.0.add(start), n),
            )?
        };
        if op.gelu {
            gelu_rows((0..rows).map(|r| unsafe { dst.slice(r * n + start, cols) }))?;
        }
        Ok(())
    })
}

/// Whether an einsum's axes are a linear layer's, and how: `(j, transposed)`. `A`'s axes (all
/// distinct) end with `j` axes that `B` has first, in the same order, then `n`; the output is
/// `A`'s other axes then `n` (`amk,kn->amn`: `(1, false)`; the output projection's
/// `ambk,bkn->amn`: `(2, false)`). Or `B` is `[n, k]` for `A`'s last axis `k`: `(1, true)`.
fn linear_axes(formula: &str) -> Option<(usize, bool)> {
    let (inputs, output) = formula.split_once("->")?;
    let (a, b) = inputs.split_once(',')?;
    if b.contains(',') {
        return None;
    }
    let (a, b, c): (Vec<char>, Vec<char>, Vec<char>) = (
        a.chars().collect(),
        b.chars().collect(),
        output.chars().collect(),
    );
    let (&n, outer) = c.split_last()?;
    let distinct = a.iter().enumerate().all(|(i, x)| !a[..i].contains(x));
    if !distinct || a.contains(&n) || b.len() < 2 {
        return None;
    }
    let j = b.len() - 1;
    if b[j] == n && a.len() >= j && a[a.len() - j..] == b[..j] && a[..a.len() - j] == *outer {
        return Some((j, false));
    }
    (b.len() == 2 && b[0] == n && a.last() == Some(&b[1]) && a[..a.len() - 1] == *outer)
        .then_some((1, true))
}

/// What one match found: the op's input, the op, and the outlet it replaces.
type Found = ([OutletId; 1], LinearF32, OutletId);

/// Whether `id` is a product of an f32 tensor by a constant `[k, n]` matrix, with (optionally)
/// a constant bias of `n` values added to its only use, then (optionally) tract's exact GELU.
fn matches(model: &TypedModel, id: usize, tier: Tier) -> TractResult<Option<Found>> {
    let Some((node, axes)) = einsum_axes(model, OutletId::new(id, 0)) else {
        return Ok(None);
    };
    let Some((axes, transposed)) = linear_axes(&axes) else {
        return Ok(None);
    };
    if node.inputs.len() != 2 || node.outputs.len() != 1 {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let Some(w) = model.outlet_fact(node.inputs[1])?.konst.clone() else {
        return Ok(None);
    };
    if x.datum_type != f32::datum_type()
        || x.konst.is_some()
        || w.datum_type() != f32::datum_type()
        || w.rank() != axes + 1
        || x.rank() < axes
    {
        return Ok(None);
    }
    // A's summed axes, as B has them.
    let summed = if transposed {
        &w.shape()[1..]
    } else {
        &w.shape()[..axes]
    };
    let (k, n) = (
        summed.iter().product::<usize>(),
        w.shape()[if transposed { 0 } else { axes }],
    );
    let x_summed = &x.shape.dims()[x.rank() - axes..];
    if k == 0
        || n == 0
        || x_summed
            .iter()
            .zip(summed)
            .any(|(d, s)| *d != TDim::Val(*s as i64))
    {
        return Ok(None);
    }
    // → Add of a constant bias (n values along the last axis, no new axes), if the product's
    // only use is one.
    let mut bias = None;
    let mut last = OutletId::new(id, 0);
    if single_use(model, last) {
        let next = node.outputs[0].successors[0];
        let add = model.node(next.node);
        if is_bin::<Add>(add) {
            let other = add.inputs[1 - next.slot];
            let fact = model.outlet_fact(other)?;
            if fact.rank() <= x.rank() + 1 - axes && fact.shape.last() == Some(&TDim::Val(n as i64))
            {
                if let Some(values) = const_f32(model, other, n)? {
                    bias = Some(Arc::new(values));
                    last = OutletId::new(add.id, 0);
                }
            }
        }
    }
    // → tract's exact GELU, if the result's only use is one.
    let mut gelu = false;
    if single_use(model, last) {
        let next = model.node(model.outlet_successors(last)[0].node);
        if is_gelu(next) {
            gelu = true;
            last = OutletId::new(next.id, 0);
        }
    }
    let mut weights = Packed::default();
    let strides = if transposed { (1, k) } else { (n, 1) };
    weights.pack(
        tier,
        w.try_as_plain_ram()?.as_slice::<f32>()?,
        (k, n),
        strides,
    )?;
    let op = LinearF32 {
        weights: Arc::new(weights),
        tier,
        k,
        n,
        axes,
        bias,
        gelu,
    };
    Ok(Some(([node.inputs[0]], op, last)))
}

/// Whether the backend fuses the f32 linear layers: `AUTOGLM_F32_LINEAR=ours` or `tract`, else
/// on x86_64 only, where ours was measured against tract's products. On aarch64 tract's are
/// tuned per core (a Pi 4's A72 has its own kernel) and no ARM core here can time ours.
pub fn chosen() -> bool {
    match std::env::var("AUTOGLM_F32_LINEAR")
        .as_deref()
        .map(str::trim)
    {
        Ok("ours") => true,
        Ok("tract") => false,
        _ => cfg!(target_arch = "x86_64"),
    }
}

/// [`fuse`] where [`chosen`] says so (the backend, when it builds a plan, and the profile
/// example); returns how many.
pub fn fuse_if_chosen(model: &mut TypedModel) -> TractResult<usize> {
    if chosen() {
        fuse(model)
    } else {
        Ok(0)
    }
}

/// Replaces every f32 linear layer's product (and bias add) by [`LinearF32`] on the kernel of
/// [`Tier::chosen`]; returns how many.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    fuse_with(model, Tier::chosen())
}

/// [`fuse`] on a given tier (tests run every tier the CPU has). One layer at a time, the graph
/// compacted after each: its unpacked weights go as soon as their packed copy exists (all at
/// once, an fp32 load held both copies of every weight, 90 MB more at its peak).
pub fn fuse_with(model: &mut TypedModel, tier: Tier) -> TractResult<usize> {
    let mut fused = 0;
    loop {
        let mut found = false;
        let one = super::fuse_matches(
            model,
            "autoglm f32 linear",
            "autoglm_linear_f32",
            |model, id| {
                if found {
                    return Ok(None);
                }
                let m = matches(model, id, tier)?;
                found = m.is_some();
                Ok(m)
            },
        )?;
        if one == 0 {
            return Ok(fused);
        }
        fused += one;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::tests::values;

    #[test]
    fn linear_axes_are_recognised() {
        assert_eq!(linear_axes("amk,kn->amn"), Some((1, false)));
        assert_eq!(linear_axes("mk,kn->mn"), Some((1, false)));
        assert_eq!(linear_axes("abmk,nk->abmn"), Some((1, true)));
        assert_eq!(linear_axes("k,kn->n"), Some((1, false)));
        assert_eq!(linear_axes("ambk,bkn->amn"), Some((2, false)));
        assert_eq!(linear_axes("ambk,kbn->amn"), None);
        assert_eq!(linear_axes("ambk,bkn->abmn"), None);
        // Not a linear layer: contracted axis not last, batch axes reordered or summed, a
        // repeated axis, a third input.
        assert_eq!(linear_axes("akm,kn->amn"), None);
        assert_eq!(linear_axes("amk,kn->man"), None);
        assert_eq!(linear_axes("amk,kn->an"), None);
        assert_eq!(linear_axes("aak,kn->aan"), None);
        assert_eq!(linear_axes("amk,kn,n->amn"), None);
        assert_eq!(linear_axes("amk,km->amm"), None);
        assert_eq!(linear_axes("amk,kk->amk"), None);
    }

    /// erf in f64 (Abramowitz and Stegun 7.1.26 is too coarse here: a series for small |x|,
    /// a continued fraction beyond).
    fn erf(x: f64) -> f64 {
        if x.abs() < 2.5 {
            // erf x = 2/√π · Σ (-1)ⁿ x^(2n+1) / (n! (2n+1))
            let (mut term, mut sum) = (x, x);
            for n in 1..80 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc x = e^(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
            let ax = x.abs();
            let mut f = ax;
            for n in (1..60).rev() {
                f = ax + (n as f64 / 2.0) / f;
            }
            let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / f;
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn the_f64_erf_is_erf() {
        // Values of erf from its tables.
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.5, -0.966_105_146_475_310_7),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-13,
                "erf({x}) = {} vs {want}",
                erf(x)
            );
        }
    }

    /// `x·W + bias` in f64.
    fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, k: usize, n: usize) -> Vec<f32> {
        x.chunks(k)
            .flat_map(|row| {
                (0..n).map(move |j| {
                    let dot: f64 = (0..k)
                        .map(|p| f64::from(row[p]) * f64::from(w[p * n + j]))
                        .sum();
                    (dot + bias.map_or(0.0, |b| f64::from(b[j]))) as f32
                })
            })
            .collect()
    }

    /// Every tier, against the definition, on shapes with tails in rows, depth and columns,
    /// with and without bias, one thread and a pool of three: the pool's results are the
    /// single thread's bit for bit.
    #[test]
    fn every_tier_equals_the_definition_whatever_the_threads() -> TractResult<()> {
        let single = tract_linalg::multithread::Executor::SingleThread;
        let pool = tract_linalg::multithread::Executor::multithread(3);
        let mut seed = 900;
        for tier in Tier::available() {
            for &(rows, k, n) in &[
                (1, 1, 1),
                (3, 7, 5),
                (9, 33, 33),
                (17, 64, 100),
                (32, 384, 384),
                (130, 96, 4 * tier.nr() + 3),
                (64, 257, 129),
            ] {
                for (with_bias, gelu) in [(false, false), (true, false), (true, true)] {
                    seed += 1;
                    let x = values(rows * k, seed);
                    let w = values(k * n, seed + 1);
                    let bias = with_bias.then(|| values(n, seed + 2));
                    let mut packed = Packed::default();
                    packed.pack(tier, &w, (k, n), (n, 1))?;
                    let op = LinearF32 {
                        weights: Arc::new(packed),
                        tier,
                        k,
                        n,
                        axes: 1,
                        bias: bias.clone().map(Arc::new),
                        gelu,
                    };
                    let mut want = reference(&x, &w, bias.as_deref(), k, n);
                    if gelu {
                        for v in want.iter_mut() {
                            let x = f64::from(*v);
                            *v = (0.5 * x * (1.0 + erf(x / 2f64.sqrt()))) as f32;
                        }
                    }
                    let mut one = vec![f32::NAN; rows * n];
                    linear(&op, &x, &mut one, &single)?;
                    // The products' rounding (k terms of values in [-1, 1)), as fgemm's tests
                    // allow, twice: GELU's erf kernel adds its own error, far smaller.
                    let tol = 2e-5 * (1.0 + k as f32).sqrt();
                    for (i, (g, e)) in one.iter().zip(&want).enumerate() {
                        assert!(
                            (g - e).abs() <= tol,
                            "{tier:?} [{rows},{k}]·[{k},{n}] bias {with_bias} @{i}: {g} vs {e}"
                        );
                    }
                    let mut three = vec![f32::NAN; rows * n];
                    linear(&op, &x, &mut three, &pool)?;
                    assert!(
                        one.iter()
                            .zip(&three)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{tier:?} [{rows},{k}]·[{k},{n}]: threads change the result"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn bad_sizes_are_refused() -> TractResult<()> {
        let tier = Tier::Scalar;
        let mut packed = Packed::default();
        packed.pack(tier, &[1.0; 6], (2, 3), (3, 1))?;
        let op = LinearF32 {
            weights: Arc::new(packed),
            tier,
            k: 2,
            n: 3,
            axes: 1,
            bias: None,
            gelu: false,
        };
        let single = tract_linalg::multithread::Executor::SingleThread;
        for (x, outputs) in [(3, 3), (4, 5)] {
            let mut out = vec![0.0; outputs];
            let err = linear(&op, &vec![1.0; x], &mut out, &single).expect_err("bad sizes");
            assert!(err.to_string().contains("AutoglmLinearF32"), "{err}");
        }
        // A bias of the wrong length: an error, not a panic.
        let op = LinearF32 {
            bias: Some(Arc::new(vec![0.0; 2])),
            ..op
        };
        let err = linear(&op, &[1.0; 4], &mut [0.0; 6], &single).expect_err("short bias");
        assert!(err.to_string().contains("bias"), "{err}");
        Ok(())
    }

    /// The fixture model's fp32 graph: every dense layer is fused on every tier, and the fused
    /// plan's outputs equal tract's plan of the graph within 1e-5, on one thread and on a pool.
    #[test]
    fn fused_linear_layers_equal_tracts_products() -> TractResult<()> {
        let plain = crate::ops::fixture_graph(autoglm_package::Quantization::None)?;
        let (batch, seq) = (2usize, 7usize);
        let inputs = || crate::ops::fixture_inputs(&plain, batch, seq);
        let expected = plain
            .clone()
            .into_optimized()?
            .into_runnable()?
            .run(inputs()?)?;
        let products = plain
            .nodes()
            .iter()
            .filter(|n| einsum_axes(&plain, OutletId::new(n.id, 0)).is_some())
            .filter(|n| matches(&plain, n.id, Tier::Scalar).ok().flatten().is_some())
            .count();
        // The attention's four products and the feed-forward's two, per layer.
        assert_eq!(products, 6 * autoglm_export::fixture::LAYERS);
        let gelus = crate::ops::gelu_count;
        assert_eq!(gelus(&plain), autoglm_export::fixture::LAYERS);
        for tier in Tier::available() {
            let mut model = plain.clone();
            assert_eq!(fuse_with(&mut model, tier)?, products, "{tier:?}");
            assert!(model
                .nodes()
                .iter()
                .all(|n| matches(&model, n.id, tier).ok().flatten().is_none()));
            assert_eq!(gelus(&model), 0, "{tier:?}: a GELU left to tract");
            let [single, threaded] = crate::ops::run_one_and_two_threads(model, inputs)?;
            for ((e, g), t) in expected.iter().zip(single.iter()).zip(threaded.iter()) {
                let (e, g, t) = (
                    e.try_as_plain_ram()?,
                    g.try_as_plain_ram()?,
                    t.try_as_plain_ram()?,
                );
                let (e, g, t) = (
                    e.as_slice::<f32>()?,
                    g.as_slice::<f32>()?,
                    t.as_slice::<f32>()?,
                );
                let diff = autoglm_testkit::max_abs_diff(e, g);
                assert!(diff <= 1e-5, "{tier:?}: max |Δ| {diff}");
                assert_eq!(g, t, "{tier:?}: threads change the result");
            }
        }
        Ok(())
    }
}
