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
    wp_config: Option<String>,
    db: String,
    sites: std::cell::RefCell<Vec<(String, String)>>,
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.include);
        if let Some(config) = &self.wp_config {
            let _ = std::fs::remove_file(config);
        }
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
    let wp_config = format!("/etc/wordpress/config-{config_name}.php");
    let outside = Outside {
        include: format!("/etc/nginx/conf.d/aegir3-test-{hex}.conf"),
        wp_config: Some(wp_config.clone()),
        db: key.clone(),
        sites: std::cell::RefCell::new(vec![(uri.clone(), key.clone())]),
    };
    std::fs::write(
        &wp_config,
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

/// A live Aegir 3-style Drupal 7 site, beside the shared fixture. Drupal cannot be had here:
/// the platform is the Drupal 7 fixture with a **stand-in front controller** (below, not
/// Drupal) that reads the site the way Drupal does. Everything around it is as Aegir 3 lays it
/// out: `sites/<uri>` in the platform with settings.php reading "cloaked" credentials from
/// the vhost's fastcgi parameters, drushrc.php, files, `private/files`, `private/temp`, a
/// module of the site's own and local.settings.php; the vhost passing `db_*`; the alias; the
/// hostmaster rows.
pub struct DrupalSite {
    pub uri: String,
    pub key: String,
    /// The platform's `sites` directory, where aegird must leave nothing once it is done.
    pub sites: std::path::PathBuf,
    pub site_path: String,
    /// Removes what the site put outside the Aegir root, when dropped.
    pub _outside: Outside,
}

/// Stand-in for Drupal 7's index.php: picks the site directory and loads its settings.php as
/// conf_path() and drupal_settings_initialize() do, connects with `$databases`, and shows the
/// site name from the database, a private file read through file_private_path, the site's
/// own module (from its directory) and what local.settings.php set.
const DRUPAL_STAND_IN: &str = r#"<?php
// Stand-in for Drupal 7's front controller, written by aegir's tests (not Drupal).
chdir(__DIR__);
$host = strtolower(preg_replace('/:\d+$/', '', $_SERVER['HTTP_HOST']));
$conf_path = is_file("sites/$host/settings.php") ? "sites/$host" : 'sites/default';
$databases = array();
$conf = array();
require "$conf_path/settings.php";
$db = $databases['default']['default'];
$port = empty($db['port']) ? 3306 : (int) $db['port'];
$link = mysqli_connect($db['host'], $db['username'], $db['password'], $db['database'], $port);
$name = mysqli_fetch_row(mysqli_query($link, "SELECT value FROM variable WHERE name = 'site_name'"))[0];
$private = $conf['file_private_path'];
if ($private[0] != '/') {
  $private = __DIR__ . "/$private";
}
if (is_file("$conf_path/modules/a3_custom/a3_custom.module")) {
  require "$conf_path/modules/a3_custom/a3_custom.module";
}
header('Content-Type: text/html; charset=utf-8');
echo '<!DOCTYPE html><title>' . htmlspecialchars($name) . "</title>\n";
echo '<p>private: ' . htmlspecialchars((string) @file_get_contents("$private/note.txt")) . "</p>\n";
echo '<p>module: ' . (function_exists('a3_custom_hello') ? a3_custom_hello() : 'missing') . "</p>\n";
echo '<p>local: ' . htmlspecialchars(isset($conf['a3_local']) ? $conf['a3_local'] : 'missing') . "</p>\n";
"#;

pub fn build_drupal_site(a3: &Aegir3, title: &str) -> DrupalSite {
    let hex = format!("{:08x}", rand::random::<u32>());
    let uri = format!("a3d7-{hex}.test");
    let key = format!("a3d7{hex}");
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let root = a3.root.path();
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(root.join("platforms")).unwrap();
    let platform = root.join("platforms/drupal7live");
    let status = Command::new("cp")
        .arg("-a")
        .arg(aegir_tests::fixture("drupal7"))
        .arg(&platform)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(platform.join("index.php"), DRUPAL_STAND_IN).unwrap();
    let sites = platform.join("sites");
    let site = sites.join(&uri);
    let site_path = site.display().to_string();
    let a3_site_path = format!("/var/aegir/platforms/drupal7live/sites/{uri}");
    for dir in ["private/files", "private/temp", "modules/a3_custom"] {
        std::fs::create_dir_all(site.join(dir)).unwrap();
    }
    // The public files live on "another disk", as some Aegir 3 installs keep them: files/ is
    // a symlink to them.
    let storage = root.join("storage").join(&uri);
    std::fs::create_dir_all(&storage).unwrap();
    std::os::unix::fs::symlink(&storage, site.join("files")).unwrap();
    std::fs::write(site.join("files/hello.txt"), "uploaded in Aegir 3\n").unwrap();
    std::fs::write(site.join("private/files/note.txt"), "private in Aegir 3").unwrap();
    std::fs::write(
        site.join("modules/a3_custom/a3_custom.info"),
        "name = A3 custom\ncore = 7.x\n",
    )
    .unwrap();
    std::fs::write(
        site.join("modules/a3_custom/a3_custom.module"),
        "<?php\nfunction a3_custom_hello() { return 'a3_custom is here'; }\n",
    )
    .unwrap();
    std::fs::write(
        site.join("local.settings.php"),
        "<?php\n$conf['a3_local'] = 'kept from Aegir 3';\n",
    )
    .unwrap();
    std::fs::write(
        site.join("settings.php"),
        format!(
            "<?php\n// As Aegir 3's provision writes it: credentials \"cloaked\" in the vhost.\n\
             if (isset($_SERVER['db_name'])) {{\n  $databases['default']['default'] = array(\n    \
             'driver' => $_SERVER['db_type'],\n    'database' => $_SERVER['db_name'],\n    \
             'username' => $_SERVER['db_user'],\n    'password' => $_SERVER['db_passwd'],\n    \
             'host' => $_SERVER['db_host'],\n    'port' => $_SERVER['db_port'],\n  );\n  \
             unset($_SERVER['db_type'], $_SERVER['db_name'], $_SERVER['db_user'], \
             $_SERVER['db_passwd'], $_SERVER['db_host'], $_SERVER['db_port']);\n}}\n\
             $conf['file_public_path'] = 'sites/{uri}/files';\n\
             $conf['file_private_path'] = 'sites/{uri}/private/files';\n\
             $conf['file_temporary_path'] = 'sites/{uri}/private/temp';\n\
             if (is_readable(__DIR__ . '/local.settings.php')) {{\n  \
             include_once __DIR__ . '/local.settings.php';\n}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        site.join("drushrc.php"),
        format!(
            "<?php \n$options['db_type'] = 'mysql';\n$options['db_host'] = 'localhost';\n\
             $options['db_port'] = '3306';\n$options['db_passwd'] = '{password}';\n\
             $options['db_name'] = '{key}';\n$options['db_user'] = '{key}';\n\
             $options['installed'] = true;\n"
        ),
    )
    .unwrap();
    for dir in ["files", "private"] {
        let chown = Command::new("chown")
            .args(["-R", "www-data:www-data"])
            // Through the files symlink to the directory it names.
            .arg(site.join(dir).join("."))
            .status()
            .unwrap();
        assert!(chown.success());
    }

    mysql(&format!(
        "CREATE DATABASE `{key}`; CREATE USER '{key}'@'localhost' IDENTIFIED BY '{password}'; \
         GRANT ALL ON `{key}`.* TO '{key}'@'localhost'; \
         CREATE TABLE `{key}`.variable (name VARCHAR(128) PRIMARY KEY, value LONGBLOB); \
         INSERT INTO `{key}`.variable VALUES ('site_name', '{title}');"
    ));
    let outside = Outside {
        include: format!("/etc/nginx/conf.d/aegir3-test-{hex}.conf"),
        wp_config: None,
        db: key.clone(),
        sites: std::cell::RefCell::new(vec![(uri.clone(), key.clone())]),
    };

    std::fs::write(
        root.join(format!(".drush/{uri}.alias.drushrc.php")),
        format!(
            "<?php \n$aliases['{uri}'] = array (\n  'context_type' => 'site',\n  \
             'platform' => '@platform_Drupal7live',\n  'server' => '@server_master',\n  \
             'db_server' => '@server_master',\n  'uri' => '{uri}',\n  \
             'root' => '/var/aegir/platforms/drupal7live',\n  'site_path' => '{a3_site_path}',\n  \
             'site_enabled' => true,\n  'language' => 'en',\n  'client_name' => 'admin',\n  \
             'aliases' => \n  array (\n  ),\n  'redirection' => false,\n  'cron_key' => '',\n  \
             'profile' => 'standard',\n  'drush_aliases' => \n  array (\n  ),\n);\n"
        ),
    )
    .unwrap();
    let vhost_dir = root.join("config/server_master/nginx/vhost.d");
    std::fs::create_dir_all(&vhost_dir).unwrap();
    let _ = std::fs::remove_file(vhost_dir.join("www.example.com"));
    std::fs::write(
        vhost_dir.join(&uri),
        format!(
            "server {{\n  listen 80;\n  server_name {uri};\n  root {platform};\n  \
             index index.php;\n  location ^~ /sites/{uri}/files/ {{ try_files $uri =404; }}\n  \
             location / {{ try_files $uri /index.php?$query_string; }}\n  \
             location ~ \\.php$ {{\n    try_files $uri =404;\n    include fastcgi_params;\n    \
             fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n    \
             fastcgi_param db_type mysql;\n    fastcgi_param db_name {key};\n    \
             fastcgi_param db_user {key};\n    fastcgi_param db_passwd {password};\n    \
             fastcgi_param db_host localhost;\n    fastcgi_param db_port 3306;\n    \
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

    a3.sql(&format!(
        "INSERT INTO node (nid, vid, type, language, title, uid, status, created, changed, comment, promote, sticky, tnid, translate) VALUES \
         (210, 210, 'platform', 'und', 'Drupal 7 live', 1, 1, 1707000000, 1707000000, 0, 0, 0, 0, 0), \
         (211, 211, 'package', 'und', 'drupal', 1, 1, 1707000000, 1707000000, 0, 0, 0, 0, 0), \
         (212, 212, 'site', 'und', '{uri}', 1, 1, 1707000000, 1707000000, 0, 0, 0, 0, 0); \
         INSERT INTO hosting_context (nid, name) VALUES (210, 'platform_Drupal7live'), (212, '{uri}'); \
         INSERT INTO hosting_platform (vid, nid, publish_path, makefile, web_server, verified, status, make_working_copy) VALUES \
         (210, 210, '/var/aegir/platforms/drupal7live', '', 2, 1707000000, 1, 0); \
         INSERT INTO hosting_package (vid, nid, package_type, short_name, old_short_name, description) VALUES \
         (211, 211, 'platform', 'drupal', '', 'Drupal core'); \
         INSERT INTO hosting_package_instance (rid, package_id, filename, schema_version, version, version_code, status, platform) VALUES \
         (210, 211, '', 0, '7.100', 0, 0, 210); \
         INSERT INTO hosting_site (vid, nid, client, db_server, db_name, platform, profile, language, last_cron, cron_key, verified, status) VALUES \
         (212, 212, 1, 2, '{key}', 210, 0, 'en', 0, '', 1707000000, 1);"
    ));
    DrupalSite {
        uri,
        key,
        sites,
        site_path,
        _outside: outside,
    }
}

/// What the Drupal stand-in shows when the site is served as Aegir 3 served it: its name
/// from its database, its private file, its own module and its local settings.
pub fn drupal_serves(uri: &str, title: &str) -> Result<(), String> {
    let (status, page) = http_get(uri, "/");
    let expected = [
        "private: private in Aegir 3",
        "module: a3_custom is here",
        "local: kept from Aegir 3",
    ];
    if status == 200
        && html_title(&page).as_deref() == Some(title)
        && expected.iter().all(|e| page.contains(e))
    {
        Ok(())
    } else {
        Err(format!("{status}: {}", &page[..page.len().min(400)]))
    }
}

#[test]
fn live_aegir3_drupal_site_is_taken_over_with_its_own_code_and_files() {
    let a3 = Aegir3::load();
    let title = "Drupal 7 under Aegir 3";
    let site = build_drupal_site(&a3, title);
    let uri = site.uri.clone();
    drupal_serves(&uri, title).unwrap();

    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("takeover", None);
    let (code, report) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{report:#}");
    let env = json(&d, &token, &["env", "show", &uri]);
    assert_eq!(env["managed_by"], "aegir3");
    assert_eq!(env["release"], "drupal-7-live");
    let release = json(&d, &token, &["release", "show", "drupal-7-live"]);
    assert_eq!(release["app_kind"], "drupal7", "{release:#}");

    let before = a3.fingerprint();
    cli_ok(&d, &token, &["env", "verify", &uri, "--wait"]);
    assert_eq!(a3.fingerprint(), before, "verify changed Aegir 3");
    cli_ok(&d, &token, &["server", "verify", "localhost", "--wait"]);

    // The takeover, while requests keep coming: not one may fail or miss a part of the page.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let looper = {
        let (stop, served, failures, uri) =
            (stop.clone(), served.clone(), failures.clone(), uri.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match drupal_serves(&uri, title) {
                    Ok(()) => {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures.lock().unwrap().push(e.replace("\r\n", " ")),
                }
            }
        })
    };
    // And while something else reloads nginx now and then, as another site's operation or an
    // admin may at any moment: no reload may pair aegird's vhost with Aegir 3's settings.php.
    let reloader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reloads = 0;
            while !stop.load(Ordering::SeqCst) && reloads < 100 {
                let _ = Command::new("nginx").args(["-s", "reload"]).status();
                reloads += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            reloads
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    cli_ok(&d, &token, &["env", "takeover", &uri, "--wait"]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    looper.join().unwrap();
    assert!(reloader.join().unwrap() > 4, "too few reloads ran");
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(served.load(Ordering::SeqCst) >= 5, "too few requests ran");

    // sites/<uri> is aegird's now: its settings.php, the files in aegird's directory, the
    // site's own code and local settings; Aegir 3's directory is kept aside whole.
    assert_eq!(
        json(&d, &token, &["env", "show", &uri])["managed_by"],
        "aegird"
    );
    let live = site.sites.join(&uri);
    assert_eq!(read(&live.join(".aegir-env")).trim(), site.key);
    assert!(read(&live.join("settings.php")).contains("Written by aegird"));
    assert!(!live.join("drushrc.php").exists());
    assert!(live.join("modules/a3_custom/a3_custom.module").exists());
    assert!(live.join("local.settings.php").exists());
    // The links that served Aegir 3's cached settings.php during the swap are gone.
    assert!(!live.join("private").exists());
    assert_eq!(
        std::fs::read_link(live.join("files")).unwrap(),
        Path::new(&format!("/var/aegir/sites/{uri}/files"))
    );
    // Aegir 3's files were behind a symlink: aegird's copy is a directory of its own.
    let ours = std::fs::symlink_metadata(format!("/var/aegir/sites/{uri}/files")).unwrap();
    assert!(ours.is_dir(), "aegird's files directory is a symlink");
    assert_eq!(
        read(Path::new(&format!(
            "/var/aegir/sites/{uri}/files/hello.txt"
        ))),
        "uploaded in Aegir 3\n"
    );
    let kept = format!("/var/aegir/sites/{uri}/.aegir3");
    assert!(read(Path::new(&format!("{kept}/site/settings.php"))).contains("db_passwd"));
    assert!(Path::new(&format!("{kept}/site/files/hello.txt")).exists());
    assert!(Path::new(&format!("{kept}/vhost")).exists());
    assert_eq!(
        read(Path::new(&format!(
            "/var/aegir/sites/{uri}/private/note.txt"
        ))),
        "private in Aegir 3"
    );
    let a3_vhost = a3
        .root
        .path()
        .join(format!("config/server_master/nginx/vhost.d/{uri}"));
    assert!(!a3_vhost.exists());
    assert!(!a3
        .root
        .path()
        .join(format!(".drush/{uri}.alias.drushrc.php"))
        .exists());
    let (status, body) = http_get(&uri, &format!("/sites/{uri}/files/hello.txt"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("uploaded in Aegir 3"));
    assert!(!Path::new(&site.site_path).join("drushrc.php").exists());

    // Every operation works on it now: back up, change, restore, clone, delete. The backup
    // carries the site's own code, so a restore brings it back as it was and a clone has it.
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
        "UPDATE `{}`.variable SET value = 'Changed after takeover' WHERE name = 'site_name'",
        site.key
    ));
    std::fs::remove_file(live.join("local.settings.php")).unwrap();
    std::fs::write(live.join("modules/added-after-backup.txt"), "new\n").unwrap();
    let (_, page) = http_get(&uri, "/");
    assert!(page.contains("local: missing"), "{page}");
    assert_eq!(html_title(&page).as_deref(), Some("Changed after takeover"));
    cli_ok(&d, &token, &["env", "restore", &uri, &ours, "--wait"]);
    drupal_serves(&uri, title).unwrap();
    assert!(live.join("local.settings.php").exists());
    assert!(!live.join("modules/added-after-backup.txt").exists());
    assert!(read(&live.join("settings.php")).contains("Written by aegird"));
    assert_eq!(read(&live.join(".aegir-env")).trim(), site.key);

    // An imported platform is new to aegird until verified, as any release is.
    cli_ok(
        &d,
        &token,
        &["release", "verify", "drupal-7-live", "--wait"],
    );
    let copy = format!("copy-{uri}");
    cli_ok(&d, &token, &["env", "clone", &uri, &copy, "--wait"]);
    drupal_serves(&copy, title).unwrap();
    drupal_serves(&uri, title).unwrap();
    let copy_dir = site.sites.join(&copy);
    assert!(copy_dir.join("modules/a3_custom/a3_custom.module").exists());
    assert!(read(&copy_dir.join("settings.php")).contains(&copy));
    let copy_key = json(&d, &token, &["env", "show", &copy])["db_name"]
        .as_str()
        .unwrap()
        .to_string();
    for (uri, key) in [(&copy, &copy_key), (&uri, &site.key)] {
        cli_ok(
            &d,
            &token,
            &["env", "delete", uri, "--skip-backup", "--wait"],
        );
        assert_eq!(
            site_leftovers(uri, key, Some(&site.sites)),
            Vec::<String>::new()
        );
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
