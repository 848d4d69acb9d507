//! `release.verify`: find the release's codebase on its server, tell its application,
//! version and docroot, read its package set, and record them on the release. The steps only
//! read the host, so the operation simply runs again after a crash.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::executor::HostExecutor;
use super::shell;
use crate::apps::{self, Detected, Package, DOCROOT_CANDIDATES, MARKERS};
use crate::engine::{Plan, Step, StepContext, StepError};
use crate::model::{AppKind, Id, ReleaseStatus};

/// A git remote and the ref a release is built from.
#[derive(Debug, Clone)]
pub struct GitSource {
    pub url: String,
    /// Branch, tag or commit; None for the remote's default branch.
    pub git_ref: Option<String>,
}

/// `path` is where the codebase is (or, with `git`, where it is cloned to).
pub fn plan(
    release_id: Id,
    path: String,
    git: Option<GitSource>,
    exec: Arc<dyn HostExecutor>,
) -> Plan {
    let step = |kind: Kind| -> Arc<dyn Step> {
        Arc::new(ReleaseStep {
            kind,
            release_id,
            path: path.clone(),
            git: git.clone(),
            exec: exec.clone(),
        })
    };
    let mut steps = Vec::new();
    if git.is_some() {
        steps.push(step(Kind::Build));
    }
    steps.extend([
        step(Kind::Check),
        step(Kind::Detect),
        step(Kind::Packages),
        step(Kind::Record),
    ]);
    Plan {
        steps,
        resumable: true,
        on_failure: Some(step(Kind::MarkFailed)),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Build,
    Check,
    Detect,
    Packages,
    Record,
    MarkFailed,
}

struct ReleaseStep {
    kind: Kind,
    release_id: Id,
    /// The codebase root on the server.
    path: String,
    git: Option<GitSource>,
    exec: Arc<dyn HostExecutor>,
}

#[async_trait]
impl Step for ReleaseStep {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Build => "clone-codebase",
            Kind::Check => "check-codebase",
            Kind::Detect => "detect-application",
            Kind::Packages => "scan-packages",
            Kind::Record => "record",
            Kind::MarkFailed => "mark-failed",
        }
    }

    /// Only the clone changes anything: remove what this operation cloned. The clone says
    /// which operation made it (`.git/aegir-operation`), so this holds even when the step
    /// did its work and then failed or was cut off before recording it; a clone an earlier
    /// operation made stays.
    async fn undo(&self, cx: &StepContext) -> Result<(), StepError> {
        if !matches!(self.kind, Kind::Build) {
            return Ok(());
        }
        let exec = self.exec.as_ref();
        let removed = shell::script(
            cx,
            exec,
            &format!("remove what this operation cloned at {}", self.path),
            r#"rm -rf "$2"
if [ "$(cat "$1/.git/aegir-operation" 2>/dev/null)" = "$3" ]; then rm -rf "$1" && echo removed; fi"#,
            &[&self.path, &self.staging(cx), &cx.operation_id.to_string()],
        )
        .await?;
        if removed.trim() == "removed" {
            cx.store().set_release_path(self.release_id, None).await?;
        }
        Ok(())
    }

    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        match self.kind {
            Kind::Build => self.build(cx).await,
            Kind::Check => self.check(cx).await,
            Kind::Detect => self.detect(cx).await,
            Kind::Packages => self.packages(cx).await,
            Kind::Record => self.record(cx).await,
            Kind::MarkFailed => {
                // Not in `undo`: marking failed is not reverting a change.
                cx.store()
                    .record_release_verify(self.release_id, ReleaseStatus::Failed, None, cx.now())
                    .await?;
                Ok(Value::Null)
            }
        }
    }
}

impl ReleaseStep {
    /// Where a clone is made before it is moved into place: a crash never leaves a
    /// half-cloned release at the release's own path.
    fn staging(&self, cx: &StepContext) -> String {
        format!("{}.aegir-clone-{}", self.path, cx.operation_id)
    }

