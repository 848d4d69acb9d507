//! The Drupal driver on fixture codebases, with a drush stand-in (not drush) that records its calls.

// Drupal and drush cannot be had offline, so the Drupal 10 fixture carries `vendor/bin/drush`,
// a shell script that only stands in for drush: it logs each call to `drush-calls.log` at the
// release root and answers `user:login` with a made-up link. What these tests check is
// aegird's side: how and when it calls drush, and everything it puts on this machine's nginx,
// php-fpm and MariaDB for the site, and takes away again.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use aegir_tests::{
    fixture, group_id, http_get, mysql, run_cli, site_leftovers, unique, Daemon, DaemonOpts,
};
use serde_json::Value;

const RELEASE: &str = "site-1";

/// A daemon with the local server verified and a verified release of a fixture codebase,
/// copied first so that the stand-in's log and the sites aegird adds never touch the repo.
struct Hosted {
    d: Daemon,
    token: String,
    /// The release root (the copy of the fixture).
    root: PathBuf,
    _copy: tempfile::TempDir,
    _state: tempfile::TempDir,
}

impl Hosted {
    fn new(fixture_name: &str) -> Hosted {
        let copy = tempfile::Builder::new()
            .prefix("aegir-drupal-")
            .tempdir_in("/tmp")
            .unwrap();
        // tempdir makes it 0700; nginx and php-fpm (www-data) must reach the docroot.
        std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = copy.path().join(fixture_name);
        let copied = Command::new("cp")
            .arg("-a")
            .arg(fixture(fixture_name))
            .arg(&root)
            .status()
            .expect("cp");
        assert!(copied.success());

        let state = tempfile::tempdir().unwrap();
        let d = Daemon::start(state.path(), &DaemonOpts::default());
        let token = d.token("test", None);
        let h = Hosted {
            d,
            token,
            root,
            _copy: copy,
            _state: state,
        };
        h.ok(&["server", "add", "local", "--local"]);
        h.ok(&["server", "verify", "local", "--wait"]);
        let root = h.root.display().to_string();
        h.ok(&["project", "add", "site", "--path", &root]);
        h.ok(&[
            "release",
            "create",
            RELEASE,
            "--project",
            "site",
            "--server",
            "local",
        ]);
        h.ok(&["release", "verify", RELEASE, "--wait"]);
        h
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run_cli(&self.d, &self.token, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.cli(args);
        assert_eq!(code, 0, "aegir {}:\n{out}\n{err}", args.join(" "));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `aegir env create --wait`: (exit code, stdout and stderr).
    fn create(&self, uri: &str, title: &str) -> (i32, String) {
        let (code, out, err) = self.cli(&[
            "env",
            "create",
            uri,
            "--release",
            RELEASE,
            "--title",
            title,
            "--wait",
        ]);
        (code, format!("{out}{err}"))
    }

    /// The site's key (its database and user name), as the daemon recorded it.
    fn key(&self, uri: &str) -> String {
        let env = self.json(&["env", "show", uri]);
        env["db_name"].as_str().expect("db_name").to_string()
    }

    /// Statuses of every environment record with exactly this uri.
    fn statuses(&self, uri: &str) -> Vec<String> {
        let list = self.json(&["env", "list", "--search", uri]);
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["uri"] == uri)
            .map(|e| e["status"].as_str().unwrap().to_string())
            .collect()
    }

    fn delete(&self, uri: &str) {
        self.ok(&["env", "delete", uri, "--wait"]);
    }

    /// Every call the drush stand-in recorded so far, one line of arguments each.
    fn drush_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("drush-calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Deletes the environment if the test panics half-way, so a failing run leaves less behind.
struct DeleteOnPanic<'a>(&'a Hosted, String);

impl Drop for DeleteOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.cli(&["env", "delete", &self.1, "--wait"]);
        }
    }
}

/// The operation id in the last line `--wait` prints ("operation 7 succeeded").
fn operation_id(out: &str) -> String {
    out.lines()
        .rev()
        .find_map(|l| l.strip_prefix("operation ")?.split(' ').next())
        .unwrap_or_else(|| panic!("no operation line in {out}"))
        .to_string()
}

/// The task named `name` in an operation as `aegir op show --json` prints it.
fn task<'a>(op: &'a Value, name: &str) -> &'a Value {
    op["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {op}"))
}

