//! WordPress sites on this machine's real nginx, php-fpm and MariaDB, driven through the CLI
//! alone, locally and on a second host reached over SSH.

use std::time::Instant;

use aegir_tests::{
    cli_ok, group_id, html_title, http_get, run_cli, site_leftovers, unique, wordpress_release,
    Daemon, DaemonOpts, NetnsHost, WORDPRESS,
};
use serde_json::Value;

/// The key (database name) aegird gave an environment.
fn db_name(d: &Daemon, token: &str, uri: &str) -> String {
    let env: Value =
        serde_json::from_str(&cli_ok(d, token, &["env", "show", uri, "--json"])).unwrap();
    env["db_name"].as_str().expect("db_name").to_string()
}

#[test]
fn wordpress_sites_install_serve_disable_enable_log_in_and_delete() {
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("test", None);
    cli_ok(&d, &token, &["server", "add", "local", "--local"]);
    wordpress_release(&d, &token, "local", "wp-6");

    // One release, two environments, each with its own title and database.
    let a = format!("{}.test", unique("site-a"));
    let b = format!("{}.test", unique("site-b"));
    let (title_a, title_b) = (unique("Alpha"), unique("Beta"));
    let started = Instant::now();
    cli_ok(
        &d,
        &token,
        &[
            "env",
            "create",
            &a,
            "--release",
            "wp-6",
            "--title",
            &title_a,
            "--wait",
        ],
    );
    eprintln!(
        "one WordPress environment installed in {} ms",
        started.elapsed().as_millis()
    );
    cli_ok(
        &d,
        &token,
        &[
            "env",
            "create",
            &b,
            "--release",
            "wp-6",
            "--title",
            &title_b,
            "--alias",
            &format!("www.{b}"),
            "--redirect-aliases",
            "--wait",
        ],
    );
    let (key_a, key_b) = (db_name(&d, &token, &a), db_name(&d, &token, &b));
    assert_ne!(key_a, key_b);
    for (uri, title) in [(&a, &title_a), (&b, &title_b)] {
        let (status, page) = http_get(uri, "/");
        assert_eq!(status, 200, "{page}");
        assert_eq!(html_title(&page).as_deref(), Some(title.as_str()), "{uri}");
    }
    // The alias answers with a redirect to the site's own name.
    let (status, page) = http_get(&format!("www.{b}"), "/wp-login.php?x=1");
    assert_eq!(status, 301, "{page}");
    assert!(
        page.contains(&format!("Location: http://{b}/wp-login.php?x=1")),
        "{page}"
    );
    // Uploads are served from the site's files directory, which PHP can write to, so PHP
    // never runs from there.
    let uploads = format!("/var/aegir/sites/{a}/files");
    std::fs::write(format!("{uploads}/note.txt"), "uploaded").unwrap();
    std::fs::write(format!("{uploads}/evil.php"), "<?php echo 'ran' . 'php';").unwrap();
    let (status, page) = http_get(&a, "/wp-content/uploads/note.txt");
    assert_eq!(status, 200, "{page}");
    assert!(page.ends_with("uploaded"), "{page}");
    let (status, page) = http_get(&a, "/wp-content/uploads/evil.php");
    assert_eq!(status, 403, "{page}");
    assert!(!page.contains("ranphp"), "{page}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&uploads).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o2770, "files directory mode");
    let www_data = group_id("www-data");
    assert_eq!(meta.gid(), www_data, "files directory group");

    // Disabled: every path gets aegird's page with 503 and Retry-After; the other site is
    // untouched; enabled again, the site is back.
    cli_ok(&d, &token, &["env", "disable", &a, "--wait"]);
    for path in ["/", "/wp-login.php", "/?p=1"] {
        let (status, page) = http_get(&a, path);
        assert_eq!(status, 503, "{path}: {page}");
        assert!(page.contains("Retry-After: 3600"), "{page}");
        assert!(page.contains("Site disabled"), "{page}");
    }
    assert_eq!(http_get(&b, "/").0, 200);
    let (code, _, err) = run_cli(&d, &token, &["env", "login", &a]);
    assert_eq!(code, 3, "login on a disabled site is refused: {err}");
    cli_ok(&d, &token, &["env", "enable", &a, "--wait"]);
    let (status, page) = http_get(&a, "/");
    assert_eq!((status, html_title(&page)), (200, Some(title_a.clone())));

    // The one-time link logs in to wp-admin once; the same link fails the second time.
    let link = cli_ok(&d, &token, &["env", "login", &a]).trim().to_string();
    assert!(
        link.starts_with(&format!("http://{a}/?aegir-login=")),
        "{link}"
    );
    let path = &link[format!("http://{a}").len()..];
    let jar = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "-L", "--max-time", "30", "-c"])
        .arg(jar.path())
        .arg("-b")
        .arg(jar.path())
        .args(["-w", "\n%{http_code} %{url_effective}", "--resolve"])
        .arg(format!("{a}:80:127.0.0.1"))
        .arg(&link)
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    let last = body.lines().last().unwrap_or_default();
    assert_eq!(last, format!("200 http://{a}/wp-admin/"), "{body}");
    assert!(body.contains("Dashboard"), "not logged in:\n{body}");
    let (status, page) = http_get(&a, path);
    assert_eq!(status, 403, "a used link must not work again: {page}");
    // A link for one site does not open another.
    let other = cli_ok(&d, &token, &["env", "login", &b]).trim().to_string();
    let token_b = other.split("aegir-login=").nth(1).unwrap();
    assert_eq!(http_get(&a, &format!("/?aegir-login={token_b}")).0, 403);

    // Verify puts back what was changed by hand, and says so.
    let vhost = format!("/etc/aegir/nginx/vhosts/{a}.conf");
    let rendered = std::fs::read_to_string(&vhost).unwrap();
    std::fs::write(&vhost, format!("{rendered}# edited by hand\n")).unwrap();
    let out = cli_ok(&d, &token, &["env", "verify", &a, "--wait"]);
    assert!(out.contains("differed from what aegird renders"), "{out}");
    assert_eq!(std::fs::read_to_string(&vhost).unwrap(), rendered);
    let out = cli_ok(&d, &token, &["env", "verify", &a, "--wait"]);
    assert!(
        !out.contains("differed"),
        "a second verify finds no drift: {out}"
    );
    cli_ok(&d, &token, &["env", "cron", &a, "--wait"]);

    // Delete removes the database, its user, the vhost and the files; the record stays.
    assert!(!site_leftovers(&a, &key_a, None).is_empty());
    for (uri, key) in [(&a, &key_a), (&b, &key_b)] {
        cli_ok(&d, &token, &["env", "delete", uri, "--wait"]);
        assert_eq!(site_leftovers(uri, key, None), Vec::<String>::new());
        let (_, page) = http_get(uri, "/");
        assert!(!page.contains("Alpha") && !page.contains("Beta"), "{page}");
    }
    let list: Value =
        serde_json::from_str(&cli_ok(&d, &token, &["env", "list", "--json"])).unwrap();
    let statuses: Vec<(&str, &str)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["uri"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert!(statuses.contains(&(a.as_str(), "deleted")), "{statuses:?}");
    assert!(statuses.contains(&(b.as_str(), "deleted")), "{statuses:?}");
}

