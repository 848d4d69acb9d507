//! Servers over SSH: a second host in a network namespace with its own sshd; aegird pins its
//! host key when it is added, verifies it through the system OpenSSH client, and refuses to
//! talk to it once its host key changes.

use aegir_tests::{Daemon, DaemonOpts, NetnsHost};
use serde_json::Value;

/// ssh processes serving a control socket under `dir`.
fn mux_processes(dir: &std::path::Path) -> usize {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("ssh") && c.contains(&needle))
        .count()
}

fn run(d: &Daemon, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = d.cli(token, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_server_over_ssh_is_pinned_verified_and_refused_when_its_key_changes() {
    let mut host = NetnsHost::start();
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("test", None);
    let target = format!("root@{}", host.addr);

    let (code, out, err) = run(
        &d,
        &token,
        &["server", "add", "web2", "--ssh", &target, "--json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let added: Value = serde_json::from_str(&out).unwrap();
    let key = added["authorize_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("ssh-ed25519 "), "{key}");
    let pinned = added["ssh_host_key"].as_str().unwrap();
    let host_pub = std::fs::read_to_string(host.dir.path().join("host_ed25519.pub")).unwrap();
    let host_pub_key = host_pub.split_whitespace().nth(1).unwrap();
    assert!(
        pinned.contains(host_pub_key),
        "pinned {pinned}, host has {host_pub}"
    );
    // The private half stays in the state directory, readable by aegird alone.
    let private = state.path().join("ssh/id_ed25519");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&private).unwrap().permissions().mode() & 0o077,
        0
    );

    // Not yet authorised: verify fails and says what to do.
    let (code, out, err) = run(&d, &token, &["server", "verify", "web2", "--wait"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("not authorised"), "{out}");

    // Authorised: verify runs every step over SSH and records what it found there.
    host.authorize(&key);
    let (code, out, err) = run(&d, &token, &["server", "verify", "web2", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("connecting to {target}:22")), "{out}");
    let server: Value =
        serde_json::from_str(&run(&d, &token, &["server", "show", "web2", "--json"]).1).unwrap();
    assert_eq!(server["status"], "ready");
    assert_eq!(server["transport"], "ssh");
    // The namespace shares this machine's files: what it has installed is what we have.
    let os = std::fs::read_to_string("/etc/os-release").unwrap();
    assert!(os.contains(server["services"]["os"].as_str().unwrap()));
    let local_nginx = std::path::Path::new("/usr/sbin/nginx").exists();
    let remote_http = server["services"]["http"].as_array().unwrap();
    assert_eq!(
        remote_http.iter().any(|s| s["name"] == "nginx"),
        local_nginx,
        "{server}"
    );

    // The verify left a multiplexed connection open; stopping aegird closes it.
    let control = state.path().join("ssh/cm");
    assert!(
        mux_processes(&control) > 0,
        "no control connection was kept"
    );
    let mut d = d;
    d.signal(libc::SIGTERM);
    assert!(d.child.wait().unwrap().success());
    assert_eq!(
        mux_processes(&control),
        0,
        "ssh control connections outlived aegird"
    );
    let d = Daemon::start(state.path(), &DaemonOpts::default());

    // The host is reinstalled (or impersonated): a new host key. aegird refuses to connect.
    host.new_host_key();
    host.start_sshd();
    let (code, out, err) = run(&d, &token, &["server", "verify", "web2", "--wait"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("not the one pinned"), "{out}");
    let server: Value =
        serde_json::from_str(&run(&d, &token, &["server", "show", "web2", "--json"]).1).unwrap();
    assert_eq!(server["status"], "failed");
    assert_eq!(
        server["ssh_host_key"].as_str().unwrap(),
        pinned,
        "the pin is not replaced"
    );
}

/// An executor for `host`, whose sshd trusts its key (the state directory holds the key).
async fn authorized_executor(
    host: &NetnsHost,
) -> (
    tempfile::TempDir,
    aegird::backend::SshKeys,
    aegird::backend::ssh::SshExecutor,
) {
    let state = tempfile::tempdir().unwrap();
    let keys = aegird::backend::SshKeys::new(state.path().join("ssh"));
    host.authorize(&keys.public_key().await.unwrap());
    let pin = keys.scan_host_key(&host.addr, 22).await.unwrap();
    let exec = keys.executor(1, "root", &host.addr, 22, &pin).unwrap();
    (state, keys, exec)
}

#[tokio::test]
async fn files_go_over_the_same_ssh_connection() {
    use aegird::backend::HostExecutor;
    let host = NetnsHost::start();
    let (state, keys, exec) = authorized_executor(&host).await;

    // The namespace host shares this machine's files, so what it writes is seen here.
    let there = tempfile::tempdir().unwrap();
    let conf = there.path().join("nginx/site1.test.conf");
    let path = conf.to_str().unwrap();
    assert!(exec.write_file(path, b"server { }\n", 0o640).await.unwrap());
    assert_eq!(std::fs::read(&conf).unwrap(), b"server { }\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(!exec.write_file(path, b"server { }\n", 0o640).await.unwrap());

    // Input on stdin, and arguments that a shell would otherwise split or expand.
    let out = exec
        .run_input(
            "sh",
            &["-c", "cat; echo \"$1\"", "sh", "a b $HOME"],
            Some(b"in:".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, "in:a b $HOME\n");

    let from = tempfile::tempdir().unwrap();
    std::fs::create_dir(from.path().join("files")).unwrap();
    std::fs::write(from.path().join("files/x.txt"), "x").unwrap();
    let to = there.path().join("copy");
    exec.copy_dir(from.path(), to.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(to.join("files/x.txt")).unwrap(),
        "x"
    );

    // Everything went through one multiplexed connection: one control socket.
    let sockets = std::fs::read_dir(state.path().join("ssh/cm"))
        .unwrap()
        .count();
    assert_eq!(sockets, 1);
    keys.close_connections().await;
}

/// The second client a restore loads a large table's rows with (`LOAD DATA LOCAL INFILE
/// '/dev/stdin'`) reads them over SSH too, where its standard input is the SSH channel.
#[tokio::test]
async fn rows_load_as_text_over_ssh() {
    use aegird::backup::rows::{Session, Shape};
    use std::io::Write;
    let host = NetnsHost::start();
    let (_state, _keys, exec) = authorized_executor(&host).await;
    let db = aegir_tests::unique("rows_ssh").replace('-', "_");
    let sql = |q: &str| {
        let out = std::process::Command::new("mariadb")
            .args(["-N", "-B", "-e", q])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{q}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    sql(&format!(
        "CREATE DATABASE `{db}` CHARACTER SET utf8mb4; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB"
    ));
    let fields: Vec<String> = ["NO_AUTO_VALUE_ON_ZERO", "+00:00", "0", "0", "utf8mb4", "1"]
        .map(String::from)
        .to_vec();
    let load = Session::parse(&fields).unwrap().load_sql(
        b"t",
        Shape {
            columns: 2,
            utf8mb4: true,
        },
    );
    let mut cmd = aegird::backend::backup::row_loader_command(&exec, &db, &load);
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..20_000 {
        writeln!(stdin, "{i}\tover ssh: ✓ tab\\there").unwrap();
    }
    stdin.write_all(b"20000\t\\N\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let loaded = sql(&format!(
        "SELECT COUNT(*), SUM(v IS NULL), MAX(v) FROM `{db}`.t"
    ));
    sql(&format!("DROP DATABASE `{db}`"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(loaded, "20001\t1\tover ssh: ✓ tab\\there\n");
}
