//! Runs one claimed operation: its steps in order (skipping those an earlier attempt
//! finished), and on failure, cancel or shutdown the undo of what ran, newest first.

use std::collections::BTreeMap;

use tokio::sync::watch;

use super::{Engine, OperationSpec, Plan, StepContext, StopReason};
use crate::model::{LogLevel, Operation, OperationStatus, TaskStatus};

pub(super) enum Mode {
    Run,
    /// A dead worker's operation that cannot be resumed: undo what it did, mark interrupted.
    UndoOrphan {
        reason: String,
    },
}

pub(super) fn spec_of(op: &Operation) -> OperationSpec {
    OperationSpec {
        kind: op.kind,
        target: op.target.clone(),
        params: op.params.clone(),
    }
}

/// How an operation ends, before it is written.
struct Ending {
    status: OperationStatus,
    error: Option<String>,
}

impl Ending {
    fn new(status: OperationStatus, error: impl Into<Option<String>>) -> Self {
        Ending {
            status,
            error: error.into(),
        }
    }

    fn stopped(reason: StopReason) -> Self {
        match reason {
            StopReason::Cancel => Ending::new(
                OperationStatus::Cancelled,
                "cancelled by a user".to_string(),
            ),
            StopReason::Shutdown => Ending::new(
                OperationStatus::Interrupted,
                "the daemon shut down before the operation finished".to_string(),
            ),
        }
    }
}

/// The worker's hold on the operation was lost (its lease expired and another worker took
/// over): stop touching it.
struct LostLease;

/// One operation being run by this worker.
struct Run<'a> {
    engine: &'a Engine,
    op: &'a Operation,
    owner: String,
    cx: StepContext,
    /// Task statuses as this worker knows them, by seq.
    status: Vec<TaskStatus>,
    /// Steps that ran (fully or partly), in the order they ran, for the undo.
    ran: Vec<usize>,
}

pub(super) async fn run(
    engine: &Engine,
    op: Operation,
    mode: Mode,
    mut stop: watch::Receiver<Option<StopReason>>,
) {
    let owner = engine.owner().to_string();
    let spec = spec_of(&op);
    let fail_status = match mode {
        Mode::Run => OperationStatus::Failed,
        Mode::UndoOrphan { .. } => OperationStatus::Interrupted,
    };
    let plan = match engine.inner.planner.plan(engine.store(), &spec).await {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("cannot plan: {e}");
            engine.log(op.id, None, LogLevel::Error, &msg).await;
            finish(engine, &op, &owner, Ending::new(fail_status, msg)).await;
            return;
        }
    };
    let tasks = match engine.store().tasks(op.id).await {
        Ok(t) => t,
        Err(e) => {
            // The lease expires and recovery takes it from here.
            tracing::error!(operation = op.id, error = %e, "cannot read tasks");
            return;
        }
    };
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let planned: Vec<&str> = plan.steps.iter().map(|s| s.name()).collect();
    if names != planned {
        let msg = format!(
            "the steps of this operation changed since it was queued ({} now, {} then); \
             retry it",
            planned.join(", "),
            names.join(", ")
        );
        engine.log(op.id, None, LogLevel::Error, &msg).await;
        finish(engine, &op, &owner, Ending::new(fail_status, msg)).await;
        return;
    }

    let mut run = Run {
        engine,
        op: &op,
        owner: owner.clone(),
        cx: StepContext {
            operation_id: op.id,
            spec,
            seq: 0,
            engine: engine.clone(),
            outputs: BTreeMap::new(),
        },
        status: tasks.iter().map(|t| t.status).collect(),
        ran: Vec::new(),
    };
    for (i, t) in tasks.iter().enumerate() {
        match t.status {
            TaskStatus::Succeeded => {
                run.cx.outputs.insert(t.name.clone(), t.output.clone());
                run.ran.push(i);
            }
            TaskStatus::Running | TaskStatus::Failed => run.ran.push(i),
            _ => {}
        }
    }

    let outcome = match mode {
        Mode::UndoOrphan { reason } => run.abandon(reason).await,
        Mode::Run => run.steps(&plan, &mut stop).await,
    };
    let Ok(ending) = outcome else {
        tracing::warn!(operation = op.id, "lost the lease; another worker has it");
        return;
    };
    if ending.status != OperationStatus::Succeeded {
        if run.undo(&plan).await.is_err() {
            tracing::warn!(operation = op.id, "lost the lease during undo");
            return;
        }
        if let Some(hook) = &plan.on_failure {
            run.cx.seq = -1;
            if let Err(e) = hook.run(&run.cx).await {
                engine
                    .log(
                        op.id,
                        None,
                        LogLevel::Error,
                        &format!("{}: {e}", hook.name()),
                    )
                    .await;
            }
        }
    }
    finish(engine, &op, &owner, ending).await;
}

