//! Backends: the one place that turns an operation into steps on a real host. Servers go
//! through a [`HostExecutor`] (local now; SSH with the server backend); Kubernetes clusters
//! will go through kube-rs. Application differences belong to app drivers, not here.

pub mod executor;
mod release;
mod shell;
mod verify;

use std::sync::Arc;

use async_trait::async_trait;

pub use executor::{CommandOutput, ExecError, HostExecutor, LocalExecutor};

use crate::engine::{OperationSpec, Plan, PlanError, Planner};
use crate::model::{OperationKind, Server, Transport};
use crate::store::Store;

/// The daemon's planner.
#[derive(Debug, Default, Clone)]
pub struct HostPlanner {
    pub local: LocalExecutor,
}

/// Picks how to reach a server.
pub fn executor_for(
    server: &Server,
    local: &LocalExecutor,
) -> Result<Arc<dyn HostExecutor>, PlanError> {
    match server.transport {
        Transport::Local => Ok(Arc::new(local.clone())),
        Transport::Ssh => Err(PlanError::NotAvailable(
            "reaching servers over SSH (it comes with the server backend)".into(),
        )),
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
                let exec = executor_for(&server, &self.local)?;
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
                let Some(path) = release.path.clone() else {
                    return Err(PlanError::NotAvailable(
                        "building releases from git (it comes with the server backend)".into(),
                    ));
                };
                let exec = executor_for(&server, &self.local)?;
                Ok(release::plan(release.id, path, exec))
            }
        }
    }
}
