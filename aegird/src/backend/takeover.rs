//! Sites adopted from Aegir 3: verify proves aegird can manage one where Aegir 3 keeps it
//! (credentials, files, vhost) without changing anything; takeover moves it under aegird's
//! own layout and vhost, with nginx reloaded once, so no request fails.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::env::Target;
use super::layout;
use super::nginx::{self, Serving};
use crate::engine::{Plan, Step, StepContext, StepError};
use crate::import::alias::{read_site_drushrc, SiteDrushrc};
use crate::model::{AppKind, Management};

/// Where Aegir 3 keeps an adopted site, as the import recorded it (`origin.aegir3`).
#[derive(Debug, Clone, Deserialize)]
pub struct Aegir3Site {
    pub site_path: String,
    pub drushrc: String,
    pub vhost: String,
    /// The site's drush alias: while it is there, Aegir 3 can run tasks on the site.
    #[serde(default)]
    pub alias_file: Option<String>,
}

impl Aegir3Site {
    pub fn from_origin(origin: Option<&Value>) -> Option<Aegir3Site> {
        serde_json::from_value(origin?.get("aegir3")?.clone()).ok()
    }
}

/// What Aegir 3's files become once taken over: kept in the site directory, so an undo (or
/// an admin) can put them back.
fn kept_dir(t: &Target) -> String {
    format!("{}/.aegir3", t.site.dir())
}

/// A MySQL option file for the site's own account: how its password reaches the client
/// (on stdin, never in an argument).
fn client_options(rc: &SiteDrushrc) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "[client]\nuser=\"{}\"\npassword=\"{}\"\nhost=\"{}\"\nport={}\n",
        q(&rc.db_user),
        q(rc.db_password.expose()),
        q(&rc.db_host),
        if rc.db_port == 0 { 3306 } else { rc.db_port }
    )
}

async fn read_drushrc(t: &Target, cx: &StepContext, path: &str) -> Result<SiteDrushrc, StepError> {
    let text = t
        .sh(
            cx,
            &format!("read the database credentials in {path}"),
            r#"cat "$1""#,
            &[path],
        )
        .await?;
    read_site_drushrc(&text).map_err(|e| StepError::new(format!("{path}: {e}")))
}

/// `env.verify` of a site Aegir 3 still manages: one read-only step.
pub fn verify_plan(t: Arc<Target>, a3: Aegir3Site) -> Plan {
    Plan {
        steps: vec![Arc::new(TakeoverStep {
            kind: Kind::Inspect,
            t,
            a3,
        })],
        resumable: true,
        on_failure: None,
    }
}

/// The steps of `env.takeover` that are its own; `env.rs` puts aegird's usual database,
/// files and settings steps between [`adopt`] and [`swap_vhost`].
pub fn adopt(t: Arc<Target>, a3: Aegir3Site) -> Arc<dyn Step> {
    Arc::new(TakeoverStep {
        kind: Kind::Adopt,
        t,
        a3,
    })
}

pub fn swap_vhost(t: Arc<Target>, a3: Aegir3Site, serving: Serving) -> Arc<dyn Step> {
    Arc::new(TakeoverStep {
        kind: Kind::SwapVhost(serving),
        t,
        a3,
    })
}

/// WordPress keeps its uploads directory as an absolute path in the database: it follows
/// the files to aegird's directory.
pub fn uploads(t: Arc<Target>, a3: Aegir3Site) -> Arc<dyn Step> {
    Arc::new(TakeoverStep {
        kind: Kind::Uploads,
        t,
        a3,
    })
}

pub fn record(t: Arc<Target>, a3: Aegir3Site) -> Arc<dyn Step> {
    Arc::new(TakeoverStep {
        kind: Kind::Record,
        t,
        a3,
    })
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Inspect,
    Adopt,
    Uploads,
    SwapVhost(Serving),
    Record,
}

struct TakeoverStep {
    kind: Kind,
    t: Arc<Target>,
    a3: Aegir3Site,
}

