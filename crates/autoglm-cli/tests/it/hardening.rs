//! Bad input to the binary: `export` never loses data, flags are bounded, `--input` streams.
//! Uses the tiny fixture checkpoint and the embedded default package (no downloaded assets).

use crate::cli::{autoglm, stdout};
use crate::support::binary_command;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A refusal with exit code `code` and `needle` in the message, never a panic.
fn assert_refused(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn hidden_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn export_refuses_outputs_that_would_lose_data() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    autoglm_export::fixture::write_base(&base);
    let base_s = base.to_str().unwrap();
    let export = |out: &Path| {
        autoglm(
            &["export", "--base", base_s, "--out", out.to_str().unwrap()],
            None,
        )
    };
    // An existing regular file: a clear error, the file intact, no temporary left.
    let file = dir.path().join("weights.bin");
    std::fs::write(&file, "precious").unwrap();
    assert_refused(&export(&file), 1, "a regular file is there");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    // A non-empty directory that is not a package.
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("a.txt"), "mine").unwrap();
    assert_refused(&export(&docs), 1, "not a package");
    assert_eq!(std::fs::read_to_string(docs.join("a.txt")).unwrap(), "mine");
    // The base model itself, a folder inside it, a folder containing it.
    assert_refused(&export(&base), 1, "is the base model");
    assert_refused(&export(&base.join("pkg")), 1, "is inside the base model");
    assert_refused(&export(dir.path()), 1, "contains the base model");
    assert!(base.join("model.safetensors").exists() && !base.join("pkg").exists());
    assert!(
        hidden_names(dir.path()).is_empty(),
        "{:?}",
        hidden_names(dir.path())
    );
    // Re-export over a package it wrote is how updates work: allowed.
    let pkg = dir.path().join("pkg");
    for _ in 0..2 {
        let o = export(&pkg);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(
        hidden_names(dir.path()).is_empty(),
        "{:?}",
        hidden_names(dir.path())
    );
}

#[test]
fn threads_and_batch_sizes_are_bounded() {
    for (args, needle) in [
        (&["classify", "--threads", "1000", "x"][..], "1 to 256"),
        (&["classify", "--threads", "0", "x"][..], "1 to 256"),
        (
            &["embed", "--threads", "99999999999999999999", "x"][..],
            "whole number",
        ),
        (
            &["classify", "--batch-size", "100000", "x"][..],
            "1 to 1024",
        ),
        (&["bench", "--batch", "1,5000"][..], "1 to 1024"),
        (&["bench", "--iters", "1000000000000"][..], "1 to 1000000"),
    ] {
        assert_refused(&autoglm(args, None), 2, needle);
    }
    // The environment variable is held to the same bound.
    let o = binary_command(env!("CARGO_BIN_EXE_autoglm"))
        .args(["classify", "x"])
        .env("AUTOGLM_THREADS", "4096")
        .env_remove("AUTOGLM_MODEL")
        .output()
        .unwrap();
    assert_refused(&o, 2, "1 to 256");
}

