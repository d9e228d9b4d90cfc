//! Optional bearer-token authentication (`--auth-token-file`).
//!
//! With a token configured, every route but the health probes needs `Authorization: Bearer
//! <token>`: kubelet and systemd probes carry no credentials, and liveness/readiness say nothing
//! about the models. `/metrics` is protected (it names the models, their versions and traffic);
//! Prometheus sends the token with `authorization: {credentials_file: …}`.
//!
//! Only the sha256 of the token is kept, and a presented token is hashed and compared with it in
//! constant time: comparing the digests makes the compare independent of both the position of
//! the first differing byte and the presented token's length.

use crate::error::{ApiError, ServeError};
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

/// Routes answered without a token: the probes.
pub const OPEN_ROUTES: [&str; 2] = ["/v2/health/live", "/v2/health/ready"];

/// A token file is a line, not a document: anything larger is a wrong path.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The expected bearer token, as its sha256 (the token itself is not kept).
#[derive(Clone)]
pub struct AuthToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(..)")
    }
}

impl AuthToken {
    /// A token of visible ASCII (RFC 6750's token68 and more), 1 to 4096 bytes; the reason why
    /// not otherwise (never the token itself).
    pub fn new(token: &str) -> Result<Self, String> {
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        if token.len() as u64 > MAX_TOKEN_FILE_BYTES {
            return Err(format!("the token is over {MAX_TOKEN_FILE_BYTES} bytes"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the token holds a space, a control or a non-ASCII character; use visible ASCII"
                    .into(),
            );
        }
        Ok(AuthToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Reads the token from `path`: one line, trailing newline(s) ignored. Refuses what is not a
    /// regular file (a FIFO would block the start) and, on Unix, a file that other users may
    /// read or write: a token anyone on the machine can read protects nothing.
    pub fn from_file(path: &Path) -> Result<Self, ServeError> {
        let error = |reason: String| ServeError::AuthToken {
            path: path.to_owned(),
            reason,
        };
        // Follows symlinks: a Kubernetes Secret volume's files are symlinks into `..data/`.
        let meta = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
        if !meta.is_file() {
            return Err(error("not a regular file".into()));
        }
        if meta.len() > MAX_TOKEN_FILE_BYTES {
            return Err(error(format!("over {MAX_TOKEN_FILE_BYTES} bytes")));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if mode & 0o006 != 0 {
                return Err(error(format!(
                    "mode {:o} lets other users read or write it; chmod o-rw (e.g. 0400 or 0440)",
                    mode & 0o777
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        AuthToken::new(text.trim_end_matches(['\n', '\r'])).map_err(error)
    }

    /// Whether `presented` is the token, in time independent of where it differs.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(rest.trim_ascii())
}

/// Refuses a request without the right token, unless no token is configured or the route is a
/// probe. Runs before the body is read, so an unauthenticated client cannot make it wait.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = state.inner.auth.as_ref() else {
        return next.run(request).await;
    };
    if OPEN_ROUTES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match bearer(request.headers()) {
        None => ApiError::MissingToken.into_response(),
        Some(presented) if token.matches(presented) => next.run(request).await,
        Some(_) => ApiError::InvalidToken.into_response(),
    }
}
