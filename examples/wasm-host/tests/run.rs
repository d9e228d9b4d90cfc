//! The example on the built component (`AUTOGLM_COMPONENT`; skips where it is not built, fails
//! under CI) and the committed int8 sentiment package: answers within its limits, and a memory
//! cap too small for the package is reported as such.

use std::process::{Command, Output};

fn example(component: &std::path::Path, memory_mib: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoglm-example-wasm-host"))
        .args(args)
        .env("AUTOGLM_COMPONENT", component)
        .env("EXAMPLE_MEMORY_MIB", memory_mib)
        .output()
        .expect("run the example")
}

#[test]
fn classifies_in_the_sandbox_and_reports_its_limits() {
    let Some(component) = autoglm_testkit::component() else {
        return;
    };
    let _budget = autoglm_testkit::budget("example wasm-host", 300);
    let package = autoglm_testkit::workspace().join("models/sentiment-int8.tar");
    let package = package.to_str().expect("utf-8 path");
    let out = example(&component, "512", &[package, "I loved this film"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("package in the sandbox"), "{stdout}");
    assert!(stdout.contains("\npositive\t0.9"), "{stdout}");
    // 16 MiB cannot hold a 24.6 MB package: the host says which limit stopped it.
    let out = example(&component, "16", &[package, "I loved this film"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more memory than its cap"), "{err}");
    let out = example(&component, "0", &[package, "text"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("EXAMPLE_MEMORY_MIB=0"));
}
