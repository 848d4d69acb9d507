//! Command line of the `aegird` binary: `serve` runs the daemon; `token`, `user` and
//! `migrate` act on the store directly, for the admin on the host.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Overrides};
use crate::daemon;
use crate::{accounts, app};

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
        aegird user create admin --admin\n  \
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
    /// Manage web UI accounts in the store.
    #[command(subcommand)]
    User(UserCommand),
    /// Apply pending store migrations and exit.
    Migrate,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a web UI account. Without --password-stdin a password is generated and
    /// printed (shown only this once).
    #[command(after_help = "Examples:\n  aegird user create admin --admin\n  \
        printf '%s\\n' \"$PASSWORD\" | aegird user create alice --password-stdin")]
    Create {
        name: String,
        /// Mark the account as an administrator. For now every account can run every
        /// operation, and accounts are managed here, with `aegird user`.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input (12 to 1024 characters).
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
    /// Set a new password (generated unless --password-stdin) and end the account's sessions.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete an account and end its sessions.
    Delete { name: String },
}

/// The first line of standard input, without its line ending.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
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
        Command::User(cmd) => {
            let store = daemon::open_store(&cfg).await?;
            // A new password for the first account (or its end) makes the first start's
            // password file stale: it goes.
            let first_account = matches!(
                &cmd,
                UserCommand::Passwd { name, .. } | UserCommand::Delete { name } if name == "admin"
            );
            let result = user_command(&store, cmd).await;
            if result.is_ok() && first_account {
                let _ = std::fs::remove_file(daemon::initial_password_file(&cfg.state_dir));
            }
            store.close().await;
            result
        }
    }
}

async fn user_command(store: &crate::store::Store, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create {
            name,
            admin,
            password_stdin,
            json,
        } => {
            let given = password_stdin.then(password_from_stdin).transpose()?;
            let created =
                accounts::create_user(store, &name, given.as_deref(), admin, SystemClock.now())
                    .await
                    .with_context(|| format!("cannot create user {name:?}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else if let Some(password) = &created.password {
                println!("created user {name}; password (shown only this once): {password}");
            } else {
                println!("created user {name}");
            }
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let given = password_stdin.then(password_from_stdin).transpose()?;
            let password = accounts::set_password(store, &name, given.as_deref())
                .await
                .with_context(|| format!("cannot set the password of {name:?}"))?;
            if given.is_some() {
                println!("password of {name} changed; its sessions are closed");
            } else {
                println!("new password of {name} (shown only this once): {password}");
            }
        }
        UserCommand::List { json } => {
            let users = store.list_users().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                for u in users {
                    let role = if u.admin { "admin" } else { "user" };
                    let last = u
                        .last_login_at
                        .map_or("never".to_string(), |t| t.to_string());
                    println!("{}\t{role}\tlast login {last}", u.name);
                }
            }
        }
        UserCommand::Delete { name } => {
            if !store.delete_user(&name).await? {
                anyhow::bail!("no user named {name:?}");
            }
            println!("deleted {name}");
        }
    }
    Ok(())
}
