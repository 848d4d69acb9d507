//! Backups, restores and clones of real WordPress sites (nginx, php-fpm, MariaDB on this
//! machine), driven through the CLI: content comes back, clones answer on their own URL, an
//! Aegir 3 tarball restores, a hostile one changes nothing, and a SIGKILL mid-backup or
//! mid-restore leaves neither a recorded half-backup nor a half-restored site.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aegir_tests::{
    cli_ok, html_title, http_get, mysql, run_cli, site_leftovers, unique, wordpress_release,
    Daemon, DaemonOpts,
};
use serde_json::Value;

use crate::daemon::{wait_final, wait_task_running};

fn json(d: &Daemon, token: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&cli_ok(d, token, &all)).unwrap()
}

/// A verified local server with a verified WordPress release named `release`.
fn setup(d: &Daemon, token: &str, release: &str) {
    cli_ok(d, token, &["server", "add", "local", "--local"]);
    wordpress_release(d, token, "local", release);
}

fn create_site(d: &Daemon, token: &str, release: &str, uri: &str, title: &str) -> String {
    cli_ok(
        d,
        token,
        &[
            "env",
            "create",
            uri,
            "--release",
            release,
            "--title",
            title,
            "--wait",
        ],
    );
    json(d, token, &["env", "show", uri])["db_name"]
        .as_str()
        .unwrap()
        .to_string()
}

fn title_of(uri: &str) -> Option<String> {
    let (status, page) = http_get(uri, "/");
    assert_eq!(status, 200, "{uri}: {page}");
    html_title(&page)
}

fn set_blogname(key: &str, name: &str) {
    mysql(&format!(
        "UPDATE `{key}`.wp_options SET option_value = '{name}' WHERE option_name = 'blogname'"
    ));
}

fn option(key: &str, name: &str) -> String {
    mysql(&format!(
        "SELECT option_value FROM `{key}`.wp_options WHERE option_name = '{name}'"
    ))
    .trim()
    .to_string()
}

fn upload(uri: &str, name: &str, text: &str) {
    std::fs::write(format!("/var/aegir/sites/{uri}/files/{name}"), text).unwrap();
}

fn backups(d: &Daemon, token: &str, uri: &str) -> Vec<Value> {
    json(d, token, &["backup", "list", uri])
        .as_array()
        .unwrap()
        .clone()
}

/// Nothing a restore stages or keeps aside may outlive it.
fn no_restore_leftovers(uri: &str, key: &str) {
    let dbs = mysql(&format!(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA \
         WHERE SCHEMA_NAME IN ('{key}__new', '{key}__old') OR SCHEMA_NAME LIKE 'aegir\\_restore\\_test\\_%'"
    ));
    assert_eq!(dbs.trim(), "", "databases left behind");
    for d in [".restore", ".restore-previous"] {
        let p = format!("/var/aegir/sites/{uri}/{d}");
        assert!(!Path::new(&p).exists(), "{p} left behind");
    }
}

/// Every table of a database with its definition's options and its `CHECKSUM TABLE`: what a
/// restore must bring back exactly.
fn tables_and_checksums(key: &str) -> String {
    let tables = mysql(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{key}' ORDER BY TABLE_NAME"
    ));
    let names: Vec<String> = tables
        .split_whitespace()
        .map(|t| format!("`{key}`.`{t}`"))
        .collect();
    assert!(!names.is_empty(), "{key} has no tables");
    let options = mysql(&format!(
        "SELECT TABLE_NAME, ENGINE, CREATE_OPTIONS, TABLE_COLLATION FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = '{key}' ORDER BY TABLE_NAME"
    ));
    let sums = mysql(&format!("CHECKSUM TABLE {}", names.join(", ")));
    format!("{options}\n{sums}")
}

