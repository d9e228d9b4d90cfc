//! Every route, its answers and its errors.

use crate::{get, post, Packages};
use autoglm_export::fixture;
use autoglm_runtime::Model;
use autoglm_serve::AppState;
use serde_json::json;

#[tokio::test]
async fn v1_classify_answers_in_order_like_the_runtime() {
    let p = Packages::new();
    let state = AppState::start(&p.config()).unwrap();
    let texts = ["the film was good !", "bad", "", "not very good movies"];
    let a = post(&state, "/v1/classify", json!({ "texts": texts })).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["model"], "cls");
    assert_eq!(v["model_version"].as_str().unwrap().len(), 12);
    let direct = Model::load(p.path("cls"))
        .unwrap()
        .classify(&texts)
        .unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), texts.len());
    for (r, d) in results.iter().zip(&direct) {
        assert_eq!(r["label"], d.label.as_str());
        for (label, score) in ["bad", "neutral", "good"].iter().zip(&d.scores) {
            let got = r["scores"][label].as_f64().unwrap() as f32;
            assert!((got - score).abs() < 1e-6, "{label}: {got} vs {score}");
        }
    }
    let named = post(
        &state,
        "/v1/classify",
        json!({"texts": ["bad"], "model": "cls"}),
    )
    .await;
    assert_eq!(named.json()["results"][0], results[1]);
    let empty = post(&state, "/v1/classify", json!({ "texts": [] })).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json()["results"], json!([]));
}

