//! The web UI through the router, without a socket: every page wants a session, every form
//! its CSRF token, logins are hashed, throttled and end at logout, each page renders, and each
//! form either starts what it says (and leads to the operation's page) or is shown again with
//! the reason and changes nothing. Operations are queued, not run: no engine runs here.

use std::sync::Arc;

use aegir_tests::{Backend, TestDb};
use aegird::accounts;
use aegird::app::App;
use aegird::backend::{HostPlanner, SshKeys};
use aegird::clock::{Clock, ManualClock};
use aegird::config::EngineConfig;
use aegird::engine::Engine;
use aegird::model::*;
use aegird::store::{NewEnvironmentRow, Store};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

const PASSWORD: &str = "a long enough password";

/// A form's fields, in order.
type Form<'a> = Vec<(&'a str, &'a str)>;

struct Ui {
    db: TestDb,
    router: Router,
    clock: ManualClock,
}

/// One answer: status, headers of interest and the body as text.
struct Page {
    status: StatusCode,
    location: String,
    cookies: Vec<String>,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Page {
    /// The value of a `name="…" value="…"` hidden field.
    fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.body))
            + marker.len();
        self.body[start..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .cloned()
    }
}

impl Ui {
    async fn new() -> Ui {
        let db = TestDb::new(Backend::Sqlite).await;
        let clock = ManualClock::new(Timestamp(1_800_000_000_000));
        let engine = Engine::new(
            db.store.clone(),
            Arc::new(clock.clone()),
            Arc::new(HostPlanner::new(db.dir.path())),
            EngineConfig::default(),
            "web-test",
        );
        let ssh = SshKeys::new(db.dir.path().join("ssh"));
        let router = aegird::api::router(App::new(engine, ssh));
        accounts::create_user(&db.store, "admin", Some(PASSWORD), true, clock.now())
            .await
            .unwrap();
        Ui { db, router, clock }
    }

    fn store(&self) -> &Store {
        &self.db.store
    }