#[async_trait]
impl Step for TakeoverStep {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Inspect => "inspect-aegir3-site",
            Kind::Adopt => "adopt-site-directory",
            Kind::Uploads => "uploads-path",
            Kind::SwapVhost(_) => "swap-vhost",
            Kind::Record => "record-takeover",
        }
    }

    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        match self.kind {
            Kind::Inspect => self.inspect(cx).await,
            Kind::Adopt => self.adopt(cx).await,
            Kind::Uploads => {
                let from = format!("{}/files", self.a3.site_path);
                let to = self.t.site.files_dir();
                let out = self.repath(cx, &from, &to).await?;
                Ok(json!({ "upload_path": to, "result": out }))
            }
            Kind::SwapVhost(serving) => self.swap(cx, serving).await,
            Kind::Record => {
                let id = self.t.env_id;
                if !cx
                    .store()
                    .set_environment_managed_by(
                        id,
                        Management::Aegir3,
                        Management::Aegird,
                        cx.now(),
                    )
                    .await?
                {
                    return Err(StepError::new(format!(
                        "environment {} is no longer Aegir 3's; nothing recorded",
                        self.t.site.uri
                    )));
                }
                cx.info(format!(
                    "{} is aegird's now: Aegir 3 can no longer run tasks on it (its alias is kept in {})",
                    self.t.site.uri,
                    kept_dir(&self.t)
                ))
                .await;
                Ok(json!({ "managed_by": Management::Aegird }))
            }
        }
    }

    async fn undo(&self, cx: &StepContext) -> Result<(), StepError> {
        let t = &self.t;
        let s = &t.site;
        match self.kind {
            Kind::Inspect => {}
            Kind::Uploads => {
                let from = self.t.site.files_dir();
                let to = format!("{}/files", self.a3.site_path);
                self.repath(cx, &from, &to).await?;
            }
            // Only a directory this takeover made (its marker names the key) goes.
            Kind::Adopt => {
                t.sh(
                    cx,
                    &format!("remove the site directory {}", s.dir()),
                    r#"rm -rf "$1.new-$3"
if [ "$(cat "$2" 2>/dev/null)" = "$3" ] && [ -e "$1/.aegir3/adopted" ]; then rm -rf "$1"; fi"#,
                    &[&s.dir(), &s.marker(), &s.key],
                )
                .await?;
            }
            Kind::SwapVhost(_) => {
                let alias = self.a3.alias_file.clone().unwrap_or_default();
                let script = format!(
                    r#"set -e
exec 9>"$7"
flock 9
if [ -e "$4" ] && [ ! -e "$3" ]; then mv -f "$4" "$3"; fi
if [ -n "$5" ] && [ -e "$6" ] && [ ! -e "$5" ]; then mv -f "$6" "$5"; fi
if grep -qF "(aegir-env $2)" "$1" 2>/dev/null; then rm -f "$1"; fi
rm -f "$1.aegir-new"
nginx -t >/dev/null 2>&1 && {{ {reload}}}"#,
                    reload = nginx::RELOAD
                );
                t.sh(
                    cx,
                    &format!("give {} back to Aegir 3's vhost", s.uri),
                    &script,
                    &[
                        &s.vhost_file(),
                        &s.key,
                        &self.a3.vhost,
                        &format!("{}/vhost", kept_dir(t)),
                        &alias,
                        &format!("{}/alias.drushrc.php", kept_dir(t)),
                        layout::NGINX_LOCK,
                    ],
                )
                .await?;
            }
            Kind::Record => {
                cx.store()
                    .set_environment_managed_by(
                        t.env_id,
                        Management::Aegird,
                        Management::Aegir3,
                        cx.now(),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

impl TakeoverStep {
    async fn repath(&self, cx: &StepContext, from: &str, to: &str) -> Result<String, StepError> {
        let s = &self.t.site;
        if s.app != AppKind::Wordpress {
            return Ok("not WordPress".into());
        }
        let out = self
            .t
            .wp_php(
                cx,
                &format!("point WordPress's uploads at {to}"),
                crate::apps::wordpress::repath_uploads_script(),
                &[from, to],
            )
            .await?;
        Ok(out.trim().to_string())
    }

    /// Reads, never writes: the credentials Aegir 3 gave the site open its database, its
    /// directory and files directory are there, and its vhost names it.
    async fn inspect(&self, cx: &StepContext) -> Result<Value, StepError> {
        let t = &self.t;
        let rc = read_drushrc(t, cx, &self.a3.drushrc).await?;
        let tables = t
            .sh_input(
                cx,
                &format!("log in to database {} as {}", rc.db_name, rc.db_user),
                &format!(
                    r#"set -e
{mysql}"$my" --defaults-extra-file=/dev/stdin -N -B -e "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()" "$1""#,
                    mysql = super::env::MYSQL
                ),
                &[&rc.db_name],
                client_options(&rc).into_bytes(),
            )
            .await?;
        let tables: i64 = tables.trim().parse().unwrap_or(0);
        if tables == 0 {
            return Err(StepError::new(format!(
                "database {} has no tables: the site's content is not where its drushrc.php says",
                rc.db_name
            )));
        }
        t.sh(
            cx,
            &format!(
                "find the site directory {} and its vhost {}",
                self.a3.site_path, self.a3.vhost
            ),
            r#"[ -d "$1" ] || { echo "the site directory $1 is missing" >&2; exit 1; }
[ -d "$1/files" ] || { echo "$1/files is missing" >&2; exit 1; }
[ -f "$2" ] || { echo "the vhost $2 is missing" >&2; exit 1; }
grep -qF "$3" "$2" || { echo "the vhost $2 does not name $3" >&2; exit 1; }"#,
            &[&self.a3.site_path, &self.a3.vhost, &t.site.uri],
        )
        .await?;
        cx.info(format!(
            "{}: database {} answers with {tables} tables to its own account; files in {}; served by {}",
            t.site.uri, rc.db_name, self.a3.site_path, self.a3.vhost
        ))
        .await;
        Ok(json!({
            "database": rc.db_name,
            "tables": tables,
            "site_path": self.a3.site_path,
            "vhost": self.a3.vhost,
        }))
    }

    /// aegird's site directory, made from Aegir 3's in one rename: the marker, the secrets
    /// (Aegir 3's database password, new application salts) and a copy of the files.
    async fn adopt(&self, cx: &StepContext) -> Result<Value, StepError> {
        let t = &self.t;
        let s = &t.site;
        if !matches!(s.app, AppKind::Wordpress | AppKind::Php) {
            return Err(StepError::new(format!(
                "taking over a {} site is not supported yet: aegird keeps Drupal's sites/<uri> in the release, where Aegir 3's still is",
                s.app
            )));
        }
        let rc = read_drushrc(t, cx, &self.a3.drushrc).await?;
        if rc.db_user != s.key || rc.db_name != s.key {
            return Err(StepError::new(format!(
                "{} uses database {} as user {}, but aegird knows it as {}: aegird names a site's database user after its database, as Aegir 3 does when it creates one",
                s.uri, rc.db_name, rc.db_user, s.key
            )));
        }
        if !matches!(rc.db_host.as_str(), "localhost" | "127.0.0.1" | "::1") {
            return Err(StepError::new(format!(
                "{}'s database is on {}: aegird takes over sites whose database is on their own server",
                s.uri, rc.db_host
            )));
        }
        let secrets = super::env::Secrets::with_password(rc.db_password.expose().to_string());
        let secrets = serde_json::to_vec(&secrets).expect("secrets serialise");
        t.sh_input(
            cx,
            &format!("make {} from Aegir 3's {}", s.dir(), self.a3.site_path),
            r#"set -e
if [ -e "$1" ]; then
  if [ "$(cat "$2" 2>/dev/null)" = "$3" ] && [ -e "$1/.aegir3/adopted" ]; then exit 0; fi
  echo "$1 already exists and belongs to another site" >&2; exit 1
fi
[ -d "$4" ] || { echo "Aegir 3's site directory $4 is missing" >&2; exit 1; }
if [ -e "$5" ] && ! grep -qF "(aegir-env $3)" "$5"; then
  echo "$5 already exists and is not aegird's vhost for this site" >&2; exit 1
fi
tmp="$1.new-$3"
rm -rf "$tmp"
mkdir -p "$(dirname "$1")"
mkdir -m 0755 "$tmp" "$tmp/.aegir3"
(umask 077; cat > "$tmp/secrets.json")
for d in files private; do
  if [ -d "$4/$d" ]; then cp -a "$4/$d" "$tmp/$d"; fi
done
printf '%s\n' "$4" > "$tmp/.aegir3/adopted"
printf '%s\n' "$3" > "$tmp/.aegir-env"
mv -T "$tmp" "$1""#,
            &[
                &s.dir(),
                &s.marker(),
                &s.key,
                &self.a3.site_path,
                &s.vhost_file(),
            ],
            secrets,
        )
        .await?;
        Ok(json!({ "dir": s.dir(), "from": self.a3.site_path }))
    }

    /// aegird's vhost in, Aegir 3's out (kept in the site directory), one `nginx -t` and one
    /// graceful reload: requests in flight finish on the old workers, new ones get the new
    /// configuration, none fails. The site's drush alias goes with it, so Aegir 3 can no
    /// longer run tasks on the site.
    async fn swap(&self, cx: &StepContext, serving: Serving) -> Result<Value, StepError> {
        let t = &self.t;
        let s = &t.site;
        let pool = layout::pool_socket(&s.php);
        t.sh(
            cx,
            "check aegird's nginx include and php-fpm pool",
            r#"[ -e "$1" ] || { echo "$1 is missing: run aegir server verify" >&2; exit 1; }
[ -S "$2" ] || { echo "php-fpm pool socket $2 is missing: run aegir server verify" >&2; exit 1; }"#,
            &[layout::NGINX_INCLUDE, &pool],
        )
        .await?;
        let new = format!("{}.aegir-new", s.vhost_file());
        super::shell::write(cx, t.exec.as_ref(), &new, &nginx::vhost(s, serving), 0o644).await?;
        let alias = self.a3.alias_file.clone().unwrap_or_default();
        let script = format!(
            r#"set -e
exec 9>"$8"
flock 9
if [ -e "$4" ]; then mv -f "$4" "$5"; fi
if [ -n "$6" ] && [ -e "$6" ]; then mv -f "$6" "$7"; fi
mv -f "$2" "$1"
if ! out=$(nginx -t 2>&1); then
  rm -f "$1"
  if [ -e "$5" ] && [ ! -e "$4" ]; then mv -f "$5" "$4"; fi
  if [ -n "$6" ] && [ -e "$7" ] && [ ! -e "$6" ]; then mv -f "$7" "$6"; fi
  echo "nginx -t refused the new configuration, Aegir 3's vhost is back: $out" >&2
  exit 1
fi
{reload}"#,
            reload = nginx::RELOAD
        );
        let kept = kept_dir(t);
        t.sh(
            cx,
            &format!(
                "replace Aegir 3's vhost {} with {}",
                self.a3.vhost,
                s.vhost_file()
            ),
            &script,
            &[
                &s.vhost_file(),
                &new,
                &s.key,
                &self.a3.vhost,
                &format!("{kept}/vhost"),
                &alias,
                &format!("{kept}/alias.drushrc.php"),
                layout::NGINX_LOCK,
            ],
        )
        .await?;
        Ok(json!({ "vhost": s.vhost_file(), "aegir3_vhost_kept": format!("{kept}/vhost") }))
    }
}
