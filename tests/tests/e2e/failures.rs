//! Failure injection: the daemon's real planner, wrapped so that step N of an operation fails
//! right after doing its work (the hard case for undo), for every N in turn; each time,
//! nothing the operation made may be left behind.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use aegir_tests::{fixture_repo, Backend, TestDb};
use aegird::app::{App, NewProject, NewRelease, NewServer};
use aegird::backend::{HostPlanner, SshKeys};
use aegird::clock::SystemClock;
use aegird::engine::{
    Engine, OperationSpec, Plan, PlanError, Planner, Step, StepContext, StepError,
};
use aegird::model::{OperationStatus, Transport};
use aegird::store::Store;
use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::watch;

/// Makes step `fail_at` fail after it has run (its effect is real, its success is not).
struct FailAfter {
    inner: HostPlanner,
    fail_at: Option<usize>,
}

struct Failing(Arc<dyn Step>);

#[async_trait]
impl Step for Failing {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        self.0.run(cx).await?;
        Err(StepError::new(format!(
            "injected failure after {}",
            self.0.name()
        )))
    }
    async fn undo(&self, cx: &StepContext) -> Result<(), StepError> {
        self.0.undo(cx).await
    }
}

#[async_trait]
impl Planner for FailAfter {
    async fn plan(&self, store: &Store, spec: &OperationSpec) -> Result<Plan, PlanError> {
        let mut plan = self.inner.plan(store, spec).await?;
        if let Some(i) = self.fail_at {
            let step = plan.steps[i].clone();
            plan.steps[i] = Arc::new(Failing(step));
        }
        Ok(plan)
    }
}

/// Everything under `dir`, recursively, for before/after comparisons.
fn tree(dir: &Path) -> Vec<String> {
    let out = Command::new("find").arg(dir).output().unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Run `release.verify` of a git release with the planner failing at `fail_at`; return the
/// operation's status and the release's recorded path.
async fn build_release(
    repo: &str,
    platforms: &Path,
    fail_at: Option<usize>,
) -> (OperationStatus, Option<String>, Vec<String>) {
    let db = TestDb::new(Backend::Sqlite).await;
    let inner = HostPlanner::new(db.dir.path()).with_releases_dir(platforms.display().to_string());
    let engine = Engine::new(
        db.store.clone(),
        Arc::new(SystemClock),
        Arc::new(FailAfter { inner, fail_at }),
        aegird::config::EngineConfig::default(),
        "failures",
    );
    let app = App::new(engine.clone(), SshKeys::new(db.dir.path().join("ssh")));
    let (stop, mut rx) = watch::channel(false);
    let task = tokio::spawn(engine.run(async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    app.add_server(NewServer {
        name: "local".into(),
        transport: Transport::Local,
        ssh: None,
    })
    .await
    .unwrap();
    app.add_project(NewProject {
        name: "d7".into(),
        git: Some(repo.into()),
        git_ref: Some("v1.0".into()),
        path: None,
    })
    .await
    .unwrap();
    app.create_release(NewRelease {
        name: "d7-1".into(),
        project: "d7".into(),
        server: "local".into(),
        git_ref: None,
    })
    .await
    .unwrap();
    let op = app.verify_release("d7-1").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let done = loop {
        let o = db.store.operation(op.id).await.unwrap().unwrap();
        if o.status.is_final() {
            break o;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "operation never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let tasks: Vec<String> = db
        .store
        .tasks(op.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    let release = app.release("d7-1").await.unwrap();
    let _ = stop.send(true);
    task.await.unwrap();
    (done.status, release.path, tasks)
}

#[tokio::test]
async fn a_git_release_build_failing_at_any_step_leaves_nothing_behind() {
    let repo = fixture_repo("drupal7");
    let url = format!("file://{}", repo.path().display());

    // Without injection the build leaves its clone: the check below can see one.
    let platforms = tempfile::tempdir().unwrap();
    let empty = tree(platforms.path());
    let (status, path, steps) = build_release(&url, platforms.path(), None).await;
    assert_eq!(status, OperationStatus::Succeeded);
    assert!(path.is_some());
    assert_ne!(tree(platforms.path()), empty);
    assert_eq!(
        steps,
        [
            "clone-codebase",
            "check-codebase",
            "detect-application",
            "scan-packages",
            "record"
        ]
    );

    for (i, step) in steps.iter().enumerate() {
        let platforms = tempfile::tempdir().unwrap();
        let before = tree(platforms.path());
        let (status, path, _) = build_release(&url, platforms.path(), Some(i)).await;
        assert_eq!(status, OperationStatus::Failed, "failing at {step}");
        assert_eq!(
            tree(platforms.path()),
            before,
            "failing at {step} left files behind"
        );
        assert_eq!(
            path, None,
            "failing at {step} left the release pointing at a clone"
        );
    }
}
