use super::*;

fn sample() -> Package {
    let files = vec![
        ("model.onnx".to_string(), vec![7u8; 1000]),
        ("tokenizer.json".to_string(), b"{\"a\":1}".to_vec()),
    ];
    Package::new(Manifest::example(), files).unwrap()
}

#[test]
fn dir_round_trip_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pkg");
    let pkg = sample();
    pkg.write(&path).unwrap();
    assert_eq!(Package::open(&path).unwrap(), pkg);
    // Writing again over an existing package replaces it, byte for byte the same.
    let before = std::fs::read(path.join(MANIFEST_FILE)).unwrap();
    pkg.write(&path).unwrap();
    assert_eq!(std::fs::read(path.join(MANIFEST_FILE)).unwrap(), before);
}

#[test]
fn tar_round_trip_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pkg.tar");
    let pkg = sample();
    pkg.write(&path).unwrap();
    assert_eq!(Package::open(&path).unwrap(), pkg);
    assert_eq!(std::fs::read(&path).unwrap(), sample().to_tar());
}

#[test]
fn tampered_file_is_refused_with_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pkg");
    sample().write(&path).unwrap();
    let mut bytes = std::fs::read(path.join("model.onnx")).unwrap();
    bytes[10] ^= 1;
    std::fs::write(path.join("model.onnx"), bytes).unwrap();
    let err = Package::open(&path).unwrap_err();
    assert!(
        matches!(err, PackageError::Digest { ref name, .. } if name == "model.onnx"),
        "{err}"
    );
    assert!(err.to_string().contains("tampered"), "{err}");
}

#[test]
fn truncated_and_missing_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pkg");
    sample().write(&path).unwrap();
    std::fs::write(path.join("model.onnx"), [7u8; 999]).unwrap();
    assert!(matches!(
        Package::open(&path).unwrap_err(),
        PackageError::Size {
            expected: 1000,
            actual: 999,
            ..
        }
    ));
    std::fs::remove_file(path.join("tokenizer.json")).unwrap();
    let err = Package::open(&path).unwrap_err();
    assert!(
        matches!(err, PackageError::Missing { ref name } if name == "tokenizer.json"),
        "{err}"
    );
    std::fs::remove_file(path.join(MANIFEST_FILE)).unwrap();
    assert!(matches!(
        Package::open(&path).unwrap_err(),
        PackageError::Read { .. }
    ));
}

#[test]
fn bad_manifests_are_refused() {
    let mut m = Manifest::example();
    m.schema_version = 99;
    assert!(matches!(
        Manifest::from_json(&m.to_json()),
        Err(PackageError::SchemaVersion { found: 99 })
    ));
    assert!(matches!(
        Manifest::from_json(b"{not json"),
        Err(PackageError::Manifest(_))
    ));
    assert!(matches!(
        Manifest::from_json(b"{\"schema_version\": 1}"),
        Err(PackageError::Manifest(_))
    ));
    let mut m = Manifest::example();
    m.labels = vec!["only".into()];
    let err = Package::new(
        m,
        vec![
            ("model.onnx".into(), vec![]),
            ("tokenizer.json".into(), vec![]),
        ],
    )
    .unwrap_err();
    assert!(err.to_string().contains("at least 2 labels"), "{err}");
    // A manifest naming a file outside the package directory is refused before any read.
    let mut m = Manifest::example();
    m.files.insert(
        "../etc/passwd".into(),
        FileEntry {
            size: 1,
            sha256: "0".into(),
        },
    );
    assert!(matches!(
        Manifest::from_json(&m.to_json()),
        Err(PackageError::InvalidManifest(_))
    ));
}

#[test]
fn corrupt_archives_are_refused() {
    let tar = sample().to_tar();
    for cut in [0, 100, 600, tar.len() / 2] {
        assert!(Package::from_tar(&tar[..cut]).is_err(), "cut at {cut}");
    }
    let mut flipped = tar.clone();
    let at = flipped.len() / 3;
    flipped[at] ^= 0x55;
    assert!(Package::from_tar(&flipped).is_err());
}
