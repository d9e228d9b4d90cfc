//! **Dynamic quantization.** The int8 graph quantizes every matmul's activations at run time
//! with ONNX `DynamicQuantizeLinear` (u8, one scale and zero point per tensor). tract runs it as
//! scalar code that calls the C library's `rintf` once per element: on the int8 MiniLM it was
//! half of the whole inference (25.5 of 49.4 ms at 128 tokens, BENCHMARKS.md "int8: where the
//! time went"), twice the time of the int8 matrix products themselves.
//!
//! [`DynamicQuantize`] computes exactly the same bytes, scale and zero point (the operator's
//! definition: `y = saturate(round_half_even(x / scale) + zero_point)`, the division kept as a
//! division), in two passes that the compiler vectorizes: a min/max over eight lanes, then the
//! quantization with round-half-even done by adding and subtracting 1.5·2²³ (exact for the
//! values that can survive the saturation, which are clamped first).

use tract_hir::prelude::*;
use tract_hir::tract_core::internal::*;

/// ONNX `DynamicQuantizeLinear` (f32 → u8, scale, zero point), bit-identical to the spec and to
/// tract's own operator on finite inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DynamicQuantize;

/// tract's name for the operator this one replaces.
pub(crate) const TRACT_OP: &str = "DynamicQuantizeLinearU8";

impl Op for DynamicQuantize {
    fn name(&self) -> StaticName {
        "AutoglmDynamicQuantize".into()
    }
    op_as_typed_op!();
}

impl EvalOp for DynamicQuantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let input_ram = input.try_as_plain_ram()?;
        let xs = input_ram.as_slice::<f32>()?;
        // SAFETY: every byte is written by `dynamic_quantize_on` (or it fails, and the tensor
        // is dropped unread). Zeroed first, the output was written twice (6 MB per
        // `[4096, 1536]` input).
        let mut quantized = unsafe { Tensor::uninitialized::<u8>(input.shape())? };
        let (scale, zero_point) = {
            let mut ram = quantized.try_as_plain_ram_mut()?;
            dynamic_quantize_on(
                xs,
                ram.as_slice_mut::<u8>()?,
                &tract_linalg::multithread::current_tract_executor(),
            )?
        };
        Ok(tvec![
            quantized.into_tvalue(),
            tensor0(scale).into_tvalue(),
            tensor0(zero_point).into_tvalue()
        ])
    }
}

impl TypedOp for DynamicQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].datum_type == f32::datum_type(),
            "AutoglmDynamicQuantize quantizes f32, not {:?}",
            inputs[0].datum_type
        );
        Ok(tvec![
            u8::datum_type().fact(inputs[0].shape.clone()),
            f32::fact([0usize; 0]),
            u8::fact([0usize; 0])
        ])
    }
    as_op!();
}

const LANES: usize = 8;

/// Quantizes `xs` into `ys` (same length); returns the scale and zero point.
pub fn dynamic_quantize(xs: &[f32], ys: &mut [u8]) -> (f32, u8) {
    let (min, max, nan) = range(xs);
    let (scale, zero_point) = scale_and_zero_point(min, max);
    if nan || !(scale.is_finite() && scale > 0.0) {
        quantize_exactly(xs, scale, zero_point, ys);
    } else {
        quantize_fast(xs, scale, zero_point, ys);
    }
    (scale, zero_point)
}

/// [`dynamic_quantize`] in parallel on `executor`'s pool, for inputs of at least
/// [`super::SPLIT_VALUES`] values: each thread finds the range of its part, then quantizes it
/// with the scale of the whole (the same bytes, scale and zero point: the smallest and largest
/// value of a tensor are those of its parts').
pub fn dynamic_quantize_on(
    xs: &[f32],
    ys: &mut [u8],
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<(f32, u8)> {
    ensure!(
        xs.len() == ys.len(),
        "dynamic quantization: {} values into {}",
        xs.len(),
        ys.len()
    );
    let parts = super::parts(xs.len(), executor);
    if parts.len() <= 1 {
        return Ok(dynamic_quantize(xs, ys));
    }
    let ranges = std::sync::Mutex::new(Vec::with_capacity(parts.len()));
    super::attention::run_tasks(&parts, executor, |(start, end)| {
        let found = range(&xs[start..end]);
        ranges.lock().unwrap_or_else(|e| e.into_inner()).push(found);
        Ok(())
    })?;
    let (mut min, mut max, mut nan) = (0f32, 0f32, false);
    for (lo, hi, n) in ranges.into_inner().unwrap_or_else(|e| e.into_inner()) {
        // As `range` compares (NaN never reaches here: each part skipped its own).
        min = if lo < min { lo } else { min };
        max = if hi > max { hi } else { max };
        nan |= n;
    }
    let (scale, zero_point) = scale_and_zero_point(min, max);
    let exact = nan || !(scale.is_finite() && scale > 0.0);
    super::for_parts_mut(ys, executor, |offset, ys| {
        let xs = &xs[offset..offset + ys.len()];
        if exact {
            quantize_exactly(xs, scale, zero_point, ys);
        } else {
            quantize_fast(xs, scale, zero_point, ys);
        }
        Ok(())
    })?;
    Ok((scale, zero_point))
}

/// The smallest and largest value with 0 included (the spec's range), NaN ignored, and
/// whether there was a NaN.
pub fn range(xs: &[f32]) -> (f32, f32, bool) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { wide::range_avx512(xs) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { wide::range(xs) };
    }
    range_body::<LANES>(xs)
}

