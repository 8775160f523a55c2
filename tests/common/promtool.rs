//! `promtool`, from Debian's prometheus package, for checking `/metrics`
//! the way Prometheus's own linter does. A `promtool` on the PATH (or named
//! by `PROMTOOL`) is used as it is; otherwise the package is fetched once
//! into the target directory with `apt-get download` and unpacked with
//! `dpkg-deb -x`, so the test command installs what it needs by itself.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The path of a working promtool, fetching it on first use.
pub fn path() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return path.into();
    }
    if works(Path::new("promtool")) {
        return "promtool".into();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools");
    let installed = dir.join("promtool");
    if works(&installed) {
        return installed;
    }
    let work = dir.join(format!("fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let download = || {
        run(Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(&work))
    };
    if !download().status.success() {
        // A fresh machine may have no package lists, or stale ones.
        let update = run(Command::new("apt-get").arg("update"));
        assert!(
            update.status.success(),
            "apt-get update failed: {}",
            text(&update)
        );
        let again = download();
        assert!(
            again.status.success(),
            "apt-get download prometheus failed: {}",
            text(&again)
        );
    }
    let deb = std::fs::read_dir(&work)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .expect("apt-get download left no .deb");
    let unpacked = work.join("root");
    let unpack = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    assert!(
        unpack.status.success(),
        "dpkg-deb -x failed: {}",
        text(&unpack)
    );
    // A rename is atomic, so a concurrent run sees no half-written binary.
    std::fs::rename(unpacked.join("usr/bin/promtool"), &installed).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    assert!(works(&installed), "the unpacked promtool does not run");
    installed
}

/// Runs `promtool check metrics` on an exposition; its complaints, if any.
pub fn check_metrics(exposition: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = Command::new(path())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    if output.status.success() {
        Ok(())
    } else {
        Err(text(&output))
    }
}

fn works(promtool: &Path) -> bool {
    Command::new(promtool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
