//! Backup, restore and clone steps, and backup housekeeping: archives stream between a host's
//! `mariadb-dump`/`tar` and aegird's backups directory in one pass, never through a copy of
//! the site; a restore builds the new database and files beside the old ones and switches.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::env::{Target, MYSQL};
use super::executor::HostExecutor;
use super::layout;
use crate::backup::{archive, lanes, retention, rewrite};
use crate::engine::{Step, StepContext, StepError};
use crate::model::{AppKind, Backup, BackupFormat, BackupReason, Id, LogLevel};
use crate::store::NewBackupRow;

/// Where archives are kept and how they are written.
#[derive(Debug, Clone)]
pub struct Settings {
    /// On aegird's own host (Aegir 3 kept them on its master server too).
    pub dir: PathBuf,
    /// zstd level (`backups.level`).
    pub level: i32,
    pub retention: retention::Policy,
}

impl Settings {
    pub fn new(dir: impl Into<PathBuf>) -> Settings {
        Settings {
            dir: dir.into(),
            level: crate::config::DEFAULT_LEVEL,
            retention: retention::Policy::default(),
        }
    }
}

/// Where the archive a restore or clone reads comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A recorded backup.
    Recorded(Backup),
    /// The archive the "backup" step of this same operation wrote (a clone's fresh backup).
    TakenEarlier,
}

/// What one archive step does.
#[derive(Clone)]
pub enum Kind {
    /// Back the environment up and record the archive.
    Take {
        reason: BackupReason,
        description: Option<String>,
    },
    /// Read the archive's first member: the right kind of archive, for the right application,
    /// before anything is changed.
    Check(Source),
    /// The archive into a new database and a staging directory beside the live ones.
    Stage(Source),
    /// The staged database and files take the live ones' place; the previous ones are kept.
    Switch,
    /// The point of no return: the previous database and files go.
    DropPrevious,
    /// Retention: scheduled backups beyond the policy go.
    Prune,
    /// Re-read a recorded archive and check every checksum, and optionally import its
    /// database into a throwaway one.
    Verify { backup: Backup, restore_test: bool },
    /// Remove a recorded archive.
    Delete(Backup),
}

pub struct ArchiveStep {
    pub kind: Kind,
    pub t: Arc<Target>,
    pub settings: Arc<Settings>,
}

impl ArchiveStep {
    pub fn arc(kind: Kind, t: &Arc<Target>, settings: &Arc<Settings>) -> Arc<dyn Step> {
        Arc::new(ArchiveStep {
            kind,
            t: t.clone(),
            settings: settings.clone(),
        })
    }
}

/// The names a restore gives the databases beside the live one (the key is at most 32
/// characters, so these fit MySQL's 64).
fn staged_db(key: &str) -> String {
    format!("{key}__new")
}
fn previous_db(key: &str) -> String {
    format!("{key}__old")
}
fn staging_dir(site_dir: &str) -> String {
    format!("{site_dir}/.restore")
}
fn previous_dir(site_dir: &str) -> String {
    format!("{site_dir}/.restore-previous")
}

/// The application's per-site directory whose own code a backup carries as site/ (Drupal's
/// `sites/<uri>`: modules, themes, local.settings.php), if the application has one.
fn code_dir(t: &Target) -> Option<String> {
    matches!(t.site.app, AppKind::Drupal | AppKind::Drupal7).then(|| t.drupal_site_dir())
}

/// Shell functions for the code switch:
/// - `for_code DIR CMD...` runs `CMD... NAME` for each entry of DIR that is the site's own
///   code, leaving out what aegird writes there itself (settings.php, the files link ...);
/// - `mv_to TO NAME`, as its CMD, moves the entry NAME of that DIR into TO.
fn code_functions() -> String {
    format!(
        r#"for_code() {{
  fc_dir=$1; shift
  for fc_e in "$fc_dir"/* "$fc_dir"/.[!.]* "$fc_dir"/..?*; do
    [ -e "$fc_e" ] || [ -L "$fc_e" ] || continue
    case ${{fc_e##*/}} in {reserved}) continue;; esac
    "$@" "${{fc_e##*/}}"
  done
}}
mv_to() {{ mv -T "$fc_dir/$2" "$1/$2"; }}
"#,
        reserved = archive::SITE_RESERVED.join("|")
    )
}

/// Archives an operation wrote carry its id, so its undo finds them on disk even when a
/// crash lost the step's output and the store never heard of them.
fn archive_name(uri: &str, stamp: &str, op: Id) -> String {
    format!("{uri}-{stamp}-op{op}.tar.zst")
}

fn made_by(name: &str, op: Id) -> bool {
    let tag = format!("-op{op}.tar.zst");
    name.ends_with(&tag) || name.ends_with(&format!("{tag}.partial"))
}

