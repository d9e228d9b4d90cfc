//! Joint inference, KubeEdge Sedna's contract: the edge worker answers every text locally, and a
//! text its model is unsure of (a *hard example*, by Sedna's `ThresholdFilter` or
//! `CrossEntropyFilter` rule) is asked again of a bigger model in the cloud, another
//! `autoglm serve` over `POST /v1/classify`. Each prediction says who answered it
//! (`"source": "edge" | "cloud"`).
//!
//! The cloud is an optimisation, never a dependency: a cloud that is slow (per-call timeout),
//! busy (bounded calls in flight), down or failing (circuit breaker) or that answers something
//! that is not a prediction over the same labels leaves the local answer in place, and the
//! fallback is counted by reason. The client never gets an error because of the cloud.
//!
//! Under a Sedna `JointInferenceService` the edge worker is configured by the environment the
//! global manager gives it ([`SednaEnv`]) and reports its inference and hard-example counts to
//! the local controller every `LC_PERIOD` seconds, as Sedna's own workers do
//! (`POST {LC_SERVER}/sedna/workers/{WORKER_NAME}/info`).

use crate::error::ServeError;
use crate::metrics::Metrics;
use crate::routes::truncated;
use crate::telemetry::{in_current_context, CloudOutcome, Telemetry};
use autoglm_runtime::Prediction;
use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// Sedna's default `BIG_MODEL_PORT` (the cloud worker's `BIG_MODEL_BIND_PORT`).
pub const SEDNA_BIG_MODEL_PORT: u16 = 5000;
/// Sedna's default `LC_PERIOD` (seconds between two reports to the local controller).
pub const SEDNA_LC_PERIOD_SECS: u64 = 30;

/// When a local prediction is a hard example, with Sedna's semantics. A prediction whose scores
/// are not probabilities (empty, or one outside [0, 1]) is never hard, as in Sedna's filters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HardExampleRule {
    /// Sedna's `ThresholdFilter` (`threshold`, default 0.5): hard when the top score is below
    /// the threshold (`--escalate-below P`).
    TopScoreBelow(f32),
    /// Sedna's `CrossEntropyFilter` (`threshold_cross_entropy`, default 0.5): the confidence
    /// `1 + Σ p·ln p / ln n` (one minus the normalised entropy) below the threshold is hard
    /// (`--escalate-entropy-above E` is this rule with threshold 1 - E).
    ConfidenceBelow(f32),
    /// Sedna's `CloudOnlyFilter`: every text goes to the cloud.
    Always,
    /// Sedna's `EdgeOnlyFilter`: no text goes to the cloud.
    Never,
}

impl HardExampleRule {
    pub fn is_hard(&self, scores: &[f32]) -> bool {
        let probabilities = !scores.is_empty() && scores.iter().all(|p| (0.0..=1.0).contains(p));
        match *self {
            HardExampleRule::Always => true,
            HardExampleRule::Never => false,
            _ if !probabilities => false,
            HardExampleRule::TopScoreBelow(t) => {
                scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) < t
            }
            HardExampleRule::ConfidenceBelow(t) => confidence(scores) < f64::from(t),
        }
    }

    /// The rule Sedna names `name` (`HEM_NAME`: `ThresholdFilter` or its alias `Threshold`,
    /// `CrossEntropyFilter` / `CrossEntropy`, `CloudOnly`, `EdgeOnly`) with the parameters of
    /// `parameters` (`HEM_PARAMETERS`: a JSON list of `{"key": …, "value": …}`, as the global
    /// manager writes `hardExampleMining.parameters`; empty or absent for the defaults).
    pub fn from_sedna(name: &str, parameters: Option<&str>) -> Result<Self, String> {
        let params = parse_hem_parameters(parameters.unwrap_or(""))?;
        let (rule, key): (fn(f32) -> Self, Option<&str>) = match name.trim() {
            "ThresholdFilter" | "Threshold" => (HardExampleRule::TopScoreBelow, Some("threshold")),
            "CrossEntropyFilter" | "CrossEntropy" => (
                HardExampleRule::ConfidenceBelow,
                Some("threshold_cross_entropy"),
            ),
            "CloudOnlyFilter" | "CloudOnly" => (|_| HardExampleRule::Always, None),
            "EdgeOnlyFilter" | "EdgeOnly" => (|_| HardExampleRule::Never, None),
            other => {
                return Err(format!(
                    "HEM_NAME `{}`: this worker classifies texts and knows ThresholdFilter, \
                     CrossEntropyFilter, CloudOnly and EdgeOnly",
                    truncated(other, 64)
                ))
            }
        };
        let mut threshold = 0.5f32;
        for (k, v) in &params {
            if Some(k.as_str()) != key {
                return Err(format!(
                    "HEM_PARAMETERS: {name} takes {}, not `{}`",
                    key.map_or("no parameter".to_owned(), |k| format!("only `{k}`")),
                    truncated(k, 64)
                ));
            }
            threshold = probability(v)
                .map_err(|e| format!("HEM_PARAMETERS: `{k}` = {}: {e}", truncated(v, 64)))?;
        }
        Ok(rule(threshold))
    }
}

