//! Failure injection: the daemon's real planner, wrapped so that step N of an operation fails
//! (before, or right after doing its work), for every N in turn; each time, nothing the
//! operation made may be left behind, and what was there before still works.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aegir_tests::{fixture_repo, html_title, http_get, site_leftovers, unique, Backend, TestDb};
use aegird::app::{
    App, EnvAction, EnvActionRequest, NewEnvironment, NewProject, NewRelease, NewServer,
};
use aegird::backend::{HostPlanner, SshKeys};
use aegird::clock::SystemClock;
use aegird::engine::{
    Engine, OperationSpec, Plan, PlanError, Planner, Step, StepContext, StepError,
};
use aegird::model::{EnvironmentStatus, HttpsMode, OperationKind, OperationStatus, Transport};
use aegird::store::Store;
use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::watch;

use crate::engine::wait_final_within;

/// When an injected failure strikes: before the step does anything, or after it has done
/// its work (its effect is real, its success is not: the hard case for undo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Before,
    After,
}

#[derive(Debug, Clone, Copy)]
struct Injection {
    kind: OperationKind,
    step: usize,
    when: When,
}

/// Something the world does while an operation runs, just before its step `step` starts.
type Meanwhile = (OperationKind, usize, Arc<dyn Fn() + Send + Sync>);

/// The daemon's real planner, with one step of the next operations of one kind made to fail,
/// or preceded by something happening meanwhile.
struct Injector {
    inner: HostPlanner,
    injection: Mutex<Option<Injection>>,
    meanwhile: Mutex<Option<Meanwhile>>,
}

impl Injector {
    fn new(inner: HostPlanner) -> Arc<Injector> {
        Arc::new(Injector {
            inner,
            injection: Mutex::new(None),
            meanwhile: Mutex::new(None),
        })
    }
    fn set(&self, injection: Option<Injection>) {
        *self.injection.lock().unwrap() = injection;
    }
    fn set_meanwhile(&self, meanwhile: Option<Meanwhile>) {
        *self.meanwhile.lock().unwrap() = meanwhile;
    }
}

struct Before(Arc<dyn Step>, Arc<dyn Fn() + Send + Sync>);

#[async_trait]
impl Step for Before {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        (self.1)();
        self.0.run(cx).await
    }
    async fn undo(&self, cx: &StepContext) -> Result<(), StepError> {
        self.0.undo(cx).await
    }
}

struct Failing(Arc<dyn Step>, When);

#[async_trait]
impl Step for Failing {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        if self.1 == When::After {
            self.0.run(cx).await?;
        }
        Err(StepError::new(format!(
            "injected failure {:?} {}",
            self.1,
            self.0.name()
        )))
    }
    async fn undo(&self, cx: &StepContext) -> Result<(), StepError> {
        self.0.undo(cx).await
    }
}

