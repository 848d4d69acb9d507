//! The `aegir` command-line client: every operation over the JSON API, readable tables by
//! default and `--json` for scripts.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{Client, ClientError};
use super::table::{print_kv, print_table};
use crate::model::*;

/// Exit codes, as documented in `--help`.
pub mod exit {
    pub const OK: u8 = 0;
    /// The operation ran and did not succeed (failed, cancelled or interrupted).
    pub const OPERATION_FAILED: u8 = 1;
    /// Bad usage (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// aegird refused the request (bad input, not found, conflict, not allowed).
    pub const REFUSED: u8 = 3;
    /// The feature is not available yet in this version.
    pub const NOT_AVAILABLE: u8 = 4;
    /// aegird could not be reached or answered with an internal error.
    pub const UNREACHABLE: u8 = 5;
    /// Something this host must have first is missing (k3s, for `cluster bootstrap-k3s`).
    pub const MISSING_PREREQUISITE: u8 = 6;
}

#[derive(Debug, Parser)]
#[command(
    name = "aegir",
    version = crate::VERSION,
    about = "Command-line client for the Aegir hosting control plane (aegird)",
    after_help = "Environment: AEGIR_URL (default http://127.0.0.1:7270), AEGIR_TOKEN \
        (create one on the daemon's host with `aegird token create --name NAME`).\n\n\
        Exit codes: 0 success; 1 the operation did not succeed; 2 bad usage; 3 aegird refused \
        the request; 4 not available yet; 5 aegird unreachable or broken; 6 a prerequisite \
        is missing on this host (k3s for `cluster bootstrap-k3s`).\n\n\
        Examples:\n  aegir server add local --local\n  aegir server verify local --wait\n  \
        aegir server show local --json\n  aegir op logs 12 --follow"
)]
pub struct Cli {
    /// Base URL of aegird.
    #[arg(
        long,
        env = "AEGIR_URL",
        default_value = "http://127.0.0.1:7270",
        global = true
    )]
    pub url: String,
    /// API token.
    #[arg(long, env = "AEGIR_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, Copy)]
pub struct Wait {
    /// Stream the operation's log until it ends; exit 0 only if it succeeded.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hosts that run sites.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Kubernetes clusters.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Codebase sources (git repositories or directories).
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Immutable snapshots of a project on a server (Aegir 3 platforms).
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// Running sites (Aegir 3 sites).
    #[command(subcommand, name = "env")]
    Env(EnvCmd),
    /// Operations and their logs (Aegir 3 tasks).
    #[command(subcommand, name = "op")]
    Op(OpCmd),
    /// Backups of environments.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Adopt an existing installation.
    #[command(subcommand)]
    Import(ImportCmd),
}

