//! **Integer matrix products** for the int8 linear layers ([`super::qlinear`]): activations
//! `u8` with one zero point, weights `i8`, sums in `i32`, then the per-column rescale and bias in
//! f32. One kernel per instruction-set tier, chosen at run time:
//!
//! | tier | CPU | instruction | multiply-adds per instruction |
//! |---|---|---|---|
//! | `amx` | x86_64 with AMX-INT8 (Sapphire Rapids and later), Linux ≥ 5.16 | `tdpbusd` (16 × 64 u8 by 64 × 16 s8, into a 16 × 16 i32 tile) | 16,384 |
//! | `vnni` | x86_64 with AVX512-VNNI + VL, or AVX-VNNI | `vpdpbusd` (u8·s8, 4-way, into i32) | 32 |
//! | `avx2` | x86_64 with AVX2 | `vpmaddubsw` + `vpmaddwd` | 32 per 2 |
//! | `i8mm` | aarch64 with I8MM (Neoverse V1/N2, Cortex-A710+) | `usmmla` (u8·s8, 2×8 by 8×2) | 32 |
//! | `sdot` | aarch64 with the dot-product extension (Cortex-A76, Pi 5) | `sdot` (s8·s8, 4-way) | 16 |
//! | `neon` | any aarch64 (Cortex-A72, Pi 4) | `smlal` (s16·s16 into i32) | 4 |
//! | `simd128` | wasm32 built with SIMD128 (the component) | `i32x4.dot_i16x8_s` (2-way) | 8 |
//! | `scalar` | anything (the reference the others are tested against) | — | — |
//!
//! `AUTOGLM_INT8_KERNEL=<tier>` forces a tier (if the CPU has it; else the best one is used),
//! so that every tier a test machine supports can be tested and measured on it.
//!
//! Weights are packed once, at load, in the layout of the chosen tier: panels of [`NR`] output
//! columns; within a panel, for the 4-way tiers, groups of four consecutive `k` per column (one
//! 32-bit lane holds the four weights a `vpdpbusd`/`sdot` lane multiplies), zero-padded past `k`
//! and `n` (`amx`: the same layout, zero-padded to a multiple of 64 `k`, so that each 64 `k`
//! of a panel are one 16-row tile of 64 bytes, the B operand of `tdpbusd`; `i8mm`: groups of
//! eight, so that two columns' eight `k` are one 16-byte operand; `simd128`: pairs of `k`
//! widened to i16). The zero point is not subtracted from the
//! activations: `Σ (q − zp)·w = Σ q·w − zp·Σ w`, with the column sums `Σ w` computed at packing
//! (`sdot`, signed × signed, uses `q − 128` and adds `(128 − zp)·Σ w`). The sums are exact, as
//! ONNX `MatMulInteger` defines them (i32, wrapping): `vpmaddubsw` adds two u8·s8 products into
//! an i16 with saturation, so the `avx2` tier is used only for weights within ±64, where no pair
//! can saturate (the exporter keeps weights within ±63 for that reason); the rewrite leaves
//! other weights to tract.
//!
//! `unsafe` is confined to this module (SIMD intrinsics, the `sdot` and `usmmla` instructions
//! as inline assembly since their intrinsics are not stable, and raw output pointers shared by
//! the column tasks); every kernel is tested against the scalar reference below on random
//! shapes with tails in every dimension.

use tract_hir::prelude::*;
use tract_hir::tract_core::internal::ensure;

/// Output columns per panel (and per kernel call).
pub const NR: usize = 16;
/// The most rows of activations per kernel call ([`Tier::rows`]: 8 where the tier keeps 16
/// columns in one register and has the registers for eight sums, 6 otherwise).
pub const MR: usize = 8;
/// `k` values per 32-bit lane in the 4-way layouts.
const KG: usize = 4;

/// An instruction-set tier of the integer product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Scalar,
    Avx2,
    Vnni,
    Amx,
    Neon,
    Sdot,
    I8mm,
    Simd128,
}

impl Tier {
    pub const ALL: [Tier; 8] = [
        Tier::Scalar,
        Tier::Avx2,
        Tier::Vnni,
        Tier::Amx,
        Tier::Neon,
        Tier::Sdot,
        Tier::I8mm,
        Tier::Simd128,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Scalar => "scalar",
            Tier::Avx2 => "avx2",
            Tier::Vnni => "vnni",
            Tier::Amx => "amx",
            Tier::Neon => "neon",
            Tier::Sdot => "sdot",
            Tier::I8mm => "i8mm",
            Tier::Simd128 => "simd128",
        }
    }

    /// Whether this CPU runs the tier.
    pub fn supported(self) -> bool {
        match self {
            Tier::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Tier::Vnni => {
                std::is_x86_feature_detected!("avx2")
                    && ((std::is_x86_feature_detected!("avx512vnni")
                        && std::is_x86_feature_detected!("avx512vl"))
                        || std::is_x86_feature_detected!("avxvnni"))
            }
            // (Its epilogue is AVX-512's: every CPU with AMX has AVX512-VNNI.)
            #[cfg(target_arch = "x86_64")]
            Tier::Amx => has_avx512_vnni() && x86::amx::ready(),
            #[cfg(target_arch = "aarch64")]
            Tier::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Tier::Sdot => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[cfg(target_arch = "aarch64")]
            Tier::I8mm => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("i8mm")
            }
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Tier::Simd128 => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every tier this CPU runs, best first.
    pub fn available() -> Vec<Tier> {
        [
            Tier::Amx,
            Tier::Vnni,
            Tier::I8mm,
            Tier::Sdot,
            Tier::Simd128,
            Tier::Avx2,
            Tier::Neon,
            Tier::Scalar,
        ]
        .into_iter()
        .filter(|t| t.supported())
        .collect()
    }

    /// The tier a name asks for (`AUTOGLM_INT8_KERNEL`) if this CPU runs it; else the best one.
    pub fn select(requested: Option<&str>) -> Tier {
        super::pick_tier(&Tier::available(), Tier::name, requested)
    }

    /// The tier for this process: [`Tier::select`] of `AUTOGLM_INT8_KERNEL`.
    pub fn chosen() -> Tier {
        static CHOSEN: std::sync::OnceLock<Tier> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| Tier::select(std::env::var("AUTOGLM_INT8_KERNEL").ok().as_deref()))
    }

    /// Rows per kernel call: as many as the accumulators fit in registers.
    pub fn rows(self) -> usize {
        match self {
            Tier::Vnni if cfg!(target_arch = "x86_64") && has_avx512_vnni() => 8,
            _ => 6,
        }
    }

    /// Whether the tier computes exact sums for weights whose largest magnitude is `max_abs`.
    pub fn exact_for(self, max_abs: u8) -> bool {
        self != Tier::Avx2 || max_abs <= 64
    }

    /// How many consecutive `k` of a column the packed layout keeps together (the values one
    /// lane of the tier's instruction multiplies): 4 for the 4-way tiers, 8 for `i8mm`'s
    /// 2 × 8 blocks, 2 for `simd128`'s i16 pairs, 1 for `neon`.
    fn group(self) -> usize {
        match self {
            Tier::I8mm => 8,
            Tier::Neon => 1,
            Tier::Simd128 => 2,
            _ => KG,
        }
    }

    /// `k` as packed: rounded up to the tier's group, or to whole tiles of 64 for `amx`.
    fn depth(self, k: usize) -> usize {
        let unit = if self == Tier::Amx {
            AMX_K
        } else {
            self.group()
        };
        k.div_ceil(unit) * unit
    }
}

/// `k` values per `amx` tile row (64 bytes of activations, 16 groups of four weights).
const AMX_K: usize = 64;

/// Weights `[k, n]` (i8, row-major) packed for one tier, with their column sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedI8 {
    pub k: usize,
    pub n: usize,
    pub tier: Tier,
    /// `k` as packed ([`Tier::depth`]).
    kp: usize,
    data: Vec<i8>,
    /// `simd128`'s layout, widened to i16 (`data` is empty then).
    wide: Vec<i16>,
    colsum: Vec<i32>,
    /// The largest weight magnitude (128 for -128).
    pub max_abs: u8,
}

