//! What the forms do (POST), and the login page. An action that starts an operation answers
//! with a redirect to that operation's live page; a refused form is shown again with its
//! values and the reason, and nothing was changed.

use std::collections::BTreeMap;

use aegir_web::views::{FormState, ImportPage, ImportResult, ImportRow, LoginPage};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde::Deserialize;

use super::{
    pages, render, set_cookie, Answer, Fields, Problem, Session, LOGIN_COOKIE, SESSION_COOKIE,
};
use crate::accounts::{LoginRefused, SESSION_TTL_MS};
use crate::app::{
    App, AppError, EnvAction, EnvActionRequest, ImportAegir3, NewEnvironment, NewProject,
    NewRelease, NewServer,
};
use crate::model::{HttpsMode, Id, ImportOutcome, Operation, Transport};

fn to_operation(op: &Operation) -> Response {
    Redirect::to(&format!("/operations/{}", op.id)).into_response()
}

/// The form's values, to show it again after a refusal (never the CSRF token or a password).
fn form_state(values: &[(&str, &str)], error: AppError) -> Result<FormState, Problem> {
    let field = match &error {
        AppError::Invalid(i) => Some(i.field.clone()),
        AppError::Conflict(_) => Some("name".to_string()),
        AppError::InvalidState(_) | AppError::NotFound { .. } | AppError::Unreachable(_) => None,
        // Anything else is not about the form: the problem page says what it is.
        _ => return Err(error.into()),
    };
    Ok(FormState {
        error: Some(error.to_string()),
        field,
        values: values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    })
}

fn none_if_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

// --- login

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// Where to go after login: only a path on this site (never `//host` or `/\host`).
fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if ok { next } else { "/" }.to_string()
}

fn login_page(
    headers: &HeaderMap,
    next: &str,
    name: &str,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let token = crate::hex::random(32);
    let mut response = render(
        &LoginPage {
            csrf: token.clone(),
            next: safe_next(next),
            name: name.to_string(),
            error,
        },
        status,
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, LOGIN_COOKIE, &token, "/login", 3600),
    );
    response
}

pub async fn login_form(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    // Already logged in: straight on.
    if let Some(c) = super::cookie(&headers, SESSION_COOKIE) {
        if let Ok(Some(_)) = app.session(&c).await {
            return Redirect::to(&safe_next(&q.next)).into_response();
        }
    }
    login_page(&headers, &q.next, "", None, StatusCode::OK)
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

pub async fn login(
    State(app): State<App>,
    headers: HeaderMap,
    Fields(f): Fields<LoginForm>,
) -> Response {
    // The login form's token is the one its cookie holds: a form posted from another site
    // cannot know it.
    let expected = super::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !super::same(&f.csrf, &expected) {
        return login_page(
            &headers,
            &f.next,
            &f.name,
            Some("The login form expired. Please try again.".to_string()),
            StatusCode::FORBIDDEN,
        );
    }
    match app.login(f.name.trim(), &f.password).await {
        Ok(Ok(session)) => {
            let mut response = Redirect::to(&safe_next(&f.next)).into_response();
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(
                    &headers,
                    SESSION_COOKIE,
                    &session.cookie,
                    "/",
                    SESSION_TTL_MS / 1000,
                ),
            );
            h.append(
                header::SET_COOKIE,
                set_cookie(&headers, LOGIN_COOKIE, "", "/login", 0),
            );
            response
        }
        Ok(Err(LoginRefused::BadCredentials)) => login_page(
            &headers,
            &f.next,
            &f.name,
            Some("Wrong user name or password.".to_string()),
            StatusCode::UNAUTHORIZED,
        ),
        Ok(Err(LoginRefused::Throttled { retry_after_secs })) => {
            let mut response = login_page(
                &headers,
                &f.next,
                &f.name,
                Some(format!(
                    "Too many failed logins for this account. Try again in {retry_after_secs} s."
                )),
                StatusCode::TOO_MANY_REQUESTS,
            );
            if let Ok(v) = retry_after_secs.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "web UI login failed inside");
            login_page(
                &headers,
                &f.next,
                &f.name,
                Some("Something went wrong inside aegird; the details are in its log.".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            )
        }
    }
}

pub async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    Extension(s): Extension<Session>,
) -> Answer {
    app.logout(&s.cookie).await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", "/", 0),
    );
    Ok(response)
}

// --- servers, projects, releases

#[derive(Debug, Default, Deserialize)]
pub struct ServerForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    transport: String,
    #[serde(default)]
    ssh: String,
}

