//! Backends: the one place that turns an operation into steps on a real host. Servers go
//! through a [`HostExecutor`] (local now; SSH with the server backend); Kubernetes clusters
//! will go through kube-rs. Application differences belong to app drivers, not here.

pub mod backup;
mod env;
pub mod executor;
pub mod layout;
mod nginx;
mod release;
mod shell;
pub mod ssh;
mod takeover;
mod verify;

use std::sync::Arc;

use async_trait::async_trait;

pub use executor::{CommandOutput, ExecError, HostExecutor, LocalExecutor};
pub use ssh::{SshError, SshKeys};

use crate::engine::{OperationSpec, Plan, PlanError, Planner};
use crate::model::{
    AppKind, BackupReason, BackupStatus, Environment, EnvironmentStatus, OperationKind, Server,
    Transport,
};
use crate::store::Store;

/// The daemon's planner.
#[derive(Debug, Clone)]
pub struct HostPlanner {
    pub local: LocalExecutor,
    pub ssh: SshKeys,
    /// Where releases built from git are cloned on a server (Aegir 3's platforms directory).
    pub releases_dir: String,
    /// Where archives go, and how they are written and pruned.
    pub backups: Arc<backup::Settings>,
}

impl HostPlanner {
    /// SSH keys and connection files live under `<state-dir>/ssh`.
    pub fn new(state_dir: &std::path::Path) -> HostPlanner {
        HostPlanner {
            local: LocalExecutor::default(),
            ssh: SshKeys::new(state_dir.join("ssh")),
            releases_dir: crate::config::DEFAULT_RELEASES_DIR.into(),
            backups: Arc::new(backup::Settings::new(state_dir.join("backups"))),
        }
    }

    pub fn with_backups(mut self, settings: backup::Settings) -> HostPlanner {
        self.backups = Arc::new(settings);
        self
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
            | OperationKind::EnvCron
            | OperationKind::EnvBackup
            | OperationKind::EnvRestore
            | OperationKind::EnvTakeover
            | OperationKind::EnvClone => self.plan_env(store, spec).await,
            // Never queued by aegird; a retry of one is refused before it gets here.
            OperationKind::Aegir3Task => Err(PlanError::NotReady(
                "an imported Aegir 3 task is history and cannot be run".into(),
            )),
            OperationKind::BackupVerify | OperationKind::BackupDelete => {
                let b = store
                    .backup_by_id(spec.target.id)
                    .await?
                    .ok_or_else(|| PlanError::NotFound(format!("backup {}", spec.target.name)))?;
                if b.status != BackupStatus::Good {
                    return Err(PlanError::NotReady(format!(
                        "backup {} is {}",
                        b.id, b.status
                    )));
                }
                let env = store.environment_by_backup(b.id).await?.ok_or_else(|| {
                    PlanError::NotFound(format!("the environment of backup {}", b.id))
                })?;
                // The environment may be deleted since: only its server is needed (for a
                // restore test's throwaway database).
                let (target, _) = self.env_target(store, &env, None, false).await?;
                let t = Arc::new(target);
                let kind = if spec.kind == OperationKind::BackupDelete {
                    backup::Kind::Delete(b)
                } else {
                    backup::Kind::Verify {
                        backup: b,
                        restore_test: spec
                            .params
                            .get("restore_test")
                            .and_then(|v| v.as_bool())
                            .unwrap_or(false),
                    }
                };
                Ok(Plan {
                    steps: vec![backup::ArchiveStep::arc(kind, &t, &self.backups)],
                    resumable: false,
                    on_failure: None,
                })
            }
        }
    }
}

