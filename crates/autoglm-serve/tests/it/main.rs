//! The service in process: every route and error through `oneshot` (no socket), reloads, and
//! the queue's back-pressure, on the tiny synthetic packages (no downloaded assets); `server`
//! runs the real server on a loopback port (slow clients, TLS).

// Tests fail by panicking: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

mod auth;
mod backends;
mod fuzz;
mod joint;
mod limits;
#[cfg(feature = "otel")]
mod otel;
mod reload;
mod routes;
mod server;
mod tasks;

use autoglm_export::{export, fixture};
use autoglm_serve::{app, AppState, Config, ModelSpec};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tower::ServiceExt;

/// A temporary directory with the tiny classification (`cls`) and embedding (`emb`) packages.
#[derive(Debug)]
pub struct Packages {
    pub dir: tempfile::TempDir,
}

impl Packages {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fixture::classification_package(dir.path())
            .write(&dir.path().join("cls"))
            .unwrap();
        export(&fixture::options(dir.path(), false))
            .unwrap()
            .write(&dir.path().join("emb"))
            .unwrap();
        Packages { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> Config {
        let mut config = Config::new(vec![
            ModelSpec::parse(&format!("cls={}", self.path("cls").display())).unwrap(),
            ModelSpec::parse(&format!("emb={}", self.path("emb").display())).unwrap(),
        ]);
        config.batch.max_wait = Duration::from_millis(1);
        config
    }
}

/// Copies a package directory (the reload tests change copies, never the originals).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The error message of a 4xx/5xx answer (and a check that it is the JSON error shape).
    pub fn error(&self) -> String {
        let v = self.json();
        assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
        v["error"].as_str().unwrap().to_owned()
    }
}

pub async fn call(state: &AppState, method: &str, uri: &str, body: Option<String>) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, Body::from))
        .unwrap();
    send(state, request).await
}

/// Any request, headers included, through the router.
pub async fn send(state: &AppState, request: Request<Body>) -> Answer {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub async fn get(state: &AppState, uri: &str) -> Answer {
    call(state, "GET", uri, None).await
}

pub async fn post(state: &AppState, uri: &str, body: Value) -> Answer {
    call(state, "POST", uri, Some(body.to_string())).await
}
