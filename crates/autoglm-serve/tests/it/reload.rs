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

/// A FIFO or a huge file in place of the manifest: the poll and the reload return at once, the
/// failure is counted, the old package serves, and the next fixed package is taken.
#[cfg(unix)]
#[tokio::test]
async fn a_fifo_or_huge_manifest_never_blocks_reloads() {
    let p = Packages::new();
    let live = p.path("live");
    copy_dir(&p.path("cls"), &live);
    let state = AppState::start(&live_config(&live)).unwrap();
    let before = version(&state).await;
    let manifest = live.join("manifest.json");
    let good = std::fs::read(&manifest).unwrap();
    // On its own thread, not the blocking pool: a reload that blocks must fail the test, not
    // hang it in the runtime's shutdown.
    let poll_and_reload = |state: &AppState| {
        let s = state.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let slot = s.slot(None).unwrap();
            let _ = tx.send((
                slot.changed_on_disk(),
                slot.reload("test").map_err(|e| e.to_string()),
            ));
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("the reload blocked")
    };

    std::fs::remove_file(&manifest).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&manifest).status();
    if made.is_ok_and(|s| s.success()) {
        let (changed, result) = poll_and_reload(&state);
        assert!(changed);
        let e = result.unwrap_err();
        assert!(e.contains("FIFO"), "{e}");
        assert_eq!(reloads(&state, "failure"), "1");
        assert_eq!(version(&state).await, before);
        std::fs::remove_file(&manifest).unwrap();
    }

    // A sparse 20 GiB manifest: refused from its size, never read.
    let file = std::fs::File::create(&manifest).unwrap();
    file.set_len(20 << 30).unwrap();
    drop(file);
    let (changed, result) = poll_and_reload(&state);
    assert!(changed);
    assert!(result.is_err());
    assert_eq!(version(&state).await, before);

    // A manifest that declares a model file of u64::MAX bytes.
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["files"]["model.onnx"]["size"] = u64::MAX.into();
    std::fs::write(&manifest, serde_json::to_vec(&v).unwrap()).unwrap();
    let (changed, result) = poll_and_reload(&state);
    assert!(changed);
    let e = result.unwrap_err();
    assert!(e.contains("size"), "{e}");
    assert_eq!(version(&state).await, before);

    std::fs::write(&manifest, &good).unwrap();
    let (changed, result) = poll_and_reload(&state);
    assert!(changed);
    result.unwrap();
    assert_eq!(version(&state).await, before);
    let failures: u32 = reloads(&state, "failure").parse().unwrap();
    assert!(failures >= 2, "{failures}");
    assert_eq!(reloads(&state, "success"), "1");
}

/// With trusted keys, a reload to an unsigned package or to one signed by another key keeps
/// the old model serving and is counted as a failed reload; a package signed by a trusted key
/// (a rotated one among them) is swapped in.
#[tokio::test]
async fn reloads_need_a_trusted_signature_when_keys_are_configured() {
    use autoglm_package::signature::{generate_keypair, write_new_key_file};
    use autoglm_package::{Package, SigningKey, TrustedKeys};
    let p = Packages::new();
    let key = |name: &str| {
        let (public, secret) = generate_keypair(None).unwrap();
        let (pk, sk) = (
            p.path(&format!("{name}.pub")),
            p.path(&format!("{name}.key")),
        );
        write_new_key_file(&pk, &public, false).unwrap();
        write_new_key_file(&sk, &secret, true).unwrap();
        (pk, SigningKey::from_file(&sk, None).unwrap())
    };
    let (old_pub, old_key) = key("old");
    let (new_pub, new_key) = key("new");
    let (_, stranger) = key("stranger");
    let write = |from: &Path, to: &Path, signer: Option<&SigningKey>| {
        let mut package = Package::open(from).unwrap();
        if let Some(k) = signer {
            package.sign(k, "test").unwrap();
        }
        package.write(to).unwrap();
    };
    let live = p.path("live");
    let variant = p.path("variant");
    write_variant(&p, &variant);
    write(&p.path("cls"), &live, Some(&old_key));
    let mut config = live_config(&live);
    config.load.trust = TrustedKeys::from_files(&[&old_pub, &new_pub]).unwrap();
    let state = AppState::start(&config).unwrap();
    let before = version(&state).await;
    let slot = state.slot(None).unwrap();
    for (i, signer) in [None, Some(&stranger)].into_iter().enumerate() {
        write(&variant, &live, signer);
        let e = slot.reload("test").unwrap_err().to_string();
        assert!(e.contains("sign"), "{e}");
        assert_eq!(version(&state).await, before);
        assert_eq!(reloads(&state, "failure"), (i + 1).to_string());
    }
    write(&variant, &live, Some(&new_key));
    slot.reload("test").unwrap();
    assert_ne!(version(&state).await, before);
    assert_eq!(reloads(&state, "success"), "1");
}
