//! `autoglm serve --backend ort [--device cuda]`: the backend flags reach every model's load
//! options, and a server on ONNX Runtime answers like one on tract.

use crate::{get, post, Packages};
use autoglm_runtime::{BackendKind, Device};
use autoglm_serve::{AppState, ServeArgs};
use clap::Parser;
use serde_json::json;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The load options `autoglm serve ARGS…` gives its models.
fn load_options(args: &[&str]) -> autoglm_runtime::LoadOptions {
    let argv = ["serve", "--model", "m=/p"].iter().chain(args);
    Cli::try_parse_from(argv)
        .unwrap()
        .serve
        .config()
        .unwrap()
        .load
}

#[test]
fn backend_flags_reach_the_load_options() {
    let load = load_options(&[]);
    assert_eq!(
        (load.backend, load.device),
        (BackendKind::Tract, Device::Cpu)
    );
    let load = load_options(&[
        "--backend",
        "ort",
        "--device",
        "cuda",
        "--ort-lib",
        "/opt/ort/libonnxruntime.so",
    ]);
    assert_eq!(
        (load.backend, load.device),
        (BackendKind::Ort, Device::Cuda)
    );
    assert_eq!(
        load.ort_library.as_deref(),
        Some(std::path::Path::new("/opt/ort/libonnxruntime.so"))
    );
    assert!(Cli::try_parse_from(["serve", "--model", "m=/p", "--backend", "tpu"]).is_err());
}

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
