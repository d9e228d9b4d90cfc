//! The default backend: tract, with symbolic batch and sequence dims, optimized once at load.

use crate::backend::{Backend, GraphFacts};
use crate::batch::Batch;
use crate::error::{Result, RuntimeError};
use tract_hir::internal::{DimLike, Factoid};
use tract_hir::prelude::*;

/// Runs `f`, turning a panic inside it into an error. tract trusts its graphs in places (found
/// by fuzzing the load path: a constant `Gather` with an index past its data panics during
/// analysis), and a package is untrusted input: its graph must never take the process down.
/// Whatever `f` was building is dropped (a state that panicked is not pooled again).
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(RuntimeError::Model(format!(
            "tract failed while {what}: {message} (the graph is invalid or unsupported)"
        )))
    })
}

fn model_error(e: impl std::fmt::Debug) -> RuntimeError {
    // tract errors are anyhow chains: `{:?}` prints every cause, which is what a user needs.
    RuntimeError::Model(format!("{e:?}"))
}

/// One thread pool per thread count for the whole process, shared by every model: a process
/// serving several packages should not start a pool of `threads` workers for each of them.
#[cfg(not(target_family = "wasm"))]
fn shared_executor(threads: usize) -> tract_linalg::multithread::Executor {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static POOLS: OnceLock<Mutex<HashMap<usize, tract_linalg::multithread::Executor>>> =
        OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| tract_linalg::multithread::Executor::multithread(threads))
        .clone()
}

