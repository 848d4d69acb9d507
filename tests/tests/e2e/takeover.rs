//! A live Aegir 3-style WordPress site on this machine's nginx, php-fpm and MariaDB, beside
//! the shared fixture: its codebase and site directory under an Aegir root, its nginx vhost
//! in `config/server_master/nginx/vhost.d`, its credentials in its drushrc.php and its rows in
//! the hostmaster database. It is imported, verified where Aegir 3 keeps it (nothing
//! changes), taken over while a loop of HTTP requests runs (none may fail), then backed up
//! and restored by aegird; an Aegir 3 tarball of it restores into a new environment.
//!
//! Aegir 3 itself (Drupal 7, drush, provision) does not run here: the site is laid out and
//! served the way Aegir 3's nginx templates do, with WordPress in place of Drupal. That is
//! the stand-in.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aegir_tests::{cli_ok, html_title, http_get, mysql, site_leftovers, Daemon, DaemonOpts};
use serde_json::Value;

use crate::import::Aegir3;

fn json(d: &Daemon, token: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&cli_ok(d, token, &all)).unwrap()
}

fn reload_nginx() {
    let t = Command::new("nginx").arg("-t").output().unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let r = Command::new("nginx")
        .args(["-s", "reload"])
        .status()
        .unwrap();
    assert!(r.success());
    std::thread::sleep(Duration::from_millis(500));
}

fn php_fpm_socket() -> String {
    std::fs::read_dir("/run/php")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("php") && n.ends_with("-fpm.sock")
        })
        .expect("Debian's php-fpm socket in /run/php")
        .display()
        .to_string()
}

/// What the test put outside the Aegir root, removed whatever happens.
/// After a failure, aegird's side of the sites (named by uri and key) goes too.
pub struct Outside {
    include: String,
    wp_config: String,
    db: String,
    sites: std::cell::RefCell<Vec<(String, String)>>,
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.include);
        let _ = std::fs::remove_file(&self.wp_config);
        for (uri, key) in self.sites.borrow().iter() {
            let _ = std::fs::remove_file(format!("/etc/aegir/nginx/vhosts/{uri}.conf"));
            let _ = std::fs::remove_dir_all(format!("/var/aegir/sites/{uri}"));
            let _ = std::fs::remove_file(format!(
                "/etc/wordpress/config-aegir-{}.php",
                key.replace('_', "-")
            ));
            let _ = Command::new("mariadb")
                .args([
                    "-e",
                    &format!(
                        "DROP DATABASE IF EXISTS `{0}`; DROP DATABASE IF EXISTS `{0}__new`; \
                         DROP DATABASE IF EXISTS `{0}__old`; DROP USER IF EXISTS '{0}'@'localhost';",
                        key
                    ),
                ])
                .status();
        }
        let _ = Command::new("nginx").args(["-s", "reload"]).status();
        let _ = Command::new("mariadb")
            .args([
                "-e",
                &format!(
                    "DROP DATABASE IF EXISTS `{0}`; DROP USER IF EXISTS '{0}'@'localhost';",
                    self.db
                ),
            ])
            .status();
    }
}

