//! The benchmark's quick mode, run once by the test command so that the
//! benchmark keeps compiling and working. It asserts only that every task
//! completed and none was lost (the binary exits non-zero otherwise); it
//! never asserts a speed.

#![allow(clippy::unwrap_used)]

use std::process::Command;

/// `contact-bench --quick` drives every scenario against a real
/// contact-server process and loses nothing.
#[test]
fn quick_benchmark_loses_nothing() {
    let output = Command::new(env!("CARGO_BIN_EXE_contact-bench"))
        .arg("--quick")
        .args(["--server-bin", env!("CARGO_BIN_EXE_contact-server")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("0 lost"), "{stdout}");
    assert!(stdout.contains("| saturation |"), "{stdout}");
}
