//! The application layer: every use case, validated, in one place. The JSON API and the web
//! UI call it; neither reaches the store or the engine any other way.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::backend::{layout, SshKeys};
use crate::engine::{Engine, EngineError, PlanError};
use crate::model::validate::{self, Invalid};
use crate::model::*;
use crate::store::{
    CancelOutcome, NewEnvironmentRow, NewReleaseRow, NewServerRow, OperationFilter, Store,
    StoreError,
};

/// Why a use case refused or failed. The API maps each to an HTTP status and error code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{what} {key:?} not found")]
    NotFound { what: &'static str, key: String },
    #[error("{0} already exists")]
    Conflict(String),
    /// The request is valid but the target is not in a state that allows it.
    #[error("{0}")]
    InvalidState(String),
    #[error("{0} is not available yet")]
    NotAvailable(String),
    /// A host the request names could not be reached; nothing was written.
    #[error("{0}")]
    Unreachable(String),
    /// Something broke inside; the message is logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => AppError::Conflict(what),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Plan(PlanError::NotAvailable(what)) => AppError::NotAvailable(what),
            EngineError::Plan(PlanError::NotFound(what)) => AppError::NotFound {
                what: "target",
                key: what,
            },
            EngineError::Plan(PlanError::NotReady(msg)) => AppError::InvalidState(msg),
            EngineError::Plan(PlanError::Host(msg)) => AppError::Internal(msg),
            EngineError::Plan(PlanError::Store(e)) | EngineError::Store(e) => e.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, AppError>;

/// Lists return at most this many rows per page.
pub const MAX_PAGE: i64 = 1000;
pub const DEFAULT_PAGE: i64 = 100;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    /// Unique name, e.g. "web1".
    pub name: String,
    pub transport: Transport,
    /// `USER@HOST[:PORT]`, required with transport "ssh".
    #[serde(default)]
    pub ssh: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCluster {
    pub name: String,
    /// The Kubernetes API server, e.g. https://127.0.0.1:6443.
    pub api_url: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    pub name: String,
    /// A git remote; give either this or `path`.
    #[serde(default)]
    pub git: Option<String>,
    /// Branch, tag or commit of `git` (default: the remote's default branch).
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// An existing directory holding the codebase.
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRelease {
    pub name: String,
    pub project: String,
    pub server: String,
    /// Overrides the project's ref for this release.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnvironment {
    /// The site's host name; internationalised names are stored in punycode.
    pub uri: String,
    pub release: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub redirect_aliases: bool,
    #[serde(default = "https_off")]
    pub https: HttpsMode,
    /// The site title an install gives the application (default: the uri).
    #[serde(default)]
    pub title: Option<String>,
}

fn https_off() -> HttpsMode {
    HttpsMode::Off
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
}

/// A server as added. For SSH servers, the key to authorise on it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerAdded {
    #[serde(flatten)]
    pub server: Server,
    /// aegird's public SSH key: append it to `~USER/.ssh/authorized_keys` on the server.
    pub authorize_key: Option<String>,
}

/// A token as created: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: ApiToken,
    /// Send as `Authorization: Bearer <secret>`. It cannot be shown again.
    pub secret: String,
}

/// Paging and search for lists.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Rows per page (1-1000, default 100).
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    /// Only rows whose uri contains this text.
    pub q: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OperationQuery {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    pub status: Option<OperationStatus>,
    pub target_type: Option<TargetType>,
    /// Target name (needs `target_type`).
    pub target: Option<String>,
}

fn page_bounds(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64)> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Invalid::new("limit", format!("must be between 1 and {MAX_PAGE}")).into());
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(Invalid::new("offset", "must not be negative").into());
    }
    Ok((limit, offset))
}

/// Hash under which a token is stored. Tokens are 256 random bits, so a fast hash is enough:
/// no dictionary can reach them, and lookups stay cheap on every request.
pub fn token_hash(secret: &str) -> String {
    crate::hex::encode(&Sha256::digest(secret.as_bytes()))
}

/// Create an API token (used by the API and by `aegird token create`).
pub async fn create_token(store: &Store, name: &str, now: Timestamp) -> Result<CreatedToken> {
    let name = validate::name("name", name)?;
    let secret = format!("aegir_{}", crate::hex::random(32));
    let prefix = secret[..12].to_string();
    let token = store
        .insert_token(&name, &token_hash(&secret), &prefix, now)
        .await?;
    Ok(CreatedToken { token, secret })
}

