//! `autoglm serve`: the arguments (each with an `AUTOGLM_*` variable), logging, and the async
//! runtime that runs `autoglm_serve` until SIGTERM or Ctrl-C.

use crate::joint::JointArgs;
use crate::model::BackendArgs;
use anyhow::{Context, Result};
use autoglm_serve::{
    load_tls, AppState, AuthToken, BatchConfig, Config, Limits, ModelSpec, OtelConfig, ServeError,
    ServeOptions, TlsConfig,
};
use clap::{value_parser, Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `autoglm serve`: every flag also reads an `AUTOGLM_*` environment variable.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Package to serve, as PKG or NAME=PKG; repeat (or comma-separate) for several. The first
    /// answers /v1 requests that name no model. Without it, `MODEL_URL` (where Sedna mounts a
    /// worker's Model) is the package.
    #[arg(long = "model", env = "AUTOGLM_MODEL", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Address to listen on.
    #[arg(long, env = "AUTOGLM_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Threads for the matrix products of one batch.
    #[arg(long, env = "AUTOGLM_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// The engine of every model served (`--backend ort --device cuda`: a cloud worker on a GPU).
    #[command(flatten)]
    pub backend: BackendArgs,
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
          value_parser = value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,
    /// Time a client has to send a request's body (s); then 408 and the connection is closed.
    #[arg(long, env = "AUTOGLM_BODY_TIMEOUT_SECS", default_value_t = 30,
          value_parser = value_parser!(u64).range(1..))]
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
    /// Joint inference (an edge worker sending hard examples to a cloud service).
    #[command(flatten)]
    pub joint: JointArgs,
}

impl ServeArgs {
    pub fn config(&self) -> Result<Config, ServeError> {
        let sedna_model = std::env::var("MODEL_URL").ok().filter(|u| !u.is_empty());
        let models =
            match (self.models.is_empty(), sedna_model) {
                (false, _) => self.models.clone(),
                (true, Some(url)) => vec![url],
                (true, None) => return Err(ServeError::Config(
                    "no package to serve: give --model (AUTOGLM_MODEL), or MODEL_URL under Sedna"
                        .into(),
                )),
            };
        let models = models
            .iter()
            .map(|m| ModelSpec::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            models,
            load: self
                .backend
                .load_options(self.threads.max(1), self.max_batch.max(1))
                .map_err(|e| ServeError::Config(format!("{e:#}")))?,
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
            joint: self.joint.config(|k| std::env::var(k).ok())?,
            telemetry: OtelConfig::from_env(|k| std::env::var(k).ok())?,
        })
    }

    /// The TLS configuration of `--tls-cert` and `--tls-key`, if given (clap makes it both or
    /// neither).
    pub fn tls(&self) -> Result<Option<Arc<TlsConfig>>, ServeError> {
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
pub fn run(args: ServeArgs) -> Result<()> {
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
    let served = runtime.block_on(autoglm_serve::serve(
        state.clone(),
        args.addr,
        Duration::from_secs(args.poll_secs),
        ServeOptions {
            grace: Duration::from_secs(args.shutdown_grace_secs),
            tls,
        },
    ));
    state.drain();
    state.flush_telemetry();
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoglm_runtime::{BackendKind, Device};
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["serve", "--model", "m=/p"].iter().chain(args);
        Cli::try_parse_from(argv).map(|c| c.serve)
    }

    #[test]
    fn serve_flags_default_to_loopback_and_bounded_timeouts() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((cli.header_timeout_secs, cli.body_timeout_secs), (10, 30));
        assert!(cli.auth_token_file.is_none() && cli.tls_cert.is_none());
        let config = cli.config().unwrap();
        assert_eq!(config.models[0].name, "m");
        assert_eq!(config.limits.header_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.body_timeout, Duration::from_secs(30));
        assert!(config.auth.is_none());
        assert!(cli.tls().unwrap().is_none());
        // TLS needs both files; timeouts are at least a second.
        for args in [
            &["--tls-cert", "c.pem"][..],
            &["--tls-key", "k.pem"][..],
            &["--header-timeout-secs", "0"][..],
            &["--body-timeout-secs", "0"][..],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        let cli = parse(&["--header-timeout-secs", "2", "--body-timeout-secs", "3"]).unwrap();
        let limits = cli.config().unwrap().limits;
        assert_eq!(limits.header_timeout, Duration::from_secs(2));
        assert_eq!(limits.body_timeout, Duration::from_secs(3));
    }

    #[test]
    fn backend_flags_reach_the_load_options() {
        let load = parse(&[]).unwrap().config().unwrap().load;
        assert_eq!(
            (load.backend, load.device),
            (BackendKind::Tract, Device::Cpu)
        );
        let load = parse(&[
            "--backend",
            "ort",
            "--device",
            "cuda",
            "--ort-lib",
            "/opt/ort/libonnxruntime.so",
            "--threads",
            "3",
        ])
        .unwrap()
        .config()
        .unwrap()
        .load;
        assert_eq!(
            (load.backend, load.device, load.threads),
            (BackendKind::Ort, Device::Cuda, 3)
        );
        assert_eq!(
            load.ort_library.as_deref(),
            Some(std::path::Path::new("/opt/ort/libonnxruntime.so"))
        );
        assert!(parse(&["--backend", "tpu"]).is_err());
        // A bad model name is refused with the name.
        let e = Cli::try_parse_from(["serve", "--model", "a b=/p"])
            .unwrap()
            .serve
            .config()
            .unwrap_err();
        assert!(e.to_string().contains("`a b=/p`"), "{e}");
    }
}
