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
mod config;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod joint;
mod lifecycle;
mod loaded;
pub mod metrics;
mod models;
mod routes;
mod server;
mod state;
mod telemetry;

pub use auth::{AuthToken, OPEN_ROUTES};
pub use batcher::BatchConfig;
pub use config::{Config, Limits, ModelSpec};
pub use error::{ApiError, ServeError};
pub use joint::{
    probability as joint_probability, read_token_file as read_cloud_token_file, HardExampleRule,
    JointConfig, LcReport, SednaEnv,
};
pub use lifecycle::serve;
pub use loaded::Loaded;
pub use models::{fingerprint, ModelSlot};
pub use routes::app;
pub use server::{load_tls, serve_on, ServeOptions};
pub use state::AppState;
pub use telemetry::OtelConfig;
/// The TLS configuration [`ServeOptions::tls`] holds ([`load_tls`] reads one).
pub use tokio_rustls::rustls::ServerConfig as TlsConfig;
