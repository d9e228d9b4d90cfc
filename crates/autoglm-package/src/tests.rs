use super::*;
use std::io::Read;
use std::path::Path;

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
        PackageError::File(FileError::Read { .. })
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

/// Rewrites the manifest of the package directory `path` with `edit` (bypassing validation).
fn edit_manifest(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let file = path.join(MANIFEST_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&file, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn huge_declared_sizes_are_refused_before_any_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pkg");
    sample().write(&path).unwrap();
    for size in [u64::MAX, 1_000_000_000_000_000, MAX_PACKAGE_BYTES + 1] {
        edit_manifest(&path, |v| v["files"]["model.onnx"]["size"] = size.into());
        let err = Package::open(&path).unwrap_err();
        assert!(matches!(err, PackageError::InvalidManifest(_)), "{err}");
        assert!(err.to_string().contains("files.model.onnx.size"), "{err}");
        // The same manifest in an archive.
        let mut entries = BTreeMap::new();
        for f in [MANIFEST_FILE, "model.onnx", "tokenizer.json"] {
            entries.insert(f.to_string(), std::fs::read(path.join(f)).unwrap());
        }
        assert!(Package::from_entries(entries).is_err());
    }
    // Two files each under the limit, together over it.
    edit_manifest(&path, |v| {
        v["files"]["model.onnx"]["size"] = MAX_PACKAGE_BYTES.into();
        v["files"]["tokenizer.json"]["size"] = MAX_PACKAGE_BYTES.into();
    });
    let err = Package::open(&path).unwrap_err();
    assert!(err.to_string().contains("add up to"), "{err}");
}

/// Where `sample().to_tar()` holds model.onnx's bytes: after the manifest's header and
/// contents (in 512-byte blocks) and its own header.
fn graph_data_offset() -> usize {
    let manifest_len = sample().manifest().to_json().len();
    512 + manifest_len.div_ceil(512) * 512 + 512
}

/// A tar whose header claims a 2 GiB member: refused from the header, nothing that size read.
#[test]
fn a_tar_member_larger_than_the_archive_is_refused() {
    let mut tar = sample().to_tar();
    // The second member (model.onnx): its header's size field (offset 124, 12 octal bytes).
    let header = graph_data_offset() - 512;
    assert_eq!(&tar[header..header + 10], b"model.onnx");
    tar[header + 124..header + 136].copy_from_slice(b"17777777777\0");
    let mut sum: u32 = 0;
    tar[header + 148..header + 156].fill(b' ');
    for b in &tar[header..header + 512] {
        sum += *b as u32;
    }
    tar[header + 148..header + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let err = Package::from_tar(&tar).unwrap_err();
    assert!(err.to_string().contains("claims 2147483647 bytes"), "{err}");
}

/// A `.tar` of `manifest` and `sample()`'s 1,000-byte graph, whatever the manifest says of it.
fn manifest_and_graph(manifest: &Manifest) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in [
        (MANIFEST_FILE, manifest.to_json()),
        ("model.onnx", vec![7u8; 1000]),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// Once the manifest is read, a member larger than the manifest says is refused from its header.
#[test]
fn a_tar_member_larger_than_declared_is_refused_unread() {
    let pkg = sample();
    let mut manifest = pkg.manifest().clone();
    manifest.files.get_mut("model.onnx").unwrap().size = 10;
    let err = Package::from_tar(&manifest_and_graph(&manifest)).unwrap_err();
    assert!(
        matches!(
            err,
            PackageError::Size {
                expected: 10,
                actual: 1000,
                ..
            }
        ),
        "{err}"
    );
}

/// `from_tar_prechecked` skips the digests, which its caller checked, and nothing else: a
/// flipped byte in a file passes (and only it), while sizes, missing files, archive and
/// manifest faults are refused as by `from_tar`.
#[test]
fn a_prechecked_tar_skips_only_the_digests() {
    let tar = sample().to_tar();
    assert_eq!(Package::from_tar_prechecked(&tar).unwrap(), sample());
    // The last byte of model.onnx's contents.
    let mut flipped = tar.clone();
    flipped[graph_data_offset() + 999] ^= 1;
    assert!(matches!(
        Package::from_tar(&flipped).unwrap_err(),
        PackageError::Digest { .. }
    ));
    let loaded = Package::from_tar_prechecked(&flipped).unwrap();
    assert_eq!(loaded.file("model.onnx").unwrap()[999], 7 ^ 1);

    let mut short = sample().manifest().clone();
    short.files.get_mut("model.onnx").unwrap().size = 999;
    let err = Package::from_tar_prechecked(&manifest_and_graph(&short)).unwrap_err();
    assert!(matches!(err, PackageError::Size { .. }), "{err}");
    for cut in [0, 100, 512, tar.len() / 2] {
        assert!(
            Package::from_tar_prechecked(&tar[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

/// `verify_tar` (the graph hashed in place) reaches `from_tar`'s verdict on the same bytes:
/// the archive whole, cut anywhere, or with any one byte flipped.
#[test]
fn verifying_a_tar_in_place_agrees_with_reading_it() {
    let tar = sample().to_tar();
    let none = TrustedKeys::default();
    assert_eq!(Package::verify_tar(&tar, &none).unwrap(), None);
    let verdicts = |bytes: &[u8]| {
        let read = Package::from_tar(bytes)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let in_place = Package::verify_tar(bytes, &none)
            .map(|_| ())
            .map_err(|e| e.to_string());
        (read, in_place)
    };
    for cut in (0..tar.len()).step_by(97) {
        let (read, in_place) = verdicts(&tar[..cut]);
        assert_eq!(read, in_place, "cut at {cut}");
    }
    for at in (0..tar.len()).step_by(31) {
        let mut flipped = tar.clone();
        flipped[at] ^= 0x20;
        let (read, in_place) = verdicts(&flipped);
        assert_eq!(read, in_place, "byte {at} flipped");
    }
    // The graph's own bytes: its digest, named.
    let mut flipped = tar.clone();
    flipped[graph_data_offset() + 3] ^= 1;
    let err = Package::verify_tar(&flipped, &none).unwrap_err();
    assert!(
        matches!(err, PackageError::Digest { ref name, .. } if name == "model.onnx"),
        "{err}"
    );
}

#[test]
fn duplicate_tar_members_are_refused() {
    let mut tar = sample().to_tar();
    // Cut the end-of-archive blocks and append the whole archive again.
    let body = tar.len() - 1024;
    let again = tar.clone();
    tar.truncate(body);
    tar.extend_from_slice(&again);
    let err = Package::from_tar(&tar).unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
}

#[cfg(unix)]
#[test]
fn only_regular_files_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pkg");
    sample().write(&path).unwrap();
    // A symlink to /dev/zero in place of the graph: refused, not read forever.
    std::fs::remove_file(path.join("model.onnx")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", path.join("model.onnx")).unwrap();
    let err = Package::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            PackageError::NotRegular {
                kind: "a symlink",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("model.onnx"), "{err}");
    // Even a symlink to a regular file inside the package: package files are plain files.
    std::fs::remove_file(path.join("model.onnx")).unwrap();
    std::fs::write(tmp.path().join("real.onnx"), [7u8; 1000]).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("real.onnx"), path.join("model.onnx")).unwrap();
    assert!(matches!(
        Package::open(&path).unwrap_err(),
        PackageError::NotRegular { .. }
    ));
    // A FIFO (no writer: opening it would block forever).
    std::fs::remove_file(path.join("model.onnx")).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(path.join("model.onnx"))
        .status();
    if status.is_ok_and(|s| s.success()) {
        let err = Package::open(&path).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        // The package path itself a FIFO, or a device.
        let err = Package::open(path.join("model.onnx")).unwrap_err();
        assert!(matches!(err, PackageError::NotRegular { .. }), "{err}");
    }
    let err = Package::open("/dev/zero").unwrap_err();
    assert!(matches!(err, PackageError::NotRegular { .. }), "{err}");
    // A directory in place of a file.
    std::fs::remove_file(path.join("model.onnx")).unwrap();
    std::fs::create_dir(path.join("model.onnx")).unwrap();
    assert!(matches!(
        Package::open(&path).unwrap_err(),
        PackageError::NotRegular { .. }
    ));
}

#[test]
fn manifest_numbers_are_bounded() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["max_length"] = 1_000_000_000.into()),
            "max_length",
        ),
        (Box::new(|v| v["max_length"] = 0.into()), "max_length"),
        (
            Box::new(|v| v["max_length"] = (MAX_MAX_LENGTH + 1).into()),
            "max_length",
        ),
        (
            Box::new(|v| {
                v["max_length"] = 16384.into();
                v["graph"]["sequence_multiple"] = 8192.into();
            }),
            "graph.sequence_multiple",
        ),
        (
            Box::new(|v| v["graph"]["sequence_multiple"] = 0.into()),
            "graph.sequence_multiple",
        ),
        (
            Box::new(|v| v["hidden_size"] = (MAX_HIDDEN_SIZE + 1).into()),
            "hidden_size",
        ),
        (
            Box::new(|v| {
                v["labels"] = (0..=MAX_LABELS)
                    .map(|i| format!("l{i}"))
                    .collect::<Vec<_>>()
                    .into()
            }),
            "labels",
        ),
        (
            Box::new(|v| v["labels"] = vec!["a".to_string(), "b".repeat(1000)].into()),
            "label",
        ),
        (
            Box::new(|v| {
                v["attention"] =
                    serde_json::json!({"type": "window", "window": 1_000_000_000usize, "global": 1})
            }),
            "attention.window",
        ),
        (
            Box::new(|v| {
                v["attention"] = serde_json::json!({"type": "window", "window": 8, "global": 256})
            }),
            "attention.global",
        ),
        (
            Box::new(|v| v["files"]["model.onnx"]["sha256"] = "zz".into()),
            "sha256",
        ),
    ];
    for (edit, field) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pkg");
        sample().write(&path).unwrap();
        edit_manifest(&path, edit);
        let err = Package::open(&path).unwrap_err();
        assert!(
            matches!(err, PackageError::InvalidManifest(_)),
            "{field}: {err}"
        );
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
}

#[test]
fn an_oversized_manifest_is_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pkg");
    sample().write(&path).unwrap();
    let file = std::fs::File::options()
        .append(true)
        .open(path.join(MANIFEST_FILE))
        .unwrap();
    file.set_len(MAX_MANIFEST_BYTES + 10).unwrap();
    let err = Package::open(&path).unwrap_err();
    assert!(err.to_string().contains("manifest.json is over"), "{err}");
}

#[test]
fn writing_never_replaces_what_is_not_a_package() {
    let tmp = tempfile::tempdir().unwrap();
    let leftovers = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    };
    // A directory of someone's files: refused, untouched.
    let docs = tmp.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("thesis.tex"), "years of work").unwrap();
    let err = sample().write(&docs).unwrap_err();
    assert!(matches!(err, PackageError::Target { .. }), "{err}");
    assert!(err.to_string().contains("not a package"), "{err}");
    assert_eq!(
        std::fs::read_to_string(docs.join("thesis.tex")).unwrap(),
        "years of work"
    );
    // A regular file where the directory would go: refused, no temporary left.
    let file = tmp.path().join("notes");
    std::fs::write(&file, "keep me").unwrap();
    let err = sample().write(&file).unwrap_err();
    assert!(err.to_string().contains("regular file"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    // A file that is not a package archive at a .tar path.
    let tar = tmp.path().join("backup.tar");
    std::fs::write(&tar, "not a package").unwrap();
    let err = sample().write(&tar).unwrap_err();
    assert!(err.to_string().contains("not a package archive"), "{err}");
    assert_eq!(std::fs::read_to_string(&tar).unwrap(), "not a package");
    // A directory at a .tar path.
    std::fs::create_dir(tmp.path().join("dir.tar")).unwrap();
    assert!(sample().write(&tmp.path().join("dir.tar")).is_err());
    // A package directory someone added a file to.
    let pkg = tmp.path().join("pkg");
    sample().write(&pkg).unwrap();
    std::fs::write(pkg.join("README"), "mine").unwrap();
    let err = sample().write(&pkg).unwrap_err();
    assert!(err.to_string().contains("README"), "{err}");
    assert_eq!(std::fs::read_to_string(pkg.join("README")).unwrap(), "mine");
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
    // An empty directory, a package directory and a package archive are replaced.
    std::fs::remove_file(pkg.join("README")).unwrap();
    sample().write(&pkg).unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    sample().write(&empty).unwrap();
    assert_eq!(Package::open(&empty).unwrap(), sample());
    let tar = tmp.path().join("pkg.tar");
    sample().write(&tar).unwrap();
    sample().write(&tar).unwrap();
    assert_eq!(Package::open(&tar).unwrap(), sample());
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

/// A write that fails half-way (a file that cannot be created inside the temporary
/// directory) leaves no temporary behind and the old package in place, as a directory or a tar.
#[test]
fn a_failed_write_leaves_no_temporary_and_the_old_package() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    sample().write(&pkg).unwrap();
    // Built by hand: `Package::new` would refuse the name.
    let mut broken = sample();
    broken.files.insert("no/such/dir".into(), vec![1]);
    let err = broken.write(&pkg).unwrap_err();
    assert!(
        matches!(err, PackageError::File(FileError::Write { .. })),
        "{err}"
    );
    assert_eq!(
        Package::open(&pkg).unwrap(),
        sample(),
        "the old package stays"
    );
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["pkg"]);
    // The guard alone: dropped, it removes what it made.
    let guard = TempPath::create(&tmp.path().join("x"), "tmp", true).unwrap();
    std::fs::write(guard.path.join("f"), "1").unwrap();
    let made = guard.path.clone();
    drop(guard);
    assert!(!made.exists());
}

#[test]
fn attention_and_quantization_text_forms_round_trip() {
    for a in [
        Attention::Dense,
        Attention::Window {
            window: 256,
            global: 1,
        },
        Attention::Window {
            window: 1,
            global: 0,
        },
    ] {
        assert_eq!(a.to_string().parse::<Attention>(), Ok(a));
    }
    assert_eq!(Attention::Dense.to_string(), "dense");
    for bad in [
        "",
        "window:0,global:1",
        "window:8",
        "window:x,global:1",
        "Dense",
    ] {
        assert!(bad.parse::<Attention>().is_err(), "{bad:?} parsed");
    }
    for q in [Quantization::None, Quantization::Int8] {
        assert_eq!(q.to_string().parse::<Quantization>(), Ok(q));
    }
    assert_eq!("fp32".parse::<Quantization>(), Ok(Quantization::None));
    assert!("int4".parse::<Quantization>().is_err());
}

fn package_files() -> Vec<(String, Vec<u8>)> {
    vec![
        ("model.onnx".into(), vec![1, 2, 3]),
        ("tokenizer.json".into(), b"{}".to_vec()),
    ]
}

/// A valid two-task manifest (its files listed, as a package has them).
fn two_task_manifest() -> Manifest {
    let mut m = Manifest::example();
    m.labels = ["mood:neg", "mood:pos", "topic:a", "topic:b", "topic:c"]
        .map(String::from)
        .to_vec();
    m.tasks = vec![
        Task {
            name: "mood".into(),
            labels: 2,
        },
        Task {
            name: "topic".into(),
            labels: 3,
        },
    ];
    Package::new(m, package_files()).unwrap().manifest().clone()
}

#[test]
fn tasks_round_trip_and_give_their_slices() {
    let m = two_task_manifest();
    let back = Manifest::from_json(&m.to_json()).unwrap();
    assert_eq!(back, m);
    let slices = back.task_slices();
    assert_eq!(slices.len(), 2);
    assert_eq!((slices[0].name, slices[0].range.clone()), ("mood", 0..2));
    assert_eq!(slices[0].labels, ["neg", "pos"]);
    assert_eq!((slices[1].name, slices[1].range.clone()), ("topic", 2..5));
    assert_eq!(slices[1].labels, ["a", "b", "c"]);
    // A package without tasks has no slices, and its JSON no `tasks` field.
    let plain = sample().manifest().clone();
    assert!(plain.task_slices().is_empty());
    assert!(!String::from_utf8(plain.to_json())
        .unwrap()
        .contains("tasks"));
}

#[test]
fn tasks_that_do_not_cover_the_labels_are_refused() {
    let refused = |edit: &dyn Fn(&mut Manifest), what: &str| {
        let mut m = two_task_manifest();
        edit(&mut m);
        let err = Manifest::from_json(&m.to_json()).unwrap_err().to_string();
        assert!(err.contains(what), "{what}: {err}");
        // Building a package checks the same.
        let err = Package::new(m, package_files()).unwrap_err().to_string();
        assert!(err.contains(what), "{what}: {err}");
    };
    refused(&|m| m.tasks[1].labels = 2, "the tasks own 4 labels");
    refused(&|m| m.tasks[1].labels = 4, "the tasks own 6 labels or more");
    refused(&|m| m.tasks[1].name = "mood".into(), "appears twice");
    refused(&|m| m.tasks[0].name = "a:b".into(), "tasks[0].name");
    refused(&|m| m.tasks[0].name = String::new(), "tasks[0].name");
    refused(&|m| m.labels[2] = "mood:a".into(), "is not named `topic:…`");
    refused(
        &|m| {
            m.tasks[0].labels = 1;
            m.tasks[1].labels = 4;
        },
        "a task needs at least 2",
    );
    refused(
        &|m| {
            m.kind = ModelKind::Embedding;
            m.labels.clear();
        },
        "only a classification package has tasks",
    );
}

/// The graph of `path` opened as a stream, read whole, then verified.
fn streamed(path: &Path) -> Result<(Package, Vec<u8>), PackageError> {
    let (package, mut stream) = Package::open_streaming_graph(path)?;
    assert_eq!(stream.name(), "model.onnx");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    stream.finish()?;
    Ok((package, bytes))
}

#[test]
fn a_streamed_graph_is_the_file_and_is_verified_when_finished() {
    let tmp = tempfile::tempdir().unwrap();
    for path in [tmp.path().join("pkg"), tmp.path().join("pkg.tar")] {
        sample().write(&path).unwrap();
        let (package, bytes) = streamed(&path).unwrap();
        assert_eq!(bytes, vec![7u8; 1000]);
        // What `open` then `take_file` would give.
        let mut whole = Package::open(&path).unwrap();
        assert_eq!(whole.take_file("model.onnx").unwrap(), bytes);
        assert_eq!(package, whole);
        // `finish` reads what the reader left.
        let (_, stream) = Package::open_streaming_graph(&path).unwrap();
        assert_eq!(stream.capacity_hint(), 1000);
        stream.finish().unwrap();
    }
    let path = tmp.path().join("pkg");
    let graph = path.join("model.onnx");
    // Tampered, truncated, grown: the stream opens, and `finish` refuses what it read.
    let mut bytes = vec![7u8; 1000];
    bytes[500] ^= 1;
    std::fs::write(&graph, &bytes).unwrap();
    let err = streamed(&path).unwrap_err();
    assert!(
        matches!(err, PackageError::Digest { ref name, .. } if name == "model.onnx"),
        "{err}"
    );
    std::fs::write(&graph, [7u8; 999]).unwrap();
    let err = streamed(&path).unwrap_err();
    assert!(
        matches!(
            err,
            PackageError::Size {
                expected: 1000,
                actual: 999,
                ..
            }
        ),
        "{err}"
    );
    std::fs::write(&graph, [7u8; 5000]).unwrap();
    let (_, mut stream) = Package::open_streaming_graph(&path).unwrap();
    let mut read = Vec::new();
    stream.read_to_end(&mut read).unwrap();
    assert_eq!(
        read.len(),
        1001,
        "never more than one byte past the declared size"
    );
    let err = stream.finish().unwrap_err();
    assert!(
        matches!(
            err,
            PackageError::Size {
                expected: 1000,
                actual: 1001,
                ..
            }
        ),
        "{err}"
    );
    // Checked at open, as `open` checks every file: missing, or not a regular file.
    std::fs::remove_file(&graph).unwrap();
    let err = Package::open_streaming_graph(&path).unwrap_err();
    assert!(
        matches!(err, PackageError::Missing { ref name } if name == "model.onnx"),
        "{err}"
    );
    std::os::unix::fs::symlink("/dev/zero", &graph).unwrap();
    let err = Package::open_streaming_graph(&path).unwrap_err();
    assert!(matches!(err, PackageError::NotRegular { .. }), "{err}");
    // The other files are verified at open as before.
    std::fs::remove_file(&graph).unwrap();
    std::fs::write(&graph, [7u8; 1000]).unwrap();
    std::fs::write(path.join("tokenizer.json"), b"{\"a\":2}").unwrap();
    let err = Package::open_streaming_graph(&path).unwrap_err();
    assert!(
        matches!(err, PackageError::Digest { ref name, .. } if name == "tokenizer.json"),
        "{err}"
    );
}

#[test]
fn a_streamed_graph_of_many_chunks_is_hashed_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pkg");
    // Over three of the digest thread's chunks, not a whole number of them.
    let graph: Vec<u8> = (0..3 * Digester::CHUNK + 17)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let files = vec![
        ("model.onnx".to_string(), graph.clone()),
        ("tokenizer.json".to_string(), b"{}".to_vec()),
    ];
    Package::new(Manifest::example(), files)
        .unwrap()
        .write(&path)
        .unwrap();
    assert_eq!(streamed(&path).unwrap().1, graph);
    // Read in odd pieces, and only partly: `finish` hashes the rest.
    let (_, mut stream) = Package::open_streaming_graph(&path).unwrap();
    let mut piece = vec![0u8; 12_345];
    stream.read_exact(&mut piece).unwrap();
    assert_eq!(piece, graph[..12_345]);
    stream.finish().unwrap();
    // A change in the last chunk.
    let mut tampered = graph.clone();
    *tampered.last_mut().unwrap() ^= 1;
    std::fs::write(path.join("model.onnx"), &tampered).unwrap();
    let err = streamed(&path).unwrap_err();
    assert!(matches!(err, PackageError::Digest { .. }), "{err}");
}

