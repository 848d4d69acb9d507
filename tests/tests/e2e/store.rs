//! Store conformance suite: one set of checks, run unchanged against SQLite and PostgreSQL.

use std::future::Future;

use aegir_tests::{Backend, TestDb};
use aegird::model::{
    DetectedService, DetectedServices, EnvironmentStatus, HttpsMode, LogLevel, Operation,
    OperationKind, OperationStatus, ProjectSource, Release, Server, ServerStatus, TargetRef,
    TargetType, TaskStatus, Timestamp, Transport,
};
use aegird::store::{
    CancelOutcome, NewEnvironmentRow, NewReleaseRow, NewServerRow, OperationFilter, Store,
    StoreError,
};
use serde_json::json;
use sqlx::Connection;

#[tokio::test]
async fn conformance_sqlite() {
    conformance(Backend::Sqlite).await;
}

#[tokio::test]
async fn conformance_postgres() {
    conformance(Backend::Postgres).await;
}

/// Runs one check on a task of its own, so that a failure says which check it was.
macro_rules! run_check {
    ($db:expr, $check:ident) => {{
        let store = $db.store.clone();
        run(stringify!($check), async move { $check(&store).await }).await
    }};
    ($db:expr, $check:ident, with_url) => {{
        let store = $db.store.clone();
        let url = $db.url.clone();
        run(
            stringify!($check),
            async move { $check(&store, &url).await },
        )
        .await
    }};
}

/// Runs every check in turn on one fresh store. The checks share the store, so each uses
/// names of its own and leaves no operation queued or running behind (claims are global).
async fn conformance(backend: Backend) {
    let db = TestDb::new(backend).await;
    run_check!(db, servers);
    run_check!(db, clusters_projects_releases);
    run_check!(db, environments);
    run_check!(db, operations);
    run_check!(db, recovery);
    run_check!(db, logs);
    run_check!(db, logs_are_append_only, with_url);
    run_check!(db, tokens);
    run_check!(db, users_and_sessions);
    run_check!(db, migrations_are_idempotent, with_url);
    run_check!(db, row_counts);
}

/// Awaits `check` on a task of its own and turns its panic into one that names the check.
async fn run(name: &str, check: impl Future<Output = ()> + Send + 'static) {
    if let Err(e) = tokio::spawn(check).await {
        let why = match e.try_into_panic() {
            Ok(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(non-text panic)".into()),
            Err(e) => e.to_string(),
        };
        panic!("store check `{name}` failed: {why}");
    }
}

// --- fixtures

/// Every time in the suite is an offset from this fixed instant (2023-11-14T22:13:20Z).
fn at(ms: i64) -> Timestamp {
    Timestamp(1_700_000_000_000).plus_ms(ms)
}

const SECOND: i64 = 1_000;
const HOUR: i64 = 3_600 * SECOND;

fn local_server(name: &str) -> NewServerRow {
    NewServerRow::local(name)
}

async fn add_server(s: &Store, name: &str) -> Server {
    s.insert_server(&local_server(name), at(0))
        .await
        .unwrap_or_else(|e| panic!("insert server {name}: {e}"))
}

/// A server with a path project and a release on it, for environments to live on.
async fn add_release(s: &Store, prefix: &str) -> (Server, Release) {
    let server = add_server(s, &format!("{prefix}-host")).await;
    let project = s
        .insert_project(
            &format!("{prefix}-proj"),
            ProjectSource::Path,
            None,
            None,
            Some("/srv/code"),
            at(0),
        )
        .await
        .expect("insert project");
    let release = s
        .insert_release(
            &NewReleaseRow {
                name: format!("{prefix}-rel"),
                project_id: project.id,
                server_id: Some(server.id),
                git_ref: None,
                path: Some("/srv/code".into()),
            },
            at(0),
        )
        .await
        .expect("insert release");
    (server, release)
}

fn env_row(uri: &str, on: &(Server, Release), status: EnvironmentStatus) -> NewEnvironmentRow {
    NewEnvironmentRow {
        uri: uri.into(),
        release_id: on.1.id,
        server_id: on.0.id,
        status,
        https: HttpsMode::Off,
        aliases: vec![],
        redirect_aliases: false,
        db_name: None,
    }
}

fn target(server: &Server) -> TargetRef {
    TargetRef {
        target_type: TargetType::Server,
        id: server.id,
        name: server.name.clone(),
    }
}

/// Queue a server verify on `server` with the given task names.
async fn enqueue(s: &Store, server: &Server, tasks: &[&str], now: Timestamp) -> Operation {
    let names: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
    s.enqueue_operation(
        OperationKind::ServerVerify,
        &target(server),
        &json!({}),
        None,
        &names,
        now,
    )
    .await
    .expect("enqueue operation")
}

async fn op(s: &Store, id: i64) -> Operation {
    s.operation(id).await.unwrap().expect("operation exists")
}

async fn task_statuses(s: &Store, op: i64) -> Vec<TaskStatus> {
    s.tasks(op)
        .await
        .unwrap()
        .iter()
        .map(|t| t.status)
        .collect()
}

fn ids(ops: &[Operation]) -> Vec<i64> {
    ops.iter().map(|o| o.id).collect()
}

fn assert_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected StoreError::Conflict, got {other:?}"),
    }
}

// --- checks

