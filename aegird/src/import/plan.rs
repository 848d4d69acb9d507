//! What an Aegir 3 installation becomes in aegird: a pure mapping from what was read (the
//! hostmaster snapshot, the alias files, the sites' drushrc.php) to the records to write.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use super::alias::{Context, FileError, PlatformAlias, ServerAlias, SiteAlias, SiteDrushrc};
use super::hostmaster::{self, ObjectStatus, SiteStatus, Snapshot, TaskStatus};
use crate::apps::Package;
use crate::backup::retention::Policy;
use crate::model::{
    AppKind, EnvironmentStatus, HttpsMode, ItemKind, LogLevel, OperationStatus, Transport,
};

/// Everything read from one Aegir 3 installation, before any mapping.
#[derive(Debug)]
pub struct Source {
    /// Names the installation, so two imports of the same one are recognised as such.
    pub id: String,
    /// The Aegir root as given (`--aegir-root`); Aegir 3's own paths are rebased onto it.
    pub root: PathBuf,
    pub snapshot: Snapshot,
    pub contexts: Vec<(PathBuf, Context)>,
    pub file_errors: Vec<FileError>,
    /// Per live site uri: its `sites/<uri>/drushrc.php`, or why it could not be read.
    pub drushrc: BTreeMap<String, Result<SiteDrushrc, String>>,
}

/// Names an Aegir 3 object within one installation: its kind and nid (or file path).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Ref {
    pub kind: ItemKind,
    pub key: String,
}

impl Ref {
    fn new(kind: ItemKind, key: impl ToString) -> Ref {
        Ref {
            kind,
            key: key.to_string(),
        }
    }
}