/// Permission bits (with setgid) and group id.
fn mode_and_gid(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.permissions().mode() & 0o7777, m.gid())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The site's secrets as aegird keeps them on the host: (database password, first salt).
fn secrets(uri: &str) -> (String, String) {
    let path = PathBuf::from(format!("/var/aegir/sites/{uri}/secrets.json"));
    assert_eq!(mode_and_gid(&path).0, 0o600, "{}", path.display());
    let v: Value = serde_json::from_str(&read(&path)).unwrap();
    let pw = v["db_password"].as_str().unwrap().to_string();
    let salt = v["salts"][0].as_str().unwrap().to_string();
    // Long enough that finding it in a file is no accident.
    assert!(pw.len() >= 16 && salt.len() >= 16, "{v}");
    (pw, salt)
}

#[test]
fn drupal10_installs_through_drush_serves_php_and_delete_leaves_nothing() {
    let h = Hosted::new("drupal10");
    let rel = h.json(&["release", "show", RELEASE]);
    assert_eq!(rel["app_kind"], "drupal", "{rel}");
    assert_eq!(rel["docroot"], "web", "{rel}");

    let name = unique("d10");
    let uri = format!("{name}.test");
    let title = format!("D10 {name}");
    let _cleanup = DeleteOnPanic(&h, uri.clone());
    let (code, out) = h.create(&uri, &title);
    assert_eq!(code, 0, "{out}");
    let env = h.json(&["env", "show", &uri]);
    assert_eq!(env["status"], "active", "{env}");
    let key = h.key(&uri);
    let docroot = h.root.join("web");
    let site_dir = docroot.join("sites").join(&uri);
    let data_dir = PathBuf::from(format!("/var/aegir/sites/{uri}"));

    // The install went through the release's drush, once, for this site's own subdirectory.
    let calls = h.drush_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let install = &calls[0];
    for want in [
        "site:install".to_string(),
        "--yes".to_string(),
        format!("--root={}", docroot.display()),
        format!("--uri=http://{uri}"),
        format!("--site-name={title}"),
        "--account-name=admin".to_string(),
        format!("--sites-subdir={uri}"),
    ] {
        assert!(install.contains(&want), "{want} not in {install}");
    }
    let op = h.json(&["op", "show", &operation_id(&out)]);
    let task = task(&op, "install-application");
    assert_eq!(task["output"]["method"], "drush", "{task}");

    // Both directories name their environment, so undo and delete know they are its own.
    assert_eq!(read(&data_dir.join(".aegir-env")).trim(), key);
    assert_eq!(read(&site_dir.join(".aegir-env")).trim(), key);

    // settings.php, in the codebase, holds no secret: it includes credentials kept outside.
    let www = group_id("www-data");
    let (pw, salt) = secrets(&uri);
    let settings_path = site_dir.join("settings.php");
    assert_eq!(mode_and_gid(&settings_path), (0o440, www));
    let settings = read(&settings_path);
    assert!(
        settings.contains(&format!(
            "include '/var/aegir/sites/{uri}/credentials.php';"
        )),
        "{settings}"
    );
    assert!(settings.contains(&format!(
        "$settings['file_public_path'] = 'sites/{uri}/files';"
    )));
    assert!(
        !settings.contains(&pw) && !settings.contains(&salt),
        "{settings}"
    );
    let creds_path = data_dir.join("credentials.php");
    assert_eq!(mode_and_gid(&creds_path), (0o640, www));
    let creds = read(&creds_path);
    assert!(creds.contains(&format!("'database' => '{key}'")), "{creds}");
    assert!(creds.contains(&format!("'password' => '{pw}'")), "{creds}");
    assert!(creds.contains(&format!("$settings['hash_salt'] = '{salt}';")));

    // Public files live outside the codebase, reached through sites/<uri>/files.
    let link = std::fs::read_link(site_dir.join("files")).unwrap();
    assert_eq!(link, data_dir.join("files"));
    for dir in ["files", "private", "private/tmp"] {
        assert_eq!(mode_and_gid(&data_dir.join(dir)), (0o2770, www), "{dir}");
    }

    // The database and a user that reaches it, with its password, and nothing else.
    assert_eq!(
        mysql(&format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{key}'"
        ))
        .trim(),
        key
    );
    let grants = mysql(&format!("SHOW GRANTS FOR '{key}'@'localhost'"));
    // The grant names its database as given, or with `_` escaped (`\_`, which batch output
    // shows as `\\_`) so that it is not a wildcard.
    let own = [
        format!(" ON `{key}`.* TO "),
        format!(" ON `{}`.* TO ", key.replace('_', "\\\\_")),
    ];
    let is_own = |g: &str| own.iter().any(|o| g.contains(o.as_str()));
    assert!(grants.lines().any(is_own), "{grants}");
    for g in grants.lines() {
        assert!(
            is_own(g) || g.starts_with("GRANT USAGE ON *.* TO "),
            "a grant beyond its own database: {g}"
        );
    }
    let as_site = Command::new("mariadb")
        .args(["-u", &key, "-N", "-B", "-e", "SHOW DATABASES"])
        .env("MYSQL_PWD", &pw)
        .output()
        .unwrap();
    assert!(
        as_site.status.success(),
        "{}",
        String::from_utf8_lossy(&as_site.stderr)
    );
    let mut seen: Vec<String> = String::from_utf8_lossy(&as_site.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    seen.sort();
    let mut want = vec![key.clone(), "information_schema".to_string()];
    want.sort();
    assert_eq!(seen, want);

    // nginx serves it: the front controller runs in php-fpm (its source is never sent).
    let vhost = read(Path::new(&format!("/etc/aegir/nginx/vhosts/{uri}.conf")));
    assert!(vhost.contains(&format!("(aegir-env {key})")), "{vhost}");
    let (status, page) = http_get(&uri, "/index.php");
    assert_eq!(status, 200, "{page}");
    assert!(
        !page.contains("<?php") && !page.contains("front controller"),
        "{page}"
    );
    // Uploaded files are served from the files directory, but a script there never runs.
    let files = data_dir.join("files");
    std::fs::write(files.join("hello.txt"), format!("hello {name}\n")).unwrap();
    let (status, page) = http_get(&uri, &format!("/sites/{uri}/files/hello.txt"));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&format!("hello {name}")), "{page}");
    std::fs::write(files.join("x.php"), "<?php echo 'ran-' . (6 * 7);\n").unwrap();
    let (status, page) = http_get(&uri, &format!("/sites/{uri}/files/x.php"));
    assert_eq!(status, 403, "{page}");
    assert!(
        !page.contains("ran-42") && !page.contains("<?php"),
        "{page}"
    );
    // Nor is settings.php ever sent or run.
    let (status, page) = http_get(&uri, &format!("/sites/{uri}/settings.php"));
    assert_eq!(status, 403, "{page}");

    // A one-time login is drush's link, printed alone on stdout.
    let (code, out, err) = h.cli(&["env", "login", &uri]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        format!("http://{uri}/user/reset/1/1700000000/stand-in-hash/login")
    );
    let calls = h.drush_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[1].contains("user:login")
            && calls[1].contains("--no-browser")
            && calls[1].contains(&format!("--uri=http://{uri}")),
        "{calls:?}"
    );

    h.ok(&["env", "cron", &uri, "--wait"]);
    let calls = h.drush_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls[2].split(' ').any(|a| a == "cron")
            && calls[2].contains(&format!("--root={}", docroot.display())),
        "{calls:?}"
    );

    // Delete takes away all of it, and the record stays as deleted.
    h.delete(&uri);
    let left = site_leftovers(&uri, &key, Some(&docroot.join("sites")));
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(h.statuses(&uri), ["deleted"]);
    let (code, _, _) = h.cli(&["env", "show", &uri]);
    assert_ne!(code, 0, "a deleted environment is no longer shown by uri");
    assert_eq!(h.drush_calls().len(), 3, "delete does not call drush");
}

