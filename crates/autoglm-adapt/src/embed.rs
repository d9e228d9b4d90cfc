//! Frozen-backbone embeddings, computed once: an in-memory cache keyed by text, and optionally
//! a file per backbone (keyed by the graph's sha256, so a different model never reuses them).

use crate::{AdaptError, Result};
use autoglm_package::{sha256_hex, FileError, ModelKind, Package};
use autoglm_runtime::{LoadOptions, Model};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Texts embedded per runtime call: big enough for full batches, small enough for progress.
const CHUNK: usize = 64;

#[derive(Debug)]
pub struct Embedder {
    package: Package,
    model: Model,
    backbone: String,
    dim: usize,
    cache: HashMap<String, Vec<f32>>,
    disk: Option<PathBuf>,
}

/// The sha256 of a package's graph file: identifies the backbone its embeddings come from.
pub fn backbone_sha256(package: &Package) -> Result<String> {
    let m = package.manifest();
    m.files
        .get(&m.graph.file)
        .map(|f| f.sha256.clone())
        .ok_or_else(|| AdaptError::Package(format!("graph file `{}` is not listed", m.graph.file)))
}

impl Embedder {
    /// Loads an embedding package; `cache_dir` keeps embeddings across runs.
    pub fn open(path: &Path, options: &LoadOptions, cache_dir: Option<&Path>) -> Result<Self> {
        Self::from_package(Package::open(path)?, options, cache_dir)
    }

    pub fn from_package(
        package: Package,
        options: &LoadOptions,
        cache_dir: Option<&Path>,
    ) -> Result<Self> {
        let m = package.manifest();
        if m.kind != ModelKind::Embedding {
            return Err(AdaptError::Package(format!(
                "the backbone must be an embedding package; this one is {:?}",
                m.kind
            )));
        }
        let backbone = backbone_sha256(&package)?;
        let dim = m.hidden_size;
        let model = Model::from_package(package.clone(), options)?;
        let mut e = Embedder {
            package,
            model,
            backbone,
            dim,
            cache: HashMap::new(),
            disk: None,
        };
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| FileError::Write {
                path: dir.into(),
                source,
            })?;
            let file = dir.join(format!("{}.embeddings", e.backbone));
            e.load_disk(&file)?;
            e.disk = Some(file);
        }
        Ok(e)
    }

    pub fn package(&self) -> &Package {
        &self.package
    }

    /// The loaded backbone (its backend, manifest, encoder).
    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn backbone(&self) -> &str {
        &self.backbone
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Record layout: 64 ASCII hex digits of the text's sha256, then `dim` little-endian f32.
    fn record_len(&self) -> usize {
        64 + 4 * self.dim
    }

    fn load_disk(&mut self, file: &Path) -> Result<()> {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(FileError::Read {
                    path: file.into(),
                    source,
                }
                .into())
            }
        };
        // A run killed mid-append leaves a partial last record: ignore it, it is written again.
        for rec in bytes.chunks_exact(self.record_len()) {
            let key = String::from_utf8_lossy(&rec[..64]).into_owned();
            let v = rec[64..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            self.cache.insert(key, v);
        }
        Ok(())
    }

    /// One embedding per text, in order; each distinct text runs through the backbone once.
    pub fn embed(
        &mut self,
        texts: &[&str],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let keys: Vec<String> = texts.iter().map(|t| sha256_hex(t.as_bytes())).collect();
        let mut missing: Vec<usize> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, k) in keys.iter().enumerate() {
            if !self.cache.contains_key(k) && seen.insert(k.as_str()) {
                missing.push(i);
            }
        }
        let total = missing.len();
        progress(0, total);
        for (n, chunk) in missing.chunks(CHUNK).enumerate() {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let vectors = self.model.embed(&batch)?;
            let mut record = Vec::new();
            for (&i, v) in chunk.iter().zip(vectors) {
                if v.len() != self.dim {
                    return Err(AdaptError::DimensionMismatch {
                        option: None,
                        what: "backbone output".into(),
                        expected: self.dim,
                        found: v.len(),
                    });
                }
                if self.disk.is_some() {
                    record.extend_from_slice(keys[i].as_bytes());
                    record.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                }
                self.cache.insert(keys[i].clone(), v);
            }
            if let Some(file) = &self.disk {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
                    .and_then(|mut f| f.write_all(&record))
                    .map_err(|source| FileError::Write {
                        path: file.clone(),
                        source,
                    })?;
            }
            progress((n * CHUNK + chunk.len()).min(total), total);
        }
        Ok(keys.iter().map(|k| self.cache[k].clone()).collect())
    }
}
