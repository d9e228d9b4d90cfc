//! A host application that embeds the WASI component (`tools/build/component.sh`) with
//! wasmtime: a memory cap and a deadline per call, errors told apart, and a model that starts
//! afresh after a call that a limit stopped. The package never runs outside the sandbox.
//!
//! ```sh
//! tools/build/component.sh
//! cargo run --release -p autoglm-example-wasm-host -- models/sentiment-int8.tar "I loved this film"
//! ```
//!
//! `AUTOGLM_COMPONENT` (else `autoglm-edge.wasm` next to this program) names the component;
//! `EXAMPLE_MEMORY_MIB` and `EXAMPLE_DEADLINE_MS` set the limits (512 MiB, 5000 ms).

use autoglm_wasm::{find_component, Host, HostOptions, Limits, WasmError, WasmModel};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(package) = args.next() else {
        eprintln!("usage: autoglm-example-wasm-host PACKAGE TEXT…");
        return ExitCode::from(2);
    };
    let texts: Vec<String> = args.collect();
    match run(Path::new(&package), &texts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A limit from the environment, or its default.
fn limit(name: &str, default: u64) -> Result<u64, WasmError> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| WasmError::InvalidInput(format!("{name}={v}: a whole number > 0"))),
    }
}

fn run(package: &Path, texts: &[String]) -> Result<(), WasmError> {
    if texts.is_empty() {
        return Err(WasmError::InvalidInput(
            "no texts to run: give them after the package".into(),
        ));
    }
    let limits = Limits {
        memory: usize::try_from(limit("EXAMPLE_MEMORY_MIB", 512)?)
            .unwrap_or(usize::MAX)
            .saturating_mul(1 << 20),
        deadline: Some(Duration::from_millis(limit("EXAMPLE_DEADLINE_MS", 5000)?)),
        fuel: None,
    };
    // Compiling the component takes seconds the first time; the `.cwasm` cache makes later
    // starts take milliseconds.
    let options = HostOptions {
        deadlines: true,
        ..HostOptions::default()
    };
    let host = Host::new(&find_component(None)?, &options)?;
    println!(
        "component ready ({:?}, {:.2} s)",
        host.compiled(),
        host.compile_time().as_secs_f64()
    );
    let mut model = WasmModel::load_path(&host, package, limits)?;
    let info = model.info().clone();
    println!(
        "{:?} package in the sandbox: {} ({}, {} MiB cap, deadline {:?})",
        info.kind,
        info.base_model,
        info.engine,
        limits.memory >> 20,
        limits.deadline.unwrap_or_default()
    );
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    match model.classify(&texts) {
        Ok(predictions) => {
            for (text, p) in texts.iter().zip(predictions) {
                println!("{}\t{:.4}\t{text}", p.label, p.scores[p.index as usize]);
            }
            Ok(())
        }
        // The instance was stopped and dropped; the next call on `model` starts a fresh one.
        Err(e @ (WasmError::Deadline(_) | WasmError::MemoryLimit { .. })) => {
            eprintln!("stopped by a limit: {e}; raise EXAMPLE_DEADLINE_MS or EXAMPLE_MEMORY_MIB");
            Err(e)
        }
        Err(e) => Err(e),
    }
}
