//! Test support shared by the workspace's test suites; a dev-dependency only, never shipped.
//!
//! * [`budget`]: a watchdog for a heavy test. A hang or a 100x slowdown (one test once ran for
//!   over 40 minutes in CI) fails the test binary within the budget, with a message that names
//!   the test, instead of eating CI's time.
//! * [`component`]: the built WASI component, or a skip outside CI.

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
/// emulation (tools/test-aarch64.sh), where everything runs tens of times slower.
fn scale() -> f64 {
    std::env::var("AUTOGLM_TEST_BUDGET_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0)
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

/// The component (`AUTOGLM_COMPONENT`, built by tools/build-component.sh), or `None` (the test
/// skips) outside CI when it has not been built; under CI its absence fails the test.
pub fn component() -> Option<PathBuf> {
    match std::env::var_os("AUTOGLM_COMPONENT").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        _ if ci() => {
            panic!("AUTOGLM_COMPONENT must name the built component under CI (tools/build-component.sh)")
        }
        _ => {
            eprintln!("skipping: set AUTOGLM_COMPONENT to the output of tools/build-component.sh");
            None
        }
    }
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
