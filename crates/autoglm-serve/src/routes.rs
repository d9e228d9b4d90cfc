//! The HTTP surface: `/v1` JSON, Open Inference Protocol v2, `/metrics`.
//!
//! What one answer can weigh is bounded by the request limits: at most `max_texts` rows, each
//! of the model's width (labels or dimensions), in at most one copy of each of the model's
//! outputs (two for a classifier: labels and scores; for a multi-task classifier, two per task,
//! whose scores together are the model's width), plus the echoed request `id` (bounded by the
//! body limit).
//! An OIP v2 request that names an output twice, or one the model does not have, is refused:
//! without that, 50,000 copies of `{"name": "scores"}` in a 1 MB request asked for a 126 MB
//! answer.

use crate::auth::require_token;
use crate::batcher::{Done, Job, JobError, SubmitError};
use crate::error::ApiError;
use crate::joint::edge_answers;
use crate::loaded::Loaded;
use crate::metrics::{RouteLabel, RouteStatus};
use crate::models::ModelSlot;
use crate::AppState;
use autoglm_runtime::{Model, ModelKind, RuntimeError, TaskPrediction};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// The service's router. Everything it needs is in `state`; nothing binds a socket, so tests
/// drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    let body_limit = state.inner.limits.max_body_bytes;
    let router = Router::new()
        .route("/v1/classify", post(v1_classify))
        .route("/v1/embed", post(v1_embed))
        .route("/v2", get(v2_server))
        .route("/v2/health/live", get(v2_live))
        .route("/v2/health/ready", get(v2_ready))
        .route("/v2/models/{name}", get(v2_model))
        .route("/v2/models/{name}/ready", get(v2_model_ready))
        .route("/v2/models/{name}/infer", post(v2_infer))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        // Outside the body reading: a client without the token never gets to send a body.
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(state.clone(), track));
    // OpenTelemetry (src/telemetry.rs): a layer only when it exports.
    #[cfg(feature = "otel")]
    let router = match state.inner.telemetry {
        Some(_) => router.layer(middleware::from_fn_with_state(
            state.clone(),
            crate::telemetry::trace_request,
        )),
        None => router,
    };
    router.with_state(state)
}

/// Counts and times every response by route template and status.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    let m = &state.inner.metrics;
    let labels = RouteStatus {
        route: route.clone(),
        status: response.status().as_u16(),
    };
    m.requests.get_or_create(&labels).inc();
    if response.status().is_client_error() || response.status().is_server_error() {
        m.errors.get_or_create(&labels).inc();
    }
    m.request_seconds
        .get_or_create(&RouteLabel { route })
        .observe(start.elapsed().as_secs_f64());
    response
}

