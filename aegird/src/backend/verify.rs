//! `server.verify`: reach the host, detect the OS, web server, PHP-FPM versions and database
//! server, and record them on the server. Every step only reads the host, so the operation
//! can simply run again after a crash.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::executor::{CommandOutput, HostExecutor};
use super::{layout, nginx, shell};
use crate::engine::{Plan, Step, StepContext, StepError};
use crate::model::{DetectedService, DetectedServices, Id, LogLevel, ServerStatus};

pub fn plan(server_id: Id, exec: Arc<dyn HostExecutor>) -> Plan {
    let step = |kind: Detect| -> Arc<dyn Step> {
        Arc::new(DetectStep {
            kind,
            exec: exec.clone(),
        })
    };
    let setup = |kind: Setup| -> Arc<dyn Step> {
        Arc::new(SetupStep {
            kind,
            exec: exec.clone(),
        })
    };
    Plan {
        steps: vec![
            step(Detect::Connect),
            step(Detect::Os),
            step(Detect::Http),
            step(Detect::PhpFpm),
            step(Detect::Database),
            setup(Setup::Nginx),
            setup(Setup::PhpPools),
            setup(Setup::DatabaseAdmin),
            Arc::new(Record { server_id }),
        ],
        resumable: true,
        on_failure: Some(Arc::new(MarkFailed { server_id })),
    }
}

#[derive(Clone, Copy)]
enum Detect {
    Connect,
    Os,
    Http,
    PhpFpm,
    Database,
}

impl Detect {
    fn name(self) -> &'static str {
        match self {
            Detect::Connect => "connect",
            Detect::Os => "detect-os",
            Detect::Http => "detect-http",
            Detect::PhpFpm => "detect-php-fpm",
            Detect::Database => "detect-database",
        }
    }
}

struct DetectStep {
    kind: Detect,
    exec: Arc<dyn HostExecutor>,
}

impl DetectStep {
    /// Run a command, logging it and its failure; Ok(None) when the program is missing or
    /// fails (absence is a finding, not an error).
    async fn probe(
        &self,
        cx: &StepContext,
        program: &str,
        args: &[&str],
    ) -> Result<Option<CommandOutput>, StepError> {
        cx.log(LogLevel::Command, format!("{program} {}", args.join(" ")))
            .await;
        match self.exec.run(program, args).await {
            Ok(out) if out.success() => Ok(Some(out)),
            Ok(out) => {
                cx.info(format!(
                    "{program} exited with {:?}: {}",
                    out.code,
                    out.stderr.trim()
                ))
                .await;
                Ok(None)
            }
            Err(super::executor::ExecError::Spawn { .. }) => Ok(None),
            Err(e) => Err(StepError::new(e.to_string())),
        }
    }

    /// Absolute paths of executables whose file name starts with `prefix`, over PATH and the
    /// sbin directories, first found first.
    async fn find(&self, prefix: &str) -> Result<Vec<String>, StepError> {
        let script = "IFS=:; for d in $PATH; do for f in \"$d\"/\"$1\"*; do \
                      [ -f \"$f\" ] && [ -x \"$f\" ] && echo \"$f\"; done; done; true";
        // Not logged as a command: the script is noise; what it finds is logged instead.
        let out = self
            .exec
            .run("sh", &["-c", script, "sh", prefix])
            .await
            .map_err(|e| StepError::new(e.to_string()))?
            .stdout;
        let mut seen = Vec::<String>::new();
        for line in out.lines() {
            let file = line.rsplit('/').next().unwrap_or(line);
            // One binary per name: the first on the path wins, as for a shell.
            if !seen.iter().any(|s| s.rsplit('/').next() == Some(file)) {
                seen.push(line.to_string());
            }
        }
        Ok(seen)
    }
}