/// An Aegir 3 import: where to read it from.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportAegir3 {
    /// `mysql://USER:PASS@HOST[:PORT]/DB` (`?socket=PATH` for a local socket); by default
    /// read from the front end's drushrc.php under the Aegir root.
    pub hostmaster_db: Option<String>,
    /// Aegir 3's home: alias files in `.drush/`; `/var/aegir` by default.
    pub aegir_root: Option<String>,
    /// Plan only: report what would be done, write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Clone)]
pub struct App {
    engine: Engine,
    /// aegird's SSH identity, to show and to pin host keys with when a server is added.
    ssh: SshKeys,
    /// One import at a time: two would race to adopt the same objects.
    imports: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl App {
    pub fn new(engine: Engine, ssh: SshKeys) -> App {
        App {
            engine,
            ssh,
            imports: Default::default(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn store(&self) -> &Store {
        self.engine.store()
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.engine.now()
    }

    /// Whether the store answers.
    pub async fn health(&self) -> Result<()> {
        Ok(self.store().ping().await?)
    }

    // --- tokens

    /// The token a bearer secret belongs to, if any.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiToken>> {
        let token = self.store().token_by_hash(&token_hash(secret)).await?;
        if let Some(t) = &token {
            // Record use at most once a minute: otherwise every read request would be a
            // write, and on SQLite would queue behind the engine's writes.
            let now = self.now();
            if t.last_used_at.is_none_or(|used| now.0 - used.0 >= 60_000) {
                self.store().touch_token(t.id, now).await?;
            }
        }
        Ok(token)
    }

    pub async fn create_token(&self, req: NewToken) -> Result<CreatedToken> {
        create_token(self.store(), &req.name, self.now()).await
    }

    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        Ok(self.store().list_tokens().await?)
    }

    pub async fn delete_token(&self, name: &str) -> Result<()> {
        if self.store().delete_token(name).await? {
            Ok(())
        } else {
            Err(not_found("token", name))
        }
    }

    // --- servers

    pub async fn list_servers(&self) -> Result<Vec<Server>> {
        Ok(self.store().list_servers().await?)
    }

    pub async fn server(&self, name: &str) -> Result<Server> {
        self.store()
            .server_by_name(name)
            .await?
            .ok_or_else(|| not_found("server", name))
    }

    /// Record a server. An SSH server's host key is fetched and pinned now, so that every
    /// later connection goes to this host and no other; when it cannot be reached, nothing is
    /// written.
    pub async fn add_server(&self, req: NewServer) -> Result<ServerAdded> {
        let name = validate::name("name", &req.name)?;
        let (row, authorize_key) = match (req.transport, &req.ssh) {
            (Transport::Local, None) => (NewServerRow::local(name), None),
            (Transport::Local, Some(_)) => {
                return Err(
                    Invalid::new("ssh", "must not be given with transport \"local\"").into(),
                )
            }
            (Transport::Ssh, None) => {
                return Err(Invalid::new(
                    "ssh",
                    "USER@HOST[:PORT] is required with transport \"ssh\"",
                )
                .into())
            }
            (Transport::Ssh, Some(spec)) => {
                let (user, host, port) = validate::ssh_target("ssh", spec)?;
                if self.store().server_by_name(&name).await?.is_some() {
                    return Err(AppError::Conflict(format!("server {name:?}")));
                }
                let host_key = self
                    .ssh
                    .scan_host_key(&host, port)
                    .await
                    .map_err(|e| AppError::Unreachable(e.to_string()))?;
                let public = self
                    .ssh
                    .public_key()
                    .await
                    .map_err(|e| AppError::Internal(e.to_string()))?;
                (
                    NewServerRow {
                        name,
                        transport: Transport::Ssh,
                        ssh_user: Some(user),
                        ssh_host: Some(host),
                        ssh_port: Some(port),
                        ssh_host_key: Some(host_key),
                    },
                    Some(public),
                )
            }
        };
        let server = self.store().insert_server(&row, self.now()).await?;
        Ok(ServerAdded {
            server,
            authorize_key,
        })
    }

    /// aegird's public SSH key: what a server must authorise before it is added.
    pub async fn ssh_public_key(&self) -> Result<String> {
        self.ssh
            .public_key()
            .await
            .map_err(|e| AppError::Internal(e.to_string()))
    }

    pub async fn verify_server(&self, name: &str) -> Result<Operation> {
        let server = self.server(name).await?;
        let target = TargetRef {
            target_type: TargetType::Server,
            id: server.id,
            name: server.name,
        };
        Ok(self
            .engine
            .enqueue(
                OperationKind::ServerVerify,
                target,
                serde_json::json!({}),
                None,
            )
            .await?)
    }

    // --- clusters

    pub async fn list_clusters(&self) -> Result<Vec<Cluster>> {
        Ok(self.store().list_clusters().await?)
    }

    pub async fn cluster(&self, name: &str) -> Result<Cluster> {
        self.store()
            .cluster_by_name(name)
            .await?
            .ok_or_else(|| not_found("cluster", name))
    }

    pub async fn add_cluster(&self, req: NewCluster) -> Result<Cluster> {
        let name = validate::name("name", &req.name)?;
        let url = validate::http_url("api_url", &req.api_url)?;
        Ok(self.store().insert_cluster(&name, &url, self.now()).await?)
    }

    pub async fn verify_cluster(&self, name: &str) -> Result<Operation> {
        self.cluster(name).await?;
        Err(AppError::NotAvailable(
            "verifying clusters (it comes with the Kubernetes backend)".into(),
        ))
    }

    // --- projects

    pub async fn list_projects(&self) -> Result<Vec<Project>> {
        Ok(self.store().list_projects().await?)
    }

    pub async fn project(&self, name: &str) -> Result<Project> {
        self.store()
            .project_by_name(name)
            .await?
            .ok_or_else(|| not_found("project", name))
    }

    pub async fn add_project(&self, req: NewProject) -> Result<Project> {
        let name = validate::name("name", &req.name)?;
        let (source, git, git_ref, path) = match (&req.git, &req.path) {
            (Some(url), None) => {
                let url = validate::git_url("git", url)?;
                let r = req
                    .git_ref
                    .as_deref()
                    .map(|r| validate::git_ref("ref", r))
                    .transpose()?;
                (ProjectSource::Git, Some(url), r, None)
            }
            (None, Some(p)) => {
                if req.git_ref.is_some() {
                    return Err(Invalid::new("ref", "only applies to git projects").into());
                }
                (
                    ProjectSource::Path,
                    None,
                    None,
                    Some(validate::abs_path("path", p)?),
                )
            }
            (Some(_), Some(_)) => {
                return Err(Invalid::new("path", "give either git or path, not both").into())
            }
            (None, None) => return Err(Invalid::new("git", "give either git or path").into()),
        };
        Ok(self
            .store()
            .insert_project(
                &name,
                source,
                git.as_deref(),
                git_ref.as_deref(),
                path.as_deref(),
                self.now(),
            )
            .await?)
    }

    // --- releases

    pub async fn list_releases(&self) -> Result<Vec<Release>> {
        Ok(self.store().list_releases().await?)
    }

    pub async fn release(&self, name: &str) -> Result<Release> {
        self.store()
            .release_by_name(name)
            .await?
            .ok_or_else(|| not_found("release", name))
    }

    /// Record a release of a project on a server. Building its codebase there is the server
    /// backend's release verify.
    pub async fn create_release(&self, req: NewRelease) -> Result<Release> {
        let name = validate::name("name", &req.name)?;
        let git_ref = req
            .git_ref
            .as_deref()
            .map(|r| validate::git_ref("ref", r))
            .transpose()?;
        let project = self
            .store()
            .project_by_name(&req.project)
            .await?
            .ok_or_else(|| {
                Invalid::new("project", format!("no project named {:?}", req.project))
            })?;
        let server = self
            .store()
            .server_by_name(&req.server)
            .await?
            .ok_or_else(|| Invalid::new("server", format!("no server named {:?}", req.server)))?;
        if git_ref.is_some() && project.source != ProjectSource::Git {
            return Err(Invalid::new("ref", "only applies to releases of git projects").into());
        }
        let row = NewReleaseRow {
            name,
            project_id: project.id,
            server_id: Some(server.id),
            git_ref: git_ref.or(project.git_ref.clone()),
            // A path project's release is that directory; a git one gets its own directory
            // when the server backend builds it.
            path: project.path.clone(),
        };
        Ok(self.store().insert_release(&row, self.now()).await?)
    }

    /// Detect the release's application, version, docroot and packages on its server.
    pub async fn verify_release(&self, name: &str) -> Result<Operation> {
        let release = self.release(name).await?;
        let target = TargetRef {
            target_type: TargetType::Release,
            id: release.id,
            name: release.name,
        };
        Ok(self
            .engine
            .enqueue(
                OperationKind::ReleaseVerify,
                target,
                serde_json::json!({}),
                None,
            )
            .await?)
    }

    // --- environments

    pub async fn list_environments(&self, q: ListQuery) -> Result<Page<Environment>> {
        let (limit, offset) = page_bounds(q.limit, q.offset)?;
        let search = q.q.as_deref().filter(|s| !s.is_empty());
        if let Some(s) = search {
            if s.len() > 253 {
                return Err(Invalid::new("q", "must be at most 253 characters").into());
            }
        }
        Ok(self
            .store()
            .list_environments(search, limit, offset)
            .await?)
    }

    /// How many environments have each status (the dashboard).
    pub async fn environment_counts(&self) -> Result<Vec<(EnvironmentStatus, i64)>> {
        Ok(self.store().environment_counts().await?)
    }

    /// Active environments whose last good backup is oldest (none at all first).
    pub async fn environments_by_backup_age(&self, limit: i64) -> Result<Vec<Environment>> {
        let (limit, _) = page_bounds(Some(limit), None)?;
        Ok(self.store().environments_by_backup_age(limit).await?)
    }

    pub async fn environment(&self, uri: &str) -> Result<Environment> {
        // Accept the Unicode form of an internationalised name too.
        let key = validate::hostname("uri", uri).unwrap_or_else(|_| uri.to_string());
        self.store()
            .environment_by_uri(&key)
            .await?
            .ok_or_else(|| not_found("environment", uri))
    }

    /// Record a new environment (status installing) and queue its install. Everything is
    /// checked first, so a refused request writes nothing.
    pub async fn create_environment(&self, req: NewEnvironment) -> Result<Operation> {
        let uri = validate::hostname("uri", &req.uri)?;
        let mut aliases = Vec::new();
        for (i, a) in req.aliases.iter().enumerate() {
            let field = format!("aliases[{i}]");
            let a = validate::hostname(&field, a)?;
            if a == uri || aliases.contains(&a) {
                return Err(Invalid::new(field, format!("{a:?} is given twice")).into());
            }
            aliases.push(a);
        }
        if aliases.len() > 100 {
            return Err(Invalid::new("aliases", "at most 100 aliases").into());
        }
        if let Some(title) = &req.title {
            if title.trim().is_empty() || title.len() > 200 || title.chars().any(char::is_control) {
                return Err(Invalid::new(
                    "title",
                    "must be 1 to 200 characters, without control characters",
                )
                .into());
            }
        }
        let (release, server) = self.ready_release(&req.release).await?;
        if req.https != HttpsMode::Off {
            return Err(AppError::NotAvailable(
                "HTTPS (it comes with the HTTPS work); create the environment with https off"
                    .into(),
            ));
        }
        let params = match &req.title {
            Some(t) => serde_json::json!({ "title": t }),
            None => serde_json::json!({}),
        };
        self.record_and_enqueue(
            NewEnvironmentRow {
                uri: uri.clone(),
                release_id: release.id,
                server_id: server.id,
                status: EnvironmentStatus::Installing,
                https: req.https,
                aliases,
                redirect_aliases: req.redirect_aliases,
                db_name: Some(layout::new_db_name(&uri)),
            },
            OperationKind::EnvInstall,
            params,
        )
        .await
    }

    /// A release new environments can be made on, and its server.
    async fn ready_release(&self, name: &str) -> Result<(Release, Server)> {
        let release = self
            .store()
            .release_by_name(name)
            .await?
            .ok_or_else(|| Invalid::new("release", format!("no release named {name:?}")))?;
        if release.locked {
            return Err(AppError::InvalidState(format!(
                "release {:?} is locked and accepts no new environments",
                release.name
            )));
        }
        let Some(server_name) = &release.server else {
            return Err(AppError::NotAvailable(
                "environments on clusters (they come with the Kubernetes backend)".into(),
            ));
        };
        if release.status != ReleaseStatus::Ready {
            return Err(AppError::InvalidState(format!(
                "release {:?} is {}; run `aegir release verify {}` first",
                release.name, release.status, release.name
            )));
        }
        let server = self.server(server_name).await?;
        Ok((release, server))
    }

    /// Record a new environment (installing) and queue the operation that makes it; if the
    /// queueing is refused, the record goes again so the uri stays free.
    async fn record_and_enqueue(
        &self,
        row: NewEnvironmentRow,
        kind: OperationKind,
        params: serde_json::Value,
    ) -> Result<Operation> {
        if self.store().environment_by_uri(&row.uri).await?.is_some() {
            return Err(AppError::Conflict(format!("environment {:?}", row.uri)));
        }
        let env = self.store().insert_environment(&row, self.now()).await?;
        match self
            .engine
            .enqueue(kind, env_target(&env), params, None)
            .await
        {
            Ok(op) => Ok(op),
            Err(e) => {
                // Nothing was done on the host: the record goes, so the uri stays free.
                self.store()
                    .set_environment_status(
                        env.id,
                        &[EnvironmentStatus::Installing],
                        EnvironmentStatus::Deleted,
                        self.now(),
                    )
                    .await?;
                Err(e.into())
            }
        }
    }

    /// Aegir 3's clone: a new environment at `req.uri` (on the same release unless another
    /// is named) from a fresh backup of `source`, its URL rewritten in the database. Aliases
    /// are not copied; the source is never changed.
    async fn clone_environment(
        &self,
        source: &Environment,
        req: &EnvActionRequest,
    ) -> Result<Operation> {
        let Some(new_uri) = &req.uri else {
            return Err(Invalid::new("uri", "a clone needs the new environment's uri").into());
        };
        let uri = validate::hostname("uri", new_uri)?;
        let release_name = req
            .release
            .clone()
            .unwrap_or_else(|| source.release.clone());
        let (release, server) = self.ready_release(&release_name).await?;
        let source_release = self.release(&source.release).await?;
        if release.app_kind != source_release.app_kind {
            return Err(Invalid::new(
                "release",
                format!(
                    "release {:?} is {}, and {} is {}: a clone needs the same application",
                    release.name,
                    release.app_kind.map(|a| a.as_str()).unwrap_or("unknown"),
                    source.uri,
                    source_release
                        .app_kind
                        .map(|a| a.as_str())
                        .unwrap_or("unknown"),
                ),
            )
            .into());
        }
        self.record_and_enqueue(
            NewEnvironmentRow {
                uri: uri.clone(),
                release_id: release.id,
                server_id: server.id,
                status: EnvironmentStatus::Installing,
                https: HttpsMode::Off,
                aliases: Vec::new(),
                redirect_aliases: false,
                db_name: Some(layout::new_db_name(&uri)),
            },
            OperationKind::EnvClone,
            serde_json::json!({ "source_id": source.id, "source": source.uri }),
        )
        .await
    }

    /// Queue an operation on an environment, if its status allows it.
    pub async fn environment_action(
        &self,
        uri: &str,
        action: EnvAction,
        req: EnvActionRequest,
    ) -> Result<Operation> {
        use EnvironmentStatus as S;
        let env = self.environment(uri).await?;
        req.check_for(action)?;
        if env.managed_by == Management::Aegir3
            && !matches!(action, EnvAction::Verify | EnvAction::Takeover)
        {
            return Err(AppError::InvalidState(format!(
                "environment {} is still managed by Aegir 3 (imported); only verify runs on it \
                 until `aegir env takeover {}` moves it under aegird",
                env.uri, env.uri
            )));
        }
        let (kind, allowed): (OperationKind, &[EnvironmentStatus]) = match action {
            EnvAction::Verify => (OperationKind::EnvVerify, &[S::Active, S::Disabled]),
            EnvAction::Disable => (OperationKind::EnvDisable, &[S::Active]),
            EnvAction::Enable => (OperationKind::EnvEnable, &[S::Disabled]),
            EnvAction::Delete => (
                OperationKind::EnvDelete,
                &[S::Active, S::Disabled, S::Failed],
            ),
            EnvAction::Login => (OperationKind::EnvLogin, &[S::Active]),
            EnvAction::Cron => (OperationKind::EnvCron, &[S::Active]),
            EnvAction::Takeover => {
                if env.managed_by != Management::Aegir3 {
                    return Err(AppError::InvalidState(format!(
                        "environment {} is aegird's already; takeover is for sites imported from Aegir 3",
                        env.uri
                    )));
                }
                (OperationKind::EnvTakeover, &[S::Active, S::Disabled])
            }
            EnvAction::Backup => (OperationKind::EnvBackup, &[S::Active, S::Disabled]),
            EnvAction::Restore => (OperationKind::EnvRestore, &[S::Active, S::Disabled]),
            EnvAction::Clone => (OperationKind::EnvClone, &[S::Active, S::Disabled]),
            EnvAction::Migrate => {
                return Err(AppError::NotAvailable(
                    "environment migrate (it comes with the migrations work)".into(),
                ))
            }
        };
        if !allowed.contains(&env.status) {
            let wanted: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            return Err(AppError::InvalidState(format!(
                "environment {} is {}; {} needs it to be {}",
                env.uri,
                env.status,
                action.as_str(),
                wanted.join(" or ")
            )));
        }
        let params = match action {
            EnvAction::Clone => return self.clone_environment(&env, &req).await,
            EnvAction::Backup => serde_json::json!({
                "reason": BackupReason::Manual,
                "description": req.description,
            }),
            EnvAction::Restore => {
                let b = match (req.backup, &req.file) {
                    (Some(id), None) => self.backup(id).await?,
                    (None, Some(file)) => self.register_archive(&env, file).await?,
                    _ => {
                        return Err(Invalid::new(
                            "backup",
                            "name the backup to restore (its id), or give an archive file",
                        )
                        .into())
                    }
                };
                if b.status != BackupStatus::Good {
                    return Err(AppError::InvalidState(format!(
                        "backup {} is {}",
                        b.id, b.status
                    )));
                }
                serde_json::json!({ "backup": b.id })
            }
            EnvAction::Delete => serde_json::json!({ "skip_backup": req.skip_backup }),
            _ => serde_json::json!({}),
        };
        Ok(self
            .engine
            .enqueue(kind, env_target(&env), params, None)
            .await?)
    }

    /// Record an archive file on aegird's host (an Aegir 3 tarball, or one of ours copied in)
    /// as a backup of `env`, so it can be restored and is listed with the others.
    async fn register_archive(&self, env: &Environment, file: &str) -> Result<Backup> {
        validate::abs_path("file", file)?;
        let format = if file.ends_with(".tar.gz") {
            BackupFormat::Aegir3
        } else if file.ends_with(".tar.zst") {
            BackupFormat::Aegir
        } else {
            return Err(Invalid::new(
                "file",
                "must be an aegird backup (.tar.zst) or an Aegir 3 tarball (.tar.gz)",
            )
            .into());
        };
        let meta = std::fs::metadata(file)
            .map_err(|e| Invalid::new("file", format!("cannot read {file}: {e}")))?;
        if !meta.is_file() {
            return Err(Invalid::new("file", format!("{file} is not a regular file")).into());
        }
        Ok(self
            .store()
            .insert_backup(
                &crate::store::NewBackupRow {
                    environment_id: env.id,
                    path: file.to_string(),
                    size: meta.len() as i64,
                    // Not read yet: `aegir backup verify` checks the archive itself.
                    sha256: None,
                    reason: BackupReason::Imported,
                    format,
                    description: Some(format!("registered from {file}")),
                    operation_id: None,
                },
                self.now(),
            )
            .await?)
    }

    /// Seconds between scheduled backups of an environment: None follows the daemon's
    /// default, 0 turns them off.
    pub async fn set_backup_schedule(
        &self,
        uri: &str,
        interval: Option<i64>,
    ) -> Result<Environment> {
        let env = self.environment(uri).await?;
        if let Some(i) = interval {
            if i != 0 && !(3600..=366 * 86400).contains(&i) {
                return Err(Invalid::new(
                    "backup_interval",
                    "must be 0 (off) or between 1 hour and 366 days, in seconds",
                )
                .into());
            }
        }
        self.store()
            .set_backup_interval(env.id, interval, self.now())
            .await?;
        self.environment(uri).await
    }

    /// Which scheduled backups of an environment are kept: None follows the daemon's
    /// `backups.retention`. A policy that keeps nothing is refused (turn the schedule off
    /// instead).
    pub async fn set_retention(
        &self,
        uri: &str,
        retention: Option<crate::backup::retention::Policy>,
    ) -> Result<Environment> {
        let env = self.environment(uri).await?;
        if let Some(p) = &retention {
            if [p.last, p.daily, p.weekly, p.monthly]
                .iter()
                .any(|n| *n > 10_000)
            {
                return Err(Invalid::new("retention", "each rule keeps at most 10000").into());
            }
            if [p.last, p.daily, p.weekly, p.monthly] == [0; 4] {
                return Err(Invalid::new(
                    "retention",
                    "keeps nothing: every scheduled backup would be deleted; keep at least \
                     one, or turn scheduled backups off",
                )
                .into());
            }
        }
        self.store()
            .set_environment_retention(env.id, retention.as_ref(), self.now())
            .await?;
        self.environment(uri).await
    }

    // --- operations

    pub async fn list_operations(&self, q: OperationQuery) -> Result<Page<Operation>> {
        let (limit, offset) = page_bounds(q.limit, q.offset)?;
        let target = match (q.target_type, &q.target) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(Invalid::new("target_type", "is required with target").into())
            }
            (Some(t), None) => {
                return Err(Invalid::new("target", format!("name the {t} to filter on")).into())
            }
            (Some(t), Some(name)) => Some((t, self.target_id(t, name).await?)),
        };
        Ok(self
            .store()
            .list_operations(&OperationFilter {
                status: q.status,
                target,
                limit,
                offset,
            })
            .await?)
    }

