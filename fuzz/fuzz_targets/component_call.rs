//! Arbitrary bytes through the WASI component's entry points (`load`, `classify`, `embed`,
//! `outputs`) via the wasmtime host. Needs `--features wasm` (builds wasmtime and tract) and
//! `AUTOGLM_COMPONENT` naming a built component (tools/build/component.sh).
#![no_main]

use autoglm_export::fixture;
use autoglm_wasm::{fuzzing, Host, HostOptions, WasmModel};
use std::sync::{Mutex, OnceLock};

static HOST: OnceLock<(Host, Mutex<WasmModel>)> = OnceLock::new();

fn host() -> (Host, Mutex<WasmModel>) {
    let path = std::env::var_os("AUTOGLM_COMPONENT")
        .expect("set AUTOGLM_COMPONENT to the component (tools/build/component.sh)");
    // The component computes the digests (its `load`), so that fuzzed packages reach its
    // parser rather than stopping at the host's check.
    let options = HostOptions {
        verify_in_guest: true,
        // `fuzzing::limits` has a deadline.
        deadlines: true,
        ..HostOptions::default()
    };
    let host = Host::new(path.as_ref(), &options).expect("the component compiles");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tar = fixture::classification_package(dir.path()).to_tar();
    let model = WasmModel::load(&host, tar, fuzzing::limits()).expect("the fixture loads");
    (host, Mutex::new(model))
}

// The host starts before fuzzing: for a component without a `.cwasm` in the cache, compiling
// it (with the instrumented Cranelift of this build) took 66 s, past libFuzzer's per-input
// timeout, which the first input would otherwise have run into.
libfuzzer_sys::fuzz_target!(
    init: {
        HOST.get_or_init(host);
    },
    |data: &[u8]| {
        let (host, model) = HOST.get_or_init(host);
        let mut model = model.lock().unwrap_or_else(|e| e.into_inner());
        fuzzing::component_call(host, &mut model, data)
    }
);