#[async_trait]
impl Step for DetectStep {
    fn name(&self) -> &str {
        self.kind.name()
    }

    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        match self.kind {
            Detect::Connect => {
                cx.info(format!("connecting to {}", self.exec.describe()))
                    .await;
                let out = self
                    .probe(cx, "uname", &["-n"])
                    .await?
                    .ok_or_else(|| StepError::new("the host did not answer `uname -n`"))?;
                let host = out.stdout.trim().to_string();
                cx.info(format!("reached {host}")).await;
                Ok(json!({ "hostname": host }))
            }
            Detect::Os => {
                let release = self
                    .probe(cx, "cat", &["/etc/os-release"])
                    .await?
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                let kernel = self
                    .probe(cx, "uname", &["-r"])
                    .await?
                    .map(|o| o.stdout.trim().to_string());
                let field = |k: &str| os_release_field(&release, k);
                let os = field("PRETTY_NAME");
                cx.info(format!(
                    "operating system: {}",
                    os.as_deref().unwrap_or("unknown (no /etc/os-release)")
                ))
                .await;
                Ok(json!({
                    "os": os, "os_id": field("ID"), "os_version": field("VERSION_ID"),
                    "kernel": kernel,
                }))
            }
            Detect::Http => {
                let mut found = Vec::new();
                for (name, program) in [
                    ("nginx", "nginx"),
                    ("apache", "apache2"),
                    ("apache", "httpd"),
                ] {
                    if found.iter().any(|s: &DetectedService| s.name == name) {
                        continue;
                    }
                    for bin in self.find(program).await? {
                        if bin.rsplit('/').next() != Some(program) {
                            continue;
                        }
                        if let Some(out) = self.probe(cx, &bin, &["-v"]).await? {
                            let text = format!("{}{}", out.stdout, out.stderr);
                            let marker = if name == "nginx" { "nginx/" } else { "Apache/" };
                            if let Some(version) = version_after(&text, marker) {
                                found.push(DetectedService {
                                    name: name.into(),
                                    version,
                                    binary: bin,
                                });
                                break;
                            }
                        }
                    }
                }
                report(cx, "web server", &found).await;
                Ok(serde_json::to_value(found).map_err(|e| StepError::new(e.to_string()))?)
            }
            Detect::PhpFpm => {
                let mut found = Vec::new();
                for bin in self.find("php-fpm").await? {
                    let file = bin.rsplit('/').next().unwrap_or("");
                    let suffix = &file["php-fpm".len()..];
                    // php-fpm, php-fpm8.2, php-fpm83 — not php-fpm-socket-helper or similar.
                    if !suffix.chars().all(|c| c.is_ascii_digit() || c == '.') {
                        continue;
                    }
                    if let Some(out) = self.probe(cx, &bin, &["-v"]).await? {
                        if let Some(version) = version_after(&out.stdout, "PHP ") {
                            if !found.iter().any(|s: &DetectedService| s.version == version) {
                                found.push(DetectedService {
                                    name: "php-fpm".into(),
                                    version,
                                    binary: bin,
                                });
                            }
                        }
                    }
                }
                report(cx, "PHP-FPM", &found).await;
                Ok(serde_json::to_value(found).map_err(|e| StepError::new(e.to_string()))?)
            }
            Detect::Database => {
                let mut found = Vec::new();
                for program in ["mariadbd", "mysqld"] {
                    if !found.is_empty() {
                        // On MariaDB hosts mysqld is a link to mariadbd.
                        break;
                    }
                    for bin in self.find(program).await? {
                        if bin.rsplit('/').next() != Some(program) {
                            continue;
                        }
                        if let Some(out) = self.probe(cx, &bin, &["--version"]).await? {
                            if let Some(svc) = parse_db_version(&out.stdout, &bin) {
                                found.push(svc);
                                break;
                            }
                        }
                    }
                }
                report(cx, "database server", &found).await;
                Ok(serde_json::to_value(found).map_err(|e| StepError::new(e.to_string()))?)
            }
        }
    }
}

async fn report(cx: &StepContext, what: &str, found: &[DetectedService]) {
    if found.is_empty() {
        cx.log(LogLevel::Warning, format!("no {what} found")).await;
    }
    for s in found {
        cx.info(format!("found {} {} ({})", s.name, s.version, s.binary))
            .await;
    }
}

/// What verify installs or checks after detecting: aegird's own nginx include and php-fpm
/// pools, and that the database admin account can make databases and users. Each is an
/// ensure: written only when it differs, services reloaded only then.
#[derive(Clone, Copy)]
enum Setup {
    Nginx,
    PhpPools,
    DatabaseAdmin,
}

struct SetupStep {
    kind: Setup,
    exec: Arc<dyn HostExecutor>,
}

/// The pool aegird's sites run in, one per PHP version.
fn pool_conf(php: &str) -> String {
    format!(
        "; Written by aegird: the pool its sites run in. `aegir server verify` writes it again.\n\
         [aegir]\nuser = {g}\ngroup = {g}\nlisten = {sock}\nlisten.owner = {g}\n\
         listen.group = {g}\nlisten.mode = 0660\npm = ondemand\npm.max_children = 16\n\
         pm.process_idle_timeout = 30s\npm.max_requests = 500\n\
         ; nginx only passes .php scripts; never anything else through path info.\n\
         security.limit_extensions = .php\n",
        g = layout::WEB_GROUP,
        sock = layout::pool_socket(php)
    )
}

