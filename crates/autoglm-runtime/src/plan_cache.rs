//! **Plan cache**: the decluttered graph with our operators, kept in tract's own format (NNEF),
//! so that the next load of the same package skips reading ONNX, typing and decluttering it.
//!
//! A load's time went mostly to tract's analysis, not to the weights: on the int8 MiniLM,
//! ~29 ms to read, verify and parse the file, ~40 ms to type it (with our packing of the
//! weights) and ~46 ms to declutter it, then a few ms for our rewrites and tract's
//! optimisation (BENCHMARKS.md, wave 11). The cached graph is the one our rewrites left,
//! before tract's optimisation (which depends on the thread count and the shapes). Loading it
//! wires the operators back with their weights already packed, and the load goes on as before.
//! Only graphs with int8 layers are kept: an fp32 load is mostly reading and packing the
//! weights, which a cached plan does too, and it loaded no faster (src/tract.rs).
//!
//! - **Where**: `AUTOGLM_PLAN_CACHE` (a directory; `off` disables the cache), else
//!   `$XDG_CACHE_HOME/autoglm-edge/plans`, else `~/.cache/autoglm-edge/plans`. A cache that
//!   cannot be read or written only costs time: the load takes the ONNX path, and says why
//!   ([`crate::PlanCache`]). None in a WASI guest (`plan_cache_none.rs`).
//! - **Key**: a file is named by the graph file's sha256 as the package's manifest states it,
//!   then by a hash of the runtime's sources and lock file (`build.rs`: a plan serialized by
//!   other code or another tract is never read), the CPU's kernel tiers (they decide which
//!   layers fuse, and the int8 weights are cached in their tier's layout) and the sequence
//!   multiple. Writing a plan removes the other plans of the same graph, and the least
//!   recently used beyond [`MAX_FILES`].
//! - **Integrity**: our own container: a magic, a JSON header (the graph's facts: names of
//!   its inputs and output, the position table's size, how many nodes our operators
//!   replaced, whether rows may run apart), the NNEF archive, then the archive's length and the
//!   CRC-32 of header and archive. A file that does not check out is ignored, and written
//!   again; the checksum is verified before tract-nnef reads the archive. The checksum
//!   catches damage, not tampering: whoever can write the cache directory can write the
//!   user's binaries too (the `.cwasm` cache of the component trusts it the same way).
//! - The package's own graph file is still read and verified against its digest on every
//!   load, on a second thread beside the plan's read (after it where threads cannot start): a
//!   damaged package is refused as before.

use crate::backend::GraphFacts;
use crate::ops::qgemm::{PackedI8, Tier};
use crate::ops::{Attention, DynamicQuantize, LayerNorm, LinearI8, WindowAttention};
use crate::ops::{KeyBiasAdd, SameShapeAdd};
use crate::tract::Graph;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use tract_hir::tract_core::ops::nn::GeluExact;
use tract_nnef::internal::*;
use tract_nnef::ser::{invocation, logical, numeric, string};

/// The first bytes of a cache file (and its format's version).
const MAGIC: &[u8; 8] = b"AGPLAN01";

/// The runtime's sources, hashed by `build.rs`: part of every key.
const SOURCE_HASH: &str = env!("AUTOGLM_RUNTIME_SOURCE_HASH");

/// The most plan files the cache keeps (the least recently used go first).
const MAX_FILES: usize = 8;

/// The most bytes a cache file's header may declare for the graph's facts.
const MAX_HEADER: u64 = 1 << 20;

/// tract's NNEF with our operators' (de)serializers.
pub fn nnef() -> tract_nnef::framework::Nnef {
    tract_nnef::nnef().with_registry(registry())
}

