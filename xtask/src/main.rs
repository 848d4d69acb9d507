//! `cargo xtask`: all of the project's automation (tests, benchmarks, release artifacts and
//! their checks), as one Rust program.

mod apt;
mod assets;
mod bench;
mod check_dist;
mod cmd;
mod dist;
mod oci;
mod postgres;
mod publish;
mod sbom;
mod services;
mod test_install;
mod test_pipeline;
mod test_suite;
mod time;
mod tools;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

/// Project automation for Aegir. Run as `cargo xtask COMMAND` from anywhere in the repository.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole test suite, as CI does: services, fmt, clippy, build, tests.
    ///
    /// Meant for a fresh Debian machine, run as root: it installs and starts PostgreSQL
    /// (127.0.0.1:5432), installs nginx, php-fpm, MariaDB, WordPress and sshd when missing,
    /// and starts nginx, php-fpm and MariaDB. Also works when they already run, and as
    /// another user when nothing is missing and everything runs.
    /// Then runs `cargo fmt --all --check`, `cargo clippy --workspace --all-targets -- -D
    /// warnings`, `cargo build --workspace --bins` and `cargo test --workspace`, then the
    /// release checks (`dist`, `check-dist --rebuild`, `test-install`, `test-pipeline`),
    /// stopping at the first failure. The release checks need root; --no-packaging skips
    /// them.
    ///
    /// The tests read their PostgreSQL URL from AEGIR_TEST_POSTGRES_URL (default
    /// postgres://postgres@127.0.0.1:5432/postgres); where trust logins are off, the postgres
    /// role gets the password `aegir-test` and the tests get a URL with it.
    #[command(after_help = "Examples:\n  \
        cargo xtask test                          everything, as CI runs it\n  \
        cargo xtask test --no-lint -- backup      only tests whose name has `backup`\n  \
        cargo xtask test --no-packaging           the tests without the release checks\n  \
        cargo xtask test -- -- --nocapture        show the tests' output")]
    Test(TestArgs),
    /// Run a benchmark (release build) against a local PostgreSQL.
    ///
    /// Ensures PostgreSQL as `test` does, then runs `cargo run --release -p aegir-tests --bin
    /// aegir-bench -- NAME`.
    Bench(BenchArgs),
    /// Build the release artifacts: .deb, .rpm, OCI image archive, CycloneDX SBOM, SHA256SUMS.
    ///
    /// Builds the release binaries in `<target>/dist/build` (paths remapped, the version
    /// compiled in), then packages them with the pinned cargo-deb and nfpm (installed when
    /// missing) and writes the image itself (no container daemon). Everything is dated by
    /// SOURCE_DATE_EPOCH (default: the commit's time), so two runs give identical files.
    #[command(after_help = "Examples:\n  \
        cargo xtask dist                            version from Cargo.toml (or CI_COMMIT_TAG)\n  \
        cargo xtask dist --version 1.2.0 --out dist")]
    Dist(DistArgs),
    /// Check what `dist` wrote: lintian, rpmlint, the unit, the image; optionally rebuild.
    ///
    /// lintian --pedantic must report no error and no warning; rpmlint no error but the
    /// missing signature; `systemd-analyze verify` nothing at all; `systemd-analyze security
    /// --offline=yes` an exposure of at most 3.0 (printed); the OCI image must answer
    /// /healthz under podman. With --rebuild, a second build from a clean target directory
    /// must give identical SHA256SUMS. Installs the Debian tools it needs when missing.
    CheckDist(CheckDistArgs),
    /// Install what `dist` wrote, for real: the .deb in a debootstrap Debian root, the .rpm
    /// in an `rpm --root` scratch root.
    ///
    /// In a fresh minbase bookworm root (made once, kept as a tarball in `<target>/dist`):
    /// apt installs an earlier version (built from its commit), its aegird is started as
    /// the unit starts it and given data; apt upgrades to the new .deb, which must keep and
    /// migrate the data; `apt remove` must keep /var/lib/aegir and `apt purge` remove it.
    /// Needs root (chroot, mounts) and Debian's archive.
    TestInstall(TestInstallArgs),
    /// Run `.gitlab-ci.yml` with gitlab-ci-local, as a branch push and as a tag.
    ///
    /// Installs gitlab-ci-local 4.73.0 with npm into `<target>/dist/node`, runs the pipeline
    /// on this machine's shell (`--shell-executor-no-image`), first as a branch push (lint and
    /// test only), then with CI_COMMIT_TAG=vVERSION (package and a dry-run release too), and
    /// checks that the tag run left every artifact and the publish plan in `dist/`.
    TestPipeline {
        /// Arguments the pipeline's test job passes to `cargo xtask test`.
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        test_args: String,
        /// Never install tools; fail naming what to install instead.
        #[arg(long)]
        no_install: bool,
    },
    /// `cargo fmt --check` and `cargo clippy -D warnings` (the pipeline's check stage).
    Lint,
    /// Publish a tag's artifacts on GitLab: generic packages, a release, the image.
    ///
    /// In a GitLab tag pipeline (GITLAB_CI=true, CI_JOB_TOKEN, CI_API_V4_URL...) it uploads
    /// every file of SHA256SUMS to the project's generic package registry, creates the
    /// release with links to them and pushes the image with skopeo. Anywhere else, or with
    /// AEGIR_PUBLISH_DRY_RUN=1, it only writes what it would do to DIR/publish-plan.txt.
    Publish {
        /// The directory `dist` wrote.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct TestInstallArgs {
    /// Where `dist` wrote the artifacts; default `<target>/dist/out`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Never install tools; fail naming what to install instead.
    #[arg(long)]
    no_install: bool,
}

