//! The service's metrics, exposed at `/metrics` in OpenMetrics text.
//!
//! Label values are bounded: routes are the router's templates (`/v2/models/{name}/infer`, never
//! the request path) and models are the configured names, so a scraper never sees a label set
//! grow with traffic.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelInfo {
    pub model: String,
    pub kind: String,
    /// First 12 hex digits of the manifest's sha256: the manifest lists every file's digest, so
    /// this names the exact package that answers.
    pub version: String,
    pub base: String,
    pub adapter: String,
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadResult {
    pub model: String,
    pub result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to ~16 s: a cached short text up to a queue that waited out its deadline.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

/// Every metric the service keeps; cheap to share (each family is internally synchronized).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteStatus, Counter>,
    pub errors: Family<RouteStatus, Counter>,
    pub request_seconds: HistogramFamily<RouteLabel>,
    pub queue_wait_seconds: HistogramFamily<ModelLabel>,
    pub inference_seconds: HistogramFamily<ModelLabel>,
    pub batch_texts: HistogramFamily<ModelLabel>,
    pub queue_texts: Family<ModelLabel, Gauge>,
    pub texts: Family<ModelLabel, Counter>,
    pub tokens: Family<ModelLabel, Counter>,
    pub model_info: Family<ModelInfo, Gauge>,
    pub load_seconds: Family<ModelLabel, Gauge<f64, AtomicU64>>,
    pub reloads: Family<ReloadResult, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("autoglm");
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template and status",
            requests.clone(),
        );
        let errors = Family::<RouteStatus, Counter>::default();
        registry.register(
            "http_errors",
            "HTTP requests answered with a 4xx or 5xx status",
            errors.clone(),
        );
        let request_seconds: HistogramFamily<RouteLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from request to response, by route template",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let queue_wait_seconds: HistogramFamily<ModelLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "queue_wait",
            "Time a request's texts waited before their batch started",
            Unit::Seconds,
            queue_wait_seconds.clone(),
        );
        let inference_seconds: HistogramFamily<ModelLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "batch_duration",
            "Time to tokenize and run one batch",
            Unit::Seconds,
            inference_seconds.clone(),
        );
        let batch_texts: HistogramFamily<ModelLabel> =
            Family::new_with_constructor(batch_histogram);
        registry.register(
            "batch_texts",
            "Texts run together in one batch",
            batch_texts.clone(),
        );
        let queue_texts = Family::<ModelLabel, Gauge>::default();
        registry.register(
            "queue_texts",
            "Texts waiting for a batch (queue depth)",
            queue_texts.clone(),
        );
        let texts = Family::<ModelLabel, Counter>::default();
        registry.register("texts", "Texts run through a model", texts.clone());
        let tokens = Family::<ModelLabel, Counter>::default();
        registry.register(
            "tokens",
            "Tokens run through a model (special tokens included, after truncation)",
            tokens.clone(),
        );
        let model_info = Family::<ModelInfo, Gauge>::default();
        registry.register(
            "model_info",
            "The package each model name serves (value 1)",
            model_info.clone(),
        );
        let load_seconds = Family::<ModelLabel, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "model_load",
            "Time the serving package took to load and verify",
            Unit::Seconds,
            load_seconds.clone(),
        );
        let reloads = Family::<ReloadResult, Counter>::default();
        registry.register(
            "model_reloads",
            "Package reloads, by result (success or failure)",
            reloads.clone(),
        );
        Metrics {
            registry,
            requests,
            errors,
            request_seconds,
            queue_wait_seconds,
            inference_seconds,
            batch_texts,
            queue_texts,
            texts,
            tokens,
            model_info,
            load_seconds,
            reloads,
        }
    }

    pub fn model(name: &str) -> ModelLabel {
        ModelLabel {
            model: name.to_owned(),
        }
    }

    /// Where other modules register their own metrics (before the service starts).
    pub(crate) fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The OpenMetrics exposition (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