    async fn target_id(&self, t: TargetType, name: &str) -> Result<Id> {
        Ok(match t {
            TargetType::Server => self.server(name).await?.id,
            TargetType::Cluster => self.cluster(name).await?.id,
            TargetType::Project => self.project(name).await?.id,
            TargetType::Release => self.release(name).await?.id,
            TargetType::Environment => self.environment(name).await?.id,
            TargetType::Backup => name
                .parse()
                .map_err(|_| Invalid::new("target", "a backup is named by its id"))?,
        })
    }

    pub async fn operation(&self, id: Id) -> Result<OperationDetail> {
        let operation = self
            .store()
            .operation(id)
            .await?
            .ok_or_else(|| not_found("operation", &id.to_string()))?;
        let tasks = self.store().tasks(id).await?;
        Ok(OperationDetail { operation, tasks })
    }

    pub async fn operation_logs(&self, id: Id, after: Id, limit: i64) -> Result<Vec<LogLine>> {
        self.operation(id).await?;
        Ok(self.store().logs_after(id, after, limit).await?)
    }

    pub async fn cancel_operation(&self, id: Id) -> Result<OperationDetail> {
        match self.store().request_cancel(id, self.now()).await? {
            CancelOutcome::Cancelled | CancelOutcome::Requested => {
                self.engine.signal_cancel(id);
                self.operation(id).await
            }
            CancelOutcome::AlreadyFinished(s) => Err(AppError::InvalidState(format!(
                "operation {id} has already ended ({s})"
            ))),
            CancelOutcome::NotFound => Err(not_found("operation", &id.to_string())),
        }
    }