/// The cloud's bearer token from a file (one line; a trailing newline is ignored): visible
/// ASCII, at most 4096 bytes, in a regular file that other users cannot read or write (the same
/// rules as `--auth-token-file`, the cloud's side of it).
pub fn read_token_file(path: &std::path::Path) -> Result<String, ServeError> {
    let error =
        |why: String| ServeError::Config(format!("cloud token file {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
    if !meta.is_file() {
        return Err(error("not a regular file".into()));
    }
    if meta.len() > 4096 {
        return Err(error("over 4096 bytes".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o006 != 0 {
            return Err(error(format!(
                "mode {:o} lets other users read or write it; chmod o-rw",
                mode & 0o777
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(error(
            "the token is empty or holds a space, a control or a non-ASCII character".into(),
        ));
    }
    Ok(token.to_owned())
}

/// A threshold given as text: a number in [0, 1].
pub fn probability(text: &str) -> Result<f32, String> {
    let value: f32 = text.trim().parse().map_err(|_| "not a number".to_owned())?;
    if !(0.0..=1.0).contains(&value) {
        return Err("must be between 0 and 1".into());
    }
    Ok(value)
}

/// Sedna's confidence of a probability vector: 1 - H(p) / ln n (1 for one label, 0·ln 0 = 0).
fn confidence(scores: &[f32]) -> f64 {
    if scores.len() < 2 {
        return 1.0;
    }
    let sum: f64 = scores
        .iter()
        .map(|&p| f64::from(p))
        .filter(|&p| p > 0.0)
        .map(|p| p * p.ln())
        .sum();
    1.0 + sum / (scores.len() as f64).ln()
}

/// `HEM_PARAMETERS`: `[{"key": "threshold", "value": "0.9"}]` (values as strings, as the global
/// manager marshals them, or numbers); empty, `null` or `[]` means none.
fn parse_hem_parameters(text: &str) -> Result<Vec<(String, String)>, String> {
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(Vec::new());
    }
    let bad =
        |why: &str| format!("HEM_PARAMETERS is not a JSON list of {{\"key\", \"value\"}}: {why}");
    let list: Vec<Value> = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let mut out: Vec<(String, String)> = Vec::new();
    for item in list {
        let (Some(key), Some(value)) = (item.get("key"), item.get("value")) else {
            return Err(bad("an item without `key` or `value`"));
        };
        let Some(key) = key.as_str() else {
            return Err(bad("a `key` that is not a string"));
        };
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(bad("a `value` that is neither a string nor a number")),
        };
        if out.iter().any(|(k, _)| k == key) {
            return Err(format!(
                "HEM_PARAMETERS: `{}` is given twice",
                truncated(key, 64)
            ));
        }
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// Where and how often to report to Sedna's local controller.
#[derive(Debug, Clone, PartialEq)]
pub struct LcReport {
    /// `LC_SERVER`, e.g. `http://localhost:9100`.
    pub server: String,
    /// `WORKER_NAME`: the report goes to `{server}/sedna/workers/{worker_name}/info`.
    pub worker_name: String,
    /// `SERVICE_NAME`: the JointInferenceService (the report's `ownerName`).
    pub service_name: String,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `LC_PERIOD` (s): a period without any inference sends nothing, as in Sedna.
    pub period: Duration,
}

/// What Sedna's global manager gives a JointInferenceService edge worker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SednaEnv {
    /// `http://{BIG_MODEL_IP}:{BIG_MODEL_PORT}` when `BIG_MODEL_IP` is set.
    pub cloud: Option<String>,
    /// From `HEM_NAME` and `HEM_PARAMETERS`.
    pub rule: Option<HardExampleRule>,
    /// When `LC_SERVER` is set.
    pub report: Option<LcReport>,
}

impl SednaEnv {
    /// Reads the variables through `get` (`std::env::var` in the command; a map in tests).
    /// A value that is set but wrong is an error naming the variable.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Self, ServeError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let err = |m: String| ServeError::Config(m);
        let port = match var("BIG_MODEL_PORT") {
            None => SEDNA_BIG_MODEL_PORT,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| {
                    err(format!(
                        "BIG_MODEL_PORT `{}` is not a port (1 to 65535)",
                        truncated(&p, 32)
                    ))
                })?,
        };
        let cloud = match var("BIG_MODEL_IP") {
            None => None,
            Some(host) => {
                let host = host.trim();
                let valid = host.len() <= 253
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
                if !valid {
                    return Err(err(format!(
                        "BIG_MODEL_IP `{}` is not a host name or IP address",
                        truncated(host, 64)
                    )));
                }
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host.to_owned()
                };
                Some(format!("http://{host}:{port}"))
            }
        };
        let rule = match var("HEM_NAME") {
            None => None,
            Some(name) => Some(
                HardExampleRule::from_sedna(&name, get("HEM_PARAMETERS").as_deref())
                    .map_err(err)?,
            ),
        };
        let report = match var("LC_SERVER") {
            None => None,
            Some(server) => {
                CloudEndpoint::parse(&server, "").map_err(|e| err(format!("LC_SERVER: {e}")))?;
                let worker_name = var("WORKER_NAME").ok_or_else(|| {
                    err("LC_SERVER is set but WORKER_NAME is not: the report needs the worker's name".into())
                })?;
                if !worker_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    || worker_name.len() > 253
                {
                    return Err(err(format!(
                        "WORKER_NAME `{}` is not a Kubernetes name",
                        truncated(&worker_name, 64)
                    )));
                }
                let secs = match var("LC_PERIOD") {
                    None => SEDNA_LC_PERIOD_SECS,
                    Some(p) => p
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|&s| (1..=86_400).contains(&s))
                        .ok_or_else(|| {
                            err(format!(
                                "LC_PERIOD `{}` is not 1 to 86400 seconds",
                                truncated(&p, 32)
                            ))
                        })?,
                };
                Some(LcReport {
                    server: server.trim().trim_end_matches('/').to_owned(),
                    worker_name,
                    service_name: var("SERVICE_NAME").unwrap_or_default(),
                    namespace: var("NAMESPACE").unwrap_or_else(|| "default".into()),
                    period: Duration::from_secs(secs),
                })
            }
        };
        Ok(SednaEnv {
            cloud,
            rule,
            report,
        })
    }
}

/// How an edge worker escalates hard examples.
#[derive(Debug, Clone, PartialEq)]
pub struct JointConfig {
    /// The cloud service's base URL, `http://host:port[/prefix]`; texts go to
    /// `{cloud}/v1/classify`.
    pub cloud: String,
    /// The model the cloud is asked for (`"model"` of the request); its default one if `None`.
    pub cloud_model: Option<String>,
    /// The local model whose predictions escalate; the default (first) one if `None`.
    pub model: Option<String>,
    pub rule: HardExampleRule,
    /// Deadline of one cloud call, connecting included.
    pub timeout: Duration,
    /// Cloud calls in flight at most; a hard example past it is answered locally.
    pub max_in_flight: usize,
    /// Consecutive failed calls that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit sends nothing before one trial call.
    pub breaker_cooldown: Duration,
    /// Largest cloud answer read (bytes); a larger one is a failure.
    pub max_response_bytes: usize,
    /// Bearer token sent to the cloud (`Authorization`), when it has one
    /// ([`read_token_file`]).
    pub cloud_token: Option<String>,
    pub report: Option<LcReport>,
}

impl JointConfig {
    pub fn new(cloud: impl Into<String>, rule: HardExampleRule) -> Self {
        JointConfig {
            cloud: cloud.into(),
            cloud_model: None,
            model: None,
            rule,
            timeout: Duration::from_millis(1000),
            max_in_flight: 16,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(10),
            max_response_bytes: 1 << 20,
            cloud_token: None,
            report: None,
        }
    }
}

/// An `http://` base URL and a path under it.
#[derive(Debug, Clone)]
struct CloudEndpoint {
    uri: Uri,
}

impl CloudEndpoint {
    fn parse(base: &str, path: &str) -> Result<Self, String> {
        let base = base.trim().trim_end_matches('/');
        let uri: Uri = format!("{base}{path}")
            .parse()
            .map_err(|e| format!("`{}` is not a URL: {e}", truncated(base, 128)))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "`{}`: only http:// is supported (terminate TLS in the mesh or a sidecar)",
                    truncated(base, 128)
                ))
            }
            _ => return Err(format!("`{}` is not an http:// URL", truncated(base, 128))),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("`{}` has no host", truncated(base, 128)));
        }
        if uri.query().is_some() {
            return Err(format!(
                "`{}` has a query; give the base URL",
                truncated(base, 128)
            ));
        }
        Ok(CloudEndpoint { uri })
    }
}

