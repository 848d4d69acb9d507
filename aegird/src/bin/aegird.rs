//! The aegird daemon binary: parse, set up logging, run.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = aegird::cli::aegird::Cli::parse();
    aegird::daemon::init_logging();
    match aegird::cli::aegird::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aegird: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
