//! The host on the real component (tools/build/component.sh; `AUTOGLM_COMPONENT` names it) and
//! the committed int8 sentiment package: limits stop the guest, never the host; the component's
//! error variant comes back as the host's error; the `.cwasm` cache is written, then used.

use autoglm_testkit::{budget, component, workspace};
use autoglm_wasm::{Compiled, Host, HostOptions, Limits, WasmError, WasmModel};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

fn package() -> Vec<u8> {
    std::fs::read(workspace().join("models/sentiment-int8.tar")).expect("committed package")
}

struct Shared {
    host: Host,
    /// The same component with `verify_in_guest` (the component's `load` computes the digests,
    /// where `host`'s packages go through `load-verified`) and `deadlines`, as the fuzz target
    /// runs it: compiled again, with epoch checks, into the same cache.
    guest_verifies: Host,
    first: Compiled,
    _cache: tempfile::TempDir,
}

/// One compilation per configuration for the whole run: compiled into a fresh cache, then
/// loaded from it.
fn shared() -> Option<&'static Shared> {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    let path = component()?;
    Some(SHARED.get_or_init(|| {
        let cache = tempfile::tempdir().expect("temp dir");
        let options = HostOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            ..HostOptions::default()
        };
        let first = Host::new(&path, &options)
            .expect("compile")
            .compiled()
            .clone();
        let host = Host::new(&path, &options).expect("load from cache");
        let in_guest = HostOptions {
            verify_in_guest: true,
            deadlines: true,
            ..options
        };
        let guest_verifies = Host::new(&path, &in_guest).expect("compile with deadlines");
        Shared {
            host,
            guest_verifies,
            first,
            _cache: cache,
        }
    }))
}

fn host() -> Option<&'static Host> {
    shared().map(|s| &s.host)
}

fn guest_verifies() -> Option<&'static Host> {
    shared().map(|s| &s.guest_verifies)
}

/// Both hosts: the one that verifies packages itself (no epoch checks), and the one whose
/// component does (with epoch checks, for deadlines).
fn both_hosts() -> Option<(&'static Host, &'static Host)> {
    shared().map(|s| (&s.host, &s.guest_verifies))
}

#[test]
fn cwasm_cache_is_written_then_used() {
    let _budget = budget("cwasm_cache_is_written_then_used", 300);
    let Some(s) = shared() else { return };
    let Compiled::CompiledAndCached(written) = &s.first else {
        panic!("first start did not cache: {:?}", s.first)
    };
    assert_eq!(s.host.compiled(), &Compiled::Cached(written.clone()));
    assert!(
        s.host.compile_time() < Duration::from_secs(5),
        "loading the .cwasm took {:?}",
        s.host.compile_time()
    );
}