/// The site, as Aegir 3 would have it: returns its uri, database (and user) name and site
/// directory.
pub fn build_site(a3: &Aegir3, title: &str) -> (String, String, String, Outside) {
    let hex = format!("{:08x}", rand::random::<u32>());
    let uri = format!("a3wp-{hex}.test");
    let key = format!("a3wp{hex}");
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let root = a3.root.path();
    // nginx's workers and php-fpm (www-data) read the codebase and serve the files.
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let platform = root.join("platforms/wordpress");
    let status = Command::new("cp")
        .args(["-as", aegir_tests::WORDPRESS])
        .arg(&platform)
        .status()
        .unwrap();
    assert!(status.success());
    let site_path = platform.join("sites").join(&uri);
    let files = site_path.join("files");
    std::fs::create_dir_all(&files).unwrap();
    Command::new("chown")
        .args(["-R", "www-data:www-data"])
        .arg(&files)
        .status()
        .unwrap();
    std::fs::write(files.join("hello.txt"), "uploaded in Aegir 3\n").unwrap();
    let site_path = site_path.display().to_string();
    let a3_site_path = format!("/var/aegir/platforms/wordpress/sites/{uri}");

    // Database and the site's own account.
    mysql(&format!(
        "CREATE DATABASE `{key}`; CREATE USER '{key}'@'localhost' IDENTIFIED BY '{password}'; \
         GRANT ALL ON `{key}`.* TO '{key}'@'localhost';"
    ));
    let config_name = format!("aegir3-{hex}");
    let outside = Outside {
        include: format!("/etc/nginx/conf.d/aegir3-test-{hex}.conf"),
        wp_config: format!("/etc/wordpress/config-{config_name}.php"),
        db: key.clone(),
        sites: std::cell::RefCell::new(vec![(uri.clone(), key.clone())]),
    };
    std::fs::write(
        &outside.wp_config,
        format!(
            "<?php\ndefine('DB_NAME', '{key}');\ndefine('DB_USER', '{key}');\n\
             define('DB_PASSWORD', '{password}');\ndefine('DB_HOST', 'localhost');\n\
             define('WP_HOME', 'http://{uri}');\ndefine('WP_SITEURL', 'http://{uri}');\n\
             $table_prefix = 'wp_';\n"
        ),
    )
    .unwrap();
    // WordPress installed by its own installer, its uploads in the site's files directory.
    let install = Command::new("php")
        .args([
            "--",
            &platform.display().to_string(),
            title,
            "admin@example.com",
        ])
        .arg(files.display().to_string())
        .arg(format!("http://{uri}/wp-content/uploads"))
        .env("HTTP_HOST", &uri)
        .env("WORDPRESS_CONFIG", &config_name)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(aegird::apps::wordpress::install_script().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        install.status.success(),
        "{}{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );

    // drushrc.php, the alias and the vhost, as provision writes them.
    std::fs::write(
        Path::new(&site_path).join("drushrc.php"),
        format!(
            "<?php \n$options['db_type'] = 'mysql';\n$options['db_host'] = 'localhost';\n\
             $options['db_port'] = '3306';\n$options['db_passwd'] = '{password}';\n\
             $options['db_name'] = '{key}';\n$options['db_user'] = '{key}';\n\
             $options['installed'] = true;\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join(format!(".drush/{uri}.alias.drushrc.php")),
        format!(
            "<?php \n$aliases['{uri}'] = array (\n  'context_type' => 'site',\n  \
             'platform' => '@platform_WordPress6',\n  'server' => '@server_master',\n  \
             'db_server' => '@server_master',\n  'uri' => '{uri}',\n  \
             'root' => '/var/aegir/platforms/wordpress',\n  'site_path' => '{a3_site_path}',\n  \
             'site_enabled' => true,\n  'language' => 'en',\n  'client_name' => 'admin',\n  \
             'aliases' => \n  array (\n  ),\n  'redirection' => false,\n  'cron_key' => '',\n  \
             'profile' => 'standard',\n  'drush_aliases' => \n  array (\n  ),\n);\n"
        ),
    )
    .unwrap();
    let vhost_dir = root.join("config/server_master/nginx/vhost.d");
    std::fs::create_dir_all(&vhost_dir).unwrap();
    // The fixture's own vhost names a site this machine does not serve.
    let _ = std::fs::remove_file(vhost_dir.join("www.example.com"));
    std::fs::write(
        vhost_dir.join(&uri),
        format!(
            "server {{\n  listen 80;\n  server_name {uri};\n  root {platform};\n  \
             index index.php;\n  location ^~ /wp-content/uploads/ {{ alias {site_path}/files/; }}\n  \
             location ^~ /wp-content/ {{ alias /var/lib/wordpress/wp-content/; }}\n  \
             location / {{ try_files $uri $uri/ /index.php?$args; }}\n  \
             location ~ \\.php$ {{\n    try_files $uri =404;\n    include fastcgi_params;\n    \
             fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n    \
             fastcgi_param WORDPRESS_CONFIG {config_name};\n    \
             fastcgi_pass unix:{sock};\n  }}\n}}\n",
            platform = platform.display(),
            sock = php_fpm_socket(),
        ),
    )
    .unwrap();
    std::fs::write(
        &outside.include,
        format!("include {}/*;\n", vhost_dir.display()),
    )
    .unwrap();
    reload_nginx();

    // Its rows in the hostmaster: a platform with WordPress as its core package, and the site.
    a3.sql(&format!(
        "INSERT INTO node (nid, vid, type, language, title, uid, status, created, changed, comment, promote, sticky, tnid, translate) VALUES \
         (200, 200, 'platform', 'und', 'WordPress 6', 1, 1, 1707000000, 1707000000, 0, 0, 0, 0, 0), \
         (201, 201, 'package', 'und', 'wordpress', 1, 1, 1707000000, 1707000000, 0, 0, 0, 0, 0), \
         (202, 202, 'site', 'und', '{uri}', 1, 1, 1707000000, 1707000000, 0, 0, 0, 0, 0); \
         INSERT INTO hosting_context (nid, name) VALUES (200, 'platform_WordPress6'), (202, '{uri}'); \
         INSERT INTO hosting_platform (vid, nid, publish_path, makefile, web_server, verified, status, make_working_copy) VALUES \
         (200, 200, '/var/aegir/platforms/wordpress', '', 2, 1707000000, 1, 0); \
         INSERT INTO hosting_package (vid, nid, package_type, short_name, old_short_name, description) VALUES \
         (201, 201, 'platform', 'wordpress', '', 'WordPress core'); \
         INSERT INTO hosting_package_instance (rid, package_id, filename, schema_version, version, version_code, status, platform) VALUES \
         (200, 201, '', 0, '6.1', 0, 0, 200); \
         INSERT INTO hosting_site (vid, nid, client, db_server, db_name, platform, profile, language, last_cron, cron_key, verified, status) VALUES \
         (202, 202, 1, 2, '{key}', 200, 0, 'en', 0, '', 1707000000, 1);"
    ));
    (uri, key, site_path, outside)
}

fn title(uri: &str) -> Option<String> {
    let (status, page) = http_get(uri, "/");
    assert_eq!(status, 200, "{uri}: {page}");
    html_title(&page)
}

#[test]
fn live_aegir3_site_is_imported_verified_taken_over_backed_up_and_restored() {
    let a3 = Aegir3::load();
    let (uri, key, site_path, outside) = build_site(&a3, "Served by Aegir 3");
    assert_eq!(title(&uri).as_deref(), Some("Served by Aegir 3"));
    let (status, body) = http_get(&uri, "/wp-content/uploads/hello.txt");
    assert_eq!(status, 200, "{body}");

    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("takeover", None);
    let (code, report) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{report:#}");
    let env = json(&d, &token, &["env", "show", &uri]);
    assert_eq!(env["managed_by"], "aegir3");
    assert_eq!(env["release"], "wordpress-6");
    assert_eq!(env["db_name"], key.as_str());

    // Verify where Aegir 3 keeps it changes nothing there.
    let before = a3.fingerprint();
    cli_ok(&d, &token, &["env", "verify", &uri, "--wait"]);
    let ops = json(&d, &token, &["op", "list"]);
    let verify = ops["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "env.verify" && o["target"]["name"] == uri.as_str())
        .expect("the verify operation")
        .clone();
    assert_eq!(verify["status"], "succeeded", "{verify:#}");
    let id = verify["id"].to_string();
    let logs = json(&d, &token, &["op", "logs", &id]).to_string();
    assert!(logs.contains("answers with"), "{logs}");
    assert_eq!(a3.fingerprint(), before, "verify changed Aegir 3");
    assert!(!Path::new(&format!("/var/aegir/sites/{uri}")).exists());

    // aegird needs its own nginx include and php-fpm pool on the server before it serves.
    cli_ok(&d, &token, &["server", "verify", "localhost", "--wait"]);

    // Take it over while requests keep coming: not one may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let looper = {
        let (stop, served, failures, uri) =
            (stop.clone(), served.clone(), failures.clone(), uri.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let (status, page) = http_get(&uri, "/");
                if status == 200 && html_title(&page).as_deref() == Some("Served by Aegir 3") {
                    served.fetch_add(1, Ordering::SeqCst);
                } else {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{status}: {}", &page[..page.len().min(300)]));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    cli_ok(&d, &token, &["env", "takeover", &uri, "--wait"]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    looper.join().unwrap();
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(served.load(Ordering::SeqCst) >= 5, "too few requests ran");

    // aegird's now: its vhost serves, Aegir 3's vhost and alias are set aside, uploads moved.
    let env = json(&d, &token, &["env", "show", &uri]);
    assert_eq!(env["managed_by"], "aegird");
    assert!(Path::new(&format!("/etc/aegir/nginx/vhosts/{uri}.conf")).exists());
    let a3_vhost = a3
        .root
        .path()
        .join(format!("config/server_master/nginx/vhost.d/{uri}"));
    assert!(!a3_vhost.exists());
    assert!(Path::new(&format!("/var/aegir/sites/{uri}/.aegir3/vhost")).exists());
    assert!(!a3
        .root
        .path()
        .join(format!(".drush/{uri}.alias.drushrc.php"))
        .exists());
    assert_eq!(title(&uri).as_deref(), Some("Served by Aegir 3"));
    let (status, body) = http_get(&uri, "/wp-content/uploads/hello.txt");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("uploaded in Aegir 3"));
    let upload_path = mysql(&format!(
        "SELECT option_value FROM `{key}`.wp_options WHERE option_name = 'upload_path'"
    ));
    assert_eq!(upload_path.trim(), format!("/var/aegir/sites/{uri}/files"));
    // Aegir 3's copy of the files is left where it was.
    assert!(Path::new(&site_path).join("files/hello.txt").exists());

    // A later import leaves it alone.
    let (code, again) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{again:#}");
    let item = again["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["label"] == uri.as_str() && i["kind"] == "environment")
        .unwrap()
        .clone();
    assert!(
        item["outcome"] == "unchanged" || item["outcome"] == "skipped",
        "{item:#}"
    );
    assert_eq!(
        json(&d, &token, &["env", "show", &uri])["managed_by"],
        "aegird"
    );

    // Every operation works on it now: back up, change, restore.
    cli_ok(&d, &token, &["env", "backup", &uri, "--wait"]);
    let backups = json(&d, &token, &["backup", "list", &uri]);
    let ours = backups
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["format"] == "aegir")
        .expect("an aegird backup")["id"]
        .to_string();
    mysql(&format!(
        "UPDATE `{key}`.wp_options SET option_value = 'Changed after takeover' WHERE option_name = 'blogname'"
    ));
    assert_eq!(title(&uri).as_deref(), Some("Changed after takeover"));
    cli_ok(&d, &token, &["env", "restore", &uri, &ours, "--wait"]);
    assert_eq!(title(&uri).as_deref(), Some("Served by Aegir 3"));

    // An Aegir 3 tarball of the site (its directory with database.sql at the top) restores
    // into a new environment.
    let tar_dir = tempfile::tempdir().unwrap();
    let dump = Command::new("mariadb-dump")
        .args(["--single-transaction", &key])
        .output()
        .unwrap();
    assert!(dump.status.success());
    std::fs::write(Path::new(&site_path).join("database.sql"), &dump.stdout).unwrap();
    let tarball = tar_dir.path().join(format!("{uri}-20240201.020000.tar.gz"));
    let status = Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&site_path)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(Path::new(&site_path).join("database.sql")).unwrap();
    let copy = format!("copy-{uri}");
    // A platform Aegir 3 verified is new to aegird until aegird reads it too.
    cli_ok(&d, &token, &["release", "verify", "wordpress-6", "--wait"]);
    cli_ok(
        &d,
        &token,
        &[
            "env",
            "create",
            &copy,
            "--release",
            "wordpress-6",
            "--title",
            "Fresh",
            "--wait",
        ],
    );
    assert_eq!(title(&copy).as_deref(), Some("Fresh"));
    cli_ok(
        &d,
        &token,
        &[
            "env",
            "restore",
            &copy,
            "--file",
            tarball.to_str().unwrap(),
            "--wait",
        ],
    );
    assert_eq!(title(&copy).as_deref(), Some("Served by Aegir 3"));
    let copy_key = json(&d, &token, &["env", "show", &copy])["db_name"]
        .as_str()
        .unwrap()
        .to_string();
    outside
        .sites
        .borrow_mut()
        .push((copy.clone(), copy_key.clone()));

    // Deleting both leaves nothing of aegird's behind.
    for u in [&uri, &copy] {
        cli_ok(&d, &token, &["env", "delete", u, "--skip-backup", "--wait"]);
    }
    // (Checked once both are gone: the copy's names contain the original's uri.)
    for (u, k) in [(&uri, &key), (&copy, &copy_key)] {
        assert_eq!(site_leftovers(u, k, None), Vec::<String>::new());
    }
}
