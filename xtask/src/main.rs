//! `cargo xtask`: all of the project's automation (tests, benchmarks), as one Rust program.

mod apt;
mod bench;
mod cmd;
mod postgres;
mod services;
mod test_suite;

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
    /// warnings`, `cargo build --workspace --bins` and `cargo test --workspace`, stopping at
    /// the first failure.
    ///
    /// The tests read their PostgreSQL URL from AEGIR_TEST_POSTGRES_URL (default
    /// postgres://postgres@127.0.0.1:5432/postgres); where trust logins are off, the postgres
    /// role gets the password `aegir-test` and the tests get a URL with it.
    #[command(after_help = "Examples:\n  \
        cargo xtask test                          everything, as CI runs it\n  \
        cargo xtask test --no-lint -- backup      only tests whose name has `backup`\n  \
        cargo xtask test -- -- --nocapture        show the tests' output")]
    Test(TestArgs),
    /// Run a benchmark (release build) against a local PostgreSQL.
    ///
    /// Ensures PostgreSQL as `test` does, then runs `cargo run --release -p aegir-tests --bin
    /// aegir-bench -- NAME`.
    Bench(BenchArgs),
}

#[derive(Args)]
struct TestArgs {
    /// Skip `cargo fmt` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,
    /// Never run apt-get; fail naming the packages to install instead.
    #[arg(long)]
    no_install: bool,
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
    }
}

/// The repository root, whatever directory `cargo xtask` was started from.
fn workspace_root() -> PathBuf {
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