/// Reads the whole body, up to the body limit, within `body_timeout` from when the route
/// starts reading, and hands it on in memory. One deadline for the whole body, not one per
/// chunk: a client trickling a byte a second gets no longer than one sending nothing.
async fn read_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.inner.limits;
    let too_large = || ApiError::TooLarge("the request body is too large".into());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return too_large().into_response();
    }
    let (parts, body) = request.into_parts();
    let limited = Limited::new(body, limits.max_body_bytes).collect();
    let bytes = match tokio::time::timeout(limits.body_timeout, limited).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return too_large().into_response(),
        Ok(Err(_)) => {
            return ApiError::BadRequest("cannot read the request body".into()).into_response()
        }
        Err(_) => return ApiError::BodyTimeout(limits.body_timeout.as_secs()).into_response(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge("the request body is too large".into()),
        _ => ApiError::BadRequest("cannot read the request body".into()),
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextsRequest {
    texts: Vec<String>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyRequest {
    texts: Vec<String>,
    #[serde(default)]
    model: Option<String>,
    /// Multi-task packages: only this task (default: every task).
    #[serde(default)]
    task: Option<String>,
}

/// A task the request cannot have: the package has no tasks, or not that one.
fn task_error(e: RuntimeError) -> ApiError {
    match e {
        RuntimeError::NoTasks { .. } | RuntimeError::NoSuchTask { .. } => {
            ApiError::BadRequest(e.to_string())
        }
        other => {
            tracing::error!(error = %other, "task selection failed");
            ApiError::Internal
        }
    }
}

/// Each text's label and scores; for a multi-task package (or with `task`), per task, as
/// [`TaskPrediction::to_json`] shapes them.
async fn v1_classify(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: ClassifyRequest = parse(body)?;
    let slot = state.slot(request.model.as_deref())?;
    let task = request.task.as_deref();
    // A task the package does not have is refused before anything is queued.
    let current = slot.current();
    if task.is_some() && current.kind() == ModelKind::Classification {
        current.model.select_tasks(task).map_err(task_error)?;
    }
    // Joint inference (src/joint.rs) keeps the texts, to send the hard ones to the cloud (for
    // whole-package answers; a task's answer is the edge's).
    let joint = if task.is_none() {
        state.joint_for(&slot)
    } else {
        None
    };
    let texts = joint.as_ref().map(|_| request.texts.clone());
    let done = run(&state, &slot, ModelKind::Classification, request.texts).await?;
    let model = &done.model.model;
    let results: Vec<Value> = if task.is_none() && model.tasks().is_empty() {
        let labels = model.labels();
        let predictions: Vec<_> = done
            .outputs
            .iter()
            .map(|logits| model.prediction(logits))
            .collect();
        match (joint, texts) {
            (Some(joint), Some(texts)) => {
                joint.answer(&texts, labels, &predictions, &headers).await
            }
            _ => edge_answers(labels, &predictions),
        }
    } else {
        // Again on the model that ran: a reload may have brought other tasks.
        let chosen = model.select_tasks(task).map_err(task_error)?;
        done.outputs
            .iter()
            .map(|logits| TaskPrediction::to_json(&Model::task_predictions(&chosen, logits)))
            .collect()
    };
    let mut answer = v1_answer(&slot, &done, results);
    if let Some(task) = task {
        answer["task"] = json!(task);
    }
    Ok(Json(answer))
}

async fn v1_embed(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: TextsRequest = parse(body)?;
    let slot = state.slot(request.model.as_deref())?;
    let done = run(&state, &slot, ModelKind::Embedding, request.texts).await?;
    let results: Vec<Value> = done
        .outputs
        .iter()
        .map(|v| json!({"embedding": v}))
        .collect();
    Ok(Json(v1_answer(&slot, &done, results)))
}

/// A /v1 answer: the model that ran (its name and the version of its package) and one result a
/// text.
fn v1_answer(slot: &ModelSlot, done: &Done, results: Vec<Value>) -> Value {
    json!({
        "model": slot.name,
        "model_version": done.model.version,
        "results": results,
    })
}

/// Checks the texts against the limits, queues them, and waits for their batch.
async fn run(
    state: &AppState,
    slot: &Arc<ModelSlot>,
    kind: ModelKind,
    texts: Vec<String>,
) -> Result<Done, ApiError> {
    let limits = &state.inner.limits;
    check_kind(slot, &slot.current(), kind)?;
    if texts.len() > limits.max_texts {
        return Err(ApiError::TooLarge(format!(
            "{} texts in one request; at most {} are allowed",
            texts.len(),
            limits.max_texts
        )));
    }
    if let Some((i, t)) = texts
        .iter()
        .enumerate()
        .find(|(_, t)| t.len() > limits.max_text_bytes)
    {
        return Err(ApiError::TooLarge(format!(
            "text {i} is {} bytes; at most {} are allowed",
            t.len(),
            limits.max_text_bytes
        )));
    }
    if texts.is_empty() {
        return Ok(Done {
            model: slot.current(),
            outputs: Vec::new(),
            times: None,
        });
    }
    let now = Instant::now();
    let deadline = now + limits.request_timeout;
    let (reply, answer) = oneshot::channel();
    let job = Job {
        texts,
        enqueued: now,
        deadline,
        reply,
    };
    match slot.queue.submit(job) {
        Ok(()) => {}
        Err(SubmitError::Full) => {
            return Err(ApiError::QueueFull {
                retry_after_secs: limits.retry_after_secs,
            })
        }
        Err(SubmitError::Closed) => {
            return Err(ApiError::Unavailable("the server is shutting down".into()))
        }
    }
    show_queue(state, slot);
    let timeout_ms = limits.request_timeout.as_millis() as u64;
    let done = match tokio::time::timeout_at(deadline.into(), answer).await {
        Err(_) => return Err(ApiError::DeadlineExceeded(timeout_ms)),
        Ok(Err(_)) => {
            tracing::error!(model = %slot.name, "batch worker dropped a job");
            return Err(ApiError::Internal);
        }
        Ok(Ok(Err(JobError::Expired))) => return Err(ApiError::DeadlineExceeded(timeout_ms)),
        Ok(Ok(Err(JobError::Input(m)))) => return Err(ApiError::BadRequest(m)),
        Ok(Ok(Err(JobError::Internal(m)))) => {
            tracing::error!(model = %slot.name, error = %m, "inference failed");
            return Err(ApiError::Internal);
        }
        Ok(Ok(Ok(done))) => done,
    };
    if let (Some(t), Some(times)) = (&state.inner.telemetry, &done.times) {
        t.batch_spans(now, times, &slot.name);
    }
    // A reload between queueing and running may have brought a package of the other kind.
    check_kind(slot, &done.model, kind)?;
    Ok(done)
}

/// Sets `slot`'s queue-depth gauge to what is queued now: after queueing a request, and at each
/// scrape (the batch worker sets it as it takes jobs).
fn show_queue(state: &AppState, slot: &ModelSlot) {
    state
        .inner
        .metrics
        .queue_texts
        .get_or_create(&crate::metrics::Metrics::model(&slot.name))
        .set(slot.queued() as i64);
}

fn check_kind(slot: &ModelSlot, loaded: &Loaded, kind: ModelKind) -> Result<(), ApiError> {
    if loaded.kind() == kind {
        return Ok(());
    }
    let (is, route) = match loaded.kind() {
        ModelKind::Classification => ("a classification", "/v1/classify"),
        ModelKind::Embedding => ("an embedding", "/v1/embed"),
    };
    Err(ApiError::BadRequest(format!(
        "model `{}` is {is} model; use {route}",
        slot.name
    )))
}

async fn metrics(State(state): State<AppState>) -> Response {
    for slot in &state.inner.models {
        show_queue(&state, slot);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.inner.metrics.encode(),
    )
        .into_response()
}

async fn v2_server() -> Json<Value> {
    Json(json!({
        "name": "autoglm",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
}

async fn v2_live() -> Json<Value> {
    Json(json!({"live": true}))
}

async fn v2_ready(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        Json(json!({"ready": true})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false})),
        )
            .into_response()
    }
}

async fn v2_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let slot = state.slot(Some(&name))?;
    let loaded = slot.current();
    let outputs: Vec<Value> = v2_outputs(&loaded)
        .into_iter()
        .map(|o| match o {
            V2Output::Label(name) => json!({"name": name, "datatype": "BYTES", "shape": [-1]}),
            V2Output::Scores(name, width) | V2Output::Embedding(name, width) => {
                json!({"name": name, "datatype": "FP32", "shape": [-1, width]})
            }
        })
        .collect();
    Ok(Json(json!({
        "name": slot.name,
        "versions": [loaded.version],
        "platform": format!("autoglm_{}", loaded.model.backend_name()),
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": outputs,
    })))
}