#[test]
fn a_failed_drush_install_is_undone_and_the_uri_can_be_used_again() {
    let h = Hosted::new("drupal10");
    let uri = format!("{}.test", unique("d10"));
    let _cleanup = DeleteOnPanic(&h, uri.clone());
    let docroot = h.root.join("web");
    // The stand-in fails every call while this file exists.
    let fail = h.root.join("drush-fail");
    std::fs::write(&fail, "").unwrap();

    let (code, out) = h.create(&uri, "Broken");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("drush stand-in: failing as asked"), "{out}");
    let calls = h.drush_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains("site:install"), "{calls:?}");
    let env = h.json(&["env", "show", &uri]);
    assert_eq!(env["status"], "failed", "{env}");
    let first_key = h.key(&uri);
    // The steps before drush were undone: database, user, vhost, both site directories.
    let left = site_leftovers(&uri, &first_key, Some(&docroot.join("sites")));
    assert!(left.is_empty(), "left behind: {left:?}");

    // A failed install can be deleted, which frees its uri.
    h.delete(&uri);
    assert_eq!(h.statuses(&uri), ["deleted"]);

    std::fs::remove_file(&fail).unwrap();
    let (code, out) = h.create(&uri, "Working");
    assert_eq!(code, 0, "{out}");
    let second_key = h.key(&uri);
    assert_ne!(
        second_key, first_key,
        "a new environment, with a key of its own"
    );
    assert_eq!(
        read(&docroot.join("sites").join(&uri).join(".aegir-env")).trim(),
        second_key
    );
    let (status, page) = http_get(&uri, "/index.php");
    assert_eq!(status, 200, "{page}");
    assert_eq!(h.drush_calls().len(), 2);

    h.delete(&uri);
    let sites = docroot.join("sites");
    for key in [&first_key, &second_key] {
        let left = site_leftovers(&uri, key, Some(&sites));
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    assert_eq!(h.statuses(&uri), ["deleted", "deleted"]);
}