fn sha256_of(path: &str) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn wordpress_backup_restore_clone_and_aegir3_tarball() {
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("test", None);
    setup(&d, &token, "wp-bk");
    let a = format!("{}.test", unique("bk-a"));
    let b = format!("{}.test", unique("bk-b"));
    let original = unique("Original");
    let key_a = create_site(&d, &token, "wp-bk", &a, &original);
    upload(&a, "note.txt", "before");
    // Multi-byte text, quotes, escapes and a semicolon: the restore's clients read the dump as
    // bytes and its statements are split by aegird, so these must come back byte for byte.
    mysql(&format!(
        "INSERT INTO `{key_a}`.wp_options (option_name, option_value, autoload) \
         VALUES ('aegir_test_text', 'Ünïcødé ✓ 日本 it''s; a \\\\ back\\slash\ttab', 'no')"
    ));
    // A table larger than WordPress's own, last in name order: backups dump the largest
    // table first, so that a restore's longest load starts at once. Its rows, and those of a
    // table with a latin1 column, are large enough to load as LOAD DATA text: every kind of
    // value, and text with every byte that text must escape, must come back exactly.
    mysql(&format!(
        "CREATE TABLE `{key_a}`.wp_zz_bulk (id INT PRIMARY KEY, body TEXT, note VARCHAR(200) NULL, \
           amount DECIMAL(10,2), ratio DOUBLE, at DATETIME, kind ENUM('a','b')) ENGINE=InnoDB; \
         INSERT INTO `{key_a}`.wp_zz_bulk SELECT seq, REPEAT('bulk; text ', 100), \
           IF(seq % 3 = 0, NULL, CONCAT('Ünï ✓ 日本 it''s \"q\" \\\\ \\\\N %_ ', CHAR(9), CHAR(10), CHAR(13), \
             CHAR(0 USING utf8mb4), CHAR(26 USING utf8mb4), seq)), \
           seq * -1.25, seq / 7, '2024-01-01' + INTERVAL seq SECOND, IF(seq % 2, 'a', 'b') \
           FROM `{key_a}`.seq_1_to_3000; \
         CREATE TABLE `{key_a}`.wp_zz_latin (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET latin1) \
           ENGINE=InnoDB DEFAULT CHARSET=utf8mb4; \
         INSERT INTO `{key_a}`.wp_zz_latin SELECT seq, CONCAT(REPEAT('café ', 15), seq) FROM `{key_a}`.seq_1_to_1500; \
         ANALYZE TABLE `{key_a}`.wp_zz_bulk, `{key_a}`.wp_zz_latin"
    ));
    let dumped = tables_and_checksums(&key_a);

    // Back up; the archive is listed, on disk, with the size and checksum recorded.
    cli_ok(
        &d,
        &token,
        &["env", "backup", &a, "--description", "first", "--wait"],
    );
    let list = backups(&d, &token, &a);
    assert_eq!(list.len(), 1, "{list:?}");
    let first = &list[0];
    let first_id = first["id"].as_i64().unwrap().to_string();
    let path = first["path"].as_str().unwrap().to_string();
    assert!(
        path.starts_with(&state.path().display().to_string()),
        "{path}"
    );
    assert!(path.ends_with(".tar.zst"), "{path}");
    assert_eq!(first["reason"], "manual");
    assert_eq!(first["description"], "first");
    assert_eq!(
        first["size"].as_i64().unwrap() as u64,
        std::fs::metadata(&path).unwrap().len()
    );
    assert_eq!(first["sha256"].as_str().unwrap(), sha256_of(&path));
    let mut sql = Vec::new();
    aegird::backup::archive::read_database(
        Path::new(&path),
        aegird::backup::archive::Limits::for_archive(first["size"].as_u64().unwrap()),
        &mut sql,
    )
    .unwrap();
    let sql = String::from_utf8_lossy(&sql);
    let first_table = sql
        .split("CREATE TABLE `")
        .nth(1)
        .and_then(|rest| rest.split('`').next());
    assert_eq!(first_table, Some("wp_zz_bulk"), "the dump's first table");
    assert!(json(&d, &token, &["env", "show", &a])["last_backup_at"].is_string());

    // Change the content, then restore: the original content is back, and the change gone.
    set_blogname(&key_a, "Changed");
    upload(&a, "note.txt", "after");
    upload(&a, "new.txt", "new");
    assert_eq!(title_of(&a).as_deref(), Some("Changed"));
    let out = cli_ok(&d, &token, &["env", "restore", &a, &first_id, "--wait"]);
    assert!(out.contains("switch"), "{out}");
    // Every table came back as it was dumped, definition and rows (checked before any page
    // load, which may write to the site's options): the statistics option the parallel load
    // paused is set back, and no table was loaded twice or missed.
    assert_eq!(tables_and_checksums(&key_a), dumped);
    assert_eq!(title_of(&a), Some(original.clone()));
    let tables = dumped.lines().take_while(|l| !l.is_empty()).count();
    assert!(
        out.contains(&format!("{tables} tables loaded on ")),
        "{tables} tables: {out}"
    );
    assert!(out.contains("set back automatic statistics"), "{out}");
    let as_text = out
        .lines()
        .find(|l| l.contains("as LOAD DATA text"))
        .unwrap_or_else(|| panic!("no rows loaded as text: {out}"));
    assert!(
        as_text.contains("wp_zz_bulk") && as_text.contains("wp_zz_latin"),
        "{as_text}"
    );
    let (status, page) = http_get(&a, "/wp-content/uploads/note.txt");
    assert_eq!(status, 200, "{page}");
    assert!(page.ends_with("before"), "{page}");
    assert_eq!(http_get(&a, "/wp-content/uploads/new.txt").0, 404);
    no_restore_leftovers(&a, &key_a);
    // The restore took a pre-restore backup of what it replaced.
    let list = backups(&d, &token, &a);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["reason"], "pre-restore");
    // The site's own database user still reaches its (restored) tables.
    let secrets: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/var/aegir/sites/{a}/secrets.json")).unwrap(),
    )
    .unwrap();
    let out = Command::new("mariadb")
        .args(["-N", "-B", "-h", "localhost", "-u", &key_a])
        .arg(format!("-p{}", secrets["db_password"].as_str().unwrap()))
        .args(["-e", &format!("SELECT COUNT(*) FROM `{key_a}`.wp_options")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Verify, with a restore test: every checksum checks out, the throwaway database goes.
    let out = cli_ok(
        &d,
        &token,
        &["backup", "verify", &first_id, "--restore-test", "--wait"],
    );
    assert!(out.contains("is intact"), "{out}");
    assert!(out.contains("restore test"), "{out}");
    no_restore_leftovers(&a, &key_a);
    // Download through the API: the same bytes.
    let dl = tempfile::tempdir().unwrap();
    let dest = dl.path().join("a.tar.zst").display().to_string();
    cli_ok(&d, &token, &["backup", "download", &first_id, "-o", &dest]);
    assert_eq!(sha256_of(&dest), first["sha256"].as_str().unwrap());
    // A damaged archive fails verify, naming what is wrong.
    let damaged = format!("{path}.copy");
    std::fs::copy(&path, &damaged).unwrap();

    // Clone: a new site on its own URL with the source's content, its URL rewritten in the
    // database; the source unchanged.
    let out = cli_ok(&d, &token, &["env", "clone", &a, &b, "--wait"]);
    assert!(out.contains(&format!("rewriting {a} to {b}")), "{out}");
    let key_b = json(&d, &token, &["env", "show", &b])["db_name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(key_a, key_b);
    assert_eq!(title_of(&b), Some(original.clone()));
    assert_eq!(option(&key_b, "siteurl"), format!("http://{b}"));
    assert_eq!(option(&key_b, "home"), format!("http://{b}"));
    assert_eq!(option(&key_a, "siteurl"), format!("http://{a}"));
    let (_, page) = http_get(&b, "/");
    assert!(page.contains(&format!("http://{b}/")), "{page}");
    assert!(!page.contains(&format!("http://{a}/")), "{page}");
    let (status, page) = http_get(&b, "/wp-content/uploads/note.txt");
    assert_eq!(status, 200, "{page}");
    set_blogname(&key_b, "Clone");
    assert_eq!(title_of(&b).as_deref(), Some("Clone"));
    assert_eq!(
        title_of(&a),
        Some(original.clone()),
        "the source is untouched"
    );
    assert_eq!(backups(&d, &token, &a)[0]["reason"], "pre-clone");

    // An Aegir 3 tarball, made the way Aegir 3 makes it: mysqldump into the site directory,
    // then `tar czf` run inside it.
    let a3 = tempfile::tempdir().unwrap();
    let site_dir = a3.path().join("site");
    std::fs::create_dir_all(site_dir.join("files/2024")).unwrap();
    std::fs::create_dir_all(site_dir.join("private/files")).unwrap();
    set_blogname(&key_a, "From Aegir 3");
    let dump = Command::new("mysqldump")
        .args(["--single-transaction", "--quick", "--no-autocommit", &key_a])
        .output()
        .unwrap();
    assert!(dump.status.success());
    std::fs::write(site_dir.join("database.sql"), &dump.stdout).unwrap();
    std::fs::write(site_dir.join("settings.php"), "<?php // Aegir 3's\n").unwrap();
    std::fs::write(site_dir.join("drushrc.php"), "<?php $options = [];\n").unwrap();
    std::fs::write(site_dir.join("files/2024/aegir3.txt"), "from aegir 3").unwrap();
    std::fs::write(site_dir.join("private/files/secret.txt"), "private").unwrap();
    let tarball = a3.path().join(format!("{a}-20240131.120000.tar.gz"));
    let tar = Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg(".")
        .current_dir(&site_dir)
        .status()
        .unwrap();
    assert!(tar.success());
    set_blogname(&key_a, "Before the Aegir 3 restore");
    let out = cli_ok(
        &d,
        &token,
        &[
            "env",
            "restore",
            &a,
            "--file",
            tarball.to_str().unwrap(),
            "--wait",
        ],
    );
    assert!(out.contains("not restored: ./settings.php"), "{out}");
    assert_eq!(title_of(&a).as_deref(), Some("From Aegir 3"));
    let (status, page) = http_get(&a, "/wp-content/uploads/2024/aegir3.txt");
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        std::fs::read_to_string(format!("/var/aegir/sites/{a}/private/files/secret.txt")).unwrap(),
        "private"
    );
    no_restore_leftovers(&a, &key_a);
    assert!(backups(&d, &token, &a)
        .iter()
        .any(|b| b["format"] == "aegir3" && b["reason"] == "imported"));

    // A hostile tarball is refused, names its offending member, and changes nothing.
    let evil_dir = a3.path().join("evil");
    std::fs::create_dir_all(evil_dir.join("files")).unwrap();
    std::fs::write(evil_dir.join("database.sql"), &dump.stdout).unwrap();
    let escape = format!("/var/aegir/sites/escaped-{}.txt", unique("x"));
    let evil = a3.path().join(format!("{a}-20240201.120000.tar.gz"));
    let py = format!(
        "import tarfile, io\n\
         t = tarfile.open('{evil}', 'w:gz')\n\
         t.add('{dir}/database.sql', arcname='./database.sql')\n\
         data = b'escaped'\n\
         i = tarfile.TarInfo('./files/../../{name}')\n\
         i.size = len(data)\n\
         t.addfile(i, io.BytesIO(data))\n\
         t.close()\n",
        evil = evil.display(),
        dir = evil_dir.display(),
        name = Path::new(&escape).file_name().unwrap().to_string_lossy(),
    );
    assert!(Command::new("python3")
        .args(["-c", &py])
        .status()
        .unwrap()
        .success());
    let (code, out, err) = run_cli(
        &d,
        &token,
        &[
            "env",
            "restore",
            &a,
            "--file",
            evil.to_str().unwrap(),
            "--wait",
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(".."), "the error names the member: {out}");
    assert!(!Path::new(&escape).exists(), "{escape} was written");
    assert_eq!(title_of(&a).as_deref(), Some("From Aegir 3"));
    no_restore_leftovers(&a, &key_a);

    // A damaged archive is caught by verify.
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (code, out, _) = run_cli(&d, &token, &["backup", "verify", &first_id, "--wait"]);
    assert_eq!(code, 1, "{out}");
    std::fs::rename(&damaged, &path).unwrap();

    // Backup delete removes the archive and the listing.
    cli_ok(&d, &token, &["backup", "delete", &first_id, "--wait"]);
    assert!(!Path::new(&path).exists());
    assert!(backups(&d, &token, &a)
        .iter()
        .all(|b| b["id"].as_i64().unwrap().to_string() != first_id));

    // Delete takes a pre-delete backup first (unless told not to), then leaves nothing.
    cli_ok(&d, &token, &["env", "delete", &a, "--wait"]);
    let all = json(&d, &token, &["backup", "list"]);
    let pre_delete: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["environment"] == a.as_str() && b["reason"] == "pre-delete")
        .collect();
    assert_eq!(pre_delete.len(), 1, "{all}");
    assert!(Path::new(pre_delete[0]["path"].as_str().unwrap()).exists());
    cli_ok(
        &d,
        &token,
        &["env", "delete", &b, "--skip-backup", "--wait"],
    );
    assert!(!json(&d, &token, &["backup", "list"])
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["environment"] == b.as_str() && x["reason"] == "pre-delete"));
    for (uri, key) in [(&a, &key_a), (&b, &key_b)] {
        assert_eq!(site_leftovers(uri, key, None), Vec::<String>::new());
    }
}

