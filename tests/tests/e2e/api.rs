//! The JSON API through the router, without a socket: refused input leaves the store as it
//! was, every route wants a token, tokens are stored hashed, and live events stream.

use std::sync::Arc;
use std::time::Duration;

use aegir_tests::{Backend, TestDb};
use aegird::app::{self, App};
use aegird::backend::{HostPlanner, SshKeys};
use aegird::clock::{Clock, SystemClock};
use aegird::config::EngineConfig;
use aegird::engine::Engine;
use aegird::model::*;
use aegird::store::{NewEnvironmentRow, Store};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    db: TestDb,
    router: Router,
    token: String,
    engine: Engine,
}

impl Api {
    async fn new() -> Api {
        let db = TestDb::new(Backend::Sqlite).await;
        let engine = Engine::new(
            db.store.clone(),
            Arc::new(SystemClock),
            Arc::new(HostPlanner::new(db.dir.path())),
            EngineConfig::default(),
            "api-test",
        );
        let ssh = SshKeys::new(db.dir.path().join("ssh"));
        let router = aegird::api::router(App::new(engine.clone(), ssh));
        let token = app::create_token(&db.store, "test", SystemClock.now())
            .await
            .unwrap()
            .secret;
        Api {
            db,
            router,
            token,
            engine,
        }
    }

    fn store(&self) -> &Store {
        &self.db.store
    }

    async fn raw(&self, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec())
    }

    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
            .unwrap();
        let (status, bytes) = self.raw(req).await;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(&body.to_string())).await
    }
}

