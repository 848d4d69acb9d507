//! Release verify through the daemon and the CLI: fixture Drupal 7, Drupal 10 and PHP
//! codebases (stand-ins: Drupal cannot be had offline) and Debian's real WordPress package.

use std::path::Path;
use std::process::Command;

use aegir_tests::{fixture, fixture_repo, git, Daemon, DaemonOpts};
use serde_json::Value;

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

/// Entries of a directory, sorted (empty if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn a_git_release_is_cloned_at_its_ref_and_a_failed_build_leaves_nothing() {
    // A repository of the Drupal 7 fixture: tag v1.0 is 7.98, the branch has moved on to 7.99.
    let repo = fixture_repo("drupal7");
    let r = repo.path();
    std::fs::write(
        r.join("includes/bootstrap.inc"),
        "<?php\ndefine('VERSION', '7.99');\n",
    )
    .unwrap();
    git(r, &["commit", "--quiet", "-am", "7.99"]);
    // And one with no application in it at all.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("README"), "nothing to run\n").unwrap();
    git(empty.path(), &["init", "--quiet", "--initial-branch=main"]);
    git(empty.path(), &["add", "."]);
    git(empty.path(), &["commit", "--quiet", "-m", "readme"]);

    let platforms = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        state.path(),
        &DaemonOpts {
            env: vec![(
                "AEGIR_RELEASES_DIR".into(),
                platforms.path().display().to_string(),
            )],
            ..Default::default()
        },
    );
    let token = d.token("test", None);
    let cli = |args: &[&str]| {
        let out = d.cli(&token, args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(cli(&["server", "add", "local", "--local"]).0, 0);
    let url = format!("file://{}", r.display());
    assert_eq!(
        cli(&["project", "add", "d7", "--git", &url, "--ref", "v1.0"]).0,
        0
    );
    assert_eq!(
        cli(&[
            "release",
            "create",
            "d7-1",
            "--project",
            "d7",
            "--server",
            "local"
        ])
        .0,
        0
    );
    let (code, out) = cli(&["release", "verify", "d7-1", "--wait"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cloned commit"), "{out}");
    let rel: Value = serde_json::from_str(&cli(&["release", "show", "d7-1", "--json"]).1).unwrap();
    assert_eq!(rel["app_version"], "7.98", "the tag, not the branch: {rel}");
    let path = platforms.path().join("d7-1");
    assert_eq!(rel["path"].as_str(), Some(path.to_str().unwrap()));
    assert!(path.join("includes/bootstrap.inc").exists());
    // Verifying again keeps the clone as it is: a release is immutable.
    let (code, out) = cli(&["release", "verify", "d7-1", "--wait"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("never rebuilt"), "{out}");

    // The same project at the moving branch, as another release: 7.99.
    assert_eq!(
        cli(&[
            "release",
            "create",
            "d7-2",
            "--project",
            "d7",
            "--server",
            "local",
            "--ref",
            "main"
        ])
        .0,
        0
    );
    assert_eq!(cli(&["release", "verify", "d7-2", "--wait"]).0, 0);
    let rel: Value = serde_json::from_str(&cli(&["release", "show", "d7-2", "--json"]).1).unwrap();
    assert_eq!(rel["app_version"], "7.99");

    // A ref that does not exist: nothing is left in the releases directory.
    let before = entries(platforms.path());
    assert_eq!(
        cli(&["project", "add", "bad", "--git", &url, "--ref", "v9.9"]).0,
        0
    );
    assert_eq!(
        cli(&[
            "release",
            "create",
            "bad-1",
            "--project",
            "bad",
            "--server",
            "local"
        ])
        .0,
        0
    );
    let (code, out) = cli(&["release", "verify", "bad-1", "--wait"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no branch, tag or commit named v9.9"), "{out}");
    assert_eq!(entries(platforms.path()), before);

    // A clone that succeeds but holds no application: the later step fails, and the undo
    // removes the clone and forgets its path.
    let empty_url = format!("file://{}", empty.path().display());
    assert_eq!(cli(&["project", "add", "void", "--git", &empty_url]).0, 0);
    assert_eq!(
        cli(&[
            "release",
            "create",
            "void-1",
            "--project",
            "void",
            "--server",
            "local"
        ])
        .0,
        0
    );
    let (code, out) = cli(&["release", "verify", "void-1", "--wait"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cloned commit") && out.contains("no application found"),
        "{out}"
    );
    assert_eq!(entries(platforms.path()), before);
    let rel: Value =
        serde_json::from_str(&cli(&["release", "show", "void-1", "--json"]).1).unwrap();
    assert!(rel["path"].is_null(), "{rel}");
    assert_eq!(rel["status"], "failed");
}
