//! HTTP: the JSON API under `/api/v1` (bearer tokens, OpenAPI document built from the
//! handlers), `/healthz`, the web UI (`crate::web`) and its assets (`aegir-web`).

pub mod error;
pub(crate) mod events;
mod routes;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use error::ApiError;

/// Request bodies are small JSON documents; anything larger is refused before it is read.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "aegird",
        description = "Aegir hosting control plane API. Every route needs \
            `Authorization: Bearer <token>` (see `aegird token create`)."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The `/api/v1` routes and the OpenAPI document that describes them.
fn api_v1() -> (Router<App>, utoipa::openapi::OpenApi) {
    use routes::*;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_servers, add_server))
        .routes(routes!(get_server))
        .routes(routes!(verify_server))
        .routes(routes!(list_clusters, add_cluster))
        .routes(routes!(get_cluster))
        .routes(routes!(verify_cluster))
        .routes(routes!(list_projects, add_project))
        .routes(routes!(get_project))
        .routes(routes!(list_releases, create_release))
        .routes(routes!(get_release))
        .routes(routes!(verify_release))
        .routes(routes!(list_environments, create_environment))
        .routes(routes!(get_environment))
        .routes(routes!(environment_action))
        .routes(routes!(set_schedule))
        .routes(routes!(set_retention))
        .routes(routes!(import_aegir3))
        .routes(routes!(list_operations))
        .routes(routes!(get_operation))
        .routes(routes!(operation_logs))
        .routes(routes!(events::operation_events))
        .routes(routes!(cancel_operation))
        .routes(routes!(retry_operation))
        .routes(routes!(list_backups))
        .routes(routes!(get_backup, delete_backup))
        .routes(routes!(verify_backup))
        .routes(routes!(download_backup))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(delete_token))
        .split_for_parts()
}

/// The OpenAPI document as served at `/api/v1/openapi.json` (paths include `/api/v1`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_v1();
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(p, item)| (format!("/api/v1{p}"), item))
        .collect();
    doc
}

/// The whole HTTP surface of aegird.
pub fn router(app: App) -> Router {
    let (v1, _) = api_v1();
    let doc = openapi();
    let v1 = v1
        .route("/openapi.json", get(move || async move { Json(doc) }))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/api/v1", v1)
        .merge(crate::web::router(app.clone()))
        .merge(aegir_web::router())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Liveness and store reachability, without authentication (for systemd, load balancers
/// and the README's first command).
async fn healthz(State(app): State<App>) -> Response {
    match app.health().await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ok", "version": crate::VERSION })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "store unreachable" })),
            )
                .into_response()
        }
    }
}

/// Refuses any request without a valid bearer token.
async fn require_token(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return ApiError::unauthorized("this route needs Authorization: Bearer <token>")
            .into_response();
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            .into_response();
    };
    match app.authenticate(secret).await {
        Ok(Some(_)) => next.run(req).await,
        Ok(None) => ApiError::unauthorized("unknown or revoked token").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
