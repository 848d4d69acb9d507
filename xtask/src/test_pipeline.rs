//! `cargo xtask test-pipeline`: `.gitlab-ci.yml` run for real with gitlab-ci-local (pinned),
//! once as a branch push and once as a tag, on this machine's shell. The tag run must leave
//! every release artifact and the publish plan in `dist/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::{cmd, dist, tools};

pub struct Options {
    pub install: bool,
    /// What the pipeline's test job passes to `cargo xtask test` (a filter keeps the run
    /// short when the whole suite has just run outside the pipeline).
    pub test_args: String,
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let target = dist::target_dir(root);
    let bin = gitlab_ci_local(&target, opts.install)?;
    let version = dist::version(Some(env!("CARGO_PKG_VERSION")))?;
    let dist_dir = root.join("dist");

    cmd::header("gitlab-ci-local: a branch push");
    let jobs = pipeline(root, &bin, &target, &opts.test_args, None)?;
    ensure!(
        jobs.contains(&"lint".to_string()) && jobs.contains(&"test".to_string()),
        "a branch pipeline should run lint and test, ran {jobs:?}"
    );
    ensure!(
        !jobs.iter().any(|j| j == "package" || j == "release"),
        "a branch pipeline must not package or release, ran {jobs:?}"
    );

    cmd::header(&format!("gitlab-ci-local: the tag v{version}"));
    if dist_dir.exists() {
        fs::remove_dir_all(&dist_dir)?;
    }
    let jobs = pipeline(root, &bin, &target, &opts.test_args, Some(&version))?;
    for job in ["lint", "test", "package", "release"] {
        ensure!(
            jobs.iter().any(|j| j == job),
            "the tag pipeline did not run {job}: {jobs:?}"
        );
    }
    for artifact in [
        format!("aegir_{version}_amd64.deb"),
        format!("aegir-{version}-1.x86_64.rpm"),
        format!("aegir-{version}-oci.tar"),
        format!("aegir-{version}.cdx.json"),
        "SHA256SUMS".to_string(),
        "publish-plan.txt".to_string(),
    ] {
        ensure!(
            dist_dir.join(&artifact).is_file(),
            "the tag pipeline did not produce dist/{artifact}"
        );
    }
    let plan = fs::read_to_string(dist_dir.join("publish-plan.txt"))?;
    ensure!(
        plan.starts_with("# dry run")
            && plan.contains(&format!(
                "/packages/generic/aegir/{version}/aegir_{version}_amd64.deb"
            )),
        "publish-plan.txt is not the dry run's plan:\n{plan}"
    );
    println!("test-pipeline: the branch ran lint and test; the tag also packaged and planned the release");
    Ok(())
}

fn gitlab_ci_local(target: &Path, install: bool) -> Result<PathBuf> {
    let prefix = target.join("dist/node");
    let bin = prefix.join("node_modules/.bin/gitlab-ci-local");
    let pinned = || {
        cmd::output(Command::new(&bin).arg("--version"))
            .is_ok_and(|v| v.trim() == tools::GITLAB_CI_LOCAL)
    };
    if pinned() {
        return Ok(bin);
    }
    ensure!(
        install,
        "gitlab-ci-local {} is not installed (--no-install was given); install it with \
         `npm install --prefix {} gitlab-ci-local@{}`",
        tools::GITLAB_CI_LOCAL,
        prefix.display(),
        tools::GITLAB_CI_LOCAL
    );
    fs::create_dir_all(&prefix)?;
    cmd::run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(format!("gitlab-ci-local@{}", tools::GITLAB_CI_LOCAL)),
    )
    .context("npm could not install gitlab-ci-local (Node.js and npm are needed)")?;
    ensure!(
        pinned(),
        "{} is not {}",
        bin.display(),
        tools::GITLAB_CI_LOCAL
    );
    Ok(bin)
}

/// Runs the pipeline (as a tag when `tag_version` is given) and returns the jobs that ran.
fn pipeline(
    root: &Path,
    bin: &Path,
    target: &Path,
    test_args: &str,
    tag_version: Option<&str>,
) -> Result<Vec<String>> {
    let mut c = Command::new(bin);
    c.current_dir(root)
        .args(["--shell-executor-no-image", "--no-color"])
        .args(["--variable", &format!("AEGIR_TEST_ARGS={test_args}")])
        .args(["--variable", "AEGIR_PUBLISH_DRY_RUN=1"])
        .args([
            "--variable",
            &format!("CARGO_TARGET_DIR={}", target.display()),
        ]);
    if let Some(v) = tag_version {
        c.args(["--variable", &format!("CI_COMMIT_TAG=v{v}")]);
    }
    let out = cmd::capture(&mut c)?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    ensure!(
        out.status.success(),
        "gitlab-ci-local failed ({})",
        out.status
    );
    // Its summary lists each job that succeeded as "PASS  <job>".
    let jobs: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("PASS"))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    ensure!(!jobs.is_empty(), "gitlab-ci-local reported no passing job");
    Ok(jobs)
}
