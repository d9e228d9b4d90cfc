//! **f32 matrix products for the fused attention** ([`super::attention`]): `C = α·A·B (+ C)`
//! with A read in place (any row stride) and B packed once per head in panels of [`Tier::nr`]
//! columns. One register-tile kernel, compiled per instruction-set tier and chosen at run time:
//!
//! | tier | CPU | tile (rows × columns) | multiply-add |
//! |---|---|---|---|
//! | `avx512` | x86_64 with AVX-512F and FMA | 8 × 32 (16 zmm sums) | `vfmadd` |
//! | `avx2` | x86_64 with AVX2 and FMA | 6 × 16 (12 ymm sums) | `vfmadd` |
//! | `neon` | aarch64 | 6 × 16 (24 q sums) | `fmla` |
//! | `scalar` | anything | 4 × 4 | — |
//!
//! `AUTOGLM_F32_KERNEL=<tier>` forces a tier (if the CPU has it; else the best one is used), so
//! that every tier a test machine supports is tested and measured on it.
//!
//! Why not `matrixmultiply::sgemm`, which the attention used before: it packs both operands on
//! every call (a quarter of the attention's time at 128 tokens went to packing). The
//! component has no tier here: it keeps tract's attention plan, which measured faster there
//! than this kernel on SIMD128 (BENCHMARKS.md, wave 7). The attention's products are short in `k` (the head width, 32 for MiniLM)
//! or in `n` (the head width again): here K and V are packed once per head (`O(seq · width)`,
//! against `O(seq² · width)` multiply-adds) and the queries and probabilities are read where
//! they lie, so nothing is packed per query block. Long products (the linear layers of a long
//! document or a batch) run in blocks of rows and of depth ([`TILES`], [`KC`]) whose results
//! are the same bits as one pass.
//!
//! The x86 tiles ask for the panel's cache lines [`AHEAD`] steps before they use them: a
//! linear layer's weights come from memory, and the hardware prefetchers alone kept the
//! kernel waiting.
//!
//! The kernel is safe Rust on fixed-size arrays that the compiler keeps in registers and
//! vectorizes; `unsafe` here is the call into a tier's `#[target_feature]` copy of it, after
//! run-time detection of that feature, the whole-tile kernels' raw pointers (bounds checked
//! before), C's rows ([`gemm_rows`]: a linear layer's column groups write their columns of the
//! same rows at once) and the prefetch hint (which never faults). Results depend on the tier
//! (FMA rounds once), never on threads or on where the operands lie. Every tier is tested
//! against an f64 evaluation of the definition on random shapes with tails in every dimension,
//! strides and accumulation.

use tract_hir::prelude::*;
use tract_hir::tract_core::internal::ensure;

/// An instruction-set tier of the f32 product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Scalar => "scalar",
            Tier::Avx2 => "avx2",
            Tier::Avx512 => "avx512",
            Tier::Neon => "neon",
        }
    }

    /// Whether this CPU runs the tier.
    pub fn supported(self) -> bool {
        match self {
            Tier::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => {
                std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Tier::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every tier this CPU runs, best first.
    pub fn available() -> Vec<Tier> {
        [Tier::Avx512, Tier::Avx2, Tier::Neon, Tier::Scalar]
            .into_iter()
            .filter(|t| t.supported())
            .collect()
    }

    /// The tier a name asks for (`AUTOGLM_F32_KERNEL`) if this CPU runs it; else the best one.
    pub fn select(requested: Option<&str>) -> Tier {
        super::pick_tier(&Tier::available(), Tier::name, requested)
    }

    /// The tier for this process: [`Tier::select`] of `AUTOGLM_F32_KERNEL`.
    pub fn chosen() -> Tier {
        static CHOSEN: std::sync::OnceLock<Tier> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| Tier::select(std::env::var("AUTOGLM_F32_KERNEL").ok().as_deref()))
    }

    /// Columns per panel (and per tile).
    pub fn nr(self) -> usize {
        match self {
            Tier::Avx512 => 32,
            Tier::Avx2 | Tier::Neon => 16,
            Tier::Scalar => 4,
        }
    }

    /// Rows per tile.
    pub fn mr(self) -> usize {
        match self {
            Tier::Avx512 => 8,
            Tier::Avx2 | Tier::Neon => 6,
            Tier::Scalar => 4,
        }
    }
}

/// B `[k, n]` packed for a tier: `⌈n / nr⌉` panels of `k` rows of `nr` values, the columns past
/// `n` zero. Reused between calls: [`Packed::pack`] only grows its buffer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packed {
    data: Vec<f32>,
    k: usize,
    n: usize,
    nr: usize,
}

