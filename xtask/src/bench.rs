//! `cargo xtask bench NAME`: runs one benchmark of the aegir-bench binary against real services.

use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;

use crate::apt::Apt;
use crate::{cmd, postgres, services};

/// The benchmarks aegir-bench knows.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Bench {
    /// The operations engine, on the PostgreSQL store.
    Engine,
    /// One WordPress environment install and delete, on nginx, php-fpm and MariaDB.
    Site,
    /// Backup and restore of a WordPress-shaped site against Aegir 3's mysqldump + tar czf.
    Backup,
    /// The web UI's render time over 10,000 environments, against the JSON API.
    Web,
    /// `aegir import aegir3` of the shared fixture plus 1,000 generated sites, against reading
    /// the same data raw.
    Import,
}

impl Bench {
    /// The name aegir-bench takes on its command line.
    fn name(self) -> &'static str {
        match self {
            Bench::Engine => "engine",
            Bench::Site => "site",
            Bench::Backup => "backup",
            Bench::Web => "web",
            Bench::Import => "import",
        }
    }
}

pub fn run(root: &Path, bench: Bench, quick: bool, install: bool, extra: &[String]) -> Result<()> {
    let mut apt = Apt::new(install);
    let postgres_url = postgres::ensure(&mut apt)?;
    if matches!(bench, Bench::Site | Bench::Backup | Bench::Import) {
        services::ensure(&mut apt)?;
        services::start()?;
    }

    let name = bench.name();
    cmd::header(&format!("Benchmark {name}"));
    let mut cargo = cmd::cargo();
    // Release: a debug build would measure the compiler's lack of optimisation, not our code.
    cargo
        .current_dir(root)
        .args([
            "run",
            "--release",
            "-p",
            "aegir-tests",
            "--bin",
            "aegir-bench",
        ])
        .args(["--", name])
        .env(postgres::URL_VAR, &postgres_url);
    if quick {
        cargo.arg("--quick");
    }
    cargo.args(extra);
    cmd::run(&mut cargo).with_context(|| format!("benchmark `{name}` failed"))
}
