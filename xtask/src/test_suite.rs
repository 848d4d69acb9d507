//! `cargo xtask test`: the project's whole test suite, from a fresh Debian machine to green.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::apt::Apt;
use crate::{cmd, postgres, services};

/// What the user chose on the command line.
pub struct Options {
    /// Skip `cargo fmt` and `cargo clippy` (quicker while iterating).
    pub lint: bool,
    /// Whether apt-get may install what is missing.
    pub install: bool,
    /// Appended to `cargo test --workspace`.
    pub cargo_test_args: Vec<String>,
    /// After the tests: dist, check-dist --rebuild, test-install and test-pipeline.
    pub packaging: bool,
}

pub fn run(root: &Path, options: &Options) -> Result<()> {
    let mut apt = Apt::new(options.install);
    let postgres_url = postgres::ensure(&mut apt)?;
    services::ensure(&mut apt)?;
    services::start()?;
    services::ensure_browser_driver(root)?;
    // The k3s profile test validates the manifests with it.
    crate::tools::kubernetes_validate(options.install)?;

    let cargo = |args: &[&str]| {
        let mut cargo = cmd::cargo();
        cargo.current_dir(root).args(args);
        cargo
    };
    if options.lint {
        lint(root)?;
    }
    // Built first so the end-to-end tests find the aegird and aegir binaries they run.
    step(
        "cargo build",
        &mut cargo(&["build", "--workspace", "--bins"]),
    )?;
    let mut test = cargo(&["test", "--workspace"]);
    test.args(&options.cargo_test_args)
        .env(postgres::URL_VAR, &postgres_url);
    cmd::header("cargo test");
    let (status, tally) = cmd::run_counting_tests(&mut test)?;
    if !status.success() || tally.failed > 0 {
        print_tally(&tally);
        bail!("step `cargo test` failed ({status})");
    }
    if tally.passed == 0 {
        print_tally(&tally);
        bail!("step `cargo test` ran no test");
    }
    if options.packaging {
        packaging(root, options.install)?;
    }
    cmd::header("All tests passed");
    // Last, on a line of its own: cargo's own last lines are those of its (often empty)
    // doc-test runs, which say nothing about the suite.
    print_tally(&tally);
    Ok(())
}

/// The release checks, in the order a release needs them: the artifacts (built twice, to
/// prove them reproducible), their gates, real installs, and the pipeline that makes them.
fn packaging(root: &Path, install: bool) -> Result<()> {
    cmd::header("Packaging: cargo xtask dist");
    crate::dist::run(
        root,
        &crate::dist::Options {
            version: None,
            out: None,
            build_dir: None,
            install,
        },
    )?;
    cmd::header("Packaging: cargo xtask check-dist --rebuild");
    crate::check_dist::run(
        root,
        &crate::check_dist::Options {
            out: None,
            install,
            rebuild: true,
        },
    )?;
    cmd::header("Packaging: cargo xtask test-install");
    crate::test_install::run(root, &crate::test_install::Options { out: None, install })?;
    cmd::header("Packaging: cargo xtask test-pipeline");
    // The suite has just run in full: the pipeline's own test job runs one test through the
    // same command, which is what the pipeline test is about.
    crate::test_pipeline::run(
        root,
        &crate::test_pipeline::Options {
            install,
            test_args: "-- time::tests::known_dates".into(),
        },
    )
}

/// `cargo fmt --check` and `cargo clippy -D warnings` over the whole workspace.
pub fn lint(root: &Path) -> Result<()> {
    ensure_lint_tools(root)?;
    let cargo = |args: &[&str]| {
        let mut cargo = cmd::cargo();
        cargo.current_dir(root).args(args);
        cargo
    };
    step("cargo fmt", &mut cargo(&["fmt", "--all", "--check"]))?;
    step(
        "cargo clippy",
        &mut cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )
}

fn print_tally(t: &cmd::Tally) {
    println!(
        "tests: {} passed, {} failed, {} skipped",
        t.passed, t.failed, t.ignored
    );
}

/// Runs one step under its header; a failure names the step.
fn step(name: &str, command: &mut Command) -> Result<()> {
    cmd::header(name);
    cmd::run(command).with_context(|| format!("step `{name}` failed"))
}

/// Fails early, with the fix, when rustfmt or clippy is not installed.
fn ensure_lint_tools(root: &Path) -> Result<()> {
    for tool in ["fmt", "clippy"] {
        if !cmd::succeeds(cmd::cargo().current_dir(root).args([tool, "--version"])) {
            bail!(
                "`cargo {tool}` is not available; install it with \
                 `rustup component add rustfmt clippy`, or pass --no-lint"
            );
        }
    }
    Ok(())
}
