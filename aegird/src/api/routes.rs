//! Handlers of `/api/v1`: each parses the request, calls one application-layer function and
//! shapes its answer. The `#[utoipa::path]` on each is what the OpenAPI document is built from.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, OptionalJson};
use crate::app::{
    App, CreatedToken, EnvAction, EnvActionRequest, ImportAegir3, ListQuery, NewCluster,
    NewEnvironment, NewProject, NewRelease, NewServer, NewToken, OperationQuery, ServerAdded,
};
use crate::model::*;

type R<T> = Result<Json<T>, ApiError>;
type Created<T> = Result<(StatusCode, Json<T>), ApiError>;

fn created<T>(v: T) -> (StatusCode, Json<T>) {
    (StatusCode::CREATED, Json(v))
}

fn accepted<T>(v: T) -> (StatusCode, Json<T>) {
    (StatusCode::ACCEPTED, Json(v))
}

// --- servers

#[utoipa::path(get, path = "/servers", tag = "servers",
    responses((status = 200, body = Vec<Server>), (status = 401, body = ErrorBody)))]
pub async fn list_servers(State(app): State<App>) -> R<Vec<Server>> {
    Ok(Json(app.list_servers().await?))
}

#[utoipa::path(post, path = "/servers", tag = "servers", request_body = NewServer,
    responses((status = 201, body = ServerAdded), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn add_server(
    State(app): State<App>,
    ApiJson(req): ApiJson<NewServer>,
) -> Created<ServerAdded> {
    Ok(created(app.add_server(req).await?))
}

#[utoipa::path(get, path = "/servers/{name}", tag = "servers", params(("name" = String, Path)),
    responses((status = 200, body = Server), (status = 404, body = ErrorBody)))]
pub async fn get_server(State(app): State<App>, ApiPath(name): ApiPath<String>) -> R<Server> {
    Ok(Json(app.server(&name).await?))
}

#[utoipa::path(post, path = "/servers/{name}/verify", tag = "servers",
    params(("name" = String, Path)),
    responses((status = 202, body = Operation), (status = 404, body = ErrorBody)))]
pub async fn verify_server(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
) -> Created<Operation> {
    Ok(accepted(app.verify_server(&name).await?))
}

// --- clusters

#[utoipa::path(get, path = "/clusters", tag = "clusters", responses((status = 200, body = Vec<Cluster>)))]
pub async fn list_clusters(State(app): State<App>) -> R<Vec<Cluster>> {
    Ok(Json(app.list_clusters().await?))
}

#[utoipa::path(post, path = "/clusters", tag = "clusters", request_body = NewCluster,
    responses((status = 201, body = Cluster), (status = 422, body = ErrorBody)))]
pub async fn add_cluster(
    State(app): State<App>,
    ApiJson(req): ApiJson<NewCluster>,
) -> Created<Cluster> {
    Ok(created(app.add_cluster(req).await?))
}

#[utoipa::path(get, path = "/clusters/{name}", tag = "clusters", params(("name" = String, Path)),
    responses((status = 200, body = Cluster), (status = 404, body = ErrorBody)))]
pub async fn get_cluster(State(app): State<App>, ApiPath(name): ApiPath<String>) -> R<Cluster> {
    Ok(Json(app.cluster(&name).await?))
}

#[utoipa::path(post, path = "/clusters/{name}/verify", tag = "clusters",
    params(("name" = String, Path)),
    responses((status = 202, body = Operation), (status = 501, body = ErrorBody)))]
pub async fn verify_cluster(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
) -> Created<Operation> {
    Ok(accepted(app.verify_cluster(&name).await?))
}

// --- projects

#[utoipa::path(get, path = "/projects", tag = "projects", responses((status = 200, body = Vec<Project>)))]
pub async fn list_projects(State(app): State<App>) -> R<Vec<Project>> {
    Ok(Json(app.list_projects().await?))
}

#[utoipa::path(post, path = "/projects", tag = "projects", request_body = NewProject,
    responses((status = 201, body = Project), (status = 422, body = ErrorBody)))]
pub async fn add_project(
    State(app): State<App>,
    ApiJson(req): ApiJson<NewProject>,
) -> Created<Project> {
    Ok(created(app.add_project(req).await?))
}

#[utoipa::path(get, path = "/projects/{name}", tag = "projects", params(("name" = String, Path)),
    responses((status = 200, body = Project), (status = 404, body = ErrorBody)))]
pub async fn get_project(State(app): State<App>, ApiPath(name): ApiPath<String>) -> R<Project> {
    Ok(Json(app.project(&name).await?))
}

// --- releases

#[utoipa::path(get, path = "/releases", tag = "releases", responses((status = 200, body = Vec<Release>)))]
pub async fn list_releases(State(app): State<App>) -> R<Vec<Release>> {
    Ok(Json(app.list_releases().await?))
}

#[utoipa::path(post, path = "/releases", tag = "releases", request_body = NewRelease,
    responses((status = 201, body = Release), (status = 422, body = ErrorBody)))]
