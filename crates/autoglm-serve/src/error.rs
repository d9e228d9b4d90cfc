//! Errors: [`ServeError`] for starting the service, [`ApiError`] for one request.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::path::PathBuf;

/// Why the service could not start or a package could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot load model `{name}` from {}: {source}", path.display())]
    Load {
        name: String,
        path: PathBuf,
        #[source]
        source: autoglm_runtime::RuntimeError,
    },
    #[error("model `{name}` loaded from {} but fails a test inference: {message}", path.display())]
    Check {
        name: String,
        path: PathBuf,
        message: String,
    },
    #[error("cannot start the batch worker for `{name}`: {source}")]
    Worker {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The message never holds the token, only what is wrong with it.
    #[error("auth token file {}: {reason}", path.display())]
    AuthToken { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
}

/// What a request gets instead of a result. The message is for the client: it says what to
/// change, never how the server failed inside (those details go to the log).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("this route needs an `Authorization: Bearer <token>` header")]
    MissingToken,
    #[error("the bearer token is not valid")]
    InvalidToken,
    /// The client did not send the whole body in time; the connection is closed after the answer.
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    #[error("{0}")]
    TooLarge(String),
    #[error("the queue is full; retry in {retry_after_secs} s")]
    QueueFull { retry_after_secs: u64 },
    #[error("the request did not finish within its {0} ms deadline")]
    DeadlineExceeded(u64),
    #[error("{0}")]
    Unavailable(String),
    /// Logged where it happens; the client sees only that it is the server's fault.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::MissingToken | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::QueueFull { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            // RFC 6750 section 3: the scheme to use, and for a token that was sent, why it failed.
            ApiError::MissingToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="autoglm""#),
                );
            }
            ApiError::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="autoglm", error="invalid_token""#),
                );
            }
            // The rest of the body may still be on its way: hyper closes the connection after
            // this answer instead of reading on.
            ApiError::BodyTimeout(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
