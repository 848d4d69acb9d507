//! Domain types shared by the store, the engine, the API and the CLI: records, closed status
//! enums and the request bodies that are validated at the edge (see [`validate`]).

pub mod validate;

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

pub type Id = i64;

/// Milliseconds since the Unix epoch. Stored as an integer so SQLite and PostgreSQL agree on
/// it; shown as RFC 3339 in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn plus_ms(self, ms: i64) -> Self {
        Timestamp(self.0 + ms)
    }
    pub fn to_rfc3339(self) -> String {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.0.max(0) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)?;
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_millis() as i64;
        Ok(Timestamp(ms))
    }
}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}
impl ToSchema for Timestamp {}

/// Declares a closed enum stored as text: one place gives each variant its wire and SQL name.
macro_rules! text_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl std::str::FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(UnknownVariant {
                        kind: stringify!($name),
                        value: s.to_string(),
                        known: &[$($s),+],
                    }),
                }
            }
        }
    };
}

/// A string that names no variant of a closed enum; the message lists the known ones.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of: {}", known.join(", "))]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
    pub known: &'static [&'static str],
}

text_enum! {
    /// Life cycle of an operation. Transitions are guarded in the store:
    /// queued → running | cancelled; running → succeeded | failed | cancelled | interrupted,
    /// or back to queued when a lost worker's idempotent operation is resumed.
    pub enum OperationStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        Interrupted = "interrupted",
    }
}

impl OperationStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, OperationStatus::Queued | OperationStatus::Running)
    }

    /// Ended without succeeding: Aegir 3's Retry button applies.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            OperationStatus::Failed | OperationStatus::Cancelled | OperationStatus::Interrupted
        )
    }
}

text_enum! {
    /// Life cycle of one task (step) of an operation.
    pub enum TaskStatus {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Its change was reverted because a later step failed or the operation was stopped.
        Undone = "undone",
        /// Never started because the operation ended before reaching it.
        Skipped = "skipped",
    }
}

text_enum! {
    /// What an operation does. Only operations whose backend exists are listed; commands for
    /// the others answer "not available yet" before anything is written.
    pub enum OperationKind {
        ServerVerify = "server.verify",
        ReleaseVerify = "release.verify",
        EnvInstall = "env.install",
        EnvVerify = "env.verify",
        EnvDisable = "env.disable",
        EnvEnable = "env.enable",
        EnvDelete = "env.delete",
        EnvLogin = "env.login",
        EnvCron = "env.cron",
        EnvBackup = "env.backup",
        EnvRestore = "env.restore",
        /// Moves a site adopted from Aegir 3 under aegird's own layout and vhost.
        EnvTakeover = "env.takeover",
        /// Targets the new environment; the source is in its parameters.
        EnvClone = "env.clone",
        BackupVerify = "backup.verify",
        BackupDelete = "backup.delete",
        /// A task Aegir 3 ran, imported as history: never queued, never run by aegird. Its
        /// task type, arguments and Aegir 3 status are in its parameters.
        Aegir3Task = "aegir3.task",
    }
}

impl OperationKind {
    /// A mutating operation changes its target; two of them never run on one target at once.
    pub fn mutating(self) -> bool {
        match self {
            // Verify writes what it detects (and, with the server backend, aegird's own
            // nginx include and pool), so it takes the target exclusively.
            OperationKind::ServerVerify => true,
            // Writes what it found on the release.
            OperationKind::ReleaseVerify => true,
            // Every environment operation takes its environment exclusively, login and cron
            // included: neither may run against a site that is being deleted or re-rendered.
            OperationKind::EnvInstall
            | OperationKind::EnvVerify
            | OperationKind::EnvDisable
            | OperationKind::EnvEnable
            | OperationKind::EnvDelete
            | OperationKind::EnvLogin
            | OperationKind::EnvCron
            | OperationKind::EnvBackup
            | OperationKind::EnvRestore
            | OperationKind::EnvTakeover
            | OperationKind::EnvClone => true,
            // A restore test makes a throwaway database, and a verify must not read a file
            // that a delete is removing: both take the backup exclusively.
            OperationKind::BackupVerify | OperationKind::BackupDelete => true,
            OperationKind::Aegir3Task => false,
        }
    }
    pub fn target_type(self) -> TargetType {
        match self {
            OperationKind::ServerVerify => TargetType::Server,
            OperationKind::ReleaseVerify => TargetType::Release,
            OperationKind::EnvInstall
            | OperationKind::EnvVerify
            | OperationKind::EnvDisable
            | OperationKind::EnvEnable
            | OperationKind::EnvDelete
            | OperationKind::EnvLogin
            | OperationKind::EnvCron
            | OperationKind::EnvBackup
            | OperationKind::EnvRestore
            | OperationKind::EnvTakeover
            | OperationKind::EnvClone => TargetType::Environment,
            OperationKind::BackupVerify | OperationKind::BackupDelete => TargetType::Backup,
            // History of any Aegir 3 object; the import writes each one's own target.
            OperationKind::Aegir3Task => TargetType::Environment,
        }
    }
}

