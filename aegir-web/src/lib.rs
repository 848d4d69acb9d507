//! The web UI's presentation: its pages as askama templates ([`views`]), how values read
//! ([`format`]), and the static assets embedded in the binary ([`router`]).
//!
//! Assets live in `assets/` and are compiled in with rust-embed, so a release binary needs no
//! files on disk (debug builds read them from disk, which makes editing them quick). This crate
//! knows nothing of the store, the API or sessions: aegird's `web` module fills the views from
//! its application layer and merges [`router`] into its own router.

pub mod format;
pub mod views;

use axum::extract::Path;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::RustEmbed;

/// Everything under `assets/`, embedded at compile time.
#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// Asset URLs carry no content hash, so browsers must revalidate every time; the ETag makes
/// that a cheap 304 and an upgraded daemon never shows a stale page or stylesheet.
const CACHE_CONTROL: &str = "no-cache";

/// The static files under `/assets/{*path}`, served to anyone (the login page needs them).
///
/// Generic over the state so it merges into a router of any state type.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/assets/{*path}", get(asset))
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// Answers with one embedded file, a 304 when the client already holds it, or a 404.
fn serve(path: &str, request_headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = etag(&file.metadata.sha256_hash());
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    // Without it a browser may sniff a mislabelled file into something executable.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if client_has(request_headers, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    if let Ok(value) = HeaderValue::from_str(&content_type(file.metadata.mimetype())) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    (headers, file.data).into_response()
}

/// A strong ETag from the content hash (the first 16 bytes are plenty to tell versions apart).
fn etag(hash: &[u8; 32]) -> String {
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether `If-None-Match` names the current version (or `*`).
fn client_has(request_headers: &HeaderMap, etag: &str) -> bool {
    request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// mime-guess gives no charset; our text files are UTF-8, so say so rather than let the
/// browser guess.
fn content_type(mime: &str) -> String {
    let is_text = mime.starts_with("text/")
        || mime == "application/javascript"
        || mime == "application/json"
        || mime == "image/svg+xml";
    if is_text && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(uri);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response.headers()[name].to_str().unwrap()
    }

    #[tokio::test]
    async fn htmx_is_javascript_with_a_charset() {
        let response = get("/assets/htmx.min.js", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            "text/javascript; charset=utf-8"
        );
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert!(body.len() > 10_000);
    }

    #[tokio::test]
    async fn stylesheet_is_css() {
        let response = get("/assets/style.css", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(header_of(&response, header::CONTENT_TYPE).starts_with("text/css"));
        assert_eq!(
            header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
    }

    #[tokio::test]
    async fn missing_asset_is_404() {
        let response = get("/assets/nope.css", None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn path_outside_assets_is_404() {
        let response = get("/assets/../Cargo.toml", None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = get("/assets/%2e%2e/Cargo.toml", None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn matching_etag_gives_304() {
        let first = get("/assets/style.css", None).await;
        let etag = header_of(&first, header::ETAG).to_owned();
        let second = get("/assets/style.css", Some(&etag)).await;
        assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
        let stale = get("/assets/style.css", Some("\"0\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }
}