impl Run<'_> {
    async fn set_task(
        &mut self,
        i: usize,
        status: TaskStatus,
        output: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> Result<(), LostLease> {
        let now = self.engine.now();
        match self
            .engine
            .store()
            .finish_task(
                self.op.id,
                i as i64,
                &self.owner,
                status,
                output,
                error,
                now,
            )
            .await
        {
            Ok(true) => {
                self.status[i] = status;
                self.engine.changed(self.op.id);
                Ok(())
            }
            Ok(false) => Err(LostLease),
            Err(e) => {
                tracing::error!(operation = self.op.id, error = %e, "cannot record a task");
                Err(LostLease)
            }
        }
    }

    /// Run the steps an earlier attempt did not finish.
    async fn steps(
        &mut self,
        plan: &Plan,
        stop: &mut watch::Receiver<Option<StopReason>>,
    ) -> Result<Ending, LostLease> {
        if self.op.attempt > 1 {
            let msg = format!("resuming (attempt {})", self.op.attempt);
            self.engine
                .log(self.op.id, None, LogLevel::Info, &msg)
                .await;
        }
        for (i, step) in plan.steps.iter().enumerate() {
            if self.status[i] == TaskStatus::Succeeded {
                continue;
            }
            if let Some(reason) = *stop.borrow() {
                return Ok(Ending::stopped(reason));
            }
            let now = self.engine.now();
            match self
                .engine
                .store()
                .start_task(self.op.id, i as i64, &self.owner, now)
                .await
            {
                Ok(true) => {}
                Ok(false) => return Err(LostLease),
                Err(e) => {
                    tracing::error!(operation = self.op.id, error = %e, "cannot start a task");
                    return Err(LostLease);
                }
            }
            self.status[i] = TaskStatus::Running;
            self.engine.changed(self.op.id);
            if !self.ran.contains(&i) {
                self.ran.push(i);
            }
            self.cx.seq = i as i64;
            let result = tokio::select! {
                r = step.run(&self.cx) => Some(r),
                _ = stop.wait_for(|s| s.is_some()) => None,
            };
            match result {
                Some(Ok(output)) => {
                    self.set_task(i, TaskStatus::Succeeded, Some(&output), None)
                        .await?;
                    self.cx.outputs.insert(step.name().to_string(), output);
                }
                Some(Err(e)) => {
                    self.cx.log(LogLevel::Error, &e.0).await;
                    self.set_task(i, TaskStatus::Failed, None, Some(&e.0))
                        .await?;
                    let msg = format!("{}: {}", step.name(), e.0);
                    return Ok(Ending::new(OperationStatus::Failed, msg));
                }
                None => {
                    let reason = stop.borrow().unwrap_or(StopReason::Shutdown);
                    let ending = Ending::stopped(reason);
                    self.set_task(i, TaskStatus::Failed, None, ending.error.as_deref())
                        .await?;
                    return Ok(ending);
                }
            }
        }
        Ok(Ending::new(OperationStatus::Succeeded, None))
    }

    /// A dead worker's operation that is not resumable: its running task failed with it.
    async fn abandon(&mut self, reason: String) -> Result<Ending, LostLease> {
        for i in 0..self.status.len() {
            if self.status[i] == TaskStatus::Running {
                self.set_task(i, TaskStatus::Failed, None, Some(&reason))
                    .await?;
            }
        }
        let msg = format!("{reason}; undoing the steps it ran");
        self.engine
            .log(self.op.id, None, LogLevel::Warning, &msg)
            .await;
        Ok(Ending::new(
            OperationStatus::Interrupted,
            format!("{reason}; its steps were undone"),
        ))
    }

    /// Undo every step that ran, newest first. A failing undo is logged and the others still
    /// run: leaving less behind beats stopping half-way.
    async fn undo(&mut self, plan: &Plan) -> Result<(), LostLease> {
        for i in self.ran.clone().into_iter().rev() {
            let step = &plan.steps[i];
            self.cx.seq = i as i64;
            self.cx
                .log(LogLevel::Info, format!("undo: {}", step.name()))
                .await;
            match step.undo(&self.cx).await {
                // A failed task keeps its status and error; the others show they were undone.
                Ok(()) if self.status[i] == TaskStatus::Succeeded => {
                    self.set_task(i, TaskStatus::Undone, None, None).await?
                }
                Ok(()) => {}
                Err(e) => {
                    self.cx
                        .log(
                            LogLevel::Error,
                            format!("undo of {} failed: {e}", step.name()),
                        )
                        .await
                }
            }
        }
        Ok(())
    }
}

async fn finish(engine: &Engine, op: &Operation, owner: &str, ending: Ending) {
    let store = engine.store();
    if let Err(e) = store.skip_pending_tasks(op.id).await {
        tracing::error!(operation = op.id, error = %e, "cannot mark skipped tasks");
    }
    let level = if ending.status == OperationStatus::Succeeded {
        LogLevel::Info
    } else {
        LogLevel::Error
    };
    // Written before the status, so a follower that sees the end has every line.
    engine
        .log(op.id, None, level, &format!("operation {}", ending.status))
        .await;
    match store
        .finish_operation(
            op.id,
            owner,
            ending.status,
            ending.error.as_deref(),
            engine.now(),
        )
        .await
    {
        Ok(true) => tracing::info!(operation = op.id, status = %ending.status, "operation ended"),
        Ok(false) => tracing::warn!(
            operation = op.id,
            "operation was taken over before it ended"
        ),
        Err(e) => tracing::error!(operation = op.id, error = %e, "cannot record the end"),
    }
    engine.changed(op.id);
}