/// Why a hard example was answered locally (a metric label: a fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    CircuitOpen,
    Saturated,
    Timeout,
    Connect,
    Status,
    TooLarge,
    Invalid,
}

impl Fallback {
    fn as_str(self) -> &'static str {
        match self {
            Fallback::CircuitOpen => "circuit_open",
            Fallback::Saturated => "saturated",
            Fallback::Timeout => "timeout",
            Fallback::Connect => "connect",
            Fallback::Status => "status",
            Fallback::TooLarge => "too_large",
            Fallback::Invalid => "invalid",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The joint-inference metrics (`autoglm_joint_*`); registered only on an edge worker.
#[derive(Debug)]
struct JointMetrics {
    texts: Counter,
    hard: Counter,
    cloud_answers: Counter,
    fallbacks: Family<ReasonLabel, Counter>,
    cloud_seconds: Histogram,
    circuit: Gauge,
    reports: Family<ResultLabel, Counter>,
}

/// What goes to the cloud: the hard examples' texts, the edge model's labels (for the answer's
/// check), and the headers forwarded from the caller (trace context).
struct HardExamples<'a> {
    texts: Vec<String>,
    labels: &'a [String],
    headers: Vec<(header::HeaderName, header::HeaderValue)>,
}

/// Name (after the `joint_` prefix) and help of each metric, in registration order.
const JOINT_METRICS: [(&str, &str); 7] = [
    (
        "texts",
        "Texts the hard-example rule judged (edge inferences)",
    ),
    (
        "hard_examples",
        "Texts judged hard examples (the hard-example rate is this over joint_texts)",
    ),
    ("cloud_answers", "Hard examples answered by the cloud"),
    (
        "fallbacks",
        "Hard examples answered locally because the cloud could not answer, by reason",
    ),
    (
        "cloud_request_duration",
        "Time of one call to the cloud, whatever its outcome",
    ),
    (
        "circuit_state",
        "The cloud circuit breaker: 0 closed, 1 open, 2 half-open (one trial call)",
    ),
    (
        "lc_reports",
        "Reports to Sedna's local controller, by result",
    ),
];

impl JointMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = JointMetrics {
            texts: Counter::default(),
            hard: Counter::default(),
            cloud_answers: Counter::default(),
            fallbacks: Family::default(),
            // 1 ms to ~16 s.
            cloud_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            circuit: Gauge::default(),
            reports: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("joint");
        let [texts, hard, cloud, fallbacks, duration, circuit, reports] = JOINT_METRICS;
        r.register(texts.0, texts.1, m.texts.clone());
        r.register(hard.0, hard.1, m.hard.clone());
        r.register(cloud.0, cloud.1, m.cloud_answers.clone());
        r.register(fallbacks.0, fallbacks.1, m.fallbacks.clone());
        r.register_with_unit(
            duration.0,
            duration.1,
            Unit::Seconds,
            m.cloud_seconds.clone(),
        );
        r.register(circuit.0, circuit.1, m.circuit.clone());
        r.register(reports.0, reports.1, m.reports.clone());
        m
    }

