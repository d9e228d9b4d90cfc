//! Hot reload: a changed package is swapped in; a broken one leaves the old one serving.

use crate::{copy_dir, get, post, Packages};
use autoglm_export::{export, fixture, ExportOptions};
use autoglm_serve::{AppState, Config, ModelSpec};
use serde_json::json;
use std::path::Path;

fn live_config(path: &Path) -> Config {
    Config::new(vec![
        ModelSpec::parse(&format!("live={}", path.display())).unwrap()
    ])
}

async fn version(state: &AppState) -> String {
    let a = post(state, "/v1/classify", json!({"texts": ["good"]})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()["model_version"].as_str().unwrap().to_owned()
}

/// A classification package that differs from the default one (shorter token limit).
fn write_variant(p: &Packages, out: &Path) {
    let mut options = ExportOptions::new(p.path("base")).with_adapter(p.path("adapter"));
    options.max_length = Some(fixture::POSITIONS / 2);
    export(&options).unwrap().write(out).unwrap();
}

fn reloads(state: &AppState, result: &str) -> String {
    let text = state.metrics().encode();
    let key = format!(r#"autoglm_model_reloads_total{{model="live",result="{result}"}} "#);
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .unwrap_or("0")
        .to_owned()
}

#[tokio::test]
async fn a_changed_package_is_swapped_in() {
    let p = Packages::new();
    let live = p.path("live");
    copy_dir(&p.path("cls"), &live);
    let state = AppState::start(&live_config(&live)).unwrap();
    let slot = state.slot(None).unwrap();
    let before = version(&state).await;
    assert!(!slot.changed_on_disk());
    tokio::task::spawn_blocking({
        let s = state.clone();
        move || s.reload(false, "test")
    })
    .await
    .unwrap();
    assert_eq!(
        version(&state).await,
        before,
        "an unchanged package is not reloaded"
    );
    assert_eq!(reloads(&state, "success"), "0");

    write_variant(&p, &live);
    assert!(slot.changed_on_disk());
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.reload(false, "test"))
        .await
        .unwrap();
    let after = version(&state).await;
    assert_ne!(after, before);
    assert_eq!(reloads(&state, "success"), "1");
    let info = get(&state, "/v2/models/live").await.json();
    assert_eq!(info["versions"], json!([after]));
    let metrics = state.metrics().encode();
    assert!(metrics.contains(&format!(r#"version="{after}""#)));
    assert!(
        !metrics.contains(&format!(r#"version="{before}""#)),
        "old info is gone"
    );
}

#[tokio::test]
async fn a_broken_package_keeps_the_old_one_serving() {
    let p = Packages::new();
    let live = p.path("live");
    copy_dir(&p.path("cls"), &live);
    let state = AppState::start(&live_config(&live)).unwrap();
    let before = version(&state).await;
    // Corrupt the graph in place: its digest no longer matches the manifest.
    let graph = live.join("model.onnx");
    let mut bytes = std::fs::read(&graph).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&graph, bytes).unwrap();
    let slot = state.slot(None).unwrap();
    assert!(slot.changed_on_disk());
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.reload(false, "test"))
        .await
        .unwrap();
    assert_eq!(version(&state).await, before);
    assert_eq!(reloads(&state, "failure"), "1");
    // Not retried until the package changes again.
    assert!(!slot.changed_on_disk());
    let e = slot.reload("test").unwrap_err().to_string();
    assert!(e.contains("live"), "{e}");
    assert_eq!(reloads(&state, "failure"), "2");
    // A missing package is a failed reload too.
    std::fs::remove_dir_all(&live).unwrap();
    assert!(slot.reload("test").is_err());
    assert_eq!(version(&state).await, before);
    // Fixed: the next reload takes it.
    copy_dir(&p.path("cls"), &live);
    assert!(slot.changed_on_disk());
    slot.reload("test").unwrap();
    assert_eq!(version(&state).await, before);
    assert_eq!(reloads(&state, "success"), "1");
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_swap_is_seen() {
    // The shape of a Kubernetes ConfigMap volume: the visible path resolves through a symlink
    // that is replaced atomically on update.
    let p = Packages::new();
    let v1 = p.path("v1");
    let v2 = p.path("v2");
    copy_dir(&p.path("cls"), &v1);
    write_variant(&p, &v2);
    let link = p.path("current");
    std::os::unix::fs::symlink(&v1, &link).unwrap();
    let state = AppState::start(&live_config(&link)).unwrap();
    let before = version(&state).await;
    let tmp = p.path("current.tmp");
    std::os::unix::fs::symlink(&v2, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    let slot = state.slot(None).unwrap();
    assert!(slot.changed_on_disk());
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.reload(false, "test"))
        .await
        .unwrap();
    assert_ne!(version(&state).await, before);
}
