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

/// Drupal's side of a takeover: aegird's `sites/<uri>` is built beside Aegir 3's (which is
/// the same path in the same codebase) and swapped in with the vhost.
struct DrupalDirs {
    /// aegird's, until the swap; then Aegir 3's, until it is moved to `kept`.
    staged: String,
    /// `sites/<uri>`, the directory Drupal reads for the site.
    live: String,
    /// Where Aegir 3's `sites/<uri>` is kept once the swap is done.
    kept: String,
}

fn drupal_dirs(t: &Target) -> Option<DrupalDirs> {
    matches!(t.site.app, AppKind::Drupal | AppKind::Drupal7).then(|| DrupalDirs {
        staged: t.site.drupal_site_staged(),
        live: t.site.drupal_site_dir(),
        kept: format!("{}/site", kept_dir(t)),
    })
}

/// Shell functions the Drupal swap needs.
/// - `exchange A B` swaps two directories in one rename (renameat2 with RENAME_EXCHANGE), so
///   a request finds one or the other, never neither. coreutils has it from 9.5 (`mv
///   --exchange`); before that perl, which every Debian has, makes the system call.
/// - `move_dir FROM TO` is a rename on one filesystem; across two, it copies under a
///   temporary name first, so `TO` only ever exists whole and `FROM` goes once `TO` is there.
/// - `opcache_wait PHP` prints how long php-fpm may go on running a changed script's old
///   compiled code: opcache looks at a file again only every `revalidate_freq` seconds; or
///   `never` when `validate_timestamps` is off (it never looks again until php-fpm restarts).
const DIR_FUNCTIONS: &str = r#"exchange() {
  mv --exchange -T -- "$1" "$2" 2>/dev/null && return 0
  perl -MPOSIX -e 'my %nr = (x86_64 => 316, aarch64 => 276, riscv64 => 276, ppc64le => 357, s390x => 347, i686 => 353, armv7l => 382);