    fn fallback(&self, reason: Fallback, texts: usize) {
        self.fallbacks
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().into(),
            })
            .inc_by(texts as u64);
    }
}

/// A circuit breaker over consecutive failures: closed → (N failures) open → (cooldown)
/// half-open, one trial call → closed on success, open again on failure.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    trial: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Call,
    Trial,
    Refuse,
}

impl Breaker {
    fn admit(&mut self, now: Instant) -> Admit {
        match self.open_until {
            None => Admit::Call,
            Some(until) if now < until || self.trial => Admit::Refuse,
            Some(_) => {
                self.trial = true;
                Admit::Trial
            }
        }
    }

    fn success(&mut self) {
        *self = Breaker::default();
    }

    fn failure(&mut self, now: Instant, threshold: u32, cooldown: Duration) {
        self.failures = self.failures.saturating_add(1);
        self.trial = false;
        if self.failures >= threshold.max(1) {
            self.open_until = Some(now + cooldown);
        }
    }

    fn state(&self, now: Instant) -> i64 {
        match self.open_until {
            None => 0,
            Some(until) if now < until && !self.trial => 1,
            Some(_) => 2,
        }
    }
}

/// A running edge worker's link to the cloud.
#[derive(Debug)]
pub(crate) struct Joint {
    config: JointConfig,
    endpoint: CloudEndpoint,
    client: Client<HttpConnector, Full<Bytes>>,
    permits: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
    metrics: JointMetrics,
    /// Sedna's counters: texts inferred, hard examples, and texts since the last report.
    inferences: AtomicU64,
    hard_examples: AtomicU64,
    period_increment: AtomicU64,
    telemetry: Option<Arc<Telemetry>>,
}

