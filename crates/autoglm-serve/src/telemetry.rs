//! OpenTelemetry: traces and metrics over OTLP (http/protobuf), configured by the standard
//! `OTEL_*` variables ([`OtelConfig::from_env`]), built with the `otel` feature.
//!
//! Spans: one server span per request (`POST /v1/classify`, its parent from an incoming W3C
//! `traceparent`), and under it `queue wait`, `tokenize` and `inference` (the batch the
//! request's texts ran in, with the batch's size) and `cloud call` (joint inference, whose
//! `traceparent` goes to the cloud, so that the cloud's spans join the same trace). Metrics:
//! `http.server.request.duration`, `autoglm.joint.hard_examples`, `autoglm.joint.fallbacks`,
//! `autoglm.joint.cloud.duration`.
//!
//! Nothing is set up, and no request pays for it, when no endpoint is configured: the router
//! then has no tracing layer at all.

use crate::error::ServeError;
use std::time::Duration;

/// Where and how to export, from the `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelConfig {
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
    pub traces_endpoint: String,
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, or `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/metrics`.
    pub metrics_endpoint: String,
    /// `OTEL_SERVICE_NAME` (`service.name` in `OTEL_RESOURCE_ATTRIBUTES` otherwise;
    /// `autoglm-serve` by default).
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`: `key=value,key=value` (values percent-decoded).
    pub resource: Vec<(String, String)>,
    /// `OTEL_BSP_SCHEDULE_DELAY` (ms, default 5000): how often spans are sent.
    pub schedule_delay: Duration,
    /// `OTEL_METRIC_EXPORT_INTERVAL` (ms, default 60000): how often metrics are sent.
    pub metric_interval: Duration,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (ms, default 10000): one export's deadline.
    pub timeout: Duration,
}

impl OtelConfig {
    /// The configuration the variables read through `get` describe; `None` when no endpoint is
    /// set or `OTEL_SDK_DISABLED=true`. A protocol other than `http/protobuf`, a bad URL or a
    /// bad number is an error naming the variable.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ServeError> {
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let err = |m: String| ServeError::Config(m);
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let base = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        let endpoint = |specific: &str, path: &str| -> Option<String> {
            var(specific).or_else(|| {
                base.as_ref()
                    .map(|b| format!("{}{path}", b.trim_end_matches('/')))
            })
        };
        let (Some(traces_endpoint), Some(metrics_endpoint)) = (
            endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces"),
            endpoint("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "/v1/metrics"),
        ) else {
            if base.is_none()
                && (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
                    || var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some())
            {
                return Err(err(
                    "set OTEL_EXPORTER_OTLP_ENDPOINT, or both OTEL_EXPORTER_OTLP_TRACES_ENDPOINT \
                     and OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
                        .into(),
                ));
            }
            return Ok(None);
        };
        for name in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ] {
            if let Some(p) = var(name) {
                if p != "http/protobuf" {
                    return Err(err(format!(
                        "{name}={p}: this build exports OTLP over http/protobuf only (no grpc or \
                         http/json)"
                    )));
                }
            }
        }
        for (name, url) in [("traces", &traces_endpoint), ("metrics", &metrics_endpoint)] {
            let ok = url
                .parse::<axum::http::Uri>()
                .ok()
                .is_some_and(|u| matches!(u.scheme_str(), Some("http")) && u.host().is_some());
            if !ok {
                return Err(err(format!(
                    "the OTLP {name} endpoint `{url}` is not an http:// URL (https needs a \
                     collector sidecar on the node)"
                )));
            }
        }
        let millis = |name: &str, default: u64| -> Result<Duration, ServeError> {
            match var(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|&ms| (1..=3_600_000).contains(&ms))
                    .map(Duration::from_millis)
                    .ok_or_else(|| err(format!("{name}={v}: not 1 to 3600000 ms"))),
            }
        };
        let mut resource = Vec::new();
        if let Some(attrs) = var("OTEL_RESOURCE_ATTRIBUTES") {
            for pair in attrs.split(',').filter(|p| !p.trim().is_empty()) {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(err(format!(
                        "OTEL_RESOURCE_ATTRIBUTES: `{pair}` is not key=value"
                    )));
                };
                let (k, v) = (k.trim(), percent_decode(v.trim()));
                if k.is_empty() {
                    return Err(err(format!(
                        "OTEL_RESOURCE_ATTRIBUTES: `{pair}` has no key"
                    )));
                }
                resource.push((k.to_owned(), v));
            }
        }
        let service_name = var("OTEL_SERVICE_NAME")
            .or_else(|| {
                resource
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "autoglm-serve".into());
        resource.retain(|(k, _)| k != "service.name");
        Ok(Some(OtelConfig {
            traces_endpoint,
            metrics_endpoint,
            service_name,
            resource,
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5000)?,
            metric_interval: millis("OTEL_METRIC_EXPORT_INTERVAL", 60_000)?,
            timeout: millis("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
        }))
    }
}

/// `%XX` escapes decoded (W3C Baggage octets, as `OTEL_RESOURCE_ATTRIBUTES` allows); a
/// malformed escape is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(feature = "otel")]
pub(crate) use otel::{trace_request, Telemetry};

#[cfg(not(feature = "otel"))]
pub(crate) use disabled::Telemetry;

/// What a batch's job learns about its batch, for the spans.
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub struct BatchTimes {
    pub start: std::time::Instant,
    pub tokenized: std::time::Instant,
    pub finished: std::time::Instant,
    pub texts: usize,
}

/// The outcome of a cloud call, for its span.
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum CloudOutcome<'a> {
    Answered,
    Fallback(&'a str),
}

#[cfg(not(feature = "otel"))]
mod disabled {
    use super::{BatchTimes, CloudOutcome, OtelConfig};
    use crate::error::ServeError;
    use axum::http::{HeaderName, HeaderValue};
    use std::time::Instant;

    /// Built without the `otel` feature: never constructed.
    #[derive(Debug)]
    pub(crate) enum Telemetry {}

    impl Telemetry {
        pub(crate) fn start(_config: &OtelConfig) -> Result<Option<Self>, ServeError> {
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but this build has no OpenTelemetry \
                 export (cargo feature `otel`): nothing is exported"
            );
            Ok(None)
        }
        pub(crate) fn batch_spans(&self, _enqueued: Instant, _times: &BatchTimes, _model: &str) {
            match *self {}
        }
        pub(crate) fn cloud_call(&self, _texts: usize) -> CloudCall {
            match *self {}
        }
        pub(crate) fn joint_counts(&self, _texts: u64, _hard: u64) {
            match *self {}
        }
        pub(crate) fn fallback(&self, _reason: &str, _texts: usize) {
            match *self {}
        }
        pub(crate) fn flush(&self) {
            match *self {}
        }
    }

    #[derive(Debug)]
    pub(crate) enum CloudCall {}

    impl CloudCall {
        pub(crate) fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
            match *self {}
        }
        pub(crate) fn end(self, _outcome: CloudOutcome<'_>, _texts: usize) {
            match self {}
        }
    }

    /// Runs `future` as it is (no context to carry).
    pub(crate) fn in_current_context<F: std::future::Future>(future: F) -> F {
        future
    }
}

#[cfg(not(feature = "otel"))]
pub(crate) use disabled::in_current_context;

#[cfg(feature = "otel")]
pub(crate) use otel::in_current_context;

#[cfg(feature = "otel")]
mod otel {
    use super::{BatchTimes, CloudOutcome, OtelConfig};
    use crate::error::ServeError;
    use crate::AppState;
    use axum::body::Bytes;
    use axum::extract::{MatchedPath, Request, State};
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use axum::middleware::Next;
    use axum::response::Response;
    use http_body_util::{BodyExt, Full, Limited};
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use opentelemetry::context::FutureExt;
    use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::{
        Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_http::{HttpClient, HttpError};
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{
        BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
    };
    use opentelemetry_sdk::Resource;
    use std::sync::Mutex;
    use std::time::{Duration, Instant, SystemTime};

    /// The exporters, the tracer and the instruments of a running service.
    #[derive(Debug)]
    pub(crate) struct Telemetry {
        tracer_provider: SdkTracerProvider,
        meter_provider: SdkMeterProvider,
        tracer: SdkTracer,
        propagator: TraceContextPropagator,
        request_duration: Histogram<f64>,
        hard_examples: Counter<u64>,
        joint_texts: Counter<u64>,
        fallbacks: Counter<u64>,
        cloud_duration: Histogram<f64>,
        /// Stops the export runtime's thread when dropped.
        stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    }

    /// The OTLP exporters' HTTP client: hyper, on a small runtime of its own (the SDK exports
    /// from its own threads, outside any tokio runtime), each export bounded in time and in the
    /// size of the collector's answer.
    #[derive(Debug)]
    struct ExportClient {
        client: Client<HttpConnector, Full<Bytes>>,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
    }

    #[async_trait::async_trait]
    impl HttpClient for ExportClient {
        async fn send_bytes(
            &self,
            request: axum::http::Request<Bytes>,
        ) -> Result<axum::http::Response<Bytes>, HttpError> {
            let client = self.client.clone();
            let timeout = self.timeout;
            let (parts, body) = request.into_parts();
            let request = axum::http::Request::from_parts(parts, Full::new(body));
            let task = self.runtime.spawn(async move {
                let call = async {
                    let response = client.request(request).await?;
                    let (parts, body) = response.into_parts();
                    let body = Limited::new(body, 4 << 20).collect().await?.to_bytes();
                    Ok::<_, HttpError>(axum::http::Response::from_parts(parts, body))
                };
                match tokio::time::timeout(timeout, call).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {timeout:?}").into()),
                }
            });
            task.await?
        }
    }

    impl Telemetry {
        pub(crate) fn start(config: &OtelConfig) -> Result<Option<Self>, ServeError> {
            let fail = |what: &str, e: &dyn std::fmt::Display| {
                ServeError::Config(format!("OpenTelemetry {what}: {e}"))
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| fail("export runtime", &e))?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name("otel-export".into())
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    })
                })
                .map_err(|e| fail("export thread", &e))?;
            let client = || {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(config.timeout));
                ExportClient {
                    client: Client::builder(TokioExecutor::new()).build(connector),
                    runtime: handle.clone(),
                    timeout: config.timeout,
                }
            };
            let resource = Resource::builder_empty()
                .with_service_name(config.service_name.clone())
                .with_attributes(
                    config
                        .resource
                        .iter()
                        .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
                )
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build();
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client())
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(config.traces_endpoint.clone())
                .with_timeout(config.timeout)
                .build()
                .map_err(|e| fail("span exporter", &e))?;
            let processor = BatchSpanProcessor::builder(spans)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(config.schedule_delay)
                        .build(),
                )
                .build();
            let tracer_provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(resource.clone())
                .build();
            let metrics = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_http_client(client())
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(config.metrics_endpoint.clone())
                .with_timeout(config.timeout)
                .build()
                .map_err(|e| fail("metric exporter", &e))?;
            let reader = PeriodicReader::builder(metrics)
                .with_interval(config.metric_interval)
                .build();
            let meter_provider = SdkMeterProvider::builder()
                .with_reader(reader)
                .with_resource(resource)
                .build();
            let meter = meter_provider.meter("autoglm-serve");
            let tracer = tracer_provider.tracer("autoglm-serve");
            tracing::info!(
                traces = %config.traces_endpoint,
                metrics = %config.metrics_endpoint,
                service = %config.service_name,
                "exporting OpenTelemetry traces and metrics (OTLP http/protobuf)"
            );
            Ok(Some(Telemetry {
                tracer_provider,
                tracer,
                propagator: TraceContextPropagator::new(),
                request_duration: meter
                    .f64_histogram("http.server.request.duration")
                    .with_unit("s")
                    .with_description("Time from request to response, by route template")
                    .with_boundaries(vec![
                        0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
                    ])
                    .build(),
                joint_texts: meter
                    .u64_counter("autoglm.joint.texts")
                    .with_description("Texts the hard-example rule judged")
                    .build(),
                hard_examples: meter
                    .u64_counter("autoglm.joint.hard_examples")
                    .with_description("Texts judged hard examples")
                    .build(),
                fallbacks: meter
                    .u64_counter("autoglm.joint.fallbacks")
                    .with_description("Hard examples answered locally, by reason")
                    .build(),
                cloud_duration: meter
                    .f64_histogram("autoglm.joint.cloud.duration")
                    .with_unit("s")
                    .with_description("Time of one call to the cloud")
                    .build(),
                meter_provider,
                stop: Mutex::new(Some(stop)),
            }))
        }

        /// `queue wait`, `tokenize` and `inference` under the current (request) span.
        pub(crate) fn batch_spans(&self, enqueued: Instant, times: &BatchTimes, model: &str) {
            let parent = Context::current();
            for (name, from, to) in [
                ("queue wait", enqueued, times.start),
                ("tokenize", times.start, times.tokenized),
                ("inference", times.tokenized, times.finished),
            ] {
                let mut span = self
                    .tracer
                    .span_builder(name)
                    .with_kind(SpanKind::Internal)
                    .with_start_time(wall(from))
                    .with_attributes([
                        KeyValue::new("autoglm.model", model.to_owned()),
                        KeyValue::new("autoglm.batch.texts", times.texts as i64),
                    ])
                    .start_with_context(&self.tracer, &parent);
                span.end_with_timestamp(wall(to));
            }
        }

        /// A `cloud call` span under the current one; its headers carry its trace context.
        pub(crate) fn cloud_call(&self, texts: usize) -> CloudCall<'_> {
            let span = self
                .tracer
                .span_builder("cloud call")
                .with_kind(SpanKind::Client)
                .with_attributes([KeyValue::new("autoglm.joint.texts", texts as i64)])
                .start_with_context(&self.tracer, &Context::current());
            CloudCall {
                telemetry: self,
                cx: Context::current().with_span(span),
                start: Instant::now(),
            }
        }

        pub(crate) fn joint_counts(&self, texts: u64, hard: u64) {
            self.joint_texts.add(texts, &[]);
            self.hard_examples.add(hard, &[]);
        }

        /// Sends what is buffered (at shutdown).
        pub(crate) fn flush(&self) {
            let _ = self.tracer_provider.force_flush();
            let _ = self.meter_provider.force_flush();
        }
    }

    impl Drop for Telemetry {
        fn drop(&mut self) {
            let _ = self.tracer_provider.shutdown();
            let _ = self.meter_provider.shutdown();
            if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = stop.send(());
            }
        }
    }

    /// An open `cloud call` span.
    #[derive(Debug)]
    pub(crate) struct CloudCall<'a> {
        telemetry: &'a Telemetry,
        cx: Context,
        start: Instant,
    }

    impl CloudCall<'_> {
        /// `traceparent` (and `tracestate`) naming this span as the parent.
        pub(crate) fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
            let mut headers = HeaderMap::new();
            self.telemetry
                .propagator
                .inject_context(&self.cx, &mut HeaderInjector(&mut headers));
            headers
                .into_iter()
                .filter_map(|(k, v)| Some((k?, v)))
                .collect()
        }

        pub(crate) fn end(self, outcome: CloudOutcome<'_>, texts: usize) {
            let span = self.cx.span();
            self.telemetry
                .cloud_duration
                .record(self.start.elapsed().as_secs_f64(), &[]);
            match outcome {
                CloudOutcome::Answered => span.set_status(Status::Ok),
                CloudOutcome::Fallback(reason) => {
                    span.set_attribute(KeyValue::new("autoglm.joint.fallback", reason.to_owned()));
                    span.set_status(Status::error(format!("fallback: {reason}")));
                    self.telemetry
                        .fallbacks
                        .add(texts as u64, &[KeyValue::new("reason", reason.to_owned())]);
                }
            }
            span.end();
        }
    }

    /// Counts a fallback that never reached a call (an open circuit, no free slot).
    impl Telemetry {
        pub(crate) fn fallback(&self, reason: &str, texts: usize) {
            self.fallbacks
                .add(texts as u64, &[KeyValue::new("reason", reason.to_owned())]);
        }
    }

    /// `future`, run in the caller's trace context (for a spawned task).
    pub(crate) fn in_current_context<F: std::future::Future>(
        future: F,
    ) -> opentelemetry::context::WithContext<F> {
        future.with_current_context()
    }

    /// The request span: the parent comes from `traceparent`; the route template names it.
    pub(crate) async fn trace_request(
        State(state): State<AppState>,
        request: Request,
        next: Next,
    ) -> Response {
        let Some(telemetry) = state.inner.telemetry.as_ref() else {
            return next.run(request).await;
        };
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str)
            .to_owned();
        let method = request.method().as_str().to_owned();
        let parent = telemetry
            .propagator
            .extract(&HeaderExtractor(request.headers()));
        let span = telemetry
            .tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route.clone()),
            ])
            .start_with_context(&telemetry.tracer, &parent);
        let cx = parent.with_span(span);
        let start = Instant::now();
        let response = next.run(request).with_context(cx.clone()).await;
        let status = response.status();
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_status(Status::error(status.to_string()));
        }
        span.end();
        telemetry.request_duration.record(
            start.elapsed().as_secs_f64(),
            &[
                KeyValue::new("http.route", route),
                KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
            ],
        );
        response
    }

    fn wall(t: Instant) -> SystemTime {
        let ago = Instant::now().saturating_duration_since(t);
        SystemTime::now() - ago
    }

    struct HeaderExtractor<'a>(&'a HeaderMap);

    impl Extractor for HeaderExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key)?.to_str().ok()
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(HeaderName::as_str).collect()
        }
    }

    struct HeaderInjector<'a>(&'a mut HeaderMap);

    impl Injector for HeaderInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                self.0.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Option<OtelConfig>, ServeError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtelConfig::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn the_standard_variables() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        assert_eq!(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "true")
            ])
            .unwrap(),
            None
        );
        let c = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.node.name=gw-7, deployment.environment=a%20b",
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_endpoint, "http://collector:4318/v1/traces");
        assert_eq!(c.metrics_endpoint, "http://collector:4318/v1/metrics");
        assert_eq!(c.service_name, "autoglm-serve");
        assert_eq!(
            c.resource,
            vec![
                ("k8s.node.name".to_owned(), "gw-7".to_owned()),
                ("deployment.environment".to_owned(), "a b".to_owned())
            ]
        );
        assert_eq!(c.schedule_delay, Duration::from_millis(250));
        assert_eq!(c.metric_interval, Duration::from_secs(60));
        let c = env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:2/y"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=edge-a"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                c.traces_endpoint.as_str(),
                c.metrics_endpoint.as_str(),
                c.service_name.as_str()
            ),
            ("http://t:1/x", "http://m:2/y", "edge-a")
        );
        assert!(c.resource.is_empty());
        for (vars, expect) in [
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                "http/protobuf only",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "not an http:// URL",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
                ],
                "OTEL_BSP_SCHEDULE_DELAY",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
                ],
                "key=value",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t")],
                "both",
            ),
        ] {
            let e = env(&vars).unwrap_err().to_string();
            assert!(e.contains(expect), "{vars:?}: {e}");
        }
        assert_eq!(percent_decode("a%2Cb%zz%4"), "a,b%zz%4");
    }
}
