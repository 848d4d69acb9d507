//! The pages (GET): each reads through the application layer and fills a view.

use aegir_web::format;
use aegir_web::views::*;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use super::{render, Answer, Problem, Session};
use crate::app::{App, ListQuery, OperationQuery};
use crate::model::*;

/// Rows per page of the environment and operation lists.
pub const PAGE: i64 = 50;
/// A last good backup older than this is shown as a warning.
const STALE_BACKUP_MS: i64 = 2 * 86_400_000;

fn target_href(t: &TargetRef) -> Option<String> {
    match t.target_type {
        TargetType::Environment => Some(format!("/environments/{}", t.name)),
        TargetType::Server => Some("/servers".to_string()),
        TargetType::Release => Some("/releases".to_string()),
        _ => None,
    }
}

pub(super) fn op_row(o: &Operation, now: Timestamp) -> OpRow {
    let duration = match (o.started_at, o.finished_at) {
        (Some(s), Some(f)) => format::duration(f.0 - s.0),
        (Some(s), None) => format::duration(now.0 - s.0),
        _ => String::new(),
    };
    OpRow {
        id: o.id,
        kind: o.kind.to_string(),
        target: format!("{} {}", o.target.target_type, o.target.name),
        target_href: target_href(&o.target),
        status: o.status.to_string(),
        when: format::age(now.0, o.created_at.0),
        duration,
        error: o.error.clone().unwrap_or_default(),
    }
}

fn last_backup(e: &Environment, now: Timestamp) -> (String, bool) {
    match e.last_backup_at {
        Some(t) => (format::age(now.0, t.0), now.0 - t.0 > STALE_BACKUP_MS),
        None => ("never".to_string(), true),
    }
}

pub(super) fn env_row(e: &Environment, now: Timestamp) -> EnvRow {
    let (last_backup, backup_stale) = last_backup(e, now);
    EnvRow {
        uri: e.uri.clone(),
        release: e.release.clone(),
        server: e.server.clone(),
        status: e.status.to_string(),
        https: e.https.to_string(),
        last_backup,
        backup_stale: backup_stale && e.status == EnvironmentStatus::Active,
        aegir3: e.managed_by == Management::Aegir3,
    }
}

fn ops(status: Option<OperationStatus>, limit: i64) -> OperationQuery {
    OperationQuery {
        limit: Some(limit),
        status,
        ..OperationQuery::default()
    }
}

pub async fn dashboard(State(app): State<App>, Extension(s): Extension<Session>) -> Answer {
    let now = app.now();
    let mut running = Vec::new();
    for status in [OperationStatus::Running, OperationStatus::Queued] {
        let page = app.list_operations(ops(Some(status), 50)).await?;
        running.extend(page.items.iter().map(|o| op_row(o, now)));
    }
    let failed = app
        .list_operations(ops(Some(OperationStatus::Failed), 10))
        .await?;
    let by_status = app
        .environment_counts()
        .await?
        .into_iter()
        .map(|(status, n)| Count {
            label: status.to_string(),
            n,
        })
        .collect();
    let stalest = app.environments_by_backup_age(10).await?;
    Ok(render(
        &DashboardPage {
            chrome: s.chrome("dashboard"),
            running,
            failed: failed.items.iter().map(|o| op_row(o, now)).collect(),
            by_status,
            stalest: stalest.iter().map(|e| env_row(e, now)).collect(),
        },
        StatusCode::OK,
    ))
}

pub(super) async fn servers_page(
    app: &App,
    s: &Session,
    form: FormState,
    status: StatusCode,
) -> Answer {
    let now = app.now();
    let servers = app
        .list_servers()
        .await?
        .iter()
        .map(|v| ServerRow {
            name: v.name.clone(),
            transport: v.transport.to_string(),
            address: match (&v.ssh_user, &v.ssh_host, v.ssh_port) {
                (Some(u), Some(h), Some(22) | None) => format!("{u}@{h}"),
                (Some(u), Some(h), Some(p)) => format!("{u}@{h}:{p}"),
                _ => String::new(),
            },
            status: v.status.to_string(),
            services: services(&v.services),
            verified: v
                .verified_at
                .map_or("never".to_string(), |t| format::age(now.0, t.0)),
        })
        .collect();
    let clusters = app
        .list_clusters()
        .await?
        .iter()
        .map(|c| ClusterRow {
            name: c.name.clone(),
            api_url: c.api_url.clone(),
            status: c.status.to_string(),
        })
        .collect();
    Ok(render(
        &ServersPage {
            chrome: s.chrome("servers"),
            servers,
            clusters,
            public_key: app.ssh_public_key().await?,
            form,
        },
        status,
    ))
}