impl Packed {
    /// Packs `B[i, j] = src[i·row + j·col]` for `i < k`, `j < n`.
    pub fn pack(
        &mut self,
        tier: Tier,
        src: &[f32],
        (k, n): (usize, usize),
        (row, col): (usize, usize),
    ) -> TractResult<()> {
        let nr = tier.nr();
        if k > 0 && n > 0 {
            let last = (k - 1)
                .checked_mul(row)
                .zip((n - 1).checked_mul(col))
                .and_then(|(a, b)| a.checked_add(b));
            ensure!(
                last.is_some_and(|l| l < src.len()),
                "f32 product: [{k}, {n}] with strides ({row}, {col}) outside {} values",
                src.len()
            );
        }
        let len = n.div_ceil(nr) * k * nr;
        self.data.clear();
        self.data.resize(len, 0.0);
        for (p, panel) in self.data.chunks_exact_mut((k * nr).max(1)).enumerate() {
            let cols = nr.min(n - p * nr);
            if col == 1 {
                // Rows of B lie contiguous (V): one copy per row.
                for (i, dst) in panel.chunks_exact_mut(nr).enumerate() {
                    let first = i * row + p * nr;
                    dst[..cols].copy_from_slice(&src[first..first + cols]);
                }
            } else if row == 1 {
                // Columns of B lie contiguous (K, for Kᵀ): eight of them at a time, each read
                // in order, so that every row of the panel gets eight adjacent values at once.
                let mut c0 = 0;
                while c0 + 8 <= cols {
                    let columns: [&[f32]; 8] =
                        std::array::from_fn(|r| &src[(p * nr + c0 + r) * col..][..k]);
                    for (i, dst) in panel.chunks_exact_mut(nr).enumerate() {
                        for (r, d) in dst[c0..c0 + 8].iter_mut().enumerate() {
                            *d = columns[r][i];
                        }
                    }
                    c0 += 8;
                }
                for c in c0..cols {
                    let column = &src[(p * nr + c) * col..][..k];
                    for (dst, x) in panel.chunks_exact_mut(nr).zip(column) {
                        dst[c] = *x;
                    }
                }
            } else {
                for (i, dst) in panel.chunks_exact_mut(nr).enumerate() {
                    for (c, d) in dst[..cols].iter_mut().enumerate() {
                        *d = src[i * row + (p * nr + c) * col];
                    }
                }
            }
        }
        (self.k, self.n, self.nr) = (k, n, nr);
        Ok(())
    }

    /// Rows `rows` of B (all its columns) as a smaller B (its panels keep their layout).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> PackedRows<'_> {
        PackedRows {
            packed: self,
            rows,
            cols: 0..self.n,
        }
    }
}

/// A range of the rows of a [`Packed`] B, and of its columns (whole panels).
#[derive(Debug, Clone)]
pub struct PackedRows<'a> {
    packed: &'a Packed,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
}

impl PackedRows<'_> {
    /// Only the columns `cols` of this B: they must start at a panel's first column and end at
    /// a panel's end or at B's last column.
    pub fn columns(self, cols: std::ops::Range<usize>) -> TractResult<Self> {
        let nr = self.packed.nr.max(1);
        ensure!(
            cols.start <= cols.end
                && cols.end <= self.packed.n
                && cols.start.is_multiple_of(nr)
                && (cols.end.is_multiple_of(nr) || cols.end == self.packed.n),
            "f32 product: columns {cols:?} of {} are not whole panels of {nr}",
            self.packed.n
        );
        Ok(PackedRows { cols, ..self })
    }
}

/// Where A lies: `A[i, p] = data[i·row + p]`.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub row: usize,
}

/// What a product does with C.
#[derive(Debug, Clone, Copy)]
pub enum Store<'a> {
    /// `C = α·A·B`
    Overwrite,
    /// `C += α·A·B`
    Accumulate,
    /// `C[i, j] = α·(A·B)[i, j] + row[j]`: one row added to every row (`row` has B's columns).
    AddRow(&'a [f32]),
    /// `C[i, j] = α·(A·B)[i, j] + bias[i·ld + j]`: a matrix added, `(bias, ld)`.
    AddMatrix(&'a [f32], usize),
}

/// `C[i, j] = α·Σ_p A[i, p]·B[p, j]`, stored as `store` says, for `i < m`, `j < n` (B's
/// columns), `p < k` (B's rows), with `C[i, j] = c[i·ldc + j]`; computed on `tier` (which must
/// be the one B was packed for).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    tier: Tier,
    m: usize,
    alpha: f32,
    a: Strided,
    b: PackedRows,
    store: Store,
    c: &mut [f32],
    ldc: usize,
) -> TractResult<()> {
    let n = b.cols.len();
    // (An empty product writes nothing: any C will do, as before `gemm_rows` existed.)
    let fits = m == 0
        || n == 0
        || (m - 1)
            .checked_mul(ldc)
            .and_then(|x| x.checked_add(n))
            .is_some_and(|end| end <= c.len());
    ensure!(
        fits,
        "f32 product: C ({} values, row {ldc}) too small for [{m}, {n}]",
        c.len()
    );
    // SAFETY: C holds the `m` rows of `n` values at `ldc` (checked just above), and the
    // exclusive borrow keeps every other reader and writer away while it runs.
    unsafe { gemm_rows(tier, m, alpha, a, b, store, (c.as_mut_ptr(), ldc)) }
}