async fn v2_model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let slot = state.slot(Some(&name))?;
    let ready = state.is_ready();
    let body = Json(json!({"name": slot.name, "ready": ready}));
    Ok(if ready {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    })
}

/// One OIP v2 output of a model, by name: a classifier's `label` (BYTES) and `scores` (FP32,
/// one per label); a multi-task classifier's `TASK.label` and `TASK.scores` for each task
/// instead (the softmax is per task); an embedder's `embedding`.
enum V2Output {
    Label(String),
    Scores(String, usize),
    Embedding(String, usize),
}

impl V2Output {
    fn name(&self) -> &str {
        match self {
            V2Output::Label(n) | V2Output::Scores(n, _) | V2Output::Embedding(n, _) => n,
        }
    }
}

fn v2_outputs(loaded: &Loaded) -> Vec<V2Output> {
    match loaded.kind() {
        ModelKind::Embedding => vec![V2Output::Embedding("embedding".into(), loaded.width())],
        ModelKind::Classification => {
            let tasks = loaded.model.tasks();
            if tasks.is_empty() {
                return vec![
                    V2Output::Label("label".into()),
                    V2Output::Scores("scores".into(), loaded.width()),
                ];
            }
            tasks
                .iter()
                .flat_map(|t| {
                    [
                        V2Output::Label(format!("{}.label", t.name)),
                        V2Output::Scores(format!("{}.scores", t.name), t.labels.len()),
                    ]
                })
                .collect()
        }
    }
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
}

