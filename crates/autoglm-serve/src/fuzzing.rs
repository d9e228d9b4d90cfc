//! The body of the `http_request` fuzz target (`fuzz/`, cargo-fuzz on nightly) and of its corpus
//! replay test (`tests/it/fuzz.rs`, stable): the same code for both. Not a public API.

use crate::{app, AppState, Config, ServeError};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use tower::ServiceExt;

/// The requests a fuzz input can make: its first byte picks one (modulo the count), the rest
/// is the body. Model `cls` classifies, `emb` embeds (the serve tests' two fixture packages).
pub const ROUTES: [(&str, &str); 9] = [
    ("POST", "/v1/classify"),
    ("POST", "/v1/embed"),
    ("POST", "/v2/models/cls/infer"),
    ("POST", "/v2/models/emb/infer"),
    ("POST", "/v2/models/nope/infer"),
    ("GET", "/v2/models/cls"),
    ("GET", "/v2/health/ready"),
    ("GET", "/metrics"),
    ("POST", "/v1/classify?x=%ff"),
];

/// A service and the runtime that drives it, started once per fuzzing process.
#[derive(Debug)]
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    state: AppState,
}

impl Harness {
    /// Loads `config`'s models (blocking) and a current-thread runtime for the requests.
    pub fn new(config: &Config) -> Result<Self, ServeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ServeError::Config(format!("tokio runtime: {e}")))?;
        let state = AppState::start(config)?;
        Ok(Harness { runtime, state })
    }

    /// Target `http_request`: one request through the whole router (auth, body limits and
    /// timeouts, handlers, the batch queue and the model), as `serve` runs it.
    ///
    /// Must never panic, never answer 500 (the client's bytes are never the server's fault),
    /// and never answer more than a bounded multiple of what was asked: at most 256 KiB plus 4
    /// bytes per byte of body (the limits bound texts × width; the 126 MB answer to a 0.9 MB
    /// request this guards against was 140 per byte). Every answer of the JSON routes is JSON.
    pub fn request(&self, bytes: &[u8]) {
        let Some((&pick, body)) = bytes.split_first() else {
            return;
        };
        let (method, uri) = ROUTES[pick as usize % ROUTES.len()];
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            unreachable!("the table's methods are valid")
        };
        let is_get = method == Method::GET;
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(if is_get {
                Body::empty()
            } else {
                Body::from(body.to_vec())
            });
        let Ok(request) = request else {
            unreachable!("the table's requests are valid")
        };
        self.runtime.block_on(async {
            let response = match app(self.state.clone()).oneshot(request).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let status = response.status();
            assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{uri}");
            let bound = (256 << 10) + 4 * body.len();
            let answer = axum::body::to_bytes(response.into_body(), bound + 1)
                .await
                .unwrap_or_else(|e| panic!("{uri}: answer over {bound} bytes, or unreadable: {e}"));
            if uri != "/metrics" {
                let json = serde_json::from_slice::<serde_json::Value>(&answer);
                assert!(json.is_ok(), "{uri} {status}: not JSON");
            }
        });
    }
}
