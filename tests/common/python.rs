//! A Python with grpcio for the interop tests: a virtualenv under the target
//! directory, made once from `examples/python/requirements.txt` (PyPI) with
//! the `contact-client` package of `clients/python` installed editable (so
//! its sources are used as they are), and reused while the requirements
//! and the package's pyproject.toml are unchanged.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Mutex,
};

/// The project's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python examples' folder.
pub fn examples() -> PathBuf {
    root().join("examples/python")
}

/// The Python package's folder.
pub fn package() -> PathBuf {
    root().join("clients/python")
}

/// The virtualenv's python, made (or remade) if needed.
pub fn python() -> PathBuf {
    // One test at a time makes the environment; the rest wait and reuse it.
    static MAKING: Mutex<()> = Mutex::new(());
    let _making = MAKING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-venv");
    let python = venv.join("bin/python");
    let requirements = std::fs::read_to_string(examples().join("requirements.txt")).unwrap()
        + &std::fs::read_to_string(package().join("pyproject.toml")).unwrap();
    let marker = venv.join("requirements.installed");
    if std::fs::read_to_string(&marker).is_ok_and(|installed| installed == requirements)
        && python.exists()
    {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let made = run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    assert!(
        made.status.success(),
        "python3 -m venv failed: {}",
        text(&made)
    );
    let installed = run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(examples().join("requirements.txt")));
    assert!(
        installed.status.success(),
        "pip install failed: {}",
        text(&installed)
    );
    // The venv has setuptools (grpcio-tools needs it): no build isolation,
    // so nothing more is fetched.
    let package_installed = run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-build-isolation",
            "-e",
        ])
        .arg(package()));
    assert!(
        package_installed.status.success(),
        "pip install -e clients/python failed: {}",
        text(&package_installed)
    );
    std::fs::write(&marker, requirements).unwrap();
    python
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

/// A command's stdout and stderr, for a failure message.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