async fn v2_infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let slot = state.slot(Some(&name))?;
    let request: InferRequest = parse(body)?;
    let [input] = request.inputs.as_slice() else {
        return Err(ApiError::BadRequest(format!(
            "expected one input tensor (`text`), got {}",
            request.inputs.len()
        )));
    };
    if input.datatype != "BYTES" {
        return Err(ApiError::BadRequest(format!(
            "input `{}` has datatype {}; texts are BYTES",
            truncated(&input.name, 64),
            truncated(&input.datatype, 64)
        )));
    }
    let mut texts = Vec::new();
    flatten_strings(&input.data, &mut texts, 0).map_err(|m| {
        ApiError::BadRequest(format!("input `{}`: {m}", truncated(&input.name, 64)))
    })?;
    let elements = input.shape.iter().try_fold(1u64, |n, &d| {
        u64::try_from(d).ok().and_then(|d| n.checked_mul(d))
    });
    if elements != Some(texts.len() as u64) {
        return Err(ApiError::BadRequest(format!(
            "input `{}` has shape {:?} but {} texts",
            truncated(&input.name, 64),
            input.shape,
            texts.len()
        )));
    }
    let loaded = slot.current();
    let available: Vec<String> = v2_outputs(&loaded)
        .iter()
        .map(|o| o.name().to_owned())
        .collect();
    let wanted: Vec<String> = match &request.outputs {
        None => available.clone(),
        Some(requested) => {
            // Each output at most once, so at most `available.len()` of them: what bounds the
            // answer's size (see the module documentation).
            let mut wanted: Vec<String> = Vec::with_capacity(available.len());
            for r in requested {
                if !available.contains(&r.name) {
                    return Err(ApiError::BadRequest(format!(
                        "model `{}` has no output `{}`; it has {available:?}",
                        slot.name,
                        truncated(&r.name, 64)
                    )));
                }
                if wanted.contains(&r.name) {
                    return Err(ApiError::BadRequest(format!(
                        "output `{}` is requested more than once; name each output at most once",
                        r.name
                    )));
                }
                wanted.push(r.name.clone());
            }
            wanted
        }
    };
    let n = texts.len();
    let done = run(&state, &slot, loaded.kind(), texts).await?;
    // The outputs of the model that ran (a reload may have changed them since `available`).
    let ran = v2_outputs(&done.model);
    let model = &done.model.model;
    // A classifier's predictions, over all labels or over one task's (`TASK.label`).
    let predictions = |name: &str| -> Result<Vec<autoglm_runtime::Prediction>, ApiError> {
        let task = name.rsplit_once('.').map(|(task, _)| task);
        Ok(match task {
            None => done.outputs.iter().map(|l| model.prediction(l)).collect(),
            Some(task) => {
                let chosen = model.select_tasks(Some(task)).map_err(task_error)?;
                done.outputs
                    .iter()
                    .filter_map(|l| Model::task_predictions(&chosen, l).pop())
                    .map(|t| t.prediction)
                    .collect()
            }
        })
    };
    let mut outputs = Vec::new();
    for name in &wanted {
        let Some(output) = ran.iter().find(|o| o.name() == name) else {
            return Err(ApiError::BadRequest(format!(
                "model `{}` has no output `{name}` since it was reloaded",
                slot.name
            )));
        };
        outputs.push(match output {
            V2Output::Label(name) => {
                let labels: Vec<String> = predictions(name)?.into_iter().map(|p| p.label).collect();
                json!({"name": name, "datatype": "BYTES", "shape": [n], "data": labels})
            }
            V2Output::Scores(name, width) => {
                let scores: Vec<f32> = predictions(name)?
                    .into_iter()
                    .flat_map(|p| p.scores)
                    .collect();
                json!({"name": name, "datatype": "FP32", "shape": [n, width], "data": scores})
            }
            V2Output::Embedding(name, width) => {
                let flat: Vec<f32> = done.outputs.iter().flatten().copied().collect();
                json!({"name": name, "datatype": "FP32", "shape": [n, width], "data": flat})
            }
        });
    }
    let mut response = json!({
        "model_name": slot.name,
        "model_version": done.model.version,
        "outputs": outputs,
    });
    if let Some(id) = request.id {
        response["id"] = json!(id);
    }
    Ok(Json(response))
}

/// At most `max` bytes of `s` (on a character boundary), to quote client input in an error
/// without echoing a megabyte back.
pub(crate) fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Texts of a BYTES tensor, row-major: the protocol allows flat or nested `data`.
fn flatten_strings(v: &Value, out: &mut Vec<String>, depth: usize) -> Result<(), String> {
    match v {
        Value::String(s) => {
            out.push(s.clone());
            Ok(())
        }
        Value::Array(items) if depth < 8 => items
            .iter()
            .try_for_each(|item| flatten_strings(item, out, depth + 1)),
        Value::Array(_) => Err("data is nested too deeply".into()),
        _ => Err("data must hold strings".into()),
    }
}