/// Runs `run` on the calling worker of `pool` while every other worker of the pool spins, taking
/// the pool's jobs as they come, until `run` returns (or unwinds): no worker sleeps between
/// the operators of one run, so a split operator does not wait for one to wake.
#[cfg(not(target_family = "wasm"))]
fn run_awake<R: Send>(pool: &rayon_core::ThreadPool, run: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Sets the flag when dropped: after `run`, and if it panics (the scope then waits for the
    /// spinners, which must stop).
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let done = AtomicBool::new(false);
    pool.scope(|s| {
        for _ in 1..pool.current_num_threads() {
            s.spawn(|_| {
                while !done.load(Ordering::Acquire) {
                    if pool.yield_now() != Some(rayon_core::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        let _done = Done(&done);
        run()
    })
}

/// Runs `run` with `executor` as the executor of tract's operators (and ours), as the backend
/// runs one text: with a pool, on one of its threads while the others are kept awake, so that
/// an operator split over the pool runs part of its work on the thread that split it and hands
/// the rest to workers already running, instead of this thread sleeping while it wakes every
/// worker at every operator (batch 1 on two threads: 1.02-1.48x faster, BENCHMARKS.md wave 13).
/// The profile example runs its plans through it too.
pub fn run_on<R: Send>(
    executor: &tract_linalg::multithread::Executor,
    run: impl FnOnce() -> R + Send,
) -> R {
    let run = || tract_linalg::multithread::multithread_tract_scope(executor.clone(), run);
    match executor {
        #[cfg(not(target_family = "wasm"))]
        tract_linalg::multithread::Executor::MultiThread(pool) => {
            pool.install(|| run_awake(pool, run))
        }
        _ => run(),
    }
}

/// A WASI guest has one thread (and the component is built without tract-linalg's pools).
#[cfg(target_family = "wasm")]
fn shared_executor(_threads: usize) -> tract_linalg::multithread::Executor {
    tract_linalg::multithread::Executor::SingleThread
}

/// Window attention reshapes the sequence into blocks of `multiple` tokens: saying every input
/// is `[batch, blocks · multiple]` makes that reshape exact for tract's symbolic shapes (ONNX
/// dims cannot state it). Nothing to say for `multiple` ≤ 1 (dense attention).
pub fn state_whole_blocks(model: &mut InferenceModel, multiple: usize) -> TractResult<()> {
    if multiple <= 1 {
        return Ok(());
    }
    let batch = TDim::from(model.symbols.sym("batch"));
    let sequence = TDim::from(model.symbols.sym("blocks")) * multiple as i64;
    for input in 0..model.inputs.len() {
        let fact = InferenceFact::dt_shape(i64::datum_type(), [batch.clone(), sequence.clone()]);
        model.set_input_fact(input, fact)?;
    }
    Ok(())
}

/// The default backend: tract, with symbolic batch and sequence dims, optimized once at load,
/// with our own operators patched in ([`crate::ops`]).
///
/// Rows: where rows are independent and the output is one `[batch, width]` tensor, each row
/// runs cut to its own length (see `per_row`): alone, or in a block of short rows of similar
/// length (below).
///
/// int8 graphs quantize activations at run time, over the whole tensor: with a per-row plan
/// the range is each text's own, so an answer is what the graph gives for that text alone, and
/// never depends on which other texts share its batch (nor on the thread count). Without one
/// (a graph whose output is not `[batch, width]`) they are never split.
///
/// Short rows: a matrix product over one short text has too few rows to keep the CPU's
/// kernels busy (32 tokens: 32 rows against weights of 384 × 1536). Where rows are independent
/// and nothing is quantized at run time, consecutive rows of similar length run together, up
/// to [`BLOCK_TOKENS`] tokens, on a plan whose batch dim stays symbolic (`blocks`; native
/// builds); BENCHMARKS.md, wave 10.
///
/// Threads: a batch of several texts is split into `threads` parts that run at once, each on
/// its own single-threaded state (on 2 cores that scales close to 2x; tract's intra-op
/// threading gained 1.1-1.7x); a single text uses tract's intra-op threads.
pub struct TractBackend {
    plan: Pooled,
    /// Most tokens (rows × padded length) a block of rows may hold; 0: rows run alone (and,
    /// with `per_row`, the plan is built for one row). Non-zero only where `per_row` and
    /// `splittable`: then the plan's batch dim stays symbolic.
    block_tokens: usize,
    executor: Option<tract_linalg::multithread::Executor>,
    threads: usize,
    facts: GraphFacts,
    rewrites: usize,
    /// Whether rows of a batch are independent in the batched plan (no run-time
    /// quantization), so that a batch can be split (see above).
    splittable: bool,
    /// Whether rows run on their own (or in blocks of similar short rows), trimmed of the
    /// padding that only their batch's longer rows needed; the plan is built for one row
    /// unless `blocks`. Only for graphs with one `[batch, width]` output (a pooled embedding or
    /// logits), which padding cannot change.
    per_row: bool,
    /// The manifest's sequence block size (window attention): rows are cut to whole blocks.
    sequence_multiple: usize,
    /// What the plan cache did for this load.
    plan_cache: PlanCache,
}

/// How many tokens a block of short rows holds at most (`AUTOGLM_BLOCK_TOKENS` overrides it;
/// 0 runs every row alone on a plan built for one row). Measured on MiniLM-L6 (BENCHMARKS.md,
/// wave 10): at 32 tokens tract's products ran at ~80 GFLOP/s on rows alone, ~99 on blocks of
/// 256 rows and ~89 on one block of the whole batch (1,024 rows, out of the cache); blocks
/// of 512 tokens were 0-4 % faster than 256 at 32 and 64 tokens, 128 and 1,024 slower.
pub const BLOCK_TOKENS: usize = 512;

/// A block adds a row only while the padding it needs stays within 1/`BLOCK_WASTE` of the
/// block's tokens.
const BLOCK_WASTE: usize = 8;

/// A plan and the run states kept between calls, one per concurrent caller: building one
/// costs an allocation per node, and a state cannot be shared (`Send`, not `Sync`).
struct Pooled {
    plan: Arc<TypedSimplePlan>,
    states: std::sync::Mutex<Vec<TypedSimpleState>>,
}

impl Pooled {
    fn new(plan: Arc<TypedSimplePlan>) -> Self {
        Pooled {
            plan,
            states: Default::default(),
        }
    }

    /// Runs the plan on a pooled state. A state whose run failed is dropped, not pooled: it
    /// may hold a half-finished turn.
    fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>> {
        let pooled = self.states.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut state = match pooled {
            Some(state) => state,
            None => self.plan.spawn().map_err(model_error)?,
        };
        let outputs = guarded("running the graph", || {
            state.run(inputs).map_err(model_error)
        })?;
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(state);
        Ok(outputs)
    }
}

/// Cuts `lengths` (the rows' own lengths, in order) into blocks of consecutive rows that run
/// together, padded to their longest: a block grows while it holds at most `budget` tokens and
/// its padding at most 1/[`BLOCK_WASTE`] of them. Returns each block's end and padded length.
fn row_blocks(lengths: &[usize], budget: usize) -> Vec<(usize, usize)> {
    let mut blocks = Vec::new();
    let mut start = 0;
    while start < lengths.len() {
        let (mut end, mut longest, mut used) = (start + 1, lengths[start], lengths[start]);
        while let Some(&next) = lengths.get(end) {
            let (l, rows) = (longest.max(next), end + 1 - start);
            let tokens = rows * l;
            if tokens > budget || (tokens - (used + next)) * BLOCK_WASTE > tokens {
                break;
            }
            (longest, used, end) = (l, used + next, end + 1);
        }
        blocks.push((end, longest));
        start = end;
    }
    blocks
}

impl std::fmt::Debug for TractBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractBackend")
            .field("threads", &self.threads)
            .field("facts", &self.facts)
            .field("rewrites", &self.rewrites)
            .finish_non_exhaustive()
    }
}

/// Input and output names and the position table, read from the graph as parsed (before
/// optimization folds the constants away).
fn inference_facts(model: &InferenceModel) -> Result<GraphFacts> {
    let label = |o: OutletId| -> String {
        model
            .outlet_label(o)
            .map_or_else(|| model.node(o.node).name.clone(), str::to_string)
    };
    let inputs = model
        .input_outlets()
        .map_err(model_error)?
        .iter()
        .map(|&o| label(o))
        .collect();
    let output = model
        .output_outlets()
        .map_err(model_error)?
        .first()
        .map(|&o| label(o));
    let positions = model
        .nodes()
        .iter()
        .filter(|n| n.inputs.is_empty() && n.name.contains("position_embeddings"))
        .filter_map(|n| {
            let dims = n.outputs.first()?.fact.shape.concretize()?;
            (dims.len() == 2).then(|| dims[0].to_usize().ok())?
        })
        .max();
    Ok(GraphFacts {
        inputs: Some(inputs),
        output,
        positions,
        ..GraphFacts::default()
    })
}

/// A decluttered graph with our operators and what the load learnt on the way: what the plan
/// cache keeps (src/plan_cache.rs).
#[derive(Debug)]
pub(crate) struct Graph {
    pub model: TypedModel,
    pub facts: GraphFacts,
    /// How many nodes our operators replaced.
    pub rewrites: usize,
    /// Whether rows may run apart: not where the graph quantizes activations at run time.
    pub splittable: bool,
}

/// The plan cache's file in `dir` for a package's graph (not for a stream over bytes, which
/// has no digest to name it by).
fn plan_cache_file(
    dir: &std::path::Path,
    graph: &autoglm_package::FileStream,
    sequence_multiple: usize,
) -> Option<std::path::PathBuf> {
    let digest = graph.declared_sha256()?;
    Some(crate::plan_cache::path(dir, digest, sequence_multiple))
}

use crate::plan_cache::{read as cache_read, write as cache_write};

/// What the plan cache (src/plan_cache.rs) did for a load. Its troubles are not errors: the
/// load then takes the ONNX path, and says why here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanCache {
    /// Not used: off (`AUTOGLM_PLAN_CACHE=off`), not a package's graph, tract's own plan, or
    /// a graph without int8 layers (an fp32 plan loaded no faster from the cache).
    Off,
    /// The plan was read from this file.
    Read(std::path::PathBuf),
    /// The graph was loaded from ONNX and its plan written to this file.
    Written(std::path::PathBuf),
    /// The graph was loaded from ONNX; the cache could not be read or written: why.
    Failed(String),
}

/// Where a graph comes from: bytes in memory, or a package's stream.
enum Source<'a> {
    Bytes(&'a [u8]),
    Stream(autoglm_package::FileStream),
}

impl TractBackend {
    /// Loads ONNX bytes; `threads` > 1 gives the matrix products a thread pool of that size.
    /// `sequence_multiple` is the manifest's: the runtime always feeds sequences of whole blocks.
    pub fn new(onnx: &[u8], threads: usize, sequence_multiple: usize) -> Result<Self> {
        Self::load(Source::Bytes(onnx), threads, sequence_multiple, true, None)
    }

    /// [`TractBackend::new`] on a package's graph stream ([`autoglm_package::FileStream`]):
    /// the file is verified as it is read, and its bytes are never held whole
    /// ([`crate::onnx_stream`]), so the load's peak holds the weights about once.
    pub fn from_stream(
        graph: autoglm_package::FileStream,
        threads: usize,
        sequence_multiple: usize,
    ) -> Result<Self> {
        let cache = crate::plan_cache::cache_dir();
        Self::from_stream_with_cache(graph, threads, sequence_multiple, cache.as_deref())
    }

    /// [`TractBackend::from_stream`] with the plan cache in `cache` (`None`: off) instead of
    /// the default directory ([`crate::plan_cache::cache_dir`]).
    pub fn from_stream_with_cache(
        graph: autoglm_package::FileStream,
        threads: usize,
        sequence_multiple: usize,
        cache: Option<&std::path::Path>,
    ) -> Result<Self> {
        let file = cache.and_then(|dir| plan_cache_file(dir, &graph, sequence_multiple));
        Self::load(
            Source::Stream(graph),
            threads,
            sequence_multiple,
            true,
            file,
        )
    }

    /// The graph exactly as tract optimizes it on its own, without our operators: the
    /// reference that tests compare the patched plan with.
    pub fn plain(onnx: &[u8], threads: usize, sequence_multiple: usize) -> Result<Self> {
        Self::load(Source::Bytes(onnx), threads, sequence_multiple, false, None)
    }

    /// How many nodes our own operators replaced.
    pub fn rewrites(&self) -> usize {
        self.rewrites
    }

    /// How many nodes of the optimized plan run the operator `name` (e.g. `AutoglmAttention`).
    pub fn op_count(&self, name: &str) -> usize {
        self.plan
            .plan
            .model()
            .nodes()
            .iter()
            .filter(|n| n.op().name() == name)
            .count()
    }

    /// Whether short rows run in blocks ([`BLOCK_TOKENS`]; the plan keeps a symbolic batch).
    pub fn blocks(&self) -> bool {
        self.block_tokens > 0
    }

    /// Whether rows run on their own, cut to their own length (alone or in blocks).
    pub fn per_row(&self) -> bool {
        self.per_row
    }

    /// What the plan cache did for this load (src/plan_cache.rs).
    pub fn plan_cache(&self) -> &PlanCache {
        &self.plan_cache
    }

    /// Loads `source`; `cache` is the plan cache's file for it, if any.
    fn load(
        source: Source<'_>,
        threads: usize,
        sequence_multiple: usize,
        patch: bool,
        cache: Option<std::path::PathBuf>,
    ) -> Result<Self> {
        guarded("loading the graph", || {
            Self::load_unguarded(source, threads, sequence_multiple, patch, cache)
        })
    }

    fn load_unguarded(
        source: Source<'_>,
        threads: usize,
        sequence_multiple: usize,
        patch: bool,
        cache: Option<std::path::PathBuf>,
    ) -> Result<Self> {
        // A package's graph whose plan is cached: read the plan, then verify the package's
        // file (src/plan_cache.rs). Any trouble with the cache sends the load the ONNX way.
        let mut failed = None;
        let source = match (source, &cache) {
            (Source::Stream(graph), Some(file)) if file.is_file() => {
                // The package's file is verified on a second stream, beside the cache's read
                // (after it where no thread can start).
                let verify = graph.reopen().and_then(|second| {
                    std::thread::Builder::new()
                        .name("autoglm-verify".into())
                        .spawn(move || second?.finish())
                        .ok()
                });
                match cache_read(file) {
                    Ok(cached) => {
                        match verify {
                            Some(verify) => verify.join().map_err(|_| {
                                RuntimeError::Model("verifying the graph file panicked".into())
                            })??,
                            None => graph.finish()?,
                        }
                        let outcome = PlanCache::Read(file.clone());
                        return Self::finish_load(
                            cached,
                            threads,
                            sequence_multiple,
                            true,
                            outcome,
                        );
                    }
                    Err(e) => {
                        failed = Some(format!("reading {}: {e}", file.display()));
                        Source::Stream(graph)
                    }
                }
            }
            (source, _) => source,
        };
        let graph = Self::decluttered(source, sequence_multiple, patch)?;
        // Only graphs with int8 layers are kept: their load is mostly tract's analysis of the
        // quantization chains. An fp32 load is mostly reading and packing the weights, which
        // a cached plan does as well: it loaded no faster (BENCHMARKS.md, wave 11).
        let int8 = graph
            .model
            .nodes()
            .iter()
            .any(|n| n.op_is::<crate::ops::LinearI8>());
        let outcome = match (&cache, failed) {
            (None, _) => PlanCache::Off,
            (Some(_), _) if !int8 => PlanCache::Off,
            (Some(file), failed) => match cache_write(file, &graph) {
                Ok(()) => PlanCache::Written(file.clone()),
                Err(e) => {
                    let wrote = format!("writing {}: {e}", file.display());
                    PlanCache::Failed(failed.map_or(wrote.clone(), |f| format!("{f}; {wrote}")))
                }
            },
        };
        Self::finish_load(graph, threads, sequence_multiple, patch, outcome)
    }

    /// The graph parsed, typed, decluttered and (with `patch`) rewritten with our operators.
    fn decluttered(source: Source<'_>, sequence_multiple: usize, patch: bool) -> Result<Graph> {
        let mut model = match source {
            Source::Stream(graph) => crate::onnx_stream::parse(graph, patch)?,
            Source::Bytes(onnx) => {
                // Decoded straight from the bytes: tract's `proto_model_for_read` first copies
                // them into a buffer of its own.
                let mut proto = <crate::onnx_pb::ModelProto as prost::Message>::decode(onnx)
                    .map_err(|e| {
                        RuntimeError::Model(format!("the graph is not an ONNX model: {e}"))
                    })?;
                crate::graph_guard::check(&proto)?;
                if let (true, Some(graph)) = (patch, proto.graph.as_mut()) {
                    crate::ops::qlinear::fuse_onnx(graph, |_| None);
                }
                let parsed = crate::onnx_ops::parse(&proto, patch)?;
                if !parsed.unresolved_inputs.is_empty() {
                    return Err(RuntimeError::Model(format!(
                        "the graph uses values it never defines: {:?}",
                        parsed.unresolved_inputs
                    )));
                }
                parsed.model
            }
        };
        state_whole_blocks(&mut model, sequence_multiple).map_err(model_error)?;
        let facts = inference_facts(&model)?;
        let mut typed = model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(model_error)?;
        let splittable = !typed.nodes().iter().any(|n| {
            n.op().name().starts_with("DynamicQuantizeLinear")
                || n.op_is::<crate::ops::quantize::DynamicQuantize>()
        });
        let rewrites = if patch {
            crate::ops::rewrite(&mut typed).map_err(model_error)?
        } else {
            0
        };
        Ok(Graph {
            model: typed,
            facts,
            rewrites,
            splittable,
        })
    }

    /// The plan for `graph`, for `threads` threads.
    fn finish_load(
        graph: Graph,
        threads: usize,
        sequence_multiple: usize,
        patch: bool,
        plan_cache: PlanCache,
    ) -> Result<Self> {
        let Graph {
            model: mut typed,
            mut facts,
            rewrites,
            splittable,
        } = graph;
        // The f32 linear layers on our kernel, split over the threads, the int8 layers' GELU
        // folded into them and the residual adds into the LayerNorms (not in cached plans:
        // fused here, after the cache).
        #[cfg(not(target_family = "wasm"))]
        let rewrites = if patch {
            rewrites + crate::ops::fuse_after_cache(&mut typed).map_err(model_error)?
        } else {
            rewrites
        };
        // One text per run, where rows are independent: a row runs at its own length instead
        // of its batch's longest. int8 graphs get a plan for a batch dim of 1: tract then
        // folds what it cannot for a symbolic batch (BENCHMARKS.md, "Wave 3": 13-17 % less
        // time at batch 1, before our LayerNorm). fp32 graphs keep the batch symbolic, for
        // blocks of short rows (`BLOCK_TOKENS`): one plan, not two (a second plan held
        // another 57 MB of packed weights), and at batch 1 the two plans ran at one speed,
        // alternated in one process (BENCHMARKS.md, wave 10). The sequence stays symbolic:
        // with it concrete tract's kernel cost model picks slower matmul tiles on some CPUs.
        let output_rank = typed
            .output_outlets()
            .ok()
            .and_then(|o| typed.outlet_fact(*o.first()?).ok())
            .map(|f| f.rank());
        let per_row = patch && output_rank == Some(2);
        // Native only: in the WASI component (tract's attention, 4-lane products) neither
        // plan has been measured against the other, so it keeps the batch-1 plan.
        let block_tokens = if cfg!(target_family = "wasm") || !(per_row && splittable) {
            0
        } else {
            std::env::var("AUTOGLM_BLOCK_TOKENS")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(BLOCK_TOKENS)
        };
        if per_row && block_tokens == 0 {
            if let Some(batch) = typed.symbols.get("batch") {
                let one = SymbolValues::default().with(&batch, 1);
                typed = typed.set_symbols(&one.to_dim_map()).map_err(model_error)?;
            }
        }
        let typed = typed.into_optimized().map_err(model_error)?;
        if let Some(fact) = typed.output_outlets().ok().and_then(|o| {
            let first = *o.first()?;
            typed.outlet_fact(first).ok()
        }) {
            facts.output_rank = Some(fact.rank());
            facts.output_width = fact.shape.last().and_then(|d| d.to_usize().ok());
        }
        let plan = typed.into_runnable().map_err(model_error)?;
        let executor = (threads > 1).then(|| shared_executor(threads));
        Ok(TractBackend {
            plan: Pooled::new(plan),
            block_tokens,
            executor,
            threads: threads.max(1),
            facts,
            rewrites,
            splittable,
            per_row,
            sequence_multiple,
            plan_cache,
        })
    }
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn describe(&self) -> String {
        let plan = match &self.plan_cache {
            PlanCache::Off => String::new(),
            PlanCache::Read(_) => ", plan from the cache".into(),
            PlanCache::Written(_) => ", plan cached".into(),
            PlanCache::Failed(why) => format!(", plan cache not used: {why}"),
        };
        format!("tract on the CPU, {} threads{plan}", self.threads)
    }

    fn facts(&self) -> GraphFacts {
        self.facts.clone()
    }

    fn run(&self, batch: &Batch) -> Result<Vec<f32>> {
        let rows = batch.rows.len();
        let parts = if self.splittable || self.per_row {
            self.threads.min(rows)
        } else {
            1
        };
        if parts <= 1 {
            return match &self.executor {
                Some(executor) => run_on(executor, || self.run_rows(batch, 0..rows)),
                None => self.run_rows(batch, 0..rows),
            };
        }
        let chunk = rows.div_ceil(parts);
        let outputs: Vec<Result<Vec<f32>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..rows)
                .step_by(chunk)
                .map(|start| {
                    scope.spawn(move || self.run_rows(batch, start..rows.min(start + chunk)))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(RuntimeError::Model("a tract worker thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut all = Vec::new();
        for part in outputs {
            all.extend(part?);
        }
        Ok(all)
    }
}

impl TractBackend {
    /// Runs rows `rows` of `batch` on the calling thread: one run of the plan for all of them,
    /// or, with `per_row`, one run per row at that row's own length, or per block of similar
    /// short rows at the block's longest ([`row_blocks`]).
    fn run_rows(&self, batch: &Batch, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
        if !self.per_row {
            return self.run_block(batch, rows, batch.sequence);
        }
        let lengths: Vec<usize> = rows.clone().map(|r| self.row_length(batch, r)).collect();
        let mut all = Vec::new();
        let mut start = rows.start;
        for (end, length) in row_blocks(&lengths, self.block_tokens) {
            let end = rows.start + end;
            all.extend(self.run_block(batch, start..end, length)?);
            start = end;
        }
        Ok(all)
    }

    /// The length a row needs: its last unmasked position, rounded up to the graph's block
    /// size (window attention) as the batcher does. Never zero, never past the batch's.
    fn row_length(&self, batch: &Batch, row: usize) -> usize {
        let mask = &batch.attention_mask[row * batch.sequence..(row + 1) * batch.sequence];
        let used = mask
            .iter()
            .rposition(|&m| m != 0)
            .map_or(1, |last| last + 1);
        let multiple = self.sequence_multiple.max(1);
        (used.div_ceil(multiple) * multiple).clamp(1, batch.sequence)
    }

    /// Runs rows `rows` of `batch`, cut to their first `length` positions, on a pooled state.
    fn run_block(
        &self,
        batch: &Batch,
        rows: std::ops::Range<usize>,
        length: usize,
    ) -> Result<Vec<f32>> {
        let sequence = batch.sequence;
        let shape = [rows.len(), length];
        let input = |data: &[i64]| -> Result<TValue> {
            let mut values = Vec::with_capacity(rows.len() * length);
            for row in rows.clone() {
                values.extend_from_slice(&data[row * sequence..row * sequence + length]);
            }
            Ok(Tensor::from_shape(&shape, &values)
                .map_err(model_error)?
                .into_tvalue())
        };
        let inputs = tvec![
            input(&batch.input_ids)?,
            input(&batch.attention_mask)?,
            input(&batch.token_type_ids)?
        ];
        let outputs = self.plan.run(inputs)?;
        let out = outputs
            .first()
            .ok_or_else(|| RuntimeError::Model("the graph produced no output".into()))?;
        let plain = out.try_as_plain_ram().map_err(model_error)?;
        Ok(plain.as_slice::<f32>().map_err(model_error)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::row_blocks;

    /// The spinning workers stop when the run returns and when it panics (the panic reaches
    /// the caller; nothing hangs), and the run's own pool jobs are done on the way.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn a_run_with_its_workers_awake_ends_when_it_returns_or_panics() {
        let executor = tract_linalg::multithread::Executor::multithread(3);
        let tract_linalg::multithread::Executor::MultiThread(pool) = &executor else {
            panic!("a pool");
        };
        for _ in 0..20 {
            let sum: u64 = pool.install(|| {
                super::run_awake(pool, || {
                    let parts = std::sync::Mutex::new(Vec::new());
                    pool.scope(|s| {
                        for i in 0..8u64 {
                            let parts = &parts;
                            s.spawn(move |_| parts.lock().unwrap().push(i * i));
                        }
                    });
                    parts.into_inner().unwrap().iter().sum()
                })
            });
            assert_eq!(sum, (0..8).map(|i| i * i).sum::<u64>());
        }
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| super::run_awake(pool, || -> u32 { panic!("inside the run") }))
        }));
        assert!(caught.is_err());
        // The pool still works.
        assert_eq!(pool.install(|| super::run_awake(pool, || 7)), 7);
    }

    #[test]
    fn rows_of_one_length_fill_blocks_up_to_the_budget() {
        assert_eq!(row_blocks(&[32; 10], 256), [(8, 32), (10, 32)]);
        assert_eq!(row_blocks(&[32; 3], 64), [(2, 32), (3, 32)]);
        // A row longer than the budget runs alone; so does every row with no budget.
        assert_eq!(row_blocks(&[300, 300], 256), [(1, 300), (2, 300)]);
        assert_eq!(row_blocks(&[8, 8, 8], 0), [(1, 8), (2, 8), (3, 8)]);
        assert_eq!(row_blocks(&[], 256), []);
    }

    #[test]
    fn a_block_takes_a_row_only_while_its_padding_stays_small() {
        // 32 + 20 padded to 2 × 32: 12 of 64 tokens are padding (> 1/8).
        assert_eq!(row_blocks(&[32, 20], 256), [(1, 32), (2, 20)]);
        // 32, 30, 31, 32: at most 5 of 128 padded.
        assert_eq!(row_blocks(&[32, 30, 31, 32], 256), [(4, 32)]);
        // A longer row pads the rows already in the block: 3 × 20 → 40 would pad 40 of 120.
        assert_eq!(row_blocks(&[20, 20, 40], 256), [(2, 20), (3, 40)]);
        // Every block's padded length is its longest row, and the blocks cover every row once.
        let lengths = [5, 7, 6, 64, 60, 3, 3, 3, 3, 200, 9];
        let blocks = row_blocks(&lengths, 256);
        let mut start = 0;
        for &(end, padded) in &blocks {
            assert!(end > start);
            assert_eq!(padded, *lengths[start..end].iter().max().unwrap());
            assert!((end - start) * padded <= 256 || end - start == 1);
            start = end;
        }
        assert_eq!(start, lengths.len());
    }
}