#[async_trait]
impl Step for ArchiveStep {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Take { .. } => "backup",
            Kind::Check(_) => "check-archive",
            Kind::Stage(_) => "stage",
            Kind::Switch => "switch",
            Kind::DropPrevious => "drop-previous",
            Kind::Prune => "retention",
            Kind::Verify { .. } => "verify-archive",
            Kind::Delete(_) => "delete-archive",
        }
    }

    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        match &self.kind {
            Kind::Take {
                reason,
                description,
            } => self.take(cx, *reason, description.clone()).await,
            Kind::Check(source) => self.check(cx, source).await,
            Kind::Stage(source) => self.stage(cx, source).await,
            Kind::Switch => self.switch(cx).await,
            Kind::DropPrevious => self.drop_previous(cx).await,
            Kind::Prune => self.prune(cx).await,
            Kind::Verify {
                backup,
                restore_test,
            } => self.verify(cx, backup, *restore_test).await,
            Kind::Delete(backup) => {
                remove_archive(cx, backup).await?;
                Ok(json!({ "deleted": backup.id }))
            }
        }
    }

    async fn undo(&self, cx: &StepContext) -> Result<(), StepError> {
        let s = &self.t.site;
        match &self.kind {
            Kind::Take { .. } => {
                for b in cx.store().backups_of_operation(cx.operation_id).await? {
                    remove_archive(cx, &b).await?;
                }
                // What a crash left: a partial file, or an archive renamed into place but
                // never recorded.
                let dir = self.settings.dir.clone();
                let op = cx.operation_id;
                let removed =
                    tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
                        let mut removed = Vec::new();
                        let entries = match std::fs::read_dir(&dir) {
                            Ok(e) => e,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                return Ok(removed)
                            }
                            Err(e) => return Err(e),
                        };
                        for entry in entries {
                            let entry = entry?;
                            let name = entry.file_name().to_string_lossy().into_owned();
                            if made_by(&name, op) {
                                std::fs::remove_file(entry.path())?;
                                removed.push(name);
                            }
                        }
                        Ok(removed)
                    })
                    .await
                    .map_err(|e| StepError::new(format!("cleaning the backups directory: {e}")))?
                    .map_err(|e| StepError::new(format!("cleaning the backups directory: {e}")))?;
                for name in removed {
                    cx.info(format!("removed {name}")).await;
                }
            }
            Kind::Stage(_) => {
                let script = format!(
                    r#"set -e
{MYSQL}"$my" -e "DROP DATABASE IF EXISTS \`$1\`"
rm -rf "$2""#
                );
                self.t
                    .sh(
                        cx,
                        "remove the staged database and files",
                        &script,
                        &[&staged_db(&s.key), &staging_dir(&s.dir())],
                    )
                    .await?;
            }
            Kind::Switch => self.switch_back(cx).await?,
            Kind::Verify { .. } => {
                self.drop_database(
                    cx,
                    "drop the throwaway database",
                    &throwaway_db(cx.operation_id),
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn throwaway_db(op: Id) -> String {
    format!("aegir_restore_test_{op}")
}

/// Remove a backup's archive (gone already is fine) and mark it deleted.
async fn remove_archive(cx: &StepContext, b: &Backup) -> Result<(), StepError> {
    match tokio::fs::remove_file(&b.path).await {
        Ok(()) => cx.info(format!("removed {}", b.path)).await,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            cx.log(LogLevel::Warning, format!("{} was already gone", b.path))
                .await
        }
        Err(e) => return Err(StepError::new(format!("cannot remove {}: {e}", b.path))),
    }
    cx.store().mark_backup_deleted(b.id).await?;
    Ok(())
}

impl ArchiveStep {
    /// An empty database named `db`, whatever was there under that name (only aegird's
    /// scratch names are passed: `<key>__old`, a restore test's).
    async fn fresh_database(
        &self,
        cx: &StepContext,
        what: &str,
        db: &str,
    ) -> Result<(), StepError> {
        let script = format!(
            r#"{MYSQL}"$my" -e "DROP DATABASE IF EXISTS \`$1\`; CREATE DATABASE \`$1\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;""#
        );
        self.t.sh(cx, what, &script, &[db]).await.map(drop)
    }

    async fn drop_database(&self, cx: &StepContext, what: &str, db: &str) -> Result<(), StepError> {
        let script = format!(r#"{MYSQL}"$my" -e "DROP DATABASE IF EXISTS \`$1\`""#);
        self.t.sh(cx, what, &script, &[db]).await.map(drop)
    }

    async fn take(
        &self,
        cx: &StepContext,
        reason: BackupReason,
        description: Option<String>,
    ) -> Result<Value, StepError> {
        let s = &self.t.site;
        let check = format!(
            r#"if [ "$(cat "$1/.aegir-env" 2>/dev/null)" != "$2" ]; then
  echo "$1 is missing or belongs to another site" >&2; exit 1
fi
{MYSQL}"$my" -N -B -e "SELECT VERSION()""#
        );
        let version = self
            .t
            .sh(
                cx,
                &format!("check {} and its database server", s.dir()),
                &check,
                &[&s.dir(), &s.key],
            )
            .await?
            .trim()
            .to_string();
        let engine = if version.to_ascii_lowercase().contains("mariadb") {
            "mariadb"
        } else {
            "mysql"
        };
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_millis(cx.now().0 as u64);
        let created = humantime::format_rfc3339_seconds(now).to_string();
        let stamp: String = created
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        // Archives hold the site's whole database: only aegird may list them.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.settings.dir)
            .map_err(|e| {
                StepError::new(format!(
                    "cannot create the backups directory {}: {e}",
                    self.settings.dir.display()
                ))
            })?;
        let dest = self
            .settings
            .dir
            .join(archive_name(&s.uri, &stamp, cx.operation_id));
        let header = archive::Header {
            environment_id: self.t.env_id,
            uri: s.uri.clone(),
            release: self.t.release.clone(),
            app: s.app.as_str().to_string(),
            app_version: self.t.app_version.clone(),
            db_engine: engine.to_string(),
            db_version: version,
            created,
        };
        // Consistent without locking the site: one transaction for the whole dump. Aegir 3's
        // own flags, so an import gets InnoDB's bulk load into empty tables. The largest
        // tables come first (views last, after what they read): a restore shares the tables
        // out among its connections in the dump's order, so the longest load starts at once
        // (measured: a WordPress site's wp_posts, last in name order, otherwise started a
        // few seconds late and bounded the restore). A name the client had to escape keeps
        // the dump in mariadb-dump's own order.
        let dump_script = format!(
            r#"d=$(command -v mariadb-dump || command -v mysqldump) || {{ echo "neither mariadb-dump nor mysqldump found" >&2; exit 1; }}
{MYSQL}order=$("$my" -N -B -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$1' ORDER BY TABLE_TYPE = 'VIEW', DATA_LENGTH + INDEX_LENGTH DESC, TABLE_NAME") || exit 1
set -- "$1"
case $order in
  *\\*) ;;
  *) while IFS= read -r t; do [ -n "$t" ] && set -- "$@" "$t"; done <<EOF
$order
EOF
  ;;
esac
exec "$d" --single-transaction --quick --no-autocommit --skip-dump-date "$@""#
        );
        let dump = self
            .t
            .exec
            .command("sh", &["-c", &dump_script, "sh", &s.key]);
        // Temporary files are not worth keeping: private/tmp is left out. The site's own code
        // goes in as site/ (its directory entry last, so there is one even when it is empty:
        // a restore then knows the site had no code of its own, rather than an older backup
        // that did not carry it).
        let tar_script = format!(
            r#"code=$2
cd "$1" || exit 1
set --
for d in files private; do [ -e "$d" ] && set -- "$@" "$d"; done
if [ -n "$code" ] && [ -d "$code" ]; then
  set -- "$@" -C "$code" --transform='s,^\.\(/\|$\),site\1,S'
  for e in "$code"/* "$code"/.[!.]* "$code"/..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    case ${{e##*/}} in {reserved}) continue;; esac
    set -- "$@" "./${{e##*/}}"
  done
  set -- "$@" --no-recursion ./
fi
[ $# -gt 0 ] || exec tar -c -f - -T /dev/null
exec tar -c -f - --exclude=private/tmp "$@""#,
            reserved = archive::SITE_RESERVED.join("|")
        );
        let code = code_dir(&self.t).unwrap_or_default();
        let tar = self
            .t
            .exec
            .command("sh", &["-c", &tar_script, "sh", &s.dir(), &code]);
        cx.log(
            LogLevel::Command,
            format!(
                "mariadb-dump {} and tar of {}{} into {}",
                s.key,
                s.dir(),
                if code.is_empty() {
                    String::new()
                } else {
                    format!(" and the site's own code in {code}")
                },
                dest.display()
            ),
        )
        .await;
        let opts = archive::WriteOptions {
            level: self.settings.level,
            ..archive::WriteOptions::default()
        };
        let cancel = CancelOnDrop::new();
        let flag = cancel.flag();
        let started = std::time::Instant::now();
        let written = tokio::task::spawn_blocking(move || {
            write_archive(dump, tar, &dest, header, opts, &flag)
        })
        .await
        .map_err(|e| StepError::new(format!("the backup stopped: {e}")))??;
        let secs = started.elapsed().as_secs_f64();
        let backup = cx
            .store()
            .insert_backup(
                &NewBackupRow {
                    environment_id: self.t.env_id,
                    path: written.path.display().to_string(),
                    size: written.size as i64,
                    sha256: Some(written.sha256.clone()),
                    reason,
                    format: BackupFormat::Aegir,
                    description,
                    operation_id: Some(cx.operation_id),
                },
                cx.now(),
            )
            .await?;
        for skipped in &written.manifest.skipped {
            cx.log(
                LogLevel::Warning,
                format!("not backed up: {} ({})", skipped.path, skipped.reason),
            )
            .await;
        }
        cx.info(format!(
            "backup {} written: {} ({} bytes, database {} bytes, {} members) in {secs:.1} s",
            backup.id,
            backup.path,
            written.size,
            written.manifest.database.size,
            written.manifest.members.len()
        ))
        .await;
        Ok(json!({
            "backup": backup.id,
            "path": backup.path,
            "size": written.size,
            "sha256": written.sha256,
            "database_bytes": written.manifest.database.size,
            "members": written.manifest.members.len(),
        }))
    }

    /// The archive a restore or clone reads.
    fn archive_path(&self, cx: &StepContext, source: &Source) -> Result<String, StepError> {
        match source {
            Source::Recorded(b) => Ok(b.path.clone()),
            Source::TakenEarlier => cx
                .output("backup")
                .and_then(|o| o.get("path"))
                .and_then(|p| p.as_str())
                .map(str::to_string)
                .ok_or_else(|| StepError::new("the backup step left no archive path")),
        }
    }

    async fn check(&self, cx: &StepContext, source: &Source) -> Result<Value, StepError> {
        let path = self.archive_path(cx, source)?;
        let p = PathBuf::from(&path);
        let peek = tokio::task::spawn_blocking(move || archive::peek(&p))
            .await
            .map_err(|e| StepError::new(format!("reading {path}: {e}")))?
            .map_err(|e| StepError::new(format!("{path}: {e}")))?;
        let app = self.t.site.app.as_str();
        let from_uri = match &peek.header {
            Some(h) => {
                if h.app != app {
                    return Err(StepError::new(format!(
                        "{path} is a backup of a {} site ({}); {} is a {app} site",
                        h.app, h.uri, self.t.site.uri
                    )));
                }
                Some(h.uri.clone())
            }
            None => aegir3_uri(&path),
        };
        Ok(json!({
            "archive": path,
            "format": peek.format_name(),
            "uri": from_uri,
        }))
    }

    async fn stage(&self, cx: &StepContext, source: &Source) -> Result<Value, StepError> {
        let s = &self.t.site;
        let path = self.archive_path(cx, source)?;
        let from_uri = cx
            .output("check-archive")
            .and_then(|o| o.get("uri"))
            .and_then(|u| u.as_str())
            .map(str::to_string);
        let new_db = staged_db(&s.key);
        let staging = staging_dir(&s.dir());
        let prepare = format!(
            r#"set -e
[ "$(cat "$1/.aegir-env" 2>/dev/null)" = "$2" ] || {{ echo "$1 is missing or belongs to another site" >&2; exit 1; }}
{MYSQL}"$my" -e "DROP DATABASE IF EXISTS \`$3\`; CREATE DATABASE \`$3\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
rm -rf "$4"
mkdir -m 0700 "$4""#
        );
        self.t
            .sh(
                cx,
                &format!("new database {new_db} and staging directory {staging}"),
                &prepare,
                &[&s.dir(), &s.key, &new_db, &staging],
            )
            .await?;
        // A backup of another uri (a clone, or an Aegir 3 tarball of an older name) has its
        // own URL in its content.
        let pairs = match &from_uri {
            Some(from) if from != &s.uri => vec![
                (format!("//{from}"), format!("//{}", s.uri)),
                (format!("sites/{from}"), format!("sites/{}", s.uri)),
            ],
            _ => Vec::new(),
        };
        if !pairs.is_empty() {
            cx.info(format!(
                "rewriting {} to {} in the database as it is imported",
                from_uri.as_deref().unwrap_or_default(),
                s.uri
            ))
            .await;
        }
        // Our own archives hold a mariadb-dump, in utf8mb4 with `SET NAMES` first: the client
        // may then read it as bytes (in UTF-8 no byte of a multi-byte character is a quote, a
        // backslash or a `;`), which halves the client's share of the work, and the dump sets
        // the session's character set itself. An Aegir 3 tarball goes through as before.
        let path_for_peek = PathBuf::from(&path);
        let ours = tokio::task::spawn_blocking(move || {
            archive::peek(&path_for_peek).is_ok_and(|p| p.format == archive::Format::Aegir)
        })
        .await
        .unwrap_or(false);
        let (connections, client_args) = if ours {
            (RESTORE_CONNECTIONS, "--default-character-set=binary ")
        } else {
            (1, "")
        };
        // A connection prints only the answers to what aegird asks it between the dump's
        // statements (see `backup::rows`): without column names (-N), and each at once
        // (--unbuffered), or aegird would wait for it while it waits for aegird.
        let import_script = format!(r#"{MYSQL}exec "$my" -N --unbuffered {client_args}"$1""#);
        let imports = (0..connections)
            .map(|_| {
                self.t
                    .exec
                    .command("sh", &["-c", &import_script, "sh", &new_db])
            })
            .collect();
        // The files wait behind the database import, which is the long part: tar yields
        // the processors to it.
        let untar = self.t.exec.command(
            "nice",
            &[
                "-n",
                "10",
                "tar",
                "-x",
                "-f",
                "-",
                "--no-same-owner",
                "--no-same-permissions",
                "-C",
                &staging,
            ],
        );
        cx.log(
            LogLevel::Command,
            format!("import {path} into {new_db} and {staging}"),
        )
        .await;
        let cancel = CancelOnDrop::new();
        let flag = cancel.flag();
        let archive_path = PathBuf::from(&path);
        // The rows of large plain tables load as LOAD DATA text through a second client.
        let exec = self.t.exec.clone();
        let db = new_db.clone();
        let loader: LoaderCommand =
            Arc::new(move |sql: &str| row_loader_command(exec.as_ref(), &db, sql));
        let Loaded {
            report,
            stats,
            lanes,
            took,
        } = tokio::task::spawn_blocking(move || {
            read_archive(
                &archive_path,
                imports,
                Some(untar),
                pairs,
                Some(loader),
                &flag,
            )
        })
        .await
        .map_err(|e| StepError::new(format!("the restore stopped: {e}")))??;
        if took.len() > 1 {
            let times: Vec<String> = took
                .iter()
                .enumerate()
                .map(|(i, t)| format!("connection {}: {:.1} s", i + 1, t.as_secs_f64()))
                .collect();
            cx.info(format!("import times: {}", times.join(", "))).await;
        }
        self.restore_stats(cx, &new_db, &lanes).await?;
        let has_code = self
            .t
            .sh(
                cx,
                "give the restored files to the web group",
                r#"set -e
cd "$1"
mkdir -p files private private/tmp
chown -R -h root:"$2" files private
find files private -type d -exec chmod 2770 {} +
find files private -type f -exec chmod 0660 {} +
# The site's own code is code: root's, and not writable by the web server.
if [ -d site ]; then chown -R -h root:root site; chmod -R go-w site; echo site; fi"#,
                &[&staging, layout::WEB_GROUP],
            )
            .await?
            .trim()
            == "site";
        if has_code && code_dir(&self.t).is_none() {
            cx.log(
                LogLevel::Warning,
                format!(
                    "not restored: the site's own code (site/), as a {} site keeps none of its own",
                    s.app.as_str()
                ),
            )
            .await;
            self.t
                .sh(
                    cx,
                    "leave out the site's own code",
                    r#"rm -rf "$1/site""#,
                    &[&staging],
                )
                .await?;
        }
        for skipped in &report.skipped {
            cx.log(LogLevel::Warning, format!("not restored: {skipped}"))
                .await;
        }
        cx.info(format!(
            "staged {} bytes of SQL and {} members{}",
            report.database_bytes,
            report.entries,
            if stats.literals_changed > 0 {
                format!(
                    "; {} values rewritten ({} serialized)",
                    stats.literals_changed, stats.serialized_fixed
                )
            } else {
                String::new()
            }
        ))
        .await;
        Ok(json!({
            "database": new_db,
            "staging": staging,
            "code": has_code && code_dir(&self.t).is_some(),
            "database_bytes": report.database_bytes,
            "entries": report.entries,
            "rewritten": stats.literals_changed,
        }))
    }

    /// Sets back the statistics option the import paused on the tables it created, and
    /// computes their statistics, so the restored definitions are the dumped ones.
    async fn restore_stats(
        &self,
        cx: &StepContext,
        db: &str,
        lanes: &[lanes::LaneReport],
    ) -> Result<(), StepError> {
        let loaded: u64 = lanes.iter().map(|l| l.sections).sum();
        let used = lanes.iter().filter(|l| l.sections > 0).count();
        let as_text: Vec<&str> = lanes
            .iter()
            .flat_map(|l| l.as_text.iter().map(String::as_str))
            .collect();
        cx.info(format!(
            "{loaded} tables loaded on {used} connection{}{}{}",
            if used == 1 { "" } else { "s" },
            if as_text.is_empty() {
                String::new()
            } else {
                format!(
                    "; the rows of {} as LOAD DATA text ({})",
                    as_text.len(),
                    as_text.join(", ")
                )
            },
            match lanes.first().and_then(|l| l.cut.as_deref()) {
                Some(why) => format!("; the rest of the dump ran on one (serial from: {why})"),
                None => String::new(),
            }
        ))
        .await;
        let existing = self.tables(cx, db).await?;
        let paused: Vec<String> = lanes
            .iter()
            .flat_map(|l| l.paused.iter())
            .filter(|t| existing.contains(t))
            .cloned()
            .collect();
        if paused.is_empty() {
            return Ok(());
        }
        let script = format!("{MYSQL}exec \"$my\" -N -B");
        self.t
            .sh_input(
                cx,
                &format!(
                    "set back automatic statistics on {} tables of {db} and analyze them",
                    paused.len()
                ),
                &script,
                &[],
                lanes::restore_stats_sql(db, &paused).into_bytes(),
            )
            .await?;
        Ok(())
    }

    /// Base tables of a database, one per line.
    async fn tables(&self, cx: &StepContext, db: &str) -> Result<Vec<String>, StepError> {
        let script = format!(
            r#"{MYSQL}"$my" -N -B -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$1' AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME""#
        );
        Ok(self
            .t
            .sh(cx, &format!("list the tables of {db}"), &script, &[db])
            .await?
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// One RENAME TABLE statement moving every table of `moves` (database pairs): MariaDB
    /// does it atomically, so the site sees either the old tables or the new, never a mix.
    async fn rename_all(
        &self,
        cx: &StepContext,
        what: &str,
        moves: &[(&str, &str)],
    ) -> Result<usize, StepError> {
        let mut parts = Vec::new();
        for (from, to) in moves {
            for t in self.tables(cx, from).await? {
                let q = t.replace('`', "``");
                parts.push(format!("`{from}`.`{q}` TO `{to}`.`{q}`"));
            }
        }
        if parts.is_empty() {
            return Ok(0);
        }
        let sql = format!("RENAME TABLE {};\n", parts.join(", "));
        let script = format!("{MYSQL}exec \"$my\"");
        self.t
            .sh_input(cx, what, &script, &[], sql.into_bytes())
            .await?;
        Ok(parts.len())
    }

    async fn switch(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        let (live, new, old) = (s.key.clone(), staged_db(&s.key), previous_db(&s.key));
        self.fresh_database(cx, &format!("database {old} for the previous tables"), &old)
            .await?;
        let moved = self
            .rename_all(
                cx,
                &format!("switch {live} to the restored tables (previous ones kept in {old})"),
                &[(&live, &old), (&new, &live)],
            )
            .await?;
        self.t
            .sh(
                cx,
                "switch to the restored files (previous ones kept)",
                r#"set -e
cd "$1"
mkdir -p "$3"
for d in files private; do
  if [ -e "$d" ]; then mv -T "$d" "$3/$d"; fi
  mv -T "$2/$d" "$d"
done"#,
                &[&s.dir(), &staging_dir(&s.dir()), &previous_dir(&s.dir())],
            )
            .await?;
        if let Some(code) = code_dir(&self.t) {
            // Only an archive that carries site/ replaces the code: one from before backups
            // carried it leaves the site's code as it is. The marker tells the undo that every
            // previous entry is aside and what is in the live directory came from the archive.
            self.t
                .sh(
                    cx,
                    &format!("switch {code} to the restored code (previous kept)"),
                    &format!(
                        r#"{for_code}set -e
[ -d "$2/site" ] || exit 0
mkdir -p "$3/site"
for_code "$1" mv_to "$3/site"
: > "$3/site.switched"
for_code "$2/site" mv_to "$1"
rmdir "$2/site""#,
                        for_code = code_functions()
                    ),
                    &[&code, &staging_dir(&s.dir()), &previous_dir(&s.dir())],
                )
                .await?;
        }
        Ok(json!({ "tables_moved": moved }))
    }

    /// Puts the previous database tables and files back, whatever part of the switch ran.
    async fn switch_back(&self, cx: &StepContext) -> Result<(), StepError> {
        let s = &self.t.site;
        if let Some(code) = code_dir(&self.t) {
            self.t
                .sh(
                    cx,
                    &format!("put the previous code of {code} back"),
                    &format!(
                        r#"{for_code}set -e
if [ -e "$3/site.switched" ]; then
  mkdir -p "$2/site"
  for_code "$1" mv_to "$2/site"
  rm -f "$3/site.switched"
fi
if [ -d "$3/site" ]; then
  for_code "$3/site" mv_to "$1"
  rmdir "$3/site"
fi"#,
                        for_code = code_functions()
                    ),
                    &[&code, &staging_dir(&s.dir()), &previous_dir(&s.dir())],
                )
                .await?;
        }
        self.t
            .sh(
                cx,
                "put the previous files back",
                r#"set -e
cd "$1"
[ -d "$3" ] || exit 0
mkdir -p "$2"
for d in files private; do
  if [ -e "$3/$d" ]; then
    if [ -e "$d" ]; then rm -rf "$2/$d"; mv -T "$d" "$2/$d"; fi
    mv -T "$3/$d" "$d"
  fi
done
rmdir "$3""#,
                &[&s.dir(), &staging_dir(&s.dir()), &previous_dir(&s.dir())],
            )
            .await?;
        let (live, new, old) = (s.key.clone(), staged_db(&s.key), previous_db(&s.key));
        if !self.tables(cx, &old).await?.is_empty() {
            self.rename_all(
                cx,
                &format!("put the previous tables of {live} back"),
                &[(&live, &new), (&old, &live)],
            )
            .await?;
        }
        // Empty now (or never filled): nothing of the site is in it.
        self.drop_database(cx, &format!("drop the empty {old}"), &old)
            .await?;
        Ok(())
    }

    async fn drop_previous(&self, cx: &StepContext) -> Result<Value, StepError> {
        let s = &self.t.site;
        let script = format!(
            r#"set -e
{MYSQL}"$my" -e "DROP DATABASE IF EXISTS \`$1\`; DROP DATABASE IF EXISTS \`$2\`;"
rm -rf "$3" "$4""#
        );
        self.t
            .sh(
                cx,
                "drop the previous database and files",
                &script,
                &[
                    &previous_db(&s.key),
                    &staged_db(&s.key),
                    &previous_dir(&s.dir()),
                    &staging_dir(&s.dir()),
                ],
            )
            .await?;
        Ok(json!({}))
    }

    async fn prune(&self, cx: &StepContext) -> Result<Value, StepError> {
        let backups = cx.store().list_backups(Some(self.t.env_id), false).await?;
        let scheduled: Vec<&Backup> = backups
            .iter()
            .filter(|b| b.reason == BackupReason::Scheduled)
            .collect();
        let pairs: Vec<(Id, i64)> = scheduled.iter().map(|b| (b.id, b.created_at.0)).collect();
        // The environment's own policy (set with `aegir env retention`, or Aegir 3's backup
        // GC settings brought by the import), else the daemon's.
        let policy = cx
            .store()
            .environment_by_id(self.t.env_id)
            .await?
            .and_then(|e| e.retention)
            .unwrap_or(self.settings.retention);
        let doomed = retention::to_delete(&pairs, &policy);
        for id in &doomed {
            if let Some(b) = scheduled.iter().find(|b| b.id == *id) {
                remove_archive(cx, b).await?;
            }
        }
        Ok(json!({ "kept": scheduled.len() - doomed.len(), "deleted": doomed }))
    }

    async fn verify(
        &self,
        cx: &StepContext,
        backup: &Backup,
        restore_test: bool,
    ) -> Result<Value, StepError> {
        let path = PathBuf::from(&backup.path);
        cx.log(
            LogLevel::Command,
            format!("read {} and check every checksum", backup.path),
        )
        .await;
        let report = if restore_test {
            let db = throwaway_db(cx.operation_id);
            self.fresh_database(cx, &format!("throwaway database {db}"), &db)
                .await?;
            let import_script = format!(r#"{MYSQL}exec "$my" "$1""#);
            let import = self
                .t
                .exec
                .command("sh", &["-c", &import_script, "sh", &db]);
            let cancel = CancelOnDrop::new();
            let flag = cancel.flag();
            // One connection: the database is dropped right after, statistics and all.
            let Loaded { report, .. } = tokio::task::spawn_blocking(move || {
                read_archive(&path, vec![import], None, Vec::new(), None, &flag)
            })
            .await
            .map_err(|e| StepError::new(format!("the restore test stopped: {e}")))??;
            let tables = self.tables(cx, &db).await?;
            self.drop_database(cx, &format!("drop {db}"), &db).await?;
            if tables.is_empty() && report.database_bytes > 0 {
                return Err(StepError::new(format!(
                    "the database of backup {} imported into no tables",
                    backup.id
                )));
            }
            cx.info(format!(
                "restore test: {} tables imported into {db}, then dropped",
                tables.len()
            ))
            .await;
            report
        } else {
            tokio::task::spawn_blocking(move || archive::verify(&path))
                .await
                .map_err(|e| StepError::new(format!("reading {}: {e}", backup.path)))?
                .map_err(|e| StepError::new(format!("{}: {e}", backup.path)))?
        };
        if let Some(sum) = &backup.sha256 {
            if sum != &report.archive_sha256 {
                return Err(StepError::new(format!(
                    "{} has changed since it was written (SHA-256 {} instead of {sum})",
                    backup.path, report.archive_sha256
                )));
            }
        }
        cx.info(format!(
            "backup {} is intact: {} members and {} bytes of SQL check out",
            backup.id, report.entries, report.database_bytes
        ))
        .await;
        Ok(json!({
            "backup": backup.id,
            "sha256": report.archive_sha256,
            "entries": report.entries,
            "database_bytes": report.database_bytes,
            "restore_test": restore_test,
        }))
    }
}

/// The uri in an Aegir 3 tarball's name: `<uri>-YYYYMMDD.HHMMSS[_N].tar.gz`.
pub fn aegir3_uri(path: &str) -> Option<String> {
    let name = Path::new(path).file_name()?.to_str()?;
    let stem = name.strip_suffix(".tar.gz")?;
    let (uri, stamp) = stem.rsplit_once('-')?;
    let digits = stamp.split('_').next()?;
    let ok = digits.len() == 15
        && digits.as_bytes()[8] == b'.'
        && digits
            .chars()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit());
    (ok && !uri.is_empty()).then(|| uri.to_string())
}

/// Set when the step's future is dropped (a cancel or a timeout), so the blocking pipeline
/// stops at its next read instead of finishing work nobody waits for.
struct CancelOnDrop(Arc<AtomicBool>);

impl CancelOnDrop {
    fn new() -> CancelOnDrop {
        CancelOnDrop(Arc::new(AtomicBool::new(false)))
    }
    fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What a read or write of an abandoned step fails with.
fn stopped() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, "the operation was stopped")
}

/// A reader that fails once the step is abandoned.
struct Cancellable<R> {
    inner: R,
    flag: Arc<AtomicBool>,
}

impl<R: Read> Read for Cancellable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.flag.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        self.inner.read(buf)
    }
}