/// A stand-in `name` in front of the real one: it sleeps `secs` seconds when its arguments
/// match `when` (a shell `case` pattern), so a step is reliably mid-way when the test acts.
fn slow_tool(dir: &Path, name: &str, when: &str, secs: u32) -> String {
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let script = dir.join(name);
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncase \"$*\" in {when}) sleep {secs} ;; esac\nexec {real} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn kill_and_restart(d: &mut Daemon, state: &Path) -> Daemon {
    d.signal(libc::SIGKILL);
    d.child.wait().unwrap();
    Daemon::start(state, &DaemonOpts::default())
}

#[test]
fn sigkill_during_backup_records_nothing_and_leaves_no_temporary_file() {
    let state = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let opts = DaemonOpts {
        env: vec![("PATH".into(), slow_tool(tools.path(), "tar", "*-c*", 30))],
        ..DaemonOpts::default()
    };
    let mut d = Daemon::start(state.path(), &opts);
    let token = d.token("test", None);
    setup(&d, &token, "wp-kill-b");
    let uri = format!("{}.test", unique("kill-b"));
    let key = create_site(&d, &token, "wp-kill-b", &uri, "Killed backup");
    let op = json(&d, &token, &["env", "backup", &uri])["id"]
        .as_i64()
        .unwrap();
    wait_task_running(&d, &token, op, "backup");
    // The database part is written; tar (the stand-in) is still asleep.
    let backups_dir = state.path().join("backups");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(&backups_dir)
        .map(|mut r| {
            r.any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".partial")
            })
        })
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "no partial archive appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    let d = kill_and_restart(&mut d, state.path());
    let end = wait_final(&d, &token, op);
    assert_eq!(end["status"], "interrupted", "{end}");
    assert_eq!(json(&d, &token, &["backup", "list"]), serde_json::json!([]));
    let left: Vec<String> = std::fs::read_dir(&backups_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "files left in the backups directory"
    );
    cli_ok(
        &d,
        &token,
        &["env", "delete", &uri, "--skip-backup", "--wait"],
    );
    assert_eq!(site_leftovers(&uri, &key, None), Vec::<String>::new());
}

