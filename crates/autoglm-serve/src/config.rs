//! What a service is started with: the models to serve, how to load and batch them, and the
//! limits of one request.

use crate::{AuthToken, BatchConfig, JointConfig, OtelConfig, ServeError};
use autoglm_runtime::LoadOptions;
use std::path::PathBuf;
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
    /// When set, every route but [`crate::OPEN_ROUTES`] needs this bearer token.
    pub auth: Option<AuthToken>,
    /// An edge worker of joint inference: hard examples go to this cloud service.
    pub joint: Option<JointConfig>,
    /// OpenTelemetry export (the `otel` feature), from the `OTEL_*` variables.
    pub telemetry: Option<OtelConfig>,
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
            joint: None,
            telemetry: None,
        }
    }
}