/// Our operators in NNEF (`autoglm_*` fragments), and tract's exact GELU, which tract-nnef
/// has no serializer for.
pub fn registry() -> Registry {
    let mut r = Registry::new("autoglm");
    let x = || TypeName::Scalar.tensor();
    register_plain::<SameShapeAdd>(&mut r, &["output"]);
    register_plain::<KeyBiasAdd>(&mut r, &["output"]);
    register_plain::<DynamicQuantize>(&mut r, &["q", "scale", "zero_point"]);
    r.register_dumper(ser_layer_norm);
    r.register_primitive(
        "autoglm_layer_norm",
        &[
            x().named("input"),
            x().named("gamma"),
            x().named("beta"),
            TypeName::Scalar.named("recip"),
            TypeName::Scalar.named("eps"),
        ],
        &[("output", x())],
        de_layer_norm,
    );
    r.register_dumper(ser_linear_i8);
    r.register_primitive(
        "autoglm_linear_i8",
        &[
            x().named("q"),
            x().named("zero_point"),
            x().named("scale"),
            TypeName::Integer.tensor().named("packed"),
            TypeName::Integer.tensor().named("colsum"),
            TypeName::Integer.named("k"),
            TypeName::Integer.named("n"),
            TypeName::Integer.named("max_abs"),
            TypeName::String.named("tier"),
            x().named("bias").default(false),
        ],
        &[("output", x())],
        de_linear_i8,
    );
    r.register_dumper(ser_attention);
    r.register_primitive(
        "autoglm_attention",
        &[
            x().named("q"),
            x().named("k"),
            x().named("v"),
            x().named("bias"),
            TypeName::Scalar.named("scale"),
        ],
        &[("output", x())],
        de_attention,
    );
    r.register_dumper(ser_window_attention);
    r.register_primitive(
        "autoglm_window_attention",
        &[
            x().array().named("inputs"),
            TypeName::Scalar.named("scale"),
            TypeName::Integer.named("block"),
            TypeName::Integer.named("global"),
            TypeName::Logical.named("global_queries"),
            TypeName::Logical.named("token_major"),
            TypeName::Logical.named("token_major_out"),
        ],
        &[("output", x())],
        de_window_attention,
    );
    r.register_unit_element_wise("autoglm_gelu_exact", &GeluExact {});
    r
}

fn inputs(ast: &IntoAst, node: &TypedNode) -> Vec<Arc<RValue>> {
    node.inputs.iter().map(|i| ast.mapping[i].clone()).collect()
}

/// Our operators without parameters: their fragment's name and inputs.
trait Plain: TypedOp + Default {
    const NAME: &'static str;
    const INPUTS: &'static [&'static str];
}

impl Plain for SameShapeAdd {
    const NAME: &'static str = "autoglm_same_shape_add";
    const INPUTS: &'static [&'static str] = &["a", "b"];
}

impl Plain for KeyBiasAdd {
    const NAME: &'static str = "autoglm_key_bias_add";
    const INPUTS: &'static [&'static str] = &["scores", "bias"];
}

impl Plain for DynamicQuantize {
    const NAME: &'static str = "autoglm_dynamic_quantize";
    const INPUTS: &'static [&'static str] = &["input"];
}

fn ser_plain<O: Plain>(
    ast: &mut IntoAst,
    node: &TypedNode,
    _: &O,
) -> TractResult<Option<Arc<RValue>>> {
    Ok(Some(invocation(O::NAME, &inputs(ast, node), &[])))
}

fn de_plain<O: Plain>(b: &mut ModelBuilder, i: &ResolvedInvocation) -> TractResult<Value> {
    let mut wires = vec![];
    for name in O::INPUTS {
        wires.push(i.named_arg_as::<OutletId>(b, name)?);
    }
    b.wire(O::default(), &wires)
}

/// Registers a [`Plain`] operator: its inputs are f32 tensors, its outputs `outputs`.
fn register_plain<O: Plain>(r: &mut Registry, outputs: &[&str]) {
    let x = || TypeName::Scalar.tensor();
    let params: Vec<_> = O::INPUTS.iter().map(|name| x().named(name)).collect();
    let results: Vec<_> = outputs.iter().map(|name| (*name, x())).collect();
    r.register_dumper(ser_plain::<O>);
    r.register_primitive(O::NAME, &params, &results, de_plain::<O>);
}

