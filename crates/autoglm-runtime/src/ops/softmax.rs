//! **Softmax rows** of the fused attention ([`super::attention`], [`super::window`]): a row's
//! maximum, `e^(x − max)` and its sum, then the division, in three passes over the row while it
//! is in the level-1 cache, compiled per f32 tier ([`Tier`], as the products) so that the
//! compiler vectorizes each pass with the CPU's widest registers.
//!
//! Why not tract-linalg's softmax kernels, which the attention called before: per call they
//! cost far more than a row of scores does (measured on the rows of MiniLM's attention, 12
//! heads on an AVX-512 core, whole rows of 12 heads' scores from memory: 2.5 ns a value at 512
//! keys and 8.6 at 128, these passes 0.5 and 0.6; BENCHMARKS.md wave 14). One layer's attention
//! at 128 tokens took half the time after the change.
//!
//! `e^x` for `x ≤ 0`: `x = n·ln 2 + r` with `n` an integer and `|r| ≤ ln 2 / 2` (ln 2 in two
//! parts, the first exact in a product with `n`), `e^r` by its Taylor polynomial of degree 7
//! (truncation error below 6e-9 relative, under half an ulp), times `2^n` built in the
//! exponent bits. Below `−87` (where `e^x` leaves the normal floats) the result is 0; a NaN
//! stays NaN. Every tier is tested against an f64 evaluation; results depend on the tier (FMA
//! rounds once), never on where the row lies or on the threads.

use super::fgemm::Tier;

/// Values per step of each pass (one AVX-512 register, two of AVX2, four of NEON).
const LANES: usize = 16;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits: `n · LN2_HI` is exact for the
/// `|n| ≤ 127` used here.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding then subtracting 1.5·2²³ rounds to an integer (half to even).
const ROUND: f32 = 12_582_912.0;
/// Below this `e^x` is flushed to 0 (e^−87 ≈ 1.6e-38, just above the smallest normal float).
const CUTOFF: f32 = -87.0;

#[inline(always)]
fn fma<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `e^x` for `x ≤ 0` (see the module's notes).
#[inline(always)]
fn exp_nonpositive<const FMA: bool>(x: f32) -> f32 {
    // NaN compares false and stays NaN.
    let flushed = x < CUTOFF;
    let x = if flushed { CUTOFF } else { x };
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = fma::<FMA>(n, -LN2_HI, x);
    let r = fma::<FMA>(n, -LN2_LO, r);
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = fma::<FMA>(p, r, c);
    }
    // n ∈ [−126, 0]: 2ⁿ is a normal float, its exponent field n + 127. t = 1.5·2²³ + n holds
    // n in its low bits (integer arithmetic: a float-to-integer conversion, which saturates,
    // was not vectorized).
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    if flushed {
        0.0
    } else {
        p * two_n
    }
}

/// Lanes of the maximum's pass: four vectors of [`LANES`], so that four comparisons are in
/// flight (one vector's waited for the last: its latency, 4 cycles per 16 values, was a
/// quarter of a row's time).
const MAX_LANES: usize = 4 * LANES;

/// `lanes[i] ← f(lanes[i], lanes[i + width])` for `i < width`.
#[inline(always)]
fn fold<const N: usize>(lanes: &mut [f32; N], width: usize, f: impl Fn(f32, f32) -> f32) {
    for i in 0..width.min(N / 2) {
        lanes[i] = f(lanes[i], lanes[i + width]);
    }
}

/// The passes (see the module's notes): `row ← e^(row − max)`, then, if `normalize`, divided
/// by their sum; returns the sum's reciprocal.
#[inline(always)]
fn softmax_body<const FMA: bool>(row: &mut [f32], normalize: bool) -> f32 {
    // A NaN compares false: the maximum skips it (and its own e^ is NaN below).
    let mut lanes = [f32::NEG_INFINITY; MAX_LANES];
    let chunks = row.chunks_exact(MAX_LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..MAX_LANES {
            lanes[i] = if chunk[i] > lanes[i] {
                chunk[i]
            } else {
                lanes[i]
            };
        }
    }
    // The tail's whole vectors into the first lanes (a row of 289 scores, the window
    // attention's, has 33 values past its last 64: one after another, each comparison waiting
    // for the last, they were a tenth of the softmax).
    let vectors = tail.chunks_exact(LANES);
    let tail = vectors.remainder();
    for chunk in vectors {
        for i in 0..LANES {
            lanes[i] = if chunk[i] > lanes[i] {
                chunk[i]
            } else {
                lanes[i]
            };
        }
    }
    // Halves folded onto halves, each width a constant (so that each step is a few vector
    // instructions): one lane after another was a chain of dependent comparisons per row.
    for width in [32, 16, 8, 4, 2, 1].map(|w| w * MAX_LANES / 64) {
        fold(&mut lanes, width, |a, b| if b > a { b } else { a });
    }
    let mut max = lanes[0];
    for &x in tail {
        max = if x > max { x } else { max };
    }
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            let e = exp_nonpositive::<FMA>(chunk[i] - max);
            chunk[i] = e;
            sums[i] += e;
        }
    }
    for width in [8, 4, 2, 1].map(|w| w * LANES / 16) {
        fold(&mut sums, width, |a, b| a + b);
    }
    let mut sum = sums[0];
    for x in chunks.into_remainder() {
        let e = exp_nonpositive::<FMA>(*x - max);
        *x = e;
        sum += e;
    }
    let inverse = sum.recip();
    if normalize {
        for x in row.iter_mut() {
            *x *= inverse;
        }
    }
    inverse
}