/// A child process killed (and reaped) unless it was waited for: an abandoned pipeline must
/// not leave a dump or an ssh running.
struct Process {
    what: String,
    child: Option<Child>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Process {
    fn spawn(
        mut cmd: Command,
        what: &str,
        stdin: bool,
        stdout: bool,
    ) -> Result<Process, StepError> {
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(if stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| StepError::new(format!("cannot start {what}: {e}")))?;
        // Drained on the side: a chatty command must never block on a full stderr pipe.
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = (&mut err).take(64 * 1024).read_to_end(&mut buf);
                let _ = std::io::copy(&mut err, &mut std::io::sink());
                String::from_utf8_lossy(&buf).trim().to_string()
            })
        });
        Ok(Process {
            what: what.to_string(),
            child: Some(child),
            stderr,
        })
    }

    fn stdin(&mut self) -> Option<ChildStdin> {
        self.child.as_mut().and_then(|c| c.stdin.take())
    }

    fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    fn wait(mut self) -> Result<(), StepError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child
            .wait()
            .map_err(|e| StepError::new(format!("{}: {e}", self.what)))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(StepError::new(format!(
                "{} failed ({status}): {stderr}",
                self.what
            )))
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// mariadb-dump, then tar of the files, into one archive. The archive's own drop removes its
/// partial file on any failure.
fn write_archive(
    dump: Command,
    tar: Command,
    dest: &Path,
    header: archive::Header,
    opts: archive::WriteOptions,
    cancel: &Arc<AtomicBool>,
) -> Result<archive::Written, StepError> {
    let err = |e: archive::ArchiveError| StepError::new(format!("{}: {e}", dest.display()));
    let mut writer = archive::Writer::create(dest, header, opts).map_err(err)?;
    let mut dump = Process::spawn(dump, "mariadb-dump", false, true)?;
    let mut out = Cancellable {
        inner: dump
            .stdout()
            .ok_or_else(|| StepError::new("mariadb-dump has no output"))?,
        flag: cancel.clone(),
    };
    let added = writer.add_database(&mut out);
    drop(out);
    match added {
        // The dump's own error (a table it could not read) says more than a short stream.
        Ok(_) => dump.wait()?,
        Err(e) => {
            let ours = err(e);
            return Err(match dump.wait() {
                Err(theirs) => StepError::new(format!("{ours}; {theirs}")),
                Ok(()) => ours,
            });
        }
    }
    let mut tar = Process::spawn(tar, "tar of the site's files", false, true)?;
    let mut out = Cancellable {
        inner: tar
            .stdout()
            .ok_or_else(|| StepError::new("tar has no output"))?,
        flag: cancel.clone(),
    };
    // The archive ends at tar's end marker, but GNU tar pads its last record after it: read
    // that too, or tar dies of SIGPIPE writing it.
    let added = writer.add_tree(&mut out).map_err(err).and_then(|()| {
        std::io::copy(&mut out, &mut std::io::sink())
            .map_err(|e| StepError::new(format!("reading tar's output: {e}")))
    });
    drop(out);
    match added {
        // tar's own error (a file it could not read) explains a short stream best.
        Ok(_) => tar.wait()?,
        // Our refusal comes first; tar is killed when dropped.
        Err(e) => return Err(e),
    }
    writer.finish().map_err(err)
}