#[test]
fn drupal7_without_drush_is_installed_by_hand_and_has_no_login_link() {
    let h = Hosted::new("drupal7");
    let rel = h.json(&["release", "show", RELEASE]);
    assert_eq!(rel["app_kind"], "drupal7", "{rel}");
    assert_eq!(rel["docroot"], "", "{rel}");
    assert!(!h.root.join("vendor/bin/drush").exists());

    let uri = format!("{}.test", unique("d7"));
    let _cleanup = DeleteOnPanic(&h, uri.clone());
    let (code, out) = h.create(&uri, "Seven");
    assert_eq!(code, 0, "{out}");
    // No drush: Aegir 3's manual method, the installer left to the browser.
    assert!(out.contains(&format!("http://{uri}/install.php")), "{out}");
    let op = h.json(&["op", "show", &operation_id(&out)]);
    let task = task(&op, "install-application");
    assert_eq!(task["output"]["method"], "manual", "{task}");
    assert_eq!(
        task["output"]["install_url"],
        format!("http://{uri}/install.php")
    );
    let key = h.key(&uri);

    // Drupal 7's own settings: $conf, and $drupal_hash_salt in the credentials.
    let (pw, salt) = secrets(&uri);
    let site_dir = h.root.join("sites").join(&uri);
    let settings = read(&site_dir.join("settings.php"));
    assert!(
        settings.contains(&format!(
            "include '/var/aegir/sites/{uri}/credentials.php';"
        )),
        "{settings}"
    );
    assert!(
        settings.contains(&format!(
            "$conf['file_private_path'] = '/var/aegir/sites/{uri}/private';"
        )),
        "{settings}"
    );
    assert!(!settings.contains(&pw), "{settings}");
    let creds = read(Path::new(&format!(
        "/var/aegir/sites/{uri}/credentials.php"
    )));
    assert!(
        creds.contains(&format!("$drupal_hash_salt = '{salt}';")),
        "{creds}"
    );
    assert!(creds.contains(&format!("'database' => '{key}'")), "{creds}");
    assert!(!creds.contains("$settings["), "{creds}");
    let (status, page) = http_get(&uri, "/index.php");
    assert_eq!(status, 200, "{page}");

    // Login and cron need drush, and say so.
    let (code, out, err) = h.cli(&["env", "login", &uri]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.trim().is_empty(), "no link on stdout: {out}");
    assert!(err.contains("drush"), "{err}");
    let (code, out, err) = h.cli(&["env", "cron", &uri, "--wait"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("cron needs drush"), "{out}{err}");
    // Neither changed the site.
    assert_eq!(h.json(&["env", "show", &uri])["status"], "active");

    h.delete(&uri);
    let left = site_leftovers(&uri, &key, Some(&h.root.join("sites")));
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(h.statuses(&uri), ["deleted"]);
}