async fn servers(s: &Store) {
    let b = s
        .insert_server(
            &NewServerRow {
                name: "web-b".into(),
                transport: Transport::Ssh,
                ssh_user: Some("aegir".into()),
                ssh_host: Some("web-b.example".into()),
                ssh_port: Some(2222),
                ssh_host_key: Some(
                    "[web-b.example]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinned".into(),
                ),
            },
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(b.transport, Transport::Ssh);
    assert_eq!(b.ssh_user.as_deref(), Some("aegir"));
    assert_eq!(b.ssh_host.as_deref(), Some("web-b.example"));
    assert_eq!(b.ssh_port, Some(2222));
    assert!(b.ssh_host_key.as_deref().unwrap().ends_with("AAAAIPinned"));
    assert_eq!(b.status, ServerStatus::New);
    assert_eq!(b.services, DetectedServices::default());
    assert_eq!(b.verified_at, None);
    assert_eq!((b.created_at, b.updated_at), (at(0), at(0)));

    let a = s
        .insert_server(&local_server("web-a"), at(1))
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(a.ssh_port, None);
    assert_eq!(s.server_by_name("web-b").await.unwrap(), Some(b.clone()));
    assert_eq!(s.server_by_id(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(s.server_by_name("web-c").await.unwrap(), None);
    assert_eq!(s.server_by_id(a.id + b.id + 1000).await.unwrap(), None);

    let names: Vec<String> = s
        .list_servers()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        names,
        ["web-a", "web-b"],
        "ordered by name, not by insertion"
    );

    let before = s.row_counts().await.unwrap();
    let mut dup = local_server("web-a");
    dup.transport = Transport::Ssh;
    assert_conflict(s.insert_server(&dup, at(2)).await, "second server web-a");
    assert_eq!(
        s.row_counts().await.unwrap(),
        before,
        "a refused insert changes nothing"
    );

    let services = DetectedServices {
        os: Some("Debian GNU/Linux 12 (bookworm)".into()),
        os_id: Some("debian".into()),
        os_version: Some("12".into()),
        kernel: Some("6.1.0-18-amd64".into()),
        http: vec![DetectedService {
            name: "nginx".into(),
            version: "1.22.1".into(),
            binary: "/usr/sbin/nginx".into(),
        }],
        php_fpm: vec![DetectedService {
            name: "php-fpm".into(),
            version: "8.2.7".into(),
            binary: "/usr/sbin/php-fpm8.2".into(),
        }],
        db: vec![],
    };
    s.record_server_verify(a.id, ServerStatus::Ready, Some(&services), at(10))
        .await
        .unwrap();
    let verified = s.server_by_id(a.id).await.unwrap().unwrap();
    assert_eq!(verified.services, services);
    assert_eq!(verified.status, ServerStatus::Ready);
    assert_eq!(verified.verified_at, Some(at(10)));
    assert_eq!(verified.updated_at, at(10));
    assert_eq!(verified.created_at, at(1));

    // A failed verify keeps what the last good one found.
    s.record_server_verify(a.id, ServerStatus::Failed, None, at(20))
        .await
        .unwrap();
    let failed = s.server_by_id(a.id).await.unwrap().unwrap();
    assert_eq!(failed.status, ServerStatus::Failed);
    assert_eq!(failed.services, services);
    assert_eq!(failed.verified_at, Some(at(10)));
    assert_eq!(failed.updated_at, at(20));

    assert_eq!(
        s.server_by_id(b.id).await.unwrap(),
        Some(b),
        "verify of web-a left web-b alone"
    );
}

async fn clusters_projects_releases(s: &Store) {
    let kb = s
        .insert_cluster("k8s-b", "https://k8s-b.example:6443", at(0))
        .await
        .unwrap();
    s.insert_cluster("k8s-a", "https://k8s-a.example:6443", at(0))
        .await
        .unwrap();
    assert_eq!(kb.api_url, "https://k8s-b.example:6443");
    assert_eq!(kb.status.as_str(), "new");
    assert_eq!(s.cluster_by_name("k8s-b").await.unwrap(), Some(kb));
    assert_eq!(s.cluster_by_name("k8s-c").await.unwrap(), None);
    let names: Vec<String> = s
        .list_clusters()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["k8s-a", "k8s-b"]);
    assert_conflict(
        s.insert_cluster("k8s-a", "https://elsewhere.example", at(1))
            .await,
        "second cluster k8s-a",
    );

    let git = s
        .insert_project(
            "proj-git",
            ProjectSource::Git,
            Some("https://git.example/site.git"),
            Some("main"),
            None,
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(git.source, ProjectSource::Git);
    assert_eq!(git.git_url.as_deref(), Some("https://git.example/site.git"));
    assert_eq!(git.git_ref.as_deref(), Some("main"));
    assert_eq!(git.path, None);
    let path = s
        .insert_project(
            "proj-path",
            ProjectSource::Path,
            None,
            None,
            Some("/srv/site"),
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(path.source, ProjectSource::Path);
    assert_eq!(
        (path.git_url, path.path.as_deref()),
        (None, Some("/srv/site"))
    );
    assert_eq!(
        s.project_by_name("proj-git").await.unwrap(),
        Some(git.clone())
    );
    assert_conflict(
        s.insert_project(
            "proj-git",
            ProjectSource::Path,
            None,
            None,
            Some("/x"),
            at(1),
        )
        .await,
        "second project proj-git",
    );

    let host = add_server(s, "rel-host").await;
    let r1 = s
        .insert_release(
            &NewReleaseRow {
                name: "rel-1".into(),
                project_id: git.id,
                server_id: Some(host.id),
                git_ref: Some("v1.0".into()),
                path: Some("/var/aegir/releases/rel-1".into()),
            },
            at(5),
        )
        .await
        .unwrap();
    assert_eq!(r1.project, "proj-git", "joined project name");
    assert_eq!(r1.server.as_deref(), Some("rel-host"), "joined server name");
    assert_eq!(r1.git_ref.as_deref(), Some("v1.0"));
    assert_eq!(r1.path.as_deref(), Some("/var/aegir/releases/rel-1"));
    assert!(!r1.locked);
    assert_eq!(r1.status.as_str(), "new");
    assert!(r1.packages.is_empty());
    assert_eq!(r1.verified_at, None);
    assert_eq!(r1.app_kind, None);
    assert_eq!(r1.created_at, at(5));

    // A release may exist before it is placed on a server.
    let r0 = s
        .insert_release(
            &NewReleaseRow {
                name: "rel-0".into(),
                project_id: path.id,
                server_id: None,
                git_ref: None,
                path: None,
            },
            at(6),
        )
        .await
        .unwrap();
    assert_eq!((r0.project.as_str(), r0.server), ("proj-path", None));
    assert_eq!(s.release_by_name("rel-1").await.unwrap(), Some(r1));
    assert_eq!(s.release_by_name("rel-9").await.unwrap(), None);
    let names: Vec<String> = s
        .list_releases()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["rel-0", "rel-1"]);

    let dup = NewReleaseRow {
        name: "rel-1".into(),
        project_id: path.id,
        server_id: None,
        git_ref: None,
        path: None,
    };
    assert_conflict(s.insert_release(&dup, at(7)).await, "second release rel-1");

    // A dangling project id is refused by the foreign key, and it is not a name conflict.
    let orphan = NewReleaseRow {
        name: "rel-orphan".into(),
        project_id: git.id + path.id + 1000,
        server_id: None,
        git_ref: None,
        path: None,
    };
    match s.insert_release(&orphan, at(7)).await {
        Err(StoreError::Db(_)) => {}
        other => panic!("release of a missing project: expected a database error, got {other:?}"),
    }
}

async fn environments(s: &Store) {
    let on = add_release(s, "env").await;
    let mut first = env_row("c.example", &on, EnvironmentStatus::Active);
    first.https = HttpsMode::Required;
    first.aliases = vec!["www.c.example".into(), "c.example.net".into()];
    first.redirect_aliases = true;
    first.db_name = Some("c_example".into());
    let c = s.insert_environment(&first, at(3)).await.unwrap();
    assert_eq!(c.uri, "c.example");
    assert_eq!(
        (c.release.as_str(), c.server.as_str()),
        ("env-rel", "env-host")
    );
    assert_eq!(c.status, EnvironmentStatus::Active);
    assert_eq!(c.https, HttpsMode::Required);
    assert_eq!(c.aliases, ["www.c.example", "c.example.net"]);
    assert!(c.redirect_aliases);
    assert_eq!(c.db_name.as_deref(), Some("c_example"));
    assert_eq!((c.created_at, c.updated_at), (at(3), at(3)));
    for uri in ["b.example", "axb.example", "a_b.example"] {
        s.insert_environment(&env_row(uri, &on, EnvironmentStatus::Installing), at(4))
            .await
            .unwrap();
    }
    assert_eq!(s.environment_by_uri("c.example").await.unwrap(), Some(c));
    assert_eq!(s.environment_by_uri("d.example").await.unwrap(), None);

    let page = |search: Option<&'static str>, limit: i64, offset: i64| async move {
        let p = s.list_environments(search, limit, offset).await.unwrap();
        assert_eq!((p.limit, p.offset), (limit, offset));
        let uris: Vec<String> = p.items.into_iter().map(|e| e.uri).collect();
        (p.total, uris)
    };
    assert_eq!(
        page(None, 2, 0).await,
        (4, vec!["a_b.example".into(), "axb.example".into()])
    );
    assert_eq!(
        page(None, 2, 2).await,
        (4, vec!["b.example".into(), "c.example".into()])
    );
    assert_eq!(page(None, 2, 4).await, (4, vec![]));
    assert_eq!(page(Some("example"), 10, 0).await.0, 4);
    // Case-insensitive on both engines.
    assert_eq!(page(Some("EXAMPLE"), 10, 0).await.0, 4);
    assert_eq!(
        page(Some("b.ex"), 2, 1).await,
        (3, vec!["axb.example".into(), "b.example".into()]),
        "a search matches anywhere in the uri and pages like the full list"
    );
    // LIKE wildcards in the search match themselves.
    assert_eq!(
        page(Some("a_b"), 10, 0).await,
        (1, vec!["a_b.example".into()])
    );
    assert_eq!(page(Some("%"), 10, 0).await, (0, vec![]));
    // Unescaped, "_" would match any one character before ".example" in all four uris.
    assert_eq!(page(Some("_.example"), 10, 0).await, (0, vec![]));
    assert_eq!(page(Some("\\"), 10, 0).await, (0, vec![]));

    assert_conflict(
        s.insert_environment(
            &env_row("c.example", &on, EnvironmentStatus::Installing),
            at(5),
        )
        .await,
        "second live environment c.example",
    );

    // A deleted environment is history: its uri may be used again (the unique index is
    // partial), and lookups by uri only see the live one.
    let gone = s
        .insert_environment(
            &env_row("gone.example", &on, EnvironmentStatus::Deleted),
            at(6),
        )
        .await
        .unwrap();
    assert_eq!(s.environment_by_uri("gone.example").await.unwrap(), None);
    let live = s
        .insert_environment(
            &env_row("gone.example", &on, EnvironmentStatus::Active),
            at(7),
        )
        .await
        .unwrap();
    assert_ne!(live.id, gone.id);
    assert_eq!(
        s.environment_by_uri("gone.example").await.unwrap(),
        Some(live)
    );
    s.insert_environment(
        &env_row("gone.example", &on, EnvironmentStatus::Deleted),
        at(8),
    )
    .await
    .expect("several deleted environments may share a uri");
    assert_conflict(
        s.insert_environment(
            &env_row("gone.example", &on, EnvironmentStatus::Disabled),
            at(9),
        )
        .await,
        "second live gone.example",
    );
}

async fn operations(s: &Store) {
    let a = add_server(s, "ops-a").await;
    let b = add_server(s, "ops-b").await;
    assert!(OperationKind::ServerVerify.mutating());

    let params = json!({"deep": true});
    let a1 = s
        .enqueue_operation(
            OperationKind::ServerVerify,
            &target(&a),
            &params,
            None,
            &["connect".into(), "detect".into(), "record".into()],
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(a1.status, OperationStatus::Queued);
    assert_eq!(a1.kind, OperationKind::ServerVerify);
    assert_eq!(a1.target, target(&a));
    assert!(a1.mutating);
    assert_eq!(a1.params, params);
    assert_eq!(a1.attempt, 0);
    assert!(!a1.cancel_requested);
    assert_eq!(
        (a1.created_at, a1.started_at, a1.finished_at),
        (at(0), None, None)
    );
    let tasks = s.tasks(a1.id).await.unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["connect", "detect", "record"]);
    let seqs: Vec<i64> = tasks.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, [0, 1, 2]);
    assert!(tasks
        .iter()
        .all(|t| t.status == TaskStatus::Pending && t.started_at.is_none()));

    let a2 = s
        .enqueue_operation(
            OperationKind::ServerVerify,
            &target(&a),
            &json!({}),
            Some(a1.id),
            &["connect".into()],
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(a2.retry_of, Some(a1.id));
    let b1 = enqueue(s, &b, &["connect", "detect"], at(2)).await;

    // FIFO, one mutating operation per target at a time.
    let (w1, w2) = ("node1/w1", "node2/w2");
    let claimed = s
        .claim_next(w1, at(60 * SECOND), at(10))
        .await
        .unwrap()
        .expect("a1 is claimable");
    assert_eq!(claimed.id, a1.id, "the oldest operation first");
    assert_eq!(claimed.status, OperationStatus::Running);
    assert_eq!(claimed.attempt, 1);
    assert_eq!(claimed.started_at, Some(at(10)));
    let claimed = s.claim_next(w2, at(60 * SECOND), at(11)).await.unwrap();
    assert_eq!(
        claimed.map(|o| o.id),
        Some(b1.id),
        "a2 waits for a1 on the same target, b1 may pass it"
    );
    assert_eq!(
        s.claim_next(w1, at(60 * SECOND), at(12)).await.unwrap(),
        None,
        "nothing may start while a1 runs"
    );

    // Tasks move only for the operation's owner.
    assert!(!s.start_task(a1.id, 0, w2, at(13)).await.unwrap());
    assert_eq!(task_statuses(s, a1.id).await[0], TaskStatus::Pending);
    assert!(s.start_task(a1.id, 0, w1, at(13)).await.unwrap());
    let t0 = &s.tasks(a1.id).await.unwrap()[0];
    assert_eq!(
        (t0.status, t0.started_at),
        (TaskStatus::Running, Some(at(13)))
    );
    let out = json!({"nginx": "1.22.1"});
    // Only the holder may record how a task ended.
    assert!(!s
        .finish_task(
            a1.id,
            0,
            w2,
            TaskStatus::Failed,
            None,
            Some("not mine"),
            at(14)
        )
        .await
        .unwrap());
    assert_eq!(task_statuses(s, a1.id).await[0], TaskStatus::Running);
    assert!(s
        .finish_task(
            a1.id,
            0,
            w1,
            TaskStatus::Succeeded,
            Some(&out),
            None,
            at(14)
        )
        .await
        .unwrap());
    assert!(s.start_task(a1.id, 1, w1, at(15)).await.unwrap());
    assert!(s
        .finish_task(a1.id, 1, w1, TaskStatus::Failed, None, Some("boom"), at(16))
        .await
        .unwrap());
    s.skip_pending_tasks(a1.id).await.unwrap();
    let tasks = s.tasks(a1.id).await.unwrap();
    assert_eq!(
        tasks.iter().map(|t| t.status).collect::<Vec<_>>(),
        [
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Skipped
        ]
    );
    assert_eq!(
        (tasks[0].output.clone(), tasks[0].finished_at),
        (out, Some(at(14)))
    );
    assert_eq!(tasks[1].error.as_deref(), Some("boom"));
    assert_eq!(tasks[1].output, json!(null), "no output keeps the old one");

    // Heartbeats extend only the caller's leases: at +90s, w1's lease (extended to +120s) is
    // alive and w2's (still +60s) has expired.
    assert_eq!(s.heartbeat(w1, at(120 * SECOND)).await.unwrap(), 1);
    assert_eq!(
        s.heartbeat("node3/nobody", at(120 * SECOND)).await.unwrap(),
        0
    );
    let orphans = s
        .orphaned_operations(at(90 * SECOND), "node9/", "node9/me")
        .await
        .unwrap();
    let orphan_ids: Vec<i64> = orphans.iter().map(|c| c.operation.id).collect();
    assert_eq!(orphan_ids, [b1.id]);
    assert_eq!(s.heartbeat(w2, at(120 * SECOND)).await.unwrap(), 1);

    // Only the owner ends an operation, and only once.
    assert!(!s
        .finish_operation(a1.id, w2, OperationStatus::Succeeded, None, at(20))
        .await
        .unwrap());
    let still = op(s, a1.id).await;
    assert_eq!(
        (still.status, still.finished_at),
        (OperationStatus::Running, None)
    );
    assert!(s
        .finish_operation(a1.id, w1, OperationStatus::Succeeded, None, at(21))
        .await
        .unwrap());
    let done = op(s, a1.id).await;
    assert_eq!(
        (done.status, done.finished_at),
        (OperationStatus::Succeeded, Some(at(21)))
    );
    assert!(!s
        .finish_operation(a1.id, w1, OperationStatus::Failed, Some("late"), at(22))
        .await
        .unwrap());
    assert_eq!(op(s, a1.id).await, done);

    let claimed = s.claim_next(w1, at(60 * SECOND), at(23)).await.unwrap();
    assert_eq!(
        claimed.map(|o| o.id),
        Some(a2.id),
        "a2 starts once a1 ended"
    );
    assert_eq!(
        s.claim_next(w1, at(60 * SECOND), at(24)).await.unwrap(),
        None
    );

    // Cancelling: queued ends at once, running is asked to stop, ended stays as it is.
    let c1 = enqueue(s, &a, &["connect", "detect"], at(25)).await;
    assert_eq!(
        s.request_cancel(c1.id, at(26)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let cancelled = op(s, c1.id).await;
    assert_eq!(cancelled.status, OperationStatus::Cancelled);
    assert_eq!(cancelled.finished_at, Some(at(26)));
    assert_eq!(
        task_statuses(s, c1.id).await,
        [TaskStatus::Skipped, TaskStatus::Skipped]
    );
    assert!(s.cancel_requested(w1).await.unwrap().is_empty());
    assert_eq!(
        s.request_cancel(a2.id, at(27)).await.unwrap(),
        CancelOutcome::Requested
    );
    let asked = op(s, a2.id).await;
    assert_eq!(asked.status, OperationStatus::Running);
    assert!(asked.cancel_requested);
    assert_eq!(s.cancel_requested(w1).await.unwrap(), [a2.id]);
    assert!(s.cancel_requested(w2).await.unwrap().is_empty());
    assert!(s
        .finish_operation(a2.id, w1, OperationStatus::Cancelled, None, at(28))
        .await
        .unwrap());
    assert!(s.cancel_requested(w1).await.unwrap().is_empty());
    assert_eq!(
        s.request_cancel(a1.id, at(29)).await.unwrap(),
        CancelOutcome::AlreadyFinished(OperationStatus::Succeeded)
    );
    assert_eq!(
        s.request_cancel(c1.id, at(29)).await.unwrap(),
        CancelOutcome::AlreadyFinished(OperationStatus::Cancelled)
    );
    assert_eq!(
        s.request_cancel(b1.id + 1_000_000, at(29)).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert!(s
        .finish_operation(
            b1.id,
            w2,
            OperationStatus::Failed,
            Some("unreachable"),
            at(30)
        )
        .await
        .unwrap());
    assert_eq!(op(s, b1.id).await.error.as_deref(), Some("unreachable"));

    // Listing: filtered, newest first, with the total over all pages.
    let list = |status: Option<OperationStatus>, on: &Server, limit: i64, offset: i64| {
        let f = OperationFilter {
            status,
            target: Some((TargetType::Server, on.id)),
            limit,
            offset,
        };
        async move {
            let p = s.list_operations(&f).await.unwrap();
            (p.total, ids(&p.items))
        }
    };
    assert_eq!(list(None, &a, 10, 0).await, (3, vec![c1.id, a2.id, a1.id]));
    assert_eq!(list(None, &a, 2, 0).await, (3, vec![c1.id, a2.id]));
    assert_eq!(list(None, &a, 2, 2).await, (3, vec![a1.id]));
    assert_eq!(
        list(Some(OperationStatus::Cancelled), &a, 10, 0).await,
        (2, vec![c1.id, a2.id])
    );
    assert_eq!(
        list(Some(OperationStatus::Succeeded), &a, 10, 0).await,
        (1, vec![a1.id])
    );
    assert_eq!(list(None, &b, 10, 0).await, (1, vec![b1.id]));
    assert_eq!(
        list(Some(OperationStatus::Queued), &b, 10, 0).await,
        (0, vec![])
    );
    let other_type = OperationFilter {
        target: Some((TargetType::Cluster, a.id)),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(s.list_operations(&other_type).await.unwrap().total, 0);
    let failed = OperationFilter {
        status: Some(OperationStatus::Failed),
        limit: 10,
        ..Default::default()
    };
    let page = s.list_operations(&failed).await.unwrap();
    assert!(ids(&page.items).contains(&b1.id));
    assert!(page
        .items
        .iter()
        .all(|o| o.status == OperationStatus::Failed));
}

async fn recovery(s: &Store) {
    let me = "me-node/current";
    let lease_short = at(10 * SECOND);
    let lease_long = at(HOUR);
    let now = at(30 * SECOND);
    // One operation per target so that all four can run at once, each claimed by its owner.
    let mut claimed = Vec::new();
    for (i, (owner, lease)) in [
        ("other/1", lease_short),    // lease expired: orphaned
        ("me-node/old", lease_long), // an earlier life of this node: orphaned
        (me, lease_long),            // ours: never an orphan
        ("other/2", lease_long),     // another node, alive: not an orphan
    ]
    .into_iter()
    .enumerate()
    {
        let server = add_server(s, &format!("rec-{i}")).await;
        let queued = enqueue(s, &server, &["connect", "detect", "record"], at(i as i64)).await;
        let op = s
            .claim_next(owner, lease, at(100 + i as i64))
            .await
            .unwrap()
            .expect("claimable");
        assert_eq!(op.id, queued.id);
        claimed.push((op, owner));
    }
    let [(expired, expired_owner), (previous, previous_owner), (mine, _), (alive, alive_owner)] =
        &claimed[..]
    else {
        unreachable!()
    };
    assert!(s
        .start_task(expired.id, 0, expired_owner, at(200))
        .await
        .unwrap());
    assert!(s
        .finish_task(
            expired.id,
            0,
            expired_owner,
            TaskStatus::Succeeded,
            None,
            None,
            at(201)
        )
        .await
        .unwrap());
    assert!(s
        .start_task(expired.id, 1, expired_owner, at(202))
        .await
        .unwrap());

    let orphans = s.orphaned_operations(now, "me-node/", me).await.unwrap();
    let found: Vec<(i64, &str)> = orphans
        .iter()
        .map(|c| (c.operation.id, c.lease_owner.as_str()))
        .collect();
    assert_eq!(
        found,
        [(expired.id, *expired_owner), (previous.id, *previous_owner)]
    );
    assert!(orphans
        .iter()
        .all(|c| c.operation.status == OperationStatus::Running));

    // Requeue is guarded by the old owner, and resumes from the step that was running.
    assert!(!s.requeue_orphan(expired.id, "other/9").await.unwrap());
    assert_eq!(op(s, expired.id).await.status, OperationStatus::Running);
    assert!(s.requeue_orphan(expired.id, expired_owner).await.unwrap());
    assert!(!s.requeue_orphan(expired.id, expired_owner).await.unwrap());
    assert_eq!(op(s, expired.id).await.status, OperationStatus::Queued);
    let tasks = s.tasks(expired.id).await.unwrap();
    assert_eq!(
        tasks.iter().map(|t| t.status).collect::<Vec<_>>(),
        [
            TaskStatus::Succeeded,
            TaskStatus::Pending,
            TaskStatus::Pending
        ]
    );
    assert_eq!(tasks[1].started_at, None);
    let again = s
        .claim_next(me, lease_long, now)
        .await
        .unwrap()
        .expect("the requeued operation");
    assert_eq!(again.id, expired.id);
    assert_eq!(again.attempt, 2);
    assert_eq!(again.started_at, expired.started_at, "first start is kept");

    // Adopting is guarded the same way and makes the operation ours.
    assert!(!s
        .adopt_orphan(previous.id, "other/9", me, lease_long)
        .await
        .unwrap());
    assert!(s
        .adopt_orphan(previous.id, previous_owner, me, lease_long)
        .await
        .unwrap());
    assert!(!s
        .adopt_orphan(previous.id, previous_owner, me, lease_long)
        .await
        .unwrap());
    assert!(!s
        .start_task(previous.id, 0, previous_owner, now)
        .await
        .unwrap());
    assert!(s.start_task(previous.id, 0, me, now).await.unwrap());
    assert!(s
        .orphaned_operations(now, "me-node/", me)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.heartbeat(me, lease_long).await.unwrap(), 3);

    for (id, owner) in [
        (expired.id, me),
        (previous.id, me),
        (mine.id, me),
        (alive.id, *alive_owner),
    ] {
        assert!(s
            .finish_operation(id, owner, OperationStatus::Interrupted, None, now)
            .await
            .unwrap());
    }
}

async fn logs(s: &Store) {
    let host = add_server(s, "log-host").await;
    let l = enqueue(s, &host, &["connect", "detect"], at(0)).await;
    let m = enqueue(s, &host, &["connect"], at(1)).await;
    let mut line_ids = Vec::new();
    for (op_id, seq, level, message) in [
        (l.id, Some(0), LogLevel::Info, "one"),
        (m.id, None, LogLevel::Info, "another operation"),
        (l.id, Some(0), LogLevel::Command, "two"),
        (l.id, None, LogLevel::Warning, "three"),
        (l.id, Some(1), LogLevel::Error, "four"),
    ] {
        let at_ms = line_ids.len() as i64;
        line_ids.push(
            s.append_log(op_id, seq, level, message, at(at_ms))
                .await
                .unwrap(),
        );
    }
    assert!(
        line_ids.windows(2).all(|w| w[0] < w[1]),
        "ids increase: {line_ids:?}"
    );

    let l_id = l.id;
    let messages = |after: i64, limit: i64| async move {
        let lines = s.logs_after(l_id, after, limit).await.unwrap();
        assert!(lines.iter().all(|x| x.operation_id == l_id));
        lines.into_iter().map(|x| x.message).collect::<Vec<_>>()
    };
    assert_eq!(messages(0, 100).await, ["one", "two", "three", "four"]);
    assert_eq!(messages(line_ids[0], 100).await, ["two", "three", "four"]);
    assert_eq!(messages(line_ids[0], 2).await, ["two", "three"]);
    assert_eq!(messages(line_ids[3], 100).await, ["four"]);
    assert!(messages(line_ids[4], 100).await.is_empty());

    let first = &s.logs_after(l.id, 0, 1).await.unwrap()[0];
    assert_eq!(first.id, line_ids[0]);
    assert_eq!(
        (first.task_seq, first.level, first.ts),
        (Some(0), LogLevel::Info, at(0))
    );
    let third = &s.logs_after(l.id, line_ids[2], 1).await.unwrap()[0];
    assert_eq!((third.task_seq, third.level), (None, LogLevel::Warning));
    let other: Vec<String> = s
        .logs_after(m.id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.message)
        .collect();
    assert_eq!(other, ["another operation"]);

    for id in [l.id, m.id] {
        assert_eq!(
            s.request_cancel(id, at(10)).await.unwrap(),
            CancelOutcome::Cancelled
        );
    }
}

async fn logs_are_append_only(s: &Store, url: &str) {
    let host = add_server(s, "evidence-host").await;
    let o = enqueue(s, &host, &["connect"], at(0)).await;
    s.append_log(o.id, Some(0), LogLevel::Info, "evidence", at(1))
        .await
        .unwrap();
    assert_eq!(
        s.request_cancel(o.id, at(2)).await.unwrap(),
        CancelOutcome::Cancelled
    );

    sqlx::any::install_default_drivers();
    let mut raw = sqlx::AnyConnection::connect(url)
        .await
        .expect("raw connection");
    let update = sqlx::query("UPDATE task_logs SET message = 'tampered'")
        .execute(&mut raw)
        .await;
    assert!(update.is_err(), "UPDATE on task_logs must fail: {update:?}");
    let delete = sqlx::query("DELETE FROM task_logs").execute(&mut raw).await;
    assert!(delete.is_err(), "DELETE on task_logs must fail: {delete:?}");
    raw.close().await.unwrap();

    let lines = s.logs_after(o.id, 0, 10).await.unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].message, "evidence");
}

async fn tokens(s: &Store) {
    assert!(!s.has_tokens().await.unwrap());
    let ci = s
        .insert_token("ci", &"a".repeat(64), "aeg_ci01", at(0))
        .await
        .unwrap();
    assert_eq!((ci.name.as_str(), ci.prefix.as_str()), ("ci", "aeg_ci01"));
    assert_eq!((ci.created_at, ci.last_used_at), (at(0), None));
    let admin = s
        .insert_token("admin", &"b".repeat(64), "aeg_ad01", at(1))
        .await
        .unwrap();
    assert!(s.has_tokens().await.unwrap());
    assert_eq!(
        s.token_by_hash(&"a".repeat(64)).await.unwrap(),
        Some(ci.clone())
    );
    assert_eq!(s.token_by_hash(&"c".repeat(64)).await.unwrap(), None);
    assert_eq!(s.list_tokens().await.unwrap(), [admin.clone(), ci.clone()]);

    assert_conflict(
        s.insert_token("ci", &"c".repeat(64), "aeg_ci02", at(2))
            .await,
        "second token named ci",
    );
    assert_conflict(
        s.insert_token("ci2", &"a".repeat(64), "aeg_ci02", at(2))
            .await,
        "second token with ci's hash",
    );
    assert_eq!(s.list_tokens().await.unwrap().len(), 2);

    // Use is recorded at most once a minute.
    s.touch_token(ci.id, at(10 * SECOND)).await.unwrap();
    s.touch_token(ci.id, at(40 * SECOND)).await.unwrap();
    let used = s.token_by_hash(&"a".repeat(64)).await.unwrap().unwrap();
    assert_eq!(used.last_used_at, Some(at(10 * SECOND)));
    s.touch_token(ci.id, at(71 * SECOND)).await.unwrap();
    let used = s.token_by_hash(&"a".repeat(64)).await.unwrap().unwrap();
    assert_eq!(used.last_used_at, Some(at(71 * SECOND)));

    assert!(s.delete_token("ci").await.unwrap());
    assert!(!s.delete_token("ci").await.unwrap());
    assert_eq!(s.token_by_hash(&"a".repeat(64)).await.unwrap(), None);
    assert_eq!(s.list_tokens().await.unwrap(), [admin]);
    assert!(s.has_tokens().await.unwrap());
}

async fn users_and_sessions(s: &Store) {
    let alice = s
        .insert_user("alice", "$argon2id$a", true, at(0))
        .await
        .unwrap();
    assert!(alice.admin && alice.last_login_at.is_none());
    assert!(matches!(
        s.insert_user("alice", "$argon2id$b", false, at(1)).await,
        Err(StoreError::Conflict(_))
    ));
    let bob = s
        .insert_user("bob", "$argon2id$b", false, at(1))
        .await
        .unwrap();
    assert!(!bob.admin);
    assert_eq!(s.list_users().await.unwrap(), [alice.clone(), bob.clone()]);
    assert!(s.has_users().await.unwrap());

    // Failures count up until a login resets them.
    s.record_login_failure(alice.id, at(10)).await.unwrap();
    s.record_login_failure(alice.id, at(20)).await.unwrap();
    let rec = s.login_record("alice").await.unwrap().unwrap();
    assert_eq!((rec.failed_logins, rec.last_failed_at), (2, Some(at(20))));
    assert_eq!(rec.password_hash, "$argon2id$a");
    assert!(s.login_record("carol").await.unwrap().is_none());
    s.open_session(alice.id, "h1", "csrf1", at(30), at(30 + HOUR))
        .await
        .unwrap();
    let rec = s.login_record("alice").await.unwrap().unwrap();
    assert_eq!((rec.failed_logins, rec.last_failed_at), (0, None));
    assert_eq!(rec.user.last_login_at, Some(at(30)));

    // A session opens until it expires, and only by its hash.
    let open = s.session("h1", at(40)).await.unwrap().unwrap();
    assert_eq!(
        (open.user.name.as_str(), open.csrf.as_str()),
        ("alice", "csrf1")
    );
    assert!(s.session("h1", at(30 + HOUR)).await.unwrap().is_none());
    assert!(s.session("h2", at(40)).await.unwrap().is_none());
    // Opening another removes the expired ones.
    s.open_session(bob.id, "h2", "csrf2", at(31 + HOUR), at(40 + HOUR))
        .await
        .unwrap();
    assert!(s.session("h1", at(40)).await.unwrap().is_none());
    s.close_session("h2").await.unwrap();
    assert!(s.session("h2", at(32 + HOUR)).await.unwrap().is_none());

    // A new password closes the account's sessions; deleting it closes them too.
    s.open_session(bob.id, "h3", "c", at(50 + HOUR), at(60 + HOUR))
        .await
        .unwrap();
    assert!(s.set_user_password("bob", "$argon2id$new").await.unwrap());
    assert!(s.session("h3", at(51 + HOUR)).await.unwrap().is_none());
    assert!(!s.set_user_password("nobody", "x").await.unwrap());
    s.open_session(bob.id, "h4", "c", at(52 + HOUR), at(60 + HOUR))
        .await
        .unwrap();
    assert!(s.delete_user("bob").await.unwrap());
    assert!(!s.delete_user("bob").await.unwrap());
    assert!(s.session("h4", at(53 + HOUR)).await.unwrap().is_none());
    let names: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice"]);
}

async fn migrations_are_idempotent(s: &Store, url: &str) {
    let again = Store::open(url)
        .await
        .expect("opening a migrated store again");
    assert_eq!(again.engine(), s.engine());
    assert_eq!(
        again.row_counts().await.unwrap(),
        s.row_counts().await.unwrap()
    );
    assert_eq!(
        again.list_servers().await.unwrap(),
        s.list_servers().await.unwrap()
    );
    assert_eq!(
        again.list_tokens().await.unwrap(),
        s.list_tokens().await.unwrap()
    );
    again.close().await;
}

/// Servers the checks above insert: servers 2, clusters_projects_releases 1, environments 1,
/// operations 2, recovery 4, logs 1, logs_are_append_only 1.
const SERVERS_INSERTED: i64 = 12;

async fn row_counts(s: &Store) {
    let counts = s.row_counts().await.unwrap();
    let count = |table: &str| {
        counts
            .iter()
            .find(|(t, _)| *t == table)
            .unwrap_or_else(|| panic!("row_counts has no {table}: {counts:?}"))
            .1
    };
    let mut tables: Vec<&str> = counts.iter().map(|(t, _)| *t).collect();
    tables.sort();
    assert_eq!(
        tables,
        [
            "api_tokens",
            "backups",
            "clusters",
            "environments",
            "operations",
            "projects",
            "releases",
            "servers",
            "sessions",
            "task_logs",
            "tasks",
            "users",
        ]
    );
    assert_eq!(count("users"), s.list_users().await.unwrap().len() as i64);

    assert_eq!(count("servers"), SERVERS_INSERTED);
    assert_eq!(
        count("servers"),
        s.list_servers().await.unwrap().len() as i64
    );
    assert_eq!(
        count("clusters"),
        s.list_clusters().await.unwrap().len() as i64
    );
    assert_eq!(
        count("projects"),
        s.list_projects().await.unwrap().len() as i64
    );
    assert_eq!(
        count("releases"),
        s.list_releases().await.unwrap().len() as i64
    );
    let envs = s.list_environments(None, 1_000, 0).await.unwrap();
    assert_eq!(count("environments"), envs.total);
    assert_eq!(
        count("backups"),
        s.list_backups(None, true).await.unwrap().len() as i64
    );
    assert_eq!(
        count("api_tokens"),
        s.list_tokens().await.unwrap().len() as i64
    );

    let all = OperationFilter {
        limit: 1_000,
        ..Default::default()
    };
    let ops = s.list_operations(&all).await.unwrap();
    assert_eq!(count("operations"), ops.total);
    let (mut tasks, mut lines) = (0, 0);
    for o in &ops.items {
        tasks += s.tasks(o.id).await.unwrap().len() as i64;
        lines += s.logs_after(o.id, 0, 1_000).await.unwrap().len() as i64;
    }
    assert_eq!(count("tasks"), tasks);
    assert_eq!(count("task_logs"), lines);
    assert_eq!(
        (count("clusters"), count("api_tokens"), count("task_logs")),
        (2, 1, 6),
        "clusters, tokens and log lines the checks above wrote"
    );
}