/// Connections a restore of one of aegird's own archives loads the database on: its tables
/// are shared out among them (see `backup::lanes`). Two keep a two-core server busy; the
/// largest table bounds the time however many there are.
const RESTORE_CONNECTIONS: usize = 2;

/// What `read_archive` did.
struct Loaded {
    report: archive::Report,
    stats: rewrite::Stats,
    /// One per connection used.
    lanes: Vec<lanes::LaneReport>,
    /// How long each connection's share took, from the start of the read.
    took: Vec<std::time::Duration>,
}

/// Streams an archive into a host's `mariadb` (through the URL rewriter when `pairs` is not
/// empty) and, when given, its `tar -x`: all at once, each fed as its part of the archive
/// comes by. `imports` are connections to the same database: with one, the archive is read
/// once; with more (only for aegird's own archives, which the caller has peeked at), its
/// tables are shared out among them and it is read once more for its files and checksums.
fn read_archive(
    path: &Path,
    imports: Vec<Command>,
    untar: Option<Command>,
    pairs: Vec<(String, String)>,
    loader: Option<LoaderCommand>,
    cancel: &Arc<AtomicBool>,
) -> Result<Loaded, StepError> {
    let limits = archive::Limits::for_archive(
        std::fs::metadata(path)
            .map_err(|e| StepError::new(format!("{}: {e}", path.display())))?
            .len(),
    );
    let mut imports = imports.into_iter();
    let first = imports
        .next()
        .ok_or_else(|| StepError::new("no database connection to import into"))?;
    let extra: Vec<Command> = imports.collect();
    if extra.is_empty() {
        return read_whole(path, first, untar, pairs, cancel, limits);
    }

    let plan = lanes::Plan::new(1 + extra.len());
    // The first failure is the cause: the others only stopped because of it.
    let first_failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let fail = {
        let (first_failure, cancel) = (first_failure.clone(), cancel.clone());
        move |e: &StepError| {
            let mut first = first_failure.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.0.clone());
            // The others stop at their next read or write.
            cancel.store(true, Ordering::SeqCst);
        }
    };
    let mut threads = Vec::new();
    let shared = Shared {
        path: path.to_path_buf(),
        plan: plan.clone(),
        pairs,
        loader,
        cancel: cancel.clone(),
        limits,
    };
    for (lane, import) in std::iter::once(first).chain(extra).enumerate() {
        let (shared, plan, fail) = (shared.clone(), plan.clone(), fail.clone());
        threads.push(std::thread::spawn(move || {
            // Lane 0 waits at a cut for the others to say they have ended: they must say
            // so even if they panic.
            let mut told = TellOnDrop(plan.clone(), lane > 0);
            let started = std::time::Instant::now();
            let loaded = load_lane(shared, import, lane)
                .map(|(stats, report)| (stats, report, started.elapsed()));
            if let Err(e) = &loaded {
                fail(e);
            }
            if lane > 0 {
                told.1 = false;
                plan.lane_finished(loaded.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            }
            loaded
        }));
    }
    // The files, and the check of the whole archive against its manifest, here.
    let (untar, tar_in) = spawn_untar(untar)?;
    let mut sink = archive::TarSink::new(
        std::io::sink(),
        CancelWriter {
            inner: tar_in,
            flag: cancel.clone(),
        },
    );
    let read = archive::read(path, limits, &mut sink)
        .map_err(|e| StepError::new(format!("{}: {e}", path.display())));
    if let Err(e) = &read {
        fail(e);
    }
    let tar_closed = sink
        .into_inner()
        .map(drop)
        .map_err(|e| StepError::new(format!("tar -x: {e}")));
    let extracted = untar.map(Process::wait).unwrap_or(Ok(()));
    for e in [&tar_closed, &extracted]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
    {
        fail(e);
    }
    let mut results = Vec::new();
    for t in threads {
        results
            .push(t.join().unwrap_or_else(|_| {
                Err(StepError::new("a database connection's thread panicked"))
            }));
    }
    let first = first_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(e) = first {
        return Err(StepError::new(e));
    }
    let report = read?;
    let mut stats = None;
    let mut reports = Vec::new();
    let mut took = Vec::new();
    for loaded in results {
        let (lane_stats, lane_report, lane_took) = loaded?;
        stats.get_or_insert(lane_stats);
        reports.push(lane_report);
        took.push(lane_took);
    }
    extracted?;
    tar_closed?;
    Ok(Loaded {
        report,
        stats: stats.unwrap_or_default(),
        lanes: reports,
        took,
    })
}

