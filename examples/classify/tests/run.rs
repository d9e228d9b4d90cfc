//! The example on the committed int8 sentiment package: it loads, classifies as the CLI does,
//! and refuses bad input with a message.

use std::process::Command;

fn example(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autoglm-example-classify"))
        .args(args)
        .output()
        .expect("run the example")
}

#[test]
fn classifies_with_the_committed_package() {
    let _budget = autoglm_testkit::budget("example classify", 120);
    let package = autoglm_testkit::workspace().join("models/sentiment-int8.tar");
    let out = example(&[
        package.to_str().expect("utf-8 path"),
        "I loved this film",
        "A dull, lifeless waste of two hours.",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("Classification package: "), "{stdout}");
    assert!(stdout.contains("\npositive\t0.9"), "{stdout}");
    assert!(stdout.contains("\nnegative\t0.9"), "{stdout}");
    assert!(
        stdout.contains("{\"label\":\"positive\",\"scores\":{"),
        "{stdout}"
    );
}

#[test]
fn refuses_what_it_cannot_run() {
    let out = example(&[]);
    assert_eq!(out.status.code(), Some(2));
    let out = example(&["/no/such/package.tar", "text"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/package.tar"), "{err}");
    let package = autoglm_testkit::workspace().join("models/sentiment-int8.tar");
    let out = example(&[package.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no texts"));
}
