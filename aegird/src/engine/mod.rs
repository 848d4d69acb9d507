//! The operations engine: claims queued operations from the store under a lease, keeps the
//! lease alive with heartbeats, runs each operation's steps, and recovers operations whose
//! worker died. It deliberately keeps no state of its own that the store does not also hold:
//! a queue message (or a wake-up) only says "look at the store".

mod runner;
pub mod step;

pub use step::{OperationSpec, Plan, PlanError, Planner, Step, StepContext, StepError};

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinSet;

use crate::clock::SharedClock;
use crate::config::EngineConfig;
use crate::model::{Id, LogLevel, Operation, OperationKind, OperationStatus, TargetRef, Timestamp};
use crate::store::{Store, StoreError};

/// Why a running operation is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A user cancelled it: undo, then `cancelled`.
    Cancel,
    /// The daemon is shutting down and the grace period is over: undo, then `interrupted`.
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A cheap handle on the engine; clones share it.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: SharedClock,
    planner: Arc<dyn Planner>,
    cfg: EngineConfig,
    /// This daemon's lease owner name: `<node>/<instance>`.
    owner: String,
    /// `<node>/`: leases held by an earlier life of this daemon start with it.
    owner_prefix: String,
    wake: Notify,
    /// Operation ids whose status or log changed, for live followers.
    events: broadcast::Sender<Id>,
    running: Mutex<HashMap<Id, watch::Sender<Option<StopReason>>>>,
    stopping: AtomicBool,
}

impl Engine {
    pub fn new(
        store: Store,
        clock: SharedClock,
        planner: Arc<dyn Planner>,
        cfg: EngineConfig,
        node_name: &str,
    ) -> Engine {
        let instance: u64 = rand::random();
        let (events, _) = broadcast::channel(1024);
        Engine {
            inner: Arc::new(Inner {
                store,
                clock,
                planner,
                cfg,
                owner: format!("{node_name}/{}-{instance:016x}", std::process::id()),
                owner_prefix: format!("{node_name}/"),
                wake: Notify::new(),
                events,
                running: Mutex::new(HashMap::new()),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Follow changes: each message is the id of an operation whose status or log changed.
    pub fn subscribe(&self) -> broadcast::Receiver<Id> {
        self.inner.events.subscribe()
    }

    fn changed(&self, op: Id) {
        let _ = self.inner.events.send(op);
    }

    /// Plan and queue an operation. Nothing is written when it cannot be planned.
    pub async fn enqueue(
        &self,
        kind: OperationKind,
        target: TargetRef,
        params: serde_json::Value,
        retry_of: Option<Id>,
    ) -> Result<Operation, EngineError> {
        let spec = OperationSpec {
            kind,
            target,
            params,
        };
        let plan = self.inner.planner.plan(&self.inner.store, &spec).await?;
        let op = self
            .inner
            .store
            .enqueue_operation(
                kind,
                &spec.target,
                &spec.params,
                retry_of,
                &plan.step_names(),
                self.now(),
            )
            .await?;
        self.inner.wake.notify_one();
        self.changed(op.id);
        Ok(op)
    }

    /// Ask a running operation of this daemon to stop now (the store already says so, for
    /// the case it runs elsewhere).
    pub fn signal_cancel(&self, op: Id) {
        if let Some(tx) = self.inner.running.lock().unwrap().get(&op) {
            let _ = tx.send(Some(StopReason::Cancel));
        }
        self.changed(op);
    }

    /// Append a log line; a failure to store it is reported on the daemon's own log, and the
    /// operation goes on (losing a line must not fail a backup).
    pub async fn log(&self, op: Id, task_seq: Option<i64>, level: LogLevel, message: &str) {
        match self
            .inner
            .store
            .append_log(op, task_seq, level, message, self.now())
            .await
        {
            Ok(_) => self.changed(op),
            Err(e) => tracing::error!(operation = op, error = %e, "cannot store log line"),
        }
    }

    /// Run the engine until `shutdown` resolves, then stop claiming, give running operations
    /// `shutdown_timeout` to finish, and stop (undo, `interrupted`) the rest.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let mut workers = JoinSet::new();
        self.recover_orphans(&mut workers).await;
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop());
        tokio::pin!(shutdown);
        let poll = self.poll_interval();
        loop {
            self.fill_slots(&mut workers).await;
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.inner.wake.notified() => {}
                Some(_) = workers.join_next() => {}
                _ = tokio::time::sleep(poll) => self.recover_orphans(&mut workers).await,
            }
        }
        self.inner.stopping.store(true, Ordering::SeqCst);
        let n = workers.len();
        if n > 0 {
            tracing::info!(
                running = n,
                "shutting down: waiting up to {:?} for running operations",
                self.inner.cfg.shutdown_timeout
            );
        }
        let drained = tokio::time::timeout(self.inner.cfg.shutdown_timeout, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            for tx in self.inner.running.lock().unwrap().values() {
                let _ = tx.send(Some(StopReason::Shutdown));
            }
            while workers.join_next().await.is_some() {}
        }
        heartbeat.abort();
    }

    /// How often the dispatcher looks at the store without being woken: this is what bounds
    /// queue latency for operations queued by another daemon.
    fn poll_interval(&self) -> Duration {
        (self.inner.cfg.lease / 4).clamp(Duration::from_millis(200), Duration::from_secs(2))
    }

    async fn fill_slots(&self, workers: &mut JoinSet<()>) {
        while !self.inner.stopping.load(Ordering::SeqCst)
            && self.inner.running.lock().unwrap().len() < self.inner.cfg.concurrency
        {
            let now = self.now();
            let lease_until = now.plus_ms(self.inner.cfg.lease.as_millis() as i64);
            match self
                .inner
                .store
                .claim_next(&self.inner.owner, lease_until, now)
                .await
            {
                Ok(Some(op)) => self.spawn(workers, op, runner::Mode::Run),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim operations");
                    break;
                }
            }
        }
    }

