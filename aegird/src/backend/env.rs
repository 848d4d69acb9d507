//! Environment operations on a server (install, verify, disable, enable, delete, login,
//! cron) as "ensure" steps with an undo. Every effect on the host carries the site's key (its
//! database name): undo and delete find what to remove on the host itself, never from
//! recorded output, and never touch what another site or the admin made.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::backup;
use super::executor::HostExecutor;
use super::layout::{self, Site};
use super::nginx::{self, Serving};
use super::shell;
use crate::apps::{drupal, wordpress};
use crate::engine::{Plan, Step, StepContext, StepError};
use crate::model::{AppKind, Backup, BackupReason, EnvironmentStatus, Id, LogLevel, OperationKind};

/// How long a one-time login link works.
pub const LOGIN_TTL_SECS: i64 = 15 * 60;

/// What an environment operation acts on.
#[derive(Clone)]
pub struct Target {
    pub env_id: Id,
    pub site: Site,
    /// The release's name and application version, for backup manifests.
    pub release: String,
    pub app_version: Option<String>,
    /// The site title an install gives WordPress and Drupal.
    pub title: String,
    pub exec: Arc<dyn HostExecutor>,
    /// Where the files and settings steps put Drupal's `sites/<uri>`.
    pub drupal_dir: DrupalSiteDir,
}

/// Drupal's `sites/<uri>` in place, or staged beside the one Aegir 3 still serves from the
/// same path, until a takeover swaps the two in one rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrupalSiteDir {
    InPlace,
    Staged,
}

impl Target {
    /// Drupal's per-site directory as the files and settings steps write it.
    pub(super) fn drupal_site_dir(&self) -> String {
        match self.drupal_dir {
            DrupalSiteDir::InPlace => self.site.drupal_site_dir(),
            DrupalSiteDir::Staged => self.site.drupal_site_staged(),
        }
    }

    /// A logged script on the environment's host (see [`shell::script`]).
    pub(super) async fn sh(
        &self,
        cx: &StepContext,
        what: &str,
        script: &str,
        args: &[&str],
    ) -> Result<String, StepError> {
        shell::script(cx, self.exec.as_ref(), what, script, args).await
    }

    /// [`Target::sh`] with `input` on its standard input.
    pub(super) async fn sh_input(
        &self,
        cx: &StepContext,
        what: &str,
        script: &str,
        args: &[&str],
        input: Vec<u8>,
    ) -> Result<String, StepError> {
        shell::script_input(cx, self.exec.as_ref(), what, script, args, Some(input)).await
    }

    /// Run one of the WordPress driver's PHP scripts as the site (Debian's wp-config.php
    /// picks the site's config from WORDPRESS_CONFIG).
    pub(super) async fn wp_php(
        &self,
        cx: &StepContext,
        what: &str,
        script: String,
        args: &[&str],
    ) -> Result<String, StepError> {
        let s = &self.site;
        let config = s.wordpress_config_name();
        let root = s.docroot_path();
        let mut argv = vec![s.uri.as_str(), config.as_str(), root.as_str()];
        argv.extend_from_slice(args);
        self.sh_input(
            cx,
            what,
            r#"host=$1 config=$2; shift 2
HTTP_HOST=$host WORDPRESS_CONFIG=$config exec php -- "$@""#,
            &argv,
            script.into_bytes(),
        )
        .await
    }
}

/// What the archive operations add to an environment plan.
pub struct Archives {
    pub settings: Arc<backup::Settings>,
    /// env.backup: why, and the user's description.
    pub reason: BackupReason,
    pub description: Option<String>,
    /// env.restore: the backup to restore.
    pub restore: Option<Backup>,
    /// env.delete: take a pre-delete backup first (as Aegir 3 always did).
    pub backup_first: bool,
    /// env.clone: the environment whose fresh backup the new one starts from.
    pub clone_source: Option<Target>,
    /// env.takeover: where Aegir 3 keeps the site.
    pub aegir3: Option<super::takeover::Aegir3Site>,
}