#[tokio::test]
async fn v1_embed_gives_normalized_vectors() {
    let p = Packages::new();
    let state = AppState::start(&p.config()).unwrap();
    let a = post(
        &state,
        "/v1/embed",
        json!({"texts": ["a great movie !", "bad"], "model": "emb"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["model"], "emb");
    for r in v["results"].as_array().unwrap() {
        let e: Vec<f64> = serde_json::from_value(r["embedding"].clone()).unwrap();
        assert_eq!(e.len(), fixture::HIDDEN);
        assert!((e.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-5);
    }
}

#[tokio::test]
async fn v1_errors_are_json_and_say_what_to_change() {
    let p = Packages::new();
    let state = AppState::start(&p.config()).unwrap();
    let wrong_kind = post(&state, "/v1/embed", json!({"texts": ["x"]})).await;
    assert_eq!(wrong_kind.status, 400);
    assert!(wrong_kind.error().contains("/v1/classify"));
    let wrong_kind = post(
        &state,
        "/v1/classify",
        json!({"texts": ["x"], "model": "emb"}),
    )
    .await;
    assert_eq!(wrong_kind.status, 400);
    assert!(wrong_kind.error().contains("/v1/embed"));
    let unknown = post(
        &state,
        "/v1/classify",
        json!({"texts": ["x"], "model": "nope"}),
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.error().contains("nope"));
    for body in [
        "{".to_owned(),
        "[]".to_owned(),
        json!({"text": ["x"]}).to_string(),
        json!({"texts": "x"}).to_string(),
        json!({"texts": [1, 2]}).to_string(),
        json!({"texts": ["x"], "extra": true}).to_string(),
    ] {
        let a = crate::call(&state, "POST", "/v1/classify", Some(body.clone())).await;
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        assert!(a.error().starts_with("invalid JSON"), "{}", a.text);
    }
    let route = get(&state, "/v1/nothing").await;
    assert_eq!(route.status, 404);
    route.error();
    let method = get(&state, "/v1/classify").await;
    assert_eq!(method.status, 405);
    method.error();
}

#[tokio::test]
async fn v2_health_and_metadata() {
    let p = Packages::new();
    let state = AppState::start(&p.config()).unwrap();
    assert_eq!(
        get(&state, "/v2/health/live").await.json(),
        json!({"live": true})
    );
    assert_eq!(
        get(&state, "/v2/health/ready").await.json(),
        json!({"ready": true})
    );
    assert_eq!(get(&state, "/v2").await.json()["name"], "autoglm");
    let ready = get(&state, "/v2/models/emb/ready").await;
    assert_eq!(ready.json(), json!({"name": "emb", "ready": true}));
    let cls = get(&state, "/v2/models/cls").await.json();
    assert_eq!(cls["name"], "cls");
    assert_eq!(cls["platform"], "autoglm_tract");
    assert_eq!(
        cls["inputs"][0],
        json!({"name": "text", "datatype": "BYTES", "shape": [-1]})
    );
    assert_eq!(cls["outputs"][1]["shape"], json!([-1, 3]));
    let emb = get(&state, "/v2/models/emb").await.json();
    assert_eq!(emb["outputs"][0]["name"], "embedding");
    assert_eq!(emb["outputs"][0]["shape"], json!([-1, fixture::HIDDEN]));
    for uri in ["/v2/models/nope", "/v2/models/nope/ready"] {
        let a = get(&state, uri).await;
        assert_eq!(a.status, 404);
        a.error();
    }
    let a = post(&state, "/v2/models/nope/infer", json!({"inputs": []})).await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn v2_infer_classification_and_embedding() {
    let p = Packages::new();
    let state = AppState::start(&p.config()).unwrap();
    let texts = ["the film was good !", "bad"];
    let a = post(
        &state,
        "/v2/models/cls/infer",
        json!({"id": "r1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["id"], "r1");
    assert_eq!(v["model_name"], "cls");
    let direct = Model::load(p.path("cls"))
        .unwrap()
        .classify(&texts)
        .unwrap();
    let label = &v["outputs"][0];
    assert_eq!(label["name"], "label");
    assert_eq!(label["datatype"], "BYTES");
    assert_eq!(label["shape"], json!([2]));
    assert_eq!(label["data"], json!([direct[0].label, direct[1].label]));
    let scores = &v["outputs"][1];
    assert_eq!(scores["datatype"], "FP32");
    assert_eq!(scores["shape"], json!([2, 3]));
    let flat: Vec<f32> = serde_json::from_value(scores["data"].clone()).unwrap();
    let expected: Vec<f32> = direct.iter().flat_map(|d| d.scores.clone()).collect();
    assert!(flat
        .iter()
        .zip(&expected)
        .all(|(a, b)| (a - b).abs() < 1e-6));

    // Nested data with a 2-D shape, and only the outputs asked for.
    let a = post(
        &state,
        "/v2/models/cls/infer",
        json!({"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["good"], ["bad"]]}],
               "outputs": [{"name": "scores"}]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(v["outputs"][0]["name"], "scores");
    assert!(v.get("id").is_none());

    let a = post(
        &state,
        "/v2/models/emb/infer",
        json!({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]}]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let out = &a.json()["outputs"][0];
    assert_eq!(out["name"], "embedding");
    assert_eq!(out["shape"], json!([3, fixture::HIDDEN]));
    assert_eq!(out["data"].as_array().unwrap().len(), 3 * fixture::HIDDEN);
}

#[tokio::test]
async fn v2_infer_refuses_malformed_tensors() {
    let p = Packages::new();
    let state = AppState::start(&p.config()).unwrap();
    let input = |shape: serde_json::Value, datatype: &str, data: serde_json::Value| json!({"name": "text", "shape": shape, "datatype": datatype, "data": data});
    let cases = [
        (json!({"inputs": []}), "one input"),
        (
            json!({"inputs": [input(json!([1]), "BYTES", json!(["a"])), input(json!([1]), "BYTES", json!(["b"]))]}),
            "one input",
        ),
        (
            json!({"inputs": [input(json!([1]), "FP32", json!([1.0]))]}),
            "datatype",
        ),
        (
            json!({"inputs": [input(json!([3]), "BYTES", json!(["a", "b"]))]}),
            "shape",
        ),
        (
            json!({"inputs": [input(json!([-1]), "BYTES", json!(["a"]))]}),
            "shape",
        ),
        (
            json!({"inputs": [input(json!([2]), "BYTES", json!(["a", 2]))]}),
            "strings",
        ),
        (
            json!({"inputs": [input(json!([1]), "BYTES", json!(["a"]))], "outputs": [{"name": "embedding"}]}),
            "no output",
        ),
        (json!({"inputs": "text"}), "invalid JSON"),
    ];
    for (body, expected) in cases {
        let a = post(&state, "/v2/models/cls/infer", body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        let e = a.error();
        assert!(e.contains(expected), "{body}: {e}");
    }
}

#[tokio::test]
async fn metrics_are_openmetrics() {
    let p = Packages::new();
    let state = AppState::start(&p.config()).unwrap();
    post(&state, "/v1/classify", json!({"texts": ["good", "bad"]})).await;
    post(
        &state,
        "/v1/classify",
        json!({"texts": ["x"], "model": "nope"}),
    )
    .await;
    post(&state, "/v2/models/cls/infer", json!({"inputs": []})).await;
    let a = get(&state, "/metrics").await;
    assert_eq!(a.status, 200);
    assert!(a.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = &a.text;
    assert!(text.ends_with("# EOF\n"), "{text}");
    for expected in [
        r#"autoglm_http_requests_total{route="/v1/classify",status="200"} 1"#,
        r#"autoglm_http_requests_total{route="/v1/classify",status="404"} 1"#,
        r#"autoglm_http_errors_total{route="/v2/models/{name}/infer",status="400"} 1"#,
        r#"autoglm_http_request_duration_seconds_count{route="/v1/classify"} 2"#,
        r#"autoglm_batch_texts_sum{model="cls"} 2"#,
        r#"autoglm_texts_total{model="cls"} 2"#,
        r#"autoglm_queue_texts{model="cls"} 0"#,
        r#"autoglm_model_info{model="cls",kind="classification""#,
        r#"autoglm_model_load_seconds{model="emb"}"#,
        "# TYPE autoglm_model_reloads counter",
        "# TYPE autoglm_queue_wait_seconds histogram",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    assert!(text.contains(r#"autoglm_tokens_total{model="cls"}"#));
}

#[tokio::test]
async fn v2_infer_refuses_repeated_outputs_and_bounds_the_answer() {
    let p = Packages::new();
    let state = AppState::start(&p.config()).unwrap();
    let input = json!([{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["good"]}]);
    // The report: one output named 49,900 times in a 0.9 MB request asked for a 126 MB answer.
    let repeated = vec![json!({"name": "scores"}); 49_900];
    let body = json!({"inputs": input, "outputs": repeated});
    assert!(body.to_string().len() < 1 << 20);
    let a = post(&state, "/v2/models/cls/infer", body).await;
    assert_eq!(a.status, 400, "{}", &a.text[..a.text.len().min(200)]);
    assert!(a.error().contains("more than once"), "{}", a.text);
    assert!(a.text.len() < 512, "{} bytes", a.text.len());
    for outputs in [
        json!([{"name": "label"}, {"name": "label"}]),
        json!([{"name": "label"}, {"name": "scores"}, {"name": "label"}]),
    ] {
        let a = post(
            &state,
            "/v2/models/cls/infer",
            json!({"inputs": input, "outputs": outputs}),
        )
        .await;
        assert_eq!(a.status, 400, "{outputs}: {}", a.text);
        assert!(a.error().contains("more than once"));
    }
    // An unknown name is refused, and a long one is not echoed whole.
    let a = post(
        &state,
        "/v2/models/cls/infer",
        json!({"inputs": input, "outputs": [{"name": "x".repeat(100_000)}]}),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a.error().contains("has no output"));
    assert!(a.text.len() < 512, "{} bytes", a.text.len());

    // The largest answer a request can get: max texts, every output once, each text at the
    // length limit. Its size is bounded by texts x (label + width x the widest float).
    let limits = autoglm_serve::Limits::default();
    let texts = vec!["good ".repeat(limits.max_text_bytes / 10); limits.max_texts];
    let a = post(
        &state,
        "/v2/models/cls/infer",
        json!({"id": "r",
               "inputs": [{"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts}],
               "outputs": [{"name": "label"}, {"name": "scores"}]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", &a.text[..a.text.len().min(300)]);
    let width = 3;
    let bound = 512 + limits.max_texts * (32 + width * 16);
    assert!(a.text.len() <= bound, "{} > {bound}", a.text.len());
}