/// One Aegir 3 object and what should become of it.
#[derive(Debug)]
pub struct Planned {
    pub r#ref: Ref,
    /// How a person knows it: "www.example.com", "Drupal 10.2.6", "task 31 (backup)".
    pub label: String,
    pub what: What,
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub enum What {
    Record(Box<Record>),
    Skip(String),
    Fail(String),
}

/// The record an object becomes. References to other objects are [`Ref`]s, resolved to
/// local ids when the plan is applied; the serialised record (without secrets) is what a
/// later import compares against.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Server(ServerRec),
    Project(ProjectRec),
    Release(ReleaseRec),
    Environment(EnvRec),
    Backup(BackupRec),
    Task(TaskRec),
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerRec {
    pub name: String,
    pub transport: Transport,
    pub ssh_user: Option<String>,
    pub ssh_host: Option<String>,
    pub ssh_port: Option<u16>,
    pub origin: serde_json::Value,
    pub db_admin_user: Option<String>,
    /// So a changed password shows as a change, without the password being kept.
    pub db_admin_password_sha256: Option<String>,
    #[serde(skip)]
    pub db_admin: Option<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectRec {
    pub name: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseRec {
    pub name: String,
    pub project: Ref,
    pub server: Ref,
    pub path: String,
    pub app_kind: Option<AppKind>,
    pub app_version: Option<String>,
    pub packages: Vec<Package>,
    pub locked: bool,
    pub origin: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvRec {
    pub uri: String,
    pub release: Ref,
    pub server: Ref,
    pub db_server: Option<Ref>,
    pub status: EnvironmentStatus,
    pub https: HttpsMode,
    pub aliases: Vec<String>,
    pub redirect_aliases: bool,
    pub db_name: Option<String>,
    pub client: Option<String>,
    pub backup_interval: Option<i64>,
    pub retention: Option<Policy>,
    pub origin: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupRec {
    pub environment: Ref,
    pub path: String,
    pub size: i64,
    pub missing: bool,
    pub description: String,
    /// Milliseconds.
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskRec {
    pub target: Ref,
    pub target_name: String,
    pub status: OperationStatus,
    pub error: Option<String>,
    pub params: serde_json::Value,
    /// Milliseconds.
    pub started_at: i64,
    pub finished_at: i64,
    /// The newest log line imported: a later import appends only newer ones.
    pub last_log: i64,
    #[serde(skip)]
    pub logs: Vec<LogRec>,
}

#[derive(Debug, Clone)]
pub struct LogRec {
    pub lid: i64,
    pub ts: i64,
    pub level: LogLevel,
    pub message: String,
}

/// The plan: every object in dependency order (servers, projects, releases, environments,
/// backups, tasks), with notes on installation-wide settings.
#[derive(Debug, Default)]
pub struct Plan {
    pub items: Vec<Planned>,
    pub notes: Vec<String>,
}

/// Kept "for ever" where Aegir 3's backup GC keeps a tier without end: 100 years of it.
const UNBOUNDED_DAYS: u32 = 36_500;

/// Task types Aegir 3 and its common contrib modules run; others are kept as history too,
/// with a warning.
const KNOWN_TASKS: &[&str] = &[
    "verify",
    "install",
    "import",
    "backup",
    "restore",
    "clone",
    "migrate",
    "disable",
    "enable",
    "delete",
    "login-reset",
    "backup-delete",
    "lock",
    "unlock",
    "flush_cache",
    "rebuild_registry",
    "run_cron",
    "update",
    "flush_drush_cache",
    "http_restart",
    "sync",
    "git-pull",
    "git-checkout",
];

const KNOWN_SERVICES: &[(&str, &[&str])] = &[
    (
        "http",
        &[
            "nginx",
            "apache",
            "https_nginx",
            "https_apache",
            "nginx_ssl",
            "apache_ssl",
        ],
    ),
    ("db", &["mysql"]),
    ("Certificate", &["LetsEncrypt", "SelfSigned"]),
];

struct Ctx<'a> {
    src: &'a Source,
    exists: &'a dyn Fn(&Path) -> bool,
    /// Aegir 3's own root, as its paths spell it.
    old_root: String,
    servers: HashMap<&'a str, &'a ServerAlias>,
    platforms: HashMap<&'a str, &'a PlatformAlias>,
    sites: HashMap<&'a str, &'a SiteAlias>,
    /// Where each alias was read from.
    alias_files: HashMap<&'a str, &'a Path>,
}

impl Ctx<'_> {
    /// An Aegir 3 path as it is seen from here (under `--aegir-root`).
    fn rebase(&self, path: &str) -> String {
        super::source::rebase(&self.old_root, &self.src.root, path)
    }

    fn exists(&self, path: &str) -> bool {
        (self.exists)(Path::new(path))
    }
}

/// `title` as a release or project name: letters, digits, '.', '_' and '-', lower case.
pub fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.trim().chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut out: String = out.chars().take(64).collect();
    while out.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.pop();
    }
    if out.is_empty() {
        "platform".to_string()
    } else {
        out
    }
}

/// Aegir 3's backup GC rules as a retention policy. Below the first rule's age Aegir 3 keeps
/// every backup (`last` covers that span at the backup interval); each rule keeps one backup
/// per day, week or month up to the next rule's age, and the last rule for ever.
pub fn retention_from_gc(gc: &hostmaster::BackupGc, interval: i64) -> Policy {
    let mut p = Policy {
        last: 0,
        daily: 0,
        weekly: 0,
        monthly: 0,
    };
    let Some(first) = gc.rules.first() else {
        return p;
    };
    let interval = interval.max(3600);
    p.last = u32::try_from((first.older_than + interval - 1) / interval).unwrap_or(u32::MAX);
    for (i, rule) in gc.rules.iter().enumerate() {
        let until_days = gc
            .rules
            .get(i + 1)
            .map(|next| u32::try_from(next.older_than / 86_400).unwrap_or(UNBOUNDED_DAYS))
            .unwrap_or(UNBOUNDED_DAYS);
        let (tier, days_per) = if rule.keep_per <= 86_400 {
            (&mut p.daily, 1)
        } else if rule.keep_per <= 7 * 86_400 {
            (&mut p.weekly, 7)
        } else {
            (&mut p.monthly, 30)
        };
        *tier = (*tier).max(until_days.div_ceil(days_per));
    }
    p
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(s.as_bytes()))
}

/// Maps the whole installation. `exists` says whether a path is there (backups, vhosts,
/// certificates), so tests can run on a laid-out fixture.
pub fn plan(src: &Source, exists: &dyn Fn(&Path) -> bool) -> Plan {
    let mut cx = Ctx {
        src,
        exists,
        old_root: super::source::aegir3_root(&src.contexts),
        servers: HashMap::new(),
        platforms: HashMap::new(),
        sites: HashMap::new(),
        alias_files: HashMap::new(),
    };
    for (path, c) in &src.contexts {
        cx.alias_files.insert(c.name(), path.as_path());
        match c {
            Context::Server(s) => {
                cx.servers.insert(s.name.as_str(), s);
            }
            Context::Platform(p) => {
                cx.platforms.insert(p.name.as_str(), p);
            }
            Context::Site(s) => {
                cx.sites.insert(s.name.as_str(), s);
            }
        }
    }
    let mut plan = Plan::default();
    let snap = &src.snapshot;

    for (path, err) in &src.file_errors {
        plan.items.push(Planned {
            r#ref: Ref::new(ItemKind::File, path.display()),
            label: path.display().to_string(),
            what: What::Fail(format!(
                "{err}; what it describes is read from the hostmaster database alone"
            )),
            warnings: Vec::new(),
        });
    }

    let variable_note = |plan: &mut Plan, what: &str, e: hostmaster::HostmasterError| {
        plan.notes
            .push(format!("{what}: {e}; Aegir 3's default is assumed"));
    };
    let hostmaster_site = snap.hostmaster_site_nid().unwrap_or_else(|e| {
        variable_note(&mut plan, "aegir_hostmaster_site_nid", e);
        None
    });
    let own_platform = snap.own_platform_nid().unwrap_or_else(|e| {
        variable_note(&mut plan, "hosting_own_platform", e);
        None
    });

    // Servers.
    let mut server_names: HashMap<i64, String> = HashMap::new();
    for s in &snap.servers {
        let label = s.title.clone();
        let r = Ref::new(ItemKind::Server, s.nid);
        if s.state() == Some(ObjectStatus::Deleted) {
            plan.items.push(Planned {
                r#ref: r,
                label,
                what: What::Skip("deleted in Aegir 3".into()),
                warnings: Vec::new(),
            });
            continue;
        }
        let name = match crate::model::validate::hostname("server", &s.title) {
            Ok(n) => n,
            Err(e) => {
                plan.items.push(Planned {
                    r#ref: r,
                    label,
                    what: What::Fail(format!("its title is not a host name: {e}")),
                    warnings: Vec::new(),
                });
                continue;
            }
        };
        server_names.insert(s.nid, name.clone());
        let mut warnings = Vec::new();
        for svc in &s.services {
            let known = KNOWN_SERVICES
                .iter()
                .any(|(k, types)| *k == svc.service && types.contains(&svc.service_type.as_str()));
            if !known {
                warnings.push(format!(
                    "service {} of type {} is not supported by aegird; recorded, not used",
                    svc.service, svc.service_type
                ));
            }
        }
        let context = s.context.as_deref();
        let alias = context.and_then(|c| cx.servers.get(c)).copied();
        let is_master = context == Some("server_master");
        let (transport, ssh_user, ssh_host, ssh_port) = if is_master {
            (Transport::Local, None, None, None)
        } else {
            let host = alias
                .map(|a| a.remote_host.clone())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| name.clone());
            let user = alias
                .map(|a| a.script_user.clone())
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "aegir".into());
            warnings.push(format!(
                "reached over SSH as {user}@{host}; `aegir server verify {name}` pins its host key"
            ));
            (Transport::Ssh, Some(user), Some(host), Some(22))
        };
        let letsencrypt_ca = snap
            .variable(&format!("hosting_letsencrypt_ca_{}", s.nid))
            .ok()
            .flatten()
            .and_then(|v| v.as_str().map(str::to_string));
        let origin = json!({
            "aegir3": {
                "nid": s.nid,
                "context": context,
                "human_name": s.human_name,
                "status": object_status(s.state()),
                "verified": s.verified,
                "services": s.services.iter().map(|v| json!({
                    "service": v.service, "type": v.service_type, "port": v.port,
                    "available": v.available,
                })).collect::<Vec<_>>(),
                "ip_addresses": s.ip_addresses,
                "https_port": s.https_port,
                "letsencrypt_ca": letsencrypt_ca,
                "aegir_root": alias.map(|a| cx.rebase(&a.aegir_root)),
                "config_path": alias.map(|a| cx.rebase(&a.config_path)),
                "backup_path": alias.map(|a| cx.rebase(&a.backup_path)),
            }
        });
        let db_admin = s
            .db_admin
            .as_ref()
            .map(|a| (a.user.clone(), a.password.expose().to_string()));
        plan.items.push(Planned {
            r#ref: r,
            label,
            what: What::Record(Box::new(Record::Server(ServerRec {
                name,
                transport,
                ssh_user,
                ssh_host,
                ssh_port,
                origin,
                db_admin_user: db_admin.as_ref().map(|(u, _)| u.clone()),
                db_admin_password_sha256: db_admin.as_ref().map(|(_, p)| sha256_hex(p)),
                db_admin,
            }))),
            warnings,
        });
    }

    // Platforms: a project and a release each.
    let mut release_names: HashMap<i64, String> = HashMap::new();
    let mut taken: HashMap<String, i64> = HashMap::new();
    for p in &snap.platforms {
        let label = p.title.clone();
        let r = Ref::new(ItemKind::Release, p.nid);
        // A platform not imported is reported twice: as the project and as the release.
        let skip = |plan: &mut Plan, what: fn(String) -> What, why: String| {
            for kind in [ItemKind::Project, ItemKind::Release] {
                plan.items.push(Planned {
                    r#ref: Ref::new(kind, p.nid),
                    label: label.clone(),
                    what: what(why.clone()),
                    warnings: Vec::new(),
                });
            }
        };
        if Some(p.nid) == own_platform || p.context.as_deref() == Some("platform_hostmaster") {
            skip(
                &mut plan,
                What::Skip,
                "the platform of Aegir 3's own front end (hostmaster)".into(),
            );
            continue;
        }
        if !server_names.contains_key(&p.web_server) {
            skip(
                &mut plan,
                What::Fail,
                format!("its web server (node {}) was not imported", p.web_server),
            );
            continue;
        }
        let mut name = slug(&p.title);
        if let Some(other) = taken.get(&name) {
            if *other != p.nid {
                name = slug(&format!("{name}-{}", p.nid));
            }
        }
        taken.insert(name.clone(), p.nid);
        release_names.insert(p.nid, name.clone());
        let mut warnings = Vec::new();
        let core = snap
            .packages
            .iter()
            .find(|k| k.rid == p.nid && k.package_type == "platform");
        let (app_kind, app_version) = match core {
            Some(k) if k.short_name == "drupal" => (
                Some(if k.version.starts_with("7.") {
                    AppKind::Drupal7
                } else {
                    AppKind::Drupal
                }),
                Some(k.version.clone()),
            ),
            Some(k) if k.short_name == "wordpress" => {
                (Some(AppKind::Wordpress), Some(k.version.clone()))
            }
            Some(k) => {
                warnings.push(format!(
                    "core package {} is not an application aegird knows; `aegir release verify {name}` detects it",
                    k.short_name
                ));
                (None, Some(k.version.clone()))
            }
            None => {
                warnings.push(format!(
                    "Aegir 3 recorded no core package; `aegir release verify {name}` detects it"
                ));
                (None, None)
            }
        };
        let packages = snap
            .packages
            .iter()
            .filter(|k| k.rid == p.nid && k.package_type != "platform" && k.status >= 0)
            .map(|k| Package {
                kind: k.package_type.clone(),
                name: k.short_name.clone(),
                version: Some(k.version.clone()).filter(|v| !v.is_empty()),
                source: "aegir3".into(),
            })
            .collect();
        let path = cx.rebase(&p.publish_path);
        if p.state() != Some(ObjectStatus::Deleted) && !cx.exists(&path) {
            warnings.push(format!("its codebase is not at {path}"));
        }
        let alias = p.context.as_deref().and_then(|c| cx.platforms.get(c));
        let origin = json!({
            "aegir3": {
                "nid": p.nid,
                "title": p.title,
                "context": p.context,
                "status": object_status(p.state()),
                "verified": p.verified,
                "makefile": p.makefile,
                "alias_root": alias.map(|a| cx.rebase(&a.root)),
            }
        });
        plan.items.push(Planned {
            r#ref: Ref::new(ItemKind::Project, p.nid),
            label: label.clone(),
            what: What::Record(Box::new(Record::Project(ProjectRec {
                name: name.clone(),
                path: path.clone(),
            }))),
            warnings: Vec::new(),
        });
        plan.items.push(Planned {
            r#ref: r,
            label,
            what: What::Record(Box::new(Record::Release(ReleaseRec {
                name,
                project: Ref::new(ItemKind::Project, p.nid),
                server: Ref::new(ItemKind::Server, p.web_server),
                path,
                app_kind,
                app_version,
                packages,
                // Deleted platforms stay as history; nothing new may go on them.
                locked: matches!(
                    p.state(),
                    Some(ObjectStatus::Locked) | Some(ObjectStatus::Deleted)
                ),
                origin,
            }))),
            warnings,
        });
    }

    // Installation-wide backup settings, applied to every environment.
    let default_enabled = snap.default_backup_enabled().unwrap_or_else(|e| {
        variable_note(&mut plan, "hosting_backup_queue_default_enabled", e);
        None
    });
    let default_interval = snap.default_backup_interval().unwrap_or_else(|e| {
        variable_note(&mut plan, "hosting_backup_queue_default_interval", e);
        None
    });
    let default_interval = default_interval.filter(|i| *i > 0).unwrap_or(86_400);
    let default_on = default_enabled.unwrap_or(true);
    plan.notes.push(if default_on {
        format!("backup schedule: Aegir 3 backed sites up every {} s by default; that interval is set on every environment without its own", default_interval)
    } else {
        "backup schedule: automatic backups were off by default in Aegir 3; they stay off on every environment without its own schedule".into()
    });
    let gc = snap.backup_gc().unwrap_or_else(|e| {
        variable_note(&mut plan, "hosting_backup_gc_intervals", e);
        None
    });
    let retention = match &gc {
        Some(gc) if gc.enabled && !gc.rules.is_empty() => {
            let p = retention_from_gc(gc, default_interval);
            plan.notes.push(format!(
                "backup retention: Aegir 3's backup GC ({} rules) becomes keep last {}, daily {}, weekly {}, monthly {} on every environment (a tier Aegir 3 kept without end is kept {} days); it applies to scheduled backups, never to imported ones",
                gc.rules.len(), p.last, p.daily, p.weekly, p.monthly, UNBOUNDED_DAYS
            ));
            Some(p)
        }
        _ => {
            plan.notes.push("backup retention: Aegir 3's backup GC was off, so it kept every backup; imported backups are never pruned, new scheduled ones follow aegird's `backups.retention`".into());
            None
        }
    };
    if let Ok(Some(start)) = snap.variable("hosting_backup_window_time_window_start") {
        let end = snap
            .variable("hosting_backup_window_time_window_end")
            .ok()
            .flatten();
        plan.notes.push(format!(
            "backup window: Aegir 3 ran backups only between {} and {}; aegird has no backup window yet, so scheduled backups run at any hour",
            start.as_str().unwrap_or("?"),
            end.as_ref().and_then(|e| e.as_str()).unwrap_or("?")
        ));
    }

    // Sites.
    let platforms: HashMap<i64, &hostmaster::Platform> =
        snap.platforms.iter().map(|p| (p.nid, p)).collect();
    let servers: HashMap<i64, &hostmaster::Server> =
        snap.servers.iter().map(|s| (s.nid, s)).collect();
    let mut env_names: HashMap<i64, String> = HashMap::new();
    for s in &snap.sites {
        let r = Ref::new(ItemKind::Environment, s.nid);
        let label = s.uri.clone();
        let mut warnings = Vec::new();
        let fail = |plan: &mut Plan, why: String| {
            plan.items.push(Planned {
                r#ref: r.clone(),
                label: label.clone(),
                what: What::Fail(why),
                warnings: Vec::new(),
            })
        };
        if Some(s.nid) == hostmaster_site || s.context.as_deref() == Some("hostmaster") {
            plan.items.push(Planned {
                r#ref: r.clone(),
                label: label.clone(),
                what: What::Skip("Aegir 3's own front end (hostmaster); aegird replaces it".into()),
                warnings,
            });
            continue;
        }
        let uri = match crate::model::validate::hostname("uri", &s.uri) {
            Ok(u) => u,
            Err(e) => {
                fail(&mut plan, format!("its domain is not a host name: {e}"));
                continue;
            }
        };
        let Some(platform) = platforms.get(&s.platform) else {
            fail(
                &mut plan,
                format!(
                    "its platform (node {}) is not in the hostmaster database",
                    s.platform
                ),
            );
            continue;
        };
        if !release_names.contains_key(&s.platform) {
            fail(
                &mut plan,
                format!("its platform {:?} was not imported", platform.title),
            );
            continue;
        }
        let status = match s.state() {
            Some(SiteStatus::Enabled) => EnvironmentStatus::Active,
            Some(SiteStatus::Disabled) => EnvironmentStatus::Disabled,
            // Kept as history: a deleted record, with its tasks and backups.
            Some(SiteStatus::Deleted) | Some(SiteStatus::Queued) => EnvironmentStatus::Deleted,
            None => {
                fail(&mut plan, format!("unknown site status {}", s.status));
                continue;
            }
        };
        let live = status != EnvironmentStatus::Deleted;
        let alias = s.context.as_deref().and_then(|c| cx.sites.get(c)).copied();
        if live && alias.is_none() {
            warnings.push(format!(
                "no readable alias file for @{}; its paths are derived from the platform",
                s.context.as_deref().unwrap_or(&s.uri)
            ));
        }
        let root = cx.rebase(&platform.publish_path);
        let site_path = alias
            .map(|a| cx.rebase(&a.site_path))
            .unwrap_or_else(|| format!("{root}/sites/{}", s.uri));
        let web = servers.get(&platform.web_server);
        let web_alias = web
            .and_then(|w| w.context.as_deref())
            .and_then(|c| cx.servers.get(c))
            .copied();
        let http_kind = web
            .and_then(|w| w.services.iter().find(|v| v.service == "http"))
            .map(|v| {
                if v.service_type.contains("apache") {
                    "apache"
                } else {
                    "nginx"
                }
            })
            .unwrap_or("nginx");
        let config_path = web_alias
            .map(|a| cx.rebase(&a.config_path))
            .unwrap_or_else(|| {
                let ctx = web
                    .and_then(|w| w.context.clone())
                    .unwrap_or_else(|| "server_master".into());
                format!("{}/config/{ctx}", src.root.display())
            });
        let vhost = format!("{config_path}/{http_kind}/vhost.d/{}", s.uri);
        let drushrc_path = format!("{site_path}/drushrc.php");
        let mut db = serde_json::Value::Null;
        if live {
            if !cx.exists(&site_path) {
                warnings.push(format!("its site directory is not at {site_path}"));
            }
            if !cx.exists(&vhost) {
                warnings.push(format!("its vhost is not at {vhost}"));
            }
            match src.drushrc.get(&s.uri) {
                Some(Ok(rc)) => {
                    db = json!({
                        "name": rc.db_name, "user": rc.db_user, "host": rc.db_host,
                        "port": rc.db_port, "type": rc.db_type,
                    });
                    if rc.db_name != s.db_name {
                        warnings.push(format!(
                            "drushrc.php names database {} but the hostmaster records {}; drushrc.php is what the site uses",
                            rc.db_name, s.db_name
                        ));
                    }
                }
                Some(Err(e)) => warnings.push(format!(
                    "{e}: its database credentials are unknown until it is there (verify reports it)"
                )),
                None => warnings.push(format!(
                    "no drushrc.php at {drushrc_path}: its database credentials are unknown until it is there (verify reports it)"
                )),
            }
        }
        // HTTPS: the certificate Aegir 3 copied next to the vhosts, or dehydrated's own.
        let mut certificate = serde_json::Value::Null;
        if live && s.https_enabled > 0 {
            let copied = (
                format!("{config_path}/ssl.d/{}/openssl.crt", s.uri),
                format!("{config_path}/ssl.d/{}/openssl.key", s.uri),
            );
            let le = (
                format!(
                    "{}/config/letsencrypt.d/{}/fullchain.pem",
                    src.root.display(),
                    s.uri
                ),
                format!(
                    "{}/config/letsencrypt.d/{}/privkey.pem",
                    src.root.display(),
                    s.uri
                ),
            );
            let found = [copied, le]
                .into_iter()
                .find(|(c, k)| cx.exists(c) && cx.exists(k));
            match found {
                Some((cert, key)) => {
                    certificate = json!({ "certificate": cert, "key": key, "issuer": "letsencrypt" })
                }
                None => warnings.push(
                    "HTTPS is on but no certificate was found on disk; the HTTPS work will issue one"
                        .into(),
                ),
            }
        }
        let redirection = s.redirection.clone();
        if let Some(target) = &redirection {
            if target != &s.uri {
                warnings.push(format!(
                    "Aegir 3 redirected every name to {target}, not to the site's own domain; aegird redirects aliases to {}",
                    s.uri
                ));
            }
        }
        let mut aliases = Vec::new();
        for a in &s.aliases {
            match crate::model::validate::hostname("alias", &a.alias) {
                Ok(a) => aliases.push(a),
                Err(e) => warnings.push(format!("alias {:?} dropped: {e}", a.alias)),
            }
        }
        let https = match s.https_enabled {
            0 => HttpsMode::Off,
            1 => HttpsMode::On,
            _ => HttpsMode::Required,
        };
        let backup_interval = match s.backup_schedule.as_ref() {
            Some(b) => match b.enabled() {
                Some(true) => Some(b.schedule.max(3600)),
                Some(false) => Some(0),
                None => {
                    warnings.push(format!(
                        "unknown backup schedule status {:?}; the default applies",
                        b.status
                    ));
                    Some(if default_on { default_interval } else { 0 })
                }
            },
            None => Some(if default_on { default_interval } else { 0 }),
        };
        let db_server = server_names
            .contains_key(&s.db_server)
            .then(|| Ref::new(ItemKind::Server, s.db_server));
        if live && db_server.is_none() {
            warnings.push(format!(
                "its database server (node {}) was not imported",
                s.db_server
            ));
        }
        let origin = json!({
            "aegir3": {
                "nid": s.nid,
                "context": s.context,
                "status": site_status(s.state()),
                "platform_root": root,
                "site_path": site_path,
                "drushrc": drushrc_path,
                "alias_file": s.context.as_deref()
                    .and_then(|c| cx.alias_files.get(c))
                    .map(|p| p.display().to_string()),
                "vhost": vhost,
                "http": http_kind,
                "db": db,
                "language": s.language,
                "profile": s.profile,
                "redirection": redirection,
                "verified": s.verified,
                "last_cron": s.last_cron,
                "certificate": certificate,
            }
        });
        env_names.insert(s.nid, uri.clone());
        plan.items.push(Planned {
            r#ref: r,
            label,
            what: What::Record(Box::new(Record::Environment(EnvRec {
                uri,
                release: Ref::new(ItemKind::Release, s.platform),
                server: Ref::new(ItemKind::Server, platform.web_server),
                db_server,
                status,
                https,
                aliases,
                redirect_aliases: redirection.is_some(),
                db_name: Some(s.db_name.clone()).filter(|d| !d.is_empty()),
                client: s.client.clone(),
                backup_interval: if live { backup_interval } else { None },
                retention: if live { retention } else { None },
                origin,
            }))),
            warnings,
        });
    }

    // Backups.
    for b in &snap.backups {
        let r = Ref::new(ItemKind::Backup, b.bid);
        let label = Path::new(&b.filename)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| b.filename.clone());
        if !env_names.contains_key(&b.site) {
            plan.items.push(Planned {
                r#ref: r,
                label,
                what: What::Skip(format!("its site (node {}) was not imported", b.site)),
                warnings: Vec::new(),
            });
            continue;
        }
        let path = cx.rebase(&b.filename);
        let missing = !cx.exists(&path);
        let mut warnings = Vec::new();
        if missing {
            warnings.push(format!("its file is not at {path}; recorded as missing"));
        }
        plan.items.push(Planned {
            r#ref: r,
            label,
            what: What::Record(Box::new(Record::Backup(BackupRec {
                environment: Ref::new(ItemKind::Environment, b.site),
                path,
                size: b.size.unwrap_or(0),
                missing,
                description: b.description.clone(),
                created_at: b.timestamp.unwrap_or(0) * 1000,
            }))),
            warnings,
        });
    }

    // Task history.
    let platform_titles: HashMap<i64, &str> = snap
        .platforms
        .iter()
        .map(|p| (p.nid, p.title.as_str()))
        .collect();
    for t in &snap.tasks {
        let r = Ref::new(ItemKind::Task, t.nid);
        let label = format!("{} ({})", t.title, t.task_type);
        let skip = |plan: &mut Plan, why: String| {
            plan.items.push(Planned {
                r#ref: r.clone(),
                label: label.clone(),
                what: What::Skip(why),
                warnings: Vec::new(),
            })
        };
        let (status, aegir3_status) = match t.state() {
            Some(TaskStatus::Success) => (OperationStatus::Succeeded, "success"),
            Some(TaskStatus::Warning) => (OperationStatus::Succeeded, "warning"),
            Some(TaskStatus::Error) => (OperationStatus::Failed, "error"),
            Some(TaskStatus::Queued) | Some(TaskStatus::Processing) => {
                skip(
                    &mut plan,
                    "still queued or running in Aegir 3; a later import records it once it has finished".into(),
                );
                continue;
            }
            None => {
                skip(&mut plan, format!("unknown task status {:?}", t.status));
                continue;
            }
        };
        let (target, target_name) = if let Some(uri) = env_names.get(&t.target) {
            (Ref::new(ItemKind::Environment, t.target), uri.clone())
        } else if let Some(name) = release_names.get(&t.target) {
            (Ref::new(ItemKind::Release, t.target), name.clone())
        } else if let Some(name) = server_names.get(&t.target) {
            (Ref::new(ItemKind::Server, t.target), name.clone())
        } else {
            let what = platform_titles
                .get(&t.target)
                .map(|p| format!("platform {p:?}"))
                .unwrap_or_else(|| format!("node {}", t.target));
            skip(&mut plan, format!("its target ({what}) was not imported"));
            continue;
        };
        let mut warnings = Vec::new();
        if !KNOWN_TASKS.contains(&t.task_type.as_str()) {
            warnings.push(format!(
                "unknown task type {:?}; kept as history",
                t.task_type
            ));
        }
        let logs: Vec<LogRec> = t
            .log
            .iter()
            .map(|l| LogRec {
                lid: l.lid,
                ts: l.timestamp * 1000,
                level: match l.log_type.as_str() {
                    "error" => LogLevel::Error,
                    "warning" => LogLevel::Warning,
                    "command" => LogLevel::Command,
                    _ => LogLevel::Info,
                },
                message: if l.error.is_empty() {
                    l.message.clone()
                } else {
                    format!("{} [{}]", l.message, l.error)
                },
            })
            .collect();
        let error = (status == OperationStatus::Failed).then(|| {
            logs.iter()
                .rev()
                .find(|l| l.level == LogLevel::Error)
                .map(|l| l.message.clone())
                .unwrap_or_else(|| "failed in Aegir 3".into())
        });
        let started = t.executed.unwrap_or(0) * 1000;
        plan.items.push(Planned {
            r#ref: r,
            label,
            what: What::Record(Box::new(Record::Task(TaskRec {
                target,
                target_name,
                status,
                error,
                params: json!({
                    "aegir3": {
                        "nid": t.nid,
                        "title": t.title,
                        "task_type": t.task_type,
                        "status": aegir3_status,
                        "arguments": t.arguments.iter().cloned().collect::<BTreeMap<_, _>>(),
                    }
                }),
                started_at: started,
                finished_at: started + t.delta.unwrap_or(0) * 1000,
                last_log: logs.iter().map(|l| l.lid).max().unwrap_or(0),
                logs,
            }))),
            warnings,
        });
    }
    plan
}