impl Joint {
    pub(crate) fn new(
        config: JointConfig,
        metrics: &mut Metrics,
        telemetry: Option<Arc<Telemetry>>,
    ) -> Result<Self, ServeError> {
        let endpoint = CloudEndpoint::parse(&config.cloud, "/v1/classify")
            .map_err(|e| ServeError::Config(format!("joint inference cloud: {e}")))?;
        if config.max_in_flight == 0 || config.timeout.is_zero() || config.max_response_bytes == 0 {
            return Err(ServeError::Config(
                "joint inference: the timeout, calls in flight and answer size must be above 0"
                    .into(),
            ));
        }
        if let Some(report) = &config.report {
            CloudEndpoint::parse(&report.server, "")
                .map_err(|e| ServeError::Config(format!("LC_SERVER: {e}")))?;
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(config.max_in_flight)
            .build(connector);
        Ok(Joint {
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            metrics: JointMetrics::register(metrics.registry_mut()),
            endpoint,
            client,
            breaker: Mutex::new(Breaker::default()),
            inferences: AtomicU64::new(0),
            hard_examples: AtomicU64::new(0),
            period_increment: AtomicU64::new(0),
            telemetry,
            config,
        })
    }

    pub(crate) fn model(&self) -> Option<&str> {
        self.config.model.as_deref()
    }

    /// The `/v1/classify` predictions of `texts`: local ones (`"source": "edge"`), with the hard
    /// examples' replaced by the cloud's (`"source": "cloud"`) when it answers.
    pub(crate) async fn answer(
        self: &Arc<Self>,
        texts: &[String],
        labels: &[String],
        predictions: &[Prediction],
        headers: &HeaderMap,
    ) -> Vec<Value> {
        let mut out = edge_answers(labels, predictions);
        let hard: Vec<usize> = predictions
            .iter()
            .enumerate()
            .filter(|(_, p)| self.config.rule.is_hard(&p.scores))
            .map(|(i, _)| i)
            .collect();
        let n = predictions.len() as u64;
        self.metrics.texts.inc_by(n);
        self.metrics.hard.inc_by(hard.len() as u64);
        self.inferences.fetch_add(n, Ordering::Relaxed);
        self.hard_examples
            .fetch_add(hard.len() as u64, Ordering::Relaxed);
        self.period_increment.fetch_add(n, Ordering::Relaxed);
        if let Some(t) = &self.telemetry {
            t.joint_counts(n, hard.len() as u64);
        }
        if hard.is_empty() {
            return out;
        }
        let hard_texts: Vec<String> = hard.iter().map(|&i| texts[i].clone()).collect();
        // Spawned: a client that hangs up does not cancel the call half-way, so the breaker's
        // bookkeeping (a trial call in flight) always completes.
        let joint = self.clone();
        let labels_owned = labels.to_vec();
        let forward = forwarded_headers(headers);
        let call = tokio::spawn(in_current_context(async move {
            joint
                .escalate(HardExamples {
                    texts: hard_texts,
                    labels: &labels_owned,
                    headers: forward,
                })
                .await
        }));
        match call.await {
            Ok(Ok(cloud)) => {
                for (i, answer) in hard.into_iter().zip(cloud) {
                    out[i] = answer;
                }
            }
            Ok(Err(reason)) => {
                tracing::debug!(
                    reason = reason.as_str(),
                    texts = hard.len(),
                    "answered hard examples locally"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "the cloud call task failed");
                self.metrics.fallback(Fallback::Invalid, hard.len());
            }
        }
        out
    }

    /// Asks the cloud about the hard examples; counts the outcome.
    async fn escalate(&self, hard: HardExamples<'_>) -> Result<Vec<Value>, Fallback> {
        let HardExamples {
            texts,
            labels,
            headers,
        } = hard;
        let n = texts.len();
        let fail = |reason: Fallback| {
            self.metrics.fallback(reason, n);
            Err(reason)
        };
        // Fallbacks before any call (no span) are counted in the telemetry here.
        let refused = |reason: Fallback| {
            if let Some(t) = &self.telemetry {
                t.fallback(reason.as_str(), n);
            }
            fail(reason)
        };
        let admit = self.lock_breaker().admit(Instant::now());
        if admit == Admit::Refuse {
            return refused(Fallback::CircuitOpen);
        }
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            if admit == Admit::Trial {
                // Not a verdict on the cloud: let the next hard example make the trial call.
                self.lock_breaker().trial = false;
            }
            return refused(Fallback::Saturated);
        };
        self.update_circuit_gauge();
        let start = Instant::now();
        // With telemetry, a `cloud call` span, whose context replaces the caller's in the
        // forwarded trace headers.
        let span = self.telemetry.as_ref().map(|t| t.cloud_call(n));
        let headers = span.as_ref().map_or(headers, |s| s.headers());
        let result = tokio::time::timeout(self.config.timeout, self.call(texts, labels, headers))
            .await
            .unwrap_or(Err(Fallback::Timeout));
        if let Some(span) = span {
            let outcome = match &result {
                Ok(_) => CloudOutcome::Answered,
                Err(reason) => CloudOutcome::Fallback(reason.as_str()),
            };
            span.end(outcome, n);
        }
        self.metrics
            .cloud_seconds
            .observe(start.elapsed().as_secs_f64());
        {
            let mut breaker = self.lock_breaker();
            match &result {
                Ok(_) => breaker.success(),
                Err(_) => breaker.failure(
                    Instant::now(),
                    self.config.breaker_failures,
                    self.config.breaker_cooldown,
                ),
            }
        }
        self.update_circuit_gauge();
        match result {
            Ok(answers) => {
                self.metrics.cloud_answers.inc_by(n as u64);
                Ok(answers)
            }
            Err(reason) => {
                tracing::warn!(
                    reason = reason.as_str(),
                    texts = n,
                    "the cloud did not answer; local answers kept"
                );
                fail(reason)
            }
        }
    }

