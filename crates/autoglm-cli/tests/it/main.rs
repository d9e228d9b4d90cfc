//! End-to-end tests on the real all-MiniLM-L6-v2 and the committed sentiment adapter.
//!
//! They need the assets `tools/setup/fetch-assets.sh` downloads. Without them a test skips with a
//! message locally, and fails under CI (`CI` set), where a skip would hide a broken setup.

mod cli;
mod edge_options;
mod export;
mod fidelity;
mod hardening;
mod multitask;
mod support;
#[cfg(feature = "wasm")]
mod wasm;