text_enum! {
    pub enum TargetType {
        Server = "server",
        Cluster = "cluster",
        Project = "project",
        Release = "release",
        Environment = "environment",
        Backup = "backup",
    }
}

text_enum! {
    pub enum LogLevel {
        Info = "info",
        Warning = "warning",
        Error = "error",
        /// A command that was run on a host, as Aegir 3's "command" log type.
        Command = "command",
    }
}

text_enum! {
    /// How aegird reaches a server's shell.
    pub enum Transport {
        Local = "local",
        Ssh = "ssh",
    }
}

text_enum! {
    pub enum ServerStatus {
        /// Recorded, never verified.
        New = "new",
        /// The last verify succeeded.
        Ready = "ready",
        /// The last verify failed; see its operation.
        Failed = "failed",
    }
}

text_enum! {
    pub enum ClusterStatus {
        New = "new",
        Ready = "ready",
        Failed = "failed",
    }
}

text_enum! {
    pub enum ProjectSource {
        Git = "git",
        Path = "path",
    }
}

text_enum! {
    pub enum ReleaseStatus {
        /// Recorded; its codebase is built and verified by the server backend.
        New = "new",
        Ready = "ready",
        Failed = "failed",
    }
}

text_enum! {
    pub enum AppKind {
        Drupal7 = "drupal7",
        Drupal = "drupal",
        Wordpress = "wordpress",
        Php = "php",
    }
}

text_enum! {
    pub enum EnvironmentStatus {
        Installing = "installing",
        Active = "active",
        Disabled = "disabled",
        Failed = "failed",
        /// Kept as history once deleted; its uri may be used again.
        Deleted = "deleted",
    }
}

text_enum! {
    /// Who runs operations on an environment. One imported from Aegir 3 stays Aegir 3's until
    /// it is taken over: aegird only reads it (verify) and refuses everything else.
    pub enum Management {
        Aegird = "aegird",
        Aegir3 = "aegir3",
    }
}

text_enum! {
    /// Aegir 3's hosting_https modes 0, 1 and 2.
    pub enum HttpsMode {
        Off = "off",
        On = "on",
        Required = "required",
    }
}

text_enum! {
    /// A backup is recorded only once its archive is complete and renamed into place, so
    /// there is no "pending" or "failed" backup: a failed backup is a failed operation.
    pub enum BackupStatus {
        Good = "good",
        /// Its archive was removed (by hand or by retention); the record stays as history.
        Deleted = "deleted",
        /// Imported from Aegir 3, but its file was not there: listed so it is not forgotten,
        /// never restored.
        Missing = "missing",
    }
}

text_enum! {
    /// Why a backup was taken: retention only ever prunes scheduled ones.
    pub enum BackupReason {
        Manual = "manual",
        Scheduled = "scheduled",
        PreRestore = "pre-restore",
        PreDelete = "pre-delete",
        PreClone = "pre-clone",
        /// Registered from an earlier install (Aegir 3's tarballs).
        Imported = "imported",
    }
}

text_enum! {
    pub enum BackupFormat {
        /// aegird's own: zstd-compressed tar with a manifest of SHA-256 sums.
        Aegir = "aegir",
        /// Aegir 3's `<uri>-YYYYMMDD.HHMMSS.tar.gz`.
        Aegir3 = "aegir3",
    }
}

text_enum! {
    /// What an imported object is (or, for `file`, an alias or drushrc file of its own).
    pub enum ItemKind {
        File = "file",
        Server = "server",
        Project = "project",
        Release = "release",
        Environment = "environment",
        Backup = "backup",
        Task = "task",
    }
}

text_enum! {
    /// What an import did with one object.
    pub enum ImportOutcome {
        /// New in aegird.
        Adopted = "adopted",
        /// Known from an earlier import and changed in Aegir 3 since: `changes` lists what.
        Updated = "updated",
        Unchanged = "unchanged",
        Skipped = "skipped",
        Failed = "failed",
    }
}

/// One line of an import report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportItem {
    pub kind: ItemKind,
    /// The object in Aegir 3: its node id (or the file's path).
    pub aegir3: String,
    /// How a person knows it: the site's domain, the platform's title, the task's title.
    pub label: String,
    pub outcome: ImportOutcome,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// For `updated`: the fields that changed.
    pub changes: Vec<String>,
    /// Imported, but with something the admin should know.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportSummary {
    pub adopted: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub skipped: usize,
    pub failed: usize,
}

/// What an Aegir 3 import did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// Names the installation (its hostmaster database), as later imports recognise it.
    pub source: String,
    pub dry_run: bool,
    pub summary: ImportSummary,
    /// Installation-wide settings and how they were carried over.
    pub notes: Vec<String>,
    pub items: Vec<ImportItem>,
    pub elapsed_ms: u64,
}

/// What an operation acts on, with its name at the time it was queued (for display after a
/// rename or delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TargetRef {
    #[serde(rename = "type")]
    pub target_type: TargetType,
    pub id: Id,
    pub name: String,
}

impl TargetRef {
    /// The key under which mutating operations exclude each other.
    pub fn key(&self) -> String {
        format!("{}:{}", self.target_type, self.id)
    }
}