#[derive(Args)]
struct CheckDistArgs {
    /// Where `dist` wrote the artifacts; default `<target>/dist/out`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also build everything again from nothing and compare the checksums (slow).
    #[arg(long)]
    rebuild: bool,
    /// Never install tools; fail naming what to install instead.
    #[arg(long)]
    no_install: bool,
}

#[derive(Args)]
struct DistArgs {
    /// X.Y.Z; default: CI_COMMIT_TAG without its `v`, else the workspace version.
    #[arg(long)]
    version: Option<String>,
    /// Output directory (emptied first); default `<target>/dist/out`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Never install tools; fail naming what to install instead.
    #[arg(long)]
    no_install: bool,
}

#[derive(Args)]
struct TestArgs {
    /// Skip `cargo fmt` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,
    /// Never run apt-get; fail naming the packages to install instead.
    #[arg(long)]
    no_install: bool,
    /// Skip the release checks that follow the tests (dist, check-dist --rebuild,
    /// test-install, test-pipeline: about half an hour on 2 cores).
    #[arg(long)]
    no_packaging: bool,
    /// Extra arguments for `cargo test --workspace` (test name filters, `-- --nocapture`...).
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    cargo_test_args: Vec<String>,
}

#[derive(Args)]
struct BenchArgs {
    /// Which benchmark to run.
    #[arg(value_enum)]
    name: bench::Bench,
    /// A short run: enough to see it works, not to measure.
    #[arg(long)]
    quick: bool,
    /// Never run apt-get; fail naming the packages to install instead.
    #[arg(long)]
    no_install: bool,
    /// Extra arguments for the benchmark itself (e.g. `-- --db-mib 256 --files-mib 256`).
    #[arg(last = true, value_name = "BENCH_ARGS")]
    bench_args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The chain of causes, without the backtrace anyhow adds under RUST_BACKTRACE:
            // the messages already say which step failed and why.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    let root = workspace_root();
    match command {
        Command::Test(args) => test_suite::run(
            &root,
            &test_suite::Options {
                lint: !args.no_lint,
                packaging: !args.no_packaging,
                install: !args.no_install,
                cargo_test_args: args.cargo_test_args,
            },
        ),
        Command::Bench(args) => bench::run(
            &root,
            args.name,
            args.quick,
            !args.no_install,
            &args.bench_args,
        ),
        Command::Dist(args) => dist::run(
            &root,
            &dist::Options {
                version: args.version,
                out: args.out,
                build_dir: None,
                install: !args.no_install,
            },
        ),
        Command::CheckDist(args) => check_dist::run(
            &root,
            &check_dist::Options {
                out: args.out,
                install: !args.no_install,
                rebuild: args.rebuild,
            },
        ),
        Command::Lint => test_suite::lint(&root),
        Command::TestPipeline {
            test_args,
            no_install,
        } => test_pipeline::run(
            &root,
            &test_pipeline::Options {
                install: !no_install,
                test_args,
            },
        ),
        Command::Publish { dir } => publish::run(&publish::Options { dir: &dir }),
        Command::TestInstall(args) => test_install::run(
            &root,
            &test_install::Options {
                out: args.out,
                install: !args.no_install,
            },
        ),
    }
}

/// The repository root, whatever directory `cargo xtask` was started from.
pub fn workspace_root() -> PathBuf {
    // xtask/ sits directly in the root; cargo tells us where at build time.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn extra_test_args_reach_cargo_test() {
        let cli = Cli::try_parse_from(["xtask", "test", "--no-lint", "--", "store", "--", "-q"]);
        let Command::Test(args) = cli.unwrap().command else {
            panic!("expected the test command");
        };
        assert!(args.no_lint && !args.no_install);
        assert_eq!(args.cargo_test_args, ["store", "--", "-q"]);
    }

    #[test]
    fn unknown_bench_lists_the_known_ones() {
        let error = Cli::try_parse_from(["xtask", "bench", "nope"])
            .err()
            .expect("an unknown bench is refused");
        assert!(error.to_string().contains("engine"), "{error}");
    }
}