    /// Clone the project at its ref into the release's directory, once: a release is
    /// immutable, so an existing clone is kept as it is.
    async fn build(&self, cx: &StepContext) -> Result<Value, StepError> {
        let git = self
            .git
            .as_ref()
            .expect("build is planned for git releases only");
        let exec = self.exec.as_ref();
        let staging = self.staging(cx);
        let exists = shell::script(
            cx,
            exec,
            &format!("look for an earlier clone at {}", self.path),
            r#"if [ -e "$1" ]; then echo yes; fi"#,
            &[&self.path],
        )
        .await?;
        if exists.trim() == "yes" {
            cx.info(format!("{} exists; a release is never rebuilt", self.path))
                .await;
            return Ok(json!({ "created": false }));
        }
        let git_ref = git.git_ref.as_deref().unwrap_or("");
        // Clone, check out the ref (a branch, a tag or a commit), and only then move it into
        // place. The ref is passed as an argument after `--` where git allows, never as code.
        let commit = shell::script(
            cx,
            exec,
            &format!(
                "clone {} at {} into {}",
                git.url,
                if git_ref.is_empty() { "its default branch" } else { git_ref },
                self.path
            ),
            r#"set -e
rm -rf "$3"
mkdir -p "$(dirname "$1")"
git clone --quiet --no-checkout -- "$2" "$3"
cd "$3"
if [ -n "$4" ]; then
  c=$(git rev-parse --verify --quiet "origin/$4^{commit}" || git rev-parse --verify --quiet "$4^{commit}")     || { echo "no branch, tag or commit named $4 in $2" >&2; exit 2; }
else
  c=$(git rev-parse --verify HEAD^{commit})
fi
git -c advice.detachedHead=false checkout --quiet "$c"
printf '%s\n' "$5" > .git/aegir-operation
cd /
mv -T "$3" "$1"
echo "$c""#,
            &[
                &self.path,
                &git.url,
                &staging,
                git_ref,
                &cx.operation_id.to_string(),
            ],
        )
        .await;
        let commit = match commit {
            Ok(c) => c.trim().to_string(),
            Err(e) => {
                // Leave nothing behind from this attempt.
                let _ = shell::script(
                    cx,
                    exec,
                    "remove the partial clone",
                    r#"rm -rf "$1""#,
                    &[&staging],
                )
                .await;
                return Err(e);
            }
        };
        if let Err(e) = cx
            .store()
            .set_release_path(self.release_id, Some(&self.path))
            .await
        {
            // Unrecorded, the clone would be nobody's: remove it.
            let _ = shell::script(
                cx,
                exec,
                "remove the clone",
                r#"rm -rf "$1""#,
                &[&self.path],
            )
            .await;
            return Err(e.into());
        }
        cx.info(format!("cloned commit {commit}")).await;
        Ok(json!({ "created": true, "commit": commit }))
    }

    async fn check(&self, cx: &StepContext) -> Result<Value, StepError> {
        let exec = self.exec.as_ref();
        let out = shell::script(
            cx,
            exec,
            &format!("check that {} is a readable directory", self.path),
            r#"test -d "$1" && test -r "$1" && test -x "$1" && echo ok; true"#,
            &[&self.path],
        )
        .await?;
        if out.trim() != "ok" {
            return Err(StepError::new(format!(
                "the codebase directory {} does not exist or cannot be read on {}",
                self.path,
                exec.describe()
            )));
        }
        Ok(json!({ "path": self.path }))
    }

