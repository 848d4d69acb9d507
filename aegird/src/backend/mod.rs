//! Backends: the one place that turns an operation into steps on a real host. Servers go
//! through a [`HostExecutor`] (local now; SSH with the server backend); Kubernetes clusters
//! will go through kube-rs. Application differences belong to app drivers, not here.

pub mod executor;
mod release;
mod shell;
pub mod ssh;
mod verify;

use std::sync::Arc;

use async_trait::async_trait;

pub use executor::{CommandOutput, ExecError, HostExecutor, LocalExecutor};
pub use ssh::{SshError, SshKeys};

use crate::engine::{OperationSpec, Plan, PlanError, Planner};
use crate::model::{OperationKind, Server, Transport};
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
        }
    }
}
