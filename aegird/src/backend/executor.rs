//! Running commands on a server's host. Steps see only [`HostExecutor`], so the same step works
//! on the local host and (with the server backend) over SSH.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;

/// At most this much of a command's output is kept; the rest is cut and said so.
const MAX_OUTPUT: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {timeout:?}")]
    Timeout { program: String, timeout: Duration },
    /// A command that had to succeed did not.
    #[error("{what} failed (exit {code:?}): {stderr}")]
    Failed {
        what: String,
        code: Option<i32>,
        stderr: String,
    },
    /// The host could not be reached (SSH failed before the command ran).
    #[error("cannot reach {target}: {message}")]
    Unreachable { target: String, message: String },
    #[error("I/O error running {program}: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

/// What a finished command printed and returned.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// None when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[async_trait]
pub trait HostExecutor: Send + Sync {
    /// "the local host", "aegir@web1.example.org:22", for logs.
    fn describe(&self) -> String;

    /// Run `program` with `args` (no shell unless the program is one), feeding it `input`
    /// on stdin when given.
    async fn run_input(
        &self,
        program: &str,
        args: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<CommandOutput, ExecError>;

    /// A command that runs `program` with `args` on the host, its standard streams left for
    /// the caller to pipe: how archives stream to and from a host without a copy in between
    /// (the caller owns the child; it must wait for it and kill it on failure).
    fn command(&self, program: &str, args: &[&str]) -> std::process::Command;

    /// Copy the local directory `from` to `to` on the host (rsync: a second run only sends
    /// what changed, and removes what is gone).
    async fn copy_dir(&self, from: &std::path::Path, to: &str) -> Result<(), ExecError>;

    /// Run `program` with `args` and no input.
    async fn run(&self, program: &str, args: &[&str]) -> Result<CommandOutput, ExecError> {
        self.run_input(program, args, None).await
    }

    /// Write `contents` to `path` with `mode`: to a temporary file beside it, flushed, then
    /// renamed over it, so readers never see half a file. False, and nothing written, when
    /// the file already holds exactly that.
    async fn write_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<bool, ExecError> {
        let script = r#"set -e
d=$(dirname "$1")
mkdir -p "$d"
t=$(mktemp "$1.aegir-XXXXXX")
trap 'rm -f "$t"' EXIT
cat > "$t"
if [ -f "$1" ] && [ ! -L "$1" ] && cmp -s "$t" "$1" && [ "$(stat -c %a "$1")" = "$2" ]; then
  echo same
else
  chmod "$2" "$t"
  sync "$t"
  mv -f "$t" "$1"
  echo changed
fi"#;
        let mode = format!("{mode:o}");
        let out = self
            .run_input(
                "sh",
                &["-c", script, "sh", path, &mode],
                Some(contents.to_vec()),
            )
            .await?;
        if !out.success() {
            return Err(ExecError::Failed {
                what: format!("writing {path} on {}", self.describe()),
                code: out.code,
                stderr: out.stderr.trim().to_string(),
            });
        }
        Ok(out.stdout.trim() == "changed")
    }
}

/// The machine aegird runs on.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    pub timeout: Duration,
}

impl Default for LocalExecutor {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
        }
    }
}

/// Service binaries live in sbin directories, which an ordinary user's PATH often lacks.
fn search_path() -> String {
    let mut path = std::env::var("PATH").unwrap_or_default();
    for extra in [
        "/usr/local/sbin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
    ] {
        if !path.split(':').any(|p| p == extra) {
            if !path.is_empty() {
                path.push(':');
            }
            path.push_str(extra);
        }
    }
    path
}