fn f32_tensor(values: &[f32]) -> Arc<Tensor> {
    tract_ndarray::arr1(values).into_arc_tensor()
}

fn f32_values(t: &Tensor) -> TractResult<Arc<Vec<f32>>> {
    Ok(Arc::new(t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
}

fn ser_layer_norm(
    ast: &mut IntoAst,
    node: &TypedNode,
    op: &LayerNorm,
) -> TractResult<Option<Arc<RValue>>> {
    let input = ast.mapping[&node.inputs[0]].clone();
    let gamma = ast.konst_variable(format!("{}_gamma", node.name), &f32_tensor(&op.gamma))?;
    let beta = ast.konst_variable(format!("{}_beta", node.name), &f32_tensor(&op.beta))?;
    Ok(Some(invocation(
        "autoglm_layer_norm",
        &[input, gamma, beta],
        &[("recip", numeric(op.recip)), ("eps", numeric(op.eps))],
    )))
}

fn de_layer_norm(b: &mut ModelBuilder, i: &ResolvedInvocation) -> TractResult<Value> {
    let input: OutletId = i.named_arg_as(b, "input")?;
    let gamma: Arc<Tensor> = i.named_arg_as(b, "gamma")?;
    let beta: Arc<Tensor> = i.named_arg_as(b, "beta")?;
    let op = LayerNorm {
        recip: i.named_arg_as(b, "recip")?,
        eps: i.named_arg_as(b, "eps")?,
        gamma: f32_values(&gamma)?,
        beta: f32_values(&beta)?,
    };
    ensure!(
        op.gamma.len() == op.beta.len(),
        "autoglm_layer_norm: gamma and beta differ in length"
    );
    b.wire(op, &[input])
}

fn ser_linear_i8(
    ast: &mut IntoAst,
    node: &TypedNode,
    op: &LinearI8,
) -> TractResult<Option<Arc<RValue>>> {
    // The GELU is folded in after the cache (`qlinear::fuse_gelu`): a plan that has it is not
    // one this cache writes.
    ensure!(
        !op.gelu,
        "autoglm_linear_i8: a layer with its GELU folded in is not cached"
    );
    // The packed layout, not the weights: the key names the tier, and a load then skips the
    // packing (15-24 ms of an int8 load).
    let w = &op.weights;
    let (data, colsum) = w.parts();
    let data = Tensor::from_shape(&[data.len()], data)?.into_arc_tensor();
    let colsum = Tensor::from_shape(&[colsum.len()], colsum)?.into_arc_tensor();
    let data = ast.konst_variable(format!("{}_packed", node.name), &data)?;
    let colsum = ast.konst_variable(format!("{}_colsum", node.name), &colsum)?;
    let mut named = vec![
        ("k", numeric(w.k)),
        ("n", numeric(w.n)),
        ("max_abs", numeric(w.max_abs)),
        ("tier", string(w.tier.name())),
    ];
    if let Some(bias) = &op.bias {
        let bias = ast.konst_variable(format!("{}_bias", node.name), &f32_tensor(bias))?;
        named.push(("bias", (*bias).clone()));
    }
    let mut args = inputs(ast, node);
    args.extend([data, colsum]);
    Ok(Some(invocation("autoglm_linear_i8", &args, &named)))
}

fn de_linear_i8(b: &mut ModelBuilder, i: &ResolvedInvocation) -> TractResult<Value> {
    let q: OutletId = i.named_arg_as(b, "q")?;
    let zp: OutletId = i.named_arg_as(b, "zero_point")?;
    let scale: OutletId = i.named_arg_as(b, "scale")?;
    let data: Arc<Tensor> = i.named_arg_as(b, "packed")?;
    let colsum: Arc<Tensor> = i.named_arg_as(b, "colsum")?;
    let tier: String = i.named_arg_as(b, "tier")?;
    ensure!(
        tier == Tier::chosen().name(),
        "autoglm_linear_i8: weights packed for {tier}, this process runs {}",
        Tier::chosen().name()
    );
    let max_abs: usize = i.named_arg_as(b, "max_abs")?;
    let packed = PackedI8::from_parts(
        i.named_arg_as(b, "k")?,
        i.named_arg_as(b, "n")?,
        Tier::chosen(),
        data.try_as_plain_ram()?.as_slice::<i8>()?.to_vec(),
        colsum.try_as_plain_ram()?.as_slice::<i32>()?.to_vec(),
        u8::try_from(max_abs)?,
    )?;
    let n = packed.n;
    let bias = match i.optional_named_arg_as::<Arc<Tensor>>(b, "bias")? {
        Some(bias) => {
            ensure!(
                bias.len() == n,
                "autoglm_linear_i8: {} biases for n = {n}",
                bias.len()
            );
            Some(f32_values(&bias)?)
        }
        None => None,
    };
    let op = LinearI8 {
        weights: Arc::new(packed),
        bias,
        gelu: false,
    };
    b.wire(op, &[q, zp, scale])
}

fn ser_attention(
    ast: &mut IntoAst,
    node: &TypedNode,
    op: &Attention,
) -> TractResult<Option<Arc<RValue>>> {
    Ok(Some(invocation(
        "autoglm_attention",
        &inputs(ast, node),
        &[("scale", numeric(op.scale))],
    )))
}

fn de_attention(b: &mut ModelBuilder, i: &ResolvedInvocation) -> TractResult<Value> {
    let mut wires = vec![];
    for name in ["q", "k", "v", "bias"] {
        wires.push(i.named_arg_as::<OutletId>(b, name)?);
    }
    let op = Attention {
        scale: i.named_arg_as(b, "scale")?,
    };
    b.wire(op, &wires)
}

fn ser_window_attention(
    ast: &mut IntoAst,
    node: &TypedNode,
    op: &WindowAttention,
) -> TractResult<Option<Arc<RValue>>> {
    let wires = inputs(ast, node)
        .into_iter()
        .map(|w| (*w).clone())
        .collect::<Vec<_>>();
    Ok(Some(invocation(
        "autoglm_window_attention",
        &[Arc::new(tract_nnef::ser::array(wires))],
        &[
            ("scale", numeric(op.scale)),
            ("block", numeric(op.block)),
            ("global", numeric(op.global)),
            ("global_queries", logical(op.global_queries)),
            ("token_major", logical(op.token_major)),
            ("token_major_out", logical(op.token_major_out)),
        ],
    )))
}

fn de_window_attention(b: &mut ModelBuilder, i: &ResolvedInvocation) -> TractResult<Value> {
    let wires: TVec<OutletId> = i.named_arg_as(b, "inputs")?;
    let op = WindowAttention {
        scale: i.named_arg_as(b, "scale")?,
        block: i.named_arg_as(b, "block")?,
        global: i.named_arg_as(b, "global")?,
        global_queries: i.named_arg_as(b, "global_queries")?,
        token_major: i.named_arg_as(b, "token_major")?,
        token_major_out: i.named_arg_as(b, "token_major_out")?,
    };
    let expected = if op.global_queries { 6 } else { 5 };
    ensure!(
        wires.len() == expected,
        "autoglm_window_attention: {} inputs, expected {expected}",
        wires.len()
    );
    b.wire(op, &wires)
}

/// The cache directory, or `None` where it is off.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("AUTOGLM_PLAN_CACHE") {
        Some(v) if v == "off" || v.is_empty() => None,
        Some(v) => Some(v.into()),
        None => {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(base.join("autoglm-edge/plans"))
        }
    }
}