    async fn send(&self, req: Request<Body>) -> Page {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let location = headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let cookies = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        Page {
            status,
            location,
            cookies,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut req = Request::get(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// Posts the login form as a browser would: GET /login for its cookie and token first.
    async fn try_login(&self, name: &str, password: &str) -> Page {
        let form = self.get("/login", None).await;
        let login_cookie = form.cookie("aegir_login").unwrap();
        let login_cookie = login_cookie.split(';').next().unwrap().to_string();
        let csrf = form.field("csrf");
        self.post(
            "/login",
            Some(&login_cookie),
            &[
                ("csrf", &csrf),
                ("name", name),
                ("password", password),
                ("next", "/environments"),
            ],
        )
        .await
    }

    /// Logs in; returns the session cookie (`aegir_session=…`) and the session's CSRF token.
    async fn login(&self) -> (String, String) {
        let page = self.try_login("admin", PASSWORD).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let cookie = page.cookie("aegir_session").unwrap();
        let cookie = cookie.split(';').next().unwrap().to_string();
        let csrf = self.get("/", Some(&cookie)).await.field("csrf");
        (cookie, csrf)
    }

    /// A server, project and ready release, and `n` active environments, put in the store
    /// directly (nothing is installed).
    async fn inventory(&self, n: usize) {
        let s = self.store();
        let now = self.clock.now();
        let server = s
            .insert_server(&aegird::store::NewServerRow::local("web1"), now)
            .await
            .unwrap();
        let service = |name: &str, version: &str, binary: &str| DetectedService {
            name: name.into(),
            version: version.into(),
            binary: binary.into(),
        };
        let found = DetectedServices {
            http: vec![service("nginx", "1.22.1", "/usr/sbin/nginx")],
            php_fpm: vec![service("php-fpm", "8.2.29", "/usr/sbin/php-fpm8.2")],
            db: vec![service("mariadb", "10.11.14", "/usr/sbin/mariadbd")],
            ..DetectedServices::default()
        };
        s.record_server_verify(server.id, ServerStatus::Ready, Some(&found), now)
            .await
            .unwrap();
        let (c, csrf) = self.login().await;
        let page = self
            .post(
                "/projects",
                Some(&c),
                &[
                    ("csrf", &csrf),
                    ("name", "wp"),
                    ("path", "/usr/share/wordpress"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let project = s.project_by_name("wp").await.unwrap().unwrap();
        let release = s
            .insert_release(
                &aegird::store::NewReleaseRow {
                    name: "wp-6".into(),
                    project_id: project.id,
                    server_id: Some(server.id),
                    git_ref: None,
                    path: Some("/usr/share/wordpress".into()),
                },
                now,
            )
            .await
            .unwrap();
        let found = aegird::apps::Detected {
            kind: AppKind::Wordpress,
            version: Some("6.1.1".into()),
            docroot: String::new(),
        };
        s.record_release_verify(release.id, ReleaseStatus::Ready, Some((&found, &[])), now)
            .await
            .unwrap();
        for i in 0..n {
            s.insert_environment(
                &NewEnvironmentRow {
                    uri: format!("site{i:05}.test"),
                    release_id: release.id,
                    server_id: server.id,
                    status: EnvironmentStatus::Active,
                    https: HttpsMode::Off,
                    aliases: vec![],
                    redirect_aliases: false,
                    db_name: Some(format!("site{i:05}_key")),
                },
                now,
            )
            .await
            .unwrap();
        }
    }

    async fn queued(&self) -> i64 {
        self.store()
            .row_counts()
            .await
            .unwrap()
            .into_iter()
            .find(|(t, _)| *t == "operations")
            .unwrap()
            .1
    }
}

const PAGES: [&str; 10] = [
    "/",
    "/servers",
    "/releases",
    "/environments",
    "/environments/new",
    "/environments/site00000.test",
    "/operations",
    "/operations/1",
    "/operations/1/state",
    "/import",
];

#[tokio::test]
async fn without_a_session_every_page_leads_to_login_and_every_form_changes_nothing() {
    let ui = Ui::new().await;
    ui.inventory(1).await;
    for path in PAGES {
        let page = ui.get(path, None).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        if path == "/" {
            assert_eq!(page.location, "/login");
        } else {
            let next = form_urlencoded::Serializer::new(String::new())
                .append_pair("next", path)
                .finish();
            assert_eq!(page.location, format!("/login?{next}"), "{path}");
        }
    }
    // A made-up cookie is no session either.
    let page = ui.get("/", Some("aegir_session=00ff")).await;
    assert_eq!(page.location, "/login");

    let before = ui.store().row_counts().await.unwrap();
    for path in [
        "/servers",
        "/servers/web1/verify",
        "/releases",
        "/releases/wp-6/verify",
        "/projects",
        "/environments",
        "/environments/site00000.test/verify",
        "/environments/site00000.test/delete",
        "/operations/1/retry",
        "/operations/1/cancel",
        "/import",
        "/logout",
    ] {
        let page = ui
            .post(path, None, &[("name", "x"), ("confirm", "site00000.test")])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.location, "/login", "{path}");
    }
    assert_eq!(ui.store().row_counts().await.unwrap(), before);
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing() {
    let ui = Ui::new().await;
    ui.inventory(1).await;
    let (cookie, csrf) = ui.login().await;
    let before = ui.store().row_counts().await.unwrap();
    // The right token but for its last character (which must then differ from the right one).
    let last = if csrf.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &csrf[..csrf.len() - 1]);
    for token in [None, Some(""), Some(wrong.as_str())] {
        for (path, form) in [
            ("/servers", vec![("name", "web2"), ("transport", "local")]),
            ("/environments/site00000.test/verify", vec![]),
            (
                "/environments/site00000.test/delete",
                vec![("confirm", "site00000.test")],
            ),
            (
                "/environments",
                vec![("uri", "new.test"), ("release", "wp-6")],
            ),
            ("/logout", vec![]),
        ] {
            let mut form = form;
            if let Some(t) = token {
                form.push(("csrf", t));
            }
            let page = ui.post(path, Some(&cookie), &form).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{path} {token:?}");
            assert!(page.body.contains("Form expired"), "{}", page.body);
        }
    }
    assert_eq!(ui.store().row_counts().await.unwrap(), before);
    // The session survived the forged logout.
    assert_eq!(ui.get("/", Some(&cookie)).await.status, StatusCode::OK);
    // The token is also accepted as a header (for scripts in the page).
    let req = Request::post("/environments/site00000.test/verify")
        .header(header::COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .body(Body::empty())
        .unwrap();
    let page = ui.send(req).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(page.location.starts_with("/operations/"));
}

#[tokio::test]
async fn login_is_hashed_guarded_throttled_and_ends_at_logout() {
    let ui = Ui::new().await;
    let stored = ui
        .store()
        .login_record("admin")
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains(PASSWORD));

    // The login form's token must match its cookie.
    let form = ui.get("/login", None).await;
    assert_eq!(form.status, StatusCode::OK);
    let cookie = form.cookie("aegir_login").unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let page = ui
        .post(
            "/login",
            Some(cookie.split(';').next().unwrap()),
            &[
                ("csrf", "forged"),
                ("name", "admin"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.cookie("aegir_session").is_none());

    // Unknown user and wrong password read the same.
    let unknown = ui.try_login("nobody", PASSWORD).await;
    let wrong = ui.try_login("admin", "not the password").await;
    for page in [&unknown, &wrong] {
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.body.contains("Wrong user name or password."));
        assert!(page.cookie("aegir_session").is_none());
    }

    // Two more failures (three in a row), then even the right password must wait.
    ui.try_login("admin", "wrong again").await;
    ui.try_login("admin", "and again").await;
    let page = ui.try_login("admin", PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert_eq!(page.headers[header::RETRY_AFTER], "1");
    assert!(page.cookie("aegir_session").is_none());
    ui.clock.advance_ms(1_000);
    let page = ui.try_login("admin", PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location, "/environments");
    let session = page.cookie("aegir_session").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: {session}");
    let cookie = session.split(';').next().unwrap().to_string();
    let value = cookie.trim_start_matches("aegir_session=");
    let now = ui.clock.now();
    assert!(
        ui.store().session(value, now).await.unwrap().is_none(),
        "the cookie value itself is not stored"
    );
    let hashed = aegird::app::token_hash(value);
    assert!(ui.store().session(&hashed, now).await.unwrap().is_some());

    // Behind an HTTPS proxy the cookie is Secure.
    let form = ui.get("/login", None).await;
    let req = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(
            header::COOKIE,
            form.cookie("aegir_login")
                .unwrap()
                .split(';')
                .next()
                .unwrap(),
        )
        .header("x-forwarded-proto", "https")
        .body(Body::from(format!(
            "csrf={}&name=admin&password={}",
            form.field("csrf"),
            PASSWORD.replace(' ', "+")
        )))
        .unwrap();
    let page = ui.send(req).await;
    assert!(page.cookie("aegir_session").unwrap().contains("; Secure"));

    // Only paths on this site are followed after login.
    for (next, to) in [
        ("/operations?status=failed", "/operations?status=failed"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ] {
        let form = ui.get("/login", None).await;
        let page = ui
            .post(
                "/login",
                Some(
                    form.cookie("aegir_login")
                        .unwrap()
                        .split(';')
                        .next()
                        .unwrap(),
                ),
                &[
                    ("csrf", &form.field("csrf")),
                    ("name", "admin"),
                    ("password", PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(page.location, to, "{next}");
    }

    // Logged in, /login moves on; after logout the cookie opens nothing.
    assert_eq!(
        ui.get("/login", Some(&cookie)).await.status,
        StatusCode::SEE_OTHER
    );
    let page = ui.get("/", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.field("csrf");
    let page = ui.post("/logout", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(page.location, "/login");
    assert!(page.cookie("aegir_session").unwrap().contains("Max-Age=0"));
    assert_eq!(ui.get("/", Some(&cookie)).await.location, "/login");

    // Sessions end on their own.
    let (cookie, _) = ui.login().await;
    ui.clock.advance_ms(accounts::SESSION_TTL_MS + 1);
    assert_eq!(ui.get("/", Some(&cookie)).await.location, "/login");
}

#[tokio::test]
async fn every_page_renders_with_the_menu_and_safe_headers() {
    let ui = Ui::new().await;
    ui.inventory(3).await;
    let (cookie, csrf) = ui.login().await;
    // An operation to show.
    let page = ui
        .post(
            "/environments/site00001.test/backup",
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.location, "/operations/1", "{}", page.body);
    for path in PAGES {
        let page = ui.get(path, Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        let ctype = page.headers[header::CONTENT_TYPE].to_str().unwrap();
        assert!(ctype.starts_with("text/html"), "{path}");
        assert_eq!(page.headers[header::CACHE_CONTROL], "no-store", "{path}");
        assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
        let csp = page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}");
        if !path.ends_with("/state") {
            assert!(page.body.contains("<nav aria-label=\"Main\">"), "{path}");
            assert!(page.body.contains("admin"), "{path}");
            assert!(page.body.contains("<main id=\"main\""), "{path}");
        }
        // Every form that posts carries the session's token.
        let posts = page.body.matches("method=\"post\"").count();
        let tokens = page.body.matches(&format!("value=\"{csrf}\"")).count();
        assert_eq!(posts, tokens, "{path}: a form without its token");
        // Every input, select and textarea has a label.
        for id in ids_of_controls(&page.body) {
            assert!(
                page.body.contains(&format!("for=\"{id}\"")),
                "{path}: control {id} has no label"
            );
        }
    }
    let detail = ui.get("/environments/site00001.test", Some(&cookie)).await;
    for text in [
        "Log in to site",
        "Back up",
        "Disable",
        "Clone",
        "Delete site00001.test",
        "env.backup",
    ] {
        assert!(detail.body.contains(text), "{text}");
    }
    let dashboard = ui.get("/", Some(&cookie)).await;
    assert!(dashboard.body.contains("env.backup"), "queued op shown");
    assert!(dashboard.body.contains("never"), "backup age shown");
    let missing = ui.get("/environments/nope.test", Some(&cookie)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("not found"));
    let missing = ui.get("/operations/999", Some(&cookie)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // Live log: the events route streams under the session (the operation never ends here,
    // so only the head of the answer is read).
    let req = Request::get("/operations/1/events?after=0")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let events = ui.router.clone().oneshot(req).await.unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert_eq!(events.headers()[header::CONTENT_TYPE], "text/event-stream");
}

/// The ids of the visible form controls of a page (hidden inputs need no label; radio and
/// check boxes are wrapped in theirs).
fn ids_of_controls(body: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for tag in ["<input ", "<select ", "<textarea "] {
        for part in body.split(tag).skip(1) {
            let element = part.split('>').next().unwrap_or_default();
            if element.contains("type=\"hidden\"")
                || element.contains("type=\"radio\"")
                || element.contains("type=\"checkbox\"")
            {
                continue;
            }
            let id = element
                .split("id=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("a control without id: {element}"));
            ids.push(id.to_string());
        }
    }
    ids
}

#[tokio::test]
async fn environment_list_searches_and_pages() {
    let ui = Ui::new().await;
    ui.inventory(120).await;
    let (cookie, _) = ui.login().await;
    let page = ui.get("/environments", Some(&cookie)).await;
    assert!(
        page.body.contains("Environments 1–50 of 120"),
        "{}",
        page.body
    );
    assert!(page.body.contains("site00049.test"));
    assert!(!page.body.contains("site00050.test"));
    assert!(page.body.contains("href=\"/environments?page=2\""));
    assert!(!page.body.contains("rel=\"prev\""));
    let page = ui.get("/environments?page=3", Some(&cookie)).await;
    assert!(page.body.contains("101–120 of 120"));
    assert!(page.body.contains("site00119.test"));
    assert!(!page.body.contains("rel=\"next\""));
    let page = ui
        .get("/environments?q=site0011&page=1", Some(&cookie))
        .await;
    assert!(page.body.contains("1–10 of 10"), "{}", page.body);
    let page = ui
        .get("/environments?q=nothing-like-it", Some(&cookie))
        .await;
    assert!(page.body.contains("No environment matches."));
    let page = ui.get("/environments?page=0", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn each_form_starts_its_operation_or_says_why_not_and_changes_nothing() {
    let ui = Ui::new().await;
    ui.inventory(2).await;
    let (c, csrf) = ui.login().await;
    let c = Some(c.as_str());
    let t = ("csrf", csrf.as_str());

    // Refusals: shown again with the reason, the field marked, nothing written.
    let before = ui.store().row_counts().await.unwrap();
    let refusals: Vec<(&str, Form, StatusCode, &str)> = vec![
        (
            "/servers",
            vec![t, ("name", "bad name"), ("transport", "local")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "name: ",
        ),
        (
            "/servers",
            vec![t, ("name", "web2"), ("transport", "ssh"), ("ssh", "")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "USER@HOST",
        ),
        (
            "/servers",
            vec![t, ("name", "web1"), ("transport", "local")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "already exists",
        ),
        (
            "/projects",
            vec![t, ("name", "p2"), ("path", "relative/path")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "path",
        ),
        (
            "/releases",
            vec![t, ("name", "r2"), ("project", "nope"), ("server", "web1")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "no project named",
        ),
        (
            "/environments",
            vec![t, ("uri", "not a host"), ("release", "wp-6")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "uri",
        ),
        (
            "/environments",
            vec![t, ("uri", "site00000.test"), ("release", "wp-6")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "already exists",
        ),
        (
            "/environments/site00000.test/delete",
            vec![t, ("confirm", "site00001.test")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "type the environment&#39;s uri",
        ),
        (
            "/environments/site00000.test/restore",
            vec![t, ("backup", "")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "choose the backup",
        ),
        (
            "/environments/site00000.test/restore",
            vec![t, ("backup", "4242")],
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            "/environments/site00000.test/clone",
            vec![t, ("uri", "site00001.test")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "already exists",
        ),
        (
            "/environments/site00000.test/enable",
            vec![t],
            StatusCode::UNPROCESSABLE_ENTITY,
            "active",
        ),
        (
            "/environments/site00000.test/explode",
            vec![t],
            StatusCode::NOT_FOUND,
            "no environment action",
        ),
        (
            "/environments/nope.test/verify",
            vec![t],
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            "/import",
            vec![t, ("aegir_root", "relative"), ("mode", "preview")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "aegir_root",
        ),
    ];
    for (path, form, status, says) in refusals {
        let page = ui.post(path, c, &form).await;
        assert_eq!(page.status, status, "{path} {form:?}: {}", page.body);
        assert!(
            page.body.contains(says),
            "{path} {form:?} should say {says:?}: {}",
            page.body
        );
        assert!(page.body.contains("role=\"alert\""), "{path}");
    }
    assert_eq!(ui.store().row_counts().await.unwrap(), before);
    // The refused form keeps what was typed.
    let page = ui
        .post(
            "/environments",
            c,
            &[
                t,
                ("uri", "not a host"),
                ("title", "My blog"),
                ("release", "wp-6"),
            ],
        )
        .await;
    assert!(page.body.contains("value=\"My blog\""));
    assert!(page.body.contains("aria-invalid=\"true\""));

    // Each action queues its operation and leads to its page.
    let mut expect = ui.queued().await;
    let actions: Vec<(&str, Form, OperationKind)> = vec![
        (
            "/servers",
            vec![t, ("name", "web2"), ("transport", "local")],
            OperationKind::ServerVerify,
        ),
        ("/servers/web1/verify", vec![t], OperationKind::ServerVerify),
        (
            "/releases",
            vec![t, ("name", "wp-7"), ("project", "wp"), ("server", "web1")],
            OperationKind::ReleaseVerify,
        ),
        (
            "/environments",
            vec![
                t,
                ("uri", "new.test"),
                ("release", "wp-6"),
                ("aliases", "www.new.test\nold.test"),
            ],
            OperationKind::EnvInstall,
        ),
        (
            "/environments/site00000.test/verify",
            vec![t],
            OperationKind::EnvVerify,
        ),
        (
            "/environments/site00000.test/backup",
            vec![t],
            OperationKind::EnvBackup,
        ),
        (
            "/environments/site00000.test/disable",
            vec![t],
            OperationKind::EnvDisable,
        ),
        (
            "/environments/site00001.test/clone",
            vec![t, ("uri", "copy.test"), ("release", "")],
            OperationKind::EnvClone,
        ),
        (
            "/environments/site00001.test/delete",
            vec![t, ("confirm", "site00001.test"), ("skip_backup", "on")],
            OperationKind::EnvDelete,
        ),
    ];
    for (path, form, kind) in actions {
        let page = ui.post(path, c, &form).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}: {}", page.body);
        expect += 1;
        assert_eq!(ui.queued().await, expect, "{path}");
        let id: i64 = page
            .location
            .strip_prefix("/operations/")
            .unwrap_or_else(|| panic!("{path} led to {}", page.location))
            .parse()
            .unwrap();
        let op = ui.store().operation(id).await.unwrap().unwrap();
        assert_eq!(op.kind, kind, "{path}");
    }
    let env = ui
        .store()
        .environment_by_uri("new.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(env.aliases, ["www.new.test", "old.test"]);

    // "Log in to site" opens the operation page set to follow the link.
    let page = ui.post("/environments/site00000.test/login", c, &[t]).await;
    // site00000 has a disable queued; the login waits behind it but is accepted.
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(page.location.ends_with("?go=1"), "{}", page.location);

    // Cancel a queued operation; a cancelled one can be retried, a queued one cannot.
    let page = ui.post("/operations/1/retry", c, &[t]).await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    assert!(page.body.contains("only failed, cancelled or interrupted"));
    let page = ui.post("/operations/1/cancel", c, &[t]).await;
    assert_eq!(page.location, "/operations/1");
    let op = ui.store().operation(1).await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Cancelled);
    let page = ui.get("/operations/1", c).await;
    assert!(page.body.contains(">Retry</button>"), "{}", page.body);
    let page = ui.post("/operations/1/retry", c, &[t]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let retry: i64 = page.location["/operations/".len()..].parse().unwrap();
    let op = ui.store().operation(retry).await.unwrap().unwrap();
    assert_eq!(op.retry_of, Some(1));
}

#[tokio::test]
async fn aegir3_import_previews_then_imports_and_adopted_sites_offer_only_verify_and_takeover() {
    // The shared fixture in MariaDB and laid out as an Aegir root (see import.rs).
    let a3 = tokio::task::spawn_blocking(crate::import::Aegir3::load)
        .await
        .unwrap();
    let ui = Ui::new().await;
    let (c, csrf) = ui.login().await;
    let c = Some(c.as_str());
    let root = a3.root.path().to_str().unwrap().to_string();
    let url = a3.url();
    let fields = |mode: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("aegir_root", root.clone()),
            ("hostmaster_db", url.clone()),
            ("mode", mode.to_string()),
        ]
    };

    let before = ui.store().row_counts().await.unwrap();
    let preview = fields("preview");
    let preview: Vec<(&str, &str)> = preview.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let page = ui.post("/import", c, &preview).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("Preview: nothing was written"),
        "{}",
        page.body
    );
    assert!(page
        .body
        .contains("46 adopted, 0 updated, 0 unchanged, 2 skipped, 0 failed"));
    assert!(page.body.contains("www.example.com"));
    // The database URL (it may hold a password) is not shown again.
    assert!(!page.body.contains(&url));
    assert_eq!(ui.store().row_counts().await.unwrap(), before);

    let import = fields("import");
    let import: Vec<(&str, &str)> = import.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let page = ui.post("/import", c, &import).await;
    assert!(
        page.body.contains("<h2 id=\"h-result\">Imported</h2>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("46 adopted"));
    let env = ui
        .store()
        .environment_by_uri("www.example.com")
        .await
        .unwrap()
        .expect("adopted");
    assert_eq!(env.managed_by, Management::Aegir3);

    let list = ui.get("/environments?q=www.example", c).await;
    assert!(
        list.body.contains("<span class=\"tag\">Aegir 3</span>"),
        "{}",
        list.body
    );

    // An adopted site offers verify and takeover, nothing that would change it.
    let page = ui.get("/environments/www.example.com", c).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("still managed by Aegir 3"));
    assert!(page.body.contains(">Take over from Aegir 3</button>"));
    for absent in [
        ">Back up</button>",
        ">Disable</button>",
        "Log in to site",
        ">Restore</button>",
    ] {
        assert!(!page.body.contains(absent), "{absent}");
    }
    // And the application layer refuses them anyway, with the reason on the page.
    let queued = ui.queued().await;
    let page = ui
        .post(
            "/environments/www.example.com/backup",
            c,
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.body
    );
    assert!(page.body.contains("aegir env takeover"), "{}", page.body);
    assert_eq!(ui.queued().await, queued);
}
