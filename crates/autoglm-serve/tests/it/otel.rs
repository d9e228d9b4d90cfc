//! OpenTelemetry end to end: an edge and a cloud server export to an OTLP/HTTP receiver written
//! here (protobuf decoded with opentelemetry-proto's types); a request with a W3C `traceparent`
//! gives one trace across both servers.

use crate::server::Server;
use crate::Packages;
use autoglm_serve::{HardExampleRule, JointConfig, OtelConfig};
use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
struct GotSpan {
    service: String,
    resource: HashMap<String, String>,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
}

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<GotSpan>>>,
    metrics: Arc<Mutex<Vec<(String, String)>>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some((kv.key.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

async fn receiver() -> (SocketAddr, Receiver) {
    let got = Receiver::default();
    let traces = got.clone();
    let metrics = got.clone();
    let router = Router::new()
        .route(
            "/v1/traces",
            post(move |body: Bytes| {
                let got = traces.clone();
                async move {
                    let request =
                        ExportTraceServiceRequest::decode(body).expect("OTLP traces protobuf");
                    for rs in request.resource_spans {
                        let resource =
                            attributes(&rs.resource.map(|r| r.attributes).unwrap_or_default());
                        for ss in rs.scope_spans {
                            for s in ss.spans {
                                got.spans.lock().unwrap().push(GotSpan {
                                    service: resource
                                        .get("service.name")
                                        .cloned()
                                        .unwrap_or_default(),
                                    resource: resource.clone(),
                                    name: s.name,
                                    trace_id: hex(&s.trace_id),
                                    span_id: hex(&s.span_id),
                                    parent: hex(&s.parent_span_id),
                                });
                            }
                        }
                    }
                    ([("content-type", "application/x-protobuf")], Bytes::new())
                }
            }),
        )
        .route(
            "/v1/metrics",
            post(move |body: Bytes| {
                let got = metrics.clone();
                async move {
                    let request =
                        ExportMetricsServiceRequest::decode(body).expect("OTLP metrics protobuf");
                    for rm in request.resource_metrics {
                        let resource =
                            attributes(&rm.resource.map(|r| r.attributes).unwrap_or_default());
                        let service = resource.get("service.name").cloned().unwrap_or_default();
                        for sm in rm.scope_metrics {
                            for m in sm.metrics {
                                got.metrics.lock().unwrap().push((service.clone(), m.name));
                            }
                        }
                    }
                    ([("content-type", "application/x-protobuf")], Bytes::new())
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, got)
}

fn otel(addr: SocketAddr, service: &str) -> OtelConfig {
    OtelConfig {
        traces_endpoint: format!("http://{addr}/v1/traces"),
        metrics_endpoint: format!("http://{addr}/v1/metrics"),
        service_name: service.into(),
        resource: vec![("k8s.node.name".into(), format!("{service}-node"))],
        schedule_delay: Duration::from_millis(100),
        metric_interval: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn spans_arrive_over_otlp_with_the_parent_from_traceparent_across_edge_and_cloud() {
    let p = Packages::new();
    let (collector, got) = receiver().await;
    let mut cloud = p.config();
    cloud.telemetry = Some(otel(collector, "cloud"));
    let cloud = Server::plain(&cloud).await;
    let cloud_addr = cloud.addr;
    let mut edge = p.config();
    edge.telemetry = Some(otel(collector, "edge"));
    edge.joint = Some(JointConfig::new(
        format!("http://{cloud_addr}"),
        HardExampleRule::Always,
    ));
    let edge = Server::plain(&edge).await;
    let edge_addr = edge.addr;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = hyper::Request::post(format!("http://{edge_addr}/v1/classify"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .body(Full::new(Bytes::from(
            json!({"texts": ["bad", "good"]}).to_string(),
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["results"][0]["source"], "cloud", "{body}");

    let wanted = [
        ("edge", "POST /v1/classify"),
        ("edge", "queue wait"),
        ("edge", "tokenize"),
        ("edge", "inference"),
        ("edge", "cloud call"),
        ("cloud", "POST /v1/classify"),
        ("cloud", "queue wait"),
        ("cloud", "tokenize"),
        ("cloud", "inference"),
    ];
    let find = |spans: &[GotSpan], service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.name == name)
            .cloned()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans = got.spans.lock().unwrap().clone();
        if wanted
            .iter()
            .all(|(svc, name)| find(&spans, svc, name).is_some())
        {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans so far: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let span = |service: &str, name: &str| find(&spans, service, name).unwrap();
    for (service, name) in wanted {
        let s = span(service, name);
        assert_eq!(s.trace_id, trace, "{service} {name}: another trace");
        assert_eq!(s.resource["k8s.node.name"], format!("{service}-node"));
    }
    let edge_request = span("edge", "POST /v1/classify");
    assert_eq!(
        edge_request.parent, caller,
        "the request span's parent is the traceparent's"
    );
    for name in ["queue wait", "tokenize", "inference", "cloud call"] {
        assert_eq!(span("edge", name).parent, edge_request.span_id, "{name}");
    }
    let cloud_request = span("cloud", "POST /v1/classify");
    assert_eq!(
        cloud_request.parent,
        span("edge", "cloud call").span_id,
        "the cloud's request span is a child of the edge's cloud call"
    );
    for name in ["queue wait", "tokenize", "inference"] {
        assert_eq!(span("cloud", name).parent, cloud_request.span_id, "{name}");
    }

    // Metrics too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = got.metrics.lock().unwrap().clone();
        let has = |svc: &str, name: &str| metrics.iter().any(|(s, n)| s == svc && n == name);
        if has("edge", "http.server.request.duration")
            && has("edge", "autoglm.joint.hard_examples")
            && has("edge", "autoglm.joint.cloud.duration")
            && has("cloud", "http.server.request.duration")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics so far: {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_a_traceparent_the_request_starts_a_trace() {
    let p = Packages::new();
    let (collector, got) = receiver().await;
    let mut config = p.config();
    config.telemetry = Some(otel(collector, "solo"));
    let server = Server::plain(&config).await;
    let addr = server.addr;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = hyper::Request::post(format!("http://{addr}/v1/classify"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json!({"texts": ["x"]}).to_string())))
        .unwrap();
    assert_eq!(client.request(request).await.unwrap().status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let spans = got.spans.lock().unwrap().clone();
        if let Some(root) = spans.iter().find(|s| s.name == "POST /v1/classify") {
            assert_eq!(root.parent, "", "a root span");
            assert_eq!(root.trace_id.len(), 32);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request span: {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