/// The cache file for a graph whose manifest digest is `digest`: named by the digest, then by
/// a hash of everything else the plan depends on.
pub(crate) fn path(dir: &Path, digest: &str, sequence_multiple: usize) -> PathBuf {
    // tract's version is in the lock file, and so in `SOURCE_HASH`.
    let what = format!(
        "{SOURCE_HASH} int8 {} f32 {} multiple {sequence_multiple}",
        Tier::chosen().name(),
        crate::ops::fgemm::Tier::chosen().name(),
    );
    let key = autoglm_package::sha256_hex(what.as_bytes());
    let digest: String = digest
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(24)
        .collect();
    dir.join(format!("{digest}-{}.plan", &key[..16]))
}

fn header(graph: &Graph) -> Vec<u8> {
    serde_json::json!({
        "inputs": graph.facts.inputs,
        "output": graph.facts.output,
        "positions": graph.facts.positions,
        "rewrites": graph.rewrites,
        "splittable": graph.splittable,
    })
    .to_string()
    .into_bytes()
}

/// A reader or writer that counts and checksums (CRC-32) the bytes that go through it.
struct Checksummed<T> {
    inner: T,
    hasher: crc32fast::Hasher,
    len: u64,
}

impl<T> Checksummed<T> {
    /// `inner`, its checksum starting from `hasher`'s.
    fn new(inner: T, hasher: crc32fast::Hasher) -> Self {
        Checksummed {
            inner,
            hasher,
            len: 0,
        }
    }