    /// Aegir 3's Retry button: a new operation, linked to the one that did not succeed.
    pub async fn retry_operation(&self, id: Id) -> Result<Operation> {
        let op = self.operation(id).await?.operation;
        if op.kind == OperationKind::Aegir3Task {
            return Err(AppError::InvalidState(format!(
                "operation {id} is a task Aegir 3 ran, imported as history; it cannot be retried"
            )));
        }
        if !op.status.is_retryable() {
            return Err(AppError::InvalidState(format!(
                "operation {id} is {}; only failed, cancelled or interrupted ones can be retried",
                op.status
            )));
        }
        Ok(self
            .engine
            .enqueue(op.kind, op.target, op.params, Some(op.id))
            .await?)
    }

    // --- imports

    /// Adopt (or with `dry_run`, plan adopting) an Aegir 3 installation. Aegir 3 is only read;
    /// the whole import is one store transaction, so it is all written or not at all.
    pub async fn import_aegir3(&self, req: ImportAegir3) -> Result<ImportReport> {
        use crate::import::{hostmaster::HostmasterError, ImportError};
        let root = req.aegir_root.as_deref().unwrap_or("/var/aegir");
        validate::abs_path("aegir_root", root)?;
        if let Some(url) = &req.hostmaster_db {
            if !(url.starts_with("mysql://") || url.starts_with("mariadb://")) {
                return Err(Invalid::new(
                    "hostmaster_db",
                    "must be a mysql://USER:PASS@HOST/DB URL",
                )
                .into());
            }
        }
        // sqlx names MariaDB's scheme mysql.
        let url = req
            .hostmaster_db
            .as_deref()
            .map(|u| u.replacen("mariadb://", "mysql://", 1));
        let _one_at_a_time = self.imports.lock().await;
        crate::import::run(
            self.store(),
            url.as_deref(),
            std::path::Path::new(root),
            req.dry_run,
            self.now(),
        )
        .await
        .map_err(|e| match e {
            ImportError::Root(m) => Invalid::new("aegir_root", m).into(),
            ImportError::NoHostmaster(m) => Invalid::new("hostmaster_db", m).into(),
            ImportError::Hostmaster(h @ HostmasterError::Connect { .. }) => {
                AppError::Unreachable(h.to_string())
            }
            ImportError::Hostmaster(h) => Invalid::new("hostmaster_db", h.to_string()).into(),
            ImportError::Store(s) => s.into(),
        })
    }