    async fn call(
        &self,
        texts: Vec<String>,
        labels: &[String],
        headers: Vec<(header::HeaderName, header::HeaderValue)>,
    ) -> Result<Vec<Value>, Fallback> {
        let n = texts.len();
        let mut body = json!({ "texts": texts });
        if let Some(model) = &self.config.cloud_model {
            body["model"] = json!(model);
        }
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.config.cloud_token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| Fallback::Invalid)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|_| Fallback::Connect)?;
        if response.status() != StatusCode::OK {
            return Err(Fallback::Status);
        }
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|d| d > self.config.max_response_bytes as u64) {
            return Err(Fallback::TooLarge);
        }
        let bytes = Limited::new(response.into_body(), self.config.max_response_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Fallback::TooLarge
                } else {
                    Fallback::Connect
                }
            })?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| Fallback::Invalid)?;
        cloud_predictions(&value, n, labels).ok_or(Fallback::Invalid)
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update_circuit_gauge(&self) {
        let state = self.lock_breaker().state(Instant::now());
        self.metrics.circuit.set(state);
    }

    /// Reports to Sedna's local controller every period, when one is configured.
    pub(crate) fn spawn_reporter(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let report = self.config.report.clone()?;
        let joint = self.clone();
        Some(tokio::spawn(async move {
            let url = format!(
                "{}/sedna/workers/{}/info",
                report.server, report.worker_name
            );
            loop {
                let start = sedna_time(SystemTime::now());
                tokio::time::sleep(report.period).await;
                if joint.period_increment.swap(0, Ordering::AcqRel) == 0 {
                    continue;
                }
                let message = joint.report_message(&report, start);
                let result = joint.post_report(&url, &message).await;
                let label = match &result {
                    Ok(()) => "success",
                    Err(e) => {
                        tracing::warn!(url = %url, error = %e, "report to the local controller failed");
                        "failure"
                    }
                };
                joint
                    .metrics
                    .reports
                    .get_or_create(&ResultLabel {
                        result: label.into(),
                    })
                    .inc();
            }
        }))
    }

    /// The body of a report, as Sedna's `LCReporter` sends it for a joint-inference worker.
    fn report_message(&self, report: &LcReport, start: String) -> Value {
        let inferences = self.inferences.load(Ordering::Relaxed);
        let hard = self.hard_examples.load(Ordering::Relaxed);
        let ratio = if inferences == 0 {
            0.0
        } else {
            hard as f64 / inferences as f64
        };
        json!({
            "name": report.worker_name,
            "namespace": report.namespace,
            "ownerName": report.service_name,
            "ownerKind": "jointinferenceservice",
            "kind": "inference",
            "results": [],
            "ownerInfo": {
                "startTime": start,
                "updateTime": sedna_time(SystemTime::now()),
                "inferenceNumber": inferences,
                "hardExampleNumber": hard,
                "uploadCloudRatio": ratio,
            },
        })
    }

    async fn post_report(&self, url: &str, message: &Value) -> Result<(), String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(message.to_string())))
            .map_err(|e| e.to_string())?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            // Read (a bounded amount of) the answer so the connection can be reused.
            let _ = Limited::new(response.into_body(), 64 << 10).collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        };
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .unwrap_or_else(|_| Err("no answer within 5 s".into()))
    }
}

/// The local predictions, each marked `"source": "edge"`.
pub(crate) fn edge_answers(labels: &[String], predictions: &[Prediction]) -> Vec<Value> {
    predictions
        .iter()
        .map(|p| {
            let mut v = p.to_json(labels);
            v["source"] = json!("edge");
            v
        })
        .collect()
}

/// The headers passed on to the cloud: the W3C trace context, so its spans join the request's
/// trace.
fn forwarded_headers(headers: &HeaderMap) -> Vec<(header::HeaderName, header::HeaderValue)> {
    ["traceparent", "tracestate"]
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?;
            (value.len() <= 512).then(|| (header::HeaderName::from_static(name), value.clone()))
        })
        .collect()
}

/// The cloud's `/v1/classify` answer for `n` texts, as predictions over exactly `labels`
/// (`"source": "cloud"`); `None` when it is anything else. Only the label and the scores are
/// kept: nothing else the cloud sends reaches the client.
fn cloud_predictions(value: &Value, n: usize, labels: &[String]) -> Option<Vec<Value>> {
    let results = value.get("results")?.as_array()?;
    if results.len() != n {
        return None;
    }
    let expected: HashSet<&str> = labels.iter().map(String::as_str).collect();
    results
        .iter()
        .map(|r| {
            let label = r.get("label")?.as_str()?;
            let scores = r.get("scores")?.as_object()?;
            if !expected.contains(label)
                || scores.len() != expected.len()
                || !scores.keys().all(|k| expected.contains(k.as_str()))
            {
                return None;
            }
            let mut clean = Map::new();
            for l in labels {
                let p = scores.get(l)?.as_f64()?;
                if !(0.0..=1.0).contains(&p) {
                    return None;
                }
                clean.insert(l.clone(), json!(p));
            }
            Some(json!({"label": label, "scores": clean, "source": "cloud"}))
        })
        .collect()
}