#[test]
fn a_tar_packages_graph_is_streamed_from_the_archive_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pkg.tar");
    sample().write(&path).unwrap();
    let tar = std::fs::read(&path).unwrap();
    let at = tar
        .windows(1000)
        .position(|w| w == [7u8; 1000])
        .expect("the graph's data");
    // Damage in the graph member: the archive opens, `finish` refuses what it read.
    let mut bad = tar.clone();
    bad[at + 999] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let err = streamed(&path).unwrap_err();
    assert!(
        matches!(err, PackageError::Digest { ref name, .. } if name == "model.onnx"),
        "{err}"
    );
    // A cut inside the graph member: refused when the archive is read.
    std::fs::write(&path, &tar[..at + 500]).unwrap();
    assert!(Package::open_streaming_graph(&path).is_err());
    // The graph before the manifest (not an archive we write): read with the rest, still right.
    let mut builder = tar::Builder::new(Vec::new());
    let pkg = sample();
    let mut members: Vec<(&str, &[u8])> = pkg.files().collect();
    members.push((MANIFEST_FILE, pkg.manifest_bytes()));
    for (name, data) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, data).unwrap();
    }
    std::fs::write(&path, builder.into_inner().unwrap()).unwrap();
    let (package, bytes) = streamed(&path).unwrap();
    assert_eq!(bytes, vec![7u8; 1000]);
    assert_eq!(package.manifest(), sample().manifest());
}

