//! Signed packages (minisign): a good signature verifies through a directory and a `.tar`;
//! a wrong key, a changed manifest, a changed file, a missing or damaged signature are each
//! refused with their own error; several keys can be trusted at once (rotation); and the
//! minisign tool's public keys and signatures work with ours, and ours with it.

// Tests fail by panicking: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use autoglm_package::signature::{generate_keypair, write_new_key_file};
use autoglm_package::{
    Manifest, Package, PackageError, SigningKey, TrustedKeys, MANIFEST_FILE, SIGNATURE_FILE,
};
use std::path::{Path, PathBuf};
use std::process::Command;

fn package() -> Package {
    Package::new(
        Manifest::example(),
        vec![
            ("model.onnx".into(), b"onnx bytes".to_vec()),
            ("tokenizer.json".into(), b"{}".to_vec()),
        ],
    )
    .unwrap()
}

/// A new key pair in `dir`: (public key file, secret key file).
fn keys(dir: &Path, name: &str, password: Option<&str>) -> (PathBuf, PathBuf) {
    let (public, secret) = generate_keypair(password.map(str::to_owned)).unwrap();
    let (p, s) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
    );
    write_new_key_file(&p, &public, false).unwrap();
    write_new_key_file(&s, &secret, true).unwrap();
    (p, s)
}

fn signed(secret: &Path, password: Option<&str>) -> Package {
    let mut p = package();
    let key = SigningKey::from_file(secret, password.map(str::to_owned)).unwrap();
    p.sign(&key, "autoglm test package").unwrap();
    p
}

#[test]
fn a_good_signature_verifies_through_directory_and_tar() {
    let dir = tempfile::tempdir().unwrap();
    for (name, password) in [("plain", None), ("encrypted", Some("correct horse"))] {
        let (public, secret) = keys(dir.path(), name, password);
        let trusted = TrustedKeys::from_files(&[&public]).unwrap();
        let p = signed(&secret, password);
        for path in [
            dir.path().join(name),
            dir.path().join(format!("{name}.tar")),
        ] {
            p.write(&path).unwrap();
            let read = Package::open(&path).unwrap();
            assert_eq!(read, p);
            let signer = read.verify(&trusted).unwrap().unwrap();
            assert_eq!(signer.trusted_comment, "autoglm test package");
            assert_eq!(Some(signer.key_id.as_str()), trusted.ids().next());
        }
        assert!(dir.path().join(name).join(SIGNATURE_FILE).is_file());
    }
}

#[test]
fn an_encrypted_key_needs_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secret) = keys(dir.path(), "k", Some("pw"));
    assert!(SigningKey::from_file(&secret, None).is_err());
    assert!(SigningKey::from_file(&secret, Some("wrong".into())).is_err());
    assert!(SigningKey::from_file(&secret, Some("pw".into())).is_ok());
}

#[test]
fn key_files_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (public, _) = keys(dir.path(), "k", None);
    let before = std::fs::read(&public).unwrap();
    let e = write_new_key_file(&public, "other", false).unwrap_err();
    assert!(matches!(e, PackageError::Target { .. }), "{e}");
    assert_eq!(std::fs::read(&public).unwrap(), before);
}

#[test]
fn each_bad_case_is_refused_with_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let (public, secret) = keys(dir.path(), "owner", None);
    let (other_public, other_secret) = keys(dir.path(), "other", None);
    let trusted = TrustedKeys::from_files(&[&public]).unwrap();

    // Signed by a key that is not trusted.
    let e = signed(&other_secret, None).verify(&trusted).unwrap_err();
    assert!(matches!(e, PackageError::UntrustedKey { .. }), "{e}");

    // Unsigned, with a trust root: refused. Without one: digests only, as before.
    let e = package().verify(&trusted).unwrap_err();
    assert!(matches!(e, PackageError::Unsigned), "{e}");
    assert_eq!(package().verify(&TrustedKeys::none()).unwrap(), None);

    // The manifest changed after signing (a label renamed; every digest still matches).
    let good = dir.path().join("good");
    signed(&secret, None).write(&good).unwrap();
    let manifest = good.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"positive\"", "\"pozitive\"")).unwrap();
    let e = Package::open(&good).unwrap().verify(&trusted).unwrap_err();
    assert!(matches!(e, PackageError::BadSignature(_)), "{e}");

    // A file changed after signing: its digest fails before any signature is looked at.
    let good = dir.path().join("good2");
    signed(&secret, None).write(&good).unwrap();
    std::fs::write(good.join("model.onnx"), b"onnx bytez").unwrap();
    let e = Package::open(&good).unwrap_err();
    assert!(matches!(e, PackageError::Digest { .. }), "{e}");

    // A damaged signature file: garbage, then over the size limit.
    let good = dir.path().join("good3");
    signed(&secret, None).write(&good).unwrap();
    std::fs::write(
        good.join(SIGNATURE_FILE),
        "untrusted comment: x\nnot base64\n",
    )
    .unwrap();
    let e = Package::open(&good).unwrap().verify(&trusted).unwrap_err();
    assert!(matches!(e, PackageError::BadSignature(_)), "{e}");
    std::fs::write(good.join(SIGNATURE_FILE), vec![b'a'; 5000]).unwrap();
    let e = Package::open(&good).unwrap_err();
    assert!(matches!(e, PackageError::BadSignature(_)), "{e}");

    // Rotation: with both keys trusted, either signature verifies.
    let both = TrustedKeys::from_files(&[&public, &other_public]).unwrap();
    assert_eq!(both.ids().count(), 2);
    for s in [&secret, &other_secret] {
        assert!(signed(s, None).verify(&both).unwrap().is_some());
    }

    // Not a key file.
    let e = TrustedKeys::from_files(&[&secret]).unwrap_err();
    assert!(matches!(e, PackageError::Key(_)), "{e}");
}

/// The minisign command-line tool (`minisign` on the PATH; tools/test.sh installs Debian's):
/// its public keys and signatures are accepted here, ours by it. Skipped locally when it is missing,
/// a failure under CI.
#[test]
fn signatures_interoperate_with_the_minisign_tool() {
    if Command::new("minisign").arg("-v").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "minisign is not installed (tools/test.sh installs it)"
        );
        eprintln!("skipped: minisign is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("minisign")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "minisign {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Their key and signature, our verification.
    run(&["-G", "-W", "-p", "tool.pub", "-s", "tool.key"]);
    package().write(&dir.path().join("pkg")).unwrap();
    run(&[
        "-S",
        "-s",
        "tool.key",
        "-m",
        "pkg/manifest.json",
        "-t",
        "signed by the tool",
    ]);
    let trusted = TrustedKeys::from_files(&[dir.path().join("tool.pub")]).unwrap();
    let signer = Package::open(dir.path().join("pkg"))
        .unwrap()
        .verify(&trusted)
        .unwrap()
        .unwrap();
    assert_eq!(signer.trusted_comment, "signed by the tool");

    // Our key and signature, their verification (and a tampered manifest fails there too).
    let (public, secret) = keys(dir.path(), "ours", None);
    signed(&secret, None)
        .write(&dir.path().join("ours"))
        .unwrap();
    let public = public.to_str().unwrap();
    run(&["-V", "-p", public, "-m", "ours/manifest.json"]);
    std::fs::write(dir.path().join("ours/manifest.json"), b"{}").unwrap();
    let out = Command::new("minisign")
        .args(["-V", "-p", public, "-m", "ours/manifest.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "minisign accepted a changed manifest"
    );
}
