//! Joint inference end to end on loopback: an edge server and a cloud server (both real, on
//! ports), fake clouds that fail, lie or hang, and a fake Sedna local controller.

use crate::server::Server;
use crate::Packages;
use autoglm_serve::{Config, HardExampleRule, JointConfig, LcReport};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Any axum router on a loopback port (the fake clouds and the fake local controller).
async fn fake(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn http(
    method: &str,
    url: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let response = client
        .request(
            request
                .header("content-type", "application/json")
                .body(Full::new(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn classify(server: &Server, texts: &[&str], headers: &[(&str, &str)]) -> Vec<Value> {
    let url = format!("{}/v1/classify", server.url());
    let (status, text) = http("POST", &url, Some(json!({ "texts": texts })), headers).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["results"].as_array().unwrap().clone()
}

/// The value of the metric line that starts with `prefix` (0 when there is none).
async fn metric(server: &Server, prefix: &str) -> f64 {
    let (_, text) = http("GET", &format!("{}/metrics", server.url()), None, &[]).await;
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .map_or(0.0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

fn top(result: &Value) -> f64 {
    result["scores"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .fold(0.0, f64::max)
}

fn edge_config(p: &Packages, joint: JointConfig) -> Config {
    let mut config = p.config();
    config.joint = Some(joint);
    config
}

const TEXTS: [&str; 6] = [
    "the film was good !",
    "bad",
    "not very good movies",
    "a great movie !",
    "terrible , boring",
    "",
];

#[tokio::test]
async fn hard_examples_are_answered_by_the_cloud_server() {
    let p = Packages::new();
    let cloud = Server::plain(&p.config()).await;
    // The local answers (same package), to put the threshold between two top scores.
    let local = classify(&cloud, &TEXTS, &[]).await;
    assert!(local.iter().all(|r| r["source"] == "edge"), "{local:?}");
    let mut tops: Vec<f64> = local.iter().map(top).collect();
    tops.sort_by(f64::total_cmp);
    tops.dedup();
    assert!(
        tops.len() >= 3,
        "the fixture's top scores are too alike: {tops:?}"
    );
    let threshold = ((tops[1] + tops[2]) / 2.0) as f32;
    let joint = JointConfig::new(cloud.url(), HardExampleRule::TopScoreBelow(threshold));
    let edge = Server::plain(&edge_config(&p, joint)).await;
    let cloud_texts_before = metric(&cloud, "autoglm_texts_total{model=\"cls\"}").await;
    let answers = classify(&edge, &TEXTS, &[]).await;
    let mut hard = 0;
    for (a, l) in answers.iter().zip(&local) {
        let expected = if top(l) < f64::from(threshold) {
            "cloud"
        } else {
            "edge"
        };
        assert_eq!(a["source"], expected, "{a} (local top {})", top(l));
        assert_eq!(a["label"], l["label"]);
        hard += usize::from(expected == "cloud");
    }
    assert!(hard >= 2 && hard < TEXTS.len(), "{hard}");
    // The cloud really ran the hard ones, and only those.
    let cloud_texts = metric(&cloud, "autoglm_texts_total{model=\"cls\"}").await;
    assert_eq!(cloud_texts - cloud_texts_before, hard as f64);
    assert_eq!(
        metric(&edge, "autoglm_joint_texts_total").await,
        TEXTS.len() as f64
    );
    assert_eq!(
        metric(&edge, "autoglm_joint_hard_examples_total").await,
        hard as f64
    );
    assert_eq!(
        metric(&edge, "autoglm_joint_cloud_answers_total").await,
        hard as f64
    );
    assert_eq!(
        metric(&edge, "autoglm_joint_cloud_request_duration_seconds_count").await,
        1.0
    );
    // A model other than the escalating one answers locally, without the joint path.
    let (status, text) = http(
        "POST",
        &format!("{}/v1/embed", edge.url()),
        Some(json!({"texts": ["x"], "model": "emb"})),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // EdgeOnly sends nothing; CloudOnly sends everything.
    for (rule, cloud_answers) in [
        (HardExampleRule::Never, 0),
        (HardExampleRule::Always, TEXTS.len()),
    ] {
        let edge = Server::plain(&edge_config(&p, JointConfig::new(cloud.url(), rule))).await;
        let answers = classify(&edge, &TEXTS, &[]).await;
        let n = answers.iter().filter(|a| a["source"] == "cloud").count();
        assert_eq!(n, cloud_answers, "{rule:?}");
    }
}

#[tokio::test]
async fn a_cloud_that_is_down_leaves_the_local_answer_and_counts_a_fallback() {
    let p = Packages::new();
    // A port nobody listens on any more.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    let edge = Server::plain(&edge_config(
        &p,
        JointConfig::new(url, HardExampleRule::Always),
    ))
    .await;
    let answers = classify(&edge, &TEXTS[..3], &[]).await;
    assert!(answers.iter().all(|a| a["source"] == "edge"), "{answers:?}");
    assert_eq!(
        metric(&edge, "autoglm_joint_fallbacks_total{reason=\"connect\"}").await,
        3.0
    );
    assert_eq!(
        metric(&edge, "autoglm_joint_cloud_answers_total").await,
        0.0
    );
    assert_eq!(
        metric(
            &edge,
            "autoglm_http_errors_total{route=\"/v1/classify\",status=\"500\"}"
        )
        .await,
        0.0
    );
}

/// A fake cloud: fails with 500 while `healthy` is false, else answers "good" for every text;
/// counts its calls and keeps the last `traceparent` it saw.
#[derive(Clone, Default)]
struct FakeCloud {
    calls: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    traceparent: Arc<Mutex<Option<String>>>,
}

async fn fake_cloud_classify(
    State(fake): State<FakeCloud>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    fake.calls.fetch_add(1, Ordering::SeqCst);
    *fake.traceparent.lock().unwrap() = headers
        .get("traceparent")
        .map(|v| v.to_str().unwrap().to_owned());
    if !fake.healthy.load(Ordering::SeqCst) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "{\"error\": \"down\"}".into(),
        );
    }
    let request: Value = serde_json::from_slice(&body).unwrap();
    let n = request["texts"].as_array().unwrap().len();
    let one = json!({"label": "good", "scores": {"bad": 0.05, "neutral": 0.05, "good": 0.9}});
    (
        StatusCode::OK,
        json!({ "results": vec![one; n] }).to_string(),
    )
}

#[tokio::test]
async fn the_circuit_breaker_opens_after_failures_and_closes_after_a_good_trial() {
    let p = Packages::new();
    let fake_cloud = FakeCloud::default();
    let addr = fake(
        Router::new()
            .route("/v1/classify", post(fake_cloud_classify))
            .with_state(fake_cloud.clone()),
    )
    .await;
    let mut joint = JointConfig::new(format!("http://{addr}"), HardExampleRule::Always);
    joint.breaker_failures = 2;
    joint.breaker_cooldown = Duration::from_millis(400);
    let edge = Server::plain(&edge_config(&p, joint)).await;
    let calls = || fake_cloud.calls.load(Ordering::SeqCst);
    for _ in 0..2 {
        let a = classify(&edge, &["bad"], &[]).await;
        assert_eq!(a[0]["source"], "edge");
    }
    assert_eq!(calls(), 2);
    assert_eq!(
        metric(&edge, "autoglm_joint_fallbacks_total{reason=\"status\"}").await,
        2.0
    );
    assert_eq!(metric(&edge, "autoglm_joint_circuit_state").await, 1.0);
    // Open: no call at all.
    for _ in 0..3 {
        let a = classify(&edge, &["bad"], &[]).await;
        assert_eq!(a[0]["source"], "edge");
    }
    assert_eq!(calls(), 2, "an open circuit called the cloud");
    assert_eq!(
        metric(
            &edge,
            "autoglm_joint_fallbacks_total{reason=\"circuit_open\"}"
        )
        .await,
        3.0
    );
    // After the cooldown one trial call; it fails: open again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    classify(&edge, &["bad"], &[]).await;
    classify(&edge, &["bad"], &[]).await;
    assert_eq!(calls(), 3);
    // The cloud recovers: the next trial closes the circuit, and the cloud answers.
    fake_cloud.healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let a = classify(&edge, &["bad", "x"], &[]).await;
    assert_eq!(
        (a[0]["source"].as_str(), a[0]["label"].as_str()),
        (Some("cloud"), Some("good"))
    );
    assert_eq!(calls(), 4);
    assert_eq!(metric(&edge, "autoglm_joint_circuit_state").await, 0.0);
    let a = classify(&edge, &["bad"], &[]).await;
    assert_eq!(a[0]["source"], "cloud");
    assert_eq!(calls(), 5);
}

#[tokio::test]
async fn the_trace_context_goes_to_the_cloud() {
    let p = Packages::new();
    let fake_cloud = FakeCloud::default();
    fake_cloud.healthy.store(true, Ordering::SeqCst);
    let addr = fake(
        Router::new()
            .route("/v1/classify", post(fake_cloud_classify))
            .with_state(fake_cloud.clone()),
    )
    .await;
    let joint = JointConfig::new(format!("http://{addr}"), HardExampleRule::Always);
    let edge = Server::plain(&edge_config(&p, joint)).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let a = classify(&edge, &["bad"], &[("traceparent", parent)]).await;
    assert_eq!(a[0]["source"], "cloud");
    let seen = fake_cloud.traceparent.lock().unwrap().clone().unwrap();
    // The same trace; the parent may be the edge's own span (with telemetry on) or the caller's.
    assert!(
        seen.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{seen}"
    );
}

#[tokio::test]
async fn a_lying_a_huge_or_a_slow_cloud_is_a_counted_fallback() {
    let p = Packages::new();
    let mode = Arc::new(Mutex::new("ok"));
    let m = mode.clone();
    let addr = fake(Router::new().route(
        "/v1/classify",
        post(move |body: Bytes| {
            let mode = *m.lock().unwrap();
            async move {
                let n = serde_json::from_slice::<Value>(&body).unwrap()["texts"].as_array().unwrap().len();
                let good = json!({"label": "good", "scores": {"bad": 0.1, "neutral": 0.1, "good": 0.8}});
                match mode {
                    "count" => json!({ "results": vec![good; n + 1] }).to_string(),
                    "label" => json!({ "results": vec![json!({"label": "great", "scores": {"great": 1.0}}); n] }).to_string(),
                    "scores" => json!({ "results": vec![json!({"label": "good", "scores": {"bad": 7, "neutral": 0, "good": 0.9}}); n] }).to_string(),
                    "garbage" => "<html>hello</html>".to_owned(),
                    "huge" => format!("{{\"results\": [], \"pad\": \"{}\"}}", "x".repeat(64 << 10)),
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        json!({ "results": vec![good; n] }).to_string()
                    }
                    _ => json!({ "results": vec![good; n] }).to_string(),
                }
            }
        }),
    ))
    .await;
    let mut joint = JointConfig::new(format!("http://{addr}"), HardExampleRule::Always);
    joint.breaker_failures = 1000;
    joint.timeout = Duration::from_millis(300);
    joint.max_response_bytes = 16 << 10;
    let edge = Server::plain(&edge_config(&p, joint)).await;
    assert_eq!(classify(&edge, &["a"], &[]).await[0]["source"], "cloud");
    for (m, reason) in [
        ("count", "invalid"),
        ("label", "invalid"),
        ("scores", "invalid"),
        ("garbage", "invalid"),
        ("huge", "too_large"),
        ("slow", "timeout"),
    ] {
        *mode.lock().unwrap() = m;
        let before = metric(
            &edge,
            &format!("autoglm_joint_fallbacks_total{{reason=\"{reason}\"}}"),
        )
        .await;
        let start = Instant::now();
        let a = classify(&edge, &["a", "b"], &[]).await;
        assert!(a.iter().all(|r| r["source"] == "edge"), "{m}: {a:?}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{m}: {:?}",
            start.elapsed()
        );
        let after = metric(
            &edge,
            &format!("autoglm_joint_fallbacks_total{{reason=\"{reason}\"}}"),
        )
        .await;
        assert_eq!(after - before, 2.0, "{m}");
    }
}

#[tokio::test]
async fn the_local_controller_gets_sedna_reports() {
    let p = Packages::new();
    let cloud = Server::plain(&p.config()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
    let lc = fake(Router::new().route(
        "/sedna/workers/{worker}/info",
        post(
            move |axum::extract::Path(worker): axum::extract::Path<String>, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((worker, serde_json::from_slice(&body).unwrap()));
                    "{}"
                }
            },
        ),
    ))
    .await;
    let mut joint = JointConfig::new(cloud.url(), HardExampleRule::ConfidenceBelow(1.0));
    joint.report = Some(LcReport {
        server: format!("http://{lc}"),
        worker_name: "edgeworker-t3st1".into(),
        service_name: "sentiment".into(),
        namespace: "fleet".into(),
        period: Duration::from_millis(200),
    });
    let edge = Server::plain(&edge_config(&p, joint)).await;
    // Nothing to report yet: a period without inference sends nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.try_recv().is_err(), "reported an idle period");
    let answers = classify(&edge, &TEXTS, &[]).await;
    let hard = answers.iter().filter(|a| a["source"] == "cloud").count();
    let (worker, report) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(worker, "edgeworker-t3st1");
    assert_eq!(report["name"], "edgeworker-t3st1");
    assert_eq!(report["namespace"], "fleet");
    assert_eq!(report["ownerName"], "sentiment");
    assert_eq!(report["ownerKind"], "jointinferenceservice");
    assert_eq!(report["kind"], "inference");
    assert_eq!(report["results"], json!([]));
    let info = &report["ownerInfo"];
    assert_eq!(info["inferenceNumber"], TEXTS.len());
    assert_eq!(info["hardExampleNumber"], hard);
    let ratio = info["uploadCloudRatio"].as_f64().unwrap();
    assert!(
        (ratio - hard as f64 / TEXTS.len() as f64).abs() < 1e-9,
        "{ratio}"
    );
    for key in ["startTime", "updateTime"] {
        let t = info[key].as_str().unwrap();
        assert_eq!(t.len(), 19, "{t}");
        assert_eq!((&t[4..5], &t[10..11], &t[13..14]), ("-", " ", ":"), "{t}");
    }
    assert_eq!(
        metric(&edge, "autoglm_joint_lc_reports_total{result=\"success\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_cloud_behind_a_token_answers_the_edge_that_has_it() {
    let p = Packages::new();
    let mut cloud = p.config();
    cloud.auth = Some(autoglm_serve::AuthToken::new("cl0ud-s3cret").unwrap());
    let cloud = Server::plain(&cloud).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "cl0ud-s3cret\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for (token, source) in [
        (
            Some(autoglm_serve::read_cloud_token_file(&file).unwrap()),
            "cloud",
        ),
        (Some("wrong".to_owned()), "edge"),
        (None, "edge"),
    ] {
        let mut joint = JointConfig::new(cloud.url(), HardExampleRule::Always);
        joint.cloud_token = token.clone();
        let edge = Server::plain(&edge_config(&p, joint)).await;
        let a = classify(&edge, &["bad"], &[]).await;
        assert_eq!(a[0]["source"], source, "{token:?}");
        let refused = metric(&edge, "autoglm_joint_fallbacks_total{reason=\"status\"}").await;
        assert_eq!(
            refused,
            if source == "edge" { 1.0 } else { 0.0 },
            "{token:?}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = autoglm_serve::read_cloud_token_file(&file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("other users"), "{e}");
    }
}
