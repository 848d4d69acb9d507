//! An Aegir 3 installation to import: the shared fixture (read from ../shared/aegir3 at run
//! time) loaded into this machine's MariaDB under a name of its own, its alias and drushrc
//! files laid out as an Aegir root in a temporary directory; optionally grown by generated
//! sites (for the import benchmark).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{mysql, run_cli, Daemon};

pub const SOCKET: &str = "/run/mysqld/mysqld.sock";

/// The shared fixture directory (REFERENCE.md, aegir3_fixture.sql, drush/, site_drushrc/).
pub fn fixture_dir() -> PathBuf {
    let beside = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/aegir3");
    std::env::var("AEGIR3_FIXTURE_DIR")
        .ok()
        .into_iter()
        .chain([beside.to_string(), "/work/shared/aegir3".to_string()])
        .map(PathBuf::from)
        .find(|d| d.join("drush").is_dir())
        .expect("the Aegir 3 fixture is not at $AEGIR3_FIXTURE_DIR, ../shared/aegir3 or /work/shared/aegir3")
}

/// One Aegir 3 installation for a test: the fixture database under a name of its own and an
/// Aegir root in a temporary directory; the database is dropped afterwards.
pub struct Aegir3 {
    pub db: String,
    pub root: tempfile::TempDir,
}

impl Aegir3 {
    pub fn load() -> Aegir3 {
        let fixture = fixture_dir();
        let db = format!("aegir3_import_{:08x}", rand::random::<u32>());
        mysql(&format!("CREATE DATABASE `{db}`"));
        let sql = std::fs::File::open(fixture.join("aegir3_fixture.sql")).unwrap();
        let status = Command::new("mariadb")
            .arg(&db)
            .stdin(sql)
            .status()
            .unwrap();
        assert!(status.success(), "loading the fixture failed");
        let me = Aegir3 {
            db,
            root: tempfile::tempdir().unwrap(),
        };
        me.lay_out(&fixture);
        me
    }

    /// An Aegir 3 path (`/var/aegir/...`) inside this root.
    pub fn path(&self, aegir3_path: &str) -> PathBuf {
        let rest = aegir3_path
            .strip_prefix("/var/aegir/")
            .unwrap_or(aegir3_path);
        self.root.path().join(rest)
    }

    fn put(&self, aegir3_path: &str, content: &[u8]) {
        let p = self.path(aegir3_path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// The alias files, each live site's drushrc.php under its site_path, the platforms'
    /// directories, six of the seven backup tarballs (legacy.example.org's is missing), and
    /// www.example.com's nginx vhost and certificate.
    fn lay_out(&self, fixture: &Path) {
        let drush = self.root.path().join(".drush");
        std::fs::create_dir_all(&drush).unwrap();
        for entry in std::fs::read_dir(fixture.join("drush")).unwrap() {
            let entry = entry.unwrap();
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(drush.join(entry.file_name()), &text).unwrap();
            let site_path = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("'site_path' => '"))
                .map(|rest| rest.trim_end_matches("',").to_string());
            let uri = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("'uri' => '"))
                .map(|rest| rest.trim_end_matches("',").to_string());
            if let (Some(site_path), Some(uri)) = (site_path, uri) {
                let rc = std::fs::read(
                    fixture
                        .join("site_drushrc")
                        .join(format!("{uri}.drushrc.php")),
                )
                .unwrap();
                self.put(&format!("{site_path}/drushrc.php"), &rc);
                self.put(&format!("{site_path}/files/.keep"), b"");
            }
        }
        for platform in [
            "/var/aegir/platforms/drupal-7.100",
            "/var/aegir/platforms/drupal-9.5.11/web",
            "/var/aegir/platforms/drupal-10.2.6/web",
        ] {
            self.put(&format!("{platform}/index.php"), b"<?php\n");
        }
        for tarball in [
            "www.example.com-20240115.101500",
            "blog.example.com-20240116.020312",
            "old.example.com-20240120.140000",
            "www.example.com-20240122.110000",
            "www.example.com-20240125.090000",
            "www.example.com-20240201.020000",
        ] {
            self.put(
                &format!("/var/aegir/backups/{tarball}.tar.gz"),
                b"not read by an import",
            );
        }
        self.put(
            "/var/aegir/config/server_master/nginx/vhost.d/www.example.com",
            b"server { server_name www.example.com; }\n",
        );
        self.put(
            "/var/aegir/config/server_master/ssl.d/www.example.com/openssl.crt",
            b"certificate",
        );
        self.put(
            "/var/aegir/config/server_master/ssl.d/www.example.com/openssl.key",
            b"key",
        );
    }