pub(crate) fn lossy_capped(bytes: &[u8]) -> String {
    if bytes.len() > MAX_OUTPUT {
        let mut s = String::from_utf8_lossy(&bytes[..MAX_OUTPUT]).into_owned();
        s.push_str("\n[output cut]");
        s
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

#[async_trait]
impl HostExecutor for LocalExecutor {
    fn describe(&self) -> String {
        "the local host".into()
    }

    async fn run_input(
        &self,
        program: &str,
        args: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<CommandOutput, ExecError> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env("PATH", search_path())
            // Parsable, untranslated output from every tool.
            .env("LC_ALL", "C");
        let out = run_process(cmd, input, program, program, self.timeout).await?;
        Ok(CommandOutput {
            code: out.status.code(),
            stdout: lossy_capped(&out.stdout),
            stderr: lossy_capped(&out.stderr),
        })
    }

    fn command(&self, program: &str, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args).env("PATH", search_path()).env("LC_ALL", "C");
        cmd
    }

    async fn copy_dir(&self, from: &std::path::Path, to: &str) -> Result<(), ExecError> {
        let mut cmd = tokio::process::Command::new("rsync");
        cmd.arg("-a")
            .arg("--delete")
            .arg(format!("{}/", from.display()))
            .arg(format!("{}/", to.trim_end_matches('/')));
        rsync(
            cmd,
            &format!("copying {} to {to}", from.display()),
            self.timeout,
        )
        .await
    }
}

/// Run an rsync and turn a failure into an error naming what was copied.
pub(crate) async fn rsync(
    cmd: tokio::process::Command,
    what: &str,
    timeout: Duration,
) -> Result<(), ExecError> {
    let out = run_process(cmd, None, "rsync", what, timeout).await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ExecError::Failed {
            what: what.to_string(),
            code: out.status.code(),
            stderr: lossy_capped(&out.stderr).trim().to_string(),
        })
    }
}

/// Spawn `cmd` without stdin, collect its output, and kill it if it outlives `timeout` or
/// its caller gives up (a cancelled or timed-out step must not leave it running).
/// `spawned` names the program started, `what` the work it does, for the errors.
pub(crate) async fn run_process(
    mut cmd: tokio::process::Command,
    input: Option<Vec<u8>>,
    spawned: &str,
    what: &str,
    timeout: Duration,
) -> Result<std::process::Output, ExecError> {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            program: spawned.to_string(),
            source,
        })?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        // Fed from a task of its own: a command that writes a lot before it reads all its
        // input would otherwise wait on us while we wait on it.
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&data).await;
        });
    }
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| ExecError::Timeout {
            program: what.to_string(),
            timeout,
        })?
        .map_err(|source| ExecError::Io {
            program: spawned.to_string(),
            source,
        })
}

/// Quote a word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[tokio::test]
    async fn runs_and_captures() {
        let x = LocalExecutor::default();
        let out = x
            .run("sh", &["-c", "echo out; echo err >&2; exit 3"])
            .await
            .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert!(matches!(
            x.run("/nonexistent/prog", &[]).await,
            Err(ExecError::Spawn { .. })
        ));
    }

    #[tokio::test]
    async fn times_out() {
        let x = LocalExecutor {
            timeout: Duration::from_millis(100),
        };
        assert!(matches!(
            x.run("sleep", &["5"]).await,
            Err(ExecError::Timeout { .. })
        ));
    }

    #[tokio::test]
    async fn writes_files_atomically_and_copies_directories() {
        let x = LocalExecutor::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf.d/site.conf");
        let p = path.to_str().unwrap();
        assert!(x.write_file(p, b"server {}\n", 0o640).await.unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"server {}\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // The same again changes nothing; other content or mode does.
        assert!(!x.write_file(p, b"server {}\n", 0o640).await.unwrap());
        assert!(x.write_file(p, b"server {}\n", 0o644).await.unwrap());
        assert!(x.write_file(p, b"other", 0o644).await.unwrap());
        // No temporary files left beside it.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );

        let from = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("a"), "1").unwrap();
        std::fs::create_dir(from.path().join("sub")).unwrap();
        std::fs::write(from.path().join("sub/b"), "2").unwrap();
        let to = dir.path().join("copy");
        x.copy_dir(from.path(), to.to_str().unwrap()).await.unwrap();
        assert_eq!(std::fs::read_to_string(to.join("sub/b")).unwrap(), "2");
        std::fs::remove_file(from.path().join("a")).unwrap();
        x.copy_dir(from.path(), to.to_str().unwrap()).await.unwrap();
        assert!(
            !to.join("a").exists(),
            "a removed file is removed from the copy"
        );
        let err = x
            .copy_dir(Path::new("/nonexistent/dir"), to.to_str().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Failed { .. }), "{err}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}