/// [`gemm`] into C at `c.0` with rows `c.1` apart, touched only through slices of one row's
/// `n` values: several products may write other columns of the same rows at once (a linear
/// layer's column groups on the threads, straight into its output).
///
/// # Safety
/// `c.0 + i·c.1 + j` for `i < m`, `j < n` (B's columns) are valid for reads and writes, and
/// no other thread reads or writes those values while the call runs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_rows(
    tier: Tier,
    m: usize,
    alpha: f32,
    a: Strided,
    b: PackedRows,
    store: Store,
    (c, ldc): (*mut f32, usize),
) -> TractResult<()> {
    let (k, n) = (b.rows.len(), b.cols.len());
    ensure!(
        b.packed.nr == tier.nr() && b.rows.end <= b.packed.k && b.cols.end <= b.packed.n,
        "f32 product: B packed for {} columns and {} rows, used on {} with rows {:?}",
        b.packed.nr,
        b.packed.k,
        tier.name(),
        b.rows
    );
    if m == 0 || n == 0 {
        return Ok(());
    }
    let fits = |len: usize, ld: usize, cols: usize| {
        (m - 1)
            .checked_mul(ld)
            .and_then(|x| x.checked_add(cols))
            .is_some_and(|end| end <= len)
    };
    ensure!(
        !matches!(store, Store::AddRow(row) if row.len() != n),
        "f32 product: a row of {} values added to {n} columns",
        match store {
            Store::AddRow(row) => row.len(),
            _ => 0,
        }
    );
    ensure!(
        !matches!(store, Store::AddMatrix(bias, ld) if !fits(bias.len(), ld, n)),
        "f32 product: a bias of {} values with rows of {} too small for [{m}, {n}]",
        match store {
            Store::AddMatrix(bias, _) => bias.len(),
            _ => 0,
        },
        match store {
            Store::AddMatrix(_, ld) => ld,
            _ => 0,
        }
    );
    ensure!(
        fits(a.data.len(), a.row, k),
        "f32 product: A ({} values, row {}) too small for [{m}, {k}] · [{k}, {n}]",
        a.data.len(),
        a.row,
    );
    let c = Rows { at: c, ldc };
    if k == 0 {
        // An empty sum: α·0.
        for i in 0..m {
            // SAFETY: row `i < m` of C, as the caller promises.
            let dst = unsafe { c.row(i, 0, n) };
            match store {
                Store::Overwrite => dst.fill(0.0),
                Store::Accumulate => {}
                Store::AddRow(row) => dst.copy_from_slice(row),
                Store::AddMatrix(bias, ld) => dst.copy_from_slice(&bias[i * ld..i * ld + n]),
            }
        }
        return Ok(());
    }
    let args = Args {
        m,
        k,
        n,
        alpha,
        a,
        b,
        store,
    };
    // SAFETY (every `product` below): C is as the caller promised. (Both x86 tiers: the
    // tier's CPU features were detected just now.)
    match tier {
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 if tier.supported() => unsafe {
            product::<8, 32>(
                args,
                c,
                |k, a, b, s, out| x86::avx512(k, a, b, s, out),
                Some(x86::whole_avx512),
            )
        },
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 if tier.supported() => unsafe {
            product::<6, 16>(
                args,
                c,
                |k, a, b, s, out| x86::avx2(k, a, b, s, out),
                Some(x86::whole_avx2),
            )
        },
        #[cfg(target_arch = "aarch64")]
        Tier::Neon => unsafe { product::<6, 16>(args, c, tile::<6, 16, true>, None) },
        Tier::Scalar => unsafe { product::<4, 4>(args, c, tile::<4, 4, false>, None) },
        #[allow(unreachable_patterns)]
        _ => tract_hir::tract_core::internal::bail!(
            "f32 product: this CPU has no {} tier",
            tier.name()
        ),
    }
    Ok(())
}

/// One call's operands, checked.
struct Args<'a> {
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: Strided<'a>,
    b: PackedRows<'a>,
    store: Store<'a>,
}

/// C as [`gemm_rows`] is given it: its first value and row stride.
#[derive(Clone, Copy)]
struct Rows {
    at: *mut f32,
    ldc: usize,
}

impl Rows {
    /// Values `j0..j0 + len` of row `i`.
    ///
    /// # Safety
    /// They are within C as [`gemm_rows`]'s caller promised it, and no other slice of them
    /// lives meanwhile.
    #[inline(always)]
    unsafe fn row<'a>(self, i: usize, j0: usize, len: usize) -> &'a mut [f32] {
        // SAFETY: as this function's.
        unsafe { std::slice::from_raw_parts_mut(self.at.add(i * self.ldc + j0), len) }
    }
}

/// Where one tile goes: C from the tile's first value on (its row stride in it), how many of
/// its rows and columns are stored, and how. Made only by [`product`], for a tile within C
/// (its `rows` rows of `cols` values are C's to write, as [`gemm_rows`]' caller promised).
struct TileOut<'a> {
    c: Rows,
    rows: usize,
    cols: usize,
    alpha: f32,
    /// For [`Store::AddRow`], the row from the tile's first column on.
    store: Store<'a>,
}