#[test]
fn classifies_and_reports_the_package() {
    let _budget = budget("classifies_and_reports_the_package", 300);
    let Some(host) = host() else { return };
    let mut model = WasmModel::load(host, package(), Limits::default()).expect("load");
    assert_eq!(model.labels(), ["negative", "positive"]);
    assert_eq!(model.info().quantization, "int8");
    assert_eq!(model.info().max_length, 256);
    let p = model
        .classify(&[
            "I loved this film, the acting was wonderful.",
            "A dull, pointless mess.",
        ])
        .expect("classify");
    assert_eq!(p[0].label, "positive");
    assert_eq!(p[1].label, "negative");
    assert!((p[0].scores.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    // The wrong call for the kind of package comes back as the invalid-input variant.
    let err = model.embed(&["text"]).expect_err("embed on a classifier");
    assert!(matches!(err, WasmError::InvalidInput(_)), "{err:?}");
    // ... and the instance is still usable.
    assert_eq!(model.classify(&["Great!"]).expect("classify").len(), 1);
}

#[test]
fn corrupt_packages_come_back_as_the_invalid_package_variant() {
    let _budget = budget(
        "corrupt_packages_come_back_as_the_invalid_package_variant",
        300,
    );
    let Some((host, in_guest)) = both_hosts() else {
        return;
    };
    let good = package();
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    let cases: [(&str, Vec<u8>); 4] = [
        ("one flipped byte", flipped),
        ("truncated", good[..good.len() / 3].to_vec()),
        ("not a tar", b"definitely not a package".to_vec()),
        ("empty", Vec::new()),
    ];
    // Refused by the host's check (then `load-verified` is never called), and by the
    // component's own `load` when it computes the digests.
    for (who, host) in [("host", host), ("component", in_guest)] {
        for (what, bytes) in &cases {
            let err = WasmModel::load(host, bytes.clone(), Limits::default()).expect_err(what);
            assert!(
                matches!(err, WasmError::InvalidPackage(_)),
                "{who}, {what}: {err:?}"
            );
        }
    }
}

/// `load-verified` (digests checked by the host) and `load` (by the component) load the same
/// model: the same answers, bit for bit.
#[test]
fn a_package_verified_by_the_host_loads_as_the_component_would_load_it() {
    let _budget = budget(
        "a_package_verified_by_the_host_loads_as_the_component_would_load_it",
        300,
    );
    let Some((host, in_guest)) = both_hosts() else {
        return;
    };
    let texts = ["A dull, pointless mess.", "I loved it", ""];
    let mut answers = Vec::new();
    for host in [host, in_guest] {
        let mut model = WasmModel::load(host, package(), Limits::default()).expect("load");
        let labels = model.labels().to_vec();
        answers.push((labels, model.outputs(&texts).expect("outputs")));
    }
    assert_eq!(answers[0], answers[1]);
}

#[test]
fn a_too_small_memory_cap_stops_the_guest_not_the_host() {
    let _budget = budget("a_too_small_memory_cap_stops_the_guest_not_the_host", 300);
    let Some(host) = host() else { return };
    let tiny = Limits {
        memory: 16 << 20,
        ..Limits::default()
    };
    let err =
        WasmModel::load(host, package(), tiny).expect_err("16 MiB cannot hold a 25 MB package");
    assert!(
        matches!(err, WasmError::MemoryLimit { limit, .. } if limit == 16 << 20),
        "{err:?}"
    );
    assert!(err.to_string().contains("memory"), "{err}");
    // The host goes on: the same package under the default cap loads and runs.
    let mut model = WasmModel::load(host, package(), Limits::default()).expect("load");
    assert_eq!(model.classify(&["Fine."]).expect("classify").len(), 1);
}

#[test]
fn a_too_short_deadline_stops_the_call_and_the_model_recovers() {
    let _budget = budget(
        "a_too_short_deadline_stops_the_call_and_the_model_recovers",
        300,
    );
    let Some((host, with_deadlines)) = both_hosts() else {
        return;
    };
    let short = Limits {
        deadline: Some(Duration::from_millis(10)),
        ..Limits::default()
    };
    // A host without epoch checks refuses a deadline rather than ignoring it.
    let err = WasmModel::load(host, package(), short).expect_err("no epoch checks");
    assert!(
        matches!(
            err,
            WasmError::LimitNotCompiled {
                limit: "deadline",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("HostOptions::deadlines"), "{err}");
    let mut model = WasmModel::load(host, package(), Limits::default()).expect("load");
    assert!(model.set_limits(short).is_err());
    assert_eq!(model.limits(), Limits::default());

    let mut model = WasmModel::load(with_deadlines, package(), Limits::default()).expect("load");
    let long = "a long and winding review of a film that goes on and on ".repeat(30);
    let texts: Vec<&str> = std::iter::repeat_n(long.as_str(), 16).collect();
    model.set_limits(short).expect("a host with deadlines");
    let err = model
        .classify(&texts)
        .expect_err("16 x 256 tokens cannot run in 10 ms");
    assert!(
        matches!(err, WasmError::Deadline(d) if d == Duration::from_millis(10)),
        "{err:?}"
    );
    assert!(err.stopped_instance());
    // Without the deadline the next call runs in a fresh instance, with the package reloaded.
    model
        .set_limits(Limits::default())
        .expect("no limit to refuse");
    let p = model
        .classify(&["I loved it."])
        .expect("classify after the trap");
    assert_eq!(p[0].label, "positive");
}

/// What the component may weigh, stripped, as tools/build/component.sh builds it. Issue #15's
/// goal is 6 MB, reached on 2026-12-04 with our own ONNX front end and BERT tokenizer and
/// `wasm-opt -Oz` (5,986,366 bytes, BENCHMARKS.md wave 24); the profile's "z" then made it
/// 5,087,643 (wave 26). The limit keeps that gain: the first compile scales with the code and
/// misses its 3 s goal by 0.15-0.5 s, so anything that adds more than ~200 KB must pay for
/// itself elsewhere. (`AUTOGLM_WASM_OPT=0` builds skip Binaryen and fail this.)
const COMPONENT_SIZE_LIMIT: u64 = 5_300_000;

#[test]
fn the_component_stays_within_its_size_limit() {
    let Some(path) = component() else { return };
    let size = std::fs::metadata(&path).expect("component").len();
    assert!(
        size <= COMPONENT_SIZE_LIMIT,
        "{} is {size} bytes, over the limit of {COMPONENT_SIZE_LIMIT}: see BENCHMARKS.md \
         (\"Component size\") for what each part costs",
        path.display()
    );
}

#[test]
fn a_missing_component_is_a_clear_error() {
    let err = Host::new(
        Path::new("/nonexistent/autoglm-edge.wasm"),
        &HostOptions::default(),
    )
    .expect_err("no such file");
    assert!(matches!(err, WasmError::Read { .. }), "{err:?}");
    let err = autoglm_wasm::find_component(Some(Path::new("/nonexistent/x.wasm")))
        .expect_err("no such file");
    assert!(
        err.to_string().contains("tools/build/component.sh"),
        "{err}"
    );
}

#[test]
fn fuel_stops_the_guest_when_asked_for() {
    let _budget = budget("fuel_stops_the_guest_when_asked_for", 600);
    let Some(path) = component() else { return };
    let starved = Limits {
        fuel: Some(100_000),
        ..Limits::default()
    };
    // Without fuel checks, a fuel limit is refused rather than ignored.
    let plain = host().expect("the component is there");
    let err = WasmModel::load(plain, package(), starved).expect_err("no fuel checks");
    assert!(
        matches!(err, WasmError::LimitNotCompiled { limit: "fuel", .. }),
        "{err:?}"
    );
    // Fuel checks are compiled in only when asked for: another compilation (no cache).
    let options = HostOptions {
        fuel: true,
        no_cache: true,
        ..HostOptions::default()
    };
    let host = Host::new(&path, &options).expect("compile with fuel");
    let err = WasmModel::load(&host, package(), starved).expect_err("100k operations load nothing");
    assert!(matches!(err, WasmError::OutOfFuel(100_000)), "{err:?}");
    let fed = Limits {
        fuel: Some(u64::MAX / 4),
        ..Limits::default()
    };
    let mut model = WasmModel::load(&host, package(), fed).expect("load with fuel");
    assert_eq!(model.classify(&["Great!"]).expect("classify").len(), 1);
}

/// Median wall time of `runs` calls of `f`.
fn median_time(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// Native inference and the component on one thread, alternating, as a host app that runs both
/// engines does. tract's native kernels leave the vector registers' upper state dirty; on some
/// AVX-512 CPUs the component's code then ran 88-212x slower (a CI test ran for over 40 minutes)
/// until the host cleaned that state on entry into the guest (`autoglm_wasm::cpu`). This test
/// takes seconds: it fails on such a CPU if the cleaning is lost, and everywhere if the host
/// stops leaving the state clean.
#[test]
fn native_inference_on_the_same_thread_does_not_slow_the_component() {
    let _budget = budget(
        "native_inference_on_the_same_thread_does_not_slow_the_component",
        300,
    );
    let Some(host) = host() else { return };
    let text = ["The acting was wonderful and the story kept me interested to the end."];
    let mut wasm = WasmModel::load(host, package(), Limits::default()).expect("load");
    wasm.classify(&text).expect("warm-up");
    let alone = median_time(5, || {
        wasm.classify(&text).expect("classify");
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let tar = dir.path().join("sentiment-int8.tar");
    std::fs::write(&tar, package()).expect("write");
    let native = autoglm_runtime::Model::load(&tar).expect("native load");
    native.classify(&text).expect("native warm-up");
    let dirty_after_native = autoglm_wasm::cpu::upper_state_dirty();
    let mut state_after_guest = None;
    let mixed = median_time(5, || {
        native.classify(&text).expect("native");
        wasm.classify(&text).expect("classify after native");
        state_after_guest = autoglm_wasm::cpu::upper_state_dirty();
    });
    let native_alone = median_time(5, || {
        native.classify(&text).expect("native");
    });
    eprintln!(
        "component alone {alone:?}, native + component {mixed:?} (native alone {native_alone:?}); \
         upper state dirty after native: {dirty_after_native:?}"
    );
    // On the machine that showed the bug this was ~100x; cleaning brings it to ~1x + native.
    assert!(
        mixed < (alone + native_alone) * 3,
        "the component slows down after native inference on the same thread: \
         {mixed:?} vs {alone:?} + {native_alone:?}"
    );
    assert_ne!(
        state_after_guest,
        Some(true),
        "the host returned from the guest with the upper vector state dirty"
    );
}

/// Replays the committed seeds of the `component_call` fuzz target (`fuzz/corpus/`,
/// ROBUSTNESS.md) through the function the target runs, on the fixture package the target loads
/// (the seed `load_fixture.bin` is that package behind its `load` byte).
#[test]
fn component_call_corpus_replays() {
    let _budget = budget("component_call_corpus_replays", 300);
    // As the fuzz target runs: packages are checked by the component (`load`).
    let Some(host) = guest_verifies() else { return };
    let dir = workspace().join("fuzz/corpus/component_call");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("the committed corpus")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    paths.sort();
    assert!(paths.len() >= 3, "{}: too few seeds", dir.display());
    let fixture = std::fs::read(dir.join("load_fixture.bin")).expect("the fixture seed");
    let mut model = WasmModel::load(host, fixture[1..].to_vec(), autoglm_wasm::fuzzing::limits())
        .expect("the fixture package loads");
    for path in paths {
        let bytes = std::fs::read(&path).expect("a seed");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            autoglm_wasm::fuzzing::component_call(host, &mut model, &bytes)
        }));
        assert!(
            outcome.is_ok(),
            "component_call fails on {}",
            path.display()
        );
    }
}

/// With trusted keys configured, the host checks a package's signature before the component
/// sees it: a package signed by a trusted key loads (from bytes and from a directory), an
/// unsigned one and one signed by another key are refused as invalid packages.
#[test]
fn trusted_keys_gate_what_the_component_loads() {
    use autoglm_package::signature::{generate_keypair, write_new_key_file};
    use autoglm_package::{Package, SigningKey, TrustedKeys};
    let _budget = budget("trusted_keys_gate_what_the_component_loads", 300);
    let Some(path) = component() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let key = |name: &str| {
        let (public, secret) = generate_keypair(None).expect("keygen");
        let (p, s) = (
            dir.path().join(format!("{name}.pub")),
            dir.path().join(name),
        );
        write_new_key_file(&p, &public, false).expect("write");
        write_new_key_file(&s, &secret, true).expect("write");
        (p, SigningKey::from_file(&s, None).expect("secret key"))
    };
    let (owner_pub, owner) = key("owner");
    let (_, other) = key("other");
    let options = HostOptions {
        cache_dir: Some(dir.path().join("cache")),
        trust: TrustedKeys::from_files(&[owner_pub]).expect("trusted key"),
        ..HostOptions::default()
    };
    let host = Host::new(&path, &options).expect("host");
    let unsigned = Package::from_tar(&package()).expect("committed package");
    let signed_by = |k: &SigningKey| {
        let mut p = unsigned.clone();
        p.sign(k, "test").expect("sign");
        p
    };
    let good = signed_by(&owner);
    let mut model =
        WasmModel::load(&host, good.to_tar(), Limits::default()).expect("signed by the owner");
    assert_eq!(model.classify(&["great film"]).expect("classify").len(), 1);
    good.write(&dir.path().join("pkg")).expect("write dir");
    WasmModel::load_path(&host, &dir.path().join("pkg"), Limits::default())
        .expect("a signed directory");
    for (what, p) in [
        ("unsigned", unsigned.clone()),
        ("other key", signed_by(&other)),
    ] {
        match WasmModel::load(&host, p.to_tar(), Limits::default()) {
            Err(WasmError::InvalidPackage(m)) => assert!(m.contains("sign"), "{what}: {m}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}