/// `--input -` answers the first lines while standard input is still open.
#[test]
fn input_streams_results_before_the_input_ends() {
    if !cfg!(feature = "embedded-model") {
        eprintln!("skipping: this build has no embedded default package");
        return;
    }
    let mut child = binary_command(env!("CARGO_BIN_EXE_autoglm"))
        .args(["classify", "--json", "--input", "-"])
        .env_remove("AUTOGLM_MODEL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run autoglm");
    let mut stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    stdin
        .write_all(b"{\"text\": \"I loved this film\"}\n{\"text\": \"A dull, lifeless waste of two hours.\"}\n")
        .unwrap();
    stdin.flush().unwrap();
    // Generous: under emulation (tools/check/test-aarch64.sh) loading alone takes a while.
    let timeout = Duration::from_secs(300);
    let mut first = Vec::new();
    for _ in 0..2 {
        match rx.recv_timeout(timeout) {
            Ok(line) => first.push(line),
            Err(e) => {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!(
                    "no result while stdin is open ({e}); got {first:?}; stderr: {}",
                    stderr(&o)
                );
            }
        }
    }
    let label = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"].clone();
    assert_eq!(label(&first[0]), "positive");
    assert_eq!(label(&first[1]), "negative");
    // More input after the first answers, then the end.
    stdin
        .write_all(b"{\"text\": \"What a wonderful, moving story\"}\n")
        .unwrap();
    drop(stdin);
    let third = rx.recv_timeout(timeout).expect("the third result");
    assert_eq!(label(&third), "positive");
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success());
    assert!(rx.try_recv().is_err(), "one line per input");
    // The ordinary, non-interactive path still works and keeps order over many chunks.
    let many: String = (0..70)
        .map(|i| {
            format!(
                "{{\"text\": \"{}\"}}\n",
                if i % 2 == 0 {
                    "I loved this film"
                } else {
                    "Terrible. I walked out."
                }
            )
        })
        .collect();
    let o = autoglm(&["classify", "--json", "--input", "-"], Some(&many));
    assert!(o.status.success(), "{}", stderr(&o));
    let labels: Vec<serde_json::Value> = stdout(&o).lines().map(label).collect();
    assert_eq!(labels.len(), 70);
    for (i, l) in labels.iter().enumerate() {
        assert_eq!(
            l,
            if i % 2 == 0 { "positive" } else { "negative" },
            "line {i}"
        );
    }
}

/// `autoglm keygen`, `autoglm sign` and `--trust`, end to end on the tiny package: a signed
/// package classifies with its key trusted; an unsigned one, one signed by another key, and
/// one whose manifest changed after signing are refused with a message that says why;
/// `inspect` reports the signature; keygen never overwrites a key.
#[test]
fn signed_packages_and_trust() {
    fn as_refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let pkg = path("pkg");
    let base = dir.path().join("base");
    autoglm_export::fixture::write_base(&base);
    autoglm_export::fixture::write_adapter(&dir.path().join("adapter"));
    autoglm_export::export(
        &autoglm_export::ExportOptions::new(&base).with_adapter(dir.path().join("adapter")),
    )
    .unwrap()
    .write(&dir.path().join("pkg"))
    .unwrap();
    let ok = |args: &[&str]| {
        let o = autoglm(args, None);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let refused = |args: &[&str], needle: &str| {
        let o = autoglm(args, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    };
    std::fs::write(path("pw"), "s3cret\n").unwrap();
    ok(&[
        "keygen",
        "--public",
        &path("a.pub"),
        "--secret",
        &path("a.key"),
        "--password-file",
        &path("pw"),
    ]);
    ok(&[
        "keygen",
        "--public",
        &path("b.pub"),
        "--secret",
        &path("b.key"),
    ]);
    refused(
        &[
            "keygen",
            "--public",
            &path("a.pub"),
            "--secret",
            &path("c.key"),
        ],
        "already exists",
    );
    let classify = |trust: &str| {
        vec![
            "classify".to_string(),
            "--model".into(),
            pkg.clone(),
            "--trust".into(),
            trust.to_string(),
            "the film was good".into(),
        ]
    };

    refused(&as_refs(&classify(&path("a.pub"))), "not signed");
    refused(&["sign", &pkg, "--secret", &path("a.key")], "password");
    ok(&[
        "sign",
        &pkg,
        "--secret",
        &path("a.key"),
        "--password-file",
        &path("pw"),
        "--comment",
        "release 1",
    ]);
    assert!(!ok(&as_refs(&classify(&path("a.pub")))).is_empty());
    // Rotation: either key in AUTOGLM_TRUST-style comma list.
    assert!(!ok(&as_refs(&classify(&format!(
        "{},{}",
        path("b.pub"),
        path("a.pub")
    ))))
    .is_empty());
    refused(&as_refs(&classify(&path("b.pub"))), "not trusted");
    assert!(ok(&["inspect", &pkg, "--trust", &path("a.pub")]).contains("valid, by trusted key"));
    assert!(ok(&["inspect", &pkg]).contains("present, not checked"));

    // The manifest changed after signing (a label renamed; digests still match).
    let manifest = dir.path().join("pkg/manifest.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    json["labels"][0] = serde_json::json!("renamed");
    std::fs::write(&manifest, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    refused(
        &as_refs(&classify(&path("a.pub"))),
        "signature is not valid",
    );
}