    /// Adds `count` live sites on the fixture's Drupal 10 platform, each as Aegir 3 would
    /// have it: its node, context and site rows, an alias file, a drushrc.php, one backup
    /// tarball (row and file) and three finished verify tasks of three log lines each.
    /// Returns how many objects an import then reports.
    pub fn generate_sites(&self, count: usize) -> usize {
        const PLATFORM: &str = "/var/aegir/platforms/drupal-10.2.6/web";
        const T: u64 = 1_706_000_000;
        let mut sql = String::from("SET autocommit = 0;\n");
        for i in 0..count {
            let nid = 100_000 + i * 10;
            let uri = format!("gen{i:05}.example.net");
            let db = format!("gen{i:05}examplenet");
            let site_path = format!("{PLATFORM}/sites/{uri}");
            let tarball = format!("/var/aegir/backups/{uri}-20240201.020000.tar.gz");
            sql += &format!(
                "INSERT INTO node (nid, vid, type, language, title, uid, status, created, changed, comment, promote, sticky, tnid, translate) VALUES ({nid}, {nid}, 'site', 'und', '{uri}', 1, 1, {T}, {T}, 0, 0, 0, 0, 0);\n\
                 INSERT INTO node_revision (nid, vid, uid, title, log, timestamp, status, comment, promote, sticky) VALUES ({nid}, {nid}, 1, '{uri}', '', {T}, 1, 0, 0, 0);\n\
                 INSERT INTO hosting_context (nid, name) VALUES ({nid}, '{uri}');\n\
                 INSERT INTO hosting_site (vid, nid, client, db_server, db_name, platform, profile, language, last_cron, cron_key, verified, status) VALUES ({nid}, {nid}, 1, 2, '{db}', 9, 5, 'en', {T}, 'cron{nid}', {T}, 1);\n\
                 INSERT INTO hosting_site_backups (bid, site, web_server, description, filename, size, timestamp) VALUES ({nid}, {nid}, 2, 'Automated backup', '{tarball}', 1000, {T});\n"
            );
            for k in 1..=3 {
                let (tnid, tvid) = (nid + k, 10_000_000 + nid + k);
                sql += &format!(
                    "INSERT INTO node (nid, vid, type, language, title, uid, status, created, changed, comment, promote, sticky, tnid, translate) VALUES ({tnid}, {tvid}, 'task', 'und', 'Verify Site: {uri}', 1, 1, {T}, {T}, 0, 0, 0, 0, 0);\n\
                     INSERT INTO node_revision (nid, vid, uid, title, log, timestamp, status, comment, promote, sticky) VALUES ({tnid}, {tvid}, 1, 'Verify Site: {uri}', '', {T}, 1, 0, 0, 0);\n\
                     INSERT INTO hosting_task (vid, nid, task_type, rid, task_status, executed, delta) VALUES ({tvid}, {tnid}, 'verify', {nid}, 1, {T}, 3);\n\
                     INSERT INTO hosting_task_log (lid, vid, nid, type, message, error, timestamp) VALUES \
                     ({l1}, {tvid}, {tnid}, 'queue', 'Task starts processing: Verify Site: {uri}', '', {T}), \
                     ({l2}, {tvid}, {tnid}, 'command', 'Running: drush @{uri} provision-verify --backend', '', {T}), \
                     ({l3}, {tvid}, {tnid}, 'success', 'Verified the site.', '', {T});\n",
                    l1 = tvid * 3,
                    l2 = tvid * 3 + 1,
                    l3 = tvid * 3 + 2,
                );
            }
            self.put(
                &format!("/var/aegir/.drush/{uri}.alias.drushrc.php"),
                format!(
                    "<?php \n$aliases['{uri}'] = array (\n  'context_type' => 'site',\n  \
                     'platform' => '@platform_Drupal1026',\n  'server' => '@server_master',\n  \
                     'db_server' => '@server_master',\n  'uri' => '{uri}',\n  \
                     'root' => '{PLATFORM}',\n  'site_path' => '{site_path}',\n  \
                     'site_enabled' => true,\n  'language' => 'en',\n  'client_name' => 'admin',\n  \
                     'aliases' => \n  array (\n  ),\n  'redirection' => false,\n  \
                     'cron_key' => 'cron{nid}',\n  'profile' => 'standard',\n  \
                     'drush_aliases' => \n  array (\n  ),\n);\n"
                )
                .as_bytes(),
            );
            self.put(
                &format!("{site_path}/drushrc.php"),
                format!(
                    "<?php \n$options['db_type'] = 'mysql';\n$options['db_host'] = 'localhost';\n\
                     $options['db_port'] = '3306';\n$options['db_passwd'] = 'pw{nid}';\n\
                     $options['db_name'] = '{db}';\n$options['db_user'] = '{db}';\n\
                     $options['installed'] = true;\n"
                )
                .as_bytes(),
            );
            self.put(&format!("{site_path}/files/.keep"), b"");
            self.put(&tarball, b"not read by an import");
        }
        sql += "COMMIT;\n";
        let mut load = Command::new("mariadb")
            .arg(&self.db)
            .stdin(Stdio::piped())
            .spawn()
            .expect("mariadb");
        {
            use std::io::Write;
            let mut stdin = load.stdin.take().unwrap();
            stdin.write_all(sql.as_bytes()).unwrap();
        }
        assert!(
            load.wait().unwrap().success(),
            "loading the generated sites failed"
        );
        // A site, its backup and its three tasks.
        count * 5
    }

