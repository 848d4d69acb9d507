//! The web UI's HTTP side: login and sessions, the CSRF check on every form, and the handlers
//! that fill `aegir_web`'s pages from the application layer (as the JSON API does).
//!
//! Every page but `/login` needs a session: a request without one is sent to the login page.
//! Every request that can change something (any method but GET and HEAD) must carry the
//! session's CSRF token, as the form field `csrf` or the `X-CSRF-Token` header, or it is
//! refused before its handler runs. Session cookies are HttpOnly and SameSite=Strict, and
//! Secure when the request came over HTTPS (`X-Forwarded-Proto: https` from the proxy).

mod actions;
mod pages;

use aegir_web::views::{Chrome, ProblemPage};
use askama::Template;
use axum::body::{to_bytes, Body};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::de::DeserializeOwned;

use crate::app::{App, AppError};
use crate::model::User;

pub const SESSION_COOKIE: &str = "aegir_session";
/// Holds the login form's CSRF token until the form is posted (there is no session yet).
pub const LOGIN_COOKIE: &str = "aegir_login";

/// The logged-in user of a request, put in its extensions by [`require_session`].
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
    /// The cookie value, to close the session at logout.
    cookie: String,
}

impl Session {
    fn chrome(&self, nav: &'static str) -> Chrome {
        Chrome {
            user: self.user.name.clone(),
            csrf: self.csrf.clone(),
            nav,
        }
    }
}

/// All the web UI's routes but the assets (which `aegir_web::router` serves).
pub fn router(app: App) -> Router<App> {
    let private = Router::new()
        .route("/", get(pages::dashboard))
        .route("/servers", get(pages::servers).post(actions::add_server))
        .route("/servers/{name}/verify", post(actions::verify_server))
        .route(
            "/releases",
            get(pages::releases).post(actions::create_release),
        )
        .route("/releases/{name}/verify", post(actions::verify_release))
        .route("/projects", post(actions::add_project))
        .route(
            "/environments",
            get(pages::environments).post(actions::create_environment),
        )
        .route("/environments/new", get(pages::new_environment))
        .route("/environments/{uri}", get(pages::environment))
        .route("/environments/{uri}/{action}", post(actions::environment))
        .route("/operations", get(pages::operations))
        .route("/operations/{id}", get(pages::operation))
        .route("/operations/{id}/state", get(pages::operation_state))
        .route(
            "/operations/{id}/events",
            get(crate::api::events::operation_events),
        )
        .route("/operations/{id}/retry", post(actions::retry))
        .route("/operations/{id}/cancel", post(actions::cancel))
        .route("/import", get(pages::import).post(actions::import))
        .route("/logout", post(actions::logout))
        .route_layer(middleware::from_fn_with_state(app, require_session));
    Router::new()
        .route("/login", get(actions::login_form).post(actions::login))
        .merge(private)
        .layer(middleware::map_response(page_headers))
}

/// Finds the session, checks the CSRF token of anything but a read, and renders a handler's
/// [`Problem`] inside the page chrome.
async fn require_session(State(app): State<App>, req: Request, next: Next) -> Response {
    let cookie = cookie(req.headers(), SESSION_COOKIE);
    let record = match &cookie {
        Some(c) => match app.session(c).await {
            Ok(r) => r,
            Err(e) => return internal(&e),
        },
        None => None,
    };
    let (Some(record), Some(cookie)) = (record, cookie) else {
        return to_login(&req);
    };
    let session = Session {
        user: record.user,
        csrf: record.csrf,
        cookie,
    };
    let mut req = req;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        req = match csrf_checked(req, &session.csrf).await {
            Ok(req) => req,
            Err(problem) => return problem.page(&session),
        };
    }
    req.extensions_mut().insert(session.clone());
    let mut response = next.run(req).await;
    if let Some(problem) = response.extensions_mut().remove::<Problem>() {
        return problem.page(&session);
    }
    response
}

