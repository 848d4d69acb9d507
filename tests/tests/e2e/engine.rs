//! Operations engine behaviour, in process, with an instrumented planner whose steps record
//! when they start, end and are undone: exclusivity per target, the global limit, undo on
//! failure, cancel, retry, recovery of orphaned operations and shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aegir_tests::{Backend, TestDb};
use aegird::app::{App, AppError};
use aegird::backend::SshKeys;
use aegird::clock::{Clock, ManualClock, SharedClock, SystemClock};
use aegird::config::EngineConfig;
use aegird::engine::{
    Engine, OperationSpec, Plan, PlanError, Planner, Step, StepContext, StepError,
};
use aegird::model::*;
use aegird::store::Store;
use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Start,
    End,
    Undo,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub op: Id,
    pub step: String,
    pub what: What,
    pub at: Instant,
}

/// Everything the test steps did, in order.
#[derive(Default, Clone)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Recorder {
    fn push(&self, op: Id, step: &str, what: What) {
        self.events.lock().unwrap().push(Event {
            op,
            step: step.to_string(),
            what,
            at: Instant::now(),
        });
    }
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
    fn of(&self, op: Id, what: What) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.op == op && e.what == what)
            .map(|e| e.step)
            .collect()
    }
}

/// Plans from the operation's params: `{"steps": [{"name", "ms", "fail"}], "resumable"}`.
pub struct TestPlanner {
    pub rec: Recorder,
}

struct TestStep {
    name: String,
    ms: u64,
    fail: bool,
    rec: Recorder,
}

#[async_trait]
impl Step for TestStep {
    fn name(&self) -> &str {
        &self.name
    }
    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        self.rec.push(cx.operation_id, &self.name, What::Start);
        let now = self.rec.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.rec.max_running.fetch_max(now, Ordering::SeqCst);
        // Decrement even when the runner drops this future (cancel, shutdown).
        struct Guard(Arc<AtomicUsize>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _g = Guard(self.rec.running.clone());
        cx.info(format!("step {} running", self.name)).await;
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        if self.name == "panics" {
            panic!("a bug in a step");
        }
        if self.fail {
            return Err(StepError::new(format!("{} failed on purpose", self.name)));
        }
        self.rec.push(cx.operation_id, &self.name, What::End);
        Ok(json!({ "ran": self.name }))
    }
    async fn undo(&self, cx: &StepContext) -> Result<(), StepError> {
        self.rec.push(cx.operation_id, &self.name, What::Undo);
        Ok(())
    }
}

#[async_trait]
impl Planner for TestPlanner {
    async fn plan(&self, _store: &Store, spec: &OperationSpec) -> Result<Plan, PlanError> {
        let steps = spec.params["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                Arc::new(TestStep {
                    name: s["name"].as_str().unwrap_or("step").to_string(),
                    ms: s["ms"].as_u64().unwrap_or(0),
                    fail: s["fail"].as_bool().unwrap_or(false),
                    rec: self.rec.clone(),
                }) as Arc<dyn Step>
            })
            .collect();
        Ok(Plan {
            steps,
            resumable: spec.params["resumable"].as_bool().unwrap_or(true),
            on_failure: None,
        })
    }
}

pub fn steps(spec: &[(&str, u64, bool)]) -> Value {
    json!({ "steps": spec.iter().map(|(n, ms, fail)| json!({"name": n, "ms": ms, "fail": fail})).collect::<Vec<_>>() })
}

pub fn cfg(concurrency: usize) -> EngineConfig {
    EngineConfig {
        concurrency,
        lease: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(5),
    }
}

/// A running engine over a test store.
pub struct Harness {
    pub db: TestDb,
    pub app: App,
    pub rec: Recorder,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub async fn start(db: TestDb, cfg: EngineConfig, node: &str, clock: SharedClock) -> Harness {
        let rec = Recorder::default();
        let engine = Engine::new(
            db.store.clone(),
            clock,
            Arc::new(TestPlanner { rec: rec.clone() }),
            cfg,
            node,
        );
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(engine.clone().run(async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        let ssh = SshKeys::new(db.dir.path().join("ssh"));
        Harness {
            db,
            app: App::new(engine, ssh),
            rec,
            stop,
            task: Some(task),
        }
    }

    pub async fn new(backend: Backend, cfg: EngineConfig) -> Harness {
        Harness::start(
            TestDb::new(backend).await,
            cfg,
            "test",
            Arc::new(SystemClock),
        )
        .await
    }

    pub fn store(&self) -> &Store {
        &self.db.store
    }

    pub async fn enqueue(&self, target: Id, params: Value) -> Operation {
        self.app
            .engine()
            .enqueue(
                OperationKind::ServerVerify,
                target_ref(target),
                params,
                None,
            )
            .await
            .expect("enqueue")
    }

    /// Stop the engine (SIGTERM path) and wait for it.
    pub async fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("engine stops")
                .unwrap();
        }
    }
}