    pub fn url(&self) -> String {
        format!("mysql://root@localhost/{}?socket={SOCKET}", self.db)
    }

    /// SQL on this installation's hostmaster database.
    pub fn sql(&self, sql: &str) {
        mysql(&format!("USE `{}`; {sql}", self.db));
    }

    /// `aegir import aegir3 ... --json`: exit code and report.
    pub fn import(&self, d: &Daemon, token: &str, extra: &[&str]) -> (i32, Value) {
        let root = self.root.path().to_str().unwrap().to_string();
        let url = self.url();
        let mut args = vec![
            "import",
            "aegir3",
            "--hostmaster-db",
            &url,
            "--aegir-root",
            &root,
            "--json",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = run_cli(d, token, &args);
        let report = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("no report ({e}), exit {code}:\n{out}\n{err}"));
        (code, report)
    }

    /// Everything Aegir 3 holds: a dump of the hostmaster database and every file under the
    /// root with its mode, modification time and content.
    pub fn fingerprint(&self) -> String {
        self.fingerprint_with(true)
    }

    /// [`Aegir3::fingerprint`] without times: what an undo that moves files back restores.
    pub fn fingerprint_with(&self, times: bool) -> String {
        use sha2::Digest;
        let dump = Command::new("mariadb-dump")
            .args(["--skip-dump-date", "--order-by-primary", &self.db])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(dump.status.success());
        let mut h = sha2::Sha256::new();
        h.update(&dump.stdout);
        let mut files = Vec::new();
        walk(self.root.path(), &mut files);
        files.sort();
        for f in files {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::symlink_metadata(&f).unwrap();
            h.update(f.to_string_lossy().as_bytes());
            h.update(meta.mode().to_le_bytes());
            if times {
                h.update(meta.mtime().to_le_bytes());
            }
            if meta.is_file() {
                h.update(std::fs::read(&f).unwrap());
            }
        }
        format!("{:x}", h.finalize())
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.is_dir() && !p.is_symlink() {
            walk(&p, out);
        }
    }
}

impl Drop for Aegir3 {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-e", &format!("DROP DATABASE IF EXISTS `{}`", self.db)])
            .status();
    }
}
