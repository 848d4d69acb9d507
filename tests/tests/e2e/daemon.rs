//! The real binaries: `aegird serve` as a process driven by the `aegir` CLI, killed with
//! SIGKILL and SIGTERM mid-operation, and started with no configuration at all.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aegir_tests::{bin, Backend, Daemon, DaemonOpts, TestDb};
use aegird::model::OperationStatus;
use aegird::store::Store;
use serde_json::Value;

pub(crate) fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "aegir failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// The version a tool reports, read here independently of aegird.
fn version_of(program: &str, arg: &str, marker: &str) -> Option<String> {
    let out = Command::new(program).arg(arg).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let start = text.find(marker)? + marker.len();
    Some(
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect::<String>()
            .trim_end_matches('.')
            .to_string(),
    )
}

fn php_fpm_binary() -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir("/usr/sbin")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix("php-fpm")
                .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        })
        .collect();
    found.sort();
    found.pop().map(|n| format!("/usr/sbin/{n}"))
}

async fn cli_verify_local(backend: Backend) {
    let db = TestDb::new(backend).await;
    let url = db.url.clone();
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        state.path(),
        &DaemonOpts {
            database_url: Some(url.clone()),
            ..Default::default()
        },
    );
    let token = d.token("test", Some(&url));

    let out = d.cli(&token, &["server", "add", "local", "--local"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&token, &["server", "verify", "local", "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The log was streamed: each step's lines, then the end.
    for needle in [
        "connect",
        "detect-http",
        "detect-database",
        "record",
        "succeeded",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }

    let server = json_of(&d.cli(&token, &["server", "show", "local", "--json"]));
    assert_eq!(server["status"], "ready");
    let svc = &server["services"];
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
    assert!(os_release.contains(svc["os"].as_str().unwrap()), "{svc}");
    // What is installed here must be what was detected, with the same versions.
    let detected = |list: &str, name: &str| -> Option<String> {
        svc[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["version"].as_str().unwrap().to_string())
    };
    if Path::new("/usr/sbin/nginx").exists() {
        assert_eq!(
            detected("http", "nginx"),
            version_of("/usr/sbin/nginx", "-v", "nginx/")
        );
    } else {
        assert_eq!(detected("http", "nginx"), None);
    }
    match php_fpm_binary() {
        Some(bin) => {
            let want = version_of(&bin, "-v", "PHP ");
            assert!(want.is_some());
            assert!(
                svc["php_fpm"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| Some(s["version"].as_str().unwrap().to_string()) == want),
                "{svc}"
            );
        }
        None => assert!(svc["php_fpm"].as_array().unwrap().is_empty()),
    }
    if Path::new("/usr/sbin/mariadbd").exists() {
        assert_eq!(
            detected("db", "mariadb"),
            version_of("/usr/sbin/mariadbd", "--version", "Ver ")
        );
    }

    // Table output for people, the same facts.
    let out = d.cli(&token, &["server", "list"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("local") && table.contains("ready"),
        "{table}"
    );

    // Refusals and not-yet-available features get their own exit codes, and no crash.
    let out = d.cli(&token, &["server", "add", "bad name", "--local"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("name"));
    // An SSH server whose host cannot be reached (a closed port on the loopback) is refused
    // with the reason, and not recorded.
    let before = json_of(&d.cli(&token, &["server", "list", "--json"]));
    let out = d.cli(
        &token,
        &["server", "add", "remote", "--ssh", "aegir@127.0.0.1:1"],
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no SSH host key"));
    assert_eq!(
        json_of(&d.cli(&token, &["server", "list", "--json"])),
        before
    );
    let out = d.cli("wrong-token", &["server", "list"]);
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test]
async fn cli_adds_and_verifies_the_local_server_sqlite() {
    cli_verify_local(Backend::Sqlite).await;
}

#[tokio::test]
async fn cli_adds_and_verifies_the_local_server_postgres() {
    cli_verify_local(Backend::Postgres).await;
}

/// A directory whose `nginx` answers only after `secs` seconds: a slow probe on a busy host,
/// so an operation is reliably mid-step when the test acts.
fn slow_nginx(dir: &Path, secs: u32) -> String {
    let script = dir.join("nginx");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep {secs}\n[ -x /usr/sbin/nginx ] && exec /usr/sbin/nginx \"$@\"\n\
             echo 'nginx version: nginx/0.0.0' >&2\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn queue_verify(d: &Daemon, token: &str, server: &str) -> i64 {
    let out = d.cli(token, &["server", "add", server, "--local"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&d.cli(token, &["server", "verify", server, "--json"]))["id"]
        .as_i64()
        .unwrap()
}

pub(crate) fn wait_task_running(d: &Daemon, token: &str, op: i64, task: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = json_of(&d.cli(token, &["op", "show", &op.to_string(), "--json"]));
        let running = v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == task && t["status"] == "running");
        if running {
            return;
        }
        assert!(Instant::now() < deadline, "task {task} never ran: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn wait_final(d: &Daemon, token: &str, op: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = json_of(&d.cli(token, &["op", "show", &op.to_string(), "--json"]));
        let status: OperationStatus = v["status"].as_str().unwrap().parse().unwrap();
        if status.is_final() {
            return v;
        }
        assert!(Instant::now() < deadline, "operation {op} still {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn sigkill_mid_operation_leaves_nothing_running_and_loses_nothing_queued() {
    let state = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let opts = DaemonOpts {
        database_url: None,
        env: vec![
            ("PATH".into(), slow_nginx(tools.path(), 3)),
            // One at a time, so the others are still queued when the first is killed.
            ("AEGIR_ENGINE_CONCURRENCY".into(), "1".into()),
        ],
    };
    let mut d = Daemon::start(state.path(), &opts);
    let token = d.token("test", None);
    let first = queue_verify(&d, &token, "s1");
    let queued: Vec<i64> = ["s2", "s3"]
        .iter()
        .map(|s| queue_verify(&d, &token, s))
        .collect();
    wait_task_running(&d, &token, first, "detect-http");

    d.signal(libc::SIGKILL);
    d.child.wait().unwrap();
    // Killed mid-way: the store says running, the others queued.
    let url = aegird::config::sqlite_url(&state.path().join("aegir.db"));
    let store = Store::open(&url).await.unwrap();
    assert_eq!(
        store.operation(first).await.unwrap().unwrap().status,
        OperationStatus::Running
    );
    for id in &queued {
        assert_eq!(
            store.operation(*id).await.unwrap().unwrap().status,
            OperationStatus::Queued
        );
    }
    store.close().await;

    let d = Daemon::start(state.path(), &opts);
    let op = wait_final(&d, &token, first);
    assert_eq!(op["status"], "succeeded", "{op}");
    assert_eq!(op["attempt"], 2, "it was resumed, not started afresh: {op}");
    let logs = String::from_utf8_lossy(&d.cli(&token, &["op", "logs", &first.to_string()]).stdout)
        .to_string();
    assert!(logs.contains("queued again to resume"), "{logs}");
    for id in queued {
        let op = wait_final(&d, &token, id);
        assert_eq!(op["status"], "succeeded", "{op}");
        assert_eq!(op["attempt"], 1);
    }
}

#[tokio::test]
async fn sigterm_stops_claiming_and_interrupts_what_outlives_the_grace_period() {
    let state = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let opts = DaemonOpts {
        database_url: None,
        env: vec![
            ("PATH".into(), slow_nginx(tools.path(), 30)),
            ("AEGIR_ENGINE_CONCURRENCY".into(), "1".into()),
            ("AEGIR_ENGINE_SHUTDOWN_TIMEOUT_SECONDS".into(), "1".into()),
        ],
    };
    let mut d = Daemon::start(state.path(), &opts);
    let token = d.token("test", None);
    let running = queue_verify(&d, &token, "s1");
    let queued = queue_verify(&d, &token, "s2");
    wait_task_running(&d, &token, running, "detect-http");

    let t0 = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.child.wait().unwrap();
    assert!(status.success(), "aegird exited with {status}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "shutdown took {:?}",
        t0.elapsed()
    );

    let url = aegird::config::sqlite_url(&state.path().join("aegir.db"));
    let store = Store::open(&url).await.unwrap();
    let op = store.operation(running).await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Interrupted);
    assert!(op.error.unwrap().contains("shut down"));
    // Not started during shutdown, and still there for the next start.
    assert_eq!(
        store.operation(queued).await.unwrap().unwrap().status,
        OperationStatus::Queued
    );
    assert!(d.log.lock().unwrap().contains("SIGTERM received"));
}

#[tokio::test]
async fn serve_without_configuration_uses_the_user_data_dir_and_loopback() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("aegird"));
    cmd.arg("serve")
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("AEGIR_") || k == "XDG_DATA_HOME" || k == "JOURNAL_STREAM" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    // Read what it says until it listens or gives up.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut said = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let listening = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                said.push_str(&line);
                said.push('\n');
                if line.contains("listening on") {
                    break true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(_) => assert!(Instant::now() < deadline, "aegird said:\n{said}"),
        }
    };
    let dir = home.path().join(".local/share/aegir");
    if listening {
        assert!(
            said.contains("listening on http://127.0.0.1:7270/"),
            "{said}"
        );
        let health = reqwest::get("http://127.0.0.1:7270/healthz").await.unwrap();
        assert_eq!(health.status(), 200);
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(child.wait().unwrap().success());
    } else {
        // Someone (say, the README's first command) already runs an aegird on the default
        // port: ours must have tried exactly that address, and said so.
        assert!(!child.wait().unwrap().success());
        assert!(
            said.contains("cannot listen on 127.0.0.1:7270"),
            "aegird neither listened nor named the default address:\n{said}"
        );
    }
    assert!(
        dir.join("aegir.db").exists(),
        "no store in {}",
        dir.display()
    );
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "state directory mode {mode:o}");
}

#[tokio::test]
async fn tells_systemd_it_is_ready_pings_the_watchdog_and_says_when_it_stops() {
    // systemd's side of sd_notify is a datagram socket named by NOTIFY_SOCKET: the test
    // listens on one, as systemd would for a Type=notify unit with WatchdogSec=.
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    // systemd names the watched process in WATCHDOG_PID; `exec` keeps the shell's pid, so
    // the daemon is started exactly as systemd would start it.
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(bin("aegird"))
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state.path())
        .env("NOTIFY_SOCKET", &sock_path)
        // 400 ms: aegird must ping at least every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let mut recv = || -> String {
        let n = sock.recv(&mut buf).expect("a notification from aegird");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("READY=1")) {
        seen.push(recv());
    }
    let t0 = Instant::now();
    let mut pings = 0;
    while pings < 5 {
        if recv().contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    // Five pings at (at most) half the interval.
    assert!(
        t0.elapsed() < Duration::from_millis(5 * 300),
        "{:?}",
        t0.elapsed()
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut stopping = false;
    for _ in 0..50 {
        if recv().contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    assert!(child.wait().unwrap().success());
}