    fn count(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Checksummed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count(&buf[..n]);
        Ok(n)
    }
}

/// A new temporary file in `dir`, never one another writer (another process or thread sharing
/// the directory) holds: created exclusively, under a name from the clock and a counter.
fn temporary(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    loop {
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{clock:x}-{n}.tmp"));
        match std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            opened => return Ok((tmp, opened?)),
        }
    }
}

/// Writes `graph` to `file`: the magic, the header's length and the header, the NNEF
/// archive, then the archive's length and the CRC-32 of header and archive. Written to a
/// temporary file renamed into place when complete; the other files of the same graph (older
/// code's) are removed.
pub(crate) fn write(file: &Path, graph: &Graph) -> TractResult<()> {
    let dir = file
        .parent()
        .ok_or_else(|| format_err!("a cache file has no directory"))?;
    std::fs::create_dir_all(dir)?;
    let (tmp, f) = temporary(dir)?;
    let written = (|| -> TractResult<()> {
        let header = header(graph);
        let mut f = std::io::BufWriter::with_capacity(1 << 20, f);
        f.write_all(MAGIC)?;
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(&header)?;
        // The checksum covers the header too; the length, the archive alone.
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header);
        let summing = Checksummed::new(f, hasher);
        let mut summing = nnef().write_to_tar_with_config(&graph.model, summing, false, true)?;
        let (len, crc) = (summing.len, summing.hasher.finalize());
        summing.inner.write_all(&len.to_le_bytes())?;
        summing.inner.write_all(&crc.to_le_bytes())?;
        summing.inner.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, file)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    prune(dir, file);
    Ok(())
}

/// Removes the plans that will not be read again (older code's plans of the same graph), the
/// least recently used ones beyond [`MAX_FILES`], and temporary files an hour old (a write
/// that never finished).
fn prune(dir: &Path, kept: &Path) {
    let Some(name) = kept.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let Some((graph, _)) = name.split_once('-') else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut others = vec![];
    for entry in entries.flatten() {
        let other = entry.file_name().to_string_lossy().into_owned();
        if other.starts_with('.') && other.ends_with(".tmp") {
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if age.is_some_and(|a| a > std::time::Duration::from_secs(3600)) {
                let _ = std::fs::remove_file(entry.path());
            }
            continue;
        }
        if other == name || !other.ends_with(".plan") {
            continue;
        }
        if other.starts_with(&format!("{graph}-")) {
            let _ = std::fs::remove_file(entry.path());
        } else if let Ok(used) = entry.metadata().and_then(|m| m.modified()) {
            others.push((used, entry.path()));
        }
    }
    others.sort();
    let excess = others.len().saturating_sub(MAX_FILES - 1);
    for (_, path) in others.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
    }
}