#[async_trait]
impl Planner for Injector {
    async fn plan(&self, store: &Store, spec: &OperationSpec) -> Result<Plan, PlanError> {
        let mut plan = self.inner.plan(store, spec).await?;
        let injection = *self.injection.lock().unwrap();
        if let Some(i) = injection.filter(|i| i.kind == spec.kind) {
            let step = plan.steps[i.step].clone();
            plan.steps[i.step] = Arc::new(Failing(step, i.when));
        }
        let meanwhile = self.meanwhile.lock().unwrap().clone();
        if let Some((_, i, hook)) = meanwhile.filter(|m| m.0 == spec.kind) {
            let step = plan.steps[i].clone();
            plan.steps[i] = Arc::new(Before(step, hook));
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
    let injector = Injector::new(inner);
    injector.set(fail_at.map(|step| Injection {
        kind: OperationKind::ReleaseVerify,
        step,
        when: When::After,
    }));
    let engine = Engine::new(
        db.store.clone(),
        Arc::new(SystemClock),
        injector,
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
    let done = wait_final_within(&db.store, op.id, Duration::from_secs(60)).await;
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

/// An in-process daemon (real planner behind an [`Injector`]) with a verified local server
/// and a verified WordPress release `wp` on it.
struct Sites {
    db: TestDb,
    app: App,
    injector: Arc<Injector>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sites {
    async fn start() -> Sites {
        let db = TestDb::new(Backend::Sqlite).await;
        let injector = Injector::new(HostPlanner::new(db.dir.path()));
        let engine = Engine::new(
            db.store.clone(),
            Arc::new(SystemClock),
            injector.clone(),
            aegird::config::EngineConfig::default(),
            "failures",
        );
        let app = App::new(engine.clone(), SshKeys::new(db.dir.path().join("ssh")));
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(engine.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        let sites = Sites {
            db,
            app,
            injector,
            stop,
            task,
        };
        sites
            .app
            .add_server(NewServer {
                name: "local".into(),
                transport: Transport::Local,
                ssh: None,
            })
            .await
            .unwrap();
        let op = sites.app.verify_server("local").await.unwrap();
        assert_eq!(sites.wait(op.id).await, OperationStatus::Succeeded);
        sites
            .app
            .add_project(NewProject {
                name: "wp".into(),
                git: None,
                git_ref: None,
                path: Some("/usr/share/wordpress".into()),
            })
            .await
            .unwrap();
        sites
            .app
            .create_release(NewRelease {
                name: "wp".into(),
                project: "wp".into(),
                server: "local".into(),
                git_ref: None,
            })
            .await
            .unwrap();
        let op = sites.app.verify_release("wp").await.unwrap();
        assert_eq!(sites.wait(op.id).await, OperationStatus::Succeeded);
        sites
    }

    /// Restores `backup` (the first of its ids) with each step failing in turn, before and
    /// after its work (but for the last, past which the restore is done); after each,
    /// `unchanged` checks the site, and no staging directory and no new backup may remain.
    async fn restore_failing_at_each_step(
        &self,
        uri: &str,
        backup: &(Vec<aegird::model::Id>, Vec<String>),
        unchanged: impl Fn(&str),
    ) {
        let steps = [
            "check-site-directory",
            "check-archive",
            "vhost-disabled",
            "backup",
            "stage",
            "switch",
            "vhost",
            "drop-previous",
        ];
        for (i, step) in steps.iter().enumerate() {
            for when in [When::Before, When::After] {
                if *step == "drop-previous" && when == When::After {
                    continue;
                }
                let case = format!("restore failing {when:?} {step}");
                self.injector.set(Some(Injection {
                    kind: OperationKind::EnvRestore,
                    step: i,
                    when,
                }));
                let request = EnvActionRequest {
                    backup: Some(backup.0[0]),
                    ..Default::default()
                };
                let (status, ran) = self.act_with(uri, EnvAction::Restore, request).await;
                self.injector.set(None);
                assert_eq!(ran, steps, "{case}");
                assert_eq!(status, OperationStatus::Failed, "{case}");
                unchanged(&case);
                for dir in [".restore", ".restore-previous"] {
                    let path = format!("/var/aegir/sites/{uri}/{dir}");
                    assert!(!Path::new(&path).exists(), "{case}: {path} is left");
                }
                assert_eq!(&self.backups().await, backup, "{case}: backups changed");
            }
        }
    }

    /// Runs `hook` just before step `step` of the next operations of `kind`.
    fn before_step(
        &self,
        kind: OperationKind,
        step: usize,
        hook: impl Fn() + Send + Sync + 'static,
    ) {
        self.injector
            .set_meanwhile(Some((kind, step, Arc::new(hook))));
    }

    async fn wait(&self, id: aegird::model::Id) -> OperationStatus {
        wait_final_within(&self.db.store, id, Duration::from_secs(120))
            .await
            .status
    }

    /// Install a site titled `title`; the install's status, its step names and the key.
    async fn install(&self, uri: &str, title: &str) -> (OperationStatus, Vec<String>, String) {
        let op = self
            .app
            .create_environment(NewEnvironment {
                uri: uri.into(),
                release: "wp".into(),
                aliases: vec![format!("www.{uri}")],
                redirect_aliases: true,
                https: HttpsMode::Off,
                title: Some(title.into()),
            })
            .await
            .unwrap();
        let status = self.wait(op.id).await;
        let key = self
            .db
            .store
            .environment_by_id(op.target.id)
            .await
            .unwrap()
            .unwrap()
            .db_name
            .unwrap();
        (status, self.steps(op.id).await, key)
    }

    async fn act(&self, uri: &str, action: EnvAction) -> (OperationStatus, Vec<String>) {
        self.act_with(uri, action, Default::default()).await
    }

    async fn act_with(
        &self,
        uri: &str,
        action: EnvAction,
        req: EnvActionRequest,
    ) -> (OperationStatus, Vec<String>) {
        let op = self.app.environment_action(uri, action, req).await.unwrap();
        (self.wait(op.id).await, self.steps(op.id).await)
    }

    /// Delete a site, skipping the pre-delete backup.
    async fn delete_without_backup(&self, uri: &str) -> OperationStatus {
        let req = EnvActionRequest {
            skip_backup: true,
            ..Default::default()
        };
        self.act_with(uri, EnvAction::Delete, req).await.0
    }

    /// The good backups, and the files in the backups directory.
    async fn backups(&self) -> (Vec<aegird::model::Id>, Vec<String>) {
        let ids = self
            .db
            .store
            .list_backups(None, false)
            .await
            .unwrap()
            .iter()
            .map(|b| b.id)
            .collect();
        let mut files: Vec<String> = std::fs::read_dir(self.db.dir.path().join("backups"))
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        (ids, files)
    }

    async fn steps(&self, id: aegird::model::Id) -> Vec<String> {
        let tasks = self.db.store.tasks(id).await.unwrap();
        tasks.into_iter().map(|t| t.name).collect()
    }

    async fn status(&self, uri: &str) -> Option<EnvironmentStatus> {
        self.db
            .store
            .environment_by_uri(uri)
            .await
            .unwrap()
            .map(|e| e.status)
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
    }
}

/// The site answers with its own title.
fn serves(uri: &str, title: &str) -> bool {
    let (status, page) = http_get(uri, "/");
    status == 200 && html_title(&page).as_deref() == Some(title)
}

/// The php-fpm pools and the vhost directory's scratch files of sites whose uri contains
/// `name`: server-wide things an environment operation must not add to. (Other tests' sites
/// change their vhosts meanwhile: their scratch files come and go.)
fn server_files(name: &str) -> Vec<String> {
    let mut files = tree(Path::new("/etc/php"));
    files.retain(|f| f.contains("/pool.d/"));
    files.extend(
        tree(Path::new("/etc/aegir/nginx/vhosts"))
            .into_iter()
            .filter(|f| f.contains(".aegir-") && f.contains(name)),
    );
    files
}

#[tokio::test]
async fn a_site_install_failing_at_any_step_leaves_nothing_behind() {
    let sites = Sites::start().await;
    // A site that must keep serving through every failed install next to it.
    let witness = format!("{}.test", unique("witness"));
    let witness_title = unique("Witness");
    let (status, steps, witness_key) = sites.install(&witness, &witness_title).await;
    assert_eq!(status, OperationStatus::Succeeded);
    assert!(serves(&witness, &witness_title));
    assert_eq!(
        steps,
        [
            "claim-site-directory",
            "secrets",
            "database",
            "files",
            "settings",
            "vhost",
            "install-application",
            "record-status"
        ]
    );
    // Every site this test makes is named failing-*.
    let server_before = server_files("failing-");

    for (i, step) in steps.iter().enumerate() {
        for when in [When::Before, When::After] {
            let uri = format!("{}.test", unique("failing"));
            sites.injector.set(Some(Injection {
                kind: OperationKind::EnvInstall,
                step: i,
                when,
            }));
            let (status, _, key) = sites.install(&uri, "Never").await;
            sites.injector.set(None);
            let case = format!("install failing {when:?} {step}");
            assert_eq!(status, OperationStatus::Failed, "{case}");
            assert_eq!(
                site_leftovers(&uri, &key, None),
                Vec::<String>::new(),
                "{case} left these behind"
            );
            assert_eq!(
                sites.status(&uri).await,
                Some(EnvironmentStatus::Failed),
                "{case}"
            );
            assert!(
                serves(&witness, &witness_title),
                "{case}: the other site stopped serving"
            );
            assert_eq!(server_files("failing-"), server_before, "{case}");
            // A failed install is deleted like any environment, and frees its uri.
            let (status, _) = sites.act(&uri, EnvAction::Delete).await;
            assert_eq!(status, OperationStatus::Succeeded, "{case}: delete");
            assert_eq!(sites.status(&uri).await, None, "{case}");
        }
    }
    let (status, _) = sites.act(&witness, EnvAction::Delete).await;
    assert_eq!(status, OperationStatus::Succeeded);
    assert_eq!(
        site_leftovers(&witness, &witness_key, None),
        Vec::<String>::new()
    );
    sites.stop().await;
}

#[tokio::test]
async fn a_site_delete_failing_at_any_step_leaves_the_site_serving() {
    let sites = Sites::start().await;
    let uri = format!("{}.test", unique("deleting"));
    let title = unique("Doomed");
    let (status, _, key) = sites.install(&uri, &title).await;
    assert_eq!(status, OperationStatus::Succeeded);
    let installed = site_leftovers(&uri, &key, None);
    assert!(installed.len() >= 5, "{installed:?}");
    let steps = ["backup", "take-offline", "move-aside", "purge"];

    for (i, step) in steps.iter().enumerate() {
        for when in [When::Before, When::After] {
            // Failing after the purge is past the point of no return: checked below.
            if *step == "purge" && when == When::After {
                continue;
            }
            let case = format!("delete failing {when:?} {step}");
            sites.injector.set(Some(Injection {
                kind: OperationKind::EnvDelete,
                step: i,
                when,
            }));
            let (status, ran) = sites.act(&uri, EnvAction::Delete).await;
            sites.injector.set(None);
            assert_eq!(ran, steps, "{case}");
            assert_eq!(status, OperationStatus::Failed, "{case}");
            assert!(serves(&uri, &title), "{case}: the site stopped serving");
            assert_eq!(site_leftovers(&uri, &key, None), installed, "{case}");
            assert_eq!(
                sites.status(&uri).await,
                Some(EnvironmentStatus::Active),
                "{case}"
            );
            // The pre-delete backup of a delete that did not happen is not kept.
            assert_eq!(sites.backups().await, (vec![], vec![]), "{case}");
        }
    }

    // Once the purge has run, the site is gone even if the operation then fails: nothing is
    // put back half-way, and the record says deleted.
    sites.injector.set(Some(Injection {
        kind: OperationKind::EnvDelete,
        step: 3,
        when: When::After,
    }));
    let (status, _) = sites.act(&uri, EnvAction::Delete).await;
    sites.injector.set(None);
    assert_eq!(status, OperationStatus::Failed);
    assert_eq!(site_leftovers(&uri, &key, None), Vec::<String>::new());
    assert_eq!(sites.status(&uri).await, None, "recorded as deleted");
    sites.stop().await;
}

#[tokio::test]
async fn a_restore_failing_at_any_step_leaves_the_site_as_it_was() {
    let sites = Sites::start().await;
    let uri = format!("{}.test", unique("restoring"));
    let (status, _, key) = sites.install(&uri, &unique("Backed")).await;
    assert_eq!(status, OperationStatus::Succeeded);
    let (status, _) = sites.act(&uri, EnvAction::Backup).await;
    assert_eq!(status, OperationStatus::Succeeded);
    let backup = sites.backups().await;
    // What the site is now, and must stay through every failed restore.
    let current = unique("Current");
    aegir_tests::mysql(&format!(
        "UPDATE `{key}`.wp_options SET option_value = '{current}' WHERE option_name = 'blogname'"
    ));
    let files = format!("/var/aegir/sites/{uri}/files");
    std::fs::write(format!("{files}/note.txt"), "current").unwrap();
    let installed = site_leftovers(&uri, &key, None);
    let request = || EnvActionRequest {
        backup: Some(backup.0[0]),
        ..Default::default()
    };
    sites
        .restore_failing_at_each_step(&uri, &backup, |case| {
            assert!(serves(&uri, &current), "{case}: not serving its content");
            assert_eq!(
                std::fs::read_to_string(format!("{files}/note.txt")).unwrap(),
                "current",
                "{case}"
            );
            assert_eq!(site_leftovers(&uri, &key, None), installed, "{case}");
        })
        .await;
    // Failing after the last step, the restore has happened and stays.
    sites.injector.set(Some(Injection {
        kind: OperationKind::EnvRestore,
        step: 7,
        when: When::After,
    }));
    let (status, _) = sites.act_with(&uri, EnvAction::Restore, request()).await;
    sites.injector.set(None);
    assert_eq!(status, OperationStatus::Failed);
    assert!(!serves(&uri, &current), "the restored content is served");
    assert_eq!(
        sites.delete_without_backup(&uri).await,
        OperationStatus::Succeeded
    );
    assert_eq!(site_leftovers(&uri, &key, None), Vec::<String>::new());
    sites.stop().await;
}

#[tokio::test]
async fn a_takeover_failing_at_any_step_leaves_the_site_with_aegir3() {
    let sites = Sites::start().await;
    let a3 = crate::import::Aegir3::load();
    let title = unique("Aegir 3 site");
    let (uri, key, site_path, _outside) = crate::takeover::build_site(&a3, &title);
    sites
        .app
        .import_aegir3(aegird::app::ImportAegir3 {
            hostmaster_db: Some(a3.url()),
            aegir_root: Some(a3.root.path().display().to_string()),
            dry_run: false,
        })
        .await
        .unwrap();
    let op = sites.app.verify_server("localhost").await.unwrap();
    assert_eq!(sites.wait(op.id).await, OperationStatus::Succeeded);
    let aegir3_before = a3.fingerprint_with(false);
    let db_and_user = site_leftovers(&uri, &key, None);
    assert_eq!(db_and_user.len(), 2, "{db_and_user:?}");
    let upload_path = || {
        aegir_tests::mysql(&format!(
            "SELECT option_value FROM `{key}`.wp_options WHERE option_name = 'upload_path'"
        ))
    };
    let uploads_before = upload_path();
    assert_eq!(uploads_before.trim(), format!("{site_path}/files"));
    let managed_by = || async {
        sites
            .db
            .store
            .environment_by_uri(&uri)
            .await
            .unwrap()
            .unwrap()
            .managed_by
    };
    let steps = [
        "adopt-site-directory",
        "database",
        "files",
        "settings",
        "uploads-path",
        "swap-vhost",
        "record-takeover",
    ];
    for (i, step) in steps.iter().enumerate() {
        for when in [When::Before, When::After] {
            let case = format!("takeover failing {when:?} {step}");
            sites.injector.set(Some(Injection {
                kind: OperationKind::EnvTakeover,
                step: i,
                when,
            }));
            let (status, ran) = sites.act(&uri, EnvAction::Takeover).await;
            sites.injector.set(None);
            assert_eq!(ran, steps, "{case}");
            assert_eq!(status, OperationStatus::Failed, "{case}");
            assert!(serves(&uri, &title), "{case}: the site stopped serving");
            assert_eq!(
                a3.fingerprint_with(false),
                aegir3_before,
                "{case}: Aegir 3 changed"
            );
            assert_eq!(site_leftovers(&uri, &key, None), db_and_user, "{case}");
            assert_eq!(upload_path(), uploads_before, "{case}");
            assert_eq!(
                managed_by().await,
                aegird::model::Management::Aegir3,
                "{case}"
            );
        }
    }
    // Without a failure it goes through, and the site is aegird's. An upload made in the
    // window between the adopt step's copy and the uploads-path step is not lost.
    let late = Path::new(&site_path).join("files/late.txt");
    sites.before_step(OperationKind::EnvTakeover, 4, move || {
        std::fs::write(&late, "uploaded during the takeover").unwrap();
    });
    let (status, _) = sites.act(&uri, EnvAction::Takeover).await;
    sites.injector.set_meanwhile(None);
    assert_eq!(status, OperationStatus::Succeeded);
    assert!(serves(&uri, &title));
    assert_eq!(managed_by().await, aegird::model::Management::Aegird);
    let (status, body) = http_get(&uri, "/wp-content/uploads/late.txt");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.ends_with("\r\n\r\nuploaded during the takeover"),
        "{body}"
    );
    assert_eq!(
        sites.delete_without_backup(&uri).await,
        OperationStatus::Succeeded
    );
    assert_eq!(site_leftovers(&uri, &key, None), Vec::<String>::new());
    sites.stop().await;
}

#[tokio::test]
async fn a_drupal_takeover_failing_at_any_step_leaves_the_site_with_aegir3() {
    let sites = Sites::start().await;
    let a3 = crate::import::Aegir3::load();
    let title = unique("Aegir 3 Drupal");
    let site = crate::takeover::build_drupal_site(&a3, &title);
    let uri = site.uri.clone();
    sites
        .app
        .import_aegir3(aegird::app::ImportAegir3 {
            hostmaster_db: Some(a3.url()),
            aegir_root: Some(a3.root.path().display().to_string()),
            dry_run: false,
        })
        .await
        .unwrap();
    let op = sites.app.verify_server("localhost").await.unwrap();
    assert_eq!(sites.wait(op.id).await, OperationStatus::Succeeded);
    let aegir3_before = a3.fingerprint_with(false);
    // The database, its user and Aegir 3's sites/<uri>: nothing else of the site's.
    let before = site_leftovers(&uri, &site.key, Some(&site.sites));
    assert_eq!(before.len(), 3, "{before:?}");
    let managed_by = || async {
        sites
            .db
            .store
            .environment_by_uri(&uri)
            .await
            .unwrap()
            .unwrap()
            .managed_by
    };
    let steps = [
        "adopt-site-directory",
        "database",
        "files",
        "settings",
        "swap-vhost",
        "record-takeover",
    ];
    for (i, step) in steps.iter().enumerate() {
        for when in [When::Before, When::After] {
            let case = format!("Drupal takeover failing {when:?} {step}");
            sites.injector.set(Some(Injection {
                kind: OperationKind::EnvTakeover,
                step: i,
                when,
            }));
            let (status, ran) = sites.act(&uri, EnvAction::Takeover).await;
            sites.injector.set(None);
            assert_eq!(ran, steps, "{case}");
            assert_eq!(status, OperationStatus::Failed, "{case}");
            if let Err(e) = crate::takeover::drupal_serves(&uri, &title) {
                panic!("{case}: the site is not served as before: {e}");
            }
            assert_eq!(
                a3.fingerprint_with(false),
                aegir3_before,
                "{case}: Aegir 3 changed"
            );
            assert_eq!(
                site_leftovers(&uri, &site.key, Some(&site.sites)),
                before,
                "{case}"
            );
            assert_eq!(
                managed_by().await,
                aegird::model::Management::Aegir3,
                "{case}"
            );
        }
    }
    // The site keeps taking uploads while the takeover runs: what it wrote into Aegir 3's
    // directories after the adopt step copied them is in aegird's once it is done.
    let a3_site = std::path::PathBuf::from(&site.site_path);
    let late = (a3_site.join("files"), a3_site.join("private/files"));
    sites.before_step(OperationKind::EnvTakeover, 4, move || {
        std::fs::write(late.0.join("late.txt"), "uploaded during the takeover").unwrap();
        std::fs::write(late.1.join("late-private.txt"), "private, during").unwrap();
    });
    let (status, _) = sites.act(&uri, EnvAction::Takeover).await;
    sites.injector.set_meanwhile(None);
    assert_eq!(status, OperationStatus::Succeeded);
    crate::takeover::drupal_serves(&uri, &title).unwrap();
    assert_eq!(managed_by().await, aegird::model::Management::Aegird);
    let (status, body) = http_get(&uri, &format!("/sites/{uri}/files/late.txt"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.ends_with("\r\n\r\nuploaded during the takeover"),
        "{body}"
    );
    assert_eq!(
        std::fs::read_to_string(format!("/var/aegir/sites/{uri}/private/late-private.txt"))
            .unwrap(),
        "private, during"
    );

    // Its backups carry the site's own code (sites/<uri>/modules ...): a restore failing at
    // any step leaves the code as it is now, changed since the backup; one that succeeds
    // brings back the backup's.
    let (status, _) = sites.act(&uri, EnvAction::Backup).await;
    assert_eq!(status, OperationStatus::Succeeded);
    let backup = sites.backups().await;
    let live = site.sites.join(&uri);
    let code = || {
        let mut state = tree(&live);
        for f in [
            "modules/a3_custom/a3_custom.info",
            "settings.php",
            ".aegir-env",
        ] {
            state.push(std::fs::read_to_string(live.join(f)).unwrap());
        }
        state
    };
    let backed_up = code();
    std::fs::create_dir(live.join("modules/added")).unwrap();
    std::fs::write(live.join("modules/added/added.txt"), "after the backup").unwrap();
    std::fs::write(
        live.join("modules/a3_custom/a3_custom.info"),
        "name = A3 custom, changed\ncore = 7.x\n",
    )
    .unwrap();
    let current = code();
    let installed = site_leftovers(&uri, &site.key, Some(&site.sites));
    sites
        .restore_failing_at_each_step(&uri, &backup, |case| {
            if let Err(e) = crate::takeover::drupal_serves(&uri, &title) {
                panic!("{case}: the site is not served as before: {e}");
            }
            assert_eq!(code(), current, "{case}: the site's code changed");
            assert_eq!(
                site_leftovers(&uri, &site.key, Some(&site.sites)),
                installed,
                "{case}"
            );
        })
        .await;
    let request = EnvActionRequest {
        backup: Some(backup.0[0]),
        ..Default::default()
    };
    let (status, _) = sites.act_with(&uri, EnvAction::Restore, request).await;
    assert_eq!(status, OperationStatus::Succeeded);
    assert_eq!(code(), backed_up, "the backup's code is back");
    crate::takeover::drupal_serves(&uri, &title).unwrap();

    assert_eq!(
        sites.delete_without_backup(&uri).await,
        OperationStatus::Succeeded
    );
    assert_eq!(
        site_leftovers(&uri, &site.key, Some(&site.sites)),
        Vec::<String>::new()
    );
    sites.stop().await;
}