/// The vectorized bodies again, compiled for AVX2 and AVX-512 (eight or sixteen lanes per
/// instruction instead of the baseline's four); the same operations, so the same results.
#[cfg(target_arch = "x86_64")]
mod wide {
    /// Four vectors of eight lanes each for the minimum and the maximum: one vector's
    /// `vminps` waits for the last (4 cycles), so four keep the pass at the loads' pace.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn range(xs: &[f32]) -> (f32, f32, bool) {
        super::range_body::<32>(xs)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn range_avx512(xs: &[f32]) -> (f32, f32, bool) {
        super::range_body::<64>(xs)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize(xs: &[f32], scale: f32, inv: f32, zero_point: u8, ys: &mut [u8]) {
        super::quantize_body(xs, scale, inv, zero_point, ys)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize_avx512(
        xs: &[f32],
        scale: f32,
        inv: f32,
        zero_point: u8,
        ys: &mut [u8],
    ) {
        super::quantize_body(xs, scale, inv, zero_point, ys)
    }
}

/// [`range`] in `L` independent lanes (as many vectors of sums as the instruction latency
/// needs to be hidden).
#[inline(always)]
fn range_body<const L: usize>(xs: &[f32]) -> (f32, f32, bool) {
    let mut lo = [0f32; L];
    let mut hi = [0f32; L];
    // (u32, not bool: byte-wide flags cost more than the comparisons around them)
    let mut nan = [0u32; L];
    let chunks = xs.chunks_exact(L);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..L {
            // `if x < lo` (not `f32::min`): a NaN compares false and is skipped, as in tract.
            lo[i] = if chunk[i] < lo[i] { chunk[i] } else { lo[i] };
            hi[i] = if chunk[i] > hi[i] { chunk[i] } else { hi[i] };
            nan[i] |= u32::from(chunk[i].is_nan());
        }
    }
    let (mut min, mut max) = (0f32, 0f32);
    for &x in lo.iter().chain(tail) {
        min = if x < min { x } else { min };
    }
    for &x in hi.iter().chain(tail) {
        max = if x > max { x } else { max };
    }
    (
        min,
        max,
        nan.iter().any(|&n| n != 0) || tail.iter().any(|x| x.is_nan()),
    )
}

/// The spec's scale and zero point for the range `[min, max]` (which includes 0).
pub fn scale_and_zero_point(min: f32, max: f32) -> (f32, u8) {
    let scale = (max - min) / 255.0;
    // All zeros: 0/0 is NaN, which converts to 0, as the spec's saturation does.
    let zero_point = (-min / scale).round_ties_even().clamp(0.0, 255.0);
    (scale, zero_point as u8)
}

/// The definition, one value at a time: for the inputs the fast path does not take (all
/// zeros, where the quotient is 0/0, infinities, NaN). A NaN quotient converts to 0 before
/// the zero point is added.
fn quantize_exactly(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8]) {
    for (x, y) in xs.iter().zip(ys.iter_mut()) {
        let v = (x / scale).round_ties_even();
        let v = if v.is_nan() { 0 } else { v as i32 };
        *y = (v + i32::from(zero_point)).clamp(0, 255) as u8;
    }
}