/// The plan of an environment operation. `serving` is what the vhost does now (verify keeps
/// it; disable and enable change it).
pub fn plan(kind: OperationKind, target: Target, serving: Serving, archives: Archives) -> Plan {
    let t = Arc::new(target);
    let step = |kind: Kind| -> Arc<dyn Step> { Arc::new(EnvStep { kind, t: t.clone() }) };
    let settings = archives.settings.clone();
    let archive = |kind: backup::Kind| backup::ArchiveStep::arc(kind, &t, &settings);
    use EnvironmentStatus as S;
    // Disable and enable: the vhost goes from one state to the other (undo puts it back),
    // then the record follows.
    let switch = |previous: Serving,
                  from: &'static [EnvironmentStatus],
                  to: Serving,
                  status: EnvironmentStatus| {
        (
            vec![
                step(Kind::CheckSite),
                step(Kind::Vhost {
                    serving: to,
                    undo: VhostUndo::Render(previous),
                }),
                step(Kind::Status { from, to: status }),
            ],
            false,
            None,
        )
    };
    let (steps, resumable, on_failure) = match kind {
        OperationKind::EnvInstall => (
            vec![
                step(Kind::Claim),
                step(Kind::Secrets),
                step(Kind::Database { create: true }),
                step(Kind::Files),
                step(Kind::Settings),
                step(Kind::Vhost {
                    serving: Serving::Active,
                    undo: VhostUndo::Remove,
                }),
                step(Kind::AppInstall),
                step(Kind::Status {
                    from: &[S::Installing, S::Failed],
                    to: S::Active,
                }),
            ],
            // An install cut off half-way is undone, so the site is either there or not.
            false,
            Some(step(Kind::Status {
                from: &[S::Installing],
                to: S::Failed,
            })),
        ),
        OperationKind::EnvVerify => (
            vec![
                step(Kind::CheckSite),
                step(Kind::Secrets),
                step(Kind::Database { create: false }),
                step(Kind::Files),
                step(Kind::Settings),
                step(Kind::Vhost {
                    serving,
                    undo: VhostUndo::Keep,
                }),
            ],
            // Every step converges on the same files: running again is the recovery.
            true,
            None,
        ),
        OperationKind::EnvDisable => switch(
            Serving::Active,
            &[S::Active],
            Serving::Disabled,
            S::Disabled,
        ),
        OperationKind::EnvEnable => switch(
            Serving::Disabled,
            &[S::Disabled],
            Serving::Active,
            S::Active,
        ),
        OperationKind::EnvDelete => {
            let mut steps = Vec::new();
            if archives.backup_first {
                steps.push(archive(backup::Kind::Take {
                    reason: BackupReason::PreDelete,
                    description: None,
                }));
            }
            steps.extend([
                step(Kind::TakeOffline),
                step(Kind::MoveAside),
                // The point of no return: it drops the database and removes what the steps
                // before set aside, then records the environment as deleted.
                step(Kind::Purge),
            ]);
            (steps, false, None)
        }
        OperationKind::EnvTakeover => {
            let Some(a3) = archives.aegir3.clone() else {
                unreachable!("a takeover is planned with where Aegir 3 keeps the site")
            };
            use super::takeover;
            let mut steps = vec![
                takeover::adopt(t.clone(), a3.clone()),
                step(Kind::Database { create: false }),
                step(Kind::Files),
                step(Kind::Settings),
            ];
            if t.site.app == AppKind::Wordpress {
                steps.push(takeover::uploads(t.clone(), a3.clone()));
            }
            steps.extend([
                takeover::swap_vhost(t.clone(), a3.clone(), serving),
                takeover::record(t.clone(), a3),
            ]);
            (steps, false, None)
        }
        OperationKind::EnvLogin => (vec![step(Kind::Login)], false, None),
        OperationKind::EnvCron => (vec![step(Kind::Cron)], false, None),
        OperationKind::EnvBackup => {
            let mut steps = vec![archive(backup::Kind::Take {
                reason: archives.reason,
                description: archives.description.clone(),
            })];
            if archives.reason == BackupReason::Scheduled {
                steps.push(archive(backup::Kind::Prune));
            }
            (steps, false, None)
        }
        OperationKind::EnvRestore => {
            let Some(b) = archives.restore.clone() else {
                unreachable!("a restore is planned with its backup")
            };
            let source = backup::Source::Recorded(b);
            let mut steps = vec![
                step(Kind::CheckSite),
                archive(backup::Kind::Check(source.clone())),
            ];
            // A disabled site keeps its disabled page throughout; an active one shows it
            // while its content is replaced.
            let online = serving == Serving::Active;
            if online {
                steps.push(step(Kind::Vhost {
                    serving: Serving::Disabled,
                    undo: VhostUndo::Render(Serving::Active),
                }));
            }
            steps.extend([
                archive(backup::Kind::Take {
                    reason: BackupReason::PreRestore,
                    description: None,
                }),
                archive(backup::Kind::Stage(source)),
                archive(backup::Kind::Switch),
            ]);
            if online {
                steps.push(step(Kind::Vhost {
                    serving: Serving::Active,
                    undo: VhostUndo::Render(Serving::Disabled),
                }));
            }
            // The point of no return: the previous database and files go.
            steps.push(archive(backup::Kind::DropPrevious));
            (steps, false, None)
        }
        OperationKind::EnvClone => {
            let Some(source) = archives.clone_source else {
                unreachable!("a clone is planned with its source")
            };
            let source = Arc::new(source);
            let taken = backup::Source::TakenEarlier;
            (
                vec![
                    step(Kind::Claim),
                    step(Kind::Secrets),
                    step(Kind::Database { create: true }),
                    step(Kind::Files),
                    step(Kind::Settings),
                    backup::ArchiveStep::arc(
                        backup::Kind::Take {
                            reason: BackupReason::PreClone,
                            description: Some(format!("before cloning to {}", t.site.uri)),
                        },
                        &source,
                        &settings,
                    ),
                    archive(backup::Kind::Check(taken.clone())),
                    archive(backup::Kind::Stage(taken)),
                    archive(backup::Kind::Switch),
                    step(Kind::Vhost {
                        serving: Serving::Active,
                        undo: VhostUndo::Remove,
                    }),
                    archive(backup::Kind::DropPrevious),
                    step(Kind::Status {
                        from: &[S::Installing, S::Failed],
                        to: S::Active,
                    }),
                ],
                false,
                Some(step(Kind::Status {
                    from: &[S::Installing],
                    to: S::Failed,
                })),
            )
        }
        OperationKind::ServerVerify
        | OperationKind::ReleaseVerify
        | OperationKind::BackupVerify
        | OperationKind::BackupDelete
        | OperationKind::Aegir3Task => {
            unreachable!("not an environment operation")
        }
    };
    Plan {
        steps,
        resumable,
        on_failure,
    }
}

