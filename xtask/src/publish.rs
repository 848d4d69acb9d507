//! `cargo xtask publish`: a tag's artifacts published on GitLab with the job's own token:
//! each file to the generic package registry, a release linking to them, the image to the
//! project's container registry. Anywhere but a GitLab tag pipeline it only writes what it
//! would do to `publish-plan.txt`, so the pipeline can be run and checked locally.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;

pub struct Options<'a> {
    pub dir: &'a Path,
}

/// What GitLab gives a tag pipeline's job, or why this is not one.
struct GitLab {
    api: String,
    project: String,
    token: String,
    registry_image: String,
    tag: String,
}

fn gitlab() -> std::result::Result<GitLab, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if var("AEGIR_PUBLISH_DRY_RUN").is_some() {
        return Err("AEGIR_PUBLISH_DRY_RUN is set".into());
    }
    if var("GITLAB_CI").as_deref() != Some("true") {
        return Err("not running on GitLab (GITLAB_CI is not true)".into());
    }
    let need = |k: &str| var(k).ok_or_else(|| format!("{k} is not set"));
    Ok(GitLab {
        api: need("CI_API_V4_URL")?,
        project: need("CI_PROJECT_ID")?,
        token: need("CI_JOB_TOKEN")?,
        registry_image: need("CI_REGISTRY_IMAGE")?,
        tag: need("CI_COMMIT_TAG")?,
    })
}

pub fn run(opts: &Options) -> Result<()> {
    let sums = fs::read_to_string(opts.dir.join("SHA256SUMS")).with_context(|| {
        format!(
            "no SHA256SUMS in {} (run `cargo xtask dist`)",
            opts.dir.display()
        )
    })?;
    let mut files: Vec<String> = sums
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    files.push("SHA256SUMS".into());
    let version = crate::dist::version_in_sums(&sums)?;
    let image = files
        .iter()
        .find(|f| f.ends_with("-oci.tar"))
        .context("no image listed in SHA256SUMS")?
        .clone();

    let target = gitlab();
    let (api, project, registry_image) = match &target {
        Ok(g) => (g.api.clone(), g.project.clone(), g.registry_image.clone()),
        Err(_) => (
            "$CI_API_V4_URL".to_string(),
            "$CI_PROJECT_ID".to_string(),
            "$CI_REGISTRY_IMAGE".to_string(),
        ),
    };
    if let Ok(g) = &target {
        if g.tag != format!("v{version}") {
            bail!("the artifacts are of {version}, the tag is {}", g.tag);
        }
    }
    let package_url =
        |file: &str| format!("{api}/projects/{project}/packages/generic/aegir/{version}/{file}");
    let mut plan = String::new();
    let mut links = Vec::new();
    for file in &files {
        writeln!(plan, "PUT {} < {file}", package_url(file))?;
        links.push(serde_json::json!({
            "name": file, "url": package_url(file), "link_type": if file.ends_with(".json") || file == "SHA256SUMS" { "other" } else { "package" },
        }));
    }
    let release = serde_json::json!({
        "tag_name": format!("v{version}"),
        "name": format!("aegir {version}"),
        "description": format!(
            "aegir {version}: .deb, .rpm and OCI image; check them with SHA256SUMS. \
             The image is also at {registry_image}:{version}."
        ),
        "assets": { "links": links },
    });
    writeln!(
        plan,
        "POST {api}/projects/{project}/releases\n{}",
        serde_json::to_string_pretty(&release)?
    )?;
    writeln!(
        plan,
        "skopeo copy oci-archive:{image} docker://{registry_image}:{version}"
    )?;

    match target {
        Err(why) => {
            let path = opts.dir.join("publish-plan.txt");
            fs::write(&path, format!("# dry run: {why}\n{plan}"))?;
            println!(
                "publish: dry run ({why}); the plan is in {}",
                path.display()
            );
            print!("{plan}");
            Ok(())
        }
        Ok(g) => {
            for file in &files {
                cmd::run(Command::new("curl").args([
                    "--fail-with-body",
                    "-sS",
                    "-H",
                    &format!("JOB-TOKEN: {}", g.token),
                    "--upload-file",
                    &opts.dir.join(file).to_string_lossy(),
                    &package_url(file),
                ]))?;
            }
            cmd::run(Command::new("curl").args([
                "--fail-with-body",
                "-sS",
                "-H",
                &format!("JOB-TOKEN: {}", g.token),
                "-H",
                "Content-Type: application/json",
                "--data",
                &release.to_string(),
                &format!("{api}/projects/{project}/releases"),
            ]))?;
            cmd::run(
                Command::new("skopeo")
                    .arg("copy")
                    .arg("--dest-creds")
                    .arg(format!("gitlab-ci-token:{}", g.token))
                    .arg(format!("oci-archive:{}", opts.dir.join(&image).display()))
                    .arg(format!("docker://{registry_image}:{version}")),
            )?;
            fs::write(
                opts.dir.join("publish-plan.txt"),
                format!("# published\n{plan}"),
            )?;
            Ok(())
        }
    }
}