/// "8.2" from "8.2.29": the branch Debian names its php-fpm binaries and paths after.
pub fn php_branch(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

#[async_trait]
impl Step for SetupStep {
    fn name(&self) -> &str {
        match self.kind {
            Setup::Nginx => "nginx-include",
            Setup::PhpPools => "php-fpm-pools",
            Setup::DatabaseAdmin => "check-database-admin",
        }
    }

    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        let exec = self.exec.as_ref();
        let found = |step: &str| -> Vec<DetectedService> {
            cx.output(step)
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default()
        };
        match self.kind {
            Setup::Nginx => {
                if !found("detect-http").iter().any(|s| s.name == "nginx") {
                    cx.log(
                        LogLevel::Warning,
                        "no nginx: sites cannot be served from this server",
                    )
                    .await;
                    return Ok(json!({ "installed": false }));
                }
                shell::script(
                    cx,
                    exec,
                    "aegird's directories",
                    r#"mkdir -p "$1" "$2" "$3" "$4" && chmod 0755 "$3""#,
                    &[
                        layout::VHOST_DIR,
                        layout::DISABLED_DIR,
                        layout::ACME_DIR,
                        layout::SITES_DIR,
                    ],
                )
                .await?;
                shell::write(
                    cx,
                    exec,
                    &format!("{}/index.html", layout::DISABLED_DIR),
                    nginx::DISABLED_PAGE,
                    0o644,
                )
                .await?;
                let changed = nginx::install(cx, exec, layout::NGINX_INCLUDE, &nginx::include())
                    .await?
                    != nginx::Installed::Unchanged;
                Ok(json!({ "installed": true, "changed": changed }))
            }
            Setup::PhpPools => {
                let mut pools = Vec::new();
                for svc in found("detect-php-fpm") {
                    let php = php_branch(&svc.version);
                    if !svc.binary.ends_with(&format!("php-fpm{php}")) {
                        cx.log(
                            LogLevel::Warning,
                            format!(
                                "{} is not laid out as Debian's php-fpm; no pool for it",
                                svc.binary
                            ),
                        )
                        .await;
                        continue;
                    }
                    let file = layout::pool_file(&php);
                    // Written, tested and reloaded under one lock: php-fpm's reload ends
                    // requests in flight, so two verifies must not both reload for one change.
                    let out = shell::script_input(
                        cx,
                        exec,
                        &format!("install aegird's pool for php-fpm {php}, reload if it changed"),
                        r#"set -e
mkdir -p "$(dirname "$7")"
exec 9>"$7"
flock 9
t=$(mktemp "$6.aegir-XXXXXX")
trap 'rm -f "$t"' EXIT
cat > "$t"
if cmp -s "$t" "$6"; then changed=false; else chmod 0644 "$t"; mv -f "$t" "$6"; changed=true; fi
echo "$changed"
[ "$changed" = true ] || [ ! -S "$3" ] || exit 0
if ! out=$("$1" -t 2>&1); then rm -f "$6"; echo "$1 -t refused the pool: $out" >&2; exit 1; fi
if [ -e /run/systemd/system ] && systemctl is-active --quiet "$4"; then systemctl reload "$4"
elif [ -s "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null; then kill -USR2 "$(cat "$2")"
else echo "$4 is not running: start it (systemctl start $4)" >&2; exit 1
fi
i=0
while [ ! -S "$3" ]; do
  i=$((i + 1)); [ $i -le 150 ] || { echo "php-fpm did not open $3" >&2; exit 1; }; sleep 0.1
done"#,
                        &[
                            &svc.binary,
                            &layout::fpm_pid_file(&php),
                            &layout::pool_socket(&php),
                            &format!("php{php}-fpm"),
                            "",
                            &file,
                            &format!("{}/.php-fpm.lock", layout::ETC_DIR),
                        ],
                        Some(pool_conf(&php).into_bytes()),
                    )
                    .await?;
                    if out.trim() == "true" {
                        cx.info(format!("{file}: written")).await;
                    }
                    pools.push(json!({ "php": php, "socket": layout::pool_socket(&php) }));
                }
                Ok(json!({ "pools": pools }))
            }
            Setup::DatabaseAdmin => {
                if found("detect-database").is_empty() {
                    return Ok(json!({ "checked": false }));
                }
                // No underscore: in a grant it would be a wildcard.
                let name = format!("aegircheck{:08x}", rand::random::<u32>());
                shell::script(
                    cx,
                    exec,
                    "check that the database admin account can create databases and users",
                    r#"set -e
my=$(command -v mariadb || command -v mysql) || { echo "neither mariadb nor mysql client found" >&2; exit 1; }
"$my" -e "CREATE DATABASE \`$1\`; CREATE USER '$1'@'localhost'; GRANT ALL ON \`$1\`.* TO '$1'@'localhost'; DROP USER '$1'@'localhost'; DROP DATABASE \`$1\`;""#,
                    &[&name],
                )
                .await?;
                Ok(json!({ "checked": true }))
            }
        }
    }
}

/// Writes what the detect steps found onto the server record.
struct Record {
    server_id: Id,
}

#[async_trait]
impl Step for Record {
    fn name(&self) -> &str {
        "record"
    }

    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        let get = |step: &str, key: &str| -> Option<String> {
            cx.output(step)
                .and_then(|v| v.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let list = |step: &str| -> Result<Vec<DetectedService>, StepError> {
            let v = cx.output(step).cloned().unwrap_or(Value::Array(vec![]));
            serde_json::from_value(v)
                .map_err(|e| StepError::new(format!("output of {step} unreadable: {e}")))
        };
        let services = DetectedServices {
            os: get("detect-os", "os"),
            os_id: get("detect-os", "os_id"),
            os_version: get("detect-os", "os_version"),
            kernel: get("detect-os", "kernel"),
            http: list("detect-http")?,
            php_fpm: list("detect-php-fpm")?,
            db: list("detect-database")?,
        };
        cx.store()
            .record_server_verify(
                self.server_id,
                ServerStatus::Ready,
                Some(&services),
                cx.now(),
            )
            .await?;
        cx.info("recorded the detected services on the server")
            .await;
        Ok(serde_json::to_value(&services).map_err(|e| StepError::new(e.to_string()))?)
    }
}

/// Marks the server failed when verify does not succeed, keeping what an earlier verify found.
struct MarkFailed {
    server_id: Id,
}

#[async_trait]
impl Step for MarkFailed {
    fn name(&self) -> &str {
        "mark-failed"
    }
    async fn run(&self, cx: &StepContext) -> Result<Value, StepError> {
        cx.store()
            .record_server_verify(self.server_id, ServerStatus::Failed, None, cx.now())
            .await?;
        Ok(Value::Null)
    }
}

fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The dotted version number right after `marker`, e.g. "1.22.1" in "nginx/1.22.1".
fn version_after(text: &str, marker: &str) -> Option<String> {
    let start = text.find(marker)? + marker.len();
    let v: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v = v.trim_end_matches('.').to_string();
    (!v.is_empty() && v.chars().next().is_some_and(|c| c.is_ascii_digit())).then_some(v)
}

/// `mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 for ...` or `mysqld  Ver 8.0.36 for Linux ...`.
fn parse_db_version(text: &str, binary: &str) -> Option<DetectedService> {
    let version = version_after(text, "Ver ")?;
    let name = if text.contains("MariaDB") {
        "mariadb"
    } else {
        "mysql"
    };
    Some(DetectedService {
        name: name.into(),
        version,
        binary: binary.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            version_after("nginx version: nginx/1.22.1\n", "nginx/").as_deref(),
            Some("1.22.1")
        );
        assert_eq!(
            version_after("Server version: Apache/2.4.57 (Debian)", "Apache/").as_deref(),
            Some("2.4.57")
        );
        assert_eq!(
            version_after("PHP 8.2.28 (fpm-fcgi) (built: ...)", "PHP ").as_deref(),
            Some("8.2.28")
        );
        let db = parse_db_version(
            "/usr/sbin/mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu",
            "/usr/sbin/mariadbd",
        )
        .unwrap();
        assert_eq!(
            (db.name.as_str(), db.version.as_str()),
            ("mariadb", "10.11.19")
        );
        let db =
            parse_db_version("mysqld  Ver 8.0.36 for Linux on x86_64", "/usr/sbin/mysqld").unwrap();
        assert_eq!((db.name.as_str(), db.version.as_str()), ("mysql", "8.0.36"));
        assert_eq!(version_after("no version here", "nginx/"), None);
    }

    #[test]
    fn reads_os_release() {
        let t = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";
        assert_eq!(
            os_release_field(t, "PRETTY_NAME").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_release_field(t, "ID").as_deref(), Some("debian"));
        assert_eq!(os_release_field(t, "VERSION_ID").as_deref(), Some("12"));
    }
}
