//! What an operation is made of: a [`Plan`] of idempotent [`Step`]s, each with an undo, as a
//! [`Planner`] builds it from the operation's kind, target and parameters.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::Engine;
use crate::model::{Id, LogLevel, OperationKind, TargetRef, Timestamp};
use crate::store::{Store, StoreError};

/// One step failed; the message is shown to the user and stored on the task.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

impl StepError {
    pub fn new(msg: impl Into<String>) -> Self {
        StepError(msg.into())
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError(e.to_string())
    }
}

/// Why an operation cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The backend this operation needs does not exist yet.
    #[error("{0} is not available yet")]
    NotAvailable(String),
    /// The target is gone.
    #[error("{0} not found")]
    NotFound(String),
    /// The target or what it depends on is not in a state that allows the operation (a
    /// release never verified, a server without php-fpm); the message says what to do.
    #[error("{0}")]
    NotReady(String),
    /// The host side could not be prepared (e.g. SSH files in the state directory).
    #[error("{0}")]
    Host(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An "ensure" step: running it twice leaves the same result as once, so an operation whose
/// worker died can run it again; `undo` reverts it (and copes with it having half-run).
#[async_trait]
pub trait Step: Send + Sync {
    fn name(&self) -> &str;
    /// Does the work; the value returned is stored as the task's output, and later steps read
    /// it through [`StepContext::output`].
    async fn run(&self, cx: &StepContext) -> Result<serde_json::Value, StepError>;
    async fn undo(&self, _cx: &StepContext) -> Result<(), StepError> {
        Ok(())
    }
}

/// The steps of one operation, in order.
pub struct Plan {
    pub steps: Vec<Arc<dyn Step>>,
    /// When the worker dies mid-way, true means "run it again from the step that was
    /// running" (every step is idempotent and nothing is half-made by stopping); false means
    /// "undo the steps that ran and mark the operation interrupted".
    pub resumable: bool,
    /// Runs after the undo when the operation ends without success (e.g. to record the
    /// target as failed).
    pub on_failure: Option<Arc<dyn Step>>,
}

impl Plan {
    pub fn step_names(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.name().to_string()).collect()
    }
}

/// What an operation asks for, before and after it has an id.
#[derive(Debug, Clone)]
pub struct OperationSpec {
    pub kind: OperationKind,
    pub target: TargetRef,
    pub params: serde_json::Value,
}

/// Builds plans. The daemon's planner maps kinds to backends; tests and benchmarks give the
/// engine their own to exercise it without touching a host.
#[async_trait]
pub trait Planner: Send + Sync {
    async fn plan(&self, store: &Store, spec: &OperationSpec) -> Result<Plan, PlanError>;
}

/// What a running step can see and do.
pub struct StepContext {
    pub operation_id: Id,
    pub spec: OperationSpec,
    pub seq: i64,
    pub(super) engine: Engine,
    /// Outputs of the steps that have succeeded so far (including in an earlier attempt).
    pub(super) outputs: BTreeMap<String, serde_json::Value>,
}

impl StepContext {
    pub fn store(&self) -> &Store {
        self.engine.store()
    }

    pub fn now(&self) -> Timestamp {
        self.engine.now()
    }

    /// Append a line to this task's log (stored, then streamed to followers).
    pub async fn log(&self, level: LogLevel, message: impl AsRef<str>) {
        self.engine
            .log(self.operation_id, Some(self.seq), level, message.as_ref())
            .await;
    }

    pub async fn info(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Info, message).await
    }

    /// The output of an earlier step of this operation.
    pub fn output(&self, step: &str) -> Option<&serde_json::Value> {
        self.outputs.get(step)
    }
}