/// A server, a path project and a release to build requests on.
async fn inventory(api: &Api) {
    let (s, _) = api
        .post(
            "/api/v1/servers",
            json!({"name": "web1", "transport": "local"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = api
        .post(
            "/api/v1/projects",
            json!({"name": "p1", "path": "/var/aegir/platforms/p1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/releases",
            json!({"name": "r1", "project": "p1", "server": "web1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_named_field_and_changes_nothing() {
    let api = Api::new().await;
    inventory(&api).await;
    let before = api.store().row_counts().await.unwrap();

    // (method, path, body, status, field the error must name)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, u16, Option<&'a str>);
    let big = format!(
        "{{\"name\":\"x\",\"transport\":\"local\",\"ssh\":\"{}\"}}",
        "a".repeat(100_000)
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/servers",
            Some(r#"{"name":"web 1","transport":"local"}"#),
            422,
            Some("name"),
        ),
        (
            "POST",
            "/api/v1/servers",
            Some(r#"{"name":"x","transport":"local","colour":"red"}"#),
            422,
            Some("colour"),
        ),
        (
            "POST",
            "/api/v1/servers",
            Some(r#"{"name":5,"transport":"local"}"#),
            422,
            Some("name"),
        ),
        (
            "POST",
            "/api/v1/servers",
            Some(r#"{"name":"x","transport":"ftp"}"#),
            422,
            Some("transport"),
        ),
        (
            "POST",
            "/api/v1/servers",
            Some(r#"{"name":"x"}"#),
            422,
            Some("transport"),
        ),
        (
            "POST",
            "/api/v1/servers",
            Some(r#"{"name":"x","transport":"ssh","ssh":"nobody"}"#),
            422,
            Some("ssh"),
        ),
        (
            "POST",
            "/api/v1/servers",
            Some(r#"{"name":"x","transport":"local","ssh":"a@b"}"#),
            422,
            Some("ssh"),
        ),
        (
            "POST",
            "/api/v1/servers",
            Some(r#"{"name":"web1","transport":"local"}"#),
            409,
            None,
        ),
        ("POST", "/api/v1/servers", Some(r#"{"name":"#), 400, None),
        ("POST", "/api/v1/servers", Some(&big), 413, None),
        (
            "POST",
            "/api/v1/environments",
            Some(r#"{"uri":"bad_host.example","release":"r1"}"#),
            422,
            Some("uri"),
        ),
        (
            "POST",
            "/api/v1/environments",
            Some(r#"{"uri":"-a.example","release":"r1"}"#),
            422,
            Some("uri"),
        ),
        (
            "POST",
            "/api/v1/environments",
            Some(r#"{"uri":"a..example","release":"r1"}"#),
            422,
            Some("uri"),
        ),
        (
            "POST",
            "/api/v1/environments",
            Some(r#"{"uri":"http://a.example/","release":"r1"}"#),
            422,
            Some("uri"),
        ),
        (
            "POST",
            "/api/v1/environments",
            Some(r#"{"uri":"10.1.2.3","release":"r1"}"#),
            422,
            Some("uri"),
        ),
        (
            "POST",
            "/api/v1/environments",
            Some(r#"{"uri":"ok.example","release":"r1","aliases":["ok.example"]}"#),
            422,
            Some("aliases[0]"),
        ),
        (
            "POST",
            "/api/v1/environments",
            Some(r#"{"uri":"ok.example","release":"r1","aliases":["www.ok.example","bad alias"]}"#),
            422,
            Some("aliases[1]"),
        ),
        (
            "POST",
            "/api/v1/environments",
            Some(r#"{"uri":"ok.example","release":"r1","aliases":[5]}"#),
            422,
            Some("aliases[0]"),
        ),
        (
            "POST",
            "/api/v1/environments",
            Some(r#"{"uri":"ok.example","release":"nope"}"#),
            422,
            Some("release"),
        ),
        (
            "POST",
            "/api/v1/environments",
            Some(r#"{"uri":"ok.example","release":"r1","https":"maybe"}"#),
            422,
            Some("https"),
        ),
        (
            "POST",
            "/api/v1/environments",
            Some(r#"{"uri":"ok.example","release":"r1","redirect_aliases":"yes"}"#),
            422,
            Some("redirect_aliases"),
        ),
        (
            "POST",
            "/api/v1/projects",
            Some(r#"{"name":"p2","path":"relative/dir"}"#),
            422,
            Some("path"),
        ),
        (
            "POST",
            "/api/v1/projects",
            Some(r#"{"name":"p2","path":"/a/../etc"}"#),
            422,
            Some("path"),
        ),
        (
            "POST",
            "/api/v1/projects",
            Some(r#"{"name":"p2","git":"--upload-pack=touch /tmp/x"}"#),
            422,
            Some("git"),
        ),
        (
            "POST",
            "/api/v1/projects",
            Some(r#"{"name":"p2","git":"https://example.org/x.git","ref":"a..b"}"#),
            422,
            Some("ref"),
        ),
        (
            "POST",
            "/api/v1/projects",
            Some(r#"{"name":"p2"}"#),
            422,
            Some("git"),
        ),
        (
            "POST",
            "/api/v1/releases",
            Some(r#"{"name":"r2","project":"p1","server":"nope"}"#),
            422,
            Some("server"),
        ),
        (
            "POST",
            "/api/v1/releases",
            Some(r#"{"name":"r/2","project":"p1","server":"web1"}"#),
            422,
            Some("name"),
        ),
        (
            "POST",
            "/api/v1/clusters",
            Some(r#"{"name":"k","api_url":"ftp://x"}"#),
            422,
            Some("api_url"),
        ),
        (
            "POST",
            "/api/v1/tokens",
            Some(r#"{"name":""}"#),
            422,
            Some("name"),
        ),
        (
            "GET",
            "/api/v1/environments?limit=0",
            None,
            422,
            Some("limit"),
        ),
        (
            "GET",
            "/api/v1/environments?limit=many",
            None,
            400,
            Some("limit"),
        ),
        (
            "GET",
            "/api/v1/environments?colour=red",
            None,
            400,
            Some("colour"),
        ),
        (
            "GET",
            "/api/v1/operations?status=exploded",
            None,
            400,
            Some("status"),
        ),
        ("GET", "/api/v1/operations/abc", None, 400, Some("path")),
        (
            "POST",
            "/api/v1/environments/ok.example/explode",
            Some("{}"),
            400,
            Some("path"),
        ),
        ("POST", "/api/v1/servers/nope/verify", Some("{}"), 404, None),
        (
            "POST",
            "/api/v1/operations/999/cancel",
            Some("{}"),
            404,
            None,
        ),
        ("DELETE", "/api/v1/servers", None, 405, None),
    ];
    for (method, path, body, status, field) in cases {
        let (s, v) = api.call(method, path, body).await;
        let what = format!(
            "{method} {path} {}",
            body.unwrap_or("").chars().take(80).collect::<String>()
        );
        assert_eq!(s.as_u16(), status, "{what}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
        if let Some(f) = field {
            assert_eq!(v["field"].as_str(), Some(f), "{what}: {v}");
        }
        assert_eq!(
            api.store().row_counts().await.unwrap(),
            before,
            "{what} changed the store"
        );
    }

    // JSON sent without saying so.
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/servers")
        .header("authorization", format!("Bearer {}", api.token))
        .body(Body::from(r#"{"name":"x","transport":"local"}"#))
        .unwrap();
    let (s, body) = api.raw(req).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "unsupported_media_type");

    // A valid environment on a release that was never verified: refused plainly, saying
    // what to do, with nothing written.
    let (s, v) = api
        .post(
            "/api/v1/environments",
            json!({"uri": "bücher.example", "release": "r1", "aliases": ["www.bücher.example"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "invalid_state");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("aegir release verify r1"),
        "{v}"
    );
    assert_eq!(api.store().row_counts().await.unwrap(), before);
}

#[tokio::test]
async fn inventory_reads_and_environment_paging() {
    let api = Api::new().await;
    inventory(&api).await;
    let (s, v) = api.call("GET", "/api/v1/servers/web1", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "new");
    let (_, v) = api.call("GET", "/api/v1/releases/r1", None).await;
    assert_eq!(
        (v["project"].as_str(), v["server"].as_str()),
        (Some("p1"), Some("web1"))
    );

    // Environments come with the server backend; rows are put in the store directly here.
    let store = api.store();
    let server = store.server_by_name("web1").await.unwrap().unwrap();
    let release = store.release_by_name("r1").await.unwrap().unwrap();
    for uri in [
        "c.example",
        "a.example",
        "b.example",
        "xn--bcher-kva.example",
    ] {
        store
            .insert_environment(
                &NewEnvironmentRow {
                    uri: uri.into(),
                    release_id: release.id,
                    server_id: server.id,
                    status: EnvironmentStatus::Active,
                    https: HttpsMode::Off,
                    aliases: vec![],
                    redirect_aliases: false,
                    db_name: None,
                },
                SystemClock.now(),
            )
            .await
            .unwrap();
    }
    let (_, v) = api.call("GET", "/api/v1/environments?limit=2", None).await;
    assert_eq!(v["total"], 4);
    let uris: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, ["a.example", "b.example"]);
    let (_, v) = api
        .call("GET", "/api/v1/environments?limit=2&offset=2", None)
        .await;
    assert_eq!(v["items"][0]["uri"], "c.example");
    let (_, v) = api.call("GET", "/api/v1/environments?q=b.ex", None).await;
    assert_eq!(v["total"], 1);
    // The Unicode form finds the punycode record.
    let (s, v) = api
        .call("GET", "/api/v1/environments/b%C3%BCcher.example", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["uri"], "xn--bcher-kva.example");
    // Actions on an existing environment whose backend is missing: 501, store unchanged.
    let before = store.row_counts().await.unwrap();
    let (s, v) = api
        .post("/api/v1/environments/a.example/migrate", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED, "{v}");
    assert!(v["message"].as_str().unwrap().contains("not available yet"));
    assert_eq!(store.row_counts().await.unwrap(), before);
    // Each action takes only its own options; a bad one is refused naming the field, and
    // nothing is written.
    for (action, body, field) in [
        ("restore", json!({}), "backup"),
        (
            "restore",
            json!({ "backup": 1, "file": "/tmp/x.tar.gz" }),
            "backup",
        ),
        ("restore", json!({ "file": "relative.tar.gz" }), "file"),
        (
            "restore",
            json!({ "file": "/nonexistent/a-20240101.000000.tar.gz" }),
            "file",
        ),
        ("restore", json!({ "file": "/etc/passwd" }), "file"),
        ("clone", json!({}), "uri"),
        ("clone", json!({ "uri": "not a host" }), "uri"),
        ("backup", json!({ "uri": "b.example" }), "uri"),
        ("backup", json!({ "skip_backup": true }), "skip_backup"),
        ("backup", json!({ "description": "a\nb" }), "description"),
        ("backup", json!({ "colour": "blue" }), "colour"),
        ("verify", json!({ "description": "x" }), "description"),
    ] {
        let (s, v) = api
            .post(
                &format!("/api/v1/environments/a.example/{action}"),
                body.clone(),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{action} {body}: {v}");
        assert_eq!(v["field"], field, "{action} {body}: {v}");
    }
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/environments/a.example/schedule",
            Some(&json!({ "backup_interval": 60 }).to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "backup_interval");
    let (s, v) = api.post("/api/v1/backups/999/verify", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = api.call("GET", "/api/v1/backups/999/download", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(store.row_counts().await.unwrap(), before);
}

#[tokio::test]
async fn every_route_refuses_requests_without_a_valid_token() {
    let api = Api::new().await;
    let (s, doc) = api.call("GET", "/api/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    let mut walked = 0;
    for (path, item) in paths {
        assert!(path.starts_with("/api/v1/"), "{path}");
        let concrete = path
            .replace("{id}", "1")
            .replace("{action}", "verify")
            .replace("{name}", "x")
            .replace("{uri}", "x.example");
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            for auth in [
                None,
                Some("Bearer wrong"),
                Some("Basic YWRtaW46YWRtaW4="),
                Some("Bearer "),
            ] {
                let mut req = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&concrete)
                    .header("content-type", "application/json");
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                let (s, body) = api.raw(req.body(Body::from("{}")).unwrap()).await;
                assert_eq!(
                    s,
                    StatusCode::UNAUTHORIZED,
                    "{method} {concrete} with {auth:?}"
                );
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["error"], "unauthorized");
            }
            walked += 1;
        }
    }
    // The document must describe the API, or this test would walk nothing.
    assert!(
        walked >= 30,
        "only {walked} operations in the OpenAPI document"
    );
    for path in ["/api/v1/openapi.json", "/api/v1/no-such-route"] {
        let (s, _) = api
            .raw(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (s, _) = api
        .raw(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(s, StatusCode::OK);
    // With the token, the same kind of request gets through.
    let (s, _) = api.call("GET", "/api/v1/servers", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn tokens_are_stored_hashed_and_can_be_revoked() {
    let api = Api::new().await;
    let (s, v) = api.post("/api/v1/tokens", json!({"name": "ci"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("aegir_") && secret.len() > 60);
    let (_, list) = api.call("GET", "/api/v1/tokens", None).await;
    assert!(!list.to_string().contains(&secret), "list shows a secret");

    // Nowhere in the database files.
    api.store().close().await;
    for entry in std::fs::read_dir(api.db.dir.path()).unwrap() {
        // SQLite may still be removing its -wal and -shm files after close: a file that is
        // gone holds no secret.
        let bytes = match std::fs::read(entry.unwrap().path()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => continue,
            Err(e) => panic!("{e}"),
        };
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the token is stored in clear"
        );
        assert!(!bytes
            .windows(api.token.len())
            .any(|w| w == api.token.as_bytes()));
    }
    let store = Store::open(&api.db.url).await.unwrap();
    let hashed = store
        .token_by_hash(&app::token_hash(&secret))
        .await
        .unwrap();
    assert_eq!(hashed.unwrap().name, "ci");

    // The new token works until it is revoked.
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(HostPlanner::new(api.db.dir.path())),
        EngineConfig::default(),
        "t",
    );
    let router = aegird::api::router(App::new(
        engine,
        SshKeys::new(api.db.dir.path().join("ssh")),
    ));
    let get = |tok: &str| {
        Request::get("/api/v1/servers")
            .header("authorization", format!("Bearer {tok}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        router.clone().oneshot(get(&secret)).await.unwrap().status(),
        StatusCode::OK
    );
    let del = Request::delete("/api/v1/tokens/ci")
        .header("authorization", format!("Bearer {secret}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        router.clone().oneshot(del).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        router.clone().oneshot(get(&secret)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn server_verify_streams_its_log_live_and_records_services() {
    let api = Api::new().await;
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let engine = tokio::spawn(api.engine.clone().run(async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    api.post(
        "/api/v1/servers",
        json!({"name": "here", "transport": "local"}),
    )
    .await;
    let (s, op) = api.post("/api/v1/servers/here/verify", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{op}");
    let id = op["id"].as_i64().unwrap();

    // The stream ends by itself once the operation has ended.
    let req = Request::get(format!("/api/v1/operations/{id}/events"))
        .header("authorization", format!("Bearer {}", api.token))
        .body(Body::empty())
        .unwrap();
    let (s, body) = tokio::time::timeout(Duration::from_secs(60), api.raw(req))
        .await
        .expect("event stream ends");
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("event: log"), "{text}");
    assert!(text.contains("reached"), "{text}");
    let end = text.split("event: end\ndata: ").nth(1).expect("end event");
    let end: Value = serde_json::from_str(end.lines().next().unwrap()).unwrap();
    assert_eq!(end["status"], "succeeded", "{text}");
    let names: Vec<&str> = end["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "connect",
            "detect-os",
            "detect-http",
            "detect-php-fpm",
            "detect-database",
            "nginx-include",
            "php-fpm-pools",
            "check-database-admin",
            "record"
        ]
    );
    // Every stored line was streamed, in order, each once.
    let (_, lines) = api
        .call("GET", &format!("/api/v1/operations/{id}/logs"), None)
        .await;
    let ids: Vec<i64> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(text.matches("event: log").count(), ids.len());
    // Resuming from a line id sends only what follows.
    let last = ids[ids.len() - 2];
    let req = Request::get(format!("/api/v1/operations/{id}/events?after={last}"))
        .header("authorization", format!("Bearer {}", api.token))
        .body(Body::empty())
        .unwrap();
    let (_, body) = api.raw(req).await;
    assert_eq!(
        String::from_utf8(body)
            .unwrap()
            .matches("event: log")
            .count(),
        1
    );

    let (_, server) = api.call("GET", "/api/v1/servers/here", None).await;
    assert_eq!(server["status"], "ready");
    assert!(server["services"]["os"].as_str().is_some(), "{server}");
    let (_, ops) = api
        .call(
            "GET",
            "/api/v1/operations?status=succeeded&target_type=server&target=here",
            None,
        )
        .await;
    assert_eq!(ops["total"], 1);
    let _ = stop.send(true);
    engine.await.unwrap();
}
