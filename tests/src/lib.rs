//! Shared harness for the end-to-end tests and benchmarks: stores on SQLite or on a private
//! PostgreSQL schema, the built `aegird`/`aegir` binaries, and a real daemon process.

pub mod aegir3;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aegird::store::Store;

/// The PostgreSQL the tests use (`cargo xtask test` makes sure it runs).
pub fn postgres_url() -> String {
    std::env::var("AEGIR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Which engine a test store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty store that cleans up after itself: a SQLite file in a temporary directory,
/// or a PostgreSQL schema of its own (dropped on drop).
pub struct TestDb {
    pub url: String,
    pub store: Store,
    pub dir: tempfile::TempDir,
    schema: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => {
                let url = aegird::config::sqlite_url(&dir.path().join("aegir.db"));
                let store = Store::open(&url).await.expect("open sqlite store");
                TestDb {
                    url,
                    store,
                    dir,
                    schema: None,
                }
            }
            Backend::Postgres => {
                let schema = format!("aegir_test_{:016x}", rand::random::<u64>());
                let admin = postgres_url();
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL at {admin} is needed (run `cargo xtask test`): {e}")
                    });
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut conn)
                    .await
                    .expect("create schema");
                let sep = if admin.contains('?') { '&' } else { '?' };
                let url = format!("{admin}{sep}options=-csearch_path%3D{schema}");
                let store = Store::open(&url).await.expect("open postgres store");
                TestDb {
                    url,
                    store,
                    dir,
                    schema: Some(schema),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            // Drop runs outside any runtime we may use; a thread of its own can block.
            let admin = postgres_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) =
                        <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await
                    {
                        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                            .execute(&mut c)
                            .await;
                    }
                })
            })
            .join();
        }
    }
}

/// Path of a binary of the workspace, built on first use (`cargo xtask test` builds them
/// before the tests run, so this is normally only a lookup).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    let mut built = BUILT.lock().unwrap();
    if !*built {
        let release = dir.ends_with("release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "aegird", "--bins"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build of the aegird binaries failed"
        );
        *built = true;
    }
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A real `aegird serve` process.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub state_dir: PathBuf,
    /// Everything it printed on stderr so far.
    pub log: Arc<Mutex<String>>,
}

/// How to start a daemon.
#[derive(Debug, Clone, Default)]
pub struct DaemonOpts {
    pub database_url: Option<String>,
    /// Extra environment, e.g. a PATH with slow stand-in tools, engine settings.
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Start aegird on a free loopback port with its state in `state_dir`, and wait until it
    /// answers /healthz.
    pub fn start(state_dir: &Path, opts: &DaemonOpts) -> Daemon {
        let mut cmd = Command::new(bin("aegird"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--state-dir")
            .arg(state_dir)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = &opts.database_url {
            cmd.arg("--database-url").arg(url);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn aegird");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!("aegird did not start:\n{}", log.lock().unwrap());
            }
        };
        let d = Daemon {
            child,
            addr,
            state_dir: state_dir.to_path_buf(),
            log,
        };
        d.wait_healthy();
        d
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(self.addr) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("aegird never became healthy:\n{}", self.log.lock().unwrap());
    }

    /// Send a signal (SIGKILL, SIGTERM).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill failed");
    }

