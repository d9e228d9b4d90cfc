//! AutoGLM Edge inference service: model packages behind HTTP, for gateways and KubeEdge nodes.
//!
//! - `POST /v1/classify`, `POST /v1/embed`: `{"texts": [...], "model"?: name}`, results in order;
//! - Open Inference Protocol v2: `/v2/health/{live,ready}`, `/v2/models/{name}[/ready]`,
//!   `POST /v2/models/{name}/infer` with one BYTES input of texts;
//! - `GET /metrics`: OpenMetrics text.
//!
//! Hardening (see docs/serving-security.md): a client has `header_timeout` to send a request
//! head (or finish a TLS handshake) and `body_timeout` to send its body, then the connection is
//! closed; responses are bounded by the request limits (texts × output width × outputs, each
//! output at most once); an optional bearer token guards every route but the probes; optional
//! TLS (rustls).
//!
//! Each model has a bounded queue (counted in texts; full → 429 with `Retry-After`) emptied by
//! one batch thread in dynamic batches. Packages reload on SIGHUP and when they change on disk:
//! the new one is loaded, verified and test-run off the request path, then swapped in
//! atomically; batches already running finish on the old one, and a package that fails to load
//! leaves the old one serving.
//!
//! ```no_run
//! use autoglm_serve::{serve_on, AppState, Config, ModelSpec, ServeOptions};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::new(vec![ModelSpec::parse("sentiment=models/sentiment")?]);
//! let state = AppState::start(&config)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve_on(state, listener, ServeOptions::default(), std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod auth;
mod batcher;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
mod models;
mod routes;
mod server;

pub use auth::{AuthToken, OPEN_ROUTES};
pub use batcher::BatchConfig;
pub use error::{ApiError, ServeError};
pub use models::{fingerprint, Loaded, ModelSlot};
pub use routes::{app, prediction_json};
pub use server::{load_tls, serve_on, ServeOptions};

use anyhow::Context;
use autoglm_runtime::LoadOptions;
use metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_texts: usize,
    pub max_text_bytes: usize,
    /// Texts a model's queue holds, waiting ones and the batch being gathered.
    pub queue_capacity: usize,
    pub request_timeout: Duration,
    pub retry_after_secs: u64,
    /// Time a connection has to send a whole request head (and to finish its TLS handshake);
    /// an idle keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// Time a request has to send its whole body, from when its handler starts reading; past
    /// it the answer is 408 and the connection is closed.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_texts: 64,
            max_text_bytes: 16 << 10,
            queue_capacity: 256,
            request_timeout: Duration::from_secs(10),
            retry_after_secs: 1,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// A model to serve: a name and a package path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub path: PathBuf,
}

impl ModelSpec {
    /// `NAME=PKG`, or `PKG` alone: then the name is the package's file name without `.tar`.
    pub fn parse(s: &str) -> Result<Self, ServeError> {
        let (name, path) = match s.split_once('=') {
            Some((name, path)) => (name.to_owned(), PathBuf::from(path)),
            None => {
                let path = PathBuf::from(s);
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().trim_end_matches(".tar").to_owned())
                    .unwrap_or_default();
                (name, path)
            }
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(ServeError::Config(format!(
                "`{s}`: a model name is 1 to 64 of A-Z a-z 0-9 - _ . (use NAME=PKG)"
            )));
        }
        Ok(ModelSpec { name, path })
    }
}

/// Everything a service needs besides its address.
#[derive(Debug, Clone)]
pub struct Config {
    /// The first one answers `/v1` requests that name no model.
    pub models: Vec<ModelSpec>,
    pub load: LoadOptions,
    pub batch: BatchConfig,
    pub limits: Limits,
    /// When set, every route but [`OPEN_ROUTES`] needs this bearer token.
    pub auth: Option<AuthToken>,
}

impl Config {
    pub fn new(models: Vec<ModelSpec>) -> Self {
        Config {
            models,
            load: LoadOptions::default(),
            batch: BatchConfig {
                max_batch: 32,
                max_wait: Duration::from_millis(5),
            },
            limits: Limits::default(),
            auth: None,
        }
    }
}

/// The service's shared state: the models, the limits, the metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    models: Vec<Arc<ModelSlot>>,
    limits: Limits,
    auth: Option<AuthToken>,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
}