/// The x86 tiles, compiled for their instruction sets.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{store_tile, sums_into, TileOut, TileStore};

    /// Asks for the cache lines of one step of a panel (`NR` values from `at`) ahead of their
    /// use (see [`super::AHEAD`]).
    #[inline(always)]
    fn ahead<const NR: usize>(at: *const f32) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for line in (0..NR).step_by(16) {
            // SAFETY: a prefetch never faults and never changes memory, whatever the address
            // (past the panel it asks for the next part's or a neighbour's lines, or nothing).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(line).cast()) }
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn avx512(
        k: usize,
        a: [&[f32]; 8],
        b: &[f32],
        sums: &mut [[f32; 32]; 8],
        out: Option<TileOut>,
    ) {
        // SAFETY: this function's features are the callee's.
        unsafe { sums_avx512(k, a, b, sums) };
        if let Some(out) = out {
            store_tile(sums, out)
        }
    }

    /// A [`super::WholeTile`] kernel: `$rows` × two vectors of `$lanes`, the sums in registers
    /// from the first multiply-add to the store, the same operations in the same order as
    /// `sums_into` then `store_tile` (so the same bits).
    ///
    /// # Safety (of the functions it defines)
    /// The CPU has the features; A has `$rows` rows of `k` values from `a`, the panel `k` rows
    /// of `2·$lanes`, C `$rows` rows of `2·$lanes` from `c`, and an added row `r` as many values
    /// from `ptr + r·ld`.
    macro_rules! whole_tile {
        ($name:ident, $features:literal, $rows:literal, $lanes:literal,
         $zero:ident, $load:ident, $splat:ident, $fma:ident, $mul:ident, $add:ident, $store:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                k: usize,
                (a, lda): (*const f32, usize),
                b: *const f32,
                (c, ldc): (*mut f32, usize),
                alpha: f32,
                store: TileStore,
            ) {
                use std::arch::x86_64::*;
                const NR: usize = 2 * $lanes;
                let mut acc = [[$zero(); 2]; $rows];
                for p in 0..k {
                    // SAFETY (every access below): within the operands, as required.
                    let (b0, b1) = unsafe { ($load(b.add(p * NR)), $load(b.add(p * NR + $lanes))) };
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = $splat(unsafe { *a.add(r * lda + p) });
                        acc[0] = $fma(x, b0, acc[0]);
                        acc[1] = $fma(x, b1, acc[1]);
                    }
                }
                let alpha = $splat(alpha);
                for (r, acc) in acc.iter().enumerate() {
                    for (h, &sum) in acc.iter().enumerate() {
                        unsafe {
                            let at = c.add(r * ldc + $lanes * h);
                            let y = $mul(alpha, sum);
                            let y = match store {
                                TileStore::Overwrite => y,
                                TileStore::Accumulate => $add($load(at), y),
                                TileStore::Add(x, ld) => $add(y, $load(x.add(r * ld + $lanes * h))),
                            };
                            $store(at, y);
                        }
                    }
                }
            }
        };
    }
    whole_tile!(
        whole_avx512,
        "avx512f,fma",
        8,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_mul_ps,
        _mm512_add_ps,
        _mm512_storeu_ps
    );
    whole_tile!(
        whole_avx2,
        "avx2,fma",
        6,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_mul_ps,
        _mm256_add_ps,
        _mm256_storeu_ps
    );

    #[target_feature(enable = "avx512f,fma")]
    #[inline(never)]
    unsafe fn sums_avx512(k: usize, a: [&[f32]; 8], b: &[f32], sums: &mut [[f32; 32]; 8]) {
        sums_into::<8, 32, true>(k, a, b, sums, ahead::<32>)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(
        k: usize,
        a: [&[f32]; 6],
        b: &[f32],
        sums: &mut [[f32; 16]; 6],
        out: Option<TileOut>,
    ) {
        // SAFETY: this function's features are the callee's.
        unsafe { sums_avx2(k, a, b, sums) };
        if let Some(out) = out {
            store_tile(sums, out)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    unsafe fn sums_avx2(k: usize, a: [&[f32]; 6], b: &[f32], sums: &mut [[f32; 16]; 6]) {
        sums_into::<6, 16, true>(k, a, b, sums, ahead::<16>)
    }
}

/// Most rows of B in a depth block: each tile of a block of rows sums over at most `KC` rows
/// of B (one panel's `KC × NR` values, 32 KB on `avx512`, stay in the core's first-level cache
/// while the block's tiles pass over them), then the next depth block continues the same sums.
/// `k` is cut into equal blocks (384: two of 192).
pub const KC: usize = 256;

/// How many steps of a panel ahead the x86 tiles ask for B's cache lines (`prefetcht0`; past
/// a depth block's part that is the next part, which lies right after it). In a model every
/// layer's weights come from memory (MiniLM-L6's 36 products: 42.5 MB), and the hardware
/// prefetchers, which stop at every 4 KB page, left the first tile of each part waiting on
/// them: the 36 products at 32 rows ran at ~40 G multiply-adds per second against ~60 with
/// their weights in cache. Asking 32 steps (4 KB of an `avx512` panel) ahead: 7.4–8.1 →
/// 5.5–5.7 ms at 32 rows, 21–25 → 21.4 ms at 128 (criterion `f32_linear_model`, BENCHMARKS.md
/// wave 25); 16 steps measured the same, 64 and 128 slower. On `neon` and `scalar` nothing is
/// asked.
pub const AHEAD: usize = 32;

/// Tiles (of `MR` rows) in a block of rows: the block's rows of A (`TILES · MR × k` values)
/// stay in the second-level cache while every panel of B passes over them (before, every
/// panel streamed all of A again: at 4,096 rows, 6 MB (`k` = 384) or 25 MB (1,536) from
/// memory per panel).
pub const TILES: usize = 16;

/// The product in tiles of `MR × NR`, each computed by `tile` and stored when its last block of
/// depth is done: blocks of `TILES · MR` rows, then panel by panel, then depth blocks of [`KC`]
/// rows of B, then the block's tiles. A tile's sums carry over from one depth block to the next
/// in `partial` and continue the same chain of multiply-adds, so the result is the same bits as
/// one pass over all of `k`.
///
/// `whole`, where a tier has one, computes and stores a whole tile (`MR` rows, `NR` columns) of
/// a product of one depth block in one call, from raw pointers (the bounds were checked by
/// [`gemm`]), its sums in registers throughout: at a depth of 32 (the attention's scores) the
/// way through `tile`, its slices and the sums kept between depth blocks took as long as the
/// multiply-adds themselves (BENCHMARKS.md, wave 20).
///
/// # Safety
/// C is as [`gemm_rows`] requires for `args`' `m` and `n`.
unsafe fn product<const MR: usize, const NR: usize>(
    args: Args,
    c: Rows,
    tile: impl Fn(usize, [&[f32]; MR], &[f32], &mut [[f32; NR]; MR], Option<TileOut>),
    whole: Option<WholeTile>,
) {
    let Args {
        m,
        k,
        n,
        alpha,
        a,
        b,
        store,
    } = args;
    let ldc = c.ldc;
    // Equal depth blocks of at most `KC` (384: two of 192).
    let kc = k.div_ceil(k.div_ceil(KC));
    let panel_len = b.packed.k * NR;
    // The panels of the columns used; `j0` is a tile's first column in C.
    let first = b.cols.start / NR;
    // Each tile's sums between depth blocks (one tile's, when there is one depth block).
    let carried = k > kc;
    let held = if carried {
        TILES.min(m.div_ceil(MR))
    } else {
        1
    };
    let mut partial = vec![[[0f32; NR]; MR]; held];
    for block in (0..m).step_by(TILES * MR) {
        let block_end = m.min(block + TILES * MR);
        for q in 0..n.div_ceil(NR) {
            let panel = &b.packed.data[(first + q) * panel_len..][..panel_len];
            let panel = &panel[b.rows.start * NR..b.rows.end * NR];
            let (j0, cols) = (q * NR, NR.min(n - q * NR));
            let store = match store {
                Store::AddRow(row) => Store::AddRow(&row[j0..j0 + cols]),
                Store::AddMatrix(bias, ld) => Store::AddMatrix(&bias[j0..], ld),
                other => other,
            };
            for p0 in (0..k).step_by(kc) {
                let depth = kc.min(k - p0);
                let part = &panel[p0 * NR..(p0 + depth) * NR];
                for (t, i0) in (block..block_end).step_by(MR).enumerate() {
                    let rows = MR.min(m - i0);
                    if let (Some(whole), false, true) = (whole, carried, rows == MR && cols == NR) {
                        let a_at = &a.data[i0 * a.row + p0..];
                        let store = match store {
                            Store::Overwrite => TileStore::Overwrite,
                            Store::Accumulate => TileStore::Accumulate,
                            Store::AddRow(row) => TileStore::Add(row.as_ptr(), 0),
                            Store::AddMatrix(bias, ld) => {
                                TileStore::Add(bias[i0 * ld..].as_ptr(), ld)
                            }
                        };
                        // SAFETY: `gemm_rows` checked that A holds `m` rows of `k` values at its
                        // row stride and the added values theirs, and its caller that C holds
                        // `m` rows of `n` at `ldc`; this tile's `MR` rows from `i0` and `NR`
                        // columns from `j0` are within them, the panel's part holds `depth` rows
                        // of `NR`, and `whole` is only given on a tier whose CPU features were
                        // detected.
                        unsafe {
                            whole(
                                depth,
                                (a_at.as_ptr(), a.row),
                                part.as_ptr(),
                                (c.at.add(i0 * ldc + j0), ldc),
                                alpha,
                                store,
                            )
                        };
                        continue;
                    }
                    // Rows past `m` repeat the last one (computed, never stored).
                    let a_rows: [&[f32]; MR] = std::array::from_fn(|r| {
                        let at = (i0 + r.min(rows - 1)) * a.row + p0;
                        &a.data[at..at + depth]
                    });
                    let sums = &mut partial[if carried { t } else { 0 }];
                    if p0 == 0 {
                        *sums = [[0.0; NR]; MR];
                    }
                    // The tile's `rows` rows from `i0` and `cols` columns from `j0` are within
                    // C (`TileOut`'s promise).
                    let out = (p0 + depth == k).then(|| TileOut {
                        c: Rows {
                            // SAFETY: within C, as the caller promised.
                            at: unsafe { c.at.add(i0 * ldc + j0) },
                            ldc,
                        },
                        rows,
                        cols,
                        alpha,
                        store: match store {
                            Store::AddMatrix(bias, ld) => Store::AddMatrix(&bias[i0 * ld..], ld),
                            other => other,
                        },
                    });
                    tile(depth, a_rows, part, sums, out);
                }
            }
        }
    }
}

/// [`product`]'s whole tile: `depth`, A's first row and stride, the panel's part, C's first
/// value and stride, α, and what is done with C.
type WholeTile =
    unsafe fn(usize, (*const f32, usize), *const f32, (*mut f32, usize), f32, TileStore);

/// [`Store`] for one whole tile. (Only the x86 tiers have whole-tile kernels, which read it.)
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum TileStore {
    Overwrite,
    Accumulate,
    /// Row `r` of the tile gets the `NR` values from `ptr + r·ld` added (`ld` 0: one row for all).
    Add(*const f32, usize),
}

/// A tile on the tiers without `#[target_feature]` copies.
fn tile<const MR: usize, const NR: usize, const FMA: bool>(
    k: usize,
    a_rows: [&[f32]; MR],
    panel: &[f32],
    sums: &mut [[f32; NR]; MR],
    out: Option<TileOut>,
) {
    sums_of::<MR, NR, FMA>(k, a_rows, panel, sums);
    if let Some(out) = out {
        store_tile(sums, out)
    }
}

/// [`sums_into`] as a function of its own.
#[inline(never)]
fn sums_of<const MR: usize, const NR: usize, const FMA: bool>(
    k: usize,
    a_rows: [&[f32]; MR],
    panel: &[f32],
    sums: &mut [[f32; NR]; MR],
) {
    sums_into::<MR, NR, FMA>(k, a_rows, panel, sums, |_| {})
}

/// `MR × NR` sums of `a_rows[r][p] · panel[p·NR + j]` over `p < k`, continued from `out`'s
/// (zero, or a previous depth block's). A function of its own (never inlined into its
/// caller's loops; inlined into a tier's copy), whose sums are a local that only constant
/// indices reach: so the compiler keeps them in registers through the loop and writes them
/// out once (inlined into a caller that then reads them with a variable index, they stayed in
/// memory: 16 stores per step). Its rows are sliced to `k` with `from_fn`: with `map` the
/// compiler called `try_map` out of line and kept eight bounds checks in the loop. At every
/// step `ahead` is given the panel's address [`AHEAD`] steps on (the x86 tiers' prefetch hint;
/// a no-op elsewhere).
#[inline(always)]
fn sums_into<const MR: usize, const NR: usize, const FMA: bool>(
    k: usize,
    a_rows: [&[f32]; MR],
    panel: &[f32],
    out: &mut [[f32; NR]; MR],
    ahead: impl Fn(*const f32),
) {
    // Exactly `k` values each: no bounds checks left in the loop.
    let a_rows: [&[f32]; MR] = std::array::from_fn(|r| &a_rows[r][..k]);
    let mut sums = *out;
    for (p, b) in panel[..k * NR].chunks_exact(NR).enumerate() {
        ahead(panel.as_ptr().wrapping_add((p + AHEAD) * NR));
        // The step's B values as one local, loaded once: indexed straight from the panel, one
        // build kept reloading them for every row (16 loads per step instead of 2, ~1.4× slower).
        let b: [f32; NR] = std::array::from_fn(|j| b[j]);
        for r in 0..MR {
            let x = a_rows[r][p];
            for j in 0..NR {
                sums[r][j] = if FMA {
                    x.mul_add(b[j], sums[r][j])
                } else {
                    sums[r][j] + x * b[j]
                };
            }
        }
    }
    *out = sums;
}

/// A tile's sums into C, with the caller's vectors.
#[inline(always)]
fn store_tile<const MR: usize, const NR: usize>(sums: &[[f32; NR]; MR], out: TileOut) {
    let TileOut {
        c,
        rows,
        cols,
        alpha,
        store,
    } = out;
    for (r, sum) in sums.iter().enumerate().take(rows) {
        let store = match store {
            Store::AddMatrix(bias, ld) => Store::AddMatrix(&bias[r * ld..], ld),
            other => other,
        };
        // SAFETY: a `TileOut` is made by `product` only, for a tile within C.
        store_row(unsafe { c.row(r, 0, cols) }, sum, alpha, store);
    }
}

/// One row of a tile into C (`dst`: its stored columns; a matrix added from this row's on).
#[inline(always)]
fn store_row<const NR: usize>(dst: &mut [f32], sum: &[f32; NR], alpha: f32, store: Store) {
    match store {
        Store::Overwrite => {
            for (d, s) in dst.iter_mut().zip(sum) {
                *d = alpha * s;
            }
        }
        Store::Accumulate => {
            for (d, s) in dst.iter_mut().zip(sum) {
                *d += alpha * s;
            }
        }
        Store::AddRow(add) | Store::AddMatrix(add, _) => {
            for ((d, s), x) in dst.iter_mut().zip(sum).zip(add) {
                *d = alpha * s + x;
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ops::attention::tests::values;

    /// The definition in f64.
    fn reference(
        (m, k, n): (usize, usize, usize),
        alpha: f32,
        a: Strided,
        b: &[f32],
        (brow, bcol): (usize, usize),
        c0: Option<&[f32]>,
        ldc: usize,
    ) -> Vec<f32> {
        let mut c = c0.map(|c| c.to_vec()).unwrap_or(vec![0.0; m * ldc]);
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| f64::from(a.data[i * a.row + p]) * f64::from(b[p * brow + j * bcol]))
                    .sum();
                let prior = c0.map_or(0.0, |c| f64::from(c[i * ldc + j]));
                c[i * ldc + j] = (prior + f64::from(alpha) * dot) as f32;
            }
        }
        c
    }

    #[test]
    fn every_tier_equals_the_definition_on_shapes_tails_and_strides() {
        let tiers = Tier::available();
        assert!(tiers.contains(&Tier::Scalar));
        let mut seed = 1;
        // Rows, depth and columns below, at and across every tile; strides wider than rows;
        // B transposed (K) and not (V); a row range of B; accumulation.
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (8, 32, 32),
            (9, 33, 33),
            (17, 32, 100),
            (128, 32, 131),
            (40, 257, 32),
            (6, 64, 48),
            (13, 7, 65),
        ] {
            for tier in &tiers {
                for transposed in [false, true] {
                    for mode in 0..4 {
                        seed += 1;
                        let lda = k + (seed as usize % 3);
                        let ldc = n + (seed as usize % 2) * 5;
                        let a = values(m * lda, seed * 7);
                        let (brow, bcol) = if transposed { (1, k + 2) } else { (n + 1, 1) };
                        // Extra rows before and after: a row range of B.
                        let (before, after) = (2, 3);
                        let rows_total = k + before + after;
                        let b = values(rows_total.max(1) * (n + 1) * (k + 2), seed * 7 + 1);
                        let mut packed = Packed::default();
                        packed
                            .pack(*tier, &b, (rows_total, n), (brow, bcol))
                            .unwrap();
                        let c0 = values(m * ldc, seed * 7 + 2);
                        let row_add = values(n, seed * 7 + 3);
                        // A matrix added, its rows wider than C's.
                        let ldm = n + 3;
                        let matrix_add = values(m * ldm, seed * 7 + 4);
                        let store = [
                            Store::Overwrite,
                            Store::Accumulate,
                            Store::AddRow(&row_add),
                            Store::AddMatrix(&matrix_add, ldm),
                        ][mode];
                        let accumulate = mode == 1;
                        let mut got = if accumulate {
                            c0.clone()
                        } else {
                            vec![f32::NAN; m * ldc]
                        };
                        let strided = Strided { data: &a, row: lda };
                        gemm(
                            *tier,
                            m,
                            0.75,
                            strided,
                            packed.rows(before..before + k),
                            store,
                            &mut got,
                            ldc,
                        )
                        .unwrap();
                        let mut want = reference(
                            (m, k, n),
                            0.75,
                            strided,
                            &b[before * brow..],
                            (brow, bcol),
                            accumulate.then_some(&c0[..]),
                            ldc,
                        );
                        for i in 0..m {
                            for j in 0..n {
                                want[i * ldc + j] += match mode {
                                    2 => row_add[j],
                                    3 => matrix_add[i * ldm + j],
                                    _ => 0.0,
                                };
                            }
                        }
                        for i in 0..m {
                            for j in 0..ldc {
                                let (g, w) = (got[i * ldc + j], want[i * ldc + j]);
                                if j < n {
                                    let tol = 1e-5 * (1.0 + k as f32).sqrt();
                                    assert!(
                                        (g - w).abs() <= tol,
                                        "{tier:?} [{m},{k}]·[{k},{n}] t={transposed} {store:?} ({i},{j}): {g} vs {w}"
                                    );
                                } else if accumulate {
                                    // Past n: untouched.
                                    assert_eq!(g.to_bits(), c0[i * ldc + j].to_bits());
                                } else {
                                    assert!(g.is_nan(), "{tier:?}: wrote past column {n}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `Σ_p A[i, p]·B[p, j]` for row-major A `[·, k]` and B `[k, n]`, one multiply-add after
    /// the other as every tier's kernels chain them (fused where the tier fuses).
    fn one_pass_sum(
        tier: Tier,
        (a, b): (&[f32], &[f32]),
        (i, j): (usize, usize),
        (k, n): (usize, usize),
    ) -> f32 {
        (0..k).fold(0f32, |s, p| {
            let (x, y) = (a[i * k + p], b[p * n + j]);
            if tier == Tier::Scalar {
                s + x * y
            } else {
                x.mul_add(y, s)
            }
        })
    }

    /// Blocks of rows and of depth change no bit: each output is the tier's chain of
    /// multiply-adds over `p` in order (one rounding each with FMA, two on `scalar`), then
    /// `α·sum + add`, whatever the blocks. Shapes across several row blocks ([`TILES`] tiles)
    /// and depth blocks ([`KC`]), with tails.
    #[test]
    fn blocks_of_rows_and_depth_give_the_one_pass_bits() {
        for &(m, k, n) in &[
            (300, 600, 70),
            (TILES * 8 + 1, KC + 1, 33),
            (129, 2 * KC, 16),
        ] {
            for (seed, tier) in Tier::available().into_iter().enumerate() {
                let seed = seed as u64 * 5 + m as u64;
                let (a, b) = (values(m * k, seed), values(k * n, seed + 1));
                let row_add = values(n, seed + 2);
                let mut packed = Packed::default();
                packed.pack(tier, &b, (k, n), (n, 1)).unwrap();
                let mut got = vec![f32::NAN; m * n];
                let strided = Strided { data: &a, row: k };
                let store = Store::AddRow(&row_add);
                gemm(tier, m, 0.5, strided, packed.rows(0..k), store, &mut got, n).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let sum = one_pass_sum(tier, (&a, &b), (i, j), (k, n));
                        let want = 0.5 * sum + row_add[j];
                        assert_eq!(
                            got[i * n + j].to_bits(),
                            want.to_bits(),
                            "{} [{m}, {k}, {n}] at ({i}, {j})",
                            tier.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn whole_tiles_of_one_depth_block_give_the_definitions_bits_for_every_store() {
        // Depth within one block: the tiers' whole-tile kernels (the attention's scores and
        // short contexts) take every whole tile, the generic path the rest; both must give
        // the bits of the plain sum, for each way of storing.
        for &(m, k, n) in &[
            (16, 32, 64),
            (TILES * 8 + 3, 32, 70),
            (13, KC, 40),
            (8, 1, 32),
        ] {
            for (seed, tier) in Tier::available().into_iter().enumerate() {
                let seed = 900 + seed as u64 * 7 + m as u64;
                let (a, b) = (values(m * k, seed), values(k * n, seed + 1));
                let row_add = values(n, seed + 2);
                let ld = n + 3;
                let matrix = values(m * ld, seed + 3);
                let before = values(m * n, seed + 4);
                let mut packed = Packed::default();
                packed.pack(tier, &b, (k, n), (n, 1)).unwrap();
                let stores = [
                    Store::Overwrite,
                    Store::Accumulate,
                    Store::AddRow(&row_add),
                    Store::AddMatrix(&matrix, ld),
                ];
                for store in stores {
                    let mut got = before.clone();
                    let strided = Strided { data: &a, row: k };
                    gemm(
                        tier,
                        m,
                        0.75,
                        strided,
                        packed.rows(0..k),
                        store,
                        &mut got,
                        n,
                    )
                    .unwrap();
                    for i in 0..m {
                        for j in 0..n {
                            let sum = one_pass_sum(tier, (&a, &b), (i, j), (k, n));
                            let want = match store {
                                Store::Overwrite => 0.75 * sum,
                                Store::Accumulate => before[i * n + j] + 0.75 * sum,
                                Store::AddRow(row) => 0.75 * sum + row[j],
                                Store::AddMatrix(bias, ld) => 0.75 * sum + bias[i * ld + j],
                            };
                            assert_eq!(
                                got[i * n + j].to_bits(),
                                want.to_bits(),
                                "{} [{m}, {k}, {n}] {store:?} at ({i}, {j})",
                                tier.name()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_range_of_panels_is_the_product_with_those_columns_of_b() {
        let mut seed = 500;
        for tier in Tier::available() {
            let nr = tier.nr();
            let (m, k, n) = (11, 9, 3 * nr + 5);
            for cols in [nr..2 * nr, nr..n, 0..0, 2 * nr..n, 0..3 * nr] {
                for transposed in [false, true] {
                    seed += 1;
                    let (brow, bcol) = if transposed { (1, k) } else { (n, 1) };
                    let b = values(k * n, seed);
                    let a = values(m * k, seed + 1);
                    let mut packed = Packed::default();
                    packed.pack(tier, &b, (k, n), (brow, bcol)).unwrap();
                    let width = cols.len();
                    let ldc = width + 1;
                    let mut got = vec![f32::NAN; m * ldc];
                    let strided = Strided { data: &a, row: k };
                    let view = packed.rows(0..k).columns(cols.clone()).unwrap();
                    gemm(tier, m, 1.5, strided, view, Store::Overwrite, &mut got, ldc).unwrap();
                    let want = reference(
                        (m, k, width),
                        1.5,
                        strided,
                        &b[cols.start * bcol..],
                        (brow, bcol),
                        None,
                        ldc,
                    );
                    for i in 0..m {
                        for j in 0..ldc {
                            let (g, w) = (got[i * ldc + j], want[i * ldc + j]);
                            if j < width {
                                assert!(
                                    (g - w).abs() <= 1e-5 * 4.0,
                                    "{tier:?} {cols:?}: {g} vs {w}"
                                );
                            } else {
                                assert!(g.is_nan(), "{tier:?} {cols:?}: wrote past column {width}");
                            }
                        }
                    }
                }
            }
            // Not whole panels, or past B: refused.
            let mut packed = Packed::default();
            packed
                .pack(tier, &values(k * n, 9), (k, n), (n, 1))
                .unwrap();
            for bad in [1..nr, 0..n + 1, nr..nr + 1] {
                assert!(
                    packed.rows(0..k).columns(bad.clone()).is_err(),
                    "{tier:?} {bad:?}"
                );
            }
        }
    }

    #[test]
    fn a_forced_tier_is_used_only_where_the_cpu_has_it() {
        let best = Tier::available()[0];
        assert_eq!(Tier::select(None), best);
        assert_eq!(Tier::select(Some(" scalar ")), Tier::Scalar);
        assert_eq!(Tier::select(Some("no such tier")), best);
        for tier in [Tier::Avx512, Tier::Avx2, Tier::Neon] {
            let expected = if tier.supported() { tier } else { best };
            assert_eq!(Tier::select(Some(tier.name())), expected);
        }
    }

    #[test]
    fn bad_operands_are_refused() {
        let tier = Tier::Scalar;
        let mut packed = Packed::default();
        assert!(packed.pack(tier, &[0.0; 5], (2, 3), (3, 1)).is_err());
        packed.pack(tier, &[1.0; 6], (2, 3), (3, 1)).unwrap();
        let mut c = vec![0.0; 6];
        let a = [1.0; 4];
        // A too short for 2 rows of k = 2 with row stride 3.
        let short = Strided { data: &a, row: 3 };
        assert!(gemm(
            tier,
            2,
            1.0,
            short,
            packed.rows(0..2),
            Store::Overwrite,
            &mut c,
            3
        )
        .is_err());
        // C too short.
        let ok = Strided { data: &a, row: 2 };
        assert!(gemm(
            tier,
            2,
            1.0,
            ok,
            packed.rows(0..2),
            Store::Overwrite,
            &mut c[..5],
            3
        )
        .is_err());
        // Rows of B past its end; a tier B was not packed for.
        assert!(gemm(
            tier,
            2,
            1.0,
            ok,
            packed.rows(0..3),
            Store::Overwrite,
            &mut c,
            3
        )
        .is_err());
        if let Some(other) = Tier::available().into_iter().find(|t| t.nr() != tier.nr()) {
            assert!(gemm(
                other,
                2,
                1.0,
                ok,
                packed.rows(0..2),
                Store::Overwrite,
                &mut c,
                3
            )
            .is_err());
        }
        // A row to add of the wrong length.
        let row = [1.0; 2];
        assert!(gemm(
            tier,
            2,
            1.0,
            ok,
            packed.rows(0..2),
            Store::AddRow(&row),
            &mut c,
            3
        )
        .is_err());
        // A matrix to add too small for two rows of three with rows of four.
        let matrix = [1.0; 6];
        assert!(gemm(
            tier,
            2,
            1.0,
            ok,
            packed.rows(0..2),
            Store::AddMatrix(&matrix, 4),
            &mut c,
            3
        )
        .is_err());
        gemm(
            tier,
            2,
            1.0,
            ok,
            packed.rows(0..2),
            Store::Overwrite,
            &mut c,
            3,
        )
        .unwrap();
        assert_eq!(c, [2.0; 6]);
        gemm(
            tier,
            2,
            1.0,
            ok,
            packed.rows(0..2),
            Store::AddRow(&[1.0, 2.0, 3.0]),
            &mut c,
            3,
        )
        .unwrap();
        assert_eq!(c, [3.0, 4.0, 5.0, 3.0, 4.0, 5.0]);
    }
}