#[derive(Clone, Copy)]
enum VhostUndo {
    /// Install: remove the vhost this operation wrote.
    Remove,
    /// Disable or enable: put the previous state back.
    Render(Serving),
    /// Verify: the rendered vhost is the right one either way.
    Keep,
}

#[derive(Clone, Copy)]
enum Kind {
    Claim,
    CheckSite,
    Secrets,
    Database {
        create: bool,
    },
    Files,
    Settings,
    Vhost {
        serving: Serving,
        undo: VhostUndo,
    },
    AppInstall,
    Status {
        from: &'static [EnvironmentStatus],
        to: EnvironmentStatus,
    },
    TakeOffline,
    MoveAside,
    Purge,
    Login,
    Cron,
}

struct EnvStep {
    kind: Kind,
    t: Arc<Target>,
}

/// The site's secrets, kept on the host (root only) so that verify writes the same
/// settings again and nothing secret is stored in aegird's database or task outputs.
#[derive(Serialize, Deserialize)]
pub(super) struct Secrets {
    db_password: String,
    salts: Vec<String>,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets::with_password(crate::hex::random(24))
    }

    /// A site's secrets around a database password it already has (one taken over).
    pub(super) fn with_password(db_password: String) -> Secrets {
        Secrets {
            db_password,
            salts: (0..8).map(|_| crate::hex::random(32)).collect(),
        }
    }
}

/// Finds the mariadb (or mysql) client, as root through the unix socket (Debian's default
/// admin account), or with the credentials in root's ~/.my.cnf.
pub(super) const MYSQL: &str = r#"my=$(command -v mariadb || command -v mysql) || { echo "neither mariadb nor mysql client found" >&2; exit 1; }
"#;