/// Unauthenticated: to the login page, which comes back here afterwards.
fn to_login(req: &Request) -> Response {
    let here = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let next = if req.method() == Method::GET && here != "/" {
        format!(
            "/login?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("next", &here)
                .finish()
        )
    } else {
        "/login".to_string()
    };
    Redirect::to(&next).into_response()
}

/// The request again, once its CSRF token matched; its body is read (forms are small) and
/// handed on unchanged.
async fn csrf_checked(req: Request, expected: &str) -> Result<Request, Problem> {
    let refused = || {
        Problem::new(
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form has expired or did not come from this site. Reload the page and try again.",
        )
    };
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, crate::api::MAX_BODY).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            "The form is too large.",
        )
    })?;
    let header = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let given = header.or_else(|| {
        form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned())
    });
    match given {
        Some(token) if same(&token, expected) => Ok(Request::from_parts(parts, Body::from(bytes))),
        _ => Err(refused()),
    }
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of one cookie of the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure over HTTPS; `max_age` 0 deletes.
fn set_cookie(
    headers: &HeaderMap,
    name: &str,
    value: &str,
    path: &str,
    max_age: i64,
) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Headers every page gets: not cached (they show live state and a CSRF token), not framed,
/// and only our own scripts and styles run.
async fn page_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let is_html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    response
}

/// A page rendered, or a plain 500 if a template could not be (it is checked at compile
/// time, so that would be a bug, logged).
fn render<T: Template>(page: &T, status: StatusCode) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "web UI: template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// What went wrong, shown as a page with the usual menu. A handler returns it as an empty
/// response carrying this in its extensions; [`require_session`] renders it.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    title: String,
    message: String,
    back: String,
}

impl Problem {
    fn new(status: StatusCode, title: &str, message: &str) -> Self {
        Problem {
            status,
            title: title.to_string(),
            message: message.to_string(),
            back: "/".to_string(),
        }
    }

    fn back(mut self, to: impl Into<String>) -> Self {
        self.back = to.into();
        self
    }

    fn page(&self, session: &Session) -> Response {
        render(
            &ProblemPage {
                chrome: session.chrome(""),
                status: self.status.as_u16(),
                title: self.title.clone(),
                message: self.message.clone(),
                back: self.back.clone(),
            },
            self.status,
        )
    }
}

impl From<AppError> for Problem {
    fn from(e: AppError) -> Self {
        let (status, title) = match &e {
            AppError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Not accepted"),
            AppError::NotFound { .. } => (StatusCode::NOT_FOUND, "Not found"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "Already exists"),
            AppError::InvalidState(_) => (StatusCode::CONFLICT, "Not possible now"),
            AppError::NotAvailable(_) => (StatusCode::NOT_IMPLEMENTED, "Not available yet"),
            AppError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "Unreachable"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        };
        let message = match &e {
            AppError::Internal(m) => {
                tracing::error!(error = %m, "web UI request failed");
                "Something went wrong inside aegird; the details are in its log.".to_string()
            }
            other => other.to_string(),
        };
        Problem::new(status, title, &message)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

fn internal(e: &AppError) -> Response {
    tracing::error!(error = %e, "web UI: session lookup failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
}

/// A handler's answer: a page or redirect, or a [`Problem`].
type Answer = Result<Response, Problem>;

/// A form body, or the defaults when the request has none (a button posted by a script with
/// the CSRF token in its header).
pub struct Fields<T>(pub T);

impl<T, S> FromRequest<S> for Fields<T>
where
    T: DeserializeOwned + Default + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let bodyless = !req.headers().contains_key(header::CONTENT_TYPE)
            && req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        if bodyless {
            return Ok(Fields(T::default()));
        }
        match Form::<T>::from_request(req, state).await {
            Ok(Form(v)) => Ok(Fields(v)),
            Err(e) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "Not accepted",
                &format!("The form could not be read: {}", e.body_text()),
            )),
        }
    }
}