/// "nginx 1.22.1, php-fpm 8.2.7, mariadb 10.11.6" from what verify found.
fn services(d: &DetectedServices) -> String {
    d.http
        .iter()
        .chain(&d.php_fpm)
        .chain(&d.db)
        .map(|s| format!("{} {}", s.name, s.version))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn servers(State(app): State<App>, Extension(s): Extension<Session>) -> Answer {
    servers_page(&app, &s, FormState::default(), StatusCode::OK).await
}

pub(super) async fn releases_page(
    app: &App,
    s: &Session,
    project_form: FormState,
    release_form: FormState,
    status: StatusCode,
) -> Answer {
    let projects = app
        .list_projects()
        .await?
        .iter()
        .map(|p| ProjectRow {
            name: p.name.clone(),
            source: match (&p.path, &p.git_url) {
                (Some(path), _) => path.clone(),
                (None, Some(git)) => match &p.git_ref {
                    Some(r) => format!("{git} ({r})"),
                    None => git.clone(),
                },
                (None, None) => p.source.to_string(),
            },
        })
        .collect();
    let releases = app
        .list_releases()
        .await?
        .iter()
        .map(|r| ReleaseRow {
            name: r.name.clone(),
            project: r.project.clone(),
            server: r.server.clone().unwrap_or_default(),
            status: r.status.to_string(),
            app: match (&r.app_kind, &r.app_version) {
                (Some(k), Some(v)) => format!("{k} {v}"),
                (Some(k), None) => k.to_string(),
                _ => String::new(),
            },
            locked: r.locked,
            packages: r
                .packages
                .iter()
                .map(|p| match &p.version {
                    Some(v) => format!("{} {v}", p.name),
                    None => p.name.clone(),
                })
                .collect(),
        })
        .collect();
    let servers = app
        .list_servers()
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    Ok(render(
        &ReleasesPage {
            chrome: s.chrome("releases"),
            projects,
            releases,
            servers,
            project_form,
            release_form,
        },
        status,
    ))
}

pub async fn releases(State(app): State<App>, Extension(s): Extension<Session>) -> Answer {
    releases_page(
        &app,
        &s,
        FormState::default(),
        FormState::default(),
        StatusCode::OK,
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    page: Option<i64>,
}

/// "51–100 of 10,000" and the links to the pages around it: `path?key=value&page=N`, the
/// filter left out when empty.
fn paging(
    total: i64,
    page: i64,
    shown: usize,
    path: &str,
    (key, value): (&str, &str),
) -> (String, Option<String>, Option<String>) {
    let first = (page - 1) * PAGE + 1;
    let range = if shown == 0 {
        format!("0 of {}", format::count(total))
    } else {
        format!(
            "{}–{} of {}",
            format::count(first),
            format::count(first + shown as i64 - 1),
            format::count(total)
        )
    };
    let link = |n: i64| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !value.is_empty() {
            query.append_pair(key, value);
        }
        query.append_pair("page", &n.to_string());
        format!("{path}?{}", query.finish())
    };
    let prev = (page > 1).then(|| link(page - 1));
    let next = (page * PAGE < total).then(|| link(page + 1));
    (range, prev, next)
}

fn page_number(p: Option<i64>) -> Result<i64, Problem> {
    match p {
        None => Ok(1),
        Some(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Some(_) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Not accepted",
            "page must be a number from 1",
        )),
    }
}

