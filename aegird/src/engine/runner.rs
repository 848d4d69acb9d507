//! Runs one claimed operation: its steps in order (skipping those an earlier attempt
//! finished), and on failure, cancel or shutdown the undo of what ran, newest first.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Engine, OperationSpec, Step, StepContext, StopReason};
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

pub(super) async fn run(
    engine: &Engine,
    op: Operation,
    mode: Mode,
    mut stop: watch::Receiver<Option<StopReason>>,
) {
    let store = engine.store();
    let owner = engine.owner().to_string();
    let spec = spec_of(&op);
    let plan = match engine.inner.planner.plan(store, &spec).await {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("cannot plan: {e}");
            engine.log(op.id, None, LogLevel::Error, &msg).await;
            finish(
                engine,
                &op,
                &owner,
                Ending {
                    status: if matches!(mode, Mode::Run) {
                        OperationStatus::Failed
                    } else {
                        OperationStatus::Interrupted
                    },
                    error: Some(msg),
                },
            )
            .await;
            return;
        }
    };
    let tasks = match store.tasks(op.id).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(operation = op.id, error = %e, "cannot read tasks");
            return; // the lease expires and recovery takes it from here
        }
    };
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let planned: Vec<&str> = plan.steps.iter().map(|s| s.name()).collect();
    let mut cx = StepContext {
        operation_id: op.id,
        spec,
        seq: 0,
        engine: engine.clone(),
        outputs: BTreeMap::new(),
    };
    if names != planned {
        let msg = format!(
            "the steps of this operation changed since it was queued ({} now, {} then); \
             retry it",
            planned.join(", "),
            names.join(", ")
        );
        engine.log(op.id, None, LogLevel::Error, &msg).await;
        finish(
            engine,
            &op,
            &owner,
            Ending {
                status: OperationStatus::Failed,
                error: Some(msg),
            },
        )
        .await;
        return;
    }

    // Steps that ran (fully or partly) in any attempt, for the undo.
    let mut ran: Vec<usize> = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        if t.status == TaskStatus::Succeeded {
            cx.outputs.insert(t.name.clone(), t.output.clone());
            ran.push(i);
        } else if t.status == TaskStatus::Running || t.status == TaskStatus::Failed {
            ran.push(i);
        }
    }

    let ending = match mode {
        Mode::UndoOrphan { reason } => {
            for (i, t) in tasks.iter().enumerate() {
                if t.status == TaskStatus::Running {
                    let _ = store
                        .finish_task(
                            op.id,
                            i as i64,
                            TaskStatus::Failed,
                            None,
                            Some(&reason),
                            engine.now(),
                        )
                        .await;
                }
            }
            engine
                .log(
                    op.id,
                    None,
                    LogLevel::Warning,
                    &format!("{reason}; undoing the steps it ran"),
                )
                .await;
            Ending {
                status: OperationStatus::Interrupted,
                error: Some(format!("{reason}; its steps were undone")),
            }
        }
        Mode::Run => {
            if op.attempt > 1 {
                engine
                    .log(
                        op.id,
                        None,
                        LogLevel::Info,
                        &format!("resuming (attempt {})", op.attempt),
                    )
                    .await;
            }
            let mut ending = Ending {
                status: OperationStatus::Succeeded,
                error: None,
            };
            for (i, step) in plan.steps.iter().enumerate() {
                if tasks[i].status == TaskStatus::Succeeded {
                    continue;
                }
                if let Some(reason) = *stop.borrow() {
                    ending = stopped(reason);
                    break;
                }
                let now = engine.now();
                match store.start_task(op.id, i as i64, &owner, now).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Another worker holds it now (our lease expired): leave it alone.
                        tracing::warn!(operation = op.id, "lost the lease; stopping");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(operation = op.id, error = %e, "cannot start task");
                        return;
                    }
                }
                engine.changed(op.id);
                if !ran.contains(&i) {
                    ran.push(i);
                }
                cx.seq = i as i64;
                let result = tokio::select! {
                    r = step.run(&cx) => Some(r),
                    _ = stop.wait_for(|s| s.is_some()) => None,
                };
                let now = engine.now();
                match result {
                    Some(Ok(output)) => {
                        if let Err(e) = store
                            .finish_task(
                                op.id,
                                i as i64,
                                TaskStatus::Succeeded,
                                Some(&output),
                                None,
                                now,
                            )
                            .await
                        {
                            tracing::error!(operation = op.id, error = %e, "cannot record task");
                            return;
                        }
                        cx.outputs.insert(step.name().to_string(), output);
                    }
                    Some(Err(e)) => {
                        cx.log(LogLevel::Error, &e.0).await;
                        let _ = store
                            .finish_task(op.id, i as i64, TaskStatus::Failed, None, Some(&e.0), now)
                            .await;
                        ending = Ending {
                            status: OperationStatus::Failed,
                            error: Some(format!("{}: {}", step.name(), e.0)),
                        };
                        break;
                    }
                    None => {
                        let reason = stop.borrow().unwrap_or(StopReason::Shutdown);
                        ending = stopped(reason);
                        let _ = store
                            .finish_task(
                                op.id,
                                i as i64,
                                TaskStatus::Failed,
                                None,
                                ending.error.as_deref(),
                                now,
                            )
                            .await;
                        break;
                    }
                }
                engine.changed(op.id);
            }
            ending
        }
    };

    if ending.status != OperationStatus::Succeeded {
        undo(engine, &plan.steps, &ran, &mut cx).await;
        if let Some(hook) = &plan.on_failure {
            cx.seq = -1;
            if let Err(e) = hook.run(&cx).await {
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

fn stopped(reason: StopReason) -> Ending {
    match reason {
        StopReason::Cancel => Ending {
            status: OperationStatus::Cancelled,
            error: Some("cancelled by a user".into()),
        },
        StopReason::Shutdown => Ending {
            status: OperationStatus::Interrupted,
            error: Some("the daemon shut down before the operation finished".into()),
        },
    }
}

/// Undo every step that ran, newest first. A failing undo is logged and the others still
/// run: leaving less behind beats stopping half-way.
async fn undo(engine: &Engine, steps: &[Arc<dyn Step>], ran: &[usize], cx: &mut StepContext) {
    let op = cx.operation_id;
    for &i in ran.iter().rev() {
        let step = &steps[i];
        cx.seq = i as i64;
        cx.log(LogLevel::Info, format!("undo: {}", step.name()))
            .await;
        match step.undo(cx).await {
            Ok(()) => {
                // A failed task keeps its status (and error); the others show they were undone.
                let tasks = engine.store().tasks(op).await.unwrap_or_default();
                if tasks
                    .get(i)
                    .is_some_and(|t| t.status == TaskStatus::Succeeded)
                {
                    let _ = engine
                        .store()
                        .finish_task(op, i as i64, TaskStatus::Undone, None, None, engine.now())
                        .await;
                }
            }
            Err(e) => {
                cx.log(
                    LogLevel::Error,
                    format!("undo of {} failed: {e}", step.name()),
                )
                .await
            }
        }
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