/// Starts the host's `tar -x`, if there is one, and gives the writer that feeds it (a sink
/// when there is none, as for a restore test).
fn spawn_untar(
    untar: Option<Command>,
) -> Result<(Option<Process>, Box<dyn Write + Send>), StepError> {
    let mut untar = untar
        .map(|c| Process::spawn(c, "tar -x into the staging directory", true, false))
        .transpose()?;
    let tar_in: Box<dyn Write + Send> = match untar.as_mut().and_then(Process::stdin) {
        Some(stdin) => Box::new(stdin),
        None => Box::new(std::io::sink()),
    };
    Ok((untar, tar_in))
}

/// Tells the plan that a lane has ended if its thread unwinds before it could say how.
struct TellOnDrop(Arc<lanes::Plan>, bool);

impl Drop for TellOnDrop {
    fn drop(&mut self) {
        if self.1 {
            self.0
                .lane_finished(Err("a database connection's thread panicked".into()));
        }
    }
}

/// What every connection of one parallel restore is given.
#[derive(Clone)]
struct Shared {
    path: PathBuf,
    plan: Arc<lanes::Plan>,
    /// The URL rewrite, if any.
    pairs: Vec<(String, String)>,
    loader: Option<LoaderCommand>,
    cancel: Arc<AtomicBool>,
    limits: archive::Limits,
}