pub async fn environments(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Query(p): Query<ListParams>,
) -> Answer {
    let page = page_number(p.page)?;
    let now = app.now();
    let list = app
        .list_environments(ListQuery {
            limit: Some(PAGE),
            offset: Some((page - 1) * PAGE),
            q: Some(p.q.clone()),
        })
        .await?;
    let (range, prev, next) = paging(
        list.total,
        page,
        list.items.len(),
        "/environments",
        ("q", &p.q),
    );
    Ok(render(
        &EnvironmentsPage {
            chrome: s.chrome("environments"),
            q: p.q,
            rows: list.items.iter().map(|e| env_row(e, now)).collect(),
            total: list.total,
            range: format!("Environments {range}"),
            prev,
            next,
        },
        StatusCode::OK,
    ))
}

/// Names of the releases an environment can be installed on.
async fn ready_releases(app: &App) -> Result<Vec<String>, Problem> {
    Ok(app
        .list_releases()
        .await?
        .into_iter()
        .filter(|r| r.status == ReleaseStatus::Ready && !r.locked)
        .map(|r| r.name)
        .collect())
}

pub(super) async fn new_environment_page(
    app: &App,
    s: &Session,
    form: FormState,
    status: StatusCode,
) -> Answer {
    Ok(render(
        &NewEnvironmentPage {
            chrome: s.chrome("environments"),
            releases: ready_releases(app).await?,
            form,
        },
        status,
    ))
}

pub async fn new_environment(State(app): State<App>, Extension(s): Extension<Session>) -> Answer {
    new_environment_page(&app, &s, FormState::default(), StatusCode::OK).await
}

pub(super) async fn environment_page(
    app: &App,
    s: &Session,
    uri: &str,
    form: FormState,
    status: StatusCode,
) -> Answer {
    let now = app.now();
    let e = app
        .environment(uri)
        .await
        .map_err(|e| Problem::from(e).back("/environments"))?;
    let backups = app.list_backups(Some(&e.uri)).await?;
    let operations = app
        .list_operations(OperationQuery {
            limit: Some(20),
            target_type: Some(TargetType::Environment),
            target: Some(e.uri.clone()),
            ..OperationQuery::default()
        })
        .await?;
    let (last_backup, backup_stale) = last_backup(&e, now);
    let detail = EnvDetail {
        uri: e.uri.clone(),
        status: e.status.to_string(),
        release: e.release.clone(),
        server: e.server.clone(),
        aliases: e.aliases.clone(),
        redirect_aliases: e.redirect_aliases,
        https: e.https.to_string(),
        client: e.client.clone().unwrap_or_default(),
        managed_by: e.managed_by.to_string(),
        last_backup,
        backup_stale: backup_stale && e.status == EnvironmentStatus::Active,
        schedule: match e.backup_interval {
            None => "the daemon's default".to_string(),
            Some(0) => "off".to_string(),
            Some(secs) => format!("every {}", format::duration(secs * 1000)),
        },
        retention: match &e.retention {
            None => "the daemon's default".to_string(),
            Some(p) => format!(
                "the last {}, and the newest of {} days, {} weeks, {} months",
                p.last, p.daily, p.weekly, p.monthly
            ),
        },
        active: e.status == EnvironmentStatus::Active,
        disabled: e.status == EnvironmentStatus::Disabled,
        aegir3: e.managed_by == Management::Aegir3,
    };
    Ok(render(
        &EnvironmentPage {
            chrome: s.chrome("environments"),
            env: detail,
            backups: backups
                .iter()
                .map(|b| BackupRow {
                    id: b.id,
                    created: format::age(now.0, b.created_at.0),
                    size: b.size.map(format::size).unwrap_or_default(),
                    status: b.status.to_string(),
                    reason: b.reason.to_string(),
                    format: b.format.to_string(),
                    description: b.description.clone().unwrap_or_default(),
                    restorable: b.status == BackupStatus::Good,
                })
                .collect(),
            operations: operations.items.iter().map(|o| op_row(o, now)).collect(),
            releases: ready_releases(app).await?,
            form,
        },
        status,
    ))
}

pub async fn environment(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Path(uri): Path<String>,
) -> Answer {
    environment_page(&app, &s, &uri, FormState::default(), StatusCode::OK).await
}

#[derive(Debug, Default, Deserialize)]
pub struct OperationParams {
    /// Open the login link as soon as it is there.
    #[serde(default)]
    go: Option<String>,
}

