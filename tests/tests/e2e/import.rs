//! Aegir 3 import through the CLI, on the shared fixture (read from ../shared/aegir3 at run
//! time): its hostmaster database loaded into this machine's MariaDB, its alias and drushrc
//! files laid out as an Aegir root in a temporary directory. The inventory must be the one
//! REFERENCE.md section 7 describes; Aegir 3 must be byte-for-byte unchanged; a second import
//! changes nothing, one after a change picks up exactly that change; broken parts are
//! reported and the rest imported.

use std::collections::BTreeMap;
use std::process::Command;

use aegir_tests::{run_cli, Backend, Daemon, DaemonOpts, TestDb};
use serde_json::Value;

pub use aegir_tests::aegir3::{Aegir3, SOCKET};

fn daemon() -> (tempfile::TempDir, Daemon, String) {
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("import", None);
    (state, d, token)
}

fn json(d: &Daemon, token: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = run_cli(d, token, &all);
    assert_eq!(code, 0, "aegir {}:\n{out}\n{err}", all.join(" "));
    serde_json::from_str(&out).unwrap()
}

/// (kind, aegir3 id) → the report line.
fn by_ref(report: &Value) -> BTreeMap<(String, String), Value> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                (
                    i["kind"].as_str().unwrap().to_string(),
                    i["aegir3"].as_str().unwrap().to_string(),
                ),
                i.clone(),
            )
        })
        .collect()
}

fn outcome(report: &Value, kind: &str, id: &str) -> String {
    by_ref(report)
        .get(&(kind.to_string(), id.to_string()))
        .unwrap_or_else(|| panic!("no {kind} {id} in the report"))["outcome"]
        .as_str()
        .unwrap()
        .to_string()
}