#[async_trait]
impl Step for EnvStep {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Claim => "claim-site-directory",
            Kind::CheckSite => "check-site-directory",
            Kind::Secrets => "secrets",
            Kind::Database { .. } => "database",
            Kind::Files => "files",
            Kind::Settings => "settings",
            Kind::Vhost {
                serving: Serving::Active,
                ..
            } => "vhost",
            Kind::Vhost {
                serving: Serving::Disabled,
                ..
            } => "vhost-disabled",
            Kind::AppInstall => "install-application",
            Kind::Status { .. } => "record-status",
            Kind::TakeOffline => "take-offline",
            Kind::MoveAside => "move-aside",
            Kind::Purge => "purge",
            Kind::Login => "login-link",
            Kind::Cron => "cron",
        }
    }

    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        match self.kind {
            Kind::Claim => self.claim(cx).await,
            Kind::CheckSite => self.check_site(cx).await,
            Kind::Secrets => self.secrets(cx).await,
            Kind::Database { create } => self.database(cx, create).await,
            Kind::Files => self.files(cx).await,
            Kind::Settings => self.settings(cx).await,
            // Only verify renders what should already be there: a difference then is drift.
            Kind::Vhost { serving, undo } => {
                self.vhost(cx, serving, matches!(undo, VhostUndo::Keep))
                    .await
            }
            Kind::AppInstall => self.app_install(cx).await,
            Kind::Status { from, to } => {
                if !cx
                    .store()
                    .set_environment_status(self.t.env_id, from, to, cx.now())
                    .await?
                {
                    return Err(StepError::new(format!(
                        "environment {} changed status meanwhile; not recorded as {to}",
                        self.t.site.uri
                    )));
                }
                Ok(json!({ "status": to }))
            }
            Kind::TakeOffline => self.take_offline(cx).await,
            Kind::MoveAside => self.move_aside(cx).await,
            Kind::Purge => self.purge(cx).await,
            Kind::Login => self.login(cx).await,
            Kind::Cron => self.cron(cx).await,
        }
    }

    async fn undo(&self, cx: &StepContext) -> Result<(), StepError> {
        let s = &self.t.site;
        match self.kind {
            Kind::Claim => {
                self.t
                    .sh(
                        cx,
                        &format!("remove the site directory {}", s.dir()),
                        r#"rm -rf "$1.new-$3"
if [ "$(cat "$2" 2>/dev/null)" = "$3" ]; then rm -rf "$1"; fi"#,
                        &[&s.dir(), &s.marker(), &s.key],
                    )
                    .await?;
            }
            Kind::Database { create: true } => {
                let script = format!(
                    r#"set -e
[ "$(cat "$1/.aegir-env" 2>/dev/null)" = "$2" ] && [ -e "$1/.database" ] || exit 0
{MYSQL}"$my" -e "DROP DATABASE IF EXISTS \`$2\`; DROP USER IF EXISTS '$2'@'localhost';"
rm -f "$1/.database""#
                );
                self.t
                    .sh(
                        cx,
                        &format!("drop database and user {}", s.key),
                        &script,
                        &[&s.dir(), &s.key],
                    )
                    .await?;
            }
            Kind::Files if matches!(s.app, AppKind::Drupal | AppKind::Drupal7) => {
                self.t
                    .sh(
                        cx,
                        &format!("remove {}", self.t.drupal_site_dir()),
                        r#"rm -rf "$1.new-$2"
if [ "$(cat "$1/.aegir-env" 2>/dev/null)" = "$2" ]; then rm -rf "$1"; fi"#,
                        &[&self.t.drupal_site_dir(), &s.key],
                    )
                    .await?;
            }
            Kind::Settings if s.app == AppKind::Wordpress => {
                self.t
                    .sh(
                        cx,
                        &format!("remove {}", s.wordpress_config_file()),
                        r#"if grep -qF "(aegir-env $2)" "$1" 2>/dev/null; then rm -f "$1"; fi"#,
                        &[&s.wordpress_config_file(), &s.key],
                    )
                    .await?;
            }
            Kind::Vhost { undo, .. } => match undo {
                VhostUndo::Keep => {}
                VhostUndo::Remove => {
                    let script = format!(
                        r#"set -e
exec 9>"$3"
flock 9
if grep -qF "(aegir-env $2)" "$1" 2>/dev/null; then rm -f "$1"; {reload}fi
rm -f "$1.aegir-new""#,
                        reload = nginx::RELOAD
                    );
                    self.t
                        .sh(
                            cx,
                            &format!("remove the vhost {}", s.vhost_file()),
                            &script,
                            &[&s.vhost_file(), &s.key, layout::NGINX_LOCK],
                        )
                        .await?;
                }
                VhostUndo::Render(previous) => {
                    self.vhost(cx, previous, false).await?;
                }
            },
            // The record goes back with the host: a status recorded by an operation that is
            // then undone must not claim what is no longer there.
            Kind::Status { from, to } => {
                cx.store()
                    .set_environment_status(self.t.env_id, &[to], from[0], cx.now())
                    .await?;
            }
            Kind::TakeOffline => {
                let script = format!(
                    r#"set -e
exec 9>"$3"
flock 9
if [ -e "$2" ] && [ ! -e "$1" ]; then mv -f "$2" "$1"; {reload}fi"#,
                    reload = nginx::RELOAD
                );
                self.t
                    .sh(
                        cx,
                        &format!("put the vhost {} back", s.vhost_file()),
                        &script,
                        &[&s.vhost_file(), &s.vhost_aside(), layout::NGINX_LOCK],
                    )
                    .await?;
            }
            Kind::MoveAside => {
                self.t
                    .sh(
                        cx,
                        &format!("put the files of {} back", s.uri),
                        r#"set -e
back() { if [ -e "$2" ] && [ ! -e "$1" ]; then mv -f "$2" "$1"; fi; }
back "$1" "$2"
back "$3" "$4"
back "$5" "$6""#,
                        &self
                            .aside_pairs()
                            .iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>(),
                    )
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl EnvStep {
    /// Write a file the site's key names, then give it to the web group; true if it differed
    /// from what was there (drift, on verify).
    async fn write(
        &self,
        cx: &StepContext,
        path: &str,
        contents: &str,
        mode: u32,
        group: Option<&str>,
    ) -> Result<bool, StepError> {
        let changed = shell::write(cx, self.t.exec.as_ref(), path, contents, mode).await?;
        if let Some(group) = group {
            self.t
                .sh(
                    cx,
                    &format!("chgrp {group} {path}"),
                    r#"chgrp "$2" "$1""#,
                    &[path, group],
                )
                .await?;
        }
        if changed {
            cx.info(format!("{path}: written")).await;
        }
        Ok(changed)
    }

    /// The site directory, made atomically with the marker that names its environment:
    /// a crash never leaves a directory that undo cannot tell is ours.
    async fn claim(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        self.t
            .sh(
                cx,
                &format!("create the site directory {}", s.dir()),
                r#"set -e
if [ -e "$1" ]; then
  if [ "$(cat "$2" 2>/dev/null)" != "$3" ]; then
    echo "$1 already exists and belongs to another site; remove it or pick another uri" >&2; exit 1
  fi
  exit 0
fi
if [ -e "$4" ] && ! grep -qF "(aegir-env $3)" "$4"; then
  echo "$4 already exists and is not aegird's vhost for this site" >&2; exit 1
fi
mkdir -p "$(dirname "$1")"
rm -rf "$1.new-$3"
mkdir -m 0755 "$1.new-$3"
printf '%s\n' "$3" > "$1.new-$3/.aegir-env"
mv -T "$1.new-$3" "$1""#,
                &[&s.dir(), &s.marker(), &s.key, &s.vhost_file()],
            )
            .await?;
        Ok(json!({ "dir": s.dir() }))
    }

    async fn check_site(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        self.t
            .sh(
                cx,
                &format!("check the site directory {}", s.dir()),
                r#"if [ "$(cat "$2" 2>/dev/null)" != "$3" ]; then
  echo "$1 is missing or belongs to another site" >&2; exit 1
fi"#,
                &[&s.dir(), &s.marker(), &s.key],
            )
            .await?;
        Ok(json!({ "dir": s.dir() }))
    }

    async fn secrets(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        let fresh = serde_json::to_vec(&Secrets::new()).expect("secrets serialise");
        let made = self
            .t
            .sh_input(
                cx,
                &format!("keep the site's secrets in {}", s.secrets_file()),
                r#"set -e
if [ -s "$1" ]; then echo kept; exit 0; fi
umask 077
cat > "$1.tmp"
mv -f "$1.tmp" "$1"
echo made"#,
                &[&s.secrets_file()],
                fresh,
            )
            .await?;
        Ok(json!({ "secrets": made.trim() }))
    }

    async fn read_secrets(&self, cx: &StepContext) -> Result<Secrets, StepError> {
        let s = &self.t.site;
        let text = self
            .t
            .sh(
                cx,
                &format!("read the site's secrets from {}", s.secrets_file()),
                r#"cat "$1""#,
                &[&s.secrets_file()],
            )
            .await?;
        serde_json::from_str(&text)
            .map_err(|e| StepError::new(format!("{} is not valid: {e}", s.secrets_file())))
    }

    /// The database and its user, which may use that database and nothing else. An install
    /// notes in the site directory that it is making them before it does, so its undo (and
    /// only its undo) drops them; one that already exists without that note is refused.
    async fn database(&self, cx: &StepContext, create: bool) -> Result<Value, StepError> {
        let s = &self.t.site;
        let secrets = self.read_secrets(cx).await?;
        let sql = format!(
            "CREATE DATABASE IF NOT EXISTS `{k}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n\
             CREATE USER IF NOT EXISTS '{k}'@'localhost' IDENTIFIED BY '{p}';\n\
             ALTER USER '{k}'@'localhost' IDENTIFIED BY '{p}';\n\
             GRANT ALL PRIVILEGES ON `{grant}`.* TO '{k}'@'localhost';\n",
            k = s.key,
            p = secrets.db_password,
            // In a database-level grant `_` is a wildcard: unescaped, the grant would also
            // cover every database whose name differs from the key at an underscore.
            grant = s.key.replace('_', "\\_"),
        );
        let script = format!(
            r#"set -e
{MYSQL}n=$("$my" -N -B -e "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '$2'")
u=$("$my" -N -B -e "SELECT COUNT(*) FROM mysql.user WHERE User = '$2'")
if [ "$3" = create ]; then
  if [ "$n$u" != 00 ] && [ ! -e "$1/.database" ]; then
    echo "database or user $2 already exists and is not this site's" >&2; exit 1
  fi
  touch "$1/.database"
elif [ "$n" = 0 ]; then
  echo "database $2 is missing: restore it from a backup" >&2; exit 1
fi
"$my"
echo "$n$u""#
        );
        let mode = if create { "create" } else { "verify" };
        let found = self
            .t
            .sh_input(
                cx,
                &format!("database and user {} with access to it alone", s.key),
                &script,
                &[&s.dir(), &s.key, mode],
                sql.into_bytes(),
            )
            .await?;
        Ok(json!({ "database": s.key, "existed": found.trim() == "11" }))
    }

    /// Files directories the web group writes (and where nginx never runs PHP), plus what
    /// the application keeps per site: WordPress's login plugin, Drupal's `sites/<uri>`.
    async fn files(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        self.t
            .sh(
                cx,
                &format!("files directories of {}", s.uri),
                r#"set -e
for d in "$1/files" "$1/private" "$1/private/tmp"; do
  mkdir -p "$d"; chgrp "$2" "$d"; chmod 2770 "$d"
done"#,
                &[&s.dir(), layout::WEB_GROUP],
            )
            .await?;
        match s.app {
            AppKind::Wordpress => {
                self.t
                    .sh(
                        cx,
                        "must-use plugin directory",
                        r#"mkdir -p "$1" && chmod 0755 "$1""#,
                        &[&s.mu_plugins_dir()],
                    )
                    .await?;
                self.write(
                    cx,
                    &format!("{}/aegir-login.php", s.mu_plugins_dir()),
                    wordpress::LOGIN_PLUGIN,
                    0o644,
                    None,
                )
                .await?;
            }
            AppKind::Drupal | AppKind::Drupal7 => {
                self.t.sh(
                    cx,
                    &format!("create {}", self.t.drupal_site_dir()),
                    r#"set -e
[ -d "$(dirname "$1")" ] || { echo "$(dirname "$1") is missing: this release is not a Drupal codebase aegird can add sites to" >&2; exit 1; }
if [ -e "$1" ]; then
  if [ "$(cat "$1/.aegir-env" 2>/dev/null)" != "$2" ]; then
    echo "$1 already exists in the release and is not this site's" >&2; exit 1
  fi
else
  rm -rf "$1.new-$2"
  mkdir -m 0755 "$1.new-$2"
  printf '%s\n' "$2" > "$1.new-$2/.aegir-env"
  mv -T "$1.new-$2" "$1"
fi
ln -sfn "$3" "$1/files""#,
                    &[&self.t.drupal_site_dir(), &s.key, &s.files_dir()],
                )
                .await?;
            }
            AppKind::Php => {}
        }
        Ok(json!({ "files": s.files_dir() }))
    }

    async fn settings(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        let secrets = self.read_secrets(cx).await?;
        let changed = match s.app {
            AppKind::Wordpress => {
                self.t.sh(
                    cx,
                    "check that the release reads per-site configuration",
                    r#"grep -qF "/etc/wordpress/config-" "$1/wp-config.php" 2>/dev/null || {
  echo "$1/wp-config.php does not read per-site configuration from /etc/wordpress (as Debian's wordpress package does), so several sites cannot share this release" >&2; exit 1; }"#,
                    &[&s.docroot_path()],
                )
                .await?;
                self.write(
                    cx,
                    &s.wordpress_config_file(),
                    &wordpress::config(s, &secrets.db_password, &secrets.salts),
                    0o640,
                    Some(layout::WEB_GROUP),
                )
                .await?
            }
            AppKind::Drupal | AppKind::Drupal7 => {
                let creds = self
                    .write(
                        cx,
                        &drupal::credentials_file(s),
                        &drupal::credentials(s, &secrets.db_password, &secrets.salts[0]),
                        0o640,
                        Some(layout::WEB_GROUP),
                    )
                    .await?;
                let settings = self
                    .write(
                        cx,
                        &format!("{}/settings.php", self.t.drupal_site_dir()),
                        &drupal::settings(s),
                        0o440,
                        Some(layout::WEB_GROUP),
                    )
                    .await?;
                creds || settings
            }
            AppKind::Php => false,
        };
        Ok(json!({ "changed": changed }))
    }

    /// The vhost, put in place only if `nginx -t` accepts it (the previous one otherwise).
    async fn vhost(
        &self,
        cx: &StepContext,
        serving: Serving,
        report_drift: bool,
    ) -> Result<Value, StepError> {
        let s = &self.t.site;
        let pool = layout::pool_socket(&s.php);
        self.t
            .sh(
                cx,
                "check aegird's nginx include and php-fpm pool",
                r#"[ -e "$1" ] || { echo "$1 is missing: run aegir server verify" >&2; exit 1; }
[ -S "$2" ] || { echo "php-fpm pool socket $2 is missing: run aegir server verify" >&2; exit 1; }
if [ -e "$3" ] && ! grep -qF "(aegir-env $4)" "$3"; then
  echo "$3 exists and is not aegird's vhost for this site" >&2; exit 1
fi"#,
                &[layout::NGINX_INCLUDE, &pool, &s.vhost_file(), &s.key],
            )
            .await?;
        let text = nginx::vhost(s, serving);
        let installed = nginx::install(cx, self.t.exec.as_ref(), &s.vhost_file(), &text).await?;
        if report_drift && installed == nginx::Installed::Replaced {
            cx.log(
                LogLevel::Warning,
                format!(
                    "{} differed from what aegird renders; rewritten",
                    s.vhost_file()
                ),
            )
            .await;
        }
        Ok(json!({
            "vhost": s.vhost_file(),
            "changed": installed != nginx::Installed::Unchanged,
        }))
    }

    /// The first drush the release carries, if any.
    async fn drush(&self, cx: &StepContext) -> Result<Option<String>, StepError> {
        let candidates = drupal::drush_candidates(&self.t.site);
        let args: Vec<&str> = candidates.iter().map(String::as_str).collect();
        let found = self
            .t
            .sh(
                cx,
                "look for drush in the release",
                r#"for c in "$@"; do if [ -x "$c" ]; then echo "$c"; exit 0; fi; done"#,
                &args,
            )
            .await?;
        Ok(Some(found.trim().to_string()).filter(|s| !s.is_empty()))
    }

    async fn run_drush(
        &self,
        cx: &StepContext,
        drush: &str,
        args: &[String],
    ) -> Result<String, StepError> {
        let mut all = drupal::drush_site_args(&self.t.site);
        all.extend(args.iter().cloned());
        let mut argv = vec![drush];
        argv.extend(all.iter().map(String::as_str));
        // Files drush makes under the setgid files directories must stay writable by the
        // web group, or php-fpm cannot update them later.
        self.t
            .sh(
                cx,
                &format!("drush {}", all.join(" ")),
                r#"umask 002; exec "$@""#,
                &argv,
            )
            .await
    }

    async fn app_install(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        match s.app {
            AppKind::Wordpress => {
                let email = format!("admin@{}", s.uri);
                let upload_url = format!("{}/wp-content/uploads", s.url());
                let out = self
                    .t
                    .wp_php(
                        cx,
                        "install WordPress",
                        wordpress::install_script(),
                        &[&self.t.title, &email, &s.files_dir(), &upload_url],
                    )
                    .await?;
                Ok(json!({ "method": "wordpress", "result": out.trim() }))
            }
            AppKind::Drupal | AppKind::Drupal7 => match self.drush(cx).await? {
                Some(drush) => {
                    self.run_drush(
                        cx,
                        &drush,
                        &[
                            "site:install".into(),
                            "--yes".into(),
                            format!("--site-name={}", self.t.title),
                            "--account-name=admin".into(),
                            format!("--sites-subdir={}", s.uri),
                        ],
                    )
                    .await?;
                    Ok(json!({ "method": "drush" }))
                }
                None => {
                    cx.info(format!(
                        "no drush in the release: open {}/install.php to finish the install \
                         (Aegir 3's manual method)",
                        s.url()
                    ))
                    .await;
                    Ok(
                        json!({ "method": "manual", "install_url": format!("{}/install.php", s.url()) }),
                    )
                }
            },
            AppKind::Php => Ok(json!({ "method": "none" })),
        }
    }

    /// (original, aside) pairs a delete moves: site directory, Drupal's `sites/<uri>`,
    /// WordPress's config.
    fn aside_pairs(&self) -> [String; 6] {
        let s = &self.t.site;
        [
            s.dir(),
            s.dir_aside(),
            s.drupal_site_dir(),
            s.drupal_site_aside(),
            s.wordpress_config_file(),
            s.wordpress_config_aside(),
        ]
    }

    async fn take_offline(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        let script = format!(
            r#"set -e
exec 9>"$3"
flock 9
if grep -qF "(aegir-env $4)" "$1" 2>/dev/null; then mv -f "$1" "$2"; {reload}fi"#,
            reload = nginx::RELOAD
        );
        self.t
            .sh(
                cx,
                &format!("take {} offline", s.uri),
                &script,
                &[
                    &s.vhost_file(),
                    &s.vhost_aside(),
                    layout::NGINX_LOCK,
                    &s.key,
                ],
            )
            .await?;
        Ok(json!({ "vhost": s.vhost_aside() }))
    }

    /// Moves the site's files where the purge finds them: until then a failed delete can
    /// put everything back.
    async fn move_aside(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        let pairs = self.aside_pairs();
        let mut args: Vec<&str> = pairs.iter().map(String::as_str).collect();
        args.push(&s.key);
        self.t
            .sh(
                cx,
                &format!("set the files of {} aside", s.uri),
                r#"set -e
key="$7"
ours() { [ "$(cat "$1/.aegir-env" 2>/dev/null)" = "$key" ]; }
if ours "$1"; then mv -f "$1" "$2"; fi
if ours "$3"; then mv -f "$3" "$4"; fi
if grep -qF "(aegir-env $7)" "$5" 2>/dev/null; then mv -f "$5" "$6"; fi"#,
                &args,
            )
            .await?;
        Ok(json!({}))
    }

    async fn purge(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        let script = format!(
            r#"set -e
{MYSQL}"$my" -e "DROP DATABASE IF EXISTS \`$1\`; DROP USER IF EXISTS '$1'@'localhost';"
rm -rf "$2" "$3" "$4" "$5""#
        );
        self.t
            .sh(
                cx,
                &format!(
                    "drop database and user {} and remove the site's files",
                    s.key
                ),
                &script,
                &[
                    &s.key,
                    &s.dir_aside(),
                    &s.drupal_site_aside(),
                    &s.wordpress_config_aside(),
                    &s.vhost_aside(),
                ],
            )
            .await?;
        use EnvironmentStatus as S;
        cx.store()
            .set_environment_status(
                self.t.env_id,
                &[S::Active, S::Disabled, S::Failed, S::Installing],
                S::Deleted,
                cx.now(),
            )
            .await?;
        Ok(json!({ "status": S::Deleted }))
    }

    async fn login(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        let url = match s.app {
            AppKind::Wordpress => {
                let token = crate::hex::random(32);
                let hash = crate::hex::encode(&Sha256::digest(token.as_bytes()));
                let expires = (cx.now().0 / 1000 + LOGIN_TTL_SECS).to_string();
                self.t
                    .wp_php(
                        cx,
                        "store a one-time login token",
                        wordpress::login_script(),
                        &[&hash, &expires],
                    )
                    .await?;
                format!("{}/?aegir-login={token}", s.url())
            }
            AppKind::Drupal | AppKind::Drupal7 => {
                let Some(drush) = self.drush(cx).await? else {
                    return Err(StepError::new(
                        "a one-time login needs drush in the release, and it has none",
                    ));
                };
                let out = self
                    .run_drush(cx, &drush, &["user:login".into(), "--no-browser".into()])
                    .await?;
                // drush may print notices before the link: take the link itself.
                out.lines()
                    .rev()
                    .map(str::trim)
                    .find(|l| l.starts_with("http://") || l.starts_with("https://"))
                    .ok_or_else(|| {
                        StepError::new(format!("drush user:login printed no link: {}", out.trim()))
                    })?
                    .to_string()
            }
            AppKind::Php => {
                return Err(StepError::new("a plain PHP site has no login to open"));
            }
        };
        Ok(json!({ "url": url, "expires_in_seconds": LOGIN_TTL_SECS }))
    }

    async fn cron(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        let out = match s.app {
            AppKind::Wordpress => {
                self.t
                    .wp_php(cx, "run WordPress cron", wordpress::cron_script(), &[])
                    .await?
            }
            AppKind::Drupal | AppKind::Drupal7 => {
                let Some(drush) = self.drush(cx).await? else {
                    return Err(StepError::new("cron needs drush in the release"));
                };
                self.run_drush(cx, &drush, &["cron".into()]).await?
            }
            AppKind::Php => return Err(StepError::new("a plain PHP site has no cron")),
        };
        Ok(json!({ "output": out.trim() }))
    }
}