    // --- backups

    pub async fn list_backups(&self, environment: Option<&str>) -> Result<Vec<Backup>> {
        let env_id = match environment {
            Some(uri) => Some(self.environment(uri).await?.id),
            None => None,
        };
        Ok(self.store().list_backups(env_id, false).await?)
    }

    pub async fn backup(&self, id: Id) -> Result<Backup> {
        self.store()
            .backup_by_id(id)
            .await?
            .ok_or_else(|| not_found("backup", &id.to_string()))
    }

    /// Verify (optionally with a restore test) or delete a backup.
    pub async fn backup_action(
        &self,
        id: Id,
        kind: OperationKind,
        restore_test: bool,
    ) -> Result<Operation> {
        let b = self.backup(id).await?;
        if b.status != BackupStatus::Good {
            return Err(AppError::InvalidState(format!(
                "backup {id} is {}",
                b.status
            )));
        }
        let target = TargetRef {
            target_type: TargetType::Backup,
            id: b.id,
            name: b.id.to_string(),
        };
        Ok(self
            .engine
            .enqueue(
                kind,
                target,
                serde_json::json!({ "restore_test": restore_test }),
                None,
            )
            .await?)
    }

    /// The archive of a good backup, opened for download.
    pub async fn open_backup(&self, id: Id) -> Result<(Backup, tokio::fs::File)> {
        let b = self.backup(id).await?;
        if b.status != BackupStatus::Good {
            return Err(AppError::InvalidState(format!(
                "backup {id} is {}",
                b.status
            )));
        }
        let file = tokio::fs::File::open(&b.path).await.map_err(|e| {
            AppError::InvalidState(format!(
                "the archive of backup {id} cannot be read on this aegird's host ({}: {e})",
                b.path
            ))
        })?;
        Ok((b, file))
    }

