//! Arbitrary bytes as texts: tokenize with the fixture tokenizer, then batch. Needs
//! `--features runtime` (builds tract).
#![no_main]

use std::sync::OnceLock;

static TOKENIZER: OnceLock<String> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let json = TOKENIZER.get_or_init(autoglm_export::fixture::tokenizer_json);
    autoglm_runtime::fuzzing::tokenize_batch(json.as_bytes(), data)
});