impl HostPlanner {
    async fn plan_env(&self, store: &Store, spec: &OperationSpec) -> Result<Plan, PlanError> {
        let env = store
            .environment_by_id(spec.target.id)
            .await?
            .ok_or_else(|| PlanError::NotFound(format!("environment {}", spec.target.name)))?;
        let title = spec.params.get("title").and_then(|t| t.as_str());
        let aegir3 = if env.managed_by == crate::model::Management::Aegir3 {
            let site = takeover::Aegir3Site::from_origin(env.origin.as_ref()).ok_or_else(|| {
                PlanError::NotReady(format!(
                    "environment {} was imported from Aegir 3 without its site path and vhost; import it again",
                    env.uri
                ))
            })?;
            match spec.kind {
                // Reading the site where Aegir 3 keeps it needs no verified release or server.
                OperationKind::EnvVerify => {
                    let (target, _) = self.env_target(store, &env, None, false).await?;
                    return Ok(takeover::verify_plan(Arc::new(target), site));
                }
                OperationKind::EnvTakeover => Some(site),
                _ => {
                    return Err(PlanError::NotReady(format!(
                        "environment {} is still Aegir 3's: run `aegir env takeover {}` first",
                        env.uri, env.uri
                    )))
                }
            }
        } else if spec.kind == OperationKind::EnvTakeover {
            return Err(PlanError::NotReady(format!(
                "environment {} is aegird's already",
                env.uri
            )));
        } else {
            None
        };
        let (mut target, serving) = self.env_target(store, &env, title, true).await?;
        if aegir3.is_some() && matches!(target.site.app, AppKind::Drupal | AppKind::Drupal7) {
            // Aegir 3 serves the site from the very `sites/<uri>` aegird's steps would write.
            target.drupal_dir = env::DrupalSiteDir::Staged;
        }
        let param = |k: &str| spec.params.get(k);
        let mut archives = env::Archives {
            settings: self.backups.clone(),
            reason: param("reason")
                .and_then(|r| r.as_str())
                .and_then(|r| r.parse().ok())
                .unwrap_or(BackupReason::Manual),
            description: param("description")
                .and_then(|d| d.as_str())
                .map(str::to_string),
            restore: None,
            // Only a site that was there has anything to back up (a failed install has not).
            backup_first: !param("skip_backup")
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
                && matches!(
                    env.status,
                    EnvironmentStatus::Active | EnvironmentStatus::Disabled
                ),
            clone_source: None,
            aegir3,
        };
        match spec.kind {
            OperationKind::EnvRestore => {
                let id = param("backup").and_then(|b| b.as_i64()).ok_or_else(|| {
                    PlanError::NotFound("the backup to restore (parameter \"backup\")".into())
                })?;
                let b = store
                    .backup_by_id(id)
                    .await?
                    .filter(|b| b.status == BackupStatus::Good)
                    .ok_or_else(|| PlanError::NotFound(format!("backup {id}")))?;
                archives.restore = Some(b);
            }
            OperationKind::EnvClone => {
                let id = param("source_id").and_then(|b| b.as_i64()).ok_or_else(|| {
                    PlanError::NotFound("the environment to clone (parameter \"source_id\")".into())
                })?;
                let source = store
                    .environment_by_id(id)
                    .await?
                    .ok_or_else(|| PlanError::NotFound(format!("environment {id}")))?;
                let (source, _) = self.env_target(store, &source, None, true).await?;
                archives.clone_source = Some(source);
            }
            _ => {}
        }
        Ok(env::plan(spec.kind, target, serving, archives))
    }

    /// An environment as steps see it. `strict` refuses what a site cannot be served
    /// without (a verified release, nginx, php-fpm); reading an archive needs none of it.
    async fn env_target(
        &self,
        store: &Store,
        env: &Environment,
        title: Option<&str>,
        strict: bool,
    ) -> Result<(env::Target, nginx::Serving), PlanError> {
        let release = store
            .release_by_name(&env.release)
            .await?
            .ok_or_else(|| PlanError::NotFound(format!("release {}", env.release)))?;
        let server = store
            .server_by_name(&env.server)
            .await?
            .ok_or_else(|| PlanError::NotFound(format!("server {}", env.server)))?;
        let exec = self.executor_for(&server)?;
        let (app, root) = match (release.app_kind, release.path.clone()) {
            (Some(app), Some(root)) => (app, root),
            _ if !strict => (crate::model::AppKind::Php, String::new()),
            _ => {
                return Err(PlanError::NotReady(format!(
                    "release {} has not been verified: run `aegir release verify {}`",
                    release.name, release.name
                )))
            }
        };
        if strict && !server.services.http.iter().any(|s| s.name == "nginx") {
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
            .max_by(|a, b| version_cmp(a, b));
        let php = match php {
            Some(php) => php,
            None if !strict => String::new(),
            None => {
                return Err(PlanError::NotReady(format!(
                    "server {} has no php-fpm: install it and run `aegir server verify {}`",
                    server.name, server.name
                )))
            }
        };
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
        let serving = if env.status == EnvironmentStatus::Disabled {
            nginx::Serving::Disabled
        } else {
            nginx::Serving::Active
        };
        let target = env::Target {
            env_id: env.id,
            site,
            title: title.unwrap_or(&env.uri).to_string(),
            release: release.name.clone(),
            app_version: release.app_version.clone(),
            exec,
            drupal_dir: env::DrupalSiteDir::InPlace,
        };
        Ok((target, serving))
    }
}

/// Orders "8.2" before "8.10".
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    parts(a).cmp(&parts(b))
}