#[test]
fn sigkill_during_restore_leaves_the_site_serving_its_content() {
    let state = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("test", None);
    setup(&d, &token, "wp-kill-r");
    let uri = format!("{}.test", unique("kill-r"));
    let key = create_site(&d, &token, "wp-kill-r", &uri, "Backed up");
    upload(&uri, "note.txt", "backed up");
    cli_ok(&d, &token, &["env", "backup", &uri, "--wait"]);
    let id = backups(&d, &token, &uri)[0]["id"].as_i64().unwrap();
    set_blogname(&key, "Current");
    upload(&uri, "note.txt", "current");

    // Restart with an import that stalls before it reads the staged database's SQL.
    d.signal(libc::SIGTERM);
    d.child.wait().unwrap();
    let opts = DaemonOpts {
        env: vec![(
            "PATH".into(),
            slow_tool(tools.path(), "mariadb", "*__new", 30),
        )],
        ..DaemonOpts::default()
    };
    let mut d = Daemon::start(state.path(), &opts);
    let op = json(&d, &token, &["env", "restore", &uri, &id.to_string()])["id"]
        .as_i64()
        .unwrap();
    wait_task_running(&d, &token, op, "stage");
    // The site shows its disabled page while its content is replaced.
    assert_eq!(http_get(&uri, "/").0, 503);
    let d = kill_and_restart(&mut d, state.path());
    let end = wait_final(&d, &token, op);
    assert_eq!(end["status"], "interrupted", "{end}");
    assert_eq!(title_of(&uri).as_deref(), Some("Current"));
    let (status, page) = http_get(&uri, "/wp-content/uploads/note.txt");
    assert_eq!(status, 200, "{page}");
    assert!(page.ends_with("current"), "{page}");
    no_restore_leftovers(&uri, &key);
    // The pre-restore backup of the interrupted restore is not kept as good.
    let list = backups(&d, &token, &uri);
    assert_eq!(list.len(), 1, "{list:?}");
    // And the restore works when let run.
    cli_ok(
        &d,
        &token,
        &["env", "restore", &uri, &id.to_string(), "--wait"],
    );
    assert_eq!(title_of(&uri).as_deref(), Some("Backed up"));
    cli_ok(
        &d,
        &token,
        &["env", "delete", &uri, "--skip-backup", "--wait"],
    );
    assert_eq!(site_leftovers(&uri, &key, None), Vec::<String>::new());
}