    /// Queue a scheduled backup for every environment that is due (the daemon's scheduler).
    pub async fn queue_scheduled_backups(&self, default_interval: i64) -> Result<Vec<Operation>> {
        // A failing backup is tried again after an hour (or its own interval, if shorter),
        // not at every tick.
        let due = self
            .store()
            .environments_due_for_backup(self.now(), default_interval, 3600)
            .await?;
        let mut queued = Vec::new();
        for env in due {
            let params = serde_json::json!({
                "reason": BackupReason::Scheduled,
                "description": "scheduled backup",
            });
            queued.push(
                self.engine
                    .enqueue(OperationKind::EnvBackup, env_target(&env), params, None)
                    .await?,
            );
        }
        Ok(queued)
    }
}

fn env_target(env: &Environment) -> TargetRef {
    TargetRef {
        target_type: TargetType::Environment,
        id: env.id,
        name: env.uri.clone(),
    }
}

fn not_found(what: &'static str, key: &str) -> AppError {
    AppError::NotFound {
        what,
        key: key.to_string(),
    }
}

/// The body of `POST /environments/{uri}/{action}`: each action takes only its own fields.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvActionRequest {
    /// backup: a note kept with the backup.
    #[serde(default)]
    pub description: Option<String>,
    /// restore: the backup to restore (its id).
    #[serde(default)]
    pub backup: Option<Id>,
    /// restore: an archive file on aegird's host instead (an Aegir 3 tarball, or one of
    /// ours); it is registered as a backup of the environment first.
    #[serde(default)]
    pub file: Option<String>,
    /// clone: the new environment's uri.
    #[serde(default)]
    pub uri: Option<String>,
    /// clone: the release of the new environment (default: the source's).
    #[serde(default)]
    pub release: Option<String>,
    /// delete: skip the pre-delete backup.
    #[serde(default)]
    pub skip_backup: bool,
}