    fn spawn(&self, workers: &mut JoinSet<()>, op: Operation, mode: runner::Mode) {
        let (tx, rx) = watch::channel(None);
        self.inner.running.lock().unwrap().insert(op.id, tx);
        self.changed(op.id);
        let engine = self.clone();
        workers.spawn(async move {
            use futures_util::FutureExt;
            let id = op.id;
            // A panicking step must not leave its operation running: the heartbeat would keep
            // its lease alive for ever.
            let run = std::panic::AssertUnwindSafe(runner::run(&engine, op, mode, rx));
            if run.catch_unwind().await.is_err() {
                tracing::error!(operation = id, "a step panicked; the operation is failed");
                let msg = "internal error: a step panicked (see the aegird log); \
                           its steps were not undone";
                engine.log(id, None, LogLevel::Error, msg).await;
                let _ = engine
                    .store()
                    .finish_operation(
                        id,
                        engine.owner(),
                        OperationStatus::Failed,
                        Some(msg),
                        engine.now(),
                    )
                    .await;
            }
            engine.inner.running.lock().unwrap().remove(&id);
            engine.changed(id);
            // A finished operation may unblock another on the same target.
            engine.inner.wake.notify_one();
        });
    }

    /// Keep our leases alive and pass on cancel requests made through another daemon.
    async fn heartbeat_loop(self) {
        let every = self.inner.cfg.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let lease_until = self.now().plus_ms(self.inner.cfg.lease.as_millis() as i64);
            if let Err(e) = self
                .inner
                .store
                .heartbeat(&self.inner.owner, lease_until)
                .await
            {
                tracing::error!(error = %e, "heartbeat failed; leases may expire");
            }
            match self.inner.store.cancel_requested(&self.inner.owner).await {
                Ok(ids) => {
                    for id in ids {
                        self.signal_cancel(id);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read cancel requests"),
            }
        }
    }

    /// Operations left running by a dead worker: resume the idempotent ones, undo and mark
    /// the others interrupted.
    async fn recover_orphans(&self, workers: &mut JoinSet<()>) {
        if self.inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let orphans = match self
            .inner
            .store
            .orphaned_operations(self.now(), &self.inner.owner_prefix, &self.inner.owner)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot look for orphaned operations");
                return;
            }
        };
        for orphan in orphans {
            let op = orphan.operation;
            let spec = runner::spec_of(&op);
            let resumable = match self.inner.planner.plan(&self.inner.store, &spec).await {
                Ok(plan) => plan.resumable,
                Err(_) => false,
            };
            if resumable {
                match self
                    .inner
                    .store
                    .requeue_orphan(op.id, &orphan.lease_owner)
                    .await
                {
                    Ok(true) => {
                        self.log(
                            op.id,
                            None,
                            LogLevel::Warning,
                            &format!(
                                "the worker running this operation ({}) stopped; \
                                 queued again to resume from the step it was on",
                                orphan.lease_owner
                            ),
                        )
                        .await;
                        tracing::warn!(operation = op.id, "resuming orphaned operation");
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(operation = op.id, error = %e, "cannot requeue"),
                }
            } else {
                let lease_until = self.now().plus_ms(self.inner.cfg.lease.as_millis() as i64);
                match self
                    .inner
                    .store
                    .adopt_orphan(op.id, &orphan.lease_owner, &self.inner.owner, lease_until)
                    .await
                {
                    Ok(true) => {
                        tracing::warn!(operation = op.id, "undoing orphaned operation");
                        let reason = format!(
                            "the worker running this operation ({}) stopped",
                            orphan.lease_owner
                        );
                        self.spawn(workers, op, runner::Mode::UndoOrphan { reason });
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(operation = op.id, error = %e, "cannot adopt"),
                }
            }
        }
        self.inner.wake.notify_one();
    }
}