/// One connection of a parallel restore: its own read of the archive's SQL, split by its
/// `LaneWriter`, into its own `mariadb` (and, with a `loader`, the rows of large plain tables
/// into second clients, one at a time).
fn load_lane(
    shared: Shared,
    import: Command,
    lane: usize,
) -> Result<(rewrite::Stats, lanes::LaneReport), StepError> {
    let Shared {
        path,
        plan,
        pairs,
        loader,
        cancel,
        limits,
    } = shared;
    let path = path.as_path();
    let what = format!("the database import (connection {})", lane + 1);
    let mut import = Process::spawn(import, &what, true, loader.is_some())?;
    let stdin = import
        .stdin()
        .ok_or_else(|| StepError::new("the import has no input"))?;
    let mut lane_writer = lanes::LaneWriter::new(
        CancelWriter {
            inner: stdin,
            flag: cancel.clone(),
        },
        lane,
        plan.clone(),
        cancel.clone(),
    );
    if let (Some(loader), Some(stdout)) = (loader, import.stdout()) {
        lane_writer = lane_writer.with_loads(Box::new(ClientLoads::new(
            stdout,
            loader,
            lane,
            cancel.clone(),
        )));
    }
    let mut sql = rewrite::Rewriter::new(lane_writer, pairs);
    let read = archive::read_database(path, limits, &mut sql);
    if read.is_err() && sql.get_ref().stopped() {
        // At a cut: the rest is the first connection's.
        let report = sql.get_ref().report().clone();
        drop(sql);
        import.wait()?;
        return Ok((rewrite::Stats::default(), report));
    }
    let finished = read
        .map_err(|e| e.to_string())
        .and_then(|_| sql.finish().map_err(|e| e.to_string()))
        .and_then(|(w, stats)| {
            w.finish()
                .map(|(stdin, report)| {
                    drop(stdin);
                    (stats, report)
                })
                .map_err(|e| e.to_string())
        });
    // The client's own error (a failed statement) explains a broken pipe best.
    import.wait()?;
    finished.map_err(|e| StepError::new(format!("{}: {e}", path.display())))
}

