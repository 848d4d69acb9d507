//! Release verify through the daemon and the CLI: fixture Drupal 7, Drupal 10 and PHP
//! codebases (stand-ins: Drupal cannot be had offline) and Debian's real WordPress package.

use std::path::Path;
use std::process::Command;

use aegir_tests::{Daemon, DaemonOpts};
use serde_json::Value;

fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Add a path project and a release of it, verify it, and return the release as JSON and
/// the exit code of `release verify --wait`.
fn verify(d: &Daemon, token: &str, name: &str, path: &str) -> (i32, Value) {
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(d.cli(token, &["project", "add", name, "--path", path]));
    let release = format!("{name}-1");
    ok(d.cli(
        token,
        &[
            "release",
            "create",
            &release,
            "--project",
            name,
            "--server",
            "local",
        ],
    ));
    let out = d.cli(token, &["release", "verify", &release, "--wait"]);
    let code = out.status.code().unwrap_or(-1);
    let show = d.cli(token, &["release", "show", &release, "--json"]);
    ok(show.clone());
    (code, serde_json::from_slice(&show.stdout).unwrap())
}

fn package<'a>(release: &'a Value, name: &str) -> &'a Value {
    release["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no package {name} in {}", release["packages"]))
}

#[tokio::test]
async fn release_verify_tells_application_version_docroot_and_packages() {
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("test", None);
    assert!(d
        .cli(&token, &["server", "add", "local", "--local"])
        .status
        .success());

    let (code, r) = verify(&d, &token, "d7", &fixture("drupal7"));
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (r["app_kind"].as_str(), r["app_version"].as_str()),
        (Some("drupal7"), Some("7.98"))
    );
    assert_eq!(r["docroot"], "");
    assert_eq!(r["status"], "ready");
    assert!(r["verified_at"].is_string());
    assert_eq!(package(&r, "views")["version"], "7.x-3.29");
    assert_eq!(package(&r, "bartik")["type"], "theme");
    assert_eq!(package(&r, "node")["version"], "7.98");

    let (code, r) = verify(&d, &token, "d10", &fixture("drupal10"));
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (r["app_kind"].as_str(), r["app_version"].as_str()),
        (Some("drupal"), Some("10.2.6"))
    );
    assert_eq!(r["docroot"], "web");
    assert_eq!(package(&r, "drupal/token")["source"], "composer.lock");
    assert_eq!(package(&r, "drupal/token")["type"], "module");
    assert_eq!(package(&r, "token")["version"], "8.x-1.13");
    assert_eq!(package(&r, "symfony/console")["type"], "library");
    // Core's "version: VERSION" placeholder is not a version.
    assert!(package(&r, "node")["version"].is_null());

    let (code, r) = verify(&d, &token, "plain", &fixture("php-app"));
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["app_kind"], "php");
    assert_eq!(r["docroot"], "public");
    assert!(r["packages"].as_array().unwrap().is_empty());

    // The real thing: Debian's WordPress package. Its version, read from dpkg, not from us.
    let wp = "/usr/share/wordpress";
    assert!(
        Path::new(wp).join("wp-includes/version.php").exists(),
        "Debian's wordpress package is needed (cargo xtask test installs it)"
    );
    let dpkg = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "wordpress"])
        .output()
        .unwrap();
    let deb_version = String::from_utf8_lossy(&dpkg.stdout).to_string();
    let (code, r) = verify(&d, &token, "wordpress", wp);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["app_kind"], "wordpress");
    let version = r["app_version"].as_str().unwrap();
    assert!(
        deb_version.starts_with(&format!("{version}+"))
            || deb_version.starts_with(&format!("{version}-")),
        "detected {version}, dpkg says {deb_version}"
    );
    if Path::new(wp)
        .join("wp-content/plugins/akismet/akismet.php")
        .exists()
    {
        assert_eq!(package(&r, "akismet")["type"], "plugin");
        assert!(package(&r, "akismet")["version"].is_string());
    }

    // A codebase that is not there: the operation fails, says why, and the release is failed.
    let (code, r) = verify(&d, &token, "gone", "/nonexistent/codebase");
    assert_eq!(code, 1);
    assert_eq!(r["status"], "failed");
    assert!(r["app_kind"].is_null());
    let ops: Value = serde_json::from_slice(
        &d.cli(&token, &["op", "list", "--status", "failed", "--json"])
            .stdout,
    )
    .unwrap();
    let err = ops["items"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("/nonexistent/codebase") && err.contains("does not exist"),
        "{err}"
    );
}
