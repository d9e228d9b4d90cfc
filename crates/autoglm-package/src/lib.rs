//! The AutoGLM Edge **model package**: a directory (or one `.tar` of it) holding an ONNX graph,
//! a `tokenizer.json` and a `manifest.json` that describes the model and lists the sha256 of
//! every other file.
//!
//! Loading a package verifies every digest and size; a missing, truncated or tampered file is
//! refused with a [`PackageError`] that names it. Writing a package is deterministic: the same
//! manifest and files give the same bytes, in a directory or in a tar archive.
//!
//! ```
//! use autoglm_package::{Manifest, Package};
//! # fn main() -> Result<(), autoglm_package::PackageError> {
//! let dir = tempfile::tempdir().unwrap();
//! let manifest = Manifest::example();
//! let files = vec![("model.onnx".to_string(), b"onnx bytes".to_vec()),
//!                  ("tokenizer.json".to_string(), b"{}".to_vec())];
//! Package::new(manifest, files)?.write_dir(&dir.path().join("pkg"))?;
//! let pkg = Package::open(dir.path().join("pkg"))?;
//! assert_eq!(pkg.file("model.onnx")?, b"onnx bytes");
//! # Ok(()) }
//! ```

mod manifest;

pub use manifest::*;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The file name of the manifest inside a package.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Packages larger than this are refused before they are read (a guard against a wrong path or
/// a hostile archive, not a model limit: BERT-large in fp32 is 1.3 GB).
pub const MAX_PACKAGE_BYTES: u64 = 4 << 30;

/// Why a package could not be read, verified or written.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{MANIFEST_FILE} is not a valid manifest: {0}")]
    Manifest(#[source] serde_json::Error),
    #[error("package schema version {found} is not supported (this build reads version {SCHEMA_VERSION})")]
    SchemaVersion { found: u32 },
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("package file `{name}` is listed in the manifest but missing from the package")]
    Missing { name: String },
    #[error("package file `{name}` has {actual} bytes but the manifest says {expected}: the package is truncated or corrupt")]
    Size {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("package file `{name}` fails its sha256 check (manifest {expected}, file {actual}): the package is corrupt or was tampered with")]
    Digest {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("package file `{name}` is not listed in the manifest")]
    NotListed { name: String },
    #[error("not a valid package archive: {0}")]
    Archive(String),
}

