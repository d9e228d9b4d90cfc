//! A server on ONNX Runtime answers like one on tract (`autoglm serve --backend ort`; that the
//! flags reach every model's load options is tested in autoglm-cli's `serve` module).

use crate::{get, post, Packages};
use autoglm_runtime::BackendKind;
use autoglm_serve::AppState;
use serde_json::json;

/// With the `ort` feature (CI builds with it, and gives ORT_DYLIB_PATH): the same requests to a
/// server on tract and one on ONNX Runtime get the same labels and scores within 1e-4.
#[tokio::test]
async fn a_server_on_onnx_runtime_answers_like_one_on_tract() {
    if !BackendKind::compiled().contains(&BackendKind::Ort) {
        eprintln!("skipping: built without the ort feature");
        return;
    }
    let p = Packages::new();
    let tract = AppState::start(&p.config()).unwrap();
    let mut config = p.config();
    config.load.backend = BackendKind::Ort;
    let ort = AppState::start(&config).unwrap();
    let meta = get(&ort, "/v2/models/cls").await;
    assert_eq!(meta.json()["platform"], "autoglm_ort", "{}", meta.text);
    let texts = ["the film was good !", "bad", "", "not very good movies"];
    let (a, b) = (
        post(&tract, "/v1/classify", json!({ "texts": texts })).await,
        post(&ort, "/v1/classify", json!({ "texts": texts })).await,
    );
    assert!(
        a.status == 200 && b.status == 200,
        "{} / {}",
        a.text,
        b.text
    );
    let (a, b) = (a.json(), b.json());
    for (x, y) in a["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["results"].as_array().unwrap())
    {
        assert_eq!(x["label"], y["label"]);
        for label in ["bad", "neutral", "good"] {
            let (s, t) = (
                x["scores"][label].as_f64().unwrap(),
                y["scores"][label].as_f64().unwrap(),
            );
            assert!((s - t).abs() < 1e-4, "{label}: tract {s} vs ort {t}");
        }
    }
}