/// The cached graph in `file`, if the file checks out.
pub(crate) fn read(file: &Path) -> TractResult<Graph> {
    let f = std::fs::File::open(file)?;
    let size = f.metadata()?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 16, f);
    let mut word = [0u8; 8];
    r.read_exact(&mut word)?;
    ensure!(&word == MAGIC, "not a plan cache file");
    r.read_exact(&mut word)?;
    let len = u64::from_le_bytes(word);
    // Magic, header length, header, archive, archive length and CRC-32.
    let archive = len
        .checked_add(28)
        .and_then(|fixed| size.checked_sub(fixed))
        .filter(|_| len <= MAX_HEADER)
        .ok_or_else(|| format_err!("a plan cache file of {size} bytes with a header of {len}"))?;
    let mut header = vec![0u8; len as usize];
    r.read_exact(&mut header)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    let header: serde_json::Value = serde_json::from_slice(&header)?;
    let str_of = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let facts = GraphFacts {
        inputs: header["inputs"]
            .as_array()
            .map(|a| a.iter().filter_map(str_of).collect()),
        output: str_of(&header["output"]),
        positions: header["positions"].as_u64().map(|p| p as usize),
        ..GraphFacts::default()
    };
    let rewrites = header["rewrites"].as_u64().unwrap_or(0) as usize;
    let splittable = header["splittable"]
        .as_bool()
        .ok_or_else(|| format_err!("a plan cache header without `splittable`"))?;
    // The checksum first, in a pass of its own: the NNEF reader allocates what the archive's
    // tensor headers declare, so it only ever reads an archive known to be the one written.
    let start = 16 + len;
    let mut hashing = Checksummed::new((&mut r).take(archive), hasher);
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    let crc = hashing.hasher.finalize();
    let mut trailer = [0u8; 12];
    r.read_exact(&mut trailer)?;
    ensure!(
        trailer[..8] == archive.to_le_bytes() && trailer[8..] == crc.to_le_bytes(),
        "a plan cache file whose archive does not match its checksum"
    );
    r.seek(std::io::SeekFrom::Start(start))?;
    let model = nnef().model_for_read(&mut (&mut r).take(archive))?;
    // Used now: the last to go when the cache is pruned.
    if let Ok(f) = std::fs::File::options().write(true).open(file) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    Ok(Graph {
        model,
        facts,
        rewrites,
        splittable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn touch(path: &Path, age_s: u64) {
        std::fs::write(path, b"x").expect("write");
        let f = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open");
        f.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .expect("set mtime");
    }

    #[test]
    fn prune_keeps_the_newest_plans_and_one_per_graph() {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        // Ten other graphs' plans, the oldest first to go; an older plan of the kept graph;
        // temporary files, one abandoned an hour ago; a file that is not a plan.
        for i in 0..10 {
            touch(&d.join(format!("g{i:02}-k.plan")), 100 + i);
        }
        touch(&d.join("kept-old.plan"), 5);
        touch(&d.join(".1-0.tmp"), 7200);
        touch(&d.join(".2-0.tmp"), 10);
        touch(&d.join("notes.txt"), 9999);
        let kept = d.join("kept-new.plan");
        touch(&kept, 0);
        prune(d, &kept);
        let mut left: Vec<String> = std::fs::read_dir(d)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want: Vec<String> = (0..MAX_FILES - 1)
            .map(|i| format!("g{i:02}-k.plan"))
            .collect();
        want.extend([".2-0.tmp", "kept-new.plan", "notes.txt"].map(String::from));
        want.sort();
        assert_eq!(left, want);
    }
}
