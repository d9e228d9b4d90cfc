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

#[doc(hidden)]
pub mod fuzzing;
mod manifest;
pub mod signature;
mod tasks;

pub use manifest::*;
pub use signature::{Signer, SigningKey, TrustedKeys, SIGNATURE_FILE};
pub use tasks::{is_task_name, Task, TaskSlice, MAX_TASK_NAME_BYTES};

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The file name of the manifest inside a package.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Packages larger than this are refused before they are read (a guard against a wrong path or
/// a hostile archive, not a model limit: BERT-large in fp32 is 1.3 GB).
pub const MAX_PACKAGE_BYTES: u64 = 4 << 30;

/// `manifest.json` larger than this is refused unread (a real one is a few KB; a multi-task
/// package's labels add little).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// A file or directory that could not be read or written, with its path: the I/O error of
/// [`PackageError`], and of the crates that read and write files beside packages
/// (autoglm-adapt's training data and embedding cache).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
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
}

/// Why a package could not be read, verified or written.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    File(#[from] FileError),
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
    #[error("{path} is {kind}, not a regular file: package files must be plain files")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("refusing to write the package to {path}: {reason}")]
    Target { path: PathBuf, reason: String },
    #[error("the package is not signed ({SIGNATURE_FILE} is missing), and trusted keys are configured: sign it with `autoglm sign`")]
    Unsigned,
    #[error("the package is signed by key {key_id}, which is not trusted (trusted: {trusted})")]
    UntrustedKey { key_id: String, trusted: String },
    #[error("the package's signature is not valid: {0}; the manifest was changed after signing, or the signature is damaged")]
    BadSignature(String),
    #[error("key: {0}")]
    Key(String),
}

/// Refuses anything at `path` but a regular file, without following a symlink and before
/// opening it (opening a FIFO would block). `name` is the package file's name, for messages.
fn regular_file(path: &Path, name: &str) -> Result<std::fs::Metadata, PackageError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && name != MANIFEST_FILE => {
            return Err(PackageError::Missing { name: name.into() })
        }
        Err(source) => {
            return Err(FileError::Read {
                path: path.into(),
                source,
            }
            .into())
        }
    };
    if !meta.is_file() {
        return Err(PackageError::NotRegular {
            path: path.into(),
            kind: file_kind(&meta.file_type()),
        });
    }
    Ok(meta)
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else {
        "a FIFO, socket or device"
    }
}