pub fn target_ref(id: Id) -> TargetRef {
    TargetRef {
        target_type: TargetType::Server,
        id,
        name: format!("s{id}"),
    }
}

/// Wait until the operation has ended.
pub async fn wait_final(store: &Store, id: Id) -> Operation {
    wait_final_within(store, id, Duration::from_secs(30)).await
}

/// Wait until the operation has ended, failing the test after `within`.
pub async fn wait_final_within(store: &Store, id: Id, within: Duration) -> Operation {
    let deadline = Instant::now() + within;
    loop {
        let op = store.operation(id).await.unwrap().unwrap();
        if op.status.is_final() {
            return op;
        }
        assert!(
            Instant::now() < deadline,
            "operation {id} still {}",
            op.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until a step of the operation has started.
pub async fn wait_started(rec: &Recorder, op: Id, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rec.of(op, What::Start).iter().any(|s| s == step) {
        assert!(
            Instant::now() < deadline,
            "step {step} of {op} never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn task_statuses(store: &Store, op: Id) -> Vec<(String, TaskStatus)> {
    store
        .tasks(op)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.status))
        .collect()
}

async fn no_overlap_on_one_target(backend: Backend) {
    let mut h = Harness::new(backend, cfg(4)).await;
    let mut ops = Vec::new();
    for i in 0..5 {
        for target in [1, 2] {
            let op = h.enqueue(target, steps(&[("work", 40, false)])).await;
            ops.push((op.id, target, i));
        }
    }
    for (id, _, _) in &ops {
        assert_eq!(
            wait_final(h.store(), *id).await.status,
            OperationStatus::Succeeded
        );
    }
    let events = h.rec.events();
    let span = |op: Id| {
        let start = events
            .iter()
            .find(|e| e.op == op && e.what == What::Start)
            .unwrap()
            .at;
        let end = events
            .iter()
            .find(|e| e.op == op && e.what == What::End)
            .unwrap()
            .at;
        (start, end)
    };
    let mut overlapped_across_targets = false;
    for (a, ta, _) in &ops {
        for (b, tb, _) in &ops {
            if a >= b {
                continue;
            }
            let (sa, ea) = span(*a);
            let (sb, eb) = span(*b);
            let overlap = sa < eb && sb < ea;
            if ta == tb {
                assert!(!overlap, "operations {a} and {b} on target {ta} overlapped");
                // Same target: in queue order.
                assert!(ea <= sb, "operation {b} started before {a} ended");
            } else if overlap {
                overlapped_across_targets = true;
            }
        }
    }
    // Otherwise the test would pass with an engine that runs one thing at a time.
    assert!(
        overlapped_across_targets,
        "different targets never ran in parallel"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn mutating_operations_on_one_target_never_overlap_sqlite() {
    no_overlap_on_one_target(Backend::Sqlite).await;
}

#[tokio::test]
async fn mutating_operations_on_one_target_never_overlap_postgres() {
    no_overlap_on_one_target(Backend::Postgres).await;
}

#[tokio::test]
async fn global_concurrency_limit_holds() {
    let mut h = Harness::new(Backend::Sqlite, cfg(2)).await;
    let mut ids = Vec::new();
    for target in 1..=8 {
        ids.push(h.enqueue(target, steps(&[("work", 60, false)])).await.id);
    }
    for id in ids {
        wait_final(h.store(), id).await;
    }
    assert_eq!(h.rec.max_running.load(Ordering::SeqCst), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn a_failed_step_undoes_what_ran_newest_first() {
    let mut h = Harness::new(Backend::Sqlite, cfg(2)).await;
    let op = h
        .enqueue(
            1,
            steps(&[
                ("a", 0, false),
                ("b", 0, false),
                ("c", 0, true),
                ("d", 0, false),
            ]),
        )
        .await;
    let done = wait_final(h.store(), op.id).await;
    assert_eq!(done.status, OperationStatus::Failed);
    assert!(done
        .error
        .as_deref()
        .unwrap()
        .contains("c failed on purpose"));
    assert_eq!(h.rec.of(op.id, What::Undo), ["c", "b", "a"]);
    assert_eq!(h.rec.of(op.id, What::Start), ["a", "b", "c"]);
    assert_eq!(
        task_statuses(h.store(), op.id).await,
        [
            ("a".to_string(), TaskStatus::Undone),
            ("b".to_string(), TaskStatus::Undone),
            ("c".to_string(), TaskStatus::Failed),
            ("d".to_string(), TaskStatus::Skipped),
        ]
    );
    let logs = h.store().logs_after(op.id, 0, 100).await.unwrap();
    assert!(logs
        .iter()
        .any(|l| l.message.contains("c failed on purpose")));
    assert!(logs.iter().any(|l| l.message == "undo: a"));
    h.shutdown().await;
}

#[tokio::test]
async fn cancel_stops_a_running_operation_and_drops_a_queued_one() {
    let mut h = Harness::new(Backend::Sqlite, cfg(4)).await;
    let running = h
        .enqueue(1, steps(&[("first", 0, false), ("slow", 30_000, false)]))
        .await;
    let queued = h.enqueue(1, steps(&[("never", 0, false)])).await;
    wait_started(&h.rec, running.id, "slow").await;

    let d = h.app.cancel_operation(queued.id).await.unwrap();
    assert_eq!(d.operation.status, OperationStatus::Cancelled);
    let t0 = Instant::now();
    h.app.cancel_operation(running.id).await.unwrap();
    let done = wait_final(h.store(), running.id).await;
    assert_eq!(done.status, OperationStatus::Cancelled);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "cancel took {:?}",
        t0.elapsed()
    );
    assert_eq!(h.rec.of(running.id, What::Undo), ["slow", "first"]);
    assert!(h.rec.of(queued.id, What::Start).is_empty());
    assert_eq!(
        wait_final(h.store(), queued.id).await.status,
        OperationStatus::Cancelled
    );
    // Cancelling what has ended is refused and changes nothing.
    let err = h.app.cancel_operation(running.id).await.unwrap_err();
    assert!(matches!(err, AppError::InvalidState(_)), "{err:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn retry_makes_a_new_linked_operation() {
    let mut h = Harness::new(Backend::Sqlite, cfg(2)).await;
    let failed = h.enqueue(1, steps(&[("x", 0, true)])).await;
    assert_eq!(
        wait_final(h.store(), failed.id).await.status,
        OperationStatus::Failed
    );
    let retry = h.app.retry_operation(failed.id).await.unwrap();
    assert_eq!(retry.retry_of, Some(failed.id));
    assert_ne!(retry.id, failed.id);
    assert_eq!(retry.kind, failed.kind);
    assert_eq!(retry.target, failed.target);
    wait_final(h.store(), retry.id).await;

    let ok = h.enqueue(2, steps(&[("y", 0, false)])).await;
    assert_eq!(
        wait_final(h.store(), ok.id).await.status,
        OperationStatus::Succeeded
    );
    assert!(matches!(
        h.app.retry_operation(ok.id).await.unwrap_err(),
        AppError::InvalidState(_)
    ));
    h.shutdown().await;
}

/// Leave an operation as a dead worker would: claimed by `owner`, step 0 done, step 1 running.
async fn orphan(store: &Store, owner: &str, resumable: bool, lease_until: Timestamp) -> Id {
    let mut params = steps(&[("a", 0, false), ("b", 0, false), ("c", 0, false)]);
    params["resumable"] = json!(resumable);
    let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let now = SystemClock.now();
    let op = store
        .enqueue_operation(
            OperationKind::ServerVerify,
            &target_ref(1),
            &params,
            None,
            &names,
            now,
        )
        .await
        .unwrap();
    let claimed = store
        .claim_next(owner, lease_until, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, op.id);
    assert!(store.start_task(op.id, 0, owner, now).await.unwrap());
    assert!(store
        .finish_task(
            op.id,
            0,
            owner,
            TaskStatus::Succeeded,
            Some(&json!({"ran": "a"})),
            None,
            now,
        )
        .await
        .unwrap());
    assert!(store.start_task(op.id, 1, owner, now).await.unwrap());
    op.id
}

#[tokio::test]
async fn a_dead_workers_idempotent_operation_resumes_where_it_stopped() {
    let db = TestDb::new(Backend::Sqlite).await;
    let far = SystemClock.now().plus_ms(3_600_000);
    // An earlier life of this daemon (same node name), lease still valid: it is ours to
    // recover at once, without waiting for the lease.
    let id = orphan(&db.store, "test/earlier-life", true, far).await;
    let mut h = Harness::start(db, cfg(2), "test", Arc::new(SystemClock)).await;
    let done = wait_final(h.store(), id).await;
    assert_eq!(done.status, OperationStatus::Succeeded);
    assert_eq!(done.attempt, 2);
    // Step a had finished: it is not run again; b was interrupted: it runs again.
    assert_eq!(h.rec.of(id, What::Start), ["b", "c"]);
    assert!(h.rec.of(id, What::Undo).is_empty());
    let logs = h.store().logs_after(id, 0, 100).await.unwrap();
    assert!(logs
        .iter()
        .any(|l| l.message.contains("queued again to resume")));
    h.shutdown().await;
}

#[tokio::test]
async fn a_dead_workers_other_operation_is_undone_and_interrupted() {
    let db = TestDb::new(Backend::Sqlite).await;
    let far = SystemClock.now().plus_ms(3_600_000);
    let id = orphan(&db.store, "test/earlier-life", false, far).await;
    let mut h = Harness::start(db, cfg(2), "test", Arc::new(SystemClock)).await;
    let done = wait_final(h.store(), id).await;
    assert_eq!(done.status, OperationStatus::Interrupted);
    assert!(
        h.rec.of(id, What::Start).is_empty(),
        "nothing may run again"
    );
    assert_eq!(h.rec.of(id, What::Undo), ["b", "a"]);
    assert_eq!(
        task_statuses(h.store(), id).await,
        [
            ("a".to_string(), TaskStatus::Undone),
            ("b".to_string(), TaskStatus::Failed),
            ("c".to_string(), TaskStatus::Skipped),
        ]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn another_nodes_operation_is_recovered_only_when_its_lease_expires() {
    let db = TestDb::new(Backend::Postgres).await;
    let clock = ManualClock::new(SystemClock.now());
    let id = orphan(&db.store, "other-node/1", true, clock.now().plus_ms(10_000)).await;
    let mut h = Harness::start(db, cfg(2), "test", Arc::new(clock.clone())).await;
    // Several dispatcher polls go by: the lease is valid, so it is left alone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let op = h.store().operation(id).await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Running);
    assert!(h.rec.of(id, What::Start).is_empty());
    clock.advance_ms(11_000);
    let done = wait_final(h.store(), id).await;
    assert_eq!(done.status, OperationStatus::Succeeded);
    assert_eq!(h.rec.of(id, What::Start), ["b", "c"]);
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_short_work_finish_and_interrupts_long_work() {
    let mut c = cfg(4);
    c.shutdown_timeout = Duration::from_millis(500);
    let mut h = Harness::new(Backend::Sqlite, c).await;
    let short = h.enqueue(1, steps(&[("quick", 200, false)])).await;
    let long = h
        .enqueue(
            2,
            steps(&[("prepare", 0, false), ("forever", 60_000, false)]),
        )
        .await;
    let queued = h.enqueue(1, steps(&[("later", 0, false)])).await;
    wait_started(&h.rec, short.id, "quick").await;
    wait_started(&h.rec, long.id, "forever").await;
    let t0 = Instant::now();
    h.shutdown().await;
    assert!(t0.elapsed() < Duration::from_secs(10));
    let store = h.store();
    assert_eq!(
        store.operation(short.id).await.unwrap().unwrap().status,
        OperationStatus::Succeeded
    );
    let long = store.operation(long.id).await.unwrap().unwrap();
    assert_eq!(long.status, OperationStatus::Interrupted);
    assert_eq!(h.rec.of(long.id, What::Undo), ["forever", "prepare"]);
    // Not claimed during shutdown: still queued for the next start.
    assert_eq!(
        store.operation(queued.id).await.unwrap().unwrap().status,
        OperationStatus::Queued
    );
}

#[tokio::test]
async fn a_panicking_step_fails_its_operation_instead_of_leaving_it_running() {
    let mut h = Harness::new(Backend::Sqlite, cfg(1)).await;
    let op = h
        .enqueue(1, steps(&[("a", 0, false), ("panics", 0, false)]))
        .await;
    let done = wait_final(h.store(), op.id).await;
    assert_eq!(done.status, OperationStatus::Failed);
    assert!(done.error.as_deref().unwrap().contains("panicked"));
    // The slot was freed: the next operation runs (concurrency is 1).
    let next = h.enqueue(2, steps(&[("b", 0, false)])).await;
    assert_eq!(
        wait_final(h.store(), next.id).await.status,
        OperationStatus::Succeeded
    );
    h.shutdown().await;
}