/// Adds the server and verifies it at once: a server is of no use until verified.
pub async fn add_server(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Fields(f): Fields<ServerForm>,
) -> Answer {
    let values = [
        ("name", f.name.as_str()),
        ("transport", f.transport.as_str()),
        ("ssh", f.ssh.as_str()),
    ];
    let transport = if f.transport == "ssh" {
        Transport::Ssh
    } else {
        Transport::Local
    };
    let added = app
        .add_server(NewServer {
            name: f.name.trim().to_string(),
            transport,
            ssh: (transport == Transport::Ssh)
                .then(|| none_if_empty(&f.ssh))
                .flatten(),
        })
        .await;
    match added {
        Ok(added) => Ok(to_operation(&app.verify_server(&added.server.name).await?)),
        Err(e) => {
            let form = form_state(&values, e)?;
            pages::servers_page(&app, &s, form, StatusCode::UNPROCESSABLE_ENTITY).await
        }
    }
}

pub async fn verify_server(State(app): State<App>, Path(name): Path<String>) -> Answer {
    Ok(to_operation(&app.verify_server(&name).await?))
}

#[derive(Debug, Default, Deserialize)]
pub struct ProjectForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    git: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
}

pub async fn add_project(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Fields(f): Fields<ProjectForm>,
) -> Answer {
    let values = [
        ("name", f.name.as_str()),
        ("path", f.path.as_str()),
        ("git", f.git.as_str()),
        ("ref", f.git_ref.as_str()),
    ];
    let added = app
        .add_project(NewProject {
            name: f.name.trim().to_string(),
            git: none_if_empty(&f.git),
            git_ref: none_if_empty(&f.git_ref),
            path: none_if_empty(&f.path),
        })
        .await;
    match added {
        Ok(_) => Ok(Redirect::to("/releases").into_response()),
        Err(e) => {
            let form = form_state(&values, e)?;
            pages::releases_page(
                &app,
                &s,
                form,
                FormState::default(),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ReleaseForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    server: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
}

/// Records the release and builds and verifies it at once.
pub async fn create_release(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Fields(f): Fields<ReleaseForm>,
) -> Answer {
    let values = [
        ("name", f.name.as_str()),
        ("project", f.project.as_str()),
        ("server", f.server.as_str()),
        ("ref", f.git_ref.as_str()),
    ];
    let created = app
        .create_release(NewRelease {
            name: f.name.trim().to_string(),
            project: f.project.clone(),
            server: f.server.clone(),
            git_ref: none_if_empty(&f.git_ref),
        })
        .await;
    match created {
        Ok(r) => Ok(to_operation(&app.verify_release(&r.name).await?)),
        Err(e) => {
            let form = form_state(&values, e)?;
            pages::releases_page(
                &app,
                &s,
                FormState::default(),
                form,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

pub async fn verify_release(State(app): State<App>, Path(name): Path<String>) -> Answer {
    Ok(to_operation(&app.verify_release(&name).await?))
}

// --- environments

#[derive(Debug, Default, Deserialize)]
pub struct EnvironmentForm {
    #[serde(default)]
    uri: String,
    #[serde(default)]
    release: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    aliases: String,
    #[serde(default)]
    redirect_aliases: String,
}

pub async fn create_environment(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Fields(f): Fields<EnvironmentForm>,
) -> Answer {
    let values = [
        ("uri", f.uri.as_str()),
        ("release", f.release.as_str()),
        ("title", f.title.as_str()),
        ("aliases", f.aliases.as_str()),
        ("redirect_aliases", f.redirect_aliases.as_str()),
    ];
    let created = app
        .create_environment(NewEnvironment {
            uri: f.uri.trim().to_string(),
            release: f.release.clone(),
            aliases: f
                .aliases
                .split(|c: char| c == '\n' || c == ',' || c.is_whitespace())
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
            redirect_aliases: f.redirect_aliases == "on",
            // Certificates come with the HTTPS work; until then the app refuses any other.
            https: HttpsMode::Off,
            title: none_if_empty(&f.title),
        })
        .await;
    match created {
        Ok(op) => Ok(to_operation(&op)),
        Err(e) => {
            let form = form_state(&values, e)?;
            pages::new_environment_page(&app, &s, form, StatusCode::UNPROCESSABLE_ENTITY).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct EnvActionForm {
    /// restore
    #[serde(default)]
    backup: String,
    /// clone
    #[serde(default)]
    uri: String,
    /// clone
    #[serde(default)]
    release: String,
    /// delete: the uri, typed again
    #[serde(default)]
    confirm: String,
    /// delete
    #[serde(default)]
    skip_backup: String,
}

pub async fn environment(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Path((uri, action)): Path<(String, String)>,
    Fields(f): Fields<EnvActionForm>,
) -> Answer {
    let Ok(action) = serde_json::from_value::<EnvAction>(serde_json::Value::String(action.clone()))
    else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("there is no environment action {action:?}"),
        )
        .back(format!("/environments/{uri}")));
    };
    let mut req = EnvActionRequest::default();
    match action {
        EnvAction::Restore => {
            let Ok(id) = f.backup.trim().parse::<Id>() else {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Not accepted",
                    "choose the backup to restore",
                )
                .back(format!("/environments/{uri}")));
            };
            req.backup = Some(id);
        }
        EnvAction::Clone => {
            req.uri = Some(f.uri.trim().to_string());
            req.release = none_if_empty(&f.release);
        }
        EnvAction::Delete => {
            if f.confirm.trim() != uri {
                let form = FormState {
                    error: Some(format!(
                        "To delete it, type the environment's uri ({uri}) exactly."
                    )),
                    field: Some("confirm".to_string()),
                    values: BTreeMap::new(),
                };
                return pages::environment_page(
                    &app,
                    &s,
                    &uri,
                    form,
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
            req.skip_backup = f.skip_backup == "on";
        }
        _ => {}
    }
    match app.environment_action(&uri, action, req).await {
        Ok(op) if action == EnvAction::Login => {
            Ok(Redirect::to(&format!("/operations/{}?go=1", op.id)).into_response())
        }
        Ok(op) => Ok(to_operation(&op)),
        Err(e @ AppError::NotFound { .. }) => Err(Problem::from(e).back("/environments")),
        Err(e) => {
            let values = [("uri", f.uri.as_str()), ("release", f.release.as_str())];
            let form = form_state(&values, e)?;
            pages::environment_page(&app, &s, &uri, form, StatusCode::UNPROCESSABLE_ENTITY).await
        }
    }
}

// --- operations

pub async fn retry(State(app): State<App>, Path(id): Path<Id>) -> Answer {
    match app.retry_operation(id).await {
        Ok(op) => Ok(to_operation(&op)),
        Err(e) => Err(Problem::from(e).back(format!("/operations/{id}"))),
    }
}

pub async fn cancel(State(app): State<App>, Path(id): Path<Id>) -> Answer {
    match app.cancel_operation(id).await {
        Ok(_) => Ok(Redirect::to(&format!("/operations/{id}")).into_response()),
        Err(e) => Err(Problem::from(e).back(format!("/operations/{id}"))),
    }
}

// --- Aegir 3 import

#[derive(Debug, Default, Deserialize)]
pub struct ImportForm {
    #[serde(default)]
    aegir_root: String,
    #[serde(default)]
    hostmaster_db: String,
    /// "preview" or "import"
    #[serde(default)]
    mode: String,
}

pub async fn import(
    State(app): State<App>,
    Extension(s): Extension<Session>,
    Fields(f): Fields<ImportForm>,
) -> Answer {
    let dry_run = f.mode != "import";
    // The database URL may hold a password: it is not shown again.
    let values = [("aegir_root", f.aegir_root.as_str())];
    let report = app
        .import_aegir3(ImportAegir3 {
            hostmaster_db: none_if_empty(&f.hostmaster_db),
            aegir_root: none_if_empty(&f.aegir_root),
            dry_run,
        })
        .await;
    let (form, result, status) = match report {
        Ok(r) => {
            let s = &r.summary;
            let result = ImportResult {
                dry_run: r.dry_run,
                source: r.source.clone(),
                summary: format!(
                    "{} adopted, {} updated, {} unchanged, {} skipped, {} failed",
                    s.adopted, s.updated, s.unchanged, s.skipped, s.failed
                ),
                notes: r.notes.clone(),
                rows: r
                    .items
                    .iter()
                    .map(|i| ImportRow {
                        kind: i.kind.to_string(),
                        aegir3: i.aegir3.clone(),
                        label: i.label.clone(),
                        outcome: i.outcome.to_string(),
                        detail: detail(i),
                    })
                    .collect(),
                elapsed: aegir_web::format::duration(r.elapsed_ms as i64),
            };
            let mut form = FormState::default();
            form.values
                .insert("aegir_root".into(), f.aegir_root.clone());
            (form, Some(result), StatusCode::OK)
        }
        Err(e) => (
            form_state(&values, e)?,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    };
    Ok(render(
        &ImportPage {
            chrome: s.chrome("import"),
            form,
            result,
        },
        status,
    ))
}

fn detail(i: &crate::model::ImportItem) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &i.reason {
        parts.push(r.clone());
    }
    if !i.changes.is_empty() && i.outcome == ImportOutcome::Updated {
        parts.push(format!("changed: {}", i.changes.join(", ")));
    }
    parts.extend(i.warnings.iter().cloned());
    parts.join("; ")
}