/// A signature file's text: UTF-8 within [`signature::MAX_SIGNATURE_BYTES`].
fn signature_text(bytes: Vec<u8>) -> Result<String, PackageError> {
    if bytes.len() as u64 > signature::MAX_SIGNATURE_BYTES {
        return Err(PackageError::BadSignature(format!(
            "{SIGNATURE_FILE} is over {} bytes",
            signature::MAX_SIGNATURE_BYTES
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| PackageError::BadSignature(format!("{SIGNATURE_FILE} is not text")))
}

/// Opens `path`, and refuses it unless what was opened is a regular file (the file checked
/// before opening could have been swapped since).
fn open_regular(path: &Path) -> Result<(std::fs::File, std::fs::Metadata), PackageError> {
    let read_err = |source| FileError::Read {
        path: path.into(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(PackageError::NotRegular {
            path: path.into(),
            kind: file_kind(&meta.file_type()),
        });
    }
    Ok((file, meta))
}

/// Reads at most `limit + 1` bytes of the regular file `path` (the caller compares the length
/// with what it expected). The buffer starts at the size the file system reports, never at a
/// size someone declared, and grows only as bytes really arrive.
fn read_regular(path: &Path, limit: u64, stat_len: u64) -> Result<Vec<u8>, PackageError> {
    let read_err = |source| FileError::Read {
        path: path.into(),
        source,
    };
    let (file, meta) = open_regular(path)?;
    let want = limit.saturating_add(1);
    let capacity = stat_len.min(meta.len()).min(want);
    // On a 32-bit target (the WASI component) a size may not fit: then let the buffer grow.
    let capacity = usize::try_from(capacity)
        .unwrap_or(0)
        .min(isize::MAX as usize);
    let mut bytes = Vec::with_capacity(capacity);
    file.take(want).read_to_end(&mut bytes).map_err(read_err)?;
    Ok(bytes)
}

/// One package file read as a stream ([`Package::open_streaming_graph`]). What it yields is
/// not verified until [`FileStream::finish`] returns `Ok`: read it, then call `finish` before
/// trusting anything made from it. It never yields more than one byte past the size the
/// manifest declares (which `finish` then refuses).
pub struct FileStream {
    name: String,
    /// The size the manifest declares (and that `finish` checks).
    size: u64,
    /// The most bytes it can yield as far as is known when opened: `size`, or the file's
    /// length then if smaller.
    hint: u64,
    source: Box<dyn Read + Send>,
    /// For a file not yet verified: its digest so far and the manifest's entry.
    check: Option<(Digester, FileEntry)>,
    read: u64,
    /// Where the bytes come from on disk, for [`FileStream::reopen`].
    origin: Option<Origin>,
    /// For bytes a package already verified: the digest they were verified against.
    verified_sha256: Option<String>,
}

/// A package file's place on disk: a file of a directory, or a member of a tar archive.
#[derive(Debug, Clone)]
enum Origin {
    File(PathBuf),
    Member(PathBuf, TarMember),
}

impl std::fmt::Debug for FileStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStream")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("read", &self.read)
            .field("verified_on_finish", &self.check.is_some())
            .finish()
    }
}

impl FileStream {
    /// The package file `path`, checked to be a regular file (as [`Package::open`] does) and
    /// read at most one byte past `entry.size`.
    fn of_file(name: &str, path: &Path, entry: FileEntry) -> Result<Self, PackageError> {
        let (file, meta) = open_regular(path)?;
        Ok(FileStream {
            name: name.into(),
            size: entry.size,
            hint: entry.size.min(meta.len()),
            source: Box::new(file.take(entry.size.saturating_add(1))),
            check: Some((Digester::new(), entry)),
            read: 0,
            origin: Some(Origin::File(path.into())),
            verified_sha256: None,
        })
    }

    /// The tar member `member` of the archive `path`, read through `file` (an open handle of
    /// it); never more bytes than the member has.
    fn of_member(
        path: &Path,
        mut file: std::fs::File,
        member: &TarMember,
        entry: FileEntry,
    ) -> Result<Self, PackageError> {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(member.start))
            .map_err(|source| FileError::Read {
                path: path.into(),
                source,
            })?;
        Ok(FileStream {
            name: member.name.clone(),
            size: entry.size,
            hint: entry.size.min(member.len),
            source: Box::new(file.take(member.len)),
            check: Some((Digester::new(), entry)),
            read: 0,
            origin: Some(Origin::Member(path.into(), member.clone())),
            verified_sha256: None,
        })
    }

    /// A stream over `bytes` that the caller vouches for (already verified, or not from a
    /// package): `finish` checks nothing but that they were all there.
    pub fn of_bytes(name: &str, bytes: Vec<u8>) -> Self {
        FileStream {
            name: name.into(),
            size: bytes.len() as u64,
            hint: bytes.len() as u64,
            source: Box::new(std::io::Cursor::new(bytes)),
            check: None,
            read: 0,
            origin: None,
            verified_sha256: None,
        }
    }

    /// A second stream over the same file from its start, checked against the same manifest
    /// entry: one reader may verify the file while another goes on with the first. `None` for
    /// a stream over bytes ([`FileStream::of_bytes`]).
    pub fn reopen(&self) -> Option<Result<FileStream, PackageError>> {
        let (_, entry) = self.check.as_ref()?;
        let entry = entry.clone();
        Some(match self.origin.as_ref()? {
            Origin::File(path) => FileStream::of_file(&self.name, path, entry),
            Origin::Member(path, member) => open_regular(path)
                .and_then(|(file, _)| FileStream::of_member(path, file, member, entry)),
        })
    }

    /// The file's name in the package.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sha256 (hex) the manifest declares for the file: the one [`FileStream::finish`]
    /// checks, or the one a package verified its bytes against ([`Package::take_stream`]);
    /// `None` for a stream over bytes the caller vouches for.
    pub fn declared_sha256(&self) -> Option<&str> {
        match &self.check {
            Some((_, entry)) => Some(entry.sha256.as_str()),
            None => self.verified_sha256.as_deref(),
        }
    }

    /// Its size as the manifest declares it: a reader may bound its buffers by it (the stream
    /// never yields more than one byte past it).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The most bytes the stream can yield, as far as was known when it was opened (the
    /// declared size, or the file's length then if smaller): what a reader may size a buffer by
    /// before the bytes arrive (a file that grew since then is refused by `finish`).
    pub fn capacity_hint(&self) -> u64 {
        self.hint
    }

    /// Reads what is left of the file, then checks its size and sha256 against the manifest.
    pub fn finish(mut self) -> Result<(), PackageError> {
        std::io::copy(&mut self, &mut std::io::sink()).map_err(|source| FileError::Read {
            path: self.name.clone().into(),
            source,
        })?;
        if self.read != self.size {
            return Err(PackageError::Size {
                name: self.name,
                expected: self.size,
                actual: self.read,
            });
        }
        if let Some((digester, entry)) = self.check {
            let actual = digester.finish().map_err(|source| FileError::Read {
                path: self.name.clone().into(),
                source,
            })?;
            if actual != entry.sha256 {
                return Err(PackageError::Digest {
                    name: self.name,
                    expected: entry.sha256,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// The whole file, verified.
    pub fn into_bytes(mut self) -> Result<Vec<u8>, PackageError> {
        let capacity = usize::try_from(self.hint)
            .unwrap_or(0)
            .min(isize::MAX as usize);
        let mut bytes = Vec::with_capacity(capacity);
        self.read_to_end(&mut bytes)
            .map_err(|source| FileError::Read {
                path: self.name.clone().into(),
                source,
            })?;
        self.finish()?;
        Ok(bytes)
    }
}

impl Read for FileStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // At most a chunk at a time: what the digest thread is handed is a copy of it.
        let len = buf.len().min(Digester::CHUNK);
        let n = self.source.read(&mut buf[..len])?;
        if let Some((digester, _)) = &mut self.check {
            digester.update(&buf[..n])?;
        }
        self.read += n as u64;
        Ok(n)
    }
}

/// The sha256 of what a [`FileStream`] yields, computed on a thread of its own where threads
/// exist, so that the reader's own work (reading the graph into tensors) overlaps it: on a
/// Zen 4 core with SHA extensions that takes 68-75 ms instead of 85-90 for MiniLM's 90 MB
/// graph, and where sha256 runs in software (a Raspberry Pi 4 has no crypto extensions:
/// ~200 MB/s) hashing alone would be most of the load.
///
/// The thread is handed copies of the chunks read, in buffers it hands back once hashed: at
/// most [`Digester::QUEUE`] chunks of [`Digester::CHUNK`] bytes wait at once (the reader waits
/// beyond that), and the same few buffers are reused, never freed by the other thread (an
/// allocator reclaims such frees late: the peak grew by tens of MB without this). Where no
/// thread can start, it hashes inline.
enum Digester {
    Inline(Sha256),
    Thread {
        chunks: std::sync::mpsc::SyncSender<Vec<u8>>,
        spare: std::sync::mpsc::Receiver<Vec<u8>>,
        worker: std::thread::JoinHandle<String>,
    },
}

impl Digester {
    const CHUNK: usize = 512 << 10;
    const QUEUE: usize = 4;

    fn new() -> Self {
        if cfg!(target_family = "wasm") {
            return Digester::Inline(Sha256::new());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(Self::QUEUE);
        let (back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let worker = std::thread::Builder::new()
            .name("package-digest".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for chunk in rx {
                    hasher.update(&chunk);
                    // The reader may be gone (it stops taking buffers back at its end).
                    let _ = back.send(chunk);
                }
                hex::encode(hasher.finalize())
            });
        match worker {
            Ok(worker) => Digester::Thread {
                chunks: tx,
                spare,
                worker,
            },
            Err(_) => Digester::Inline(Sha256::new()),
        }
    }

    fn gone() -> std::io::Error {
        std::io::Error::other("the thread computing the file's sha256 stopped")
    }

    fn update(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Digester::Inline(hasher) => hasher.update(bytes),
            Digester::Thread { chunks, spare, .. } => {
                let mut chunk = spare
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(Self::CHUNK));
                chunk.clear();
                chunk.extend_from_slice(bytes);
                chunks.send(chunk).map_err(|_| Self::gone())?;
            }
        }
        Ok(())
    }

    /// The lowercase hex digest of everything given to [`Digester::update`].
    fn finish(self) -> std::io::Result<String> {
        match self {
            Digester::Inline(hasher) => Ok(hex::encode(hasher.finalize())),
            Digester::Thread { chunks, worker, .. } => {
                drop(chunks);
                worker.join().map_err(|_| Self::gone())
            }
        }
    }
}

/// Files by name, as read from an archive.
type Members = BTreeMap<String, Vec<u8>>;

/// Where a member of a tar archive lies in it.
#[derive(Debug, Clone)]
struct TarMember {
    name: String,
    /// Offset of its data in the archive, and its size there.
    start: u64,
    len: u64,
}

/// The members of the tar archive `reader` (`total` bytes) that a package holds, by name; when
/// `stream_graph`, the manifest's graph file is not read but located (only if the manifest came
/// before it, as in archives we write).
///
/// Every member is bounded before it is read: by the bytes the archive really has left, and
/// once the manifest has been read, by the size it declares for that member; members the
/// manifest does not list are skipped unread. A member's data is read into a buffer of exactly
/// its size (growing one by doubling copied it into fresh pages each step: the CLI's peak RSS
/// on the embedded default was 199 MB, then 158 MB).
fn read_tar<R: Read + std::io::Seek>(
    reader: R,
    total: u64,
    stream_graph: bool,
) -> Result<(Members, Option<TarMember>), PackageError> {
    let archive_err = |e: std::io::Error| PackageError::Archive(e.to_string());
    let mut archive = tar::Archive::new(reader);
    let mut entries = Members::new();
    let mut manifest: Option<Manifest> = None;
    let mut streamed: Option<TarMember> = None;
    for entry in archive.entries_with_seek().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(archive_err)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let claimed = entry.size();
        let start = entry.raw_file_position();
        let left = total.saturating_sub(start);
        if claimed > left {
            return Err(PackageError::Archive(format!(
                "member `{name}` claims {claimed} bytes but the archive has {left} left: it is truncated or corrupt"
            )));
        }
        let limit = if name == MANIFEST_FILE {
            MAX_MANIFEST_BYTES
        } else if name == SIGNATURE_FILE {
            signature::MAX_SIGNATURE_BYTES
        } else if let Some(m) = &manifest {
            match m.files.get(&name) {
                Some(e) => e.size,
                None => continue,
            }
        } else {
            MAX_PACKAGE_BYTES
        };
        if claimed > limit {
            return Err(match (&manifest, name == MANIFEST_FILE) {
                (Some(_), false) => PackageError::Size {
                    name,
                    expected: limit,
                    actual: claimed,
                },
                _ => PackageError::Archive(format!(
                    "member `{name}` claims {claimed} bytes, over the {limit}-byte limit"
                )),
            });
        }
        if entries.contains_key(&name) || streamed.as_ref().is_some_and(|m| m.name == name) {
            return Err(PackageError::Archive(format!(
                "member `{name}` appears twice"
            )));
        }
        if stream_graph && manifest.as_ref().is_some_and(|m| m.graph.file == name) {
            streamed = Some(TarMember {
                name,
                start,
                len: claimed,
            });
            continue;
        }
        let len = usize::try_from(claimed).map_err(|_| {
            PackageError::Archive(format!("member `{name}` is too large for this machine"))
        })?;
        let mut data = Vec::with_capacity(len);
        (&mut entry)
            .take(claimed)
            .read_to_end(&mut data)
            .map_err(archive_err)?;
        if name == MANIFEST_FILE && manifest.is_none() {
            manifest = Some(Manifest::from_json(&data)?);
        }
        entries.insert(name, data);
    }
    Ok((entries, streamed))
}

/// Whether a package's files have their sha256 computed and compared as they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digests {
    Check,
    /// The caller verified these very bytes ([`Package::from_tar_prechecked`]).
    CheckedByCaller,
}

/// Checks a file's bytes against its manifest entry: its size, and its sha256 unless `digests`
/// says the caller checked it.
fn check_file(
    name: &str,
    entry: &FileEntry,
    bytes: &[u8],
    digests: Digests,
) -> Result<(), PackageError> {
    if bytes.len() as u64 != entry.size {
        return Err(PackageError::Size {
            name: name.to_string(),
            expected: entry.size,
            actual: bytes.len() as u64,
        });
    }
    if digests == Digests::Check {
        let actual = sha256_hex(bytes);
        if actual != entry.sha256 {
            return Err(PackageError::Digest {
                name: name.to_string(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
    }
    Ok(())
}

/// A verified package held in memory: its manifest and the bytes of every file it lists.
#[derive(Clone, PartialEq)]
pub struct Package {
    manifest: Manifest,
    /// `manifest.json` exactly as read (or as written for a new package): what a signature
    /// covers, and what is written back.
    manifest_bytes: Vec<u8>,
    files: BTreeMap<String, Vec<u8>>,
    /// The minisign signature of `manifest_bytes` ([`SIGNATURE_FILE`]), if the package has one.
    signature: Option<String>,
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
            .field("signed", &self.signature.is_some())
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
            manifest_bytes: manifest.to_json(),
            manifest,
            files: map,
            signature: None,
        })
    }

    /// Opens a package directory or `.tar` archive and verifies it.
    ///
    /// Only regular files are read: a FIFO or a device (or, inside a package directory, any
    /// symlink) is refused before it is opened, so a hostile package can neither block the
    /// reader nor feed it endless bytes. `path` itself may be a symlink (the user named it).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PackageError> {
        Self::open_streaming(path.as_ref(), false).map(|(package, _)| package)
    }

    /// [`Package::open`], leaving the graph file out when `stream_graph` (and the package's
    /// form allows it): it is then read, and verified, through the [`FileStream`] returned.
    fn open_streaming(
        path: &Path,
        stream_graph: bool,
    ) -> Result<(Self, Option<FileStream>), PackageError> {
        let meta = std::fs::metadata(path).map_err(|source| FileError::Read {
            path: path.into(),
            source,
        })?;
        if meta.is_dir() {
            return Self::open_dir_streaming(path, stream_graph);
        }
        if !meta.is_file() {
            return Err(PackageError::NotRegular {
                path: path.into(),
                kind: file_kind(&meta.file_type()),
            });
        }
        Self::open_tar(path, stream_graph)
    }

    /// Reads the `.tar` package `path` member by member from the file (never the whole archive
    /// at once), leaving the graph out when `stream_graph` and the manifest came first: it is
    /// then read (and verified) through the [`FileStream`] returned.
    fn open_tar(
        path: &Path,
        stream_graph: bool,
    ) -> Result<(Self, Option<FileStream>), PackageError> {
        let (file, meta) = open_regular(path)?;
        if meta.len() > MAX_PACKAGE_BYTES {
            return Err(PackageError::Archive(format!(
                "{} is {} bytes, over the {MAX_PACKAGE_BYTES} byte limit",
                path.display(),
                meta.len()
            )));
        }
        // A second handle for the graph's stream (where the platform has none, e.g. WASI, the
        // graph is read with the rest).
        let graph_handle = stream_graph.then(|| file.try_clone().ok()).flatten();
        let reader = std::io::BufReader::new(file);
        let (entries, streamed) = read_tar(reader, meta.len(), graph_handle.is_some())?;
        let (Some(member), Some(handle)) = (streamed, graph_handle) else {
            return Self::from_entries(entries).map(|package| (package, None));
        };
        let (package, entry) =
            Self::from_entries_except(entries, Some(&member.name), Digests::Check)?;
        let entry = entry.ok_or_else(|| PackageError::NotListed {
            name: member.name.clone(),
        })?;
        let stream = FileStream::of_member(path, handle, &member, entry)?;
        Ok((package, Some(stream)))
    }

    /// Reads the manifest, then each file it lists: at most one byte more than the manifest
    /// declares (so a file that grew is refused without reading all of it), into a buffer that
    /// grows as bytes arrive, never one sized from the manifest alone. The graph file, when
    /// `stream_graph`, is only checked to be a regular file now, and read (and verified) later
    /// through the [`FileStream`] returned.
    fn open_dir_streaming(
        dir: &Path,
        stream_graph: bool,
    ) -> Result<(Self, Option<FileStream>), PackageError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let meta = regular_file(&manifest_path, MANIFEST_FILE)?;
        let manifest_bytes = read_regular(&manifest_path, MAX_MANIFEST_BYTES, meta.len())?;
        if manifest_bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(PackageError::InvalidManifest(format!(
                "{MANIFEST_FILE} is over {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let manifest = Manifest::from_json(&manifest_bytes)?;
        let mut files = BTreeMap::new();
        let mut stream = None;
        for (name, entry) in &manifest.files {
            let path = dir.join(name);
            let meta = regular_file(&path, name)?;
            if stream_graph && *name == manifest.graph.file {
                stream = Some(FileStream::of_file(name, &path, entry.clone())?);
                continue;
            }
            let bytes = read_regular(&path, entry.size, meta.len())?;
            files.insert(name.clone(), bytes);
        }
        let signature_path = dir.join(SIGNATURE_FILE);
        let signature = match regular_file(&signature_path, SIGNATURE_FILE) {
            Err(PackageError::Missing { .. }) => None,
            Err(e) => return Err(e),
            Ok(meta) => Some(signature_text(read_regular(
                &signature_path,
                signature::MAX_SIGNATURE_BYTES,
                meta.len(),
            )?)?),
        };
        let skip = stream.as_ref().map(|s| s.name.as_str());
        let package = Self::verified(
            manifest,
            manifest_bytes,
            files,
            signature,
            skip,
            Digests::Check,
        )?;
        Ok((package, stream))
    }

    /// [`Package::open`] followed by [`Package::take_file`] of the graph, except that a package
    /// directory's graph file is not read into memory here: it is read as the returned stream
    /// is, and verified (size and sha256) by [`FileStream::finish`]. A loader can then parse the
    /// graph without holding the file's bytes and its own copy of the weights at once. (From a
    /// `.tar`, the stream reads the bytes already read and verified with the archive.)
    pub fn open_streaming_graph(
        path: impl AsRef<Path>,
    ) -> Result<(Self, FileStream), PackageError> {
        let (mut package, stream) = Self::open_streaming(path.as_ref(), true)?;
        let stream = match stream {
            Some(stream) => stream,
            None => {
                let graph = package.manifest.graph.file.clone();
                package.take_stream(&graph)?
            }
        };
        Ok((package, stream))
    }

    /// Reads a package from the bytes of a tar archive (what `write_tar` produces) and verifies it.
    ///
    /// Every member is bounded before it is read: by the bytes the archive really has left, and
    /// once the manifest has been read (it comes first in archives we write), by the size it
    /// declares for that member; members the manifest does not list are skipped unread.
    pub fn from_tar(bytes: &[u8]) -> Result<Self, PackageError> {
        let (entries, _) = read_tar(std::io::Cursor::new(bytes), bytes.len() as u64, false)?;
        Self::from_entries(entries)
    }

    /// Checks the bytes of a package `.tar` as [`Package::from_tar`] then [`Package::verify`]
    /// would (every file's size and sha256; the signature against `trusted`, when it names
    /// keys) without copying the graph: it is hashed where it lies in `bytes`. For a WASI host
    /// that verifies a package before handing these bytes to the component
    /// ([`Package::from_tar_prechecked`] there): a copy of the graph on the host raised the
    /// whole process's peak memory by its size.
    pub fn verify_tar(bytes: &[u8], trusted: &TrustedKeys) -> Result<Option<Signer>, PackageError> {
        let (entries, member) = read_tar(std::io::Cursor::new(bytes), bytes.len() as u64, true)?;
        let Some(member) = member else {
            return Self::from_entries(entries)?.verify(trusted);
        };
        let (package, entry) =
            Self::from_entries_except(entries, Some(&member.name), Digests::Check)?;
        let entry = entry.ok_or_else(|| PackageError::NotListed {
            name: member.name.clone(),
        })?;
        // `read_tar` bounded the member by the bytes left and by the manifest's size for it.
        let data = usize::try_from(member.start)
            .ok()
            .zip(usize::try_from(member.len).ok())
            .and_then(|(start, len)| bytes.get(start..start.checked_add(len)?))
            .ok_or_else(|| PackageError::Archive(format!("member `{}` is cut", member.name)))?;
        check_file(&member.name, &entry, data, Digests::Check)?;
        package.verify(trusted)
    }

    /// [`Package::from_tar`] for bytes whose digests the caller has just checked itself (with
    /// [`Package::verify_tar`], `from_tar` or `open`): everything is checked as there (the archive, the manifest, each
    /// file's presence and size, the signature's form) but the files' sha256, which is not
    /// computed again. For a WASI host that verifies a package natively, with the CPU's SHA
    /// instructions, and hands the very bytes it verified to the component, where sha256 runs
    /// on plain 32-bit arithmetic (~0.1 s for a 25 MB graph: a third of a cold start). Bytes
    /// that were not so checked must go through `from_tar`.
    pub fn from_tar_prechecked(bytes: &[u8]) -> Result<Self, PackageError> {
        let (entries, _) = read_tar(std::io::Cursor::new(bytes), bytes.len() as u64, false)?;
        Self::from_entries_except(entries, None, Digests::CheckedByCaller).map(|(p, _)| p)
    }

    /// Builds a package from named file contents (manifest included) and verifies it.
    pub fn from_entries(entries: BTreeMap<String, Vec<u8>>) -> Result<Self, PackageError> {
        Self::from_entries_except(entries, None, Digests::Check).map(|(package, _)| package)
    }

    /// [`Package::from_entries`] without the file `streamed`, if named (it is verified as it
    /// is read instead), and that file's manifest entry.
    fn from_entries_except(
        mut entries: BTreeMap<String, Vec<u8>>,
        streamed: Option<&str>,
        digests: Digests,
    ) -> Result<(Self, Option<FileEntry>), PackageError> {
        let manifest_bytes =
            entries
                .remove(MANIFEST_FILE)
                .ok_or_else(|| PackageError::Missing {
                    name: MANIFEST_FILE.into(),
                })?;
        let manifest = Manifest::from_json(&manifest_bytes)?;
        let entry = streamed
            .map(|name| {
                manifest
                    .files
                    .get(name)
                    .cloned()
                    .ok_or_else(|| PackageError::NotListed { name: name.into() })
            })
            .transpose()?;
        let signature = entries
            .remove(SIGNATURE_FILE)
            .map(signature_text)
            .transpose()?;
        let files = manifest
            .files
            .keys()
            .filter(|name| Some(name.as_str()) != streamed)
            .map(|name| {
                entries
                    .remove(name)
                    .map(|b| (name.clone(), b))
                    .ok_or_else(|| PackageError::Missing { name: name.clone() })
            })
            .collect::<Result<_, _>>()?;
        let package = Self::verified(
            manifest,
            manifest_bytes,
            files,
            signature,
            streamed,
            digests,
        )?;
        Ok((package, entry))
    }

    /// Checks every file the manifest lists but `streamed` (verified as it is read instead):
    /// its size, and its sha256 unless `digests` says the caller checked them.
    fn verified(
        manifest: Manifest,
        manifest_bytes: Vec<u8>,
        files: BTreeMap<String, Vec<u8>>,
        signature: Option<String>,
        streamed: Option<&str>,
        digests: Digests,
    ) -> Result<Self, PackageError> {
        for (name, entry) in &manifest.files {
            if Some(name.as_str()) == streamed {
                continue;
            }
            let bytes = files
                .get(name)
                .ok_or_else(|| PackageError::Missing { name: name.clone() })?;
            check_file(name, entry, bytes, digests)?;
        }
        Ok(Package {
            manifest,
            manifest_bytes,
            files,
            signature,
        })
    }

    /// `manifest.json`'s bytes, exactly as the package holds them (what a signature covers).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The package's minisign signature file, if it is signed.
    pub fn signature(&self) -> Option<&str> {
        self.signature.as_deref()
    }

    /// Signs the manifest with `key` (replacing any earlier signature); `trusted_comment` is
    /// signed along and shown by `autoglm inspect` and `minisign -V`.
    pub fn sign(&mut self, key: &SigningKey, trusted_comment: &str) -> Result<(), PackageError> {
        self.signature = Some(key.sign(&self.manifest_bytes, trusted_comment)?);
        Ok(())
    }

    /// Checks the signature against `trusted`: `Ok(None)` when no key is trusted (digests
    /// only), the signer when one of the keys signed this manifest, else an error (unsigned,
    /// signed by another key, or a signature that does not match the manifest).
    pub fn verify(&self, trusted: &TrustedKeys) -> Result<Option<Signer>, PackageError> {
        if trusted.is_empty() {
            return Ok(None);
        }
        let signature = self.signature.as_deref().ok_or(PackageError::Unsigned)?;
        trusted.verify(&self.manifest_bytes, signature).map(Some)
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

    /// [`Package::take_file`] as a [`FileStream`] (over bytes the package already verified).
    pub fn take_stream(&mut self, name: &str) -> Result<FileStream, PackageError> {
        let bytes = self.take_file(name)?;
        let mut stream = FileStream::of_bytes(name, bytes);
        stream.verified_sha256 = self.manifest.files.get(name).map(|e| e.sha256.clone());
        Ok(stream)
    }

    /// Names and sizes of the files, in name order.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Writes the package into directory `dir` atomically: into a sibling temporary directory
    /// first, then renamed to `dir`. Only an empty directory or a package directory (see
    /// [`check_write_target`]) is replaced; the old one is moved aside until the new one is in
    /// place, and put back if that fails. Nothing temporary is left behind on any error.
    pub fn write_dir(&self, dir: &Path) -> Result<(), PackageError> {
        check_write_target(dir)?;
        let parent = parent_of(dir);
        std::fs::create_dir_all(parent).map_err(|source| FileError::Write {
            path: parent.into(),
            source,
        })?;
        let tmp = TempPath::create(dir, "tmp", true)?;
        let write = |path: PathBuf, bytes: &[u8]| {
            std::fs::write(&path, bytes).map_err(|source| FileError::Write { path, source })
        };
        for (name, bytes) in &self.files {
            write(tmp.path.join(name), bytes)?;
        }
        write(tmp.path.join(MANIFEST_FILE), &self.manifest_bytes)?;
        if let Some(signature) = &self.signature {
            write(tmp.path.join(SIGNATURE_FILE), signature.as_bytes())?;
        }
        let old = if std::fs::symlink_metadata(dir).is_ok() {
            // A name of our own for the old package; reserved by creating it, then replaced.
            let old = TempPath::create(dir, "old", true)?;
            std::fs::remove_dir(&old.path).map_err(|source| FileError::Write {
                path: old.path.clone(),
                source,
            })?;
            std::fs::rename(dir, &old.path).map_err(|source| FileError::Write {
                path: dir.into(),
                source,
            })?;
            Some(old)
        } else {
            None
        };
        if let Err(source) = std::fs::rename(&tmp.path, dir) {
            if let Some(mut old) = old {
                // Put the old package back; if even that fails, keep it where it is and say so.
                if std::fs::rename(&old.path, dir).is_err() {
                    old.keep();
                    return Err(FileError::Write {
                        path: dir.into(),
                        source: std::io::Error::other(format!(
                            "{source}; the previous package is kept at {}",
                            old.path.display()
                        )),
                    }
                    .into());
                }
            }
            return Err(FileError::Write {
                path: dir.into(),
                source,
            }
            .into());
        }
        tmp.into_kept();
        drop(old); // the replaced package, now removed
        Ok(())
    }

    /// The package as one deterministic tar archive (sorted names, zero mtimes and ids).
    pub fn to_tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let signature = self
            .signature
            .as_ref()
            .map(|s| (SIGNATURE_FILE, s.as_bytes()));
        let all = std::iter::once((MANIFEST_FILE, self.manifest_bytes.as_slice()))
            .chain(signature)
            .chain(self.files());
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

    /// Writes the package to `path`: a `.tar` archive when the name ends in `.tar`, else a
    /// directory. Either way the write is atomic, replaces only a package (see
    /// [`check_write_target`]) and leaves nothing temporary behind on an error.
    pub fn write(&self, path: &Path) -> Result<(), PackageError> {
        if !is_tar_path(path) {
            return self.write_dir(path);
        }
        check_write_target(path)?;
        let parent = parent_of(path);
        std::fs::create_dir_all(parent).map_err(|source| FileError::Write {
            path: parent.into(),
            source,
        })?;
        let tmp = TempPath::create(path, "tmp", false)?;
        std::fs::write(&tmp.path, self.to_tar()).map_err(|source| FileError::Write {
            path: tmp.path.clone(),
            source,
        })?;
        std::fs::rename(&tmp.path, path).map_err(|source| FileError::Write {
            path: path.into(),
            source,
        })?;
        tmp.into_kept();
        Ok(())
    }
}

fn is_tar_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tar")
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether a package may be written to `path` without losing anything that is there: nothing,
/// an empty directory, a package directory we wrote (its `manifest.json` parses and every entry
/// is the manifest or a plain file it lists), or for a `.tar` path, a package archive (its
/// manifest member parses). Anything else (a non-empty directory of other files, a regular file
/// at a directory path, a symlink, a device) is refused with the reason. Called by
/// [`Package::write`]; callers may call it first to fail before expensive work.
pub fn check_write_target(path: &Path) -> Result<(), PackageError> {
    let refuse = |reason: String| {
        Err(PackageError::Target {
            path: path.into(),
            reason,
        })
    };
    if path.file_name().is_none() {
        return refuse("not a file or directory name".into());
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(FileError::Read {
                path: path.into(),
                source,
            }
            .into())
        }
    };
    let kind = file_kind(&meta.file_type());
    if is_tar_path(path) {
        if !meta.is_file() {
            return refuse(format!("it is {kind}, not a package archive"));
        }
        return match read_tar_manifest(path) {
            Ok(_) => Ok(()),
            Err(why) => refuse(format!(
                "the file there is not a package archive ({why}); remove it first to replace it"
            )),
        };
    }
    if meta.is_file() {
        return refuse(
            "a regular file is there; a package directory needs the name (end it in .tar for an archive)"
                .into(),
        );
    }
    if !meta.is_dir() {
        return refuse(format!("it is {kind}, not a directory"));
    }
    let read_err = |source| FileError::Read {
        path: path.into(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        names.push((entry.file_name(), entry.file_type().map_err(read_err)?));
    }
    if names.is_empty() {
        return Ok(());
    }
    let manifest_path = path.join(MANIFEST_FILE);
    let manifest = std::fs::symlink_metadata(&manifest_path)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .and_then(|m| read_regular(&manifest_path, MAX_MANIFEST_BYTES, m.len()).ok())
        .and_then(|bytes| Manifest::from_json(&bytes).ok());
    let Some(manifest) = manifest else {
        return refuse(format!(
            "it is a non-empty directory without a valid {MANIFEST_FILE}, not a package: nothing was changed"
        ));
    };
    for (name, file_type) in names {
        let listed = name.to_str().is_some_and(|n| {
            n == MANIFEST_FILE || n == SIGNATURE_FILE || manifest.files.contains_key(n)
        });
        if !listed || !file_type.is_file() {
            return refuse(format!(
                "the package directory also holds `{}`, which is not one of its files: nothing was changed",
                name.to_string_lossy()
            ));
        }
    }
    Ok(())
}

/// The manifest of the package archive at `path`, read without reading the other members.
fn read_tar_manifest(path: &Path) -> Result<Manifest, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries_with_seek().map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let is_manifest = entry
            .path()
            .is_ok_and(|p| p.to_string_lossy().trim_start_matches("./") == MANIFEST_FILE);
        if is_manifest && entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            entry
                .take(MAX_MANIFEST_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| e.to_string())?;
            return Manifest::from_json(&bytes).map_err(|e| e.to_string());
        }
    }
    Err(format!("no {MANIFEST_FILE}"))
}

/// A temporary sibling of a package being written (`.NAME.tmp-PID-N`), removed when dropped
/// unless kept: every error path of a write cleans up after itself.
#[derive(Debug)]
struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    /// Creates a new, empty directory (or file) next to `target`, with a name no one else uses.
    fn create(target: &Path, what: &str, dir: bool) -> Result<Self, PackageError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let leaf = target
            .file_name()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = parent_of(target);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!(".{leaf}.{what}-{}-{n}", std::process::id()));
            let made = if dir {
                std::fs::create_dir(&path)
            } else {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map(drop)
            };
            match made {
                Ok(()) => return Ok(TempPath { path, keep: false }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1 << 20 => {}
                Err(source) => return Err(FileError::Write { path, source }.into()),
            }
        }
    }

    fn keep(&mut self) {
        self.keep = true;
    }

    /// The path is now used for good (renamed into place): nothing to remove.
    fn into_kept(mut self) {
        self.keep();
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&self.path);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
            Err(_) => {}
        }
    }
}

/// File names in a package are plain relative names: no directories, no `..`, nothing hidden.
fn check_file_name(name: &str) -> Result<(), PackageError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name != MANIFEST_FILE
        && name != SIGNATURE_FILE
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
