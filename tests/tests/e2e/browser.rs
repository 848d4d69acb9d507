//! The web UI in a real browser: Debian's chromium, headless, driven by playwright-core
//! (`tests/browser/ui.mjs`) against a real aegird, nginx, php-fpm, MariaDB and WordPress.
//! From an empty aegird it logs in, adds the server, project and release, creates a site and
//! watches its install live, opens it, backs it up, logs in to wp-admin through "Log in to
//! site" and changes the title there, restores, checks the pages at 360 px, deletes the site
//! and logs out. Screenshots of each page go to `<target>/test-artifacts/web/`.

use std::path::PathBuf;
use std::process::Command;

use std::os::unix::fs::PermissionsExt;

use aegir_tests::{cli_ok, site_leftovers, unique, Daemon, DaemonOpts, WORDPRESS};
use serde_json::Value;

/// `<target>/test-artifacts/web`, beside the test binary's own target directory.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/debug/deps/e2e-HASH
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf();
    target.join("test-artifacts").join("web")
}

#[test]
fn web_ui_in_chromium() {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir()
            && PathBuf::from("/usr/bin/chromium").exists(),
        "playwright-core or chromium is missing: `cargo xtask test` installs both (npm ci in \
         tests/browser, apt-get install chromium)"
    );
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("browser", None);
    // The first start made the admin account; its password is where the log says.
    let password_file = state.path().join("initial-admin-password");
    assert!(
        d.log
            .lock()
            .unwrap()
            .contains(&password_file.display().to_string()),
        "the log does not say where the first password is"
    );
    let mode = std::fs::metadata(&password_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let password = std::fs::read_to_string(&password_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(
        !d.log.lock().unwrap().contains(&password),
        "password in the log"
    );

    let uri = format!("{}.test", unique("ui"));
    let shots = artifacts_dir();
    let _ = std::fs::remove_dir_all(&shots);
    let out = Command::new("node")
        .arg(browser_dir.join("ui.mjs"))
        .current_dir(&browser_dir)
        .env("AEGIR_URL", d.url())
        .env("AEGIR_USER", "admin")
        .env("AEGIR_PASSWORD", &password)
        .env("SITE_URI", &uri)
        .env("SITE_TITLE", "Made in the browser")
        .env("SHOTS_DIR", &shots)
        .env("WORDPRESS", WORDPRESS)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser run failed:\n{stdout}\n{stderr}\naegird log:\n{}",
        d.log.lock().unwrap()
    );

    // What the browser did is what aegird recorded.
    let list: Value = serde_json::from_str(&cli_ok(
        &d,
        &token,
        &["env", "list", "--json", "--search", &uri],
    ))
    .unwrap();
    let env = &list["items"][0];
    assert_eq!(env["uri"], uri.as_str(), "{list}");
    assert_eq!(env["status"], "deleted", "deleted through the UI: {env}");
    let ops: Value = serde_json::from_str(&cli_ok(
        &d,
        &token,
        &["op", "list", "--json", "--limit", "50"],
    ))
    .unwrap();
    let kinds: Vec<&str> = ops["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["status"] == "succeeded")
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "server.verify",
        "release.verify",
        "env.install",
        "env.backup",
        "env.login",
        "env.restore",
        "env.delete",
    ] {
        assert!(kinds.contains(&kind), "{kind} did not succeed: {kinds:?}");
    }
    // The delete left nothing behind.
    let key = env["db_name"].as_str().unwrap();
    assert_eq!(site_leftovers(&uri, key, None), Vec::<String>::new());
    // A new password for admin retires the first start's file.
    let mut passwd = Command::new(aegir_tests::bin("aegird"));
    passwd
        .args(["user", "passwd", "admin", "--state-dir"])
        .arg(state.path());
    assert!(passwd.output().unwrap().status.success());
    assert!(!password_file.exists());
    for name in [
        "01-login",
        "02-servers",
        "03-releases",
        "04-operation-live",
        "05-operation-finished",
        "06-environment",
        "07-wp-admin",
        "08-dashboard",
        "09-environments",
        "10-environment-360px",
    ] {
        let png = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", png.display());
    }
}
