//! The aegir command-line client binary.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    aegird::cli::aegir::run(aegird::cli::aegir::Cli::parse()).await
}
