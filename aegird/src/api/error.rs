//! The API's error body `{ "error": CODE, "message": ..., "field": ... }` and the extractors
//! that turn every malformed request into one, instead of axum's plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppError;

/// Every error the API returns.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code: invalid_input, invalid_json, not_found, conflict,
    /// invalid_state, unauthorized, payload_too_large, unsupported_media_type,
    /// method_not_allowed, not_available, unreachable, internal.
    pub error: String,
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: code.to_string(),
                message: message.into(),
                field: None,
            },
        }
    }

    fn with_field(mut self, field: Option<String>) -> Self {
        self.body.field = field;
        self
    }

    pub fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"aegir\""),
            );
        }
        resp
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid(inv) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                inv.to_string(),
            )
            .with_field(Some(inv.field)),
            e @ AppError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            e @ AppError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            AppError::InvalidState(m) => ApiError::new(StatusCode::CONFLICT, "invalid_state", m),
            AppError::Unreachable(m) => ApiError::new(StatusCode::BAD_GATEWAY, "unreachable", m),
            e @ AppError::NotAvailable(_) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_available", e.to_string())
            }
            AppError::Internal(detail) => {
                // The detail may name files or SQL; it goes to the daemon's log only.
                tracing::error!(error = %detail, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the aegird log",
                )
            }
        }
    }
}

/// The field a serde error is about: `unknown field `x``, `missing field `x``, or the path
/// that serde_path_to_error puts before the message (`aliases[0]: invalid type ...`).
fn serde_field(detail: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `"] {
        if let Some(start) = detail.find(marker) {
            let rest = &detail[start + marker.len()..];
            return rest.split('`').next().map(str::to_string);
        }
    }
    let (path, _) = detail.split_once(": ")?;
    let ok = !path.is_empty()
        && path != "."
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c));
    ok.then(|| path.to_string())
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                let detail = e.body_text();
                let detail = detail
                    .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                    .unwrap_or(&detail)
                    .to_string();
                let field = serde_field(&detail);
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", detail)
                    .with_field(field)
            }
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {} bytes", super::MAX_BODY),
                )
            }
            other => ApiError::new(other.status(), "invalid_request", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let detail = r.body_text();
        let detail = detail
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&detail)
            .to_string();
        let field = serde_field(&detail);
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", detail).with_field(field)
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", r.body_text())
            .with_field(Some("path".into()))
    }
}

/// `Json` whose rejections are [`ApiError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// A JSON body that may be left out (an action without options): empty means the default.
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "invalid_request", e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        Ok(OptionalJson(Json::<T>::from_bytes(&bytes)?.0))
    }
}

/// `Query` whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path` whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[cfg(test)]
mod tests {
    use super::serde_field;

    #[test]
    fn finds_the_field() {
        assert_eq!(
            serde_field("unknown field `colour`, expected one of `name`").as_deref(),
            Some("colour")
        );
        assert_eq!(
            serde_field("missing field `name` at line 1").as_deref(),
            Some("name")
        );
        assert_eq!(
            serde_field("aliases[0]: invalid type: integer `5`, expected a string").as_deref(),
            Some("aliases[0]")
        );
        assert_eq!(serde_field("expected value at line 1 column 1"), None);
    }
}