fn object_status(s: Option<ObjectStatus>) -> &'static str {
    match s {
        Some(ObjectStatus::Deleted) => "deleted",
        Some(ObjectStatus::Locked) => "locked",
        Some(ObjectStatus::Queued) => "queued",
        Some(ObjectStatus::Enabled) => "enabled",
        None => "unknown",
    }
}

fn site_status(s: Option<SiteStatus>) -> &'static str {
    match s {
        Some(SiteStatus::Deleted) => "deleted",
        Some(SiteStatus::Disabled) => "disabled",
        Some(SiteStatus::Queued) => "queued",
        Some(SiteStatus::Enabled) => "enabled",
        None => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::hostmaster::{BackupGc, GcRule};

    #[test]
    fn slugs_are_valid_names() {
        assert_eq!(slug("Drupal 10.2.6"), "drupal-10.2.6");
        assert_eq!(slug("  Ünïcode / platform  "), "n-code-platform");
        assert_eq!(slug("---"), "platform");
        let long = slug(&"x".repeat(100));
        assert_eq!(long.len(), 64);
        for t in ["Drupal 10.2.6", "a_b", "D7 (old) !!", "-x-"] {
            crate::model::validate::name("release", &slug(t)).expect(t);
        }
    }

    #[test]
    fn backup_gc_becomes_a_retention_policy() {
        // The fixture's rules: past 7 days one a day, past 30 days one a week, for ever.
        let gc = BackupGc {
            enabled: true,
            rules: vec![
                GcRule {
                    older_than: 7 * 86_400,
                    keep_per: 86_400,
                },
                GcRule {
                    older_than: 30 * 86_400,
                    keep_per: 7 * 86_400,
                },
            ],
        };
        let p = retention_from_gc(&gc, 86_400);
        assert_eq!(
            p,
            Policy {
                last: 7,
                daily: 30,
                weekly: UNBOUNDED_DAYS.div_ceil(7),
                monthly: 0
            }
        );
        // Hourly backups: every one of the first week is kept.
        assert_eq!(retention_from_gc(&gc, 3600).last, 168);
        assert_eq!(
            retention_from_gc(
                &BackupGc {
                    enabled: true,
                    rules: vec![]
                },
                86_400
            ),
            Policy {
                last: 0,
                daily: 0,
                weekly: 0,
                monthly: 0
            }
        );
    }
}