#[test]
fn bad_environment_requests_are_refused_and_change_nothing() {
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("test", None);
    cli_ok(&d, &token, &["server", "add", "local", "--local"]);
    let project = unique("wp");
    cli_ok(
        &d,
        &token,
        &["project", "add", &project, "--path", WORDPRESS],
    );
    cli_ok(
        &d,
        &token,
        &[
            "release",
            "create",
            "wp-new",
            "--project",
            &project,
            "--server",
            "local",
        ],
    );
    let uri = format!("{}.test", unique("refused"));
    // A release never verified: refused with what to do.
    let (code, _, err) = run_cli(&d, &token, &["env", "create", &uri, "--release", "wp-new"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("aegir release verify wp-new"), "{err}");
    // Verified release, but the server was never verified (no php-fpm known).
    cli_ok(&d, &token, &["release", "verify", "wp-new", "--wait"]);
    let (code, _, err) = run_cli(&d, &token, &["env", "create", &uri, "--release", "wp-new"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("aegir server verify local"), "{err}");
    let (code, _, err) = run_cli(
        &d,
        &token,
        &["env", "create", &uri, "--release", "wp-new", "--title", ""],
    );
    assert_eq!(code, 3, "{err}");
    let list: Value =
        serde_json::from_str(&cli_ok(&d, &token, &["env", "list", "--json"])).unwrap();
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "deleted"),
        "a refused create leaves no live environment: {list}"
    );
    assert!(!std::path::Path::new(&format!("/var/aegir/sites/{uri}")).exists());
}

/// The second host is a network namespace with its own sshd; it shares this machine's
/// files, nginx, php-fpm and MariaDB, so what aegird does there over SSH is seen here.
#[test]
fn wordpress_site_on_a_server_over_ssh() {
    let host = NetnsHost::start();
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("test", None);
    let added: Value = serde_json::from_str(&cli_ok(
        &d,
        &token,
        &[
            "server",
            "add",
            "remote",
            "--ssh",
            &format!("root@{}", host.addr),
            "--json",
        ],
    ))
    .unwrap();
    host.authorize(added["authorize_key"].as_str().unwrap());
    wordpress_release(&d, &token, "remote", "wp-remote");

    let uri = format!("{}.test", unique("ssh-site"));
    let title = unique("Remote");
    let out = cli_ok(
        &d,
        &token,
        &[
            "env",
            "create",
            &uri,
            "--release",
            "wp-remote",
            "--title",
            &title,
            "--wait",
        ],
    );
    assert!(out.contains("install WordPress"), "{out}");
    let key = db_name(&d, &token, &uri);
    let (status, page) = http_get(&uri, "/");
    assert_eq!((status, html_title(&page)), (200, Some(title)), "{page}");
    let out = cli_ok(&d, &token, &["env", "verify", &uri, "--wait"]);
    assert!(!out.contains("differed"), "{out}");
    cli_ok(&d, &token, &["env", "delete", &uri, "--wait"]);
    assert_eq!(site_leftovers(&uri, &key, None), Vec::<String>::new());
}