impl EnvActionRequest {
    /// Refuses fields the action does not take, so a typo'd command does not do something
    /// else than asked.
    fn check_for(&self, action: EnvAction) -> Result<()> {
        let given: [(&str, bool, &[EnvAction]); 6] = [
            (
                "description",
                self.description.is_some(),
                &[EnvAction::Backup],
            ),
            ("backup", self.backup.is_some(), &[EnvAction::Restore]),
            ("file", self.file.is_some(), &[EnvAction::Restore]),
            ("uri", self.uri.is_some(), &[EnvAction::Clone]),
            ("release", self.release.is_some(), &[EnvAction::Clone]),
            ("skip_backup", self.skip_backup, &[EnvAction::Delete]),
        ];
        for (field, present, takes) in given {
            if present && !takes.contains(&action) {
                return Err(
                    Invalid::new(field, format!("{} does not take it", action.as_str())).into(),
                );
            }
        }
        if let Some(d) = &self.description {
            if d.len() > 500 || d.chars().any(char::is_control) {
                return Err(Invalid::new(
                    "description",
                    "must be at most 500 characters, without control characters",
                )
                .into());
            }
        }
        Ok(())
    }
}

/// What `POST /environments/{uri}/{action}` can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvAction {
    Verify,
    Disable,
    Enable,
    Delete,
    Login,
    Backup,
    Restore,
    Clone,
    Migrate,
    Cron,
    /// Move a site adopted from Aegir 3 under aegird.
    Takeover,
}

impl EnvAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvAction::Verify => "verify",
            EnvAction::Disable => "disable",
            EnvAction::Enable => "enable",
            EnvAction::Delete => "delete",
            EnvAction::Login => "login",
            EnvAction::Backup => "backup",
            EnvAction::Restore => "restore",
            EnvAction::Clone => "clone",
            EnvAction::Migrate => "migrate",
            EnvAction::Cron => "cron",
            EnvAction::Takeover => "takeover",
        }
    }
}