    async fn detect(&self, cx: &StepContext) -> Result<Value, StepError> {
        let exec = self.exec.as_ref();
        // One round trip: every (docroot, marker) pair that exists.
        let mut script = String::from("cd \"$1\" || exit 3\n");
        for d in DOCROOT_CANDIDATES {
            for (_, marker) in MARKERS {
                let file = if d.is_empty() {
                    marker.to_string()
                } else {
                    format!("{d}/{marker}")
                };
                script.push_str(&format!("[ -f '{file}' ] && echo '{d}\t{marker}'\n"));
            }
        }
        script.push_str("true\n");
        let out = shell::script(
            cx,
            exec,
            "look for application markers",
            &script,
            &[&self.path],
        )
        .await?;
        let found: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(d, m)| (d.to_string(), m.to_string()))
            .collect();
        let (kind, docroot) = apps::detect(&found).ok_or_else(|| {
            StepError::new(format!(
                "no application found in {}: no WordPress, Drupal or index.php in its root or \
                 in {}",
                self.path,
                DOCROOT_CANDIDATES[..DOCROOT_CANDIDATES.len() - 1].join("/, ")
            ))
        })?;
        let marker = MARKERS
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, m)| *m)
            .unwrap_or("index.php");
        let version = if kind == AppKind::Php {
            None
        } else {
            let file = join(&join(&self.path, &docroot), marker);
            let text = shell::script(
                cx,
                exec,
                &format!("read {file}"),
                r#"head -c 1048576 "$1""#,
                &[&file],
            )
            .await?;
            apps::version(kind, &text)
        };
        let detected = Detected {
            kind,
            version,
            docroot,
        };
        cx.info(format!(
            "found {} {} (docroot: {})",
            detected.kind,
            detected.version.as_deref().unwrap_or("(no version)"),
            if detected.docroot.is_empty() {
                "."
            } else {
                &detected.docroot
            }
        ))
        .await;
        serde_json::to_value(&detected).map_err(|e| StepError::new(e.to_string()))
    }

    async fn packages(&self, cx: &StepContext) -> Result<Value, StepError> {
        let exec = self.exec.as_ref();
        let detected = self.detected(cx)?;
        let mut packages: Vec<Package> = Vec::new();
        let lock = shell::script(
            cx,
            exec,
            "read composer.lock",
            r#"cd "$1" && [ -f composer.lock ] && cat composer.lock; true"#,
            &[&self.path],
        )
        .await?;
        if !lock.trim().is_empty() {
            packages.extend(apps::composer_lock(&lock).map_err(StepError::new)?);
        }
        let root = join(&self.path, &detected.docroot);
        match detected.kind {
            AppKind::Drupal | AppKind::Drupal7 => {
                let out = shell::script(
                    cx,
                    exec,
                    "read the .info and .info.yml files",
                    r#"cd "$1" && find . -type f \( -name '*.info' -o -name '*.info.yml' \) \
                       -not -path './vendor/*' -not -path '*/node_modules/*' \
                       -not -path '*/tests/*' \
                       -exec grep -H -E '^(name|type|version)[[:space:]]*[:=]' {} + ; true"#,
                    &[&root],
                )
                .await?;
                let cleaned: String = out
                    .lines()
                    .map(|l| l.strip_prefix("./").unwrap_or(l))
                    .collect::<Vec<_>>()
                    .join("\n");
                packages.extend(apps::drupal_info(&cleaned));
            }
            AppKind::Wordpress => {
                let out = shell::script(
                    cx,
                    exec,
                    "read plugin and theme headers",
                    r#"cd "$1" && grep -H -E '^[[:space:]/*#@]*(Plugin Name|Theme Name|Version):' \
                       wp-content/plugins/*/*.php wp-content/themes/*/style.css 2>/dev/null; true"#,
                    &[&root],
                )
                .await?;
                packages.extend(apps::wordpress_headers(&out));
            }
            AppKind::Php => {}
        }
        cx.info(format!("{} packages", packages.len())).await;
        Ok(json!({ "packages": packages }))
    }

    async fn record(&self, cx: &StepContext) -> Result<Value, StepError> {
        let detected = self.detected(cx)?;
        let packages: Vec<Package> = serde_json::from_value(
            cx.output("scan-packages")
                .and_then(|v| v.get("packages"))
                .cloned()
                .unwrap_or(json!([])),
        )
        .map_err(|e| StepError::new(format!("output of scan-packages unreadable: {e}")))?;
        cx.store()
            .record_release_verify(
                self.release_id,
                ReleaseStatus::Ready,
                Some((&detected, packages.as_slice())),
                cx.now(),
            )
            .await?;
        cx.info("recorded the application and its packages on the release")
            .await;
        Ok(json!({ "kind": detected.kind }))
    }

    fn detected(&self, cx: &StepContext) -> Result<Detected, StepError> {
        let v = cx
            .output("detect-application")
            .cloned()
            .ok_or_else(|| StepError::new("detect-application has no output"))?;
        serde_json::from_value(v).map_err(|e| StepError::new(e.to_string()))
    }
}

fn join(base: &str, rel: &str) -> String {
    if rel.is_empty() {
        base.to_string()
    } else {
        format!("{}/{rel}", base.trim_end_matches('/'))
    }
}