fn environments(d: &Daemon, token: &str) -> BTreeMap<String, Value> {
    json(d, token, &["env", "list", "--limit", "500"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["uri"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

#[test]
fn fixture_imports_into_the_inventory_it_describes() {
    let a3 = Aegir3::load();
    let (_state, d, token) = daemon();

    // A dry run reports the whole plan and writes nothing.
    let (code, plan) = a3.import(&d, &token, &["--dry-run"]);
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["summary"]["adopted"], 46, "{:#}", plan["summary"]);
    assert!(environments(&d, &token).is_empty());
    assert!(json(&d, &token, &["server", "list"])
        .as_array()
        .unwrap()
        .is_empty());

    let (code, report) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["dry_run"], false);
    // The real run does what the dry run said, item for item.
    let outcomes = |r: &Value| -> Vec<(String, String, String)> {
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["kind"].as_str().unwrap().into(),
                    i["aegir3"].as_str().unwrap().into(),
                    i["outcome"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(outcomes(&plan), outcomes(&report));
    // 2 servers, 3 projects, 3 releases, 6 environments, 7 backups, 25 finished tasks.
    assert_eq!(
        report["summary"],
        serde_json::json!({"adopted": 46, "updated": 0, "unchanged": 0, "skipped": 2, "failed": 0}),
        "{report:#}"
    );
    // The two tasks Aegir 3 has not finished are left for a later import.
    for task in ["124", "126"] {
        assert_eq!(outcome(&report, "task", task), "skipped");
    }
    assert!(report["source"]
        .as_str()
        .unwrap()
        .starts_with("aegir3+mysql://localhost/aegir3_import_"));
    assert!(!report.to_string().contains("fixture-db-secret"));

    // Servers: the master is this host; web2 is reached over SSH as aegir.
    let servers = json(&d, &token, &["server", "list"]);
    let servers: BTreeMap<&str, &Value> = servers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s))
        .collect();
    assert_eq!(servers.len(), 2);
    let master = servers["localhost"];
    assert_eq!(master["transport"], "local");
    assert_eq!(master["origin"]["aegir3"]["context"], "server_master");
    assert_eq!(master["origin"]["aegir3"]["https_port"], 443);
    assert_eq!(master["origin"]["aegir3"]["ip_addresses"][0], "192.0.2.10");
    assert_eq!(master["origin"]["aegir3"]["letsencrypt_ca"], "production");
    let types: Vec<&str> = master["origin"]["aegir3"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["LetsEncrypt", "mysql", "https_nginx"]);
    let web2 = servers["web2.example.com"];
    assert_eq!(web2["transport"], "ssh");
    assert_eq!(web2["ssh_user"], "aegir");
    assert_eq!(web2["ssh_host"], "web2.example.com");
    assert_eq!(web2["status"], "new");
    // The database admin is a secret of the store, in no answer.
    assert!(!master.to_string().contains("fixture-db-secret"));
    let db = d.state_dir.join("aegir.db");
    let secret = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT value FROM server_secrets")
        .output()
        .unwrap();
    let secret = String::from_utf8_lossy(&secret.stdout);
    assert!(
        secret.contains("aegir_root") && secret.contains("fixture-db-secret"),
        "{secret}"
    );

    // Platforms: a project and a release each, locked stays locked, core and packages.
    let releases = json(&d, &token, &["release", "list"]);
    let releases: BTreeMap<&str, &Value> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r))
        .collect();
    assert_eq!(
        releases.keys().copied().collect::<Vec<_>>(),
        ["drupal-10.2.6", "drupal-7.100", "drupal-9.5.11"]
    );
    let d7 = releases["drupal-7.100"];
    assert_eq!(d7["app_kind"], "drupal7");
    assert_eq!(d7["app_version"], "7.100");
    assert_eq!(d7["server"], "web2.example.com");
    assert_eq!(d7["locked"], false);
    assert_eq!(
        d7["path"],
        a3.path("/var/aegir/platforms/drupal-7.100")
            .to_str()
            .unwrap()
    );
    let packages: Vec<(String, String)> = d7["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["version"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        packages,
        [
            ("standard".to_string(), "7.100".to_string()),
            ("views".to_string(), "7.x-3.29".to_string())
        ]
    );
    assert_eq!(releases["drupal-9.5.11"]["locked"], true);
    assert_eq!(releases["drupal-10.2.6"]["app_kind"], "drupal");
    assert_eq!(releases["drupal-10.2.6"]["server"], "localhost");
    let projects = json(&d, &token, &["project", "list"]);
    assert_eq!(projects.as_array().unwrap().len(), 3);

    // Sites.
    let envs = environments(&d, &token);
    assert_eq!(
        envs.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "blog.example.com",
            "intranet.example.org",
            "legacy.example.org",
            "old.example.com",
            "staging.example.com",
            "www.example.com"
        ]
    );
    let www = &envs["www.example.com"];
    assert_eq!(www["status"], "active");
    assert_eq!(www["managed_by"], "aegir3");
    assert_eq!(www["release"], "drupal-10.2.6");
    assert_eq!(www["server"], "localhost");
    assert_eq!(www["db_server"], "localhost");
    assert_eq!(www["db_name"], "examplecom_0");
    assert_eq!(www["https"], "required");
    assert_eq!(www["aliases"], serde_json::json!(["example.com"]));
    assert_eq!(www["redirect_aliases"], true);
    assert_eq!(www["client"], "admin");
    assert_eq!(www["backup_interval"], 86400);
    assert_eq!(
        www["retention"],
        serde_json::json!({"last": 7, "daily": 30, "weekly": 5215, "monthly": 0})
    );
    let o = &www["origin"]["aegir3"];
    assert_eq!(o["nid"], 10);
    assert_eq!(o["profile"], "standard");
    assert_eq!(o["language"], "en");
    assert_eq!(o["db"]["user"], "examplecom_0");
    assert_eq!(
        o["site_path"],
        a3.path("/var/aegir/platforms/drupal-10.2.6/web/sites/www.example.com")
            .to_str()
            .unwrap()
    );
    assert_eq!(
        o["certificate"]["certificate"],
        a3.path("/var/aegir/config/server_master/ssl.d/www.example.com/openssl.crt")
            .to_str()
            .unwrap()
    );
    assert!(!www.to_string().contains("password"), "{www:#}");
    let intranet = &envs["intranet.example.org"];
    assert_eq!(intranet["status"], "disabled");
    assert_eq!(intranet["origin"]["aegir3"]["language"], "de");
    assert_eq!(intranet["server"], "web2.example.com");
    assert_eq!(envs["old.example.com"]["status"], "deleted");
    assert_eq!(envs["old.example.com"]["backup_interval"], Value::Null);
    // Per-site backup settings: blog weekly, legacy off.
    assert_eq!(envs["blog.example.com"]["backup_interval"], 604800);
    assert_eq!(envs["legacy.example.org"]["backup_interval"], 0);
    let legacy = &envs["legacy.example.org"];
    assert_eq!(legacy["aliases"].as_array().unwrap().len(), 2);
    assert_eq!(legacy["redirect_aliases"], false);

    // Backups: all seven, legacy's flagged missing, none read or changed.
    let backups = json(&d, &token, &["backup", "list"]);
    let backups = backups.as_array().unwrap();
    assert_eq!(backups.len(), 7);
    assert!(backups
        .iter()
        .all(|b| b["format"] == "aegir3" && b["reason"] == "imported"));
    let missing: Vec<&str> = backups
        .iter()
        .filter(|b| b["status"] == "missing")
        .map(|b| b["environment"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["legacy.example.org"]);
    let warned = &by_ref(&report)[&("backup".to_string(), "4".to_string())];
    assert!(
        warned["warnings"][0]
            .as_str()
            .unwrap()
            .contains("recorded as missing"),
        "{warned:#}"
    );
    // Task history: past operations with their logs, never run again.
    let ops = json(&d, &token, &["op", "list", "--limit", "100"]);
    let ops = ops["items"].as_array().unwrap();
    assert_eq!(ops.len(), 25);
    assert!(ops.iter().all(|o| o["kind"] == "aegir3.task"));
    let failed: Vec<&str> = ops
        .iter()
        .filter(|o| o["status"] == "failed")
        .map(|o| o["params"]["aegir3"]["task_type"].as_str().unwrap())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    let migrate = ops
        .iter()
        .find(|o| o["params"]["aegir3"]["task_type"] == "migrate")
        .unwrap();
    assert_eq!(migrate["target"]["name"], "blog.example.com");
    assert_eq!(migrate["status"], "failed");
    let id = migrate["id"].to_string();
    let logs = json(&d, &token, &["op", "logs", &id]);
    assert!(!logs.as_array().unwrap().is_empty(), "{logs:#}");
    let (code, _, err) = run_cli(&d, &token, &["op", "retry", &id]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("history"), "{err}");
    let restore = ops
        .iter()
        .find(|o| o["params"]["aegir3"]["task_type"] == "restore")
        .unwrap();
    assert_eq!(restore["params"]["aegir3"]["arguments"]["bid"], "2");

    // An adopted site stays Aegir 3's: aegird refuses to change it.
    let (code, _, err) = run_cli(&d, &token, &["env", "disable", "www.example.com"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("takeover"), "{err}");

    // The table a person reads says the same.
    let (code, text, err) = run_cli(
        &d,
        &token,
        &[
            "import",
            "aegir3",
            "--hostmaster-db",
            &a3.url(),
            "--aegir-root",
            a3.root.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("0 adopted, 0 updated, 46 unchanged, 2 skipped, 0 failed"),
        "{text}"
    );
    assert!(
        text.contains("nothing changed since the last import"),
        "{text}"
    );
    assert!(
        text.contains("still queued or running in Aegir 3"),
        "{text}"
    );
}

#[test]
fn import_is_read_only_towards_aegir3() {
    let a3 = Aegir3::load();
    let before = a3.fingerprint();
    let (_state, d, token) = daemon();
    let (code, report) = a3.import(&d, &token, &["--dry-run"]);
    assert_eq!(code, 0, "{report:#}");
    let (code, report) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{report:#}");
    let (code, report) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(a3.fingerprint(), before, "the import changed Aegir 3");
}

#[test]
fn second_import_changes_nothing_and_a_later_one_picks_up_changes() {
    let a3 = Aegir3::load();
    let (_state, d, token) = daemon();
    let (code, first) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{first:#}");
    let envs = environments(&d, &token);
    let ops = json(&d, &token, &["op", "list", "--limit", "100"])["total"].clone();

    let (code, second) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{second:#}");
    assert_eq!(second["summary"]["adopted"], 0, "{second:#}");
    assert_eq!(second["summary"]["updated"], 0, "{second:#}");
    assert_eq!(second["summary"]["unchanged"], first["summary"]["adopted"]);
    assert_eq!(environments(&d, &token), envs);
    assert_eq!(
        json(&d, &token, &["op", "list", "--limit", "100"])["total"],
        ops
    );

    // Aegir 3 goes on: blog is disabled, www gets another alias, the running verify of blog
    // finishes with a log line, and a backup file disappears.
    a3.sql("UPDATE hosting_site SET status = -1 WHERE vid = 12");
    a3.sql("INSERT INTO hosting_site_alias (vid, nid, alias, automatic, redirection) VALUES (16, 10, 'shop.example.com', 0, 'www.example.com')");
    a3.sql("UPDATE hosting_task SET task_status = 1, delta = 30 WHERE vid = 1053");
    a3.sql("INSERT INTO hosting_task_log (vid, nid, type, message, error, timestamp) VALUES (1053, 126, 'success', 'Verified blog.example.com', '', 1706950890)");
    std::fs::remove_file(a3.path("/var/aegir/backups/blog.example.com-20240116.020312.tar.gz"))
        .unwrap();

    let (code, third) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{third:#}");
    let changed: BTreeMap<(String, String), Value> = by_ref(&third)
        .into_iter()
        .filter(|(_, i)| i["outcome"] == "updated" || i["outcome"] == "adopted")
        .collect();
    let summary: Vec<(&str, &str, &str, Vec<String>)> = changed
        .iter()
        .map(|((k, id), i)| {
            (
                k.as_str(),
                id.as_str(),
                i["outcome"].as_str().unwrap(),
                i["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("backup", "3", "updated", vec!["missing".to_string()]),
            ("environment", "10", "updated", vec!["aliases".to_string()]),
            (
                "environment",
                "12",
                "updated",
                vec!["origin.aegir3.status".to_string(), "status".to_string()]
            ),
            ("task", "126", "adopted", vec![]),
        ],
        "{third:#}"
    );
    let envs = environments(&d, &token);
    assert_eq!(envs["blog.example.com"]["status"], "disabled");
    assert_eq!(
        envs["www.example.com"]["aliases"],
        serde_json::json!(["example.com", "shop.example.com"])
    );
    let ops = json(&d, &token, &["op", "list", "--limit", "100"]);
    let verify = ops["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["params"]["aegir3"]["nid"] == 126)
        .expect("task 126 imported once finished");
    assert_eq!(verify["status"], "succeeded");
    let logs = json(&d, &token, &["op", "logs", &verify["id"].to_string()]);
    assert!(
        logs.to_string().contains("Verified blog.example.com"),
        "{logs:#}"
    );
}

#[test]
fn broken_parts_are_reported_and_the_rest_imported() {
    let a3 = Aegir3::load();
    // A corrupt alias file, a site without its drushrc.php, an unknown task type, an unknown
    // service type, and a site whose platform does not exist.
    std::fs::write(
        a3.root
            .path()
            .join(".drush/staging.example.com.alias.drushrc.php"),
        "<?php\n$aliases['staging.example.com'] = array(\n  'uri' => 'staging.example.com',\n  'root' => ",
    )
    .unwrap();
    std::fs::remove_file(
        a3.path("/var/aegir/platforms/drupal-7.100/sites/legacy.example.org/drushrc.php"),
    )
    .unwrap();
    a3.sql("INSERT INTO node (nid, vid, type, language, title, uid, status, created, changed, comment, promote, sticky, tnid, translate) VALUES (130, 1060, 'task', 'und', 'Frobnicate: www.example.com', 1, 1, 1706990000, 1706990000, 0, 0, 0, 0, 0), (131, 131, 'site', 'und', 'orphan.example.net', 1, 1, 1706990000, 1706990000, 0, 0, 0, 0, 0)");
    a3.sql("INSERT INTO hosting_task (vid, nid, task_type, rid, task_status, executed, delta) VALUES (1060, 130, 'frobnicate', 10, 1, 1706990000, 5)");
    a3.sql("INSERT INTO hosting_service (vid, nid, service, type, restart_cmd, port, available) VALUES (3, 3, 'dns', 'bind', '', 53, 1)");
    a3.sql("INSERT INTO hosting_site (vid, nid, client, db_server, db_name, platform, profile, language, last_cron, cron_key, verified, status) VALUES (131, 131, 1, 2, 'orphan', 99, 5, 'en', 0, '', 0, 1)");

    let (_state, d, token) = daemon();
    let (code, report) = a3.import(&d, &token, &[]);
    // Something failed, so the exit code says so; everything else is in.
    assert_eq!(code, 1, "{report:#}");
    let items = by_ref(&report);
    let file = items
        .iter()
        .find(|((k, id), _)| k == "file" && id.ends_with("staging.example.com.alias.drushrc.php"))
        .expect("the corrupt alias file is reported")
        .1;
    assert_eq!(file["outcome"], "failed");
    let orphan = &items[&("environment".to_string(), "131".to_string())];
    assert_eq!(orphan["outcome"], "failed");
    assert!(
        orphan["reason"].as_str().unwrap().contains("node 99"),
        "{orphan:#}"
    );
    let staging = &items[&("environment".to_string(), "11".to_string())];
    assert_eq!(staging["outcome"], "adopted");
    assert!(
        staging["warnings"]
            .to_string()
            .contains("no readable alias file"),
        "{staging:#}"
    );
    let legacy = &items[&("environment".to_string(), "14".to_string())];
    assert_eq!(legacy["outcome"], "adopted");
    assert!(
        legacy["warnings"].to_string().contains("no drushrc.php"),
        "{legacy:#}"
    );
    let frob = &items[&("task".to_string(), "130".to_string())];
    assert_eq!(frob["outcome"], "adopted");
    assert!(
        frob["warnings"].to_string().contains("unknown task type"),
        "{frob:#}"
    );
    let web2 = &items[&("server".to_string(), "3".to_string())];
    assert_eq!(web2["outcome"], "adopted");
    assert!(
        web2["warnings"].to_string().contains("dns of type bind"),
        "{web2:#}"
    );
    assert_eq!(report["summary"]["failed"], 2, "{:#}", report["summary"]);
    let envs = environments(&d, &token);
    assert_eq!(envs.len(), 6);
    assert!(!envs.contains_key("orphan.example.net"));
    assert_eq!(envs["staging.example.com"]["status"], "active");
}

#[test]
fn the_hostmaster_front_end_and_its_platform_are_skipped() {
    let a3 = Aegir3::load();
    // Aegir 3's own front end and its platform, as every real install has them (the fixture
    // leaves them out). Their context names are not the usual ones, so only the variables
    // aegir_hostmaster_site_nid and hosting_own_platform can tell them apart.
    a3.sql("INSERT INTO node (nid, vid, type, language, title, uid, status, created, changed, comment, promote, sticky, tnid, translate) VALUES \
        (300, 300, 'platform', 'und', 'hostmaster', 1, 1, 1706990000, 1706990000, 0, 0, 0, 0, 0), \
        (301, 301, 'site', 'und', 'aegir.example.com', 1, 1, 1706990000, 1706990000, 0, 0, 0, 0, 0); \
        INSERT INTO hosting_context (nid, name) VALUES (300, 'platform_hostmaster_old'), (301, 'aegir.example.com'); \
        INSERT INTO hosting_platform (vid, nid, publish_path, makefile, web_server, verified, status, make_working_copy) VALUES \
        (300, 300, '/var/aegir/hostmaster-7.x-3.x', '', 2, 1706990000, 1, 0); \
        INSERT INTO hosting_site (vid, nid, client, db_server, db_name, platform, profile, language, last_cron, cron_key, verified, status) VALUES \
        (301, 301, 1, 2, 'aegirexamplecom', 300, 0, 'en', 0, '', 1706990000, 1); \
        DELETE FROM variable WHERE name IN ('aegir_hostmaster_site_nid', 'hosting_own_platform'); \
        INSERT INTO variable (name, value) VALUES ('aegir_hostmaster_site_nid', 's:3:\"301\";'), ('hosting_own_platform', 'i:300;')");

    let (_state, d, token) = daemon();
    let (code, report) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{report:#}");
    let items = by_ref(&report);
    let site = &items[&("environment".to_string(), "301".to_string())];
    assert_eq!(site["outcome"], "skipped", "{site:#}");
    assert!(
        site["reason"]
            .as_str()
            .unwrap()
            .contains("front end (hostmaster)"),
        "{site:#}"
    );
    let platform = items
        .iter()
        .find(|((_, id), _)| id == "300")
        .expect("the hostmaster platform is reported")
        .1;
    assert_eq!(platform["outcome"], "skipped", "{platform:#}");
    assert!(
        platform["reason"].as_str().unwrap().contains("hostmaster"),
        "{platform:#}"
    );
    // Skipped means not imported: the rest is, the front end is not.
    assert_eq!(report["summary"]["adopted"], 46, "{:#}", report["summary"]);
    let envs = environments(&d, &token);
    assert!(!envs.contains_key("aegir.example.com"));
    let releases = json(&d, &token, &["release", "list"]);
    assert!(!releases.to_string().contains("hostmaster"), "{releases}");
}

#[test]
fn bad_sources_are_refused_and_change_nothing() {
    let (_state, d, token) = daemon();
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    // No hostmaster alias under the root and no --hostmaster-db.
    let (code, _, err) = run_cli(&d, &token, &["import", "aegir3", "--aegir-root", r]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("--hostmaster-db"), "{err}");
    // Not a hostmaster database.
    let (code, _, err) = run_cli(
        &d,
        &token,
        &[
            "import",
            "aegir3",
            "--aegir-root",
            r,
            "--hostmaster-db",
            &format!("mysql://root@localhost/mysql?socket={SOCKET}"),
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no `node` table"), "{err}");
    // A root that is not there, a URL that is not MySQL's.
    let (code, _, err) = run_cli(
        &d,
        &token,
        &["import", "aegir3", "--aegir-root", "/nonexistent/aegir"],
    );
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = run_cli(
        &d,
        &token,
        &[
            "import",
            "aegir3",
            "--aegir-root",
            r,
            "--hostmaster-db",
            "postgres://x/y",
        ],
    );
    assert_eq!(code, 3, "{err}");
    // Unreachable: refused connection, and the password is not printed.
    let (code, _, err) = run_cli(
        &d,
        &token,
        &[
            "import",
            "aegir3",
            "--aegir-root",
            r,
            "--hostmaster-db",
            "mysql://aegir:sekrit-pw@127.0.0.1:1/hostmaster",
        ],
    );
    assert_eq!(code, 5, "{err}");
    assert!(!err.contains("sekrit-pw"), "{err}");
    assert!(environments(&d, &token).is_empty());
    assert!(json(&d, &token, &["server", "list"])
        .as_array()
        .unwrap()
        .is_empty());
}

/// The same import into a PostgreSQL store: everything adopted once, nothing the second time.
#[tokio::test]
async fn fixture_imports_into_postgresql_once() {
    let a3 = Aegir3::load();
    let db = TestDb::new(Backend::Postgres).await;
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        state.path(),
        &DaemonOpts {
            database_url: Some(db.url.clone()),
            ..Default::default()
        },
    );
    let token = d.token("import", Some(&db.url));
    let (code, first) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{first:#}");
    assert_eq!(first["summary"]["adopted"], 46, "{first:#}");
    let (code, second) = a3.import(&d, &token, &[]);
    assert_eq!(code, 0, "{second:#}");
    assert_eq!(
        second["summary"],
        serde_json::json!({"adopted": 0, "updated": 0, "unchanged": 46, "skipped": 2, "failed": 0})
    );
    let envs = environments(&d, &token);
    assert_eq!(envs["www.example.com"]["db_server"], "localhost");
    assert_eq!(envs.len(), 6);
}