impl PackedI8 {
    pub fn new(w: &[i8], k: usize, n: usize, tier: Tier) -> TractResult<PackedI8> {
        ensure!(
            w.len() == k * n,
            "int8 weights: {} values for [{k}, {n}]",
            w.len()
        );
        let group = tier.group();
        let kp = tier.depth(k);
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels * kp * NR];
        for p in 0..panels {
            let panel = &mut data[p * kp * NR..(p + 1) * kp * NR];
            for kk in 0..k {
                for c in 0..NR.min(n - p * NR) {
                    panel[(kk / group * NR + c) * group + kk % group] = w[kk * n + p * NR + c];
                }
            }
        }
        let wide = if tier == Tier::Simd128 {
            std::mem::take(&mut data)
                .into_iter()
                .map(i16::from)
                .collect()
        } else {
            Vec::new()
        };
        let mut colsum = vec![0i32; n];
        for row in w.chunks(n.max(1)) {
            for (s, &v) in colsum.iter_mut().zip(row) {
                *s = s.wrapping_add(i32::from(v));
            }
        }
        let max_abs = w.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
        Ok(PackedI8 {
            k,
            n,
            tier,
            kp,
            data,
            wide,
            colsum,
            max_abs,
        })
    }

    /// The packed layout and the column sums, as [`PackedI8::from_parts`] takes them back.
    pub fn parts(&self) -> (&[i8], &[i32]) {
        (&self.data, &self.colsum)
    }

    /// Weights packed for `tier` from their [`PackedI8::parts`] (a cached plan's), checked to
    /// have the sizes that `[k, n]` packed for `tier` has.
    pub fn from_parts(
        k: usize,
        n: usize,
        tier: Tier,
        data: Vec<i8>,
        colsum: Vec<i32>,
        max_abs: u8,
    ) -> TractResult<PackedI8> {
        let kp = tier.depth(k);
        let len = n
            .div_ceil(NR)
            .checked_mul(kp)
            .and_then(|v| v.checked_mul(NR));
        ensure!(
            tier != Tier::Simd128 && Some(data.len()) == len && colsum.len() == n,
            "packed int8 weights: {} values and {} column sums for [{k}, {n}] on {}",
            data.len(),
            colsum.len(),
            tier.name()
        );
        Ok(PackedI8 {
            k,
            n,
            tier,
            kp,
            data,
            wide: Vec::new(),
            colsum,
            max_abs,
        })
    }

    fn panel(&self, p: usize) -> &[i8] {
        self.panels(p, 1)
    }

    /// Panels `p .. p + count`, one after the other in memory.
    fn panels(&self, p: usize, count: usize) -> &[i8] {
        let len = self.kp * NR;
        self.data.get(p * len..(p + count) * len).unwrap_or(&[])
    }

    #[cfg_attr(
        not(all(target_arch = "wasm32", target_feature = "simd128")),
        allow(dead_code)
    )]
    fn panel_wide(&self, p: usize) -> &[i16] {
        let len = self.kp * NR;
        self.wide.get(p * len..(p + 1) * len).unwrap_or(&[])
    }
}

/// The output buffer, shared by the column tasks: each writes its own panel's columns.
#[derive(Debug, Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks that share it write disjoint elements (one panel's columns each) of a
// buffer that outlives them (`run_tasks` joins every task before it returns).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// (A method, so that closures capture the whole `Send + Sync` struct, not its field.)
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `out[r, c] = (Σₖ (a[r, k] − zp)·w[k, c]) as f32 · scale[c] + bias[c]` for `rows` rows of
/// `a` (`[rows, k]` u8), exactly as ONNX `MatMulInteger` → `Cast` → `Mul` → `Add` compute it
/// (i32 sums, then one f32 rounding per operation). Column panels run in parallel on
/// `executor` when it has threads.
#[allow(clippy::too_many_arguments)]
pub fn qgemm(
    a: &[u8],
    rows: usize,
    zp: u8,
    w: &PackedI8,
    scale: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<()> {
    ensure!(
        rows.checked_mul(w.n) == Some(out.len()),
        "int8 product: {} outputs for {rows} rows of {}",
        out.len(),
        w.n
    );
    let operands = Operands::new(a, rows, zp, w, scale, bias)?;
    // SAFETY: `out` holds the `rows × n` values the product writes.
    unsafe { product(&operands, OutPtr(out.as_mut_ptr()), None, executor) }
}

/// What [`qgemm_new`] runs on the output's rows once the product has written them (the
/// layer's GELU): on each block of rows of a long call ([`LONG_ROWS`]) as soon as that block is
/// done, while its values are still in the core's cache; on the whole output, in parts on the
/// pool, otherwise. It must treat every value alone (its result may not depend on how the rows
/// are split).
pub type Finish<'f> = &'f (dyn Fn(&mut [f32]) -> TractResult<()> + Sync);

/// [`qgemm`] into a new tensor of `shape` (`[.., n]`, `rows` rows), then `finish` on its
/// values. The tensor is not zeroed first: the product writes every one of its values (at
/// 4,096 rows, zeroing a `[4096, 1536]` output was 25 MB written, and read again for
/// ownership by the product's stores, once more than needed).
#[allow(clippy::too_many_arguments)]
pub fn qgemm_new(
    a: &[u8],
    rows: usize,
    zp: u8,
    w: &PackedI8,
    scale: &[f32],
    bias: Option<&[f32]>,
    shape: &[usize],
    finish: Option<Finish>,
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<Tensor> {
    ensure!(
        shape.last() == Some(&w.n)
            && shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) == rows.checked_mul(w.n),
        "int8 product: output shape {shape:?} for {rows} rows of {}",
        w.n
    );
    let operands = Operands::new(a, rows, zp, w, scale, bias)?;
    // SAFETY: no value of the tensor is read before it is written: `product` writes every one
    // of its `rows × n` values (each row of each panel's columns, `panels`), `finish` runs on
    // rows the product has written, and the tensor is returned only after both.
    let mut out = unsafe { Tensor::uninitialized::<f32>(shape)? };
    {
        let mut ram = out.try_as_plain_ram_mut()?;
        let values = ram.as_slice_mut::<f32>()?;
        ensure!(
            values.len() == rows * w.n,
            "int8 product: output of {} values",
            values.len()
        );
        let long = row_block(rows) < rows;
        // SAFETY: `values` holds the `rows × n` values the product writes.
        unsafe {
            product(
                &operands,
                OutPtr(values.as_mut_ptr()),
                finish.filter(|_| long),
                executor,
            )?
        };
        if let Some(finish) = finish.filter(|_| !long) {
            super::for_parts_mut(values, executor, |_, part| finish(part))?;
        }
    }
    Ok(out)
}

/// One call's operands, checked against each other, and A padded to the kernel's groups.
struct Operands<'a> {
    w: &'a PackedI8,
    a: std::borrow::Cow<'a, [u8]>,
    lda: usize,
    rows: usize,
    zp: u8,
    scale: &'a [f32],
    bias: Option<&'a [f32]>,
}

impl<'a> Operands<'a> {
    fn new(
        a: &'a [u8],
        rows: usize,
        zp: u8,
        w: &'a PackedI8,
        scale: &'a [f32],
        bias: Option<&'a [f32]>,
    ) -> TractResult<Operands<'a>> {
        let (k, n) = (w.k, w.n);
        ensure!(
            rows.checked_mul(k) == Some(a.len())
                && rows.checked_mul(n).is_some()
                && scale.len() == n
                && bias.is_none_or(|b| b.len() == n),
            "int8 product: buffer sizes do not match [{rows}, {k}] x [{k}, {n}]"
        );
        ensure!(
            w.tier.supported() && w.tier.exact_for(w.max_abs),
            "int8 product: the {} kernel cannot run these weights here",
            w.tier.name()
        );
        // The 4-way kernels read whole groups of four (`amx`: whole tiles of 64): rows whose
        // length is not a multiple of that are copied, zero-padded (the padded weights are
        // zero too).
        let (a, lda) = if w.kp != k && rows > 0 {
            let mut buf = vec![0u8; rows * w.kp];
            for (dst, src) in buf.chunks_mut(w.kp).zip(a.chunks(k.max(1))) {
                dst[..k].copy_from_slice(src);
            }
            (std::borrow::Cow::Owned(buf), w.kp)
        } else {
            (std::borrow::Cow::Borrowed(a), k)
        };
        Ok(Operands {
            w,
            a,
            lda,
            rows,
            zp,
            scale,
            bias,
        })
    }
}