/// The x86 copies, compiled for their instruction sets.
#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn avx512(row: &mut [f32], normalize: bool) -> f32 {
        super::softmax_body::<true>(row, normalize)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(row: &mut [f32], normalize: bool) -> f32 {
        super::softmax_body::<true>(row, normalize)
    }
}

/// `row ← softmax(row)` on `tier` (see the module's notes).
pub fn softmax_in_place(tier: Tier, row: &mut [f32]) {
    on_tier(tier, row, true);
}

/// `row ← e^(row − max(row))` on `tier`, not yet divided by its sum; returns the sum's
/// reciprocal. For a softmax whose rows are multiplied by a matrix next (the attention's
/// `P·V`): the product's few columns are scaled instead of the row's many values.
pub fn softmax_unnormalized(tier: Tier, row: &mut [f32]) -> f32 {
    on_tier(tier, row, false)
}

fn on_tier(tier: Tier, row: &mut [f32], normalize: bool) -> f32 {
    match tier {
        // SAFETY (both x86 tiers): the tier's CPU features were detected just now.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 if tier.supported() => unsafe { x86::avx512(row, normalize) },
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 if tier.supported() => unsafe { x86::avx2(row, normalize) },
        // aarch64 always has FMA (`fmla`); elsewhere `mul_add` may be a library call.
        Tier::Neon => softmax_body::<true>(row, normalize),
        _ => softmax_body::<false>(row, normalize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative distance, in units of f32's epsilon, of `got` from `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        (got as f64 - want).abs() / (want.abs() * f32::EPSILON as f64)
    }

    #[test]
    fn exp_is_within_two_ulps_of_f64() {
        for tier in Tier::available() {
            // As `softmax_in_place` calls it on this tier.
            let exp = |x: f32| match tier {
                Tier::Scalar => exp_nonpositive::<false>(x),
                _ => exp_nonpositive::<true>(x),
            };
            let mut worst = 0f64;
            for i in 0..=870_000 {
                let x = -(i as f32) * 1e-4;
                let want = (x as f64).exp();
                worst = worst.max(ulps(exp(x), want));
            }
            assert!(worst <= 2.0, "{tier:?}: {worst} ulps");
            assert_eq!(exp(0.0), 1.0, "{tier:?}");
            assert_eq!(exp(-0.0), 1.0, "{tier:?}");
            for x in [-87.01f32, -100.0, -1e30, f32::MIN, f32::NEG_INFINITY] {
                assert_eq!(exp(x), 0.0, "{tier:?}: e^{x}");
            }
            assert!(exp(f32::NAN).is_nan(), "{tier:?}");
        }
    }

    /// Softmax of rows of every length up to 300 (tails of every size), with large spreads,
    /// masked keys (−inf, f32::MIN, −10000), all equal values, and a NaN, against f64.
    #[test]
    fn softmax_equals_the_definition() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        for tier in Tier::available() {
            for case in 0..600 {
                let len = 1 + case % 300;
                let spread = [0.1f32, 4.0, 30.0, 200.0][case % 4];
                let mut row: Vec<f32> = (0..len).map(|_| (next() - 0.5) * spread).collect();
                if case % 5 == 1 {
                    for (i, x) in row.iter_mut().enumerate() {
                        if i % 3 == 1 {
                            *x = [f32::NEG_INFINITY, f32::MIN, -10_000.0][case % 3];
                        }
                    }
                }
                if case % 7 == 2 {
                    row.iter_mut().for_each(|x| *x = 1.25);
                }
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                let exps: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                let mut got = row.clone();
                softmax_in_place(tier, &mut got);
                for (i, (g, e)) in got.iter().zip(&exps).enumerate() {
                    let want = e / sum;
                    // `x − max` rounds in f32 (as in any f32 softmax): up to half an ulp of
                    // the difference, which e^ turns into that much relative error.
                    let d = (row[i] as f64 - max).abs();
                    let tolerance = 4e-7 + d * f32::EPSILON as f64;
                    // Values flushed below e^−87 of the row's largest are 0 here.
                    let close =
                        (*g as f64 - want).abs() <= tolerance * want || (want < 1e-37 && *g == 0.0);
                    assert!(
                        close,
                        "{tier:?}, case {case}, [{i}] of {len}: {g} vs {want}"
                    );
                }
                // Where the row lies does not matter.
                let mut shifted = vec![0f32; len + 3];
                shifted[3..].copy_from_slice(&row);
                softmax_in_place(tier, &mut shifted[3..]);
                assert_eq!(&shifted[3..], &got[..], "{tier:?}, case {case}");
            }
            // Unnormalized, then scaled by the reciprocal it returns: the same values.
            let mut row: Vec<f32> = (0..257).map(|_| (next() - 0.5) * 30.0).collect();
            let mut normalized = row.clone();
            softmax_in_place(tier, &mut normalized);
            let inverse = softmax_unnormalized(tier, &mut row);
            let scaled: Vec<f32> = row.iter().map(|e| e * inverse).collect();
            assert_eq!(scaled, normalized, "{tier:?}: unnormalized");
            let mut row = [1.0f32, f32::NAN, 2.0];
            softmax_in_place(tier, &mut row);
            assert!(row.iter().all(|x| x.is_nan()), "{tier:?}: a NaN spreads");
            let mut empty: [f32; 0] = [];
            softmax_in_place(tier, &mut empty);
        }
    }
}
