//! The models a service holds: one slot per name, each with the package it serves now, its
//! queue and batch worker, and the reload that replaces the package without stopping requests.

use crate::batcher::{self, BatchConfig, Queue};
use crate::error::ServeError;
use crate::loaded::{load, Loaded};
use crate::metrics::{Metrics, ModelInfo, ReloadResult};
use arc_swap::ArcSwap;
use autoglm_runtime::LoadOptions;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One served model name.
#[derive(Debug)]
pub struct ModelSlot {
    pub name: String,
    pub path: PathBuf,
    current: Arc<ArcSwap<Loaded>>,
    pub(crate) queue: Queue,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    options: LoadOptions,
    metrics: Arc<Metrics>,
    /// Held while a reload loads, so a SIGHUP during a poll-triggered reload waits for it
    /// instead of loading the same package twice at once (memory: two models at most).
    reloading: Mutex<()>,
    /// The package's fingerprint when it was last loaded or tried.
    fingerprint: Mutex<Option<String>>,
    info: Mutex<Option<ModelInfo>>,
}

impl ModelSlot {
    pub(crate) fn start(
        name: String,
        path: PathBuf,
        options: LoadOptions,
        batch: BatchConfig,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServeError> {
        let fingerprint = fingerprint(&path);
        let loaded = load(&name, &path, &options)?;
        let current = Arc::new(ArcSwap::from_pointee(loaded));
        let (queue, worker) =
            batcher::start(&name, current.clone(), capacity, batch, metrics.clone()).map_err(
                |source| ServeError::Worker {
                    name: name.clone(),
                    source,
                },
            )?;
        let slot = ModelSlot {
            name,
            path,
            current,
            queue,
            worker: Mutex::new(Some(worker)),
            options,
            metrics,
            reloading: Mutex::new(()),
            fingerprint: Mutex::new(Some(fingerprint)),
            info: Mutex::new(None),
        };
        slot.publish(&slot.current());
        tracing::info!(
            model = %slot.name,
            path = %slot.path.display(),
            version = %slot.current().version,
            kind = ?slot.current().kind(),
            load_seconds = slot.current().load_seconds,
            "model loaded"
        );
        Ok(slot)
    }

    /// The package serving now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Texts waiting in this model's queue.
    pub fn queued(&self) -> usize {
        self.queue.queued()
    }

    /// Whether the package on disk differs from the one last loaded or tried.
    pub fn changed_on_disk(&self) -> bool {
        let now = fingerprint(&self.path);
        let last = self.fingerprint.lock().unwrap_or_else(|p| p.into_inner());
        last.as_deref() != Some(now.as_str())
    }

    /// Loads the package again and, if it loads, verifies and runs, swaps it in. Blocking (it
    /// loads a model): call it off the async executor. On failure the old package keeps serving.
    pub fn reload(&self, reason: &str) -> Result<(), ServeError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        // Taken before loading: a package that changes while it loads differs from this and is
        // loaded again on the next poll.
        let seen = fingerprint(&self.path);
        // A panic while loading (a graph that trips an assertion in the runtime) is a failed
        // reload like any other: counted, logged, the old package serving. Nothing shared is
        // touched until the load returns, so the state seen after a panic is the one before.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            load(&self.name, &self.path, &self.options)
        }))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(ServeError::Check {
                name: self.name.clone(),
                path: self.path.clone(),
                message: format!("loading panicked: {message}"),
            })
        });
        *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
        let label = |result: &str| ReloadResult {
            model: self.name.clone(),
            result: result.to_owned(),
        };
        match result {
            Ok(loaded) => {
                let old = self.current();
                let loaded = Arc::new(loaded);
                self.current.store(loaded.clone());
                self.publish(&loaded);
                self.metrics.reloads.get_or_create(&label("success")).inc();
                tracing::info!(
                    model = %self.name,
                    reason,
                    old_version = %old.version,
                    version = %loaded.version,
                    load_seconds = loaded.load_seconds,
                    "model reloaded"
                );
                Ok(())
            }
            Err(e) => {
                self.metrics.reloads.get_or_create(&label("failure")).inc();
                tracing::error!(
                    model = %self.name,
                    reason,
                    version = %self.current().version,
                    error = %e,
                    "reload failed; still serving the previous package"
                );
                Err(e)
            }
        }
    }

    fn publish(&self, loaded: &Loaded) {
        let m = loaded.model.manifest();
        let info = ModelInfo {
            model: self.name.clone(),
            kind: format!("{:?}", m.kind).to_lowercase(),
            version: loaded.version.clone(),
            base: m.provenance.base_model.clone(),
            adapter: m.provenance.adapter.clone().unwrap_or_default(),
            backend: loaded.model.backend_name().to_owned(),
        };
        let mut last = self.info.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = last.take() {
            self.metrics.model_info.remove(&old);
        }
        self.metrics.model_info.get_or_create(&info).set(1);
        *last = Some(info);
        self.metrics
            .load_seconds
            .get_or_create(&Metrics::model(&self.name))
            .set(loaded.load_seconds);
    }

    /// Refuses new work and waits until the worker has run what was queued.
    pub(crate) fn drain(&self) {
        self.queue.close();
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = worker {
            if worker.join().is_err() {
                tracing::error!(model = %self.name, "batch worker panicked");
            }
        }
    }
}

/// The manifest's sha256, or why not. Only a regular file of at most the package reader's
/// manifest limit is read: opening a FIFO blocks until a writer comes, and this runs on every
/// poll, ahead of every reload, so one planted FIFO would stop all reloads for good; and a huge
/// file would be read whole into memory every few seconds.
fn manifest_digest(path: &Path) -> String {
    use std::io::Read;
    // Follows a symlink: in a ConfigMap volume the manifest is one, into `..data/`.
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return format!("manifest {:?}", e.kind()),
    };
    if !meta.is_file() {
        return "manifest not a regular file".into();
    }
    if meta.len() > autoglm_package::MAX_MANIFEST_BYTES {
        return format!("manifest too large: {}", meta.len());
    }
    let read = std::fs::File::open(path).and_then(|file| {
        let mut bytes = Vec::new();
        file.take(autoglm_package::MAX_MANIFEST_BYTES)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    match read {
        Ok(bytes) => autoglm_package::sha256_hex(&bytes),
        Err(e) => format!("manifest {:?}", e.kind()),
    }
}

/// A cheap summary of what is on disk at `path`, following symlinks: the path it resolves to,
/// and for a directory the manifest's digest plus each visible file's size and mtime; for a
/// `.tar`, its size and mtime. A Kubernetes ConfigMap update swaps the `..data` symlink, which
/// changes the resolved files' contents and times, so it shows here.
pub fn fingerprint(path: &Path) -> String {
    let mut parts = Vec::new();
    match std::fs::canonicalize(path) {
        Ok(p) => parts.push(p.display().to_string()),
        Err(e) => return format!("unreadable: {:?}", e.kind()),
    }
    let stamp = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{} {mtime}", m.len())
        }
        Err(e) => format!("{:?}", e.kind()),
    };
    if path.is_dir() {
        parts.push(manifest_digest(&path.join(autoglm_package::MANIFEST_FILE)));
        let mut names: Vec<_> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| !n.to_string_lossy().starts_with('.'))
            .collect();
        names.sort();
        for name in names {
            parts.push(format!(
                "{} {}",
                name.to_string_lossy(),
                stamp(&path.join(&name))
            ));
        }
    } else {
        parts.push(stamp(path));
    }
    parts.join("\n")
}
