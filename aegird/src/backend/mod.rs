//! Backends: the one place that turns an operation into steps on a real host. Servers go
//! through a [`HostExecutor`] (local now; SSH with the server backend); Kubernetes clusters
//! will go through kube-rs. Application differences belong to app drivers, not here.

mod env;
pub mod executor;
pub mod layout;
mod nginx;
mod release;
mod shell;
pub mod ssh;
mod verify;

use std::sync::Arc;

use async_trait::async_trait;

pub use executor::{CommandOutput, ExecError, HostExecutor, LocalExecutor};
pub use ssh::{SshError, SshKeys};

use crate::engine::{OperationSpec, Plan, PlanError, Planner};
use crate::model::{EnvironmentStatus, OperationKind, Server, Transport};
use crate::store::Store;

/// The daemon's planner.
#[derive(Debug, Clone)]
pub struct HostPlanner {
    pub local: LocalExecutor,
    pub ssh: SshKeys,
    /// Where releases built from git are cloned on a server (Aegir 3's platforms directory).
    pub releases_dir: String,
}

impl HostPlanner {
    /// SSH keys and connection files live under `<state-dir>/ssh`.
    pub fn new(state_dir: &std::path::Path) -> HostPlanner {
        HostPlanner {
            local: LocalExecutor::default(),
            ssh: SshKeys::new(state_dir.join("ssh")),
            releases_dir: crate::config::DEFAULT_RELEASES_DIR.into(),
        }
    }

    pub fn with_releases_dir(mut self, dir: impl Into<String>) -> HostPlanner {
        self.releases_dir = dir.into();
        self
    }

    /// Picks how to reach a server: the one place that knows about transports.
    pub fn executor_for(&self, server: &Server) -> Result<Arc<dyn HostExecutor>, PlanError> {
        match server.transport {
            Transport::Local => Ok(Arc::new(self.local.clone())),
            Transport::Ssh => {
                let (Some(user), Some(host), Some(port), Some(key)) = (
                    &server.ssh_user,
                    &server.ssh_host,
                    server.ssh_port,
                    &server.ssh_host_key,
                ) else {
                    return Err(PlanError::NotFound(format!(
                        "the SSH address or pinned host key of server {}",
                        server.name
                    )));
                };
                let exec = self
                    .ssh
                    .executor(server.id, user, host, port, key)
                    .map_err(|e| PlanError::Host(format!("cannot prepare SSH: {e}")))?;
                Ok(Arc::new(exec))
            }
        }
    }
}

#[async_trait]
impl Planner for HostPlanner {
    async fn plan(&self, store: &Store, spec: &OperationSpec) -> Result<Plan, PlanError> {
        match spec.kind {
            OperationKind::ServerVerify => {
                let server = store
                    .server_by_id(spec.target.id)
                    .await?
                    .ok_or_else(|| PlanError::NotFound(format!("server {}", spec.target.name)))?;
                let exec = self.executor_for(&server)?;
                Ok(verify::plan(server.id, exec))
            }
            OperationKind::ReleaseVerify => {
                let release = store
                    .release_by_id(spec.target.id)
                    .await?
                    .ok_or_else(|| PlanError::NotFound(format!("release {}", spec.target.name)))?;
                let Some(server_name) = &release.server else {
                    return Err(PlanError::NotAvailable(
                        "releases on clusters (they come with the Kubernetes backend)".into(),
                    ));
                };
                let server = store
                    .server_by_name(server_name)
                    .await?
                    .ok_or_else(|| PlanError::NotFound(format!("server {server_name}")))?;
                let project = store
                    .project_by_name(&release.project)
                    .await?
                    .ok_or_else(|| PlanError::NotFound(format!("project {}", release.project)))?;
                // A git release always plans its clone step (which keeps an existing clone),
                // so the plan is the same when it is queued and when it resumes.
                let (path, git) = match (&project.git_url, &release.path) {
                    (Some(url), path) => (
                        path.clone().unwrap_or_else(|| {
                            format!(
                                "{}/{}",
                                self.releases_dir.trim_end_matches('/'),
                                release.name
                            )
                        }),
                        Some(release::GitSource {
                            url: url.clone(),
                            git_ref: release.git_ref.clone(),
                        }),
                    ),
                    (None, Some(path)) => (path.clone(), None),
                    (None, None) => {
                        return Err(PlanError::NotFound(format!(
                            "the codebase directory of release {}",
                            release.name
                        )))
                    }
                };
                let exec = self.executor_for(&server)?;
                Ok(release::plan(release.id, path, git, exec))
            }
            OperationKind::EnvInstall
            | OperationKind::EnvVerify
            | OperationKind::EnvDisable
            | OperationKind::EnvEnable
            | OperationKind::EnvDelete
            | OperationKind::EnvLogin
            | OperationKind::EnvCron => self.plan_env(store, spec).await,
        }
    }
}

impl HostPlanner {
    async fn plan_env(&self, store: &Store, spec: &OperationSpec) -> Result<Plan, PlanError> {
        let env = store
            .environment_by_id(spec.target.id)
            .await?
            .ok_or_else(|| PlanError::NotFound(format!("environment {}", spec.target.name)))?;
        let release = store
            .release_by_name(&env.release)
            .await?
            .ok_or_else(|| PlanError::NotFound(format!("release {}", env.release)))?;
        let server = store
            .server_by_name(&env.server)
            .await?
            .ok_or_else(|| PlanError::NotFound(format!("server {}", env.server)))?;
        let (Some(app), Some(root)) = (release.app_kind, release.path.clone()) else {
            return Err(PlanError::NotReady(format!(
                "release {} has not been verified: run `aegir release verify {}`",
                release.name, release.name
            )));
        };
        if !server.services.http.iter().any(|s| s.name == "nginx") {
            return Err(PlanError::NotReady(format!(
                "server {} had no nginx at its last `aegir server verify {}`: aegird serves \
                 sites through nginx (Apache is not supported yet)",
                server.name, server.name
            )));
        }
        // The newest PHP the server has; aegird's pool for it is made by server verify.
        let php = server
            .services
            .php_fpm
            .iter()
            .map(|s| verify::php_branch(&s.version))
            .max_by(|a, b| version_cmp(a, b))
            .ok_or_else(|| {
                PlanError::NotReady(format!(
                    "server {} has no php-fpm: install it and run `aegir server verify {}`",
                    server.name, server.name
                ))
            })?;
        let key = env
            .db_name
            .clone()
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| {
                PlanError::Host(format!(
                    "environment {} has no valid database name",
                    env.uri
                ))
            })?;
        let site = layout::Site {
            uri: env.uri.clone(),
            aliases: env.aliases.clone(),
            redirect_aliases: env.redirect_aliases,
            key,
            app,
            root,
            docroot: release.docroot.clone().unwrap_or_default(),
            php,
        };
        let title = spec
            .params
            .get("title")
            .and_then(|t| t.as_str())
            .unwrap_or(&env.uri)
            .to_string();
        let serving = if env.status == EnvironmentStatus::Disabled {
            nginx::Serving::Disabled
        } else {
            nginx::Serving::Active
        };
        let target = env::Target {
            env_id: env.id,
            site,
            title,
            exec: self.executor_for(&server)?,
        };
        Ok(env::plan(spec.kind, target, serving))
    }
}

/// Orders "8.2" before "8.10".
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    parts(a).cmp(&parts(b))
}