/// A stream names the digest its bytes are (or were) verified against, and a second stream
/// over the same file verifies it again from its start: the plan cache keys its files by the
/// one and verifies the package with the other.
#[test]
fn streams_name_their_digest_and_reopen_from_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = sample();
    let digest = pkg.manifest().files["model.onnx"].sha256.clone();
    // A package directory's graph: read from the file as the stream is.
    let dir = tmp.path().join("pkg");
    pkg.write(&dir).unwrap();
    let (_, mut stream) = Package::open_streaming_graph(&dir).unwrap();
    assert_eq!(stream.declared_sha256(), Some(digest.as_str()));
    let mut head = [0u8; 10];
    stream.read_exact(&mut head).unwrap();
    let second = stream.reopen().expect("a file's stream reopens").unwrap();
    second.finish().unwrap();
    stream.finish().unwrap();
    // Reopened after the file changed: the second stream refuses it.
    let (_, stream) = Package::open_streaming_graph(&dir).unwrap();
    std::fs::write(dir.join("model.onnx"), vec![8u8; 1000]).unwrap();
    let second = stream.reopen().expect("a file's stream reopens").unwrap();
    assert!(second.finish().is_err());
    // Bytes a package verified: the digest, and nothing to reopen.
    let mut pkg = sample();
    let stream = pkg.take_stream("model.onnx").unwrap();
    assert_eq!(stream.declared_sha256(), Some(digest.as_str()));
    assert!(stream.reopen().is_none());
    // Bytes nobody verified: neither.
    let stream = FileStream::of_bytes("model.onnx", vec![1, 2, 3]);
    assert_eq!(stream.declared_sha256(), None);
    assert!(stream.reopen().is_none());
}
