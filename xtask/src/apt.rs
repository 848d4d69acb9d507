//! Installing Debian packages: the one place that decides whether we may, and updates once.

use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd;

/// Installs packages with apt-get, refreshing the package lists on first use only.
pub struct Apt {
    /// Why installing is not allowed, if it is not; named in the error so the user can act.
    refused: Option<&'static str>,
    /// Whether `apt-get update` already ran in this process (it takes a while; once is enough).
    updated: bool,
}

impl Apt {
    /// `allowed` is false when the user asked for no installs (`--no-install`).
    pub fn new(allowed: bool) -> Self {
        let refused = if !allowed {
            Some("--no-install was given")
        } else if !cmd::is_root() {
            Some("installing packages needs root")
        } else {
            None
        };
        Apt {
            refused,
            updated: false,
        }
    }

    /// Installs `packages`, which provide `what`; fails with the command to run if we may not.
    pub fn install(&mut self, what: &str, packages: &[&str]) -> Result<()> {
        if let Some(reason) = self.refused {
            bail!(
                "not installed: {what} ({reason}); install with \
                 `apt-get install -y --no-install-recommends {}` and run again",
                packages.join(" ")
            );
        }
        if !self.updated {
            cmd::run(apt_get().arg("update"))?;
            self.updated = true;
        }
        cmd::run(
            apt_get()
                .args(["install", "-y", "--no-install-recommends"])
                .args(packages),
        )
    }
}

fn apt_get() -> Command {
    let mut apt = Command::new("apt-get");
    // No debconf questions (CI has no terminal), and wait for a concurrent apt instead of failing.
    apt.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-o", "DPkg::Lock::Timeout=600"]);
    apt
}