impl AppState {
    /// Loads and verifies every package and starts their batch threads. Blocking.
    pub fn start(config: &Config) -> Result<Self, ServeError> {
        if config.models.is_empty() {
            return Err(ServeError::Config("no model to serve: pass --model".into()));
        }
        for (i, m) in config.models.iter().enumerate() {
            if config.models[..i].iter().any(|o| o.name == m.name) {
                return Err(ServeError::Config(format!(
                    "model name `{}` is used twice",
                    m.name
                )));
            }
        }
        let limits = &config.limits;
        if limits.max_texts == 0 || limits.max_texts > limits.queue_capacity {
            return Err(ServeError::Config(format!(
                "texts per request ({}) must be 1 to the queue capacity ({})",
                limits.max_texts, limits.queue_capacity
            )));
        }
        let metrics = Arc::new(Metrics::new());
        let mut models = Vec::new();
        for spec in &config.models {
            let slot = ModelSlot::start(
                spec.name.clone(),
                spec.path.clone(),
                config.load.clone(),
                config.batch.clone(),
                limits.queue_capacity,
                metrics.clone(),
            )?;
            models.push(Arc::new(slot));
        }
        Ok(AppState {
            inner: Arc::new(Inner {
                models,
                limits: limits.clone(),
                auth: config.auth.clone(),
                metrics,
                ready: AtomicBool::new(true),
            }),
        })
    }

    pub fn models(&self) -> &[Arc<ModelSlot>] {
        &self.inner.models
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The named model, or the default (first) one.
    pub fn slot(&self, name: Option<&str>) -> Result<Arc<ModelSlot>, ApiError> {
        let models = &self.inner.models;
        match name {
            None => models.first().cloned(),
            Some(n) => models.iter().find(|m| m.name == n).cloned(),
        }
        .ok_or_else(|| ApiError::NotFound(format!("no model named `{}`", name.unwrap_or(""))))
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Reloads every model whose package changed on disk (or all with `force`). Blocking.
    pub fn reload(&self, force: bool, reason: &str) {
        for slot in &self.inner.models {
            if force || slot.changed_on_disk() {
                // The error is logged and counted by the slot; the old package keeps serving.
                let _ = slot.reload(reason);
            }
        }
    }

    /// Reports not ready (so the load balancer stops sending), refuses new work once the
    /// server stops, and waits for queued work to finish. Blocking.
    pub fn drain(&self) {
        self.inner.ready.store(false, Ordering::Release);
        for slot in &self.inner.models {
            slot.drain();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `autoglm serve`: every flag also reads an `AUTOGLM_*` environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Package to serve, as PKG or NAME=PKG; repeat (or comma-separate) for several. The first
    /// answers /v1 requests that name no model.
    #[arg(
        long = "model",
        env = "AUTOGLM_MODEL",
        value_delimiter = ',',
        required = true
    )]
    pub models: Vec<String>,
    /// Address to listen on.
    #[arg(long, env = "AUTOGLM_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Threads for the matrix products of one batch.
    #[arg(long, env = "AUTOGLM_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Engine: `tract` (built in) or `ort` (ONNX Runtime; needs a build with `--features ort`),
    /// for every model served. A cloud worker on a GPU: `--backend ort --device cuda`.
    #[arg(long, default_value = "tract", env = "AUTOGLM_BACKEND")]
    pub backend: autoglm_runtime::BackendKind,
    /// Device: `cpu`, or `cuda` (ort backend with a CUDA build of ONNX Runtime; no fallback).
    #[arg(long, default_value = "cpu", env = "AUTOGLM_DEVICE")]
    pub device: autoglm_runtime::Device,
    /// The ONNX Runtime shared library for `--backend ort` (tools/fetch-onnxruntime.sh).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Most texts run together in one batch.
    #[arg(long, env = "AUTOGLM_MAX_BATCH", default_value_t = 32)]
    pub max_batch: usize,
    /// How long a batch waits for more texts after its first one (ms).
    #[arg(long, env = "AUTOGLM_BATCH_WAIT_MS", default_value_t = 5)]
    pub batch_wait_ms: u64,
    /// Texts a model's queue holds before requests get 429.
    #[arg(long, env = "AUTOGLM_QUEUE_CAPACITY", default_value_t = 256)]
    pub queue_capacity: usize,
    /// Largest request body (bytes).
    #[arg(long, env = "AUTOGLM_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Most texts in one request.
    #[arg(long, env = "AUTOGLM_MAX_TEXTS", default_value_t = 64)]
    pub max_texts: usize,
    /// Longest text (bytes of UTF-8).
    #[arg(long, env = "AUTOGLM_MAX_TEXT_BYTES", default_value_t = 16 << 10)]
    pub max_text_bytes: usize,
    /// Deadline of one request, queueing included (ms); past it the answer is 504.
    #[arg(long, env = "AUTOGLM_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// How often to look for a changed package on disk (s); 0 = only on SIGHUP.
    #[arg(long, env = "AUTOGLM_POLL_SECS", default_value_t = 5)]
    pub poll_secs: u64,
    /// After SIGTERM or Ctrl-C, how long in-flight requests may take to finish (s).
    #[arg(long, env = "AUTOGLM_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Time a client has to send a request's headers (and finish a TLS handshake), and the
    /// longest a keep-alive connection stays idle (s); then the connection is closed.
    #[arg(long, env = "AUTOGLM_HEADER_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,
    /// Time a client has to send a request's body (s); then 408 and the connection is closed.
    #[arg(long, env = "AUTOGLM_BODY_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_secs: u64,
    /// File holding a bearer token (one line): every route but /v2/health/{live,ready} then
    /// needs `Authorization: Bearer <token>`. The file must not be readable by other users.
    #[arg(long, env = "AUTOGLM_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "AUTOGLM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (needs --tls-cert).
    #[arg(long, env = "AUTOGLM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Log lines as text or JSON (the level comes from AUTOGLM_LOG, e.g. `info,autoglm_serve=debug`).
    #[arg(long, env = "AUTOGLM_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl ServeArgs {
    pub fn config(&self) -> Result<Config, ServeError> {
        let models = self
            .models
            .iter()
            .map(|m| ModelSpec::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            models,
            load: LoadOptions {
                threads: self.threads.max(1),
                max_batch: self.max_batch.max(1),
                backend: self.backend,
                device: self.device,
                ort_library: self.ort_lib.clone(),
            },
            batch: BatchConfig {
                max_batch: self.max_batch.max(1),
                max_wait: Duration::from_millis(self.batch_wait_ms),
            },
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                max_texts: self.max_texts,
                max_text_bytes: self.max_text_bytes,
                queue_capacity: self.queue_capacity,
                request_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
                retry_after_secs: 1,
                header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
                body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
            },
            auth: self
                .auth_token_file
                .as_deref()
                .map(AuthToken::from_file)
                .transpose()?,
        })
    }