#[derive(Debug, Subcommand)]
pub enum ImportCmd {
    /// Adopt an Aegir 3 installation: servers, platforms (as projects and releases), sites
    /// (as environments; deleted ones as history), backups and task history.
    ///
    /// Aegir 3 is only read: nothing there changes, and its sites keep serving. Adopted sites
    /// stay Aegir 3's until `aegir env takeover URI`; until then aegird only verifies them.
    /// Run it again at any time: it reports what changed in Aegir 3 since, and changes nothing
    /// when nothing did.
    #[command(
        after_help = "Every object is reported as adopted, updated, unchanged, skipped \
        (with why) or failed (with why); the rest is imported even when one fails.\n\n\
        Exit codes: 0 imported; 1 some objects failed (the others were imported); 3 refused \
        (bad root, not a hostmaster database); 5 the hostmaster database or aegird could not \
        be reached.\n\n\
        Examples:\n  aegir import aegir3 --dry-run\n  \
        aegir import aegir3 --aegir-root /var/aegir\n  \
        AEGIR_HOSTMASTER_DB=mysql://aegir_root:PASS@localhost/hostmaster aegir import aegir3 --json"
    )]
    Aegir3 {
        /// The hostmaster database, `mysql://USER:PASS@HOST[:PORT]/DB` (`?socket=PATH` for a
        /// local socket). By default it is read from the front end's drushrc.php.
        #[arg(long, env = "AEGIR_HOSTMASTER_DB", hide_env_values = true)]
        hostmaster_db: Option<String>,
        /// Aegir 3's home, with its alias files in `.drush/`.
        #[arg(long, default_value = "/var/aegir")]
        aegir_root: String,
        /// Print the whole plan; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServerCmd {
    /// Record a server.
    Add {
        name: String,
        /// The host aegird runs on.
        #[arg(long, conflicts_with = "ssh", required_unless_present = "ssh")]
        local: bool,
        /// Reach it over SSH as USER@HOST[:PORT].
        #[arg(long, value_name = "USER@HOST[:PORT]")]
        ssh: Option<String>,
    },
    /// List servers and their status.
    List,
    /// Show a server and the services verify found.
    Show { name: String },
    /// Detect the OS, web server, PHP-FPM and database server and record them.
    Verify {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Record a Kubernetes cluster by its API server URL.
    Add {
        name: String,
        #[arg(long, value_name = "URL")]
        api_url: String,
    },
    /// List clusters.
    List,
    /// Show a cluster.
    Show { name: String },
    /// Check that the cluster can be reached.
    Verify {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Install Aegir's k3s profile on this host: kubeconfig readable by group aegir, the
    /// aegir namespace and aegird's RBAC, cert-manager and Let's Encrypt issuers. Runs here,
    /// without aegird; needs root and k3s (says how to install k3s when it is missing).
    BootstrapK3s(super::k3s::BootstrapArgs),
}

#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    /// Record a project: a git repository (--git) or a directory (--path).
    Add {
        name: String,
        #[arg(long, conflicts_with = "path", required_unless_present = "path")]
        git: Option<String>,
        #[arg(long = "ref", requires = "git", value_name = "REF")]
        git_ref: Option<String>,
        #[arg(long, value_name = "DIR")]
        path: Option<String>,
    },
    /// List projects.
    List,
    /// Show a project.
    Show { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCmd {
    /// Record a release of a project on a server.
    Create {
        name: String,
        #[arg(long)]
        project: String,
        #[arg(long)]
        server: String,
        #[arg(long = "ref", value_name = "REF")]
        git_ref: Option<String>,
    },
    /// List releases with their application and version.
    List,
    /// Show a release and its package set.
    Show { name: String },
    /// Detect the release's application, version, docroot and packages.
    Verify {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// Install a new environment.
    Create {
        uri: String,
        #[arg(long)]
        release: String,
        #[arg(long = "alias", value_name = "HOST")]
        aliases: Vec<String>,
        /// Redirect aliases to the uri (301) instead of serving them.
        #[arg(long)]
        redirect_aliases: bool,
        #[arg(long, value_enum, default_value = "off")]
        https: HttpsArg,
        /// The site title the application is installed with (default: the uri).
        #[arg(long)]
        title: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// List environments (paged; --search filters by uri).
    List {
        /// Only environments whose uri contains this.
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
    },
    /// Show an environment.
    Show { uri: String },
    /// Re-render the environment's configuration and report drift.
    Verify(EnvTarget),
    /// Serve a "site disabled" page (503) instead of the site.
    Disable(EnvTarget),
    /// Serve the site again after disable.
    Enable(EnvTarget),
    /// Delete the site, its database and files, after a pre-delete backup (the record stays
    /// as deleted).
    Delete {
        uri: String,
        /// Do not take the pre-delete backup.
        #[arg(long)]
        skip_backup: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Print a one-time login link (valid once, for 15 minutes); waits for it.
    Login { uri: String },
    /// Run the site's cron now.
    Cron(EnvTarget),
    /// Move a site imported from Aegir 3 under aegird: its directory and files copied into
    /// aegird's layout, aegird's vhost in and Aegir 3's out with one graceful nginx reload
    /// (no request fails), and its drush alias set aside so Aegir 3 runs no more tasks on it.
    #[command(
        after_help = "Run `aegir env verify URI --wait` first: on a site Aegir 3 still \
        manages it checks the credentials, files and vhost without changing anything.\n\n\
        Example:\n  aegir env takeover www.example.com --wait"
    )]
    Takeover(EnvTarget),
    /// Back up the database and files into one archive (listed by `aegir backup list URI`).
    Backup {
        uri: String,
        /// A note kept with the backup.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Restore the environment from a backup: the site shows its disabled page, a
    /// pre-restore backup is taken, then the database and files are switched; any failure
    /// puts the site back as it was.
    #[command(after_help = "Examples:\n  aegir env restore site1.test 12 --wait\n  \
        aegir env restore site1.test --file /var/aegir/backups/site1.test-20240131.120000.tar.gz --wait")]
    Restore {
        uri: String,
        /// The backup's id (see `aegir backup list URI`).
        #[arg(required_unless_present = "file")]
        backup: Option<i64>,
        /// An archive on aegird's host instead (an Aegir 3 tarball or an aegird backup); it
        /// is registered as a backup of the environment first.
        #[arg(long, conflicts_with = "backup")]
        file: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Make a new environment from a fresh backup of this one, its URL rewritten in the
    /// database (aliases are not copied; the source is not changed).
    Clone {
        uri: String,
        /// The new environment's uri.
        new_uri: String,
        /// The new environment's release (default: the source's).
        #[arg(long)]
        release: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Set how often the environment is backed up by aegird's scheduler.
    #[command(
        after_help = "Examples:\n  aegir env schedule site1.test --every 12h\n  \
        aegir env schedule site1.test --off\n  aegir env schedule site1.test --default"
    )]
    Schedule {
        uri: String,
        /// Interval between backups (e.g. 6h, 1d, 1week).
        #[arg(long, value_parser = humantime::parse_duration, group = "when")]
        every: Option<std::time::Duration>,
        /// No scheduled backups for this environment.
        #[arg(long, group = "when")]
        off: bool,
        /// Follow the daemon's default schedule (daily unless configured).
        #[arg(long, group = "when")]
        default: bool,
    },
    /// Set which scheduled backups of the environment retention keeps (manual, pre-restore
    /// and pre-delete backups are never pruned). A rule not given keeps its default.
    #[command(
        after_help = "Examples:\n  aegir env retention site1.test --keep-daily 14 --keep-monthly 12\n  \
        aegir env retention site1.test --keep-last 3 --keep-daily 0 --keep-weekly 0\n  \
        aegir env retention site1.test --default"
    )]
    Retention {
        uri: String,
        /// The newest N, whatever their dates (default 1).
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        /// The newest of each of the last N days that have one (default 7).
        #[arg(long, value_name = "N")]
        keep_daily: Option<u32>,
        /// Likewise per ISO week (default 6).
        #[arg(long, value_name = "N")]
        keep_weekly: Option<u32>,
        /// Likewise per month (default 0).
        #[arg(long, value_name = "N")]
        keep_monthly: Option<u32>,
        /// Follow the daemon's `backups.retention` again.
        #[arg(long, conflicts_with_all = ["keep_last", "keep_daily", "keep_weekly", "keep_monthly"])]
        default: bool,
    },
    /// Move the environment to another release or server.
    Migrate(EnvTarget),
}

#[derive(Debug, Args)]
pub struct EnvTarget {
    uri: String,
    #[command(flatten)]
    wait: Wait,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HttpsArg {
    Off,
    On,
    Required,
}

#[derive(Debug, Subcommand)]
pub enum OpCmd {
    /// List operations, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show an operation with its tasks.
    Show { id: i64 },
    /// Print an operation's log.
    Logs {
        id: i64,
        /// Keep streaming until the operation ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Run a failed, cancelled or interrupted operation again.
    Retry {
        id: i64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Cancel a queued operation, or stop a running one and undo what it did.
    Cancel { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// List good backups, newest first (of one environment if given).
    List {
        #[arg(value_name = "URI")]
        environment: Option<String>,
    },
    /// Show a backup.
    Show { id: i64 },
    /// Re-read the archive and check every checksum.
    Verify {
        id: i64,
        /// Also import its database into a throwaway database, then drop it.
        #[arg(long)]
        restore_test: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Delete a backup archive.
    Delete {
        id: i64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Download a backup archive.
    Download {
        id: i64,
        /// Where to write it ("-" for standard output; default: the archive's own name in
        /// the current directory).
        #[arg(long, short)]
        output: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// List API tokens (names and prefixes, never the tokens).
    List,
    /// Create a token and print it (shown only this once).
    Create { name: String },
    /// Revoke a token.
    Revoke { name: String },
}

/// Run the parsed command line and give the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    // Works on this host's files, not through aegird: no token needed.
    if let Command::Cluster(ClusterCmd::BootstrapK3s(args)) = &cli.command {
        return ExitCode::from(super::k3s::run(args, cli.json));
    }
    let Some(token) = cli.token.clone().filter(|t| !t.is_empty()) else {
        eprintln!(
            "aegir: no API token; pass --token or set AEGIR_TOKEN \
             (create one with `aegird token create --name NAME`)"
        );
        return ExitCode::from(exit::USAGE);
    };
    let client = Client::new(&cli.url, &token);
    let out = Out { json: cli.json };
    match dispatch(&client, &out, cli.command).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = match &e {
                ClientError::Api { status, .. } if status.as_u16() == 501 => exit::NOT_AVAILABLE,
                ClientError::Api { status, .. } if status.is_client_error() => exit::REFUSED,
                _ => exit::UNREACHABLE,
            };
            match (&e, out.json) {
                (ClientError::Api { body, .. }, true) => {
                    eprintln!("{}", serde_json::to_string_pretty(body).unwrap_or_default())
                }
                _ => eprintln!("aegir: {e}"),
            }
            ExitCode::from(code)
        }
    }
}

struct Out {
    json: bool,
}

impl Out {
    fn value(&self, v: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            human(v);
        }
    }
}

type Res = Result<u8, ClientError>;

async fn dispatch(c: &Client, out: &Out, cmd: Command) -> Res {
    match cmd {
        Command::Server(cmd) => match cmd {
            ServerCmd::Add { name, local, ssh } => {
                let body = if local {
                    json!({ "name": name, "transport": "local" })
                } else {
                    json!({ "name": name, "transport": "ssh", "ssh": ssh })
                };
                let v: Value = c.post("/servers", &body).await?;
                out.value(&v, |v| {
                    show_server(v);
                    if let Some(key) = v["authorize_key"].as_str() {
                        println!(
                            "\nAuthorise aegird on the server: append this line to \
                             ~{}/.ssh/authorized_keys there, then run `aegir server verify {}`:\n\n{key}",
                            str_of(&v["ssh_user"]),
                            str_of(&v["name"]),
                        );
                    }
                });
                Ok(exit::OK)
            }
            ServerCmd::List => {
                let v: Value = c.get("/servers").await?;
                out.value(&v, |v| {
                    table(
                        v,
                        &["name", "transport", "status", "verified_at"],
                        |s, col| str_of(&s[col]),
                    )
                });
                Ok(exit::OK)
            }
            ServerCmd::Show { name } => {
                let v: Value = c.get(&format!("/servers/{}", seg(&name))).await?;
                out.value(&v, show_server);
                Ok(exit::OK)
            }
            ServerCmd::Verify { name, wait } => {
                start(c, out, &format!("/servers/{}/verify", seg(&name)), wait).await
            }
        },
        Command::Cluster(cmd) => match cmd {
            ClusterCmd::Add { name, api_url } => {
                create(
                    c,
                    out,
                    "/clusters",
                    &json!({ "name": name, "api_url": api_url }),
                )
                .await
            }
            ClusterCmd::List => list(c, out, "/clusters", &["name", "api_url", "status"]).await,
            ClusterCmd::Show { name } => show(c, out, &format!("/clusters/{}", seg(&name))).await,
            ClusterCmd::Verify { name, wait } => {
                start(c, out, &format!("/clusters/{}/verify", seg(&name)), wait).await
            }
            ClusterCmd::BootstrapK3s(args) => Ok(super::k3s::run(&args, out.json)),
        },
        Command::Project(cmd) => match cmd {
            ProjectCmd::Add {
                name,
                git,
                git_ref,
                path,
            } => {
                create(
                    c,
                    out,
                    "/projects",
                    &json!({ "name": name, "git": git, "ref": git_ref, "path": path }),
                )
                .await
            }
            ProjectCmd::List => {
                list(
                    c,
                    out,
                    "/projects",
                    &["name", "source", "git_url", "git_ref", "path"],
                )
                .await
            }
            ProjectCmd::Show { name } => show(c, out, &format!("/projects/{}", seg(&name))).await,
        },
        Command::Release(cmd) => {
            match cmd {
                ReleaseCmd::Create {
                    name,
                    project,
                    server,
                    git_ref,
                } => create(
                    c,
                    out,
                    "/releases",
                    &json!({ "name": name, "project": project, "server": server, "ref": git_ref }),
                )
                .await,
                ReleaseCmd::List => {
                    list(
                        c,
                        out,
                        "/releases",
                        &[
                            "name",
                            "project",
                            "server",
                            "app_kind",
                            "app_version",
                            "status",
                            "locked",
                        ],
                    )
                    .await
                }
                ReleaseCmd::Show { name } => {
                    let v: Value = c.get(&format!("/releases/{}", seg(&name))).await?;
                    out.value(&v, |v| {
                        let mut kv = flat(v);
                        kv.retain(|(k, _)| k != "packages");
                        print_kv(&kv);
                        println!();
                        table(
                            &v["packages"],
                            &["type", "name", "version", "source"],
                            |p, col| str_of(&p[col]),
                        );
                    });
                    Ok(exit::OK)
                }
                ReleaseCmd::Verify { name, wait } => {
                    start(c, out, &format!("/releases/{}/verify", seg(&name)), wait).await
                }
            }
        }
        Command::Env(cmd) => env(c, out, cmd).await,
        Command::Op(cmd) => match cmd {
            OpCmd::List { status, limit } => {
                let mut path = format!("/operations?limit={limit}");
                if let Some(s) = status {
                    path.push_str(&format!("&status={}", seg(&s)));
                }
                let v: Value = c.get(&path).await?;
                out.value(&v, |v| {
                    table(
                        &v["items"],
                        &[
                            "id",
                            "kind",
                            "target",
                            "status",
                            "created_at",
                            "finished_at",
                        ],
                        |o, col| match col {
                            "target" => format!(
                                "{} {}",
                                str_of(&o["target"]["type"]),
                                str_of(&o["target"]["name"])
                            ),
                            _ => str_of(&o[col]),
                        },
                    )
                });
                Ok(exit::OK)
            }
            OpCmd::Show { id } => {
                let v: Value = c.get(&format!("/operations/{id}")).await?;
                out.value(&v, show_operation);
                Ok(exit::OK)
            }
            OpCmd::Logs { id, follow } => {
                let detail: Value = c.get(&format!("/operations/{id}")).await?;
                if follow {
                    return follow_op(c, out, &detail).await;
                }
                let lines: Value = c.get(&format!("/operations/{id}/logs")).await?;
                out.value(&lines, |v| {
                    for l in v.as_array().into_iter().flatten() {
                        println!("{}", log_text(l, &detail));
                    }
                });
                Ok(exit::OK)
            }
            OpCmd::Retry { id, wait } => {
                start(c, out, &format!("/operations/{id}/retry"), wait).await
            }
            OpCmd::Cancel { id } => {
                let v: Value = c
                    .post(&format!("/operations/{id}/cancel"), &json!({}))
                    .await?;
                out.value(&v, show_operation);
                Ok(exit::OK)
            }
        },
        Command::Backup(cmd) => match cmd {
            BackupCmd::List { environment } => {
                let path = match environment {
                    Some(e) => format!("/backups?environment={}", seg(&e)),
                    None => "/backups".into(),
                };
                let v: Value = c.get(&path).await?;
                out.value(&v, |v| {
                    table(
                        v,
                        &[
                            "id",
                            "environment",
                            "reason",
                            "format",
                            "size",
                            "created_at",
                            "path",
                        ],
                        |b, col| match col {
                            "created_at" => age(&b[col]),
                            _ => str_of(&b[col]),
                        },
                    )
                });
                Ok(exit::OK)
            }
            BackupCmd::Show { id } => show(c, out, &format!("/backups/{id}")).await,
            BackupCmd::Verify {
                id,
                restore_test,
                wait,
            } => {
                let op: Value = c
                    .post(
                        &format!("/backups/{id}/verify"),
                        &json!({ "restore_test": restore_test }),
                    )
                    .await?;
                started(c, out, op, wait).await
            }
            BackupCmd::Delete { id, wait } => {
                let op: Value = c.delete_json(&format!("/backups/{id}")).await?;
                started(c, out, op, wait).await
            }
            BackupCmd::Download { id, output } => {
                let b: Value = c.get(&format!("/backups/{id}")).await?;
                let name = std::path::Path::new(&str_of(&b["path"]))
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("backup-{id}"));
                let dest = output.unwrap_or(name);
                let bytes = c
                    .download(&format!("/backups/{id}/download"), &dest)
                    .await?;
                if !out.json && dest != "-" {
                    eprintln!("wrote {dest} ({bytes} bytes)");
                }
                Ok(exit::OK)
            }
        },
        Command::Import(ImportCmd::Aegir3 {
            hostmaster_db,
            aegir_root,
            dry_run,
        }) => {
            let body = json!({
                "hostmaster_db": hostmaster_db,
                "aegir_root": aegir_root,
                "dry_run": dry_run,
            });
            let v: Value = c
                .post_within(
                    "/imports/aegir3",
                    &body,
                    std::time::Duration::from_secs(3600),
                )
                .await?;
            out.value(&v, show_import);
            let failed = v["summary"]["failed"].as_u64().unwrap_or(0);
            Ok(if failed > 0 {
                exit::OPERATION_FAILED
            } else {
                exit::OK
            })
        }
        Command::Token(cmd) => match cmd {
            TokenCmd::List => {
                list(
                    c,
                    out,
                    "/tokens",
                    &["name", "prefix", "created_at", "last_used_at"],
                )
                .await
            }
            TokenCmd::Create { name } => {
                let v: Value = c.post("/tokens", &json!({ "name": name })).await?;
                out.value(&v, |v| println!("{}", str_of(&v["secret"])));
                Ok(exit::OK)
            }
            TokenCmd::Revoke { name } => {
                c.delete(&format!("/tokens/{}", seg(&name))).await?;
                if !out.json {
                    println!("revoked {name}");
                }
                Ok(exit::OK)
            }
        },
    }
}

async fn env(c: &Client, out: &Out, cmd: EnvCmd) -> Res {
    let action = |t: EnvTarget, action: &str| (t, action.to_string());
    let (target, name) = match cmd {
        EnvCmd::Create {
            uri,
            release,
            aliases,
            redirect_aliases,
            https,
            title,
            wait,
        } => {
            let https = match https {
                HttpsArg::Off => "off",
                HttpsArg::On => "on",
                HttpsArg::Required => "required",
            };
            let op: Value = c
                .post(
                    "/environments",
                    &json!({ "uri": uri, "release": release, "aliases": aliases,
                             "redirect_aliases": redirect_aliases, "https": https,
                             "title": title }),
                )
                .await?;
            return started(c, out, op, wait).await;
        }
        EnvCmd::List {
            search,
            limit,
            offset,
        } => {
            let mut path = format!("/environments?limit={limit}&offset={offset}");
            if let Some(q) = search {
                path.push_str(&format!("&q={}", seg(&q)));
            }
            let v: Value = c.get(&path).await?;
            out.value(&v, |v| {
                table(
                    &v["items"],
                    &[
                        "uri",
                        "release",
                        "server",
                        "status",
                        "https",
                        "managed_by",
                        "last_backup_at",
                    ],
                    |e, col| match col {
                        "last_backup_at" => age(&e[col]),
                        _ => str_of(&e[col]),
                    },
                );
                let shown = v["items"].as_array().map_or(0, |a| a.len());
                if v["total"].as_i64().unwrap_or(0) > shown as i64 {
                    println!("({} of {}; use --offset for more)", shown, v["total"]);
                }
            });
            return Ok(exit::OK);
        }
        EnvCmd::Show { uri } => return show(c, out, &format!("/environments/{}", seg(&uri))).await,
        EnvCmd::Verify(t) => action(t, "verify"),
        EnvCmd::Disable(t) => action(t, "disable"),
        EnvCmd::Enable(t) => action(t, "enable"),
        EnvCmd::Delete {
            uri,
            skip_backup,
            wait,
        } => {
            let body = if skip_backup {
                json!({ "skip_backup": true })
            } else {
                json!({})
            };
            return act(c, out, &uri, "delete", &body, wait).await;
        }
        EnvCmd::Login { uri } => return login(c, out, &uri).await,
        EnvCmd::Cron(t) => action(t, "cron"),
        EnvCmd::Takeover(t) => action(t, "takeover"),
        EnvCmd::Backup {
            uri,
            description,
            wait,
        } => {
            let body = match description {
                Some(d) => json!({ "description": d }),
                None => json!({}),
            };
            return act(c, out, &uri, "backup", &body, wait).await;
        }
        EnvCmd::Restore {
            uri,
            backup,
            file,
            wait,
        } => {
            let body = match (backup, file) {
                (_, Some(f)) => json!({ "file": absolute(&f) }),
                (b, None) => json!({ "backup": b }),
            };
            return act(c, out, &uri, "restore", &body, wait).await;
        }
        EnvCmd::Clone {
            uri,
            new_uri,
            release,
            wait,
        } => {
            let mut body = json!({ "uri": new_uri });
            if let Some(r) = release {
                body["release"] = json!(r);
            }
            return act(c, out, &uri, "clone", &body, wait).await;
        }
        EnvCmd::Schedule {
            uri,
            every,
            off,
            default,
        } => {
            let interval = match (every, off, default) {
                (Some(d), _, _) => json!(d.as_secs()),
                (None, true, _) => json!(0),
                (None, false, true) => Value::Null,
                _ => {
                    eprintln!("aegir: say --every DURATION, --off or --default");
                    return Ok(exit::USAGE);
                }
            };
            let v: Value = c
                .put(
                    &format!("/environments/{}/schedule", seg(&uri)),
                    &json!({ "backup_interval": interval }),
                )
                .await?;
            out.value(&v, |v| print_kv(&flat(v)));
            return Ok(exit::OK);
        }
        EnvCmd::Retention {
            uri,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            default,
        } => {
            let rules = [
                ("last", keep_last),
                ("daily", keep_daily),
                ("weekly", keep_weekly),
                ("monthly", keep_monthly),
            ];
            let retention = if default {
                Value::Null
            } else if rules.iter().all(|(_, n)| n.is_none()) {
                eprintln!("aegir: say --keep-last/--keep-daily/--keep-weekly/--keep-monthly N, or --default");
                return Ok(exit::USAGE);
            } else {
                Value::Object(
                    rules
                        .iter()
                        .filter_map(|(k, n)| n.map(|n| (k.to_string(), json!(n))))
                        .collect(),
                )
            };
            let v: Value = c
                .put(
                    &format!("/environments/{}/retention", seg(&uri)),
                    &json!({ "retention": retention }),
                )
                .await?;
            out.value(&v, |v| print_kv(&flat(v)));
            return Ok(exit::OK);
        }
        EnvCmd::Migrate(t) => action(t, "migrate"),
    };
    start(
        c,
        out,
        &format!("/environments/{}/{name}", seg(&target.uri)),
        target.wait,
    )
    .await
}

/// POST an environment action with its options, then report or follow the operation.
async fn act(c: &Client, out: &Out, uri: &str, action: &str, body: &Value, wait: Wait) -> Res {
    let op: Value = c
        .post(&format!("/environments/{}/{action}", seg(uri)), body)
        .await?;
    started(c, out, op, wait).await
}

/// aegird reads the file on its own host: a relative path means the caller's directory.
fn absolute(path: &str) -> String {
    match std::path::absolute(path) {
        Ok(p) => p.display().to_string(),
        Err(_) => path.to_string(),
    }
}

/// "3h ago" from an RFC 3339 timestamp.
/// An import report: one line per object, then warnings, notes and the counts.
fn show_import(v: &Value) {
    let dry = v["dry_run"].as_bool().unwrap_or(false);
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            let outcome = str_of(&i["outcome"]);
            let detail = match (i["reason"].as_str(), i["changes"].as_array()) {
                (Some(r), _) => r.to_string(),
                (None, Some(c)) if !c.is_empty() => format!(
                    "changed: {}",
                    c.iter().map(str_of).collect::<Vec<_>>().join(", ")
                ),
                _ => String::new(),
            };
            vec![
                str_of(&i["kind"]),
                str_of(&i["aegir3"]),
                str_of(&i["label"]),
                if dry {
                    format!("would be {outcome}")
                } else {
                    outcome
                },
                detail,
            ]
        })
        .collect();
    print_table(&["KIND", "AEGIR3", "NAME", "OUTCOME", "DETAIL"], &rows);
    let warnings: Vec<String> = items
        .iter()
        .flat_map(|i| {
            let label = str_of(&i["label"]);
            i["warnings"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |w| format!("  {label}: {}", str_of(&w)))
        })
        .collect();
    if !warnings.is_empty() {
        println!("\nwarnings:");
        for w in warnings {
            println!("{w}");
        }
    }
    if let Some(notes) = v["notes"].as_array().filter(|n| !n.is_empty()) {
        println!("\nnotes:");
        for n in notes {
            println!("  {}", str_of(n));
        }
    }
    let s = &v["summary"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    println!(
        "\n{}{} adopted, {} updated, {} unchanged, {} skipped, {} failed in {} ms (from {})",
        if dry {
            "dry run, nothing written: "
        } else {
            ""
        },
        n("adopted"),
        n("updated"),
        n("unchanged"),
        n("skipped"),
        n("failed"),
        v["elapsed_ms"].as_u64().unwrap_or(0),
        str_of(&v["source"]),
    );
    if !dry && n("adopted") + n("updated") == 0 && n("failed") == 0 {
        println!("nothing changed since the last import");
    }
}

fn age(ts: &Value) -> String {
    let Ok(Timestamp(ms)) = Timestamp::deserialize(ts) else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(ms);
    let secs = ((now - ms) / 1000).max(0) as u64;
    let rounded = match secs {
        0..=59 => secs,
        60..=3599 => secs / 60 * 60,
        3600..=86399 => secs / 3600 * 3600,
        _ => secs / 86400 * 86400,
    };
    format!(
        "{} ago",
        humantime::format_duration(std::time::Duration::from_secs(rounded))
    )
}

/// Queue a login operation, wait for it, and print the link it made.
async fn login(c: &Client, out: &Out, uri: &str) -> Res {
    let op: Value = c
        .post(&format!("/environments/{}/login", seg(uri)), &json!({}))
        .await?;
    let id = op["id"].as_i64().unwrap_or_default();
    // The log goes to stderr: stdout carries only the link (or the JSON), for scripts.
    let queued: Value = c.get(&format!("/operations/{id}")).await?;
    let end = follow_logs(c, &queued, true).await?;
    let code = exit_for(&end);
    let detail: Value = c.get(&format!("/operations/{id}")).await?;
    if code != exit::OK {
        eprintln!(
            "operation {id} {}: {}",
            str_of(&detail["status"]),
            str_of(&detail["error"])
        );
        return Ok(code);
    }
    let url = detail["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find_map(|t| t["output"]["url"].as_str()))
        .unwrap_or_default()
        .to_string();
    out.value(&json!({ "url": url, "operation": id }), |_| {
        println!("{url}")
    });
    Ok(exit::OK)
}

/// POST to a route that starts an operation, then report or follow it.
async fn start(c: &Client, out: &Out, path: &str, wait: Wait) -> Res {
    let op: Value = c.post(path, &json!({})).await?;
    started(c, out, op, wait).await
}

/// POST a new record and show what was stored.
async fn create(c: &Client, out: &Out, path: &str, body: &Value) -> Res {
    let v: Value = c.post(path, body).await?;
    out.value(&v, |v| print_kv(&flat(v)));
    Ok(exit::OK)
}

/// An operation was queued: print it, or follow it with `--wait`.
async fn started(c: &Client, out: &Out, op: Value, wait: Wait) -> Res {
    let id = op["id"].as_i64().unwrap_or_default();
    if !wait.wait {
        out.value(&op, |_| {
            println!("operation {id} queued; follow it with: aegir op logs {id} --follow")
        });
        return Ok(exit::OK);
    }
    if !out.json {
        eprintln!("operation {id} queued");
    }
    let detail: Value = c.get(&format!("/operations/{id}")).await?;
    follow_op(c, out, &detail).await
}

/// Stream the log until the end; exit code from the final status.
async fn follow_op(c: &Client, out: &Out, detail: &Value) -> Res {
    let id = detail["id"].as_i64().unwrap_or_default();
    // With --json, stdout carries only the final JSON document.
    let end = follow_logs(c, detail, out.json).await?;
    let status = str_of(&end["status"]);
    out.value(&end, |v| {
        let err = v["error"]
            .as_str()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        println!("operation {id} {status}{err}");
    });
    Ok(exit_for(&end))
}

fn exit_for(end: &Value) -> u8 {
    if str_of(&end["status"]) == OperationStatus::Succeeded.as_str() {
        exit::OK
    } else {
        exit::OPERATION_FAILED
    }
}

/// Print an operation's log lines as they come (to stderr if `to_stderr`); the operation
/// as it ended.
async fn follow_logs(c: &Client, detail: &Value, to_stderr: bool) -> Result<Value, ClientError> {
    let id = detail["id"].as_i64().unwrap_or_default();
    let end = c
        .follow(id, |event, data| {
            if event == "log" {
                if let Ok(line) = serde_json::from_str::<Value>(data) {
                    let text = log_text(&line, detail);
                    if to_stderr {
                        eprintln!("{text}");
                    } else {
                        println!("{text}");
                    }
                }
            }
        })
        .await?;
    Ok(serde_json::from_str(&end).unwrap_or(Value::Null))
}

fn log_text(line: &Value, detail: &Value) -> String {
    let ts = str_of(&line["ts"]);
    let time = ts.get(11..23).unwrap_or(&ts);
    let task = line["task_seq"]
        .as_i64()
        .and_then(|seq| {
            detail["tasks"]
                .as_array()?
                .iter()
                .find(|t| t["seq"].as_i64() == Some(seq))
                .map(|t| str_of(&t["name"]))
        })
        .unwrap_or_else(|| "-".into());
    let level = str_of(&line["level"]);
    let mark = match level.as_str() {
        "command" => "$ ",
        "warning" => "warning: ",
        "error" => "error: ",
        _ => "",
    };
    format!("{time}  {task:<16} {mark}{}", str_of(&line["message"]))
}

async fn list(c: &Client, out: &Out, path: &str, cols: &[&str]) -> Res {
    let v: Value = c.get(path).await?;
    out.value(&v, |v| table(v, cols, |row, col| str_of(&row[col])));
    Ok(exit::OK)
}

async fn show(c: &Client, out: &Out, path: &str) -> Res {
    let v: Value = c.get(path).await?;
    out.value(&v, |v| print_kv(&flat(v)));
    Ok(exit::OK)
}

fn table(rows: &Value, cols: &[&str], cell: impl Fn(&Value, &str) -> String) {
    let rows: Vec<Vec<String>> = rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| cols.iter().map(|c| cell(r, c)).collect())
        .collect();
    print_table(cols, &rows);
}

fn show_server(v: &Value) {
    let mut kv = vec![
        ("name".to_string(), str_of(&v["name"])),
        ("transport".to_string(), str_of(&v["transport"])),
        (
            "address".to_string(),
            match v["ssh_host"].as_str() {
                Some(h) => format!("{}@{h}:{}", str_of(&v["ssh_user"]), v["ssh_port"]),
                None => "-".into(),
            },
        ),
        ("status".to_string(), str_of(&v["status"])),
        ("verified_at".to_string(), str_of(&v["verified_at"])),
    ];
    let svc = &v["services"];
    kv.push(("os".into(), str_of(&svc["os"])));
    for (label, key) in [("http", "http"), ("php-fpm", "php_fpm"), ("database", "db")] {
        let items: Vec<String> = svc[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{} {}", str_of(&s["name"]), str_of(&s["version"])))
            .collect();
        kv.push((label.into(), items.join(", ")));
    }
    print_kv(&kv);
}

fn show_operation(v: &Value) {
    let mut kv = flat(v);
    kv.retain(|(k, _)| k != "tasks" && k != "params");
    print_kv(&kv);
    println!();
    table(
        &v["tasks"],
        &["seq", "name", "status", "error"],
        |t, col| str_of(&t[col]),
    );
}

/// Top-level fields as key/value pairs, nested values as compact JSON.
fn flat(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), str_of(v)))
        .collect()
}

fn str_of(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(|x| x.is_string()) => a
            .iter()
            .filter_map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(o) if o.contains_key("type") && o.contains_key("name") => {
            format!("{} {}", str_of(&o["type"]), str_of(&o["name"]))
        }
        other => other.to_string(),
    }
}

/// Percent-encode a path segment or query value.
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