/// `ys[i] = saturate(round_half_even(xs[i] / scale) + zero_point)` for a finite, positive
/// scale and no NaN, in float arithmetic only, so that it vectorizes: adding then subtracting
/// 1.5·2²³ rounds any |v| < 2²² to an integer, half to even (the default rounding mode);
/// values beyond ±512 saturate to 0 or 255 whatever the zero point, so clamping them first
/// changes no result; and an integer q in [0, 255] plus 2²³ has q as its low mantissa byte.
///
/// The quotient is a product by the reciprocal ([`quantize_body`]), exact where it matters:
/// with `inv = 1/scale` rounded, `t = x·inv` rounded is within `|x/scale|·1.5·2⁻²³` (< 10⁻⁴
/// for the |x/scale| ≤ 512 that are not clamped) of the correctly rounded quotient the spec
/// divides to, so both round to the same integer unless `t` lies within [`NEAR_HALF`] of a
/// half-integer. A block of [`BLOCK`] values with one such `t` is divided again (one `t` in
/// about two thousand is). A division was most of the pass's time (`vdivps` takes 5–10
/// cycles for 8 or 16 values).
fn quantize_fast(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8]) {
    let inv = scale.recip();
    if !inv.is_normal() {
        // (a scale below 2⁻¹²⁶ has no finite reciprocal: divide)
        return quantize_by_division(xs, scale, zero_point, ys);
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { wide::quantize_avx512(xs, scale, inv, zero_point, ys) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { wide::quantize(xs, scale, inv, zero_point, ys) };
    }
    quantize_body(xs, scale, inv, zero_point, ys)
}

/// How close to a half-integer `x·inv` may come before the value is divided instead
/// (2⁻¹², more than twice the error bound of [`quantize_fast`]'s notes).
const NEAR_HALF: f32 = 1.0 / 4096.0;
const ROUND: f32 = 12_582_912.0;
const TO_BITS: f32 = 8_388_608.0;

/// Values per block of [`quantize_body`]: a block with a product near a tie is divided again.
const BLOCK: usize = 64;

#[inline(always)]
fn quantize_body(xs: &[f32], scale: f32, inv: f32, zero_point: u8, ys: &mut [u8]) {
    let zp = f32::from(zero_point);
    let mut xs_blocks = xs.chunks_exact(BLOCK);
    let mut ys_blocks = ys.chunks_exact_mut(BLOCK);
    for (xb, yb) in (&mut xs_blocks).zip(&mut ys_blocks) {
        let mut near = 0u32;
        for (x, y) in xb.iter().zip(yb.iter_mut()) {
            let t = (x * inv).clamp(-512.0, 512.0);
            let r = (t + ROUND) - ROUND;
            near |= u32::from((t - r).abs() >= 0.5 - NEAR_HALF);
            let q = (r + zp).clamp(0.0, 255.0);
            *y = (q + TO_BITS).to_bits() as u8;
        }
        if near != 0 {
            quantize_by_division(xb, scale, zero_point, yb);
        }
    }
    quantize_by_division(
        xs_blocks.remainder(),
        scale,
        zero_point,
        ys_blocks.into_remainder(),
    );
}

/// [`quantize_fast`]'s values with a division each.
fn quantize_by_division(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8]) {
    let zp = f32::from(zero_point);
    for (x, y) in xs.iter().zip(ys.iter_mut()) {
        let v = (x / scale).clamp(-512.0, 512.0);
        let q = ((v + ROUND) - ROUND + zp).clamp(0.0, 255.0);
        *y = (q + TO_BITS).to_bits() as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator's definition, element by element, exactly as ONNX writes it.
    fn reference(xs: &[f32]) -> (Vec<u8>, f32, u8) {
        let min = xs.iter().fold(0f32, |m, &x| if x < m { x } else { m });
        let max = xs.iter().fold(0f32, |m, &x| if x > m { x } else { m });
        let scale = (max - min) / 255.0;
        let zero_point = (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        let ys = xs
            .iter()
            .map(|&x| {
                ((x / scale).round_ties_even() as i32 + i32::from(zero_point)).clamp(0, 255) as u8
            })
            .collect();
        (ys, scale, zero_point)
    }

    fn run(xs: &[f32]) -> (Vec<u8>, f32, u8) {
        let mut ys = vec![0u8; xs.len()];
        let (scale, zero_point) = dynamic_quantize(xs, &mut ys);
        (ys, scale, zero_point)
    }

    fn assert_same(xs: &[f32], what: &str) {
        let (ys, scale, zp) = run(xs);
        let (ref_ys, ref_scale, ref_zp) = reference(xs);
        assert_eq!(scale.to_bits(), ref_scale.to_bits(), "{what}: scale");
        assert_eq!(zp, ref_zp, "{what}: zero point");
        assert_eq!(ys, ref_ys, "{what}: values");
    }

    /// Every compiled copy of [`quantize_body`] this CPU runs, and the one `quantize_fast`
    /// picks.
    fn bodies() -> Vec<(&'static str, fn(&[f32], f32, u8, &mut [u8]))> {
        #[allow(unused_mut)] // (pushed to on x86_64 only)
        let mut all: Vec<(&'static str, fn(&[f32], f32, u8, &mut [u8]))> = vec![
            ("chosen", quantize_fast),
            ("baseline", |xs, scale, zp, ys| {
                quantize_body(xs, scale, scale.recip(), zp, ys)
            }),
        ];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            all.push(("avx2", |xs, scale, zp, ys| unsafe {
                wide::quantize(xs, scale, scale.recip(), zp, ys)
            }));
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            all.push(("avx512", |xs, scale, zp, ys| unsafe {
                wide::quantize_avx512(xs, scale, scale.recip(), zp, ys)
            }));
        }
        all
    }

    /// Every compiled copy of the range agrees with the baseline's, on lengths with tails of
    /// every size and NaNs anywhere.
    #[test]
    fn every_range_copy_agrees() {
        #[allow(unused_mut)] // (pushed to on x86_64 only)
        let mut copies: Vec<fn(&[f32]) -> (f32, f32, bool)> = vec![range, range_body::<LANES>];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            copies.push(|xs| unsafe { wide::range(xs) });
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            copies.push(|xs| unsafe { wide::range_avx512(xs) });
        }
        for len in 0..300usize {
            let mut xs: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 + len * 31) % 1000) as f32 * 0.01 - 4.0)
                .collect();
            if len % 5 == 3 {
                xs[len / 2] = f32::NAN;
            }
            let want = range_body::<1>(&xs);
            for (i, copy) in copies.iter().enumerate() {
                let got = copy(&xs);
                assert_eq!(
                    (got.0.to_bits(), got.1.to_bits(), got.2),
                    (want.0.to_bits(), want.1.to_bits(), want.2),
                    "copy {i}, {len} values"
                );
            }
        }
    }

    /// The product by the reciprocal rounds as the division does next to every half-integer
    /// quotient (the only places where the two can round apart), for scales of many
    /// magnitudes and zero points, on every compiled copy; and far from them.
    #[test]
    fn the_reciprocal_rounds_as_the_division_next_to_ties() {
        let mut rng = crate::ops::qgemm::tests::Rng(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next();
        let mut divided_apart = 0;
        for case in 0..300 {
            // Normal scales from 2⁻¹²⁰ to 2¹⁰⁰, any mantissa.
            let exponent = 7 + (next() % 220) as u32;
            let scale = f32::from_bits(exponent << 23 | (next() as u32 & 0x7f_ffff));
            let zp = [0u8, 1, 100, 128, 254, 255][case % 6];
            let mut xs = Vec::new();
            for k in -300..300 {
                let tie = (k as f32 + 0.5) * scale;
                for d in -3i32..=3 {
                    xs.push(f32::from_bits(tie.to_bits().wrapping_add_signed(d)));
                }
                xs.push((k as f32 + (next() >> 40) as f32 / (1u64 << 24) as f32) * scale);
            }
            let mut want = vec![0u8; xs.len()];
            quantize_exactly(&xs, scale, zp, &mut want);
            let inv = scale.recip();
            divided_apart += xs
                .iter()
                .filter(|&&x| (x * inv).round_ties_even() != (x / scale).round_ties_even())
                .count();
            for (name, body) in bodies() {
                let mut got = vec![0u8; xs.len()];
                body(&xs, scale, zp, &mut got);
                assert_eq!(
                    got, want,
                    "{name}, case {case}: scale {scale:e}, zero point {zp}"
                );
            }
        }
        // The test reaches values where the product alone would round apart.
        assert!(divided_apart > 100, "{divided_apart}");
    }

    /// Random lengths (tails of every size), ranges with and without negatives, values on
    /// rounding ties, all zeros, and outliers that saturate.
    #[test]
    fn equals_the_definition_on_random_inputs() {
        let mut rng = crate::ops::qgemm::tests::Rng(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next();
        for case in 0..400 {
            let len = (next() % 300) as usize;
            let spread = [0.01f32, 1.0, 8.0, 1000.0][case % 4];
            let offset = [0.0f32, 0.5, -0.5, 3.0, -3.0][case % 5] * spread;
            let mut xs: Vec<f32> = (0..len)
                .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * spread + offset)
                .collect();
            if case % 7 == 0 && len > 2 {
                // Exact ties: with max - min = 255, the scale is 1 and halves stay halves.
                xs[0] = -127.0;
                xs[1] = 128.0;
                for (i, x) in xs.iter_mut().enumerate().skip(2) {
                    *x = (i % 40) as f32 - 20.5;
                }
            }
            assert_same(&xs, &format!("case {case}, {len} values"));
        }
        assert_same(&[], "empty");
        assert_same(&[0.0; 37], "all zeros");
        assert_same(&[-0.0, 0.0, -0.0], "signed zeros");
        assert_same(&[-1.0; 9], "all negative");
        assert_same(&[2.5; 17], "all positive");
        assert_same(&[1e30, -1e30, 0.5, 3.0], "huge range");
        assert_same(&[f32::INFINITY, 1.0, -2.0], "infinity");
        let (ys, _, _) = run(&[f32::NAN, 1.0, -2.0]);
        assert_eq!(ys, reference(&[f32::NAN, 1.0, -2.0]).0, "NaN");
    }

    /// In parts on a pool: the same bytes, scale and zero point as on one thread, on lengths
    /// around the split (tails of every part), with the extremes, a NaN or an infinity in
    /// any part, and all zeros.
    #[test]
    fn in_parallel_equals_one_thread() -> TractResult<()> {
        let pools = [2, 3].map(tract_linalg::multithread::Executor::multithread);
        let split = crate::ops::SPLIT_VALUES;
        for (case, len) in [
            split - 1,
            split,
            split + 1,
            split + 63,
            2 * split + 5,
            3 * split + 129,
        ]
        .into_iter()
        .enumerate()
        {
            let base: Vec<f32> = autoglm_export::fixture::values(case as u64 + 11, len)
                .into_iter()
                .map(|v| v * 7.0 - 2.0)
                .collect();
            let mut inputs = vec![base.clone(), vec![0.0; len]];
            for (at, special) in [
                (len - 1, -40.0f32),
                (len / 2 + 1, 55.0),
                (len / 3, f32::NAN),
                (len - 2, f32::INFINITY),
            ] {
                let mut xs = base.clone();
                xs[at] = special;
                inputs.push(xs);
            }
            for xs in &inputs {
                let (want, want_scale, want_zp) = run(xs);
                for pool in &pools {
                    let mut ys = vec![0u8; len];
                    let (scale, zp) = dynamic_quantize_on(xs, &mut ys, pool)?;
                    assert_eq!(scale.to_bits(), want_scale.to_bits(), "{len} values: scale");
                    assert_eq!(zp, want_zp, "{len} values: zero point");
                    assert!(ys == want, "{len} values: the bytes differ");
                }
            }
        }
        let mut short = [0u8; 2];
        assert!(
            dynamic_quantize_on(&[1.0; 3], &mut short, &pools[0]).is_err(),
            "a wrong output length is refused"
        );
        Ok(())
    }

    /// The op against tract's own `DynamicQuantizeLinearU8`, taken from a parsed ONNX graph.
    #[test]
    fn equals_tracts_operator() -> TractResult<()> {
        // The tiny fixture model exported in int8: every matmul's activations go through
        // tract's dynamic quantization.
        let model = crate::ops::fixture_graph(autoglm_package::Quantization::Int8)?;
        let node = model
            .nodes()
            .iter()
            .find(|n| n.op().name() == TRACT_OP)
            .expect("the graph has tract's dynamic quantization");
        for (seed, len) in [(1u64, 1usize), (2, 7), (3, 64), (4, 1000)] {
            let xs: Vec<f32> = autoglm_export::fixture::values(seed, len)
                .into_iter()
                .map(|v| v * 5.0 + 0.3)
                .collect();
            let input = || -> TractResult<TVec<TValue>> {
                Ok(tvec![Tensor::from_shape(&[len], &xs)?.into_tvalue()])
            };
            let theirs = node
                .op()
                .eval_out_of_plan(input()?)?
                .expect("tract's op evaluates");
            let ours = DynamicQuantize
                .eval_out_of_plan(input()?)?
                .expect("evaluates");
            for (t, o) in theirs.iter().zip(ours.iter()) {
                assert_eq!(&**t, &**o, "seed {seed}, {len} values");
            }
        }
        Ok(())
    }
}
