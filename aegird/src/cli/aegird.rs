//! Command line of the `aegird` binary: `serve` runs the daemon; `token` and `migrate` act
//! on the store directly, for the admin on the host.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Overrides};
use crate::daemon;

#[derive(Debug, Parser)]
#[command(
    name = "aegird",
    version = crate::VERSION,
    about = "Aegir hosting control plane daemon",
    long_about = "Aegir hosting control plane daemon: keeps the inventory of servers, releases \
        and environments, runs operations, and serves the JSON API and web UI.\n\n\
        Configuration comes from defaults, then the --config file, then AEGIR_* environment \
        variables (AEGIR_LISTEN, AEGIR_STATE_DIR, AEGIR_DATABASE_URL, AEGIR_NODE_NAME, \
        AEGIR_RELEASES_DIR, AEGIR_ENGINE_CONCURRENCY, ...), then flags. Without any, it keeps its state in \
        ~/.local/share/aegir (SQLite) and listens on 127.0.0.1:7270.",
    after_help = "Examples:\n  aegird serve\n  aegird token create --name admin\n  \
        aegird serve --config /etc/aegir/aegird.toml"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (the package uses /etc/aegir/aegird.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite store and secrets.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DB.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM.
    Serve {
        /// Address and port to listen on (default 127.0.0.1:7270).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Manage API tokens in the store.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Apply pending store migrations and exit.
    Migrate,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown only this once).
    Create {
        #[arg(long)]
        name: String,
        /// Print JSON instead of the bare token.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (names and prefixes; never the tokens).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token.
    Revoke { name: String },
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let listen = match &cli.command {
        Command::Serve { listen } => listen.clone(),
        _ => None,
    };
    let cfg = Config::load(&Overrides {
        config: cli.global.config,
        listen,
        state_dir: cli.global.state_dir,
        database_url: cli.global.database_url,
    })?;
    match cli.command {
        Command::Serve { .. } => daemon::serve(cfg).await,
        Command::Migrate => {
            daemon::open_store(&cfg).await?;
            println!("store is up to date");
            Ok(())
        }
        Command::Token(cmd) => {
            let store = daemon::open_store(&cfg).await?;
            match cmd {
                TokenCommand::Create { name, json } => {
                    let created = app::create_token(&store, &name, SystemClock.now())
                        .await
                        .with_context(|| format!("cannot create token {name:?}"))?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&created)?);
                    } else {
                        println!("{}", created.secret);
                    }
                }
                TokenCommand::List { json } => {
                    let tokens = store.list_tokens().await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&tokens)?);
                    } else {
                        for t in tokens {
                            println!("{}\t{}…\tcreated {}", t.name, t.prefix, t.created_at);
                        }
                    }
                }
                TokenCommand::Revoke { name } => {
                    if !store.delete_token(&name).await? {
                        anyhow::bail!("no token named {name:?}");
                    }
                    println!("revoked {name}");
                }
            }
            store.close().await;
            Ok(())
        }
    }
}