pub async fn create_release(
    State(app): State<App>,
    ApiJson(req): ApiJson<NewRelease>,
) -> Created<Release> {
    Ok(created(app.create_release(req).await?))
}

#[utoipa::path(get, path = "/releases/{name}", tag = "releases", params(("name" = String, Path)),
    responses((status = 200, body = Release), (status = 404, body = ErrorBody)))]
pub async fn get_release(State(app): State<App>, ApiPath(name): ApiPath<String>) -> R<Release> {
    Ok(Json(app.release(&name).await?))
}

#[utoipa::path(post, path = "/releases/{name}/verify", tag = "releases",
    params(("name" = String, Path)),
    responses((status = 202, body = Operation), (status = 501, body = ErrorBody)))]
pub async fn verify_release(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
) -> Created<Operation> {
    Ok(accepted(app.verify_release(&name).await?))
}

// --- environments

#[utoipa::path(get, path = "/environments", tag = "environments", params(ListQuery),
    responses((status = 200, body = Page<Environment>), (status = 400, body = ErrorBody)))]
pub async fn list_environments(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> R<Page<Environment>> {
    Ok(Json(app.list_environments(q).await?))
}

#[utoipa::path(post, path = "/environments", tag = "environments", request_body = NewEnvironment,
    responses((status = 202, body = Operation), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 501, body = ErrorBody)))]
pub async fn create_environment(
    State(app): State<App>,
    ApiJson(req): ApiJson<NewEnvironment>,
) -> Created<Operation> {
    Ok(accepted(app.create_environment(req).await?))
}

#[utoipa::path(get, path = "/environments/{uri}", tag = "environments",
    params(("uri" = String, Path)),
    responses((status = 200, body = Environment), (status = 404, body = ErrorBody)))]
pub async fn get_environment(
    State(app): State<App>,
    ApiPath(uri): ApiPath<String>,
) -> R<Environment> {
    Ok(Json(app.environment(&uri).await?))
}

/// The body is optional: `{"description": ...}` for backup, `{"backup": ID}` or
/// `{"file": PATH}` for restore, `{"uri": NEW, "release": R}` for clone (the operation
/// targets the new environment), `{"skip_backup": true}` for delete.
#[utoipa::path(post, path = "/environments/{uri}/{action}", tag = "environments",
    params(("uri" = String, Path), ("action" = EnvAction, Path)),
    request_body(content = Option<EnvActionRequest>),
    responses((status = 202, body = Operation), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 501, body = ErrorBody)))]
pub async fn environment_action(
    State(app): State<App>,
    ApiPath((uri, action)): ApiPath<(String, EnvAction)>,
    OptionalJson(req): OptionalJson<EnvActionRequest>,
) -> Created<Operation> {
    Ok(accepted(app.environment_action(&uri, action, req).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupSchedule {
    /// Seconds between scheduled backups; 0 turns them off, null follows the daemon's
    /// default.
    pub backup_interval: Option<i64>,
}

#[utoipa::path(put, path = "/environments/{uri}/schedule", tag = "environments",
    params(("uri" = String, Path)), request_body = BackupSchedule,
    responses((status = 200, body = Environment), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn set_schedule(
    State(app): State<App>,
    ApiPath(uri): ApiPath<String>,
    ApiJson(req): ApiJson<BackupSchedule>,
) -> R<Environment> {
    Ok(Json(
        app.set_backup_schedule(&uri, req.backup_interval).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// `{"last": N, "daily": N, "weekly": N, "monthly": N}` (a missing rule takes the
    /// default: last 1, daily 7, weekly 6, monthly 0); null follows the daemon's
    /// `backups.retention`.
    #[schema(value_type = Option<Object>)]
    pub retention: Option<crate::backup::retention::Policy>,
}

#[utoipa::path(put, path = "/environments/{uri}/retention", tag = "environments",
    params(("uri" = String, Path)), request_body = Retention,
    responses((status = 200, body = Environment), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn set_retention(
    State(app): State<App>,
    ApiPath(uri): ApiPath<String>,
    ApiJson(req): ApiJson<Retention>,
) -> R<Environment> {
    Ok(Json(app.set_retention(&uri, req.retention).await?))
}

// --- imports

#[utoipa::path(post, path = "/imports/aegir3", tag = "imports", request_body = ImportAegir3,
    responses((status = 200, body = ImportReport), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn import_aegir3(
    State(app): State<App>,
    ApiJson(req): ApiJson<ImportAegir3>,
) -> R<ImportReport> {
    Ok(Json(app.import_aegir3(req).await?))
}

// --- operations

#[utoipa::path(get, path = "/operations", tag = "operations", params(OperationQuery),
    responses((status = 200, body = Page<Operation>), (status = 400, body = ErrorBody)))]
pub async fn list_operations(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<OperationQuery>,
) -> R<Page<Operation>> {
    Ok(Json(app.list_operations(q).await?))
}

#[utoipa::path(get, path = "/operations/{id}", tag = "operations", params(("id" = i64, Path)),
    responses((status = 200, body = OperationDetail), (status = 404, body = ErrorBody)))]
pub async fn get_operation(State(app): State<App>, ApiPath(id): ApiPath<Id>) -> R<OperationDetail> {
    Ok(Json(app.operation(id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only lines after this line id.
    pub after: Option<Id>,
    /// At most this many lines (default and maximum 1000).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/operations/{id}/logs", tag = "operations",
    params(("id" = i64, Path), LogsQuery),
    responses((status = 200, body = Vec<LogLine>), (status = 404, body = ErrorBody)))]
pub async fn operation_logs(
    State(app): State<App>,
    ApiPath(id): ApiPath<Id>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> R<Vec<LogLine>> {
    let limit = q.limit.unwrap_or(1000).clamp(1, 1000);
    Ok(Json(
        app.operation_logs(id, q.after.unwrap_or(0), limit).await?,
    ))
}

#[utoipa::path(post, path = "/operations/{id}/cancel", tag = "operations",
    params(("id" = i64, Path)),
    responses((status = 200, body = OperationDetail), (status = 409, body = ErrorBody)))]
pub async fn cancel_operation(
    State(app): State<App>,
    ApiPath(id): ApiPath<Id>,
) -> R<OperationDetail> {
    Ok(Json(app.cancel_operation(id).await?))
}

#[utoipa::path(post, path = "/operations/{id}/retry", tag = "operations",
    params(("id" = i64, Path)),
    responses((status = 202, body = Operation), (status = 409, body = ErrorBody)))]
pub async fn retry_operation(
    State(app): State<App>,
    ApiPath(id): ApiPath<Id>,
) -> Created<Operation> {
    Ok(accepted(app.retry_operation(id).await?))
}

// --- backups

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BackupQuery {
    /// Only backups of this environment (its uri).
    pub environment: Option<String>,
}

#[utoipa::path(get, path = "/backups", tag = "backups", params(BackupQuery),
    responses((status = 200, body = Vec<Backup>)))]
pub async fn list_backups(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<BackupQuery>,
) -> R<Vec<Backup>> {
    Ok(Json(app.list_backups(q.environment.as_deref()).await?))
}

#[utoipa::path(get, path = "/backups/{id}", tag = "backups", params(("id" = i64, Path)),
    responses((status = 200, body = Backup), (status = 404, body = ErrorBody)))]