/// A client of `db` on the host that runs `sql`, whose `LOAD DATA LOCAL INFILE '/dev/stdin'`
/// reads the command's standard input. Over SSH that input may be a socket, which cannot be
/// opened again as /dev/stdin: it then goes through a pipe from cat.
pub fn row_loader_command(exec: &dyn HostExecutor, db: &str, sql: &str) -> Command {
    let script = format!(
        r#"{MYSQL}set -- "$my" --local-infile=1 --default-character-set=utf8mb4 "$1" -e "$2"
if [ -p /dev/stdin ] || [ -f /dev/stdin ]; then exec "$@"; fi
cat | "$@""#
    );
    exec.command("sh", &["-c", &script, "sh", db, sql])
}

/// Makes the command of a second client that loads rows from its standard input by running
/// the given SQL (`LOAD DATA LOCAL INFILE '/dev/stdin' ...`) in the restore's new database.
type LoaderCommand = Arc<dyn Fn(&str) -> Command + Send + Sync>;

/// A lane's connection as `lanes::Loads` needs it: the lines its client prints, and second
/// clients for rows.
struct ClientLoads {
    lines: std::sync::mpsc::Receiver<String>,
    loader: LoaderCommand,
    lane: usize,
    cancel: Arc<AtomicBool>,
}