my $n = $nr{(POSIX::uname())[4]} or die "no renameat2 system call number for this machine
";
syscall($n, -100, $ARGV[0], -100, $ARGV[1], 2) == 0 or die "renameat2: $!
";' -- "$1" "$2"
}
move_dir() {
  if [ "$(stat -c %d "$1")" = "$(stat -c %d "$(dirname "$2")")" ]; then mv -T "$1" "$2"; return; fi
  rm -rf "$2.part"; cp -a "$1" "$2.part"; mv -T "$2.part" "$2"; rm -rf "$1"
}
opcache_wait() {
  fpm=$(command -v "php-fpm$1" || echo "/usr/sbin/php-fpm$1")
  info=$("$fpm" -i 2>/dev/null) || { echo 3; return 0; }
  printf '%s
' "$info" | awk -F' => ' '$1 == "opcache.enable" { on = ($2 == "On" || $2 == "1") }
$1 == "opcache.revalidate_freq" { f = $2 }
$1 == "opcache.validate_timestamps" { never = ($2 == "Off" || $2 == "0") }
END { if (!on) print 0; else if (never) print "never"; else if (f == "") print 3; else print f + 1 }'
}
# Refuses (before anything changes) a swap php-fpm would not notice: with validate_timestamps
# off it would run Aegir 3's cached settings.php, which reads its credentials from Aegir 3's
# vhost, until restarted.
opcache_check() {
  if [ "$(opcache_wait "$1")" = never ]; then
    echo "php$1-fpm runs with opcache.validate_timestamps off: after the swap it would keep running Aegir 3's cached settings.php, which stops working once Aegir 3's vhost is gone; turn validate_timestamps on (and reload php$1-fpm), then take over" >&2
    return 1
  fi
}
"#;

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
                let staged = drupal_dirs(t).map(|d| d.staged).unwrap_or_default();
                t.sh(
                    cx,
                    &format!("remove the site directory {}", s.dir()),
                    r#"rm -rf "$1.new-$3"
if [ -n "$4" ]; then
  rm -rf "$4.probe-a" "$4.probe-b"
  if [ "$(cat "$4/.aegir-env" 2>/dev/null)" = "$3" ]; then rm -rf "$4"; fi
fi
if [ "$(cat "$2" 2>/dev/null)" = "$3" ] && [ -e "$1/.aegir3/adopted" ]; then rm -rf "$1"; fi"#,
                    &[&s.dir(), &s.marker(), &s.key, &staged],
                )
                .await?;
            }
            Kind::SwapVhost(_) => {
                let alias = self.a3.alias_file.clone().unwrap_or_default();
                let dirs = drupal_dirs(t);
                let (staged, live, kept_site) = dirs
                    .as_ref()
                    .map(|d| (d.staged.as_str(), d.live.as_str(), d.kept.as_str()))
                    .unwrap_or_default();
                // Aegir 3's vhost is serving again before its sites/<uri> is back: aegird's
                // settings.php works behind either vhost, Aegir 3's only behind its own.
                let script = format!(
                    r#"set -e
{DIR_FUNCTIONS}vhost=$1 key=$2 a3_vhost=$3 kept_vhost=$4 alias=$5 kept_alias=$6
staged=$8 live=$9 kept_site=${{10}}
exec 9>"$7"
flock 9
if [ -e "$kept_vhost" ] && [ ! -e "$a3_vhost" ]; then mv -f "$kept_vhost" "$a3_vhost"; fi
if [ -n "$alias" ] && [ -e "$kept_alias" ] && [ ! -e "$alias" ]; then mv -f "$kept_alias" "$alias"; fi
if grep -qF "(aegir-env $key)" "$vhost" 2>/dev/null; then rm -f "$vhost"; fi
rm -f "$vhost.aegir-new"
nginx -t >/dev/null 2>&1 && {{ {reload}}}
if [ -n "$staged" ]; then
  rm -rf "$kept_site.part" "$staged.part"
  if [ -e "$kept_site" ]; then rm -rf "$staged"; move_dir "$kept_site" "$staged"; fi
  if [ -d "$staged" ] && [ "$(cat "$live/.aegir-env" 2>/dev/null)" = "$key" ]; then exchange "$staged" "$live"; fi
fi"#,
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
                        staged,
                        live,
                        kept_site,
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
    /// (Aegir 3's database password, new application salts) and a copy of the files. For
    /// Drupal, also aegird's `sites/<uri>` staged beside Aegir 3's with the site's own code.
    async fn adopt(&self, cx: &StepContext) -> Result<Value, StepError> {
        let t = &self.t;
        let s = &t.site;
        let dirs = drupal_dirs(t);
        if let Some(d) = &dirs {
            if d.live.trim_end_matches('/') != self.a3.site_path.trim_end_matches('/') {
                return Err(StepError::new(format!(
                    "Aegir 3 keeps {} in {}, but release {}'s sites directory would put it in {}: run `aegir release verify {}` so aegird reads the codebase's docroot",
                    s.uri, self.a3.site_path, t.release, d.live, t.release
                )));
            }
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
        let staged = dirs.as_ref().map(|d| d.staged.as_str()).unwrap_or_default();
        let script = format!(
            r#"set -e
{DIR_FUNCTIONS}dir=$1 marker=$2 key=$3 a3=$4 vhost=$5 staged=$6 php=$7
adopted=
if [ -e "$dir" ]; then
  if [ "$(cat "$marker" 2>/dev/null)" = "$key" ] && [ -e "$dir/.aegir3/adopted" ]; then adopted=1
  else echo "$dir already exists and belongs to another site" >&2; exit 1; fi
fi
[ -d "$a3" ] || {{ echo "Aegir 3's site directory $a3 is missing" >&2; exit 1; }}
if [ -e "$vhost" ] && ! grep -qF "(aegir-env $key)" "$vhost"; then
  echo "$vhost already exists and is not aegird's vhost for this site" >&2; exit 1
fi
if [ -n "$staged" ]; then
  opcache_check "$php"
  rm -rf "$staged.probe-a" "$staged.probe-b"
  mkdir "$staged.probe-a" "$staged.probe-b"
  if ! err=$(exchange "$staged.probe-a" "$staged.probe-b" 2>&1); then
    rm -rf "$staged.probe-a" "$staged.probe-b"
    echo "$(dirname "$staged") cannot swap two directories in one rename ($err): Drupal would be left without its settings.php for a moment" >&2
    exit 1
  fi
  rm -rf "$staged.probe-a" "$staged.probe-b"
  if [ -d "$a3/private/files/config" ] && [ -d "$a3/private/config" ]; then
    echo "$a3 has both private/config and private/files/config: aegird keeps private files and configuration in one directory, $dir/private; move one of them" >&2
    exit 1
  fi
fi
if [ -z "$adopted" ]; then
  tmp="$dir.new-$key"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$dir")"
  mkdir -m 0755 "$tmp" "$tmp/.aegir3"
  (umask 077; cat > "$tmp/secrets.json")
  # copy_dir copies what a directory holds, so one that Aegir 3 keeps elsewhere through a
  # symlink (files on another disk) becomes a directory of aegird's, not a second link.
  copy_dir() {{ mkdir -p "$2"; cp -a "$1/." "$2/"; }}
  if [ -d "$a3/files" ]; then copy_dir "$a3/files" "$tmp/files"; fi
  if [ -z "$staged" ]; then
    if [ -d "$a3/private" ]; then copy_dir "$a3/private" "$tmp/private"; fi
  else
    # Aegir 3 keeps Drupal's private files in private/files, its configuration in
    # private/config and temporary files in private/temp; aegird's private directory
    # holds the first two, as settings.php tells Drupal.
    mkdir "$tmp/private"
    if [ -d "$a3/private/files" ]; then cp -a "$a3/private/files/." "$tmp/private/"; fi
    if [ -d "$a3/private/config" ]; then copy_dir "$a3/private/config" "$tmp/private/config"; fi
  fi
  printf '%s\n' "$a3" > "$tmp/.aegir3/adopted"
  printf '%s\n' "$key" > "$tmp/.aegir-env"
  mv -T "$tmp" "$dir"
else
  cat > /dev/null
fi
if [ -n "$staged" ]; then
  # The site's own code (modules, themes, libraries) and local.settings.php; not Aegir 3's
  # settings.php and drushrc.php, nor the files, which are in $dir now.
  if [ -e "$staged" ] && [ "$(cat "$staged/.aegir-env" 2>/dev/null)" != "$key" ]; then
    echo "$staged already exists and is not this site's" >&2; exit 1
  fi
  rm -rf "$staged"
  mkdir -m 0755 "$staged"
  printf '%s\n' "$key" > "$staged/.aegir-env"
  # For the few seconds php-fpm may still run Aegir 3's settings.php from its cache after
  # the swap, its private paths lead to aegird's directories; the swap removes these links.
  mkdir "$staged/private"
  ln -s "$dir/private" "$staged/private/files"
  ln -s "$dir/private/tmp" "$staged/private/temp"
  ln -s "$dir/private/config" "$staged/private/config"
  find "$a3" -mindepth 1 -maxdepth 1 ! -name settings.php ! -name drushrc.php ! -name files \
    ! -name private ! -name database.sql ! -name .aegir-env -exec cp -a -t "$staged" {{}} +
fi"#
        );
        t.sh_input(
            cx,
            &format!("make {} from Aegir 3's {}", s.dir(), self.a3.site_path),
            &script,
            &[
                &s.dir(),
                &s.marker(),
                &s.key,
                &self.a3.site_path,
                &s.vhost_file(),
                staged,
                &s.php,
            ],
            secrets,
        )
        .await?;
        Ok(
            json!({ "dir": s.dir(), "from": self.a3.site_path, "drupal_staged": dirs.map(|d| d.staged) }),
        )
    }

    /// aegird's vhost in, Aegir 3's out (kept in the site directory), one `nginx -t` and one
    /// graceful reload: requests in flight finish on the old workers, new ones get the new
    /// configuration, none fails. The site's drush alias goes with it, so Aegir 3 can no
    /// longer run tasks on the site. For Drupal, aegird's `sites/<uri>` takes the place of
    /// Aegir 3's in the same locked script, before the reload.
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
        let dirs = drupal_dirs(t);
        let (staged, live, kept_site) = dirs
            .as_ref()
            .map(|d| (d.staged.as_str(), d.live.as_str(), d.kept.as_str()))
            .unwrap_or_default();
        // The order matters for Drupal: aegird's settings.php works behind either vhost, but
        // Aegir 3's reads the database credentials from its own vhost's fastcgi parameters.
        // So the directories swap first, and the new vhost is put in place (not only loaded)
        // once php-fpm can no longer be running Aegir 3's settings.php from its cache: a
        // reload by anyone else in between (another site's operation, an admin) must not pair
        // aegird's vhost with Aegir 3's settings.php. It did: the site answered 500 for about
        // two seconds when another test reloaded nginx during the wait.
        let script = format!(
            r#"set -e
{DIR_FUNCTIONS}vhost=$1 new=$2 a3_vhost=$4 kept_vhost=$5 alias=$6 kept_alias=$7
staged=$9 live=${{10}} kept_site=${{11}} php=${{12}} a3=${{13}} dir=${{14}}
if [ -n "$staged" ]; then opcache_check "$php"; oc_wait=$(opcache_wait "$php"); fi
# What the site wrote into Aegir 3's directories since the adopt step copied them (newer or
# new files; a file deleted meanwhile stays in aegird's copy). For WordPress uploads have
# gone to aegird's directory since the uploads-path step; for Drupal they go there from the
# exchange on.
if [ -d "$a3/files" ]; then cp -a -u "$a3/files/." "$dir/files/"; fi
if [ -z "$staged" ]; then
  if [ -d "$a3/private" ]; then cp -a -u "$a3/private/." "$dir/private/"; fi
else
  if [ -d "$a3/private/files" ]; then cp -a -u "$a3/private/files/." "$dir/private/"; fi
  if [ -d "$a3/private/config" ]; then mkdir -p "$dir/private/config"; cp -a -u "$a3/private/config/." "$dir/private/config/"; fi
fi
exec 9>"$8"
flock 9
if [ -n "$staged" ]; then
  if ! err=$(exchange "$staged" "$live" 2>&1); then
    echo "could not swap $staged and $live, nothing was changed: $err" >&2
    exit 1
  fi
  sleep "$oc_wait"
fi
if [ -e "$a3_vhost" ]; then mv -f "$a3_vhost" "$kept_vhost"; fi
if [ -n "$alias" ] && [ -e "$alias" ]; then mv -f "$alias" "$kept_alias"; fi
mv -f "$new" "$vhost"
back() {{
  rm -f "$vhost"
  if [ -e "$kept_vhost" ] && [ ! -e "$a3_vhost" ]; then mv -f "$kept_vhost" "$a3_vhost"; fi
  if [ -n "$alias" ] && [ -e "$kept_alias" ] && [ ! -e "$alias" ]; then mv -f "$kept_alias" "$alias"; fi
}}
if ! out=$(nginx -t 2>&1); then
  back
  if [ -n "$staged" ]; then exchange "$staged" "$live"; fi
  echo "nginx -t refused the new configuration, Aegir 3's vhost is back: $out" >&2
  exit 1
fi
{reload}if [ -n "$staged" ]; then
  rm -rf "$live/private" "$kept_site.part"
  move_dir "$staged" "$kept_site"
fi"#,
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
                staged,
                live,
                kept_site,
                &s.php,
                &self.a3.site_path,
                &s.dir(),
            ],
        )
        .await?;
        Ok(json!({
            "vhost": s.vhost_file(),
            "aegir3_vhost_kept": format!("{kept}/vhost"),
            "aegir3_site_kept": dirs.map(|d| d.kept),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::DIR_FUNCTIONS;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    /// Runs `call` after DIR_FUNCTIONS with a stand-in `php-fpm9.9` on PATH printing `info`
    /// as `php-fpm -i` does (None: no such binary). Stdout, stderr, success.
    fn with_fpm(info: Option<&str>, call: &str) -> (String, String, bool) {
        let bin = tempfile::tempdir().unwrap();
        if let Some(info) = info {
            let fpm = bin.path().join("php-fpm9.9");
            std::fs::write(&fpm, format!("#!/bin/sh\ncat <<'INFO'\n{info}\nINFO\n")).unwrap();
            std::fs::set_permissions(&fpm, PermissionsExt::from_mode(0o755)).unwrap();
        }
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{DIR_FUNCTIONS}{call}"))
            .env("PATH", path)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
            out.status.success(),
        )
    }

    #[test]
    fn opcache_wait_reads_php_fpm_settings() {
        let info = |enable: &str, validate: &str, freq: &str| {
            format!(
                "opcache.enable => {enable} => {enable}\nopcache.revalidate_freq => {freq} => {freq}\nopcache.validate_timestamps => {validate} => {validate}"
            )
        };
        let wait = |info: Option<&str>| with_fpm(info, "opcache_wait 9.9").0;
        assert_eq!(wait(Some(&info("On", "On", "2"))), "3");
        assert_eq!(wait(Some(&info("On", "On", "60"))), "61");
        assert_eq!(wait(Some(&info("Off", "Off", "2"))), "0");
        assert_eq!(wait(Some(&info("On", "Off", "2"))), "never");
        assert_eq!(wait(Some("opcache.enable => On => On")), "3");
        // Unreadable settings: the default revalidate_freq (2) and a second more.
        assert_eq!(wait(None), "3");
    }

    #[test]
    fn a_cache_that_never_revalidates_is_refused() {
        let never = "opcache.enable => On => On\nopcache.validate_timestamps => Off => Off";
        let (_, err, ok) = with_fpm(Some(never), "opcache_check 9.9");
        assert!(!ok);
        assert!(
            err.contains("php9.9-fpm") && err.contains("validate_timestamps"),
            "{err}"
        );
        let fine = "opcache.enable => On => On\nopcache.validate_timestamps => On => On";
        assert!(with_fpm(Some(fine), "opcache_check 9.9").2);
    }
}
