//! Test support shared by the workspace's test suites; a dev-dependency only, never shipped.
//!
//! * [`budget`]: a watchdog for a heavy test. A hang or a 100x slowdown (one test once ran for
//!   over 40 minutes in CI) fails the test binary within the budget, with a message that names
//!   the test, instead of eating CI's time.
//! * [`present`]: the rule for a test's prerequisite: there, the test runs; missing, it skips
//!   outside CI and fails under CI. [`assets`] (the fetched models and data) and [`component`]
//!   (the built WASI component) follow it.
//! * [`max_abs_diff`]: how far apart two outputs are, the measure of every numeric comparison.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// Whether the tests run under CI (`CI` set), where a missing prerequisite fails instead of
/// skipping.
pub fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// The workspace root: two levels above the running test's crate (`CARGO_MANIFEST_DIR`, which
/// cargo sets when it runs a test or bench). Read at run time, not compiled in: cargo reuses a
/// compiled test binary when the same sources sit in another checkout (a fresh CI clone with a
/// shared target directory), and a path compiled in would then name the old checkout.
pub fn workspace() -> PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    crate_dir
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// `AUTOGLM_TEST_BUDGET_SCALE` (default 1): budgets are multiplied by it, for example under
/// emulation (tools/check/test-aarch64.sh), where everything runs tens of times slower.
fn scale() -> f64 {
    std::env::var("AUTOGLM_TEST_BUDGET_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0)
}

/// Whether the tests run on a slow runner (an emulator: `AUTOGLM_TEST_BUDGET_SCALE` above 1),
/// where exhaustive tests of code that does not depend on the CPU take a sample instead.
pub fn slow_runner() -> bool {
    scale() > 1.0
}

/// A running watchdog; dropping it (the test finished, or panicked) disarms it.
#[derive(Debug)]
pub struct Budget {
    _disarm: mpsc::Sender<()>,
}

/// Arms a watchdog for the calling test: if it is still alive after `seconds` (times
/// `AUTOGLM_TEST_BUDGET_SCALE`), the whole test binary exits with status 1 and a message naming
/// `what`. Set budgets at about 10x the test's normal time on a loaded 2-core machine: far from
/// its normal spread, well below a hang.
#[must_use = "the budget is disarmed when dropped: bind it to a variable for the test's duration"]
pub fn budget(what: &str, seconds: u64) -> Budget {
    let limit = Duration::from_secs_f64(seconds as f64 * scale());
    let (disarm, armed) = mpsc::channel::<()>();
    let what = what.to_string();
    std::thread::Builder::new()
        .name(format!("budget: {what}"))
        .spawn(move || {
            // A message or the sender's drop both end the wait; only the time-out fires.
            if let Err(mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(limit) {
                // Straight to the process's stderr: the test harness captures `eprintln!`.
                let _ = writeln!(
                    std::io::stderr(),
                    "\nTEST BUDGET EXCEEDED: `{what}` still running after {limit:?} (a hang, or \
                     a slowdown of 10x or more); stopping the test binary"
                );
                std::process::exit(1);
            }
        })
        .expect("spawn the watchdog thread");
    Budget { _disarm: disarm }
}

/// A test's prerequisite: `found` when it is there; when it is not, `None` (the test skips)
/// with a line `skipping: <missing>` outside CI, and a panic under CI, which must not skip.
/// `missing` says what is missing and how to get it.
pub fn present<T>(found: Option<T>, missing: impl FnOnce() -> String) -> Option<T> {
    if found.is_some() {
        return found;
    }
    let missing = missing();
    if ci() {
        panic!("{missing} (CI must not skip this test)");
    }
    eprintln!("skipping: {missing}");
    None
}

/// The assets folder of `tools/setup/fetch-assets.sh`: `AUTOGLM_ASSETS`, else `.cache/assets` in the
/// workspace (whether or not it is there).
pub fn assets_dir() -> PathBuf {
    std::env::var_os("AUTOGLM_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/assets"))
}

/// The assets folder when every one of `files` (paths inside it) is there; else, by
/// [`present`], a skip outside CI and a failure under CI.
pub fn assets(files: &[&str]) -> Option<PathBuf> {
    let dir = assets_dir();
    let complete = files.iter().all(|f| dir.join(f).exists());
    present(complete.then(|| dir.clone()), || {
        format!(
            "assets missing at {}: run tools/setup/fetch-assets.sh",
            dir.display()
        )
    })
}

/// The component (`AUTOGLM_COMPONENT`, built by tools/build/component.sh), or, by [`present`],
/// a skip outside CI and a failure under CI.
pub fn component() -> Option<PathBuf> {
    let built = std::env::var_os("AUTOGLM_COMPONENT")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    present(built, || {
        "AUTOGLM_COMPONENT must name the output of tools/build/component.sh".into()
    })
}

/// Largest absolute difference of two equally long vectors (panics on a length mismatch: two
/// outputs of different widths are a failed comparison, not a small difference).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_dropped_in_time_never_fires() {
        let b = budget("quick", 1);
        drop(b);
        std::thread::sleep(Duration::from_millis(1200));
    }

    #[test]
    fn a_missing_prerequisite_skips_outside_ci_and_fails_under_it() {
        assert_eq!(present(Some(3), || unreachable!()), Some(3));
        let missing = || present(None::<u8>, || "the thing is missing".into());
        if ci() {
            let e = std::panic::catch_unwind(missing).unwrap_err();
            let message = e.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(
                message.contains("the thing is missing (CI must not skip"),
                "{message}"
            );
        } else {
            assert_eq!(missing(), None);
        }
        let dir = assets_dir();
        if !dir.join("no/such/asset").exists() && !ci() {
            assert_eq!(assets(&["no/such/asset"]), None);
        }
    }

    #[test]
    fn an_exceeded_budget_stops_the_process_with_a_message() {
        // In a child process: the watchdog exits the whole process.
        if std::env::var_os("AUTOGLM_TESTKIT_CHILD").is_some() {
            let _b = budget("sleeper", 1);
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        let exe = std::env::current_exe().expect("test binary");
        let started = std::time::Instant::now();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "tests::an_exceeded_budget_stops_the_process_with_a_message",
                "--nocapture",
            ])
            .env("AUTOGLM_TESTKIT_CHILD", "1")
            .env_remove("AUTOGLM_TEST_BUDGET_SCALE")
            .output()
            .expect("run the child");
        assert_eq!(out.status.code(), Some(1));
        assert!(started.elapsed() < Duration::from_secs(20));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("TEST BUDGET EXCEEDED: `sleeper`"), "{err}");
    }
}