/// The product of checked operands into `out`; with `finish`, the tasks are whole blocks of
/// rows, each finished by the task that made it (only for calls of more than one block).
///
/// # Safety
/// `out` points to `rows × n` f32 values that nothing else reads or writes during the call.
unsafe fn product(
    operands: &Operands,
    out: OutPtr,
    finish: Option<Finish>,
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<()> {
    let Operands {
        w,
        ref a,
        lda,
        rows,
        zp,
        scale,
        bias,
    } = *operands;
    let n = w.n;
    if rows == 0 || n == 0 {
        return Ok(());
    }
    // With AVX512-VNNI each task takes two neighbouring panels ([`x86::panel_pair_avx512`]),
    // and so does `amx` (two B tiles against each A tile, [`x86::amx::panels`]).
    let wide = has_avx512_vnni() && !narrow_vnni_in_tests();
    let per_task = match w.tier {
        Tier::Vnni if cfg!(target_arch = "x86_64") && wide => 2,
        Tier::Amx => 2,
        _ => 1,
    };
    // Each panel's constants, once per call (per task, at 4,096 rows, they were rebuilt for
    // every block of rows: 1 % of a long document's time).
    let epilogues: Vec<Epilogue> = (0..n.div_ceil(NR))
        .map(|p| Epilogue::new(w, zp, scale, bias, p))
        .collect();
    let job = Job {
        w,
        a,
        lda,
        zp,
        bias,
        out,
        epilogues: &epilogues,
    };
    let run = |r: usize, p: usize| {
        let rows = r..rows.min(r + row_block(rows));
        // SAFETY: the sizes were checked (`Operands::new`, the caller for `out`); the tier
        // runs on this CPU (checked); each task writes its own rows of its own panels' columns
        // only.
        unsafe {
            match w.tier {
                #[cfg(target_arch = "x86_64")]
                Tier::Amx => x86::amx::panels(&job, p, rows),
                #[cfg(target_arch = "x86_64")]
                Tier::Vnni if per_task == 2 => x86::panel_pair_avx512(&job, p, rows),
                #[cfg(target_arch = "x86_64")]
                Tier::Vnni => x86::panel_avx2(&job, p, rows, true),
                #[cfg(target_arch = "x86_64")]
                Tier::Avx2 => x86::panel_avx2(&job, p, rows, false),
                _ => panel(&job, p, rows),
            }
        }
    };
    let block = row_block(rows);
    let panels = (0..n.div_ceil(NR)).step_by(per_task);
    if let Some(finish) = finish {
        // Tasks: blocks of rows, each through every panel, then finished.
        let blocks: Vec<usize> = (0..rows).step_by(block).collect();
        return super::attention::run_tasks(&blocks, executor, |r| {
            panels.clone().for_each(|p| run(r, p));
            let len = (rows.min(r + block) - r) * n;
            // SAFETY: these rows are inside `out` (the caller's promise) and this task alone
            // wrote them (every panel, just now) and touches them.
            finish(unsafe { std::slice::from_raw_parts_mut(out.at(r * n), len) })
        });
    }
    // Tasks: (block of rows, first panel), the blocks in order (see [`LONG_ROWS`]). One block:
    // each thread takes one contiguous run of its panels (`run_task_runs`).
    let tasks: Vec<(usize, usize)> = (0..rows)
        .step_by(block)
        .flat_map(|r| panels.clone().map(move |p| (r, p)))
        .collect();
    let run_tasks = if block >= rows {
        super::attention::run_task_runs
    } else {
        super::attention::run_tasks
    };
    run_tasks(&tasks, executor, |(r, p)| {
        run(r, p);
        Ok(())
    })
}

/// Above this many rows a call runs in blocks of [`BLOCK_ROWS`] rows: each block's rows go
/// through every panel before the next block starts. Whole columns of 4,096 rows (as below
/// this) wrote each panel's outputs 6 KB apart across 25 MB (`n` = 1,536) and read all the
/// activations again per panel: at 2,048-4,096 rows, blocks of 32-128 rows ran 1.1-1.5x
/// faster by median, in-process and alternated (BENCHMARKS.md, wave 17). At 128-512 rows
/// blocks were no faster (each block reads every panel again).
pub const LONG_ROWS: usize = 1024;
/// Rows per block of a long call (whole tiles of [`MR`]).
pub const BLOCK_ROWS: usize = 64;

/// Rows per block of a call of `rows` rows.
fn row_block(rows: usize) -> usize {
    if rows > LONG_ROWS {
        BLOCK_ROWS
    } else {
        rows.max(1)
    }
}

/// One call's operands, shared by its column tasks.
struct Job<'a> {
    w: &'a PackedI8,
    a: &'a [u8],
    lda: usize,
    zp: u8,
    bias: Option<&'a [f32]>,
    out: OutPtr,
    /// Each panel's epilogue.
    epilogues: &'a [Epilogue],
}

/// Panel `p` of a call: every row's sums against the panel's columns, then the epilogue.
///
/// # Safety
/// As [`panels`].
#[inline(always)]
unsafe fn panel(job: &Job, p: usize, rows: std::ops::Range<usize>) {
    let (w, lda, zp) = (job.w, job.lda, job.zp);
    // SAFETY: `a_rows` holds `mr` rows of `lda ≥ kp` bytes and panel `p` its `kp · NR`
    // weights, which is what the kernels read; the tier runs on this CPU (checked by `qgemm`).
    unsafe {
        panels::<1>(job, p, rows, |mr, a_rows, tiles| {
            tile_sums(w, p, mr, a_rows, lda, zp, &mut tiles[0])
        })
    }
}

/// `PP` neighbouring panels from `p` of a call: `sums` fills each panel's tile of raw sums for
/// `mr` rows of `a`, then the epilogue of each panel writes its rows. Inlined into the per-ISA
/// copies below, so that the epilogue's fixed-size loops are compiled for the kernel's vector
/// width too (at k = 384 the baseline's 4-lane epilogue was a quarter of the time).
///
/// # Safety
/// `job` passed `qgemm`'s checks, panels `p .. p + PP` exist, no other task writes them, and
/// `sums` writes `mr` rows of each tile.
#[inline(always)]
unsafe fn panels<const PP: usize>(
    job: &Job,
    p: usize,
    rows: std::ops::Range<usize>,
    sums: impl Fn(usize, &[u8], &mut [[[i32; NR]; MR]; PP]),
) {
    let Job {
        w,
        a,
        lda,
        bias,
        out,
        ..
    } = *job;
    let n = w.n;
    // Each panel's column constants (zero-padded to whole vectors: the epilogue below runs on
    // fixed-size arrays, which the compiler vectorizes).
    let epilogues: [&Epilogue; PP] = std::array::from_fn(|i| &job.epilogues[p + i]);
    let mut tiles = [[[0i32; NR]; MR]; PP];
    let mut ys = [0f32; NR];
    let step = w.tier.rows();
    for r0 in rows.clone().step_by(step) {
        let mr = step.min(rows.end - r0);
        sums(mr, &a[r0 * lda..(r0 + mr) * lda], &mut tiles);
        for (tile, e) in tiles.iter().zip(epilogues) {
            for (r, sums) in tile.iter().take(mr).enumerate() {
                for c in 0..NR {
                    ys[c] = sums[c].wrapping_add(e.offset[c]) as f32 * e.scales[c];
                }
                if bias.is_some() {
                    for c in 0..NR {
                        ys[c] += e.biases[c];
                    }
                }
                // SAFETY: row r0 + r, columns `first .. first + cols` are inside the
                // `rows × n` output; this task alone writes these columns.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        ys.as_ptr(),
                        out.at((r0 + r) * n + e.first),
                        e.cols,
                    )
                };
            }
        }
    }
}

/// One panel's columns and constants: `y = (sum + offset)·scale + bias`.
struct Epilogue {
    first: usize,
    cols: usize,
    offset: [i32; NR],
    scales: [f32; NR],
    biases: [f32; NR],
}

impl Epilogue {
    /// Panel `p`'s, zero past its last column.
    fn new(w: &PackedI8, zp: u8, scale: &[f32], bias: Option<&[f32]>, p: usize) -> Epilogue {
        let first = p * NR;
        let cols = NR.min(w.n - first);
        let mut e = Epilogue {
            first,
            cols,
            offset: [0; NR],
            scales: [0.0; NR],
            biases: [0.0; NR],
        };
        for c in 0..cols {
            e.offset[c] = correction(w.tier, zp, w.colsum[first + c]);
            e.scales[c] = scale[first + c];
            e.biases[c] = bias.map_or(0.0, |b| b[first + c]);
        }
        e
    }
}

/// What a kernel's raw sum needs added for the zero point (i32, wrapping, as the sums).
fn correction(tier: Tier, zp: u8, colsum: i32) -> i32 {
    match tier {
        // Σ q·w − zp·Σ w
        Tier::Scalar | Tier::Avx2 | Tier::Vnni | Tier::Amx | Tier::I8mm => {
            i32::from(zp).wrapping_mul(colsum).wrapping_neg()
        }
        // Σ (q − 128)·w + (128 − zp)·Σ w
        Tier::Sdot => (128 - i32::from(zp)).wrapping_mul(colsum),
        // the kernel subtracts the zero point itself
        Tier::Neon | Tier::Simd128 => 0,
    }
}

/// `$f::<mr>(args)` for the row count `mr` (1 to [`MR`]) a kernel is instantiated for.
macro_rules! by_rows {
    ($mr:expr, $($f:ident)::+ ($($arg:expr),* $(,)?)) => {
        match $mr {
            1 => $($f)::+::<1>($($arg),*),
            2 => $($f)::+::<2>($($arg),*),
            3 => $($f)::+::<3>($($arg),*),
            4 => $($f)::+::<4>($($arg),*),
            5 => $($f)::+::<5>($($arg),*),
            6 => $($f)::+::<6>($($arg),*),
            7 => $($f)::+::<7>($($arg),*),
            _ => $($f)::+::<8>($($arg),*),
        }
    };
}