/// `YYYY-MM-DD HH:MM:SS` (UTC), the form of Sedna's report times.
fn sedna_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn threshold_filter_is_hard_below_the_top_score_threshold() {
        let rule = HardExampleRule::TopScoreBelow(0.7);
        assert!(rule.is_hard(&[0.35, 0.65]));
        assert!(
            !rule.is_hard(&[0.3, 0.7]),
            "equal to the threshold is not hard"
        );
        assert!(!rule.is_hard(&[0.1, 0.9]));
        // Not probabilities: never hard (Sedna's data check).
        assert!(!rule.is_hard(&[]));
        assert!(!rule.is_hard(&[-0.2, 1.2]));
        assert!(!rule.is_hard(&[f32::NAN, 0.5]));
    }

    #[test]
    fn cross_entropy_filter_is_hard_below_the_confidence_threshold() {
        let rule = HardExampleRule::ConfidenceBelow(0.5);
        // Uniform: entropy ln n, confidence 0.
        assert!(rule.is_hard(&[0.5, 0.5]));
        assert!(rule.is_hard(&[0.25; 4]));
        // Certain: confidence 1 (0·ln 0 = 0).
        assert!(!rule.is_hard(&[0.0, 1.0]));
        // p = (0.9, 0.1): H = 0.325 nats, confidence 1 - 0.325/ln 2 = 0.531.
        assert!(!rule.is_hard(&[0.9, 0.1]));
        assert!(HardExampleRule::ConfidenceBelow(0.54).is_hard(&[0.9, 0.1]));
        assert!((confidence(&[0.9, 0.1]) - 0.531).abs() < 1e-3);
        assert!(HardExampleRule::Always.is_hard(&[]));
        assert!(!HardExampleRule::Never.is_hard(&[0.5, 0.5]));
    }

    #[test]
    fn sedna_names_and_parameters() {
        let p = |v: &str| format!(r#"[{{"key": "threshold", "value": "{v}"}}]"#);
        assert_eq!(
            HardExampleRule::from_sedna("ThresholdFilter", Some(&p("0.9"))),
            Ok(HardExampleRule::TopScoreBelow(0.9))
        );
        assert_eq!(
            HardExampleRule::from_sedna("Threshold", None),
            Ok(HardExampleRule::TopScoreBelow(0.5))
        );
        assert_eq!(
            HardExampleRule::from_sedna(
                "CrossEntropyFilter",
                Some(r#"[{"key":"threshold_cross_entropy","value":0.7}]"#)
            ),
            Ok(HardExampleRule::ConfidenceBelow(0.7))
        );
        assert_eq!(
            HardExampleRule::from_sedna("CloudOnly", Some("[]")),
            Ok(HardExampleRule::Always)
        );
        for (name, params, expect) in [
            ("IBT", "", "knows ThresholdFilter"),
            ("ThresholdFilter", &p("1.5"), "between 0 and 1"),
            ("ThresholdFilter", &p("high"), "not a number"),
            ("ThresholdFilter", "{\"threshold\": 0.5}", "not a JSON list"),
            (
                "ThresholdFilter",
                "[{\"key\": \"threshold\"}]",
                "without `key` or `value`",
            ),
            (
                "ThresholdFilter",
                r#"[{"key":"threshold_box","value":"0.5"}]"#,
                "only `threshold`",
            ),
            (
                "ThresholdFilter",
                r#"[{"key":"threshold","value":"0.5"},{"key":"threshold","value":"0.6"}]"#,
                "twice",
            ),
            ("EdgeOnly", &p("0.5"), "no parameter"),
        ] {
            let e = HardExampleRule::from_sedna(name, Some(params)).unwrap_err();
            assert!(e.contains(expect), "{name} {params}: {e}");
        }
    }

    fn env(vars: &[(&str, &str)]) -> Result<SednaEnv, ServeError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SednaEnv::read(|k| map.get(k).cloned())
    }

    #[test]
    fn the_environment_sedna_gives_an_edge_worker() {
        assert_eq!(env(&[]).unwrap(), SednaEnv::default());
        let e = env(&[
            ("BIG_MODEL_IP", "big-model.default"),
            ("BIG_MODEL_PORT", "5000"),
            ("HEM_NAME", "CrossEntropyFilter"),
            (
                "HEM_PARAMETERS",
                r#"[{"key":"threshold_cross_entropy","value":"0.6"}]"#,
            ),
            ("LC_SERVER", "http://localhost:9100"),
            ("WORKER_NAME", "edgeworker-ab12c"),
            ("SERVICE_NAME", "sentiment"),
            ("NAMESPACE", "fleet"),
        ])
        .unwrap();
        assert_eq!(e.cloud.as_deref(), Some("http://big-model.default:5000"));
        assert_eq!(e.rule, Some(HardExampleRule::ConfidenceBelow(0.6)));
        let r = e.report.unwrap();
        assert_eq!(
            (
                r.server.as_str(),
                r.worker_name.as_str(),
                r.service_name.as_str(),
                r.namespace.as_str()
            ),
            (
                "http://localhost:9100",
                "edgeworker-ab12c",
                "sentiment",
                "fleet"
            )
        );
        assert_eq!(r.period, Duration::from_secs(SEDNA_LC_PERIOD_SECS));
        // Port default, IPv6 bracketed.
        let e = env(&[("BIG_MODEL_IP", "fd00::1")]).unwrap();
        assert_eq!(e.cloud.as_deref(), Some("http://[fd00::1]:5000"));
        for (vars, expect) in [
            (vec![("BIG_MODEL_IP", "a b")], "BIG_MODEL_IP"),
            (
                vec![("BIG_MODEL_IP", "x"), ("BIG_MODEL_PORT", "70000")],
                "BIG_MODEL_PORT",
            ),
            (
                vec![("BIG_MODEL_PORT", "0"), ("BIG_MODEL_IP", "x")],
                "BIG_MODEL_PORT",
            ),
            (vec![("HEM_NAME", "Random")], "HEM_NAME"),
            (
                vec![("HEM_NAME", "Threshold"), ("HEM_PARAMETERS", "[1,")],
                "HEM_PARAMETERS",
            ),
            (vec![("LC_SERVER", "http://lc:9100")], "WORKER_NAME"),
            (
                vec![("LC_SERVER", "lc:9100"), ("WORKER_NAME", "w")],
                "LC_SERVER",
            ),
            (
                vec![("LC_SERVER", "http://lc"), ("WORKER_NAME", "w/../x")],
                "WORKER_NAME",
            ),
            (
                vec![
                    ("LC_SERVER", "http://lc"),
                    ("WORKER_NAME", "w"),
                    ("LC_PERIOD", "0"),
                ],
                "LC_PERIOD",
            ),
        ] {
            let e = env(&vars).unwrap_err().to_string();
            assert!(e.contains(expect), "{vars:?}: {e}");
        }
    }

    #[test]
    fn cloud_urls() {
        assert!(CloudEndpoint::parse("http://10.0.0.2:5000", "/v1/classify").is_ok());
        assert_eq!(
            CloudEndpoint::parse("http://cloud:5000/prefix/", "/v1/classify")
                .unwrap()
                .uri
                .path(),
            "/prefix/v1/classify"
        );
        for (url, expect) in [
            ("https://cloud", "only http://"),
            ("cloud:5000", "URL"),
            ("ftp://cloud", "not an http:// URL"),
            ("http://", "not a URL"),
            ("http://cloud?x=1", "query"),
        ] {
            let e = CloudEndpoint::parse(url, "/v1/classify").unwrap_err();
            assert!(e.contains(expect), "{url}: {e}");
        }
    }

    #[test]
    fn a_cloud_answer_must_be_predictions_over_the_same_labels() {
        let labels = vec!["negative".to_owned(), "positive".to_owned()];
        let good = json!({"results": [
            {"label": "positive", "scores": {"negative": 0.1, "positive": 0.9}, "extra": "x"}
        ]});
        let got = cloud_predictions(&good, 1, &labels).unwrap();
        assert_eq!(
            got[0],
            json!({"label": "positive", "scores": {"negative": 0.1, "positive": 0.9}, "source": "cloud"})
        );
        for bad in [
            json!({"results": []}),
            json!({"results": [{"label": "neutral", "scores": {"negative": 0.1, "positive": 0.9}}]}),
            json!({"results": [{"label": "positive", "scores": {"negative": 0.1}}]}),
            json!({"results": [{"label": "positive", "scores": {"negative": 0.1, "happy": 0.9}}]}),
            json!({"results": [{"label": "positive", "scores": {"negative": -1, "positive": 2}}]}),
            json!({"results": [{"label": 1, "scores": {}}]}),
            json!({"error": "x"}),
            json!([1, 2]),
        ] {
            assert!(cloud_predictions(&bad, 1, &labels).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_tries_once_after_the_cooldown() {
        let mut b = Breaker::default();
        let t0 = Instant::now();
        let cool = Duration::from_secs(10);
        assert_eq!(b.admit(t0), Admit::Call);
        b.failure(t0, 2, cool);
        assert_eq!(b.admit(t0), Admit::Call);
        b.success();
        b.failure(t0, 2, cool);
        assert_eq!(b.admit(t0), Admit::Call, "the success reset the count");
        b.failure(t0, 2, cool);
        assert_eq!((b.admit(t0), b.state(t0)), (Admit::Refuse, 1));
        let later = t0 + cool;
        assert_eq!(b.admit(later), Admit::Trial);
        assert_eq!(
            (b.admit(later), b.state(later)),
            (Admit::Refuse, 2),
            "one trial at a time"
        );
        b.failure(later, 2, cool);
        assert_eq!(
            b.admit(later),
            Admit::Refuse,
            "a failed trial opens it again"
        );
        assert_eq!(b.admit(later + cool), Admit::Trial);
        b.success();
        assert_eq!(
            (b.admit(later + cool), b.state(later + cool)),
            (Admit::Call, 0)
        );
    }

    #[test]
    fn report_times_are_sedna_s_format() {
        assert_eq!(sedna_time(UNIX_EPOCH), "1970-01-01 00:00:00");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56 UTC
        assert_eq!(sedna_time(t), "2024-02-29 12:34:56");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