    /// Create an API token with `aegird token create` on the same state.
    pub fn token(&self, name: &str, database_url: Option<&str>) -> String {
        let mut cmd = Command::new(bin("aegird"));
        cmd.args(["token", "create", "--name", name, "--state-dir"])
            .arg(&self.state_dir);
        if let Some(u) = database_url {
            cmd.arg("--database-url").arg(u);
        }
        let out = cmd.output().expect("aegird token create");
        assert!(
            out.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Run the `aegir` CLI against this daemon.
    pub fn cli(&self, token: &str, args: &[&str]) -> std::process::Output {
        Command::new(bin("aegir"))
            .args(args)
            .env("AEGIR_URL", self.url())
            .env("AEGIR_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .expect("run aegir")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A second host for SSH tests: a network namespace joined to this one by a veth pair, with
/// its own sshd. It shares this machine's filesystem (enough to reach and verify it; a
/// separate root comes with the tests that install sites there). Needs root.
pub struct NetnsHost {
    ns: String,
    /// The namespace side's address; only ever reached from this machine.
    pub addr: String,
    pub dir: tempfile::TempDir,
    sshd: Option<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetnsHost {
    pub fn start() -> NetnsHost {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "sshd is needed (cargo xtask test installs openssh-server)"
        );
        let id: u16 = rand::random();
        let ns = format!("aegir-t{id:04x}");
        // A /30 of our own in 10.213.0.0/16, used only inside this test's namespace pair.
        let (a, b) = ((id >> 6) as u8, ((id & 0x3f) as u8) << 2);
        let host_addr = format!("10.213.{a}.{}", b + 1);
        let addr = format!("10.213.{a}.{}", b + 2);
        let veth = format!("aeh{id:04x}");
        ip(&["netns", "add", &ns]);
        let host = NetnsHost {
            ns: ns.clone(),
            addr: addr.clone(),
            dir: tempfile::tempdir().unwrap(),
            sshd: None,
        };
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        std::fs::create_dir_all("/run/sshd").unwrap();
        host.new_host_key();
        std::fs::write(host.dir.path().join("authorized_keys"), "").unwrap();
        let d = host.dir.path().display();
        std::fs::write(
            host.dir.path().join("sshd_config"),
            format!(
                "Port 22\nListenAddress {addr}\nHostKey {d}/host_ed25519\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile {d}/sshd.pid\nLogLevel VERBOSE\n"
            ),
        )
        .unwrap();
        let mut host = host;
        host.start_sshd();
        host
    }

    /// A new host key, as a reinstalled (or impersonated) host would present.
    pub fn new_host_key(&self) {
        let key = self.dir.path().join("host_ed25519");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success());
    }

    /// (Re)start sshd. Like a reboot, a restart ends every process in the namespace,
    /// including the sessions an earlier sshd left serving open connections.
    pub fn start_sshd(&mut self) {
        if let Some(mut old) = self.sshd.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        self.kill_all();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
            ])
            .arg(self.dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd");
        self.sshd = Some(child);
        let target: SocketAddr = format!("{}:22", self.addr).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd in {} never listened",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_all(&self) {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
            .expect("ip netns pids");
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) on processes inside the namespace this test made.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Let a public key log in as any user.
    pub fn authorize(&self, public_key: &str) {
        std::fs::write(
            self.dir.path().join("authorized_keys"),
            format!("{}\n", public_key.trim()),
        )
        .unwrap();
    }
}

impl Drop for NetnsHost {
    fn drop(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_all();
        // Deleting the namespace takes its end of the veth pair, and so the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Path of a fixture codebase under `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Run git in `dir` (as a fixed test identity), failing the test if it fails.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.org"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A git repository holding a fixture codebase, one commit on `main`, tagged `v1.0`.
pub fn fixture_repo(name: &str) -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("tempdir");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", fixture(name)))
        .arg(repo.path())
        .status()
        .expect("cp");
    assert!(copied.success());
    git(repo.path(), &["init", "--quiet", "--initial-branch=main"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "--quiet", "-m", name]);
    git(repo.path(), &["tag", "v1.0"]);
    repo
}

/// Run the `aegir` CLI: (exit code, stdout, stderr).
pub fn run_cli(d: &Daemon, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = d.cli(token, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run the `aegir` CLI, which must succeed; its stdout.
pub fn cli_ok(d: &Daemon, token: &str, args: &[&str]) -> String {
    let (code, out, err) = run_cli(d, token, args);
    assert_eq!(code, 0, "aegir {}:\n{out}\n{err}", args.join(" "));
    out
}

/// A name no other test (or earlier run) uses: `<prefix>-<random hex>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// A request to this machine's nginx for `http://<host><path>`, as a browser resolving
/// `host` to 127.0.0.1 would make it: (status, response headers and body).
pub fn http_get(host: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "30", "--resolve"])
        .arg(format!("{host}:80:127.0.0.1"))
        .arg(format!("http://{host}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The `<title>` of an HTML page, if it has one.
pub fn html_title(page: &str) -> Option<String> {
    let start = page.find("<title>")? + "<title>".len();
    let end = page[start..].find("</title>")? + start;
    Some(page[start..end].to_string())
}

/// Run SQL as the database admin (root through the socket); the rows, tab-separated.
pub fn mysql(sql: &str) -> String {
    let out = Command::new("mariadb")
        .args(["-N", "-B", "-e", sql])
        .output()
        .expect("run mariadb");
    assert!(
        out.status.success(),
        "mariadb -e {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Everything on this machine that belongs to the site at `uri` whose database (and key) is
/// `key`: databases, database users, vhosts, site directories, WordPress configs, Drupal
/// site directories under `drupal_sites` (if given). Empty when nothing is left.
pub fn site_leftovers(uri: &str, key: &str, drupal_sites: Option<&Path>) -> Vec<String> {
    let mut found = Vec::new();
    for row in mysql(&format!(
        "SELECT CONCAT('database ', SCHEMA_NAME) FROM information_schema.SCHEMATA \
         WHERE SCHEMA_NAME IN ('{key}', '{key}__new', '{key}__old') UNION ALL \
         SELECT CONCAT('user ', User, '@', Host) FROM mysql.user WHERE User = '{key}'"
    ))
    .lines()
    {
        found.push(row.to_string());
    }
    let dashed = key.replace('_', "-");
    let mut dirs = vec![
        PathBuf::from("/etc/aegir/nginx/vhosts"),
        PathBuf::from("/var/aegir/sites"),
        PathBuf::from("/etc/wordpress"),
    ];
    dirs.extend(drupal_sites.map(Path::to_path_buf));
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(uri) || name.contains(key) || name.contains(&dashed) {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

/// The id of a group, from /etc/group.
pub fn group_id(group: &str) -> u32 {
    std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&group)).then(|| f[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no group {group}"))
}

/// Debian's wordpress package: one codebase, a config per site in /etc/wordpress.
pub const WORDPRESS: &str = "/usr/share/wordpress";

/// A server named `server`, verified, with a verified WordPress release `release` on it.
pub fn wordpress_release(d: &Daemon, token: &str, server: &str, release: &str) {
    cli_ok(d, token, &["server", "verify", server, "--wait"]);
    let project = unique("wp");
    cli_ok(d, token, &["project", "add", &project, "--path", WORDPRESS]);
    cli_ok(
        d,
        token,
        &[
            "release",
            "create",
            release,
            "--project",
            &project,
            "--server",
            server,
        ],
    );
    cli_ok(d, token, &["release", "verify", release, "--wait"]);
}