/// The raw sums of `mr ≤ MR` rows of `a` (stride `lda`) against panel `p` of `w`, into `tile`.
///
/// # Safety
/// `a` holds `mr` rows of at least `w.kp` bytes at stride `lda`, and the CPU runs `w.tier`.
unsafe fn tile_sums(
    w: &PackedI8,
    p: usize,
    mr: usize,
    a: &[u8],
    lda: usize,
    zp: u8,
    tile: &mut [[i32; NR]; MR],
) {
    let kp = w.kp;
    let (ap, panel) = (a.as_ptr(), w.panel(p));
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    let wp = panel.as_ptr();
    match w.tier {
        #[cfg(target_arch = "x86_64")]
        Tier::Vnni if has_avx512_vnni() => unsafe {
            by_rows!(mr, x86::vnni512(ap, lda, wp, kp, tile))
        },
        #[cfg(target_arch = "aarch64")]
        Tier::Sdot => unsafe { by_rows!(mr, arm::sdot(ap, lda, wp, kp, tile)) },
        #[cfg(target_arch = "aarch64")]
        Tier::I8mm => unsafe { by_rows!(mr, arm::i8mm(ap, lda, wp, kp, tile)) },
        #[cfg(target_arch = "aarch64")]
        Tier::Neon => unsafe { by_rows!(mr, arm::smlal(ap, lda, wp, kp, zp, tile)) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Tier::Simd128 => unsafe {
            by_rows!(
                mr,
                wasm::dot(ap, lda, w.panel_wide(p).as_ptr(), kp, zp, tile)
            )
        },
        // (only `neon` and `simd128` take the zero point in the kernel)
        _ => scalar_sums(mr, a, lda, panel, kp, tile, zp),
    }
}

#[cfg(test)]
thread_local! {
    /// Tests only: [`product`] called on this thread takes the 256-bit `vnni` kernels
    /// (AVX-VNNI) even where AVX512-VNNI is there. Without it, no CPU that has both (Intel's
    /// since Sapphire Rapids) would ever run them, and the CPUs that take them in use (AVX-VNNI
    /// without AVX-512: Alder Lake and later clients) are not among this project's machines.
    static NARROW_VNNI: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a test on this thread asked for the 256-bit `vnni` kernels ([`NARROW_VNNI`]).
fn narrow_vnni_in_tests() -> bool {
    #[cfg(test)]
    return NARROW_VNNI.with(|narrow| narrow.get());
    #[cfg(not(test))]
    false
}

/// Whether the CPU has AVX512-VNNI (the 512-bit `vnni` kernel), not only AVX-VNNI.
fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx512vnni");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The grouped layout's raw sums, one multiply-add at a time.
fn scalar_sums(
    mr: usize,
    a: &[u8],
    lda: usize,
    panel: &[i8],
    kp: usize,
    tile: &mut [[i32; NR]; MR],
    _zp: u8,
) {
    for (r, sums) in tile.iter_mut().take(mr).enumerate() {
        let row = &a[r * lda..r * lda + kp];
        *sums = [0; NR];
        for (g, quad) in row.chunks_exact(KG).enumerate() {
            let weights = &panel[g * NR * KG..(g + 1) * NR * KG];
            for (c, s) in sums.iter_mut().enumerate() {
                for (j, &q) in quad.iter().enumerate() {
                    *s = s.wrapping_add(i32::from(q) * i32::from(weights[c * KG + j]));
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Job, KG, MR, NR};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Panels `p` and `p + 1` (or `p` alone, the last of an odd count) on the two-panel
    /// 512-bit VNNI kernel, its epilogue done on the sums in registers ([`vnni512x2_out`]).
    ///
    /// # Safety
    /// As [`super::panels`]; the CPU has AVX512-VNNI.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vnni")]
    pub(super) unsafe fn panel_pair_avx512(job: &Job, p: usize, rows: Range<usize>) {
        let (w, lda) = (job.w, job.lda);
        if p + 1 >= w.n.div_ceil(NR) {
            return unsafe { super::panel(job, p, rows) };
        }
        let pair = w.panels(p, 2);
        let consts = [
            PairOut::of(&job.epilogues[p]),
            PairOut::of(&job.epilogues[p + 1]),
        ];
        let bias = job.bias.is_some();
        for r0 in rows.clone().step_by(MR) {
            let mr = MR.min(rows.end - r0);
            // SAFETY: rows `r0 .. r0 + mr` of `a` (`lda ≥ kp` bytes each) and the pair's
            // `2 · kp · NR` weights are what the kernel reads; it writes rows `r0 .. r0 + mr`
            // of the pair's columns (the masks stop at the last one), inside the `rows × n`
            // output, which this task alone writes there.
            unsafe {
                by_rows!(
                    mr,
                    vnni512x2_out(
                        job.a.as_ptr().add(r0 * lda),
                        lda,
                        pair.as_ptr(),
                        w.kp,
                        &consts,
                        bias,
                        job.out.at(r0 * w.n + p * NR),
                        w.n
                    )
                )
            }
        }
    }

    /// The epilogue of a kernel's sums in registers: row `r`'s vector `i` goes through the
    /// zero-point offset, the conversion, the scale and (when `$bias`) the bias, the same i32
    /// addition, conversion, product and sum as [`super::panels`] (so the same bits), and is
    /// stored by `$store` (given the address, the vector's constants and the values) at
    /// `out + r · ldo + i · $width` (an address taken with `wrapping_add`: a store with an
    /// empty mask may be given an address past the output). `$simd`: the width's integer
    /// addition, conversion, product and addition.
    macro_rules! epilogue {
        ($acc:expr, $consts:expr, $bias:expr, ($out:expr, $ldo:expr), $width:expr, $simd:expr,
         |$at:ident, $c:ident, $y:ident| $store:expr) => {{
            let (add_i, convert, mul, add) = $simd;
            for (r, acc) in $acc.iter().enumerate() {
                for (i, (&sums, $c)) in acc.iter().zip($consts).enumerate() {
                    let mut $y = mul(convert(add_i(sums, $c.offset)), $c.scale);
                    if $bias {
                        $y = add($y, $c.bias);
                    }
                    let $at = $out.wrapping_add(r * $ldo + i * $width);
                    $store;
                }
            }
        }};
    }

    /// One panel's epilogue constants as vectors, and the mask of its columns.
    struct PairOut {
        offset: __m512i,
        scale: __m512,
        bias: __m512,
        mask: __mmask16,
    }

    impl PairOut {
        #[target_feature(enable = "avx512f")]
        fn of(e: &super::Epilogue) -> PairOut {
            // SAFETY: each load reads the 16 values of an epilogue's array.
            unsafe {
                PairOut {
                    offset: _mm512_loadu_si512(e.offset.as_ptr() as *const __m512i),
                    scale: _mm512_loadu_ps(e.scales.as_ptr()),
                    bias: _mm512_loadu_ps(e.biases.as_ptr()),
                    mask: (((1u32 << e.cols) - 1) & 0xffff) as __mmask16,
                }
            }
        }
    }

    /// The two-panel 512-bit VNNI kernel: 32 columns (`w` and the `kp · NR` weights after it),
    /// so each row's broadcast activations feed two `vpdpbusd`, and the 16 sums in registers
    /// keep both of the core's 512-bit multiply-add ports busy through the instruction's
    /// latency (eight sums, the one-panel kernel's, cannot). Then each row's sums go through
    /// the epilogue in registers and are stored to
    /// `out` (row `r` at `out + r · ldo`, panel `i`'s columns from `i · NR`): the same i32
    /// addition, conversion, product and sum (`bias`: the bias is added) as
    /// [`super::panels`], so the same bits, without the sums' trip through memory and the
    /// copy of each row.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn vnni512x2_out<const ROWS: usize>(
        a: *const u8,
        lda: usize,
        w: *const i8,
        kp: usize,
        consts: &[PairOut; 2],
        bias: bool,
        out: *mut f32,
        ldo: usize,
    ) {
        let acc = unsafe { vnni512_sums::<ROWS, 2>(a, lda, w, kp) };
        // (Each panel's columns start within the output: the pair's second panel exists.)
        let simd = (
            _mm512_add_epi32,
            _mm512_cvtepi32_ps,
            _mm512_mul_ps,
            _mm512_add_ps,
        );
        epilogue!(acc, consts, bias, (out, ldo), NR, simd, |at, c, y| unsafe {
            _mm512_mask_storeu_ps(at, c.mask, y)
        });
    }

    /// Panel `p` on a 4-way 256-bit kernel (`vnni`: AVX-VNNI, else AVX2), its epilogue done on
    /// the sums in registers ([`four_way`]).
    ///
    /// # Safety
    /// As [`super::panels`]; the CPU has AVX2 and FMA (and AVX-VNNI with `vnni`).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panel_avx2(job: &Job, p: usize, rows: Range<usize>, vnni: bool) {
        let (w, lda) = (job.w, job.lda);
        let e = &job.epilogues[p];
        // SAFETY: each load reads 8 of the 16 values of an epilogue's array, from 0 or 8.
        let half = |h: usize| unsafe {
            let lane = |c: usize| if h * 8 + c < e.cols { -1 } else { 0 };
            HalfOut {
                offset: _mm256_loadu_si256(e.offset.as_ptr().add(8 * h) as *const __m256i),
                scale: _mm256_loadu_ps(e.scales.as_ptr().add(8 * h)),
                bias: _mm256_loadu_ps(e.biases.as_ptr().add(8 * h)),
                mask: _mm256_setr_epi32(
                    lane(0),
                    lane(1),
                    lane(2),
                    lane(3),
                    lane(4),
                    lane(5),
                    lane(6),
                    lane(7),
                ),
            }
        };
        let consts = [half(0), half(1)];
        let (bias, panel) = (job.bias.is_some(), w.panel(p).as_ptr());
        for r0 in rows.clone().step_by(MR) {
            let mr = MR.min(rows.end - r0);
            let (a, out) = (
                unsafe { job.a.as_ptr().add(r0 * lda) },
                job.out.at(r0 * w.n + p * NR),
            );
            // SAFETY: rows `r0 .. r0 + mr` of `a` (`lda ≥ kp` bytes each) and the panel's
            // `kp · NR` weights are what the kernel reads; it writes rows `r0 .. r0 + mr` of
            // the panel's columns (the masks stop at the last one), inside the `rows × n`
            // output, which this task alone writes there.
            unsafe {
                if vnni {
                    by_rows!(mr, avxvnni(a, lda, panel, w.kp, &consts, bias, out, w.n))
                } else {
                    by_rows!(mr, avx2(a, lda, panel, w.kp, &consts, bias, out, w.n))
                }
            }
        }
    }

    /// Half a panel's epilogue constants as 256-bit vectors, and the mask of its columns.
    struct HalfOut {
        offset: __m256i,
        scale: __m256,
        bias: __m256,
        mask: __m256i,
    }

    /// One 4-way 256-bit kernel (`$out`): for each group of four `k`, the panel's 16 columns
    /// as two vectors of 8 lanes; each row's four activations broadcast to every lane; `$dot`
    /// adds the four products of each lane into its i32. Then the epilogue on the sums in
    /// registers.
    macro_rules! four_way {
        ($out:ident, $features:literal, $dot:expr) => {
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn sums<const ROWS: usize>(
                a: *const u8,
                lda: usize,
                w: *const i8,
                kp: usize,
            ) -> [[__m256i; 2]; ROWS] {
                let dot = $dot;
                let mut acc = [[_mm256_setzero_si256(); 2]; ROWS];
                for g in 0..kp / KG {
                    unsafe {
                        let w0 = _mm256_loadu_si256(w.add(g * NR * KG) as *const __m256i);
                        let w1 = _mm256_loadu_si256(w.add(g * NR * KG + 32) as *const __m256i);
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let quad = (a.add(r * lda + g * KG) as *const i32).read_unaligned();
                            let x = _mm256_set1_epi32(quad);
                            acc[0] = dot(acc[0], x, w0);
                            acc[1] = dot(acc[1], x, w1);
                        }
                    }
                }
                acc
            }

            /// The sums, then each row's epilogue in registers (the same i32 addition,
            /// conversion, product and sum as [`super::panels`], so the same bits), stored to
            /// `out` (row `r` at `out + r · ldo`; the masks' columns only).
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $features)]
            pub(in crate::ops::qgemm) unsafe fn $out<const ROWS: usize>(
                a: *const u8,
                lda: usize,
                w: *const i8,
                kp: usize,
                consts: &[HalfOut; 2],
                bias: bool,
                out: *mut f32,
                ldo: usize,
            ) {
                let acc = unsafe { sums::<ROWS>(a, lda, w, kp) };
                // (The second half of a last panel of at most 8 columns is stored with an
                // empty mask, at an address that may be past the output: hence
                // `wrapping_add` in `epilogue!`.)
                let simd = (
                    _mm256_add_epi32,
                    _mm256_cvtepi32_ps,
                    _mm256_mul_ps,
                    _mm256_add_ps,
                );
                epilogue!(acc, consts, bias, (out, ldo), 8, simd, |at, c, y| unsafe {
                    _mm256_maskstore_ps(at, c.mask, y)
                });
            }
        };
    }

    /// AVX512-VNNI: a panel's 16 columns are one 512-bit vector, so a group of four `k` is
    /// one weight load and one `vpdpbusd` per row (half the instructions of two 256-bit ones).
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn vnni512<const ROWS: usize>(
        a: *const u8,
        lda: usize,
        w: *const i8,
        kp: usize,
        tile: &mut [[i32; NR]; MR],
    ) {
        unsafe { vnni512_panels::<ROWS, 1>(a, lda, w, kp, std::array::from_mut(tile)) }
    }

    /// [`vnni512_sums`] stored to `tiles`.
    #[inline(always)]
    unsafe fn vnni512_panels<const ROWS: usize, const P: usize>(
        a: *const u8,
        lda: usize,
        w: *const i8,
        kp: usize,
        tiles: &mut [[[i32; NR]; MR]; P],
    ) {
        let acc = unsafe { vnni512_sums::<ROWS, P>(a, lda, w, kp) };
        for (r, acc) in acc.iter().enumerate() {
            for (tile, &v) in tiles.iter_mut().zip(acc) {
                unsafe { _mm512_storeu_si512(tile[r].as_mut_ptr() as *mut __m512i, v) };
            }
        }
    }

    /// The body of both 512-bit kernels ([`vnni512`], [`vnni512x2_out`]): `P` panels one after
    /// the other from `w`, one sum vector per row and panel, in registers.
    #[inline(always)]
    unsafe fn vnni512_sums<const ROWS: usize, const P: usize>(
        a: *const u8,
        lda: usize,
        w: *const i8,
        kp: usize,
    ) -> [[__m512i; P]; ROWS] {
        let mut acc = [[_mm512_setzero_si512(); P]; ROWS];
        for g in 0..kp / KG {
            unsafe {
                let ws: [__m512i; P] = std::array::from_fn(|i| {
                    _mm512_loadu_si512(w.add((i * kp + g * KG) * NR) as *const __m512i)
                });
                for (r, acc) in acc.iter_mut().enumerate() {
                    let quad = (a.add(r * lda + g * KG) as *const i32).read_unaligned();
                    let x = _mm512_set1_epi32(quad);
                    for (acc, &w) in acc.iter_mut().zip(&ws) {
                        *acc = _mm512_dpbusd_epi32(*acc, x, w);
                    }
                }
            }
        }
        acc
    }

    /// The AVX-VNNI kernels (`vpdpbusd` on 256 bits).
    mod avx_vnni {
        use super::*;
        four_way!(avxvnni, "avx2,avxvnni", |acc, x, w| {
            _mm256_dpbusd_avx_epi32(acc, x, w)
        });
    }
    /// The AVX2 kernels: u8·s8 pairs into i16 (exact for |w| ≤ 64), pairs of those into i32.
    mod pairs {
        use super::*;
        four_way!(avx2, "avx2", |acc, x, w| {
            let pairs = _mm256_maddubs_epi16(x, w);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        });
    }
    use avx_vnni::avxvnni;
    use pairs::avx2;

    /// The `amx` tier: Intel's Advanced Matrix Extensions, eight tile registers of up to
    /// 16 rows × 64 bytes and a matrix unit that multiplies two of them into a third. A step
    /// takes 32 rows of activations (two A tiles, `tmm4`/`tmm5`) against two panels (two B
    /// tiles, `tmm6`/`tmm7`) into four 16 × 16 i32 C tiles (`tmm0`–`tmm3`), 64 `k` at a time:
    /// four `tdpbusd`, 65,536 multiply-adds, per four tile loads. The instructions are written
    /// as inline assembly (their intrinsics are not stable); the sums then go through memory
    /// (`tilestored`, there is no other way out of a tile) into the same epilogue as
    /// [`vnni512x2_out`]'s, so the same bits.
    pub(super) mod amx {
        use super::super::{Job, AMX_K, NR};
        use super::PairOut;
        use std::arch::asm;
        use std::arch::x86_64::*;
        use std::ops::Range;

        /// Rows of an A tile and of a C tile.
        const TILE_ROWS: usize = 16;
        /// Rows per step: two A tiles.
        const STEP: usize = 2 * TILE_ROWS;

        /// Whether this process can run AMX-INT8: the CPU has AMX-TILE and AMX-INT8 (CPUID
        /// leaf 7), and Linux granted the process the tile data state (AMX's 8 KB of
        /// registers are enabled per process, on request: `arch_prctl(ARCH_REQ_XCOMP_PERM,
        /// XFEATURE_XTILEDATA)`, kernel 5.16 or later). Asked once; a tile instruction without
        /// that grant would kill the process (`SIGILL`).
        pub fn ready() -> bool {
            static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            *READY.get_or_init(|| {
                let leaf = __cpuid_count(7, 0);
                let (tile, int8) = (leaf.edx >> 24 & 1 == 1, leaf.edx >> 25 & 1 == 1);
                tile && int8 && request_tile_data()
            })
        }

        #[cfg(target_os = "linux")]
        fn request_tile_data() -> bool {
            const ARCH_PRCTL: i64 = 158;
            const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
            const XFEATURE_XTILEDATA: i64 = 18;
            let ret: i64;
            // SAFETY: the `arch_prctl` system call with these arguments reads and writes no
            // memory of the process; `syscall` overwrites `rcx` and `r11`, declared.
            unsafe {
                asm!(
                    "syscall",
                    inlateout("rax") ARCH_PRCTL => ret,
                    in("rdi") ARCH_REQ_XCOMP_PERM,
                    in("rsi") XFEATURE_XTILEDATA,
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack)
                );
            }
            ret == 0
        }

        /// (Other systems: not asked, not used.)
        #[cfg(not(target_os = "linux"))]
        fn request_tile_data() -> bool {
            false
        }

        /// A tile configuration (palette 1): C tiles `tmm0`/`tmm1` (the top rows against
        /// panels 0 and 1) and `tmm2`/`tmm3` (the bottom rows), A tiles `tmm4` (top) and `tmm5`
        /// (bottom), B tiles `tmm6`/`tmm7` (16 groups of four `k` of panels 0 and 1); `top`
        /// (1 to 16) and `bottom` (0 to 16) rows. Tiles of no rows are left unconfigured.
        #[repr(C, align(64))]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        struct Config([u8; 64]);

        impl Config {
            fn new(top: usize, bottom: usize) -> Config {
                let mut bytes = [0u8; 64];
                bytes[0] = 1;
                let rows = [top, top, bottom, bottom, top, bottom, TILE_ROWS, TILE_ROWS];
                for (t, &rows) in rows.iter().enumerate() {
                    if rows > 0 {
                        // 64 bytes per row (a little-endian u16 at 16 + 2t), `rows` rows.
                        bytes[16 + 2 * t] = 64;
                        bytes[48 + t] = rows as u8;
                    }
                }
                Config(bytes)
            }
        }

        /// Panels `p` and `p + 1` (or `p` alone, the last of an odd count), rows `rows` of a
        /// call, 32 rows at a time, each step's sums through the epilogue of
        /// [`super::vnni512x2_out`].
        ///
        /// # Safety
        /// As [`super::super::panels`]; the CPU has AVX512F and [`ready`] said yes; the
        /// weights are packed for `amx` (`kp` a multiple of 64).
        #[target_feature(enable = "avx2,fma,avx512f")]
        pub(in crate::ops::qgemm) unsafe fn panels(job: &Job, p: usize, rows: Range<usize>) {
            let (w, lda, n) = (job.w, job.lda, job.w.n);
            let pair = p + 1 < n.div_ceil(NR);
            let weights = w.panels(p, if pair { 2 } else { 1 }).as_ptr();
            let consts = [
                PairOut::of(&job.epilogues[p]),
                PairOut::of(&job.epilogues[if pair { p + 1 } else { p }]),
            ];
            let (bias, panels) = (job.bias.is_some(), if pair { 2 } else { 1 });
            let mut tiles = [[[0i32; NR]; STEP]; 2];
            let mut config = None;
            for r0 in rows.clone().step_by(STEP) {
                let mr = STEP.min(rows.end - r0);
                let shape = (mr.min(TILE_ROWS), mr - mr.min(TILE_ROWS));
                if config != Some(shape) {
                    let c = Config::new(shape.0, shape.1);
                    // SAFETY: a valid palette-1 configuration (rows ≤ 16, 64 bytes a row).
                    let c: *const Config = &c;
                    unsafe { asm!("ldtilecfg [{}]", in(reg) c, options(nostack, readonly)) };
                    config = Some(shape);
                }
                // SAFETY: rows `r0 .. r0 + mr` of `a` hold `lda ≥ kp` bytes each, the panels
                // `kp · NR` weights each; the configuration is the step's shape.
                unsafe {
                    sums(
                        job.a.as_ptr().add(r0 * lda),
                        lda,
                        weights,
                        w.kp,
                        pair,
                        shape.1 > 0,
                        &mut tiles,
                    )
                };
                for (i, (tile, c)) in tiles.iter().zip(&consts).take(panels).enumerate() {
                    for (r, sums) in tile.iter().take(mr).enumerate() {
                        // SAFETY: a tile row holds 16 sums; row r0 + r, the panel's columns
                        // (the mask stops at the last one) are inside the `rows × n` output,
                        // and this task alone writes them.
                        unsafe {
                            let sums = _mm512_loadu_si512(sums.as_ptr() as *const __m512i);
                            let mut y = _mm512_mul_ps(
                                _mm512_cvtepi32_ps(_mm512_add_epi32(sums, c.offset)),
                                c.scale,
                            );
                            if bias {
                                y = _mm512_add_ps(y, c.bias);
                            }
                            let at = job.out.at((r0 + r) * n + (p + i) * NR);
                            _mm512_mask_storeu_ps(at, c.mask, y);
                        }
                    }
                }
            }
            // SAFETY: back to the tiles' initial state (nothing of the process is in them).
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }

        /// The sums of the step's rows (the top tile's, and the bottom's when `bottom`)
        /// against the first panel at `w` (and the second after it when `pair`), over `kp`,
        /// stored in `tiles` (panel, row, column).
        ///
        /// # Safety
        /// The configuration loaded is the step's ([`Config::new`]); `a` holds the rows
        /// (stride `lda`) and `w` the panels' `kp · NR` weights each; `kp` is a multiple of 64.
        #[inline(always)]
        unsafe fn sums(
            a: *const u8,
            lda: usize,
            w: *const i8,
            kp: usize,
            pair: bool,
            bottom: bool,
            tiles: &mut [[[i32; NR]; STEP]; 2],
        ) {
            let ldb = 64usize;
            let (second, below) = (kp * NR, TILE_ROWS * lda);
            // SAFETY (every block): the tiles used are configured (`pair`, `bottom`); each load
            // reads 16 (or the configured) rows of 64 bytes inside `a` or `w` (the caller's
            // promise); each store writes 16 rows of 16 i32 inside `tiles`.
            unsafe {
                asm!("tilezero tmm0", options(nostack, nomem));
                if pair {
                    asm!("tilezero tmm1", options(nostack, nomem));
                }
                if bottom {
                    asm!("tilezero tmm2", options(nostack, nomem));
                    if pair {
                        asm!("tilezero tmm3", options(nostack, nomem));
                    }
                }
                for s in 0..kp / AMX_K {
                    let (a0, b0) = (a.add(s * AMX_K), w.add(s * TILE_ROWS * ldb));
                    asm!(
                        "tileloadd tmm4, [{a} + {lda} * 1]",
                        "tileloadd tmm6, [{b} + {ldb} * 1]",
                        "tdpbusd tmm0, tmm4, tmm6",
                        a = in(reg) a0,
                        lda = in(reg) lda,
                        b = in(reg) b0,
                        ldb = in(reg) ldb,
                        options(nostack, readonly)
                    );
                    if pair {
                        asm!(
                            "tileloadd tmm7, [{b} + {ldb} * 1]",
                            "tdpbusd tmm1, tmm4, tmm7",
                            b = in(reg) b0.add(second),
                            ldb = in(reg) ldb,
                            options(nostack, readonly)
                        );
                    }
                    if bottom {
                        asm!(
                            "tileloadd tmm5, [{a} + {lda} * 1]",
                            "tdpbusd tmm2, tmm5, tmm6",
                            a = in(reg) a0.add(below),
                            lda = in(reg) lda,
                            options(nostack, readonly)
                        );
                        if pair {
                            asm!("tdpbusd tmm3, tmm5, tmm7", options(nostack, nomem));
                        }
                    }
                }
                let ldc = NR * 4;
                let [first, next] = tiles;
                asm!(
                    "tilestored [{c} + {ldc} * 1], tmm0",
                    c = in(reg) first.as_mut_ptr(),
                    ldc = in(reg) ldc,
                    options(nostack)
                );
                if pair {
                    asm!(
                        "tilestored [{c} + {ldc} * 1], tmm1",
                        c = in(reg) next.as_mut_ptr(),
                        ldc = in(reg) ldc,
                        options(nostack)
                    );
                }
                if bottom {
                    asm!(
                        "tilestored [{c} + {ldc} * 1], tmm2",
                        c = in(reg) first[TILE_ROWS..].as_mut_ptr(),
                        ldc = in(reg) ldc,
                        options(nostack)
                    );
                    if pair {
                        asm!(
                            "tilestored [{c} + {ldc} * 1], tmm3",
                            c = in(reg) next[TILE_ROWS..].as_mut_ptr(),
                            ldc = in(reg) ldc,
                            options(nostack)
                        );
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{KG, MR, NR};
    use std::arch::aarch64::*;

    /// `acc += a·b` four-way per 32-bit lane (`sdot`; its intrinsic is not stable yet).
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn sdot_lanes(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        unsafe {
            std::arch::asm!(
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack)
            );
        }
        acc
    }

    /// The grouped layout with `sdot`: activations shifted to signed (`q − 128`).
    #[target_feature(enable = "neon,dotprod")]
    pub(super) unsafe fn sdot<const ROWS: usize>(
        a: *const u8,
        lda: usize,
        w: *const i8,
        kp: usize,
        tile: &mut [[i32; NR]; MR],
    ) {
        let mut acc = [[vdupq_n_s32(0); 4]; ROWS];
        for g in 0..kp / KG {
            unsafe {
                let p = w.add(g * NR * KG);
                let ws = [
                    vld1q_s8(p),
                    vld1q_s8(p.add(16)),
                    vld1q_s8(p.add(32)),
                    vld1q_s8(p.add(48)),
                ];
                for (r, acc) in acc.iter_mut().enumerate() {
                    let quad = (a.add(r * lda + g * KG) as *const u32).read_unaligned();
                    let x = vreinterpretq_s8_u32(vdupq_n_u32(quad ^ 0x8080_8080));
                    for (acc, &w) in acc.iter_mut().zip(&ws) {
                        *acc = sdot_lanes(*acc, x, w);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (c, &v) in acc.iter().enumerate() {
                unsafe { vst1q_s32(tile[r].as_mut_ptr().add(4 * c), v) };
            }
        }
    }

    /// `acc += a·bᵀ` on 2 × 8 blocks (`usmmla`, I8MM; no stable intrinsic): `a` two rows of
    /// eight unsigned activations, `b` two columns of eight signed weights, `acc` the 2 × 2
    /// sums `[r0·c0, r0·c1, r1·c0, r1·c1]`.
    #[inline]
    #[target_feature(enable = "neon,i8mm")]
    unsafe fn usmmla(acc: int32x4_t, a: uint8x16_t, b: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        unsafe {
            std::arch::asm!(
                "usmmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack)
            );
        }
        acc
    }

    /// The layout grouped by eight `k` with `usmmla`: rows in pairs, columns in pairs (a
    /// panel's eight `k` of column `c` and of `c + 1` are one 16-byte load). The activations
    /// stay unsigned, so the zero point is corrected as for the scalar sums. An odd last row
    /// is paired with itself and its duplicate discarded.
    #[target_feature(enable = "neon,i8mm")]
    pub(super) unsafe fn i8mm<const ROWS: usize>(
        a: *const u8,
        lda: usize,
        w: *const i8,
        kp: usize,
        tile: &mut [[i32; NR]; MR],
    ) {
        let mut acc = [[vdupq_n_s32(0); NR / 2]; MR / 2];
        let pairs = ROWS.div_ceil(2);
        for g in 0..kp / 8 {
            unsafe {
                let p = w.add(g * NR * 8);
                let mut x = [vdupq_n_u8(0); MR / 2];
                for (i, x) in x.iter_mut().take(pairs).enumerate() {
                    let r0 = a.add(2 * i * lda + g * 8);
                    let r1 = a.add((2 * i + 1).min(ROWS - 1) * lda + g * 8);
                    *x = vcombine_u8(vld1_u8(r0), vld1_u8(r1));
                }
                for j in 0..NR / 2 {
                    let wj = vld1q_s8(p.add(16 * j));
                    for (acc, &x) in acc.iter_mut().zip(&x).take(pairs) {
                        acc[j] = usmmla(acc[j], x, wj);
                    }
                }
            }
        }
        for (i, acc) in acc.iter().take(pairs).enumerate() {
            for (j, &v) in acc.iter().enumerate() {
                let mut sums = [0i32; 4];
                unsafe { vst1q_s32(sums.as_mut_ptr(), v) };
                tile[2 * i][2 * j] = sums[0];
                tile[2 * i][2 * j + 1] = sums[1];
                if 2 * i + 1 < ROWS {
                    tile[2 * i + 1][2 * j] = sums[2];
                    tile[2 * i + 1][2 * j + 1] = sums[3];
                }
            }
        }
    }

    /// The plain layout (`[k][16]`) with widening multiply-accumulates: `q − zp` and the
    /// weights widened to i16, products accumulated into i32 (`smlal`), eight `k` per step.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn smlal<const ROWS: usize>(
        a: *const u8,
        lda: usize,
        w: *const i8,
        k: usize,
        zp: u8,
        tile: &mut [[i32; NR]; MR],
    ) {
        let mut acc = [[vdupq_n_s32(0); 4]; ROWS];
        let zpv = vdup_n_u8(zp);
        let mut kk = 0;
        macro_rules! lane {
            ($x:expr, $j:literal) => {{
                let row = vld1q_s8(w.add((kk + $j) * NR));
                let (lo, hi) = (vmovl_s8(vget_low_s8(row)), vmovl_high_s8(row));
                for (acc, x) in acc.iter_mut().zip($x.iter()) {
                    acc[0] = vmlal_laneq_s16::<$j>(acc[0], vget_low_s16(lo), *x);
                    acc[1] = vmlal_high_laneq_s16::<$j>(acc[1], lo, *x);
                    acc[2] = vmlal_laneq_s16::<$j>(acc[2], vget_low_s16(hi), *x);
                    acc[3] = vmlal_high_laneq_s16::<$j>(acc[3], hi, *x);
                }
            }};
        }
        while kk + 8 <= k {
            unsafe {
                let mut x = [vdupq_n_s16(0); ROWS];
                for (r, x) in x.iter_mut().enumerate() {
                    *x = vreinterpretq_s16_u16(vsubl_u8(vld1_u8(a.add(r * lda + kk)), zpv));
                }
                lane!(x, 0);
                lane!(x, 1);
                lane!(x, 2);
                lane!(x, 3);
                lane!(x, 4);
                lane!(x, 5);
                lane!(x, 6);
                lane!(x, 7);
            }
            kk += 8;
        }
        while kk < k {
            unsafe {
                let row = vld1q_s8(w.add(kk * NR));
                let (lo, hi) = (vmovl_s8(vget_low_s8(row)), vmovl_high_s8(row));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = i16::from(*a.add(r * lda + kk)) - i16::from(zp);
                    acc[0] = vmlal_n_s16(acc[0], vget_low_s16(lo), x);
                    acc[1] = vmlal_high_n_s16(acc[1], lo, x);
                    acc[2] = vmlal_n_s16(acc[2], vget_low_s16(hi), x);
                    acc[3] = vmlal_high_n_s16(acc[3], hi, x);
                }
            }
            kk += 1;
        }
        for (r, acc) in acc.iter().enumerate() {
            for (c, &v) in acc.iter().enumerate() {
                unsafe { vst1q_s32(tile[r].as_mut_ptr().add(4 * c), v) };
            }
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use super::{MR, NR};
    use std::arch::wasm32::*;

    /// Pairs of `k` per lane: `q − zp` of two consecutive `k` as two i16 broadcast to every
    /// lane, the panel's pair of weights per column widened to i16 at packing, and
    /// `i32x4.dot_i16x8_s` adding both products into each column's i32 (exact: |products|
    /// ≤ 255 · 128).
    #[target_feature(enable = "simd128")]
    pub(super) unsafe fn dot<const ROWS: usize>(
        a: *const u8,
        lda: usize,
        w: *const i16,
        kp: usize,
        zp: u8,
        tile: &mut [[i32; NR]; MR],
    ) {
        let mut acc = [[i32x4_splat(0); 4]; ROWS];
        let zp = i32::from(zp);
        for g in 0..kp / 2 {
            unsafe {
                let p = w.add(g * NR * 2);
                let ws = [
                    v128_load(p as *const v128),
                    v128_load(p.add(8) as *const v128),
                    v128_load(p.add(16) as *const v128),
                    v128_load(p.add(24) as *const v128),
                ];
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x0 = i32::from(*a.add(r * lda + 2 * g)) - zp;
                    let x1 = i32::from(*a.add(r * lda + 2 * g + 1)) - zp;
                    let x = i32x4_splat((x0 & 0xffff) | (x1 << 16));
                    for (acc, &w) in acc.iter_mut().zip(&ws) {
                        *acc = i32x4_add(*acc, i32x4_dot_i16x8(x, w));
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (c, &v) in acc.iter().enumerate() {
                unsafe { v128_store(tile[r].as_mut_ptr().add(4 * c) as *mut v128, v) };
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// xorshift64: the ops' tests' random numbers (a fixed seed, the same sequence on
    /// every machine).
    pub(in crate::ops) struct Rng(pub(in crate::ops) u64);
    impl Rng {
        pub(in crate::ops) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Whether this CPU has the 256-bit `vnni` kernels' AVX-VNNI beside AVX512-VNNI (which
    /// `product` otherwise prefers): then the tests run those kernels too ([`NARROW_VNNI`]).
    fn narrow_vnni_here() -> bool {
        #[cfg(target_arch = "x86_64")]
        return has_avx512_vnni() && std::is_x86_feature_detected!("avxvnni");
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The definition, in i64 (no kernel, no packing): `MatMulInteger`, `Cast`, `Mul`, `Add`.
    fn reference(
        a: &[u8],
        rows: usize,
        zp: u8,
        w: &[i8],
        k: usize,
        n: usize,
        scale: &[f32],
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut out = vec![0f32; rows * n];
        for r in 0..rows {
            for c in 0..n {
                let sum: i64 = (0..k)
                    .map(|kk| (i64::from(a[r * k + kk]) - i64::from(zp)) * i64::from(w[kk * n + c]))
                    .sum();
                let y = sum as i32 as f32 * scale[c];
                out[r * n + c] = bias.map_or(y, |b| y + b[c]);
            }
        }
        out
    }

    /// Every tier this CPU runs (all of them, forced one by one) against the definition, on
    /// random shapes with row, column and depth tails, full-range activations, zero points
    /// from 0 to 255, and weights within ±63 (the exporter's) or the whole i8 range (the
    /// tiers that take them).
    #[test]
    fn every_tier_equals_the_definition() -> TractResult<()> {
        let tiers = Tier::available();
        eprintln!(
            "int8 tiers on this CPU: {tiers:?}; vnni's 256-bit kernels checked too: {}",
            narrow_vnni_here()
        );
        assert!(tiers.contains(&Tier::Scalar));
        #[cfg(target_arch = "x86_64")]
        assert!(tiers.contains(&Tier::Avx2) || !std::is_x86_feature_detected!("avx2"));
        #[cfg(target_arch = "aarch64")]
        assert!(tiers.contains(&Tier::Neon));
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let single = tract_linalg::multithread::Executor::SingleThread;
        let pool = tract_linalg::multithread::Executor::multithread(3);
        // The last cases are long calls: several blocks of rows and a short last one.
        for case in 0..126 {
            let long = case >= 120;
            // (Up to 41 rows: `amx` takes 16 or 32 rows a step, the others 6 or 8.)
            let rows = if long {
                LONG_ROWS + 1 + rng.below(3 * BLOCK_ROWS)
            } else if case % 4 == 1 {
                12 + rng.below(30)
            } else {
                1 + rng.below(11)
            };
            let k =
                [1, 3, 4, 5, 8, 9, 15, 16, 31, 64, 127, 384][rng.below(if long { 11 } else { 12 })];
            let n = [1, 7, 15, 16, 17, 33, 48, 64, 80][rng.below(if long { 7 } else { 9 })];
            let wide = case % 3 == 0;
            let a: Vec<u8> = (0..rows * k).map(|_| rng.next() as u8).collect();
            let w: Vec<i8> = (0..k * n)
                .map(|_| {
                    if wide {
                        rng.next() as i8
                    } else {
                        (rng.below(127) as i32 - 63) as i8
                    }
                })
                .collect();
            let zp = [0u8, 1, 127, 128, 200, 255][case % 6];
            let scale: Vec<f32> = (0..n).map(|c| 1e-3 * (1 + c % 7) as f32).collect();
            let bias: Vec<f32> = (0..n).map(|c| c as f32 * 0.25 - 2.0).collect();
            let bias = (case % 2 == 0).then_some(&bias[..]);
            let expected = reference(&a, rows, zp, &w, k, n, &scale, bias);
            for &tier in &tiers {
                let packed = PackedI8::new(&w, k, n, tier)?;
                if !tier.exact_for(packed.max_abs) {
                    continue;
                }
                // On a CPU with both AVX512-VNNI and AVX-VNNI, `vnni` once more on its
                // 256-bit kernels ([`NARROW_VNNI`]).
                let widths = if tier == Tier::Vnni && narrow_vnni_here() {
                    &[false, true][..]
                } else {
                    &[false][..]
                };
                for (&narrow, executor) in widths.iter().flat_map(|n| [(n, &single), (n, &pool)]) {
                    NARROW_VNNI.with(|cell| cell.set(narrow));
                    let mut out = vec![f32::NAN; rows * n];
                    let run = qgemm(&a, rows, zp, &packed, &scale, bias, &mut out, executor);
                    NARROW_VNNI.with(|cell| cell.set(false));
                    run?;
                    let same = out
                        .iter()
                        .zip(&expected)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same,
                        "{tier:?} (256-bit: {narrow}), case {case}: [{rows}, {k}] x [{k}, {n}], zp {zp}"
                    );
                }
            }
        }
        Ok(())
    }

    /// The sums wrap as `MatMulInteger`'s i32 does, and the `avx2` tier refuses weights it
    /// could not sum exactly.
    #[test]
    fn extremes_and_refusals() -> TractResult<()> {
        let (k, n) = (4096, 3);
        let a = vec![255u8; k];
        let w = vec![-128i8; k * n];
        let scale = vec![1.0f32; n];
        let expected = reference(&a, 1, 0, &w, k, n, &scale, None);
        for tier in Tier::available() {
            let packed = PackedI8::new(&w, k, n, tier)?;
            let mut out = vec![0f32; n];
            let run = qgemm(
                &a,
                1,
                0,
                &packed,
                &scale,
                None,
                &mut out,
                &Default::default(),
            );
            if tier.exact_for(128) {
                run?;
                assert_eq!(out, expected, "{tier:?}");
            } else {
                assert!(run.is_err(), "{tier:?} took weights it cannot sum exactly");
            }
        }
        let packed = PackedI8::new(&w, k, n, Tier::Scalar)?;
        let mut out = vec![0f32; n];
        let err = qgemm(
            &a[1..],
            1,
            0,
            &packed,
            &scale,
            None,
            &mut out,
            &Default::default(),
        );
        assert!(err.is_err(), "a short activation buffer is refused");
        Ok(())
    }

    /// [`qgemm_new`] with a finishing pass equals [`qgemm`] then that pass over the whole
    /// output, bit for bit, whether the call is one block of rows or several (each finished by
    /// its own task), on one thread or a pool; and it refuses a shape that is not the product's.
    #[test]
    fn finished_blocks_equal_the_product_then_the_pass() -> TractResult<()> {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let single = tract_linalg::multithread::Executor::SingleThread;
        let pool = tract_linalg::multithread::Executor::multithread(3);
        // A pass whose result depends on each value alone, not linear (so that a value
        // finished twice, or not at all, shows).
        let pass = |xs: &mut [f32]| -> TractResult<()> {
            xs.iter_mut().for_each(|x| *x = x.abs().sqrt() - 0.5 * *x);
            Ok(())
        };
        for (rows, k, n) in [
            (5, 9, 17),
            (LONG_ROWS, 64, 33),
            (LONG_ROWS + 1, 16, 48),
            (LONG_ROWS + 2 * BLOCK_ROWS + 3, 31, 80),
        ] {
            let a: Vec<u8> = (0..rows * k).map(|_| rng.next() as u8).collect();
            let w: Vec<i8> = (0..k * n)
                .map(|_| (rng.below(127) as i32 - 63) as i8)
                .collect();
            let scale: Vec<f32> = (0..n).map(|c| 1e-3 * (1 + c % 5) as f32).collect();
            let bias: Vec<f32> = (0..n).map(|c| c as f32 * 0.5 - 3.0).collect();
            for tier in Tier::available() {
                let packed = PackedI8::new(&w, k, n, tier)?;
                let mut expected = vec![0f32; rows * n];
                qgemm(
                    &a,
                    rows,
                    7,
                    &packed,
                    &scale,
                    Some(&bias),
                    &mut expected,
                    &single,
                )?;
                pass(&mut expected)?;
                for executor in [&single, &pool] {
                    let shape = [1, rows, n];
                    let out = qgemm_new(
                        &a,
                        rows,
                        7,
                        &packed,
                        &scale,
                        Some(&bias),
                        &shape,
                        Some(&pass),
                        executor,
                    )?;
                    assert_eq!(out.shape(), shape);
                    let got = out.try_as_plain_ram()?;
                    let same = got
                        .as_slice::<f32>()?
                        .iter()
                        .zip(&expected)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{tier:?}: [{rows}, {k}] x [{k}, {n}]");
                }
                let wrong = qgemm_new(
                    &a,
                    rows,
                    7,
                    &packed,
                    &scale,
                    None,
                    &[rows + 1, n],
                    None,
                    &single,
                );
                assert!(wrong.is_err(), "a shape of other rows is refused");
            }
        }
        Ok(())
    }

    #[test]
    fn a_forced_tier_is_used_only_where_the_cpu_has_it() {
        assert_eq!(Tier::select(Some("scalar")), Tier::Scalar);
        assert_eq!(Tier::select(None), Tier::available()[0]);
        assert_eq!(Tier::select(Some("no such tier")), Tier::available()[0]);
        for tier in Tier::ALL {
            let chosen = Tier::select(Some(tier.name()));
            assert_eq!(chosen == tier, tier.supported(), "{tier:?}");
        }
    }

    /// What a cached plan keeps of packed weights (`parts`) packs them back exactly, for every
    /// native tier's layout, on odd shapes; sizes that do not fit the shape are refused, and so
    /// is `simd128` (the component keeps no plans: its layout is widened, `parts` has none).
    #[test]
    fn packed_weights_round_trip_through_their_parts() -> TractResult<()> {
        for (k, n) in [(1, 1), (7, 5), (33, 17), (384, 384)] {
            let w: Vec<i8> = (0..k * n)
                .map(|i| ((i * 37 + 11) % 256) as u8 as i8)
                .collect();
            for tier in Tier::ALL {
                let packed = PackedI8::new(&w, k, n, tier)?;
                let (data, colsum) = packed.parts();
                let back = PackedI8::from_parts(
                    k,
                    n,
                    tier,
                    data.to_vec(),
                    colsum.to_vec(),
                    packed.max_abs,
                );
                if tier == Tier::Simd128 {
                    assert!(back.is_err(), "{k}x{n}: simd128 from parts");
                    continue;
                }
                let back = back?;
                assert_eq!(back.data, packed.data, "{tier:?} {k}x{n}");
                assert_eq!(back.colsum, packed.colsum, "{tier:?} {k}x{n}");
                assert_eq!(back.kp, packed.kp, "{tier:?} {k}x{n}");
                assert_eq!(back.max_abs, packed.max_abs, "{tier:?} {k}x{n}");
                let short = data[1..].to_vec();
                assert!(
                    PackedI8::from_parts(k, n, tier, short, colsum.to_vec(), 0).is_err(),
                    "{tier:?} {k}x{n}: one value short"
                );
            }
        }
        Ok(())
    }
}