async fn operation_view(app: &App, id: Id, go: bool) -> Result<OperationView, Problem> {
    let now = app.now();
    let detail = app
        .operation(id)
        .await
        .map_err(|e| Problem::from(e).back("/operations"))?;
    let o = &detail.operation;
    let login_url = (o.kind == OperationKind::EnvLogin && o.status == OperationStatus::Succeeded)
        .then(|| {
            detail
                .tasks
                .iter()
                .find_map(|t| t.output["url"].as_str().map(str::to_string))
        })
        .flatten();
    Ok(OperationView {
        row: op_row(o, now),
        steps: detail
            .tasks
            .iter()
            .map(|t| StepRow {
                seq: t.seq,
                name: t.name.clone(),
                status: t.status.to_string(),
                duration: match (t.started_at, t.finished_at) {
                    (Some(a), Some(b)) => format::duration(b.0 - a.0),
                    (Some(a), None) => format::duration(now.0 - a.0),
                    _ => String::new(),
                },
                error: t.error.clone().unwrap_or_default(),
            })
            .collect(),
        finished: o.status.is_final(),
        // As `App::retry_operation` decides: a task Aegir 3 ran is history.
        can_retry: o.kind != OperationKind::Aegir3Task && o.status.is_retryable(),
        can_cancel: !o.status.is_final() && !o.cancel_requested,
        login_url,
        go,
    })
}

/// Log lines shown when the page loads; the rest follow live.
const LOG_LINES: i64 = 5000;

pub async fn operation(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Path(id): Path<Id>,
    Query(p): Query<OperationParams>,
) -> Answer {
    let op = operation_view(&app, id, p.go.is_some()).await?;
    let lines = app.operation_logs(id, 0, LOG_LINES).await?;
    let last_log_id = lines.last().map_or(0, |l| l.id);
    Ok(render(
        &OperationPage {
            chrome: s.chrome("operations"),
            op,
            log: lines
                .iter()
                .map(|l| LogRow {
                    id: l.id,
                    time: l.ts.to_string().get(11..19).unwrap_or_default().to_string(),
                    level: l.level.to_string(),
                    message: l.message.clone(),
                })
                .collect(),
            last_log_id,
        },
        StatusCode::OK,
    ))
}

/// The status, steps and buttons of an operation, which htmx swaps in while it runs.
pub async fn operation_state(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Path(id): Path<Id>,
    Query(p): Query<OperationParams>,
) -> Answer {
    let op = operation_view(&app, id, p.go.is_some()).await?;
    Ok(render(
        &OperationState {
            chrome: s.chrome("operations"),
            op,
        },
        StatusCode::OK,
    ))
}

pub async fn operations(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Query(p): Query<ListParams>,
) -> Answer {
    let page = page_number(p.page)?;
    let now = app.now();
    let status =
        if p.status.is_empty() {
            None
        } else {
            Some(p.status.parse::<OperationStatus>().map_err(|e| {
                Problem::new(StatusCode::BAD_REQUEST, "Not accepted", &e.to_string())
            })?)
        };
    let list = app
        .list_operations(OperationQuery {
            limit: Some(PAGE),
            offset: Some((page - 1) * PAGE),
            status,
            ..OperationQuery::default()
        })
        .await?;
    let (range, prev, next) = paging(
        list.total,
        page,
        list.items.len(),
        "/operations",
        ("status", &p.status),
    );
    Ok(render(
        &OperationsPage {
            chrome: s.chrome("operations"),
            status: p.status,
            statuses: OperationStatus::ALL.iter().map(|s| s.as_str()).collect(),
            rows: list.items.iter().map(|o| op_row(o, now)).collect(),
            range: format!("Operations {range}, newest first"),
            prev,
            next,
        },
        StatusCode::OK,
    ))
}

pub async fn import(Extension(s): Extension<Session>) -> Response {
    let mut form = FormState::default();
    form.values
        .insert("aegir_root".to_string(), "/var/aegir".to_string());
    render(
        &ImportPage {
            chrome: s.chrome("import"),
            form,
            result: None,
        },
        StatusCode::OK,
    )
}