impl ClientLoads {
    fn new(
        stdout: std::process::ChildStdout,
        loader: LoaderCommand,
        lane: usize,
        cancel: Arc<AtomicBool>,
    ) -> ClientLoads {
        let (tx, lines) = std::sync::mpsc::channel();
        // Read on the side, so that the client never waits on a full pipe.
        std::thread::spawn(move || {
            use std::io::BufRead;
            // To the end, even with nobody listening or bytes that are not UTF-8: a client
            // whose output is closed dies of SIGPIPE.
            let mut out = std::io::BufReader::new(stdout);
            let mut line = Vec::new();
            while matches!(out.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line);
                let _ = tx.send(text.trim_end_matches(['\n', '\r']).to_string());
                line.clear();
            }
        });
        ClientLoads {
            lines,
            loader,
            lane,
            cancel,
        }
    }
}

impl lanes::Loads for ClientLoads {
    fn answer(&mut self, mark: &str) -> std::io::Result<Vec<String>> {
        use std::sync::mpsc::RecvTimeoutError;
        loop {
            match self
                .lines
                .recv_timeout(std::time::Duration::from_millis(200))
            {
                Ok(line) => {
                    if let Some(fields) = line.strip_prefix(mark).and_then(|l| l.strip_prefix('\t'))
                    {
                        return Ok(fields.split('\t').map(str::to_string).collect());
                    }
                }
                Err(RecvTimeoutError::Timeout) if self.cancel.load(Ordering::SeqCst) => {
                    return Err(stopped())
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(std::io::Error::other(
                        "the database client ended before it answered",
                    ))
                }
            }
        }
    }

    fn start(&mut self, table: &[u8], sql: &str) -> std::io::Result<Box<dyn lanes::Loader>> {
        let what = format!(
            "loading the rows of `{}` (connection {})",
            String::from_utf8_lossy(table),
            self.lane + 1
        );
        let mut process = Process::spawn((self.loader)(sql), &what, true, false)
            .map_err(std::io::Error::other)?;
        let stdin = process
            .stdin()
            .ok_or_else(|| std::io::Error::other(format!("{what}: no input")))?;
        Ok(Box::new(RowLoader {
            process,
            stdin: CancelWriter {
                inner: stdin,
                flag: self.cancel.clone(),
            },
        }))
    }
}

/// A second client loading one table's rows; killed if dropped before it finished.
struct RowLoader {
    process: Process,
    stdin: CancelWriter<ChildStdin>,
}

impl Write for RowLoader {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stdin.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stdin.flush()
    }
}

impl lanes::Loader for RowLoader {
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        let RowLoader { process, stdin } = *self;
        drop(stdin);
        process.wait().map_err(std::io::Error::other)
    }
}

/// The whole archive in one pass into one connection (an Aegir 3 tarball, or a restore test).
fn read_whole(
    path: &Path,
    import: Command,
    untar: Option<Command>,
    pairs: Vec<(String, String)>,
    cancel: &Arc<AtomicBool>,
    limits: archive::Limits,
) -> Result<Loaded, StepError> {
    let mut import = Process::spawn(import, "the database import", true, false)?;
    let (untar, tar_in) = spawn_untar(untar)?;
    let sql_in = import
        .stdin()
        .ok_or_else(|| StepError::new("the import has no input"))?;
    let one = lanes::LaneWriter::new(sql_in, 0, lanes::Plan::new(1), cancel.clone());
    let sql = rewrite::Rewriter::new(one, pairs);
    let mut sink = archive::TarSink::new(
        CancelWriter {
            inner: sql,
            flag: cancel.clone(),
        },
        tar_in,
    );
    let read = archive::read(path, limits, &mut sink);
    let finished = sink.into_inner();
    // Whatever happened, the children get their end of input and are waited for; their
    // errors (a failed SQL statement) explain more than ours.
    // The children's input is closed here (the writers are dropped), or they never end.
    let (done, tar_closed) = match finished {
        Ok((sql, tar)) => {
            drop(tar);
            let done = sql.inner.finish().and_then(|(one, stats)| {
                one.finish().map(|(stdin, lane)| {
                    drop(stdin);
                    (stats, lane)
                })
            });
            (done.map_err(|e| e.to_string()), Ok(()))
        }
        Err(e) => (Err(e.to_string()), Err(e.to_string())),
    };
    let imported = import.wait();
    let extracted = untar.map(Process::wait).unwrap_or(Ok(()));
    let report = read.map_err(|e| StepError::new(format!("{}: {e}", path.display())))?;
    imported?;
    extracted?;
    tar_closed.map_err(StepError::new)?;
    let (stats, lane) = done.map_err(|e| StepError::new(format!("the database import: {e}")))?;
    Ok(Loaded {
        report,
        stats,
        lanes: vec![lane],
        took: Vec::new(),
    })
}

/// A writer that fails once the step is abandoned.
struct CancelWriter<W> {
    inner: W,
    flag: Arc<AtomicBool>,
}

impl<W: Write> Write for CancelWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.flag.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aegir3_names() {
        assert_eq!(
            aegir3_uri("/var/aegir/backups/www.example.com-20240131.235959.tar.gz").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            aegir3_uri("a-b.example-20240131.235959_2.tar.gz").as_deref(),
            Some("a-b.example")
        );
        assert_eq!(aegir3_uri("example.com.tar.gz"), None);
        assert_eq!(aegir3_uri("x-2024.tar.gz"), None);
    }

    #[test]
    fn archives_name_their_operation() {
        let n = archive_name("a.test", "20261122T100000Z", 12);
        assert!(made_by(&n, 12));
        assert!(made_by(&format!("{n}.partial"), 12));
        assert!(!made_by(&n, 2));
        assert!(!made_by(&archive_name("a.test", "x", 112), 12));
    }
}
