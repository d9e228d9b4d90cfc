//! The body of the `component_call` fuzz target (`fuzz/`, cargo-fuzz on nightly) and of its
//! corpus replay test (`tests/fuzz_corpus.rs`, stable): the same code for both. Not a public API.

use crate::{Host, Limits, WasmError, WasmModel};
use std::time::Duration;

/// The limits the target loads packages under: far above what the fixture packages need, so
/// that reaching one means the guest's memory or time is not bounded by its input.
pub fn limits() -> Limits {
    Limits {
        memory: 256 << 20,
        deadline: Some(Duration::from_secs(30)),
        fuel: None,
    }
}

/// Target `component_call`: the component's WIT entry points through the host. The first byte
/// picks the call: 0 `load` with the rest as a package `.tar`; 1 `classify`, 2 `embed`, 3
/// `outputs` on `model` (a classification package loaded once) with the rest as texts split at
/// `\n` (lossy UTF-8).
///
/// Must never panic, trap, or run into a limit: bad input is the component's
/// `invalid-package`/`invalid-input` (or `runtime`) error, and an accepted call answers one row
/// per text.
pub fn component_call(host: &Host, model: &mut WasmModel, bytes: &[u8]) {
    let Some((&pick, rest)) = bytes.split_first() else {
        return;
    };
    let refused = |e: &WasmError| {
        assert!(
            !e.stopped_instance() && !matches!(e, WasmError::Component { .. }),
            "call {pick}: {e}"
        );
    };
    if pick % 4 == 0 {
        match WasmModel::load(host, rest.to_vec(), limits()) {
            Ok(loaded) => assert!(loaded.info().max_length >= 2 && loaded.info().hidden_size > 0),
            Err(e) => refused(&e),
        }
        return;
    }
    let text = String::from_utf8_lossy(rest);
    let texts: Vec<&str> = text.split('\n').collect();
    let rows = match pick % 4 {
        1 => model.classify(&texts).map(|p| {
            for p in &p {
                assert_eq!(p.scores.len(), model.labels().len());
                let sum: f32 = p.scores.iter().sum();
                assert!((sum - 1.0).abs() < 1e-3, "scores sum to {sum}");
            }
            p.len()
        }),
        2 => model.embed(&texts).map(|v| v.len()),
        _ => model.outputs(&texts).map(|v| v.len()),
    };
    match rows {
        Ok(rows) => assert_eq!(rows, texts.len()),
        Err(e) => refused(&e),
    }
}