    /// The TLS configuration of `--tls-cert` and `--tls-key`, if given (clap makes it both or
    /// neither).
    pub fn tls(&self) -> Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>, ServeError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => load_tls(cert, key).map(Some),
            (None, None) => Ok(None),
            _ => Err(ServeError::Tls(
                "--tls-cert and --tls-key go together: give both or neither".into(),
            )),
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AUTOGLM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second call (tests, embedding) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the service until SIGTERM or Ctrl-C, then drains.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let config = args.config()?;
    // Before loading models (seconds): a wrong certificate path fails at once.
    let tls = args.tls()?;
    let state = AppState::start(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("serve")
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(serve(
        state.clone(),
        args.addr,
        Duration::from_secs(args.poll_secs),
        ServeOptions {
            grace: Duration::from_secs(args.shutdown_grace_secs),
            tls,
        },
    ));
    state.drain();
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    served
}

/// Binds `addr` and serves `state` until a shutdown signal; reloads on SIGHUP and when a
/// package changes on disk (every `poll`, unless zero).
pub async fn serve(
    state: AppState,
    addr: SocketAddr,
    poll: Duration,
    options: ServeOptions,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        models = state.models().len(),
        tls = options.tls.is_some(),
        auth = state.inner.auth.is_some(),
        "serving"
    );
    let watcher = tokio::spawn(watch(state.clone(), poll));
    let grace = options.grace;
    let signal_state = state.clone();
    let stop = async move {
        shutdown_signal().await;
        signal_state.inner.ready.store(false, Ordering::Release);
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: draining in-flight requests"
        );
    };
    let result = serve_on(state, listener, options, stop).await;
    watcher.abort();
    result
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Reloads on SIGHUP (every model) and on a changed package (that model).
async fn watch(state: AppState, poll: Duration) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut ticker = (!poll.is_zero()).then(|| {
        let mut t = tokio::time::interval(poll);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        let hup = async {
            #[cfg(unix)]
            if let Some(h) = hangup.as_mut() {
                h.recv().await;
                return;
            }
            std::future::pending::<()>().await
        };
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let force = tokio::select! {
            () = hup => true,
            () = tick => false,
        };
        let s = state.clone();
        let reason = if force { "SIGHUP" } else { "package changed" };
        // Loading is seconds of CPU and disk: never on the executor that answers requests.
        let _ = tokio::task::spawn_blocking(move || s.reload(force, reason)).await;
    }
}