/// A verified package held in memory: its manifest and the bytes of every file it lists.
#[derive(Clone, PartialEq)]
pub struct Package {
    manifest: Manifest,
    files: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: BTreeMap<&str, usize> = self
            .files
            .iter()
            .map(|(k, v)| (k.as_str(), v.len()))
            .collect();
        f.debug_struct("Package")
            .field("manifest", &self.manifest)
            .field("files", &sizes)
            .finish()
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Package {
    /// Builds a package from a manifest and its files: fills in the manifest's file list (sizes
    /// and digests) and checks the manifest.
    pub fn new(
        mut manifest: Manifest,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Self, PackageError> {
        let mut map = BTreeMap::new();
        manifest.files.clear();
        for (name, bytes) in files {
            check_file_name(&name)?;
            manifest.files.insert(
                name.clone(),
                FileEntry {
                    size: bytes.len() as u64,
                    sha256: sha256_hex(&bytes),
                },
            );
            map.insert(name, bytes);
        }
        manifest.validate()?;
        Ok(Package {
            manifest,
            files: map,
        })
    }

    /// Opens a package directory or `.tar` archive and verifies it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PackageError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|source| PackageError::Read {
            path: path.into(),
            source,
        })?;
        if meta.is_dir() {
            Self::open_dir(path)
        } else {
            if meta.len() > MAX_PACKAGE_BYTES {
                return Err(PackageError::Archive(format!(
                    "{} is {} bytes, over the {MAX_PACKAGE_BYTES} byte limit",
                    path.display(),
                    meta.len()
                )));
            }
            let bytes = std::fs::read(path).map_err(|source| PackageError::Read {
                path: path.into(),
                source,
            })?;
            Self::from_tar(&bytes)
        }
    }

    fn open_dir(dir: &Path) -> Result<Self, PackageError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_bytes =
            std::fs::read(&manifest_path).map_err(|source| PackageError::Read {
                path: manifest_path,
                source,
            })?;
        let manifest = Manifest::from_json(&manifest_bytes)?;
        let mut files = BTreeMap::new();
        for (name, entry) in &manifest.files {
            let path = dir.join(name);
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(PackageError::Missing { name: name.clone() })
                }
                Err(source) => return Err(PackageError::Read { path, source }),
            };
            // Read at most one byte more than announced: a file that grew is refused without
            // reading all of it.
            let mut bytes = Vec::with_capacity(entry.size as usize);
            file.take(entry.size + 1)
                .read_to_end(&mut bytes)
                .map_err(|source| PackageError::Read {
                    path: path.clone(),
                    source,
                })?;
            files.insert(name.clone(), bytes);
        }
        Self::verified(manifest, files)
    }

    /// Reads a package from the bytes of a tar archive (what `write_tar` produces) and verifies it.
    pub fn from_tar(bytes: &[u8]) -> Result<Self, PackageError> {
        let mut archive = tar::Archive::new(bytes);
        let mut entries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let iter = archive
            .entries()
            .map_err(|e| PackageError::Archive(e.to_string()))?;
        for entry in iter {
            let mut entry = entry.map_err(|e| PackageError::Archive(e.to_string()))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()
                .map_err(|e| PackageError::Archive(e.to_string()))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| PackageError::Archive(format!("{name}: {e}")))?;
            entries.insert(name, data);
        }
        Self::from_entries(entries)
    }

    /// Builds a package from named file contents (manifest included) and verifies it.
    pub fn from_entries(mut entries: BTreeMap<String, Vec<u8>>) -> Result<Self, PackageError> {
        let manifest_bytes =
            entries
                .remove(MANIFEST_FILE)
                .ok_or_else(|| PackageError::Missing {
                    name: MANIFEST_FILE.into(),
                })?;
        let manifest = Manifest::from_json(&manifest_bytes)?;
        let files = manifest
            .files
            .keys()
            .map(|name| {
                entries
                    .remove(name)
                    .map(|b| (name.clone(), b))
                    .ok_or_else(|| PackageError::Missing { name: name.clone() })
            })
            .collect::<Result<_, _>>()?;
        Self::verified(manifest, files)
    }

    fn verified(
        manifest: Manifest,
        files: BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, PackageError> {
        for (name, entry) in &manifest.files {
            let bytes = files
                .get(name)
                .ok_or_else(|| PackageError::Missing { name: name.clone() })?;
            if bytes.len() as u64 != entry.size {
                return Err(PackageError::Size {
                    name: name.clone(),
                    expected: entry.size,
                    actual: bytes.len() as u64,
                });
            }
            let actual = sha256_hex(bytes);
            if actual != entry.sha256 {
                return Err(PackageError::Digest {
                    name: name.clone(),
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(Package { manifest, files })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The verified bytes of a file the manifest lists.
    pub fn file(&self, name: &str) -> Result<&[u8], PackageError> {
        self.files
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| PackageError::NotListed { name: name.into() })
    }

    /// Takes a file's bytes out of the package (to hand them to a loader without a copy).
    pub fn take_file(&mut self, name: &str) -> Result<Vec<u8>, PackageError> {
        self.files
            .remove(name)
            .ok_or_else(|| PackageError::NotListed { name: name.into() })
    }

    /// Names and sizes of the files, in name order.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Writes the package into directory `dir` atomically: into a sibling temporary directory
    /// first, then renamed over `dir` (an existing package there is replaced).
    pub fn write_dir(&self, dir: &Path) -> Result<(), PackageError> {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|source| PackageError::Write {
            path: parent.into(),
            source,
        })?;
        let leaf = dir.file_name().ok_or_else(|| {
            PackageError::InvalidManifest(format!("{} is not a directory path", dir.display()))
        })?;
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            leaf.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        let write = |path: PathBuf, bytes: &[u8]| {
            std::fs::write(&path, bytes).map_err(|source| PackageError::Write { path, source })
        };
        std::fs::create_dir(&tmp).map_err(|source| PackageError::Write {
            path: tmp.clone(),
            source,
        })?;
        for (name, bytes) in &self.files {
            write(tmp.join(name), bytes)?;
        }
        write(tmp.join(MANIFEST_FILE), &self.manifest.to_json())?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|source| PackageError::Write {
                path: dir.into(),
                source,
            })?;
        }
        std::fs::rename(&tmp, dir).map_err(|source| PackageError::Write {
            path: dir.into(),
            source,
        })
    }

    /// The package as one deterministic tar archive (sorted names, zero mtimes and ids).
    pub fn to_tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let manifest = self.manifest.to_json();
        let all = std::iter::once((MANIFEST_FILE, manifest.as_slice())).chain(self.files());
        for (name, bytes) in all {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            // Names were checked (short, relative, plain) when the package was built.
            builder
                .append_data(&mut header, name, bytes)
                .expect("writing a tar into memory cannot fail");
        }
        builder
            .into_inner()
            .expect("writing a tar into memory cannot fail")
    }

    /// Writes the package to `path`: a `.tar` archive when the name ends in `.tar`, else a directory.
    pub fn write(&self, path: &Path) -> Result<(), PackageError> {
        if path.extension().is_some_and(|e| e == "tar") {
            let tmp = path.with_extension(format!("tar.tmp-{}", std::process::id()));
            std::fs::write(&tmp, self.to_tar()).map_err(|source| PackageError::Write {
                path: tmp.clone(),
                source,
            })?;
            std::fs::rename(&tmp, path).map_err(|source| PackageError::Write {
                path: path.into(),
                source,
            })
        } else {
            self.write_dir(path)
        }
    }
}

/// File names in a package are plain relative names: no directories, no `..`, nothing hidden.
fn check_file_name(name: &str) -> Result<(), PackageError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name != MANIFEST_FILE
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(PackageError::InvalidManifest(format!(
            "file name `{name}` is not allowed in a package (plain names of [A-Za-z0-9._-] only)"
        )))
    }
}

#[cfg(test)]
mod tests;