/// Services found on a server by verify.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DetectedServices {
    /// `PRETTY_NAME` from /etc/os-release, e.g. "Debian GNU/Linux 12 (bookworm)".
    pub os: Option<String>,
    /// `ID` and `VERSION_ID` from /etc/os-release, e.g. "debian" and "12".
    pub os_id: Option<String>,
    pub os_version: Option<String>,
    pub kernel: Option<String>,
    pub http: Vec<DetectedService>,
    pub php_fpm: Vec<DetectedService>,
    pub db: Vec<DetectedService>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DetectedService {
    /// "nginx", "apache", "php-fpm", "mariadb" or "mysql".
    pub name: String,
    pub version: String,
    /// The binary that answered, so an admin can see which of several installs was found.
    pub binary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Server {
    pub id: Id,
    pub name: String,
    pub transport: Transport,
    pub ssh_user: Option<String>,
    pub ssh_host: Option<String>,
    pub ssh_port: Option<u16>,
    /// The host key(s) pinned when the server was added, as known_hosts lines.
    pub ssh_host_key: Option<String>,
    pub status: ServerStatus,
    pub services: DetectedServices,
    pub verified_at: Option<Timestamp>,
    /// What Aegir 3 knew of it, when it was imported (context, services, ports, paths).
    #[schema(value_type = Option<Object>)]
    pub origin: Option<serde_json::Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    pub id: Id,
    pub name: String,
    /// The Kubernetes API server URL.
    pub api_url: String,
    pub status: ClusterStatus,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: Id,
    pub name: String,
    pub source: ProjectSource,
    pub git_url: Option<String>,
    pub git_ref: Option<String>,
    pub path: Option<String>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Release {
    pub id: Id,
    pub name: String,
    pub project: String,
    pub server: Option<String>,
    pub git_ref: Option<String>,
    /// Where the codebase lives on its server.
    pub path: Option<String>,
    pub app_kind: Option<AppKind>,
    pub app_version: Option<String>,
    pub docroot: Option<String>,
    /// Package set found by release verify (composer.lock, .info files, WP plugins).
    pub packages: Vec<crate::apps::Package>,
    /// A locked release accepts no new environments (Aegir 3's locked platform).
    pub locked: bool,
    pub status: ReleaseStatus,
    pub verified_at: Option<Timestamp>,
    /// What Aegir 3 knew of it, when it was imported from a platform.
    #[schema(value_type = Option<Object>)]
    pub origin: Option<serde_json::Value>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Environment {
    pub id: Id,
    pub uri: String,
    pub release: String,
    pub server: String,
    pub status: EnvironmentStatus,
    pub https: HttpsMode,
    pub aliases: Vec<String>,
    /// Aliases answer with a 301 to the uri instead of serving the site.
    pub redirect_aliases: bool,
    pub db_name: Option<String>,
    /// Seconds between scheduled backups: None follows the daemon's default, 0 is off.
    pub backup_interval: Option<i64>,
    /// When its newest good backup was taken (None: never backed up).
    pub last_backup_at: Option<Timestamp>,
    /// Scheduled backups kept (None: the daemon's `backups.retention`).
    #[schema(value_type = Option<Object>)]
    pub retention: Option<crate::backup::retention::Policy>,
    /// The client it belongs to (Aegir 3's client machine name).
    pub client: Option<String>,
    /// The server holding its database, when not its own server.
    pub db_server: Option<String>,
    pub managed_by: Management,
    /// What Aegir 3 knew of it (site path, vhost, database user, certificate...).
    #[schema(value_type = Option<Object>)]
    pub origin: Option<serde_json::Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    pub id: Id,
    pub kind: OperationKind,
    pub target: TargetRef,
    pub mutating: bool,
    pub status: OperationStatus,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// The failed operation this one retries.
    pub retry_of: Option<Id>,
    /// How many times a worker has started it (more than 1 after a resume).
    pub attempt: i64,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub seq: i64,
    pub name: String,
    pub status: TaskStatus,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub output: serde_json::Value,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// An operation with its tasks, as `GET /operations/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OperationDetail {
    #[serde(flatten)]
    pub operation: Operation,
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// Increasing per store; pass the last one seen as `after` to continue.
    pub id: Id,
    pub operation_id: Id,
    pub task_seq: Option<i64>,
    pub ts: Timestamp,
    pub level: LogLevel,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Backup {
    pub id: Id,
    pub environment: String,
    /// The archive on aegird's host.
    pub path: String,
    pub size: Option<i64>,
    /// Of the archive file, as written.
    pub sha256: Option<String>,
    pub status: BackupStatus,
    pub reason: BackupReason,
    pub format: BackupFormat,
    pub description: Option<String>,
    /// The operation that took it.
    pub operation_id: Option<Id>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: Id,
    pub name: String,
    /// The first characters of the token, enough to tell tokens apart; the token itself is
    /// only ever shown once, at creation.
    pub prefix: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

/// A web UI account. Its password hash never leaves the store module's callers in `app`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Id,
    pub name: String,
    pub admin: bool,
    pub created_at: Timestamp,
    pub last_login_at: Option<Timestamp>,
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Rows matching the filter, over all pages.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}