#[test]
fn scheduled_backups_run_are_pruned_and_failures_show() {
    let state = tempfile::tempdir().unwrap();
    let opts = DaemonOpts {
        env: vec![
            ("AEGIR_BACKUPS_INTERVAL".into(), "4s".into()),
            ("AEGIR_BACKUPS_CHECK_EVERY".into(), "1s".into()),
        ],
        ..DaemonOpts::default()
    };
    let d = Daemon::start(state.path(), &opts);
    let token = d.token("test", None);
    setup(&d, &token, "wp-sched");
    let uri = format!("{}.test", unique("sched"));
    let key = create_site(&d, &token, "wp-sched", &uri, "Scheduled");
    // Several scheduled backups run on their own; retention (newest per day, 7 days) keeps
    // one of them.
    let deadline = Instant::now() + Duration::from_secs(120);
    let scheduled_ops = || -> usize {
        let ops = json(&d, &token, &["op", "list", "--limit", "200"]);
        ops["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| {
                o["kind"] == "env.backup"
                    && o["target"]["name"] == uri.as_str()
                    && o["status"] == "succeeded"
            })
            .count()
    };
    while scheduled_ops() < 3 {
        assert!(Instant::now() < deadline, "scheduled backups did not run");
        std::thread::sleep(Duration::from_millis(500));
    }
    let list = backups(&d, &token, &uri);
    assert!(list.iter().all(|b| b["reason"] == "scheduled"), "{list:?}");
    assert_eq!(
        list.len(),
        1,
        "retention keeps the newest of the day: {list:?}"
    );
    let last = json(&d, &token, &["env", "show", &uri])["last_backup_at"].clone();
    assert!(last.is_string(), "{last}");

    // The environment's own retention: the three newest, whatever their day. A policy that
    // keeps nothing is refused and changes nothing.
    let keep_last = |n: &str| {
        let args = [
            "env",
            "retention",
            uri.as_str(),
            "--keep-last",
            n,
            "--keep-daily",
            "0",
            "--keep-weekly",
            "0",
            "--json",
        ];
        run_cli(&d, &token, &args)
    };
    let (code, _, err) = keep_last("0");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("keeps nothing"), "{err}");
    assert!(json(&d, &token, &["env", "show", &uri])["retention"].is_null());
    let (code, out, err) = keep_last("3");
    assert_eq!(code, 0, "{err}");
    let set: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        set["retention"],
        serde_json::json!({"last": 3, "daily": 0, "weekly": 0, "monthly": 0})
    );
    let done = scheduled_ops();
    while scheduled_ops() < done + 3 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "scheduled backups stopped"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let list = backups(&d, &token, &uri);
    assert_eq!(
        list.len(),
        3,
        "the environment's retention keeps three: {list:?}"
    );
    json(&d, &token, &["env", "retention", &uri, "--default"]);

    // A failing scheduled backup is a failed operation, and the last good one stays shown.
    mysql(&format!(
        "RENAME TABLE `{key}`.wp_options TO `{key}`.wp_options_x"
    ));
    mysql(&format!(
        "CREATE VIEW `{key}`.broken AS SELECT * FROM `{key}`.wp_options_x"
    ));
    mysql(&format!("DROP TABLE `{key}`.wp_options_x"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ops = json(&d, &token, &["op", "list", "--status", "failed"]);
        let failed = ops["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "env.backup" && o["target"]["name"] == uri.as_str());
        if failed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed scheduled backup: {ops}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The last good backup stays shown: the newest of the good ones (the failed one made
    // none, and earlier ones may have finished since `last` was read).
    let newest_good = backups(&d, &token, &uri)
        .iter()
        .filter(|b| b["status"] == "good")
        .filter_map(|b| b["created_at"].as_str().map(str::to_string))
        .max()
        .expect("good backups remain");
    let shown = json(&d, &token, &["env", "show", &uri])["last_backup_at"].clone();
    assert_eq!(shown, newest_good.as_str());
    assert!(shown.as_str() >= last.as_str(), "{shown} {last}");
    // Off for this environment: nothing more is queued.
    cli_ok(&d, &token, &["env", "schedule", &uri, "--off"]);
    let (code, _, err) = run_cli(&d, &token, &["env", "schedule", &uri, "--every", "5m"]);
    assert_eq!(code, 3, "an interval under an hour is refused: {err}");
    mysql(&format!("DROP VIEW `{key}`.broken"));
    cli_ok(
        &d,
        &token,
        &["env", "delete", &uri, "--skip-backup", "--wait"],
    );
    assert_eq!(site_leftovers(&uri, &key, None), Vec::<String>::new());
}