pub async fn get_backup(State(app): State<App>, ApiPath(id): ApiPath<Id>) -> R<Backup> {
    Ok(Json(app.backup(id).await?))
}

#[utoipa::path(delete, path = "/backups/{id}", tag = "backups", params(("id" = i64, Path)),
    responses((status = 202, body = Operation), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn delete_backup(State(app): State<App>, ApiPath(id): ApiPath<Id>) -> Created<Operation> {
    Ok(accepted(
        app.backup_action(id, OperationKind::BackupDelete, false)
            .await?,
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBackup {
    /// Also import the database into a throwaway one on the environment's server, then
    /// drop it.
    #[serde(default)]
    pub restore_test: bool,
}

#[utoipa::path(post, path = "/backups/{id}/verify", tag = "backups", params(("id" = i64, Path)),
    request_body(content = Option<VerifyBackup>),
    responses((status = 202, body = Operation), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn verify_backup(
    State(app): State<App>,
    ApiPath(id): ApiPath<Id>,
    OptionalJson(req): OptionalJson<VerifyBackup>,
) -> Created<Operation> {
    Ok(accepted(
        app.backup_action(id, OperationKind::BackupVerify, req.restore_test)
            .await?,
    ))
}

/// The archive itself, streamed from aegird's host.
#[utoipa::path(get, path = "/backups/{id}/download", tag = "backups", params(("id" = i64, Path)),
    responses((status = 200, content_type = "application/octet-stream"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn download_backup(
    State(app): State<App>,
    ApiPath(id): ApiPath<Id>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::header;
    let (backup, file) = app.open_backup(id).await?;
    let name = std::path::Path::new(&backup.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("backup-{id}"));
    let mut resp = axum::response::Response::new(axum::body::Body::from_stream(
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024),
    ));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(size) = backup.size {
        headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
    }
    // The name is a hostname plus digits: nothing to escape.
    if let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

// --- tokens

#[utoipa::path(get, path = "/tokens", tag = "tokens", responses((status = 200, body = Vec<ApiToken>)))]
pub async fn list_tokens(State(app): State<App>) -> R<Vec<ApiToken>> {
    Ok(Json(app.list_tokens().await?))
}

#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 409, body = ErrorBody)))]
pub async fn create_token(
    State(app): State<App>,
    ApiJson(req): ApiJson<NewToken>,
) -> Created<CreatedToken> {
    Ok(created(app.create_token(req).await?))
}

#[utoipa::path(delete, path = "/tokens/{name}", tag = "tokens", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_token(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.delete_token(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
